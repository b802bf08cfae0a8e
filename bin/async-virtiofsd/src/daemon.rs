//! The daemon's life: open the share, confine ourselves, listen, serve one frontend, shut down.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};
use vhost_user_backend::VhostUserBackend;
use virtiofs_device::{FsBackend, FsBackendConfig};
use virtiofs_passthrough::{check_shared_dir, InodeFileHandles, Share, ShareError};
use virtiofs_pipeline::{HostLoad, IoEngine, Pipeline, PipelineConfig};
use virtiofs_sandbox::{rlimit, seccomp, EnterError, Entered, SandboxMode};

use crate::cli::{IoEngineArg, Listen, Options};
use crate::scheduling::Scheduling;
use crate::socket::{ListenSocket, SocketError};
use crate::systemd::Notifier;

/// Logged (and sent to systemd as STATUS) once the daemon is ready for its frontend.
const WAITING: &str = "Waiting for vhost-user socket connection...";

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The shared directory cannot be served.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// The vhost-user socket cannot be set up.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// Confinement (limits, sandbox, capabilities, seccomp) could not be set up.
    #[error(transparent)]
    Confine(#[from] virtiofs_sandbox::Error),
    /// The `--tag` does not fit the config space.
    #[error("--tag: {0}")]
    Tag(#[from] virtiofs_device::TagError),
    /// The runtime or a thread could not be started.
    #[error("cannot start: {0}")]
    Start(#[from] std::io::Error),
    /// The vhost-user library failed.
    #[error("vhost-user: {0}")]
    VhostUser(String),
    /// `--io-engine io-uring` where io_uring cannot be used.
    #[error(
        "--io-engine io-uring: io_uring is not available ({0}); it may be disabled \
         (kernel.io_uring_disabled), refused by a seccomp filter or container runtime, or missing \
         from the kernel; use --io-engine sync or auto"
    )]
    IoUring(virtiofs_pipeline::ProbeError),
    /// `--scheduling` could not be applied (a seccomp filter or policy of the launcher).
    #[error("--scheduling: cannot set the policy: {0}")]
    Scheduling(std::io::Error),
}

/// The engine `--io-engine` comes to here: `io-uring` and `auto` try a ring first.
fn resolve_io_engine(arg: IoEngineArg) -> Result<IoEngine, DaemonError> {
    match arg {
        IoEngineArg::Sync => Ok(IoEngine::Sync),
        IoEngineArg::IoUring => virtiofs_pipeline::uring::probe()
            .map(|()| IoEngine::IoUring)
            .map_err(DaemonError::IoUring),
        IoEngineArg::Auto => match virtiofs_pipeline::uring::probe() {
            Ok(()) => {
                info!(
                    "--io-engine auto: io_uring is available; using {} \
                     (docs/performance-history.md, \"io_uring\")",
                    engine_name(AUTO_ENGINE)
                );
                Ok(AUTO_ENGINE)
            }
            Err(e) => {
                info!("--io-engine auto: io_uring is not available ({e}); using sync");
                Ok(IoEngine::Sync)
            }
        },
    }
}

/// What `--io-engine auto` uses where io_uring works: measured on ext4
/// (docs/performance-history.md, "io_uring"), io_uring served page-cache READs at the same CPU
/// cost and buffered WRITEs at about three times the CPU (ext4 has no non-blocking buffered
/// writes, so each one is handed to an io-wq thread).
const AUTO_ENGINE: IoEngine = IoEngine::Sync;

/// The engine as `--io-engine` spells it.
fn engine_name(engine: IoEngine) -> &'static str {
    match engine {
        IoEngine::Sync => "sync",
        IoEngine::IoUring => "io-uring",
    }
}

/// Sets up, confines and runs the daemon; returns the process exit code. In namespace mode this
/// process becomes the supervisor and returns the sandboxed daemon's exit code.
pub fn run(opts: Options) -> Result<u8, DaemonError> {
    // Before any other thread exists, so that all of them inherit it (see crate::scheduling).
    opts.scheduling.apply().map_err(DaemonError::Scheduling)?;
    if opts.scheduling == Scheduling::Batch {
        info!("--scheduling batch: every thread runs SCHED_BATCH");
    }
    // Everything outside the share first: the sandbox hides the rest of the host.
    let shared_dir = check_shared_dir(&opts.share.shared_dir)?;
    let mut socket = match &opts.listen {
        Listen::Path(path) => {
            let socket = ListenSocket::bind(path)?;
            if let Some(group) = &opts.socket_group {
                socket.set_group(group)?;
            }
            socket
        }
        Listen::Fd(fd) => ListenSocket::from_fd(*fd)?,
    };
    let mut backend = FsBackend::new(FsBackendConfig::default());
    if let Some(tag) = &opts.tag {
        backend = backend.with_tag(tag)?;
    }
    let mut pipeline = PipelineConfig {
        thread_pool_size: opts.thread_pool_size,
        queue_affinity: opts.queue_affinity.clone(),
        poll_max: opts.poll_max,
        // Opened before the sandbox hides the host's /proc (the count it shows is the host's).
        host_load: if opts.poll_max.is_zero() && opts.thread_pool_size == 0 {
            None
        } else {
            HostLoad::open()
                .map(Arc::new)
                .map_err(|e| {
                    warn!(
                        "cannot read /proc/loadavg, polling and waking pool runners even on a \
                         crowded host: {e}"
                    )
                })
                .ok()
        },
        io_engine: IoEngine::Sync,
        queue_threads: opts.queue_threads,
    };
    let max_threads = pipeline.max_blocking_threads(backend.num_queues());
    let nofile = rlimit::raise_nofile(opts.rlimit_nofile)?;
    let guest_fds = rlimit::guest_fd_limit(nofile, max_threads as u64)?;
    // NOTIFY_SOCKET may be out of the sandbox's sight: connect (and set up the relay) first.
    let mut notifier = Notifier::from_env();
    if opts.sandbox == SandboxMode::Namespace {
        notifier.relay_through_supervisor()?;
    }

    let share = match enter_sandbox(&opts, &shared_dir) {
        Ok(Entered::Inside(share)) => share,
        Ok(Entered::Supervisor(code)) => {
            drop(socket); // removes the socket path, which only the supervisor can still see
            return Ok(code);
        }
        Err(EnterError::Sandbox(e)) => return Err(e.into()),
        Err(EnterError::Prepare(e)) => return Err(e.into()),
    };
    if opts.sandbox != SandboxMode::None {
        socket.forget_path();
    }
    if opts.sandbox == SandboxMode::Namespace {
        notifier.child();
        if opts.share.readonly {
            // The kernel refuses what the file server's own checks (ops/readonly.rs) miss.
            virtiofs_sandbox::make_root_readonly()?;
        }
    }
    let share = share.import()?.with_fd_quota(guest_fds)?;
    opts.capabilities.apply()?;
    // With the capabilities it will serve with: open_by_handle_at needs DAC_READ_SEARCH.
    let share = share.enable_file_handles()?;
    // With the credentials it will serve with, before seccomp (which allows io_uring only
    // for this engine).
    pipeline.io_engine = resolve_io_engine(opts.io_engine)?;
    if pipeline.io_engine == IoEngine::IoUring {
        info!("READ, WRITE and FSYNC through io_uring");
    }
    info!(
        "confined: sandbox {:?}, open-file limit {nofile} ({guest_fds} for the guest), capabilities {:?}",
        opts.sandbox,
        opts.capabilities.kept()
    );

    match pipeline.queue_threads {
        0 => info!("each request queue has a thread of its own"),
        n => info!("request queues share up to {n} thread(s) (--queue-threads)"),
    }
    // Only the hiprio queue's FORGETs run on this runtime's thread (the main thread): request
    // queues run on their queue threads, and pooled requests on this runtime's blocking
    // threads. Otherwise the main thread watches for signals, the frontend and queues
    // to start.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("virtiofsd-pool")
        .max_blocking_threads(max_threads)
        .build()?;
    let result = runtime.block_on(serve(
        opts,
        socket,
        Arc::new(share),
        backend,
        pipeline,
        notifier,
    ));
    // Blocking threads still parked in accept() or in the vhost-user thread must not keep us alive.
    runtime.shutdown_background();
    result.map(|()| 0)
}

/// Enters the `--sandbox`; the filesystem object is created inside the new namespaces (it keeps
/// the sandbox's /proc/self/fd) but before the root moves.
fn enter_sandbox(
    opts: &Options,
    shared_dir: &Path,
) -> Result<Entered<virtiofs_passthrough::PreparedShare>, EnterError<ShareError>> {
    let root = opts.sandbox.root_inside(shared_dir);
    virtiofs_sandbox::enter(opts.sandbox, shared_dir, &opts.ns_idmaps, || {
        Share::prepare(&opts.share, &root)
    })
}

async fn serve(
    opts: Options,
    socket: ListenSocket,
    share: Arc<Share>,
    backend: FsBackend,
    pipeline_config: PipelineConfig,
    notifier: Notifier,
) -> Result<(), DaemonError> {
    let (mut daemon, links, released) = backend
        .create_daemon_watched("async-virtiofsd")
        .map_err(|e| DaemonError::VhostUser(e.to_string()))?;
    let io_uring = pipeline_config.io_engine == IoEngine::IoUring;
    let pipeline = Pipeline::start(links, share, pipeline_config)?;
    let reset = pipeline.session_reset();
    backend.on_device_reset(move || {
        if reset.reset() {
            info!("device reset: FUSE session ended, its inodes and handles released");
        }
    });

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    // Per-queue statistics on demand (`kill -USR1`), without stopping anything.
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    // The namespace sandbox held these back until now (its PID 1 would drop them otherwise).
    virtiofs_sandbox::release_held_signals();
    let mut listener = vhost::vhost_user::Listener::from(socket.try_clone()?);
    // Every thread that exists now gets the filter (TSYNC); later ones (queue threads, the
    // runtime's blocking threads, the vhost-user thread) inherit it.
    let file_handles = opts.share.inode_file_handles != InodeFileHandles::Never;
    seccomp::install(opts.seccomp, file_handles, io_uring)?;

    // Callers (Kata's runtime-rs) wait for this exact text; systemd for READY=1.
    info!("{WAITING}");
    notifier.ready(WAITING);
    let mut accept =
        tokio::task::spawn_blocking(move || daemon.start(&mut listener).map(|()| daemon));
    let accepted = loop {
        break tokio::select! {
            r = &mut accept => Some(r),
            _ = sigterm.recv() => { info!("SIGTERM received, exiting"); None }
            _ = sigint.recv() => { info!("SIGINT received, exiting"); None }
            _ = sigusr1.recv() => { info!("SIGUSR1 received: no frontend yet"); continue; }
        };
    };
    let daemon = match accepted {
        None => {
            notifier.stopping();
            pipeline.shutdown(SHUTDOWN_GRACE).await;
            return Ok(());
        }
        Some(r) => r
            .map_err(|e| DaemonError::VhostUser(e.to_string()))?
            .map_err(|e| DaemonError::VhostUser(e.to_string()))?,
    };
    info!(
        "vhost-user frontend connected; serving {}",
        opts.share.shared_dir.display()
    );

    // No thread parked in `VhostUserDaemon::wait()`: once the daemon is dropped its protocol
    // thread holds the library's backend alone, and dropping that when the thread ends (the
    // frontend disconnected, or the connection failed) is what `released` waits for. The
    // library's thread returns its error to `wait()` only, so a protocol error now ends the
    // daemon like a disconnect (exit 0) instead of exit 1.
    drop(daemon);
    let mut ended = std::pin::pin!(released.wait());
    loop {
        tokio::select! {
            () = &mut ended => info!("vhost-user frontend disconnected"),
            _ = sigterm.recv() => info!("SIGTERM received, shutting down"),
            _ = sigint.recv() => info!("SIGINT received, shutting down"),
            _ = sigusr1.recv() => {
                info!("SIGUSR1 received: statistics of the queues so far");
                pipeline.log_stats();
                continue;
            }
        };
        break;
    }
    notifier.stopping();
    pipeline.shutdown(SHUTDOWN_GRACE).await;
    drop(socket);
    Ok(())
}
