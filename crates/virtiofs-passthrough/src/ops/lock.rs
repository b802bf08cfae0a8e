//! Locks the host sees: GETLK, SETLK, SETLKW for POSIX record locks and for flock(2).
//!
//! POSIX locks belong to a process (the guest's lock owner), but the daemon is one host process,
//! so classic `F_SETLK` would merge every guest process into one owner. Instead each (node, lock
//! owner) gets its own open file description and takes open file description locks
//! (`F_OFD_*`), which conflict with each other exactly as the owners' locks should, and with
//! host processes' classic locks. close(2) in the guest drops an owner's locks: it arrives as
//! FLUSH with that owner, which closes the owner's description. flock(2) locks belong to an
//! open file description already: they are taken on the handle's descriptor.
//!
//! SETLKW never blocks a thread in the kernel: it tries the lock once and answers EAGAIN when
//! it is held, and the pipeline (`virtiofs-pipeline`'s `lock_wait`) runs it again later, holding
//! no worker meanwhile, and ends the wait with EINTR when the session, the ring or the daemon
//! ends.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use virtiofs_fuse::abi::{flags, FileLock, LkIn};
use virtiofs_fuse::Errno;

use crate::passthrough::{Passthrough, Result};
use crate::sys;

/// FUSE's "to the end of the file".
const OFFSET_MAX: u64 = i64::MAX as u64;

/// The open file descriptions that hold POSIX locks, one per (node, lock owner).
#[derive(Default)]
pub struct LockTable {
    owners: Mutex<HashMap<(u64, u64), Arc<OwnedFd>>>,
}

impl LockTable {
    /// Drops every owner's description, and so its locks.
    pub fn clear(&self) {
        self.owners.lock().expect("lock table").clear();
    }

    /// The guest process `owner` closed a descriptor of `nodeid`: its POSIX locks go.
    pub fn release_owner(&self, nodeid: u64, owner: u64) {
        self.owners
            .lock()
            .expect("lock table")
            .remove(&(nodeid, owner));
    }

    fn get(&self, nodeid: u64, owner: u64) -> Option<Arc<OwnedFd>> {
        self.owners
            .lock()
            .expect("lock table")
            .get(&(nodeid, owner))
            .cloned()
    }
}

/// The host `flock` of a FUSE lock (FUSE ranges are inclusive; OFFSET_MAX means to the end).
fn host_lock(lk: &FileLock) -> Result<libc::flock> {
    if lk.start > OFFSET_MAX || lk.end < lk.start {
        return Err(Errno(libc::EINVAL));
    }
    let len = if lk.end >= OFFSET_MAX {
        0
    } else {
        (lk.end - lk.start + 1) as i64
    };
    let typ = match lk.typ as i32 {
        libc::F_RDLCK | libc::F_WRLCK | libc::F_UNLCK => lk.typ as i16,
        _ => return Err(Errno(libc::EINVAL)),
    };
    Ok(libc::flock {
        l_type: typ,
        l_whence: libc::SEEK_SET as i16,
        l_start: lk.start as i64,
        l_len: len,
        l_pid: 0, // must be 0 for open file description locks
    })
}

/// The FUSE form of what F_OFD_GETLK reported.
fn fuse_lock(fl: &libc::flock) -> FileLock {
    let start = fl.l_start as u64;
    FileLock {
        start,
        end: if fl.l_len == 0 {
            OFFSET_MAX
        } else {
            start + fl.l_len as u64 - 1
        },
        typ: fl.l_type as u32,
        // -1 for an open file description lock: no process to name.
        pid: u32::try_from(fl.l_pid).unwrap_or(0),
    }
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
}

impl Passthrough {
    /// The open file description of (`nodeid`, `owner`), made at its first lock: read-write
    /// when the file allows it (so it can take both lock types), else as the handle was opened.
    fn owner_fd(&self, nodeid: u64, owner: u64, fh: u64) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = self.locks.get(nodeid, owner) {
            return Ok(fd);
        }
        let handle = self.handles.get(nodeid, fh)?;
        let inode = self.inode(nodeid)?;
        let fd = match self.reopen(&inode, libc::O_RDWR | libc::O_NONBLOCK) {
            Ok(fd) => fd,
            Err(_) => {
                let mode = handle.flags & libc::O_ACCMODE;
                self.reopen(&inode, mode | libc::O_NONBLOCK)?
            }
        };
        let mut owners = self.locks.owners.lock().expect("lock table");
        Ok(Arc::clone(
            owners
                .entry((nodeid, owner))
                .or_insert_with(|| Arc::new(fd)),
        ))
    }

    pub(crate) fn do_getlk(&self, nodeid: u64, arg: &LkIn) -> Result<FileLock> {
        if arg.lk_flags & flags::LK_FLOCK != 0 {
            return Err(Errno(libc::EINVAL)); // flock(2) has no "test"
        }
        let mut fl = host_lock(&arg.lk)?;
        let fd = self.owner_fd(nodeid, arg.owner, arg.fh)?;
        sys::fcntl_lock(fd.as_fd(), libc::F_OFD_GETLK, &mut fl)?;
        Ok(fuse_lock(&fl))
    }

    pub(crate) fn do_setlk(&self, nodeid: u64, arg: &LkIn) -> Result<()> {
        if arg.lk_flags & flags::LK_FLOCK != 0 {
            let handle = self.handles.get(nodeid, arg.fh)?;
            let op = match arg.lk.typ as i32 {
                libc::F_RDLCK => libc::LOCK_SH,
                libc::F_WRLCK => libc::LOCK_EX,
                libc::F_UNLCK => return Ok(sys::flock(handle.fd(), libc::LOCK_UN)?),
                _ => return Err(Errno(libc::EINVAL)),
            };
            return self.attempt(|| sys::flock(handle.fd(), op | libc::LOCK_NB));
        }
        let fl = host_lock(&arg.lk)?;
        if fl.l_type == libc::F_UNLCK as i16 && self.locks.get(nodeid, arg.owner).is_none() {
            return Ok(()); // this owner holds nothing here
        }
        let fd = self.owner_fd(nodeid, arg.owner, arg.fh)?;
        self.attempt(|| {
            let mut fl = fl;
            sys::fcntl_lock(fd.as_fd(), libc::F_OFD_SETLK, &mut fl)
        })
    }

    /// Runs `attempt` once. A conflict is EAGAIN for SETLK and SETLKW alike (for SETLKW the
    /// pipeline waits and asks again).
    fn attempt(&self, attempt: impl Fn() -> std::io::Result<()>) -> Result<()> {
        match attempt() {
            // flock(2) reports a conflict as EWOULDBLOCK (EAGAIN), fcntl as EAGAIN or EACCES.
            Err(e) if would_block(&e) => Err(Errno(libc::EAGAIN)),
            r => Ok(r?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuse_ranges_map_to_host_ranges_and_back() {
        let lk = FileLock {
            start: 10,
            end: 19,
            typ: libc::F_WRLCK as u32,
            pid: 0,
        };
        let fl = host_lock(&lk).unwrap();
        assert_eq!((fl.l_start, fl.l_len), (10, 10));
        assert_eq!(fuse_lock(&fl).end, 19);
        let to_end = FileLock {
            end: OFFSET_MAX,
            ..lk
        };
        let fl = host_lock(&to_end).unwrap();
        assert_eq!(fl.l_len, 0);
        assert_eq!(fuse_lock(&fl).end, OFFSET_MAX);
        let backwards = FileLock {
            start: 5,
            end: 4,
            ..lk
        };
        assert_eq!(host_lock(&backwards).unwrap_err(), Errno(libc::EINVAL));
        let bad_type = FileLock { typ: 77, ..lk };
        assert_eq!(host_lock(&bad_type).unwrap_err(), Errno(libc::EINVAL));
    }
}
