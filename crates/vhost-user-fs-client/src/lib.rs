//! A vhost-user virtio-fs test client: it plays QEMU (the vhost-user frontend) and the guest's
//! virtio-fs driver against any virtio-fs backend socket, with no VM.
//!
//! Layers, bottom up:
//! - [`memory`]: guest memory as memfd-backed regions shared through the vhost-user memory
//!   table, with an allocator for rings and buffers;
//! - [`virtqueue`]: a driver-side split virtqueue (free list, avail publication with fences,
//!   used-ring consumption, wrap-around, indirect descriptors, EVENT_IDX, call/kick eventfds);
//! - [`device`]: the vhost-user setup sequence QEMU runs (features, protocol features, queue
//!   count, memory table, vrings) and a raw descriptor-chain API for hostile-input tests;
//! - [`fuse`]: FUSE requests with per-request credentials, checked replies, typed operations;
//! - [`soak`]: a long-running mixed workload that verifies every byte across sessions and
//!   daemon restarts, and watches the daemon's descriptors and memory;
//! - [`daemons`]: the daemons to run it against (async-virtiofsd, the C and the Rust
//!   virtiofsd): binaries, command lines, readiness, known incompatibilities.
//!
//! ```no_run
//! use vhost_user_fs_client::{DeviceConfig, FsClient, FuseOps, abi::ROOT_ID};
//! let client = FsClient::connect(DeviceConfig::new("/run/vfs.sock")).unwrap();
//! client.init().unwrap();
//! let entry = client.lookup(ROOT_ID, "hello.txt").unwrap();
//! println!("size {}", entry.attr.size);
//! ```
//!
//! Everything is synchronous; for many requests in flight use [`FsClient::submit`] (returns a
//! [`FuseToken`] at once) and [`FsClient::wait`]. All types are `Sync`.

#![deny(missing_docs)]

pub mod daemons;
pub mod device;
pub mod error;
pub mod fuse;
pub mod memory;
pub mod soak;
pub mod virtqueue;

pub use device::{Device, DeviceConfig, Negotiated, RawChain, ReadPart, Reset, WritePart};
pub use error::{Errno, Error, Result};
pub use fuse::abi;
pub use fuse::{
    Caller, Creds, DirEntry, DirEntryPlus, FsClient, FuseOps, FuseRequest, FuseToken, InitParams,
    Reply, XattrReply,
};
pub use virtqueue::{Buffers, Completion, RawDescriptor, Token};
