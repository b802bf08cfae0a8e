//! The request and reply structs of `include/uapi/linux/fuse.h`, field for field.

#![allow(missing_docs)] // field names are the kernel's: fuse.h documents them

use vm_memory::ByteValued;

/// `struct fuse_attr`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

/// `struct fuse_kstatfs`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kstatfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

/// `struct fuse_file_lock`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FileLock {
    pub start: u64,
    pub end: u64,
    pub typ: u32,
    pub pid: u32,
}

/// `struct fuse_entry_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EntryOut {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: Attr,
}

/// `struct fuse_forget_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ForgetIn {
    pub nlookup: u64,
}

/// `struct fuse_forget_one`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ForgetOne {
    pub nodeid: u64,
    pub nlookup: u64,
}

/// `struct fuse_batch_forget_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchForgetIn {
    pub count: u32,
    pub dummy: u32,
}

/// `struct fuse_getattr_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GetattrIn {
    pub getattr_flags: u32,
    pub dummy: u32,
    pub fh: u64,
}

/// `struct fuse_attr_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AttrOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: Attr,
}

/// `struct fuse_mknod_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MknodIn {
    pub mode: u32,
    pub rdev: u32,
    pub umask: u32,
    pub padding: u32,
}

/// `struct fuse_mkdir_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MkdirIn {
    pub mode: u32,
    pub umask: u32,
}

/// `struct fuse_rename_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RenameIn {
    pub newdir: u64,
}

/// `struct fuse_rename2_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rename2In {
    pub newdir: u64,
    pub flags: u32,
    pub padding: u32,
}

/// `struct fuse_link_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkIn {
    pub oldnodeid: u64,
}

/// `struct fuse_setattr_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SetattrIn {
    pub valid: u32,
    pub padding: u32,
    pub fh: u64,
    pub size: u64,
    pub lock_owner: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub unused4: u32,
    pub uid: u32,
    pub gid: u32,
    pub unused5: u32,
}

/// `struct fuse_open_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenIn {
    pub flags: u32,
    pub open_flags: u32,
}

/// `struct fuse_create_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CreateIn {
    pub flags: u32,
    pub mode: u32,
    pub umask: u32,
    pub open_flags: u32,
}

/// `struct fuse_open_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenOut {
    pub fh: u64,
    pub open_flags: u32,
    /// 7.40: the backing file id of FOPEN_PASSTHROUGH (padding before).
    pub backing_id: i32,
}

/// `struct fuse_release_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseIn {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

/// `struct fuse_flush_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushIn {
    pub fh: u64,
    pub unused: u32,
    pub padding: u32,
    pub lock_owner: u64,
}

/// `struct fuse_read_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub read_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

/// `struct fuse_write_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteIn {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub write_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

/// `struct fuse_write_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteOut {
    pub size: u32,
    pub padding: u32,
}

/// `struct fuse_statfs_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatfsOut {
    pub st: Kstatfs,
}

/// `struct fuse_fsync_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FsyncIn {
    pub fh: u64,
    pub fsync_flags: u32,
    pub padding: u32,
}

/// `struct fuse_setxattr_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SetxattrIn {
    pub size: u32,
    pub flags: u32,
    pub setxattr_flags: u32,
    pub padding: u32,
}

/// `struct fuse_getxattr_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GetxattrIn {
    pub size: u32,
    pub padding: u32,
}

/// `struct fuse_getxattr_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GetxattrOut {
    pub size: u32,
    pub padding: u32,
}

/// `struct fuse_lk_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LkIn {
    pub fh: u64,
    pub owner: u64,
    pub lk: FileLock,
    pub lk_flags: u32,
    pub padding: u32,
}

/// `struct fuse_lk_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LkOut {
    pub lk: FileLock,
}

/// `struct fuse_access_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AccessIn {
    pub mask: u32,
    pub padding: u32,
}

/// `struct fuse_init_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InitIn {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub flags2: u32,
    pub unused: [u32; 11],
}

/// `struct fuse_init_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InitOut {
    pub major: u32,
    pub minor: u32,
    pub max_readahead: u32,
    pub flags: u32,
    pub max_background: u16,
    pub congestion_threshold: u16,
    pub max_write: u32,
    pub time_gran: u32,
    pub max_pages: u16,
    pub map_alignment: u16,
    pub flags2: u32,
    /// 7.40: how deep stacked filesystems may go with FUSE_PASSTHROUGH.
    pub max_stack_depth: u32,
    /// 7.43: FUSE_REQUEST_TIMEOUT in seconds.
    pub request_timeout: u16,
    pub unused: [u16; 11],
}

/// `struct fuse_interrupt_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InterruptIn {
    pub unique: u64,
}

/// `struct fuse_bmap_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BmapIn {
    pub block: u64,
    pub blocksize: u32,
    pub padding: u32,
}

/// `struct fuse_bmap_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BmapOut {
    pub block: u64,
}

/// `struct fuse_ioctl_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlIn {
    pub fh: u64,
    pub flags: u32,
    pub cmd: u32,
    pub arg: u64,
    pub in_size: u32,
    pub out_size: u32,
}

/// `struct fuse_ioctl_iovec`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlIovec {
    pub base: u64,
    pub len: u64,
}

/// `struct fuse_ioctl_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoctlOut {
    pub result: i32,
    pub flags: u32,
    pub in_iovs: u32,
    pub out_iovs: u32,
}

/// `struct fuse_poll_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollIn {
    pub fh: u64,
    pub kh: u64,
    pub flags: u32,
    pub events: u32,
}

/// `struct fuse_poll_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollOut {
    pub revents: u32,
    pub padding: u32,
}

/// `struct fuse_fallocate_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FallocateIn {
    pub fh: u64,
    pub offset: u64,
    pub length: u64,
    pub mode: u32,
    pub padding: u32,
}

/// `struct fuse_in_header`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct InHeader {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}

/// `struct fuse_out_header`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutHeader {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}

/// `struct fuse_dirent`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dirent {
    pub ino: u64,
    pub off: u64,
    pub namelen: u32,
    pub typ: u32,
}

/// `struct fuse_lseek_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LseekIn {
    pub fh: u64,
    pub offset: u64,
    pub whence: u32,
    pub padding: u32,
}

/// `struct fuse_lseek_out`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LseekOut {
    pub offset: u64,
}

/// `struct fuse_copy_file_range_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyFileRangeIn {
    pub fh_in: u64,
    pub off_in: u64,
    pub nodeid_out: u64,
    pub fh_out: u64,
    pub off_out: u64,
    pub len: u64,
    pub flags: u64,
}

/// `struct fuse_setupmapping_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SetupmappingIn {
    pub fh: u64,
    pub foffset: u64,
    pub len: u64,
    pub flags: u64,
    pub moffset: u64,
}

/// `struct fuse_removemapping_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemovemappingIn {
    pub count: u32,
}

/// `struct fuse_removemapping_one`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemovemappingOne {
    pub moffset: u64,
    pub len: u64,
}

/// `struct fuse_syncfs_in`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncfsIn {
    pub padding: u64,
}

/// `struct fuse_ext_header` (7.38): one request extension, `size` bytes with this header.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExtHeader {
    pub size: u32,
    pub typ: u32,
}

/// `struct fuse_secctx` (7.36): one security context in the security-context extension (whose
/// `fuse_secctx_header { size, nr_secctx }` is an [`ExtHeader`] with `typ` = the number of
/// contexts, at most `ext::MAX_NR_SECCTX`). The xattr name (NUL-terminated) and `size` bytes of
/// value follow it; the extension is padded to 8 bytes.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Secctx {
    pub size: u32,
    pub padding: u32,
}

/// `struct fuse_supp_groups` (extension `ext::GROUPS`); the group ids follow it.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SuppGroups {
    pub nr_groups: u32,
}

/// `struct fuse_sx_time` (7.39).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SxTime {
    pub tv_sec: i64,
    pub tv_nsec: u32,
    pub reserved: i32,
}

/// `struct fuse_statx` (7.39).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Statx {
    pub mask: u32,
    pub blksize: u32,
    pub attributes: u64,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u16,
    pub spare0: u16,
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub attributes_mask: u64,
    pub atime: SxTime,
    pub btime: SxTime,
    pub ctime: SxTime,
    pub mtime: SxTime,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub spare2: [u64; 14],
}

/// `struct fuse_statx_in` (7.39).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatxIn {
    pub getattr_flags: u32,
    pub reserved: u32,
    pub fh: u64,
    pub sx_flags: u32,
    pub sx_mask: u32,
}

/// `struct fuse_statx_out` (7.39).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatxOut {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub flags: u32,
    pub spare: [u64; 2],
    pub stat: Statx,
}

/// `struct fuse_copy_file_range_out` (7.45, COPY_FILE_RANGE_64's reply).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyFileRangeOut {
    pub bytes_copied: u64,
}

macro_rules! byte_valued {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: `#[repr(C)]` structs of integers (and arrays and structs of them) whose sizes
        // below show no padding: every bit pattern is a valid value.
        unsafe impl ByteValued for $t {}
    )*};
}
byte_valued!(
    Attr,
    Kstatfs,
    FileLock,
    EntryOut,
    ForgetIn,
    ForgetOne,
    BatchForgetIn,
    GetattrIn,
    AttrOut,
    MknodIn,
    MkdirIn,
    RenameIn,
    Rename2In,
    LinkIn,
    SetattrIn,
    OpenIn,
    CreateIn,
    OpenOut,
    ReleaseIn,
    FlushIn,
    ReadIn,
    WriteIn,
    WriteOut,
    StatfsOut,
    FsyncIn,
    SetxattrIn,
    GetxattrIn,
    GetxattrOut,
    LkIn,
    LkOut,
    AccessIn,
    InitIn,
    InitOut,
    InterruptIn,
    BmapIn,
    BmapOut,
    IoctlIn,
    IoctlIovec,
    IoctlOut,
    PollIn,
    PollOut,
    FallocateIn,
    InHeader,
    OutHeader,
    Dirent,
    LseekIn,
    LseekOut,
    CopyFileRangeIn,
    SetupmappingIn,
    RemovemappingIn,
    RemovemappingOne,
    SyncfsIn,
    ExtHeader,
    Secctx,
    SuppGroups,
    SxTime,
    Statx,
    StatxIn,
    StatxOut,
    CopyFileRangeOut,
);

// The kernel's sizes (fuse.h; `FUSE_COMPAT_*_SIZE` where it states them).
const _: () = assert!(std::mem::size_of::<Attr>() == 88);
const _: () = assert!(std::mem::size_of::<Kstatfs>() == 80);
const _: () = assert!(std::mem::size_of::<FileLock>() == 24);
const _: () = assert!(std::mem::size_of::<EntryOut>() == 128);
const _: () = assert!(std::mem::size_of::<ForgetIn>() == 8);
const _: () = assert!(std::mem::size_of::<ForgetOne>() == 16);
const _: () = assert!(std::mem::size_of::<BatchForgetIn>() == 8);
const _: () = assert!(std::mem::size_of::<GetattrIn>() == 16);
const _: () = assert!(std::mem::size_of::<AttrOut>() == 104);
const _: () = assert!(std::mem::size_of::<MknodIn>() == 16);
const _: () = assert!(std::mem::size_of::<MkdirIn>() == 8);
const _: () = assert!(std::mem::size_of::<RenameIn>() == 8);
const _: () = assert!(std::mem::size_of::<Rename2In>() == 16);
const _: () = assert!(std::mem::size_of::<LinkIn>() == 8);
const _: () = assert!(std::mem::size_of::<SetattrIn>() == 88);
const _: () = assert!(std::mem::size_of::<OpenIn>() == 8);
const _: () = assert!(std::mem::size_of::<CreateIn>() == 16);
const _: () = assert!(std::mem::size_of::<OpenOut>() == 16);
const _: () = assert!(std::mem::size_of::<ReleaseIn>() == 24);
const _: () = assert!(std::mem::size_of::<FlushIn>() == 24);
const _: () = assert!(std::mem::size_of::<ReadIn>() == 40);
const _: () = assert!(std::mem::size_of::<WriteIn>() == 40);
const _: () = assert!(std::mem::size_of::<WriteOut>() == 8);
const _: () = assert!(std::mem::size_of::<StatfsOut>() == 80);
const _: () = assert!(std::mem::size_of::<FsyncIn>() == 16);
const _: () = assert!(std::mem::size_of::<SetxattrIn>() == 16);
const _: () = assert!(std::mem::size_of::<GetxattrIn>() == 8);
const _: () = assert!(std::mem::size_of::<GetxattrOut>() == 8);
const _: () = assert!(std::mem::size_of::<LkIn>() == 48);
const _: () = assert!(std::mem::size_of::<LkOut>() == 24);
const _: () = assert!(std::mem::size_of::<AccessIn>() == 8);
const _: () = assert!(std::mem::size_of::<InitIn>() == 64);
const _: () = assert!(std::mem::size_of::<InitOut>() == 64);
const _: () = assert!(std::mem::size_of::<InterruptIn>() == 8);
const _: () = assert!(std::mem::size_of::<BmapIn>() == 16);
const _: () = assert!(std::mem::size_of::<BmapOut>() == 8);
const _: () = assert!(std::mem::size_of::<IoctlIn>() == 32);
const _: () = assert!(std::mem::size_of::<IoctlIovec>() == 16);
const _: () = assert!(std::mem::size_of::<IoctlOut>() == 16);
const _: () = assert!(std::mem::size_of::<PollIn>() == 24);
const _: () = assert!(std::mem::size_of::<PollOut>() == 8);
const _: () = assert!(std::mem::size_of::<FallocateIn>() == 32);
const _: () = assert!(std::mem::size_of::<InHeader>() == 40);
const _: () = assert!(std::mem::size_of::<OutHeader>() == 16);
const _: () = assert!(std::mem::size_of::<Dirent>() == 24);
const _: () = assert!(std::mem::size_of::<LseekIn>() == 24);
const _: () = assert!(std::mem::size_of::<LseekOut>() == 8);
const _: () = assert!(std::mem::size_of::<CopyFileRangeIn>() == 56);
const _: () = assert!(std::mem::size_of::<SetupmappingIn>() == 40);
const _: () = assert!(std::mem::size_of::<RemovemappingIn>() == 4);
const _: () = assert!(std::mem::size_of::<RemovemappingOne>() == 16);
const _: () = assert!(std::mem::size_of::<SyncfsIn>() == 8);
const _: () = assert!(std::mem::size_of::<ExtHeader>() == 8);
const _: () = assert!(std::mem::size_of::<Secctx>() == 8);
const _: () = assert!(std::mem::size_of::<SuppGroups>() == 4);
const _: () = assert!(std::mem::size_of::<SxTime>() == 16);
const _: () = assert!(std::mem::size_of::<Statx>() == 256);
const _: () = assert!(std::mem::size_of::<StatxIn>() == 24);
const _: () = assert!(std::mem::size_of::<StatxOut>() == 288);
const _: () = assert!(std::mem::size_of::<CopyFileRangeOut>() == 8);
