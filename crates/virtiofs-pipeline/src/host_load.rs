//! Whether the host has a CPU to spare for a spin on the avail ring (`--poll-us`).
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

/// One queue thread's view of the host's load: whether it is crowded now.
#[derive(Debug)]
pub struct Crowding {
    load: Option<Arc<HostLoad>>,
    next_sample: Option<Instant>,
    /// Runnable threads, a moving average (weight 1/4) in [`SCALE`]ths.
    average: u32,
    crowded: bool,
}

impl Crowding {
    /// Reads `load`; `None`: never crowded (no spin is ever held back).
    pub fn new(load: Option<Arc<HostLoad>>) -> Self {
        Self {
            load,
            next_sample: None,
            average: 0,
            crowded: false,
        }
    }

    /// Whether threads wait for a CPU on the host (on average, recently): a spin would take
    /// one from them. Reads the load if the last look is older than [`SAMPLE_EVERY`] at `now`
    /// (a recent reading of the clock the caller has; `None`: reads it).
    pub fn crowded(&mut self, now: Option<Instant>) -> bool {
        let Some(load) = &self.load else {
            return false;
        };
        let now = now.unwrap_or_else(Instant::now);
        if self.next_sample.is_some_and(|next| now < next) {
            return self.crowded;
        }
        self.next_sample = Some(now + SAMPLE_EVERY);
        match load.runnable() {
            Ok(runnable) => {
                let cpus = load.cpus;
                self.sample(runnable, cpus)
            }
            // A line that does not parse (caught while being rewritten): this look is lost.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => self.crowded,
            Err(e) => {
                tracing::debug!("cannot read the host's load, polling regardless: {e}");
                self.load = None;
                self.crowded = false;
                false
            }
        }
    }

    /// Adds one look at the host (`runnable` threads, `cpus` CPUs) to the average.
    fn sample(&mut self, runnable: u32, cpus: u32) -> bool {
        let runnable = runnable.min(1 << 16) * SCALE;
        self.average = self.average - self.average / 4 + runnable / 4;
        let cpus = cpus.saturating_mul(SCALE);
        self.crowded = if self.crowded {
            self.average >= cpus + CALM_BELOW
        } else {
            self.average > cpus + CROWDED_ABOVE
        };
        self.crowded
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
    fn without_a_load_file_never_crowded() {
        let mut c = Crowding::new(None);
        assert!(!c.crowded(None));
    }
}
