//! The shared directory as a FUSE filesystem.
//!
//! Our FUSE server (`virtiofs-fuse`) answers the requests; the filesystem behind it is
//! [`Passthrough`]: an inode store of O_PATH descriptors or file handles keyed by (st_dev,
//! st_ino, mount id) (`inode.rs`; `file_handle.rs` and `storage.rs` for the handles), a handle
//! table (`handle.rs`), the caller's credentials for requests that make
//! files (`creds.rs`), and the operations by kind (`ops/`) over thin system-call wrappers
//! (`sys.rs`). [`ShareOptions`] → [`Share`] maps the daemon's options onto it. Requests that
//! would take the guest past its file-descriptor quota are refused ([`FdQuota`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

mod creds;
mod dir_stream;
mod fd_quota;
mod file_handle;
mod filesystem;
mod handle;
mod idmap;
mod inode;
mod ops;
mod passthrough;
mod quota;
mod storage;
mod sys;
mod xattrmap;
pub use fd_quota::FdQuota;
pub use idmap::{Forbidden, IdMap, IdMaps, IdRule};
pub use passthrough::{Config, Passthrough};
pub use xattrmap::{XattrMap, XattrMapError};

use virtiofs_fuse::abi::{InHeader, Opcode};
use virtiofs_fuse::{Errno, Limits, PendingReply, ServeError, Served, Server, Started};
use virtiofs_pipeline::{Chain, FuseHandler, HandleError, Handled, Start};

/// Guest caching policy (`--cache`), with the Rust virtiofsd's timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// No caching: entry and attribute timeouts 0, direct I/O.
    Never,
    /// Cache for 1 s, invalidate file data on open when it changed.
    #[default]
    Auto,
    /// Cache for a day; metadata only, file data is not kept across opens.
    Metadata,
    /// Cache for a day, file data kept across opens.
    Always,
}

impl CacheMode {
    /// The names accepted on the command line.
    pub const NAMES: &'static [&'static str] = &["never", "auto", "always", "metadata"];

    fn timeout(self) -> Duration {
        match self {
            CacheMode::Never => Duration::ZERO,
            CacheMode::Auto => Duration::from_secs(1),
            CacheMode::Metadata | CacheMode::Always => Duration::from_secs(86400),
        }
    }
}

impl FromStr for CacheMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" | "none" => Ok(CacheMode::Never),
            "auto" => Ok(CacheMode::Auto),
            "metadata" => Ok(CacheMode::Metadata),
            "always" => Ok(CacheMode::Always),
            _ => Err(format!(
                "invalid cache mode '{s}' (allowed: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// `--inode-file-handles`: how a node holds on to its host file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InodeFileHandles {
    /// An O_PATH descriptor per node.
    #[default]
    Never,
    /// A file handle per node where the filesystem makes them, else an O_PATH descriptor; and
    /// descriptors throughout (with a warning) when open_by_handle_at is not permitted.
    Prefer,
    /// File handles only: the daemon does not start without them, and a file whose filesystem
    /// makes none is refused (EOPNOTSUPP).
    Mandatory,
}

impl InodeFileHandles {
    /// The option as written on the command line, for messages.
    pub fn option(self) -> &'static str {
        match self {
            InodeFileHandles::Never => "--inode-file-handles=never",
            InodeFileHandles::Prefer => "--inode-file-handles=prefer",
            InodeFileHandles::Mandatory => "--inode-file-handles=mandatory",
        }
    }
}

/// Whether a feature the guest must support too is offered (`--posix-acl`,
/// `--security-label`: `never|auto|always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Negotiation {
    /// Not offered.
    #[default]
    Never,
    /// Offered to guests that support it; others go without.
    Auto,
    /// Required: a guest that does not support it cannot start a session (INIT fails EPROTO).
    Always,
}

/// What to share and how.
#[derive(Debug, Clone)]
pub struct ShareOptions {
    /// The host directory served to the guest.
    pub shared_dir: PathBuf,
    /// Guest caching policy.
    pub cache: CacheMode,
    /// Serve extended attributes.
    pub xattr: bool,
    /// Let the guest use the writeback cache.
    pub writeback: bool,
    /// Offer READDIRPLUS.
    pub readdirplus: bool,
    /// Honour O_DIRECT from the guest.
    pub allow_direct_io: bool,
    /// Mark mount points inside the share so the guest gives each its own st_dev.
    pub announce_submounts: bool,
    /// Translate xattr names between the guest and the host (`--xattrmap`).
    pub xattrmap: Option<XattrMap>,
    /// POSIX ACLs (`--posix-acl`): POSIX_ACL, DONT_MASK and SETXATTR_EXT negotiated.
    pub posix_acl: Negotiation,
    /// Security labels (`--security-label`): SECURITY_CTX negotiated, a new node gets the
    /// security context the guest sends as an xattr.
    pub security_label: Negotiation,
    /// Refuse every modification of the share (EROFS).
    pub readonly: bool,
    /// Offer HANDLE_KILLPRIV_V2 (the daemon clears SUID/SGID/capabilities on write, truncate
    /// and O_TRUNC when the guest asks).
    pub killpriv_v2: bool,
    /// Offer DIRECT_IO_ALLOW_MMAP: shared mmap of files opened with direct I/O
    /// (`--cache=never|metadata`).
    pub allow_mmap: bool,
    /// Keep O_NOATIME even where the host refuses it (EPERM) instead of opening without it.
    pub preserve_noatime: bool,
    /// Serve POSIX locks on the host (POSIX_LOCKS); off, the guest kernel keeps them locally.
    pub posix_locks: bool,
    /// Serve flock(2) locks on the host (FLOCK_LOCKS); off, the guest kernel keeps them locally.
    pub flock_locks: bool,
    /// File handles instead of O_PATH descriptors for nodes.
    pub inode_file_handles: InodeFileHandles,
    /// The most inodes the shared tree may hold (`--max-inodes`): making more is EDQUOT.
    pub max_inodes: Option<u64>,
    /// The most bytes its regular files may allocate (`--max-bytes`): growing past it is
    /// EDQUOT (a write that partly fits is cut short).
    pub max_bytes: Option<u64>,
    /// Translation of user and group ids between the guest and the host (`--translate-uid`,
    /// `--translate-gid`); empty, nothing is translated.
    pub idmaps: IdMaps,
}

/// Why the share cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The shared directory is missing or unreadable.
    #[error("shared directory {path}: {source}")]
    Access {
        /// The directory given.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The path is not a directory.
    #[error("shared directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// `--inode-file-handles=mandatory` and file handles do not work here.
    #[error("{0}")]
    FileHandles(String),
    /// The root (or /proc/self/fd) cannot be opened.
    #[error("cannot serve {path}: {source}")]
    Open {
        /// The directory given.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
}

/// Checks that `path` is a directory we can open, and returns it absolute.
pub fn check_shared_dir(path: &Path) -> Result<PathBuf, ShareError> {
    let access = |source| ShareError::Access {
        path: path.to_owned(),
        source,
    };
    let abs = std::fs::canonicalize(path).map_err(access)?;
    let meta = std::fs::metadata(&abs).map_err(access)?;
    if !meta.is_dir() {
        return Err(ShareError::NotADirectory(path.to_owned()));
    }
    std::fs::read_dir(&abs).map_err(access)?;
    Ok(abs)
}

/// The FUSE server over the shared directory.
pub struct Share {
    server: Server<Passthrough>,
}

/// A share whose filesystem object exists (it holds /proc/self/fd) but whose root is not open
/// yet: the sandbox changes the root between [`Share::prepare`] and [`PreparedShare::import`].
pub struct PreparedShare {
    fs: Passthrough,
    root: PathBuf,
}

impl Share {
    /// Opens the shared directory (prepare and import in one step, no sandbox). Note: this
    /// clears the process umask (the guest's modes arrive already masked), so create host
    /// files the daemon owns before calling it.
    pub fn open(opts: &ShareOptions) -> Result<Self, ShareError> {
        let dir = check_shared_dir(&opts.shared_dir)?;
        Self::prepare(opts, &dir)?.import()?.enable_file_handles()
    }

    /// Builds the filesystem object for `opts`; its root will be `root`, the shared directory as
    /// seen after entering the sandbox (`/` once pivoted or chrooted into it).
    pub fn prepare(opts: &ShareOptions, root: &Path) -> Result<PreparedShare, ShareError> {
        let cfg = Config {
            cache: opts.cache,
            xattr: opts.xattr,
            writeback: opts.writeback,
            readdirplus: opts.readdirplus,
            allow_direct_io: opts.allow_direct_io,
            announce_submounts: opts.announce_submounts,
            xattrmap: opts.xattrmap.clone(),
            posix_acl: opts.posix_acl,
            security_label: opts.security_label,
            readonly: opts.readonly,
            killpriv_v2: opts.killpriv_v2,
            allow_mmap: opts.allow_mmap,
            preserve_noatime: opts.preserve_noatime,
            posix_locks: opts.posix_locks,
            flock_locks: opts.flock_locks,
            inode_file_handles: opts.inode_file_handles,
            max_inodes: opts.max_inodes,
            max_bytes: opts.max_bytes,
            idmaps: opts.idmaps.clone(),
        };
        let fs = Passthrough::new(cfg, root).map_err(|source| ShareError::Open {
            path: PathBuf::from("/proc/self/fd"),
            source,
        })?;
        // The guest's kernel applies its caller's umask before sending a mode (the session
        // does not negotiate DONT_MASK); ours must not take more away.
        // SAFETY: umask has no failure mode and touches only the process's mask.
        unsafe { libc::umask(0) };
        Ok(PreparedShare {
            fs,
            root: root.to_owned(),
        })
    }

    /// Refuses descriptor-opening requests with EMFILE once the guest holds `limit` descriptors.
    pub fn with_fd_quota(mut self, limit: u64) -> Result<Self, ShareError> {
        let quota = FdQuota::new(limit).map_err(|source| ShareError::Open {
            path: PathBuf::from("(fd quota)"),
            source,
        })?;
        self.server.filesystem_mut().set_fd_quota(quota);
        Ok(self)
    }

    /// Puts `--inode-file-handles` in force once checked to work with the daemon's capabilities
    /// (call it after dropping them): `prefer` falls back to O_PATH descriptors with a
    /// warning, `mandatory` fails.
    pub fn enable_file_handles(mut self) -> Result<Self, ShareError> {
        self.server
            .filesystem_mut()
            .enable_file_handles()
            .map_err(ShareError::FileHandles)?;
        Ok(self)
    }
}

impl PreparedShare {
    /// Opens the root and makes the share ready to serve; with a quota, measures what the
    /// share holds (a walk of the tree).
    pub fn import(self) -> Result<Share, ShareError> {
        let open = |source| ShareError::Open {
            path: self.root.clone(),
            source,
        };
        self.fs.import().map_err(open)?;
        self.fs.measure_quota().map_err(open)?;
        Ok(Share {
            server: Server::new(self.fs, Limits::default()),
        })
    }
}

/// The pipeline's view of what the server did.
fn handled(served: Result<Served, ServeError>) -> Result<Handled, HandleError> {
    match served {
        Ok(served) => Ok(Handled {
            len: served.written,
            errno: served.errno,
        }),
        Err(e @ ServeError::NoHeader(_)) => Err(HandleError::Request(e.to_string())),
        Err(e @ ServeError::Reply { .. }) => Err(HandleError::Server(e.to_string())),
    }
}

impl FuseHandler for Share {
    fn handle(&self, chain: &Chain, header: &InHeader) -> Result<Handled, HandleError> {
        // The server reads the request and writes the reply by segment (read at pop time).
        handled(self.server.handle_with_header(
            chain.memory(),
            header,
            chain.readable(),
            chain.writable(),
        ))
    }

    fn defers(&self, opcode: u32) -> bool {
        match Opcode::from_u32(opcode) {
            Some(Opcode::Read | Opcode::Fsync) => true,
            Some(Opcode::Write) => self.server.filesystem().prepares_writes(),
            _ => false,
        }
    }

    fn start(&self, chain: &Chain, header: &InHeader) -> Result<Start, HandleError> {
        match self.server.start_with_header(
            chain.memory(),
            header,
            chain.readable(),
            chain.writable(),
        ) {
            Ok(Started::Deferred(d)) => Ok(Start::Io(d)),
            Ok(Started::Done(served)) => handled(Ok(served)).map(Start::Done),
            Err(e) => handled(Err(e)).map(Start::Done),
        }
    }

    fn finish(
        &self,
        chain: &Chain,
        reply: &PendingReply,
        result: Result<usize, i32>,
    ) -> Result<Handled, HandleError> {
        handled(self.server.finish(
            chain.memory(),
            chain.writable(),
            reply,
            result.map_err(Errno),
        ))
    }

    fn set_queue_size(&self, descriptors: u16) {
        // The next INIT offers as many pages per READ and WRITE as a chain of the queue holds.
        self.server.set_queue_size(descriptors);
    }

    fn end_session(&self) {
        // What DESTROY runs: every inode and handle is dropped (their fds closed) and the root
        // is imported again at the next INIT.
        self.server.end_session();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> ShareOptions {
        ShareOptions {
            shared_dir: dir.to_owned(),
            cache: CacheMode::Auto,
            xattr: false,
            writeback: false,
            readdirplus: true,
            allow_direct_io: false,
            announce_submounts: false,
            xattrmap: None,
            posix_acl: Negotiation::Never,
            security_label: Negotiation::Never,
            readonly: false,
            killpriv_v2: false,
            allow_mmap: false,
            preserve_noatime: false,
            posix_locks: true,
            flock_locks: true,
            inode_file_handles: InodeFileHandles::Never,
            max_inodes: None,
            max_bytes: None,
            idmaps: IdMaps::default(),
        }
    }

    #[test]
    fn cache_modes_parse_and_reject_unknown_values() {
        assert_eq!("never".parse::<CacheMode>().unwrap(), CacheMode::Never);
        assert_eq!("none".parse::<CacheMode>().unwrap(), CacheMode::Never);
        assert_eq!(
            "metadata".parse::<CacheMode>().unwrap(),
            CacheMode::Metadata
        );
        let err = "sometimes".parse::<CacheMode>().unwrap_err();
        assert!(err.contains("never, auto, always, metadata"), "{err}");
        assert_eq!(CacheMode::Auto.timeout(), Duration::from_secs(1));
        assert_eq!(CacheMode::Never.timeout(), Duration::ZERO);
    }

    #[test]
    fn missing_dir_and_regular_file_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert!(matches!(
            Share::open(&opts(&missing)),
            Err(ShareError::Access { .. })
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            Share::open(&opts(&file)),
            Err(ShareError::NotADirectory(_))
        ));
        assert!(Share::open(&opts(tmp.path())).is_ok());
    }
}
