//! Confinement of the virtio-fs daemon, applied in this order before the first guest request:
//!
//! 1. [`rlimit`]: raise RLIMIT_NOFILE and compute the guest's share of it;
//! 2. [`sandbox`]: namespaces + pivot_root, or chroot, into the shared directory;
//! 3. [`capabilities`]: drop every capability a passthrough file server does not need;
//! 4. [`seccomp`]: an allowlist of system calls, on every thread.
//!
//! The path confinement of guest requests themselves (names, symlinks, special files, the fd
//! quota) lives in the file server (`virtiofs-passthrough`), so it holds with `--sandbox none`.

#![deny(missing_docs)]

pub mod capabilities;
mod code_pages;
pub mod rlimit;
pub mod sandbox;
pub mod seccomp;
pub mod userns;

pub use capabilities::CapabilityPolicy;
pub use sandbox::{
    enter, make_root_readonly, release_held_signals, EnterError, Entered, SandboxMode,
};
pub use seccomp::SeccompMode;
pub use userns::{NsIdMaps, NsRange};

/// Why confinement could not be set up. Each message says what was being done.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call of the sandbox setup failed.
    #[error("sandbox: {0}: {1}")]
    Sys(&'static str, nix::errno::Errno),
    /// A file of the sandbox setup could not be written.
    #[error("sandbox: {0}: {1}")]
    Io(String, std::io::Error),
    /// `--modcaps` is malformed.
    #[error("--modcaps: {0}")]
    ModCaps(String),
    /// Reading or changing capabilities failed.
    #[error("capabilities: {0}: {1}")]
    Capabilities(&'static str, caps::errors::CapsError),
    /// The seccomp filter could not be built or installed.
    #[error("seccomp: {0}")]
    Seccomp(String),
    /// The user namespace's id maps (`--uid-map`, `--gid-map`) could not be set up.
    #[error("sandbox: {0}")]
    UserNs(String),
    /// The open-file limit could not be set or is too small.
    #[error("{0}")]
    Rlimit(String),
}

impl Error {
    fn sys(what: &'static str, e: nix::errno::Errno) -> Self {
        Error::Sys(what, e)
    }
}
