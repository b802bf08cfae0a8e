//! The daemon processes a soak uses, what is measured of them, and the report.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the daemon prints once it listens on its socket ([`crate::daemons::LISTENING_LOG_LINE`]).
pub const WAITING: &str = crate::daemons::LISTENING_LOG_LINE;

/// A daemon process serving one vhost-user socket, started by the caller of [`super::run`].
#[derive(Debug)]
pub struct DaemonProcess {
    /// The socket to connect to.
    pub socket: PathBuf,
    /// The process started (in namespace sandbox mode: the supervisor of the serving process).
    pub child: Child,
    log: Option<mpsc::Receiver<String>>,
    tail: VecDeque<String>,
    panicked: bool,
}

impl DaemonProcess {
    /// Spawns `cmd` with its stderr piped and waits (up to `timeout`) for it to say it is
    /// waiting for a connection on `socket`. The log is scanned for panics from then on.
    pub fn spawn(mut cmd: Command, socket: PathBuf, timeout: Duration) -> io::Result<Self> {
        let mut child = cmd.stderr(Stdio::piped()).spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(WAITING) => break,
                Ok(l) => seen.push(l),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(io::Error::other(format!(
                        "the daemon never said it was waiting; stderr: {seen:?}"
                    )));
                }
            }
        }
        Ok(Self::with_log(socket, child, Some(rx)))
    }

    /// A daemon started some other way that is already listening on `socket` (its log is not
    /// scanned).
    pub fn from_child(socket: PathBuf, child: Child) -> Self {
        Self::with_log(socket, child, None)
    }

    fn with_log(socket: PathBuf, child: Child, log: Option<mpsc::Receiver<String>>) -> Self {
        Self {
            socket,
            child,
            log,
            tail: VecDeque::new(),
            panicked: false,
        }
    }

    /// Reads what the daemon logged since the last look; true if it panicked (ever).
    pub fn scan_log(&mut self) -> bool {
        if let Some(rx) = &self.log {
            while let Ok(l) = rx.try_recv() {
                self.panicked |= l.contains("panicked");
                if self.tail.len() == 40 {
                    self.tail.pop_front();
                }
                self.tail.push_back(l);
            }
        }
        self.panicked
    }

    /// The last lines the daemon logged.
    pub fn log_tail(&self) -> String {
        self.tail.iter().map(|l| format!("    {l}\n")).collect()
    }

    /// The process that serves the guest: the started process's child in namespace sandbox
    /// mode, else the started process.
    pub fn serving_pid(&self) -> u32 {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
            .unwrap_or(pid)
    }

    /// Waits up to `timeout` for the process to exit; its exit status description and code
    /// (`None` if killed by a signal), or `None` if still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<Option<i32>>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                std::thread::sleep(Duration::from_millis(100));
                self.scan_log();
                return Ok(Some(st.code()));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Resource use of the serving process at one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sample {
    /// Resident set size (`VmRSS`), KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: usize,
}

impl Sample {
    /// Reads `/proc/PID/status` and `/proc/PID/fd`; `None` if the process is gone.
    pub fn of(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        Some(Self { rss_kib, fds })
    }
}

impl fmt::Display for Sample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>7} KiB {:>4} fds", self.rss_kib, self.fds)
    }
}

/// One daemon process's life in a soak.
#[derive(Debug, Clone, Default)]
pub struct DaemonLife {
    /// Pid of the process started.
    pub pid: u32,
    /// Pid of the serving process.
    pub serving_pid: u32,
    /// After connect and INIT, before any file is opened.
    pub start: Sample,
    /// After each DESTROY in this daemon's life (nothing in flight, nothing open): comparable
    /// to `start`.
    pub quiescent: Vec<Sample>,
    /// Just before the frontend disconnected (requests may be in flight).
    pub end: Sample,
    /// Exit code (`None`: killed by a signal, or it did not exit).
    pub exit_code: Option<i32>,
    /// Whether it logged a panic.
    pub panicked: bool,
}

/// How much the daemon's resource use may grow (see `docs/soak.md`).
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    /// Descriptors a quiescent point may hold above the first daemon's start.
    pub fd_slack: usize,
    /// RSS growth allowed within one daemon's life (from its first DESTROY, once warmed up, to
    /// its end) and from the first daemon's end to the last's, KiB.
    pub rss_growth_kib: u64,
}

impl Default for Tolerance {
    /// 2 descriptors, 32 MiB.
    fn default() -> Self {
        Self {
            fd_slack: 2,
            rss_growth_kib: 32 << 10,
        }
    }
}

/// What a soak run did and found.
#[derive(Debug, Clone, Default)]
pub struct SoakReport {
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Operations by opcode name.
    pub ops: BTreeMap<&'static str, u64>,
    /// Errno replies by `OPCODE ERRNO`.
    pub errors: BTreeMap<String, u64>,
    /// Bytes of successful WRITEs.
    pub bytes_written: u64,
    /// Bytes checked in READ replies.
    pub bytes_verified_read: u64,
    /// Bytes checked on the host (at every session end and at the end).
    pub bytes_verified_host: u64,
    /// Acknowledged writes whose data is missing.
    pub lost_writes: u64,
    /// Blocks with torn or foreign data.
    pub corrupted_blocks: u64,
    /// Writes in flight when the frontend disconnected (either outcome is fine, whole).
    pub abandoned_writes: u64,
    /// Of those, the ones that reached the host.
    pub abandoned_landed: u64,
    /// FUSE sessions (INITs).
    pub sessions: u64,
    /// The daemon processes, in order.
    pub daemons: Vec<DaemonLife>,
    /// The first problems found, described.
    pub problems: Vec<String>,
}

impl SoakReport {
    /// Every operation the workload mixes in.
    pub const OPS: [&'static str; 12] = [
        "CREATE", "DESTROY", "FSYNC", "GETATTR", "INIT", "LOOKUP", "OPEN", "READ", "RENAME",
        "STATFS", "UNLINK", "WRITE",
    ];

    /// Bytes verified in all.
    pub fn bytes_verified(&self) -> u64 {
        self.bytes_verified_read + self.bytes_verified_host
    }

    /// Operations in all.
    pub fn total_ops(&self) -> u64 {
        self.ops.values().sum()
    }

    /// Why the run fails, if it does: lost or corrupted data, errno replies, a daemon that
    /// crashed, panicked or exited non-zero, descriptors or RSS beyond `tol`.
    pub fn failures(&self, tol: &Tolerance) -> Vec<String> {
        let mut f = Vec::new();
        if self.lost_writes > 0 || self.corrupted_blocks > 0 {
            f.push(format!(
                "{} lost writes, {} corrupted blocks",
                self.lost_writes, self.corrupted_blocks
            ));
        }
        if !self.errors.is_empty() {
            f.push(format!("error replies: {:?}", self.errors));
        }
        for (i, d) in self.daemons.iter().enumerate() {
            if d.panicked {
                f.push(format!("daemon {i} (pid {}) panicked", d.pid));
            }
            if d.exit_code != Some(0) {
                f.push(format!(
                    "daemon {i} (pid {}) exit code {:?}",
                    d.pid, d.exit_code
                ));
            }
            if let Some(q) = d
                .quiescent
                .iter()
                .find(|q| q.fds > d.start.fds + tol.fd_slack)
            {
                f.push(format!(
                    "daemon {i}: {} fds after a DESTROY, {} at its start: sessions leak \
                     descriptors",
                    q.fds, d.start.fds
                ));
            }
            if let Some(warm) = d.quiescent.first() {
                let growth = d.end.rss_kib.saturating_sub(warm.rss_kib);
                if growth > tol.rss_growth_kib {
                    f.push(format!(
                        "daemon {i}: RSS grew by {growth} KiB from its first DESTROY to its end"
                    ));
                }
            }
        }
        if let (Some(first), Some(last)) = (self.daemons.first(), self.daemons.last()) {
            if last.start.fds > first.start.fds + tol.fd_slack {
                f.push(format!(
                    "the last daemon started with {} fds, the first with {}",
                    last.start.fds, first.start.fds
                ));
            }
            let growth = last.end.rss_kib.saturating_sub(first.end.rss_kib);
            if growth > tol.rss_growth_kib {
                f.push(format!(
                    "the last daemon ended with {growth} KiB more RSS than the first"
                ));
            }
        }
        f
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl fmt::Display for SoakReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(0.001);
        writeln!(
            f,
            "soak: {:.0} s, {} operations ({:.0}/s), {} sessions, {} daemons",
            secs,
            self.total_ops(),
            self.total_ops() as f64 / secs,
            self.sessions,
            self.daemons.len()
        )?;
        writeln!(f, "  {:<10} {:>12}", "operation", "count")?;
        for (k, v) in &self.ops {
            writeln!(f, "  {k:<10} {v:>12}")?;
        }
        writeln!(f, "  bytes written        {}", mib(self.bytes_written))?;
        writeln!(
            f,
            "  bytes verified       {} (READ {}, host {})",
            mib(self.bytes_verified()),
            mib(self.bytes_verified_read),
            mib(self.bytes_verified_host)
        )?;
        writeln!(
            f,
            "  lost writes          {}\n  corrupted blocks     {}",
            self.lost_writes, self.corrupted_blocks
        )?;
        writeln!(
            f,
            "  writes in flight at a disconnect: {} ({} landed whole, {} not at all)",
            self.abandoned_writes,
            self.abandoned_landed,
            self.abandoned_writes - self.abandoned_landed
        )?;
        if self.errors.is_empty() {
            writeln!(f, "  errors               none")?;
        }
        for (k, v) in &self.errors {
            writeln!(f, "  error {k:<20} {v:>8}")?;
        }
        writeln!(
            f,
            "  {:<8} {:>8} {:>22} {:>22} {:>22} {:>6}",
            "daemon", "pid", "start", "after DESTROY (max)", "end", "exit"
        )?;
        for (i, d) in self.daemons.iter().enumerate() {
            let q = d
                .quiescent
                .iter()
                .max_by_key(|s| (s.fds, s.rss_kib))
                .map_or_else(|| "-".to_string(), |s| s.to_string());
            writeln!(
                f,
                "  {i:<8} {:>8} {:>22} {:>22} {:>22} {:>6}",
                d.serving_pid,
                d.start.to_string(),
                q,
                d.end.to_string(),
                d.exit_code
                    .map_or_else(|| "signal".into(), |c| c.to_string())
                    + if d.panicked { " PANIC" } else { "" }
            )?;
        }
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        Ok(())
    }
}
