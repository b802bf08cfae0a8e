//! SETLKW that waits without pinning a worker.
//!
//! A blocking `F_OFD_SETLKW` would hold a pool thread (and its permit) and a gate pass for as
//! long as another process holds the lock: INIT and DESTROY would wait behind it, and a few
//! waiters would stall the queue. Instead the filesystem tries the lock once and answers EAGAIN
//! when it is held; the pipeline keeps that reply off the used ring and runs the request again
//! after a growing pause (1 ms to 50 ms), holding nothing in between. The wait ends:
//! - with the lock (or another error), the reply the filesystem wrote;
//! - with EINTR when the session that sent it ended (DESTROY, a new driver's INIT), when the
//!   ring stops (device reset, VM pause or migration: a ring must be quiet before
//!   GET_VRING_BASE returns), or when the daemon stops. EINTR is what fcntl(F_SETLKW) says when
//!   a wait is interrupted; callers retry it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use virtiofs_fuse::abi::{InHeader, Opcode};

use crate::gate::Pass;
use crate::handler::{Chain, FuseHandler, Handled};
use crate::queue::{serve_chain_handled, QueueContext};
use crate::request::reply_error;

/// The first pause before a waiting SETLKW runs again.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
/// The longest pause: how late, at most, a waiter notices a released lock.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// A SETLKW waiting for its lock: the chain is off the available ring and not yet used.
pub(crate) struct LockWait {
    chain: Chain,
    /// The header as first read (the request keeps its opcode whatever the guest writes).
    header: InHeader,
    /// The session it was sent in ([`Pass::inits`]).
    session: u64,
}

impl LockWait {
    /// A wait when `handled` is a SETLKW answered EAGAIN (the lock is held elsewhere); the
    /// chain back otherwise, to complete.
    pub(crate) fn new(
        chain: Chain,
        header: Option<InHeader>,
        pass: Option<&Pass>,
        handled: &Handled,
    ) -> Result<LockWait, Chain> {
        match (header, pass) {
            (Some(header), Some(pass))
                if header.opcode == Opcode::Setlkw as u32
                    && handled.errno == libc::EAGAIN
                    && pass.initialized() =>
            {
                Ok(LockWait {
                    chain,
                    header,
                    session: pass.inits(),
                })
            }
            _ => Err(chain),
        }
    }
}

impl<H: FuseHandler> QueueContext<H> {
    /// Runs `w` again until it is answered (see the module docs).
    pub(crate) async fn wait_for_lock(
        self: Arc<Self>,
        mut w: LockWait,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) {
        debug!(
            queue = self.link.index,
            unique = w.header.unique,
            "SETLKW: lock held elsewhere, waiting"
        );
        let mut changes = self.link.vring.subscribe();
        changes.borrow_and_update();
        let mut pause = FIRST_PAUSE;
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return self.interrupt(w, "the daemon is stopping"),
                r = changes.changed() => {
                    if r.is_err() || !self.link.vring.get_ref().get_queue().ready() {
                        return self.interrupt(w, "the ring stopped");
                    }
                    continue;
                }
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(MAX_PAUSE);
            let pass = self.gate.enter(Opcode::Setlkw as u32).await;
            if !pass.initialized() || pass.inits() != w.session {
                drop(pass);
                return self.interrupt(w, "its session ended");
            }
            let ctx = self.clone();
            let again = tracker.spawn_blocking(move || {
                let mut pass = Some(pass);
                let handled = serve_chain_handled(
                    &*ctx.handler,
                    &w.chain,
                    Some(w.header),
                    pass.as_mut(),
                    &ctx.stats,
                    ctx.link.index,
                );
                match LockWait::new(w.chain, Some(w.header), pass.as_ref(), &handled) {
                    Ok(waits) => Some(waits),
                    Err(chain) => {
                        drop(pass);
                        ctx.complete(chain.head_index(), handled.len as u32);
                        None
                    }
                }
            });
            match again.await {
                Ok(Some(waits)) => w = waits,
                // Answered; or the blocking task panicked, which the pool has already logged.
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// Ends a wait with EINTR.
    fn interrupt(&self, w: LockWait, why: &str) {
        debug!(
            queue = self.link.index,
            unique = w.header.unique,
            "SETLKW wait interrupted: {why}"
        );
        let len = reply_error(&w.chain, w.header.unique, libc::EINTR).unwrap_or(0);
        self.complete(w.chain.head_index(), len as u32);
    }
}
