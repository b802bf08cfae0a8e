//! What else wakes a waiting queue task (for a kick, or for its ring to become runnable): the
//! daemon stopping, or the frontend changing the ring.
//!
//! Both are rare, but a task waiting on them through `select!` polls their futures on every
//! wake-up, and each poll of a registered tokio `Notify` waiter takes that Notify's lock (the
//! stop's is shared by every queue thread): about a tenth of the instructions of a GETATTR. So a
//! small watcher task waits on them instead (it wakes only when one fires) and raises a flag in
//! an [`Alarms`]; the queue task polls that with one atomic operation and an `AtomicWaker`.

use std::future::poll_fn;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::watch;

use crate::stop::Stop;

/// Flags raised for one waiting task.
#[derive(Default)]
pub(crate) struct Alarms {
    raised: AtomicU8,
    waker: AtomicWaker,
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
    }

    /// Ready once an alarm is raised: [`Alarm::Stop`] for good; [`Alarm::Changed`] once per
    /// batch of changes. One task polls it.
    pub(crate) fn poll_alarm(&self, cx: &mut Context<'_>) -> Poll<Alarm> {
        if let Some(alarm) = self.take() {
            return Poll::Ready(alarm);
        }
        self.waker.register(cx.waker());
        // Raised between the first look and the registration: its wake may have gone to the
        // waker before.
        match self.take() {
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

    fn take(&self) -> Option<Alarm> {
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
/// still be raised.
pub(crate) async fn watch(alarms: &Alarms, stop: Stop, mut changes: watch::Receiver<u64>) {
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
