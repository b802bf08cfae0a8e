//! systemd integration of the real binary: readiness notification (NOTIFY_SOCKET, also
//! abstract `@` names, through the namespace sandbox's supervisor) and socket activation
//! (LISTEN_FDS / LISTEN_PID) with a vhost-user client on the activated socket.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{DeviceConfig, FsClient, FuseOps};

const BIN: &str = env!("CARGO_BIN_EXE_async-virtiofsd");
const WAITING: &str = "Waiting for vhost-user socket connection...";

/// Receives one notification and the pid the kernel vouches for (SCM_CREDENTIALS): systemd
/// (NotifyAccess=main, the default) only accepts messages from the process it started.
fn recv(server: &UnixDatagram) -> (String, i32) {
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let on: libc::c_int = 1;
    let mut buf = [0u8; 4096];
    let mut cmsg = [0u64; 16];
    // SAFETY: setsockopt/recvmsg on our socket, into local buffers sized in the header.
    unsafe {
        libc::setsockopt(
            server.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg);
        let n = libc::recvmsg(server.as_raw_fd(), &mut msg, 0);
        assert!(
            n >= 0,
            "a notification within 20 s: {}",
            std::io::Error::last_os_error()
        );
        let mut pid = -1;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                pid = (*(libc::CMSG_DATA(c) as *const libc::ucred)).pid;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        (
            String::from_utf8_lossy(&buf[..n as usize]).into_owned(),
            pid,
        )
    }
}

fn wait_output(mut child: Child) -> Output {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("daemon did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Starts the daemon with NOTIFY_SOCKET=`notify`, expects READY=1 (with the waiting text as
/// STATUS) while it waits, then SIGTERM → STOPPING=1 and exit 0.
fn ready_then_stopping(notify: &str, server: &UnixDatagram, sandbox: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let child = Command::new(BIN)
        .args(["--shared-dir", tmp.path().to_str().unwrap()])
        .args([
            "--socket-path",
            sock.to_str().unwrap(),
            "--sandbox",
            sandbox,
        ])
        .env("NOTIFY_SOCKET", notify)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (ready, pid) = recv(server);
    assert_eq!(ready, format!("READY=1\nSTATUS={WAITING}\n"), "{sandbox}");
    assert_eq!(
        pid,
        child.id() as i32,
        "{sandbox}: sent by the started process"
    );
    // Ready means listening.
    assert!(sock.exists());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let (stopping, pid) = recv(server);
    assert_eq!(
        pid,
        child.id() as i32,
        "{sandbox}: sent by the started process"
    );
    assert!(
        stopping.starts_with("STOPPING=1\n"),
        "{sandbox}: {stopping:?}"
    );
    let out = wait_output(child);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains(WAITING), "{log}");
}

#[test]
fn notify_socket_gets_ready_when_waiting_and_stopping_at_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify");
    let server = UnixDatagram::bind(&path).unwrap();
    // Namespace mode: sent by the sandboxed child, relayed by the supervisor (the pid systemd
    // started, the only one it listens to by default).
    ready_then_stopping(path.to_str().unwrap(), &server, "namespace");
    ready_then_stopping(path.to_str().unwrap(), &server, "chroot");
    ready_then_stopping(path.to_str().unwrap(), &server, "none");
}

#[test]
fn notify_socket_in_the_abstract_namespace() {
    let name = format!("async-virtiofsd-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let server = UnixDatagram::bind_addr(&addr).unwrap();
    ready_then_stopping(&format!("@{name}"), &server, "namespace");
}

/// Spawns the daemon socket-activated: `listener` at fd 3, LISTEN_FDS=1 and LISTEN_PID set to
/// the daemon's own pid (the shell's `$$`, which `exec` keeps).
fn activated(listener: &UnixListener, listen_pid: Option<&str>, args: &[&str]) -> Child {
    let fd = listener.as_raw_fd();
    let script = format!(
        "LISTEN_FDS=1 LISTEN_PID={} exec \"$0\" \"$@\"",
        listen_pid.unwrap_or("$$")
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(script).arg(BIN).args(args);
    cmd.stderr(Stdio::piped()).env_remove("NOTIFY_SOCKET");
    // SAFETY: dup2/fcntl are async-signal-safe; the socket lands at fd 3 without CLOEXEC.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd.spawn().unwrap()
}

fn connect_client(socket: &Path) -> FsClient {
    let mut config = DeviceConfig::new(socket);
    config.timeout = Duration::from_secs(10);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match FsClient::connect(config.clone()) {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("vhost-user setup: {e}"),
        }
    }
}

#[test]
fn socket_activation_serves_a_vhost_user_client_on_fd_3() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("hello"), b"activated").unwrap();
    let path = tmp.path().join("activated.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let child = activated(&listener, None, &["--shared-dir", share.to_str().unwrap()]);
    drop(listener); // the daemon has its own copy at fd 3
    let client = connect_client(&path);
    client.init().unwrap();
    let e = client.lookup(ROOT_ID, "hello").unwrap();
    assert_eq!(e.attr.size, 9);
    drop(client);
    let out = wait_output(child);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("frontend connected"), "{log}");
}

#[test]
fn socket_activation_with_socket_path_or_fd_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(tmp.path().join("a.sock")).unwrap();
    let sock = tmp.path().join("vfs.sock");
    for extra in [&["--socket-path", sock.to_str().unwrap()][..], &["--fd=3"]] {
        let mut args = vec!["--shared-dir", tmp.path().to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = wait_output(activated(&listener, None, &args));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains("LISTEN_FDS") && err.contains("--socket-path"),
            "{err}"
        );
    }
    assert!(!sock.exists());
}

#[test]
fn socket_activation_for_another_pid_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(tmp.path().join("a.sock")).unwrap();
    let sock = tmp.path().join("vfs.sock");
    let child = activated(
        &listener,
        Some("1"),
        &[
            "--shared-dir",
            tmp.path().to_str().unwrap(),
            "--socket-path",
            sock.to_str().unwrap(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "never listened on --socket-path");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = wait_output(child);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
