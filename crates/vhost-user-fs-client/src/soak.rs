//! A soak test: a guest's whole life against a virtio-fs backend.
//!
//! [`run`] keeps `depth` requests in flight over all request queues for `duration`: WRITEs of
//! self-describing checksummed blocks, READs checked against an in-memory model of what each
//! file must hold, and CREATE / UNLINK / RENAME / GETATTR / LOOKUP / FSYNC / STATFS mixed in.
//! Every `destroy_every` it drains, sends DESTROY, checks every file on the host, INITs a new
//! session and opens the files again; every `reconnect_every` it disconnects with requests in
//! flight (the daemon must exit 0 by itself), checks the host (each write in flight then must
//! be there whole or not at all), starts a new daemon on the same share and goes on. The
//! [`SoakReport`] says what ran, what was verified, and what the daemons used
//! ([`SoakReport::failures`] applies the pass criteria).
//!
//! Daemons come from the caller ([`DaemonProcess::spawn`] is the usual way), so the soak works
//! against any backend binary.

mod model;
mod report;
mod worker;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use report::{DaemonLife, DaemonProcess, Sample, SoakReport, Tolerance, WAITING};

use self::model::{Model, Slot};
use self::worker::{Ctx, Op, Rng};
use crate::abi::ROOT_ID;
use crate::{DeviceConfig, FsClient, FuseOps};

/// Name of the directory the soak works in, inside the share (emptied at the start).
pub const SOAK_DIR: &str = "soak";

/// What a soak run does.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// How long the workload runs.
    pub duration: Duration,
    /// Request queues (the hiprio queue comes on top).
    pub queues: u16,
    /// Requests in flight in total, spread over the request queues.
    pub depth: usize,
    /// Files the workload keeps (each is re-created, renamed and unlinked now and then).
    pub files: usize,
    /// Size of each file when all its blocks are written, bytes (a multiple of `block_size`).
    pub file_size: u64,
    /// Bytes of each WRITE and READ, the unit of verification.
    pub block_size: usize,
    /// Seed of the workload and of the block contents.
    pub seed: u64,
    /// DESTROY + INIT cycle interval (`None`: never).
    pub destroy_every: Option<Duration>,
    /// Disconnect + new daemon interval (`None`: never).
    pub reconnect_every: Option<Duration>,
    /// Interval of the progress lines on stderr (`None`: quiet).
    pub progress_every: Option<Duration>,
    /// How long a request may take before the daemon counts as stalled.
    pub timeout: Duration,
}

impl Default for SoakConfig {
    /// One minute, 4 queues, depth 256, 16 files of 4 MiB in 64 KiB blocks, DESTROY every 20 s,
    /// a new daemon every 30 s, progress every 10 s.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(60),
            queues: 4,
            depth: 256,
            files: 16,
            file_size: 4 << 20,
            block_size: 64 << 10,
            seed: 1,
            destroy_every: Some(Duration::from_secs(20)),
            reconnect_every: Some(Duration::from_secs(30)),
            progress_every: Some(Duration::from_secs(10)),
            timeout: Duration::from_secs(30),
        }
    }
}

/// Why a soak could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    /// The configuration is not usable.
    #[error("invalid soak configuration: {0}")]
    Config(String),
    /// The share could not be read or prepared on the host.
    #[error("host share {0}: {1}")]
    Host(PathBuf, #[source] io::Error),
    /// A daemon could not be started.
    #[error("starting a daemon: {0}")]
    Start(#[source] io::Error),
    /// The run stopped early (the daemon stalled, crashed or broke the protocol); the report
    /// says what happened until then.
    #[error("soak aborted: {reason}")]
    Aborted {
        /// What went wrong, with the daemon's last log lines.
        reason: String,
        /// The report up to the abort.
        report: Box<SoakReport>,
    },
}

struct Run<'a, F> {
    cfg: &'a SoakConfig,
    dir: PathBuf,
    start_daemon: F,
    model: Mutex<Model>,
    report: SoakReport,
    daemon: Option<DaemonProcess>,
    life: DaemonLife,
    started: Instant,
    last_progress: Mutex<Instant>,
}

/// Runs the soak on `share` (the backend's shared directory, as seen from the host) with
/// daemons from `start_daemon` (called once at the start and once per reconnect; each must
/// serve `share` and be listening when it returns).
pub fn run<F>(
    cfg: &SoakConfig,
    share: &Path,
    start_daemon: F,
) -> std::result::Result<SoakReport, SoakError>
where
    F: FnMut() -> io::Result<DaemonProcess>,
{
    let bs = cfg.block_size;
    if cfg.queues == 0 || cfg.depth == 0 || cfg.files == 0 || bs < 64 {
        return Err(SoakError::Config(
            "queues, depth and files must be > 0, block_size >= 64".into(),
        ));
    }
    if cfg.file_size == 0 || cfg.file_size % bs as u64 != 0 {
        return Err(SoakError::Config(format!(
            "file_size {} is not a positive multiple of the block size {bs}",
            cfg.file_size
        )));
    }
    let dir = share.join(SOAK_DIR);
    let host = |e| SoakError::Host(dir.clone(), e);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(host)?;
    }
    std::fs::create_dir(&dir).map_err(host)?;
    let blocks = (cfg.file_size / bs as u64) as usize;
    let model = Model {
        slots: (0..cfg.files)
            .map(|i| Slot::new(i as u32, blocks))
            .collect(),
        stats: Default::default(),
        next_gen: 0,
        seed: cfg.seed,
        block_size: bs,
    };
    let mut run = Run {
        cfg,
        dir: dir.clone(),
        start_daemon,
        model: Mutex::new(model),
        report: SoakReport::default(),
        daemon: None,
        life: DaemonLife::default(),
        started: Instant::now(),
        last_progress: Mutex::new(Instant::now()),
    };
    match run.soak() {
        Ok(()) => Ok(run.finish_report()),
        Err(reason) => {
            let mut reason = reason;
            if let Some(d) = run.daemon.as_mut() {
                d.scan_log();
                reason.push_str(&format!("\n  daemon log tail:\n{}", d.log_tail()));
            }
            let report = Box::new(run.finish_report());
            Err(SoakError::Aborted { reason, report })
        }
    }
}

/// Errors inside a run: a description (the report is attached by [`run`]).
type Step<T> = std::result::Result<T, String>;

fn step<T>(what: &str, r: crate::Result<T>) -> Step<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

impl<F> Run<'_, F>
where
    F: FnMut() -> io::Result<DaemonProcess>,
{
    fn soak(&mut self) -> Step<()> {
        let cfg = self.cfg;
        let end = self.started + cfg.duration;
        let mut client = self.connect()?;
        let mut dir = self.open_session(&client, true)?;
        let mut next_destroy = cfg.destroy_every.map(|d| self.started + d);
        let mut next_reconnect = cfg.reconnect_every.map(|d| self.started + d);
        loop {
            let phase_end = [Some(end), next_destroy, next_reconnect]
                .into_iter()
                .flatten()
                .min()
                .expect("end is always there");
            let reconnect = phase_end < end && next_reconnect == Some(phase_end);
            let abandoned = self.phase(&client, dir, phase_end, reconnect)?;
            let now = Instant::now();
            if phase_end >= end {
                self.end_session(&client)?;
                self.retire(client)?;
                break;
            }
            if reconnect {
                {
                    let mut m = self.model.lock().unwrap();
                    for op in abandoned {
                        if let Op::Write { slot, block, gen } = op {
                            m.slots[slot].uncertain[block] = Some(gen);
                        }
                    }
                }
                self.retire(client)?;
                client = self.connect()?;
                dir = self.open_session(&client, false)?;
                next_reconnect = cfg.reconnect_every.map(|d| now + d);
                if next_destroy.is_some_and(|t| t <= now) {
                    next_destroy = cfg.destroy_every.map(|d| now + d);
                }
            } else {
                self.end_session(&client)?;
                dir = self.open_session(&client, false)?;
                next_destroy = cfg.destroy_every.map(|d| now + d);
            }
        }
        Ok(())
    }

    /// Starts a daemon, connects and records its starting point (after INIT, in
    /// [`Run::open_session`]).
    fn connect(&mut self) -> Step<FsClient> {
        let d = (self.start_daemon)().map_err(|e| format!("starting a daemon: {e}"))?;
        let per_queue = self.cfg.depth.div_ceil(usize::from(self.cfg.queues));
        let mut dc = DeviceConfig::new(&d.socket);
        dc.request_queues = self.cfg.queues;
        dc.queue_size = (per_queue as u16).next_power_of_two().clamp(128, 1024);
        let per_request = self.cfg.block_size as u64 + 4096;
        let mem = (self.cfg.depth as u64 + 64) * per_request * 2 + (16 << 20);
        dc.memory_regions = vec![mem.next_multiple_of(2 << 20)];
        dc.timeout = self.cfg.timeout;
        self.life = DaemonLife {
            pid: d.child.id(),
            serving_pid: d.serving_pid(),
            ..Default::default()
        };
        self.daemon = Some(d);
        step("connecting", FsClient::connect(dc))
    }

    /// INIT, then looks up the soak directory and looks up and opens every present file (or,
    /// on the first session, creates them all).
    fn open_session(&mut self, c: &FsClient, first: bool) -> Step<u64> {
        let new_daemon = self.life.start == Sample::default();
        step("INIT", c.init())?;
        self.report.sessions += 1;
        if new_daemon {
            // One request on every queue first: the daemon starts a queue's thread (and its
            // descriptors: a runtime's epoll and waker, the kick's duplicate) when the queue
            // first runs, so a sample taken before would count them as a leak later.
            for q in 1..=usize::from(self.cfg.queues) {
                step(
                    "GETATTR on each queue",
                    c.on_queue(q).getattr(ROOT_ID, None),
                )?;
            }
            self.life.start = Sample::of(self.life.serving_pid).unwrap_or_default();
        }
        let dir = step("LOOKUP of the soak directory", c.lookup(ROOT_ID, SOAK_DIR))?.nodeid;
        let mut m = self.model.lock().unwrap();
        m.stats.op("INIT");
        m.stats.op("LOOKUP");
        for s in m.slots.iter_mut() {
            s.handle = None;
        }
        for i in 0..m.slots.len() {
            let name = m.slots[i].name();
            if first {
                let flags = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
                let (e, o) = step(
                    "CREATE",
                    c.create(dir, &name, flags, libc::S_IFREG | 0o644, 0),
                )?;
                let s = &mut m.slots[i];
                s.present = true;
                s.ino = e.attr.ino;
                s.handle = Some((e.nodeid, o.fh));
                m.stats.op("CREATE");
            } else if m.slots[i].present {
                let e = step("LOOKUP", c.lookup(dir, &name))?;
                let o = step("OPEN", c.open(e.nodeid, libc::O_RDWR as u32))?;
                m.stats.op("LOOKUP");
                m.stats.op("OPEN");
                let s = &mut m.slots[i];
                if e.attr.ino != s.ino {
                    let what = format!(
                        "{name} has inode {} after a new session, not {}",
                        e.attr.ino, s.ino
                    );
                    m.stats.problem(what);
                    *m.stats
                        .errors
                        .entry("LOOKUP wrong inode".into())
                        .or_default() += 1;
                }
                m.slots[i].handle = Some((e.nodeid, o.fh));
            }
        }
        Ok(dir)
    }

    /// Runs the workers until `phase_end`; returns the requests abandoned in flight.
    fn phase(
        &mut self,
        c: &FsClient,
        dir: u64,
        phase_end: Instant,
        abandon: bool,
    ) -> Step<Vec<Op>> {
        let cfg = self.cfg;
        let per_queue = cfg.depth.div_ceil(usize::from(cfg.queues));
        let ctx = Ctx {
            client: c,
            model: &self.model,
            dir,
            phase_end,
            timeout: cfg.timeout,
            progress: cfg
                .progress_every
                .map(|p| (&self.last_progress, self.started, p)),
        };
        let phase_seed = cfg.seed ^ (self.report.sessions << 32);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..=usize::from(cfg.queues))
                .map(|q| {
                    let ctx = &ctx;
                    scope.spawn(move || {
                        let mut rng = Rng::new(phase_seed ^ q as u64);
                        worker::run(ctx, q, per_queue, &mut rng, abandon)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker panicked"))
                .collect()
        });
        let mut m = self.model.lock().unwrap();
        for s in m.slots.iter_mut() {
            s.busy.iter_mut().for_each(|b| *b = false);
            s.shared = 0;
            s.exclusive = false;
        }
        let mut abandoned = Vec::new();
        for r in results {
            abandoned.extend(step("workload", r)?);
        }
        Ok(abandoned)
    }

    /// Nothing in flight: DESTROY, the quiescent sample, the host check.
    fn end_session(&mut self, c: &FsClient) -> Step<()> {
        step("DESTROY", c.destroy())?;
        self.model.lock().unwrap().stats.op("DESTROY");
        // The daemon may close the last descriptors just after its reply.
        let limit = self.life.start.fds + Tolerance::default().fd_slack;
        let deadline = Instant::now() + Duration::from_secs(1);
        let sample = loop {
            let s = Sample::of(self.life.serving_pid).unwrap_or_default();
            if s.fds <= limit || Instant::now() >= deadline {
                break s;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.life.quiescent.push(sample);
        self.verify_host()
    }

    /// Disconnects (dropping the client); the daemon must exit 0 by itself. Then checks the
    /// host, which resolves the writes that were in flight.
    fn retire(&mut self, client: FsClient) -> Step<()> {
        let serving = self.life.serving_pid;
        self.life.end = Sample::of(serving).unwrap_or_default();
        drop(client);
        let mut d = self.daemon.take().expect("a daemon runs");
        let code = d
            .wait_exit(Duration::from_secs(20))
            .map_err(|e| format!("waiting for the daemon: {e}"))?;
        self.life.panicked = d.scan_log();
        let mut life = std::mem::take(&mut self.life);
        match code {
            Some(code) => life.exit_code = code,
            None => {
                self.model.lock().unwrap().stats.problem(format!(
                    "daemon {} did not exit within 20 s of the disconnect; log:\n{}",
                    life.pid,
                    d.log_tail()
                ));
            }
        }
        if life.exit_code != Some(0) || life.panicked {
            self.model.lock().unwrap().stats.problem(format!(
                "daemon {} exit {:?}, panicked {}; log:\n{}",
                life.pid,
                life.exit_code,
                life.panicked,
                d.log_tail()
            ));
        }
        drop(d);
        // The serving process may outlive the supervisor for a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Path::new(&format!("/proc/{serving}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.report.daemons.push(life);
        self.verify_host()
    }

    /// Checks every file of the soak directory on the host against the model, resolving the
    /// writes whose outcome was unknown.
    fn verify_host(&mut self) -> Step<()> {
        let mut m = self.model.lock().unwrap();
        let m = &mut *m;
        let bs = m.block_size;
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("listing {}: {e}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        let mut want: Vec<String> = m
            .slots
            .iter()
            .filter(|s| s.present)
            .map(Slot::name)
            .collect();
        want.sort();
        if names != want {
            m.stats.corrupted += 1;
            m.stats
                .problem(format!("host directory holds {names:?}, want {want:?}"));
        }
        for i in 0..m.slots.len() {
            if !m.slots[i].present {
                continue;
            }
            let path = self.dir.join(m.slots[i].name());
            let data = std::fs::read(&path).unwrap_or_default();
            let seed = m.seed;
            let s = &mut m.slots[i];
            for b in 0..s.gens.len() {
                if let Some(g) = s.uncertain[b].take() {
                    let got = data.get(b * bs..(b + 1) * bs).unwrap_or(&[]);
                    m.stats.abandoned_writes += 1;
                    if model::check_block(seed, s.index, b as u32, g, got, bs).is_none() {
                        s.gens[b] = g;
                        m.stats.abandoned_landed += 1;
                    }
                }
            }
            let size = m.slots[i].size_blocks() * bs;
            if data.len() != size {
                m.stats.corrupted += 1;
                let what = format!(
                    "{}: {} bytes on the host, want {size}",
                    path.display(),
                    data.len()
                );
                m.stats.problem(what);
            }
            for b in 0..m.slots[i].gens.len() {
                let got = data
                    .get(b * bs..((b + 1) * bs).min(data.len()))
                    .unwrap_or(&[]);
                m.verify(i, b, size / bs, got, "host", true);
            }
        }
        Ok(())
    }

    fn finish_report(&mut self) -> SoakReport {
        let mut r = std::mem::take(&mut self.report);
        let m = self.model.lock().unwrap();
        let s = &m.stats;
        r.elapsed = self.started.elapsed();
        r.ops = s.ops.clone();
        r.errors = s.errors.clone();
        r.bytes_written = s.bytes_written;
        r.bytes_verified_read = s.bytes_verified_read;
        r.bytes_verified_host = s.bytes_verified_host;
        r.lost_writes = s.lost;
        r.corrupted_blocks = s.corrupted;
        r.abandoned_writes = s.abandoned_writes;
        r.abandoned_landed = s.abandoned_landed;
        r.problems = s.problems.clone();
        if self.life.pid != 0 {
            // A daemon still running at an abort.
            r.daemons.push(self.life.clone());
        }
        r
    }
}
