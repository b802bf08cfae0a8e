//! The pipeline driven through real split rings in guest memory, kicked and completed through
//! eventfds as QEMU and a guest driver would, with a scripted FUSE handler.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vhost_user_backend::VringT;
use virtiofs_device::{FsBackend, FsBackendConfig, QueueLink};
use virtiofs_fuse::abi::{InHeader, Opcode, OutHeader};
use virtiofs_pipeline::request::{peek_in_header, write_reply_prefix};
use virtiofs_pipeline::{Chain, FuseHandler, HandleError, Handled, Pipeline, PipelineConfig};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestAddressSpace, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const QUEUE_SIZE: u16 = 64;
const MEM_SIZE: usize = 16 << 20;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

const INIT: u32 = Opcode::Init as u32;
const DESTROY: u32 = Opcode::Destroy as u32;
const GETATTR: u32 = Opcode::Getattr as u32;
const SETLKW: u32 = Opcode::Setlkw as u32;

/// A FUSE handler that records what ran, where, how many ran at once, and sleeps as told.
#[derive(Default)]
struct ScriptedHandler {
    running: AtomicUsize,
    peak: AtomicUsize,
    /// Requests running on a thread that is not a queue thread (the pool).
    running_pooled: AtomicUsize,
    peak_pooled: AtomicUsize,
    handled: AtomicUsize,
    /// (opcode, unique, started, finished, thread name)
    log: Mutex<Vec<(u32, u64, Instant, Instant, String)>>,
    delay_ms: AtomicUsize,
    /// When set, each GETATTR waits (up to 10 s) until this many requests run at once.
    rendezvous: AtomicUsize,
    /// GETATTRs that saw `rendezvous` requests running.
    met: AtomicUsize,
    /// SETLKW answers EAGAIN (the lock is held elsewhere) while set.
    lock_held: AtomicBool,
    /// Sessions ended without DESTROY, and how many requests ran at that moment.
    sessions_ended: AtomicUsize,
    running_at_end: AtomicUsize,
    /// Queue sizes told before each INIT, with the opcodes that had run by then.
    queue_sizes: Mutex<Vec<(u16, usize)>>,
}

/// Whether the current thread is one of the pipeline's queue threads.
fn on_queue_thread() -> bool {
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
        let delay = self.delay_ms.load(Ordering::SeqCst) as u64;
        if h.opcode == GETATTR && delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        let target = self.rendezvous.load(Ordering::SeqCst);
        if h.opcode == GETATTR && target > 0 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.running.load(Ordering::SeqCst) < target && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if self.running.load(Ordering::SeqCst) >= target {
                self.met.fetch_add(1, Ordering::SeqCst);
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

    fn end_session(&self) {
        let running = self.running.load(Ordering::SeqCst);
        self.running_at_end.fetch_max(running, Ordering::SeqCst);
        self.sessions_ended.fetch_add(1, Ordering::SeqCst);
    }
}

/// The driver side of one split virtqueue, laid out in guest memory.
struct Driver {
    mem: GuestMemoryMmap<()>,
    base: u64,
    kick: EventFd,
    call: EventFd,
    next_avail: u16,
    next_used: u16,
    next_slot: u16,
}

#[derive(Debug, Clone, Copy)]
struct Used {
    id: u32,
    len: u32,
    reply: OutHeader,
}

impl Driver {
    fn desc_addr(&self) -> u64 {
        self.base
    }
    fn avail_addr(&self) -> u64 {
        self.base + 0x1000
    }
    fn used_addr(&self) -> u64 {
        self.base + 0x2000
    }
    /// Buffers of descriptor slot `slot`: 4 KiB each, after the rings.
    fn buf_addr(&self, slot: u16) -> u64 {
        self.base + 0x4000 + slot as u64 * 0x1000
    }

    fn write_desc(&self, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.desc_addr() + 16 * i as u64;
        self.mem.write_obj(addr, GuestAddress(at)).unwrap();
        self.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        self.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        self.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }

    /// Posts a chain built from `(addr, len, writable)` parts; returns its head index.
    fn post_raw(&mut self, parts: &[(u64, u32, bool)]) -> u16 {
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
        std::sync::atomic::fence(Ordering::SeqCst);
        self.mem
            .write_obj(self.next_avail, GuestAddress(self.avail_addr() + 2))
            .unwrap();
        head
    }

    /// Posts a FUSE request: header (+ `body` bytes) readable, a 64-byte reply buffer writable.
    fn post(&mut self, opcode: u32, unique: u64) -> u16 {
        let slot = self.next_slot;
        let header = InHeader {
            len: 40,
            opcode,
            unique,
            nodeid: 1,
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

    fn kick(&self) {
        self.kick.write(1).unwrap();
    }

    /// Waits until `n` more chains are used; returns them in used-ring order.
    fn wait_used(&mut self, n: usize) -> Vec<Used> {
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

fn eventfd_file(e: &EventFd) -> File {
    // SAFETY: the fd is open for the duration of this call.
    let fd = unsafe { BorrowedFd::borrow_raw(e.as_raw_fd()) };
    File::from(fd.try_clone_to_owned().unwrap())
}

/// Sets up queue `link` the way the vhost-user protocol thread would and returns its driver.
fn start_ring(link: &QueueLink, mem: &GuestMemoryMmap<()>, event_idx: bool) -> Driver {
    let base = 0x10_0000 * (1 + link.index as u64);
    let d = Driver {
        mem: mem.clone(),
        base,
        kick: EventFd::new(EFD_NONBLOCK).unwrap(),
        call: EventFd::new(EFD_NONBLOCK).unwrap(),
        next_avail: 0,
        next_used: 0,
        next_slot: 0,
    };
    let vring = &link.vring;
    vring.set_queue_size(QUEUE_SIZE);
    vring
        .set_queue_info(d.desc_addr(), d.avail_addr(), d.used_addr())
        .unwrap();
    vring.set_queue_event_idx(event_idx);
    vring.set_call(Some(eventfd_file(&d.call)));
    vring.set_kick(Some(eventfd_file(&d.kick)));
    vring.set_queue_ready(true);
    vring.set_enabled(true);
    d
}

struct Rig {
    pipeline: Pipeline,
    handler: Arc<ScriptedHandler>,
    drivers: Vec<Driver>,
    vrings: Vec<virtiofs_device::WatchedVring>,
    _daemon: vhost_user_backend::VhostUserDaemon<FsBackend>,
}

/// A device with `queues` request queues, all started, served with `pool` permits per queue.
fn rig(queues: usize, pool: usize, event_idx: bool) -> Rig {
    let backend = FsBackend::new(FsBackendConfig {
        request_queues: queues,
    });
    let (daemon, links) = backend.create_daemon("test").unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    links[0].mem.lock().unwrap().replace(mem.clone());
    let drivers = links
        .iter()
        .map(|l| start_ring(l, &mem, event_idx))
        .collect();
    let handler = Arc::new(ScriptedHandler::default());
    let vrings = links.iter().map(|l| l.vring.clone()).collect();
    let pipeline = Pipeline::start(
        links,
        handler.clone(),
        PipelineConfig {
            thread_pool_size: pool,
        },
    )
    .unwrap();
    Rig {
        pipeline,
        handler,
        drivers,
        vrings,
        _daemon: daemon,
    }
}

impl Rig {
    fn init(&mut self, queue: usize) {
        let d = &mut self.drivers[queue];
        d.post(INIT, 1);
        d.kick();
        let used = d.wait_used(1);
        assert_eq!(used[0].reply.error, 0);
    }
}

/// `tokio::test` in the flavour the daemon uses (block_in_place needs it).
macro_rules! mt_test {
    ($name:ident, $body:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            tokio::task::spawn_blocking($body).await.unwrap();
        }
    };
}

mt_test!(pool_size_bounds_requests_in_flight_per_queue, || {
    let mut r = rig(1, 3, false);
    r.init(1);
    r.handler.delay_ms.store(30, Ordering::SeqCst);
    let d = &mut r.drivers[1];
    for i in 0..24 {
        d.post(GETATTR, 100 + i);
    }
    d.kick();
    let used = d.wait_used(24);
    // Never more than the pool's 3 on the pool, plus the one the queue thread runs itself.
    assert_eq!(r.handler.peak_pooled.load(Ordering::SeqCst), 3, "pool of 3");
    assert!(r.handler.peak.load(Ordering::SeqCst) <= 4);
    let mut uniques: Vec<u64> = used.iter().map(|u| u.reply.unique).collect();
    uniques.sort();
    assert_eq!(
        uniques,
        (100..124).collect::<Vec<_>>(),
        "every request answered once"
    );
    assert!(used.iter().all(|u| u.len == 16 && u.reply.error == 0));
    assert!(r.pipeline.stats()[1].peak_in_flight.load(Ordering::SeqCst) <= 4);
});

mt_test!(init_is_told_the_smallest_started_request_queue, || {
    let mut r = rig(3, 4, false);
    // The hiprio queue carries no READ or WRITE: its size does not count.
    r.vrings[0].set_queue_size(16);
    r.vrings[3].set_queue_size(32);
    r.init(1);
    assert_eq!(
        *r.handler.queue_sizes.lock().unwrap(),
        [(32, 0)],
        "told once, before the INIT ran"
    );
    let d = &mut r.drivers[1];
    d.post(GETATTR, 2);
    d.kick();
    d.wait_used(1);
    assert_eq!(
        r.handler.queue_sizes.lock().unwrap().len(),
        1,
        "only at INIT"
    );
    // A stopped queue does not count.
    r.vrings[3].set_queue_ready(false);
    r.init(2);
    assert_eq!(r.handler.queue_sizes.lock().unwrap()[1], (QUEUE_SIZE, 2));
});

mt_test!(pool_size_zero_runs_one_request_at_a_time, || {
    let mut r = rig(1, 0, false);
    r.init(1);
    r.handler.delay_ms.store(5, Ordering::SeqCst);
    let d = &mut r.drivers[1];
    for i in 0..10 {
        d.post(GETATTR, 10 + i);
    }
    // Long requests too stay on the queue thread without a pool.
    d.post(Opcode::Fsync as u32, 20);
    d.post(Opcode::Syncfs as u32, 21);
    d.kick();
    let used = d.wait_used(12);
    assert_eq!(r.handler.peak.load(Ordering::SeqCst), 1);
    // One at a time on the queue thread: completions come in submission order.
    let uniques: Vec<u64> = used.iter().map(|u| u.reply.unique).collect();
    assert_eq!(uniques, (10..22).collect::<Vec<_>>());
    let log = r.handler.log.lock().unwrap();
    assert!(
        log.iter().all(|e| e.4 == "virtiofs-q1"),
        "every request on the queue's own thread: {:?}",
        log.iter().map(|e| &e.4).collect::<Vec<_>>()
    );
    assert_eq!(r.pipeline.stats()[1].pooled.load(Ordering::SeqCst), 0);
});

mt_test!(
    each_queue_has_its_own_pool_and_all_queues_are_served,
    || {
        let mut r = rig(2, 2, true);
        r.init(1);
        r.handler.delay_ms.store(40, Ordering::SeqCst);
        for q in 1..=2 {
            let d = &mut r.drivers[q];
            for i in 0..6 {
                d.post(GETATTR, (q as u64) * 1000 + i);
            }
            d.kick();
        }
        for q in 1..=2 {
            let used = r.drivers[q].wait_used(6);
            assert!(used.iter().all(|u| u.reply.unique / 1000 == q as u64));
        }
        // Two queues with two permits each (and their own threads): more than one queue's
        // worth on the pool at once, never more than both pools.
        let pooled = r.handler.peak_pooled.load(Ordering::SeqCst);
        assert!(pooled > 2 && pooled <= 4, "peak on the pool {pooled}");
        let threads: std::collections::BTreeSet<String> = r
            .handler
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.4.clone())
            .collect();
        assert!(threads.contains("virtiofs-q1") && threads.contains("virtiofs-q2"));
        assert_eq!(r.pipeline.stats()[1].completed(), 7); // INIT + 6
        assert_eq!(r.pipeline.stats()[2].completed(), 6);
    }
);

mt_test!(
    request_before_init_gets_eio_without_reaching_the_server,
    || {
        let mut r = rig(1, 4, false);
        let d = &mut r.drivers[1];
        d.post(GETATTR, 7);
        d.kick();
        let used = d.wait_used(1);
        assert_eq!(used[0].reply.error, -libc::EIO);
        assert_eq!(used[0].reply.unique, 7);
        assert_eq!(used[0].len, 16);
        assert_eq!(r.handler.handled.load(Ordering::SeqCst), 0);
        // The guest can still initialise afterwards.
        r.init(1);
    }
);

mt_test!(
    destroy_waits_for_in_flight_requests_and_remount_works,
    || {
        let mut r = rig(1, 8, false);
        r.init(1);
        r.handler.delay_ms.store(100, Ordering::SeqCst);
        let d = &mut r.drivers[1];
        for i in 0..4 {
            d.post(GETATTR, 10 + i);
        }
        d.post(DESTROY, 20);
        d.post(GETATTR, 21); // after DESTROY: the session is gone
        d.kick();
        let used = d.wait_used(6);
        let log = r.handler.log.lock().unwrap().clone();
        let destroy = log.iter().find(|e| e.0 == DESTROY).unwrap();
        for e in log.iter().filter(|e| e.0 == GETATTR) {
            assert!(
                e.3 <= destroy.2,
                "DESTROY started before request {} finished",
                e.1
            );
        }
        let after = used.iter().find(|u| u.reply.unique == 21).unwrap();
        assert_eq!(after.reply.error, -libc::EIO, "request after DESTROY");
        // Remount: INIT again, then requests work.
        r.handler.delay_ms.store(0, Ordering::SeqCst);
        r.init(1);
        let d = &mut r.drivers[1];
        d.post(GETATTR, 30);
        d.kick();
        assert_eq!(d.wait_used(1)[0].reply.error, 0);
    }
);

mt_test!(
    init_in_a_live_session_and_device_reset_end_the_session,
    || {
        let mut r = rig(2, 4, true);
        r.init(1);
        // Slow requests in flight on queue 2 when the new driver's INIT arrives on queue 1.
        r.handler.delay_ms.store(40, Ordering::SeqCst);
        for i in 0..6 {
            r.drivers[2].post(GETATTR, 10 + i);
        }
        r.drivers[2].kick();
        std::thread::sleep(Duration::from_millis(10));
        r.init(1);
        let used = r.drivers[2].wait_used(6);
        assert!(
            used.iter().all(|u| u.reply.error == 0),
            "requests of the old session that were in flight complete"
        );
        assert_eq!(r.handler.sessions_ended.load(Ordering::SeqCst), 1);
        assert_eq!(
            r.handler.running_at_end.load(Ordering::SeqCst),
            0,
            "the session ended while a request ran"
        );
        // The new session serves.
        r.handler.delay_ms.store(0, Ordering::SeqCst);
        let d = &mut r.drivers[1];
        d.post(GETATTR, 20);
        d.kick();
        assert_eq!(
            d.wait_used(1)[0].reply.error,
            0,
            "request in the new session"
        );

        // A device reset (RESET_DEVICE, from the protocol thread) ends it too.
        let reset = r.pipeline.session_reset();
        assert!(std::thread::spawn(move || reset.reset()).join().unwrap());
        assert_eq!(r.handler.sessions_ended.load(Ordering::SeqCst), 2);
        let d = &mut r.drivers[1];
        d.post(GETATTR, 21);
        d.kick();
        assert_eq!(
            d.wait_used(1)[0].reply.error,
            -libc::EIO,
            "no session after a device reset"
        );
        // A reset with no session ends nothing; the next INIT starts one without ending any.
        let reset = r.pipeline.session_reset();
        assert!(!std::thread::spawn(move || reset.reset()).join().unwrap());
        r.init(1);
        assert_eq!(r.handler.sessions_ended.load(Ordering::SeqCst), 2);
    }
);

mt_test!(
    malformed_chains_are_returned_and_the_queue_keeps_serving,
    || {
        let mut r = rig(1, 4, false);
        r.init(1);
        let d = &mut r.drivers[1];
        let buf = d.buf_addr(40);
        // Too short for a FUSE header.
        let short = d.post_raw(&[(buf, 8, false), (buf + 0x100, 64, true)]);
        // Header readable part points outside guest memory.
        let outside = d.post_raw(&[
            (MEM_SIZE as u64 + 0x1000, 40, false),
            (buf + 0x100, 64, true),
        ]);
        // No writable part at all.
        let header = InHeader {
            len: 40,
            opcode: GETATTR,
            unique: 5,
            ..Default::default()
        };
        d.mem.write_obj(header, GuestAddress(buf + 0x200)).unwrap();
        let no_reply_room = d.post_raw(&[(buf + 0x200, 40, false)]);
        // Then a valid request.
        let valid = d.post(GETATTR, 99);
        d.kick();
        // Requests run concurrently (pool of 4): match completions by head, not by order.
        let used = d.wait_used(4);
        let by_head = |head: u16| *used.iter().find(|u| u.id == head as u32).unwrap();
        for head in [short, outside, no_reply_room] {
            assert_eq!(by_head(head).len, 0, "a malformed chain is returned empty");
        }
        assert_eq!(by_head(valid).reply.unique, 99);
        assert_eq!(
            by_head(valid).reply.error,
            0,
            "the next valid request succeeds"
        );
        assert_eq!(r.pipeline.stats()[1].malformed.load(Ordering::SeqCst), 3);
    }
);

mt_test!(guest_is_notified_through_the_call_eventfd, || {
    let mut r = rig(1, 2, false);
    assert!(
        r.drivers[1].call.read().is_err(),
        "no notification before any request"
    );
    r.init(1);
    assert!(r.drivers[1].call.read().unwrap() >= 1);
});

mt_test!(hiprio_forget_reaches_the_server_before_init, || {
    let mut r = rig(1, 2, false);
    let d = &mut r.drivers[0];
    d.post(Opcode::Forget as u32, 3);
    d.kick();
    let used = d.wait_used(1);
    assert_eq!(
        used[0].len, 16,
        "the scripted handler wrote a reply for FORGET"
    );
    assert_eq!(
        r.handler.handled.load(Ordering::SeqCst),
        1,
        "FORGET reached the server"
    );
    assert_eq!(r.pipeline.stats()[0].completed(), 1);
});

mt_test!(stopping_a_ring_waits_for_its_in_flight_requests, || {
    let mut r = rig(1, 4, false);
    r.init(1);
    r.handler.delay_ms.store(300, Ordering::SeqCst);
    r.drivers[1].post(GETATTR, 60);
    r.drivers[1].kick();
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.handler.running.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    // What GET_VRING_BASE does: stop the ring. It must return only once the request is back.
    r.vrings[1].set_queue_ready(false);
    assert_eq!(
        r.pipeline.stats()[1].completed(),
        2,
        "ring stopped while a request was still in flight"
    );
    assert_eq!(r.drivers[1].wait_used(1)[0].reply.unique, 60);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_in_flight_requests() {
    let r = tokio::task::spawn_blocking(|| {
        let mut r = rig(1, 4, false);
        r.init(1);
        r.handler.delay_ms.store(300, Ordering::SeqCst);
        r.drivers[1].post(GETATTR, 50);
        r.drivers[1].kick();
        // Wait until the request is running.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.handler.running.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        r
    })
    .await
    .unwrap();
    let stats = r.pipeline.stats()[1].clone();
    r.pipeline.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        r.handler.handled.load(Ordering::SeqCst),
        2,
        "the in-flight request finished"
    );
    assert_eq!(stats.completed(), 2, "and its chain went back to the guest");
}

#[test]
fn memory_guard_sees_replaced_guest_memory() {
    // The queues hold the `GuestMemoryAtomic` the vhost-user thread updates in place.
    let backend = FsBackend::new(FsBackendConfig { request_queues: 1 });
    let (_daemon, links) = backend.create_daemon("test").unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    links[0].mem.lock().unwrap().replace(mem);
    assert_eq!(
        vm_memory::GuestMemory::num_regions(&*links[1].mem.memory()),
        1
    );
}
