//! The FUSE wire format: Linux `include/uapi/linux/fuse.h` up to protocol 7.45, as `#[repr(C)]`
//! structs that are read from and written to guest memory as plain bytes ([`ByteValued`]).
//! Field names are the kernel's, so fuse.h documents them; sizes are checked at compile time.

#![allow(missing_docs)] // one struct or constant per kernel definition: fuse.h documents them

mod structs;
pub use structs::*;

/// Protocol major version.
pub const KERNEL_VERSION: u32 = 7;
/// The newest protocol minor version this crate speaks (Linux 6.18: COPY_FILE_RANGE_64).
pub const KERNEL_MINOR_VERSION: u32 = 45;
/// The oldest minor version a guest may negotiate (Linux 4.19, the first with virtio-fs
/// upstream was 5.4 at 7.31; 7.27 keeps older out-of-tree drivers working).
pub const MIN_KERNEL_MINOR_VERSION: u32 = 27;
/// Node id of the share's root directory.
pub const ROOT_ID: u64 = 1;
/// The kernel's minimum read buffer: every reply but READ/READDIR fits in it.
pub const MIN_READ_BUFFER: usize = 8192;
/// `FUSE_COMPAT_SETXATTR_IN_SIZE`: SETXATTR's argument without SETXATTR_EXT.
pub const COMPAT_SETXATTR_IN_SIZE: usize = 8;

/// `enum fuse_opcode`: every request the kernel sends, through 7.45.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Opcode {
    Lookup = 1,
    Forget = 2,
    Getattr = 3,
    Setattr = 4,
    Readlink = 5,
    Symlink = 6,
    Mknod = 8,
    Mkdir = 9,
    Unlink = 10,
    Rmdir = 11,
    Rename = 12,
    Link = 13,
    Open = 14,
    Read = 15,
    Write = 16,
    Statfs = 17,
    Release = 18,
    Fsync = 20,
    Setxattr = 21,
    Getxattr = 22,
    Listxattr = 23,
    Removexattr = 24,
    Flush = 25,
    Init = 26,
    Opendir = 27,
    Readdir = 28,
    Releasedir = 29,
    Fsyncdir = 30,
    Getlk = 31,
    Setlk = 32,
    Setlkw = 33,
    Access = 34,
    Create = 35,
    Interrupt = 36,
    Bmap = 37,
    Destroy = 38,
    Ioctl = 39,
    Poll = 40,
    NotifyReply = 41,
    BatchForget = 42,
    Fallocate = 43,
    Readdirplus = 44,
    Rename2 = 45,
    Lseek = 46,
    CopyFileRange = 47,
    SetupMapping = 48,
    RemoveMapping = 49,
    Syncfs = 50,
    Tmpfile = 51,
    Statx = 52,
    CopyFileRange64 = 53,
}

impl Opcode {
    /// Every opcode, in numeric order.
    pub const ALL: [Opcode; 51] = [
        Opcode::Lookup,
        Opcode::Forget,
        Opcode::Getattr,
        Opcode::Setattr,
        Opcode::Readlink,
        Opcode::Symlink,
        Opcode::Mknod,
        Opcode::Mkdir,
        Opcode::Unlink,
        Opcode::Rmdir,
        Opcode::Rename,
        Opcode::Link,
        Opcode::Open,
        Opcode::Read,
        Opcode::Write,
        Opcode::Statfs,
        Opcode::Release,
        Opcode::Fsync,
        Opcode::Setxattr,
        Opcode::Getxattr,
        Opcode::Listxattr,
        Opcode::Removexattr,
        Opcode::Flush,
        Opcode::Init,
        Opcode::Opendir,
        Opcode::Readdir,
        Opcode::Releasedir,
        Opcode::Fsyncdir,
        Opcode::Getlk,
        Opcode::Setlk,
        Opcode::Setlkw,
        Opcode::Access,
        Opcode::Create,
        Opcode::Interrupt,
        Opcode::Bmap,
        Opcode::Destroy,
        Opcode::Ioctl,
        Opcode::Poll,
        Opcode::NotifyReply,
        Opcode::BatchForget,
        Opcode::Fallocate,
        Opcode::Readdirplus,
        Opcode::Rename2,
        Opcode::Lseek,
        Opcode::CopyFileRange,
        Opcode::SetupMapping,
        Opcode::RemoveMapping,
        Opcode::Syncfs,
        Opcode::Tmpfile,
        Opcode::Statx,
        Opcode::CopyFileRange64,
    ];

    /// The opcode numbered `n`, if there is one (7, 19 and 0 are unused by the kernel).
    pub fn from_u32(n: u32) -> Option<Opcode> {
        Opcode::ALL.iter().copied().find(|op| *op as u32 == n)
    }

    /// Whether the kernel expects no reply (FORGET, BATCH_FORGET; NOTIFY_REPLY answers us).
    pub fn has_no_reply(self) -> bool {
        matches!(
            self,
            Opcode::Forget | Opcode::BatchForget | Opcode::NotifyReply
        )
    }
}

/// INIT flags (`fuse_init_in.flags | flags2 << 32`, `fuse_init_out` the same way).
pub mod init_flags {
    pub const ASYNC_READ: u64 = 1 << 0;
    pub const POSIX_LOCKS: u64 = 1 << 1;
    pub const FILE_OPS: u64 = 1 << 2;
    pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
    pub const EXPORT_SUPPORT: u64 = 1 << 4;
    pub const BIG_WRITES: u64 = 1 << 5;
    pub const DONT_MASK: u64 = 1 << 6;
    pub const SPLICE_WRITE: u64 = 1 << 7;
    pub const SPLICE_MOVE: u64 = 1 << 8;
    pub const SPLICE_READ: u64 = 1 << 9;
    pub const FLOCK_LOCKS: u64 = 1 << 10;
    pub const HAS_IOCTL_DIR: u64 = 1 << 11;
    pub const AUTO_INVAL_DATA: u64 = 1 << 12;
    pub const DO_READDIRPLUS: u64 = 1 << 13;
    pub const READDIRPLUS_AUTO: u64 = 1 << 14;
    pub const ASYNC_DIO: u64 = 1 << 15;
    pub const WRITEBACK_CACHE: u64 = 1 << 16;
    pub const NO_OPEN_SUPPORT: u64 = 1 << 17;
    pub const PARALLEL_DIROPS: u64 = 1 << 18;
    pub const HANDLE_KILLPRIV: u64 = 1 << 19;
    pub const POSIX_ACL: u64 = 1 << 20;
    pub const ABORT_ERROR: u64 = 1 << 21;
    pub const MAX_PAGES: u64 = 1 << 22;
    pub const CACHE_SYMLINKS: u64 = 1 << 23;
    pub const NO_OPENDIR_SUPPORT: u64 = 1 << 24;
    pub const EXPLICIT_INVAL_DATA: u64 = 1 << 25;
    pub const MAP_ALIGNMENT: u64 = 1 << 26;
    pub const SUBMOUNTS: u64 = 1 << 27;
    pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
    pub const SETXATTR_EXT: u64 = 1 << 29;
    pub const INIT_EXT: u64 = 1 << 30;
    pub const INIT_RESERVED: u64 = 1 << 31;
    pub const SECURITY_CTX: u64 = 1 << 32;
    pub const HAS_INODE_DAX: u64 = 1 << 33;
    pub const CREATE_SUPP_GROUP: u64 = 1 << 34;
    pub const HAS_EXPIRE_ONLY: u64 = 1 << 35;
    pub const DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const NO_EXPORT_SUPPORT: u64 = 1 << 38;
    pub const HAS_RESEND: u64 = 1 << 39;
    pub const ALLOW_IDMAP: u64 = 1 << 40;
    pub const OVER_IO_URING: u64 = 1 << 41;
    pub const REQUEST_TIMEOUT: u64 = 1 << 42;

    /// Each flag's name, for the INIT log line.
    pub const NAMES: [(u64, &str); 43] = [
        (ASYNC_READ, "ASYNC_READ"),
        (POSIX_LOCKS, "POSIX_LOCKS"),
        (FILE_OPS, "FILE_OPS"),
        (ATOMIC_O_TRUNC, "ATOMIC_O_TRUNC"),
        (EXPORT_SUPPORT, "EXPORT_SUPPORT"),
        (BIG_WRITES, "BIG_WRITES"),
        (DONT_MASK, "DONT_MASK"),
        (SPLICE_WRITE, "SPLICE_WRITE"),
        (SPLICE_MOVE, "SPLICE_MOVE"),
        (SPLICE_READ, "SPLICE_READ"),
        (FLOCK_LOCKS, "FLOCK_LOCKS"),
        (HAS_IOCTL_DIR, "HAS_IOCTL_DIR"),
        (AUTO_INVAL_DATA, "AUTO_INVAL_DATA"),
        (DO_READDIRPLUS, "DO_READDIRPLUS"),
        (READDIRPLUS_AUTO, "READDIRPLUS_AUTO"),
        (ASYNC_DIO, "ASYNC_DIO"),
        (WRITEBACK_CACHE, "WRITEBACK_CACHE"),
        (NO_OPEN_SUPPORT, "NO_OPEN_SUPPORT"),
        (PARALLEL_DIROPS, "PARALLEL_DIROPS"),
        (HANDLE_KILLPRIV, "HANDLE_KILLPRIV"),
        (POSIX_ACL, "POSIX_ACL"),
        (ABORT_ERROR, "ABORT_ERROR"),
        (MAX_PAGES, "MAX_PAGES"),
        (CACHE_SYMLINKS, "CACHE_SYMLINKS"),
        (NO_OPENDIR_SUPPORT, "NO_OPENDIR_SUPPORT"),
        (EXPLICIT_INVAL_DATA, "EXPLICIT_INVAL_DATA"),
        (MAP_ALIGNMENT, "MAP_ALIGNMENT"),
        (SUBMOUNTS, "SUBMOUNTS"),
        (HANDLE_KILLPRIV_V2, "HANDLE_KILLPRIV_V2"),
        (SETXATTR_EXT, "SETXATTR_EXT"),
        (INIT_EXT, "INIT_EXT"),
        (INIT_RESERVED, "INIT_RESERVED"),
        (SECURITY_CTX, "SECURITY_CTX"),
        (HAS_INODE_DAX, "HAS_INODE_DAX"),
        (CREATE_SUPP_GROUP, "CREATE_SUPP_GROUP"),
        (HAS_EXPIRE_ONLY, "HAS_EXPIRE_ONLY"),
        (DIRECT_IO_ALLOW_MMAP, "DIRECT_IO_ALLOW_MMAP"),
        (PASSTHROUGH, "PASSTHROUGH"),
        (NO_EXPORT_SUPPORT, "NO_EXPORT_SUPPORT"),
        (HAS_RESEND, "HAS_RESEND"),
        (ALLOW_IDMAP, "ALLOW_IDMAP"),
        (OVER_IO_URING, "OVER_IO_URING"),
        (REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
    ];

    /// `flags` as `A | B | ...` (unknown bits in hex), for logs.
    pub fn describe(flags: u64) -> String {
        let mut parts: Vec<String> = NAMES
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, name)| (*name).to_string())
            .collect();
        let known = NAMES.iter().fold(0, |acc, (bit, _)| acc | bit);
        if flags & !known != 0 {
            parts.push(format!("{:#x}", flags & !known));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" | ")
        }
    }
}

/// SETATTR `valid` bits.
pub mod fattr {
    pub const MODE: u32 = 1 << 0;
    pub const UID: u32 = 1 << 1;
    pub const GID: u32 = 1 << 2;
    pub const SIZE: u32 = 1 << 3;
    pub const ATIME: u32 = 1 << 4;
    pub const MTIME: u32 = 1 << 5;
    pub const FH: u32 = 1 << 6;
    pub const ATIME_NOW: u32 = 1 << 7;
    pub const MTIME_NOW: u32 = 1 << 8;
    pub const LOCKOWNER: u32 = 1 << 9;
    pub const CTIME: u32 = 1 << 10;
    pub const KILL_SUIDGID: u32 = 1 << 11;
}

/// `fuse_open_out.open_flags`.
pub mod fopen {
    pub const DIRECT_IO: u32 = 1 << 0;
    pub const KEEP_CACHE: u32 = 1 << 1;
    pub const NONSEEKABLE: u32 = 1 << 2;
    pub const CACHE_DIR: u32 = 1 << 3;
    pub const STREAM: u32 = 1 << 4;
    pub const NOFLUSH: u32 = 1 << 5;
    pub const PARALLEL_DIRECT_WRITES: u32 = 1 << 6;
    pub const PASSTHROUGH: u32 = 1 << 7;
}

/// Small flag sets of single requests.
pub mod flags {
    /// `fuse_release_in.release_flags`.
    pub const RELEASE_FLUSH: u32 = 1 << 0;
    pub const RELEASE_FLOCK_UNLOCK: u32 = 1 << 1;
    /// `fuse_getattr_in.getattr_flags`.
    pub const GETATTR_FH: u32 = 1 << 0;
    /// `fuse_lk_in.lk_flags`.
    pub const LK_FLOCK: u32 = 1 << 0;
    /// `fuse_write_in.write_flags`.
    pub const WRITE_CACHE: u32 = 1 << 0;
    pub const WRITE_LOCKOWNER: u32 = 1 << 1;
    pub const WRITE_KILL_SUIDGID: u32 = 1 << 2;
    /// `fuse_read_in.read_flags`.
    pub const READ_LOCKOWNER: u32 = 1 << 1;
    /// `fuse_fsync_in.fsync_flags`.
    pub const FSYNC_FDATASYNC: u32 = 1 << 0;
    /// `fuse_attr.flags`.
    pub const ATTR_SUBMOUNT: u32 = 1 << 0;
    pub const ATTR_DAX: u32 = 1 << 1;
    /// `fuse_open_in.open_flags` / `fuse_create_in.open_flags`.
    pub const OPEN_KILL_SUIDGID: u32 = 1 << 0;
    /// `fuse_setxattr_in.setxattr_flags`.
    pub const SETXATTR_ACL_KILL_SGID: u32 = 1 << 0;
    /// `fuse_ioctl_in.flags`.
    pub const IOCTL_COMPAT: u32 = 1 << 0;
    pub const IOCTL_UNRESTRICTED: u32 = 1 << 1;
    pub const IOCTL_RETRY: u32 = 1 << 2;
    pub const IOCTL_32BIT: u32 = 1 << 3;
    pub const IOCTL_DIR: u32 = 1 << 4;
    pub const IOCTL_COMPAT_X32: u32 = 1 << 5;
}

/// Request extension types (`fuse_ext_header.type`, INIT_EXT): 0..=31 are security contexts.
pub mod ext {
    /// The first protocol minor with request extensions (`fuse_in_header.total_extlen`); a
    /// 7.36 or 7.37 guest sends its security context as a plain argument instead.
    pub const FIRST_MINOR: u32 = 38;
    pub const MAX_NR_SECCTX: u32 = 31;
    pub const GROUPS: u32 = 32;
}
