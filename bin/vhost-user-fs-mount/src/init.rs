//! FUSE_INIT between the kernel (over /dev/fuse) and the backend (over virtio-fs).
//!
//! The kernel's INIT is forwarded to the backend with the flags the bridge cannot carry removed
//! ([`forwardable_flags`]); the backend's reply goes back to the kernel with its flags limited
//! to what was offered and `max_write` / `max_pages` limited to what one request of the bridge
//! can carry ([`Limits`]), the way the Linux virtio-fs driver limits `max_pages` by its queue
//! size.

use vhost_user_fs_client::abi::{init_flags, InitIn, InitOut};
use vm_memory::ByteValued;

/// Page size the kernel counts `max_pages` in.
pub const PAGE_SIZE: u32 = 4096;

/// Descriptors the Linux virtio-fs driver reserves per request besides the data pages
/// (`FUSE_HEADER_OVERHEAD`): its `max_pages` is at most `queue_size - 4`.
pub const HEADER_OVERHEAD: u32 = 4;

/// The kernel's `FUSE_DEFAULT_MAX_PAGES_PER_REQ`: `max_pages` when `FUSE_MAX_PAGES` is not
/// agreed on.
pub const DEFAULT_MAX_PAGES: u32 = 32;

/// The kernel's INIT flags the bridge passes on. Everything else is dropped:
/// - `MAP_ALIGNMENT`, `HAS_INODE_DAX`, `SUBMOUNTS`: DAX windows and submounts are virtio-fs
///   device features a /dev/fuse mount has no counterpart for;
/// - `PASSTHROUGH`, `OVER_IO_URING`: they need the daemon to hold /dev/fuse itself;
/// - `HAS_RESEND`, `ALLOW_IDMAP`, `REQUEST_TIMEOUT` and unknown bits: kernel features a virtio-fs
///   backend cannot use through the bridge (it cannot send notifications; request timeouts
///   would abort our connection for a slow backend).
///
/// Everything that only changes the bytes of requests and replies (`SECURITY_CTX`,
/// `CREATE_SUPP_GROUP`, `SETXATTR_EXT`, ...) is kept: the bridge forwards requests verbatim.
pub fn forwardable_flags() -> u64 {
    use init_flags::*;
    let low = (0..32u32)
        .map(|b| 1u64 << b)
        .filter(|&f| f != MAP_ALIGNMENT && f != SUBMOUNTS && f != INIT_RESERVED)
        .fold(0, |a, f| a | f);
    low | SECURITY_CTX
        | CREATE_SUPP_GROUP
        | HAS_EXPIRE_ONLY
        | DIRECT_IO_ALLOW_MMAP
        | NO_EXPORT_SUPPORT
}

/// What one request of the bridge can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pages per request: `queue_size - 4` (as the Linux virtio-fs driver), the kernel's
    /// `fs.fuse.max_pages_limit`, and the bridge's own `--max-pages`.
    pub max_pages: u32,
}

impl Limits {
    /// Limits for a queue of `queue_size` descriptors, a kernel limit of `kernel_max_pages`
    /// and an optional configured cap.
    pub fn new(queue_size: u16, kernel_max_pages: u32, cap: Option<u32>) -> Self {
        let q = u32::from(queue_size).saturating_sub(HEADER_OVERHEAD).max(1);
        let max_pages = q
            .min(kernel_max_pages.max(1))
            .min(cap.unwrap_or(u32::MAX).max(1));
        Self { max_pages }
    }

    /// Largest `max_write` these limits allow.
    pub fn max_write(&self) -> u32 {
        self.max_pages * PAGE_SIZE
    }
}

/// The kernel's `fs.fuse.max_pages_limit` (256 when the sysctl is absent).
pub fn kernel_max_pages() -> u32 {
    std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(256)
}

/// The kernel's INIT request body, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelInit {
    /// Protocol major.
    pub major: u32,
    /// Protocol minor.
    pub minor: u32,
    /// `max_readahead`.
    pub max_readahead: u32,
    /// `flags | flags2 << 32` (flags2 only with `INIT_EXT`).
    pub flags: u64,
}

impl KernelInit {
    /// Decodes `fuse_init_in` (16 bytes before 7.36, 64 since).
    pub fn parse(body: &[u8]) -> Option<Self> {
        if body.len() < 16 {
            return None;
        }
        let mut raw = InitIn::default();
        let n = body.len().min(std::mem::size_of::<InitIn>());
        raw.as_mut_slice()[..n].copy_from_slice(&body[..n]);
        let mut flags = u64::from(raw.flags);
        if flags & init_flags::INIT_EXT != 0 && n >= 24 {
            flags |= u64::from(raw.flags2) << 32;
        }
        Some(Self {
            major: raw.major,
            minor: raw.minor,
            max_readahead: raw.max_readahead,
            flags,
        })
    }

    /// The INIT body the backend gets: the kernel's, with only [`forwardable_flags`] offered.
    /// The body keeps the kernel's length (`body_len`).
    pub fn to_backend(&self, body_len: usize) -> Vec<u8> {
        let mut flags = self.flags & forwardable_flags();
        if flags >> 32 != 0 {
            flags |= init_flags::INIT_EXT;
        } else {
            flags &= !init_flags::INIT_EXT;
        }
        let raw = InitIn {
            major: self.major,
            minor: self.minor,
            max_readahead: self.max_readahead,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            unused: [0; 11],
        };
        let mut v = raw.as_slice().to_vec();
        v.truncate(body_len.clamp(16, v.len()));
        v
    }

    /// The flags offered to the backend.
    pub fn offered(&self) -> u64 {
        let f = self.flags & forwardable_flags();
        if f >> 32 != 0 {
            f | init_flags::INIT_EXT
        } else {
            f & !init_flags::INIT_EXT
        }
    }
}

/// What the session agreed on, as told to the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// Protocol minor.
    pub minor: u32,
    /// Flags.
    pub flags: u64,
    /// `max_write` told to the kernel.
    pub max_write: u32,
    /// `max_pages` told to the kernel (the kernel's default 32 without `MAX_PAGES`).
    pub max_pages: u32,
}

/// Turns the backend's `fuse_init_out` (`body`, as many bytes as it wrote) into the one the
/// kernel gets: flags limited to `offered`, minor at most the kernel's, `max_write` and
/// `max_pages` within `limits`, DAX / passthrough / timeout fields zeroed. Returns the body to
/// send (same length) and what was agreed.
pub fn to_kernel(
    body: &[u8],
    kernel: &KernelInit,
    limits: Limits,
) -> Result<(Vec<u8>, Agreed), String> {
    // fuse_init_out up to max_write is 24 bytes (FUSE_COMPAT_22_INIT_OUT_SIZE); older replies
    // (8 bytes) are too old for any kernel we run on.
    if body.len() < 24 {
        return Err(format!("INIT reply of {} bytes", body.len()));
    }
    let mut out = InitOut::default();
    let n = body.len().min(std::mem::size_of::<InitOut>());
    out.as_mut_slice()[..n].copy_from_slice(&body[..n]);
    if out.major != kernel.major {
        return Err(format!(
            "backend speaks FUSE {}.{}, the kernel {}.{}",
            out.major, out.minor, kernel.major, kernel.minor
        ));
    }
    out.minor = out.minor.min(kernel.minor);
    let long = n >= 64;
    let mut flags = u64::from(out.flags);
    if long && flags & init_flags::INIT_EXT != 0 {
        flags |= u64::from(out.flags2) << 32;
    }
    flags &= kernel.offered();
    let max_pages = if flags & init_flags::MAX_PAGES != 0 && long {
        u32::from(out.max_pages).clamp(1, limits.max_pages)
    } else {
        flags &= !init_flags::MAX_PAGES;
        DEFAULT_MAX_PAGES.min(limits.max_pages)
    };
    out.max_write = out.max_write.clamp(PAGE_SIZE, max_pages * PAGE_SIZE);
    if long {
        out.max_pages = max_pages as u16;
        out.map_alignment = 0;
        out.max_stack_depth = 0;
        out.unused = [0; 6];
        if flags >> 32 != 0 {
            flags |= init_flags::INIT_EXT;
        } else {
            flags &= !init_flags::INIT_EXT;
        }
        out.flags2 = (flags >> 32) as u32;
    } else {
        flags &= 0xffff_ffff;
    }
    out.flags = flags as u32;
    let mut v = out.as_slice().to_vec();
    v.truncate(n);
    Ok((
        v,
        Agreed {
            minor: out.minor,
            flags,
            max_write: out.max_write,
            max_pages,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(flags: u64) -> KernelInit {
        KernelInit {
            major: 7,
            minor: 44,
            max_readahead: 128 << 10,
            flags,
        }
    }

    #[test]
    fn limits_follow_the_queue_size_like_the_guest_driver() {
        assert_eq!(Limits::new(128, 256, None).max_pages, 124);
        assert_eq!(Limits::new(1024, 256, None).max_pages, 256);
        assert_eq!(Limits::new(1024, 256, Some(32)).max_pages, 32);
        assert_eq!(Limits::new(4, 256, None).max_pages, 1);
        assert_eq!(Limits::new(1024, 256, None).max_write(), 1 << 20);
    }

    #[test]
    fn init_in_drops_what_the_bridge_cannot_carry() {
        use init_flags::*;
        let k = kernel(
            ASYNC_READ
                | MAX_PAGES
                | MAP_ALIGNMENT
                | INIT_EXT
                | PASSTHROUGH
                | HAS_RESEND
                | SECURITY_CTX
                | (1 << 50),
        );
        let body = k.to_backend(64);
        assert_eq!(body.len(), 64);
        let back = KernelInit::parse(&body).unwrap();
        assert_eq!(
            back.flags,
            ASYNC_READ | MAX_PAGES | INIT_EXT | SECURITY_CTX,
            "{:#x}",
            back.flags
        );
        // No high flags left: INIT_EXT goes too.
        let k = kernel(ASYNC_READ | INIT_EXT | PASSTHROUGH);
        assert_eq!(
            KernelInit::parse(&k.to_backend(64)).unwrap().flags,
            ASYNC_READ
        );
        assert!(KernelInit::parse(&[0; 8]).is_none());
    }

    fn reply(flags: u64, max_write: u32, max_pages: u16, minor: u32) -> Vec<u8> {
        InitOut {
            major: 7,
            minor,
            max_readahead: 1 << 17,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            max_background: 64,
            congestion_threshold: 48,
            max_write,
            time_gran: 1,
            max_pages,
            map_alignment: 12,
            max_stack_depth: 2,
            unused: [7; 6],
        }
        .as_slice()
        .to_vec()
    }

    #[test]
    fn init_out_is_intersected_and_limited() {
        use init_flags::*;
        let k = kernel(ASYNC_READ | MAX_PAGES | DO_READDIRPLUS | INIT_EXT | SECURITY_CTX);
        let r = reply(
            ASYNC_READ | MAX_PAGES | WRITEBACK_CACHE | INIT_EXT | SECURITY_CTX | HAS_INODE_DAX,
            8 << 20,
            2048,
            45,
        );
        let (body, a) = to_kernel(&r, &k, Limits::new(128, 256, None)).unwrap();
        assert_eq!(a.flags, ASYNC_READ | MAX_PAGES | INIT_EXT | SECURITY_CTX);
        assert_eq!(a.max_pages, 124);
        assert_eq!(a.max_write, 124 * 4096);
        assert_eq!(a.minor, 44);
        let mut out = InitOut::default();
        out.as_mut_slice().copy_from_slice(&body);
        assert_eq!(out.max_pages, 124);
        assert_eq!(out.map_alignment, 0);
        assert_eq!(out.max_stack_depth, 0);
        assert_eq!(out.unused, [0; 6]);
        assert_eq!(out.max_background, 64);
    }

    #[test]
    fn without_max_pages_the_kernel_default_bounds_max_write() {
        use init_flags::*;
        let k = kernel(ASYNC_READ | MAX_PAGES);
        let (_, a) = to_kernel(
            &reply(ASYNC_READ, 1 << 20, 0, 31),
            &k,
            Limits::new(1024, 256, None),
        )
        .unwrap();
        assert_eq!((a.max_pages, a.max_write, a.minor), (32, 32 * 4096, 31));
        // A short (7.22-style) reply keeps its length.
        let r = reply(ASYNC_READ, 4096, 0, 22);
        let (body, a) = to_kernel(&r[..24], &k, Limits::new(1024, 256, None)).unwrap();
        assert_eq!(body.len(), 24);
        assert_eq!(a.max_write, 4096);
        assert!(to_kernel(&r[..8], &k, Limits::new(1024, 256, None)).is_err());
        let mut bad = r.clone();
        bad[0] = 8;
        assert!(to_kernel(&bad, &k, Limits::new(1024, 256, None)).is_err());
    }
}
