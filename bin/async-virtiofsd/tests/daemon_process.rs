//! The daemon binary as a process: exit codes, messages, signals, the socket file, disconnects.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_async-virtiofsd");
const WAITING: &str = "Waiting for vhost-user socket connection...";

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Starts the daemon and waits for its "Waiting for ..." line; returns the process and a channel
/// carrying the rest of its stderr.
fn start(share: &Path, socket: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["--shared-dir", share.to_str().unwrap()])
        .args(["--socket-path", socket.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = forward_lines(child.stderr.take().unwrap());
    // Setup lines (limits, confinement) come first.
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("daemon never said it was waiting: {seen:#?}"));
        if line.contains(WAITING) {
            break;
        }
        seen.push(line);
    }
    (child, rx)
}

fn forward_lines(stderr: ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_exit(child: &mut Child) -> i32 {
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().expect("exited normally, not by a signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    panic!("daemon did not exit within 10 s");
}

fn rest(rx: &mpsc::Receiver<String>) -> String {
    let mut out = String::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(500)) {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn invalid_option_values_exit_2_with_one_line() {
    let o = run(&[
        "--shared-dir=/tmp",
        "--socket-path=/tmp/x",
        "--cache=sometimes",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--cache") && err.contains("never, auto, always, metadata"),
        "{err}"
    );

    let o = run(&["-o", "source=/tmp,bogus", "--socket-path=/tmp/x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("bogus"));

    let o = run(&["--socket-path=/tmp/x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("--shared-dir"));
}

#[test]
fn bad_quota_values_exit_2_with_one_line() {
    for (arg, says) in [
        ("--max-bytes=0", "at least 1"),
        ("--max-bytes=10Q", "K, M, G or T"),
        ("--max-inodes=0", "at least 1"),
        ("--max-inodes=many", "whole number"),
    ] {
        let o = run(&["--shared-dir=/tmp", "--socket-path=/tmp/x", arg]);
        assert_eq!(o.status.code(), Some(2), "{arg}");
        let err = stderr_of(&o);
        assert_eq!(err.lines().count(), 1, "{arg}: {err}");
        assert!(
            err.contains(arg.split('=').next().unwrap()) && err.contains(says),
            "{err}"
        );
    }
}

#[test]
fn help_and_version_exit_0() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--thread-pool-size"));
    let o = run(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn unusable_shared_dir_exits_1_and_creates_no_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("s");
    let missing = tmp.path().join("missing");
    let o = run(&[
        "--shared-dir",
        missing.to_str().unwrap(),
        "--socket-path",
        sock.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("No such file"), "{}", stderr_of(&o));
    assert!(!sock.exists());

    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let o = run(&[
        "--shared-dir",
        file.to_str().unwrap(),
        "--socket-path",
        sock.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("not a directory"));
}

#[test]
fn inode_file_handles_mandatory_without_handles_exits_1_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("s");
    let share = tmp.path().to_str().unwrap();
    let sock_arg = sock.to_str().unwrap();
    let cases: [(&[&str], &str); 2] = [
        // Without the capability open_by_handle_at needs (namespace sandbox, the default).
        (
            &["--shared-dir", share, "--modcaps=-dac_read_search"],
            "CAP_DAC_READ_SEARCH",
        ),
        // On a filesystem that makes no handles.
        (
            &["--shared-dir", "/proc/sys/fs", "--sandbox=none"],
            "does not support file handles",
        ),
    ];
    for (args, why) in cases {
        let o = run(&[
            args,
            &["--socket-path", sock_arg, "--inode-file-handles=mandatory"],
        ]
        .concat());
        let err = stderr_of(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        let errors: Vec<_> = err.lines().filter(|l| l.contains("error")).collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(
            errors[0].starts_with("async-virtiofsd: error: --inode-file-handles=mandatory: ")
                && errors[0].contains(why),
            "{err}"
        );
        assert!(!sock.exists(), "{args:?}: the socket is removed");
    }
}

#[test]
fn unwritable_socket_place_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let o = run(&[
        "--shared-dir",
        tmp.path().to_str().unwrap(),
        "--socket-path",
        "/nonexistent-dir/vfs.sock",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("/nonexistent-dir/vfs.sock"));
}

#[test]
fn second_daemon_on_a_live_socket_fails_and_leaves_it_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let (mut first, rx) = start(tmp.path(), &sock);
    let o = run(&[
        "--shared-dir",
        tmp.path().to_str().unwrap(),
        "--socket-path",
        sock.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("in use"), "{}", stderr_of(&o));
    assert!(sock.exists(), "the live daemon's socket was removed");
    // The first daemon still works: it accepts a frontend.
    drop(UnixStream::connect(&sock).expect("first daemon still listening"));
    assert_eq!(wait_exit(&mut first), 0);
    drop(rx);
}

#[test]
fn sigterm_while_waiting_exits_0_and_removes_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let (mut child, rx) = start(tmp.path(), &sock);
    assert!(sock.exists());
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut child), 0);
    assert!(rest(&rx).contains("SIGTERM"));
    assert!(!sock.exists(), "socket file left behind");
}

/// A SIGTERM that arrives while the daemon starts (a caller giving up at once) is never lost:
/// before the sandbox forks it kills the process as any untouched process, from then on the
/// supervisor and the daemon (PID 1 of its namespace, which would drop it) hold it until their
/// handlers are in place, and the daemon exits 0. Never a daemon left running.
#[test]
fn sigterm_during_startup_stops_the_daemon_at_any_moment() {
    for delay_us in (0..12_000).step_by(200) {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("vfs.sock");
        let mut child = Command::new(BIN)
            .args(["--shared-dir", tmp.path().to_str().unwrap()])
            .args(["--socket-path", sock.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_micros(delay_us));
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("SIGTERM {delay_us} us after start: the daemon did not stop");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert!(
            status.code() == Some(0) || status.signal() == Some(libc::SIGTERM),
            "SIGTERM {delay_us} us after start: {status:?}"
        );
    }
}

#[test]
fn frontend_disconnect_exits_0_with_a_log_line() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let (mut child, rx) = start(tmp.path(), &sock);
    let conn = UnixStream::connect(&sock).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(conn);
    assert_eq!(wait_exit(&mut child), 0);
    let log = rest(&rx);
    assert!(log.contains("frontend disconnected"), "{log}");
    assert!(log.contains("request pipeline stopped"), "{log}");
    assert!(!sock.exists());
}

#[test]
fn sigterm_while_serving_a_frontend_exits_0_and_removes_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let (mut child, rx) = start(tmp.path(), &sock);
    let _frontend = UnixStream::connect(&sock).unwrap();
    // Wait until the daemon has accepted the frontend.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("daemon went quiet");
        if line.contains("frontend connected") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never connected");
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(wait_exit(&mut child), 0);
    let log = rest(&rx);
    assert!(log.contains("SIGTERM received, shutting down"), "{log}");
    assert!(log.contains("request pipeline stopped"), "{log}");
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn sandbox_none_removes_its_socket_under_seccomp() {
    // The daemon itself removes the socket at exit, under the seccomp filter.
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let mut child = Command::new(BIN)
        .args(["--shared-dir", tmp.path().to_str().unwrap()])
        .args(["--socket-path", sock.to_str().unwrap(), "--sandbox=none"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = forward_lines(child.stderr.take().unwrap());
    while !rx
        .recv_timeout(Duration::from_secs(20))
        .expect("never waiting")
        .contains(WAITING)
    {}
    drop(UnixStream::connect(&sock).unwrap());
    assert_eq!(wait_exit(&mut child), 0, "{}", rest(&rx));
    assert!(!sock.exists(), "socket file left behind");
}

/// libvirt runs `BINARY --print-capabilities` with no other option, parses stdout as JSON and
/// reads `features` (qemuVhostUserFillFSCapabilities): `separate-options` makes it pass
/// `--shared-dir`, `--cache`, `--sandbox`, ... instead of one `-o` list.
#[test]
fn print_capabilities_is_the_json_libvirt_reads() {
    let o = run(&["--print-capabilities"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr_of(&o));
    assert!(o.stderr.is_empty(), "{}", stderr_of(&o));
    let caps: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(caps["type"], "fs");
    let features: Vec<&str> = caps["features"]
        .as_array()
        .expect("features is a list")
        .iter()
        .map(|f| f.as_str().expect("features are strings"))
        .collect();
    assert_eq!(
        features,
        [
            "posix-acl-negotiation-mode",
            "security-label-negotiation-mode",
            "separate-options"
        ]
    );
    // Nothing we do not have: no live migration.
    assert!(!features.contains(&"migrate-precopy"));
    // Each one is true of the command line: the negotiation modes are accepted (a share that
    // cannot be opened is exit 1; a usage error would be 2), a bad mode is not, and the options
    // a manager passes separately are taken.
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("s");
    let sock = sock.to_str().unwrap();
    let with = |extra: &[&str]| {
        let mut args = vec!["--shared-dir=/nonexistent/share", "--socket-path", sock];
        args.extend_from_slice(extra);
        let o = run(&args);
        (o.status.code(), stderr_of(&o))
    };
    for option in ["--posix-acl", "--security-label"] {
        for mode in ["always", "auto", "never"] {
            let (code, err) = with(&[&format!("{option}={mode}")]);
            assert_eq!(code, Some(1), "{option}={mode}: {err}");
        }
        let (code, err) = with(&[&format!("{option}=sometimes")]);
        assert_eq!(code, Some(2), "{option}=sometimes: {err}");
    }
    let (code, err) = with(&["--cache=never", "--sandbox=chroot", "--xattr"]);
    assert_eq!(code, Some(1), "separate options: {err}");
    // With other options too (ours are still checked by clap, not required).
    let o = run(&["--print-capabilities", "--cache=never"]);
    assert_eq!(o.status.code(), Some(0));
}

/// Receives datagrams until one contains `until` (or 20 s pass).
fn recv_until(server: &std::os::unix::net::UnixDatagram, until: &str) -> Vec<String> {
    server
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = server
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no '{until}' in {got:#?}: {e}"));
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        let done = msg.contains(until);
        got.push(msg);
        if done {
            return got;
        }
    }
}

#[test]
fn syslog_gets_rfc3164_datagrams_with_severities_and_the_log_level() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let log = tmp.path().join("log");
    let server = std::os::unix::net::UnixDatagram::bind(&log).unwrap();
    let sock = tmp.path().join("vfs.sock");
    // Namespace sandbox (the default): connected before the root moves.
    let child = Command::new(BIN)
        .args(["--shared-dir", share.to_str().unwrap()])
        .args(["--socket-path", sock.to_str().unwrap()])
        // A warning: file handles without the capability they need.
        .args(["--syslog", "--inode-file-handles=prefer"])
        .args(["--modcaps=-dac_read_search"])
        .env("ASYNC_VIRTIOFSD_SYSLOG_SOCKET", &log)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut msgs = recv_until(&server, WAITING);
    drop(UnixStream::connect(&sock).unwrap());
    msgs.extend(recv_until(&server, "request pipeline stopped"));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stderr.is_empty(), "{}", stderr_of(&out));
    let tag = format!(" async-virtiofsd[{pid}]: ");
    for m in &msgs {
        // <PRI>Mmm dd hh:mm:ss TAG[PID]: ...
        let stamp = m.split_once('>').unwrap().1;
        assert!(m.starts_with('<') && stamp[15..].starts_with(&tag), "{m}");
        assert!(!m.contains('\n'), "{m}");
    }
    let find = |text: &str| msgs.iter().find(|m| m.contains(text)).unwrap().clone();
    assert!(find(WAITING).starts_with("<14>"), "user.info");
    assert!(
        find("--inode-file-handles").starts_with("<12>"),
        "user.warning"
    );

    // --log-level warn: no info datagram.
    let child = Command::new(BIN)
        .args(["--shared-dir", share.to_str().unwrap()])
        .args(["--socket-path", sock.to_str().unwrap()])
        .args([
            "--syslog",
            "--log-level=warn",
            "--inode-file-handles=prefer",
            "--modcaps=-dac_read_search",
        ])
        .env("ASYNC_VIRTIOFSD_SYSLOG_SOCKET", &log)
        .env_remove("RUST_LOG")
        .spawn()
        .unwrap();
    let mut msgs = recv_until(&server, "inode-file-handles");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&sock).is_err() {
        assert!(std::time::Instant::now() < deadline, "never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    server.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = server.recv(&mut buf) {
        msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    for m in &msgs {
        let pri: u8 = m[1..m.find('>').unwrap()].parse().unwrap();
        assert!(pri / 8 == 1 && pri % 8 <= 4, "below --log-level warn: {m}");
    }
}

#[test]
fn syslog_socket_missing_warns_and_logs_to_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let mut child = Command::new(BIN)
        .args(["--shared-dir", tmp.path().to_str().unwrap()])
        .args(["--socket-path", sock.to_str().unwrap(), "--syslog"])
        .env("ASYNC_VIRTIOFSD_SYSLOG_SOCKET", tmp.path().join("no-log"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = forward_lines(child.stderr.take().unwrap());
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(
        first.contains("WARN") && first.contains("--syslog") && first.contains("no-log"),
        "{first}"
    );
    while !rx
        .recv_timeout(Duration::from_secs(20))
        .expect("never waiting")
        .contains(WAITING)
    {}
    drop(UnixStream::connect(&sock).unwrap());
    assert_eq!(wait_exit(&mut child), 0);
}

/// A group other than root's, from /etc/group.
fn some_group() -> (String, u32) {
    let groups = std::fs::read_to_string("/etc/group").unwrap();
    groups
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.parse::<u32>().ok()?))
        })
        .find(|(_, gid)| *gid != 0)
        .expect("a non-root group in /etc/group")
}

#[test]
fn socket_group_owns_the_socket_with_group_access() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (group, gid) = some_group();
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let mut child = Command::new(BIN)
        .args(["--shared-dir", tmp.path().to_str().unwrap()])
        .args([
            "--socket-path",
            sock.to_str().unwrap(),
            "--socket-group",
            &group,
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = forward_lines(child.stderr.take().unwrap());
    while !rx
        .recv_timeout(Duration::from_secs(20))
        .expect("never waiting")
        .contains(WAITING)
    {}
    let md = std::fs::symlink_metadata(&sock).unwrap();
    assert_eq!(md.gid(), gid, "{group}");
    assert_eq!(md.permissions().mode() & 0o777, 0o770);
    drop(UnixStream::connect(&sock).unwrap());
    assert_eq!(wait_exit(&mut child), 0);

    let o = run(&[
        "--shared-dir",
        tmp.path().to_str().unwrap(),
        "--socket-path",
        sock.to_str().unwrap(),
        "--socket-group",
        "no-such-group-here",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr_of(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no-such-group-here") && err.contains("no such group"),
        "{err}"
    );
    assert!(!sock.exists(), "the socket is removed again");
    // Only for a socket we create.
    let o = run(&["--shared-dir=/tmp", "--fd=3", "--socket-group", &group]);
    assert_eq!(o.status.code(), Some(2));
}

/// `--tag`: a frontend that negotiates VHOST_USER_PROTOCOL_F_CONFIG reads the tag and the number
/// of request queues from the config space; without `--tag` the feature is not offered.
#[test]
fn tag_is_in_the_config_space() {
    use vhost::vhost_user::message::{
        VhostUserConfigFlags, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
    };
    use vhost::vhost_user::{Frontend, VhostUserFrontend};
    use vhost::VhostBackend;

    let protocol_features = |extra: &[&str]| {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("vfs.sock");
        let mut child = Command::new(BIN)
            .args(["--shared-dir", tmp.path().to_str().unwrap()])
            .args(["--socket-path", sock.to_str().unwrap()])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = forward_lines(child.stderr.take().unwrap());
        while !rx
            .recv_timeout(Duration::from_secs(20))
            .expect("never waiting")
            .contains(WAITING)
        {}
        let mut frontend = Frontend::connect(&sock, 65).unwrap();
        frontend.set_owner().unwrap();
        let features = frontend.get_features().unwrap();
        assert_ne!(
            features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            0
        );
        frontend.set_features(features).unwrap();
        let pf = frontend.get_protocol_features().unwrap();
        let config = if pf.contains(VhostUserProtocolFeatures::CONFIG) {
            frontend
                .set_protocol_features(VhostUserProtocolFeatures::CONFIG)
                .unwrap();
            let (_, space) = frontend
                .get_config(0, 40, VhostUserConfigFlags::empty(), &[0u8; 40])
                .unwrap();
            Some(space)
        } else {
            None
        };
        drop(frontend);
        assert_eq!(wait_exit(&mut child), 0);
        config
    };
    let space = protocol_features(&["--tag", "myfs"]).expect("CONFIG offered with --tag");
    assert_eq!(&space[..4], b"myfs");
    assert!(space[4..36].iter().all(|&b| b == 0), "NUL padded");
    let queues = u32::from_le_bytes(space[36..40].try_into().unwrap());
    assert!(queues >= 1, "num_request_queues {queues}");
    assert_eq!(protocol_features(&[]), None, "no CONFIG without --tag");
}

/// The process that reads the daemon's stderr goes away (a supervisor that died, a closed
/// journal pipe): logging into the broken pipe must not kill the daemon, which serves on and
/// exits 0 when the frontend disconnects. (tracing-subscriber reports a failed write with
/// `eprintln!`, which panics on a broken stderr; seccomp then killed the panicking daemon.)
#[test]
fn a_closed_stderr_does_not_kill_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("vfs.sock");
    let mut child = Command::new(BIN)
        .args(["--shared-dir", tmp.path().to_str().unwrap()])
        .args(["--socket-path", sock.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains(WAITING) {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no banner");
    }
    drop(stderr); // the reader is gone: every log line from now on hits EPIPE
    let conn = UnixStream::connect(&sock).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(conn);
    assert_eq!(wait_exit(&mut child), 0, "exit code with a broken stderr");
}
