//! What both runners share: the warm-up / measure / stop phases, the latency histogram and the
//! controller that watches the clock and the daemon.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

// Phase 0 (the default) is the warm-up.
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Shared between the controller and the worker threads of one cell.
#[derive(Debug, Default)]
pub struct Phase {
    phase: AtomicU8,
    failed: AtomicBool,
    reason: Mutex<Option<String>>,
    /// Workers that have not finished yet.
    pub running: AtomicUsize,
}

impl Phase {
    pub fn new(workers: usize) -> Self {
        Self {
            running: AtomicUsize::new(workers),
            ..Self::default()
        }
    }
    pub fn measuring(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == MEASURE
    }
    pub fn stopping(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == STOP
    }
    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }
    /// Records the first failure; every worker then gives up.
    pub fn fail(&self, reason: String) {
        let mut r = self.reason.lock().unwrap();
        if r.is_none() {
            *r = Some(reason);
        }
        self.failed.store(true, Ordering::Relaxed);
    }
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().unwrap().clone()
    }
    /// A worker is done (successfully or not).
    pub fn worker_done(&self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Log-linear latency histogram in nanoseconds: 64 sub-buckets per power of two (relative
/// error under 1.6%), fixed size whatever the number of samples.
#[derive(Debug, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
}

const SUB: u64 = 64;

impl Default for Hist {
    fn default() -> Self {
        Self {
            counts: vec![0; (SUB + 58 * SUB) as usize],
            total: 0,
        }
    }
}

impl Hist {
    fn index(v: u64) -> usize {
        if v < SUB {
            return v as usize;
        }
        let e = 63 - u64::from(v.leading_zeros()); // >= 6
        let m = (v >> (e - 6)) - SUB;
        (SUB + (e - 6) * SUB + m) as usize
    }

    /// Middle of bucket `i`, in ns.
    fn value(i: usize) -> f64 {
        let i = i as u64;
        if i < SUB {
            return i as f64;
        }
        let e = (i - SUB) / SUB + 6;
        let m = (i - SUB) % SUB;
        let lo = (SUB + m) << (e - 6);
        let width = 1u64 << (e - 6);
        lo as f64 + width as f64 / 2.0
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        if self.total == 0 {
            return f64::NAN;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::value(i) / 1000.0;
            }
        }
        f64::NAN
    }
}

/// What the controller needs to know about the thing measured.
pub trait Monitor {
    /// `Err(reason)` once the daemon has died.
    fn check(&mut self) -> Result<(), String>;
    /// CPU seconds consumed so far by the measured process(es).
    fn cpu_seconds(&self) -> f64;
    /// Peak RSS in KiB, if meaningful.
    fn peak_rss_kib(&self) -> Option<u64>;
    /// The client's ring counters so far (daemon cells only).
    fn ring(&self) -> Option<RingCounts> {
        None
    }
    /// CPU seconds consumed so far by the client driving the measured daemon (daemon cells
    /// only: the client is this process).
    fn client_cpu_seconds(&self) -> Option<f64> {
        None
    }
}

/// CPU seconds every CPU of the machine has spent busy so far (`/proc/stat`: all but idle and
/// iowait), or `None` where that cannot be read.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    busy_ticks(stat.lines().next()?).map(vhost_user_fs_client::daemons::clock_ticks_seconds)
}

/// The busy ticks of `/proc/stat`'s `cpu` line: user, nice, system, irq, softirq, steal
/// (guest time is already in user).
fn busy_ticks(cpu_line: &str) -> Option<u64> {
    let mut f = cpu_line.split_whitespace();
    if f.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = f.map(|x| x.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    (v.len() >= 4).then(|| at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// The client side of the ring traffic, summed over the request queues: how often the daemon
/// asked for a kick (it was about to sleep) and how often it interrupted the client. Per
/// request, these say how well each side batches.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RingCounts {
    /// Kicks sent (the daemon wanted one).
    pub kicks: u64,
    /// Call eventfd found signalled.
    pub calls: u64,
    /// Used elements consumed.
    pub completed: u64,
}

impl RingCounts {
    fn per_op(self, n: u64) -> Option<f64> {
        (self.completed > 0).then(|| n as f64 / self.completed as f64)
    }

    fn since(self, before: Self) -> Self {
        Self {
            kicks: self.kicks - before.kicks,
            calls: self.calls - before.calls,
            completed: self.completed - before.completed,
        }
    }
}

/// The measurement window, as the controller saw it.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub seconds: f64,
    pub cpu_seconds: f64,
    pub peak_rss_kib: Option<u64>,
    pub ring: Option<RingCounts>,
    /// CPU seconds of the client (daemon cells).
    pub client_cpu_seconds: Option<f64>,
    /// CPUs of the machine busy on average (anything, not only the cell's processes).
    pub busy_cpus: Option<f64>,
}

/// Runs the phases on the calling thread while the workers run: warm-up, measurement, stop,
/// then waits for the workers to drain. Fails if a worker failed, the daemon died, or the
/// drain takes more than 20 s.
pub fn control(
    ph: &Phase,
    warmup: Duration,
    duration: Duration,
    mon: &mut dyn Monitor,
) -> Result<Window, String> {
    let watch = |ph: &Phase, mon: &mut dyn Monitor, until: Instant| -> Result<(), String> {
        while Instant::now() < until {
            if ph.failed() {
                return Err(ph.reason().unwrap_or_default());
            }
            if ph.running.load(Ordering::Acquire) == 0 {
                return Err("all workers ended early".into());
            }
            if let Err(e) = mon.check() {
                ph.fail(e.clone());
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(10).min(until - Instant::now()));
        }
        Ok(())
    };
    watch(ph, mon, Instant::now() + warmup)?;
    let cpu0 = mon.cpu_seconds();
    let client0 = mon.client_cpu_seconds();
    let busy0 = machine_busy_seconds();
    let ring0 = mon.ring();
    let t0 = Instant::now();
    ph.phase.store(MEASURE, Ordering::Relaxed);
    watch(ph, mon, t0 + duration)?;
    ph.phase.store(STOP, Ordering::Relaxed);
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = mon.cpu_seconds();
    let client = mon.client_cpu_seconds().zip(client0).map(|(b, a)| b - a);
    let busy = machine_busy_seconds()
        .zip(busy0)
        .map(|(b, a)| (b - a) / seconds);
    let rss = mon.peak_rss_kib();
    let ring = mon
        .ring()
        .zip(ring0)
        .map(|(after, before)| after.since(before));
    let deadline = Instant::now() + Duration::from_secs(20);
    while ph.running.load(Ordering::Acquire) > 0 {
        if ph.failed() {
            return Err(ph.reason().unwrap_or_default());
        }
        if let Err(e) = mon.check() {
            ph.fail(e.clone());
            return Err(e);
        }
        if Instant::now() > deadline {
            let e = "requests still in flight 20 s after the end of the run".to_string();
            ph.fail(e.clone());
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if ph.failed() {
        return Err(ph.reason().unwrap_or_default());
    }
    Ok(Window {
        seconds,
        cpu_seconds: cpu1 - cpu0,
        peak_rss_kib: rss,
        ring,
        client_cpu_seconds: client,
        busy_cpus: busy,
    })
}

/// One finished cell.
#[derive(Debug, Clone)]
pub struct CellResult {
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub cpu_s_per_mop: f64,
    pub peak_rss_kib: Option<u64>,
    /// Kicks the client sent per request completed (daemon cells).
    pub kicks_per_op: Option<f64>,
    /// Interrupts the client took per request completed (daemon cells).
    pub calls_per_op: Option<f64>,
    /// The client's CPU per operation, µs (daemon cells: the other half of the cost on a
    /// machine where client and daemon share the CPUs).
    pub client_cpu_s_per_mop: Option<f64>,
    /// CPUs of the machine busy on average during the window.
    pub busy_cpus: Option<f64>,
}

impl CellResult {
    pub fn from(h: &Hist, w: &Window) -> Result<Self, String> {
        let ops = h.count();
        if ops == 0 {
            return Err("no operation completed during the measurement window".into());
        }
        Ok(Self {
            ops_per_s: ops as f64 / w.seconds,
            p50_us: h.quantile_us(0.50),
            p99_us: h.quantile_us(0.99),
            p999_us: h.quantile_us(0.999),
            cpu_s_per_mop: w.cpu_seconds / ops as f64 * 1e6,
            peak_rss_kib: w.peak_rss_kib,
            kicks_per_op: w.ring.and_then(|r| r.per_op(r.kicks)),
            calls_per_op: w.ring.and_then(|r| r.per_op(r.calls)),
            client_cpu_s_per_mop: w.client_cpu_seconds.map(|c| c / ops as f64 * 1e6),
            busy_cpus: w.busy_cpus,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_close() {
        let mut h = Hist::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        let p99 = h.quantile_us(0.99);
        assert!((p50 - 500.0).abs() / 500.0 < 0.02, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.02, "{p99}");
        assert_eq!(Hist::index(63), 63);
        assert!(Hist::value(Hist::index(1_000_000)) > 980_000.0);
    }

    #[test]
    fn busy_ticks_leave_out_idle_and_iowait() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        assert_eq!(
            busy_ticks("cpu  100 2 30 5000 40 6 7 8 50 0"),
            Some(100 + 2 + 30 + 6 + 7 + 8)
        );
        assert_eq!(busy_ticks("cpu0 1 2 3 4"), None, "one CPU's line");
        assert_eq!(busy_ticks("cpu 1 x 3 4"), None);
        assert_eq!(busy_ticks("cpu 1 2"), None, "too short");
        assert!(
            machine_busy_seconds().is_some(),
            "this machine has /proc/stat"
        );
    }
}
