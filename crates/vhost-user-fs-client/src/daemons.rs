//! The virtio-fs daemons this project runs: async-virtiofsd and the two reference daemons, the
//! C virtiofsd (QEMU <= 7.2, Debian's `qemu-system-common`) and the Rust virtiofsd 1.14.
//!
//! The one home of what the benchmark harness (`benches/`), the bridge tests
//! (`bin/vhost-user-fs-mount/tests`) and this crate's own tests know about them:
//! - which daemons exist, and the names reports use: [`Kind`], [`Kind::name`];
//! - where their binaries are: [`Kind::binary`], [`Kind::candidates`] (an environment
//!   override per daemon, the build tree, Debian's path, the bench-tools directory that
//!   `benches/run` installs the Rust virtiofsd into: [`bench_tools_dir`]);
//! - their command lines for a socket, a shared directory and the thread-pool / cache / xattr
//!   options of a configuration: [`Kind::args`], [`Kind::command`], [`Options`];
//! - how to tell they are listening: [`wait_for_socket`], [`wait_listening`],
//!   [`LISTENING_LOG_LINE`];
//! - what runs and what to clean up: [`process_tree`], [`kill_process_tree`];
//! - what they cannot do: [`Kind::request_queues`], [`Kind::thread_pool_works`] and the list
//!   below.
//!
//! `benches/run` (bash) installs the reference daemons at the paths this module looks at
//! ([`C_VIRTIOFSD_PATH`], [`RUST_VIRTIOFSD_VERSION`] into [`bench_tools_dir`]); a test of the
//! harness checks that the script still agrees.
//!
//! # Known incompatibilities (evidence: docs/performance.md, docs/bridge.md)
//!
//! - **The C virtiofsd dies with `--thread-pool-size` > 0** at the first burst of concurrent
//!   requests: its own seccomp filter kills it (SIGSYS, audit type 1326, syscall 204
//!   `sched_getaffinity`, which GLib 2.74's thread pool calls when it spawns a worker; the
//!   allow-list of Debian 12's QEMU 7.2 lacks it). Depth 1 survives; the parent then exits with
//!   status 1. The benchmark still runs it at `pool=64` and reports those cells skipped with the
//!   audit-log line as the reason; the tests run it with a pool of 0 ([`Options::for_tests`]).
//! - **Neither reference daemon serves more than one request queue**: both answer
//!   GET_QUEUE_NUM with 2 (hiprio + 1). A frontend that asks for more fails its setup (this
//!   crate's client: "backend has 2 queues, we need N"; so the bridge tests mount them with
//!   `--queues 1`, and the benchmark's 4-queue cells are skipped). The C virtiofsd is also
//!   reported to crash under QEMU with 4 queues; the client stops at GET_QUEUE_NUM, so that is
//!   not reached here. async-virtiofsd offers 64 request queues.
//! - **Cache mode names differ**: the C virtiofsd takes `-o cache=none|auto|always`, the Rust
//!   virtiofsd and ours `--cache never|auto|always|metadata` ([`Cache`] maps them).
//! - **Sandboxes fork**: by default both reference daemons fork into new namespaces; the
//!   process started is a parent that waits while a child serves. CPU time, peak RSS and clean-up
//!   must cover the whole [`process_tree`]. Both work as root with their default sandbox and
//!   seccomp filter, so no `--sandbox none` / `-o sandbox=chroot` is passed.
//! - **One frontend, then exit**: all three serve one frontend and exit when it disconnects
//!   (the benchmark gives them a grace period, then kills what is left of the tree).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where Debian's `qemu-system-common` (QEMU <= 7.2) installs the C virtiofsd.
pub const C_VIRTIOFSD_PATH: &str = "/usr/lib/qemu/virtiofsd";

/// The Rust virtiofsd version `benches/run` installs with `cargo install virtiofsd --version
/// 1.14.0 --locked --root DIR` (DIR: [`bench_tools_dir`]).
pub const RUST_VIRTIOFSD_VERSION: &str = "1.14.0";

/// The environment variable that moves the bench-tools directory (`benches/run` and the
/// lookup of the Rust virtiofsd agree on it).
pub const BENCH_TOOLS_ENV: &str = "BENCH_TOOLS";

/// The bench-tools directory below the user's cache directory (`$XDG_CACHE_HOME`, else
/// `$HOME/.cache`): outside the work tree, so fresh clones on the machine reuse the install.
pub const BENCH_TOOLS_SUBDIR: &str = "async-virtiofsd/bench-tools";

/// What all three daemons log on stderr once their socket listens, right before they wait in
/// accept(2) (async-virtiofsd also sends it to systemd as STATUS; Kata waits for it).
pub const LISTENING_LOG_LINE: &str = "Waiting for vhost-user socket connection...";

/// The socket file appears at bind(2), a moment before listen(2): [`wait_listening`] waits this
/// long after seeing it.
pub const BIND_TO_LISTEN: Duration = Duration::from_millis(50);

/// Thread-pool size the tests give the daemons whose pool works ([`Options::for_tests`]).
pub const TEST_THREAD_POOL_SIZE: u32 = 16;

/// A virtio-fs daemon this project runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// async-virtiofsd (this workspace).
    Ours,
    /// The C virtiofsd (QEMU <= 7.2, Debian's `qemu-system-common`).
    C,
    /// The Rust virtiofsd 1.14 (`benches/run` installs it into [`bench_tools_dir`]).
    Rust,
}

/// Looks up an environment variable (the process environment, or a fixed one in tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

impl Kind {
    /// All daemons, ours first.
    pub const ALL: [Kind; 3] = [Kind::Ours, Kind::C, Kind::Rust];
    /// The reference daemons.
    pub const REFERENCES: [Kind; 2] = [Kind::C, Kind::Rust];

    /// The name reports use (`daemon` column of the benchmark's CSV files, test output).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Ours => "async-virtiofsd",
            Kind::C => "c-virtiofsd",
            Kind::Rust => "rust-virtiofsd",
        }
    }

    /// The daemon called `name` ([`Kind::name`]).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The environment variable naming this daemon's binary.
    pub const fn bin_env(self) -> &'static str {
        match self {
            Kind::Ours => "ASYNC_VIRTIOFSD_BIN",
            Kind::C => "C_VIRTIOFSD_BIN",
            Kind::Rust => "RUST_VIRTIOFSD_BIN",
        }
    }

    /// Where the binary may be, in the order it is looked for, from the process environment
    /// (see [`Kind::candidates_in`]).
    pub fn candidates(self) -> Vec<PathBuf> {
        self.candidates_in(&|k| std::env::var_os(k))
    }

    /// Where the binary may be, in the order it is looked for, with `env` as the environment:
    /// - ours: `$ASYNC_VIRTIOFSD_BIN`, `$CARGO_TARGET_DIR/debug/async-virtiofsd`, the
    ///   workspace's `target/debug/async-virtiofsd`;
    /// - C: `$C_VIRTIOFSD_BIN`, [`C_VIRTIOFSD_PATH`];
    /// - Rust: `$BENCH_TOOLS/bin/virtiofsd`, `$RUST_VIRTIOFSD_BIN`, then `bin/virtiofsd` in the
    ///   default bench-tools directory (below `$XDG_CACHE_HOME`, else `$HOME/.cache`).
    pub fn candidates_in(self, env: EnvLookup) -> Vec<PathBuf> {
        let var = |k: &str| env(k).map(PathBuf::from);
        let mut v: Vec<PathBuf> = Vec::new();
        match self {
            Kind::Ours => {
                v.extend(var(self.bin_env()));
                if let Some(t) = var("CARGO_TARGET_DIR") {
                    v.push(t.join("debug/async-virtiofsd"));
                }
                v.push(workspace_dir().join("target/debug/async-virtiofsd"));
            }
            Kind::C => {
                v.extend(var(self.bin_env()));
                v.push(PathBuf::from(C_VIRTIOFSD_PATH));
            }
            Kind::Rust => {
                // benches/run's directory first (it is where `BENCH_TOOLS` put the install).
                v.extend(var(BENCH_TOOLS_ENV).map(|t| t.join("bin/virtiofsd")));
                v.extend(var(self.bin_env()));
                v.extend(cache_dir(env).map(|c| c.join(BENCH_TOOLS_SUBDIR).join("bin/virtiofsd")));
            }
        }
        v
    }

    /// The first of [`Kind::candidates`] that is a file, if any.
    pub fn binary(self) -> Option<PathBuf> {
        self.binary_in(&|k| std::env::var_os(k))
    }

    /// [`Kind::binary`] with `env` as the environment.
    pub fn binary_in(self, env: EnvLookup) -> Option<PathBuf> {
        self.candidates_in(env).into_iter().find(|p| p.is_file())
    }

    /// The command line for `socket`, `share` and `opts`, `opts.extra` last:
    /// - ours and the Rust virtiofsd (ours takes the Rust virtiofsd's command line):
    ///   `--socket-path S --shared-dir D --thread-pool-size N --cache MODE [--xattr]`;
    /// - the C virtiofsd:
    ///   `--socket-path=S -o source=D,cache=MODE[,xattr] --thread-pool-size=N`.
    pub fn args(self, socket: &Path, share: &Path, opts: &Options) -> Vec<String> {
        let (s, d) = (socket.display().to_string(), share.display().to_string());
        let mut a: Vec<String> = match self {
            Kind::Ours | Kind::Rust => {
                let mut a = vec![
                    "--socket-path".into(),
                    s,
                    "--shared-dir".into(),
                    d,
                    "--thread-pool-size".into(),
                    opts.thread_pool_size.to_string(),
                    "--cache".into(),
                    opts.cache.name(self).into(),
                ];
                if opts.xattr {
                    a.push("--xattr".into());
                }
                a
            }
            Kind::C => vec![
                format!("--socket-path={s}"),
                "-o".into(),
                format!(
                    "source={d},cache={}{}",
                    opts.cache.name(self),
                    if opts.xattr { ",xattr" } else { "" }
                ),
                format!("--thread-pool-size={}", opts.thread_pool_size),
            ],
        };
        a.extend(opts.extra.iter().cloned());
        a
    }

    /// A [`Command`] running `bin` with [`Kind::args`]; stdio and environment are the
    /// caller's.
    pub fn command(self, bin: &Path, socket: &Path, share: &Path, opts: &Options) -> Command {
        let mut c = Command::new(bin);
        c.args(self.args(socket, share, opts));
        c
    }

    /// Request queues the daemon serves (GET_QUEUE_NUM minus the hiprio queue): 64 for ours,
    /// 1 for each reference daemon.
    pub const fn request_queues(self) -> u16 {
        match self {
            Kind::Ours => 64,
            Kind::C | Kind::Rust => 1,
        }
    }

    /// Whether a `--thread-pool-size` above 0 survives concurrent requests. Not for the C
    /// virtiofsd: its seccomp filter kills it (see the module documentation).
    pub const fn thread_pool_works(self) -> bool {
        !matches!(self, Kind::C)
    }
}

/// The workspace root (this crate is `crates/vhost-user-fs-client`).
fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$XDG_CACHE_HOME`, else `$HOME/.cache`.
fn cache_dir(env: EnvLookup) -> Option<PathBuf> {
    env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".cache")))
}

/// The directory `benches/run` installs the Rust virtiofsd into (its `--root`):
/// `$BENCH_TOOLS`, else [`BENCH_TOOLS_SUBDIR`] below `$XDG_CACHE_HOME` or `$HOME/.cache`.
pub fn bench_tools_dir(env: EnvLookup) -> Option<PathBuf> {
    env(BENCH_TOOLS_ENV)
        .map(PathBuf::from)
        .or_else(|| cache_dir(env).map(|c| c.join(BENCH_TOOLS_SUBDIR)))
}

/// The cache option, named per daemon by [`Cache::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// No caching in the guest (`never`; the C virtiofsd's `none`).
    Never,
    /// Cache until the file changes on the host (`auto`).
    Auto,
    /// Cache everything (`always`).
    Always,
}

impl Cache {
    /// The option value `kind` understands.
    pub const fn name(self, kind: Kind) -> &'static str {
        match (self, kind) {
            (Cache::Never, Kind::C) => "none",
            (Cache::Never, _) => "never",
            (Cache::Auto, _) => "auto",
            (Cache::Always, _) => "always",
        }
    }
}

/// The options of one daemon configuration (see [`Kind::args`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `--thread-pool-size`.
    pub thread_pool_size: u32,
    /// `--cache` / `-o cache=`.
    pub cache: Cache,
    /// `--xattr` / `-o xattr`.
    pub xattr: bool,
    /// Arguments appended as they are.
    pub extra: Vec<String>,
}

impl Options {
    /// The benchmark's configuration `pool=N`: a pool of `thread_pool_size`, cache=auto, no
    /// xattrs, for all three daemons alike (the command lines in docs/performance.md).
    pub fn bench(thread_pool_size: u32) -> Self {
        Self {
            thread_pool_size,
            cache: Cache::Auto,
            xattr: false,
            extra: Vec::new(),
        }
    }

    /// The tests' configuration of `kind`: cache=auto, xattrs on, a pool of
    /// [`TEST_THREAD_POOL_SIZE`] where [`Kind::thread_pool_works`], else 0 (one thread per
    /// request).
    pub fn for_tests(kind: Kind) -> Self {
        Self {
            thread_pool_size: if kind.thread_pool_works() {
                TEST_THREAD_POOL_SIZE
            } else {
                0
            },
            cache: Cache::Auto,
            xattr: true,
            extra: Vec::new(),
        }
    }

    /// These options with `extra` appended to the command line.
    pub fn with_extra<S: Into<String>>(mut self, extra: impl IntoIterator<Item = S>) -> Self {
        self.extra.extend(extra.into_iter().map(Into::into));
        self
    }
}

/// Why a daemon's socket did not appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotListening {
    /// The daemon exited first.
    Exited,
    /// The time ran out.
    TimedOut,
}

/// Waits until `socket` exists, polling every 5 ms while `alive()` holds, for at most
/// `timeout`. The file appears at bind(2), just before listen(2): a connect may still be
/// refused for a moment. A refused connect never reaches the daemon's accept, so retrying it is
/// harmless; a connect that completes is the daemon's one frontend (it exits when that
/// disconnects), so never probe with a connection you then drop.
pub fn wait_for_socket(
    socket: &Path,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
) -> Result<(), NotListening> {
    let deadline = Instant::now() + timeout;
    loop {
        if socket.exists() {
            return Ok(());
        }
        if !alive() {
            return Err(NotListening::Exited);
        }
        if Instant::now() >= deadline {
            return Err(NotListening::TimedOut);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// [`wait_for_socket`], then [`BIND_TO_LISTEN`] for the listen(2) that follows the bind(2).
pub fn wait_listening(
    socket: &Path,
    timeout: Duration,
    alive: impl FnMut() -> bool,
) -> Result<(), NotListening> {
    wait_for_socket(socket, timeout, alive)?;
    std::thread::sleep(BIND_TO_LISTEN);
    Ok(())
}

/// `pid` and all its descendants (from the parent pids in /proc), `pid` first: a reference
/// daemon's sandboxed child serves while the process started waits.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(pp) = parent_pid(p) {
                parent_of.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(
            parent_of
                .iter()
                .filter(|&&(_, pp)| pp == cur)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    out
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat).
fn parent_pid(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Fields of /proc/PID/stat after the `(comm)` (which may hold spaces): index 0 is the state
/// (field 3), 1 the parent pid, 11 utime, 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU time (user + system, all threads) of process `pid` so far, in seconds; 0 for a process
/// that is gone.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let Some(f) = stat_fields(pid) else {
        return 0.0;
    };
    let ticks: u64 = f
        .get(11..13)
        .map(|v| v.iter().filter_map(|s| s.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    clock_ticks_seconds(ticks)
}

/// Seconds of `ticks` clock ticks, the unit of CPU times in `/proc` (`USER_HZ`).
pub fn clock_ticks_seconds(ticks: u64) -> f64 {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// SIGKILLs `pid` and every descendant ([`process_tree`]), now. The caller still reaps its
/// own child.
pub fn kill_process_tree(pid: u32) {
    for p in process_tree(pid) {
        // SAFETY: plain kill(2).
        unsafe { libc::kill(p as libc::pid_t, libc::SIGKILL) };
    }
}

#[cfg(test)]
#[path = "daemons_tests.rs"]
mod tests;
