//! vhost-user-fs-mount: mounts a vhost-user-fs backend (async-virtiofsd, the C or the Rust
//! virtiofsd, ...) on the host through /dev/fuse, with no VM.
//!
//! The Linux FUSE client speaks the same protocol over /dev/fuse that a virtio-fs guest speaks
//! over virtqueues. The bridge reads each request from /dev/fuse and hands it, byte for byte
//! (credentials and `unique` included), to the backend as a descriptor chain through
//! [`vhost_user_fs_client`], which plays QEMU and the guest's virtio-fs driver; the reply goes
//! back to /dev/fuse as the backend wrote it. What differs from a guest:
//! - **INIT** is negotiated between the two: the kernel's flags minus what the bridge cannot
//!   carry go to the backend, the backend's answer is limited to what was offered, and
//!   `max_write` / `max_pages` to what one request can carry (`queue_size - 4` pages, as the
//!   Linux virtio-fs driver does). See [`init`].
//! - **INTERRUPT** does not exist in virtio-fs (the Linux guest driver drops interrupts). The
//!   bridge answers the first one ENOSYS, which tells the kernel not to send more; the
//!   interrupted request completes when the backend answers it.
//! - **FORGET / BATCH_FORGET** go on the hiprio queue and get no reply, as in a guest.
//! - **DESTROY**: the kernel sends none for a /dev/fuse mount; the bridge sends one to the
//!   backend when the mount ends, as a guest does on unmount.
//! - **The end**: on SIGINT / SIGTERM / SIGHUP the bridge unmounts (lazily if busy, then aborts
//!   the connection after a grace period); if the backend goes away it aborts the connection
//!   (everything in flight and every later access gets ENOTCONN) and detaches the mount; a
//!   forked watchdog detaches the mount if the bridge itself dies. No dead mount stays behind.
//!
//! See docs/bridge.md.

#![deny(missing_docs)]

pub mod bridge;
pub mod error;
pub mod init;
pub mod mount;

pub use bridge::{run, Config, Ending};
pub use error::{Error, Result};
