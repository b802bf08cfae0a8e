//! Whether the host has a CPU to spare for a spin on the avail ring (`--poll-us`), or for one
//! more pool runner (`--thread-pool-size`).
//!
//! A spin occupies a CPU. Its turns yield (see [`crate::poll`]), which hands the CPU to a thread
//! queued on that same CPU, but not to the threads queued on the others: on a host where every
//! CPU is wanted (the guest's vCPUs, a client's many threads, the pool's own runners), the
//! spinning CPU is one the scheduler could have given them. So before a spin the queue thread
//! asks how many threads are runnable on the whole host, at most every [`SAMPLE_EVERY`]: the
//! count the kernel keeps and `/proc/loadavg` shows (its fourth field, `running/threads`; one
//! pread of an fd opened at start, well under a microsecond). Once the moving average of that
//! count exceeds the host's online CPUs by a thread (threads wait for a CPU), and until it is
//! back within half a thread of them, the queue does not spin and sleeps until the next kick
//! instead. A host with an idle CPU keeps polling, where it pays
//! most: a guest doing one request at a time.
//!
//! A pool runner given quick requests ([`SpareCpu`]) helps only if it gets a CPU of its own
//! while the queue thread keeps its one: requests that only need a CPU (a lookup, a 4 KiB
//! read from the page cache) are served no sooner by a thread that takes turns with the
//! queue thread or the guest's vCPUs, and each hand-off costs a wake-up and moves the
//! request's cache lines. On 2 CPUs with one client thread the pool made LOOKUP 11–17 %
//! slower at depth 64–256 than no pool. Requests that block (a cold disk) leave their thread
//! asleep, which the count does not show: the CPUs look free and the runners come.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a queue thread looks at the host's load at most (only when it is about to spin).
pub const SAMPLE_EVERY: Duration = Duration::from_micros(200);

/// Fixed-point scale of the moving average (sixteenths of a thread).
const SCALE: u32 = 16;

/// How far above the CPUs the average must rise before the host counts as crowded: a whole
/// thread waiting on average (a thread per CPU running is not crowded, and a runner or a client
/// thread waking for a moment is no crowd). Below half a thread the host is calm again:
/// hysteresis, so that a host near the mark does not flip on every sample.
const CROWDED_ABOVE: u32 = SCALE;
const CALM_BELOW: u32 = SCALE / 2;

/// The host's count of runnable threads, and its CPUs.
#[derive(Debug)]
pub struct HostLoad {
    loadavg: File,
    cpus: u32,
}

impl HostLoad {
    /// Opens `/proc/loadavg` (call it before the sandbox hides /proc) and counts the online
    /// CPUs; fails if the file cannot be read or does not parse.
    pub fn open() -> io::Result<Self> {
        // SAFETY: sysconf has no memory effects.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let cpus = u32::try_from(online)
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| io::Error::other("cannot count the online CPUs"))?;
        Self::from_file(File::open("/proc/loadavg")?, cpus)
    }

    /// Reads `loadavg`, a file in `/proc/loadavg`'s format read again from its start at each
    /// look, against `cpus` CPUs (tests give their own); fails if it does not parse.
    pub fn from_file(loadavg: File, cpus: u32) -> io::Result<Self> {
        let load = Self { loadavg, cpus };
        load.runnable()?;
        Ok(load)
    }

    /// Threads runnable on the host now (running or waiting for a CPU), the caller included.
    pub fn runnable(&self) -> io::Result<u32> {
        let mut buf = [0u8; 128];
        let n = self.loadavg.read_at(&mut buf, 0)?;
        parse_runnable(&buf[..n]).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "/proc/loadavg does not parse")
        })
    }

    /// The host's online CPUs.
    pub fn cpus(&self) -> u32 {
        self.cpus
    }
}

/// The running count of a `/proc/loadavg` line: `0.52 0.58 0.59 3/1024 12345` → 3.
fn parse_runnable(text: &[u8]) -> Option<u32> {
    let field = text
        .split(u8::is_ascii_whitespace)
        .filter(|f| !f.is_empty())
        .nth(3)?;
    let running = field.split(|&b| b == b'/').next()?;
    std::str::from_utf8(running).ok()?.parse().ok()
}

/// What one reader gets from the host's load: at most one look per [`SAMPLE_EVERY`]; a reader
/// that cannot read it any more stops looking (and acts as on an idle host).
#[derive(Debug)]
struct Looks {
    load: Option<Arc<HostLoad>>,
    /// When the last look was taken (also one whose line did not parse).
    last: Option<Instant>,
}

/// What one call to [`Looks::look`] gave.
enum Look {
    /// No load to read: none was given, or reading it failed.
    Off,
    /// The last look is recent, or this one was lost (a line caught while being rewritten):
    /// what the last one said stands.
    Kept,
    /// `runnable` threads now; the look before was `since` ago (`None`: this is the first).
    Fresh {
        runnable: u32,
        since: Option<Duration>,
    },
}

impl Looks {
    fn new(load: Option<Arc<HostLoad>>) -> Self {
        Self { load, last: None }
    }

    /// Whether there is a load to look at (before reading the clock for [`Self::look`]).
    fn on(&self) -> bool {
        self.load.is_some()
    }

    /// The host's online CPUs (0 without a load).
    fn cpus(&self) -> u32 {
        self.load.as_ref().map_or(0, |load| load.cpus)
    }

    /// Looks at the load at `now` if the last look is older than [`SAMPLE_EVERY`]. A failure
    /// other than a line that does not parse ends the looks, logged as `then` does without.
    fn look(&mut self, now: Instant, then: &str) -> Look {
        let Some(load) = &self.load else {
            return Look::Off;
        };
        let since = self.last.map(|t| now.saturating_duration_since(t));
        if since.is_some_and(|s| s < SAMPLE_EVERY) {
            return Look::Kept;
        }
        self.last = Some(now);
        match load.runnable() {
            Ok(runnable) => Look::Fresh { runnable, since },
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Look::Kept,
            Err(e) => {
                tracing::debug!("cannot read the host's load, {then}: {e}");
                self.load = None;
                Look::Off
            }
        }
    }
}

/// One step of the moving averages here (weight 1/4): `average` with `sample` added.
fn moving_average(average: u32, sample: u32) -> u32 {
    average - average / 4 + sample / 4
}

/// One queue thread's view of the host's load: whether it is crowded now.
#[derive(Debug)]
pub struct Crowding {
    looks: Looks,
    /// Runnable threads, a moving average (weight 1/4) in [`SCALE`]ths.
    average: u32,
    crowded: bool,
}

impl Crowding {
    /// Reads `load`; `None`: never crowded (no spin is ever held back).
    pub fn new(load: Option<Arc<HostLoad>>) -> Self {
        Self {
            looks: Looks::new(load),
            average: 0,
            crowded: false,
        }
    }

    /// Whether threads wait for a CPU on the host (on average, recently): a spin would take
    /// one from them. Reads the load if the last look is older than [`SAMPLE_EVERY`] at `now`
    /// (a recent reading of the clock the caller has; `None`: reads it).
    pub fn crowded(&mut self, now: Option<Instant>) -> bool {
        if !self.looks.on() {
            return false;
        }
        let now = now.unwrap_or_else(Instant::now);
        match self.looks.look(now, "polling regardless") {
            Look::Off => {
                self.crowded = false;
                false
            }
            Look::Kept => self.crowded,
            Look::Fresh { runnable, .. } => {
                let cpus = self.looks.cpus();
                self.sample(runnable, cpus)
            }
        }
    }

    /// Adds one look at the host (`runnable` threads, `cpus` CPUs) to the average.
    fn sample(&mut self, runnable: u32, cpus: u32) -> bool {
        self.average = moving_average(self.average, runnable.min(1 << 16) * SCALE);
        let cpus = cpus.saturating_mul(SCALE);
        self.crowded = if self.crowded {
            self.average >= cpus + CALM_BELOW
        } else {
            self.average > cpus + CROWDED_ABOVE
        };
        self.crowded
    }
}

/// Whether a CPU is free for the pool runners of a queue: the threads runnable on the host
/// besides the queue's own (its thread, assumed running, and its runners, whose number the
/// pool bounds itself), on average, leave a CPU beside the queue thread's, to within
/// [`SPARE_WITHIN`]. The queue's own are left out so that its runners at work do not shut
/// the door behind them; runners asleep in a disk wait are not runnable and take no CPU.
/// Looked at only when quick work is queued that would be worth a runner (see
/// `crate::pool`), so the looks fall when requests have just come in: the guest's thread that
/// sent them is often still running then.
#[derive(Debug)]
pub struct SpareCpu {
    looks: Looks,
    /// Threads runnable that are not the queue's, a moving average (weight 1/4) in
    /// [`SCALE`]ths.
    others: u32,
}

/// How far the threads runnable (on average, in [`SCALE`]ths) may go over the CPUs with a
/// runner: three quarters of a thread. Measured on 2 CPUs with one client thread at
/// depth 64–256 by the queue thread's looks: the others averaged 0.66 thread under
/// READDIRPLUS (a client that mostly waits; runners served 19–25 % more) and 1.0 under
/// LOOKUP (a client always busy; runners served 11–17 % less).
const SPARE_WITHIN: u32 = SCALE * 3 / 4;

/// A look older than this does not count in the average: the next one starts it again.
const STALE_AFTER: Duration = Duration::from_millis(2);

impl SpareCpu {
    /// Reads `load`; `None`: a CPU is always free (as if the host were idle).
    pub fn new(load: Option<Arc<HostLoad>>) -> Self {
        Self {
            looks: Looks::new(load),
            others: 0,
        }
    }

    /// Whether a runner would find a CPU, with `runners` of the queue alive now. Reads the
    /// load if the last look is older than [`SAMPLE_EVERY`].
    pub fn spare(&mut self, runners: usize) -> bool {
        if !self.looks.on() {
            return true;
        }
        match self.looks.look(Instant::now(), "waking runners as if idle") {
            Look::Off => return true,
            Look::Kept => {}
            Look::Fresh { runnable, since } => {
                let stale = since.map_or(true, |s| s >= STALE_AFTER);
                self.sample(runnable, runners, stale);
            }
        }
        self.fits(self.looks.cpus())
    }

    /// Adds one look (`runnable` threads on the host, `runners` of them the queue's) to the
    /// average; `fresh_start`: the last look is too old to count.
    fn sample(&mut self, runnable: u32, runners: usize, fresh_start: bool) {
        let ours = u32::try_from(runners).unwrap_or(u32::MAX).saturating_add(1);
        let others = runnable.min(1 << 16).saturating_sub(ours) * SCALE;
        self.others = if fresh_start {
            others
        } else {
            moving_average(self.others, others)
        };
    }

    /// Whether the others' average, the queue thread and a runner fit in `cpus` to within
    /// [`SPARE_WITHIN`].
    fn fits(&self, cpus: u32) -> bool {
        let wanted = self.others.saturating_add(2 * SCALE);
        wanted <= cpus.saturating_mul(SCALE).saturating_add(SPARE_WITHIN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_count_is_the_fourth_field() {
        assert_eq!(parse_runnable(b"0.52 0.58 0.59 3/1024 12345\n"), Some(3));
        assert_eq!(parse_runnable(b"10.00 9.00 8.00 17/300 1\n"), Some(17));
        assert_eq!(parse_runnable(b"0.52 0.58 0.59\n"), None);
        assert_eq!(parse_runnable(b"a b c x/2 1\n"), None);
    }

    #[test]
    fn this_host_reads() {
        let load = HostLoad::open().unwrap();
        assert!(load.cpus() >= 1);
        assert!(load.runnable().unwrap() >= 1, "this thread is running");
    }

    #[test]
    fn threads_waiting_for_a_cpu_make_it_crowded_and_a_spare_cpu_ends_it() {
        let mut c = Crowding::new(None);
        // A guest doing one request at a time on 2 CPUs: 1-2 threads runnable.
        for r in [1, 2, 1, 2, 2, 1, 3, 1, 2, 1] {
            assert!(!c.sample(r, 2), "a spare CPU: spin");
        }
        // Many client threads: 5-6 runnable.
        let crowded = [5, 6, 5, 6].iter().map(|&r| c.sample(r, 2)).last();
        assert_eq!(crowded, Some(true));
        // One sample at 2 does not end it; some more do.
        assert!(c.sample(2, 2));
        let calm = (0..8).map(|_| c.sample(1, 2)).last();
        assert_eq!(calm, Some(false));
    }

    #[test]
    fn a_runner_is_spared_a_cpu_only_where_the_others_leave_one() {
        let mut s = SpareCpu::new(None);
        // 2 CPUs, a client that sleeps most of the time (READDIRPLUS): the queue thread and the
        // client runnable now and then.
        s.sample(1, 0, true);
        for r in [1, 2, 1, 1, 2, 1] {
            s.sample(r, 0, false);
        }
        assert!(s.fits(2), "a runner fits beside the queue thread");
        // Runners of the queue at work are the queue's, not others.
        for _ in 0..8 {
            s.sample(3, 2, false);
        }
        assert!(s.fits(2), "its runners do not shut the door behind them");
        // A client thread always busy (LOOKUP at depth 64): no CPU for a runner.
        for r in [2, 2, 1, 2, 2, 2, 3, 2] {
            s.sample(r, 0, false);
        }
        assert!(!s.fits(2));
        assert!(s.fits(4), "on 4 CPUs there is one");
        // A look after a long pause starts the average again.
        s.sample(1, 0, true);
        assert!(s.fits(2));
        // The two cells the bound was measured on: others at 0.66 and 1.0 thread.
        s.others = SCALE * 2 / 3;
        assert!(s.fits(2), "READDIRPLUS: runners");
        s.others = SCALE;
        assert!(!s.fits(2), "LOOKUP: none");
    }

    #[test]
    fn without_a_load_file_a_cpu_is_always_spare() {
        let mut s = SpareCpu::new(None);
        assert!(s.spare(1000));
    }

    #[test]
    fn without_a_load_file_never_crowded() {
        let mut c = Crowding::new(None);
        assert!(!c.crowded(None));
    }
}
