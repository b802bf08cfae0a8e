//! What one descriptor chain gets, between popping it and putting it on the used ring: the
//! checks of its FUSE header, the session rules, and the FUSE server.

use std::sync::atomic::Ordering;

use tracing::{debug, info, trace, warn};
use virtiofs_fuse::abi::{InHeader, Opcode};

use crate::chain::total_len;
use crate::gate::{is_exclusive, Pass};
use crate::handler::{Chain, FuseHandler, HandleError, Handled, Start};
use crate::request::{is_forget, reply_error, IN_HEADER_LEN};
use crate::stats::QueueStats;

/// Malformed chains logged at `warn` per queue; later ones go to `debug` so a hostile guest
/// cannot flood the log.
const MALFORMED_WARNINGS: u64 = 8;

/// Serves one descriptor chain popped from a queue: checks the FUSE header (read once, by
/// [`crate::request::peek_in_header`]) against the chain, answers requests outside a session
/// with `EIO`, ends a live session before an INIT (its driver is gone), otherwise runs `handler`
/// with that header, and writes an errno reply if the handler fails. Returns the used length to
/// put on the used ring (0 when there is no reply).
///
/// `header` is [`crate::request::peek_in_header`] of the chain and `pass` the gate pass from
/// [`crate::SessionGate::pass_for`] for it. This is exactly what a queue thread (or the pool)
/// runs per chain between popping it and putting it on the used ring; it is public so that the
/// fuzz targets (`fuzz/` in the repository) drive the same code.
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
    pass: Option<&mut Pass>,
    stats: &QueueStats,
    queue: usize,
) -> Handled {
    serve_checked(chain, header, pass, stats, queue, handler, |h| {
        handler.handle(chain, h)
    })
}

/// [`serve_chain_handled`] through [`FuseHandler::start`]: a READ, WRITE or FSYNC may come
/// back as I/O to perform (the pass then records it at [`crate::uring`]'s completion).
pub(crate) fn serve_chain_started<H: FuseHandler + ?Sized>(
    handler: &H,
    chain: &Chain,
    header: Option<InHeader>,
    pass: Option<&mut Pass>,
    stats: &QueueStats,
    queue: usize,
) -> Start {
    serve_checked(chain, header, pass, stats, queue, handler, |h| {
        handler.start(chain, h)
    })
}

/// What serving a chain can come to: a reply, or (for [`Start`]) I/O still to do.
pub(crate) trait Outcome: From<Handled> {
    /// The reply, if the request is answered.
    fn handled(&self) -> Option<&Handled>;
}

impl Outcome for Handled {
    fn handled(&self) -> Option<&Handled> {
        Some(self)
    }
}

impl From<Handled> for Start {
    fn from(h: Handled) -> Self {
        Start::Done(h)
    }
}

impl Outcome for Start {
    fn handled(&self) -> Option<&Handled> {
        match self {
            Start::Done(h) => Some(h),
            Start::Io(_) => None,
        }
    }
}

/// The checks of [`serve_chain`], then `call` (the handler) with the header.
fn serve_checked<H: FuseHandler + ?Sized, T: Outcome>(
    chain: &Chain,
    header: Option<InHeader>,
    mut pass: Option<&mut Pass>,
    stats: &QueueStats,
    queue: usize,
    handler: &H,
    call: impl FnOnce(&InHeader) -> Result<T, HandleError>,
) -> T {
    let head = chain.head_index();
    let Some(h) = header else {
        malformed(
            stats,
            queue,
            head,
            "shorter than a FUSE header or outside guest memory",
        );
        return Handled { len: 0, errno: 0 }.into();
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
    let readable = total_len(chain.readable());
    if (h.len as usize) < IN_HEADER_LEN || u64::from(h.len) > readable {
        return refuse("FUSE header len does not match the request").into();
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
        }
        .into();
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
    let outcome = match call(&h) {
        Ok(outcome) => outcome,
        Err(e) => handle_error(chain, &h, e, stats, queue).into(),
    };
    if let (Some(pass), Some(handled)) = (pass.as_mut(), outcome.handled()) {
        // From the handler's own account, not from the reply in guest memory.
        pass.record(h.opcode, handled.len > 0 && handled.errno == 0);
    }
    outcome
}

/// The errno reply for a request the handler failed.
pub(crate) fn handle_error(
    chain: &Chain,
    h: &InHeader,
    e: HandleError,
    stats: &QueueStats,
    queue: usize,
) -> Handled {
    malformed(stats, queue, chain.head_index(), &e.to_string());
    let len = match is_forget(h.opcode) {
        true => 0,
        false => reply_error(chain, h.unique, e.errno()).unwrap_or(0),
    };
    Handled {
        len,
        errno: e.errno(),
    }
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
