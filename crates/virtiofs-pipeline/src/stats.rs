//! Per-queue counters and histograms: logged at shutdown and on SIGUSR1 ([`QueueStats::log`]),
//! readable while running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::info;

/// Moves `avg` 1/8 of the way to `sample`.
fn moving_average(avg: &AtomicU64, sample: u64) {
    let old = avg.load(Ordering::Relaxed);
    avg.store(old - old / 8 + sample / 8, Ordering::Relaxed);
}

/// What one virtqueue has done.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Descriptor chains returned to the used ring.
    pub completed: AtomicU64,
    /// Chains that were malformed (returned with an error or empty).
    pub malformed: AtomicU64,
    /// Requests answered with an error because no INIT preceded them.
    pub before_init: AtomicU64,
    /// Most requests of this queue that ran at the same time.
    pub peak_in_flight: AtomicU64,
    /// Requests run on the queue's own thread.
    pub inline: AtomicU64,
    /// Requests run on the pool.
    pub pooled: AtomicU64,
    /// Of the requests started on the queue thread, those whose I/O went through its io_uring
    /// (`--io-engine io-uring`).
    pub uring: AtomicU64,
    /// Pool runners started (each a thread wake-up; a runner runs pooled requests until none
    /// is queued).
    pub runners: AtomicU64,
    /// Batches of completions published together by the queue thread.
    pub batches: AtomicU64,
    /// Batches whose first completion was published before the rest ran, the driver waiting
    /// for it (`UsedBatch::flush_if_awaited`).
    pub early: AtomicU64,
    /// Guest notifications sent (call eventfd writes).
    pub notifications: AtomicU64,
    /// Times the queue polled the avail ring before sleeping (`--poll-us`).
    pub polls: AtomicU64,
    /// Polls that found a request (no sleep, no kick needed).
    pub poll_hits: AtomicU64,
    /// Polls cut short because the thread lost its CPU while spinning (another thread wanted
    /// it): polling then pauses (see `poll.rs`).
    pub poll_preempted: AtomicU64,
    /// Spins not begun because every CPU of the host was wanted (see `host_load.rs`).
    pub poll_crowded: AtomicU64,
    /// Polls that found one request at once and waited for a second (see `gather.rs`).
    pub gathers: AtomicU64,
    /// Of those, the ones the second request came to.
    pub gathered: AtomicU64,
    /// Time per request in the server, ns.
    pub service: Log2Histogram,
    /// Requests of this queue running when one starts (itself included): the depth it meets.
    pub depth: Log2Histogram,
    /// Recent time per request in the server, ns (a moving average, weight 1/8).
    service_ns: AtomicU64,
    /// The same for bulk requests (READs and WRITEs of more than 128 KiB), wherever they ran.
    bulk_ns: AtomicU64,
    in_flight: AtomicU64,
}

impl QueueStats {
    /// Counts a request starting; returns a guard that counts it finishing.
    pub fn start(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::AcqRel);
        self.depth.record(now);
        InFlight(self)
    }

    /// Counts a request run on the queue thread.
    pub(crate) fn count_inline(&self) {
        self.inline.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request run on the pool.
    pub(crate) fn count_pooled(&self) {
        self.pooled.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds one request's time in the server to the histogram and the moving averages (the
    /// bulk one too if `bulk`). Several threads may update an average at once; an update lost
    /// now and then does not matter.
    pub(crate) fn record_service(&self, elapsed: Duration, bulk: bool) {
        let sample = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.service.record(sample);
        moving_average(&self.service_ns, sample);
        if bulk {
            moving_average(&self.bulk_ns, sample);
        }
    }

    /// The recent time per bulk request (a READ or WRITE of more than 128 KiB) in the server,
    /// ns.
    pub fn bulk_ns(&self) -> u64 {
        self.bulk_ns.load(Ordering::Relaxed)
    }

    /// The recent time per request in the server, ns.
    pub fn service_ns(&self) -> u64 {
        self.service_ns.load(Ordering::Relaxed)
    }

    /// Chains completed so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Logs what queue `index` has done so far, if it did anything: counters, where requests
    /// ran, and percentiles of service time and depth (upper bounds of power-of-two buckets).
    pub fn log(&self, index: usize) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        if self.completed() == 0 && get(&self.malformed) == 0 {
            return;
        }
        let us = |q: f64| self.service.quantile(q) as f64 / 1000.0;
        info!(
            queue = index,
            requests = self.completed(),
            inline = get(&self.inline),
            pooled = get(&self.pooled),
            uring = get(&self.uring),
            runners = get(&self.runners),
            batches = get(&self.batches),
            early = get(&self.early),
            notifications = get(&self.notifications),
            polls = get(&self.polls),
            poll_hits = get(&self.poll_hits),
            poll_preempted = get(&self.poll_preempted),
            poll_crowded = get(&self.poll_crowded),
            gathers = get(&self.gathers),
            gathered = get(&self.gathered),
            service_p50_us = us(0.5),
            service_p99_us = us(0.99),
            service_p999_us = us(0.999),
            depth_p50 = self.depth.quantile(0.5),
            depth_p99 = self.depth.quantile(0.99),
            peak_in_flight = get(&self.peak_in_flight),
            malformed = get(&self.malformed),
            before_init = get(&self.before_init),
            "queue statistics"
        );
    }
}

/// Counts one running request; dropping it counts the request finished.
pub struct InFlight<'a>(&'a QueueStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Buckets of a [`Log2Histogram`]: bucket `b` counts values in `[2^(b-1), 2^b)`, bucket 0 the
/// value 0, the last everything from `2^(BUCKETS-2)` up (about 4.6 s in ns).
pub const BUCKETS: usize = 34;

/// A histogram of `u64` values in power-of-two buckets: one relaxed add per value, no lock.
#[derive(Debug)]
pub struct Log2Histogram {
    counts: [AtomicU64; BUCKETS],
}

impl Default for Log2Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Log2Histogram {
    /// The bucket of `value`.
    fn bucket(value: u64) -> usize {
        ((u64::BITS - value.leading_zeros()) as usize).min(BUCKETS - 1)
    }

    /// Counts `value`.
    pub fn record(&self, value: u64) {
        self.counts[Self::bucket(value)].fetch_add(1, Ordering::Relaxed);
    }

    /// Values counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// An upper bound of the `q` quantile (`0.0..=1.0`): the smallest bucket limit at or
    /// below which at least that share of the values lies; 0 when nothing was counted.
    pub fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let want = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                // Largest value of bucket b: 2^b - 1 (bucket 0: 0).
                return if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
            }
        }
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_power_of_two_buckets() {
        assert_eq!(Log2Histogram::bucket(0), 0);
        assert_eq!(Log2Histogram::bucket(1), 1);
        assert_eq!(Log2Histogram::bucket(2), 2);
        assert_eq!(Log2Histogram::bucket(3), 2);
        assert_eq!(Log2Histogram::bucket(4), 3);
        assert_eq!(Log2Histogram::bucket(1023), 10);
        assert_eq!(Log2Histogram::bucket(1024), 11);
        assert_eq!(Log2Histogram::bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_bound_the_values_from_above() {
        let h = Log2Histogram::default();
        assert_eq!(h.quantile(0.5), 0, "empty");
        // 90 values of 1000 ns and 10 of 100_000 ns.
        (0..90).for_each(|_| h.record(1000));
        (0..10).for_each(|_| h.record(100_000));
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile(0.5), 1023);
        assert_eq!(h.quantile(0.9), 1023);
        assert_eq!(h.quantile(0.91), 131_071);
        assert_eq!(h.quantile(1.0), 131_071);
        assert!(h.quantile(0.5) >= 1000 && h.quantile(0.99) >= 100_000);
    }

    #[test]
    fn depth_counts_requests_running_together() {
        let s = QueueStats::default();
        let a = s.start();
        let b = s.start();
        drop((a, b));
        let _c = s.start();
        // Depths seen: 1, 2, 1.
        assert_eq!(s.depth.count(), 3);
        assert_eq!(s.depth.quantile(0.6), 1);
        assert_eq!(s.depth.quantile(1.0), 3, "2 is in the bucket [2, 4)");
        assert_eq!(s.peak_in_flight.load(Ordering::Relaxed), 2);
    }
}
