//! Open files: OPEN, CREATE, TMPFILE, READ, WRITE, FLUSH, RELEASE, FSYNC, FALLOCATE, LSEEK,
//! COPY_FILE_RANGE, SYNCFS.
//!
//! READ and WRITE go straight between the file and guest memory: the guest's slices become the
//! iovecs of `preadv2` / `pwritev2` (one call up to `IOV_MAX` iovecs), with no buffer in between.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use smallvec::SmallVec;
use virtiofs_fuse::abi::{
    flags as fuse_flags, fopen, CopyFileRangeIn, CreateIn, FallocateIn, ReadIn, ReleaseIn, WriteIn,
};
use virtiofs_fuse::{Context, Entry, Errno, GuestSlice, Name, Opened, SecCtx};

use crate::inode::{Inode, NodeRef};
use crate::ops::quota::made;
use crate::passthrough::{new_name, Passthrough, Result};
use crate::quota::Quota;
use crate::sys;
use crate::CacheMode;

/// The iovecs of `slices`, at most `limit` bytes in all.
pub(crate) fn iovecs(slices: &[GuestSlice<'_>], limit: usize) -> SmallVec<[libc::iovec; 16]> {
    let mut left = limit;
    let mut iov = SmallVec::new();
    for s in slices {
        if left == 0 {
            break;
        }
        let len = s.len().min(left);
        left -= len;
        iov.push(libc::iovec {
            // The slice stays borrowed for the call that uses the iovec; guest memory without a
            // dirty bitmap needs no guard beyond that borrow.
            iov_base: s.ptr_guard_mut().as_ptr().cast(),
            iov_len: len,
        });
    }
    iov
}

impl Passthrough {
    /// FOPEN_* flags for a file (or, with `dir`, a directory) under the cache policy.
    pub(crate) fn open_reply_flags(&self, dir: bool) -> u32 {
        match (self.cfg.cache, dir) {
            (CacheMode::Never, false) | (CacheMode::Metadata, false) => fopen::DIRECT_IO,
            (CacheMode::Metadata, true) | (CacheMode::Always, true) => {
                fopen::CACHE_DIR | fopen::KEEP_CACHE
            }
            (CacheMode::Always, false) => fopen::KEEP_CACHE,
            _ => 0,
        }
    }

    pub(crate) fn do_open(
        &self,
        uid: u32,
        nodeid: u64,
        flags: u32,
        open_flags: u32,
    ) -> Result<Opened> {
        self.check_fd_quota()?;
        let inode = self.inode(nodeid)?;
        let flags = self.open_flags(flags);
        // Under a byte quota, what O_TRUNC frees is measured on the node's O_PATH descriptor.
        let node = self.measures_open(flags).then(|| inode.fd()).transpose()?;
        let _trunc = self.open_trunc(nodeid, node.as_ref().map(AsFd::as_fd))?;
        let fd = self.reopen(&inode, flags)?;
        if self.kills_on_open(uid, flags, open_flags) {
            self.clear_suidgid(fd.as_fd())?;
        }
        Ok(Opened {
            fh: self.handles.insert(nodeid, fd, flags),
            open_flags: self.open_reply_flags(inode.is_dir()),
        })
    }

    /// The entry for a file just made in `dir` (whose descriptor is `dir_fd`) and opened as
    /// `fd` (its node counts one lookup).
    fn entry_of_open(&self, fd: &OwnedFd, dir: &Inode, dir_fd: BorrowedFd<'_>) -> Result<Entry> {
        let name = sys::fd_name(fd.as_raw_fd());
        let path = sys::openat(self.proc_fd(), name.as_cstr(), libc::O_PATH, 0)?;
        let stx = sys::fstatx(path.as_fd(), sys::STATX_WANTED)?;
        let storage = self.storage(path, &stx, dir, dir_fd)?;
        let inode = self.inodes.insert_or_ref(storage, &stx);
        Ok(self.entry(NodeRef::from(&*inode), &stx, dir.key.mnt_id))
    }

    pub(crate) fn do_create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        arg: &CreateIn,
        secctx: Option<&SecCtx>,
    ) -> Result<(Entry, Opened)> {
        self.check_fd_quota()?;
        let dir = self.inode(parent)?;
        let name = new_name(name)?;
        // O_NOFOLLOW: creating over a symlink opens nothing (ELOOP), never its target.
        let flags = (self.open_flags(arg.flags) | libc::O_CREAT | libc::O_NOFOLLOW)
            & !(libc::O_PATH | libc::O_DIRECTORY);
        let dir_fd = dir.fd()?;
        let open = |flags| -> Result<_> {
            let _caller = self.as_caller(ctx)?;
            self.with_guest_umask(arg.umask, || {
                self.create_file(dir_fd.as_fd(), name, flags, arg.mode & 0o7777)
            })
        };
        let fd = match secctx {
            None => open(flags)?,
            // A label goes only on a file this request makes: O_EXCL says whether it did. A
            // file that exists (made on the host since the guest looked) is opened as it is,
            // unless the guest asked for O_EXCL itself.
            Some(_) => match open(flags | libc::O_EXCL) {
                Ok(fd) => {
                    if let Err(e) =
                        self.label_new(secctx, fd.as_fd(), Some((dir_fd.as_fd(), name, 0)))
                    {
                        // The file is gone again: so is the inode the quota counted for it.
                        if let Some(q) = &self.quota {
                            q.free(1, 0);
                        }
                        return Err(e);
                    }
                    fd
                }
                Err(Errno(libc::EEXIST)) if flags & libc::O_EXCL == 0 => open(flags)?,
                Err(e) => return Err(e),
            },
        };
        if self.kills_on_open(ctx.uid, flags, arg.open_flags) {
            self.clear_suidgid(fd.as_fd())?;
        }
        let entry = self.entry_of_open(&fd, &dir, dir_fd.as_fd())?;
        let fh = self.handles.insert(entry.nodeid, fd, flags);
        Ok((
            entry,
            Opened {
                fh,
                open_flags: self.open_reply_flags(false),
            },
        ))
    }

    pub(crate) fn do_tmpfile(
        &self,
        ctx: &Context,
        parent: u64,
        arg: &CreateIn,
        secctx: Option<&SecCtx>,
    ) -> Result<(Entry, Opened)> {
        self.check_fd_quota()?;
        let dir = self.inode(parent)?;
        let mut flags = self.open_flags(arg.flags) & !(libc::O_CREAT | libc::O_PATH);
        if flags & libc::O_ACCMODE == libc::O_RDONLY {
            flags |= libc::O_RDWR; // O_TMPFILE needs write access
        }
        let dir_fd = dir.fd()?;
        // An unnamed file: no name to find taken.
        let charge = self.quota.as_ref().map(Quota::take_inode).transpose()?;
        let fd = {
            let _caller = self.as_caller(ctx)?;
            self.with_guest_umask(arg.umask, || {
                Ok(sys::openat(
                    dir_fd.as_fd(),
                    c".",
                    flags | libc::O_TMPFILE,
                    arg.mode & 0o7777,
                )?)
            })?
        };
        // Unnamed: on failure the file goes with its descriptor (and the charge is given back).
        self.label_new(secctx, fd.as_fd(), None)?;
        made(charge);
        let entry = self.entry_of_open(&fd, &dir, dir_fd.as_fd())?;
        let fh = self.handles.insert(entry.nodeid, fd, flags);
        Ok((
            entry,
            Opened {
                fh,
                open_flags: self.open_reply_flags(false),
            },
        ))
    }

    pub(crate) fn do_read(
        &self,
        nodeid: u64,
        arg: &ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> Result<usize> {
        let h = self.handles.get(nodeid, arg.fh)?;
        let iov = iovecs(dst, arg.size as usize);
        if iov.is_empty() {
            return Ok(0);
        }
        Ok(sys::preadv_all(h.fd(), &iov, arg.offset)?)
    }

    pub(crate) fn do_write(
        &self,
        nodeid: u64,
        arg: &WriteIn,
        src: &[GuestSlice<'_>],
    ) -> Result<usize> {
        let h = self.handles.get(nodeid, arg.fh)?;
        // With a byte quota, a write that does not fit is cut short (`ops/quota.rs`).
        let (_growth, size) = self.write_room(&h, arg.offset, u64::from(arg.size))?;
        let iov = iovecs(src, size as usize);
        if iov.is_empty() {
            return Ok(0);
        }
        self.kill_suidgid(
            arg.write_flags & fuse_flags::WRITE_KILL_SUIDGID != 0,
            h.fd(),
        )?;
        Ok(sys::pwritev_all(h.fd(), &iov, arg.offset)?)
    }

    pub(crate) fn do_flush(&self, nodeid: u64, fh: u64, lock_owner: u64) -> Result<()> {
        self.handles.get(nodeid, fh)?;
        // close(2) of any descriptor drops the process's POSIX locks on the file: the guest
        // sends that close as FLUSH with the process's lock owner.
        self.locks.release_owner(nodeid, lock_owner);
        Ok(())
    }

    pub(crate) fn do_release(&self, nodeid: u64, arg: &ReleaseIn) -> Result<()> {
        let h = self.handles.remove(nodeid, arg.fh)?;
        self.released(&h);
        if arg.release_flags & virtiofs_fuse::abi::flags::RELEASE_FLUSH != 0 {
            self.locks.release_owner(nodeid, arg.lock_owner);
        }
        // The handle's flock goes with its descriptor (closed when no request uses it any more).
        Ok(())
    }

    pub(crate) fn do_fsync(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        let h = self.handles.get(nodeid, fh)?;
        Ok(sys::fsync(h.fd(), datasync)?)
    }

    pub(crate) fn do_fallocate(&self, nodeid: u64, arg: &FallocateIn) -> Result<()> {
        let h = self.handles.get(nodeid, arg.fh)?;
        let _growth = self.fallocate_room(&h, arg)?;
        Ok(sys::fallocate(h.fd(), arg.mode, arg.offset, arg.length)?)
    }

    pub(crate) fn do_lseek(&self, nodeid: u64, fh: u64, offset: u64, whence: u32) -> Result<u64> {
        let h = self.handles.get(nodeid, fh)?;
        let offset = i64::try_from(offset).map_err(|_| Errno(libc::EINVAL))?;
        // The descriptor's own position is never used for I/O (READ and WRITE carry offsets),
        // so moving it here harms nothing.
        Ok(sys::lseek(h.fd(), offset, whence as i32)?)
    }

    pub(crate) fn do_copy_file_range(&self, nodeid: u64, arg: &CopyFileRangeIn) -> Result<u64> {
        let src = self.handles.get(nodeid, arg.fh_in)?;
        let dst = self.handles.get(arg.nodeid_out, arg.fh_out)?;
        let flags = u32::try_from(arg.flags).map_err(|_| Errno(libc::EINVAL))?;
        let (_growth, len) = self.copy_room(&src, arg.off_in, &dst, arg.off_out, arg.len)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let n = sys::copy_file_range(src.fd(), arg.off_in, dst.fd(), arg.off_out, len, flags)?;
        Ok(n as u64)
    }

    pub(crate) fn do_syncfs(&self, nodeid: u64) -> Result<()> {
        // Every filesystem the share spans: the node's, then one directory of each mount the
        // guest has seen. syncfs needs a real descriptor, not an O_PATH one.
        let mut dirs = vec![self.inode(nodeid)?];
        dirs.extend(self.inodes.one_dir_per_mount());
        let mut first = true;
        for dir in dirs {
            let fd = self.reopen(&dir, libc::O_RDONLY | libc::O_NONBLOCK)?;
            match sys::syncfs(fd.as_fd()) {
                Err(e) if first => return Err(e.into()),
                Err(e) => tracing::debug!("syncfs of a submount: {e}"),
                Ok(()) => {}
            }
            first = false;
        }
        Ok(())
    }
}
