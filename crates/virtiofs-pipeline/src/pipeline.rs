//! Starting and stopping the queue threads of one device.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use virtiofs_device::{QueueLink, WatchedVring, HIPRIO_QUEUE};

use crate::affinity::{CpuSet, QueueAffinity};
use crate::gate::SessionGate;
use crate::handler::FuseHandler;
use crate::host_load::HostLoad;
use crate::stats::QueueStats;
use crate::stop::Stop;
use crate::thread::{start_when_runnable, Affinity, Shared};
use crate::uring::IoEngine;

/// How the pipeline runs requests.
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    /// Requests each request queue may run at once on the pool besides the one on its own
    /// thread (`--thread-pool-size`); 0 runs them all one at a time on the queue thread.
    pub thread_pool_size: usize,
    /// The CPUs of each request queue's thread and runners (`--queue-affinity`); `None`:
    /// unpinned.
    pub queue_affinity: Option<QueueAffinity>,
    /// The longest a request queue polls its avail ring before sleeping (`--poll-us`, see
    /// [`crate::poll`]); zero: never.
    pub poll_max: Duration,
    /// The host's load (`/proc/loadavg`, opened before the sandbox): a queue does not spin
    /// while threads wait for a CPU, and wakes no pool runner for quick requests while no CPU
    /// is free for it (see [`crate::host_load`]). `None`: it spins and wakes them regardless.
    pub host_load: Option<Arc<HostLoad>>,
    /// How request queues do READ, WRITE and FSYNC (`--io-engine`, resolved: see
    /// [`crate::uring::probe`]).
    pub io_engine: IoEngine,
    /// Threads the request queues share (`--queue-threads`; the crate's `thread` module):
    /// request queue N runs on thread (N - 1) mod T; 0: a thread per request queue (always so
    /// with `queue_affinity`, which pins each queue's own thread).
    pub queue_threads: usize,
}

impl PipelineConfig {
    /// The bound for the blocking threads of the runtime that runs pooled requests: one
    /// queue's pool, plus one per queue (several busy queues share it), plus slack for the
    /// runtime's own blocking work (the vhost-user connection, starting queue threads).
    pub fn max_blocking_threads(&self, queues: usize) -> usize {
        self.thread_pool_size.max(1) + queues + 4
    }
}

/// The running queue threads of one device.
pub struct Pipeline {
    stop: Stop,
    tracker: TaskTracker,
    stats: Vec<Arc<QueueStats>>,
    threads: Arc<dyn QueueThreads>,
    reset: SessionReset,
}

/// The queue threads started so far, whatever the handler type.
trait QueueThreads: Send + Sync {
    fn take(&self) -> Vec<std::thread::JoinHandle<()>>;
}

impl<H: FuseHandler> QueueThreads for Shared<H> {
    fn take(&self) -> Vec<std::thread::JoinHandle<()>> {
        std::mem::take(&mut *self.threads.lock().unwrap())
    }
}

/// Ends the pipeline's FUSE session from outside the request path: what a device reset from the
/// frontend (vhost-user RESET_DEVICE) does to the session.
#[derive(Clone)]
pub struct SessionReset(Arc<dyn Fn() -> bool + Send + Sync>);

impl SessionReset {
    /// Waits until no request runs, then ends the live session as DESTROY would (its inodes and
    /// handles are released; requests get `EIO` until the next INIT). Blocks the calling thread
    /// (normally the vhost-user protocol thread). Returns whether a session was live.
    pub fn reset(&self) -> bool {
        (self.0)()
    }
}

impl Pipeline {
    /// [`Pipeline::start_on`] the current runtime (it must be one).
    pub fn start<H: FuseHandler>(
        links: Vec<QueueLink>,
        handler: Arc<H>,
        config: PipelineConfig,
    ) -> io::Result<Self> {
        let runtime = Handle::try_current().map_err(io::Error::other)?;
        Self::start_on(links, handler, config, runtime)
    }

    /// Serves `links` (every queue of the device, in queue order): each queue gets an OS thread
    /// of its own once the frontend starts it (see [`crate::thread`]); pooled requests run on
    /// `runtime`'s blocking threads, where the queue watchers run too. `runtime` must have its
    /// time driver enabled: the pipeline's timers run there (queue threads have none).
    pub fn start_on<H: FuseHandler>(
        links: Vec<QueueLink>,
        handler: Arc<H>,
        config: PipelineConfig,
        runtime: Handle,
    ) -> io::Result<Self> {
        let stop = Stop::default();
        let tracker = TaskTracker::new();
        let gate = SessionGate::new();
        let reset = {
            let (gate, handler) = (gate.clone(), handler.clone());
            SessionReset(Arc::new(move || {
                gate.abandon_blocking(|| handler.end_session())
            }))
        };
        let request_rings: Arc<[WatchedVring]> = links
            .iter()
            .filter(|link| link.index != HIPRIO_QUEUE)
            .map(|link| link.vring.clone())
            .collect();
        let request_queues = request_rings.len();
        let has_affinity = config.queue_affinity.is_some();
        let shared = Arc::new(Shared {
            handler,
            gate,
            request_rings,
            pool_size: config.thread_pool_size,
            poll_max: config.poll_max,
            host_load: config.host_load,
            io_engine: config.io_engine,
            affinity: config.queue_affinity.map(|a| Affinity {
                // The CPUs this thread (the daemon's main thread) may use: what `auto` spreads
                // and what runners go back to.
                allowed: CpuSet::of_this_thread().unwrap_or_else(|_| CpuSet::new(Vec::new())),
                request_queues,
                map: a,
            }),
            runtime: runtime.clone(),
            tracker: tracker.clone(),
            stop: stop.clone(),
            queue_threads: if has_affinity {
                0
            } else {
                config.queue_threads
            },
            slots: tokio::sync::Mutex::new(Vec::new()),
            threads: Mutex::new(Vec::new()),
        });
        let mut stats = Vec::with_capacity(links.len());
        for link in links {
            let queue_stats = Arc::new(QueueStats::default());
            stats.push(queue_stats.clone());
            tracker.spawn_on(
                start_when_runnable(shared.clone(), link, queue_stats),
                &runtime,
            );
        }
        Ok(Self {
            stop,
            tracker,
            stats,
            threads: shared,
            reset,
        })
    }

    /// A handle that ends the FUSE session on a device reset.
    pub fn session_reset(&self) -> SessionReset {
        self.reset.clone()
    }

    /// Counters per queue, indexed by queue number.
    pub fn stats(&self) -> &[Arc<QueueStats>] {
        &self.stats
    }

    /// Logs every queue's statistics (what has served requests so far); the daemon calls it
    /// on SIGUSR1 and at shutdown.
    pub fn log_stats(&self) {
        for (index, s) in self.stats.iter().enumerate() {
            s.log(index);
        }
    }

    /// Stops the queue threads, waits up to `grace` for in-flight requests, and logs per-queue
    /// request counts.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.stop();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "{} request(s) or queue thread(s) still running after {grace:?}; not waiting longer",
                self.tracker.len()
            );
        }
        // Those that ended; a thread still stuck in a request is left behind.
        let ended: Vec<_> = self
            .threads
            .take()
            .into_iter()
            .filter(|t| t.is_finished())
            .collect();
        let _ = tokio::task::spawn_blocking(move || ended.into_iter().for_each(|t| drop(t.join())))
            .await;
        let total: u64 = self.stats.iter().map(|s| s.completed()).sum();
        self.log_stats();
        let busy = self
            .stats
            .iter()
            .skip(1)
            .filter(|s| s.completed() > 0)
            .count();
        info!(
            requests = total,
            request_queues_used = busy,
            "request pipeline stopped"
        );
    }
}
