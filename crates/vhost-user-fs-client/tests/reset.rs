//! The guest driver goes away without unmounting (reboot, kexec, driver rebind, device reset)
//! and a new one takes the device over: the old FUSE session must end as if DESTROY had come
//! (its inodes and handles released, nothing leaked) and the new driver's INIT must start a new
//! one. Both ways a frontend reports it are covered: QEMU 7.2 only stops and restarts the
//! rings ([`Reset::Rings`]), newer QEMU also sends RESET_DEVICE ([`Reset::Device`]).

mod common;

use std::time::Duration;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{Creds, Errno, FsClient, FuseOps, FuseRequest, Reset};

const CREATE_EXCL: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const S_IFREG: u32 = libc::S_IFREG;

/// The process that serves the guest: the supervisor's child in namespace mode, else the daemon.
fn serving_pid(d: &Daemon) -> u32 {
    let pid = d.pid();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(pid)
}

/// Descriptors open in the serving process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// One driver's life: INIT, look up, create and open files (left open), write through them.
/// Returns the node ids and handles it holds.
fn use_session(c: &FsClient, boot: usize, files: usize) -> Vec<(u64, u64)> {
    c.init().unwrap();
    let dir = c.mkdir(ROOT_ID, format!("boot-{boot}"), 0o755, 0).unwrap();
    (0..files)
        .map(|i| {
            let (e, o) = c
                .create(dir.nodeid, format!("f{i}"), CREATE_EXCL, S_IFREG | 0o644, 0)
                .unwrap();
            let data = format!("boot {boot} file {i}");
            assert_eq!(
                c.write(e.nodeid, o.fh, 0, data.as_bytes()).unwrap() as usize,
                data.len()
            );
            (e.nodeid, o.fh)
        })
        .collect()
}

/// What a new driver sees: the old session's ids are void, the files it wrote are there.
fn check_new_session(c: &FsClient, d: &Daemon, old: &[(u64, u64)], boots: usize, files: usize) {
    let (nodeid, fh) = old[0];
    assert_eq!(
        errno(c.getattr(nodeid, Some(fh))),
        Errno::EBADF,
        "a node id of the previous session"
    );
    for boot in 0..boots {
        let dir = c.lookup(ROOT_ID, format!("boot-{boot}")).unwrap();
        for i in 0..files {
            let e = c.lookup(dir.nodeid, format!("f{i}")).unwrap();
            assert_eq!(e.attr.size as usize, format!("boot {boot} file {i}").len());
            c.forget(e.nodeid, 1).unwrap();
        }
        c.forget(dir.nodeid, 1).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.share.join(format!("boot-{boot}/f0"))).unwrap(),
            format!("boot {boot} file 0")
        );
    }
}

/// Many reboots of one frontend, each leaving files open and nodes looked up: every reboot ends
/// the old session, the daemon's open descriptors stay flat, nothing is refused to the new
/// driver.
fn reboots_release_everything(how: Reset) {
    const BOOTS: usize = 12;
    const FILES: usize = 20;
    let mut d = Daemon::start(&[]);
    let mut c = d.connect(d.config());
    let pid = serving_pid(&d);
    let mut fds_after_first = 0;
    let mut old = Vec::new();
    for boot in 0..BOOTS {
        if boot > 0 {
            c.reset_device(how).unwrap();
            if how == Reset::Device {
                // The session ended with the reset, before any INIT.
                assert_eq!(
                    errno(c.getattr(ROOT_ID, None)),
                    Errno::EIO,
                    "after RESET_DEVICE"
                );
            }
        }
        let held = use_session(&c, boot, FILES);
        if boot > 0 {
            check_new_session(&c, &d, &old, boot, FILES);
        }
        old = held;
        if boot == 1 {
            fds_after_first = open_fds(pid);
        }
    }
    let fds_at_end = open_fds(pid);
    assert!(
        fds_at_end <= fds_after_first,
        "the daemon holds {fds_at_end} fds after {BOOTS} boots, {fds_after_first} after 2: \
         sessions leak descriptors"
    );
    let log = d.assert_alive("reboots");
    let ended = log.matches("previous session ended").count()
        + log.matches("device reset: FUSE session ended").count();
    assert_eq!(ended, BOOTS - 1, "sessions ended; log:\n{log}");
}

#[test]
fn reboots_that_only_restart_the_rings_end_each_session() {
    reboots_release_everything(Reset::Rings);
}

#[test]
fn reboots_with_reset_device_end_each_session() {
    reboots_release_everything(Reset::Device);
}

/// A new driver's INIT arrives while the old driver's writes are still running on two queues
/// (the frontend did not stop the rings): the writes that started before it complete with their
/// data on the host, the old session then ends (the later ones find their handle void), and the
/// new session works.
#[test]
fn init_in_a_live_session_waits_for_requests_in_flight_then_starts_anew() {
    let mut d = Daemon::start(&[]);
    let mut cfg = d.config();
    cfg.request_queues = 2;
    let c = d.connect(cfg);
    c.init().unwrap();
    let (e, o) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    const N: usize = 32;
    const CHUNK: usize = 64 << 10;
    let data: Vec<u8> = (0..N * CHUNK).map(|i| (i / 7) as u8).collect();
    let tokens: Vec<_> = (0..N)
        .map(|i| {
            let req = FuseRequest::write(
                e.nodeid,
                o.fh,
                (i * CHUNK) as u64,
                &data[i * CHUNK..(i + 1) * CHUNK],
            );
            c.submit(1 + i % 2, &req, Creds::root()).unwrap()
        })
        .collect();
    c.init().expect("INIT of a new driver in a live session");
    // A write either ran in the old session, whole, before INIT, or reached the gate after it
    // and found its handle void.
    let mut done = [false; N];
    for (i, t) in tokens.into_iter().enumerate() {
        match c.wait(t).unwrap().written() {
            Ok(n) => {
                assert_eq!(n as usize, CHUNK);
                done[i] = true;
            }
            Err(e) => assert_eq!(e.errno(), Some(Errno::EBADF), "write {i}"),
        }
    }
    let mut host = std::fs::read(d.share.join("f")).unwrap();
    host.resize(N * CHUNK, 0);
    for (i, ran) in done.iter().enumerate() {
        let (got, want) = (
            &host[i * CHUNK..(i + 1) * CHUNK],
            &data[i * CHUNK..(i + 1) * CHUNK],
        );
        if *ran {
            assert!(
                got == want,
                "write {i} succeeded but its data is not on the host"
            );
        } else {
            assert!(
                got.iter().all(|&b| b == 0),
                "write {i} failed but reached the host"
            );
        }
    }
    assert_eq!(errno(c.getattr(e.nodeid, Some(o.fh))), Errno::EBADF);
    let again = c.lookup(ROOT_ID, "f").unwrap();
    assert_eq!(
        again.attr.size,
        std::fs::metadata(d.share.join("f")).unwrap().len()
    );
    let log = d.assert_alive("second INIT");
    assert!(log.contains("previous session ended"), "{log}");
}

/// A reset while requests are in flight: the reset waits for them (they complete before the
/// frontend gets its answer), and the daemon serves the next driver.
#[test]
fn reset_with_requests_in_flight_drains_them() {
    let mut d = Daemon::start(&["--thread-pool-size=8"]);
    let mut cfg = d.config();
    cfg.request_queues = 2;
    cfg.timeout = Duration::from_secs(20);
    let mut c = d.connect(cfg);
    c.init().unwrap();
    let (e, o) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    let chunk = vec![0x5au8; 128 << 10];
    for i in 0..24u64 {
        let req = FuseRequest::write(e.nodeid, o.fh, i * chunk.len() as u64, &chunk);
        // Never waited for: the reset takes the rings away, as a reboot does.
        c.submit(1 + (i as usize) % 2, &req, Creds::root()).unwrap();
    }
    c.reset_device(Reset::Device).unwrap();
    // Whatever completed is whole chunks of the pattern, and no write runs after the reset.
    let size = std::fs::metadata(d.share.join("f")).unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::metadata(d.share.join("f")).unwrap().len(), size);
    // Each chunk was written whole or not at all (a hole reads as zeros).
    let host = std::fs::read(d.share.join("f")).unwrap();
    for (i, part) in host.chunks(chunk.len()).enumerate() {
        assert!(
            part.iter().all(|&b| b == 0x5a) || part.iter().all(|&b| b == 0),
            "chunk {i} is torn"
        );
    }
    c.init().unwrap();
    assert_eq!(c.lookup(ROOT_ID, "f").unwrap().attr.size, size);
    d.assert_alive("reset with writes in flight");
}
