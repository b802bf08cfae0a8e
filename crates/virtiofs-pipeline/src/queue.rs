//! One virtqueue driven by one tokio task.
//!
//! The task owns a duplicate of the queue's kick eventfd (through [`AsyncFd`]), pops every
//! available descriptor chain when kicked, and hands each to a request future. How a request runs
//! depends on [`Mode`]. Completion puts the chain on the used ring and notifies the guest when the
//! ring asks for it (EVENT_IDX aware, through `virtio-queue`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, trace, warn};
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use virtiofs_device::{QueueLink, WatchedVring};
use vm_memory::GuestAddressSpace;

use virtiofs_fuse::abi::{InHeader, Opcode};

use crate::gate::{is_exclusive, Pass, SessionGate};
use crate::handler::{Chain, FuseHandler, Handled};
use crate::lock_wait::LockWait;
use crate::request::{is_forget, peek_in_header, reply_error, IN_HEADER_LEN};
use crate::stats::QueueStats;

/// Malformed chains logged at `warn` per queue; later ones go to `debug` so a hostile guest
/// cannot flood the log.
const MALFORMED_WARNINGS: u64 = 8;

/// How the requests of one queue run.
#[derive(Clone)]
pub enum Mode {
    /// Up to the semaphore's permits at once, each on tokio's blocking pool.
    Pooled(Arc<Semaphore>),
    /// One at a time on the queue task, which tells tokio it blocks (`--thread-pool-size=0`).
    Inline,
    /// One at a time on the queue task, which has an OS thread of its own (the hiprio queue).
    Dedicated,
}

/// Everything one queue task and its requests share.
pub struct QueueContext<H> {
    /// The queue, its vring and guest memory.
    pub link: QueueLink,
    /// The FUSE server.
    pub handler: Arc<H>,
    /// INIT/DESTROY exclusion, shared by all queues.
    pub gate: SessionGate,
    /// How requests run.
    pub mode: Mode,
    /// Counters for this queue.
    pub stats: Arc<QueueStats>,
    /// Every request queue's vring (this one's too), for the size of the smallest at INIT.
    pub request_rings: Arc<[WatchedVring]>,
}

/// Descriptors of the smallest of `rings` that the frontend has started, if any.
pub fn smallest_ready_queue(rings: &[WatchedVring]) -> Option<u16> {
    rings
        .iter()
        .filter_map(|ring| {
            let state = ring.get_ref();
            let queue = state.get_queue();
            queue.ready().then(|| queue.size())
        })
        .min()
}

impl<H: FuseHandler> QueueContext<H> {
    /// Runs the queue until `cancel` fires. Spawned requests are tracked by `tracker`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken, tracker: TaskTracker) {
        let index = self.link.index;
        let mut changes = self.link.vring.subscribe();
        loop {
            changes.borrow_and_update();
            let kick = match self.link.vring.runnable_kick() {
                Some(Ok(fd)) => match AsyncKick::new(fd) {
                    Ok(kick) => Some(kick),
                    Err(e) => {
                        warn!(queue = index, "cannot poll kick eventfd: {e}");
                        None
                    }
                },
                Some(Err(e)) => {
                    warn!(queue = index, "cannot duplicate kick eventfd: {e}");
                    None
                }
                None => None,
            };
            let Some(kick) = kick else {
                // Not started, not enabled, or no kick fd yet: wait for the frontend.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = changes.changed() => if r.is_err() { return },
                }
                continue;
            };
            debug!(queue = index, "queue running");
            loop {
                // Process first: a kick may have arrived before we started polling the eventfd.
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.drain(&tracker, &cancel) => {}
                }
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return,
                    r = changes.changed() => {
                        if r.is_err() { return }
                        debug!(queue = index, "queue state changed");
                        break;
                    }
                    r = kick.wait() => if let Err(e) = r {
                        warn!(queue = index, "kick eventfd failed: {e}");
                        // Do not spin on a broken fd: wait until the frontend changes the ring.
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            r = changes.changed() => if r.is_err() { return },
                        }
                        break;
                    },
                }
            }
        }
    }

    /// Pops and dispatches chains until the ring is empty with guest notifications re-enabled.
    async fn drain(self: &Arc<Self>, tracker: &TaskTracker, cancel: &CancellationToken) {
        let vring = &self.link.vring;
        loop {
            if let Err(e) = vring.disable_notification() {
                debug!(queue = self.link.index, "disable_notification: {e}");
            }
            loop {
                // Take the permit before the chain: with the pool exhausted the chain stays in the
                // ring, which is the guest's backpressure.
                let permit = match &self.mode {
                    Mode::Pooled(sem) => match sem.clone().acquire_owned().await {
                        Ok(p) => Some(p),
                        Err(_) => return, // semaphore closed: shutting down
                    },
                    Mode::Inline | Mode::Dedicated => None,
                };
                let chain = {
                    let mem = self.link.mem.memory();
                    vring.get_mut().get_queue_mut().pop_descriptor_chain(mem)
                };
                let Some(chain) = chain else { break };
                vring.request_started();
                self.dispatch(chain, permit, tracker, cancel).await;
            }
            match vring.enable_notification() {
                Ok(true) => continue, // more arrived while notifications were off
                Ok(false) => return,
                Err(e) => {
                    debug!(queue = self.link.index, "enable_notification: {e}");
                    return;
                }
            }
        }
    }

    /// Starts one request: takes its gate pass, then runs it as [`Mode`] says.
    async fn dispatch(
        self: &Arc<Self>,
        chain: Chain,
        permit: Option<OwnedSemaphorePermit>,
        tracker: &TaskTracker,
        cancel: &CancellationToken,
    ) {
        let header = peek_in_header(&chain);
        let pass = self.gate.pass_for(header.as_ref()).await;
        let waits = match &self.mode {
            Mode::Pooled(_) => {
                let (ctx, tracker, cancel) = (self.clone(), tracker.clone(), cancel.clone());
                tracker.clone().spawn_blocking(move || {
                    let waits = ctx.process(chain, header, pass);
                    drop(permit);
                    if let Some(w) = waits {
                        // On a blocking thread of the runtime: its handle is there.
                        tracker.spawn(ctx.wait_for_lock(w, tracker.clone(), cancel));
                    }
                });
                None
            }
            Mode::Inline => tokio::task::block_in_place(|| self.process(chain, header, pass)),
            Mode::Dedicated => self.process(chain, header, pass),
        };
        if let Some(w) = waits {
            tracker.spawn(
                self.clone()
                    .wait_for_lock(w, tracker.clone(), cancel.clone()),
            );
        }
    }

    /// Runs one request to completion on the current (blocking-capable) thread; a SETLKW
    /// whose lock is held elsewhere comes back instead, to wait (see [`crate::lock_wait`]).
    fn process(
        &self,
        chain: Chain,
        header: Option<InHeader>,
        mut pass: Option<Pass>,
    ) -> Option<LockWait> {
        let _running = self.stats.start();
        // INIT holds the gate's exclusive side: nothing else runs while the handler learns how
        // long a chain the guest may send.
        if header.is_some_and(|h| h.opcode == Opcode::Init as u32) {
            if let Some(size) = smallest_ready_queue(&self.request_rings) {
                self.handler.set_queue_size(size);
            }
        }
        let handled = serve_chain_handled(
            &*self.handler,
            &chain,
            header,
            pass.as_mut(),
            &self.stats,
            self.link.index,
        );
        let waits = LockWait::new(chain, header, pass.as_ref(), &handled);
        // The pass is released before the chain goes back (or waits), so a DESTROY the guest
        // sends on seeing this completion never waits for it.
        drop(pass);
        match waits {
            Ok(w) => Some(w),
            Err(chain) => {
                self.complete(chain.head_index(), handled.len as u32);
                None
            }
        }
    }

    /// Returns the chain to the guest and notifies it if the ring wants a notification.
    pub(crate) fn complete(&self, head: u16, len: u32) {
        // Counted done whatever happens below, so stopping the ring never waits for it in vain.
        let _done = RequestDone(&self.link.vring);
        let mut state = self.link.vring.get_mut();
        if let Err(e) = state.add_used(head, len) {
            warn!(queue = self.link.index, "add_used: {e}");
            return;
        }
        self.stats.completed.fetch_add(1, Ordering::Relaxed);
        match state.needs_notification() {
            Ok(true) => {
                if let Err(e) = state.signal_used_queue() {
                    warn!(queue = self.link.index, "notify guest: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => debug!(queue = self.link.index, "needs_notification: {e}"),
        }
    }
}

/// Serves one descriptor chain popped from a queue: checks the FUSE header (read once, by
/// [`peek_in_header`]) against the chain, answers requests outside a session with `EIO`, ends a
/// live session before an INIT (its driver is gone), otherwise runs `handler` with that header,
/// and writes an errno reply if the handler fails. Returns the used length to put on the used ring (0 when there is no reply).
///
/// `header` is [`peek_in_header`] of the chain and `pass` the gate pass from
/// [`SessionGate::pass_for`] for it. This is exactly what a queue task runs per chain between
/// popping it and [`QueueContext`] completing it; it is public so that the fuzz targets
/// (`fuzz/` in the repository) drive the same code.
pub fn serve_chain<H: FuseHandler + ?Sized>(
    handler: &H,
    chain: &Chain,
    header: Option<InHeader>,
    pass: Option<&mut Pass>,
    stats: &QueueStats,
    queue: usize,
) -> u32 {
    serve_chain_handled(handler, chain, header, pass, stats, queue).len as u32
}

/// [`serve_chain`], saying what the reply carries.
pub(crate) fn serve_chain_handled<H: FuseHandler + ?Sized>(
    handler: &H,
    chain: &Chain,
    header: Option<InHeader>,
    mut pass: Option<&mut Pass>,
    stats: &QueueStats,
    queue: usize,
) -> Handled {
    let head = chain.head_index();
    let Some(h) = header else {
        malformed(
            stats,
            queue,
            head,
            "shorter than a FUSE header or outside guest memory",
        );
        return Handled { len: 0, errno: 0 };
    };
    let refuse = |why: &str| {
        malformed(stats, queue, head, why);
        Handled {
            len: match is_forget(h.opcode) {
                true => 0,
                false => reply_error(chain, h.unique, libc::EINVAL).unwrap_or(0),
            },
            errno: libc::EINVAL,
        }
    };
    // `h` was read once; from here on it is the header (the handler gets it and does not read
    // the guest's copy again, which the guest may have changed since).
    // The header's `len` must fit the chain.
    let readable: u64 = chain.clone().readable().map(|d| u64::from(d.len())).sum();
    if (h.len as usize) < IN_HEADER_LEN || u64::from(h.len) > readable {
        return refuse("FUSE header len does not match the request");
    }
    // Everything but INIT, DESTROY and FORGETs needs an initialized session.
    let live = pass.as_deref().is_some_and(Pass::initialized);
    let needs_session = !is_forget(h.opcode) && !is_exclusive(h.opcode);
    if needs_session && !live {
        stats.before_init.fetch_add(1, Ordering::Relaxed);
        debug!(queue, opcode = h.opcode, "refused: no FUSE session");
        return Handled {
            len: reply_error(chain, h.unique, libc::EIO).unwrap_or(0),
            errno: libc::EIO,
        };
    }
    // An INIT in a live session comes from a new driver: the guest rebooted (or kexec'd, or
    // rebound the driver) without unmounting, and the frontend (QEMU 7.2) did not say so.
    // The old driver's session ends as if it had sent DESTROY, then INIT starts a new one.
    if h.opcode == Opcode::Init as u32 {
        if let Some(session) = pass.as_deref_mut().and_then(Pass::session_mut) {
            if session.abandon(|| handler.end_session()) {
                info!(
                    queue,
                    "FUSE_INIT in a live session: the guest driver restarted; previous session \
                     ended, its inodes and handles released"
                );
            }
        }
    }
    trace!(queue, opcode = h.opcode, unique = h.unique, "request");
    let handled = match handler.handle(chain, &h) {
        Ok(handled) => handled,
        Err(e) => {
            malformed(stats, queue, head, &e.to_string());
            let len = match is_forget(h.opcode) {
                true => 0,
                false => reply_error(chain, h.unique, e.errno()).unwrap_or(0),
            };
            Handled {
                len,
                errno: e.errno(),
            }
        }
    };
    if let Some(pass) = pass.as_mut() {
        // From the handler's own account, not from the reply in guest memory.
        pass.record(h.opcode, handled.len > 0 && handled.errno == 0);
    }
    handled
}

/// Counts a malformed chain; logs the first few at `warn`, later ones at `debug`.
fn malformed(stats: &QueueStats, queue: usize, head: u16, why: &str) {
    let n = stats.malformed.fetch_add(1, Ordering::Relaxed);
    if n < MALFORMED_WARNINGS {
        warn!(queue, head, "bad request: {why}");
    } else {
        debug!(queue, head, "bad request: {why}");
    }
}

/// Marks a chain as back on the used ring when dropped (after the vring lock is released).
struct RequestDone<'a>(&'a virtiofs_device::WatchedVring);

impl Drop for RequestDone<'_> {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// A kick eventfd polled by tokio.
struct AsyncKick(AsyncFd<OwnedFd>);

impl AsyncKick {
    fn new(fd: OwnedFd) -> io::Result<Self> {
        // The frontend's eventfd may be blocking; AsyncFd needs O_NONBLOCK (a status flag shared
        // with the library's copy, which never reads it for our queues).
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on an fd we own; no memory is passed.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is an OwnedFd that the AsyncFd owns until it is dropped.
        let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self(afd))
    }

    /// Waits for a kick and consumes it.
    async fn wait(&self) -> io::Result<()> {
        loop {
            let mut guard = self.0.readable().await?;
            let res = guard.try_io(|fd| {
                let mut buf = [0u8; 8];
                // SAFETY: reads 8 bytes into a local buffer from an eventfd we own.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match res {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Logs what a queue did (called at shutdown).
pub fn log_stats(index: usize, stats: &QueueStats) {
    if stats.completed() > 0 || stats.malformed.load(Ordering::Relaxed) > 0 {
        info!(
            queue = index,
            requests = stats.completed(),
            malformed = stats.malformed.load(Ordering::Relaxed),
            before_init = stats.before_init.load(Ordering::Relaxed),
            peak_in_flight = stats.peak_in_flight.load(Ordering::Relaxed),
            "queue statistics"
        );
    }
}
