//! virtiofs-bench: runs every (daemon, config, workload, queue depth, request queues) cell of
//! the benchmark matrix through the vhost-user-fs test client, plus the host-syscall floor, and
//! writes `results.csv`, `skipped.csv`, `ratios.md` and `ops.svg` to the output directory.
//! Normally started by `benches/run`, which builds and installs the daemons first.

mod daemon;
mod fio;
mod host;
mod load;
mod measure;
mod placement;
mod record;
mod report;
mod workload;

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use vhost_user_fs_client::{DeviceConfig, FsClient};

use daemon::{DaemonSpec, Kind, Running};
use measure::{CellResult, Monitor, Phase, RingCounts, Window};
use record::{CellKey, Recorder};
use workload::Workload;

#[derive(Debug, Parser)]
#[command(about = "virtio-fs daemon benchmark (see docs/performance.md)")]
struct Args {
    /// Output directory (results.csv, skipped.csv, ratios.md, ops.svg, daemon logs).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Short mode for CI: fewer workloads, depths 1 and 16, one request queue, short cells.
    #[arg(long)]
    quick: bool,
    /// async-virtiofsd binary.
    #[arg(long)]
    ours: Option<PathBuf>,
    /// Extra arguments for async-virtiofsd (one string, split on spaces; e.g. `--poll-us 0` to
    /// measure an option's effect).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    ours_extra: String,
    /// C virtiofsd binary.
    #[arg(long)]
    c_virtiofsd: Option<PathBuf>,
    /// Extra arguments for the C virtiofsd (one string, split on spaces).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    c_extra: String,
    /// Rust virtiofsd binary.
    #[arg(long)]
    rust_virtiofsd: Option<PathBuf>,
    /// Extra arguments for the Rust virtiofsd (one string, split on spaces).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    rust_extra: String,
    /// `DAEMON=REASON`: a daemon that could not be installed; its cells are reported skipped.
    #[arg(long)]
    unavailable: Vec<String>,
    /// Comma-separated workloads (default: all; quick: a subset).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Comma-separated queue depths.
    #[arg(long, value_delimiter = ',')]
    depths: Vec<usize>,
    /// Comma-separated request-queue counts.
    #[arg(long, value_delimiter = ',')]
    queues: Vec<u16>,
    /// Comma-separated daemons to run (async-virtiofsd, c-virtiofsd, rust-virtiofsd,
    /// host-syscalls); default all.
    #[arg(long, value_delimiter = ',')]
    daemons: Vec<String>,
    /// Client threads driving the load of a daemon cell (default: one per request queue).
    /// Thread t keeps its share of the depth in flight on request queue t mod Q + 1, waiting
    /// for its own completions, as a guest's processes share a virtqueue. One thread per queue
    /// gives a 1-queue cell a cheaper client than a 4-queue cell (one thread with every request
    /// in flight instead of four that each wait); `--client-threads 4 --queues 1,4` puts the
    /// same client load on 1 and on 4 queues.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    client_threads: Option<u16>,
    /// Thread-pool sizes for the daemons.
    #[arg(long, value_delimiter = ',', default_value = "0,64")]
    pools: Vec<u32>,
    /// Rounds per cell: each cell runs this many times, the daemons interleaved within each
    /// round; `results.csv` and the reports take each configuration's median round,
    /// `rounds.csv` has them all.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    rounds: u32,
    /// Measurement time per cell in ms (default 2000; quick 400).
    #[arg(long)]
    duration_ms: Option<u64>,
    /// Warm-up time per cell in ms (default 500; quick 150).
    #[arg(long)]
    warmup_ms: Option<u64>,
    /// Where the harness and the daemons run: `free` (the scheduler decides), `same` (one CPU
    /// for all: the cost of a request), `split` (harness on one CPU, daemons on the others: the
    /// cross-CPU latency). Depth-1 cells of a free run are bimodal (see src/placement.rs).
    #[arg(long, value_enum, default_value = "free")]
    placement: placement::Placement,
    /// Do not hold /dev/cpu_dma_latency at 0 during the run (see docs/performance.md: without it,
    /// low-depth latency on a VM measures how fast an idle vCPU wakes up).
    #[arg(long)]
    no_pm_qos: bool,
    /// vhost-user-fs-mount binary: enables the fio workloads (`fio-*`), which mount each daemon
    /// on the host through /dev/fuse and run fio on the mount.
    #[arg(long)]
    bridge: Option<PathBuf>,
    /// fio binary for the `fio-*` workloads.
    #[arg(long, default_value = "fio")]
    fio: PathBuf,
    /// Why the fio workloads cannot run (benches/run: fio could not be installed); they are
    /// reported skipped.
    #[arg(long)]
    fio_unavailable: Option<String>,
    /// Only regenerate ratios.md and ops.svg from DIR/results.csv.
    #[arg(long)]
    report_only: bool,
}

/// One configuration of one daemon (or the host floor).
#[derive(Debug, Clone)]
enum Target {
    Daemon {
        spec: DaemonSpec,
        pool: u32,
    },
    Missing {
        kind: Kind,
        pool: u32,
        reason: String,
    },
    Host,
}

impl Target {
    fn daemon(&self) -> &'static str {
        match self {
            Target::Daemon { spec, .. } => spec.kind.name(),
            Target::Missing { kind, .. } => kind.name(),
            Target::Host => "host-syscalls",
        }
    }
    /// What this target's row of `workload` at `depth` over `queues` is named.
    fn key(&self, workload: &str, depth: usize, queues: u16) -> CellKey {
        CellKey {
            daemon: self.daemon(),
            config: self.config(depth),
            workload: workload.to_string(),
            depth,
            queues,
        }
    }
    fn config(&self, depth: usize) -> String {
        match self {
            Target::Daemon { pool, .. } | Target::Missing { pool, .. } => format!("pool={pool}"),
            Target::Host => format!("threads={depth}"),
        }
    }
}

struct DaemonMonitor<'a>(&'a mut Running, &'a FsClient);

impl Monitor for DaemonMonitor<'_> {
    fn check(&mut self) -> Result<(), String> {
        if self.0.alive() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
        Err(format!("during the run: {}", self.0.death_reason()))
    }
    fn cpu_seconds(&self) -> f64 {
        self.0.cpu_seconds()
    }
    fn peak_rss_kib(&self) -> Option<u64> {
        Some(self.0.peak_rss_kib())
    }
    fn ring(&self) -> Option<RingCounts> {
        let dev = self.1.device();
        let mut sum = RingCounts::default();
        // Queue 0 is hiprio: the load runs on the request queues.
        for q in (1..dev.num_queues()).filter_map(|i| dev.queue(i).ok()) {
            let s = q.stats();
            sum.kicks += s.kicks.load(Ordering::Relaxed);
            sum.calls += s.calls.load(Ordering::Relaxed);
            sum.completed += s.completed.load(Ordering::Relaxed);
        }
        Some(sum)
    }
    fn client_cpu_seconds(&self) -> Option<f64> {
        // The client's threads are this process's (beside the controller, which sleeps).
        Some(vhost_user_fs_client::daemons::proc_cpu_seconds(
            std::process::id(),
        ))
    }
}

struct SelfMonitor;

impl Monitor for SelfMonitor {
    fn check(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn cpu_seconds(&self) -> f64 {
        vhost_user_fs_client::daemons::proc_cpu_seconds(std::process::id())
    }
    fn peak_rss_kib(&self) -> Option<u64> {
        None
    }
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    w: Workload,
    depth: usize,
    queues: u16,
    /// Client threads (`--client-threads`; 0: one per request queue).
    threads: u16,
    warmup: Duration,
    duration: Duration,
}

/// Why a cell failed: during setup (connect / INIT / opening files: the same for every cell of
/// this daemon configuration and queue count) or while running.
enum Failure {
    Setup(String),
    Run(String),
}

fn run_daemon_cell(
    spec: &DaemonSpec,
    pool: u32,
    cell: Cell,
    share: &Path,
    logs: &Path,
    tag: &str,
) -> Result<CellResult, Failure> {
    let tmp = std::env::temp_dir().join(format!("virtiofs-bench-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| Failure::Setup(format!("temp dir: {e}")))?;
    let socket = tmp.join("vfs.sock");
    if cell.w == Workload::CreateUnlink {
        workload::reset_scratch(share).map_err(|e| Failure::Setup(format!("scratch dir: {e}")))?;
    }
    let log = logs.join(format!("{tag}.log"));
    let mut d = Running::start(spec, &socket, share, pool, &log).map_err(Failure::Setup)?;
    let mut cfg = DeviceConfig::new(&socket);
    cfg.request_queues = cell.queues;
    cfg.queue_size = 1024;
    cfg.memory_regions = vec![load::memory_bytes(cell.w, cell.depth)];
    cfg.timeout = Duration::from_secs(10);
    let result = (|| {
        let client = d.connect(&cfg).map_err(Failure::Setup)?;
        client
            .init()
            .map_err(|e| Failure::Setup(format!("INIT: {e}; daemon log: {}", d.log_tail(3))))?;
        let session = load::Session::open(&client, cell.w).map_err(Failure::Setup)?;
        let nq = usize::from(cell.queues);
        let nt = match cell.threads {
            0 => nq,
            t => usize::from(t),
        };
        let ph = Phase::new(nt);
        let (window, hists) = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..nt)
                .map(|i| {
                    // Spread the depth over the threads; the first ones get the remainder.
                    let slots = cell.depth / nt + usize::from(i < cell.depth % nt);
                    let q = i % nq + 1;
                    let (c, s, ph) = (&client, &session, &ph);
                    sc.spawn(move || {
                        let r = load::queue_worker(c, s, q, slots, i as u64, ph);
                        if let Err(e) = &r {
                            ph.fail(format!("queue {q}: {e}"));
                        }
                        ph.worker_done();
                        r
                    })
                })
                .collect();
            let w = measure::control(
                &ph,
                cell.warmup,
                cell.duration,
                &mut DaemonMonitor(&mut d, &client),
            );
            let hs: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
            (w, hs)
        });
        let window = window.map_err(Failure::Run)?;
        let mut hist = measure::Hist::default();
        for h in hists {
            let h = h
                .map_err(|_| Failure::Run("worker panicked".into()))?
                .map_err(Failure::Run)?;
            hist.merge(&h);
        }
        drop(client);
        CellResult::from(&hist, &window).map_err(Failure::Run)
    })();
    // The client is gone: a daemon exits on disconnect; anything left is killed on drop.
    d.finish(Duration::from_secs(3));
    let _ = fs::remove_dir_all(&tmp);
    result
}

fn run_host_cell(cell: Cell, share: &Path) -> Result<CellResult, String> {
    if cell.w == Workload::CreateUnlink {
        workload::reset_scratch(share).map_err(|e| format!("scratch dir: {e}"))?;
    }
    let files = host::HostFiles::open(share, cell.w)?;
    let ph = Phase::new(cell.depth);
    let (window, hists): (Result<Window, String>, Vec<_>) = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..cell.depth)
            .map(|i| {
                let (f, ph) = (&files, &ph);
                sc.spawn(move || {
                    let r = host::host_worker(f, i as u64, ph);
                    if let Err(e) = &r {
                        ph.fail(e.clone());
                    }
                    ph.worker_done();
                    r
                })
            })
            .collect();
        let w = measure::control(&ph, cell.warmup, cell.duration, &mut SelfMonitor);
        (w, handles.into_iter().map(|h| h.join()).collect())
    });
    let window = window?;
    let mut hist = measure::Hist::default();
    for h in hists {
        hist.merge(&h.map_err(|_| "worker panicked".to_string())??);
    }
    CellResult::from(&hist, &window)
}

/// ` r2/3` in a progress line when there are several rounds.
fn round_tag(round: usize, rounds: usize) -> String {
    if rounds > 1 {
        format!(" r{round}/{rounds}")
    } else {
        String::new()
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = real_main(args) {
        eprintln!("virtiofs-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main(mut args: Args) -> Result<(), String> {
    // First: every thread and daemon started from now on inherits it.
    println!("{}", placement::apply(args.placement)?);
    if let Some(t) = args.client_threads {
        println!("client threads: {t} per daemon cell, over its request queues in turn");
    }
    fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    // Absolute: the daemons get paths under it, and the C virtiofsd resolves the shared
    // directory after changing its root (a relative --out made its cells fail).
    args.out =
        std::path::absolute(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;
    if args.report_only {
        return report::write_reports(&args.out, args.client_threads);
    }
    let (fio_named, vufs_named): (Vec<String>, Vec<String>) = args
        .workloads
        .iter()
        .cloned()
        .partition(|w| w.starts_with("fio-"));
    for w in &fio_named {
        if fio::spec(w).is_none() {
            return Err(format!("unknown workload {w}"));
        }
    }
    let fio_workloads: Vec<String> = if !args.workloads.is_empty() {
        fio_named
    } else if args.quick {
        vec!["fio-randread4k".into(), "fio-seqwrite1m".into()]
    } else {
        fio::WORKLOADS.iter().map(|s| s.to_string()).collect()
    };
    let workloads: Vec<Workload> = if args.workloads.is_empty() {
        if args.quick {
            vec![
                Workload::RandRead4k,
                Workload::Getattr,
                Workload::Lookup,
                Workload::CreateUnlink,
            ]
        } else {
            Workload::ALL.to_vec()
        }
    } else {
        vufs_named
            .iter()
            .map(|s| Workload::parse(s).ok_or_else(|| format!("unknown workload {s}")))
            .collect::<Result<_, _>>()?
    };
    let depths = if !args.depths.is_empty() {
        args.depths.clone()
    } else if args.quick {
        vec![1, 16]
    } else {
        vec![1, 4, 16, 64, 256]
    };
    let queues = if !args.queues.is_empty() {
        args.queues.clone()
    } else if args.quick {
        vec![1]
    } else {
        vec![1, 4]
    };
    let duration =
        Duration::from_millis(
            args.duration_ms
                .unwrap_or(if args.quick { 400 } else { 2000 }),
        );
    let warmup =
        Duration::from_millis(args.warmup_ms.unwrap_or(if args.quick { 150 } else { 500 }));
    let wanted = |name: &str| args.daemons.is_empty() || args.daemons.iter().any(|d| d == name);

    let unavailable: HashMap<String, String> = args
        .unavailable
        .iter()
        .filter_map(|s| s.split_once('='))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let mut targets = Vec::new();
    for (kind, bin, extra) in [
        (Kind::Ours, &args.ours, args.ours_extra.as_str()),
        (Kind::C, &args.c_virtiofsd, args.c_extra.as_str()),
        (Kind::Rust, &args.rust_virtiofsd, args.rust_extra.as_str()),
    ] {
        if !wanted(kind.name()) {
            continue;
        }
        let missing = match (bin, unavailable.get(kind.name())) {
            (_, Some(r)) => Some(r.clone()),
            (None, None) => Some("no binary given".to_string()),
            (Some(b), None) if !b.is_file() => Some(format!("{} not found", b.display())),
            _ => None,
        };
        for &pool in &args.pools {
            targets.push(match &missing {
                Some(reason) => Target::Missing {
                    kind,
                    pool,
                    reason: reason.clone(),
                },
                None => Target::Daemon {
                    spec: DaemonSpec {
                        kind,
                        bin: bin.clone().expect("checked"),
                        extra: extra.split_whitespace().map(str::to_owned).collect(),
                    },
                    pool,
                },
            });
        }
    }
    if wanted("host-syscalls") {
        targets.push(Target::Host);
    }

    // PM QoS request: idle CPUs poll instead of halting while the file stays open, so that a
    // request's wake-ups do not each pay an idle-exit (on a VM: a host-side vCPU wake-up).
    let _pm_qos = if args.no_pm_qos {
        println!("PM QoS: not requested (--no-pm-qos)");
        None
    } else {
        match fs::OpenOptions::new()
            .write(true)
            .open("/dev/cpu_dma_latency")
        {
            Ok(mut f) => {
                match f.write_all(&0i32.to_ne_bytes()) {
                    Ok(()) => {
                        println!("PM QoS: /dev/cpu_dma_latency held at 0 us for the run");
                        Some(f)
                    }
                    Err(e) => {
                        println!("PM QoS: writing /dev/cpu_dma_latency failed ({e}); idle states left alone");
                        None
                    }
                }
            }
            Err(e) => {
                println!("PM QoS: cannot open /dev/cpu_dma_latency ({e}); idle states left alone");
                None
            }
        }
    };

    let share = args.out.join("share");
    let logs = args.out.join("logs");
    let t = Instant::now();
    workload::prepare_share(&share).map_err(|e| format!("preparing {}: {e}", share.display()))?;
    let _ = fs::remove_dir_all(&logs);
    fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    println!(
        "shared directory {} ready ({:.1} s)",
        share.display(),
        t.elapsed().as_secs_f64()
    );

    let mut rec = Recorder::create(&args.out)?;
    let rounds = args.rounds as usize;

    // Host cells do not depend on the request-queue count: measured once, under queues=1.
    let mut plan = Vec::new();
    for &w in &workloads {
        for &q in &queues {
            for &d in &depths {
                plan.push((w, q, d));
            }
        }
    }
    let first_queues = queues[0];
    let targets = &targets;
    let runs = move |q: u16| {
        targets
            .iter()
            .filter(move |t| !matches!(t, Target::Host) || q == first_queues)
    };
    let total: usize = plan.iter().map(|&(_, q, _)| runs(q).count() * rounds).sum();
    let mut setup_failed: HashMap<(String, String, u16), String> = HashMap::new();
    let mut n = 0;
    let started = Instant::now();
    for (w, q, depth) in plan {
        let cell = Cell {
            w,
            depth,
            queues: q,
            threads: args.client_threads.unwrap_or(0),
            warmup,
            duration,
        };
        for round in 1..=rounds {
            for t in runs(q) {
                n += 1;
                let key = t.key(w.name(), depth, q);
                let failed_key = (key.daemon.to_string(), key.config.clone(), q);
                let res: Result<CellResult, String> = match t {
                    Target::Missing { reason, .. } => Err(format!("not available: {reason}")),
                    Target::Host => run_host_cell(cell, &share),
                    Target::Daemon { spec, pool } => match setup_failed.get(&failed_key) {
                        Some(r) => Err(format!("setup failed in an earlier cell: {r}")),
                        None => {
                            let tag = format!(
                                "{}-{}-{}-qd{depth}-q{q}-r{round}",
                                key.daemon,
                                key.config,
                                w.name()
                            );
                            match run_daemon_cell(spec, *pool, cell, &share, &logs, &tag) {
                                Ok(r) => Ok(r),
                                Err(Failure::Setup(e)) => {
                                    setup_failed.insert(failed_key, e.clone());
                                    Err(e)
                                }
                                Err(Failure::Run(e)) => Err(e),
                            }
                        }
                    },
                };
                let el = started.elapsed().as_secs();
                let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
                let head = format!(
                    "[{n:>3}/{total} {:>2}:{:02} load {:>5}] {:<15} {:<11} {:<14} qd={depth:<3} q={q}{}",
                    el / 60,
                    el % 60,
                    load.split_whitespace().next().unwrap_or("?"),
                    key.daemon,
                    key.config,
                    w.name(),
                    round_tag(round, rounds),
                );
                match res {
                    Ok(r) => rec.measured(&head, &key, round, r)?,
                    Err(e) => rec.skipped(&head, &key, &e)?,
                }
            }
        }
        rec.cell_done()?;
    }

    // The fio mode: the kernel's FUSE client through the bridge.
    if !fio_workloads.is_empty() {
        let fio_depths: Vec<usize> = if !args.depths.is_empty() {
            args.depths.clone()
        } else if args.quick {
            vec![1, 16]
        } else {
            vec![1, 16, 64]
        };
        let (runtime, ramp) = if args.quick {
            (Duration::from_millis(1500), Duration::from_millis(500))
        } else {
            (Duration::from_secs(3), Duration::from_secs(1))
        };
        let unavailable = match (&args.bridge, &args.fio_unavailable) {
            (_, Some(r)) => Some(r.clone()),
            (None, None) => Some("no --bridge binary given".to_string()),
            (Some(b), None) if !b.is_file() => Some(format!("{} not found", b.display())),
            _ => None,
        };
        if unavailable.is_none() {
            fio::prepare(&share)?;
        }
        let mut plan = Vec::new();
        for w in &fio_workloads {
            for &q in &queues {
                for &d in &fio_depths {
                    plan.push((w.clone(), q, d));
                }
            }
        }
        let total: usize = plan.iter().map(|&(_, q, _)| runs(q).count() * rounds).sum();
        let mut n = 0;
        let fio_start = Instant::now();
        for (w, q, depth) in plan {
            for round in 1..=rounds {
                for t in runs(q) {
                    n += 1;
                    let key = t.key(&w, depth, q);
                    let failed_key = (format!("fio:{}", key.daemon), key.config.clone(), q);
                    let res: Result<CellResult, String> = match (t, &unavailable) {
                        (_, Some(r)) => Err(format!("fio mode not available: {r}")),
                        (Target::Missing { reason, .. }, _) => {
                            Err(format!("not available: {reason}"))
                        }
                        (Target::Host, None) => {
                            fio::host_cell(&args.fio, &share, &w, depth, runtime, ramp)
                        }
                        (Target::Daemon { spec, pool }, None) => {
                            match setup_failed.get(&failed_key) {
                                Some(r) => Err(format!("setup failed in an earlier cell: {r}")),
                                None => {
                                    let tag = format!(
                                        "{}-{}-{w}-qd{depth}-q{q}-r{round}",
                                        key.daemon, key.config
                                    );
                                    let bridge = args.bridge.as_deref().expect("checked");
                                    let r = fio::daemon_cell(
                                        spec, *pool, bridge, &args.fio, &w, depth, q, runtime,
                                        ramp, &share, &logs, &tag,
                                    );
                                    if let Err(e) = &r {
                                        if e.starts_with("bridge exited")
                                            || e.starts_with("daemon did not")
                                        {
                                            setup_failed.insert(failed_key, e.clone());
                                        }
                                    }
                                    r
                                }
                            }
                        }
                    };
                    let el = fio_start.elapsed().as_secs();
                    let head = format!(
                        "[fio {n:>3}/{total} {:>2}:{:02}] {:<15} {:<11} {w:<16} qd={depth:<3} q={q}{}",
                        el / 60,
                        el % 60,
                        key.daemon,
                        key.config,
                        round_tag(round, rounds),
                    );
                    match res {
                        Ok(r) => rec.measured(&head, &key, round, r)?,
                        Err(e) => rec.skipped(&head, &key, &e)?,
                    }
                }
            }
            rec.cell_done()?;
        }
    }
    let (ok, skip) = (rec.ok, rec.skip);
    let csv_path = args.out.join("results.csv");
    println!(
        "\n{ok} cells measured, {skip} skipped, in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        csv_path.display()
    );
    report::write_reports(&args.out, args.client_threads)
}
