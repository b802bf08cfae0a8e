//! Errors of the bridge.

use std::io;

/// Everything that can stop the bridge.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument (mount point, option value).
    #[error("{0}")]
    InvalidArgument(&'static str),
    /// A system call failed.
    #[error("{0}: {1}")]
    Sys(&'static str, #[source] io::Error),
    /// Connecting to or talking with the backend failed.
    #[error("backend: {0}")]
    Backend(#[from] vhost_user_fs_client::Error),
    /// The FUSE_INIT exchange failed.
    #[error("FUSE_INIT: {0}")]
    Init(String),
    /// The backend closed its socket while the mount was live.
    #[error("the backend went away; the mount was aborted (ENOTCONN) and detached")]
    BackendGone,
}

/// Result type of the bridge.
pub type Result<T> = std::result::Result<T, Error>;
