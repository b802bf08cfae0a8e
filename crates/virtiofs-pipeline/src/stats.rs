//! Per-queue counters, logged at shutdown and readable while running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
    /// Pool runners started (each a thread wake-up; a runner runs pooled requests until none
    /// is queued).
    pub runners: AtomicU64,
    /// Batches of completions published together by the queue thread.
    pub batches: AtomicU64,
    /// Guest notifications sent (call eventfd writes).
    pub notifications: AtomicU64,
    /// Recent time per request in the server, ns (a moving average, weight 1/8).
    service_ns: AtomicU64,
    in_flight: AtomicU64,
}

impl QueueStats {
    /// Counts a request starting; returns a guard that counts it finishing.
    pub fn start(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::AcqRel);
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

    /// Adds one request's time in the server to the moving average. Several threads may
    /// update it at once; an update lost now and then does not matter.
    pub(crate) fn record_service(&self, elapsed: Duration) {
        let sample = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let avg = self.service_ns.load(Ordering::Relaxed);
        let next = avg - avg / 8 + sample / 8;
        self.service_ns.store(next, Ordering::Relaxed);
    }

    /// The recent time per request in the server, ns.
    pub fn service_ns(&self) -> u64 {
        self.service_ns.load(Ordering::Relaxed)
    }

    /// Chains completed so far.
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }
}

/// Counts one running request; dropping it counts the request finished.
pub struct InFlight<'a>(&'a QueueStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
