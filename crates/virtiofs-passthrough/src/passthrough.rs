//! The passthrough filesystem's state and the helpers every operation shares: finding nodes,
//! checking names, making entries (a node's O_PATH descriptor or file handle), reopening a node
//! for I/O.
//!
//! The operations themselves are in `ops/` by kind; `filesystem.rs` wires them to the
//! [`virtiofs_fuse::Filesystem`] trait.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtiofs_fuse::abi::{init_flags as f, Attr};
use virtiofs_fuse::{Context, Entry, Errno, Name};

use crate::creds;
use crate::fd_quota::FdQuota;
use crate::file_handle::{FileHandle, MountFds};
use crate::handle::HandleTable;
use crate::idmap::IdMaps;
use crate::inode::{Inode, InodeKey, InodeStore, NodeRef, Storage};
use crate::ops::lock::LockTable;
use crate::quota::{self, Quota};
use crate::sys;
use crate::{CacheMode, InodeFileHandles};

pub(crate) type Result<T> = std::result::Result<T, Errno>;

/// What the filesystem serves, from the daemon's options.
#[derive(Debug, Clone)]
pub struct Config {
    /// Guest caching policy.
    pub cache: CacheMode,
    /// Serve extended attributes.
    pub xattr: bool,
    /// Offer the writeback cache.
    pub writeback: bool,
    /// Offer READDIRPLUS.
    pub readdirplus: bool,
    /// Pass the guest's O_DIRECT to the host.
    pub allow_direct_io: bool,
    /// Mark mount points inside the share (FUSE_ATTR_SUBMOUNT) so the guest gives them their
    /// own st_dev.
    pub announce_submounts: bool,
    /// Translate xattr names (`--xattrmap`).
    pub xattrmap: Option<crate::XattrMap>,
    /// POSIX ACLs (`ops/acl.rs`).
    pub posix_acl: crate::Negotiation,
    /// Security labels (`ops/seclabel.rs`).
    pub security_label: crate::Negotiation,
    /// Refuse every modification of the share (`--readonly`, `ops/readonly.rs`).
    pub readonly: bool,
    /// Offer HANDLE_KILLPRIV_V2: the daemon clears SUID/SGID and capabilities on write,
    /// truncate and open with O_TRUNC when the guest says so.
    pub killpriv_v2: bool,
    /// Offer DIRECT_IO_ALLOW_MMAP (shared mmap of direct-I/O files).
    pub allow_mmap: bool,
    /// Keep O_NOATIME where the host refuses it (EPERM) rather than open without it.
    pub preserve_noatime: bool,
    /// Offer POSIX_LOCKS (host locks for fcntl).
    pub posix_locks: bool,
    /// Offer FLOCK_LOCKS (host locks for flock).
    pub flock_locks: bool,
    /// Nodes as file handles instead of O_PATH descriptors (in force once
    /// [`Passthrough::enable_file_handles`] has checked they work).
    pub inode_file_handles: InodeFileHandles,
    /// The most inodes the share may hold (`--max-inodes`, `quota.rs`).
    pub max_inodes: Option<u64>,
    /// The most bytes its regular files may allocate (`--max-bytes`, `quota.rs`).
    pub max_bytes: Option<u64>,
    /// Translation of ids between the guest and the host (`idmap.rs`).
    pub idmaps: crate::IdMaps,
}

/// The INIT flags this filesystem always serves.
/// - ASYNC_READ, PARALLEL_DIROPS: node and handle tables are shared-locked, so concurrent
///   reads of one file and lookups in one directory are safe.
/// - EXPORT_SUPPORT: LOOKUP of "." and ".." works (NFS export of the guest's mount).
/// - HAS_IOCTL_DIR: the file attribute ioctls (`ops/ioctl.rs`) work on directories too.
/// - CREATE_SUPP_GROUP: a new file is made with the caller's group that the parent has.
const SERVED: u64 = f::ASYNC_READ
    | f::PARALLEL_DIROPS
    | f::ATOMIC_O_TRUNC
    | f::AUTO_INVAL_DATA
    | f::ASYNC_DIO
    | f::EXPORT_SUPPORT
    | f::HAS_IOCTL_DIR
    | f::CREATE_SUPP_GROUP;

/// The shared directory as a FUSE filesystem.
pub struct Passthrough {
    pub(crate) cfg: Config,
    pub(crate) inodes: InodeStore,
    pub(crate) handles: HandleTable,
    pub(crate) locks: LockTable,
    /// `/proc/self/fd`, opened before the sandbox moves the root: reopening an O_PATH node for
    /// I/O goes through it, so no path outside the share is ever walked.
    proc_self_fd: OwnedFd,
    /// Where the root is opened at each session start.
    root: PathBuf,
    /// The writeback cache was negotiated (O_WRONLY opens become O_RDWR, O_APPEND is the
    /// guest's job).
    pub(crate) writeback: AtomicBool,
    /// HANDLE_KILLPRIV_V2 was negotiated: the guest's KILL_SUIDGID flags are honoured.
    pub(crate) killpriv_v2: AtomicBool,
    /// DONT_MASK was negotiated (with POSIX_ACL): the guest sends modes unmasked, with its umask.
    pub(crate) dont_mask: AtomicBool,
    /// Switch to the caller's ids for requests that make files.
    switch_creds: bool,
    fd_quota: Option<FdQuota>,
    /// The file-handle mode in force: `Never` until [`Passthrough::enable_file_handles`].
    pub(crate) file_handles: InodeFileHandles,
    /// One descriptor per mount for opening handles.
    pub(crate) mounts: MountFds,
    /// The share's inode and byte quota, if any (`quota.rs`, `ops/quota.rs`).
    pub(crate) quota: Option<Quota>,
    /// The id translation, only when a rule was given: without, a reply costs one `None` check.
    pub(crate) idmaps: Option<Box<IdMaps>>,
}

impl Passthrough {
    /// A filesystem whose root will be `root`; opens `/proc/self/fd` now (call this before
    /// entering the sandbox's new root).
    pub fn new(cfg: Config, root: &Path) -> io::Result<Self> {
        let proc_self_fd =
            sys::openat(cwd(), c"/proc/self/fd", libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok(Passthrough {
            quota: Quota::new(cfg.max_inodes, cfg.max_bytes),
            idmaps: (!cfg.idmaps.is_empty()).then(|| Box::new(cfg.idmaps.clone())),
            cfg,
            inodes: InodeStore::default(),
            handles: HandleTable::default(),
            locks: LockTable::default(),
            proc_self_fd,
            root: root.to_owned(),
            writeback: AtomicBool::new(false),
            killpriv_v2: AtomicBool::new(false),
            dont_mask: AtomicBool::new(false),
            switch_creds: creds::can_switch(),
            fd_quota: None,
            file_handles: InodeFileHandles::Never,
            mounts: MountFds::default(),
        })
    }

    /// Refuses descriptor-opening requests with EMFILE once the guest holds `quota`'s limit.
    pub fn set_fd_quota(&mut self, quota: FdQuota) {
        self.fd_quota = Some(quota);
    }

    /// With a quota: measures what the share holds now (a walk of the tree, once at start) and
    /// counts from there. Call it after [`Self::import`].
    pub fn measure_quota(&self) -> io::Result<()> {
        let Some(q) = &self.quota else {
            return Ok(());
        };
        let root = self
            .inode(virtiofs_fuse::abi::ROOT_ID)
            .map_err(|e| io::Error::from_raw_os_error(e.0))?;
        let dir = self
            .reopen(&root, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| io::Error::from_raw_os_error(e.0))?;
        let usage = quota::measure(dir, self.cfg.announce_submounts)?;
        q.set_usage(usage);
        let (max_inodes, max_bytes) = q.limits();
        let limit = |l: Option<u64>| l.map_or("no limit".to_string(), |l| format!("limit {l}"));
        tracing::info!(
            "quota: the share holds {} inodes ({}) and {} bytes ({})",
            usage.inodes,
            limit(max_inodes),
            usage.bytes,
            limit(max_bytes)
        );
        if max_inodes.is_some_and(|l| usage.inodes > l)
            || max_bytes.is_some_and(|l| usage.bytes > l)
        {
            tracing::warn!(
                "quota: the share already holds more than its quota: the guest may only free space"
            );
        }
        Ok(())
    }

    /// Whether nodes may be file handles.
    pub(crate) fn handles_on(&self) -> bool {
        self.file_handles != InodeFileHandles::Never
    }

    /// Opens the root (a new session's node 1) and drops everything of the last session.
    pub fn import(&self) -> io::Result<()> {
        let path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let fd = sys::openat(cwd(), &path, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        let stx = sys::fstatx(fd.as_fd(), sys::STATX_WANTED)?;
        // The root stays an O_PATH node (one descriptor, no open per request); `handles` says
        // whether what is made under it will be handle nodes.
        let handles = self.handles_on() && matches!(FileHandle::of(fd.as_fd()), Ok(Some(_)));
        self.release_all();
        self.handles.clear();
        self.locks.clear();
        self.inodes.reset(fd, &stx, handles);
        Ok(())
    }

    /// INIT: the flags wanted of those the guest offers.
    pub(crate) fn init(&self, capable: u64) -> Result<u64> {
        // A session that follows another (a guest driver restart) starts from a fresh root.
        if self.inodes.len() != 1 || !self.handles.is_empty() {
            self.import().map_err(Errno::from)?;
        }
        let mut wants = SERVED;
        // Real host locks (open file description locks), so host processes and other guests
        // see them; without, the guest kernel emulates locks for its own processes only.
        if self.cfg.posix_locks {
            wants |= f::POSIX_LOCKS;
        }
        if self.cfg.flock_locks {
            wants |= f::FLOCK_LOCKS;
        }
        if self.cfg.readdirplus {
            wants |= f::DO_READDIRPLUS | f::READDIRPLUS_AUTO;
        }
        if self.cfg.announce_submounts {
            wants |= f::SUBMOUNTS;
        }
        if self.cfg.allow_mmap {
            wants |= f::DIRECT_IO_ALLOW_MMAP;
        }
        wants |= self.acl_flags(capable)?;
        wants |= self.seclabel_flags(capable)?;
        let killpriv = self.cfg.killpriv_v2 && capable & f::HANDLE_KILLPRIV_V2 != 0;
        if killpriv {
            wants |= f::HANDLE_KILLPRIV_V2;
        }
        self.killpriv_v2.store(killpriv, Ordering::Relaxed);
        // The writeback cache keeps data in the guest: pointless (and unsafe for other
        // clients) when nothing may be cached.
        let writeback = self.cfg.writeback
            && self.cfg.cache != CacheMode::Never
            && capable & f::WRITEBACK_CACHE != 0;
        if writeback {
            wants |= f::WRITEBACK_CACHE;
        }
        self.writeback.store(writeback, Ordering::Relaxed);
        Ok(wants)
    }

    /// The session ended: every node, handle and lock goes; the next INIT opens the root again.
    pub(crate) fn destroy(&self) {
        self.release_all();
        self.handles.clear();
        self.locks.clear();
        self.inodes.clear();
    }

    /// Node `id`.
    pub(crate) fn inode(&self, id: u64) -> Result<Arc<Inode>> {
        self.inodes.get(id)
    }

    /// The quota check for a request that makes a node under `dir`: a handle node holds no
    /// descriptor, so only a directory whose nodes are O_PATH nodes counts.
    pub(crate) fn node_quota(&self, dir: &Inode) -> Result<()> {
        if dir.handles {
            Ok(())
        } else {
            self.check_fd_quota()
        }
    }

    /// EMFILE once the guest holds its quota of descriptors (before a request that opens
    /// one to keep).
    pub(crate) fn check_fd_quota(&self) -> Result<()> {
        self.emfile_if_fd_quota(FdQuota::exhausted)
    }

    /// EMFILE if `fd`, just opened (so the lowest free descriptor), is at or above the guest's
    /// fd quota: the same test as [`Self::check_fd_quota`], for an open without side effects.
    pub(crate) fn fd_quota_admits(&self, fd: &OwnedFd) -> Result<()> {
        self.emfile_if_fd_quota(|q| !q.admits(fd))
    }

    /// EMFILE when there is an fd quota and `reached` says it is used up.
    fn emfile_if_fd_quota(&self, reached: impl FnOnce(&FdQuota) -> bool) -> Result<()> {
        match &self.fd_quota {
            Some(q) if reached(q) => {
                tracing::debug!("fd quota of {} reached: EMFILE", q.limit());
                Err(Errno(libc::EMFILE))
            }
            _ => Ok(()),
        }
    }

    /// Runs as the caller (for requests that make files): the new file's owner is the guest
    /// user, and the host checks the caller's rights as the guest's did.
    /// With `--translate-uid`/`--translate-gid` the caller's ids are the host ids they
    /// translate to, and a forbidden one is EPERM, whether or not the daemon can switch.
    pub(crate) fn as_caller(&self, ctx: &Context) -> Result<creds::Switched> {
        let (mut uid, mut gid, mut supp) = (ctx.uid, ctx.gid, ctx.supp_group);
        if let Some(m) = &self.idmaps {
            uid = self.guest_id(&m.uid, uid, "uid")?;
            gid = self.guest_id(&m.gid, gid, "gid")?;
            supp = supp.map(|g| self.guest_id(&m.gid, g, "gid")).transpose()?;
        }
        creds::switch(self.switch_creds, uid, gid, supp).map_err(Errno::from)
    }

    /// The host id for the guest's `id` (`what`: uid or gid, for the log); EPERM if forbidden.
    pub(crate) fn guest_id(&self, map: &crate::IdMap, id: u32, what: &str) -> Result<u32> {
        map.to_host(id).map_err(|_| {
            tracing::debug!(
                "guest {what} {id} is forbidden (--translate-{what} forbid-guest): EPERM"
            );
            Errno(libc::EPERM)
        })
    }

    /// The owner in an attribute reply, as the guest sees it.
    pub(crate) fn guest_owner(&self, uid: &mut u32, gid: &mut u32) {
        if let Some(m) = &self.idmaps {
            *uid = m.uid.to_guest(*uid);
            *gid = m.gid.to_guest(*gid);
        }
    }

    /// How long the guest may cache entries and attributes.
    pub(crate) fn timeout(&self) -> Duration {
        self.cfg.cache.timeout()
    }

    /// A looked-up entry for `node`, whose attributes are `stx`.
    pub(crate) fn entry(&self, node: NodeRef, stx: &libc::statx, parent_mnt: u64) -> Entry {
        let mut attr = attr_of(stx);
        self.guest_owner(&mut attr.uid, &mut attr.gid);
        if self.cfg.announce_submounts && node.is_dir() && stx.stx_mnt_id != parent_mnt {
            attr.flags |= virtiofs_fuse::abi::flags::ATTR_SUBMOUNT;
        }
        Entry {
            nodeid: node.id,
            generation: 0,
            attr,
            attr_valid: self.timeout(),
            entry_valid: self.timeout(),
        }
    }

    /// LOOKUP of one component `name` in `parent` (counts a lookup of the result): a known
    /// file by its statx alone ([`Self::lookup_known_at`]).
    pub(crate) fn lookup_in(&self, parent: &Inode, name: &CStr) -> Result<Entry> {
        let dir = parent.fd()?;
        self.lookup_known_at(parent, dir.as_fd(), name)
    }

    /// [`Self::lookup_at`] for a file the guest likely knows already (a LOOKUP, a READDIRPLUS
    /// entry whose inode number is known): a statx of the name, and a known node that holds a
    /// descriptor is counted without opening one of the file: an open and a close saved, and
    /// the descriptor table's lock, which runners in parallel contend for (READDIRPLUS of a
    /// known directory: +65 % at depth 1 and 16; LOOKUP +6–9 % at depth 1). An unknown file
    /// is then opened as by [`Self::lookup_at`], one statx more. Not with file handles, whose
    /// nodes the key alone does not tell. (LOOKUP first used it in session 26 and lost 8–15 %
    /// at depth 16–256: the queue then took requests one at a time; since the queue gathers
    /// batches (`virtiofs-pipeline`'s `gather.rs`) it does not, see docs/performance.md.)
    pub(crate) fn lookup_known_at(
        &self,
        parent: &Inode,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> Result<Entry> {
        if !self.handles_on() {
            // Like O_PATH, which this stands for: no automount of the name.
            let stx = sys::statx(dir, name, libc::AT_NO_AUTOMOUNT, sys::STATX_WANTED)?;
            if let Some(node) = self.inodes.ref_known(&InodeKey::of(&stx)) {
                return Ok(self.entry(node, &stx, parent.key.mnt_id));
            }
        }
        self.lookup_at(parent, dir, name)
    }

    /// [`Self::lookup_in`] with the parent's descriptor `dir` already at hand.
    pub(crate) fn lookup_at(
        &self,
        parent: &Inode,
        dir: BorrowedFd<'_>,
        name: &CStr,
    ) -> Result<Entry> {
        let fd = sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        if !self.handles_on() {
            // A new node keeps this descriptor. Being the lowest free one, it is the fd quota's
            // probe itself: no extra dup and close on every lookup.
            self.fd_quota_admits(&fd)?;
        }
        self.lookup_fd(parent, dir, fd)
    }

    /// Counts a lookup of `fd`, a file reached from `parent` (whose descriptor is `dir`) and
    /// opened O_PATH.
    pub(crate) fn lookup_fd(
        &self,
        parent: &Inode,
        dir: BorrowedFd<'_>,
        fd: OwnedFd,
    ) -> Result<Entry> {
        let stx = sys::fstatx(fd.as_fd(), sys::STATX_WANTED)?;
        let storage = self.storage(fd, &stx, parent, dir)?;
        let inode = self.inodes.insert_or_ref(storage, &stx);
        Ok(self.entry(NodeRef::from(&*inode), &stx, parent.key.mnt_id))
    }

    /// Opens `inode` for I/O with `flags`, through `/proc/self/fd` (an O_PATH descriptor
    /// cannot be read). Only regular files and directories are ever opened: a FIFO would block
    /// a worker, a device node would reach the host's device, a symlink its target.
    pub(crate) fn reopen(&self, inode: &Inode, flags: i32) -> Result<OwnedFd> {
        match inode.kind {
            libc::S_IFREG | libc::S_IFDIR => {}
            libc::S_IFLNK => return Err(Errno(libc::ELOOP)),
            libc::S_IFIFO | libc::S_IFSOCK => return Err(Errno(libc::ENXIO)),
            _ => return Err(Errno(libc::EACCES)),
        }
        // O_NOFOLLOW would refuse the /proc magic link itself; O_CREAT and O_EXCL create
        // nothing here.
        let flags = flags & !(libc::O_NOFOLLOW | libc::O_CREAT | libc::O_EXCL | libc::O_PATH)
            | libc::O_NOCTTY;
        match self.reopen_as(inode, flags) {
            // O_NOATIME needs the file's owner or CAP_FOWNER on the host, which the guest's
            // kernel could not check for us: without --preserve-noatime the file is opened
            // anyway, with atime updates (what the Rust virtiofsd does always).
            Err(Errno(libc::EPERM))
                if flags & libc::O_NOATIME != 0 && !self.cfg.preserve_noatime =>
            {
                self.reopen_as(inode, flags & !libc::O_NOATIME)
            }
            r => r,
        }
    }

    /// [`Self::reopen`] with `flags` as the host gets them.
    fn reopen_as(&self, inode: &Inode, flags: i32) -> Result<OwnedFd> {
        match &inode.storage {
            Storage::Fd(fd) => {
                let name = sys::fd_name(fd.as_raw_fd());
                Ok(sys::openat(
                    self.proc_self_fd.as_fd(),
                    name.as_cstr(),
                    flags,
                    0,
                )?)
            }
            // open_by_handle_at opens the file itself, not a path: no symlink is followed.
            Storage::Handle(h) => Ok(h.handle.open(&h.mount, flags)?),
        }
    }

    /// `/proc/self/fd`, for the *at calls that name a node by its descriptor's entry.
    pub(crate) fn proc_fd(&self) -> BorrowedFd<'_> {
        self.proc_self_fd.as_fd()
    }

    /// Runs `call` with a path naming `inode` itself: its `/proc/self/fd` entry, relative to
    /// this thread's working directory, which is moved there for the call (the thread's own:
    /// see [`sys::in_thread_dir`]). For the calls that only take paths (xattrs of any file type),
    /// with no absolute path: it works after the sandbox's pivot or chroot, where no /proc is.
    pub(crate) fn with_node_path<T>(
        &self,
        inode: &Inode,
        call: impl FnOnce(&CStr) -> Result<T>,
    ) -> Result<T> {
        let fd = inode.fd()?;
        let name = sys::fd_name(fd.as_fd().as_raw_fd());
        sys::in_thread_dir(self.proc_self_fd.as_fd(), || call(name.as_cstr()))?
    }

    /// HANDLE_KILLPRIV_V2, when the guest asked (`kill`: a write, truncate or O_TRUNC by a
    /// caller without CAP_FSETID): clears the regular file `fd`'s SUID bit, and its SGID bit when
    /// it is group-executable (FUSE's rule, the kernel's for a writer in the file's group). The
    /// daemon writes with CAP_FSETID, so the host kernel would keep both; it removes
    /// `security.capability` on every write and truncate by itself.
    pub(crate) fn kill_suidgid(&self, kill: bool, fd: BorrowedFd<'_>) -> Result<()> {
        if !kill || !self.killpriv_v2.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.clear_suidgid(fd)
    }

    /// Whether an open with `flags` (as the host gets them) and FUSE `open_flags` by caller
    /// `uid` must clear SUID/SGID: an O_TRUNC, when the guest says so (HANDLE_KILLPRIV_V2), or
    /// else when the caller is not root. Without KILLPRIV_V2 the guest's kernel would ask for
    /// it with a SETATTR (ATTR_KILL_SUID, for a caller without CAP_FSETID), but with
    /// ATOMIC_O_TRUNC it sends none (the open truncated already) and the daemon, which holds
    /// CAP_FSETID, truncates without the host clearing anything: ext4 clears SUID for such a
    /// caller, so the daemon does, taking uid 0 for CAP_FSETID.
    pub(crate) fn kills_on_open(&self, uid: u32, flags: i32, open_flags: u32) -> bool {
        if flags & libc::O_TRUNC == 0 {
            return false;
        }
        if self.killpriv_v2.load(Ordering::Relaxed) {
            open_flags & virtiofs_fuse::abi::flags::OPEN_KILL_SUIDGID != 0
        } else {
            uid != 0
        }
    }

    /// Clears the regular file `fd`'s SUID bit, and its SGID bit when it is group-executable.
    pub(crate) fn clear_suidgid(&self, fd: BorrowedFd<'_>) -> Result<()> {
        let mode = u32::from(sys::fstatx(fd, libc::STATX_TYPE | libc::STATX_MODE)?.stx_mode);
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(());
        }
        let mut kept = mode & !libc::S_ISUID;
        if mode & libc::S_IXGRP != 0 {
            kept &= !libc::S_ISGID;
        }
        if kept != mode {
            // By its /proc/self/fd entry: `fd` may be an O_PATH descriptor.
            let name = sys::fd_name(fd.as_raw_fd());
            sys::fchmodat(self.proc_fd(), name.as_cstr(), kept & 0o7777)?;
        }
        Ok(())
    }

    /// The open flags the host gets for a guest's `flags`.
    pub(crate) fn open_flags(&self, flags: u32) -> i32 {
        let mut flags = flags as i32;
        if !self.cfg.allow_direct_io {
            flags &= !libc::O_DIRECT;
        }
        if self.writeback.load(Ordering::Relaxed) {
            // The guest's page cache reads pages it writes back, and it does O_APPEND itself.
            if flags & libc::O_ACCMODE == libc::O_WRONLY {
                flags = (flags & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            flags &= !libc::O_APPEND;
        }
        flags
    }
}

/// The current directory, for paths that are absolute anyway.
fn cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a valid "descriptor" for every *at call, forever.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

/// A name that will name a new file (or the target of a rename or link): one component, not
/// "." or "..".
pub(crate) fn new_name(name: &Name) -> Result<&CStr> {
    match name.as_bytes() {
        b"" | b"." | b".." => Err(Errno(libc::EINVAL)),
        b if b.contains(&b'/') => Err(Errno(libc::EINVAL)),
        _ => Ok(name.as_cstr()),
    }
}

/// A name of an existing file in a directory: one component (an empty name is ENOENT, as for
/// any path component).
pub(crate) fn existing_name(name: &Name) -> Result<&CStr> {
    match name.as_bytes() {
        b"" => Err(Errno(libc::ENOENT)),
        b if b.contains(&b'/') => Err(Errno(libc::EINVAL)),
        _ => Ok(name.as_cstr()),
    }
}

/// FUSE attributes from `statx`.
pub(crate) fn attr_of(stx: &libc::statx) -> Attr {
    Attr {
        ino: stx.stx_ino,
        size: stx.stx_size,
        blocks: stx.stx_blocks,
        atime: stx.stx_atime.tv_sec as u64,
        mtime: stx.stx_mtime.tv_sec as u64,
        ctime: stx.stx_ctime.tv_sec as u64,
        atimensec: stx.stx_atime.tv_nsec,
        mtimensec: stx.stx_mtime.tv_nsec,
        ctimensec: stx.stx_ctime.tv_nsec,
        mode: u32::from(stx.stx_mode),
        nlink: stx.stx_nlink,
        uid: stx.stx_uid,
        gid: stx.stx_gid,
        rdev: libc::makedev(stx.stx_rdev_major, stx.stx_rdev_minor) as u32,
        blksize: stx.stx_blksize,
        flags: 0,
    }
}
