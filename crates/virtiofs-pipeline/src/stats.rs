//! Per-queue counters, logged at shutdown and readable while running.

use std::sync::atomic::{AtomicU64, Ordering};

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
    /// Batches of completions published together by the queue thread.
    pub batches: AtomicU64,
    /// Guest notifications sent (call eventfd writes).
    pub notifications: AtomicU64,
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
