//! The definitions in `vhost_user_fs_client::daemons` against the real binaries: every
//! configuration's command line starts each daemon, which creates its socket and logs
//! [`LISTENING_LOG_LINE`]; it serves a frontend with the documented number of request queues,
//! refuses one more, and exits when its frontend disconnects.
//!
//! async-virtiofsd must be built (`cargo build -p async-virtiofsd`, or `ASYNC_VIRTIOFSD_BIN`);
//! a reference daemon that is not installed is skipped, unless `BRIDGE_REQUIRE_ALL_DAEMONS` is
//! set (as for the bridge tests).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vhost_user_fs_client::daemons::{
    kill_process_tree, wait_listening, Kind, Options, LISTENING_LOG_LINE,
};
use vhost_user_fs_client::{DeviceConfig, Error, FsClient, FuseOps};

/// The binary of `kind`, or None (and a note) when a reference daemon is not installed.
fn binary(kind: Kind) -> Option<PathBuf> {
    let bin = kind.binary();
    let require = kind == Kind::Ours || std::env::var_os("BRIDGE_REQUIRE_ALL_DAEMONS").is_some();
    match bin {
        None if require => panic!(
            "{} binary not found (looked at {:?})",
            kind.name(),
            kind.candidates()
        ),
        None => eprintln!("SKIPPED: {} binary not found", kind.name()),
        Some(_) => {}
    }
    bin
}

/// A daemon started from the definitions; its process tree is killed on drop.
struct Started {
    child: Child,
    socket: PathBuf,
    log: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Started {
    fn new(kind: Kind, bin: &Path, opts: &Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (socket, share) = (dir.path().join("vfs.sock"), dir.path().join("share"));
        std::fs::create_dir(&share).unwrap();
        let mut child = kind
            .command(bin, &socket, &share, opts)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut s = Self {
            child,
            socket,
            log,
            _dir: dir,
        };
        let alive = |c: &mut Child| matches!(c.try_wait(), Ok(None));
        let r = wait_listening(&s.socket, Duration::from_secs(20), || alive(&mut s.child));
        assert_eq!(r, Ok(()), "{} {opts:?}: {:?}", kind.name(), s.lines());
        s
    }

    /// Everything logged so far.
    fn lines(&self) -> Vec<String> {
        self.log.try_iter().collect()
    }

    /// Waits up to `t` for `LISTENING_LOG_LINE`.
    fn logged_listening(&self, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.log.recv_timeout(left) {
                Ok(l) if l.contains(LISTENING_LOG_LINE) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn config(&self, request_queues: u16) -> DeviceConfig {
        let mut c = DeviceConfig::new(&self.socket);
        c.request_queues = request_queues;
        c.timeout = Duration::from_secs(10);
        c
    }

    /// Waits up to `t` for the daemon to exit.
    fn exited_within(&mut self, t: Duration) -> bool {
        let deadline = Instant::now() + t;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        kill_process_tree(self.child.id());
        let _ = self.child.wait();
    }
}

/// Every configuration the benchmark and the tests use starts the daemon and gets it listening.
fn starts_in_every_configuration(kind: Kind) {
    let Some(bin) = binary(kind) else { return };
    for opts in [
        Options::bench(0),
        Options::bench(64),
        Options::for_tests(kind),
    ] {
        let d = Started::new(kind, &bin, &opts);
        assert!(
            d.logged_listening(Duration::from_secs(10)),
            "{} {opts:?} never logged {LISTENING_LOG_LINE:?}",
            kind.name()
        );
    }
}

/// The documented request queues are served (INIT and a GETATTR on every one), one more is
/// refused at GET_QUEUE_NUM, and the daemon exits when its frontend disconnects.
fn serves_its_request_queues_and_exits_on_disconnect(kind: Kind) {
    let Some(bin) = binary(kind) else { return };
    let opts = Options::for_tests(kind);
    let n = kind.request_queues().min(4);
    let mut d = Started::new(kind, &bin, &opts);
    let client = FsClient::connect(d.config(n)).expect("vhost-user setup");
    client.init().unwrap();
    for q in 1..=usize::from(n) {
        client.on_queue(q).getattr(1, None).unwrap();
    }
    drop(client);
    assert!(
        d.exited_within(Duration::from_secs(10)),
        "{} still runs 10 s after its frontend left",
        kind.name()
    );

    let d = Started::new(kind, &bin, &opts);
    let more = kind.request_queues() + 1;
    match FsClient::connect(d.config(more)) {
        Err(Error::InvalidConfig(e)) => assert!(e.contains("queues"), "{e}"),
        Err(e) => panic!("{}: {more} queues: unexpected error {e}", kind.name()),
        Ok(_) => panic!("{} set up {more} request queues", kind.name()),
    }
}

#[test]
fn async_virtiofsd_starts_in_every_configuration() {
    starts_in_every_configuration(Kind::Ours);
}

#[test]
fn c_virtiofsd_starts_in_every_configuration() {
    starts_in_every_configuration(Kind::C);
}

#[test]
fn rust_virtiofsd_starts_in_every_configuration() {
    starts_in_every_configuration(Kind::Rust);
}

#[test]
fn async_virtiofsd_serves_its_request_queues_and_exits_on_disconnect() {
    serves_its_request_queues_and_exits_on_disconnect(Kind::Ours);
}

#[test]
fn c_virtiofsd_serves_its_request_queues_and_exits_on_disconnect() {
    serves_its_request_queues_and_exits_on_disconnect(Kind::C);
}

#[test]
fn rust_virtiofsd_serves_its_request_queues_and_exits_on_disconnect() {
    serves_its_request_queues_and_exits_on_disconnect(Kind::Rust);
}
