//! The FUSE server seen from the pipeline: one call per descriptor chain.

use virtiofs_fuse::abi::InHeader;
use virtiofs_fuse::{Deferred, PendingReply};

pub use crate::chain::Chain;

/// Why a request could not be handled; the pipeline turns it into an errno reply if it can.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The FUSE message in the chain could not be decoded.
    #[error("malformed FUSE request: {0}")]
    Request(String),
    /// The server failed for another reason (e.g. the reply did not fit).
    #[error("FUSE server error: {0}")]
    Server(String),
}

impl HandleError {
    /// The errno the guest gets for this error.
    pub fn errno(&self) -> i32 {
        match self {
            HandleError::Request(_) => libc::EINVAL,
            HandleError::Server(_) => libc::EIO,
        }
    }
}

/// What a handler did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handled {
    /// Reply bytes written (0: no reply).
    pub len: usize,
    /// The errno the reply carries (0: success).
    pub errno: i32,
}

/// What [`FuseHandler::start`] did with a request.
#[derive(Debug)]
pub enum Start {
    /// Handled to the end.
    Done(Handled),
    /// Its I/O is for the pipeline to perform; then [`FuseHandler::finish`] writes the reply.
    Io(Deferred),
}

/// Handles one FUSE request: reads it from the chain's readable part and writes the reply into its
/// writable part. Runs on a thread that may block.
pub trait FuseHandler: Send + Sync + 'static {
    /// Handles the request in `chain`. `header` is the request's header as the pipeline read it
    /// (once) and chose the gate side for: the handler must use it and not read the header from
    /// guest memory again, where the guest may have changed it since. Every other field it must
    /// read out of guest memory once, into memory the guest cannot see, before checking it.
    fn handle(&self, chain: &Chain, header: &InHeader) -> Result<Handled, HandleError>;

    /// Before each FUSE_INIT: the number of descriptors of the smallest request queue the
    /// frontend has set up (SET_VRING_NUM), the longest chain the guest may send, so that the
    /// handler offers no more pages per READ and WRITE than a chain carries. The pipeline calls
    /// it with no other request running. The default ignores it.
    fn set_queue_size(&self, _descriptors: u16) {}

    /// Ends the FUSE session without a DESTROY from the guest: the driver that owned it is gone
    /// (guest reboot, kexec, driver rebind, device reset). Releases every inode and handle of
    /// the session, as DESTROY does, so that nothing of the old driver survives into the next
    /// INIT. The pipeline calls it with no other request running.
    fn end_session(&self);

    /// Whether a request with `opcode` may come back from [`FuseHandler::start`] as
    /// [`Start::Io`] (the pipeline then starts it on the queue thread, whatever its weight).
    /// The default: never.
    fn defers(&self, _opcode: u32) -> bool {
        false
    }

    /// [`FuseHandler::handle`], except that a request [`FuseHandler::defers`] may be returned
    /// as I/O for the pipeline to perform: it keeps the chain (its guest memory) and the
    /// prepared I/O (its descriptor) alive until the I/O is complete, then calls
    /// [`FuseHandler::finish`] once. The default handles everything.
    fn start(&self, chain: &Chain, header: &InHeader) -> Result<Start, HandleError> {
        self.handle(chain, header).map(Start::Done)
    }

    /// Writes the reply of a request [`FuseHandler::start`] returned as I/O, which came to
    /// `result` (bytes moved, or a positive errno).
    fn finish(
        &self,
        _chain: &Chain,
        _reply: &PendingReply,
        _result: Result<usize, i32>,
    ) -> Result<Handled, HandleError> {
        Err(HandleError::Server("this handler defers no I/O".to_owned()))
    }
}
