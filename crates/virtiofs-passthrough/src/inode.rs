//! The inode store: every node the guest knows, by node id and by host identity.
//!
//! A node is a host file, keyed by (st_dev, st_ino, mount id), held one of two ways
//! ([`Storage`]): an O_PATH descriptor, or (`--inode-file-handles`) a file handle and the
//! descriptor of its mount. A descriptor keeps the host inode alive, so its number cannot be
//! reused while the guest knows it. A handle keeps nothing alive: once the file is deleted its
//! inode number may come back for a new file, so a lookup that finds the key of a handle node
//! compares the handles too, and a node whose handle differs (its file is gone) is never handed
//! out again; operations on it fail with ESTALE. Node ids come from a counter and are never
//! reused within a daemon's life, so the generation is always 0. The guest's lookup count is
//! `refs`; at 0 (FORGET) the node and what it holds go.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use virtiofs_fuse::abi::ROOT_ID;
use virtiofs_fuse::Errno;

use crate::file_handle::{FileHandle, MountFd};

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

/// How a node holds on to its host file.
#[derive(Debug)]
pub enum Storage {
    /// An O_PATH descriptor (`--inode-file-handles=never`, or a filesystem without handles).
    Fd(OwnedFd),
    /// A file handle, opened on demand (boxed: a never-mode node stays small).
    Handle(Box<HandleNode>),
}

/// A file handle and the descriptor of the mount to open it on.
#[derive(Debug)]
pub struct HandleNode {
    /// The file's handle.
    pub handle: FileHandle,
    /// Its mount's descriptor, shared by the mount's nodes.
    pub mount: Arc<MountFd>,
}

/// An O_PATH descriptor of a node for one operation: the node's own (borrowed) or one opened
/// from its handle, closed when this is dropped. It is not `Deref<Target = BorrowedFd>`: a
/// `BorrowedFd` is `Copy`, and a copy could outlive an opened descriptor; `as_fd()` ties the
/// borrow to this guard.
#[derive(Debug)]
pub enum NodeFd<'a> {
    /// The node's own descriptor.
    Borrowed(BorrowedFd<'a>),
    /// Opened from the node's handle for this operation.
    Opened(OwnedFd),
}

impl AsFd for NodeFd<'_> {
    #[inline]
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            NodeFd::Borrowed(fd) => *fd,
            NodeFd::Opened(fd) => fd.as_fd(),
        }
    }
}

impl AsRawFd for NodeFd<'_> {
    #[inline]
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A node the guest knows.
///
/// In declaration order (`repr(C)`): what a LOOKUP of a known node reads and counts comes
/// first, next to the `Arc`'s counts, so that it is one cache line (a LOOKUP at depth meets
/// each node cold).
#[derive(Debug)]
#[repr(C)]
pub struct Inode {
    /// The guest's lookup count.
    refs: AtomicU64,
    /// The node id the guest uses.
    pub id: u64,
    /// The file type (`S_IFMT` bits of the mode); it never changes.
    pub kind: u32,
    /// Its filesystem makes file handles and they are in use: nodes made under it are handle
    /// nodes and hold no descriptor (the root is an O_PATH node either way).
    pub handles: bool,
    /// The host file.
    pub storage: Storage,
    /// The host identity.
    pub key: InodeKey,
}

/// What a LOOKUP reply needs of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRef {
    /// The node id the guest uses.
    pub id: u64,
    /// The file type (`S_IFMT` bits of the mode).
    pub kind: u32,
}

impl NodeRef {
    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
}

impl From<&Inode> for NodeRef {
    fn from(inode: &Inode) -> Self {
        Self {
            id: inode.id,
            kind: inode.kind,
        }
    }
}

impl Inode {
    /// An O_PATH descriptor of the file for one operation: the node's own, borrowed, or one
    /// opened from its handle (ESTALE when the file is gone).
    #[inline]
    pub fn fd(&self) -> io::Result<NodeFd<'_>> {
        match &self.storage {
            Storage::Fd(fd) => Ok(NodeFd::Borrowed(fd.as_fd())),
            Storage::Handle(h) => h.handle.open(&h.mount, libc::O_PATH).map(NodeFd::Opened),
        }
    }

    /// The mount descriptor of a handle node.
    pub fn mount(&self) -> Option<&Arc<MountFd>> {
        match &self.storage {
            Storage::Fd(_) => None,
            Storage::Handle(h) => Some(&h.mount),
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }

    /// Whether it holds a descriptor (counts against the guest's fd quota).
    #[cfg(test)]
    pub fn holds_fd(&self) -> bool {
        matches!(self.storage, Storage::Fd(_))
    }
}

/// Whether `existing` may be handed out for a lookup that found `storage` under its key: a
/// handle node only if the handles match (else its file is gone and the inode number reused).
fn same_file(existing: &Inode, storage: &Storage) -> bool {
    match (&existing.storage, storage) {
        (Storage::Handle(a), Storage::Handle(b)) => a.handle == b.handle,
        // A descriptor keeps its inode alive: the key alone tells.
        (Storage::Fd(_), _) => true,
        // A handle node's file cannot be told from the new one without a handle of the new one
        // (its mount gave handles, so this does not happen): not handed out, in case it is stale.
        (Storage::Handle(_), Storage::Fd(_)) => false,
    }
}

/// The maps' hasher: foldhash, seeded per process. SipHash (std's default) cost a LOOKUP
/// more than the map's memory traffic; the keys are host inode numbers and our own counter,
/// which the guest cannot choose.
pub(crate) type FastHash = foldhash::fast::RandomState;

#[derive(Default)]
struct Maps {
    by_id: HashMap<u64, Arc<Inode>, FastHash>,
    /// The node a lookup of a host file finds (a stale handle node is in `by_id` only).
    by_key: HashMap<InodeKey, Arc<Inode>, FastHash>,
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

    /// The id of the node of host file `key`, if the guest knows it.
    pub fn id_of(&self, key: &InodeKey) -> Option<u64> {
        let maps = self.maps.read().expect("inode store lock");
        maps.by_key.get(key).map(|inode| inode.id)
    }

    /// Counts one more lookup of the node of host file `key` if the guest knows it and the
    /// node holds a descriptor: that keeps the host inode, and so its number, alive, so the
    /// key alone tells it is the same file. `None` for an unknown file, and for a handle node
    /// (only its handle tells; see [`Self::insert_or_ref`]).
    ///
    /// The node's id and type are all it returns: no reference to the node (an `Arc` count up
    /// and down again) is taken.
    pub fn ref_known(&self, key: &InodeKey) -> Option<NodeRef> {
        let maps = self.maps.read().expect("inode store lock");
        let inode = maps.by_key.get(key)?;
        if !matches!(inode.storage, Storage::Fd(_)) {
            return None;
        }
        inode.refs.fetch_add(1, Ordering::Relaxed);
        Some(NodeRef::from(&**inode))
    }

    /// Whether the guest knows the node of host file `key` (for a hint; it may change).
    pub fn knows(&self, key: &InodeKey) -> bool {
        let maps = self.maps.read().expect("inode store lock");
        maps.by_key.contains_key(key)
    }

    /// Counts one lookup of the file `storage` holds (described by `stx`): the existing node
    /// when the host file is known (and `storage` is dropped), a new node otherwise.
    pub fn insert_or_ref(&self, storage: Storage, stx: &libc::statx) -> Arc<Inode> {
        let key = InodeKey::of(stx);
        {
            // A lookup of a known file only bumps its count; the read lock keeps FORGET, which
            // removes nodes under the write lock, from dropping it meanwhile.
            let maps = self.maps.read().expect("inode store lock");
            if let Some(inode) = maps.by_key.get(&key) {
                if same_file(inode, &storage) {
                    inode.refs.fetch_add(1, Ordering::Relaxed);
                    return Arc::clone(inode);
                }
            }
        }
        let mut maps = self.maps.write().expect("inode store lock");
        if let Some(inode) = maps.by_key.get(&key) {
            if same_file(inode, &storage) {
                inode.refs.fetch_add(1, Ordering::Relaxed);
                return Arc::clone(inode);
            }
            // A stale node (its file deleted, the inode number reused): it stays for the guest's
            // FORGET but no lookup finds it again.
            tracing::debug!("node {} is stale: its inode number was reused", inode.id);
        }
        maps.next_id = maps.next_id.max(ROOT_ID) + 1;
        let id = maps.next_id;
        let inode = Arc::new(Inode {
            id,
            key,
            kind: u32::from(stx.stx_mode) & libc::S_IFMT,
            handles: matches!(storage, Storage::Handle(_)),
            storage,
            refs: AtomicU64::new(1),
        });
        maps.by_key.insert(key, Arc::clone(&inode));
        maps.by_id.insert(id, Arc::clone(&inode));
        inode
    }

    /// Makes `fd` the root (node 1), dropping every other node: a new session. `handles`: see
    /// [`Inode::handles`].
    pub fn reset(&self, fd: OwnedFd, stx: &libc::statx, handles: bool) {
        let key = InodeKey::of(stx);
        let root = Arc::new(Inode {
            id: ROOT_ID,
            storage: Storage::Fd(fd),
            key,
            kind: libc::S_IFDIR,
            handles,
            refs: AtomicU64::new(1),
        });
        let mut maps = self.maps.write().expect("inode store lock");
        maps.by_id.clear();
        maps.by_key.clear();
        maps.by_key.insert(key, Arc::clone(&root));
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
            if maps.by_key.get(&key).is_some_and(|inode| inode.id == id) {
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
    use crate::file_handle::MountFds;
    use crate::sys;

    fn open(path: &std::path::Path) -> (OwnedFd, libc::statx) {
        let f = std::fs::File::open(path).unwrap();
        let fd = OwnedFd::from(f);
        let stx = sys::fstatx(fd.as_fd(), sys::STATX_WANTED).unwrap();
        (fd, stx)
    }

    #[test]
    fn what_a_lookup_of_a_known_node_touches_fits_in_a_cache_line() {
        // An `Arc`'s allocation: the strong and weak counts, then the node. A LOOKUP of a
        // known node reads the storage's kind, counts `refs` and replies `id` and `kind`.
        let counts = 2 * std::mem::size_of::<usize>();
        let end = counts + std::mem::offset_of!(Inode, storage) + std::mem::size_of::<Storage>();
        assert!(end <= 64, "{end} bytes");
        assert!(std::mem::offset_of!(Inode, refs) < std::mem::offset_of!(Inode, storage));
        assert!(std::mem::offset_of!(Inode, key) > std::mem::offset_of!(Inode, storage));
    }

    /// A store whose root is a new directory holding a file `f`.
    fn store_with_file_f() -> (tempfile::TempDir, InodeStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = InodeStore::default();
        let (fd, stx) = open(tmp.path());
        store.reset(fd, &stx, false);
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        (tmp, store)
    }

    #[test]
    fn same_file_same_node_until_forgotten_then_a_new_id() {
        let (tmp, store) = store_with_file_f();
        let (fd, stx) = open(&tmp.path().join("f"));
        let a = store.insert_or_ref(Storage::Fd(fd), &stx);
        let (fd, stx) = open(&tmp.path().join("f"));
        let b = store.insert_or_ref(Storage::Fd(fd), &stx);
        assert_eq!(a.id, b.id, "one host file is one node");
        assert_ne!(a.id, ROOT_ID);
        assert!(a.holds_fd() && !a.handles);
        store.forget(a.id, 1);
        assert!(store.get(a.id).is_ok(), "one lookup is left");
        store.forget(a.id, 1);
        assert_eq!(store.get(a.id).unwrap_err(), Errno(libc::EBADF));
        let (fd, stx) = open(&tmp.path().join("f"));
        let c = store.insert_or_ref(Storage::Fd(fd), &stx);
        assert!(c.id > a.id, "ids are never reused");
        store.forget(ROOT_ID, 100);
        assert!(store.get(ROOT_ID).is_ok(), "the root is never forgotten");
        store.clear();
        assert!(store.is_empty());
    }

    #[test]
    fn a_known_descriptor_node_is_counted_by_its_key_alone() {
        let (tmp, store) = store_with_file_f();
        let (fd, stx) = open(&tmp.path().join("f"));
        let key = InodeKey::of(&stx);
        assert!(!store.knows(&key));
        assert!(store.ref_known(&key).is_none(), "unknown");
        let a = store.insert_or_ref(Storage::Fd(fd), &stx);
        assert!(store.knows(&key));
        assert_eq!(store.ref_known(&key).unwrap().id, a.id);
        store.forget(a.id, 1);
        assert!(store.get(a.id).is_ok(), "ref_known counted a lookup");
        store.forget(a.id, 1);
        assert!(store.get(a.id).is_err());
        assert!(!store.knows(&key));
    }

    #[test]
    fn a_key_with_another_handle_is_a_new_node_and_the_stale_one_is_not_found_again() {
        let tmp = tempfile::tempdir().unwrap();
        let store = InodeStore::default();
        let mounts = MountFds::default();
        let mount = mounts.insert(MountFd::new(
            1,
            OwnedFd::from(std::fs::File::open("/").unwrap()),
        ));
        let (_, stx) = open(tmp.path());
        let node = |bytes: &[u8]| {
            Storage::Handle(Box::new(HandleNode {
                handle: FileHandle::from_parts(1, bytes),
                mount: Arc::clone(&mount),
            }))
        };
        let old = store.insert_or_ref(node(b"gen-1"), &stx);
        assert!(old.handles && !old.holds_fd());
        assert!(
            store.ref_known(&InodeKey::of(&stx)).is_none(),
            "a handle node is not told by its key alone"
        );
        assert_eq!(store.insert_or_ref(node(b"gen-1"), &stx).id, old.id);
        // Same (dev, ino, mount): the inode number came back for another file.
        let new = store.insert_or_ref(node(b"gen-2"), &stx);
        assert_ne!(new.id, old.id, "a stale node is never handed out");
        assert_eq!(store.insert_or_ref(node(b"gen-2"), &stx).id, new.id);
        // The guest forgets the stale node: the key stays with the new one.
        store.forget(old.id, 2);
        assert_eq!(store.get(old.id).unwrap_err(), Errno(libc::EBADF));
        assert_eq!(store.insert_or_ref(node(b"gen-2"), &stx).id, new.id);
    }
}
