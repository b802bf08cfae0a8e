//! The share's quota (`--max-inodes`, `--max-bytes`): how many inodes and how many allocated
//! bytes the shared directory tree may hold. What counts, and when (see also the README):
//!
//! - **inodes**: every file, directory, symlink and special file in the tree below the root
//!   (the root itself is free; a file with several hard links counts once);
//! - **bytes**: the space regular files take on the host (`st_blocks` × 512: a sparse file
//!   counts what is allocated, not its size; directories, symlinks and xattrs do not count);
//! - at start the daemon measures the tree once ([`measure`]): what the share already holds
//!   counts. The walk stays on the share's own mount unless submounts are announced;
//! - after that the count follows the guest's requests: a request that makes an inode takes one
//!   first ([`Quota::take_inode`]); a request that may allocate reserves its worst case
//!   ([`Quota::reserve`], whole blocks of the range) and then, under a per-file lock, the file's
//!   `st_blocks` measured before and after is what is counted ([`Growth`]), so the count stays
//!   right for sparse files, overwrites and whatever the host did to that file meanwhile;
//! - a limit reached answers EDQUOT, what the Linux kernel answers at a user's quota (ENOSPC
//!   means the host disk is full).
//!
//! Every check is one atomic compare-and-swap on the charged total (usage plus the reservations
//! of requests in flight), so parallel requests cannot pass a limit together.

use std::collections::HashSet;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use virtiofs_fuse::abi::Kstatfs;
use virtiofs_fuse::Errno;

use crate::sys;

/// What the quota refuses with.
pub(crate) const EDQUOT: Errno = Errno(libc::EDQUOT);

/// Locks that serialise the growing requests of one file (by node id): 256, so requests on
/// different files rarely share one.
const STRIPES: usize = 256;

/// A counter with a limit.
#[derive(Debug)]
struct Counter {
    limit: Option<u64>,
    charged: AtomicU64,
}

impl Counter {
    fn new(limit: Option<u64>) -> Self {
        Counter {
            limit,
            charged: AtomicU64::new(0),
        }
    }

    /// Adds `n` if the total stays within the limit.
    fn try_add(&self, n: u64) -> bool {
        let Some(limit) = self.limit else {
            self.charged.fetch_add(n, Ordering::Relaxed);
            return true;
        };
        self.charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                c.checked_add(n).filter(|t| *t <= limit)
            })
            .is_ok()
    }

    /// Adds `n` (may pass the limit: usage that is already there).
    fn add(&self, n: u64) {
        self.charged.fetch_add(n, Ordering::AcqRel);
    }

    /// Takes `n` away (never below 0: a file freed that was never counted).
    fn sub(&self, n: u64) {
        let _ = self
            .charged
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            });
    }

    fn get(&self) -> u64 {
        self.charged.load(Ordering::Acquire)
    }

    /// What is left under the limit (`u64::MAX` without one).
    fn room(&self) -> u64 {
        self.limit
            .map_or(u64::MAX, |l| l.saturating_sub(self.get()))
    }
}

/// The share's quota: limits, usage, and the per-file locks of growing requests.
#[derive(Debug)]
pub struct Quota {
    inodes: Counter,
    bytes: Counter,
    stripes: Box<[Mutex<()>]>,
}

/// What a tree holds, as the quota counts it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Inodes below the root.
    pub inodes: u64,
    /// Bytes allocated to regular files.
    pub bytes: u64,
}

impl Quota {
    /// A quota with these limits; `None` when neither is set (no quota: no cost).
    pub fn new(max_inodes: Option<u64>, max_bytes: Option<u64>) -> Option<Self> {
        if max_inodes.is_none() && max_bytes.is_none() {
            return None;
        }
        Some(Quota {
            inodes: Counter::new(max_inodes),
            bytes: Counter::new(max_bytes),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// Starts counting from `usage` (what the share holds, [`measure`]).
    pub fn set_usage(&self, usage: Usage) {
        self.inodes.charged.store(usage.inodes, Ordering::Release);
        self.bytes.charged.store(usage.bytes, Ordering::Release);
    }

    /// The current usage (with the reservations of requests in flight).
    #[cfg(test)]
    pub fn usage(&self) -> Usage {
        Usage {
            inodes: self.inodes.get(),
            bytes: self.bytes.get(),
        }
    }

    /// The limits (inodes, bytes).
    pub fn limits(&self) -> (Option<u64>, Option<u64>) {
        (self.inodes.limit, self.bytes.limit)
    }

    /// One inode for a request that makes one: EDQUOT at the limit. The inode is given back
    /// when the returned charge drops, unless [`InodeCharge::keep`] says the file was made.
    pub(crate) fn take_inode(&self) -> Result<InodeCharge<'_>, Errno> {
        if self.inodes.try_add(1) {
            Ok(InodeCharge {
                quota: self,
                kept: false,
            })
        } else {
            tracing::debug!("inode quota of {:?} reached: EDQUOT", self.inodes.limit);
            Err(EDQUOT)
        }
    }

    /// `inodes` inodes and `bytes` bytes went from the share.
    pub(crate) fn free(&self, inodes: u64, bytes: u64) {
        self.inodes.sub(inodes);
        self.bytes.sub(bytes);
    }

    /// Reserves `n` bytes if they fit under the limit.
    fn reserve(&self, n: u64) -> bool {
        self.bytes.try_add(n)
    }

    /// Bytes left under the limit.
    pub(crate) fn room(&self) -> u64 {
        self.bytes.room()
    }

    /// The lock of node `nodeid`'s growing requests.
    fn lock(&self, nodeid: u64) -> MutexGuard<'_, ()> {
        let stripe = &self.stripes[(nodeid % STRIPES as u64) as usize];
        // A panic in a request cannot leave the count wrong: the guard protects no data.
        stripe.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a request that may change how much node `nodeid`'s file `fd` allocates: locks the
    /// file's growing requests and measures it; the caller reserves what the request may
    /// allocate ([`Growth::reserve`]), and what the file really grew by is counted when the
    /// [`Growth`] drops.
    pub(crate) fn measure_file<'a>(
        &'a self,
        nodeid: u64,
        fd: BorrowedFd<'a>,
    ) -> Result<Growth<'a>, Errno> {
        let lock = self.lock(nodeid);
        let stx = sys::fstatx(fd, libc::STATX_BLOCKS | libc::STATX_SIZE)?;
        Ok(Growth {
            quota: self,
            fd,
            before: stx.stx_blocks * 512,
            size: stx.stx_size,
            blksize: u64::from(stx.stx_blksize).max(512),
            reserved: 0,
            _lock: lock,
        })
    }

    /// FUSE STATFS with a quota: the limits (at most what the host has) as the totals, what is
    /// left under them as free.
    pub(crate) fn statfs(&self, st: &mut Kstatfs) {
        if let Some(limit) = self.bytes.limit {
            let unit = u64::from(if st.frsize != 0 { st.frsize } else { st.bsize }).max(1);
            let total = limit / unit;
            let free = self.bytes.room() / unit;
            st.blocks = min_known(st.blocks, total);
            st.bfree = st.bfree.min(free);
            st.bavail = st.bavail.min(free);
        }
        if let Some(limit) = self.inodes.limit {
            // A host without an inode count (0: btrfs, some tmpfs) leaves only the quota.
            let host_free = if st.files == 0 { u64::MAX } else { st.ffree };
            st.files = min_known(st.files, limit);
            st.ffree = host_free.min(self.inodes.room());
        }
    }
}

/// `quota` where the host gives no number (0), else the smaller.
fn min_known(host: u64, quota: u64) -> u64 {
    if host == 0 {
        quota
    } else {
        host.min(quota)
    }
}

/// An inode taken for a request that makes one; given back on drop unless kept.
#[must_use]
pub(crate) struct InodeCharge<'a> {
    quota: &'a Quota,
    kept: bool,
}

impl InodeCharge<'_> {
    /// The inode was made: it stays counted.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for InodeCharge<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.quota.inodes.sub(1);
        }
    }
}

/// A request that may change how much one file allocates: holds the file's lock and the
/// request's reservation; on drop the file is measured again and the difference counted
/// (whatever the request did, even when it failed half way).
pub(crate) struct Growth<'a> {
    quota: &'a Quota,
    fd: BorrowedFd<'a>,
    /// Bytes allocated before.
    pub(crate) before: u64,
    /// The file's size before.
    pub(crate) size: u64,
    /// Its allocation unit as the host tells it (`st_blksize`, at least 512).
    pub(crate) blksize: u64,
    reserved: u64,
    _lock: MutexGuard<'a, ()>,
}

impl Growth<'_> {
    /// Reserves `n` more bytes if they fit.
    pub(crate) fn reserve(&mut self, n: u64) -> bool {
        let ok = self.quota.reserve(n);
        if ok {
            self.reserved += n;
        }
        ok
    }

    /// What the file allocates now.
    pub(crate) fn now(&self) -> io::Result<u64> {
        Ok(sys::fstatx(self.fd, libc::STATX_BLOCKS)?.stx_blocks * 512)
    }

    /// Whether the usage is above the byte limit now (counting this file's growth so far).
    pub(crate) fn over_limit(&self) -> bool {
        let Some(limit) = self.quota.bytes.limit else {
            return false;
        };
        let grown = self
            .now()
            .unwrap_or(self.before)
            .saturating_sub(self.before);
        let others = self.quota.bytes.get().saturating_sub(self.reserved);
        others.saturating_add(grown) > limit
    }
}

impl Drop for Growth<'_> {
    fn drop(&mut self) {
        match self.now() {
            Ok(after) if after >= self.before => self.quota.bytes.add(after - self.before),
            Ok(after) => self.quota.bytes.sub(self.before - after),
            // The file cannot be measured (it cannot happen to an open descriptor): keep the
            // reservation as the growth, the safe side.
            Err(e) => {
                tracing::warn!("quota: cannot measure a file after a request: {e}");
                self.quota.bytes.add(self.reserved);
            }
        }
        self.quota.bytes.sub(self.reserved);
    }
}

/// The bytes a request touching `[offset, offset + len)` may allocate at most: the whole blocks
/// (of `blksize`) that range overlaps.
pub(crate) fn span(offset: u64, len: u64, blksize: u64) -> u64 {
    if len == 0 {
        return 0;
    }
    let start = offset - offset % blksize;
    // Past u64: as much as there can be (the host refuses such a write anyway).
    match offset
        .checked_add(len)
        .and_then(|e| e.checked_add(blksize - 1))
    {
        Some(end) => end / blksize * blksize - start,
        None => u64::MAX,
    }
}

/// The longest prefix of `[offset, offset + len)` whose [`span`] fits in `room` (0: none).
pub(crate) fn fitting(offset: u64, len: u64, room: u64, blksize: u64) -> u64 {
    let start = offset - offset % blksize;
    let end = start.saturating_add(room / blksize * blksize);
    end.saturating_sub(offset).min(len)
}

/// Measures what the tree below `root` (a directory opened for reading) holds, as the quota
/// counts it. With `cross_mounts` false the walk stays on `root`'s mount. Progress is logged
/// every few seconds for big trees; unreadable directories are logged and skipped.
pub fn measure(root: OwnedFd, cross_mounts: bool) -> io::Result<Usage> {
    const MASK: u32 = libc::STATX_TYPE
        | libc::STATX_NLINK
        | libc::STATX_INO
        | libc::STATX_BLOCKS
        | libc::STATX_MNT_ID;
    let root_mnt = sys::fstatx(root.as_fd(), MASK)?.stx_mnt_id;
    let started = Instant::now();
    let mut last_report = started;
    let mut usage = Usage::default();
    let mut linked: HashSet<(u32, u32, u64)> = HashSet::new();
    let mut skipped = 0u64;
    let mut stack = vec![root];
    let mut buf = vec![0u8; 64 * 1024];
    let mut names: Vec<std::ffi::CString> = Vec::new();
    while let Some(dir) = stack.pop() {
        names.clear();
        loop {
            let n = match sys::getdents64(dir.as_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("quota: measuring the share: cannot read a directory: {e}");
                    break;
                }
            };
            for rec in crate::dir_stream::records(&buf[..n]) {
                if rec.name != b"." && rec.name != b".." {
                    names.extend(std::ffi::CString::new(rec.name).ok());
                }
            }
        }
        for name in &names {
            let flags = libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC;
            let stx = match sys::statx(dir.as_fd(), name, flags, MASK) {
                Ok(stx) => stx,
                Err(_) => continue, // gone meanwhile
            };
            let kind = u32::from(stx.stx_mode) & libc::S_IFMT;
            if kind == libc::S_IFDIR && stx.stx_mnt_id != root_mnt && !cross_mounts {
                skipped += 1;
                continue;
            }
            if kind != libc::S_IFDIR
                && stx.stx_nlink > 1
                && !linked.insert((stx.stx_dev_major, stx.stx_dev_minor, stx.stx_ino))
            {
                continue; // another link of a file already counted
            }
            usage.inodes += 1;
            if kind == libc::S_IFREG {
                usage.bytes += stx.stx_blocks * 512;
            }
            if kind == libc::S_IFDIR {
                let open = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
                match sys::openat(dir.as_fd(), name, open, 0) {
                    Ok(fd) => stack.push(fd),
                    Err(e) => tracing::warn!(
                        "quota: measuring the share: cannot open directory {name:?}: {e}; \
                         its contents are not counted"
                    ),
                }
            }
            if usage.inodes % 4096 == 0 && last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                tracing::info!(
                    "quota: measuring the share: {} inodes, {} bytes so far ({:.0?})",
                    usage.inodes,
                    usage.bytes,
                    started.elapsed()
                );
            }
        }
    }
    if skipped > 0 {
        tracing::info!(
            "quota: {skipped} mount point(s) in the share not measured (other filesystems; \
             --announce-submounts measures them)"
        );
    }
    tracing::debug!("quota: share measured in {:.1?}", started.elapsed());
    Ok(usage)
}

#[cfg(test)]
mod tests;
