//! vhost-user glue for a virtio-fs device.
//!
//! [`FsBackend`] tells the vhost-user frontend (QEMU's `vhost-user-fs-pci`) what the device
//! offers: queue 0 is the high-priority queue (FORGET / BATCH_FORGET), queues 1..=N are request
//! queues. The `vhost-user-backend` crate handles the protocol; this crate makes sure it starts
//! **no** epoll worker threads of its own. Instead every queue is a [`WatchedVring`] that
//! announces its state changes, so that one tokio task per queue can own the kick eventfd (see
//! the `virtiofs-pipeline` crate).

mod backend;
mod memory;
mod vring;

pub use backend::{
    FsBackend, FsBackendConfig, GuestMemory, HandlerReleased, TagError, CONFIG_SPACE_LEN,
    MAX_QUEUE_SIZE, MAX_REQUEST_QUEUES, MAX_TAG_LEN,
};
pub use memory::{MemoryGenerations, MemoryTable, QueueMemory};
pub use vring::{QueueLink, WatchedVring};

/// Index of the high-priority queue (FORGET and BATCH_FORGET only).
pub const HIPRIO_QUEUE: usize = 0;
