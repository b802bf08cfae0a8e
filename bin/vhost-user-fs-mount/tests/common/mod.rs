//! Test harness: backend daemons on temp sockets and bridge mounts that never outlive a test.
//!
//! Every mount is held by a [`Mounted`] guard: on drop (a passing test, a failing assertion or a
//! panic) it stops the bridge, lazily unmounts the mount point if anything is still mounted
//! there and kills the backend. The bridge's own watchdog covers a test process that dies
//! outright.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use vhost_user_fs_client::daemons::{self, NotListening, Options};
use vhost_user_fs_mount::mount;

/// The backends the suite runs against, their binaries ([`Kind::binary`]: `$ASYNC_VIRTIOFSD_BIN`,
/// `$C_VIRTIOFSD_BIN`, `$RUST_VIRTIOFSD_BIN` override the defaults) and command lines: one
/// definition with the benchmark's, in `vhost_user_fs_client::daemons`.
pub use vhost_user_fs_client::daemons::Kind;

/// The tests' command line of `kind` ([`Options::for_tests`]: cache=auto, xattrs on, a pool of
/// 16 threads, none for the C virtiofsd, whose pool its own seccomp filter kills) with
/// `daemon_args` appended; ours also gets `$ASYNC_VIRTIOFSD_TEST_ARGS` (split on spaces, e.g.
/// `--io-engine io-uring` to run the suite on that engine).
pub fn command_line(kind: Kind, socket: &Path, share: &Path, daemon_args: &[&str]) -> Vec<String> {
    let suite: Vec<String> = match kind {
        Kind::Ours => std::env::var("ASYNC_VIRTIOFSD_TEST_ARGS")
            .map(|a| a.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    kind.args(
        socket,
        share,
        &Options::for_tests(kind)
            .with_extra(suite)
            .with_extra(daemon_args.iter().copied()),
    )
}

/// Request queues the bridge sets up on `kind`: 2 where the daemon serves them, else 1 (the
/// reference daemons serve one, and a frontend asking for more fails its setup).
pub fn bridge_queues(kind: Kind) -> u16 {
    kind.request_queues().min(2)
}

/// Whether a missing reference daemon fails the test (CI) instead of skipping it.
pub fn require_all() -> bool {
    std::env::var_os("BRIDGE_REQUIRE_ALL_DAEMONS").is_some()
}

/// Collects a child's stderr lines.
#[derive(Clone, Default)]
pub struct LogLines(Arc<Mutex<Vec<String>>>);

impl LogLines {
    fn follow(&self, r: impl std::io::Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(r).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        });
    }
    /// Everything so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
    /// Whether some line contains `s`.
    pub fn contains(&self, s: &str) -> bool {
        self.0.lock().unwrap().iter().any(|l| l.contains(s))
    }
}

/// A backend daemon; killed (with its forked sandbox children) on drop.
pub struct Backend {
    pub kind: Kind,
    child: Option<Child>,
    pub socket: PathBuf,
    pub share: PathBuf,
    pub log: LogLines,
}

impl Backend {
    /// Starts `kind` on `socket` sharing `share`; waits until the socket exists.
    pub fn start(kind: Kind, bin: &Path, socket: &Path, share: &Path) -> Backend {
        Self::start_with_env(kind, bin, socket, share, &[])
    }

    /// [`Backend::start`] with extra environment variables (a `RUST_LOG` to see requests).
    pub fn start_with_env(
        kind: Kind,
        bin: &Path,
        socket: &Path,
        share: &Path,
        env: &[(&str, &str)],
    ) -> Backend {
        Self::start_with(kind, bin, socket, share, env, &[])
    }

    /// [`Backend::start_with_env`] with options added to the daemon's command line.
    pub fn start_with(
        kind: Kind,
        bin: &Path,
        socket: &Path,
        share: &Path,
        env: &[(&str, &str)],
        daemon_args: &[&str],
    ) -> Backend {
        let mut child = Command::new(bin)
            .args(command_line(kind, socket, share, daemon_args))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let log = LogLines::default();
        log.follow(child.stderr.take().unwrap());
        let mut b = Backend {
            kind,
            child: Some(child),
            socket: socket.to_path_buf(),
            share: share.to_path_buf(),
            log,
        };
        match daemons::wait_listening(socket, Duration::from_secs(20), || b.alive()) {
            Ok(()) => b,
            Err(NotListening::Exited) => panic!(
                "{} exited before creating its socket: {}",
                kind.name(),
                b.log.text()
            ),
            Err(NotListening::TimedOut) => panic!("{}: no socket after 20 s", kind.name()),
        }
    }

    /// The pid of the process we started (in a namespace sandbox: the supervisor, whose only
    /// child serves).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGKILLs the daemon and everything it forked, now.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            daemons::kill_process_tree(c.id());
            let _ = c.wait();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The bridge binary of this package.
pub fn bridge_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vhost-user-fs-mount"))
}

/// A live bridge mount. Dropping it stops the bridge, makes sure nothing stays mounted on the
/// mount point, and kills the backend.
pub struct Mounted {
    pub backend: Backend,
    bridge: Option<Child>,
    pub mnt: PathBuf,
    pub log: LogLines,
    _dir: Option<tempfile::TempDir>,
}

impl Mounted {
    /// Starts `kind` over a fresh temp share and mounts it through the bridge with `extra`
    /// bridge arguments. None if the daemon binary is missing (and not required).
    pub fn start(kind: Kind, extra: &[&str]) -> Option<Mounted> {
        Self::start_with_env(kind, &[], extra)
    }

    /// [`Mounted::start`] with extra environment variables for the backend.
    pub fn start_with_env(kind: Kind, env: &[(&str, &str)], extra: &[&str]) -> Option<Mounted> {
        Self::start_with(kind, env, &[], extra)
    }

    /// [`Mounted::start_with_env`] with options added to the daemon's command line.
    pub fn start_with(
        kind: Kind,
        env: &[(&str, &str)],
        daemon_args: &[&str],
        extra: &[&str],
    ) -> Option<Mounted> {
        let Some(bin) = kind.binary() else {
            assert!(
                !require_all(),
                "{} binary not found and BRIDGE_REQUIRE_ALL_DAEMONS is set",
                kind.name()
            );
            eprintln!("SKIPPED: {} binary not found", kind.name());
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("vufs-bridge-")
            .tempdir()
            .unwrap();
        let share = dir.path().join("share");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&share).unwrap();
        std::fs::create_dir(&mnt).unwrap();
        // The share must be reachable by the unprivileged test users.
        set_mode(dir.path(), 0o755);
        set_mode(&share, 0o777);
        let socket = dir.path().join("vfs.sock");
        let backend = Backend::start_with(kind, &bin, &socket, &share, env, daemon_args);
        let mut m = Self::attach(backend, &mnt, extra);
        m._dir = Some(dir);
        Some(m)
    }

    /// Mounts an already running backend on `mnt`.
    pub fn attach(backend: Backend, mnt: &Path, extra: &[&str]) -> Mounted {
        let mut child = Command::new(bridge_bin())
            .arg(&backend.socket)
            .arg(mnt)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the bridge");
        let log = LogLines::default();
        log.follow(child.stderr.take().unwrap());
        let mut m = Mounted {
            backend,
            bridge: Some(child),
            mnt: mnt.to_path_buf(),
            log,
            _dir: None,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !m.log.contains("FUSE session up") {
            if let Some(st) = m.bridge_status() {
                panic!(
                    "bridge exited ({st}) before the session was up:\n{}\nbackend log:\n{}",
                    m.log.text(),
                    m.backend.log.text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no FUSE session after 20 s:\n{}",
                m.log.text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        m
    }

    /// The bridge's exit status if it exited.
    pub fn bridge_status(&mut self) -> Option<std::process::ExitStatus> {
        self.bridge
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The bridge's pid.
    pub fn bridge_pid(&self) -> u32 {
        self.bridge.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends `sig` to the bridge.
    pub fn signal_bridge(&self, sig: i32) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.bridge_pid() as i32, sig) };
    }

    /// Waits up to `t` for the bridge to exit.
    pub fn wait_bridge(&mut self, t: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + t;
        loop {
            if let Some(s) = self.bridge_status() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether a FUSE mount sits on the mount point.
    pub fn is_mounted(&self) -> bool {
        is_fuse_mounted(&self.mnt)
    }
}

/// Whether a FUSE mount sits on `mnt`.
pub fn is_fuse_mounted(mnt: &Path) -> bool {
    mount::mounts()
        .iter()
        .any(|m| m.mountpoint == mnt && m.fuse_device().is_some())
}

/// Lazily unmounts every FUSE mount on `mnt`.
pub fn force_unmount(mnt: &Path) {
    let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
    for _ in 0..8 {
        if !is_fuse_mounted(mnt) {
            return;
        }
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut c) = self.bridge.take() {
            // SAFETY: plain kill(2) on our child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(8);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        force_unmount(&self.mnt);
        self.backend.kill();
        // Wait for the watchdog too (it may still be detaching).
        let deadline = Instant::now() + Duration::from_secs(2);
        while is_fuse_mounted(&self.mnt) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        force_unmount(&self.mnt);
    }
}

/// chmod.
pub fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `std::sync::mpsc` re-export for tests.
pub type Rx<T> = mpsc::Receiver<T>;

/// Runs `f` on a fresh thread whose credentials (only that thread's: raw system calls, not the
/// glibc wrappers that change every thread) are `uid`, `gid` and supplementary `groups`. With
/// non-zero uids the thread has no capabilities, like any unprivileged process.
pub fn as_user<T: Send + 'static>(
    uid: u32,
    gid: u32,
    groups: &[u32],
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let groups = groups.to_vec();
    std::thread::spawn(move || {
        // SAFETY: raw credential system calls on this thread only; the thread ends after `f`.
        unsafe {
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                0,
                "setgroups"
            );
            assert_eq!(
                libc::syscall(libc::SYS_setresgid, gid, gid, gid),
                0,
                "setresgid"
            );
            assert_eq!(
                libc::syscall(libc::SYS_setresuid, uid, uid, uid),
                0,
                "setresuid"
            );
        }
        f()
    })
    .join()
    .expect("user thread panicked")
}

/// errno of an io::Error (0 if none).
pub fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}
