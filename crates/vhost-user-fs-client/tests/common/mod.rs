//! Starts the real daemon on a temp socket and a temp shared directory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use vhost_user_fs_client::daemons::{self, Kind};
use vhost_user_fs_client::{DeviceConfig, Errno, FsClient};

const WAITING: &str = daemons::LISTENING_LOG_LINE;

/// The daemon binary: `$ASYNC_VIRTIOFSD_BIN` (only it, when set), else the build tree's
/// ([`Kind::candidates`] of [`Kind::Ours`]). Panics (fails the test) if missing.
pub fn daemon_bin() -> PathBuf {
    let candidates: Vec<PathBuf> = match std::env::var_os(Kind::Ours.bin_env()) {
        Some(p) => vec![PathBuf::from(p)],
        None => Kind::Ours.candidates(),
    };
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "\n\n*** async-virtiofsd binary not found (looked at {candidates:?}).\n\
             *** Build it first: `cargo build -p async-virtiofsd`, or point \
             ASYNC_VIRTIOFSD_BIN at a binary.\n\n"
            )
        })
}

/// Options every daemon of the suite gets: `$ASYNC_VIRTIOFSD_TEST_ARGS`, split on spaces (e.g.
/// `--io-engine io-uring` to run the whole suite on that engine).
pub fn suite_args() -> Vec<String> {
    std::env::var("ASYNC_VIRTIOFSD_TEST_ARGS")
        .map(|a| a.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// A running daemon with its temp directory; killed on drop.
pub struct Daemon {
    child: Child,
    /// Holds the share and the socket.
    _dir: tempfile::TempDir,
    /// The shared directory (host view).
    #[allow(dead_code)] // not every test binary looks at it
    pub share: PathBuf,
    /// The vhost-user socket.
    pub socket: PathBuf,
    log: mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts the daemon with `extra` arguments and waits until it listens.
    pub fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir(&share).unwrap();
        Self::spawn(dir, share, extra)
    }

    /// Starts a daemon serving `share`, which the caller keeps (e.g. another daemon's, to take
    /// over after it).
    #[allow(dead_code)]
    pub fn start_on(share: &Path, extra: &[&str]) -> Self {
        Self::spawn(tempfile::tempdir().unwrap(), share.to_owned(), extra)
    }

    /// Starts the daemon as the unprivileged `uid`:`gid` (no supplementary groups), on a share
    /// and a socket directory that user owns.
    #[allow(dead_code)]
    pub fn start_as(uid: u32, gid: u32, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let share = dir.path().join("share");
        std::fs::create_dir(&share).unwrap();
        for p in [dir.path(), &share] {
            std::os::unix::fs::chown(p, Some(uid), Some(gid)).unwrap();
        }
        Self::spawn_as(dir, share, extra, Some((uid, gid)))
    }

    fn spawn(dir: tempfile::TempDir, share: PathBuf, extra: &[&str]) -> Self {
        Self::spawn_as(dir, share, extra, None)
    }

    fn spawn_as(
        dir: tempfile::TempDir,
        share: PathBuf,
        extra: &[&str],
        user: Option<(u32, u32)>,
    ) -> Self {
        let socket = dir.path().join("vfs.sock");
        let mut cmd = Command::new(daemon_bin());
        cmd.arg("--shared-dir")
            .arg(&share)
            .arg("--socket-path")
            .arg(&socket)
            .args(suite_args())
            .args(extra)
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            // std drops the supplementary groups when root changes the uid.
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let mut child = cmd.spawn().expect("spawning the daemon");
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match log.recv_timeout(Duration::from_secs(20)) {
                Ok(l) if l.contains(WAITING) => break,
                Ok(l) => seen.push(l),
                Err(_) => panic!("daemon never said it was waiting; stderr: {seen:#?}"),
            }
        }
        Self {
            child,
            _dir: dir,
            share,
            socket,
            log,
        }
    }

    /// A device configuration for this daemon's socket with a 10 s timeout.
    pub fn config(&self) -> DeviceConfig {
        let mut c = DeviceConfig::new(&self.socket);
        c.timeout = Duration::from_secs(10);
        c
    }

    /// Connects a client with `config` (no INIT yet).
    pub fn connect(&self, config: DeviceConfig) -> FsClient {
        FsClient::connect(config).expect("vhost-user setup")
    }

    /// Waits for the daemon to exit (after the client disconnected); returns its exit code
    /// and what it logged.
    #[allow(dead_code)] // not every test file uses every helper
    pub fn wait_exit(mut self) -> (i32, String) {
        self.wait_exit_within(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("daemon did not exit within 10 s of the disconnect"))
    }

    /// Waits up to `timeout` for the daemon to exit; its exit code (-1 if killed by a signal)
    /// and everything it logged since the last look, or `None` if it is still running.
    #[allow(dead_code)]
    pub fn wait_exit_within(&mut self, timeout: Duration) -> Option<(i32, String)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let mut log = String::new();
                while let Ok(l) = self.log.recv_timeout(Duration::from_millis(200)) {
                    log.push_str(&l);
                    log.push('\n');
                }
                return Some((st.code().unwrap_or(-1), log));
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid of the process we started (in namespace mode: the supervisor).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the daemon process is still running.
    #[allow(dead_code)]
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Everything the daemon logged since the last look (without waiting).
    #[allow(dead_code)]
    pub fn take_log(&self) -> String {
        let mut log = String::new();
        while let Ok(l) = self.log.try_recv() {
            log.push_str(&l);
            log.push('\n');
        }
        log
    }

    /// Asserts the daemon is alive and has not logged a panic; returns the log since the last
    /// look.
    #[allow(dead_code)]
    pub fn assert_alive(&mut self, what: &str) -> String {
        let log = self.take_log();
        assert!(
            !log.contains("panicked"),
            "{what}: the daemon panicked:\n{log}"
        );
        assert!(self.is_running(), "{what}: the daemon died; log:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The errno of a failed call; fails the test on success or on an error that is not an errno.
#[allow(dead_code)] // not every test binary uses every helper
pub fn errno<T: std::fmt::Debug>(r: vhost_user_fs_client::Result<T>) -> Errno {
    match r {
        Err(e) => e
            .errno()
            .unwrap_or_else(|| panic!("expected an errno reply, got {e}")),
        Ok(v) => panic!("expected an errno reply, got success {v:?}"),
    }
}

/// Sets an extended attribute of a file on the host itself (not through the daemon).
#[allow(dead_code)] // not every test binary uses every helper
pub fn host_setxattr(path: &Path, name: &str, value: &[u8]) {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a value of the given length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "host setxattr: {}", std::io::Error::last_os_error());
}

/// An extended attribute of a file, read on the host itself (not through the daemon).
#[allow(dead_code)] // not every test binary uses every helper
pub fn host_getxattr(path: &Path, name: &str) -> Vec<u8> {
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(n >= 0, "host getxattr: {}", std::io::Error::last_os_error());
    buf[..n as usize].to_vec()
}
