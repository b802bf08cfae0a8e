//! How a node holds its host file (`--inode-file-handles`): the startup check that puts the
//! mode in force, and the choice per looked-up file between its O_PATH descriptor and its file
//! handle with its mount's shared descriptor (`file_handle.rs`), per filesystem with `prefer`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use virtiofs_fuse::Errno;

use crate::file_handle::{self, FileHandle, MountFd};
use crate::inode::{HandleNode, Inode, Storage};
use crate::passthrough::{Passthrough, Result};
use crate::sys;
use crate::InodeFileHandles;

impl Passthrough {
    /// Puts `--inode-file-handles` in force once it is checked to work here, with the
    /// capabilities the daemon serves with (call it after dropping them, with the root
    /// imported): `prefer` falls back to O_PATH descriptors with a warning when
    /// open_by_handle_at is not permitted, `mandatory` fails with the reason.
    pub fn enable_file_handles(&mut self) -> std::result::Result<(), String> {
        let wanted = self.cfg.inode_file_handles;
        if wanted == InodeFileHandles::Never {
            return Ok(());
        }
        let root = self
            .inodes
            .get(virtiofs_fuse::abi::ROOT_ID)
            .map_err(|_| "file handles: the shared directory is not open".to_string())?;
        let fd = root.fd().map_err(|e| format!("file handles: {e}"))?;
        match file_handle::probe(fd.as_fd(), root.key.mnt_id) {
            Ok(_) => tracing::info!("{}: the guest's inodes are file handles", wanted.option()),
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                if wanted == InodeFileHandles::Mandatory {
                    return Err(format!(
                        "{}: the shared directory's filesystem does not support file handles",
                        wanted.option()
                    ));
                }
                // Submounts may have them: each lookup there finds out.
                tracing::info!(
                    "{}: the shared directory's filesystem does not support file handles; \
                     O_PATH descriptors for its files",
                    wanted.option()
                );
            }
            Err(e) => {
                let why = match e.raw_os_error() {
                    Some(libc::EPERM) => format!("{e} (needs CAP_DAC_READ_SEARCH)"),
                    _ => e.to_string(),
                };
                if wanted == InodeFileHandles::Mandatory {
                    return Err(format!(
                        "{}: cannot open file handles: {why}",
                        wanted.option()
                    ));
                }
                tracing::warn!(
                    "{}: cannot open file handles ({why}); using O_PATH file descriptors",
                    wanted.option()
                );
                return Ok(());
            }
        }
        drop(fd);
        drop(root);
        self.file_handles = wanted;
        // The root again, now knowing whether its filesystem gives handles.
        self.import().map_err(|e| format!("file handles: {e}"))
    }

    /// How a node found in `parent` (whose descriptor is `dir`) holds its file `fd`: the
    /// descriptor itself (`never`, or `prefer` on a filesystem without handles), else its handle
    /// (and `fd` is closed). With `mandatory`, a file without a handle is refused (EOPNOTSUPP).
    ///
    /// This is the only place handles are made, and `fd` is always a file the daemon just
    /// reached by a lookup inside the share (or made there): open_by_handle_at, which opens
    /// whatever file of the filesystem a handle names, only ever gets these.
    pub(crate) fn storage(
        &self,
        fd: OwnedFd,
        stx: &libc::statx,
        parent: &Inode,
        dir: BorrowedFd<'_>,
    ) -> Result<Storage> {
        if !self.handles_on() {
            return Ok(Storage::Fd(fd));
        }
        match self.handle_node(fd.as_fd(), stx, parent, dir)? {
            Some(node) => Ok(Storage::Handle(Box::new(node))),
            None if self.file_handles == InodeFileHandles::Prefer => {
                self.check_fd_quota()?; // this one keeps its descriptor
                Ok(Storage::Fd(fd))
            }
            None => Err(Errno(libc::EOPNOTSUPP)),
        }
    }

    /// The handle of `fd`'s file and its mount's descriptor; `None` when that mount cannot
    /// serve handles (said once per mount).
    fn handle_node(
        &self,
        fd: BorrowedFd<'_>,
        stx: &libc::statx,
        parent: &Inode,
        dir: BorrowedFd<'_>,
    ) -> Result<Option<HandleNode>> {
        let mnt_id = stx.stx_mnt_id;
        let Some(handle) = FileHandle::of(fd)? else {
            self.no_handles(mnt_id, "its filesystem does not support file handles");
            return Ok(None);
        };
        // Nearly always the parent's mount, whose descriptor the parent holds.
        if let Some(mount) = parent.mount().filter(|m| m.mnt_id() == mnt_id) {
            return Ok(Some(HandleNode {
                handle,
                mount: Arc::clone(mount),
            }));
        }
        if let Some(mount) = self.mounts.get(mnt_id) {
            return Ok(Some(HandleNode { handle, mount }));
        }
        // A mount no node uses yet: a read-only descriptor of a directory on it (the parent,
        // when it is on it; else the file, a mount point), kept while its nodes live.
        self.check_fd_quota()?;
        let opened = if parent.key.mnt_id == mnt_id {
            sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
        } else if u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFDIR {
            sys::openat(fd, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
        } else {
            // A file mounted on a file: only a directory is opened here.
            Err(std::io::Error::from_raw_os_error(libc::ENOTDIR))
        };
        let mount = match opened {
            Ok(mount_fd) => MountFd::new(mnt_id, mount_fd),
            Err(e) => {
                self.no_handles(mnt_id, &format!("no descriptor to open them with: {e}"));
                return Ok(None);
            }
        };
        // open_by_handle_at works on this mount (it may not, e.g. a filesystem that makes handles
        // it cannot decode).
        if let Err(e) = handle.open(&mount, libc::O_PATH) {
            self.no_handles(mnt_id, &format!("its file handles cannot be opened: {e}"));
            return Ok(None);
        }
        Ok(Some(HandleNode {
            handle,
            mount: self.mounts.insert(mount),
        }))
    }

    /// Says once per mount why its files are not handle nodes.
    fn no_handles(&self, mnt_id: u64, why: &str) {
        if self.mounts.first_report(mnt_id) {
            match self.file_handles {
                InodeFileHandles::Mandatory => tracing::warn!(
                    "mount {mnt_id} in the share: {why}; its files are refused \
                     (--inode-file-handles=mandatory)"
                ),
                _ => tracing::info!(
                    "mount {mnt_id} in the share: {why}; O_PATH descriptors for its files"
                ),
            }
        }
    }
}
