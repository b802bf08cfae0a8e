//! The FUSE layer: wire structs, request builders, reply decoding and the client session.

pub mod abi;
mod client;
mod reply;
mod request;

pub use client::{Caller, Creds, FsClient, FuseOps, FuseToken, InitParams};
pub use reply::{DirEntry, DirEntryPlus, Reply, XattrReply};
pub use request::FuseRequest;
