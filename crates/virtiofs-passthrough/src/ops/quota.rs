//! The share's quota in the operations (`--max-inodes`, `--max-bytes`; the accounting is in
//! `quota.rs`). Without a quota every hook here is one `None` check.
//!
//! - CREATE, MKNOD, MKDIR, SYMLINK, TMPFILE take an inode first (EDQUOT at the limit) and give
//!   it back if the call fails; LINK makes no inode. CREATE of a name that exists opens it
//!   even at the limit.
//! - WRITE, COPY_FILE_RANGE, FALLOCATE reserve the whole blocks of their range; a WRITE or copy
//!   that does not fit is cut to the prefix that does (a short write, as a local filesystem
//!   gives at its quota), and only when nothing fits is it EDQUOT. A range the file already has
//!   allocated (overwriting in place) needs no reservation. FALLOCATE is all or nothing.
//! - SETATTR size and OPEN/CREATE with O_TRUNC are measured before and after: growing a file
//!   by truncation allocates nothing where the host makes it sparse; where it does allocate
//!   past the limit, the old size is restored and the answer is EDQUOT.
//! - UNLINK, RMDIR and RENAME over a file give back its inode and bytes when its last link
//!   goes; a file the guest still holds open is given back when its last handle is released
//!   (its blocks are still taken until then), as is an O_TMPFILE never linked.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use virtiofs_fuse::abi::{FallocateIn, Kstatfs};
use virtiofs_fuse::Errno;

use crate::handle::Handle;
use crate::inode::InodeKey;
use crate::passthrough::{Passthrough, Result};
use crate::quota::{fitting, span, Growth, InodeCharge, Quota, EDQUOT};
use crate::sys;

/// What a name to be removed is, looked at before the removal.
pub(crate) struct Removed {
    kind: u32,
    nlink: u32,
    bytes: u64,
    key: InodeKey,
}

/// The inode taken for a request that made one stays counted.
pub(crate) fn made(charge: Option<InodeCharge<'_>>) {
    if let Some(c) = charge {
        c.keep();
    }
}

const STATX_GONE: u32 = libc::STATX_TYPE
    | libc::STATX_NLINK
    | libc::STATX_BLOCKS
    | libc::STATX_INO
    | libc::STATX_MNT_ID;

impl Passthrough {
    /// The quota, when the byte limit is set (writes are only measured then).
    pub(crate) fn byte_quota(&self) -> Option<&Quota> {
        self.quota.as_ref().filter(|q| q.limits().1.is_some())
    }

    /// An inode for a request that makes `name` in `dir`: EDQUOT at the limit, or EEXIST when
    /// the name is taken (the kernel looks the name up before it allocates). `None` without a
    /// quota.
    pub(crate) fn take_inode(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> Result<Option<InodeCharge<'_>>> {
        let Some(q) = &self.quota else {
            return Ok(None);
        };
        match q.take_inode() {
            Ok(c) => Ok(Some(c)),
            Err(e) => match sys::statx(dir, name, libc::AT_SYMLINK_NOFOLLOW, libc::STATX_TYPE) {
                Ok(_) => Err(Errno(libc::EEXIST)),
                Err(_) => Err(e),
            },
        }
    }

    /// Whether `[offset, offset + len)` of `fd` (of `size` bytes) is allocated already, so
    /// writing it allocates nothing (SEEK_HOLE: where the host cannot tell, all is data).
    fn allocated(fd: BorrowedFd<'_>, offset: u64, len: u64, size: u64) -> bool {
        let Some(end) = offset.checked_add(len).filter(|e| *e <= size) else {
            return false;
        };
        let Ok(at) = i64::try_from(offset) else {
            return false;
        };
        matches!(sys::lseek(fd, at, libc::SEEK_HOLE), Ok(hole) if hole >= end)
    }

    /// How many bytes from `offset` lie in an allocated block already (the partly written last
    /// block a file is appended to): writing them allocates nothing.
    fn allocated_head(fd: BorrowedFd<'_>, offset: u64, len: u64, size: u64, blksize: u64) -> u64 {
        let block = offset - offset % blksize;
        if offset % blksize == 0 || block >= size {
            return 0;
        }
        let Ok(at) = i64::try_from(block) else {
            return 0;
        };
        match sys::lseek(fd, at, libc::SEEK_HOLE) {
            Ok(hole) if hole > block => len.min(blksize - offset % blksize),
            _ => 0,
        }
    }

    /// Room under the byte quota for writing `len` bytes at `offset` (at the end with
    /// `append`) of node `nodeid`'s open file `fd`: how many bytes may go (all, or a prefix),
    /// with the growth to count when done; EDQUOT when nothing fits.
    fn room_for<'a>(
        q: &'a Quota,
        nodeid: u64,
        fd: BorrowedFd<'a>,
        offset: u64,
        len: u64,
        append: bool,
    ) -> Result<(Growth<'a>, u64)> {
        let mut g = q.measure_file(nodeid, fd)?;
        let offset = if append { g.size } else { offset };
        if Self::allocated(fd, offset, len, g.size) {
            return Ok((g, len));
        }
        // Whole blocks from the first one not allocated yet.
        let head = Self::allocated_head(fd, offset, len, g.size, g.blksize);
        let (from, rest) = (offset.saturating_add(head), len - head);
        if g.reserve(span(from, rest, g.blksize)) {
            return Ok((g, len));
        }
        let n = head + fitting(from, rest, q.room(), g.blksize);
        if n > 0 && g.reserve(span(from, n - head, g.blksize)) {
            tracing::debug!("byte quota: write of {len} bytes cut to {n}");
            return Ok((g, n));
        }
        tracing::debug!("byte quota reached: EDQUOT");
        Err(EDQUOT)
    }

    /// WRITE: how many of `len` bytes at `offset` may be written to `h`, with the growth to
    /// count (`None` without a byte quota).
    pub(crate) fn write_room<'a>(
        &'a self,
        h: &'a Handle,
        offset: u64,
        len: u64,
    ) -> Result<(Option<Growth<'a>>, u64)> {
        let Some(q) = self.byte_quota() else {
            return Ok((None, len));
        };
        let append = h.flags & libc::O_APPEND != 0;
        let (g, n) = Self::room_for(q, h.nodeid, h.fd(), offset, len, append)?;
        Ok((Some(g), n))
    }

    /// COPY_FILE_RANGE: how many of `len` bytes may be copied from `src` at `off_in` into `dst`
    /// at `off_out`.
    pub(crate) fn copy_room<'a>(
        &'a self,
        src: &Handle,
        off_in: u64,
        dst: &'a Handle,
        off_out: u64,
        len: u64,
    ) -> Result<(Option<Growth<'a>>, u64)> {
        let Some(q) = self.byte_quota() else {
            return Ok((None, len));
        };
        // The copy stops at the source's end: only that much can land.
        let size = sys::fstatx(src.fd(), libc::STATX_SIZE)?.stx_size;
        let len = len.min(size.saturating_sub(off_in));
        let (g, n) = Self::room_for(q, dst.nodeid, dst.fd(), off_out, len, false)?;
        Ok((Some(g), n))
    }

    /// FALLOCATE under the byte quota: the whole range reserved unless it only frees or moves
    /// blocks, or is allocated already.
    pub(crate) fn fallocate_room<'a>(
        &'a self,
        h: &'a Handle,
        arg: &FallocateIn,
    ) -> Result<Option<Growth<'a>>> {
        let Some(q) = self.byte_quota() else {
            return Ok(None);
        };
        let frees = (libc::FALLOC_FL_PUNCH_HOLE
            | libc::FALLOC_FL_COLLAPSE_RANGE
            | libc::FALLOC_FL_INSERT_RANGE) as u32;
        let mut g = q.measure_file(h.nodeid, h.fd())?;
        let want = if arg.mode & frees != 0 {
            0
        } else {
            span(arg.offset, arg.length, g.blksize)
        };
        if g.reserve(want) || Self::allocated(h.fd(), arg.offset, arg.length, g.size) {
            Ok(Some(g))
        } else {
            tracing::debug!(
                "byte quota reached: FALLOCATE of {} bytes EDQUOT",
                arg.length
            );
            Err(EDQUOT)
        }
    }

    /// SETATTR size: truncates `fd` (node `nodeid`) to `size`, counting what that frees or
    /// allocates; a growth the quota cannot take is undone (EDQUOT).
    pub(crate) fn truncate(&self, nodeid: u64, fd: BorrowedFd<'_>, size: u64) -> Result<()> {
        let Some(q) = self.byte_quota() else {
            return Ok(sys::ftruncate(fd, size)?);
        };
        let g = q.measure_file(nodeid, fd)?;
        sys::ftruncate(fd, size)?;
        if size > g.size && g.over_limit() {
            let _ = sys::ftruncate(fd, g.size);
            tracing::debug!("byte quota: truncation to {size} allocated past it; undone, EDQUOT");
            return Err(EDQUOT);
        }
        Ok(())
    }

    /// Whether an OPEN with `flags` is measured (O_TRUNC under a byte quota).
    pub(crate) fn measures_open(&self, flags: i32) -> bool {
        flags & libc::O_TRUNC != 0 && self.byte_quota().is_some()
    }

    /// OPEN with O_TRUNC of node `nodeid` (whose O_PATH descriptor is `node`, given when
    /// [`Self::measures_open`]): measured, so what the truncation frees is given back when the
    /// returned growth drops.
    pub(crate) fn open_trunc<'a>(
        &'a self,
        nodeid: u64,
        node: Option<BorrowedFd<'a>>,
    ) -> Result<Option<Growth<'a>>> {
        match (self.byte_quota(), node) {
            (Some(q), Some(fd)) => Ok(Some(q.measure_file(nodeid, fd)?)),
            _ => Ok(None),
        }
    }

    /// CREATE's open under the inode quota: a name that exists is opened (even at the limit), a
    /// new one made with O_EXCL after taking an inode for it. Without a quota, one openat.
    pub(crate) fn create_file(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        flags: i32,
        mode: u32,
    ) -> Result<OwnedFd> {
        let Some(q) = &self.quota else {
            return Ok(sys::openat(dir, name, flags, mode)?);
        };
        // Twice at most: a name made by someone else between the two calls is then opened.
        for _ in 0..2 {
            if flags & libc::O_EXCL == 0 {
                // What O_TRUNC of an existing file frees, under a byte quota.
                let before = match self.measures_open(flags) {
                    false => None,
                    true => sys::statx(dir, name, libc::AT_SYMLINK_NOFOLLOW, libc::STATX_BLOCKS)
                        .ok()
                        .map(|s| s.stx_blocks * 512),
                };
                match sys::openat(dir, name, flags & !libc::O_CREAT, mode) {
                    Ok(fd) => {
                        if let Some(before) = before {
                            let after = sys::fstatx(fd.as_fd(), libc::STATX_BLOCKS)?.stx_blocks;
                            q.free(0, before.saturating_sub(after * 512));
                        }
                        return Ok(fd);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let charge = self.take_inode(dir, name)?;
            match sys::openat(dir, name, flags | libc::O_EXCL, mode) {
                Ok(fd) => {
                    made(charge);
                    return Ok(fd);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Errno(libc::EEXIST))
    }

    /// Before UNLINK, RMDIR or RENAME over `name` in `dir`: what it is (`None` without a
    /// quota, or when there is nothing).
    pub(crate) fn removing(&self, dir: BorrowedFd<'_>, name: &CStr) -> Option<Removed> {
        self.quota.as_ref()?;
        let stx = sys::statx(dir, name, libc::AT_SYMLINK_NOFOLLOW, STATX_GONE).ok()?;
        Some(Removed {
            kind: u32::from(stx.stx_mode) & libc::S_IFMT,
            nlink: stx.stx_nlink,
            bytes: stx.stx_blocks * 512,
            key: InodeKey::of(&stx),
        })
    }

    /// RENAME from `old` in `olddir` over `new` in `newdir`: the file replaced, if any (not
    /// with RENAME_EXCHANGE, nor when both names are links of one file).
    pub(crate) fn replacing(
        &self,
        olddir: BorrowedFd<'_>,
        old: &CStr,
        newdir: BorrowedFd<'_>,
        new: &CStr,
        flags: u32,
    ) -> Option<Removed> {
        if flags & libc::RENAME_EXCHANGE != 0 {
            return None;
        }
        let target = self.removing(newdir, new)?;
        let source = self.removing(olddir, old)?;
        (source.key != target.key).then_some(target)
    }

    /// After a successful removal of what [`Self::removing`] saw: its last link gone, its inode
    /// and bytes are given back, unless the guest holds it open (then at its last RELEASE).
    pub(crate) fn removed(&self, gone: Option<Removed>) {
        let (Some(q), Some(gone)) = (&self.quota, gone) else {
            return;
        };
        if gone.kind != libc::S_IFDIR && gone.nlink > 1 {
            return;
        }
        if gone.kind != libc::S_IFREG {
            q.free(1, 0);
            return;
        }
        let open = self
            .inodes
            .id_of(&gone.key)
            .is_some_and(|id| self.handles.open_on(id));
        if !open {
            q.free(1, gone.bytes);
        }
    }

    /// RELEASE of `h` (already out of the table): a file with no link left and no other guest
    /// handle goes from the share now, and from the count.
    pub(crate) fn released(&self, h: &Handle) {
        let Some(q) = &self.quota else {
            return;
        };
        let mask = libc::STATX_TYPE | libc::STATX_NLINK | libc::STATX_BLOCKS;
        let Ok(stx) = sys::fstatx(h.fd(), mask) else {
            return;
        };
        let regular = u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFREG;
        if regular && stx.stx_nlink == 0 && !self.handles.open_on(h.nodeid) {
            q.free(1, stx.stx_blocks * 512);
        }
    }

    /// The session ends and every handle with it: each unlinked file they held is released.
    pub(crate) fn release_all(&self) {
        if self.quota.is_none() {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        for h in self.handles.clear() {
            // Once per node: the table is empty now, so this is its last handle.
            if seen.insert(h.nodeid) {
                self.released(&h);
            }
        }
    }

    /// STATFS with a quota: its limits and what is left under them.
    pub(crate) fn statfs_quota(&self, st: &mut Kstatfs) {
        if let Some(q) = &self.quota {
            q.statfs(st);
        }
    }
}
