//! fuse-backend-rs 0.14's `PassthroughFs` behind our own [`Filesystem`] trait: the shared
//! directory's operations until our own passthrough filesystem replaces them one by one.
//!
//! Our FUSE server (`virtiofs-fuse`) decodes and answers the requests; this file only
//! translates typed arguments and replies, and keeps the library clear of the inputs it
//! mishandles (each found by the `request_pipeline` fuzz target; see `docs/dependencies.md`):
//! O_DIRECT and O_NOATIME in READ/WRITE flags (a failed `F_SETFL` makes the library close the
//! handle's fd), O_PATH in open flags (the library's READ closes an O_PATH handle's fd), and
//! xattr sizes beyond the kernel's 64 KiB (it allocates what the guest asks for).

use std::sync::Arc;

use fuse_backend_rs::abi::fuse_abi as lib;
use fuse_backend_rs::api::filesystem::{
    Context as LibContext, DirEntry, Entry as LibEntry, FileSystem, GetxattrReply, ListxattrReply,
};
use fuse_backend_rs::passthrough::PassthroughFs;
use virtiofs_fuse::abi::{
    self, fattr, flags, init_flags as f, CopyFileRangeIn, CreateIn, FallocateIn, Kstatfs, ReadIn,
    ReleaseIn, SetattrIn, WriteIn,
};
use virtiofs_fuse::{
    AttrReply, Context, DirSink, Entry, Errno, Filesystem, GuestSlice, Name, Opened, Xattr,
};

use crate::fd_quota::FdQuota;
use crate::guest_io::{GuestReader, GuestWriter};

type Result<T> = std::result::Result<T, Errno>;

/// The INIT flags this filesystem serves (the library's own answer adds readdirplus and
/// writeback when configured). PARALLEL_DIROPS and ASYNC_READ: the library's inode and handle
/// maps are shared-locked, so concurrent lookups, readdirs and reads in one directory or file are
/// safe, as in the Rust virtiofsd, which descends from the same code.
const SERVED: u64 =
    f::ASYNC_READ | f::PARALLEL_DIROPS | f::ATOMIC_O_TRUNC | f::AUTO_INVAL_DATA | f::ASYNC_DIO;
/// Flags taken from the library's own INIT answer.
const FROM_LIBRARY: u64 = f::DO_READDIRPLUS | f::READDIRPLUS_AUTO | f::WRITEBACK_CACHE;
/// The largest xattr value or list (`XATTR_SIZE_MAX`, `XATTR_LIST_MAX`).
const XATTR_MAX: u32 = 65536;

/// The library's passthrough filesystem with the daemon's policies on top.
pub struct Borrowed {
    pub(crate) fs: Arc<PassthroughFs>,
    pub(crate) readdirplus: bool,
    pub(crate) fd_quota: Option<FdQuota>,
}

fn lib_ctx(ctx: &Context) -> LibContext {
    LibContext {
        uid: ctx.uid,
        gid: ctx.gid,
        pid: ctx.pid as libc::pid_t,
    }
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from(e)
}

fn attr(st: &libc::stat64, flags: u32) -> abi::Attr {
    abi::Attr {
        ino: st.st_ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: st.st_atime as u64,
        mtime: st.st_mtime as u64,
        ctime: st.st_ctime as u64,
        atimensec: st.st_atime_nsec as u32,
        mtimensec: st.st_mtime_nsec as u32,
        ctimensec: st.st_ctime_nsec as u32,
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags,
    }
}

fn entry(e: LibEntry) -> Entry {
    Entry {
        nodeid: e.inode,
        generation: e.generation,
        attr: attr(&e.attr, e.attr_flags),
        attr_valid: e.attr_timeout,
        entry_valid: e.entry_timeout,
    }
}

fn opened(handle: Option<u64>, opts: lib::OpenOptions) -> Opened {
    Opened {
        fh: handle.unwrap_or(0),
        open_flags: opts.bits(),
    }
}

/// Open flags the library must not see (see the module documentation).
fn open_flags(flags: u32) -> u32 {
    flags & !(libc::O_PATH as u32)
}

/// READ/WRITE flags the library must not see.
fn rw_flags(flags: u32) -> u32 {
    flags & !((libc::O_DIRECT | libc::O_NOATIME) as u32)
}

impl Borrowed {
    /// EMFILE once the guest holds its quota of descriptors.
    fn quota(&self) -> Result<()> {
        match &self.fd_quota {
            Some(q) if q.exhausted() => {
                tracing::debug!("fd quota of {} reached: EMFILE", q.limit());
                Err(Errno(libc::EMFILE))
            }
            _ => Ok(()),
        }
    }

    fn create_in(arg: &CreateIn) -> lib::CreateIn {
        lib::CreateIn {
            flags: open_flags(arg.flags),
            mode: arg.mode,
            umask: arg.umask,
            fuse_flags: arg.open_flags,
        }
    }
}

impl Filesystem for Borrowed {
    fn init(&self, capable: u64) -> Result<u64> {
        // Bit 30 is INIT_EXT to the kernel but PERFILE_DAX to the library: never let it see it.
        let lib_capable = lib::FsOptions::from_bits_truncate(capable & !f::INIT_EXT);
        let lib_wants = self.fs.init(lib_capable).map_err(errno)?.bits() & FROM_LIBRARY;
        let mut wants = SERVED | lib_wants;
        if !self.readdirplus {
            wants &= !(f::DO_READDIRPLUS | f::READDIRPLUS_AUTO);
        }
        Ok(wants)
    }

    fn destroy(&self) {
        self.fs.destroy();
    }

    fn lookup(&self, ctx: &Context, parent: u64, name: &Name) -> Result<Entry> {
        self.quota()?;
        let e = self
            .fs
            .lookup(&lib_ctx(ctx), parent, name.as_cstr())
            .map_err(errno)?;
        Ok(entry(e))
    }

    fn forget(&self, nodeid: u64, nlookup: u64) {
        self.fs.forget(&LibContext::default(), nodeid, nlookup);
    }

    fn batch_forget(&self, items: &[abi::ForgetOne]) {
        let requests = items.iter().map(|i| (i.nodeid, i.nlookup)).collect();
        self.fs.batch_forget(&LibContext::default(), requests);
    }

    fn getattr(&self, ctx: &Context, nodeid: u64, fh: Option<u64>) -> Result<AttrReply> {
        let (st, valid) = self.fs.getattr(&lib_ctx(ctx), nodeid, fh).map_err(errno)?;
        Ok(AttrReply {
            attr: attr(&st, 0),
            valid,
        })
    }

    fn setattr(&self, ctx: &Context, nodeid: u64, arg: &SetattrIn) -> Result<AttrReply> {
        // SAFETY: stat64 is plain integers; all-zero is a valid value.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        st.st_mode = arg.mode;
        st.st_uid = arg.uid;
        st.st_gid = arg.gid;
        st.st_size = arg.size as i64;
        st.st_atime = arg.atime as i64;
        st.st_mtime = arg.mtime as i64;
        st.st_ctime = arg.ctime as i64;
        st.st_atime_nsec = i64::from(arg.atimensec);
        st.st_mtime_nsec = i64::from(arg.mtimensec);
        st.st_ctime_nsec = i64::from(arg.ctimensec);
        let fh = (arg.valid & fattr::FH != 0).then_some(arg.fh);
        let valid = lib::SetattrValid::from_bits_truncate(arg.valid);
        let (st, valid) = self
            .fs
            .setattr(&lib_ctx(ctx), nodeid, st, fh, valid)
            .map_err(errno)?;
        Ok(AttrReply {
            attr: attr(&st, 0),
            valid,
        })
    }

    fn readlink(&self, ctx: &Context, nodeid: u64) -> Result<Vec<u8>> {
        self.fs.readlink(&lib_ctx(ctx), nodeid).map_err(errno)
    }

    fn symlink(&self, ctx: &Context, parent: u64, name: &Name, target: &[u8]) -> Result<Entry> {
        self.quota()?;
        let target = std::ffi::CString::new(target).map_err(|_| Errno(libc::EINVAL))?;
        let e = self
            .fs
            .symlink(&lib_ctx(ctx), &target, parent, name.as_cstr())
            .map_err(errno)?;
        Ok(entry(e))
    }

    fn mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> Result<Entry> {
        self.quota()?;
        let e = self
            .fs
            .mknod(&lib_ctx(ctx), parent, name.as_cstr(), mode, rdev, umask)
            .map_err(errno)?;
        Ok(entry(e))
    }

    fn mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        mode: u32,
        umask: u32,
    ) -> Result<Entry> {
        self.quota()?;
        let e = self
            .fs
            .mkdir(&lib_ctx(ctx), parent, name.as_cstr(), mode, umask)
            .map_err(errno)?;
        Ok(entry(e))
    }

    fn unlink(&self, ctx: &Context, parent: u64, name: &Name) -> Result<()> {
        self.fs
            .unlink(&lib_ctx(ctx), parent, name.as_cstr())
            .map_err(errno)
    }

    fn rmdir(&self, ctx: &Context, parent: u64, name: &Name) -> Result<()> {
        self.fs
            .rmdir(&lib_ctx(ctx), parent, name.as_cstr())
            .map_err(errno)
    }

    fn rename(
        &self,
        ctx: &Context,
        olddir: u64,
        oldname: &Name,
        newdir: u64,
        newname: &Name,
        flags: u32,
    ) -> Result<()> {
        self.fs
            .rename(
                &lib_ctx(ctx),
                olddir,
                oldname.as_cstr(),
                newdir,
                newname.as_cstr(),
                flags,
            )
            .map_err(errno)
    }

    fn link(&self, ctx: &Context, nodeid: u64, newparent: u64, newname: &Name) -> Result<Entry> {
        self.quota()?;
        let e = self
            .fs
            .link(&lib_ctx(ctx), nodeid, newparent, newname.as_cstr())
            .map_err(errno)?;
        Ok(entry(e))
    }

    fn open(&self, ctx: &Context, nodeid: u64, flags: u32, open_flags_in: u32) -> Result<Opened> {
        self.quota()?;
        let (handle, opts, _) = self
            .fs
            .open(&lib_ctx(ctx), nodeid, open_flags(flags), open_flags_in)
            .map_err(errno)?;
        Ok(opened(handle, opts))
    }

    fn read(
        &self,
        ctx: &Context,
        nodeid: u64,
        arg: &ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> Result<usize> {
        let capacity: usize = dst.iter().map(|s| s.len()).sum();
        let mut w = GuestWriter::new(dst);
        let lock_owner = (arg.read_flags & flags::READ_LOCKOWNER != 0).then_some(arg.lock_owner);
        self.fs
            .read(
                &lib_ctx(ctx),
                nodeid,
                arg.fh,
                &mut w,
                capacity as u32,
                arg.offset,
                lock_owner,
                rw_flags(arg.flags),
            )
            .map_err(errno)?;
        Ok(w.written(capacity))
    }

    fn write(
        &self,
        ctx: &Context,
        nodeid: u64,
        arg: &WriteIn,
        src: &[GuestSlice<'_>],
    ) -> Result<usize> {
        let mut r = GuestReader::new(src);
        let delayed = arg.write_flags & flags::WRITE_CACHE != 0;
        let lock_owner = (arg.write_flags & flags::WRITE_LOCKOWNER != 0).then_some(arg.lock_owner);
        self.fs
            .write(
                &lib_ctx(ctx),
                nodeid,
                arg.fh,
                &mut r,
                arg.size,
                arg.offset,
                lock_owner,
                delayed,
                rw_flags(arg.flags),
                arg.write_flags,
            )
            .map_err(errno)
    }

    fn statfs(&self, ctx: &Context, nodeid: u64) -> Result<Kstatfs> {
        let st = self.fs.statfs(&lib_ctx(ctx), nodeid).map_err(errno)?;
        Ok(Kstatfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namemax as u32,
            frsize: st.f_frsize as u32,
            ..Default::default()
        })
    }

    fn release(&self, ctx: &Context, nodeid: u64, arg: &ReleaseIn) -> Result<()> {
        let flush = arg.release_flags & flags::RELEASE_FLUSH != 0;
        let flock = arg.release_flags & flags::RELEASE_FLOCK_UNLOCK != 0;
        let lock_owner = (flush || flock).then_some(arg.lock_owner);
        self.fs
            .release(
                &lib_ctx(ctx),
                nodeid,
                arg.flags,
                arg.fh,
                flush,
                flock,
                lock_owner,
            )
            .map_err(errno)
    }

    fn fsync(&self, ctx: &Context, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        self.fs
            .fsync(&lib_ctx(ctx), nodeid, datasync, fh)
            .map_err(errno)
    }

    fn setxattr(
        &self,
        ctx: &Context,
        nodeid: u64,
        name: &Name,
        value: &[u8],
        flags: u32,
        _: u32,
    ) -> Result<()> {
        self.fs
            .setxattr(&lib_ctx(ctx), nodeid, name.as_cstr(), value, flags)
            .map_err(errno)
    }

    fn getxattr(&self, ctx: &Context, nodeid: u64, name: &Name, size: u32) -> Result<Xattr> {
        match self
            .fs
            .getxattr(&lib_ctx(ctx), nodeid, name.as_cstr(), size.min(XATTR_MAX))
            .map_err(errno)?
        {
            GetxattrReply::Value(v) => Ok(Xattr::Data(v)),
            GetxattrReply::Count(n) => Ok(Xattr::Size(n)),
        }
    }

    fn listxattr(&self, ctx: &Context, nodeid: u64, size: u32) -> Result<Xattr> {
        match self
            .fs
            .listxattr(&lib_ctx(ctx), nodeid, size.min(XATTR_MAX))
            .map_err(errno)?
        {
            ListxattrReply::Names(v) => Ok(Xattr::Data(v)),
            ListxattrReply::Count(n) => Ok(Xattr::Size(n)),
        }
    }

    fn removexattr(&self, ctx: &Context, nodeid: u64, name: &Name) -> Result<()> {
        self.fs
            .removexattr(&lib_ctx(ctx), nodeid, name.as_cstr())
            .map_err(errno)
    }

    fn flush(&self, ctx: &Context, nodeid: u64, fh: u64, lock_owner: u64) -> Result<()> {
        self.fs
            .flush(&lib_ctx(ctx), nodeid, fh, lock_owner)
            .map_err(errno)
    }

    fn opendir(&self, ctx: &Context, nodeid: u64, flags: u32) -> Result<Opened> {
        self.quota()?;
        let (handle, opts) = self
            .fs
            .opendir(&lib_ctx(ctx), nodeid, open_flags(flags))
            .map_err(errno)?;
        Ok(opened(handle, opts))
    }

    fn readdir(
        &self,
        ctx: &Context,
        nodeid: u64,
        fh: u64,
        offset: u64,
        out: &mut DirSink<'_, '_>,
    ) -> Result<()> {
        // The library reads `size` bytes of host entries (and allocates that much), then stops
        // at the first entry that does not fit the reply (a returned size of 0).
        let size = out.room() as u32;
        let c = lib_ctx(ctx);
        let fitted = |ok: bool, d: &DirEntry| if ok { d.name.len() + 1 } else { 0 };
        if out.is_plus() {
            self.quota()?;
            self.fs
                .readdirplus(&c, nodeid, fh, size, offset, &mut |d, e| {
                    let ok = out.add_plus(&entry(e), d.offset, d.type_, d.name);
                    Ok(fitted(ok, &d))
                })
                .map_err(errno)
        } else {
            self.fs
                .readdir(&c, nodeid, fh, size, offset, &mut |d| {
                    let ok = out.add(d.ino, d.offset, d.type_, d.name);
                    Ok(fitted(ok, &d))
                })
                .map_err(errno)
        }
    }

    fn releasedir(&self, ctx: &Context, nodeid: u64, fh: u64, flags: u32) -> Result<()> {
        self.fs
            .releasedir(&lib_ctx(ctx), nodeid, flags, fh)
            .map_err(errno)
    }

    fn fsyncdir(&self, ctx: &Context, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        self.fs
            .fsyncdir(&lib_ctx(ctx), nodeid, datasync, fh)
            .map_err(errno)
    }

    fn access(&self, ctx: &Context, nodeid: u64, mask: u32) -> Result<()> {
        self.fs.access(&lib_ctx(ctx), nodeid, mask).map_err(errno)
    }

    fn create(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        arg: &CreateIn,
    ) -> Result<(Entry, Opened)> {
        self.quota()?;
        let (e, handle, opts, _) = self
            .fs
            .create(&lib_ctx(ctx), parent, name.as_cstr(), Self::create_in(arg))
            .map_err(errno)?;
        Ok((entry(e), opened(handle, opts)))
    }

    fn fallocate(&self, ctx: &Context, nodeid: u64, arg: &FallocateIn) -> Result<()> {
        self.fs
            .fallocate(
                &lib_ctx(ctx),
                nodeid,
                arg.fh,
                arg.mode,
                arg.offset,
                arg.length,
            )
            .map_err(errno)
    }

    fn lseek(&self, ctx: &Context, nodeid: u64, fh: u64, offset: u64, whence: u32) -> Result<u64> {
        self.fs
            .lseek(&lib_ctx(ctx), nodeid, fh, offset, whence)
            .map_err(errno)
    }

    fn copy_file_range(&self, _: &Context, _: u64, _: &CopyFileRangeIn) -> Result<u64> {
        // The library has none; the guest falls back to reading and writing.
        Err(Errno(libc::ENOSYS))
    }
}
