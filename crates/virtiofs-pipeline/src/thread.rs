//! Queue threads, started when the frontend first starts their queue.
//!
//! Each offered queue has a small watcher task on the shared runtime. When the queue first
//! becomes runnable (started, enabled, with a kick fd) the watcher starts the queue's OS thread
//! — `virtiofs-qN` for request queue N — with a current-thread runtime driving
//! [`QueueContext::run`], and its pool. The hiprio queue (0) gets no thread: the guest sends
//! it only FORGET and BATCH_FORGET, which are cheap, so its task runs on the shared runtime
//! (the daemon's main thread) itself. Queues the guest never starts cost one parked task each
//! and no thread. The thread then lives until the daemon stops (a ring stopped and started
//! again, e.g. by a guest reboot, keeps its thread).
//!
//! Threads created after the seccomp filter was installed inherit it (the kernel copies a
//! thread's filter on clone; `clone` and `clone3` are on the allowlist).

use std::io;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};
use virtiofs_device::{QueueLink, WatchedVring, HIPRIO_QUEUE};

use crate::affinity::{CpuSet, QueueAffinity};
use crate::gate::SessionGate;
use crate::handler::FuseHandler;
use crate::pool::{Pin, Pool};
use crate::queue::QueueContext;
use crate::stats::QueueStats;
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
    /// `--io-engine` (request queues only).
    pub(crate) io_engine: IoEngine,
    /// `--queue-affinity`, if given.
    pub(crate) affinity: Option<Affinity>,
    /// The runtime whose blocking threads run pooled requests.
    pub(crate) runtime: Handle,
    /// Tracks pooled requests and queue threads (shutdown waits for them).
    pub(crate) tracker: TaskTracker,
    /// Fires when the daemon stops.
    pub(crate) cancel: CancellationToken,
    /// The queue threads started so far.
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
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
            _ = shared.cancel.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
    }
    if index == HIPRIO_QUEUE {
        let ctx = queue_context(&shared, link, stats, None, shared.runtime.clone());
        debug!(queue = index, "queue task started on the shared runtime");
        // Already on the tracker: shutdown waits for this watcher, and so for the queue.
        ctx.clone().run().await;
        ctx.tasks.close();
        ctx.tasks.wait().await;
        return;
    }
    loop {
        // On a blocking thread: a runtime that cannot be handed to a thread is dropped, which
        // tokio allows only outside async code.
        let (s, l, st) = (shared.clone(), link.clone(), stats.clone());
        let started = tokio::task::spawn_blocking(move || start_thread(&s, l, st)).await;
        match started {
            Ok(Ok(thread)) => {
                debug!(queue = index, "queue thread started");
                shared.threads.lock().unwrap().push(thread);
                return;
            }
            Ok(Err(e)) => error!(
                queue = index,
                "cannot start the queue's thread: {e}; trying again in {RETRY_START:?}"
            ),
            Err(e) => error!(queue = index, "cannot start the queue's thread: {e}"),
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return,
            _ = tokio::time::sleep(RETRY_START) => {}
        }
    }
}

/// Starts the thread of `link`'s queue.
fn start_thread<H: FuseHandler>(
    shared: &Shared<H>,
    link: QueueLink,
    stats: Arc<QueueStats>,
) -> io::Result<JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let index = link.index;
    let cpus = shared.affinity.as_ref().and_then(|a| a.cpus_for(index));
    let ctx = queue_context(shared, link, stats, cpus.clone(), rt.handle().clone());
    // Shutdown waits for the thread as for any tracked task.
    let token = shared.tracker.token();
    std::thread::Builder::new()
        .name(queue_thread_name(index))
        .spawn(move || {
            let _token = token;
            if let Some(cpus) = cpus {
                match cpus.pin_this_thread() {
                    Ok(()) => info!(queue = index, "queue thread and its runners on CPUs {cpus}"),
                    Err(e) => warn!(
                        queue = index,
                        "cannot pin the queue thread to CPUs {cpus}: {e}"
                    ),
                }
            }
            rt.block_on(async {
                ctx.clone().run().await;
                // SETLKW waits end (EINTR) once the daemon stops; their chains go back first.
                ctx.tasks.close();
                ctx.tasks.wait().await;
            });
            debug!(queue = index, "queue thread stopped");
        })
}

/// The context of `link`'s queue, whose task runs on `local` (its SETLKW waits too), with its
/// pool (request queues) pinned to `cpus` if given.
fn queue_context<H: FuseHandler>(
    shared: &Shared<H>,
    link: QueueLink,
    stats: Arc<QueueStats>,
    cpus: Option<CpuSet>,
    local: Handle,
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
        request_rings: shared.request_rings.clone(),
        local,
        tasks: TaskTracker::new(),
        cancel: shared.cancel.clone(),
        engine: if index == HIPRIO_QUEUE {
            IoEngine::Sync
        } else {
            shared.io_engine
        },
    })
}
