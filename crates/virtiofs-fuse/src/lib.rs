//! The FUSE protocol as a virtio-fs server speaks it.
//!
//! A request is a chain of guest memory: readable segments holding the request, writable ones
//! for the reply. [`Server::handle`] reads the header and each argument once out of guest memory
//! ([`input`]: no field can change after it was checked), negotiates the session at INIT
//! ([`session`]), calls the [`Filesystem`] method for the opcode ([`dispatch`]) and writes the
//! reply straight into the guest's buffers ([`output`], [`dirent`]). READ and WRITE data is never
//! copied by the server: the filesystem gets the guest's memory as slices for preadv/pwritev.
//!
//! - [`abi`]: the wire format of Linux's `fuse.h`, protocol 7.27 to 7.45.
//! - [`filesystem`]: the [`Filesystem`] trait, its typed arguments and replies.

pub mod abi;
pub mod deferred;
mod dirent;
mod dispatch;
pub mod ext;
pub mod filesystem;
pub mod input;
mod name;
pub mod output;
mod reply;
mod server;
pub mod session;

pub use deferred::{Deferred, IoKind, PendingReply, PreparedIo, Started};
pub use dirent::DirSink;
pub use ext::SecCtx;
pub use filesystem::{
    AttrReply, Context, Entry, Errno, Filesystem, GuestSlice, IoctlReply, Opened, StatxReply, Xattr,
};
pub use input::{DecodeError, Memory, Segment};
pub use name::{Name, NAME_MAX};
pub use output::ReplyError;
pub use server::{ServeError, Served, Server, IN_HEADER_LEN};
pub use session::Limits;
