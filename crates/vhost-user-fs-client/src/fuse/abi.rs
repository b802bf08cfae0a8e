//! The FUSE wire format (Linux `include/uapi/linux/fuse.h`, protocol 7.38), written out here
//! rather than taken from a server library, so that a layout mistake on the server side is not
//! mirrored by this client. Sizes are checked at compile time against the kernel's.

#![allow(missing_docs)] // field names are the kernel's; see fuse.h for their meaning

use vm_memory::ByteValued;

/// Protocol major version we speak.
pub const KERNEL_VERSION: u32 = 7;
/// Protocol minor version we announce by default (Linux 6.2–6.8).
pub const KERNEL_MINOR_VERSION: u32 = 38;
/// Node id of the root directory.
pub const ROOT_ID: u64 = 1;

/// FUSE opcodes.
pub mod opcode {
    pub const LOOKUP: u32 = 1;
    pub const FORGET: u32 = 2;
    pub const GETATTR: u32 = 3;
    pub const SETATTR: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const SYMLINK: u32 = 6;
    pub const MKNOD: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const UNLINK: u32 = 10;
    pub const RMDIR: u32 = 11;
    pub const RENAME: u32 = 12;
    pub const LINK: u32 = 13;
    pub const OPEN: u32 = 14;
    pub const READ: u32 = 15;
    pub const WRITE: u32 = 16;
    pub const STATFS: u32 = 17;
    pub const RELEASE: u32 = 18;
    pub const FSYNC: u32 = 20;
    pub const SETXATTR: u32 = 21;
    pub const GETXATTR: u32 = 22;
    pub const LISTXATTR: u32 = 23;
    pub const REMOVEXATTR: u32 = 24;
    pub const FLUSH: u32 = 25;
    pub const INIT: u32 = 26;
    pub const OPENDIR: u32 = 27;
    pub const READDIR: u32 = 28;
    pub const RELEASEDIR: u32 = 29;
    pub const FSYNCDIR: u32 = 30;
    pub const GETLK: u32 = 31;
    pub const SETLK: u32 = 32;
    pub const SETLKW: u32 = 33;
    pub const ACCESS: u32 = 34;
    pub const CREATE: u32 = 35;
    pub const INTERRUPT: u32 = 36;
    pub const BMAP: u32 = 37;
    pub const DESTROY: u32 = 38;
    pub const IOCTL: u32 = 39;
    pub const POLL: u32 = 40;
    pub const BATCH_FORGET: u32 = 42;
    pub const FALLOCATE: u32 = 43;
    pub const READDIRPLUS: u32 = 44;
    pub const RENAME2: u32 = 45;
    pub const LSEEK: u32 = 46;
    pub const COPY_FILE_RANGE: u32 = 47;
    pub const SETUPMAPPING: u32 = 48;
    pub const REMOVEMAPPING: u32 = 49;
    pub const SYNCFS: u32 = 50;
    pub const TMPFILE: u32 = 51;
    pub const STATX: u32 = 52;
}

/// INIT flags (`flags | flags2 << 32`).
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
    // Newer than this module's 7.38 layouts (fuse.h 7.38–7.43), for the bridge's INIT.
    pub const CREATE_SUPP_GROUP: u64 = 1 << 34;
    pub const HAS_EXPIRE_ONLY: u64 = 1 << 35;
    pub const DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;
    pub const PASSTHROUGH: u64 = 1 << 37;
    pub const NO_EXPORT_SUPPORT: u64 = 1 << 38;
    pub const HAS_RESEND: u64 = 1 << 39;
    pub const ALLOW_IDMAP: u64 = 1 << 40;
    pub const OVER_IO_URING: u64 = 1 << 41;
    pub const REQUEST_TIMEOUT: u64 = 1 << 42;
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

/// GETATTR flag: `fh` is valid.
pub const GETATTR_FH: u32 = 1;
/// FSYNC flag: data only.
pub const FSYNC_FDATASYNC: u32 = 1;
/// RELEASE flag: flush as well.
pub const RELEASE_FLUSH: u32 = 1;

macro_rules! wire {
    ($( $(#[$m:meta])* struct $name:ident [$size:expr] { $($f:ident : $t:ty),* $(,)? } )*) => {
        $(
            $(#[$m])*
            #[repr(C)]
            #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
            pub struct $name { $(pub $f: $t),* }
            // SAFETY: repr(C) integers only, and the size check below proves there is no padding
            // beyond what the kernel struct has (all fields are naturally aligned).
            unsafe impl ByteValued for $name {}
            const _: () = assert!(std::mem::size_of::<$name>() == $size);
        )*
    };
}

wire! {
    /// `fuse_in_header`.
    struct InHeader [40] { len: u32, opcode: u32, unique: u64, nodeid: u64, uid: u32, gid: u32, pid: u32, total_extlen: u16, padding: u16 }
    /// `fuse_out_header`.
    struct OutHeader [16] { len: u32, error: i32, unique: u64 }
    /// `fuse_attr`.
    struct Attr [88] {
        ino: u64, size: u64, blocks: u64, atime: u64, mtime: u64, ctime: u64,
        atimensec: u32, mtimensec: u32, ctimensec: u32, mode: u32, nlink: u32, uid: u32,
        gid: u32, rdev: u32, blksize: u32, flags: u32,
    }
    /// `fuse_entry_out`.
    struct EntryOut [128] {
        nodeid: u64, generation: u64, entry_valid: u64, attr_valid: u64,
        entry_valid_nsec: u32, attr_valid_nsec: u32, attr: Attr,
    }
    /// `fuse_forget_in`.
    struct ForgetIn [8] { nlookup: u64 }
    /// `fuse_forget_one`.
    struct ForgetOne [16] { nodeid: u64, nlookup: u64 }
    /// `fuse_batch_forget_in`.
    struct BatchForgetIn [8] { count: u32, dummy: u32 }
    /// `fuse_getattr_in`.
    struct GetattrIn [16] { getattr_flags: u32, dummy: u32, fh: u64 }
    /// `fuse_attr_out`.
    struct AttrOut [104] { attr_valid: u64, attr_valid_nsec: u32, dummy: u32, attr: Attr }
    /// `fuse_mknod_in`.
    struct MknodIn [16] { mode: u32, rdev: u32, umask: u32, padding: u32 }
    /// `fuse_mkdir_in`.
    struct MkdirIn [8] { mode: u32, umask: u32 }
    /// `fuse_rename_in`.
    struct RenameIn [8] { newdir: u64 }
    /// `fuse_rename2_in`.
    struct Rename2In [16] { newdir: u64, flags: u32, padding: u32 }
    /// `fuse_link_in`.
    struct LinkIn [8] { oldnodeid: u64 }
    /// `fuse_setattr_in`.
    struct SetattrIn [88] {
        valid: u32, padding: u32, fh: u64, size: u64, lock_owner: u64, atime: u64, mtime: u64,
        ctime: u64, atimensec: u32, mtimensec: u32, ctimensec: u32, mode: u32, unused4: u32,
        uid: u32, gid: u32, unused5: u32,
    }
    /// `fuse_open_in`.
    struct OpenIn [8] { flags: u32, open_flags: u32 }
    /// `fuse_create_in`.
    struct CreateIn [16] { flags: u32, mode: u32, umask: u32, open_flags: u32 }
    /// `fuse_open_out`.
    struct OpenOut [16] { fh: u64, open_flags: u32, backing_id: i32 }
    /// `fuse_release_in`.
    struct ReleaseIn [24] { fh: u64, flags: u32, release_flags: u32, lock_owner: u64 }
    /// `fuse_flush_in`.
    struct FlushIn [24] { fh: u64, unused: u32, padding: u32, lock_owner: u64 }
    /// `fuse_read_in`.
    struct ReadIn [40] { fh: u64, offset: u64, size: u32, read_flags: u32, lock_owner: u64, flags: u32, padding: u32 }
    /// `fuse_write_in`.
    struct WriteIn [40] { fh: u64, offset: u64, size: u32, write_flags: u32, lock_owner: u64, flags: u32, padding: u32 }
    /// `fuse_write_out`.
    struct WriteOut [8] { size: u32, padding: u32 }
    /// `fuse_kstatfs`.
    struct Kstatfs [80] {
        blocks: u64, bfree: u64, bavail: u64, files: u64, ffree: u64, bsize: u32, namelen: u32,
        frsize: u32, padding: u32, spare: [u32; 6],
    }
    /// `fuse_fsync_in`.
    struct FsyncIn [16] { fh: u64, fsync_flags: u32, padding: u32 }
    /// `fuse_setxattr_in` without `FUSE_SETXATTR_EXT` (the compat layout).
    struct SetxattrInCompat [8] { size: u32, flags: u32 }
    /// `fuse_setxattr_in` with `FUSE_SETXATTR_EXT`.
    struct SetxattrIn [16] { size: u32, flags: u32, setxattr_flags: u32, padding: u32 }
    /// `fuse_getxattr_in`.
    struct GetxattrIn [8] { size: u32, padding: u32 }
    /// `fuse_getxattr_out`.
    struct GetxattrOut [8] { size: u32, padding: u32 }
    /// `fuse_access_in`.
    struct AccessIn [8] { mask: u32, padding: u32 }
    /// `fuse_init_in` (64 bytes since 7.36; 16 before).
    struct InitIn [64] { major: u32, minor: u32, max_readahead: u32, flags: u32, flags2: u32, unused: [u32; 11] }
    /// `fuse_init_out`.
    struct InitOut [64] {
        major: u32, minor: u32, max_readahead: u32, flags: u32, max_background: u16,
        congestion_threshold: u16, max_write: u32, time_gran: u32, max_pages: u16,
        map_alignment: u16, flags2: u32, max_stack_depth: u32, unused: [u32; 6],
    }
    /// `fuse_fallocate_in`.
    struct FallocateIn [32] { fh: u64, offset: u64, length: u64, mode: u32, padding: u32 }
    /// `fuse_lseek_in`.
    struct LseekIn [24] { fh: u64, offset: u64, whence: u32, padding: u32 }
    /// `fuse_lseek_out`.
    struct LseekOut [8] { offset: u64 }
    /// `fuse_dirent` without the name.
    struct Dirent [24] { ino: u64, off: u64, namelen: u32, typ: u32 }
}

impl InitOut {
    /// `flags | flags2 << 32`.
    pub fn flags64(&self) -> u64 {
        u64::from(self.flags) | (u64::from(self.flags2) << 32)
    }
}
