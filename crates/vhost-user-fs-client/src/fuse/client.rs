//! The FUSE session over a [`Device`]: submission with headers and credentials, completion into
//! checked [`Reply`]s, and the typed operations of [`FuseOps`].

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use vm_memory::{ByteValued, GuestAddress};

use super::abi::*;
use super::reply::{DirEntry, DirEntryPlus, Reply, XattrReply};
use super::request::FuseRequest;
use crate::device::{Device, DeviceConfig};
use crate::error::{Error, Result};
use crate::virtqueue::{Buffers, Descriptor, Token};

/// Caller credentials carried in `fuse_in_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Creds {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id.
    pub pid: u32,
}

impl Creds {
    /// uid 0, gid 0, our pid.
    pub fn root() -> Self {
        Self::user(0, 0)
    }

    /// The given uid and gid, our pid.
    pub fn user(uid: u32, gid: u32) -> Self {
        Self {
            uid,
            gid,
            pid: std::process::id(),
        }
    }
}

/// INIT parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitParams {
    /// Protocol major (7).
    pub major: u32,
    /// Protocol minor we announce.
    pub minor: u32,
    /// `max_readahead`.
    pub max_readahead: u32,
    /// Capability flags we offer (see [`init_flags`]).
    pub flags: u64,
}

impl Default for InitParams {
    /// 7.38 with what a Linux virtio-fs guest typically asks for, minus writeback caching,
    /// `DONT_MASK` and `SETXATTR_EXT` (which change request semantics).
    fn default() -> Self {
        use init_flags::*;
        Self {
            major: KERNEL_VERSION,
            minor: KERNEL_MINOR_VERSION,
            max_readahead: 128 << 10,
            flags: ASYNC_READ
                | ATOMIC_O_TRUNC
                | EXPORT_SUPPORT
                | BIG_WRITES
                | AUTO_INVAL_DATA
                | DO_READDIRPLUS
                | READDIRPLUS_AUTO
                | ASYNC_DIO
                | PARALLEL_DIROPS
                | MAX_PAGES,
        }
    }
}

/// A FUSE request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuseToken {
    /// The virtqueue token.
    pub token: Token,
    /// `unique` of the request.
    pub unique: u64,
    /// Opcode of the request.
    pub opcode: u32,
    /// Whether a reply is expected.
    pub expects_reply: bool,
}

/// A virtio-fs FUSE client. `Sync`: share it between threads (e.g. in an `Arc`).
#[derive(Debug)]
pub struct FsClient {
    device: Device,
    next_unique: AtomicU64,
    round_robin: AtomicUsize,
    creds: Creds,
    session: Mutex<Option<InitOut>>,
    indirect: AtomicBool,
}

impl FsClient {
    /// Connects and sets the device up (no INIT yet).
    pub fn connect(config: DeviceConfig) -> Result<Self> {
        Ok(Self::new(Device::connect(config)?))
    }

    /// A client over an already set-up device; requests carry [`Creds::root`].
    pub fn new(device: Device) -> Self {
        Self {
            device,
            next_unique: AtomicU64::new(2),
            round_robin: AtomicUsize::new(0),
            creds: Creds::root(),
            session: Mutex::new(None),
            indirect: AtomicBool::new(true),
        }
    }

    /// Whether requests of more than one descriptor go in an indirect table (default true;
    /// only effective if `VIRTIO_RING_F_INDIRECT_DESC` was negotiated).
    pub fn set_indirect(&self, on: bool) {
        self.indirect.store(on, Ordering::Relaxed);
    }

    /// The device underneath (queues, memory, raw chains).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Number of request queues.
    pub fn request_queues(&self) -> usize {
        self.device.num_queues() - 1
    }

    /// The INIT reply of the current session, if INIT succeeded and no DESTROY followed.
    pub fn session(&self) -> Option<InitOut> {
        *self.session.lock().unwrap()
    }

    /// A handle sending requests with other credentials and/or on a fixed queue.
    pub fn with_creds(&self, creds: Creds) -> Caller<'_> {
        Caller {
            client: self,
            creds,
            queue: None,
        }
    }

    /// A handle sending every request on `queue` (0 = hiprio).
    pub fn on_queue(&self, queue: usize) -> Caller<'_> {
        Caller {
            client: self,
            creds: self.creds,
            queue: Some(queue),
        }
    }

    /// The queue a request goes to by default: hiprio for FORGET/BATCH_FORGET, otherwise the
    /// request queues in turn.
    pub fn default_queue(&self, opcode: u32) -> usize {
        if opcode == opcode::FORGET || opcode == opcode::BATCH_FORGET {
            0
        } else {
            1 + self.round_robin.fetch_add(1, Ordering::Relaxed) % self.request_queues()
        }
    }

    /// Allocates a fresh `unique` (even, growing by 2, as the Linux driver does).
    pub fn next_unique(&self) -> u64 {
        self.next_unique.fetch_add(2, Ordering::Relaxed)
    }

    /// Submits `req` on `queue` with `creds`; returns at once (blocks only while the queue is
    /// full).
    pub fn submit(&self, queue: usize, req: &FuseRequest, creds: Creds) -> Result<FuseToken> {
        let unique = self.next_unique();
        let hdr = InHeader {
            len: (40 + req.args_len()) as u32,
            opcode: req.opcode,
            unique,
            nodeid: req.nodeid,
            uid: creds.uid,
            gid: creds.gid,
            pid: creds.pid,
            total_extlen: (req.ext.len() / 8) as u16,
            padding: 0,
        };
        let mem = self.device.memory();
        let mut buffers = Buffers::default();
        let mut descs = Vec::with_capacity(2 + req.args.len() + req.out.len());
        let built = (|| -> Result<()> {
            let parts = std::iter::once(hdr.as_slice())
                .chain(req.args.iter().map(Vec::as_slice))
                .chain(std::iter::once(req.ext.as_slice()));
            for part in parts.filter(|p| !p.is_empty()) {
                let a = mem.alloc(part.len() as u64, 64)?;
                buffers.owned.push(a);
                mem.write(a.addr, part)?;
                descs.push(Descriptor {
                    addr: a.addr.0,
                    len: part.len() as u32,
                    write: false,
                });
            }
            if req.expects_reply {
                for len in std::iter::once(16).chain(req.out.iter().copied()) {
                    if len == 0 {
                        continue;
                    }
                    let a = mem.alloc(u64::from(len), 64)?;
                    buffers.owned.push(a);
                    buffers.read_back.push((GuestAddress(a.addr.0), len));
                    descs.push(Descriptor {
                        addr: a.addr.0,
                        len,
                        write: true,
                    });
                }
            }
            Ok(())
        })();
        if let Err(e) = built {
            for a in buffers.owned {
                mem.free(a);
            }
            return Err(e);
        }
        let token = self.device.queue(queue)?.submit(
            &descs,
            self.indirect.load(Ordering::Relaxed),
            buffers,
            self.device.config().timeout,
        )?;
        Ok(FuseToken {
            token,
            unique,
            opcode: req.opcode,
            expects_reply: req.expects_reply,
        })
    }

    /// Waits (up to the configured timeout) for the reply to `t` and checks its header.
    /// Requests without a reply (FORGET) give an empty successful [`Reply`] once the device has
    /// returned the chain (it must return it with used length 0).
    pub fn wait(&self, t: FuseToken) -> Result<Reply> {
        self.wait_timeout(t, self.device.config().timeout)
    }

    /// [`FsClient::wait`] with an explicit timeout.
    pub fn wait_timeout(&self, t: FuseToken, timeout: Duration) -> Result<Reply> {
        let c = self.device.wait_timeout(t.token, timeout)?;
        self.reply_of(t, &c)
    }

    /// Takes the reply to `t` if it has arrived; never blocks.
    pub fn try_take(&self, t: FuseToken) -> Result<Option<Reply>> {
        match self.device.try_take(t.token)? {
            Some(c) => self.reply_of(t, &c).map(Some),
            None => Ok(None),
        }
    }

    fn reply_of(&self, t: FuseToken, c: &crate::virtqueue::Completion) -> Result<Reply> {
        if !t.expects_reply {
            if c.used_len != 0 {
                return Err(Error::BadReply(format!(
                    "opcode {}: no reply expected but used len {}",
                    t.opcode, c.used_len
                )));
            }
            return Ok(Reply {
                opcode: t.opcode,
                unique: t.unique,
                error: None,
                body: Vec::new(),
            });
        }
        let total: usize = c.written.iter().map(Vec::len).sum();
        if c.used_len as usize > total {
            return Err(Error::BadReply(format!(
                "opcode {}: used len {} exceeds the {total} writable bytes",
                t.opcode, c.used_len
            )));
        }
        Reply::parse(t.opcode, t.unique, c.used_len, &c.data())
    }

    /// INIT with default parameters.
    pub fn init(&self) -> Result<InitOut> {
        self.init_with(InitParams::default())
    }

    /// INIT with `p`; records the reply as the session.
    pub fn init_with(&self, p: InitParams) -> Result<InitOut> {
        let out = self
            .call(FuseRequest::init(
                p.major,
                p.minor,
                p.max_readahead,
                p.flags,
            ))?
            .init()?;
        *self.session.lock().unwrap() = Some(out);
        Ok(out)
    }

    /// Resets the device as a guest reboot does ([`Device::reset`]) and forgets the session: the
    /// next driver starts with INIT. Node ids and handles of the old session are void.
    pub fn reset_device(&mut self, how: crate::Reset) -> Result<()> {
        *self.session.get_mut().unwrap() = None;
        self.device.reset(how)
    }

    /// DESTROY; forgets the session.
    pub fn destroy(&self) -> Result<()> {
        let r = self.call(FuseRequest::destroy())?.empty();
        *self.session.lock().unwrap() = None;
        r
    }
}

/// [`FsClient`] with explicit credentials and/or queue, from [`FsClient::with_creds`] and
/// [`FsClient::on_queue`].
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    client: &'a FsClient,
    creds: Creds,
    queue: Option<usize>,
}

impl<'a> Caller<'a> {
    /// The same caller with other credentials.
    pub fn with_creds(self, creds: Creds) -> Self {
        Self { creds, ..self }
    }

    /// The same caller on a fixed queue.
    pub fn on_queue(self, queue: usize) -> Self {
        Self {
            queue: Some(queue),
            ..self
        }
    }

    /// Submits without waiting (see [`FsClient::submit`]).
    pub fn submit(&self, req: &FuseRequest) -> Result<FuseToken> {
        let q = self
            .queue
            .unwrap_or_else(|| self.client.default_queue(req.opcode));
        self.client.submit(q, req, self.creds)
    }
}

/// Typed synchronous FUSE operations; implemented by [`FsClient`] (root credentials, queues in
/// turn) and [`Caller`]. Names are passed as bytes (`&str`, `&[u8]`, `OsStr::as_bytes()`).
pub trait FuseOps {
    /// Sends one request and waits for its checked reply.
    fn call(&self, req: FuseRequest) -> Result<Reply>;

    /// The INIT flags the session agreed on (0 before INIT).
    fn session_flags(&self) -> u64;

    /// LOOKUP.
    fn lookup(&self, parent: u64, name: impl AsRef<[u8]>) -> Result<EntryOut> {
        self.call(FuseRequest::lookup(parent, name))?.entry()
    }
    /// FORGET (on the hiprio queue unless the caller fixed one).
    fn forget(&self, nodeid: u64, nlookup: u64) -> Result<()> {
        self.call(FuseRequest::forget(nodeid, nlookup)).map(drop)
    }
    /// BATCH_FORGET.
    fn batch_forget(&self, items: &[(u64, u64)]) -> Result<()> {
        self.call(FuseRequest::batch_forget(items)).map(drop)
    }
    /// GETATTR.
    fn getattr(&self, nodeid: u64, fh: Option<u64>) -> Result<AttrOut> {
        self.call(FuseRequest::getattr(nodeid, fh))?.attr()
    }
    /// SETATTR.
    fn setattr(&self, nodeid: u64, arg: SetattrIn) -> Result<AttrOut> {
        self.call(FuseRequest::setattr(nodeid, arg))?.attr()
    }
    /// READLINK.
    fn readlink(&self, nodeid: u64) -> Result<Vec<u8>> {
        self.call(FuseRequest::readlink(nodeid))?.ok()
    }
    /// SYMLINK.
    fn symlink(
        &self,
        parent: u64,
        name: impl AsRef<[u8]>,
        target: impl AsRef<[u8]>,
    ) -> Result<EntryOut> {
        self.call(FuseRequest::symlink(parent, name, target))?
            .entry()
    }
    /// MKNOD.
    fn mknod(
        &self,
        parent: u64,
        name: impl AsRef<[u8]>,
        mode: u32,
        rdev: u32,
        umask: u32,
    ) -> Result<EntryOut> {
        self.call(FuseRequest::mknod(parent, name, mode, rdev, umask))?
            .entry()
    }
    /// MKDIR.
    fn mkdir(
        &self,
        parent: u64,
        name: impl AsRef<[u8]>,
        mode: u32,
        umask: u32,
    ) -> Result<EntryOut> {
        self.call(FuseRequest::mkdir(parent, name, mode, umask))?
            .entry()
    }
    /// UNLINK.
    fn unlink(&self, parent: u64, name: impl AsRef<[u8]>) -> Result<()> {
        self.call(FuseRequest::unlink(parent, name))?.empty()
    }
    /// RMDIR.
    fn rmdir(&self, parent: u64, name: impl AsRef<[u8]>) -> Result<()> {
        self.call(FuseRequest::rmdir(parent, name))?.empty()
    }
    /// RENAME.
    fn rename(
        &self,
        olddir: u64,
        oldname: impl AsRef<[u8]>,
        newdir: u64,
        newname: impl AsRef<[u8]>,
    ) -> Result<()> {
        self.call(FuseRequest::rename(olddir, oldname, newdir, newname))?
            .empty()
    }
    /// RENAME2.
    fn rename2(
        &self,
        olddir: u64,
        oldname: impl AsRef<[u8]>,
        newdir: u64,
        newname: impl AsRef<[u8]>,
        flags: u32,
    ) -> Result<()> {
        self.call(FuseRequest::rename2(
            olddir, oldname, newdir, newname, flags,
        ))?
        .empty()
    }
    /// LINK.
    fn link(&self, nodeid: u64, newparent: u64, newname: impl AsRef<[u8]>) -> Result<EntryOut> {
        self.call(FuseRequest::link(nodeid, newparent, newname))?
            .entry()
    }
    /// OPEN.
    fn open(&self, nodeid: u64, flags: u32) -> Result<OpenOut> {
        self.call(FuseRequest::open(nodeid, flags))?.open()
    }
    /// CREATE.
    fn create(
        &self,
        parent: u64,
        name: impl AsRef<[u8]>,
        flags: u32,
        mode: u32,
        umask: u32,
    ) -> Result<(EntryOut, OpenOut)> {
        self.call(FuseRequest::create(parent, name, flags, mode, umask))?
            .create()
    }
    /// READ (the reply may be shorter than `size` at end of file).
    fn read(&self, nodeid: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let b = self
            .call(FuseRequest::read(nodeid, fh, offset, size))?
            .ok()?;
        if b.len() > size as usize {
            return Err(Error::BadReply(format!(
                "READ of {size} returned {}",
                b.len()
            )));
        }
        Ok(b)
    }
    /// WRITE; returns the byte count written.
    fn write(&self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        self.call(FuseRequest::write(nodeid, fh, offset, data))?
            .written()
    }
    /// STATFS.
    fn statfs(&self, nodeid: u64) -> Result<Kstatfs> {
        self.call(FuseRequest::statfs(nodeid))?.statfs()
    }
    /// RELEASE.
    fn release(&self, nodeid: u64, fh: u64, flags: u32) -> Result<()> {
        self.call(FuseRequest::release(nodeid, fh, flags))?.empty()
    }
    /// FLUSH.
    fn flush(&self, nodeid: u64, fh: u64) -> Result<()> {
        self.call(FuseRequest::flush(nodeid, fh))?.empty()
    }
    /// FSYNC.
    fn fsync(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        self.call(FuseRequest::fsync(nodeid, fh, datasync, false))?
            .empty()
    }
    /// FSYNCDIR.
    fn fsyncdir(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        self.call(FuseRequest::fsync(nodeid, fh, datasync, true))?
            .empty()
    }
    /// SETXATTR (uses the extended layout if the session negotiated `SETXATTR_EXT`).
    fn setxattr(
        &self,
        nodeid: u64,
        name: impl AsRef<[u8]>,
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        let ext = self.session_flags() & init_flags::SETXATTR_EXT != 0;
        self.call(FuseRequest::setxattr(nodeid, name, value, flags, ext))?
            .empty()
    }
    /// GETXATTR (`size` 0: the size only).
    fn getxattr(&self, nodeid: u64, name: impl AsRef<[u8]>, size: u32) -> Result<XattrReply> {
        self.call(FuseRequest::getxattr(nodeid, name, size))?
            .xattr(size == 0)
    }
    /// LISTXATTR (`size` 0: the size only).
    fn listxattr(&self, nodeid: u64, size: u32) -> Result<XattrReply> {
        self.call(FuseRequest::listxattr(nodeid, size))?
            .xattr(size == 0)
    }
    /// REMOVEXATTR.
    fn removexattr(&self, nodeid: u64, name: impl AsRef<[u8]>) -> Result<()> {
        self.call(FuseRequest::removexattr(nodeid, name))?.empty()
    }
    /// ACCESS.
    fn access(&self, nodeid: u64, mask: u32) -> Result<()> {
        self.call(FuseRequest::access(nodeid, mask))?.empty()
    }
    /// OPENDIR.
    fn opendir(&self, nodeid: u64, flags: u32) -> Result<OpenOut> {
        self.call(FuseRequest::opendir(nodeid, flags))?.open()
    }
    /// READDIR.
    fn readdir(&self, nodeid: u64, fh: u64, offset: u64, size: u32) -> Result<Vec<DirEntry>> {
        self.call(FuseRequest::readdir(nodeid, fh, offset, size))?
            .dirents()
    }
    /// READDIRPLUS.
    fn readdirplus(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<DirEntryPlus>> {
        self.call(FuseRequest::readdirplus(nodeid, fh, offset, size))?
            .direntplus()
    }
    /// RELEASEDIR.
    fn releasedir(&self, nodeid: u64, fh: u64) -> Result<()> {
        self.call(FuseRequest::releasedir(nodeid, fh))?.empty()
    }
    /// FALLOCATE.
    fn fallocate(&self, nodeid: u64, fh: u64, offset: u64, length: u64, mode: u32) -> Result<()> {
        self.call(FuseRequest::fallocate(nodeid, fh, offset, length, mode))?
            .empty()
    }
    /// LSEEK; returns the new offset.
    fn lseek(&self, nodeid: u64, fh: u64, offset: u64, whence: u32) -> Result<u64> {
        self.call(FuseRequest::lseek(nodeid, fh, offset, whence))?
            .lseek()
    }

    /// Reads a whole directory with OPENDIR / READDIR / RELEASEDIR (names only, including `.`
    /// and `..` if the backend lists them).
    fn read_dir_names(&self, nodeid: u64) -> Result<Vec<Vec<u8>>> {
        let fh = self.opendir(nodeid, libc::O_RDONLY as u32)?.fh;
        let mut names = Vec::new();
        let mut off = 0;
        let r = loop {
            match self.readdir(nodeid, fh, off, 4096) {
                Ok(e) if e.is_empty() => break Ok(()),
                Ok(e) => {
                    off = e.last().expect("non-empty").off;
                    names.extend(e.into_iter().map(|d| d.name));
                }
                Err(e) => break Err(e),
            }
        };
        self.releasedir(nodeid, fh)?;
        r.map(|()| names)
    }
}

impl FuseOps for FsClient {
    fn call(&self, req: FuseRequest) -> Result<Reply> {
        let q = self.default_queue(req.opcode);
        let t = self.submit(q, &req, self.creds)?;
        self.wait(t)
    }

    fn session_flags(&self) -> u64 {
        self.session().map(|s| s.flags64()).unwrap_or(0)
    }
}

impl FuseOps for Caller<'_> {
    fn call(&self, req: FuseRequest) -> Result<Reply> {
        let t = self.submit(&req)?;
        self.client.wait(t)
    }

    fn session_flags(&self) -> u64 {
        self.client.session_flags()
    }
}
