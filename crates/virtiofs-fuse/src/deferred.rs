//! READ, WRITE and FSYNC performed by someone else (the pipeline's io_uring).
//!
//! The server decodes the request and the [`Filesystem`](crate::Filesystem) prepares the I/O
//! (handle lookup, quota, killpriv: everything the synchronous method does before its system
//! call) as a [`PreparedIo`]. The caller performs it, then hands the result back to
//! [`Server::finish`](crate::Server::finish), which writes the reply. The FUSE encoding stays
//! here; the caller sees a descriptor, an offset and iovecs.

use std::any::Any;
use std::os::fd::RawFd;

use crate::abi::Opcode;

/// What a [`PreparedIo`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    /// `preadv` of the iovecs at the offset.
    Read,
    /// `pwritev` of the iovecs at the offset.
    Write,
    /// `fsync` (or `fdatasync` with `datasync`).
    Fsync {
        /// Data only.
        datasync: bool,
    },
}

/// One system call's worth of I/O, prepared by a filesystem for the caller to perform.
///
/// `fd` stays open and the iovecs' memory (the guest's buffers) stays mapped for as long as
/// `keep` and the request's guest memory guard live: the caller must hold both until the I/O
/// is complete, whatever happens.
pub struct PreparedIo {
    /// What to do.
    pub kind: IoKind,
    /// The descriptor, valid while `keep` lives.
    pub fd: RawFd,
    /// The file offset (READ and WRITE).
    pub offset: u64,
    /// Where the data goes or comes from (READ and WRITE): guest memory. At most `IOV_MAX`.
    pub iovecs: Vec<libc::iovec>,
    /// What keeps `fd` open (the filesystem's handle).
    pub keep: Box<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for PreparedIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedIo")
            .field("kind", &self.kind)
            .field("fd", &self.fd)
            .field("offset", &self.offset)
            .field("iovecs", &self.iovecs.len())
            .finish()
    }
}

/// What the reply of a deferred request needs once its I/O is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingReply {
    pub(crate) unique: u64,
    pub(crate) opcode: Opcode,
    /// READ: the data room reserved after the reply header; WRITE: the size asked.
    pub(crate) want: usize,
}

impl PendingReply {
    /// The reply of request `unique` (`opcode`: READ, WRITE or FSYNC); `want`: READ's data
    /// room, WRITE's size. The server makes its own; this is for other handlers (tests).
    pub fn new(unique: u64, opcode: Opcode, want: usize) -> Self {
        Self {
            unique,
            opcode,
            want,
        }
    }

    /// The request's id.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// The request's opcode.
    pub fn opcode(&self) -> Opcode {
        self.opcode
    }
}

/// A request whose I/O the caller performs: the I/O, and what its reply needs.
#[derive(Debug)]
pub struct Deferred {
    /// The I/O to perform.
    pub io: PreparedIo,
    /// For [`Server::finish`](crate::Server::finish).
    pub reply: PendingReply,
}

/// What [`Server::start_with_header`](crate::Server::start_with_header) did.
#[derive(Debug)]
pub enum Started {
    /// Served to the end (any opcode other than READ/WRITE/FSYNC, an error, or I/O the
    /// filesystem did itself).
    Done(crate::Served),
    /// The I/O is for the caller to perform; the reply is not written yet.
    Deferred(Deferred),
}
