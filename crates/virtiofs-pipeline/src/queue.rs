//! One virtqueue, driven by one task on the queue's own thread.
//!
//! The task owns a duplicate of the queue's kick eventfd (through [`AsyncKick`]). On each kick
//! (one read of the eventfd) it drains the ring: it pops the available chains in batches of up
//! to [`MAX_BATCH`], takes each request's gate pass in ring order and runs it where
//! [`crate::dispatch`] says: here on the queue thread, or on the pool. The completions of the
//! requests run here go to the used ring together at the end of the batch, with at most one
//! guest notification ([`UsedBatch`]); a pooled request completes on its own. Alone on its
//! thread, the task waits for the next kick in poll(2) rather than on tokio (see
//! [`QueueContext::alone`]).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, warn};
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use virtiofs_device::{MemoryTable, QueueLink, QueueMemory, WatchedVring};
use virtiofs_fuse::abi::{InHeader, Opcode};

use crate::alarm::{Alarm, Alarms};
use crate::dispatch::{place, Behind, Placement};
use crate::gate::{Pass, SessionGate};
use crate::gather::Gathering;
use crate::handler::{Chain, FuseHandler, Handled};
use crate::host_load::{Crowding, HostLoad};
use crate::kick::AsyncKick;
use crate::lock_wait::LockWait;
use crate::poll::{avail_within, AdaptivePoll, Spin};
use crate::pool::{Job, Pool};
use crate::request::{classify, is_forget, reply_error, reply_room, Weight};
use crate::serve::serve_chain_handled;
use crate::stats::QueueStats;
use crate::stop::Stop;
use crate::uring::{IoEngine, Uring};
use crate::used::{
    disable_notification, enable_notification, Popped, PoppedChain, Unanswered, UsedBatch,
    EARLY_MAX_OUT,
};

/// Most chains popped at once: the completions of the requests run on the queue thread are
/// published (and the guest notified) at least this often, so that a deep queue of quick
/// requests keeps the guest busy while the rest of the ring is served.
pub const MAX_BATCH: usize = 32;

/// The shortest recent service time (ns) for which a waiting driver gets a batch's first
/// completion before the rest run ([`UsedBatch::flush_if_awaited`]): with quicker requests the
/// rest of the batch is over before the head start pays for the extra publication.
pub const EARLY_SERVICE_NS: u64 = 750;

/// Everything one queue thread and its requests share.
pub(crate) struct QueueContext<H: FuseHandler> {
    /// The queue, its vring and guest memory.
    pub(crate) link: QueueLink,
    /// The FUSE server.
    pub(crate) handler: Arc<H>,
    /// INIT/DESTROY exclusion, shared by all queues.
    pub(crate) gate: SessionGate,
    /// Where requests may go besides the queue thread; `None`: everything inline
    /// (`--thread-pool-size=0`, the hiprio queue).
    pub(crate) pool: Option<Pool<H>>,
    /// Counters for this queue.
    pub(crate) stats: Arc<QueueStats>,
    /// The longest window to poll the avail ring for before sleeping (`--poll-us`; zero for
    /// the hiprio queue).
    pub(crate) poll_max: Duration,
    /// The host's load, read before a spin ([`crate::host_load`]); `None`: spin regardless.
    pub(crate) host_load: Option<Arc<HostLoad>>,
    /// Every request queue's vring (this one's too), for the size of the smallest at INIT.
    pub(crate) request_rings: Arc<[WatchedVring]>,
    /// The queue thread's runtime (SETLKW waits run there). It has no time driver: that
    /// would cost every wake-up of the thread a clock read and a look at the timer wheel.
    pub(crate) local: Handle,
    /// The daemon's shared runtime, whose timers time the pauses of SETLKW waits.
    pub(crate) timers: Handle,
    /// How many queues the queue thread serves: polling the ring would keep the others
    /// waiting, so a queue polls only while alone on its thread.
    pub(crate) thread_queues: Arc<AtomicUsize>,
    /// Tasks on `local` besides the queue task (SETLKW waits); the thread ends once they are
    /// done.
    pub(crate) tasks: TaskTracker,
    /// What else wakes the waiting queue task: the stop, ring changes (see [`crate::alarm`]).
    pub(crate) alarms: Arc<Alarms>,
    /// Whether `local` is a queue thread's runtime (not the shared one, as for the hiprio
    /// queue), where the task may block the thread while it waits for a kick.
    pub(crate) own_thread: bool,
    /// Fires when the daemon stops.
    pub(crate) stop: Stop,
    /// How READ, WRITE and FSYNC are done (the hiprio queue: always synchronously).
    pub(crate) engine: IoEngine,
}

/// Descriptors of the smallest of `rings` that the frontend has started, if any.
pub fn smallest_ready_queue(rings: &[WatchedVring]) -> Option<u16> {
    rings
        .iter()
        .filter_map(|ring| {
            let state = ring.get_ref();
            let queue = state.get_queue();
            queue.ready().then(|| queue.size())
        })
        .min()
}

/// What woke a waiting queue task.
enum Woke {
    /// The daemon stops.
    Stop,
    /// The frontend changed the ring.
    Changed,
    /// The guest kicked (or the kick eventfd failed).
    Kick(std::io::Result<()>),
    /// The io_uring has completions (or its eventfd failed).
    Completion(std::io::Result<()>),
}

/// What ends a queue task's wait ([`Woke`] but completions, which it reaps and waits on).
enum Wake {
    /// The daemon stops.
    Stop,
    /// The frontend changed the ring.
    Changed,
    /// The guest kicked (or the kick eventfd failed).
    Kick(std::io::Result<()>),
}

impl From<Alarm> for Wake {
    fn from(alarm: Alarm) -> Self {
        match alarm {
            Alarm::Stop => Wake::Stop,
            Alarm::Changed => Wake::Changed,
        }
    }
}

/// Waits for a completion of `ring` if requests are in it; never, otherwise.
async fn ring_completion(ring: Option<&Uring>) -> std::io::Result<()> {
    match ring {
        Some(ring) if ring.busy() => ring.completion().await,
        _ => std::future::pending().await,
    }
}

/// What running a request once came to.
pub(crate) enum Step {
    /// Answered: the chain goes back with this many reply bytes.
    Done(u32),
    /// A SETLKW whose lock is held elsewhere: it waits (see [`crate::lock_wait`]).
    Wait(LockWait),
}

impl<H: FuseHandler> QueueContext<H> {
    /// Serves the queue until the daemon stops: waits until the ring is runnable, drains it on
    /// each kick, and starts over when the frontend changes the ring.
    pub(crate) async fn run(self: Arc<Self>) {
        let index = self.link.index;
        let ring = crate::uring::for_queue(&self);
        let ring = ring.as_ref();
        // The stop and ring changes, for every wait of this task (see crate::alarm). The
        // watcher runs on the shared runtime: this thread may be blocked in poll(2).
        let alarms = &self.alarms;
        self.watch_alarms(&self.timers);
        let mut may_block_ever = self.own_thread;
        loop {
            if alarms.take_orphaned() {
                warn!(
                    queue = index,
                    "the shared runtime dropped the queue's watcher"
                );
                self.watch_alarms(&self.local);
                may_block_ever = false;
            }
            // What changed before this look at the ring needs no second look.
            alarms.clear_changed();
            let kick = match self.link.vring.runnable_kick() {
                Some(Ok(fd)) => match AsyncKick::new(fd) {
                    Ok(kick) => Some(kick),
                    Err(e) => {
                        warn!(queue = index, "cannot poll kick eventfd: {e}");
                        None
                    }
                },
                Some(Err(e)) => {
                    warn!(queue = index, "cannot duplicate kick eventfd: {e}");
                    None
                }
                None => None,
            };
            let Some(kick) = kick else {
                // Not started, not enabled, or no kick fd yet: wait for the frontend.
                if alarms.alarm().await == Alarm::Stop {
                    return;
                }
                continue;
            };
            // Without a duplicate to nudge it through, the task must not block in poll(2).
            let nudge = kick.try_clone().ok();
            let may_block = may_block_ever && nudge.is_some();
            alarms.set_nudge(nudge);
            // Only requests of the ring that stopped can be in it: they go back first.
            self.complete_ring(ring);
            debug!(queue = index, "queue running");
            let mut poll = AdaptivePoll::new(self.poll_max);
            let mut crowding = Crowding::new(self.host_load.clone());
            // When the last wait for the guest began (also the clock the next look at the
            // host's load goes by).
            let mut waiting = None;
            let mut gathering = Gathering::new();
            // Guest memory as this queue reaches it: one check per batch, no arc-swap. A new
            // memory table also changes the vring: the loop starts over and lets go of the old.
            let mut memory = self.link.queue_memory();
            // The chains of a batch, kept for the run of the ring (not allocated per batch).
            let mut batch = VecDeque::with_capacity(MAX_BATCH);
            loop {
                // Process first: a kick may have arrived before we started polling the eventfd.
                // A drain is never abandoned half-way: it stops early only when the daemon
                // stops, returning what it popped (see `drain`).
                let window = match poll.window() {
                    _ if self.thread_queues.load(Ordering::Relaxed) > 1 => Duration::ZERO,
                    // Every CPU of the host is wanted: do not take one for a spin.
                    w if !w.is_zero() && crowding.crowded(waiting) => {
                        self.stats.poll_crowded.fetch_add(1, Ordering::Relaxed);
                        Duration::ZERO
                    }
                    w => w,
                };
                self.drain(&mut memory, &mut batch, !window.is_zero(), ring)
                    .await;
                waiting = poll.wait_starts();
                if !window.is_zero() {
                    // Notifications are still off: watch the ring before sleeping. Not while
                    // I/O is in the io_uring: the spin does not look at its completions.
                    let spin = if ring.is_some_and(Uring::busy) {
                        Duration::ZERO
                    } else {
                        self.stats.polls.fetch_add(1, Ordering::Relaxed);
                        window
                    };
                    let mem = memory.current();
                    let spun = avail_within(&self.link, mem, spin, &mut gathering, &self.stats);
                    if spun == Spin::Preempted {
                        self.stats.poll_preempted.fetch_add(1, Ordering::Relaxed);
                    }
                    if !spin.is_zero() {
                        poll.spun(spun);
                    }
                    let more = spun == Spin::Found || {
                        match enable_notification(&self.link, mem) {
                            Ok(more) => more, // arrived as notifications came back on
                            Err(e) => {
                                debug!(queue = index, "enable_notification: {e}");
                                false
                            }
                        }
                    };
                    if more {
                        self.stats.poll_hits.fetch_add(1, Ordering::Relaxed);
                        poll.wait_ended(waiting);
                        continue;
                    }
                }
                let woke = if may_block && self.alone(ring) {
                    self.wait_blocking(&kick)
                } else {
                    self.wait(&kick, &mut memory, ring).await
                };
                match woke {
                    Wake::Stop => {
                        // Nothing in the ring may outlive the queue task.
                        self.complete_ring(ring);
                        alarms.set_nudge(None);
                        return;
                    }
                    Wake::Changed => {
                        debug!(queue = index, "queue state changed");
                        self.complete_ring(ring);
                        alarms.set_nudge(None);
                        break;
                    }
                    Wake::Kick(Ok(())) => poll.wait_ended(waiting),
                    Wake::Kick(Err(e)) => {
                        warn!(queue = index, "kick eventfd failed: {e}");
                        self.complete_ring(ring);
                        alarms.set_nudge(None);
                        // Do not spin on a broken fd: wait until the frontend changes the
                        // ring.
                        if alarms.alarm().await == Alarm::Stop {
                            return;
                        }
                        break;
                    }
                }
            }
        }
    }

    /// Starts the task that raises this queue's alarms, on `runtime`.
    fn watch_alarms(&self, runtime: &Handle) {
        let (alarms, stop) = (self.alarms.clone(), self.stop.clone());
        let changes = self.link.vring.subscribe();
        runtime.spawn(async move { crate::alarm::watch(&alarms, stop, changes).await });
    }

    /// Whether the task may wait for the next kick blocked in poll(2): nothing else on its
    /// thread could run meanwhile (no other queue, no SETLKW wait, no io_uring completion to
    /// reap). Whoever adds such work from another thread nudges the task after adding it (see
    /// [`Alarms::nudge`]), which ends a poll(2) begun after this look.
    fn alone(&self, ring: Option<&Uring>) -> bool {
        self.thread_queues.load(Ordering::Relaxed) == 1
            && self.tasks.is_empty()
            && !ring.is_some_and(|r| r.busy())
    }

    /// Waits for a kick in poll(2), the alarms looked at before and after.
    fn wait_blocking(&self, kick: &AsyncKick) -> Wake {
        if let Some(alarm) = self.alarms.take_raised() {
            return alarm.into();
        }
        let r = kick.wait_blocking();
        self.alarms.take_raised().map_or(Wake::Kick(r), Wake::from)
    }

    /// Waits for a kick, an alarm or an io_uring completion (reaped here) on the runtime.
    async fn wait(
        self: &Arc<Self>,
        kick: &AsyncKick,
        memory: &mut QueueMemory,
        ring: Option<&Uring>,
    ) -> Wake {
        let index = self.link.index;
        let alarms = &self.alarms;
        loop {
            let woke = tokio::select! {
                biased;
                alarm = alarms.alarm() => match alarm {
                    Alarm::Stop => Woke::Stop,
                    Alarm::Changed => Woke::Changed,
                },
                r = kick.wait() => Woke::Kick(r),
                r = ring_completion(ring) => Woke::Completion(r),
            };
            match woke {
                Woke::Completion(r) => {
                    if let Err(e) = r {
                        warn!(queue = index, "io_uring eventfd failed: {e}");
                        self.complete_ring(ring);
                    }
                    if let Some(ring) = ring {
                        let mem = memory.current();
                        let mut used = UsedBatch::new(&self.link, &self.stats, mem);
                        ring.reap(self, &mut used);
                    }
                }
                Woke::Stop => return Wake::Stop,
                Woke::Changed => return Wake::Changed,
                Woke::Kick(r) => return Wake::Kick(r),
            }
        }
    }

    /// Pops and dispatches chains until the ring is empty with guest notifications re-enabled,
    /// or, with `keep_off` (the queue polls next), still disabled. When the daemon stops, the
    /// chains popped and not started yet go back with EIO.
    async fn drain(
        self: &Arc<Self>,
        memory: &mut QueueMemory,
        batch: &mut VecDeque<PoppedChain>,
        keep_off: bool,
        ring: Option<&Uring>,
    ) {
        loop {
            if let Err(e) = disable_notification(&self.link, memory.current()) {
                debug!(queue = self.link.index, "disable_notification: {e}");
            }
            loop {
                // The table is checked per batch: a drain lasts as long as the guest keeps the
                // ring busy, and chains into hot-added memory must find it.
                let mem: MemoryTable = memory.current().clone();
                let mut used = UsedBatch::new(&self.link, &self.stats, &mem);
                let mut popped = Popped::pop(&self.link, &self.stats, &mem, MAX_BATCH, batch);
                if popped.is_empty() {
                    break;
                }
                // A batch of more than EARLY_MAX_OUT chains means more requests out than that:
                // no look at the driver.
                let early = self.stats.service_ns() >= EARLY_SERVICE_NS
                    && popped.behind() <= usize::from(EARLY_MAX_OUT);
                while !self.stop.is_stopped() {
                    let Some((chain, header)) = popped.next() else {
                        break;
                    };
                    let waiting = match popped.others_waiting() {
                        false => Behind::Nothing,
                        true if popped.serialized(header.as_ref()) => Behind::SameInode,
                        true => Behind::Others,
                    };
                    let behind = popped.behind();
                    self.dispatch(chain, header, (waiting, behind), &mut used, ring)
                        .await;
                    if early && behind > 0 {
                        used.flush_if_awaited();
                    }
                }
                if let Some(ring) = ring {
                    // One submission for the batch; what is done already joins it.
                    ring.submit(self, &mut used);
                    ring.reap(self, &mut used);
                }
                // Quick requests handed to the pool that no runner has started yet: this
                // thread is free now, they run here.
                self.take_back(&mut used);
                // One publication and at most one notification for the batch.
                used.flush();
                if self.stop.is_stopped() {
                    return;
                }
                if !popped.more_in_ring {
                    // The ring was empty when this batch was popped: whatever came since, the
                    // look at the ring below (or the poll) finds, without a pop for nothing.
                    break;
                }
            }
            if keep_off {
                return;
            }
            match enable_notification(&self.link, memory.current()) {
                Ok(true) => continue, // more arrived while notifications were off
                Ok(false) => return,
                Err(e) => {
                    debug!(queue = self.link.index, "enable_notification: {e}");
                    return;
                }
            }
        }
    }

    /// Starts one request (its header as read at pop time): takes its gate pass (in ring
    /// order), then runs it here or hands it to the pool ([`crate::dispatch::place`]; `behind`
    /// says what waits behind it and how many at least). Completions of requests run here go
    /// to `used`.
    async fn dispatch(
        self: &Arc<Self>,
        chain: Chain,
        header: Option<InHeader>,
        (behind, count_behind): (Behind, usize),
        used: &mut UsedBatch<'_>,
        ring: Option<&Uring>,
    ) {
        let weight = match &header {
            Some(h) => classify(h, || reply_room(&chain)),
            None => Weight::Quick,
        };
        let pass = match self.gate.try_pass_for(header.as_ref()) {
            Ok(pass) => pass,
            Err(_busy) => {
                // INIT or DESTROY runs or waits (or this is one and requests run): finish and
                // publish what this drain has started, so that nothing waits for it.
                if let Some(ring) = ring {
                    ring.complete_all(self, used);
                }
                self.take_back(used);
                used.flush();
                self.gate.pass_for(header.as_ref()).await
            }
        };
        if let (Some(ring), Some(h)) = (ring, header) {
            if self.handler.defers(h.opcode) {
                // Prepared here, its I/O in the ring: never a pool thread.
                return ring.start(self, chain, h, pass, used);
            }
        }
        let pool = self.pool.as_ref();
        match place(pool.is_some(), weight, behind, self.stats.bulk_ns()) {
            Placement::Inline => self.run_inline(chain, header, weight, pass, used),
            Placement::Pool
                if weight == Weight::Quick
                    && pool.is_some_and(|p| p.would_come_back(count_behind)) =>
            {
                self.run_inline(chain, header, weight, pass, used)
            }
            Placement::Pool => {
                let pool = pool.expect("placed on the pool");
                let job = Job {
                    // If no runner ever takes it (the runtime shut down), it is answered EIO.
                    chain: Unanswered::new(self.clone(), chain, libc::EIO),
                    header,
                    weight,
                    pass,
                    retry: None,
                };
                pool.push(job);
            }
        }
    }

    /// Waits for every request in `ring` and publishes their completions.
    fn complete_ring(&self, ring: Option<&Uring>) {
        if let Some(ring) = ring.filter(|r| r.busy()) {
            // A rare path (the ring stops or changes): the memory table as it is now.
            let mem = self.link.queue_memory().current().clone();
            let mut used = UsedBatch::new(&self.link, &self.stats, &mem);
            ring.complete_all(self, &mut used);
        }
    }

    /// Runs a request on the queue thread; its completion joins `used`.
    fn run_inline(
        self: &Arc<Self>,
        chain: Chain,
        header: Option<InHeader>,
        weight: Weight,
        pass: Option<Pass>,
        used: &mut UsedBatch<'_>,
    ) {
        self.stats.count_inline();
        match self.process(&chain, header, weight, pass) {
            Step::Done(len) => used.push(chain.head_index(), len),
            Step::Wait(w) => {
                self.spawn_lock_wait(Unanswered::new(self.clone(), chain, libc::EINTR), w)
            }
        }
    }

    /// Runs here the quick requests of the pool that no runner has started.
    fn take_back(self: &Arc<Self>, used: &mut UsedBatch<'_>) {
        let Some(pool) = &self.pool else { return };
        while let Some(job) = pool.take_quick() {
            self.run_inline(
                job.chain.into_chain(),
                job.header,
                job.weight,
                job.pass,
                used,
            );
        }
    }

    /// Runs one request to its end on the current thread (credentials are switched per
    /// thread, so it must not move); says whether it is answered or must wait for a lock.
    /// A panic in the server answers the request EIO. `weight` is what dispatch made of it
    /// (a bulk request's time feeds the queue's bulk average).
    pub(crate) fn process(
        &self,
        chain: &Chain,
        header: Option<InHeader>,
        weight: Weight,
        mut pass: Option<Pass>,
    ) -> Step {
        let _running = self.stats.start();
        // INIT holds the gate's exclusive side: nothing else runs while the handler learns how
        // long a chain the guest may send.
        if header.is_some_and(|h| h.opcode == Opcode::Init as u32) {
            if let Some(size) = smallest_ready_queue(&self.request_rings) {
                self.handler.set_queue_size(size);
            }
        }
        let started = Instant::now();
        let served = catch_unwind(AssertUnwindSafe(|| {
            serve_chain_handled(
                &*self.handler,
                chain,
                header,
                pass.as_mut(),
                &self.stats,
                self.link.index,
            )
        }));
        self.stats
            .record_service(started.elapsed(), weight == Weight::Bulk);
        let handled = served.unwrap_or_else(|_| {
            error!(queue = self.link.index, "a request panicked; answered EIO");
            let len = match header {
                Some(h) if !is_forget(h.opcode) => reply_error(chain, h.unique, libc::EIO),
                _ => None,
            };
            Handled {
                len: len.unwrap_or(0),
                errno: libc::EIO,
            }
        });
        let waits = LockWait::check(header, pass.as_ref(), &handled);
        // The pass is released before the chain goes back (or waits), so a DESTROY the guest
        // sends on seeing this completion never waits for it.
        drop(pass);
        match waits {
            Some(w) => Step::Wait(w),
            None => Step::Done(handled.len as u32),
        }
    }
}
