//! Attributes: GETATTR, SETATTR, STATX, READLINK, STATFS, ACCESS.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use virtiofs_fuse::abi::{fattr, Kstatfs, SetattrIn, Statx, StatxIn, SxTime};
use virtiofs_fuse::{AttrReply, Context, Errno, StatxReply};

use crate::inode::Storage;
use crate::passthrough::{attr_of, Passthrough, Result};
use crate::sys;

fn sx_time(t: &libc::statx_timestamp) -> SxTime {
    SxTime {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec,
        reserved: 0,
    }
}

/// FUSE's statx from the host's.
fn statx_of(stx: &libc::statx) -> Statx {
    Statx {
        mask: stx.stx_mask,
        blksize: stx.stx_blksize,
        attributes: stx.stx_attributes,
        nlink: stx.stx_nlink,
        uid: stx.stx_uid,
        gid: stx.stx_gid,
        mode: stx.stx_mode,
        ino: stx.stx_ino,
        size: stx.stx_size,
        blocks: stx.stx_blocks,
        attributes_mask: stx.stx_attributes_mask,
        atime: sx_time(&stx.stx_atime),
        btime: sx_time(&stx.stx_btime),
        ctime: sx_time(&stx.stx_ctime),
        mtime: sx_time(&stx.stx_mtime),
        rdev_major: stx.stx_rdev_major,
        rdev_minor: stx.stx_rdev_minor,
        dev_major: stx.stx_dev_major,
        dev_minor: stx.stx_dev_minor,
        ..Default::default()
    }
}

/// A SETATTR time: now, unchanged, or the given one.
fn time_spec(set: bool, now: bool, sec: u64, nsec: u32) -> libc::timespec {
    let (tv_sec, tv_nsec) = match (set, now) {
        (true, true) => (0, libc::UTIME_NOW),
        (true, false) => (sec as libc::time_t, i64::from(nsec)),
        (false, _) => (0, libc::UTIME_OMIT),
    };
    libc::timespec { tv_sec, tv_nsec }
}

impl Passthrough {
    /// GETATTR; `fh`, the guest's open file if it named one, spares a handle node the opening
    /// of its handle (an O_PATH node's own descriptor says the same: one inode).
    pub(crate) fn do_getattr(&self, nodeid: u64, fh: Option<u64>) -> Result<AttrReply> {
        let inode = self.inode(nodeid)?;
        if let (Storage::Handle(_), Some(fh)) = (&inode.storage, fh) {
            if let Ok(h) = self.handles.get(nodeid, fh) {
                return self.attr_reply(h.fd());
            }
        }
        self.attr_reply(inode.fd()?.as_fd())
    }

    fn attr_reply(&self, fd: BorrowedFd<'_>) -> Result<AttrReply> {
        let stx = sys::fstatx(fd, libc::STATX_BASIC_STATS)?;
        let mut attr = attr_of(&stx);
        self.guest_owner(&mut attr.uid, &mut attr.gid);
        Ok(AttrReply {
            attr,
            valid: self.timeout(),
        })
    }

    pub(crate) fn do_statx(&self, nodeid: u64, arg: &StatxIn) -> Result<StatxReply> {
        let inode = self.inode(nodeid)?;
        // Only the sync-type flags mean anything for a descriptor's own attributes.
        let flags = libc::AT_EMPTY_PATH | (arg.sx_flags as i32 & libc::AT_STATX_SYNC_TYPE);
        let mask = arg.sx_mask | libc::STATX_BASIC_STATS | libc::STATX_BTIME;
        let stx = sys::statx(inode.fd()?.as_fd(), sys::EMPTY, flags, mask)?;
        let mut statx = statx_of(&stx);
        self.guest_owner(&mut statx.uid, &mut statx.gid);
        Ok(StatxReply {
            statx,
            valid: self.timeout(),
        })
    }

    pub(crate) fn do_setattr(&self, nodeid: u64, arg: &SetattrIn) -> Result<AttrReply> {
        let inode = self.inode(nodeid)?;
        let handle = if arg.valid & fattr::FH != 0 {
            Some(self.handles.get(nodeid, arg.fh)?)
        } else {
            None
        };
        let fd = inode.fd()?;
        let proc_name = sys::fd_name(fd.as_raw_fd());
        let is_link = inode.kind == libc::S_IFLNK;
        // The owner as the host gets it (-1 leaves an id alone), before anything changes: a
        // forbidden guest id is EPERM with the file untouched.
        let (mut uid, mut gid) = (u32::MAX, u32::MAX);
        if arg.valid & fattr::UID != 0 {
            uid = match &self.idmaps {
                Some(m) => self.guest_id(&m.uid, arg.uid, "uid")?,
                None => arg.uid,
            };
        }
        if arg.valid & fattr::GID != 0 {
            gid = match &self.idmaps {
                Some(m) => self.guest_id(&m.gid, arg.gid, "gid")?,
                None => arg.gid,
            };
        }

        if arg.valid & fattr::MODE != 0 {
            if is_link {
                return Err(Errno(libc::EOPNOTSUPP)); // Linux has no lchmod
            }
            // Through /proc/self/fd: the magic link leads to the node itself, not a symlink.
            sys::fchmodat(self.proc_fd(), proc_name.as_cstr(), arg.mode & 0o7777)?;
        }
        if arg.valid & (fattr::UID | fattr::GID) != 0 {
            sys::fchownat(
                fd.as_fd(),
                sys::EMPTY,
                uid,
                gid,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        if arg.valid & fattr::SIZE != 0 {
            self.kill_suidgid(arg.valid & fattr::KILL_SUIDGID != 0, fd.as_fd())?;
            match &handle {
                Some(h) => self.truncate(nodeid, h.fd(), arg.size)?,
                None => {
                    let fd = self.reopen(&inode, libc::O_WRONLY | libc::O_NONBLOCK)?;
                    self.truncate(nodeid, fd.as_fd(), arg.size)?;
                }
            }
        }
        let times = fattr::ATIME | fattr::MTIME;
        if arg.valid & times != 0 {
            let spec = [
                time_spec(
                    arg.valid & fattr::ATIME != 0,
                    arg.valid & fattr::ATIME_NOW != 0,
                    arg.atime,
                    arg.atimensec,
                ),
                time_spec(
                    arg.valid & fattr::MTIME != 0,
                    arg.valid & fattr::MTIME_NOW != 0,
                    arg.mtime,
                    arg.mtimensec,
                ),
            ];
            if is_link {
                sys::utimensat(fd.as_fd(), sys::EMPTY, &spec, libc::AT_EMPTY_PATH)?;
            } else {
                sys::utimensat(self.proc_fd(), proc_name.as_cstr(), &spec, 0)?;
            }
        }
        self.attr_reply(fd.as_fd())
    }

    pub(crate) fn do_readlink(&self, nodeid: u64) -> Result<Vec<u8>> {
        let inode = self.inode(nodeid)?;
        if inode.kind != libc::S_IFLNK {
            return Err(Errno(libc::EINVAL));
        }
        Ok(sys::readlinkat(inode.fd()?.as_fd(), sys::EMPTY)?)
    }

    pub(crate) fn do_statfs(&self, nodeid: u64) -> Result<Kstatfs> {
        let inode = self.inode(nodeid)?;
        let st = sys::fstatfs(inode.fd()?.as_fd())?;
        let mut reply = Kstatfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namelen as u32,
            frsize: st.f_frsize as u32,
            ..Default::default()
        };
        self.statfs_quota(&mut reply);
        Ok(reply)
    }

    pub(crate) fn do_access(&self, ctx: &Context, nodeid: u64, mask: u32) -> Result<()> {
        let inode = self.inode(nodeid)?;
        if inode.kind == libc::S_IFLNK {
            // access(2) follows a symlink; the daemon never does. Existence is all it tells.
            return if mask == libc::F_OK as u32 {
                Ok(())
            } else {
                Err(Errno(libc::EACCES))
            };
        }
        let fd = inode.fd()?;
        let name = sys::fd_name(fd.as_raw_fd());
        let _caller = self.as_caller(ctx)?;
        // SAFETY: NUL-terminated name relative to a directory descriptor we hold.
        let r = unsafe {
            libc::faccessat(
                self.proc_fd().as_raw_fd(),
                name.as_cstr().as_ptr(),
                mask as i32,
                libc::AT_EACCESS,
            )
        };
        if r < 0 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }
}
