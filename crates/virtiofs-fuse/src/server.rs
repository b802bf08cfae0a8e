//! The FUSE server: one request in, one reply out. Reads the header, checks it against what
//! the chain holds, handles INIT and DESTROY, and hands every other request to
//! [`crate::dispatch`].

use crate::abi::{init_flags, InHeader, Opcode};
use crate::deferred::{Deferred, PendingReply, Started};
use crate::ext::{self, SecCtx};
use crate::filesystem::{Context, Errno, Filesystem};
use crate::input::{DecodeError, Input, Memory, Segment};
use crate::output::{Output, ReplyError};
use crate::session::{negotiate, Init, Limits, State};
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first `fuse_init_in` layout (major, minor, max_readahead, flags), before 7.36 added
/// `flags2`.
const INIT_IN_COMPAT_LEN: usize = 16;

/// Size of a request header.
pub const IN_HEADER_LEN: usize = std::mem::size_of::<InHeader>();

/// A request the server could not answer at all.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Not even a header could be read: there is no request id to reply to.
    #[error("no request header: {0}")]
    NoHeader(DecodeError),
    /// The reply (even an error reply) could not be written.
    #[error("reply to request {unique}: {error}")]
    Reply {
        /// The request's id.
        unique: u64,
        /// Why.
        error: ReplyError,
    },
}

/// Why a request failed, on its way to becoming an errno reply.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The filesystem's answer.
    Errno(Errno),
    /// The request was malformed.
    Decode(DecodeError),
    /// The reply did not fit.
    Reply(ReplyError),
}

impl From<Errno> for Failure {
    fn from(e: Errno) -> Self {
        Failure::Errno(e)
    }
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        Failure::Decode(e)
    }
}

impl From<ReplyError> for Failure {
    fn from(e: ReplyError) -> Self {
        Failure::Reply(e)
    }
}

/// What the server did with one request, for the caller's statistics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Reply bytes written (0: no reply, FORGET and BATCH_FORGET).
    pub written: usize,
    /// The request's opcode (None: unknown).
    pub opcode: Option<Opcode>,
    /// The errno the guest got (0: success).
    pub errno: i32,
}

/// What a request carries besides its arguments.
pub(crate) struct Request<'a> {
    /// Its header.
    pub(crate) h: &'a InHeader,
    /// Who sent it.
    pub(crate) ctx: &'a Context,
    /// A new node's security context (SECURITY_CTX).
    pub(crate) secctx: Option<&'a SecCtx>,
    /// Where READ, WRITE and FSYNC leave their I/O for the caller to perform, if it will.
    pub(crate) defer: Option<&'a Cell<Option<Deferred>>>,
}

/// A FUSE server for one filesystem.
pub struct Server<F> {
    pub(crate) fs: F,
    pub(crate) state: State,
    limits: Limits,
    /// The smallest request queue's size as last told ([`Server::set_queue_size`]); 0: unknown,
    /// the `queue_size` of `limits` then holds.
    queue_size: AtomicU32,
}

impl<F: Filesystem> Server<F> {
    /// A server for `fs` that offers `limits` at INIT.
    pub fn new(fs: F, limits: Limits) -> Self {
        Server {
            fs,
            state: State::default(),
            limits,
            queue_size: AtomicU32::new(0),
        }
    }

    /// Tells the server how many descriptors the smallest request queue has (the frontend set
    /// it with SET_VRING_NUM): the next INIT offers as many pages per READ and WRITE as a chain
    /// of that queue carries ([`Limits::pages`]). 0 forgets it.
    pub fn set_queue_size(&self, descriptors: u16) {
        self.queue_size
            .store(u32::from(descriptors), Ordering::Relaxed);
    }

    /// The limits the next INIT offers.
    pub fn limits(&self) -> Limits {
        match self.queue_size.load(Ordering::Relaxed) {
            0 => self.limits,
            q => Limits {
                queue_size: Some(q as u16),
                ..self.limits
            },
        }
    }

    /// The filesystem.
    pub fn filesystem(&self) -> &F {
        &self.fs
    }

    /// The filesystem, to configure before serving.
    pub fn filesystem_mut(&mut self) -> &mut F {
        &mut self.fs
    }

    /// Whether a session is live (INIT done, no DESTROY since).
    pub fn is_live(&self) -> bool {
        self.state.is_live()
    }

    /// Ends the session without a DESTROY (the guest's driver is gone): the filesystem
    /// forgets every node and handle. Must not run concurrently with a request.
    pub fn end_session(&self) {
        if self.state.end() {
            self.fs.destroy();
        }
    }

    /// Serves the request in `readable` and writes the reply into `writable`.
    pub fn handle(
        &self,
        mem: &Memory,
        readable: &[Segment],
        writable: &[Segment],
    ) -> Result<Served, ServeError> {
        let mut input = Input::new(mem, readable);
        let header: InHeader = input.read_obj().map_err(ServeError::NoHeader)?;
        self.serve_after_header(mem, &header, input, writable, None)
    }

    /// Serves a request whose header the caller has read already (and acted on: the pipeline
    /// picks the INIT/DESTROY gate side by it): `header` is used as given and the first
    /// [`IN_HEADER_LEN`] bytes of `readable` are not read again.
    pub fn handle_with_header(
        &self,
        mem: &Memory,
        header: &InHeader,
        readable: &[Segment],
        writable: &[Segment],
    ) -> Result<Served, ServeError> {
        let mut input = Input::new(mem, readable);
        input.skip(IN_HEADER_LEN).map_err(ServeError::NoHeader)?;
        self.serve_after_header(mem, header, input, writable, None)
    }

    /// [`Server::handle_with_header`], except that a READ, WRITE or FSYNC the filesystem can
    /// prepare ([`Filesystem::prepare_read`] and the like) is returned as
    /// [`Started::Deferred`]: the caller performs its I/O, keeping the memory and the
    /// descriptor alive until it is done, then calls [`Server::finish`] exactly once.
    pub fn start_with_header(
        &self,
        mem: &Memory,
        header: &InHeader,
        readable: &[Segment],
        writable: &[Segment],
    ) -> Result<Started, ServeError> {
        let mut input = Input::new(mem, readable);
        input.skip(IN_HEADER_LEN).map_err(ServeError::NoHeader)?;
        let slot = Cell::new(None);
        let served = self.serve_after_header(mem, header, input, writable, Some(&slot))?;
        Ok(match slot.take() {
            Some(deferred) => Started::Deferred(deferred),
            None => Started::Done(served),
        })
    }

    /// Writes the reply of a request [`Server::start_with_header`] deferred, whose I/O came to
    /// `result`: the bytes read or written, or the errno of the failure.
    pub fn finish(
        &self,
        mem: &Memory,
        writable: &[Segment],
        reply: &PendingReply,
        result: Result<usize, Errno>,
    ) -> Result<Served, ServeError> {
        let mut out = Output::new(mem, writable);
        let errno = match crate::dispatch::finish(reply, result, &mut out) {
            Ok(()) => 0,
            Err(Failure::Errno(Errno(e))) => e,
            Err(Failure::Decode(e)) => e.errno(),
            Err(Failure::Reply(e)) => {
                tracing::warn!(unique = reply.unique, "reply does not fit: {e}");
                libc::EIO
            }
        };
        if errno != 0 {
            out.reply_error(reply.unique, errno)
                .map_err(|error| ServeError::Reply {
                    unique: reply.unique,
                    error,
                })?;
        }
        Ok(Served {
            written: out.written(),
            opcode: Some(reply.opcode),
            errno,
        })
    }

    fn serve_after_header(
        &self,
        mem: &Memory,
        header: &InHeader,
        input: Input<'_>,
        writable: &[Segment],
        defer: Option<&Cell<Option<Deferred>>>,
    ) -> Result<Served, ServeError> {
        let header = *header;
        let mut out = Output::new(mem, writable);
        let opcode = Opcode::from_u32(header.opcode);
        let result = match self.parse(&header, input) {
            Ok((ctx, mut args, secctx)) => match opcode {
                None => Err(Failure::Errno(Errno(libc::ENOSYS))),
                Some(op) => {
                    let req = Request {
                        h: &header,
                        ctx: &ctx,
                        secctx: secctx.as_ref(),
                        defer,
                    };
                    self.serve(op, &req, &mut args, &mut out)
                }
            },
            Err(e) => Err(Failure::Decode(e)),
        };
        let errno = match result {
            Ok(()) => 0,
            Err(Failure::Errno(Errno(e))) => e,
            Err(Failure::Decode(e)) => {
                tracing::debug!(
                    unique = header.unique,
                    opcode = header.opcode,
                    "malformed request: {e}"
                );
                e.errno()
            }
            Err(Failure::Reply(e)) => {
                tracing::warn!(
                    unique = header.unique,
                    opcode = header.opcode,
                    "reply does not fit: {e}"
                );
                libc::EIO
            }
        };
        if opcode.is_some_and(Opcode::has_no_reply) {
            return Ok(Served {
                written: 0,
                opcode,
                errno,
            });
        }
        if errno != 0 {
            out.reply_error(header.unique, errno)
                .map_err(|error| ServeError::Reply {
                    unique: header.unique,
                    error,
                })?;
        }
        Ok(Served {
            written: out.written(),
            opcode,
            errno,
        })
    }

    /// Checks the header against the chain and splits the request into its arguments and
    /// its extensions (the caller's supplementary group, a new node's security context).
    fn parse<'a>(
        &self,
        h: &InHeader,
        mut input: Input<'a>,
    ) -> Result<(Context, Input<'a>, Option<SecCtx>), DecodeError> {
        let body = (h.len as usize)
            .checked_sub(IN_HEADER_LEN)
            .ok_or(DecodeError::Invalid(
                "header length below the header's size",
            ))?;
        input.limit(body)?;
        let ext_len = usize::from(h.total_extlen) * 8;
        let args_len = body
            .checked_sub(ext_len)
            .ok_or(DecodeError::Invalid("extensions longer than the request"))?;
        let args = input.take(args_len)?;
        let mut ctx = Context {
            unique: h.unique,
            uid: h.uid,
            gid: h.gid,
            pid: h.pid,
            supp_group: None,
        };
        let on = ext::Negotiated {
            supp_group: self.state.has(init_flags::CREATE_SUPP_GROUP),
            secctx: self.state.has(init_flags::SECURITY_CTX),
        };
        let mut secctx = None;
        if ext_len > 0 && (on.supp_group || on.secctx) {
            let found = ext::parse(&mut input, on)?;
            ctx.supp_group = found.supp_group;
            secctx = found.secctx;
        }
        Ok((ctx, args, secctx))
    }

    fn serve(
        &self,
        op: Opcode,
        req: &Request<'_>,
        args: &mut Input<'_>,
        out: &mut Output<'_>,
    ) -> Result<(), Failure> {
        let h = req.h;
        match op {
            Opcode::Init => self.init(h, args, out),
            // Ends the session if there is one; without one there is nothing to end.
            Opcode::Destroy => {
                self.end_session();
                crate::dispatch::empty(h.unique, out)
            }
            // The kernel sends nothing before INIT; a fuzzer or a broken driver might.
            _ if !self.state.is_live() => Err(Errno(libc::EIO).into()),
            _ => crate::dispatch::dispatch(self, op, req, args, out),
        }
    }

    fn init(
        &self,
        h: &InHeader,
        args: &mut Input<'_>,
        out: &mut Output<'_>,
    ) -> Result<(), Failure> {
        // Guests before 7.36 send the first 16 bytes only; fewer is no INIT at all.
        if args.remaining() < INIT_IN_COMPAT_LEN {
            return Err(DecodeError::Invalid("fuse_init_in shorter than 16 bytes").into());
        }
        let arg = args.read_obj_prefix(args.remaining())?;
        if self.state.is_live() {
            // A new driver (guest reboot, kexec, rebind): the old session is over.
            tracing::info!("FUSE_INIT in a live session: the previous session ends");
            self.end_session();
        }
        let limits = self.limits();
        match negotiate(&arg, &limits, |capable| self.fs.init(capable))? {
            Init::Downgrade(reply) => crate::dispatch::reply_obj(h.unique, out, &reply),
            Init::Ready(reply, agreed) => {
                crate::dispatch::reply_obj(h.unique, out, &reply)?;
                tracing::info!(
                    minor = agreed.minor,
                    max_pages = agreed.max_pages,
                    max_write = agreed.max_write,
                    queue_size = ?limits.queue_size,
                    "FUSE session started; agreed: {}; the guest offered: {}",
                    init_flags::describe(agreed.flags),
                    init_flags::describe(agreed.offered)
                );
                self.state.start(&agreed);
                Ok(())
            }
        }
    }
}
