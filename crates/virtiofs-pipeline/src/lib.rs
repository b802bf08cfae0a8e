//! The request pipeline of async-virtiofsd.
//!
//! The request path, in the order a request meets it:
//! 1. [`thread`]: each request queue gets an OS thread of its own, with a current-thread
//!    runtime, once the frontend starts the queue (the hiprio queue's task runs on the shared
//!    runtime).
//! 2. [`queue`]: the queue's task owns the kick eventfd; on a kick it pops the available chains
//!    in batches ([`used`] makes sure each goes back once) and takes each one's gate pass in
//!    ring order.
//! 3. [`gate`]: FUSE_INIT and FUSE_DESTROY hold the write side of an async RwLock, every other
//!    request the read side, so they never overlap.
//! 4. [`dispatch`]: the request runs on the queue thread, or goes to the queue's [`pool`] when
//!    others wait behind it or it may block long ([`request::classify`]); at most
//!    `--thread-pool-size` runners per queue run pooled requests, and the queue thread takes
//!    back the quick ones nobody started.
//! 5. [`serve`] and [`handler`]: the FUSE header is checked, the session rules applied, and the
//!    FUSE server proper (`virtiofs-fuse`, behind [`FuseHandler`]) runs the request start to end
//!    on one OS thread (credentials are switched per thread); it reads every other field out
//!    of guest memory once.
//! 6. [`used`] again: the chain goes back on the used ring, the queue thread's completions of
//!    one batch together with one guest notification, a pooled one on its own. A SETLKW whose
//!    lock is held elsewhere waits in `lock_wait` instead, holding no thread and no gate pass,
//!    and runs again until it gets the lock or its session or ring ends.

pub mod affinity;
mod alarm;
pub mod chain;
pub mod dispatch;
pub mod gate;
pub mod gather;
pub mod handler;
pub mod host_load;
mod kick;
mod lock_wait;
mod pipeline;
pub mod poll;
pub mod pool;
pub mod queue;
pub mod request;
pub mod serve;
pub mod stats;
mod stop;
pub mod thread;
pub mod uring;
pub mod used;

pub use affinity::{CpuSet, QueueAffinity};
pub use gate::{GateBusy, Pass, SessionGate};
pub use handler::{Chain, FuseHandler, HandleError, Handled, Start};
pub use host_load::HostLoad;
pub use pipeline::{Pipeline, PipelineConfig, SessionReset};
pub use serve::serve_chain;
pub use stats::QueueStats;
pub use thread::queue_thread_name;
pub use uring::{IoEngine, ProbeError};
