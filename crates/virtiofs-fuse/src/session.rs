//! FUSE_INIT: what a guest and this server agree on, and the session state every later request
//! reads (flags, write size).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::abi::{
    init_flags as f, InitIn, InitOut, KERNEL_MINOR_VERSION, KERNEL_VERSION,
    MIN_KERNEL_MINOR_VERSION,
};
use crate::filesystem::{Errno, Result};

/// The guest page size the kernel's `max_pages` counts in.
pub const PAGE_SIZE: u32 = 4096;
/// Pages per request a kernel without MAX_PAGES uses (`FUSE_DEFAULT_MAX_PAGES_PER_REQ`).
const DEFAULT_MAX_PAGES: u32 = 32;

/// Flags the server implements itself, whatever the filesystem wants: large requests and the
/// second flags word.
const SERVER_FLAGS: u64 = f::BIG_WRITES | f::MAX_PAGES | f::INIT_EXT;
/// Flags never agreed to: features that need what a virtio-fs server does not have (a DAX
/// window, a /dev/fuse fd for passthrough or io_uring, splice, id-mapped mounts).
const NEVER: u64 = f::SPLICE_WRITE
    | f::SPLICE_MOVE
    | f::SPLICE_READ
    | f::MAP_ALIGNMENT
    | f::HAS_INODE_DAX
    | f::PASSTHROUGH
    | f::OVER_IO_URING
    | f::ALLOW_IDMAP
    | f::INIT_RESERVED;

/// Pages per READ or WRITE offered when the queue size is not known: 1 MiB, the most Linux
/// guests take without a raised `fs.fuse.max_pages_limit` (before 6.12: `FUSE_MAX_MAX_PAGES`).
pub const UNKNOWN_QUEUE_MAX_PAGES: u16 = 256;

/// Descriptors a READ or WRITE takes besides one per page of data: the request header, the
/// request's arguments, the reply header and the reply's arguments (the Linux virtio-fs
/// driver's `FUSE_HEADER_OVERHEAD`; a READ takes one fewer, its reply data being the pages).
pub const CHAIN_OVERHEAD: u16 = 4;

/// Limits the server offers in INIT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Cap on the pages of data in one READ or WRITE, below what the queue allows (default:
    /// `u16::MAX`, the field's own limit: no cap of ours).
    pub max_pages: u16,
    /// Descriptors of the smallest request queue, when known (the frontend's SET_VRING_NUM):
    /// a chain never holds more (virtio 1.2, 2.7.5.3.1, for indirect tables too), so a READ or
    /// WRITE carries at most `queue_size - CHAIN_OVERHEAD` pages. `None`:
    /// [`UNKNOWN_QUEUE_MAX_PAGES`].
    pub queue_size: Option<u16>,
    /// Background requests (readahead, async writes) the guest may queue.
    pub max_background: u16,
    /// Background requests above which the guest throttles.
    pub congestion_threshold: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_pages: u16::MAX,
            queue_size: None,
            max_background: 512,
            congestion_threshold: 384,
        }
    }
}

impl Limits {
    /// The pages of data one READ or WRITE may carry: as many as a chain of the queue holds
    /// besides the request's other parts, at most [`Limits::max_pages`], at least 1.
    pub fn pages(&self) -> u16 {
        let by_queue = match self.queue_size {
            Some(q) => q.saturating_sub(CHAIN_OVERHEAD),
            None => UNKNOWN_QUEUE_MAX_PAGES,
        };
        by_queue.min(self.max_pages).max(1)
    }
}

/// What INIT agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// INIT flags the guest offered.
    pub offered: u64,
    /// Protocol minor version of the session.
    pub minor: u32,
    /// INIT flags both sides use.
    pub flags: u64,
    /// Largest WRITE payload.
    pub max_write: u32,
    /// Largest READ the guest will send, in pages.
    pub max_pages: u32,
}

/// The outcome of an INIT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// A session begins with this reply.
    Ready(InitOut, Agreed),
    /// The guest speaks a newer major version: reply with ours only, it retries with 7.
    Downgrade(InitOut),
}

/// Negotiates INIT. `wanted` is the filesystem's answer to what the guest is capable of.
pub fn negotiate(
    arg: &InitIn,
    limits: &Limits,
    wanted: impl FnOnce(u64) -> Result<u64>,
) -> Result<Init> {
    if arg.major > KERNEL_VERSION {
        return Ok(Init::Downgrade(InitOut {
            major: KERNEL_VERSION,
            minor: KERNEL_MINOR_VERSION,
            ..Default::default()
        }));
    }
    if arg.major < KERNEL_VERSION || arg.minor < MIN_KERNEL_MINOR_VERSION {
        return Err(Errno(libc::EPROTO));
    }
    let mut capable = u64::from(arg.flags);
    if capable & f::INIT_EXT != 0 {
        capable |= u64::from(arg.flags2) << 32;
    }
    if arg.minor < crate::abi::ext::FIRST_MINOR {
        // 7.36 and 7.37 guests (Linux 5.17 to 6.2) send the security context as a plain
        // argument after the name, not as an extension: not served, so not agreed to.
        capable &= !f::SECURITY_CTX;
    }
    let fs_wants = wanted(capable)?;
    let flags = capable & (fs_wants | SERVER_FLAGS) & !NEVER;
    let max_pages = if flags & f::MAX_PAGES != 0 {
        u32::from(limits.pages())
    } else {
        DEFAULT_MAX_PAGES.min(u32::from(limits.pages()))
    };
    let max_write = max_pages * PAGE_SIZE;
    let out = InitOut {
        major: KERNEL_VERSION,
        minor: arg.minor.min(KERNEL_MINOR_VERSION),
        max_readahead: arg.max_readahead,
        flags: flags as u32,
        max_background: limits.max_background,
        congestion_threshold: limits.congestion_threshold,
        max_write,
        time_gran: 1,
        max_pages: if flags & f::MAX_PAGES != 0 {
            max_pages as u16
        } else {
            0
        },
        flags2: if flags & f::INIT_EXT != 0 {
            (flags >> 32) as u32
        } else {
            0
        },
        ..Default::default()
    };
    let agreed = Agreed {
        offered: capable,
        minor: out.minor,
        flags,
        max_write,
        max_pages,
    };
    Ok(Init::Ready(out, agreed))
}

/// The session state requests read: set by INIT, cleared by DESTROY. The server's callers
/// never run INIT or DESTROY concurrently with other requests (the pipeline's gate), which
/// orders these plain relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct State {
    live: AtomicBool,
    flags: AtomicU64,
    max_write: AtomicU32,
}

impl State {
    pub(crate) fn start(&self, a: &Agreed) {
        self.flags.store(a.flags, Ordering::Relaxed);
        self.max_write.store(a.max_write, Ordering::Relaxed);
        self.live.store(true, Ordering::Release);
    }

    pub(crate) fn end(&self) -> bool {
        self.live.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub(crate) fn has(&self, flag: u64) -> bool {
        self.flags.load(Ordering::Relaxed) & flag != 0
    }

    pub(crate) fn max_write(&self) -> u32 {
        self.max_write.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(minor: u32, flags: u64) -> InitIn {
        InitIn {
            major: 7,
            minor,
            max_readahead: 128 << 10,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            ..Default::default()
        }
    }

    #[test]
    fn agrees_on_what_both_sides_have_and_sizes_writes_by_max_pages() {
        let guest = f::ASYNC_READ
            | f::BIG_WRITES
            | f::MAX_PAGES
            | f::INIT_EXT
            | f::POSIX_LOCKS
            | f::CREATE_SUPP_GROUP
            | f::MAP_ALIGNMENT
            | f::SPLICE_READ;
        let fs = f::ASYNC_READ | f::CREATE_SUPP_GROUP | f::MAP_ALIGNMENT | f::WRITEBACK_CACHE;
        let Init::Ready(out, agreed) = negotiate(&init(38, guest), &Limits::default(), |c| {
            assert_eq!(c, guest);
            Ok(fs)
        })
        .unwrap() else {
            panic!("not ready")
        };
        let expect =
            f::ASYNC_READ | f::BIG_WRITES | f::MAX_PAGES | f::INIT_EXT | f::CREATE_SUPP_GROUP;
        assert_eq!(agreed.flags, expect, "{}", f::describe(agreed.flags));
        assert_eq!(
            (out.flags, out.flags2),
            (expect as u32, (expect >> 32) as u32)
        );
        assert_eq!((out.max_pages, out.max_write), (256, 1 << 20));
        assert_eq!((out.minor, out.max_readahead), (38, 128 << 10));
    }

    fn offered(limits: Limits, flags: u64) -> (u16, u32, u32) {
        let Init::Ready(out, agreed) = negotiate(&init(41, flags), &limits, |_| Ok(0)).unwrap()
        else {
            panic!("not ready")
        };
        assert_eq!(agreed.max_write, out.max_write);
        (out.max_pages, out.max_write, agreed.max_pages)
    }

    fn queue(size: u16) -> Limits {
        Limits {
            queue_size: Some(size),
            ..Limits::default()
        }
    }

    #[test]
    fn max_pages_is_what_a_chain_of_the_queue_carries() {
        let mp = f::MAX_PAGES | f::BIG_WRITES;
        // Unknown queue: 1 MiB, as before.
        assert_eq!(offered(Limits::default(), mp), (256, 1 << 20, 256));
        // QEMU's largest queue: 1024 descriptors, 4 of them the request's and reply's headers
        // and arguments, 1020 pages of data (the Linux driver's own bound, FUSE_HEADER_OVERHEAD).
        assert_eq!(offered(queue(1024), mp), (1020, 1020 * 4096, 1020));
        // QEMU's default queue size for vhost-user-fs.
        assert_eq!(offered(queue(128), mp), (124, 124 * 4096, 124));
        // The split ring's largest queue still fits the u16 field.
        assert_eq!(offered(queue(32768), mp), (32764, 32764 * 4096, 32764));
        assert_eq!(offered(queue(u16::MAX), mp).0, u16::MAX - CHAIN_OVERHEAD);
        // A queue too small for a page of data still offers one page (the kernel wants >= 1).
        for tiny in [0, 1, 4, 5] {
            assert_eq!(offered(queue(tiny), mp), (1, 4096, 1), "queue of {tiny}");
        }
        // Our own cap wins when it is lower than the queue's.
        let capped = Limits {
            max_pages: 32,
            ..queue(1024)
        };
        assert_eq!(offered(capped, mp), (32, 32 * 4096, 32));
        // A guest without MAX_PAGES sends at most 32 pages, fewer if the queue is smaller.
        assert_eq!(offered(queue(1024), f::BIG_WRITES), (0, 32 * 4096, 32));
        assert_eq!(offered(queue(16), f::BIG_WRITES), (0, 12 * 4096, 12));
    }

    #[test]
    fn old_and_new_guests() {
        let Init::Ready(out, agreed) =
            negotiate(&init(27, f::BIG_WRITES), &Limits::default(), |_| Ok(0)).unwrap()
        else {
            panic!()
        };
        assert_eq!((out.max_pages, agreed.max_write), (0, 32 * 4096));
        assert_eq!(out.flags2, 0, "no flags2 without INIT_EXT");
        let Init::Ready(out, _) = negotiate(&init(99, 0), &Limits::default(), |_| Ok(0)).unwrap()
        else {
            panic!()
        };
        assert_eq!(out.minor, KERNEL_MINOR_VERSION);
        assert_eq!(
            negotiate(&init(26, 0), &Limits::default(), |_| Ok(0)),
            Err(Errno(libc::EPROTO))
        );
        let mut v8 = init(0, 0);
        v8.major = 8;
        assert!(
            matches!(negotiate(&v8, &Limits::default(), |_| Ok(0)), Ok(Init::Downgrade(o)) if o.major == 7)
        );
        let mut v6 = init(38, 0);
        v6.major = 6;
        assert_eq!(
            negotiate(&v6, &Limits::default(), |_| Ok(0)),
            Err(Errno(libc::EPROTO))
        );
        let failing = negotiate(&init(38, 0), &Limits::default(), |_| Err(Errno(libc::EIO)));
        assert_eq!(failing, Err(Errno(libc::EIO)));
    }
}
