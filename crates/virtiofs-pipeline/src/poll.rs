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
//!
//! A spin is worth it only on a CPU nobody else wants: where the guest's own threads (or
//! anyone's) need that CPU, the spin delays them, and the request it waits for with them. So
//! each turn of the spin yields the CPU (`sched_yield`, which returns at once when no other
//! thread is runnable there): a client sharing the CPU runs, makes its next request and
//! blocks, and the spin finds the request on its next turn. The spin reads the clock on every
//! turn; a gap of [`PREEMPTED`] between two turns means another thread kept the CPU for a
//! time slice (a busy one: a vCPU, a batch job). The spin then ends, and polling pauses for a
//! number of waits that doubles with each such spin in a row ([`FIRST_PAUSE`] up to
//! [`LONGEST_PAUSE`]); a spin that runs its course undisturbed resets it. A yield only helps
//! threads queued on this CPU: the queue also skips the spin while the whole host has no CPU
//! to spare ([`crate::host_load`]).
//!
//! A request the spin finds alone may wait for a second one: see [`crate::gather`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use virtiofs_device::QueueLink;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::gather::{Gathering, GATHER};
use crate::stats::QueueStats;

/// The smallest window worth spinning for; where a growing window starts.
pub const FIRST_WINDOW: Duration = Duration::from_micros(4);

/// A gap this long between two turns of a spin: a busy thread had the CPU meanwhile. An
/// interrupt takes microseconds, a client that makes its next requests and blocks tens; a
/// thread that does not block keeps the CPU for its time slice (0.75 ms by default on Linux
/// since 6.6, more before).
pub const PREEMPTED: Duration = Duration::from_micros(250);

/// Waits without polling after a spin lost its CPU; doubles with each one in a row.
pub const FIRST_PAUSE: u32 = 16;

/// The most waits polling pauses for.
pub const LONGEST_PAUSE: u32 = 4096;

/// How a spin on the avail ring ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spin {
    /// The guest made a chain available.
    Found,
    /// The window ran out (or the ring cannot be read).
    Nothing,
    /// The thread lost its CPU during the spin: another thread wants it.
    Preempted,
}

/// The current polling window of one queue (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct AdaptivePoll {
    max: Duration,
    window: Duration,
    /// Waits left before polling again (after a preempted spin).
    paused: u32,
    /// The next pause's length.
    next_pause: u32,
}

impl AdaptivePoll {
    /// Windows up to `max`; `Duration::ZERO`: never polls.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            window: Duration::ZERO,
            paused: 0,
            next_pause: FIRST_PAUSE,
        }
    }

    /// How long to poll now (zero: do not).
    pub fn window(&self) -> Duration {
        if self.paused > 0 {
            return Duration::ZERO;
        }
        self.window
    }

    /// A spin ended as `spin` says: a preempted one pauses polling (and closes the window),
    /// one that was not ends the run of preempted ones.
    pub fn spun(&mut self, spin: Spin) {
        if spin == Spin::Preempted {
            self.window = Duration::ZERO;
            self.paused = self.next_pause;
            self.next_pause = (self.next_pause * 2).min(LONGEST_PAUSE);
        } else {
            self.next_pause = FIRST_PAUSE;
        }
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
        if self.paused > 0 {
            self.paused -= 1;
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

/// Watches `link`'s avail ring for up to `window`, until the guest has made a chain available
/// that the queue has not popped, or the thread loses its CPU. Reads only the ring's index
/// (the pop that follows takes the vring lock as usual); a ring stopped or moved meanwhile
/// reads as nothing new. A request found alone may wait for a second (`gathering`, given the
/// queue's recent service time in `stats`, where the wait is counted), also when `window` is zero
/// (one look at the ring: I/O is in flight in the queue's io_uring; its completions then wait
/// at most [`GATHER`] longer).
pub(crate) fn avail_within(
    link: &QueueLink,
    mem: &GuestMemoryMmap<()>,
    window: Duration,
    gathering: &mut Gathering,
    stats: &QueueStats,
) -> Spin {
    let (avail_idx, next_avail) = {
        let state = link.vring.get_ref();
        let queue = state.get_queue();
        if !queue.ready() {
            return Spin::Nothing;
        }
        let Some(addr) = queue.avail_ring().checked_add(2) else {
            return Spin::Nothing;
        };
        (GuestAddress(addr), queue.next_avail())
    };
    let mut last = Instant::now();
    let (began, deadline) = (last, last + window);
    loop {
        match mem.load::<u16>(avail_idx, Ordering::Acquire) {
            Ok(idx) if u16::from_le(idx) != next_avail => {
                let new = u16::from_le(idx).wrapping_sub(next_avail);
                let waited = gathering.found(new, began.elapsed(), stats.service_ns(), || {
                    crate::gather::second_within(mem, avail_idx, next_avail, GATHER)
                });
                if let Some(came) = waited {
                    stats.gathers.fetch_add(1, Ordering::Relaxed);
                    if came {
                        stats.gathered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                return Spin::Found;
            }
            Ok(_) => {}
            Err(_) => return Spin::Nothing,
        }
        let now = Instant::now();
        if now - last >= PREEMPTED {
            return Spin::Preempted;
        }
        if now >= deadline {
            return Spin::Nothing;
        }
        last = now;
        // Not a busy loop: a thread that wants this CPU (on a crowded host, the guest's own
        // vCPU or the client that is about to make the next request) runs first. On a CPU
        // nobody else wants, this returns at once.
        // SAFETY: no arguments, no memory effects.
        unsafe { libc::sched_yield() };
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
    fn a_preempted_spin_pauses_polling_longer_each_time_in_a_row() {
        let mut p = AdaptivePoll::new(MAX);
        let short = Duration::from_micros(1);
        let grow = |p: &mut AdaptivePoll| {
            for _ in 0..10 {
                p.record_wait(short);
            }
        };
        grow(&mut p);
        assert_eq!(p.window(), MAX);
        p.spun(Spin::Preempted);
        // Paused for FIRST_PAUSE waits, however short they are.
        for i in 0..FIRST_PAUSE {
            assert_eq!(p.window(), Duration::ZERO, "wait {i} of the pause");
            p.record_wait(short);
        }
        // Then the window grows again from nothing.
        p.record_wait(short);
        assert_eq!(p.window(), FIRST_WINDOW);
        grow(&mut p);
        // A second preempted spin in a row: twice as long.
        p.spun(Spin::Preempted);
        for _ in 0..2 * FIRST_PAUSE {
            assert_eq!(p.window(), Duration::ZERO);
            p.record_wait(short);
        }
        p.record_wait(short);
        assert_eq!(p.window(), FIRST_WINDOW);
        // A spin undisturbed ends the run: the next pause is the first length again.
        p.spun(Spin::Nothing);
        p.spun(Spin::Preempted);
        for _ in 0..FIRST_PAUSE {
            p.record_wait(short);
        }
        p.record_wait(short);
        assert_eq!(p.window(), FIRST_WINDOW);
        // Capped.
        for _ in 0..20 {
            p.spun(Spin::Preempted);
        }
        assert_eq!(p.paused, LONGEST_PAUSE);
    }

    #[test]
    fn a_small_maximum_is_the_only_window() {
        let mut p = AdaptivePoll::new(Duration::from_micros(2));
        p.record_wait(Duration::from_micros(1));
        assert_eq!(p.window(), Duration::from_micros(2));
    }
}
