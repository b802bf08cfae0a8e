//! A request queue's pool: requests handed off by the queue thread, run by at most
//! `--thread-pool-size` runners on the shared runtime's blocking threads.
//!
//! Handing every pooled request to `spawn_blocking` costs a thread wake-up per request, and at
//! depth 16 woke 15 threads per batch to compete for two cores. Here the queue thread puts
//! requests in the pool's queue and a *runner* (a blocking thread) takes them one after the
//! other until the queue is empty:
//! - a runner is woken only when none is starting already and the queued work is worth it
//!   ([`worth_a_runner`]: a long request, or quick ones adding up to more than a wake-up
//!   costs at the queue's recent service time, and only while the host has a CPU for one
//!   more runner, [`crate::host_load::SpareCpu`]); a runner that takes a request and sees
//!   such work still queued wakes the next one (up to the pool size). Cheap requests stay
//!   with the queue thread; requests that block (a cold disk) ramp up to the full pool, one
//!   wake-up latency per runner;
//! - once it has dispatched its batch the queue thread takes back the quick requests nobody has
//!   started yet and runs them itself, their completions joining its batch (one notification);
//!   long requests stay for the runners. A quick request that could only come back that way
//!   is not queued at all ([`Pool::would_come_back`]).
//!
//! Bulk requests (large READs and WRITEs) from the page cache are copies that only need a CPU:
//! while the queue's recent bulk requests were quick ([`crate::dispatch::BULK_INLINE_NS`]),
//! no more runners are woken for them than the queue has CPUs ([`bulk_runners`]): more threads
//! than CPUs only take turns at the copies, and each costs a wake-up (1 MiB READs at depth 16
//! on two CPUs: a runner started per 7 requests before, per 19 with the bound, and as many
//! requests served). Slow bulk requests (a disk) get the whole pool.
//!
//! At most `size` runners exist at once (the pool bound). A request queued when the runtime
//! can no longer run a runner (it shut down) is dropped, which answers it (EIO, see
//! [`crate::used::Unanswered`]).

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;
use tracing::warn;
use virtiofs_fuse::abi::InHeader;

use crate::affinity::CpuSet;
use crate::gate::Pass;
use crate::handler::FuseHandler;
use crate::host_load::{HostLoad, SpareCpu};
use crate::lock_wait::LockWait;
use crate::queue::Step;
use crate::request::Weight;
use crate::stats::QueueStats;
use crate::used::Unanswered;

/// One request handed to the pool, with the gate pass it runs under.
pub(crate) struct Job<H: FuseHandler> {
    /// The chain (answered EIO if the job is dropped without running).
    pub(crate) chain: Unanswered<H>,
    /// The header as read when it was popped.
    pub(crate) header: Option<InHeader>,
    /// How the pool treats it (runners take long and bulk jobs first); a bulk one's time
    /// feeds the queue's bulk average.
    pub(crate) weight: Weight,
    /// Its gate pass, taken in ring order by the queue thread.
    pub(crate) pass: Option<Pass>,
    /// A SETLKW retry: the wait it continues if the lock is still held.
    pub(crate) retry: Option<LockWait>,
}

impl<H: FuseHandler> Job<H> {
    /// Runs the request on this thread; a pooled request completes on its own.
    pub(crate) fn run_here(self) {
        let Job {
            chain,
            header,
            weight,
            pass,
            retry,
        } = self;
        let ctx = chain.ctx().clone();
        match ctx.process(chain.chain(), header, weight, pass) {
            Step::Done(len) => chain.answer(len),
            Step::Wait(w) => ctx.spawn_lock_wait(chain, w.continuing(retry)),
        }
    }
}

/// The pool of one request queue (see the module docs).
pub(crate) struct Pool<H: FuseHandler> {
    inner: Arc<Inner<H>>,
}

struct Inner<H: FuseHandler> {
    size: usize,
    /// The CPUs its runners may use (see [`bulk_runners`]).
    cpus: usize,
    /// `--queue-affinity`: where runners run while they serve this queue.
    pin: Option<Pin>,
    stats: Arc<QueueStats>,
    runtime: Handle,
    tracker: TaskTracker,
    state: Mutex<State<H>>,
    /// No runner alive and nothing queued, as of the last release of `state`'s lock: lets the
    /// queue thread see without the lock that a request it would hand over would only come
    /// back ([`Pool::would_come_back`]). A stale value only misplaces a request.
    idle: AtomicBool,
}

struct State<H: FuseHandler> {
    /// Queued long requests (runners take these first).
    long: VecDeque<Job<H>>,
    /// Queued bulk requests (runners take these next).
    bulk: VecDeque<Job<H>>,
    /// Queued quick requests (the queue thread may take these back).
    quick: VecDeque<Job<H>>,
    /// Runners alive (starting or running): never more than `size`.
    runners: usize,
    /// A runner was started and has not taken its first request yet.
    starting: bool,
    /// Whether the host has a CPU for one more runner of quick requests.
    spare: SpareCpu,
}

impl<H: FuseHandler> State<H> {
    /// How many runners the queued work, with `more_quick` quick requests on their way, is
    /// worth (see [`worth_a_runner`]): `size` for a long request, or for enough quick work
    /// while the host has a CPU for another runner; else `bulk_size` (no more than `size`, see
    /// [`bulk_runners`]) for bulk requests; else none.
    fn room(&mut self, size: usize, bulk_size: usize, service_ns: u64, more_quick: usize) -> usize {
        let quick = self.quick.len() + more_quick;
        let long = !self.long.is_empty();
        // The host's load is looked at last, and for quick work only.
        if worth_a_runner(quick, long, service_ns) && (long || self.spare.spare(self.runners)) {
            size
        } else if !self.bulk.is_empty() {
            bulk_size
        } else {
            0
        }
    }

    /// Counts a runner to start if fewer than `room` are alive and none is starting.
    fn runner_wanted(&mut self, room: usize) -> bool {
        let wanted = !self.starting && self.runners < room;
        if wanted {
            self.runners += 1;
            self.starting = true;
        }
        wanted
    }
}

/// Queued work worth waking a thread for: a wake-up and a move to another core cost tens of
/// microseconds on a loaded host, during which the queue thread would have served this much.
pub const HANDOFF_NS: u64 = 50_000;

/// Whether the queued requests are worth waking a runner for: any long one, or quick ones
/// that would keep the queue thread busy for [`HANDOFF_NS`] or more at the queue's recent
/// service time per request (`service_ns`, see [`QueueStats::service_ns`]). Quick requests that
/// block (a cold cache, a slow filesystem) raise the service time and so call the runners in.
pub fn worth_a_runner(queued_quick: usize, queued_long: bool, service_ns: u64) -> bool {
    queued_long || (queued_quick as u64).saturating_mul(service_ns) >= HANDOFF_NS
}

/// The most runners woken for bulk requests alone: the queue's `cpus` while its recent bulk
/// requests took under [`crate::dispatch::BULK_INLINE_NS`] each (`bulk_ns`: copies, which more
/// threads than CPUs only slow down), else the pool's `size` (they wait on a disk).
pub fn bulk_runners(size: usize, cpus: usize, bulk_ns: u64) -> usize {
    if bulk_ns < crate::dispatch::BULK_INLINE_NS {
        cpus.clamp(1, size.max(1))
    } else {
        size
    }
}

impl<H: FuseHandler> Pool<H> {
    /// A pool of at most `size` runners (at least 1) on `runtime`'s blocking threads,
    /// tracked by `tracker` (shutdown waits for them), pinned by `pin` while they run; `load`
    /// says whether the host has a CPU for another runner of quick requests (`None`: always).
    pub(crate) fn new(
        size: usize,
        runtime: Handle,
        tracker: TaskTracker,
        stats: Arc<QueueStats>,
        pin: Option<Pin>,
        load: Option<Arc<HostLoad>>,
    ) -> Self {
        let cpus = match &pin {
            Some(pin) => pin.cpus.cpus().len(),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        };
        Self {
            inner: Arc::new(Inner {
                size: size.max(1),
                cpus,
                pin,
                stats,
                runtime,
                tracker,
                state: Mutex::new(State {
                    long: VecDeque::new(),
                    bulk: VecDeque::new(),
                    quick: VecDeque::new(),
                    runners: 0,
                    starting: false,
                    spare: SpareCpu::new(load),
                }),
                idle: AtomicBool::new(true),
            }),
        }
    }

    /// The most runners it runs at once.
    pub(crate) fn size(&self) -> usize {
        self.inner.size
    }

    /// Whether a runner could start now (fewer than the pool size alive).
    pub(crate) fn has_room(&self) -> bool {
        self.inner.lock().runners < self.inner.size
    }

    /// Queues `job`, waking a runner if none is on its way.
    pub(crate) fn push(&self, job: Job<H>) {
        let start = {
            let mut state = self.inner.lock();
            match job.weight {
                Weight::Long => state.long.push_back(job),
                Weight::Bulk => state.bulk.push_back(job),
                Weight::Quick => state.quick.push_back(job),
            }
            self.inner.runner_wanted(&mut state)
        };
        if start {
            Inner::start_runner(&self.inner);
        }
    }

    /// Whether a quick request with `behind` more requests behind it would only wait in the
    /// pool for the queue thread to take it back: no runner is alive to take it, and what is
    /// queued and behind it together is not worth waking one (see [`worth_a_runner`]). The
    /// queue thread then runs it at once, sparing the job's trip through the pool.
    pub(crate) fn would_come_back(&self, behind: usize) -> bool {
        // The common case on a busy queue of cheap requests, without the lock: an idle pool
        // and too little work for a runner.
        let service_ns = self.inner.stats.service_ns();
        if self.inner.idle.load(Ordering::Relaxed) && !worth_a_runner(behind + 1, false, service_ns)
        {
            return true;
        }
        let mut state = self.inner.lock();
        state.runners == 0 && self.inner.room(&mut state, behind + 1) == 0
    }

    /// The oldest queued quick request nobody has started, for the queue thread to run.
    pub(crate) fn take_quick(&self) -> Option<Job<H>> {
        self.inner.lock().quick.pop_front()
    }
}

impl<H: FuseHandler> Inner<H> {
    /// Starts a runner (already counted in `runners` and `starting`); outside the state lock:
    /// a runner the runtime refuses is dropped at once, and its drop takes the lock.
    fn start_runner(inner: &Arc<Self>) {
        inner.stats.runners.fetch_add(1, Ordering::Relaxed);
        let runner = Runner {
            inner: inner.clone(),
            ran: false,
            counted_out: false,
        };
        inner
            .tracker
            .spawn_blocking_on(move || runner.run(), &inner.runtime);
    }

    /// [`State::room`] with this pool's bounds and its queue's recent times.
    fn room(&self, state: &mut State<H>, more_quick: usize) -> usize {
        let bulk_size = bulk_runners(self.size, self.cpus, self.stats.bulk_ns());
        state.room(self.size, bulk_size, self.stats.service_ns(), more_quick)
    }

    /// [`State::runner_wanted`] for what is queued now.
    fn runner_wanted(&self, state: &mut State<H>) -> bool {
        let room = self.room(state, 0);
        state.runner_wanted(room)
    }

    fn lock(&self) -> Locked<'_, H> {
        // Nothing panics with the lock held; a poisoned lock still has a consistent state.
        Locked {
            state: self.state.lock().unwrap_or_else(PoisonError::into_inner),
            idle: &self.idle,
        }
    }
}

/// The pool's state, locked; whether the pool is idle is published when it is let go.
struct Locked<'a, H: FuseHandler> {
    state: MutexGuard<'a, State<H>>,
    idle: &'a AtomicBool,
}

impl<H: FuseHandler> Deref for Locked<'_, H> {
    type Target = State<H>;

    fn deref(&self) -> &State<H> {
        &self.state
    }
}

impl<H: FuseHandler> DerefMut for Locked<'_, H> {
    fn deref_mut(&mut self) -> &mut State<H> {
        &mut self.state
    }
}

impl<H: FuseHandler> Drop for Locked<'_, H> {
    fn drop(&mut self) {
        let s = &self.state;
        let idle = s.runners == 0 && s.long.is_empty() && s.bulk.is_empty() && s.quick.is_empty();
        self.idle.store(idle, Ordering::Relaxed);
    }
}

/// Where a queue's runners run (`--queue-affinity`).
#[derive(Debug, Clone)]
pub(crate) struct Pin {
    /// The queue's CPUs.
    pub(crate) cpus: CpuSet,
    /// What the thread goes back to when it stops serving the queue.
    pub(crate) unpinned: CpuSet,
}

impl Pin {
    /// Pins the calling thread until the returned guard is dropped. A failure is logged and
    /// the runner runs unpinned (the requests are served either way).
    fn apply(&self) -> Pinned<'_> {
        if let Err(e) = self.cpus.pin_this_thread() {
            warn!("cannot pin a pool runner to CPUs {}: {e}", self.cpus);
        }
        Pinned(self)
    }
}

/// Gives a runner's thread back its CPUs when dropped.
struct Pinned<'a>(&'a Pin);

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.unpinned.pin_this_thread() {
            warn!("cannot unpin a pool runner: {e}");
        }
    }
}

/// One runner: takes queued requests until there are none (see the module docs).
struct Runner<H: FuseHandler> {
    inner: Arc<Inner<H>>,
    /// It started running (on a blocking thread).
    ran: bool,
    /// It has taken itself out of `runners`.
    counted_out: bool,
}

impl<H: FuseHandler> Runner<H> {
    fn run(mut self) {
        let inner = self.inner.clone();
        let _pinned = inner.pin.as_ref().map(Pin::apply);
        let mut state = inner.lock();
        state.starting = false;
        self.ran = true;
        while let Some(job) = state
            .long
            .pop_front()
            .or_else(|| state.bulk.pop_front())
            .or_else(|| state.quick.pop_front())
        {
            // More queued than this runner takes now: the next runner starts meanwhile.
            let next = inner.runner_wanted(&mut state);
            drop(state);
            if next {
                Inner::start_runner(&inner);
            }
            inner.stats.count_pooled();
            job.run_here();
            state = inner.lock();
        }
        state.runners -= 1;
        self.counted_out = true;
    }
}

impl<H: FuseHandler> Drop for Runner<H> {
    fn drop(&mut self) {
        if self.counted_out {
            return;
        }
        let dropped: Vec<Job<H>> = {
            let mut state = self.inner.lock();
            state.runners -= 1;
            if self.ran {
                // It panicked in a request (the server's panics are caught: a bug of ours).
                return;
            }
            // Never ran: the runtime shut down and runs no runner any more. What is queued
            // is answered (EIO) rather than left waiting for a runner that will not come.
            state.starting = false;
            let mut jobs: Vec<Job<H>> = state.long.drain(..).collect();
            jobs.extend(state.bulk.drain(..));
            jobs.extend(state.quick.drain(..));
            jobs
        };
        drop(dropped);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runner_is_pinned_while_it_serves_the_queue_and_unpinned_after() {
        std::thread::spawn(|| {
            let all = CpuSet::of_this_thread().unwrap();
            let first = CpuSet::new(vec![all.cpus()[0]]);
            let pin = Pin {
                cpus: first.clone(),
                unpinned: all.clone(),
            };
            let pinned = pin.apply();
            assert_eq!(CpuSet::of_this_thread().unwrap(), first);
            drop(pinned);
            assert_eq!(CpuSet::of_this_thread().unwrap(), all);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn runners_are_woken_for_long_requests_or_enough_quick_work() {
        assert!(worth_a_runner(0, true, 0), "a long request");
        assert!(!worth_a_runner(0, false, 1_000_000), "nothing queued");
        assert!(!worth_a_runner(3, false, 3_000), "9 us of cheap requests");
        assert!(worth_a_runner(20, false, 3_000), "60 us of cheap requests");
        assert!(
            worth_a_runner(1, false, 5_000_000),
            "one request that blocks for ms"
        );
        assert!(!worth_a_runner(1000, false, 0), "not measured yet");
    }

    #[test]
    fn quick_bulk_requests_get_a_runner_per_cpu_slow_ones_the_pool() {
        let quick = crate::dispatch::BULK_INLINE_NS - 1;
        let slow = crate::dispatch::BULK_INLINE_NS;
        assert_eq!(bulk_runners(64, 2, quick), 2, "copies: one per CPU");
        assert_eq!(bulk_runners(64, 2, slow), 64, "a disk: the whole pool");
        assert_eq!(bulk_runners(1, 2, quick), 1, "never more than the pool");
        assert_eq!(bulk_runners(64, 0, quick), 1, "at least one");
    }
}
