//! The FUSE server seen from the pipeline: one call per descriptor chain.

use fuse_backend_rs::abi::fuse_abi::Opcode;
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use virtio_queue::DescriptorChain;
use vm_memory::{GuestMemoryLoadGuard, GuestMemoryMmap};

use crate::request::{peek_in_header, peek_out_header, OUT_HEADER_LEN};

/// A descriptor chain popped from a virtqueue, with the guest memory it points into.
pub type Chain = DescriptorChain<GuestMemoryLoadGuard<GuestMemoryMmap<()>>>;

/// Why a request could not be handled; the pipeline turns it into an errno reply if it can.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The descriptor chain does not describe valid guest memory.
    #[error("malformed descriptor chain: {0}")]
    Chain(String),
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
            HandleError::Chain(_) | HandleError::Request(_) => libc::EINVAL,
            HandleError::Server(_) => libc::EIO,
        }
    }
}

impl From<fuse_backend_rs::Error> for HandleError {
    fn from(e: fuse_backend_rs::Error) -> Self {
        use fuse_backend_rs::Error as E;
        match e {
            E::DecodeMessage(_)
            | E::MissingParameter
            | E::InvalidCString(_)
            | E::InvalidHeaderLength
            | E::InvalidXattrSize(_) => HandleError::Request(e.to_string()),
            _ => HandleError::Server(e.to_string()),
        }
    }
}

/// Handles one FUSE request: reads it from the chain's readable part and writes the reply into its
/// writable part. Runs on a thread that may block.
pub trait FuseHandler: Send + Sync + 'static {
    /// Handles the request in `chain`; returns the number of reply bytes written.
    fn handle(&self, chain: &Chain) -> Result<usize, HandleError>;
}

impl<F: FileSystem + Send + Sync + 'static> FuseHandler for Server<F> {
    fn handle(&self, chain: &Chain) -> Result<usize, HandleError> {
        let mem = chain.memory();
        let reader = Reader::from_descriptor_chain(mem, chain.clone())
            .map_err(|e| HandleError::Chain(e.to_string()))?;
        let writer: Writer<'_, ()> = VirtioFsWriter::new(mem, chain.clone())
            .map_err(|e| HandleError::Chain(e.to_string()))?
            .into();
        let written = self.handle_message(reader, writer, None, None)?;
        if written == 0 && destroy_reply_written(chain) {
            // fuse-backend-rs 0.14 writes the DESTROY reply header but returns 0 bytes written
            // (api/server/sync_io.rs); the guest must get the header's length as used length.
            return Ok(OUT_HEADER_LEN);
        }
        Ok(written)
    }
}

/// Whether `chain` is a DESTROY whose success reply header is in place.
fn destroy_reply_written(chain: &Chain) -> bool {
    match (peek_in_header(chain), peek_out_header(chain)) {
        (Some(req), Some(reply)) => {
            req.opcode == Opcode::Destroy as u32
                && reply.unique == req.unique
                && reply.error == 0
                && reply.len as usize == OUT_HEADER_LEN
        }
        _ => false,
    }
}
