//! The bridge's own behaviour against async-virtiofsd: a round trip through the kernel's FUSE
//! client, credentials, many requests in flight, and every way a mount ends (signal, umount,
//! backend killed mid-run, bridge killed) without leaving a mount behind.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use common::{as_user, errno, is_fuse_mounted, Kind, Mounted};

fn ours(extra: &[&str]) -> Mounted {
    Mounted::start(Kind::Ours, extra).expect("async-virtiofsd must be built for these tests")
}

#[test]
fn round_trip_through_the_kernel_client() {
    let m = ours(&["--queues", "2"]);
    let share = m.backend.share.clone();
    fs::write(share.join("from-host"), b"host data").unwrap();
    assert_eq!(fs::read(m.mnt.join("from-host")).unwrap(), b"host data");
    fs::write(m.mnt.join("from-mount"), b"mount data").unwrap();
    assert_eq!(fs::read(share.join("from-mount")).unwrap(), b"mount data");
    // A file larger than max_write, in odd-sized pieces, read back through the mount.
    let data: Vec<u8> = (0..(3 << 20) + 12345)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut f = fs::File::create(m.mnt.join("big")).unwrap();
    for c in data.chunks(100_003) {
        f.write_all(c).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(share.join("big")).unwrap(), data);
    let mut f = fs::File::open(m.mnt.join("big")).unwrap();
    f.seek(SeekFrom::Start(1 << 20)).unwrap();
    let mut buf = vec![0; 4096];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, data[1 << 20..(1 << 20) + 4096]);
    let mut names: Vec<String> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "from-host", "from-mount"]);
    let c = std::ffi::CString::new(m.mnt.to_str().unwrap()).unwrap();
    // SAFETY: a valid path and a zeroed out-struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    assert!(st.f_blocks > 0);
}

#[test]
fn credentials_reach_the_backend_unchanged() {
    let m = ours(&[]);
    let mnt = m.mnt.clone();
    as_user(4321, 5432, &[], move || {
        fs::write(mnt.join("mine"), b"x").unwrap();
        fs::create_dir(mnt.join("mydir")).unwrap();
    });
    for n in ["mine", "mydir"] {
        let md = fs::metadata(m.backend.share.join(n)).unwrap();
        assert_eq!((md.uid(), md.gid()), (4321, 5432), "{n} on the host");
    }
    // And the backend refuses what another user may not do: create in 4321's 0755 directory
    // (the backend creates with the caller's fsuid).
    let mnt = m.mnt.clone();
    let e = as_user(4322, 4322, &[], move || {
        fs::write(mnt.join("mydir/theirs"), b"y").unwrap_err()
    });
    assert_eq!(errno(&e), libc::EACCES);
}

#[test]
fn many_requests_in_flight_over_several_queues() {
    let m = ours(&["--queues", "4", "--queue-depth", "8"]);
    let mnt = m.mnt.clone();
    std::thread::scope(|s| {
        for t in 0..16 {
            let mnt = &mnt;
            s.spawn(move || {
                for i in 0..40 {
                    let p = mnt.join(format!("f-{t}-{i}"));
                    fs::write(&p, format!("{t}:{i}")).unwrap();
                    assert_eq!(fs::read_to_string(&p).unwrap(), format!("{t}:{i}"));
                    fs::remove_file(&p).unwrap();
                }
            });
        }
    });
    drop(m);
}

#[test]
fn sigterm_unmounts_and_exits_0() {
    let mut m = ours(&[]);
    assert!(m.is_mounted());
    m.signal_bridge(libc::SIGTERM);
    let st = m
        .wait_bridge(Duration::from_secs(10))
        .expect("bridge exits");
    assert!(st.success(), "{st}: {}", m.log.text());
    assert!(!m.is_mounted(), "mount left behind");
}

#[test]
fn sigterm_on_a_busy_mount_detaches_then_aborts_after_the_grace() {
    let mut m = ours(&["--grace", "1"]);
    let held = fs::File::open(m.mnt.join(".")).unwrap();
    let t = Instant::now();
    m.signal_bridge(libc::SIGINT);
    let st = m
        .wait_bridge(Duration::from_secs(10))
        .expect("bridge exits");
    assert!(st.success(), "{st}: {}", m.log.text());
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "waited for the grace period"
    );
    assert!(!m.is_mounted(), "mount left behind");
    let e = held.metadata().unwrap_err();
    assert_eq!(errno(&e), libc::ENOTCONN, "{e}");
}

#[test]
fn umount_by_someone_else_ends_the_bridge() {
    let mut m = ours(&[]);
    let c = std::ffi::CString::new(m.mnt.to_str().unwrap()).unwrap();
    // SAFETY: a valid path.
    assert_eq!(unsafe { libc::umount2(c.as_ptr(), 0) }, 0);
    let st = m
        .wait_bridge(Duration::from_secs(10))
        .expect("bridge exits");
    assert!(st.success(), "{st}: {}", m.log.text());
}

#[test]
fn backend_killed_mid_run_gives_enotconn_and_leaves_no_mount() {
    let mut m = ours(&[]);
    let mnt = m.mnt.clone();
    let dir = fs::File::open(&mnt).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (mnt, stop) = (mnt.clone(), stop.clone());
        std::thread::spawn(move || -> std::io::Error {
            let mut f = fs::File::create(mnt.join("stream")).unwrap();
            let chunk = vec![0x5a; 64 << 10];
            loop {
                if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_data()) {
                    return e;
                }
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return std::io::Error::other("stopped before any error");
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    m.backend.kill();
    let st = m
        .wait_bridge(Duration::from_secs(10))
        .expect("bridge exits");
    assert_eq!(st.code(), Some(1), "{}", m.log.text());
    assert!(m.log.contains("backend went away"), "{}", m.log.text());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let e = writer.join().unwrap();
    // The kernel fails a request that was in flight when the connection was
    // aborted with ECONNABORTED, and every later one with ENOTCONN; which of
    // the two the writer sees depends on where it was when the backend died.
    assert!(
        [libc::ENOTCONN, libc::ECONNABORTED].contains(&errno(&e)),
        "writer: {e}"
    );
    let e = dir.metadata().unwrap_err();
    assert_eq!(errno(&e), libc::ENOTCONN, "held directory: {e}");
    assert!(!is_fuse_mounted(&mnt), "mount left behind");
}

#[test]
fn killed_bridge_is_unmounted_by_its_watchdog() {
    let mut m = ours(&[]);
    m.signal_bridge(libc::SIGKILL);
    m.wait_bridge(Duration::from_secs(5)).expect("bridge dies");
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.is_mounted() {
        assert!(Instant::now() < deadline, "watchdog did not unmount");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn unusable_arguments_fail_before_mounting() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bridge_bin())
        .arg(dir.path().join("no-such.sock"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backend"));
    assert!(!is_fuse_mounted(dir.path()));
    let out = std::process::Command::new(common::bridge_bin())
        .args(["/x.sock", "/mnt", "--queue-size", "100"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
