//! Polling the avail ring before sleeping (`--poll-us`).
//!
//! After a drain empties the ring, a request queue's thread may watch the avail ring's index
//! for a short window, guest notifications still suppressed, instead of going to sleep on the
//! kick eventfd at once. A request that arrives within the window is served without the
//! thread's wake-up, and in a real VM without the guest's kick (a VM exit). The window adapts
//! as QEMU's AioContext polling does: after each wait (polled, then maybe slept) that was no
//! longer than the maximum, polling would have caught the request, so the window doubles
//! (from [`FIRST_WINDOW`]) up to the maximum; after a longer wait it halves, and below
//! [`FIRST_WINDOW`] it is 0. An idle guest therefore costs at most a few windows of spinning
//! and then none: the thread sleeps until the next kick.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use virtiofs_device::QueueLink;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The smallest window worth spinning for; where a growing window starts.
pub const FIRST_WINDOW: Duration = Duration::from_micros(4);

/// The current polling window of one queue (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct AdaptivePoll {
    max: Duration,
    window: Duration,
}

impl AdaptivePoll {
    /// Windows up to `max`; `Duration::ZERO`: never polls.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            window: Duration::ZERO,
        }
    }

    /// How long to poll now (zero: do not).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// When a wait for the guest's next request starts, if the window adapts at all (no clock
    /// read per wake-up when polling is off).
    pub fn wait_starts(&self) -> Option<Instant> {
        (!self.max.is_zero()).then(Instant::now)
    }

    /// The wait that [`Self::wait_starts`] began is over: adapts the window to it.
    pub fn wait_ended(&mut self, started: Option<Instant>) {
        if let Some(t) = started {
            self.record_wait(t.elapsed());
        }
    }

    /// Adapts the window to a wait for the guest's next request that took `waited` (polling
    /// and sleeping together).
    pub fn record_wait(&mut self, waited: Duration) {
        if self.max.is_zero() {
            return;
        }
        self.window = if waited <= self.max {
            (self.window * 2).clamp(FIRST_WINDOW.min(self.max), self.max)
        } else {
            let half = self.window / 2;
            if half < FIRST_WINDOW {
                Duration::ZERO
            } else {
                half
            }
        };
    }
}

/// Watches `link`'s avail ring for up to `window`: true as soon as the guest has made a chain
/// available that the queue has not popped. Reads only the ring's index (the pop that follows
/// takes the vring lock as usual); a ring stopped or moved meanwhile reads as nothing new.
pub(crate) fn avail_within(link: &QueueLink, mem: &GuestMemoryMmap<()>, window: Duration) -> bool {
    let (avail_idx, next_avail) = {
        let state = link.vring.get_ref();
        let queue = state.get_queue();
        if !queue.ready() {
            return false;
        }
        let Some(addr) = queue.avail_ring().checked_add(2) else {
            return false;
        };
        (GuestAddress(addr), queue.next_avail())
    };
    let deadline = Instant::now() + window;
    loop {
        match mem.load::<u16>(avail_idx, Ordering::Acquire) {
            Ok(idx) if u16::from_le(idx) != next_avail => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);

    #[test]
    fn short_waits_grow_the_window_to_the_maximum() {
        let mut p = AdaptivePoll::new(MAX);
        assert_eq!(p.window(), Duration::ZERO, "starts off");
        p.record_wait(Duration::from_micros(20));
        assert_eq!(p.window(), FIRST_WINDOW);
        for _ in 0..10 {
            p.record_wait(Duration::from_micros(20));
        }
        assert_eq!(p.window(), MAX, "capped");
    }

    #[test]
    fn long_waits_shrink_it_to_nothing() {
        let mut p = AdaptivePoll::new(MAX);
        for _ in 0..10 {
            p.record_wait(Duration::from_micros(1));
        }
        p.record_wait(Duration::from_millis(5));
        assert_eq!(p.window(), MAX / 2);
        for _ in 0..5 {
            p.record_wait(Duration::from_millis(5));
        }
        assert_eq!(p.window(), Duration::ZERO, "an idle guest: no spinning");
        p.record_wait(Duration::from_secs(3600));
        assert_eq!(p.window(), Duration::ZERO);
    }

    #[test]
    fn zero_maximum_never_polls() {
        let mut p = AdaptivePoll::new(Duration::ZERO);
        p.record_wait(Duration::ZERO);
        p.record_wait(Duration::from_micros(1));
        assert_eq!(p.window(), Duration::ZERO);
    }

    #[test]
    fn a_small_maximum_is_the_only_window() {
        let mut p = AdaptivePoll::new(Duration::from_micros(2));
        p.record_wait(Duration::from_micros(1));
        assert_eq!(p.window(), Duration::from_micros(2));
    }
}
