//! The daemon started exactly as Kata Containers' two runtimes start a virtio-fs daemon, with
//! the listening socket inherited as fd 3, serves a guest (this client) end to end.
//!
//! - Kata's Go runtime: `--syslog --cache=auto --shared-dir=DIR --fd=3 --thread-pool-size=1
//!   --announce-submounts`.
//! - Kata's runtime-rs: the same plus `--sandbox none --seccomp none --inode-file-handles=MODE`.
//!
//! (libvirt's command lines are exercised with a real libvirt by `tests/libvirt/run.sh`.)

#[allow(dead_code)] // only `daemon_bin` is used here
mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon_bin;
use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{DeviceConfig, FsClient, FuseOps};

const CREATE_EXCL: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const WAITING: &str = "Waiting for vhost-user socket connection...";

/// Runs the daemon with `args` and a listening socket at fd 3, serves one guest session
/// through it, and returns the daemon's exit code and everything it sent to syslog.
fn serve_as_kata(args: &[&str]) -> (Option<i32>, Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("from-host"), b"host data").unwrap();
    let sock = tmp.path().join("kata-vfs.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let syslog_path = tmp.path().join("syslog");
    let syslog = UnixDatagram::bind(&syslog_path).unwrap();
    syslog
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let listen_fd = listener.as_raw_fd();
    let shared_dir = format!("--shared-dir={}", share.display());
    let mut cmd = Command::new(daemon_bin());
    cmd.args(args.iter().map(|a| {
        if *a == "--shared-dir=DIR" {
            shared_dir.as_str()
        } else {
            a
        }
    }))
    .env("ASYNC_VIRTIOFSD_SYSLOG_SOCKET", &syslog_path)
    .env_remove("RUST_LOG")
    .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec: dup2 makes the listening
    // socket fd 3 (without close-on-exec), as the Kata runtimes hand it over.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear it instead.
            let r = if listen_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(listen_fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawning the daemon");
    drop(listener);
    let stderr = child.stderr.take().unwrap();
    let stderr_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });

    // Kata's runtime-rs waits for the banner; with --syslog it goes to syslog.
    let mut logged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 8192];
    while !logged.iter().any(|m: &String| m.contains(WAITING)) {
        assert!(
            Instant::now() < deadline,
            "no banner in syslog: {logged:#?}"
        );
        if let Ok(n) = syslog.recv(&mut buf) {
            logged.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let mut cfg = DeviceConfig::new(&sock);
    cfg.timeout = Duration::from_secs(10);
    let c = FsClient::connect(cfg).expect("vhost-user setup over the inherited socket");
    c.init().unwrap();
    let e = c.lookup(ROOT_ID, "from-host").unwrap();
    let o = c.open(e.nodeid, libc::O_RDONLY as u32).unwrap();
    assert_eq!(c.read(e.nodeid, o.fh, 0, 64).unwrap(), b"host data");
    c.release(e.nodeid, o.fh, 0).unwrap();
    let (e, o) = c
        .create(ROOT_ID, "from-guest", CREATE_EXCL, libc::S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(c.write(e.nodeid, o.fh, 0, b"guest data").unwrap(), 10);
    c.release(e.nodeid, o.fh, 0).unwrap();
    assert_eq!(
        std::fs::read(share.join("from-guest")).unwrap(),
        b"guest data"
    );
    drop(c);

    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not exit after the frontend disconnected");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    while let Ok(n) = syslog.recv(&mut buf) {
        logged.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let stderr = stderr_lines.join().unwrap();
    assert!(
        !stderr.iter().any(|l| l.contains("panicked"))
            && !logged.iter().any(|l| l.contains("panicked")),
        "{stderr:#?} {logged:#?}"
    );
    (code, logged)
}

/// Kata's Go runtime's command line (`DIR` is replaced by the share).
const KATA_GO: &[&str] = &[
    "--syslog",
    "--cache=auto",
    "--shared-dir=DIR",
    "--fd=3",
    "--thread-pool-size=1",
    "--announce-submounts",
];

#[test]
fn kata_go_runtime_command_line_serves_a_guest() {
    let (code, logged) = serve_as_kata(KATA_GO);
    assert_eq!(code, Some(0), "{logged:#?}");
    assert!(
        logged.iter().any(|m| m.contains("frontend disconnected")),
        "{logged:#?}"
    );
}

#[test]
fn kata_runtime_rs_command_lines_serve_a_guest() {
    for handles in ["never", "prefer", "mandatory"] {
        let opt = format!("--inode-file-handles={handles}");
        // runtime-rs: the Go runtime's line plus its own sandbox and file-handle settings.
        let mut args = KATA_GO.to_vec();
        args.extend(["--sandbox", "none", "--seccomp", "none", &opt]);
        let (code, logged) = serve_as_kata(&args);
        assert_eq!(code, Some(0), "{handles}: {logged:#?}");
    }
}
