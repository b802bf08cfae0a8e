//! Queue threads, started when the frontend first starts a queue they serve.
//!
//! Each offered queue has a small watcher task on the shared runtime. When the queue first
//! becomes runnable (started, enabled, with a kick fd) the watcher spawns the queue's task,
//! [`QueueContext::run`], on its queue thread, starting that thread first if it is the first
//! of its queues to run. A queue thread is an OS thread with a current-thread runtime: with
//! [`PipelineConfig::queue_threads`](crate::PipelineConfig::queue_threads) 0, one per
//! request queue, `virtiofs-qN` for queue N; with T threads, request queue N is served by
//! thread `virtiofs-qM`, M = (N - 1) mod T + 1, together with the other queues of that thread
//! (on a host with fewer cores than queues, four queue threads woken per request lose to two
//! that each find work from two queues when they wake; the daemon's `auto` is half the CPUs).
//! The hiprio queue (0) gets no thread: the guest sends it only FORGET and BATCH_FORGET, which
//! are cheap, so its task runs on the shared runtime (the daemon's main thread) itself. Queues
//! the guest never starts cost one parked task each and no thread. A thread then lives until
//! the daemon stops (a ring stopped and started again, e.g. by a guest reboot, keeps its
//! thread).
//!
//! Threads created after the seccomp filter was installed inherit it (the kernel copies a
//! thread's filter on clone; `clone` and `clone3` are on the allowlist).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use virtiofs_device::{QueueLink, WatchedVring, HIPRIO_QUEUE};

use crate::affinity::{CpuSet, QueueAffinity};
use crate::alarm::Alarms;
use crate::gate::SessionGate;
use crate::handler::FuseHandler;
use crate::host_load::HostLoad;
use crate::pool::{Pin, Pool};
use crate::queue::QueueContext;
use crate::stats::QueueStats;
use crate::stop::Stop;
use crate::uring::IoEngine;

/// How long a watcher waits before trying again to start a thread the system refused.
const RETRY_START: Duration = Duration::from_secs(1);

/// What every queue thread of one device shares.
pub(crate) struct Shared<H> {
    /// The FUSE server.
    pub(crate) handler: Arc<H>,
    /// INIT/DESTROY exclusion.
    pub(crate) gate: SessionGate,
    /// Every request queue's vring.
    pub(crate) request_rings: Arc<[WatchedVring]>,
    /// Permits per request queue (`--thread-pool-size`); 0: no pool.
    pub(crate) pool_size: usize,
    /// `--poll-us` (request queues only).
    pub(crate) poll_max: Duration,
    /// The host's load, read before each spin (request queues only).
    pub(crate) host_load: Option<Arc<HostLoad>>,
    /// `--io-engine` (request queues only).
    pub(crate) io_engine: IoEngine,
    /// `--queue-affinity`, if given.
    pub(crate) affinity: Option<Affinity>,
    /// The runtime whose blocking threads run pooled requests.
    pub(crate) runtime: Handle,
    /// Tracks pooled requests and queue threads (shutdown waits for them).
    pub(crate) tracker: TaskTracker,
    /// Fires when the daemon stops.
    pub(crate) stop: Stop,
    /// Request-queue threads (0: one per request queue).
    pub(crate) queue_threads: usize,
    /// The queue threads started so far, by slot ([`Shared::slot_of`]); the async lock keeps
    /// two queues of one slot from both starting its thread.
    pub(crate) slots: tokio::sync::Mutex<Vec<Option<Arc<QueueThread>>>>,
    /// The OS threads of `slots`, for shutdown to join.
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
}

impl<H> Shared<H> {
    /// The thread slot of request queue `index` (from 1).
    fn slot_of(&self, index: usize) -> usize {
        match self.queue_threads {
            0 => index - 1,
            n => (index - 1) % n,
        }
    }
}

/// A running request-queue thread.
pub(crate) struct QueueThread {
    /// Its runtime: queue tasks are spawned here.
    runtime: Handle,
    /// The queue tasks on it; the thread ends once the daemon stops and they are done.
    queues: TaskTracker,
    /// How many queues it serves (a queue polls its ring, or blocks in poll(2) for a kick,
    /// only while alone on its thread).
    pub(crate) hosted: Arc<AtomicUsize>,
    /// The alarms of its queues, to nudge those blocked in poll(2) when another joins.
    alarms: Mutex<Vec<Arc<Alarms>>>,
}

impl QueueThread {
    /// Counts in a queue (whose task is then spawned) and returns how many the thread serves.
    fn host(&self) -> usize {
        self.hosted.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers the alarms of a queue whose task was just spawned here, and nudges the others:
    /// one of them blocked in poll(2) would keep the new task from ever running.
    fn joined(&self, alarms: Arc<Alarms>) {
        let mut all = self.alarms.lock().unwrap();
        for other in all.iter() {
            other.nudge();
        }
        all.push(alarms);
    }
}

/// `--queue-affinity` with what it is resolved against.
pub(crate) struct Affinity {
    /// As given.
    pub(crate) map: QueueAffinity,
    /// The CPUs the daemon may use.
    pub(crate) allowed: CpuSet,
    /// Request queues offered.
    pub(crate) request_queues: usize,
}

impl Affinity {
    /// The CPUs of queue `index` (never the hiprio queue's).
    fn cpus_for(&self, index: usize) -> Option<CpuSet> {
        (index != HIPRIO_QUEUE)
            .then(|| self.map.cpus_for(index, self.request_queues, &self.allowed))
            .flatten()
    }
}

/// The name of queue `index`'s thread (the hiprio queue has none: its task runs on the shared
/// runtime; the name is still that of its log and statistics).
pub fn queue_thread_name(index: usize) -> String {
    if index == HIPRIO_QUEUE {
        "virtiofs-hiprio".to_owned()
    } else {
        format!("virtiofs-q{index}")
    }
}

/// Waits until `link`'s ring is first runnable, then starts its thread (see the module docs).
pub(crate) async fn start_when_runnable<H: FuseHandler>(
    shared: Arc<Shared<H>>,
    link: QueueLink,
    stats: Arc<QueueStats>,
) {
    let index = link.index;
    let mut changes = link.vring.subscribe();
    loop {
        changes.borrow_and_update();
        if link.vring.is_runnable() {
            break;
        }
        tokio::select! {
            _ = shared.stop.stopped() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
    if index == HIPRIO_QUEUE {
        let alone = Arc::new(AtomicUsize::new(1));
        let ctx = queue_context(&shared, link, stats, None, shared.runtime.clone(), alone);
        debug!(queue = index, "queue task started on the shared runtime");
        // Already on the tracker: shutdown waits for this watcher, and so for the queue.
        ctx.clone().run().await;
        ctx.tasks.close();
        ctx.tasks.wait().await;
        return;
    }
    let cpus = shared.affinity.as_ref().and_then(|a| a.cpus_for(index));
    let Some(thread) = queue_thread(&shared, index, cpus.clone()).await else {
        return; // the daemon stopped first
    };
    let hosted = thread.host();
    let ctx = queue_context(
        &shared,
        link,
        stats,
        cpus,
        thread.runtime.clone(),
        thread.hosted.clone(),
    );
    debug!(
        queue = index,
        thread = %queue_thread_name(shared.slot_of(index) + 1),
        queues_on_thread = hosted,
        "queue task started"
    );
    let alarms = ctx.alarms.clone();
    // A runtime that has shut down (the daemon stopping) drops the task unrun.
    thread.runtime.spawn(thread.queues.track_future(async move {
        ctx.clone().run().await;
        // SETLKW waits end (EINTR) once the daemon stops; their chains go back first.
        ctx.tasks.close();
        ctx.tasks.wait().await;
    }));
    thread.joined(alarms);
}

/// The thread of request queue `index`, started if it is not yet (pinned to `cpus`, the
/// queue's own, with one thread per queue); None if the daemon stops first.
async fn queue_thread<H: FuseHandler>(
    shared: &Arc<Shared<H>>,
    index: usize,
    cpus: Option<CpuSet>,
) -> Option<Arc<QueueThread>> {
    let slot = shared.slot_of(index);
    let mut slots = shared.slots.lock().await;
    if let Some(Some(thread)) = slots.get(slot) {
        return Some(thread.clone());
    }
    loop {
        // On a blocking thread: a runtime that cannot be handed to a thread is dropped, which
        // tokio allows only outside async code.
        let (s, c) = (shared.clone(), cpus.clone());
        let started = tokio::task::spawn_blocking(move || start_thread(&s, slot, c)).await;
        match started {
            Ok(Ok((thread, handle))) => {
                debug!(queue = index, "queue thread started");
                shared.threads.lock().unwrap().push(handle);
                if slots.len() <= slot {
                    slots.resize(slot + 1, None);
                }
                slots[slot] = Some(thread.clone());
                return Some(thread);
            }
            Ok(Err(e)) => error!(
                queue = index,
                "cannot start the queue's thread: {e}; trying again in {RETRY_START:?}"
            ),
            Err(e) => error!(queue = index, "cannot start the queue's thread: {e}"),
        }
        tokio::select! {
            _ = shared.stop.stopped() => return None,
            _ = tokio::time::sleep(RETRY_START) => {}
        }
    }
}

/// Starts the queue thread of `slot`, pinned to `cpus` if given.
fn start_thread<H: FuseHandler>(
    shared: &Shared<H>,
    slot: usize,
    cpus: Option<CpuSet>,
) -> io::Result<(Arc<QueueThread>, JoinHandle<()>)> {
    // I/O only: no time driver (see QueueContext::local).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let thread = Arc::new(QueueThread {
        runtime: rt.handle().clone(),
        queues: TaskTracker::new(),
        hosted: Arc::new(AtomicUsize::new(0)),
        alarms: Mutex::new(Vec::new()),
    });
    let queues = thread.queues.clone();
    let stop = shared.stop.clone();
    let name = queue_thread_name(slot + 1);
    // Shutdown waits for the thread as for any tracked task.
    let token = shared.tracker.token();
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _token = token;
            if let Some(cpus) = cpus {
                match cpus.pin_this_thread() {
                    Ok(()) => info!(thread = %name, "queue thread and its runners on CPUs {cpus}"),
                    Err(e) => {
                        warn!(thread = %name, "cannot pin the queue thread to CPUs {cpus}: {e}")
                    }
                }
            }
            rt.block_on(async {
                stop.stopped().await;
                queues.close();
                queues.wait().await;
            });
            debug!(thread = %name, "queue thread stopped");
        })?;
    Ok((thread, handle))
}

/// The context of `link`'s queue, whose task runs on `local` (its SETLKW waits too), with its
/// pool (request queues) pinned to `cpus` if given; `thread_queues` counts the queues of its
/// thread.
fn queue_context<H: FuseHandler>(
    shared: &Shared<H>,
    link: QueueLink,
    stats: Arc<QueueStats>,
    cpus: Option<CpuSet>,
    local: Handle,
    thread_queues: Arc<AtomicUsize>,
) -> Arc<QueueContext<H>> {
    let index = link.index;
    let pool = (index != HIPRIO_QUEUE && shared.pool_size > 0).then(|| {
        let pin = cpus
            .clone()
            .zip(shared.affinity.as_ref())
            .map(|(cpus, a)| Pin {
                cpus,
                unpinned: a.allowed.clone(),
            });
        Pool::new(
            shared.pool_size,
            shared.runtime.clone(),
            shared.tracker.clone(),
            stats.clone(),
            pin,
            shared.host_load.clone(),
        )
    });
    Arc::new(QueueContext {
        link,
        handler: shared.handler.clone(),
        gate: shared.gate.for_queue(),
        pool,
        stats,
        poll_max: if index == HIPRIO_QUEUE {
            Duration::ZERO
        } else {
            shared.poll_max
        },
        host_load: shared.host_load.clone(),
        request_rings: shared.request_rings.clone(),
        local,
        timers: shared.runtime.clone(),
        thread_queues,
        tasks: TaskTracker::new(),
        alarms: Arc::default(),
        own_thread: index != HIPRIO_QUEUE,
        stop: shared.stop.clone(),
        engine: if index == HIPRIO_QUEUE {
            IoEngine::Sync
        } else {
            shared.io_engine
        },
    })
}
