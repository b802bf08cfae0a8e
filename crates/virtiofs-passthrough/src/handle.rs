//! The handle table: open files and directories the guest refers to by `fh`.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use virtiofs_fuse::Errno;

use crate::dir_stream::{DirStream, Retained};
use crate::inode::FastHash;

/// An open file or directory.
#[derive(Debug)]
pub struct Handle {
    /// The node it was opened from: a handle used with another node id is refused.
    pub nodeid: u64,
    /// The open descriptor.
    pub fd: OwnedFd,
    /// The open(2) flags it was opened with (as the host got them).
    pub flags: i32,
    /// For directories: the listing in progress (records read and not yet sent).
    pub dir: Mutex<DirStream>,
}

impl Handle {
    /// The descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// All handles.
#[derive(Default)]
pub struct HandleTable {
    map: RwLock<HashMap<u64, Arc<Handle>, FastHash>>,
    next: AtomicU64,
    /// What the directory streams of all handles keep between requests.
    retained: Arc<Retained>,
}

impl HandleTable {
    /// Adds `fd` (opened from `nodeid` with `flags`); returns its handle number.
    pub fn insert(&self, nodeid: u64, fd: OwnedFd, flags: i32) -> u64 {
        // Handle numbers are never reused, so a stale `fh` can never name a newer file.
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = Arc::new(Handle {
            nodeid,
            fd,
            flags,
            dir: Mutex::new(DirStream::new(self.retained.clone())),
        });
        self.map
            .write()
            .expect("handle table lock")
            .insert(fh, handle);
        fh
    }

    /// The handle `fh` of `nodeid`: EBADF when there is none or it belongs to another node.
    pub fn get(&self, nodeid: u64, fh: u64) -> Result<Arc<Handle>, Errno> {
        match self.map.read().expect("handle table lock").get(&fh) {
            Some(h) if h.nodeid == nodeid => Ok(Arc::clone(h)),
            _ => Err(Errno(libc::EBADF)),
        }
    }

    /// Removes `fh` of `nodeid` (RELEASE); its descriptor closes when the last request using it
    /// ends.
    pub fn remove(&self, nodeid: u64, fh: u64) -> Result<Arc<Handle>, Errno> {
        let mut map = self.map.write().expect("handle table lock");
        match map.get(&fh) {
            Some(h) if h.nodeid == nodeid => Ok(map.remove(&fh).expect("present")),
            _ => Err(Errno(libc::EBADF)),
        }
    }

    /// Drops every handle (the session ended); returns them (their descriptors close when the
    /// last reference goes).
    pub fn clear(&self) -> Vec<Arc<Handle>> {
        let mut map = self.map.write().expect("handle table lock");
        map.drain().map(|(_, h)| h).collect()
    }

    /// Whether the guest holds a handle of `nodeid` (a scan: for the quota's rare questions).
    pub fn open_on(&self, nodeid: u64) -> bool {
        let map = self.map.read().expect("handle table lock");
        map.values().any(|h| h.nodeid == nodeid)
    }

    /// How many handles are open.
    pub fn len(&self) -> usize {
        self.map.read().expect("handle table lock").len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_belong_to_their_node_and_are_never_reused() {
        let t = HandleTable::default();
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let a = t.insert(7, fd, libc::O_RDONLY);
        assert!(t.get(7, a).is_ok());
        assert_eq!(t.get(8, a).unwrap_err(), Errno(libc::EBADF));
        assert_eq!(t.remove(8, a).unwrap_err(), Errno(libc::EBADF));
        t.remove(7, a).unwrap();
        assert_eq!(t.get(7, a).unwrap_err(), Errno(libc::EBADF));
        let fd = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let b = t.insert(7, fd, libc::O_RDONLY);
        assert_ne!(a, b);
        t.clear();
        assert!(t.is_empty());
    }
}
