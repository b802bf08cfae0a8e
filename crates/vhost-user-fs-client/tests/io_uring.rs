//! `--io-engine io-uring`: READ, WRITE and FSYNC through the request queues' io_uring give
//! what the synchronous path gives (data, short reads, errors, large multi-descriptor I/O,
//! deep queues), every chain goes back once when the session or the device ends with I/O in
//! the ring, and the engine fails cleanly (or `auto` falls back) where io_uring is refused.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{daemon_bin, errno, Daemon};
use vhost_user_fs_client::abi::{opcode, ReadIn, WriteIn, ROOT_ID};
use vhost_user_fs_client::{Creds, Errno, FsClient, FuseOps, FuseRequest, Reset};
use vm_memory::ByteValued;

const CREATE_EXCL: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const S_IFREG: u32 = libc::S_IFREG;

fn started(extra: &[&str]) -> (Daemon, FsClient) {
    let mut args = vec!["--io-engine", "io-uring"];
    args.extend_from_slice(extra);
    let d = Daemon::start(&args);
    let c = d.connect(d.config());
    c.init().unwrap();
    (d, c)
}

/// A pattern that differs at every offset of a file (so misplaced data shows).
fn pattern(offset: usize, len: usize) -> Vec<u8> {
    (offset..offset + len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

/// A READ whose reply buffers are `pieces` descriptors of `piece` bytes (after the header's).
fn read_in_pieces(nodeid: u64, fh: u64, offset: u64, piece: u32, pieces: usize) -> FuseRequest {
    let arg = ReadIn {
        fh,
        offset,
        size: piece * pieces as u32,
        ..Default::default()
    };
    FuseRequest::new(
        opcode::READ,
        nodeid,
        vec![arg.as_slice().to_vec()],
        vec![piece; pieces],
    )
}

/// A WRITE of `data` in descriptors of `piece` bytes.
fn write_in_pieces(nodeid: u64, fh: u64, offset: u64, data: &[u8], piece: usize) -> FuseRequest {
    let arg = WriteIn {
        fh,
        offset,
        size: data.len() as u32,
        ..Default::default()
    };
    let mut args = vec![arg.as_slice().to_vec()];
    args.extend(data.chunks(piece).map(<[u8]>::to_vec));
    FuseRequest::new(opcode::WRITE, nodeid, args, vec![8])
}

/// The number after `key=` in the last `queue statistics` line of queue `q` the daemon logs on
/// SIGUSR1.
fn queue_stat(d: &Daemon, q: usize, key: &str) -> u64 {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGUSR1) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let tag = format!("queue={q} ");
    let mut log = String::new();
    loop {
        log.push_str(&d.take_log());
        if let Some(line) = log
            .lines()
            .rev()
            .find(|l| l.contains("queue statistics") && l.contains(&tag))
        {
            let at = line.find(&format!(" {key}=")).expect(key) + key.len() + 2;
            return line[at..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
        assert!(Instant::now() < deadline, "no statistics line: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Data in and out, short reads at and past the end, FSYNC and FDATASYNC, large I/O in many
/// descriptors: what the host file holds is what was written, and the I/O went through the
/// ring.
#[test]
fn reads_writes_and_fsyncs_go_through_the_ring_and_match_the_host() {
    let (d, c) = started(&[]);
    let (e, o) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    let data = pattern(0, 10_000);
    assert_eq!(c.write(e.nodeid, o.fh, 0, &data).unwrap(), 10_000);
    assert_eq!(std::fs::read(d.share.join("f")).unwrap(), data);
    assert_eq!(c.read(e.nodeid, o.fh, 0, 10_000).unwrap(), data);
    // Short at the end of the file, empty past it.
    assert_eq!(c.read(e.nodeid, o.fh, 9_900, 4096).unwrap(), &data[9_900..]);
    assert_eq!(c.read(e.nodeid, o.fh, 10_000, 4096).unwrap(), b"");
    assert_eq!(c.read(e.nodeid, o.fh, 1 << 40, 4096).unwrap(), b"");
    c.fsync(e.nodeid, o.fh, false).unwrap();
    c.fsync(e.nodeid, o.fh, true).unwrap();

    // 256 KiB in 64 descriptors each way, at an offset that is not page aligned.
    let big = pattern(4_321, 256 << 10);
    let req = write_in_pieces(e.nodeid, o.fh, 4_321, &big, 4096);
    assert_eq!(c.call(req).unwrap().written().unwrap(), 256 << 10);
    let host = std::fs::read(d.share.join("f")).unwrap();
    assert_eq!(&host[4_321..], &big[..]);
    let req = read_in_pieces(e.nodeid, o.fh, 4_321, 4096, 64);
    assert_eq!(c.call(req).unwrap().ok().unwrap(), big);
    // The last pieces of a read that the file ends in the middle of.
    let req = read_in_pieces(e.nodeid, o.fh, host.len() as u64 - 5_000, 4096, 4);
    assert_eq!(
        c.call(req).unwrap().ok().unwrap(),
        &host[host.len() - 5_000..]
    );

    let uring = queue_stat(&d, 1, "uring");
    assert!(uring >= 10, "READ/WRITE/FSYNC through the ring: {uring}");
}

/// The errors the synchronous path gives: EBADF for a handle that is not open, EROFS under
/// --readonly, EDQUOT under --max-bytes, EISDIR-free READ of a write-only handle (EBADF from
/// the kernel through the CQE).
#[test]
fn errors_are_the_synchronous_paths() {
    let (d, c) = started(&[]);
    let (e, o) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(errno(c.read(e.nodeid, o.fh + 100, 0, 10)), Errno::EBADF);
    assert_eq!(errno(c.write(e.nodeid, o.fh + 100, 0, b"x")), Errno::EBADF);
    assert_eq!(errno(c.fsync(e.nodeid, o.fh + 100, false)), Errno::EBADF);
    // A handle open for writing only: the kernel's EBADF comes back in the CQE.
    let wo = c.open(e.nodeid, libc::O_WRONLY as u32).unwrap();
    assert_eq!(errno(c.read(e.nodeid, wo.fh, 0, 10)), Errno::EBADF);
    let ro = c.open(e.nodeid, libc::O_RDONLY as u32).unwrap();
    assert_eq!(errno(c.write(e.nodeid, ro.fh, 0, b"x")), Errno::EBADF);
    assert!(std::fs::read(d.share.join("f")).unwrap().is_empty());
    drop(c);

    let (d, c) = started(&["--readonly"]);
    std::fs::write(d.share.join("r"), b"read me").unwrap();
    let r = c.lookup(ROOT_ID, "r").unwrap();
    let o = c.open(r.nodeid, libc::O_RDONLY as u32).unwrap();
    assert_eq!(c.read(r.nodeid, o.fh, 0, 64).unwrap(), b"read me");
    assert_eq!(errno(c.write(r.nodeid, o.fh, 0, b"x")), Errno::EROFS);
    c.fsync(r.nodeid, o.fh, false).unwrap();
    assert_eq!(std::fs::read(d.share.join("r")).unwrap(), b"read me");
    drop(c);

    // Writes under a byte quota are measured around the system call (the synchronous path).
    let (d, c) = started(&["--max-bytes=64K"]);
    let (e, o) = c
        .create(ROOT_ID, "q", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    let chunk = vec![7u8; 32 << 10];
    let mut written = 0u64;
    let err = loop {
        match c.write(e.nodeid, o.fh, written, &chunk) {
            Ok(n) => {
                assert!(n > 0);
                written += u64::from(n);
                assert!(written <= 64 << 10, "past the quota: {written}");
            }
            Err(err) => break err,
        }
    };
    assert_eq!(err.errno(), Some(Errno(libc::EDQUOT)));
    assert_eq!(c.read(e.nodeid, o.fh, 0, 8).unwrap(), vec![7u8; 8]);
    assert_eq!(std::fs::metadata(d.share.join("q")).unwrap().len(), written);
}

/// 64 requests in flight on one queue, READs, WRITEs and FSYNCs mixed: each gets its own
/// answer once.
#[test]
fn depth_64_on_one_queue() {
    let (d, c) = started(&["--thread-pool-size=4"]);
    let (e, o) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    const BLOCK: usize = 16 << 10;
    for round in 0..4 {
        let writes: Vec<_> = (0..64)
            .map(|i| {
                let off = i * BLOCK;
                let req =
                    FuseRequest::write(e.nodeid, o.fh, off as u64, &pattern(off + round, BLOCK));
                c.submit(1, &req, Creds::root()).unwrap()
            })
            .collect();
        for t in writes {
            assert_eq!(c.wait(t).unwrap().written().unwrap() as usize, BLOCK);
        }
        let mut tokens = Vec::new();
        for i in 0..64 {
            let req = match i % 8 {
                7 => FuseRequest::fsync(e.nodeid, o.fh, i % 16 == 7, false),
                _ => FuseRequest::read(e.nodeid, o.fh, (i * BLOCK) as u64, BLOCK as u32),
            };
            tokens.push((i, c.submit(1, &req, Creds::root()).unwrap()));
        }
        for (i, t) in tokens {
            let reply = c.wait(t).unwrap();
            if i % 8 == 7 {
                reply.empty().unwrap();
            } else {
                assert_eq!(
                    reply.ok().unwrap(),
                    pattern(i * BLOCK + round, BLOCK),
                    "{i}"
                );
            }
        }
    }
    assert!(queue_stat(&d, 1, "uring") >= 4 * 128);
}

/// DESTROY while READs, WRITEs and FSYNCs are in the ring: it waits for them; every request is
/// answered once; then a device reset with I/O in flight; the daemon serves on.
#[test]
fn destroy_and_reset_with_io_in_the_ring_answer_everything_once() {
    let mut d = Daemon::start(&["--io-engine", "io-uring"]);
    let mut cfg = d.config();
    cfg.request_queues = 2;
    cfg.timeout = Duration::from_secs(20);
    let mut c = d.connect(cfg);
    c.init().unwrap();
    let (e, o) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    let chunk = vec![0x5au8; 64 << 10];
    let mut tokens = Vec::new();
    for i in 0..48u64 {
        let req = match i % 3 {
            0 => FuseRequest::write(e.nodeid, o.fh, i * chunk.len() as u64, &chunk),
            1 => FuseRequest::read(e.nodeid, o.fh, 0, 64 << 10),
            _ => FuseRequest::fsync(e.nodeid, o.fh, false, false),
        };
        tokens.push(c.submit(1 + (i as usize) % 2, &req, Creds::root()).unwrap());
    }
    let destroy = c.submit(1, &FuseRequest::destroy(), Creds::root()).unwrap();
    for t in tokens {
        // Each answered: served before DESTROY took the session, or EIO after it.
        match c.wait(t).unwrap().ok() {
            Ok(_) => {}
            Err(err) => assert_eq!(err.errno(), Some(Errno::EIO), "{err}"),
        }
    }
    c.wait(destroy).unwrap().empty().unwrap();
    // Nothing is answered twice: the rings hold no stray completion.
    std::thread::sleep(Duration::from_millis(200));
    c.init().unwrap();
    let f = c.lookup(ROOT_ID, "f").unwrap();
    let o = c.open(f.nodeid, libc::O_RDWR as u32).unwrap();
    for i in 0..24u64 {
        let req = FuseRequest::write(f.nodeid, o.fh, i * chunk.len() as u64, &chunk);
        c.submit(1 + (i as usize) % 2, &req, Creds::root()).unwrap();
    }
    c.reset_device(Reset::Device).unwrap();
    let size = std::fs::metadata(d.share.join("f")).unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::metadata(d.share.join("f")).unwrap().len(), size);
    c.init().unwrap();
    let f = c.lookup(ROOT_ID, "f").unwrap();
    let o = c.open(f.nodeid, libc::O_RDONLY as u32).unwrap();
    assert_eq!(c.read(f.nodeid, o.fh, 0, 16).unwrap(), vec![0x5a; 16]);
    d.assert_alive("DESTROY and reset with I/O in the ring");
}

/// Installs a seccomp filter that answers io_uring_setup with EPERM (what a container
/// runtime's default profile does), in the child before it runs the daemon.
fn refuse_io_uring(cmd: &mut Command) {
    // SAFETY: only prctl calls between fork and exec; the filter is a static array.
    unsafe {
        cmd.pre_exec(|| {
            const LD_NR: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
            const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
            const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
            let filter = [
                libc::sock_filter {
                    code: LD_NR,
                    jt: 0,
                    jf: 0,
                    k: 0,
                },
                libc::sock_filter {
                    code: JEQ,
                    jt: 0,
                    jf: 1,
                    k: libc::SYS_io_uring_setup as u32,
                },
                libc::sock_filter {
                    code: RET,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
                },
                libc::sock_filter {
                    code: RET,
                    jt: 0,
                    jf: 0,
                    k: libc::SECCOMP_RET_ALLOW,
                },
            ];
            let prog = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `--io-engine io-uring` where io_uring_setup is refused: a clear message and a non-zero
/// exit. `auto`: one log line, and the daemon serves synchronously.
#[test]
fn refused_io_uring_fails_cleanly_or_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let socket = dir.path().join("vfs.sock");
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--shared-dir")
        .arg(&share)
        .arg("--socket-path")
        .arg(&socket)
        .args(["--io-engine", "io-uring"])
        .stderr(Stdio::piped());
    refuse_io_uring(&mut cmd);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--io-engine io-uring: io_uring is not available"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");

    // auto: falls back, says so once, and serves READ and WRITE.
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--shared-dir")
        .arg(&share)
        .arg("--socket-path")
        .arg(&socket)
        .args(["--io-engine", "auto"])
        .stderr(Stdio::piped());
    refuse_io_uring(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let waiting = line.contains(vhost_user_fs_client::daemons::LISTENING_LOG_LINE);
        seen.push(line);
        if waiting {
            break;
        }
    }
    let fallback = seen.iter().filter(|l| l.contains("using sync")).count();
    assert_eq!(fallback, 1, "{seen:#?}");
    let mut cfg = vhost_user_fs_client::DeviceConfig::new(&socket);
    cfg.timeout = Duration::from_secs(10);
    let c = FsClient::connect(cfg).unwrap();
    c.init().unwrap();
    let (e, o) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(c.write(e.nodeid, o.fh, 0, b"sync").unwrap(), 4);
    assert_eq!(c.read(e.nodeid, o.fh, 0, 8).unwrap(), b"sync");
    drop(c);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
