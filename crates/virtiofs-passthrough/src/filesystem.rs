//! [`Passthrough`] as a [`Filesystem`]: each trait method is one operation in `ops/`, plus
//! the checks every operation of its kind needs (the fd quota for those that open one; for
//! those that make a node, `ops/entry.rs` checks it, knowing whether the node will hold one).

use virtiofs_fuse::abi::{
    CopyFileRangeIn, CreateIn, FallocateIn, FileLock, ForgetOne, IoctlIn, Kstatfs, LkIn, ReadIn,
    ReleaseIn, SetattrIn, StatxIn, WriteIn,
};
use virtiofs_fuse::filesystem::Result;
use virtiofs_fuse::{
    AttrReply, Context, DirSink, Entry, Filesystem, GuestSlice, IoctlReply, Name, Opened,
    PreparedIo, SecCtx, StatxReply, Xattr,
};

use crate::passthrough::Passthrough;

impl Filesystem for Passthrough {
    fn init(&self, capable: u64) -> Result<u64> {
        Passthrough::init(self, capable)
    }
    fn destroy(&self) {
        Passthrough::destroy(self)
    }
    fn lookup(&self, _: &Context, parent: u64, name: &Name) -> Result<Entry> {
        self.do_lookup(parent, name)
    }
    fn forget(&self, nodeid: u64, nlookup: u64) {
        self.inodes.forget(nodeid, nlookup)
    }
    fn batch_forget(&self, items: &[ForgetOne]) {
        for item in items {
            self.inodes.forget(item.nodeid, item.nlookup)
        }
    }
    fn getattr(&self, _: &Context, nodeid: u64, fh: Option<u64>) -> Result<AttrReply> {
        self.do_getattr(nodeid, fh)
    }
    fn setattr(&self, _: &Context, nodeid: u64, arg: &SetattrIn) -> Result<AttrReply> {
        self.writable()?;
        self.do_setattr(nodeid, arg)
    }
    fn readlink(&self, _: &Context, nodeid: u64) -> Result<Vec<u8>> {
        self.do_readlink(nodeid)
    }
    fn symlink(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        target: &[u8],
        secctx: Option<&SecCtx>,
    ) -> Result<Entry> {
        self.may_make(parent, name)?;
        self.do_symlink(ctx, parent, name, target, secctx)
    }
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
        // Without DONT_MASK `mode` arrives with the guest's umask applied and the daemon's own
        // umask is 0, so the host makes exactly `mode`; with it, see ops/acl.rs.
        self.may_make(parent, name)?;
        self.do_mknod(ctx, parent, name, mode, rdev, umask, secctx)
    }
    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        mode: u32,
        umask: u32,
        secctx: Option<&SecCtx>,
    ) -> Result<Entry> {
        self.may_make(parent, name)?;
        self.do_mkdir(ctx, parent, name, mode, umask, secctx)
    }
    fn unlink(&self, _: &Context, parent: u64, name: &Name) -> Result<()> {
        self.writable()?;
        self.do_unlink(parent, name, 0)
    }
    fn rmdir(&self, _: &Context, parent: u64, name: &Name) -> Result<()> {
        self.writable()?;
        self.do_unlink(parent, name, libc::AT_REMOVEDIR)
    }
    fn rename(
        &self,
        _: &Context,
        olddir: u64,
        oldname: &Name,
        newdir: u64,
        newname: &Name,
        flags: u32,
    ) -> Result<()> {
        self.writable()?;
        self.do_rename(olddir, oldname, newdir, newname, flags)
    }
    fn link(&self, _: &Context, nodeid: u64, newparent: u64, newname: &Name) -> Result<Entry> {
        self.may_make(newparent, newname)?;
        self.do_link(nodeid, newparent, newname)
    }
    fn open(&self, ctx: &Context, nodeid: u64, flags: u32, open_flags: u32) -> Result<Opened> {
        self.may_open(flags)?;
        self.do_open(ctx.uid, nodeid, flags, open_flags)
    }
    fn read(
        &self,
        _: &Context,
        nodeid: u64,
        arg: &ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> Result<usize> {
        self.do_read(nodeid, arg, dst)
    }
    fn write(
        &self,
        _: &Context,
        nodeid: u64,
        arg: &WriteIn,
        src: &[GuestSlice<'_>],
    ) -> Result<usize> {
        self.writable()?;
        self.do_write(nodeid, arg, src)
    }
    fn statfs(&self, _: &Context, nodeid: u64) -> Result<Kstatfs> {
        self.do_statfs(nodeid)
    }
    fn release(&self, _: &Context, nodeid: u64, arg: &ReleaseIn) -> Result<()> {
        self.do_release(nodeid, arg)
    }
    fn fsync(&self, _: &Context, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        self.do_fsync(nodeid, fh, datasync)
    }
    fn prepare_read(
        &self,
        _: &Context,
        nodeid: u64,
        arg: &ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> Result<Option<PreparedIo>> {
        self.do_prepare_read(nodeid, arg, dst)
    }
    fn prepare_write(
        &self,
        _: &Context,
        nodeid: u64,
        arg: &WriteIn,
        src: &[GuestSlice<'_>],
    ) -> Result<Option<PreparedIo>> {
        self.writable()?;
        self.do_prepare_write(nodeid, arg, src)
    }
    fn prepare_fsync(
        &self,
        _: &Context,
        nodeid: u64,
        fh: u64,
        datasync: bool,
    ) -> Result<Option<PreparedIo>> {
        self.do_prepare_fsync(nodeid, fh, datasync)
    }
    fn setxattr(
        &self,
        _: &Context,
        nodeid: u64,
        name: &Name,
        value: &[u8],
        flags: u32,
        setxattr_flags: u32,
    ) -> Result<()> {
        self.writable()?;
        self.do_setxattr(nodeid, name, value, flags)?;
        self.acl_kill_sgid(nodeid, name, setxattr_flags)
    }
    fn getxattr(&self, _: &Context, nodeid: u64, name: &Name, size: u32) -> Result<Xattr> {
        self.do_getxattr(nodeid, name, size)
    }
    fn listxattr(&self, _: &Context, nodeid: u64, size: u32) -> Result<Xattr> {
        self.do_listxattr(nodeid, size)
    }
    fn removexattr(&self, _: &Context, nodeid: u64, name: &Name) -> Result<()> {
        self.writable()?;
        self.do_removexattr(nodeid, name)
    }
    fn flush(&self, _: &Context, nodeid: u64, fh: u64, lock_owner: u64) -> Result<()> {
        self.do_flush(nodeid, fh, lock_owner)
    }
    fn opendir(&self, _: &Context, nodeid: u64, flags: u32) -> Result<Opened> {
        self.do_opendir(nodeid, flags)
    }
    fn readdir(
        &self,
        _: &Context,
        nodeid: u64,
        fh: u64,
        offset: u64,
        out: &mut DirSink<'_, '_>,
    ) -> Result<()> {
        self.do_readdir(nodeid, fh, offset, out)
    }
    fn releasedir(&self, _: &Context, nodeid: u64, fh: u64, _flags: u32) -> Result<()> {
        self.do_releasedir(nodeid, fh)
    }
    fn fsyncdir(&self, _: &Context, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        self.do_fsyncdir(nodeid, fh, datasync)
    }
    fn getlk(&self, _: &Context, nodeid: u64, arg: &LkIn) -> Result<FileLock> {
        self.do_getlk(nodeid, arg)
    }
    fn setlk(&self, _: &Context, nodeid: u64, arg: &LkIn, _wait: bool) -> Result<()> {
        // SETLKW too answers EAGAIN rather than block: the pipeline waits (see ops/lock.rs).
        self.do_setlk(nodeid, arg)
    }
    fn access(&self, ctx: &Context, nodeid: u64, mask: u32) -> Result<()> {
        self.may_access(nodeid, mask)?;
        self.do_access(ctx, nodeid, mask)
    }
    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        arg: &CreateIn,
        secctx: Option<&SecCtx>,
    ) -> Result<(Entry, Opened)> {
        if self.cfg.readonly {
            return self.create_readonly(parent, name, arg);
        }
        self.do_create(ctx, parent, name, arg, secctx)
    }
    fn ioctl(&self, _: &Context, nodeid: u64, arg: &IoctlIn, data: &[u8]) -> Result<IoctlReply> {
        self.do_ioctl(nodeid, arg, data)
    }
    fn fallocate(&self, _: &Context, nodeid: u64, arg: &FallocateIn) -> Result<()> {
        self.do_fallocate(nodeid, arg)
    }
    fn lseek(&self, _: &Context, nodeid: u64, fh: u64, offset: u64, whence: u32) -> Result<u64> {
        self.do_lseek(nodeid, fh, offset, whence)
    }
    fn copy_file_range(&self, _: &Context, nodeid: u64, arg: &CopyFileRangeIn) -> Result<u64> {
        self.do_copy_file_range(nodeid, arg)
    }
    fn syncfs(&self, _: &Context, nodeid: u64) -> Result<()> {
        self.do_syncfs(nodeid)
    }
    fn tmpfile(
        &self,
        ctx: &Context,
        parent: u64,
        arg: &CreateIn,
        secctx: Option<&SecCtx>,
    ) -> Result<(Entry, Opened)> {
        self.writable()?;
        self.do_tmpfile(ctx, parent, arg, secctx)
    }
    fn statx(&self, _: &Context, nodeid: u64, arg: &StatxIn) -> Result<StatxReply> {
        self.do_statx(nodeid, arg)
    }
}
