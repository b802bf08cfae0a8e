//! Starting and stopping the queue tasks of one device.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use virtiofs_device::{QueueLink, WatchedVring, HIPRIO_QUEUE};

use crate::gate::SessionGate;
use crate::handler::FuseHandler;
use crate::queue::{log_stats, Mode, QueueContext};
use crate::stats::QueueStats;

/// How the pipeline runs requests.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Requests each request queue runs at once on the blocking pool (`--thread-pool-size`);
    /// 0 runs them one at a time on the queue task.
    pub thread_pool_size: usize,
}

impl PipelineConfig {
    /// The bound for tokio's blocking pool: every pooled request, plus one thread per queue for
    /// `block_in_place` (pool size 0), plus slack for the runtime's own blocking work.
    pub fn max_blocking_threads(&self, queues: usize) -> usize {
        self.thread_pool_size.max(1) + queues + 4
    }
}

/// The running queue tasks of one device.
pub struct Pipeline {
    cancel: CancellationToken,
    tracker: TaskTracker,
    stats: Vec<Arc<QueueStats>>,
    hiprio: Option<JoinHandle<()>>,
    reset: SessionReset,
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
    /// Starts one task per queue: the hiprio queue on an OS thread of its own (it must never wait
    /// behind request-queue work), the request queues on the current multi-threaded runtime.
    pub fn start<H: FuseHandler>(
        links: Vec<QueueLink>,
        handler: Arc<H>,
        config: PipelineConfig,
    ) -> io::Result<Self> {
        let cancel = CancellationToken::new();
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
        let mut stats = Vec::with_capacity(links.len());
        let mut hiprio = None;
        for link in links {
            let index = link.index;
            let mode = if index == HIPRIO_QUEUE {
                Mode::Dedicated
            } else if config.thread_pool_size == 0 {
                Mode::Inline
            } else {
                // "Each virtqueue has its own thread pool": one semaphore per queue.
                Mode::Pooled(Arc::new(Semaphore::new(config.thread_pool_size)))
            };
            let ctx = Arc::new(QueueContext {
                link,
                handler: handler.clone(),
                gate: gate.clone(),
                mode,
                stats: Arc::new(QueueStats::default()),
                request_rings: request_rings.clone(),
            });
            stats.push(ctx.stats.clone());
            let (cancel, tracker) = (cancel.clone(), tracker.clone());
            if index == HIPRIO_QUEUE {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                hiprio = Some(
                    std::thread::Builder::new()
                        .name("virtiofs-hiprio".into())
                        .spawn(move || rt.block_on(ctx.run(cancel, tracker)))?,
                );
            } else {
                tracker.clone().spawn(ctx.run(cancel, tracker));
            }
        }
        Ok(Self {
            cancel,
            tracker,
            stats,
            hiprio,
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

    /// Stops the queue tasks, waits up to `grace` for in-flight requests, and logs per-queue
    /// request counts.
    pub async fn shutdown(mut self, grace: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "{} request(s) still running after {grace:?}; not waiting longer",
                self.tracker.len()
            );
        }
        if let Some(h) = self.hiprio.take() {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        let total: u64 = self.stats.iter().map(|s| s.completed()).sum();
        for (index, s) in self.stats.iter().enumerate() {
            log_stats(index, s);
        }
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
