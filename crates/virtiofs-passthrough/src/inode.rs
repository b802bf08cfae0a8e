//! The inode store: every node the guest knows, by node id and by host identity.
//!
//! A node is an O_PATH descriptor of a host file, keyed by (st_dev, st_ino, mount id). Holding
//! the descriptor keeps the host inode alive, so its number cannot be reused while the guest
//! knows it: a lookup that finds the key finds the same file, never a stale entry of a deleted
//! one. Node ids come from a counter and are never reused within a daemon's life, so the
//! generation is always 0. The guest's lookup count is `refs`; at 0 (FORGET) the node and its
//! descriptor go.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use virtiofs_fuse::abi::ROOT_ID;
use virtiofs_fuse::Errno;

/// A host file's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InodeKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// The mount id (`STATX_MNT_ID`): one file seen through two bind mounts is two nodes.
    pub mnt_id: u64,
}

impl InodeKey {
    /// The key of what `statx` described (asked with `STATX_MNT_ID`).
    pub fn of(stx: &libc::statx) -> InodeKey {
        InodeKey {
            dev: libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
            ino: stx.stx_ino,
            mnt_id: stx.stx_mnt_id,
        }
    }
}

/// A node the guest knows.
#[derive(Debug)]
pub struct Inode {
    /// The node id the guest uses.
    pub id: u64,
    /// O_PATH descriptor of the host file.
    pub fd: OwnedFd,
    /// The host identity.
    pub key: InodeKey,
    /// The file type (`S_IFMT` bits of the mode); it never changes.
    pub kind: u32,
    /// The guest's lookup count.
    refs: AtomicU64,
}

impl Inode {
    /// The O_PATH descriptor.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

#[derive(Default)]
struct Maps {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<InodeKey, u64>,
    next_id: u64,
}

/// All nodes.
#[derive(Default)]
pub struct InodeStore {
    maps: RwLock<Maps>,
}

impl InodeStore {
    /// The node with id `id`: EBADF for an id never given out or already forgotten (what the C
    /// and Rust virtiofsd answer).
    pub fn get(&self, id: u64) -> Result<Arc<Inode>, Errno> {
        self.maps
            .read()
            .expect("inode store lock")
            .by_id
            .get(&id)
            .cloned()
            .ok_or(Errno(libc::EBADF))
    }

    /// Counts one lookup of the file `fd` (described by `stx`): the existing node when the host
    /// file is known (and `fd` is closed), a new node otherwise.
    pub fn insert_or_ref(&self, fd: OwnedFd, stx: &libc::statx) -> Arc<Inode> {
        let key = InodeKey::of(stx);
        {
            // A lookup of a known file only bumps its count; the read lock keeps FORGET, which
            // removes nodes under the write lock, from dropping it meanwhile.
            let maps = self.maps.read().expect("inode store lock");
            if let Some(inode) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
                inode.refs.fetch_add(1, Ordering::Relaxed);
                return Arc::clone(inode);
            }
        }
        let mut maps = self.maps.write().expect("inode store lock");
        if let Some(inode) = maps.by_key.get(&key).and_then(|id| maps.by_id.get(id)) {
            inode.refs.fetch_add(1, Ordering::Relaxed);
            return Arc::clone(inode);
        }
        maps.next_id = maps.next_id.max(ROOT_ID) + 1;
        let id = maps.next_id;
        let inode = Arc::new(Inode {
            id,
            fd,
            key,
            kind: u32::from(stx.stx_mode) & libc::S_IFMT,
            refs: AtomicU64::new(1),
        });
        maps.by_key.insert(key, id);
        maps.by_id.insert(id, Arc::clone(&inode));
        inode
    }

    /// Makes `fd` the root (node 1), dropping every other node: a new session.
    pub fn reset(&self, fd: OwnedFd, stx: &libc::statx) {
        let key = InodeKey::of(stx);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            fd,
            key,
            kind: libc::S_IFDIR,
            refs: AtomicU64::new(1),
        });
        let mut maps = self.maps.write().expect("inode store lock");
        maps.by_id.clear();
        maps.by_key.clear();
        maps.by_key.insert(key, ROOT_ID);
        maps.by_id.insert(ROOT_ID, root);
        maps.next_id = maps.next_id.max(ROOT_ID);
    }

    /// Drops every node (the session ended); node ids stay unused, so an id of the old session
    /// never names a node of the next one.
    pub fn clear(&self) {
        let mut maps = self.maps.write().expect("inode store lock");
        maps.by_id.clear();
        maps.by_key.clear();
    }

    /// FORGET: `n` fewer lookups of `id`; the node goes at 0. The root stays whatever the guest
    /// says (the kernel never forgets it, a hostile guest must not make it vanish).
    pub fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID {
            return;
        }
        let mut maps = self.maps.write().expect("inode store lock");
        let Some(inode) = maps.by_id.get(&id) else {
            return;
        };
        let left = inode.refs.load(Ordering::Relaxed).saturating_sub(n);
        inode.refs.store(left, Ordering::Relaxed);
        if left == 0 {
            let key = inode.key;
            maps.by_id.remove(&id);
            if maps.by_key.get(&key) == Some(&id) {
                maps.by_key.remove(&key);
            }
        }
    }

    /// One directory node of each mount the guest has seen (for SYNCFS).
    pub fn one_dir_per_mount(&self) -> Vec<Arc<Inode>> {
        let maps = self.maps.read().expect("inode store lock");
        let mut seen = std::collections::HashSet::new();
        maps.by_id
            .values()
            .filter(|i| i.is_dir() && seen.insert(i.key.mnt_id))
            .cloned()
            .collect()
    }

    /// How many nodes there are (the root included).
    pub fn len(&self) -> usize {
        self.maps.read().expect("inode store lock").by_id.len()
    }

    /// Whether there is no node at all (before the first session).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;

    fn open(path: &std::path::Path) -> (OwnedFd, libc::statx) {
        let f = std::fs::File::open(path).unwrap();
        let fd = OwnedFd::from(f);
        let stx = sys::fstatx(fd.as_fd(), sys::STATX_WANTED).unwrap();
        (fd, stx)
    }

    #[test]
    fn same_file_same_node_until_forgotten_then_a_new_id() {
        let tmp = tempfile::tempdir().unwrap();
        let store = InodeStore::default();
        let (fd, stx) = open(tmp.path());
        store.reset(fd, &stx);
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let (fd, stx) = open(&tmp.path().join("f"));
        let a = store.insert_or_ref(fd, &stx);
        let (fd, stx) = open(&tmp.path().join("f"));
        let b = store.insert_or_ref(fd, &stx);
        assert_eq!(a.id, b.id, "one host file is one node");
        assert_ne!(a.id, ROOT_ID);
        store.forget(a.id, 1);
        assert!(store.get(a.id).is_ok(), "one lookup is left");
        store.forget(a.id, 1);
        assert_eq!(store.get(a.id).unwrap_err(), Errno(libc::EBADF));
        let (fd, stx) = open(&tmp.path().join("f"));
        let c = store.insert_or_ref(fd, &stx);
        assert!(c.id > a.id, "ids are never reused");
        store.forget(ROOT_ID, 100);
        assert!(store.get(ROOT_ID).is_ok(), "the root is never forgotten");
        store.clear();
        assert!(store.is_empty());
    }
}
