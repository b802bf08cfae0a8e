//! Error types.

use std::fmt;
use std::io;

/// Everything that can go wrong between this client and a backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A system call failed.
    #[error("{0}: {1}")]
    Io(&'static str, #[source] io::Error),
    /// A vhost-user message failed (the backend refused it or the socket broke).
    #[error("vhost-user: {0}")]
    Vhost(#[source] vhost::Error),
    /// A vhost-user setup step failed.
    #[error("vhost-user {step}: {source}")]
    Setup {
        /// The message that failed, e.g. `SET_MEM_TABLE`.
        step: &'static str,
        /// What the vhost crate reported.
        #[source]
        source: vhost::Error,
    },
    /// The backend does not offer a feature we require.
    #[error("backend lacks required feature: {0}")]
    MissingFeature(&'static str),
    /// Guest memory could not be mapped, read or written.
    #[error("guest memory: {0}")]
    Memory(String),
    /// No free block of guest memory of this size.
    #[error("out of guest memory allocating {0} bytes")]
    OutOfGuestMemory(u64),
    /// A queue index beyond the queues set up.
    #[error("no queue {0}")]
    NoSuchQueue(usize),
    /// A chain needs more descriptors than the queue has (and indirect descriptors are off).
    #[error("chain of {0} descriptors does not fit a queue of {1}")]
    ChainTooLong(usize, u16),
    /// A chain with no descriptors at all.
    #[error("empty descriptor chain")]
    EmptyChain,
    /// The token does not belong to a request in flight on this queue.
    #[error("unknown token")]
    UnknownToken,
    /// The backend returned something no correct device returns (bad used id, ...); the queue is
    /// unusable from then on.
    #[error("device protocol violation: {0}")]
    DeviceBug(String),
    /// No completion within the timeout.
    #[error("timed out after {0:?} waiting for the backend")]
    Timeout(std::time::Duration),
    /// A FUSE reply that does not decode (wrong length, wrong unique, ...).
    #[error("bad FUSE reply: {0}")]
    BadReply(String),
    /// The backend answered the FUSE request with an error.
    #[error("FUSE error: {0}")]
    Errno(Errno),
}

impl Error {
    /// The errno if this is a FUSE error reply.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Errno(e) => Some(*e),
            _ => None,
        }
    }
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A positive errno value, as carried (negated) in a FUSE reply header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

macro_rules! errnos {
    ($($name:ident),* $(,)?) => {
        impl Errno {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                pub const $name: Errno = Errno(libc::$name);
            )*

            /// The symbolic name, if it is one of the constants above.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $(libc::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

errnos!(
    EPERM,
    ENOENT,
    EIO,
    EBADF,
    EAGAIN,
    ENOMEM,
    EACCES,
    EFAULT,
    EBUSY,
    EEXIST,
    EXDEV,
    ENODEV,
    ENOTDIR,
    EISDIR,
    EINVAL,
    ENFILE,
    EMFILE,
    EFBIG,
    ENOSPC,
    ESPIPE,
    EROFS,
    EMLINK,
    ERANGE,
    ENAMETOOLONG,
    ENOSYS,
    ENOTEMPTY,
    ELOOP,
    ENODATA,
    ENXIO,
    EOPNOTSUPP,
    EPROTO,
    EOVERFLOW,
);

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self, io::Error::from_raw_os_error(self.0))
    }
}

impl std::error::Error for Errno {}
