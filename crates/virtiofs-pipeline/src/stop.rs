//! The daemon's stop signal, as the queue threads see it.
//!
//! Tasks that wait for the stop await the cancellation token; the request path only asks
//! whether the stop has come, once per chain, and `CancellationToken::is_cancelled` takes the
//! token's mutex, shared by every queue thread. A flag set before the token is cancelled
//! answers that with one load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Fires once, when the daemon stops; cheap to check, and awaitable.
#[derive(Clone, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl Stop {
    /// Stops: the flag first, so that whoever the token wakes sees it set.
    pub(crate) fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether [`Self::stop`] was called (one atomic load).
    pub(crate) fn is_stopped(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Resolves once [`Self::stop`] is called.
    pub(crate) fn stopped(&self) -> WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stop_is_seen_by_the_flag_and_by_waiters() {
        let stop = Stop::default();
        let other = stop.clone();
        assert!(!other.is_stopped());
        let waiter = tokio::spawn(async move {
            other.stopped().await;
            other.is_stopped()
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        stop.stop();
        assert!(waiter.await.unwrap(), "the flag is set before waiters wake");
        assert!(stop.is_stopped());
    }
}
