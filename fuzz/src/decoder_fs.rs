//! The `fuse_decoder` harness's filesystem: [`NullFs`] touches no file and makes no system
//! call; it counts calls, checks what the server hands it, and answers from the input.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use virtiofs_fuse::abi;
use virtiofs_fuse::filesystem::{AttrReply, IoctlReply, StatxReply};
use virtiofs_fuse::{
    Context, DirSink, Entry, Errno, Filesystem, GuestSlice, Name, Opened, SecCtx, Xattr, NAME_MAX,
};

use crate::decoder::ERRNOS;
use crate::decoder_input::{self as di, FsInit};

/// Names for READDIR entries: slices of 0 to 257 bytes (0 and above 255 must be refused).
static NAMES: [u8; NAME_MAX + 3] = [b'n'; NAME_MAX + 3];

/// A filesystem that does nothing: each method counts the call, checks what the server handed
/// it, and answers as the request's `answer`/`size` say (an errno, or made-up data).
pub struct NullFs {
    pub(crate) init: FsInit,
    /// `answer | size << 8` for the request being served.
    pub(crate) answer: AtomicU32,
    /// Calls of any method but `init` and `destroy`.
    pub(crate) calls: AtomicU32,
    pub(crate) inits: AtomicU32,
    pub(crate) destroys: AtomicU32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u32,
    pub(crate) inits: u32,
    pub(crate) destroys: u32,
}

type FsResult<T> = Result<T, Errno>;

impl NullFs {
    /// A filesystem that answers INIT as `init` says.
    pub fn new(init: FsInit) -> NullFs {
        NullFs {
            init,
            answer: AtomicU32::new(0),
            calls: AtomicU32::new(0),
            inits: AtomicU32::new(0),
            destroys: AtomicU32::new(0),
        }
    }

    /// The calls so far.
    pub(crate) fn counts(&self) -> Counts {
        Counts {
            calls: self.calls.load(Relaxed),
            inits: self.inits.load(Relaxed),
            destroys: self.destroys.load(Relaxed),
        }
    }

    /// Counts the call; the answer bits and size, or the errno to fail with.
    fn answer(&self) -> FsResult<(u8, usize)> {
        self.calls.fetch_add(1, Relaxed);
        let a = self.answer.load(Relaxed);
        let (bits, size) = (a as u8, usize::from((a >> 8) as u8));
        if bits & di::ANSWER_ERR != 0 {
            return Err(Errno(ERRNOS[usize::from(bits & 0xF) % ERRNOS.len()]));
        }
        Ok((bits, size))
    }

    fn ok(&self) -> FsResult<()> {
        self.answer().map(|_| ())
    }

    fn entry(&self) -> FsResult<Entry> {
        let (_, size) = self.answer()?;
        Ok(entry(size as u64))
    }

    fn data(&self, bits: u8, size: usize) -> Vec<u8> {
        let n = if bits & di::ANSWER_BIG != 0 {
            size * 64
        } else {
            size
        };
        vec![b'd'; n]
    }

    /// The `Filesystem` contract: the size only when asked for it (`asked` 0), data otherwise
    /// (and data may answer a size question too).
    fn xattr(&self, asked: u32) -> FsResult<Xattr> {
        let (bits, size) = self.answer()?;
        Ok(if bits & di::ANSWER_XATTR_SIZE != 0 && asked == 0 {
            Xattr::Size(size as u32)
        } else {
            Xattr::Data(self.data(bits, size))
        })
    }

    fn created(&self) -> FsResult<(Entry, Opened)> {
        let (_, size) = self.answer()?;
        Ok((entry(size as u64), opened(size)))
    }
}

fn entry(n: u64) -> Entry {
    let attr = abi::Attr {
        ino: 2 + n,
        size: n,
        mode: libc::S_IFREG | 0o644,
        nlink: 1,
        ..Default::default()
    };
    Entry {
        nodeid: 2 + n,
        generation: n,
        attr,
        attr_valid: Duration::new(n, 999_999_999),
        entry_valid: Duration::from_millis(1500),
    }
}

fn opened(size: usize) -> Opened {
    Opened {
        fh: size as u64,
        open_flags: 0,
    }
}

fn total(slices: &[GuestSlice<'_>]) -> usize {
    slices.iter().map(|s| s.len()).sum()
}

impl Filesystem for NullFs {
    fn init(&self, capable: u64) -> FsResult<u64> {
        self.inits.fetch_add(1, Relaxed);
        match self.init {
            FsInit::All => Ok(u64::MAX),
            FsInit::Nothing => Ok(0),
            FsInit::Fails => Err(Errno(libc::EIO)),
            FsInit::Offered => Ok(capable),
        }
    }
    fn destroy(&self) {
        self.destroys.fetch_add(1, Relaxed);
    }
    fn lookup(&self, _: &Context, _: u64, _: &Name) -> FsResult<Entry> {
        self.entry()
    }
    fn forget(&self, _: u64, _: u64) {
        self.calls.fetch_add(1, Relaxed);
    }
    fn batch_forget(&self, items: &[abi::ForgetOne]) {
        assert!(!items.is_empty(), "BATCH_FORGET of no entry");
        self.calls.fetch_add(1, Relaxed);
    }
    fn getattr(&self, _: &Context, _: u64, _: Option<u64>) -> FsResult<AttrReply> {
        let (_, size) = self.answer()?;
        Ok(AttrReply {
            attr: entry(size as u64).attr,
            valid: Duration::from_nanos(size as u64),
        })
    }
    fn setattr(&self, ctx: &Context, node: u64, _: &abi::SetattrIn) -> FsResult<AttrReply> {
        self.getattr(ctx, node, None)
    }
    fn readlink(&self, _: &Context, _: u64) -> FsResult<Vec<u8>> {
        let (bits, size) = self.answer()?;
        Ok(self.data(bits, size))
    }
    fn symlink(
        &self,
        _: &Context,
        _: u64,
        _: &Name,
        target: &[u8],
        secctx: Option<&SecCtx>,
    ) -> FsResult<Entry> {
        assert!(!target.contains(&0), "symlink target with a NUL");
        assert!(target.len() < 4096, "symlink target beyond PATH_MAX");
        check_secctx(secctx);
        self.entry()
    }
    fn mknod(
        &self,
        _: &Context,
        _: u64,
        _: &Name,
        _: u32,
        _: u32,
        _: u32,
        secctx: Option<&SecCtx>,
    ) -> FsResult<Entry> {
        check_secctx(secctx);
        self.entry()
    }
    fn mkdir(
        &self,
        _: &Context,
        _: u64,
        _: &Name,
        _: u32,
        _: u32,
        secctx: Option<&SecCtx>,
    ) -> FsResult<Entry> {
        check_secctx(secctx);
        self.entry()
    }
    fn unlink(&self, _: &Context, _: u64, _: &Name) -> FsResult<()> {
        self.ok()
    }
    fn rmdir(&self, _: &Context, _: u64, _: &Name) -> FsResult<()> {
        self.ok()
    }
    fn rename(&self, _: &Context, _: u64, _: &Name, _: u64, _: &Name, _: u32) -> FsResult<()> {
        self.ok()
    }
    fn link(&self, _: &Context, _: u64, _: u64, _: &Name) -> FsResult<Entry> {
        self.entry()
    }
    fn open(&self, _: &Context, _: u64, _: u32, _: u32) -> FsResult<Opened> {
        let (_, size) = self.answer()?;
        Ok(opened(size))
    }
    fn read(
        &self,
        _: &Context,
        _: u64,
        arg: &abi::ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> FsResult<usize> {
        let room = total(dst);
        assert!(
            room <= arg.size as usize,
            "READ buffers of {room} bytes for size {}",
            arg.size
        );
        let (bits, size) = self.answer()?;
        Ok(if bits & di::ANSWER_OVERCLAIM != 0 {
            usize::MAX
        } else {
            (size * 16).min(room)
        })
    }
    fn write(
        &self,
        _: &Context,
        _: u64,
        arg: &abi::WriteIn,
        src: &[GuestSlice<'_>],
    ) -> FsResult<usize> {
        let got = total(src);
        assert_eq!(got, arg.size as usize, "WRITE data length != size");
        let (bits, _) = self.answer()?;
        Ok(if bits & di::ANSWER_OVERCLAIM != 0 {
            usize::MAX
        } else {
            got
        })
    }
    fn statfs(&self, _: &Context, _: u64) -> FsResult<abi::Kstatfs> {
        let (_, size) = self.answer()?;
        Ok(abi::Kstatfs {
            blocks: size as u64,
            namelen: 255,
            ..Default::default()
        })
    }
    fn release(&self, _: &Context, _: u64, _: &abi::ReleaseIn) -> FsResult<()> {
        self.ok()
    }
    fn fsync(&self, _: &Context, _: u64, _: u64, _: bool) -> FsResult<()> {
        self.ok()
    }
    fn setxattr(&self, _: &Context, _: u64, _: &Name, v: &[u8], _: u32, _: u32) -> FsResult<()> {
        assert!(v.len() <= 65536, "SETXATTR value beyond XATTR_SIZE_MAX");
        self.ok()
    }
    fn getxattr(&self, _: &Context, _: u64, _: &Name, asked: u32) -> FsResult<Xattr> {
        self.xattr(asked)
    }
    fn listxattr(&self, _: &Context, _: u64, asked: u32) -> FsResult<Xattr> {
        self.xattr(asked)
    }
    fn removexattr(&self, _: &Context, _: u64, _: &Name) -> FsResult<()> {
        self.ok()
    }
    fn flush(&self, _: &Context, _: u64, _: u64, _: u64) -> FsResult<()> {
        self.ok()
    }
    fn opendir(&self, ctx: &Context, node: u64, flags: u32) -> FsResult<Opened> {
        self.open(ctx, node, flags, 0)
    }
    fn readdir(
        &self,
        _: &Context,
        _: u64,
        _: u64,
        offset: u64,
        out: &mut DirSink<'_, '_>,
    ) -> FsResult<()> {
        let (bits, size) = self.answer()?;
        if bits & di::ANSWER_EMPTY_DIR != 0 {
            return Ok(());
        }
        for i in 0..size {
            let len = (i * 37 + size) % NAMES.len();
            let name = &NAMES[..len];
            let off = offset.wrapping_add(i as u64 + 1);
            let added = if out.is_plus() {
                out.add_plus(&entry(i as u64), off, libc::DT_REG.into(), name)
            } else {
                out.add(2 + i as u64, off, libc::DT_REG.into(), name)
            };
            if !added && (1..=NAME_MAX).contains(&len) {
                break; // full
            }
        }
        Ok(())
    }
    fn releasedir(&self, _: &Context, _: u64, _: u64, _: u32) -> FsResult<()> {
        self.ok()
    }
    fn fsyncdir(&self, _: &Context, _: u64, _: u64, _: bool) -> FsResult<()> {
        self.ok()
    }
    fn getlk(&self, _: &Context, _: u64, arg: &abi::LkIn) -> FsResult<abi::FileLock> {
        self.ok()?;
        Ok(arg.lk)
    }
    fn setlk(&self, _: &Context, _: u64, _: &abi::LkIn, _: bool) -> FsResult<()> {
        self.ok()
    }
    fn access(&self, _: &Context, _: u64, _: u32) -> FsResult<()> {
        self.ok()
    }
    fn create(
        &self,
        _: &Context,
        _: u64,
        _: &Name,
        _: &abi::CreateIn,
        secctx: Option<&SecCtx>,
    ) -> FsResult<(Entry, Opened)> {
        check_secctx(secctx);
        self.created()
    }
    fn ioctl(&self, _: &Context, _: u64, arg: &abi::IoctlIn, data: &[u8]) -> FsResult<IoctlReply> {
        assert_eq!(data.len(), arg.in_size as usize, "IOCTL input != in_size");
        let (bits, size) = self.answer()?;
        Ok(IoctlReply {
            result: size as i32,
            data: self.data(bits, size),
        })
    }
    fn poll(&self, _: &Context, _: u64, _: &abi::PollIn) -> FsResult<u32> {
        let (_, size) = self.answer()?;
        Ok(size as u32)
    }
    fn fallocate(&self, _: &Context, _: u64, _: &abi::FallocateIn) -> FsResult<()> {
        self.ok()
    }
    fn lseek(&self, _: &Context, _: u64, _: u64, offset: u64, _: u32) -> FsResult<u64> {
        self.ok()?;
        Ok(offset)
    }
    fn copy_file_range(&self, _: &Context, _: u64, arg: &abi::CopyFileRangeIn) -> FsResult<u64> {
        let (bits, _) = self.answer()?;
        Ok(if bits & di::ANSWER_OVERCLAIM != 0 {
            u64::MAX
        } else {
            arg.len
        })
    }
    fn syncfs(&self, _: &Context, _: u64) -> FsResult<()> {
        self.ok()
    }
    fn tmpfile(
        &self,
        _: &Context,
        _: u64,
        _: &abi::CreateIn,
        secctx: Option<&SecCtx>,
    ) -> FsResult<(Entry, Opened)> {
        check_secctx(secctx);
        self.created()
    }
    fn statx(&self, _: &Context, _: u64, _: &abi::StatxIn) -> FsResult<StatxReply> {
        let (_, size) = self.answer()?;
        let mut reply = StatxReply::default();
        reply.statx.ino = size as u64;
        Ok(reply)
    }
}

/// What the server may hand over as a security context: a name and a value within the
/// protocol's bounds (`XATTR_SIZE_MAX`).
fn check_secctx(secctx: Option<&SecCtx>) {
    if let Some(sc) = secctx {
        assert!(!sc.name.is_empty(), "security context with an empty name");
        assert!(
            (1..=65536).contains(&sc.value.len()),
            "security context value of {} bytes",
            sc.value.len()
        );
    }
}
