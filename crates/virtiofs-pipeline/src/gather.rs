//! Gathering a batch: a polling queue waits a moment for a second request.
//!
//! A queue thread that serves cheap requests faster than the guest makes them takes them one
//! at a time: each pays the work of a batch (a pop, a used-ring update, a notification check)
//! and moves the ring's indexes between the two CPUs once per request, which costs the guest
//! most. A request the poll's spin ([`crate::poll`]) finds within [`STREAMING`] of its start
//! was on its way while the last batch ran (at depth 1 the next request comes a client round
//! trip after the reply, several microseconds), so when it is alone and the queue's requests
//! are cheap ([`GATHER_BELOW_NS`]) the spin waits up to [`GATHER`] for a second before the pop
//! ([`worth_gathering`]).
//!
//! Whether the second comes is then the measure ([`Gathering`]): the waits go on while at
//! least [`GATHER_MIN_HITS`] of them of late were met. A stream of cheap requests meets nearly
//! all (randread4k at depth 16: 99.9 %); where the clients are slower than the queue (creating
//! and removing files: 53–62 %) a wait only holds the queue thread, and so does one a queue
//! thread makes at depth 1 after losing its CPU between its flush and its spin (the request
//! it finds arrived meanwhile, not on its way). Waits that stopped paying resume on trial: one
//! candidate in [`GATHER_PROBE`] waits anyway. Measured: docs/performance-history.md, session 27.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// A request found this soon after the spin began was on its way during the last batch.
pub const STREAMING: Duration = Duration::from_micros(1);

/// The longest a spin waits for a second request to gather a batch of two.
pub const GATHER: Duration = Duration::from_micros(3);

/// Batches are gathered only while the queue's recent service time per request is below
/// this (ns): for cheaper requests a batch's own work is a large part of the cost.
pub const GATHER_BELOW_NS: u64 = 5_000;

/// Waits go on while at least this share of the recent ones (in 1024ths) were met: 90 %.
pub const GATHER_MIN_HITS: u32 = SCALE * 9 / 10;

/// While waits do not pay, one candidate in this many waits anyway (to see if they would).
pub const GATHER_PROBE: u32 = 32;

/// The fixed-point one of the met share.
const SCALE: u32 = 1024;

/// Whether a spin that found `new` requests `after` it began is a candidate to wait for a
/// second one, on a queue whose recent service time per request is `service_ns`.
pub fn worth_gathering(new: u16, after: Duration, service_ns: u64) -> bool {
    new == 1 && after <= STREAMING && service_ns < GATHER_BELOW_NS
}

/// One queue's record of how its waits for a second request went (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Gathering {
    /// The recent share of waits met, of [`SCALE`] (a moving average, weight 1/16).
    met: u32,
    /// Candidates passed over since waits stopped paying.
    passed: u32,
}

impl Default for Gathering {
    fn default() -> Self {
        Self::new()
    }
}

impl Gathering {
    /// A queue that has not waited yet: waits until they prove not to pay.
    pub fn new() -> Self {
        Self {
            met: SCALE,
            passed: 0,
        }
    }

    /// A spin found `new` requests `after` it began, on a queue whose recent service time is
    /// `service_ns`: waits with `second` (which says whether a second request came) when
    /// that is worth it, and returns whether it came; `None` when it did not wait.
    pub fn found(
        &mut self,
        new: u16,
        after: Duration,
        service_ns: u64,
        second: impl FnOnce() -> bool,
    ) -> Option<bool> {
        if !worth_gathering(new, after, service_ns) || !self.wait_now() {
            return None;
        }
        let came = second();
        self.met = self.met - self.met / 16 + if came { SCALE / 16 } else { 0 };
        Some(came)
    }

    /// Whether this candidate waits: always while waits pay, else one in [`GATHER_PROBE`].
    fn wait_now(&mut self) -> bool {
        if self.met >= GATHER_MIN_HITS {
            self.passed = 0;
            return true;
        }
        self.passed += 1;
        if self.passed >= GATHER_PROBE {
            self.passed = 0;
            true
        } else {
            false
        }
    }
}

/// Spins (without yielding: it is short) until the avail ring whose index is at `avail_idx`
/// holds two chains past `next_avail`, for at most `wait`; says whether they came.
pub(crate) fn second_within(
    mem: &GuestMemoryMmap<()>,
    avail_idx: GuestAddress,
    next_avail: u16,
    wait: Duration,
) -> bool {
    let until = Instant::now() + wait;
    loop {
        match mem.load::<u16>(avail_idx, Ordering::Acquire) {
            Ok(idx) if u16::from_le(idx).wrapping_sub(next_avail) >= 2 => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        if Instant::now() >= until {
            return false;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_cheap_request_found_alone_at_once_is_a_candidate() {
        let cheap = GATHER_BELOW_NS - 1;
        let at_once = Duration::ZERO;
        assert!(worth_gathering(1, at_once, cheap));
        assert!(worth_gathering(1, STREAMING, cheap));
        assert!(
            !worth_gathering(1, STREAMING + Duration::from_nanos(1), cheap),
            "came a client round trip later: depth 1"
        );
        assert!(!worth_gathering(2, at_once, cheap), "a batch already");
        assert!(!worth_gathering(0, at_once, cheap));
        assert!(
            !worth_gathering(1, at_once, GATHER_BELOW_NS),
            "requests this long batch on their own"
        );
    }

    /// Offers `n` candidates whose second request comes as `comes` says; counts the waits.
    fn offer(g: &mut Gathering, n: usize, comes: bool) -> usize {
        (0..n)
            .filter(|_| g.found(1, Duration::ZERO, 0, || comes).is_some())
            .count()
    }

    #[test]
    fn waits_go_on_while_they_are_met_and_resume_on_trial() {
        let mut g = Gathering::new();
        assert_eq!(offer(&mut g, 1000, true), 1000, "a stream: every wait met");
        // One unmet now and then (a client descheduled) does not stop them.
        for _ in 0..20 {
            assert_eq!(offer(&mut g, 1, false), 1);
            assert_eq!(offer(&mut g, 30, true), 30);
        }
        // Unmet half the time: after a few, only one candidate in GATHER_PROBE waits.
        let mut waited = 0;
        for _ in 0..500 {
            waited += offer(&mut g, 1, false) + offer(&mut g, 1, true);
        }
        assert!(
            waited <= 1000 / GATHER_PROBE as usize + 10,
            "{waited} waits of 1000 candidates, half of them unmet"
        );
        assert!(
            waited >= 1000 / GATHER_PROBE as usize - 2,
            "{waited}: no trial waits"
        );
        // Met again: the trials bring the waits back.
        let mut n = 0;
        while offer(&mut g, 1, true) == 0 || g.met < GATHER_MIN_HITS {
            n += 1;
            assert!(n < 40 * GATHER_PROBE, "waits never resumed");
        }
        assert_eq!(offer(&mut g, 100, true), 100);
    }

    #[test]
    fn a_candidate_that_is_not_one_never_waits() {
        let mut g = Gathering::new();
        let never = || -> bool { panic!("waited") };
        assert_eq!(g.found(2, Duration::ZERO, 0, never), None);
        assert_eq!(g.found(1, STREAMING * 2, 0, never), None);
        assert_eq!(g.found(1, Duration::ZERO, GATHER_BELOW_NS, never), None);
    }

    #[test]
    fn the_wait_for_a_second_request_ends_when_it_comes_or_at_its_limit() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let idx = GuestAddress(0x102);
        mem.store(5u16.to_le(), idx, Ordering::Release).unwrap();
        // One chain past the queue's next (4): none comes.
        let started = Instant::now();
        assert!(!second_within(&mem, idx, 4, Duration::from_micros(50)));
        assert!(started.elapsed() >= Duration::from_micros(50));
        // It comes from another thread meanwhile.
        let writer = {
            let mem = mem.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                mem.store(6u16.to_le(), idx, Ordering::Release).unwrap();
            })
        };
        assert!(second_within(&mem, idx, 4, Duration::from_secs(10)));
        writer.join().unwrap();
        // Across the index's wrap.
        mem.store(1u16.to_le(), idx, Ordering::Release).unwrap();
        assert!(second_within(&mem, idx, u16::MAX, Duration::ZERO));
        // Outside guest memory: no wait.
        assert!(!second_within(
            &mem,
            GuestAddress(0x10_0000),
            0,
            Duration::from_secs(10)
        ));
    }
}
