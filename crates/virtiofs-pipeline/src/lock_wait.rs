//! SETLKW that waits without pinning a worker.
//!
//! A blocking `F_OFD_SETLKW` would hold a thread (and a pool permit) and a gate pass for as
//! long as another process holds the lock: INIT and DESTROY would wait behind it, and a few
//! waiters would stall the queue. Instead the filesystem tries the lock once and answers EAGAIN
//! when it is held; the pipeline keeps that reply off the used ring and runs the request again
//! after a growing pause (1 ms to 50 ms), holding nothing in between. The wait is a task on the
//! queue thread's runtime; a retry goes to the pool when a runner is free (and the wait goes on
//! from there, as a new task, if the lock is still held), otherwise it runs on the queue thread.
//! The wait ends:
//! - with the lock (or another error), the reply the filesystem wrote;
//! - with EINTR when the session that sent it ended (DESTROY, a new driver's INIT), when the
//!   ring stops (device reset, VM pause or migration: a ring must be quiet before
//!   GET_VRING_BASE returns), or when the daemon stops. EINTR is what fcntl(F_SETLKW) says when
//!   a wait is interrupted; callers retry it.

use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::debug;
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use virtiofs_fuse::abi::{InHeader, Opcode};

use crate::gate::Pass;
use crate::handler::{FuseHandler, Handled};
use crate::pool::Job;
use crate::queue::{QueueContext, Step};
use crate::request::Weight;
use crate::used::Unanswered;

/// The first pause before a waiting SETLKW runs again.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
/// The longest pause: how late, at most, a waiter notices a released lock.
const MAX_PAUSE: Duration = Duration::from_millis(50);

/// A SETLKW that must wait for its lock: the chain is off the available ring and not yet used.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LockWait {
    /// The header as first read (the request keeps its opcode whatever the guest writes).
    header: InHeader,
    /// The session it was sent in ([`Pass::inits`]).
    session: u64,
    /// The pause before the next try.
    pause: Duration,
}

impl LockWait {
    /// A wait when `handled` is a SETLKW answered EAGAIN (the lock is held elsewhere) in a live
    /// session; `None` when the request is done.
    pub(crate) fn check(
        header: Option<InHeader>,
        pass: Option<&Pass>,
        handled: &Handled,
    ) -> Option<LockWait> {
        match (header, pass) {
            (Some(header), Some(pass))
                if header.opcode == Opcode::Setlkw as u32
                    && handled.errno == libc::EAGAIN
                    && pass.initialized() =>
            {
                Some(LockWait {
                    header,
                    session: pass.inits(),
                    pause: FIRST_PAUSE,
                })
            }
            _ => None,
        }
    }
}

impl LockWait {
    /// This wait, continuing `previous` (a retry on the pool): its pauses go on growing.
    pub(crate) fn continuing(self, previous: Option<LockWait>) -> LockWait {
        LockWait {
            pause: previous.map_or(self.pause, |p| p.pause),
            ..self
        }
    }
}

impl<H: FuseHandler> QueueContext<H> {
    /// Starts the wait of `job` on the queue thread's runtime (from the queue thread or the
    /// pool). If that runtime has stopped, the task is dropped and `job` answered EINTR.
    pub(crate) fn spawn_lock_wait(&self, job: Unanswered<H>, w: LockWait) {
        let job = job.with_errno(libc::EINTR);
        self.tasks.spawn_on(wait_for_lock(job, w), &self.local);
        // From the pool, the queue thread may be blocked in poll(2): it must wake to run this.
        self.alarms.nudge();
    }
}

/// Runs `job` again until it is answered (see the module docs).
async fn wait_for_lock<H: FuseHandler>(job: Unanswered<H>, mut w: LockWait) {
    let ctx = job.ctx().clone();
    debug!(
        queue = ctx.link.index,
        unique = w.header.unique,
        "SETLKW: lock held elsewhere, waiting"
    );
    let mut changes = ctx.link.vring.subscribe();
    changes.borrow_and_update();
    loop {
        tokio::select! {
            biased;
            _ = ctx.stop.stopped() => return interrupt(job, &w, "the daemon is stopping"),
            r = changes.changed() => {
                if r.is_err() || !ctx.link.vring.get_ref().get_queue().ready() {
                    return interrupt(job, &w, "the ring stopped");
                }
                continue;
            }
            timed = pause(&ctx.timers, w.pause) => if !timed {
                return interrupt(job, &w, "the daemon is stopping");
            }
        }
        w.pause = (w.pause * 2).min(MAX_PAUSE);
        let pass = ctx.gate.enter(Opcode::Setlkw as u32).await;
        if !pass.initialized() || pass.inits() != w.session {
            drop(pass);
            return interrupt(job, &w, "its session ended");
        }
        if let Some(pool) = ctx.pool.as_ref().filter(|p| p.has_room()) {
            // The wait goes on from the pool if the lock is still held; dropped unrun (the
            // runtime shut down), the job is answered EINTR.
            let job = Job {
                chain: job,
                header: Some(w.header),
                // Long: it may wait again, and runners take it first.
                weight: Weight::Long,
                pass: Some(pass),
                retry: Some(w),
            };
            return pool.push(job);
        }
        ctx.stats.count_inline();
        match ctx.process(job.chain(), Some(w.header), Weight::Quick, Some(pass)) {
            Step::Done(len) => return job.answer(len),
            Step::Wait(_) => {}
        }
    }
}

/// Waits `pause` on the timers of `timers` (queue threads' runtimes have none); `false` if
/// that runtime has shut down (its timer task was dropped), rather than the panic of polling a
/// timer whose runtime is gone.
async fn pause(timers: &Handle, pause: Duration) -> bool {
    let (mut done, fired) = oneshot::channel();
    timers.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(pause) => drop(done.send(())),
            _ = done.closed() => {} // the wait ended otherwise
        }
    });
    fired.await.is_ok()
}

/// Ends a wait with EINTR.
fn interrupt<H: FuseHandler>(job: Unanswered<H>, w: &LockWait, why: &str) {
    debug!(
        queue = job.ctx().link.index,
        unique = w.header.unique,
        "SETLKW wait interrupted: {why}"
    );
    job.answer_error(libc::EINTR);
}
