//! The vhost-user listening socket: created safely, removed only if still ours.

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Why the socket cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// A live daemon already listens there.
    #[error("socket {0} is in use by another process (a daemon is listening on it)")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way; we never delete it.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// bind(2) or the checks before it failed.
    #[error("cannot create socket {path}: {source}")]
    Create {
        /// The socket path.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// `--socket-group`: the group is unknown or the socket cannot be given to it.
    #[error("--socket-group {group}: {why}")]
    Group {
        /// The group name.
        group: String,
        /// What is wrong.
        why: String,
    },
    /// The fd given with `--fd` is not a listening socket.
    #[error("--fd {fd}: {why}")]
    BadFd {
        /// The descriptor.
        fd: RawFd,
        /// What is wrong with it.
        why: String,
    },
}

/// A listening socket; the path we created is removed on drop if it still is our socket.
pub struct ListenSocket {
    listener: UnixListener,
    created: Option<(PathBuf, u64, u64)>,
}

impl ListenSocket {
    /// Creates a socket at `path`. A stale socket file (nobody listening) is replaced; a live one
    /// or a non-socket file is an error. Liveness is read from /proc/net/unix rather than by
    /// connecting, because connecting would make a live one-shot daemon take us for its frontend.
    pub fn bind(path: &Path) -> Result<Self, SocketError> {
        let create = |source| SocketError::Create {
            path: path.to_owned(),
            source,
        };
        match fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(SocketError::NotASocket(path.to_owned()))
            }
            Ok(_) => {
                if is_listening(path).map_err(create)? {
                    return Err(SocketError::InUse(path.to_owned()));
                }
                tracing::info!("removing stale socket {}", path.display());
                fs::remove_file(path).map_err(create)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(create(e)),
        }
        // If another daemon bound the path since we looked, bind fails with EADDRINUSE: we never
        // remove a socket we did not find stale.
        let listener = UnixListener::bind(path).map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                SocketError::InUse(path.to_owned())
            } else {
                create(e)
            }
        })?;
        let meta = fs::symlink_metadata(path).map_err(create)?;
        Ok(Self {
            listener,
            created: Some((path.to_owned(), meta.dev(), meta.ino())),
        })
    }

    /// Takes over an inherited listening socket.
    pub fn from_fd(fd: RawFd) -> Result<Self, SocketError> {
        let bad = |why: String| SocketError::BadFd { fd, why };
        // SAFETY: fstat/getsockopt on a caller-provided descriptor number; they only fill the
        // local structs and report EBADF/ENOTSOCK for anything unsuitable.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } < 0 {
            return Err(bad(io::Error::last_os_error().to_string()));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(bad("not a socket".into()));
        }
        let int_opt = |opt| {
            let mut v: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: as above, into a local int.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&mut v as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            (rc == 0).then_some(v)
        };
        if int_opt(libc::SO_ACCEPTCONN).unwrap_or(0) == 0 {
            return Err(bad("not a listening socket".into()));
        }
        if int_opt(libc::SO_DOMAIN) != Some(libc::AF_UNIX)
            || int_opt(libc::SO_TYPE) != Some(libc::SOCK_STREAM)
        {
            return Err(bad("not a unix stream socket (vhost-user needs one)".into()));
        }
        // SAFETY: checked above to be a listening socket; the caller hands it to us.
        let listener = unsafe { UnixListener::from_raw_fd(fd) };
        Ok(Self {
            listener,
            created: None,
        })
    }

    /// `--socket-group`: gives the socket we created to `group` with read/write access for it
    /// (mode 0770, as the Rust virtiofsd creates it).
    pub fn set_group(&self, group: &str) -> Result<(), SocketError> {
        use std::os::unix::fs::PermissionsExt;
        let fail = |why: String| SocketError::Group {
            group: group.to_owned(),
            why,
        };
        let Some((path, _, _)) = &self.created else {
            return Err(fail("only for a socket created with --socket-path".into()));
        };
        let gid = match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => g.gid,
            Ok(None) => return Err(fail("no such group".into())),
            Err(e) => return Err(fail(format!("cannot look the group up: {e}"))),
        };
        nix::unistd::chown(path, None, Some(gid))
            .map_err(|e| fail(format!("cannot chown {}: {e}", path.display())))?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o770))
            .map_err(|e| fail(format!("cannot chmod {}: {e}", path.display())))
    }

    /// Gives up removing the socket path on drop: inside a sandbox the path is out of reach (and
    /// could name an unrelated file of the share).
    pub fn forget_path(&mut self) {
        self.created = None;
    }

    /// A second handle on the listening socket (for the vhost-user library).
    pub fn try_clone(&self) -> io::Result<UnixListener> {
        self.listener.try_clone()
    }
}

impl Drop for ListenSocket {
    fn drop(&mut self) {
        if let Some((path, dev, ino)) = &self.created {
            // Only if the file there is still the socket we created.
            if fs::symlink_metadata(path).is_ok_and(|m| m.dev() == *dev && m.ino() == *ino) {
                let _ = unlink(path);
            }
        }
    }
}

/// Removes a file with unlinkat(2): this runs under the seccomp filter (`--sandbox none`), whose
/// allowlist has unlinkat (the guest's UNLINK) but not unlink, which `fs::remove_file` calls.
fn unlink(path: &Path) -> nix::Result<()> {
    nix::unistd::unlinkat(None, path, nix::unistd::UnlinkatFlags::NoRemoveDir)
}

/// Whether some process listens on the unix socket at `path` (in this network namespace).
fn is_listening(path: &Path) -> io::Result<bool> {
    const SO_ACCEPTCON: u32 = 0x0001_0000;
    let abs = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let table = fs::read_to_string("/proc/net/unix")?;
    Ok(table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path — the path is the rest of the line and
        // may contain spaces.
        let mut rest = line;
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            rest = rest.trim_start();
            let (field, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            fields.push(field);
            rest = tail;
        }
        let listening = u32::from_str_radix(fields[3], 16).is_ok_and(|f| f & SO_ACCEPTCON != 0);
        let p = Path::new(rest);
        listening && !rest.is_empty() && (p == abs || p == path)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_socket_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let first = ListenSocket::bind(&path).unwrap();
        assert!(matches!(
            ListenSocket::bind(&path),
            Err(SocketError::InUse(_))
        ));
        assert!(path.exists(), "the live daemon's socket must survive");
        drop(first);
        assert!(!path.exists(), "our own socket is removed on exit");
    }

    #[test]
    fn live_socket_with_spaces_in_its_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("my vm socket");
        let _first = ListenSocket::bind(&path).unwrap();
        assert!(matches!(
            ListenSocket::bind(&path),
            Err(SocketError::InUse(_))
        ));
    }

    #[test]
    fn stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        drop(UnixListener::bind(&path).unwrap()); // leaves a socket file nobody listens on
        assert!(path.exists());
        let s = ListenSocket::bind(&path).unwrap();
        assert!(path.exists());
        drop(s);
    }

    #[test]
    fn regular_file_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        fs::write(&path, b"data").unwrap();
        assert!(matches!(
            ListenSocket::bind(&path),
            Err(SocketError::NotASocket(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"data");
    }

    #[test]
    fn unwritable_place_is_an_error() {
        let err = ListenSocket::bind(Path::new("/nonexistent-dir/s"))
            .err()
            .unwrap();
        assert!(matches!(err, SocketError::Create { .. }), "{err}");
    }

    #[test]
    fn replaced_socket_is_not_removed_by_the_old_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let ours = ListenSocket::bind(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let theirs = UnixListener::bind(&path).unwrap();
        drop(ours);
        assert!(
            path.exists(),
            "someone else's socket at our old path survives"
        );
        drop(theirs);
    }

    #[test]
    fn fd_must_be_a_listening_socket() {
        let file = tempfile::tempfile().unwrap();
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&file);
        assert!(matches!(
            ListenSocket::from_fd(fd),
            Err(SocketError::BadFd { .. })
        ));
        assert!(matches!(
            ListenSocket::from_fd(9999),
            Err(SocketError::BadFd { .. })
        ));
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&tcp);
        let err = ListenSocket::from_fd(fd).err().unwrap();
        assert!(err.to_string().contains("unix stream"), "{err}");
    }
}
