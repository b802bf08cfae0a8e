//! `--readonly`: the share as a read-only mount would be. Every request that would change it is
//! refused with the errno a local filesystem mounted read-only gives (the Linux rules of
//! `mnt_want_write` in fs/namei.c and fs/open.c), checked here, before any system call that
//! could modify anything. In the namespace sandbox the share is also mounted read-only
//! (`virtiofs-sandbox`), so the kernel refuses whatever got past these checks.
//!
//! - a name that would be made (MKNOD, MKDIR, SYMLINK, LINK, CREATE, RENAME's target): EEXIST
//!   when it exists (the kernel looks before it asks for write access), else EROFS;
//! - UNLINK, RMDIR, RENAME, SETATTR, SETXATTR, REMOVEXATTR, WRITE, TMPFILE, the SET ioctls:
//!   EROFS;
//! - OPEN for writing or with O_TRUNC: EROFS; CREATE of an existing file without O_EXCL opens it
//!   (for reading);
//! - ACCESS with W_OK of a file, directory or symlink: EROFS (devices, FIFOs and sockets stay
//!   writable on a read-only mount: the check goes to the host).
//!
//! FALLOCATE, COPY_FILE_RANGE and write locks need a handle open for writing, which never
//! exists: the host answers EBADF, as it would. FUSE's STATFS has no flags field, so the guest
//! cannot learn the share is read-only from statfs: mount it `-o ro` in the guest to have its
//! kernel refuse writes before they are sent.

use std::ffi::CStr;
use std::os::fd::AsFd;

use virtiofs_fuse::abi::CreateIn;
use virtiofs_fuse::{Entry, Errno, Name, Opened};

use crate::passthrough::{new_name, Passthrough, Result};
use crate::sys;

const EROFS: Errno = Errno(libc::EROFS);

impl Passthrough {
    /// EROFS for a request that modifies the share, when it is read-only.
    pub(crate) fn writable(&self) -> Result<()> {
        if self.cfg.readonly {
            Err(EROFS)
        } else {
            Ok(())
        }
    }

    /// For a request that makes `name` in `parent`: EEXIST when the name exists, else EROFS,
    /// when the share is read-only.
    pub(crate) fn may_make(&self, parent: u64, name: &Name) -> Result<()> {
        if !self.cfg.readonly {
            return Ok(());
        }
        if self.name_exists(parent, name.as_cstr())? {
            Err(Errno(libc::EEXIST))
        } else {
            Err(EROFS)
        }
    }

    /// Whether `name` exists in `parent` (not following a symlink).
    pub(crate) fn name_exists(&self, parent: u64, name: &CStr) -> Result<bool> {
        let dir = self.inode(parent)?;
        let fd = dir.fd()?;
        match sys::statx(fd.as_fd(), name, 0, libc::STATX_TYPE) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// OPEN `flags` on a read-only share: only reading, never O_TRUNC.
    pub(crate) fn may_open(&self, flags: u32) -> Result<()> {
        let flags = flags as i32;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & libc::O_TRUNC != 0
            || flags & libc::O_TMPFILE == libc::O_TMPFILE;
        if self.cfg.readonly && writes {
            Err(EROFS)
        } else {
            Ok(())
        }
    }

    /// CREATE on a read-only share: an existing file opens (for reading) unless O_EXCL (EEXIST);
    /// a new name is EROFS.
    pub(crate) fn create_readonly(
        &self,
        parent: u64,
        name: &Name,
        arg: &CreateIn,
    ) -> Result<(Entry, Opened)> {
        if !self.name_exists(parent, new_name(name)?)? {
            return Err(EROFS);
        }
        if arg.flags as i32 & libc::O_EXCL != 0 {
            return Err(Errno(libc::EEXIST));
        }
        let flags = arg.flags & !(libc::O_CREAT as u32);
        self.may_open(flags)?;
        let entry = self.do_lookup(parent, name)?;
        // Read-only: may_open refused O_TRUNC, so nothing is cleared (uid 0).
        match self.do_open(0, entry.nodeid, flags, 0) {
            Ok(opened) => Ok((entry, opened)),
            Err(e) => {
                self.inodes.forget(entry.nodeid, 1); // the guest never learns of this lookup
                Err(e)
            }
        }
    }

    /// ACCESS with W_OK of a file, directory or symlink on a read-only share.
    pub(crate) fn may_access(&self, nodeid: u64, mask: u32) -> Result<()> {
        if !self.cfg.readonly || mask & libc::W_OK as u32 == 0 {
            return Ok(());
        }
        match self.inode(nodeid)?.kind {
            libc::S_IFREG | libc::S_IFDIR | libc::S_IFLNK => Err(EROFS),
            _ => Ok(()),
        }
    }
}
