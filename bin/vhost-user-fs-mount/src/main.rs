//! `vhost-user-fs-mount SOCKET MOUNTPOINT [options]`: mounts a vhost-user-fs backend on the host
//! through /dev/fuse (see the library docs and docs/bridge.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use vhost_user_fs_mount::mount::MountOptions;
use vhost_user_fs_mount::{Config, Ending, Error};

/// Mount a vhost-user-fs (virtio-fs) backend on the host through /dev/fuse, with no VM.
///
/// Runs in the foreground until the mount is unmounted (umount MOUNTPOINT), a signal arrives
/// (SIGINT/SIGTERM/SIGHUP: unmount and exit 0) or the backend goes away (the mount is aborted:
/// its users get ENOTCONN; exit 1).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The backend's vhost-user socket (e.g. virtiofsd --socket-path).
    socket: PathBuf,
    /// Directory to mount on.
    mountpoint: PathBuf,
    /// Request queues (QEMU num-request-queues); the backend must offer that many.
    #[arg(long, default_value_t = 1)]
    queues: u16,
    /// Requests in flight per request queue at most.
    #[arg(long, default_value_t = 64)]
    queue_depth: u16,
    /// Descriptors per virtqueue (QEMU queue-size, a power of two); max_pages is at most
    /// queue-size - 4, as in a Linux guest.
    #[arg(long, default_value_t = 1024)]
    queue_size: u16,
    /// Cap max_pages (pages per READ/WRITE) below what the queue size allows.
    #[arg(long)]
    max_pages: Option<u32>,
    /// Seconds a shutdown by signal waits for users of a busy mount before aborting it.
    #[arg(long, default_value_t = 5)]
    grace: u64,
    /// Mount source shown in /proc/mounts (default: vhost-user-fs:SOCKET).
    #[arg(long)]
    fsname: Option<String>,
    /// Only the mounting user may use the mount (default: allow_other, so that the backend's
    /// permission checks decide for every user).
    #[arg(long)]
    no_allow_other: bool,
    /// Let the kernel check permissions from file modes (default off: the backend decides, as
    /// in a virtio-fs guest).
    #[arg(long)]
    default_permissions: bool,
    /// Mount read-only.
    #[arg(long)]
    read_only: bool,
    /// Do not fork the watchdog that unmounts if this process is killed.
    #[arg(long)]
    no_watchdog: bool,
    /// error|warn|info|debug|trace (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    log_level: String,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&a.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let cfg = Config {
        mount: MountOptions {
            fsname: a
                .fsname
                .unwrap_or_else(|| format!("vhost-user-fs:{}", a.socket.display())),
            subtype: "vhost-user-fs".into(),
            allow_other: !a.no_allow_other,
            default_permissions: a.default_permissions,
            read_only: a.read_only,
        },
        socket: a.socket,
        mountpoint: a.mountpoint,
        queues: a.queues,
        queue_depth: a.queue_depth,
        queue_size: a.queue_size,
        max_pages: a.max_pages,
        grace: Duration::from_secs(a.grace),
        watchdog: !a.no_watchdog,
    };
    match vhost_user_fs_mount::run(cfg) {
        Ok(Ending::Unmounted) => {
            tracing::info!("unmounted; exiting");
            ExitCode::SUCCESS
        }
        Ok(Ending::Signal(_)) => {
            tracing::info!("unmounted on signal; exiting");
            ExitCode::SUCCESS
        }
        Err(e @ Error::InvalidArgument(_)) => {
            eprintln!("vhost-user-fs-mount: error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("vhost-user-fs-mount: error: {e}");
            ExitCode::FAILURE
        }
    }
}
