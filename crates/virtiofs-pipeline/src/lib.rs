//! The request pipeline of async-virtiofsd.
//!
//! The request path, in the order a request meets it:
//! 1. [`queue`]: one tokio task per virtqueue owns the kick eventfd, pops descriptor chains and
//!    hands each one on; a semaphore per queue (`--thread-pool-size`) bounds how many run at once.
//! 2. [`request`]: reads the FUSE header once (the gate side and the server both use that copy)
//!    and writes error replies the server cannot write ([`serve_chain`] is the per-chain step).
//! 3. [`gate`]: FUSE_INIT and FUSE_DESTROY hold the write side of an async RwLock, every other
//!    request the read side, so they never overlap.
//! 4. [`handler`]: the FUSE server proper (`virtiofs-fuse`, behind [`FuseHandler`]) runs the
//!    request on a blocking thread, start to end on one OS thread (credentials are switched per
//!    thread); it reads every other field out of guest memory once.
//! 5. [`queue`] again: the chain goes back on the used ring and the guest is notified. A SETLKW
//!    whose lock is held elsewhere waits in `lock_wait` instead, holding no worker and no gate
//!    pass, and runs again until it gets the lock or its session or ring ends.

pub mod gate;
pub mod handler;
mod lock_wait;
mod pipeline;
pub mod queue;
pub mod request;
pub mod stats;

pub use gate::{Pass, SessionGate};
pub use handler::{Chain, FuseHandler, HandleError, Handled};
pub use pipeline::{Pipeline, PipelineConfig, SessionReset};
pub use queue::serve_chain;
pub use stats::QueueStats;
