//! The bridge: FUSE requests read from /dev/fuse go to the backend as virtio-fs descriptor
//! chains, replies come back and are written to /dev/fuse.
//!
//! Threads:
//! - **readers** (`queues + 1`, at most 8) block in `read(/dev/fuse)`, copy each request into
//!   guest memory and publish it: FORGET / BATCH_FORGET on the hiprio queue, everything else on
//!   the request queues in turn, each of which holds at most `queue_depth` requests. INTERRUPT
//!   is answered ENOSYS at once (see [`crate`] docs);
//! - **one completer per virtqueue** waits for used buffers and writes each reply to /dev/fuse
//!   straight from guest memory (FORGETs get none);
//! - **a backend watcher** polls the vhost-user socket for hang-up;
//! - **a signal thread** turns SIGINT / SIGTERM / SIGHUP into a shutdown.
//!
//! The main thread waits for the first event (signal, kernel session over, backend gone) and
//! ends the mount accordingly (see [`run`]).

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vhost_user_fs_client::abi::{opcode, InHeader, OutHeader};
use vhost_user_fs_client::memory::Allocation;
use vhost_user_fs_client::virtqueue::{Buffers, Descriptor};
use vhost_user_fs_client::{Device, DeviceConfig};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use crate::error::{Error, Result};
use crate::init::{self, KernelInit, Limits};
use crate::mount::{FuseMount, MountOptions};

/// `unique` of requests the bridge makes itself (DESTROY); odd values are the kernel's
/// interrupts, so an even value above anything the kernel reaches in practice.
const OWN_UNIQUE: u64 = 1 << 62;
/// Reply room for opcodes with a fixed-size reply (the largest, `fuse_statx_out`, is 288).
const FIXED_REPLY: u32 = 512;
/// How long a completer or the watcher sleeps before re-checking for shutdown.
const TICK: Duration = Duration::from_millis(100);

/// Everything the bridge needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The backend's vhost-user socket.
    pub socket: PathBuf,
    /// Where to mount.
    pub mountpoint: PathBuf,
    /// Request queues to set up (the backend must offer that many).
    pub queues: u16,
    /// Requests in flight per request queue at most.
    pub queue_depth: u16,
    /// Descriptors per virtqueue (a power of two); bounds `max_pages` like the guest driver.
    pub queue_size: u16,
    /// Cap on `max_pages` below what the queue size allows.
    pub max_pages: Option<u32>,
    /// How long a shutdown by signal waits for the mount's users to go after a lazy unmount
    /// before aborting the connection.
    pub grace: Duration,
    /// mount(2) options.
    pub mount: MountOptions,
    /// Fork a watchdog that unmounts if this process dies without doing so.
    pub watchdog: bool,
}

/// How a bridge run ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The mount was unmounted by someone else (umount, fusermount -u).
    Unmounted,
    /// A signal asked us to stop; the mount is gone.
    Signal(i32),
}

/// A set of signals blocked in every thread and taken with sigwait(2) by one.
#[derive(Clone, Copy)]
struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// Blocks `sigs` in the calling thread (and so in every thread it starts later).
    fn block(sigs: &[libc::c_int]) -> Result<Self> {
        // SAFETY: sigemptyset/sigaddset initialise and fill the set we own;
        // pthread_sigmask only reads it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for &s in sigs {
                libc::sigaddset(&mut set, s);
            }
            let r = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            if r != 0 {
                return Err(Error::Sys(
                    "blocking signals",
                    io::Error::from_raw_os_error(r),
                ));
            }
            Ok(Self(set))
        }
    }

    /// Waits for one of the signals.
    fn wait(&self) -> io::Result<libc::c_int> {
        let mut sig = 0;
        // SAFETY: the set is initialised; `sig` is a valid out pointer.
        let r = unsafe { libc::sigwait(&self.0, &mut sig) };
        if r == 0 {
            Ok(sig)
        } else {
            Err(io::Error::from_raw_os_error(r))
        }
    }
}

/// The name of a signal we handle.
fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

enum Event {
    Signal(libc::c_int),
    /// A reader saw the kernel end the session (ENODEV) or /dev/fuse fail.
    SessionEnded(String),
    /// The backend closed its socket or broke the virtio protocol.
    BackendGone(String),
}

enum Kind {
    /// A kernel request: the reply goes back to the kernel.
    Forward { unique: u64, opcode: u32 },
    /// FORGET / BATCH_FORGET: nothing goes back.
    Forget,
    /// A request of the bridge's own: the reply goes to the channel.
    Own(mpsc::Sender<Vec<u8>>),
}

struct Pending {
    kind: Kind,
    allocs: Vec<Allocation>,
    /// The reply buffer (header + body, contiguous) for requests with a reply.
    reply: Option<Allocation>,
}

#[derive(Default)]
struct QueueSlots {
    pending: HashMap<u64, Pending>,
    reserved: usize,
}

struct QueueState {
    slots: Mutex<QueueSlots>,
    cv: Condvar,
    limit: usize,
    served: AtomicU64,
}

struct Shared {
    dev: Device,
    fuse: RawFd,
    queues: Vec<QueueState>,
    rr: AtomicUsize,
    indirect: bool,
    bufsize: usize,
    stopping: AtomicBool,
    interrupts: AtomicU64,
    bad_replies: AtomicU64,
}

/// Guest memory for `slots` requests in flight of up to `max_write` bytes each (request or
/// reply), plus rings and small requests; split into regions of at most 1 GiB.
fn memory_regions(slots: usize, max_write: u32) -> Vec<u64> {
    let total = slots as u64 * (u64::from(max_write) + (72 << 10)) + (32 << 20);
    let mut v = Vec::new();
    let mut left = total;
    while left > 0 {
        let r = left.min(1 << 30);
        v.push(r);
        left -= r;
    }
    v
}

/// Connects, mounts, performs INIT and forwards until the mount ends. Must be called from a
/// single-threaded process (the watchdog is forked).
pub fn run(cfg: Config) -> Result<Ending> {
    if cfg.queues == 0 || cfg.queue_depth == 0 {
        return Err(Error::InvalidArgument(
            "--queues and --queue-depth must be at least 1",
        ));
    }
    if !cfg.queue_size.is_power_of_two() || cfg.queue_size < 8 {
        return Err(Error::InvalidArgument(
            "--queue-size must be a power of two, at least 8",
        ));
    }
    if cfg.queue_depth > cfg.queue_size {
        return Err(Error::InvalidArgument(
            "--queue-depth cannot exceed --queue-size",
        ));
    }
    let limits = Limits::new(cfg.queue_size, init::kernel_max_pages(), cfg.max_pages);
    let slots = usize::from(cfg.queues) * usize::from(cfg.queue_depth) + 16;
    let mut dc = DeviceConfig::new(&cfg.socket);
    dc.request_queues = cfg.queues;
    dc.queue_size = cfg.queue_size;
    dc.memory_regions = memory_regions(slots, limits.max_write());
    dc.timeout = Duration::from_secs(30);
    let dev = Device::connect(dc)?;
    let n = dev.negotiated();
    info!(
        socket = %cfg.socket.display(),
        queues = cfg.queues,
        queue_size = cfg.queue_size,
        event_idx = n.event_idx(),
        indirect = n.indirect_desc(),
        "connected to the backend"
    );

    // Signals go to the signal thread only: block them before any thread exists.
    let sigs = SignalSet::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])?;

    let mount = FuseMount::mount(&cfg.mountpoint, &cfg.mount)?;
    let _watchdog: Option<File> = if cfg.watchdog {
        Some(crate::mount::spawn_watchdog(
            mount.mountpoint(),
            mount.device,
        )?)
    } else {
        None
    };
    info!(
        mountpoint = %mount.mountpoint().display(),
        connection = mount.connection(),
        "mounted"
    );
    let bufsize = (limits.max_write() as usize).max(64 << 10) + (16 << 10);
    let mut queues = Vec::with_capacity(usize::from(cfg.queues) + 1);
    for q in 0..=usize::from(cfg.queues) {
        queues.push(QueueState {
            slots: Mutex::new(QueueSlots::default()),
            cv: Condvar::new(),
            limit: if q == 0 {
                usize::from(cfg.queue_size)
            } else {
                usize::from(cfg.queue_depth)
            },
            served: AtomicU64::new(0),
        });
    }
    let shared = Arc::new(Shared {
        indirect: n.indirect_desc(),
        dev,
        fuse: mount.fd(),
        queues,
        rr: AtomicUsize::new(0),
        bufsize,
        stopping: AtomicBool::new(false),
        interrupts: AtomicU64::new(0),
        bad_replies: AtomicU64::new(0),
    });

    // INIT, before any other thread runs.
    if let Err(e) = init_session(&shared, limits) {
        let _ = mount.abort();
        let _ = mount.unmount(libc::MNT_DETACH);
        return Err(e);
    }

    let (tx, rx) = mpsc::channel::<Event>();
    let readers = (usize::from(cfg.queues) + 1).min(8);
    for i in 0..readers {
        let (s, tx) = (shared.clone(), tx.clone());
        spawn(format!("fuse-reader-{i}"), move || reader(&s, &tx))?;
    }
    for q in 0..shared.queues.len() {
        let (s, tx) = (shared.clone(), tx.clone());
        spawn(format!("vq-completer-{q}"), move || completer(&s, q, &tx))?;
    }
    {
        let (s, tx) = (shared.clone(), tx.clone());
        spawn("backend-watch".into(), move || {
            while !s.stopping.load(Ordering::Relaxed) {
                if s.dev.backend_hung_up(TICK) {
                    let _ = tx.send(Event::BackendGone("it closed the vhost-user socket".into()));
                    return;
                }
            }
        })?;
    }
    {
        let tx = tx.clone();
        spawn("signals".into(), move || loop {
            match sigs.wait() {
                Ok(s) => {
                    if tx.send(Event::Signal(s)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!("sigwait: {e}");
                    return;
                }
            }
        })?;
    }
    drop(tx);

    let result = supervise(&shared, &mount, &rx, cfg.grace);
    shared.stopping.store(true, Ordering::Relaxed);
    let served: Vec<u64> = shared
        .queues
        .iter()
        .map(|q| q.served.load(Ordering::Relaxed))
        .collect();
    info!(
        ?served,
        interrupts = shared.interrupts.load(Ordering::Relaxed),
        bad_replies = shared.bad_replies.load(Ordering::Relaxed),
        "requests served per virtqueue (0 = hiprio)"
    );
    result
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<()> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .map(drop)
        .map_err(|e| Error::Sys("spawning a thread", e))
}

/// Waits for the first event and ends the session accordingly.
fn supervise(
    shared: &Shared,
    mount: &FuseMount,
    rx: &mpsc::Receiver<Event>,
    grace: Duration,
) -> Result<Ending> {
    let first = rx
        .recv()
        .map_err(|_| Error::Init("all threads ended".into()))?;
    match first {
        Event::BackendGone(why) => {
            warn!("the backend went away ({why}): aborting the FUSE connection and detaching the mount");
            end_abort(mount);
            Err(Error::BackendGone)
        }
        Event::SessionEnded(why) => {
            info!("the kernel ended the FUSE session ({why})");
            drain_and_destroy(shared);
            Ok(Ending::Unmounted)
        }
        Event::Signal(sig) => {
            info!(
                "{}: unmounting {}",
                signal_name(sig),
                mount.mountpoint().display()
            );
            match mount.unmount(0) {
                Ok(_) => {}
                Err(Error::Sys(_, e)) if e.raw_os_error() == Some(libc::EBUSY) => {
                    info!(
                        "mount busy: detaching it (lazy unmount); users have {grace:?} to let go"
                    );
                    if let Err(e) = mount.unmount(libc::MNT_DETACH) {
                        warn!("lazy unmount failed: {e}");
                    }
                }
                Err(e) => warn!("unmount failed: {e}"),
            }
            match rx.recv_timeout(grace) {
                Ok(Event::SessionEnded(_)) => drain_and_destroy(shared),
                Ok(Event::BackendGone(why)) => {
                    warn!("the backend went away during shutdown ({why})");
                    end_abort(mount);
                }
                Ok(Event::Signal(s)) => {
                    info!("{} again: aborting the connection now", signal_name(s));
                    end_abort(mount);
                }
                Err(_) => {
                    warn!("the mount is still in use after {grace:?}: aborting the connection");
                    end_abort(mount);
                    drain_and_destroy(shared);
                }
            }
            Ok(Ending::Signal(sig))
        }
    }
}

/// Aborts the connection (everything in flight and later gets ENOTCONN) and detaches the mount.
fn end_abort(mount: &FuseMount) {
    if let Err(e) = mount.abort() {
        warn!("aborting the connection through fusectl failed: {e}; it ends when we exit");
    }
    match mount.unmount(libc::MNT_DETACH) {
        Ok(_) => {}
        Err(e) => warn!("lazy unmount failed: {e}"),
    }
}

/// Waits (up to 5 s) for requests in flight, then sends DESTROY as a guest does on unmount.
fn drain_and_destroy(shared: &Shared) {
    let deadline = Instant::now() + Duration::from_secs(5);
    for q in &shared.queues[1..] {
        let mut g = q.slots.lock().unwrap();
        while g.reserved > 0 && Instant::now() < deadline {
            g = q.cv.wait_timeout(g, TICK).unwrap().0;
        }
    }
    let hdr = InHeader {
        len: 40,
        opcode: opcode::DESTROY,
        unique: OWN_UNIQUE,
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel();
    match submit(shared, 1, hdr.as_slice(), Some(0), Kind::Own(tx)) {
        Ok(()) => match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(_) => debug!("DESTROY answered"),
            Err(_) => warn!("no answer to DESTROY within 5 s"),
        },
        Err(e) => warn!("sending DESTROY: {e}"),
    }
}

/// Reads the kernel's INIT, forwards it, and answers the kernel with the agreed parameters.
fn init_session(shared: &Shared, limits: Limits) -> Result<()> {
    let mut buf = vec![0u8; shared.bufsize];
    let n = loop {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::read(shared.fuse, buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::Sys("reading INIT from /dev/fuse", e));
        }
    };
    let hdr = header(&buf[..n]).ok_or_else(|| Error::Init("short request".into()))?;
    if hdr.opcode != opcode::INIT {
        return Err(Error::Init(format!(
            "first request is opcode {}, not INIT",
            hdr.opcode
        )));
    }
    let body = &buf[40..n];
    let k = KernelInit::parse(body).ok_or_else(|| Error::Init("short fuse_init_in".into()))?;
    let to_backend = k.to_backend(body.len());
    let mut req = InHeader {
        len: (40 + to_backend.len()) as u32,
        ..hdr
    }
    .as_slice()
    .to_vec();
    req.extend_from_slice(&to_backend);
    debug!(
        minor = k.minor,
        flags = format_args!("{:#x}", k.flags),
        offered = format_args!("{:#x}", k.offered()),
        "kernel INIT"
    );
    let (tx, rx) = mpsc::channel();
    submit(shared, 1, &req, Some(64), Kind::Own(tx))?;
    // No completer runs yet: collect the reply here.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reply = loop {
        let vq = shared.dev.queue(1)?;
        match vq.wait_any(TICK) {
            Ok(tokens) => {
                for t in tokens {
                    complete(shared, 1, t.seq)?;
                }
            }
            Err(vhost_user_fs_client::Error::Timeout(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if let Ok(r) = rx.try_recv() {
            break r;
        }
        if Instant::now() >= deadline || shared.dev.backend_hung_up(Duration::ZERO) {
            return Err(Error::Init("no reply from the backend".into()));
        }
    };
    let out = out_header(&reply).ok_or_else(|| Error::Init("short reply".into()))?;
    if out.error != 0 {
        let e = out.error;
        write_error(shared.fuse, hdr.unique, -e);
        return Err(Error::Init(format!(
            "the backend answered {}",
            io::Error::from_raw_os_error(-e)
        )));
    }
    let (body, agreed) = init::to_kernel(&reply[16..], &k, limits).map_err(Error::Init)?;
    let oh = OutHeader {
        len: (16 + body.len()) as u32,
        error: 0,
        unique: hdr.unique,
    };
    let mut msg = oh.as_slice().to_vec();
    msg.extend_from_slice(&body);
    write_all(shared.fuse, &msg).map_err(|e| Error::Sys("writing INIT to /dev/fuse", e))?;
    info!(
        minor = agreed.minor,
        flags = format_args!("{:#x}", agreed.flags),
        max_write = agreed.max_write,
        max_pages = agreed.max_pages,
        "FUSE session up"
    );
    Ok(())
}

fn header(b: &[u8]) -> Option<InHeader> {
    let mut h = InHeader::default();
    h.as_mut_slice().copy_from_slice(b.get(..40)?);
    Some(h)
}

fn out_header(b: &[u8]) -> Option<OutHeader> {
    let mut h = OutHeader::default();
    h.as_mut_slice().copy_from_slice(b.get(..16)?);
    Some(h)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes(s.try_into().expect("4 bytes")))
}

/// Room for the reply body (after `fuse_out_header`) of a request.
fn reply_room(op: u32, body: &[u8], max: u32) -> u32 {
    let r = match op {
        // fuse_read_in.size
        opcode::READ | opcode::READDIR | opcode::READDIRPLUS => u32_at(body, 16).unwrap_or(0),
        // fuse_getxattr_in.size; 0 asks for a fuse_getxattr_out
        opcode::GETXATTR | opcode::LISTXATTR => u32_at(body, 0).unwrap_or(0).max(8),
        opcode::READLINK => 4096,
        // fuse_ioctl_out + fuse_ioctl_in.out_size
        opcode::IOCTL => 16u32.saturating_add(u32_at(body, 28).unwrap_or(0)),
        _ => 0,
    };
    r.clamp(FIXED_REPLY, max)
}

/// Copies `req` (a whole FUSE request) into guest memory and publishes it on `queue`, laid out
/// as the Linux driver does: the header, the arguments (for WRITE: `fuse_write_in` and the data
/// apart), then the reply header and the reply body (`reply_room` bytes: `Some(0)` = a bare
/// header, `None` = no reply at all, for FORGET).
fn submit(
    shared: &Shared,
    queue: usize,
    req: &[u8],
    reply_room: Option<u32>,
    kind: Kind,
) -> Result<()> {
    let q = &shared.queues[queue];
    {
        let mut g = q.slots.lock().unwrap();
        while g.reserved >= q.limit {
            g = q.cv.wait(g).unwrap();
        }
        g.reserved += 1;
    }
    let r = submit_reserved(shared, queue, req, reply_room, kind);
    if r.is_err() {
        let mut g = q.slots.lock().unwrap();
        g.reserved -= 1;
        q.cv.notify_all();
    }
    r
}

fn alloc(shared: &Shared, len: u64) -> Result<Allocation> {
    let mem = shared.dev.memory();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match mem.alloc(len, 64) {
            Ok(a) => return Ok(a),
            // Fragmentation: wait for completions to free memory.
            Err(vhost_user_fs_client::Error::OutOfGuestMemory(_)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn submit_reserved(
    shared: &Shared,
    queue: usize,
    req: &[u8],
    reply_room: Option<u32>,
    kind: Kind,
) -> Result<()> {
    let mem = shared.dev.memory();
    let mut allocs = Vec::with_capacity(2);
    let mut reply = None;
    let built = (|| -> Result<Vec<Descriptor>> {
        let a = alloc(shared, req.len() as u64)?;
        allocs.push(a);
        mem.write(a.addr, req)?;
        let op = u32_at(req, 4).unwrap_or(0);
        let mut cuts = vec![0usize, 40.min(req.len())];
        if op == opcode::WRITE && req.len() > 80 {
            cuts.push(80);
        }
        cuts.push(req.len());
        let mut descs: Vec<Descriptor> = cuts
            .windows(2)
            .filter(|w| w[1] > w[0])
            .map(|w| Descriptor {
                addr: a.addr.0 + w[0] as u64,
                len: (w[1] - w[0]) as u32,
                write: false,
            })
            .collect();
        if let Some(room) = reply_room {
            let r = alloc(shared, 16 + u64::from(room))?;
            reply = Some(r);
            descs.push(Descriptor {
                addr: r.addr.0,
                len: 16,
                write: true,
            });
            if room > 0 {
                descs.push(Descriptor {
                    addr: r.addr.0 + 16,
                    len: room,
                    write: true,
                });
            }
        }
        Ok(descs)
    })();
    let descs = match built {
        Ok(d) => d,
        Err(e) => {
            allocs.iter().chain(reply.iter()).for_each(|&a| mem.free(a));
            return Err(e);
        }
    };
    let vq = shared.dev.queue(queue)?;
    // The slot lock is held across the publication so that the completer cannot see the
    // completion before the request is recorded.
    let q = &shared.queues[queue];
    let mut g = q.slots.lock().unwrap();
    match vq.submit(
        &descs,
        shared.indirect,
        Buffers::default(),
        shared.dev.config().timeout,
    ) {
        Ok(t) => {
            g.pending.insert(
                t.seq,
                Pending {
                    kind,
                    allocs,
                    reply,
                },
            );
            Ok(())
        }
        Err(e) => {
            drop(g);
            allocs.iter().chain(reply.iter()).for_each(|&a| mem.free(a));
            Err(e.into())
        }
    }
}

/// Answers `unique` with `-errno` and no body.
fn write_error(fd: RawFd, unique: u64, errno: i32) {
    let h = OutHeader {
        len: 16,
        error: -errno,
        unique,
    };
    if let Err(e) = write_all(fd, h.as_slice()) {
        debug!(unique, "writing an error reply: {e}");
    }
}

/// One write(2) to /dev/fuse (the kernel takes a reply in one write).
fn write_all(fd: RawFd, b: &[u8]) -> io::Result<()> {
    write_raw(fd, b.as_ptr(), b.len())
}

fn write_raw(fd: RawFd, p: *const u8, len: usize) -> io::Result<()> {
    loop {
        // SAFETY: the caller passes a pointer valid for reads of `len` bytes.
        let r = unsafe { libc::write(fd, p.cast(), len) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

fn reader(shared: &Shared, tx: &mpsc::Sender<Event>) {
    let mut buf = vec![0u8; shared.bufsize];
    let nq = shared.queues.len() - 1;
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let r = unsafe { libc::read(shared.fuse, buf.as_mut_ptr().cast(), buf.len()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::ENOENT) => continue,
                Some(libc::ENODEV) => {
                    let _ = tx.send(Event::SessionEnded("connection closed".into()));
                }
                _ => {
                    let _ = tx.send(Event::SessionEnded(format!("reading /dev/fuse: {e}")));
                }
            }
            return;
        }
        let req = &buf[..r as usize];
        let Some(h) = header(req) else {
            warn!("short request of {} bytes from /dev/fuse", req.len());
            continue;
        };
        let result = match h.opcode {
            opcode::INTERRUPT => {
                // virtio-fs has no interrupts (the Linux guest driver drops them): ENOSYS
                // tells the kernel not to send any more; the request completes normally.
                if shared.interrupts.fetch_add(1, Ordering::Relaxed) == 0 {
                    debug!("INTERRUPT answered ENOSYS: the kernel sends no more");
                }
                write_error(shared.fuse, h.unique, libc::ENOSYS);
                continue;
            }
            opcode::FORGET | opcode::BATCH_FORGET => submit(shared, 0, req, None, Kind::Forget),
            op => {
                let q = 1 + shared.rr.fetch_add(1, Ordering::Relaxed) % nq;
                let room = reply_room(op, &req[40..], shared.bufsize as u32);
                submit(
                    shared,
                    q,
                    req,
                    Some(room),
                    Kind::Forward {
                        unique: h.unique,
                        opcode: op,
                    },
                )
            }
        };
        if let Err(e) = result {
            warn!(opcode = h.opcode, "forwarding failed: {e}");
            if !matches!(h.opcode, opcode::FORGET | opcode::BATCH_FORGET) {
                write_error(shared.fuse, h.unique, libc::EIO);
            }
            if matches!(e, Error::Backend(vhost_user_fs_client::Error::DeviceBug(_))) {
                let _ = tx.send(Event::BackendGone(e.to_string()));
                return;
            }
        }
    }
}

fn completer(shared: &Shared, queue: usize, tx: &mpsc::Sender<Event>) {
    let Ok(vq) = shared.dev.queue(queue) else {
        return;
    };
    while !shared.stopping.load(Ordering::Relaxed) {
        match vq.wait_any(TICK) {
            Ok(tokens) => {
                for t in tokens {
                    if let Err(e) = complete(shared, queue, t.seq) {
                        let _ = tx.send(Event::BackendGone(e.to_string()));
                        return;
                    }
                }
            }
            Err(vhost_user_fs_client::Error::Timeout(_)) => {}
            Err(e) => {
                let _ = tx.send(Event::BackendGone(e.to_string()));
                return;
            }
        }
    }
}

/// Takes the completion of `seq` on `queue` and delivers its reply.
fn complete(shared: &Shared, queue: usize, seq: u64) -> Result<()> {
    let q = &shared.queues[queue];
    let vq = shared.dev.queue(queue)?;
    let p = q.slots.lock().unwrap().pending.remove(&seq);
    let Some(p) = p else {
        // Not ours (cannot happen: requests are recorded before they are published).
        return Ok(());
    };
    let token = vhost_user_fs_client::Token {
        queue: queue as u16,
        seq,
    };
    let used = vq.try_take(token)?.map(|c| c.used_len).unwrap_or(0);
    q.served.fetch_add(1, Ordering::Relaxed);
    let mem = shared.dev.memory();
    match (&p.kind, p.reply) {
        (Kind::Forget, _) => {}
        (Kind::Own(tx), Some(r)) => {
            let len = (used as usize).min(16 + r.len as usize);
            let _ = tx.send(mem.read(r.addr, len).unwrap_or_default());
        }
        (Kind::Own(tx), None) => {
            let _ = tx.send(Vec::new());
        }
        (&Kind::Forward { unique, opcode }, Some(r)) => deliver(shared, unique, opcode, used, r),
        (&Kind::Forward { unique, .. }, None) => write_error(shared.fuse, unique, libc::EIO),
    }
    for a in p.allocs.iter().chain(p.reply.iter()) {
        mem.free(*a);
    }
    let mut g = q.slots.lock().unwrap();
    g.reserved -= 1;
    q.cv.notify_all();
    Ok(())
}

/// Checks the backend's reply in guest memory and writes it to /dev/fuse.
fn deliver(shared: &Shared, unique: u64, op: u32, used: u32, r: Allocation) {
    let mem = shared.dev.memory();
    let bad = |why: String| {
        if shared.bad_replies.fetch_add(1, Ordering::Relaxed) < 8 {
            warn!(
                unique,
                opcode = op,
                "bad reply from the backend: {why}; answering EIO"
            );
        }
        write_error(shared.fuse, unique, libc::EIO);
    };
    let room = r.len as u32;
    if used < 16 {
        return bad(format!("used length {used}"));
    }
    let Ok(h) = mem.mmap().read_obj::<OutHeader>(GuestAddress(r.addr.0)) else {
        return bad("unreadable header".into());
    };
    if h.unique != unique {
        return bad(format!("unique {} instead of {unique}", h.unique));
    }
    if h.error > 0 || h.error < -4095 {
        return bad(format!("error {}", h.error));
    }
    if h.error != 0 {
        // The kernel takes an error reply only as a bare header.
        return write_error(shared.fuse, unique, -h.error);
    }
    if h.len < 16 || h.len > used || h.len > room {
        return bad(format!("header len {} with used length {used}", h.len));
    }
    let Ok(host) = mem.host_address(r.addr) else {
        return bad("reply outside guest memory".into());
    };
    // The reply allocation is contiguous in one region of our own mapping and stays allocated
    // until after this write.
    match write_raw(shared.fuse, host as *const u8, h.len as usize) {
        Ok(()) => {}
        // The request is gone (interrupted or the connection aborted).
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENODEV)) => {}
        Err(e) => bad(format!("/dev/fuse refused it: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_room_covers_every_reply_shape() {
        let read = {
            let mut b = vec![0u8; 40];
            b[16..20].copy_from_slice(&(1u32 << 20).to_le_bytes());
            b
        };
        assert_eq!(reply_room(opcode::READ, &read, 2 << 20), 1 << 20);
        assert_eq!(reply_room(opcode::READ, &read, 4096), 4096);
        assert_eq!(reply_room(opcode::GETXATTR, &[0; 8], 1 << 20), FIXED_REPLY);
        let mut gx = vec![0u8; 8];
        gx[..4].copy_from_slice(&65536u32.to_le_bytes());
        assert_eq!(reply_room(opcode::LISTXATTR, &gx, 1 << 20), 65536);
        assert_eq!(reply_room(opcode::READLINK, &[], 1 << 20), 4096);
        assert_eq!(reply_room(opcode::GETATTR, &[], 1 << 20), FIXED_REPLY);
        // Truncated bodies do not panic.
        assert_eq!(reply_room(opcode::READ, &[1, 2], 1 << 20), FIXED_REPLY);
    }

    #[test]
    fn memory_is_split_into_regions_of_at_most_a_gib() {
        let r = memory_regions(4 * 256 + 16, 1 << 20);
        assert!(r.iter().all(|&x| x <= 1 << 30));
        assert!(r.iter().sum::<u64>() >= 1040 * (1 << 20));
        assert_eq!(memory_regions(1, 4096).len(), 1);
    }
}
