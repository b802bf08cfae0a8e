//! What else wakes a waiting queue task (for a kick, or for its ring to become runnable): the
//! daemon stopping, or the frontend changing the ring.
//!
//! Both are rare, but a task waiting on them through `select!` polls their futures on every
//! wake-up, and each poll of a registered tokio `Notify` waiter takes that Notify's lock (the
//! stop's is shared by every queue thread): about a tenth of the instructions of a GETATTR. So a
//! small watcher task waits on them instead (it wakes only when one fires) and raises a flag in
//! an [`Alarms`]; the queue task polls that with one atomic operation and an `AtomicWaker`.
//!
//! A queue task alone on its thread may wait for a kick in poll(2) instead, outside tokio
//! (see `QueueContext::run`); then no waker reaches it. So the watcher runs on the shared
//! runtime, not the queue's, and each alarm also *nudges* the task: it writes to the kick
//! eventfd the task polls (a spurious kick: the task finds the ring empty and sees the alarm).
//! Should that runtime drop the watcher unfinished (it shut down first: tests do that to a
//! runtime that is also the pool's), the watcher says so as a change and the task watches on
//! its own runtime from then on, never blocking again.

use std::future::poll_fn;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::watch;

use crate::stop::Stop;

/// Flags raised for one waiting task.
#[derive(Default)]
pub(crate) struct Alarms {
    raised: AtomicU8,
    waker: AtomicWaker,
    /// The kick eventfd of the ring the task serves (a duplicate), while it serves one.
    nudge: Mutex<Option<OwnedFd>>,
    /// The watcher was dropped before the stop.
    orphaned: AtomicBool,
}

/// What an [`Alarms`] reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alarm {
    /// The daemon stops (or the ring's state went away with the device).
    Stop,
    /// The frontend changed the ring.
    Changed,
}

const STOP: u8 = 1;
const CHANGED: u8 = 2;

impl Alarms {
    fn raise(&self, flag: u8) {
        self.raised.fetch_or(flag, Ordering::Release);
        self.waker.wake();
        // After the flag: a task that looked at the flags before blocking is woken by this.
        self.nudge();
    }

    /// Sets (or, with `None`, forgets) the kick eventfd that [`Self::nudge`] writes to. Set it
    /// before the task first looks at the flags and then blocks in poll(2) on that eventfd.
    pub(crate) fn set_nudge(&self, kick: Option<OwnedFd>) {
        *self.nudge.lock().unwrap() = kick;
    }

    /// Wakes the task if it is blocked in poll(2) on its kick eventfd: a spurious kick, which
    /// costs it one look at an empty ring. Rare: alarms, SETLKW waits, a queue joining the
    /// thread.
    pub(crate) fn nudge(&self) {
        if let Some(fd) = self.nudge.lock().unwrap().as_ref() {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a local buffer to an eventfd we own. It cannot fail
            // but for a counter at its maximum, which is a pending kick anyway.
            unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// Whether the watcher was dropped before the stop (its runtime shut down): the task must
    /// start another where it runs itself. True once.
    pub(crate) fn take_orphaned(&self) -> bool {
        self.orphaned.swap(false, Ordering::AcqRel)
    }

    /// Ready once an alarm is raised: [`Alarm::Stop`] for good; [`Alarm::Changed`] once per
    /// batch of changes. One task polls it.
    pub(crate) fn poll_alarm(&self, cx: &mut Context<'_>) -> Poll<Alarm> {
        if let Some(alarm) = self.take_raised() {
            return Poll::Ready(alarm);
        }
        self.waker.register(cx.waker());
        // Raised between the first look and the registration: its wake may have gone to the
        // waker before.
        match self.take_raised() {
            Some(alarm) => Poll::Ready(alarm),
            None => Poll::Pending,
        }
    }

    /// Forgets a change raised and not taken yet (the task is about to look at the ring).
    pub(crate) fn clear_changed(&self) {
        self.raised.fetch_and(!CHANGED, Ordering::AcqRel);
    }

    /// Waits for [`Self::poll_alarm`].
    pub(crate) async fn alarm(&self) -> Alarm {
        poll_fn(|cx| self.poll_alarm(cx)).await
    }

    /// The alarm raised, if any, as [`Self::poll_alarm`] reports it (a change is taken; also
    /// for a task about to block outside tokio, and again once it wakes).
    pub(crate) fn take_raised(&self) -> Option<Alarm> {
        let raised = self.raised.load(Ordering::Acquire);
        if raised & STOP != 0 {
            Some(Alarm::Stop)
        } else if raised & CHANGED != 0 {
            self.clear_changed();
            Some(Alarm::Changed)
        } else {
            None
        }
    }
}

/// Raises `alarms` when `stop` fires (then ends) and on each change of `changes` (the ring's
/// state; its sender gone counts as a stop) after the version `changes` had seen when it was
/// made: the watcher first runs only once the queue task waits, and a change in between must
/// still be raised. A watcher dropped unfinished (its runtime shutting down) says so with
/// [`Alarms::take_orphaned`] and a change.
pub(crate) async fn watch(alarms: &Alarms, stop: Stop, mut changes: watch::Receiver<u64>) {
    struct Orphaned<'a>(Option<&'a Alarms>);
    impl Drop for Orphaned<'_> {
        fn drop(&mut self) {
            if let Some(alarms) = self.0 {
                alarms.orphaned.store(true, Ordering::Release);
                alarms.raise(CHANGED);
            }
        }
    }
    let mut orphaned = Orphaned(Some(alarms));
    loop {
        tokio::select! {
            biased;
            () = stop.stopped() => break,
            r = changes.changed() => match r {
                Ok(()) => alarms.raise(CHANGED),
                Err(_) => break,
            },
        }
    }
    orphaned.0 = None;
    alarms.raise(STOP);
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn changes_then_the_stop_reach_the_waiting_task() {
        let alarms = Arc::new(Alarms::default());
        let stop = Stop::default();
        let (tx, rx) = watch::channel(0u64);
        let watcher = tokio::spawn({
            let (alarms, stop) = (alarms.clone(), stop.clone());
            async move { watch(&alarms, stop, rx).await }
        });
        let waiter = tokio::spawn({
            let alarms = alarms.clone();
            async move { alarms.alarm().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing raised yet");
        tx.send_modify(|v| *v += 1);
        assert_eq!(waiter.await.unwrap(), Alarm::Changed);
        // Taken once: the next wait waits again.
        let waiter = tokio::spawn({
            let alarms = alarms.clone();
            async move { alarms.alarm().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "a change is reported once");
        stop.stop();
        assert_eq!(waiter.await.unwrap(), Alarm::Stop);
        watcher.await.unwrap();
        // A stop stays raised.
        assert_eq!(alarms.alarm().await, Alarm::Stop);
    }

    #[tokio::test]
    async fn a_change_before_the_watcher_first_runs_is_raised() {
        let alarms = Alarms::default();
        let (tx, _) = watch::channel(0u64);
        let rx = tx.subscribe(); // as the queue task makes it, before it spawns the watcher
        tx.send_modify(|v| *v += 1);
        let stop = Stop::default();
        let watching = watch(&alarms, stop.clone(), rx);
        tokio::pin!(watching);
        // One poll of the watcher, then of the alarms.
        let first = poll_fn(|cx| Poll::Ready(watching.as_mut().poll(cx))).await;
        assert!(first.is_pending());
        // A deadline, not a timing: a change lost would leave this waiting for ever.
        let alarm = tokio::time::timeout(std::time::Duration::from_secs(10), alarms.alarm());
        assert_eq!(alarm.await, Ok(Alarm::Changed), "the change was lost");
        stop.stop();
        watching.await;
    }

    #[tokio::test]
    async fn the_ring_state_going_away_is_a_stop() {
        let alarms = Alarms::default();
        let (tx, rx) = watch::channel(0u64);
        drop(tx);
        watch(&alarms, Stop::default(), rx).await;
        assert_eq!(alarms.alarm().await, Alarm::Stop);
    }
}
