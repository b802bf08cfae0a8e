//! Where a request runs: on its queue's own thread, or on the bounded pool.
//!
//! The rule ([`place`]): a request runs on the queue thread (inline: no thread hop, its
//! completion batched with the others of its drain) unless
//! - other requests wait behind it in the same drain (popped with it, or still in the ring):
//!   then it goes to the pool so that they need not wait for it; or
//! - it is [`Weight::Long`] (a flush, a large READ or WRITE, a copy; the pipeline's SETLKW
//!   retries ask for this too): then it goes to the pool so that the queue stays responsive;
//!
//! and in both cases only if a permit of the queue's pool is free at once. With no permit free
//! the queue thread runs it itself: it is busy anyway, and the ring keeps what it has not
//! popped (the guest's back-pressure). `--thread-pool-size=0` (and the hiprio queue) has no pool:
//! everything runs inline.

use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::request::Weight;

/// The pool of one request queue: its permits (`--thread-pool-size`) over the blocking
/// threads of a runtime shared by every queue.
#[derive(Clone)]
pub(crate) struct Pool {
    permits: Arc<Semaphore>,
    runtime: Handle,
    tracker: TaskTracker,
}

impl Pool {
    /// A pool of `size` permits (at least 1) running work on `runtime`'s blocking threads,
    /// tracked by `tracker` (shutdown waits for it).
    pub(crate) fn new(size: usize, runtime: Handle, tracker: TaskTracker) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(size.max(1))),
            runtime,
            tracker,
        }
    }

    /// A permit if one is free now.
    pub(crate) fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Runs `job` on a blocking thread, holding `permit` until it returns.
    pub(crate) fn run<T: Send + 'static>(
        &self,
        permit: OwnedSemaphorePermit,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        self.tracker.spawn_blocking_on(
            move || {
                let _permit = permit;
                job()
            },
            &self.runtime,
        )
    }
}

/// Where one request runs.
pub(crate) enum Placement {
    /// On the queue thread, now.
    Inline,
    /// On the pool, holding this permit.
    Pool(OwnedSemaphorePermit),
}

/// The rule of the module docs: `others_waiting` says whether requests of the same drain wait
/// behind this one.
pub(crate) fn place(pool: Option<&Pool>, weight: Weight, others_waiting: bool) -> Placement {
    match pool {
        Some(pool) if others_waiting || weight == Weight::Long => match pool.try_permit() {
            Some(permit) => Placement::Pool(permit),
            None => Placement::Inline,
        },
        _ => Placement::Inline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_pooled(p: &Placement) -> bool {
        matches!(p, Placement::Pool(_))
    }

    #[tokio::test]
    async fn shallow_quick_requests_run_inline_and_the_rest_take_free_permits() {
        let pool = Pool::new(2, Handle::current(), TaskTracker::new());
        let (quick, long) = (Weight::Quick, Weight::Long);
        assert!(
            !is_pooled(&place(Some(&pool), quick, false)),
            "nothing behind"
        );
        assert!(!is_pooled(&place(None, long, true)), "no pool: all inline");
        let a = place(Some(&pool), quick, true);
        let b = place(Some(&pool), long, false);
        assert!(is_pooled(&a) && is_pooled(&b));
        assert!(
            !is_pooled(&place(Some(&pool), long, true)),
            "no permit left: inline"
        );
        drop(a);
        assert!(is_pooled(&place(Some(&pool), quick, true)), "a permit back");
    }
}
