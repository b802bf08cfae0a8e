//! The daemon's life: open the share, listen, serve one frontend, shut down.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info};
use vhost::vhost_user::Error as VhostUserError;
use vhost_user_backend::VhostUserBackend;
use virtiofs_device::{FsBackend, FsBackendConfig};
use virtiofs_passthrough::{check_shared_dir, Share, ShareError};
use virtiofs_pipeline::{Pipeline, PipelineConfig};

use crate::cli::{Listen, Options};
use crate::socket::{ListenSocket, SocketError};

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
    /// The runtime or a thread could not be started.
    #[error("cannot start: {0}")]
    Start(#[from] std::io::Error),
    /// The vhost-user library failed.
    #[error("vhost-user: {0}")]
    VhostUser(String),
}

/// Builds the runtime and serves until the frontend disconnects or a signal arrives.
pub fn run(opts: Options) -> Result<(), DaemonError> {
    let backend = FsBackend::new(FsBackendConfig::default());
    let pipeline = PipelineConfig {
        thread_pool_size: opts.thread_pool_size,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("virtiofsd-worker")
        .max_blocking_threads(pipeline.max_blocking_threads(backend.num_queues()))
        .build()?;
    let result = runtime.block_on(serve(opts, backend, pipeline));
    // Blocking threads still parked in accept() or in the vhost-user thread must not keep us alive.
    runtime.shutdown_background();
    result
}

async fn serve(
    opts: Options,
    backend: FsBackend,
    pipeline_config: PipelineConfig,
) -> Result<(), DaemonError> {
    // Fail on a bad share before touching the socket path.
    check_shared_dir(&opts.share.shared_dir)?;
    // The socket first: opening the share clears the umask (see `Share::open`).
    let socket = match &opts.listen {
        Listen::Path(path) => ListenSocket::bind(path)?,
        Listen::Fd(fd) => ListenSocket::from_fd(*fd)?,
    };
    let share = Arc::new(Share::open(&opts.share)?);
    let (mut daemon, links) = backend
        .create_daemon("async-virtiofsd")
        .map_err(|e| DaemonError::VhostUser(e.to_string()))?;
    let pipeline = Pipeline::start(links, share, pipeline_config)?;

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut listener = vhost::vhost_user::Listener::from(socket.try_clone()?);

    // Callers (Kata's runtime-rs) wait for this exact text.
    info!("Waiting for vhost-user socket connection...");
    let mut accept =
        tokio::task::spawn_blocking(move || daemon.start(&mut listener).map(|()| daemon));
    let accepted = tokio::select! {
        r = &mut accept => Some(r),
        _ = sigterm.recv() => { info!("SIGTERM received, exiting"); None }
        _ = sigint.recv() => { info!("SIGINT received, exiting"); None }
    };
    let mut daemon = match accepted {
        None => {
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

    let wait = tokio::task::spawn_blocking(move || daemon.wait());
    let outcome = tokio::select! {
        r = wait => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(vhost_user_backend::Error::HandleRequest(
                VhostUserError::Disconnected | VhostUserError::PartialMessage,
            ))) => Ok(()),
            Ok(Err(e)) => Err(DaemonError::VhostUser(e.to_string())),
            Err(e) => Err(DaemonError::VhostUser(e.to_string())),
        },
        _ = sigterm.recv() => { info!("SIGTERM received, shutting down"); Ok(()) }
        _ = sigint.recv() => { info!("SIGINT received, shutting down"); Ok(()) }
    };
    match &outcome {
        Ok(()) => info!("vhost-user frontend disconnected"),
        Err(e) => error!("vhost-user connection failed: {e}"),
    }
    pipeline.shutdown(SHUTDOWN_GRACE).await;
    drop(socket);
    outcome
}
