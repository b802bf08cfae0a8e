//! The rig shared by the pipeline's integration tests: real split rings in guest memory,
//! kicked and completed through eventfds as QEMU and a guest driver would, and a scripted FUSE
//! handler that records what ran where.
#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhost_user_backend::VringT;
use virtiofs_device::{FsBackend, FsBackendConfig, QueueLink, WatchedVring};
use virtiofs_fuse::abi::{InHeader, Opcode, OutHeader};
use virtiofs_fuse::{Deferred, IoKind, PendingReply, PreparedIo};
use virtiofs_pipeline::request::{peek_in_header, write_reply_prefix};
use virtiofs_pipeline::{
    Chain, FuseHandler, HandleError, Handled, Pipeline, PipelineConfig, Start,
};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const QUEUE_SIZE: u16 = 64;
pub const MEM_SIZE: usize = 16 << 20;
pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;

pub const INIT: u32 = Opcode::Init as u32;
pub const DESTROY: u32 = Opcode::Destroy as u32;
pub const GETATTR: u32 = Opcode::Getattr as u32;
pub const SETLKW: u32 = Opcode::Setlkw as u32;
pub const READ: u32 = Opcode::Read as u32;
pub const WRITE: u32 = Opcode::Write as u32;
pub const CREATE: u32 = Opcode::Create as u32;
pub const UNLINK: u32 = Opcode::Unlink as u32;

/// One request the handler ran: (opcode, unique, started, finished, thread name).
pub type Ran = (u32, u64, Instant, Instant, String);

/// A FUSE handler that records what ran, where, how many ran at once, and sleeps as told.
#[derive(Default)]
pub struct ScriptedHandler {
    pub running: AtomicUsize,
    pub peak: AtomicUsize,
    /// Requests running on a thread that is not a queue thread (the pool).
    pub running_pooled: AtomicUsize,
    pub peak_pooled: AtomicUsize,
    pub handled: AtomicUsize,
    pub log: Mutex<Vec<Ran>>,
    pub delay_ms: AtomicUsize,
    /// A further sleep of this many microseconds, for the same requests as `delay_ms`.
    pub delay_us: AtomicUsize,
    /// When set, each GETATTR waits (up to 10 s) until this many requests run at once.
    pub rendezvous: AtomicUsize,
    /// GETATTRs that arrived at the rendezvous, and those that saw all `rendezvous` arrive.
    pub arrived: AtomicUsize,
    pub met: AtomicUsize,
    /// SETLKW answers EAGAIN (the lock is held elsewhere) while set.
    pub lock_held: AtomicBool,
    /// While set, a SETLKW run by a pool runner waits in the handler (up to 10 s).
    pub hold_pooled_setlkw: AtomicBool,
    /// Sessions ended without DESTROY, and how many requests ran at that moment.
    pub sessions_ended: AtomicUsize,
    pub running_at_end: AtomicUsize,
    /// Queue sizes told before each INIT, with the opcodes that had run by then.
    pub queue_sizes: Mutex<Vec<(u16, usize)>>,
    /// When set, READs are deferred: a READV from this descriptor (a pipe the test writes to
    /// when it wants the READ to complete) into the reply buffer after the reply header.
    pub read_from: Mutex<Option<Arc<std::os::fd::OwnedFd>>>,
    /// Deferred READs started, and finished (with the byte counts or errnos they came to).
    pub deferred: AtomicUsize,
    pub finished: Mutex<Vec<(u64, Result<usize, i32>)>>,
}

/// Whether the current thread is one of the pipeline's queue threads.
pub fn on_queue_thread() -> bool {
    std::thread::current()
        .name()
        .is_some_and(|n| n.starts_with("virtiofs-"))
}

impl FuseHandler for ScriptedHandler {
    fn handle(&self, chain: &Chain, h: &InHeader) -> Result<Handled, HandleError> {
        let start = Instant::now();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        let pooled = !on_queue_thread();
        if pooled {
            let now = self.running_pooled.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak_pooled.fetch_max(now, Ordering::SeqCst);
        }
        assert_eq!(
            peek_in_header(chain).map(|p| p.unique),
            Some(h.unique),
            "the header handed over is the chain's"
        );
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::SeqCst) as u64)
            + Duration::from_micros(self.delay_us.load(Ordering::SeqCst) as u64);
        if [GETATTR, READ, WRITE, CREATE, UNLINK].contains(&h.opcode) && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let target = self.rendezvous.load(Ordering::SeqCst);
        if h.opcode == GETATTR && target > 0 {
            // Nobody leaves before `target` have arrived: reaching it means they all ran at once.
            self.arrived.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.arrived.load(Ordering::SeqCst) < target && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if self.arrived.load(Ordering::SeqCst) >= target {
                self.met.fetch_add(1, Ordering::SeqCst);
            }
        }
        if h.opcode == SETLKW && pooled {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.hold_pooled_setlkw.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let errno = match h.opcode == SETLKW && self.lock_held.load(Ordering::SeqCst) {
            true => libc::EAGAIN,
            false => 0,
        };
        let reply = OutHeader {
            len: 16,
            error: -errno,
            unique: h.unique,
        };
        let ok = write_reply_prefix(chain, reply.as_slice());
        if pooled {
            self.running_pooled.fetch_sub(1, Ordering::SeqCst);
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.handled.fetch_add(1, Ordering::SeqCst);
        let thread = std::thread::current().name().unwrap_or("").to_owned();
        self.log
            .lock()
            .unwrap()
            .push((h.opcode, h.unique, start, Instant::now(), thread));
        if ok {
            Ok(Handled { len: 16, errno })
        } else {
            Err(HandleError::Server("no room for the reply".into()))
        }
    }

    fn set_queue_size(&self, descriptors: u16) {
        let handled = self.handled.load(Ordering::SeqCst);
        self.queue_sizes
            .lock()
            .unwrap()
            .push((descriptors, handled));
    }

    fn defers(&self, opcode: u32) -> bool {
        opcode == READ && self.read_from.lock().unwrap().is_some()
    }

    fn start(&self, chain: &Chain, h: &InHeader) -> Result<Start, HandleError> {
        let fd = self.read_from.lock().unwrap().clone();
        let Some(fd) = fd.filter(|_| h.opcode == READ) else {
            return self.handle(chain, h).map(Start::Done);
        };
        // The reply buffer: the chain's first writable descriptor; data after the header.
        let reply = chain.writable().first().expect("a reply buffer");
        let data = chain
            .memory()
            .get_host_address(GuestAddress(reply.addr.0 + 16))
            .expect("reply buffer in guest memory");
        self.deferred.fetch_add(1, Ordering::SeqCst);
        Ok(Start::Io(Deferred {
            io: PreparedIo {
                kind: IoKind::Read,
                fd: fd.as_raw_fd(),
                offset: u64::MAX, // a pipe: no offset
                iovecs: vec![libc::iovec {
                    iov_base: data.cast(),
                    iov_len: reply.len as usize - 16,
                }],
                keep: Box::new(fd),
            },
            reply: PendingReply::new(h.unique, Opcode::Read, reply.len as usize - 16),
        }))
    }

    fn finish(
        &self,
        chain: &Chain,
        reply: &PendingReply,
        result: Result<usize, i32>,
    ) -> Result<Handled, HandleError> {
        self.finished.lock().unwrap().push((reply.unique(), result));
        let (len, errno) = match result {
            Ok(n) => (16 + n, 0),
            Err(e) => (16, e),
        };
        let header = OutHeader {
            len: len as u32,
            error: -errno,
            unique: reply.unique(),
        };
        write_reply_prefix(chain, header.as_slice());
        Ok(Handled { len, errno })
    }

    fn end_session(&self) {
        let running = self.running.load(Ordering::SeqCst);
        self.running_at_end.fetch_max(running, Ordering::SeqCst);
        self.sessions_ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// The driver side of one split virtqueue, laid out in guest memory.
pub struct Driver {
    pub mem: GuestMemoryMmap<()>,
    pub base: u64,
    pub kick: EventFd,
    pub call: EventFd,
    pub next_avail: u16,
    pub next_used: u16,
    pub next_slot: u16,
    /// Posted chains are made available only by [`Driver::publish`].
    pub holding: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Used {
    pub id: u32,
    pub len: u32,
    pub reply: OutHeader,
}

impl Driver {
    pub fn desc_addr(&self) -> u64 {
        self.base
    }
    pub fn avail_addr(&self) -> u64 {
        self.base + 0x1000
    }
    pub fn used_addr(&self) -> u64 {
        self.base + 0x2000
    }
    /// Buffers of descriptor slot `slot`: 4 KiB each, after the rings.
    pub fn buf_addr(&self, slot: u16) -> u64 {
        self.base + 0x4000 + slot as u64 * 0x1000
    }

    pub fn write_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc_addr() + 16 * i as u64;
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Posts a chain built from `(addr, len, writable)` parts; returns its head index.
    pub fn post_raw(&mut self, parts: &[(u64, u32, bool)]) -> u16 {
        let head = self.next_slot;
        for (k, (addr, len, writable)) in parts.iter().enumerate() {
            let i = (head + k as u16) % QUEUE_SIZE;
            let mut flags = if *writable { VRING_DESC_F_WRITE } else { 0 };
            if k + 1 < parts.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            self.write_desc(i, *addr, *len, flags, (i + 1) % QUEUE_SIZE);
        }
        self.next_slot = (head + parts.len() as u16) % QUEUE_SIZE;
        let slot = self.avail_addr() + 4 + 2 * (self.next_avail % QUEUE_SIZE) as u64;
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.next_avail = self.next_avail.wrapping_add(1);
        if !self.holding {
            self.publish();
        }
        head
    }

    /// Makes every chain posted so far available to the device (one avail index write).
    pub fn publish(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.mem
            .write_obj(self.next_avail, GuestAddress(self.avail_addr() + 2))
            .unwrap();
    }

    /// Posts the requests `(opcode, unique)` and makes them available at once, so that the
    /// device sees all of them or none (one batch).
    pub fn post_batch(&mut self, requests: impl IntoIterator<Item = (u32, u64)>) {
        self.post_batch_to(requests.into_iter().map(|(op, unique)| (op, unique, 1)));
    }

    /// [`Self::post_batch`] of `(opcode, unique, nodeid)`.
    pub fn post_batch_to(&mut self, requests: impl IntoIterator<Item = (u32, u64, u64)>) {
        self.holding = true;
        for (opcode, unique, nodeid) in requests {
            self.post_to(opcode, unique, nodeid);
        }
        self.holding = false;
        self.publish();
    }

    /// Posts a FUSE request: header (+ `body` bytes) readable, a 64-byte reply buffer writable.
    pub fn post(&mut self, opcode: u32, unique: u64) -> u16 {
        self.post_to(opcode, unique, 1)
    }

    /// [`Self::post`] for the inode `nodeid`.
    pub fn post_to(&mut self, opcode: u32, unique: u64, nodeid: u64) -> u16 {
        let slot = self.next_slot;
        let header = InHeader {
            len: 40,
            opcode,
            unique,
            nodeid,
            ..Default::default()
        };
        let inbuf = self.buf_addr(slot);
        let outbuf = self.buf_addr((slot + 1) % QUEUE_SIZE);
        self.mem.write_obj(header, GuestAddress(inbuf)).unwrap();
        self.mem
            .write_slice(&[0xAA; 64], GuestAddress(outbuf))
            .unwrap();
        self.post_raw(&[(inbuf, 40, false), (outbuf, 64, true)])
    }

    pub fn kick(&self) {
        self.kick.write(1).unwrap();
    }

    /// Waits until `n` more chains are used; returns them in used-ring order.
    pub fn wait_used(&mut self, n: usize) -> Vec<Used> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut out = Vec::new();
        while out.len() < n {
            let idx: u16 = self
                .mem
                .read_obj(GuestAddress(self.used_addr() + 2))
                .unwrap();
            while self.next_used != idx && out.len() < n {
                let e = self.used_addr() + 4 + 8 * (self.next_used % QUEUE_SIZE) as u64;
                let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
                // The reply buffer is the slot after the head for chains built by `post`.
                let reply_at = self.buf_addr((id as u16 + 1) % QUEUE_SIZE);
                let reply: OutHeader = self.mem.read_obj(GuestAddress(reply_at)).unwrap();
                out.push(Used { id, len, reply });
                self.next_used = self.next_used.wrapping_add(1);
            }
            assert!(
                Instant::now() < deadline,
                "timed out: {} of {n} chains used",
                out.len()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        out
    }
}

pub fn eventfd_file(e: &EventFd) -> File {
    // SAFETY: the fd is open for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(e.as_raw_fd()) };
    File::from(fd.try_clone_to_owned().unwrap())
}

/// The driver side of queue `link`, its rings laid out but not handed to the device yet.
pub fn driver_for(link: &QueueLink, mem: &GuestMemoryMmap<()>) -> Driver {
    Driver {
        mem: mem.clone(),
        base: 0x10_0000 * (1 + link.index as u64),
        kick: EventFd::new(EFD_NONBLOCK).unwrap(),
        call: EventFd::new(EFD_NONBLOCK).unwrap(),
        next_avail: 0,
        next_used: 0,
        next_slot: 0,
        holding: false,
    }
}

impl Driver {
    /// Sets the ring up on `vring` the way the vhost-user protocol thread would.
    pub fn start(&self, vring: &WatchedVring, event_idx: bool) {
        vring.set_queue_size(QUEUE_SIZE);
        vring
            .set_queue_info(self.desc_addr(), self.avail_addr(), self.used_addr())
            .unwrap();
        vring.set_queue_event_idx(event_idx);
        vring.set_call(Some(eventfd_file(&self.call)));
        vring.set_kick(Some(eventfd_file(&self.kick)));
        vring.set_queue_ready(true);
        vring.set_enabled(true);
    }

    /// Writes the avail ring's `used_event` (EVENT_IDX): notify me once the used index passes
    /// `index`.
    pub fn set_used_event(&self, index: u16) {
        let at = self.avail_addr() + 4 + 2 * u64::from(QUEUE_SIZE);
        self.mem.write_obj(index, GuestAddress(at)).unwrap();
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    /// Guest notifications (call eventfd writes) since the last call.
    pub fn notifications(&self) -> u64 {
        self.call.read().unwrap_or(0)
    }
}

/// Sets up queue `link` the way the vhost-user protocol thread would and returns its driver.
pub fn start_ring(link: &QueueLink, mem: &GuestMemoryMmap<()>, event_idx: bool) -> Driver {
    let d = driver_for(link, mem);
    d.start(&link.vring, event_idx);
    d
}

/// This process's threads: each one's name and /proc/self/task/TID directory.
fn threads() -> impl Iterator<Item = (String, std::path::PathBuf)> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| {
            let dir = t.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            Some((name.trim_end().to_owned(), dir))
        })
}

/// Names of this process's threads that start with `prefix`.
pub fn threads_named(prefix: &str) -> Vec<String> {
    threads()
        .map(|(name, _)| name)
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// The /proc/self/task/TID directory of this process's thread `name`, if there is one.
pub fn thread_dir(name: &str) -> Option<std::path::PathBuf> {
    threads().find_map(|(n, dir)| (n == name).then_some(dir))
}

pub struct Rig {
    pub pipeline: Pipeline,
    pub handler: Arc<ScriptedHandler>,
    pub drivers: Vec<Driver>,
    pub vrings: Vec<WatchedVring>,
    pub _daemon: vhost_user_backend::VhostUserDaemon<FsBackend>,
}

/// A device with `queues` request queues, all started, served with `pool` permits per queue.
pub fn rig(queues: usize, pool: usize, event_idx: bool) -> Rig {
    rig_with(queues, pool, event_idx, |_| true, None)
}

/// [`rig`] with only the queues `started` says started, and pooled requests on `runtime`
/// (default: the current one).
pub fn rig_with(
    queues: usize,
    pool: usize,
    event_idx: bool,
    started: impl Fn(usize) -> bool,
    runtime: Option<tokio::runtime::Handle>,
) -> Rig {
    let config = PipelineConfig {
        thread_pool_size: pool,
        ..Default::default()
    };
    rig_config(queues, config, event_idx, started, runtime)
}

/// [`rig_with`] with a whole pipeline configuration.
pub fn rig_config(
    queues: usize,
    config: PipelineConfig,
    event_idx: bool,
    started: impl Fn(usize) -> bool,
    runtime: Option<tokio::runtime::Handle>,
) -> Rig {
    let backend = FsBackend::new(FsBackendConfig {
        request_queues: queues,
    });
    let (daemon, links) = backend.create_daemon("test").unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    links[0].mem.lock().unwrap().replace(mem.clone());
    let drivers = links
        .iter()
        .map(|l| match started(l.index) {
            true => start_ring(l, &mem, event_idx),
            false => driver_for(l, &mem),
        })
        .collect();
    let handler = Arc::new(ScriptedHandler::default());
    let vrings = links.iter().map(|l| l.vring.clone()).collect();
    let runtime = runtime.unwrap_or_else(tokio::runtime::Handle::current);
    let pipeline = Pipeline::start_on(links, handler.clone(), config, runtime).unwrap();
    Rig {
        pipeline,
        handler,
        drivers,
        vrings,
        _daemon: daemon,
    }
}

/// A device with one request queue, no pool, polling its ring up to `poll_max`, after INIT.
#[allow(dead_code)] // the polling tests' only
pub fn polling_rig(poll_max: Duration) -> Rig {
    polling_rig_with(PipelineConfig {
        poll_max,
        ..Default::default()
    })
}

/// [`polling_rig`] with the rest of `config` (`poll_max`, `queue_affinity`, `host_load`): one
/// request queue, no pool, after INIT.
#[allow(dead_code)] // the polling tests' only
pub fn polling_rig_with(config: PipelineConfig) -> Rig {
    let config = PipelineConfig {
        thread_pool_size: 0,
        ..config
    };
    let mut r = rig_config(1, config, true, |_| true, None);
    r.init(1);
    r
}

impl Rig {
    pub fn init(&mut self, queue: usize) {
        let d = &mut self.drivers[queue];
        d.post(INIT, 1);
        d.kick();
        let used = d.wait_used(1);
        assert_eq!(used[0].reply.error, 0);
    }

    /// Sends `n` GETATTRs on `queue` one at a time (uniques from 900): the queue learns how
    /// long its requests take (with `delay_ms` set, long enough to hand queued ones to the
    /// pool's runners; see `virtiofs_pipeline::pool::worth_a_runner`).
    pub fn train(&mut self, queue: usize, n: u64) {
        for i in 0..n {
            let d = &mut self.drivers[queue];
            d.post(GETATTR, 900 + i);
            d.kick();
            assert_eq!(d.wait_used(1)[0].reply.error, 0);
        }
    }

    /// The name of the thread that ran request `unique` (the last time it ran).
    pub fn thread_of(&self, unique: u64) -> String {
        let log = self.handler.log.lock().unwrap();
        let entry = log.iter().rev().find(|e| e.1 == unique);
        entry
            .unwrap_or_else(|| panic!("request {unique} never ran"))
            .4
            .clone()
    }

    /// Waits (up to 10 s) until at least `n` requests run in the handler.
    pub fn wait_running(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.handler.running.load(Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "{n} requests never ran at once");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A test on a multi-threaded runtime (whose blocking threads run the pool), its body on a
/// blocking thread (it waits for the rings synchronously).
#[macro_export]
macro_rules! mt_test {
    ($name:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            tokio::task::spawn_blocking($body).await.unwrap();
        }
    };
}

/// The host's load as a queue reads it, set by the test: a file in `/proc/loadavg`'s format,
/// rewritten in place at one length (so that it is never read truncated), removed when
/// dropped.
pub struct FakeLoad {
    path: std::path::PathBuf,
    writer: File,
}

impl FakeLoad {
    /// A file named after `name` and this process, showing `running` threads runnable.
    pub fn new(name: &str, running: u32) -> Self {
        let path = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::write(&path, "").unwrap();
        let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let load = Self { path, writer };
        load.set_running(running);
        load
    }

    /// Shows `n` threads runnable from now on.
    pub fn set_running(&self, n: u32) {
        use std::os::unix::fs::FileExt;
        let line = format!("1.00 1.00 1.00 {n:>4}/300 1\n");
        self.writer.write_all_at(line.as_bytes(), 0).unwrap();
    }

    /// The load a pipeline reads from this file, on a host of `cpus` CPUs.
    pub fn host_load(&self, cpus: u32) -> Arc<virtiofs_pipeline::HostLoad> {
        let file = File::open(&self.path).unwrap();
        Arc::new(virtiofs_pipeline::HostLoad::from_file(file, cpus).unwrap())
    }
}

impl Drop for FakeLoad {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
