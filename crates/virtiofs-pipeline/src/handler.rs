//! The FUSE server seen from the pipeline: one call per descriptor chain.

use fuse_backend_rs::abi::fuse_abi::{CreateIn, GetxattrIn, Opcode, OpenIn, ReadIn, WriteIn};
use fuse_backend_rs::api::filesystem::FileSystem;
use fuse_backend_rs::api::server::Server;
use fuse_backend_rs::transport::{Reader, VirtioFsWriter, Writer};
use virtio_queue::DescriptorChain;
use vm_memory::{GuestMemoryLoadGuard, GuestMemoryMmap};

use crate::private::{patch_private, read_private};
use crate::request::{peek_in_header, peek_out_header, reply_error, IN_HEADER_LEN, OUT_HEADER_LEN};

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

    /// Ends the FUSE session without a DESTROY from the guest: the driver that owned it is gone
    /// (guest reboot, kexec, driver rebind, device reset). Releases every inode and handle of
    /// the session, as DESTROY does, so that nothing of the old driver survives into the next
    /// INIT. The pipeline calls it with no other request running.
    fn end_session(&self);
}

/// Serves one request with fuse-backend-rs's [`Server`]: what a [`FuseHandler`] built on it
/// runs in [`FuseHandler::handle`].
pub fn serve_with<F: FileSystem + Sync>(
    server: &Server<F>,
    chain: &Chain,
) -> Result<usize, HandleError> {
    if let Some(h) = peek_in_header(chain).filter(|h| !is_decodable_opcode(h.opcode)) {
        // What the server answers for every other opcode it does not know.
        return reply_error(chain, h.unique, libc::ENOSYS)
            .ok_or_else(|| HandleError::Server("no room for the reply".into()));
    }
    sanitize(chain);
    let mem = chain.memory();
    let reader = Reader::from_descriptor_chain(mem, chain.clone())
        .map_err(|e| HandleError::Chain(e.to_string()))?;
    let writer: Writer<'_, ()> = VirtioFsWriter::new(mem, chain.clone())
        .map_err(|e| HandleError::Chain(e.to_string()))?
        .into();
    let written = server.handle_message(reader, writer, None, None)?;
    if written == 0 && destroy_reply_written(chain) {
        // fuse-backend-rs 0.14 writes the DESTROY reply header but returns 0 bytes written
        // (api/server/sync_io.rs); the guest must get the header's length as used length.
        return Ok(OUT_HEADER_LEN);
    }
    Ok(written)
}

/// Whether fuse-backend-rs 0.14's `Server` may see `opcode`. Its `Opcode::from`
/// (abi/fuse_abi_linux.rs) transmutes every value below `MaxOpcode` into the enum, but 0, 7 and
/// 19 are no variants: undefined behaviour, run whenever its trace log is on
/// (`--log-level trace`); a debug build aborts. Found by the `request_pipeline` fuzz target.
pub fn is_decodable_opcode(opcode: u32) -> bool {
    !matches!(opcode, 0 | 7 | 19)
}

/// Where READ's and WRITE's `flags` (the file's open flags) lie in the request.
const RW_FLAGS_AT: usize = IN_HEADER_LEN + std::mem::offset_of!(ReadIn, flags);
const _: () = assert!(std::mem::offset_of!(ReadIn, flags) == std::mem::offset_of!(WriteIn, flags));
/// Where OPEN's, OPENDIR's and CREATE's `flags` lie in the request.
const OPEN_FLAGS_AT: usize = IN_HEADER_LEN + std::mem::offset_of!(OpenIn, flags);
const _: () = assert!(std::mem::offset_of!(OpenIn, flags) == std::mem::offset_of!(CreateIn, flags));
/// Where GETXATTR's and LISTXATTR's `size` lies in the request.
const XATTR_SIZE_AT: usize = IN_HEADER_LEN + std::mem::offset_of!(GetxattrIn, size);
/// The most an xattr value or list can be on Linux (`XATTR_SIZE_MAX`, `XATTR_LIST_MAX`).
const XATTR_MAX: u32 = 65536;

/// Rewrites request fields that fuse-backend-rs 0.14 mishandles, in the private copy of the
/// request (see [`crate::private`]; the guest cannot change them back). All found by the
/// `request_pipeline` fuzz target (`fuzz/`).
///
/// - READ and WRITE `flags`: O_DIRECT and O_NOATIME are cleared; OPEN, OPENDIR and CREATE
///   `flags`: O_PATH is cleared (a Linux guest never sends it: O_PATH opens do not reach the
///   filesystem). `PassthroughFs::read`/`write` (passthrough/sync_io.rs) wrap the handle's fd in
///   a `File` and, when `flags` differ from the flags the handle was opened with,
///   `fcntl(F_SETFL, flags)`; if that fails they return before the `File` is made `ManuallyDrop`,
///   so it **closes the handle's fd**, which the handle still owns: the fd number is free for the
///   next file the daemon opens (another guest file, guest memory, the socket) and is closed
///   again on RELEASE. F_SETFL fails on an O_PATH fd (which the library opens if the guest asks),
///   for O_DIRECT where the file does not support it (a directory, some filesystems), for
///   O_NOATIME unless the caller owns the file, and for clearing O_APPEND on an append-only file
///   (which a guest cannot create). Cost: a handle opened with O_DIRECT (`--allow-direct-io`)
///   loses it at its first READ or WRITE whose flags differ from its open flags.
/// - GETXATTR and LISTXATTR `size`: capped at 64 KiB, as the kernel caps the syscalls'. The
///   library allocates `size` bytes up front, so a guest could ask for 4 GiB per request.
fn sanitize(chain: &Chain) {
    let Some(h) = peek_in_header(chain) else {
        return;
    };
    let (at, update): (usize, fn(u32) -> u32) = match h.opcode {
        op if op == Opcode::Read as u32 || op == Opcode::Write as u32 => (RW_FLAGS_AT, |f| {
            f & !((libc::O_DIRECT | libc::O_NOATIME) as u32)
        }),
        op if op == Opcode::Open as u32
            || op == Opcode::Opendir as u32
            || op == Opcode::Create as u32 =>
        {
            (OPEN_FLAGS_AT, |f| f & !(libc::O_PATH as u32))
        }
        op if op == Opcode::Getxattr as u32 || op == Opcode::Listxattr as u32 => {
            (XATTR_SIZE_AT, |size| size.min(XATTR_MAX))
        }
        _ => return,
    };
    let mut raw = [0u8; 4];
    if read_private(chain, at, &mut raw) {
        let value = update(u32::from_ne_bytes(raw));
        patch_private(chain, at, &value.to_ne_bytes());
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
