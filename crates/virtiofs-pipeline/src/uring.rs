//! READ, WRITE and FSYNC through an io_uring of the queue thread (`--io-engine io-uring`).
//!
//! Each request queue thread owns one ring, created when its queue task starts. In a drain,
//! a request the handler [defers](crate::FuseHandler::defers) is started on the queue thread
//! whatever its weight: the server decodes it and the filesystem prepares the I/O
//! (`FuseHandler::start`), and its SQE (READV / WRITEV straight into guest memory, or FSYNC)
//! goes on the ring. The drain submits once per batch and completes the CQEs already there
//! into the batch's [`UsedBatch`]; later ones are reaped by the queue task when the ring's
//! eventfd (registered with `IORING_REGISTER_EVENTFD`) fires. No thread of ours blocks on the
//! I/O; what blocks in the kernel runs on the ring's io-wq workers, at most
//! `--thread-pool-size` of them (`IORING_REGISTER_IOWQ_MAX_WORKERS`).
//!
//! While in the ring a request holds what a running one holds: its chain (so its guest memory
//! mapping, and a count on the vring's in-flight requests: stopping the ring waits for it),
//! its gate pass (INIT and DESTROY wait for it), and the filesystem's handle (its descriptor).
//! Nothing is released before its CQE: [`Uring::complete_all`] waits for every CQE and runs
//! before the queue task stops, leaves a stopped ring, or waits for the gate, and when the
//! ring is dropped.
//!
//! The ring is created disabled (`IORING_SETUP_R_DISABLED`), restricted to READV, WRITEV and
//! FSYNC and no further registration (`IORING_REGISTER_RESTRICTIONS`), then enabled: whatever
//! reaches the ring later can do nothing else (the I/O the ring does is not seen by seccomp).
//! Every SQE runs with the credentials the queue thread had when it made the ring (its
//! registered personality: the daemon's), never a guest user's.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};

use io_uring::register::Restriction;
use io_uring::{opcode, types, IoUring};
use tracing::{debug, error, warn};
use virtiofs_fuse::abi::InHeader;
use virtiofs_fuse::{Deferred, IoKind};

use crate::gate::Pass;
use crate::handler::{Chain, FuseHandler, Handled, Start};
use crate::kick::AsyncKick;
use crate::queue::QueueContext;
use crate::request::reply_error;
use crate::serve::{handle_error, serve_chain_started};
use crate::used::UsedBatch;

/// Submission queue entries per ring; the completion queue has twice as many, which bounds
/// the requests in the ring at once.
const SQ_ENTRIES: u32 = 128;

/// How the request queues do READ, WRITE and FSYNC (`--io-engine`, `auto` resolved).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IoEngine {
    /// On the queue thread or the pool, by system calls.
    #[default]
    Sync,
    /// Through an io_uring per request queue thread.
    IoUring,
}

/// Why io_uring cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// `io_uring_setup` failed (ENOSYS: no io_uring; EPERM: `kernel.io_uring_disabled`, a
    /// seccomp filter or a container runtime refuses it).
    #[error("io_uring_setup: {0}")]
    Setup(io::Error),
    /// The ring could not be restricted or enabled as the queue threads do it.
    #[error("io_uring_register: {0}")]
    Register(io::Error),
}

/// Sets a ring up as a queue thread would (restricted, eventfd, enabled) and drops it: whether
/// `--io-engine io-uring` can work in this process.
pub fn probe() -> Result<(), ProbeError> {
    Uring::setup(1).map(drop)
}

/// A request whose I/O is in the ring.
struct InRing {
    chain: Chain,
    header: InHeader,
    /// Released after the reply is written, before the chain goes back.
    pass: Option<Pass>,
    /// The I/O (its iovecs: the kernel reads them; its handle: the descriptor) and the reply.
    deferred: Deferred,
}

/// The requests in the ring, by `user_data`.
#[derive(Default)]
struct Slots {
    entries: Vec<Option<InRing>>,
    free: Vec<usize>,
    in_ring: usize,
}

// SAFETY: what makes Slots !Send is the raw pointers of the iovecs (into guest memory, kept
// mapped by the chain each entry holds, and into the entry's own Vec); they stay valid
// whichever thread holds the entry, and only the queue's own thread ever touches it.
unsafe impl Send for Slots {}

impl Slots {
    fn insert(&mut self, r: InRing) -> usize {
        self.in_ring += 1;
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(r);
                i
            }
            None => {
                self.entries.push(Some(r));
                self.entries.len() - 1
            }
        }
    }

    fn take(&mut self, i: usize) -> Option<InRing> {
        let r = self.entries.get_mut(i)?.take()?;
        self.free.push(i);
        self.in_ring -= 1;
        Some(r)
    }
}

/// One queue thread's ring (see the module docs).
pub(crate) struct Uring {
    // Mutexes, not RefCells, only so that a queue task's future is Send (the hiprio queue's
    // runs on the main runtime); one thread uses them, uncontended: no system call.
    ring: Mutex<IoUring>,
    /// The eventfd the kernel signals on each CQE.
    cq_event: AsyncKick,
    slots: Mutex<Slots>,
    /// Most requests in the ring at once (the CQ size: a CQE always has room).
    capacity: usize,
    /// The registered credentials every request runs with (the daemon's).
    personality: u16,
}

impl Uring {
    /// A restricted ring with its CQ eventfd and the calling thread's credentials as its
    /// personality; io-wq runs at most `workers` blocking requests.
    fn setup(workers: u32) -> Result<(IoUring, OwnedFd, u16), ProbeError> {
        let ring = IoUring::builder()
            .setup_r_disabled()
            .build(SQ_ENTRIES)
            .map_err(ProbeError::Setup)?;
        // SAFETY: eventfd has no memory arguments; we own the descriptor it returns.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if efd < 0 {
            return Err(ProbeError::Setup(io::Error::last_os_error()));
        }
        // SAFETY: `efd` is a fresh descriptor nothing else owns.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        let submitter = ring.submitter();
        let register = ProbeError::Register;
        submitter
            .register_eventfd(efd.as_raw_fd())
            .map_err(register)?;
        // The daemon's own credentials for every request, whatever thread does it: io-wq
        // workers copy the credentials of the queue thread when they are made, which may be
        // a guest user's while a request runs switched to it (`creds.rs`).
        let personality = submitter.register_personality().map_err(register)?;
        // [bounded, unbounded]: file I/O is bounded work.
        let mut max = [workers.max(1), 0];
        submitter
            .register_iowq_max_workers(&mut max)
            .map_err(register)?;
        let mut allowed = [
            Restriction::sqe_op(opcode::Readv::CODE),
            Restriction::sqe_op(opcode::Writev::CODE),
            Restriction::sqe_op(opcode::Fsync::CODE),
            // No SQE flags (fixed files, links, ...) and no further registration.
            Restriction::sqe_flags_allowed(0),
        ];
        submitter
            .register_restrictions(&mut allowed)
            .map_err(register)?;
        submitter.register_enable_rings().map_err(register)?;
        Ok((ring, efd, personality))
    }

    /// A ring for the calling queue thread, on its runtime; io-wq runs at most `workers`
    /// blocking requests at once.
    pub(crate) fn new(workers: usize) -> Result<Self, ProbeError> {
        let (ring, efd, personality) = Self::setup(u32::try_from(workers).unwrap_or(u32::MAX))?;
        let capacity = ring.params().cq_entries() as usize;
        Ok(Self {
            personality,
            ring: Mutex::new(ring),
            cq_event: AsyncKick::new(efd).map_err(ProbeError::Setup)?,
            slots: Mutex::default(),
            capacity,
        })
    }

    fn ring(&self) -> MutexGuard<'_, IoUring> {
        self.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether requests are in the ring.
    pub(crate) fn busy(&self) -> bool {
        self.slots().in_ring > 0
    }

    /// Waits until the kernel signals a completion (or did since the last wait).
    pub(crate) async fn completion(&self) -> io::Result<()> {
        self.cq_event.wait().await
    }

    /// Submits what was pushed since the last submission.
    pub(crate) fn submit<H: FuseHandler>(&self, ctx: &QueueContext<H>, used: &mut UsedBatch<'_>) {
        loop {
            let r = self.ring().submit();
            match r {
                Ok(_) => return,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The CQ overflowed (EBUSY) or the kernel is short of memory (EAGAIN): make
                // room by completing what is there, waiting for one if none is.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::EAGAIN)) => {
                    if self.reap(ctx, used) == 0 {
                        self.wait(1);
                        self.reap(ctx, used);
                    }
                }
                Err(e) => {
                    // Not expected from a valid ring; what is queued is submitted by the next
                    // enter (complete_all waits with one).
                    warn!(queue = ctx.link.index, "io_uring submit: {e}");
                    return;
                }
            }
        }
    }

    /// Enters the kernel until at least `want` CQEs are there (submitting what is queued).
    fn wait(&self, want: usize) {
        loop {
            match self.ring().submit_and_wait(want) {
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return, // CQEs to reap
                Err(e) => {
                    error!("io_uring wait: {e}");
                    // Do not spin: let the caller reap what is there.
                    std::thread::yield_now();
                    return;
                }
                Ok(_) => return,
            }
        }
    }

    /// Starts `chain` (a request the handler defers, gate pass taken): its I/O goes on the
    /// ring, or, if the handler did it all, its completion joins `used`.
    pub(crate) fn start<H: FuseHandler>(
        &self,
        ctx: &QueueContext<H>,
        chain: Chain,
        header: InHeader,
        mut pass: Option<Pass>,
        used: &mut UsedBatch<'_>,
    ) {
        let index = ctx.link.index;
        ctx.stats.count_inline();
        let started = {
            let _running = ctx.stats.start();
            catch_unwind(AssertUnwindSafe(|| {
                serve_chain_started(
                    &*ctx.handler,
                    &chain,
                    Some(header),
                    pass.as_mut(),
                    &ctx.stats,
                    index,
                )
            }))
        };
        let deferred = match started {
            Ok(Start::Io(d)) => d,
            Ok(Start::Done(handled)) => {
                drop(pass);
                return used.push(chain.head_index(), handled.len as u32);
            }
            Err(_) => {
                error!(queue = index, "a request panicked; answered EIO");
                drop(pass);
                let len = reply_error(&chain, header.unique, libc::EIO).unwrap_or(0);
                return used.push(chain.head_index(), len as u32);
            }
        };
        if self.slots().in_ring >= self.capacity {
            // The CQ is full of requests: finish one first.
            self.submit(ctx, used);
            while self.reap(ctx, used) == 0 {
                self.wait(1);
            }
        }
        let sqe = {
            let io = &deferred.io;
            let fd = types::Fd(io.fd);
            // At most IOV_MAX iovecs (the filesystem does larger ones itself).
            let n = io.iovecs.len() as u32;
            match io.kind {
                IoKind::Read => opcode::Readv::new(fd, io.iovecs.as_ptr(), n)
                    .offset(io.offset)
                    .build(),
                IoKind::Write => opcode::Writev::new(fd, io.iovecs.as_ptr(), n)
                    .offset(io.offset)
                    .build(),
                IoKind::Fsync { datasync } => opcode::Fsync::new(fd)
                    .flags(match datasync {
                        true => types::FsyncFlags::DATASYNC,
                        false => types::FsyncFlags::empty(),
                    })
                    .build(),
            }
        };
        // The iovecs live in the slot's Vec (a heap buffer that does not move) until the CQE.
        let slot = self.slots().insert(InRing {
            chain,
            header,
            pass,
            deferred,
        });
        let sqe = sqe.user_data(slot as u64).personality(self.personality);
        for attempt in 0.. {
            // SAFETY: the iovecs, the guest memory they point into (the chain's memory guard)
            // and the descriptor (the handle in `deferred`) live in the slot until its CQE is
            // reaped; nothing takes a slot before (`reap`, `complete_all`).
            let pushed = unsafe { self.ring().submission().push(&sqe) };
            if pushed.is_ok() {
                break;
            }
            if attempt == 3 {
                // The kernel takes no SQE: this one never reached the ring, answer it here.
                error!(
                    queue = index,
                    "io_uring submission queue stuck; answered EIO"
                );
                let taken = self.slots().take(slot);
                if let Some(r) = taken {
                    complete(ctx, r, -libc::EIO, used);
                }
                return;
            }
            // The SQ is full: hand it to the kernel.
            self.submit(ctx, used);
        }
        ctx.stats.uring.fetch_add(1, Ordering::Relaxed);
    }

    /// Completes every CQE there is into `used`; returns how many.
    pub(crate) fn reap<H: FuseHandler>(
        &self,
        ctx: &QueueContext<H>,
        used: &mut UsedBatch<'_>,
    ) -> usize {
        let done: Vec<(u64, i32)> = {
            let mut ring = self.ring();
            ring.completion()
                .map(|cqe| (cqe.user_data(), cqe.result()))
                .collect()
        };
        for &(slot, res) in &done {
            let entry = usize::try_from(slot)
                .ok()
                .and_then(|i| self.slots().take(i));
            match entry {
                Some(r) => complete(ctx, r, res, used),
                None => warn!(queue = ctx.link.index, slot, "CQE for no request"),
            }
        }
        done.len()
    }

    /// Waits for every request in the ring and completes them into `used`.
    pub(crate) fn complete_all<H: FuseHandler>(
        &self,
        ctx: &QueueContext<H>,
        used: &mut UsedBatch<'_>,
    ) {
        while self.busy() {
            if self.reap(ctx, used) == 0 {
                self.wait(1);
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        // The queue task completes everything before it lets go of the ring; if a bug left
        // requests in it, wait for the kernel to be done with their memory before it is freed
        // (their chains then go back as the pipeline answers abandoned ones: not at all).
        let left = self.slots().in_ring;
        if left > 0 {
            error!(
                left,
                "io_uring dropped with requests in it; waiting for them"
            );
            while self.slots().in_ring > 0 {
                self.wait(1);
                let done: Vec<u64> = self.ring().completion().map(|c| c.user_data()).collect();
                for slot in done {
                    let _ = self.slots().take(slot as usize);
                }
            }
        }
    }
}

/// Writes the reply of `r`, whose I/O came to `res` (bytes, or -errno), releases its gate pass
/// and handle, and adds its completion to `used`.
fn complete<H: FuseHandler>(ctx: &QueueContext<H>, r: InRing, res: i32, used: &mut UsedBatch<'_>) {
    let InRing {
        chain,
        header,
        mut pass,
        deferred,
    } = r;
    let result = match res {
        n if n < 0 => Err(-n),
        n => Ok(n as usize),
    };
    let finished = catch_unwind(AssertUnwindSafe(|| {
        ctx.handler.finish(&chain, &deferred.reply, result)
    }));
    let handled = match finished {
        Ok(Ok(handled)) => handled,
        Ok(Err(e)) => handle_error(&chain, &header, e, &ctx.stats, ctx.link.index),
        Err(_) => {
            error!(queue = ctx.link.index, "a request panicked; answered EIO");
            Handled {
                len: reply_error(&chain, header.unique, libc::EIO).unwrap_or(0),
                errno: libc::EIO,
            }
        }
    };
    if res < 0 {
        debug!(
            queue = ctx.link.index,
            unique = header.unique,
            errno = -res,
            "io_uring request failed"
        );
    }
    if let Some(pass) = pass.as_mut() {
        pass.record(header.opcode, handled.len > 0 && handled.errno == 0);
    }
    // The handle (descriptor) and the pass go before the chain goes back, as on the sync path.
    drop(deferred);
    drop(pass);
    used.push(chain.head_index(), handled.len as u32);
}

/// The ring of a queue thread, if the engine is io_uring and one can be made (a failure is
/// logged and the queue does its I/O synchronously).
pub(crate) fn for_queue<H: FuseHandler>(ctx: &Arc<QueueContext<H>>) -> Option<Uring> {
    if ctx.engine != IoEngine::IoUring {
        return None;
    }
    match Uring::new(ctx.pool.as_ref().map_or(1, |p| p.size())) {
        Ok(ring) => Some(ring),
        Err(e) => {
            warn!(
                queue = ctx.link.index,
                "cannot set up the queue's io_uring ({e}); its I/O runs synchronously"
            );
            None
        }
    }
}
