//! The `Filesystem` trait a FUSE server calls: one method per operation, typed arguments, typed
//! replies. Every method has a default that answers ENOSYS, so an implementation states exactly
//! which operations it serves; the server encodes the replies.

use std::time::Duration;

use crate::abi::{
    Attr, CopyFileRangeIn, CreateIn, FallocateIn, FileLock, ForgetOne, IoctlIn, Kstatfs, LkIn,
    PollIn, ReadIn, ReleaseIn, SetattrIn, Statx, StatxIn, WriteIn,
};
use crate::deferred::PreparedIo;
use crate::dirent::DirSink;
use crate::ext::SecCtx;
use crate::name::Name;

/// A guest slice of memory that READ's data is read into or WRITE's data comes from.
pub type GuestSlice<'a> = vm_memory::VolatileSlice<'a, ()>;

/// An error number for the guest (a positive `errno` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's `errno`, as left by the last failed system call.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// What a [`Filesystem`] method returns.
pub type Result<T> = std::result::Result<T, Errno>;

/// Who sent a request: from its header (and, with CREATE_SUPP_GROUP, its group extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Context {
    /// The request's id.
    pub unique: u64,
    /// The calling process's fsuid, fsgid and pid (pid 0 when the kernel sends it itself).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// See `uid`.
    pub pid: u32,
    /// A supplementary group of the caller that a new file's parent directory has
    /// (CREATE_SUPP_GROUP): the file must get it as its group where the directory says so.
    pub supp_group: Option<u32>,
}

/// A directory entry for LOOKUP, MKNOD, MKDIR, SYMLINK, LINK, CREATE, TMPFILE and READDIRPLUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Entry {
    /// The new node's id (0: a negative entry, "no such name", cached for `entry_valid`).
    pub nodeid: u64,
    /// Inode generation: (nodeid, generation) is unique over the filesystem's life.
    pub generation: u64,
    /// Its attributes.
    pub attr: Attr,
    /// How long the guest may cache `attr`.
    pub attr_valid: Duration,
    /// How long the guest may cache the name.
    pub entry_valid: Duration,
}

/// Attributes for GETATTR and SETATTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttrReply {
    /// The attributes.
    pub attr: Attr,
    /// How long the guest may cache them.
    pub valid: Duration,
}

/// STATX's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatxReply {
    /// The attributes (`mask` says which are filled).
    pub statx: Statx,
    /// How long the guest may cache them.
    pub valid: Duration,
}

/// An open file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Opened {
    /// The handle the guest passes back.
    pub fh: u64,
    /// `FOPEN_*` flags.
    pub open_flags: u32,
}

/// GETXATTR's and LISTXATTR's reply: the size asked about (request size 0) or the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xattr {
    /// Size of the value or list.
    Size(u32),
    /// The value or the NUL-separated list.
    Data(Vec<u8>),
}

/// IOCTL's reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IoctlReply {
    /// The ioctl's return value.
    pub result: i32,
    /// Bytes copied back to the caller's buffer.
    pub data: Vec<u8>,
}

/// A FUSE filesystem. Methods run on threads that may block, concurrently, except that the
/// server never runs any of them concurrently with [`Filesystem::init`] or
/// [`Filesystem::destroy`]. `nodeid`s are the ids the filesystem handed out in entries (1 is
/// the root); the server does not interpret them.
#[allow(unused_variables)] // the defaults ignore their arguments
pub trait Filesystem: Send + Sync {
    /// A new session: `capable` is what the guest offers (INIT flags); returns the flags the
    /// filesystem wants of them (the server keeps only those offered).
    fn init(&self, capable: u64) -> Result<u64> {
        Ok(0)
    }
    /// The session ended (DESTROY, or a new driver's INIT): forget every node and handle.
    fn destroy(&self) {}
    /// LOOKUP: the entry `name` in directory `parent`.
    fn lookup(&self, ctx: &Context, parent: u64, name: &Name) -> Result<Entry> {
        Err(Errno(libc::ENOSYS))
    }
    /// FORGET: the guest dropped `nlookup` references to `nodeid`.
    fn forget(&self, nodeid: u64, nlookup: u64) {}
    /// BATCH_FORGET: several FORGETs.
    fn batch_forget(&self, items: &[ForgetOne]) {
        for item in items {
            self.forget(item.nodeid, item.nlookup);
        }
    }
    /// GETATTR; `fh` when the guest names an open handle.
    fn getattr(&self, ctx: &Context, nodeid: u64, fh: Option<u64>) -> Result<AttrReply> {
        Err(Errno(libc::ENOSYS))
    }
    /// SETATTR.
    fn setattr(&self, ctx: &Context, nodeid: u64, arg: &SetattrIn) -> Result<AttrReply> {
        Err(Errno(libc::ENOSYS))
    }
    /// READLINK: the link's target.
    fn readlink(&self, ctx: &Context, nodeid: u64) -> Result<Vec<u8>> {
        Err(Errno(libc::ENOSYS))
    }
    /// SYMLINK: `name` in `parent` pointing at `target`. Here and in MKNOD, MKDIR, CREATE and
    /// TMPFILE `secctx` is the new node's security context, when SECURITY_CTX was negotiated
    /// and the guest's LSM gave one: the node must be made with that xattr or not at all.
    fn symlink(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        target: &[u8],
        secctx: Option<&SecCtx>,
    ) -> Result<Entry> {
        Err(Errno(libc::ENOSYS))
    }
    /// MKNOD.
    #[allow(clippy::too_many_arguments)] // the request's fields, as the other methods take them
    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        mode: u32,
        rdev: u32,
        umask: u32,
        secctx: Option<&SecCtx>,
    ) -> Result<Entry> {
        Err(Errno(libc::ENOSYS))
    }
    /// MKDIR.
    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        mode: u32,
        umask: u32,
        secctx: Option<&SecCtx>,
    ) -> Result<Entry> {
        Err(Errno(libc::ENOSYS))
    }
    /// UNLINK.
    fn unlink(&self, ctx: &Context, parent: u64, name: &Name) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// RMDIR.
    fn rmdir(&self, ctx: &Context, parent: u64, name: &Name) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// RENAME (`flags` 0) and RENAME2 (`RENAME_NOREPLACE`, `RENAME_EXCHANGE`, `RENAME_WHITEOUT`).
    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &Name,
        newdir: u64,
        newname: &Name,
        flags: u32,
    ) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// LINK: a new name for `nodeid`.
    fn link(&self, ctx: &Context, nodeid: u64, newparent: u64, newname: &Name) -> Result<Entry> {
        Err(Errno(libc::ENOSYS))
    }
    /// OPEN; `flags` are the open(2) flags, `open_flags` FUSE_OPEN_*.
    fn open(&self, ctx: &Context, nodeid: u64, flags: u32, open_flags: u32) -> Result<Opened> {
        Err(Errno(libc::ENOSYS))
    }
    /// READ into `dst` (at most `arg.size` bytes); returns the bytes read.
    fn read(
        &self,
        ctx: &Context,
        nodeid: u64,
        arg: &ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> Result<usize> {
        Err(Errno(libc::ENOSYS))
    }
    /// WRITE `src` (`arg.size` bytes); returns the bytes written.
    fn write(
        &self,
        ctx: &Context,
        nodeid: u64,
        arg: &WriteIn,
        src: &[GuestSlice<'_>],
    ) -> Result<usize> {
        Err(Errno(libc::ENOSYS))
    }
    /// STATFS.
    fn statfs(&self, ctx: &Context, nodeid: u64) -> Result<Kstatfs> {
        Err(Errno(libc::ENOSYS))
    }
    /// RELEASE (no reply is waited for by the guest's close(2), but one is sent).
    fn release(&self, ctx: &Context, nodeid: u64, arg: &ReleaseIn) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// FSYNC.
    fn fsync(&self, ctx: &Context, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// READ as [`Filesystem::read`] would, up to its system call: `Ok(None)` to have the
    /// server call [`Filesystem::read`] instead (the default), `Err` for the reply's errno.
    /// The caller performs the I/O (see [`crate::deferred`]).
    fn prepare_read(
        &self,
        ctx: &Context,
        nodeid: u64,
        arg: &ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> Result<Option<PreparedIo>> {
        Ok(None)
    }
    /// WRITE as [`Filesystem::write`] would, up to its system call (see
    /// [`Filesystem::prepare_read`]).
    fn prepare_write(
        &self,
        ctx: &Context,
        nodeid: u64,
        arg: &WriteIn,
        src: &[GuestSlice<'_>],
    ) -> Result<Option<PreparedIo>> {
        Ok(None)
    }
    /// FSYNC as [`Filesystem::fsync`] would, up to its system call (see
    /// [`Filesystem::prepare_read`]).
    fn prepare_fsync(
        &self,
        ctx: &Context,
        nodeid: u64,
        fh: u64,
        datasync: bool,
    ) -> Result<Option<PreparedIo>> {
        Ok(None)
    }
    /// SETXATTR; `setxattr_flags` is 0 without SETXATTR_EXT.
    fn setxattr(
        &self,
        ctx: &Context,
        nodeid: u64,
        name: &Name,
        value: &[u8],
        flags: u32,
        setxattr_flags: u32,
    ) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// GETXATTR; `size` 0 asks for the value's size.
    fn getxattr(&self, ctx: &Context, nodeid: u64, name: &Name, size: u32) -> Result<Xattr> {
        Err(Errno(libc::ENOSYS))
    }
    /// LISTXATTR; `size` 0 asks for the list's size.
    fn listxattr(&self, ctx: &Context, nodeid: u64, size: u32) -> Result<Xattr> {
        Err(Errno(libc::ENOSYS))
    }
    /// REMOVEXATTR.
    fn removexattr(&self, ctx: &Context, nodeid: u64, name: &Name) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// FLUSH (each close(2) of a file descriptor of the handle).
    fn flush(&self, ctx: &Context, nodeid: u64, fh: u64, lock_owner: u64) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// OPENDIR.
    fn opendir(&self, ctx: &Context, nodeid: u64, flags: u32) -> Result<Opened> {
        Err(Errno(libc::ENOSYS))
    }
    /// READDIR and READDIRPLUS (`out.is_plus()`): entries after `offset` into `out` until it is
    /// full. For READDIRPLUS, an entry counts as looked up only if [`DirSink::add_plus`]
    /// accepted it.
    fn readdir(
        &self,
        ctx: &Context,
        nodeid: u64,
        fh: u64,
        offset: u64,
        out: &mut DirSink<'_, '_>,
    ) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// RELEASEDIR.
    fn releasedir(&self, ctx: &Context, nodeid: u64, fh: u64, flags: u32) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// FSYNCDIR.
    fn fsyncdir(&self, ctx: &Context, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// GETLK: the first lock that conflicts with `arg.lk` (type F_UNLCK when none does).
    fn getlk(&self, ctx: &Context, nodeid: u64, arg: &LkIn) -> Result<FileLock> {
        Err(Errno(libc::ENOSYS))
    }
    /// SETLK (`wait` false) and SETLKW (`wait` true); flock(2) when `arg.lk_flags` has LK_FLOCK.
    /// A SETLKW may block until it gets the lock, or answer EAGAIN when the lock is held and
    /// leave the waiting to the server's caller, which then sends the request again (the
    /// async-virtiofsd pipeline does, so that no thread blocks in the kernel).
    fn setlk(&self, ctx: &Context, nodeid: u64, arg: &LkIn, wait: bool) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// ACCESS.
    fn access(&self, ctx: &Context, nodeid: u64, mask: u32) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// CREATE: create and open `name` in `parent`.
    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        arg: &CreateIn,
        secctx: Option<&SecCtx>,
    ) -> Result<(Entry, Opened)> {
        Err(Errno(libc::ENOSYS))
    }
    /// IOCTL; `data` is the caller's input, `arg.out_size` the most it may get back. The
    /// default is ENOTTY, what ioctl(2) gives for a file without ioctls (the kernel turns an
    /// ENOSYS into that too: "ENOSYS shouldn't be returned from fs").
    fn ioctl(&self, ctx: &Context, nodeid: u64, arg: &IoctlIn, data: &[u8]) -> Result<IoctlReply> {
        Err(Errno(libc::ENOTTY))
    }
    /// POLL: the ready events.
    fn poll(&self, ctx: &Context, nodeid: u64, arg: &PollIn) -> Result<u32> {
        Err(Errno(libc::ENOSYS))
    }
    /// FALLOCATE.
    fn fallocate(&self, ctx: &Context, nodeid: u64, arg: &FallocateIn) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// LSEEK (SEEK_DATA / SEEK_HOLE; the guest does the others itself).
    fn lseek(&self, ctx: &Context, nodeid: u64, fh: u64, offset: u64, whence: u32) -> Result<u64> {
        Err(Errno(libc::ENOSYS))
    }
    /// COPY_FILE_RANGE and COPY_FILE_RANGE_64: the bytes copied.
    fn copy_file_range(&self, ctx: &Context, nodeid: u64, arg: &CopyFileRangeIn) -> Result<u64> {
        Err(Errno(libc::ENOSYS))
    }
    /// SYNCFS: every filesystem the share spans.
    fn syncfs(&self, ctx: &Context, nodeid: u64) -> Result<()> {
        Err(Errno(libc::ENOSYS))
    }
    /// TMPFILE: an unnamed file in `parent` (O_TMPFILE), opened.
    fn tmpfile(
        &self,
        ctx: &Context,
        parent: u64,
        arg: &CreateIn,
        secctx: Option<&SecCtx>,
    ) -> Result<(Entry, Opened)> {
        Err(Errno(libc::ENOSYS))
    }
    /// STATX.
    fn statx(&self, ctx: &Context, nodeid: u64, arg: &StatxIn) -> Result<StatxReply> {
        Err(Errno(libc::ENOSYS))
    }
}
