//! A vring whose state changes can be awaited.
//!
//! `vhost-user-backend` normally polls each kick eventfd on its own epoll thread. We leave every
//! queue out of `queues_per_thread()`, so no library thread ever reads a kick, and instead hand
//! the eventfd to a tokio task. That task needs to know when the frontend sets a kick fd, starts
//! or stops the ring, or enables or disables it: this wrapper bumps a [`watch`] counter on each of
//! those calls.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use vhost_user_backend::{VringRwLock, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::{Error as QueueError, QueueT};

use crate::{GuestMemory, MemoryGenerations, QueueMemory};

thread_local! {
    /// Vrings created on this thread, in creation order. `VhostUserDaemon::new` creates one
    /// vring per queue, in queue order, on the calling thread; `VringT::new` gets no queue index,
    /// so this is how [`crate::FsBackend::create_daemon`] learns which vring is which queue.
    static CREATED: RefCell<Vec<WatchedVring>> = const { RefCell::new(Vec::new()) };
}

/// Takes the vrings created on this thread since the last call.
pub(crate) fn take_created() -> Vec<WatchedVring> {
    CREATED.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

/// Chains of a ring popped and not yet returned, and the threads waiting for them to be back.
#[derive(Debug, Default)]
struct InFlight {
    chains: usize,
    waiters: usize,
}

/// How long stopping a ring waits for its in-flight requests before giving up.
const STOP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`VringRwLock`] that publishes a change counter whenever its run state changes, and counts
/// the chains popped but not yet returned.
#[derive(Clone)]
pub struct WatchedVring {
    inner: VringRwLock<GuestMemory>,
    changes: Arc<watch::Sender<u64>>,
    in_flight: Arc<(Mutex<InFlight>, Condvar)>,
    // Queue number, for the log; set once by `FsBackend::create_daemon`.
    index: Arc<OnceLock<usize>>,
}

impl WatchedVring {
    /// Tells the ring's subscribers that something changed.
    pub(crate) fn changed(&self, what: &str) {
        tracing::debug!(queue = self.index.get(), "vring {what}");
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn set_index(&self, index: usize) {
        let _ = self.index.set(index);
    }

    /// Counts a chain taken from the ring; call [`WatchedVring::request_done`] once it is back
    /// on the used ring.
    pub fn request_started(&self) {
        self.requests_started(1);
    }

    /// Counts `n` chains taken from the ring at once (a batch).
    pub fn requests_started(&self, n: usize) {
        self.in_flight.0.lock().unwrap().chains += n;
    }

    /// Counts a chain returned to the used ring.
    pub fn request_done(&self) {
        self.requests_done(1);
    }

    /// Counts `n` chains returned to the used ring at once (a batch).
    pub fn requests_done(&self, n: usize) {
        let mut state = self.in_flight.0.lock().unwrap();
        state.chains = state.chains.saturating_sub(n);
        // std's Condvar::notify_all is a futex syscall even with nobody waiting: at depth 1
        // that was one syscall per request. Only a stopping ring ever waits.
        if state.chains == 0 && state.waiters > 0 {
            self.in_flight.1.notify_all();
        }
    }

    /// Waits until no chain of this ring is in flight; `false` on timeout.
    fn drain(&self, timeout: Duration) -> bool {
        let mut guard = self.in_flight.0.lock().unwrap();
        guard.waiters += 1;
        let (mut state, _) = self
            .in_flight
            .1
            .wait_timeout_while(guard, timeout, |s| s.chains > 0)
            .unwrap();
        state.waiters -= 1;
        state.chains == 0
    }

    /// Subscribes to state changes (kick fd set, ring started/stopped, enabled/disabled).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether the ring may be processed: started, enabled, with a kick fd.
    pub fn is_runnable(&self) -> bool {
        let state = self.inner.get_ref();
        state.get_queue().ready() && state.is_enabled() && state.get_kick().is_some()
    }

    /// When the ring may be processed (started, enabled, with a kick fd), a duplicate of its kick
    /// eventfd for the caller to poll; otherwise `None`.
    pub fn runnable_kick(&self) -> Option<io::Result<OwnedFd>> {
        let state = self.inner.get_ref();
        if !state.get_queue().ready() || !state.is_enabled() {
            return None;
        }
        let kick = state.get_kick().as_ref()?;
        // SAFETY: the fd is owned by `state`, which we hold borrowed for this whole call.
        let fd = unsafe { BorrowedFd::borrow_raw(kick.as_raw_fd()) };
        Some(fd.try_clone_to_owned())
    }
}

impl std::ops::Deref for WatchedVring {
    type Target = VringRwLock<GuestMemory>;
    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

impl<'a> VringStateGuard<'a, GuestMemory> for WatchedVring {
    type G = <VringRwLock<GuestMemory> as VringStateGuard<'a, GuestMemory>>::G;
}

impl<'a> VringStateMutGuard<'a, GuestMemory> for WatchedVring {
    type G = <VringRwLock<GuestMemory> as VringStateMutGuard<'a, GuestMemory>>::G;
}

impl VringT<GuestMemory> for WatchedVring {
    fn new(mem: GuestMemory, max_queue_size: u16) -> Result<Self, QueueError> {
        let vring = WatchedVring {
            inner: VringRwLock::new(mem, max_queue_size)?,
            changes: Arc::new(watch::channel(0).0),
            in_flight: Arc::default(),
            index: Arc::default(),
        };
        CREATED.with(|c| c.borrow_mut().push(vring.clone()));
        Ok(vring)
    }
    fn get_ref(&self) -> <Self as VringStateGuard<'_, GuestMemory>>::G {
        self.inner.get_ref()
    }
    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, GuestMemory>>::G {
        self.inner.get_mut()
    }
    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), QueueError> {
        self.inner.add_used(desc_index, len)
    }
    fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.signal_used_queue()
    }
    fn enable_notification(&self) -> Result<bool, QueueError> {
        self.inner.enable_notification()
    }
    fn disable_notification(&self) -> Result<(), QueueError> {
        self.inner.disable_notification()
    }
    fn needs_notification(&self) -> Result<bool, QueueError> {
        self.inner.needs_notification()
    }
    fn set_enabled(&self, enabled: bool) {
        self.inner.set_enabled(enabled);
        self.changed(if enabled { "enabled" } else { "disabled" });
    }
    fn set_queue_info(&self, desc: u64, avail: u64, used: u64) -> Result<(), QueueError> {
        self.inner.set_queue_info(desc, avail, used)
    }
    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }
    fn set_queue_next_avail(&self, base: u16) {
        tracing::debug!(queue = self.index.get(), base, "vring base set");
        self.inner.set_queue_next_avail(base)
    }
    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }
    fn queue_used_idx(&self) -> Result<u16, QueueError> {
        self.inner.queue_used_idx()
    }
    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num)
    }
    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }
    fn set_queue_ready(&self, ready: bool) {
        self.inner.set_queue_ready(ready);
        self.changed(if ready {
            "started"
        } else {
            "stopped (GET_VRING_BASE)"
        });
        // Stopping a ring (GET_VRING_BASE: device reset, guest reboot, migration) must not return
        // while requests can still write to it: the frontend may reuse the ring right after.
        // No new chain is popped once it is not ready; wait for those already taken, as the C
        // virtiofsd drains its thread pool.
        if !ready && !self.drain(STOP_DRAIN_TIMEOUT) {
            tracing::warn!(
                "ring stopped with requests still in flight after {STOP_DRAIN_TIMEOUT:?}"
            );
        }
    }
    fn set_kick(&self, file: Option<File>) {
        let what = if file.is_some() {
            "kick fd set"
        } else {
            "kick fd cleared"
        };
        self.inner.set_kick(file);
        self.changed(what);
    }
    fn read_kick(&self) -> io::Result<bool> {
        self.inner.read_kick()
    }
    fn set_call(&self, file: Option<File>) {
        self.inner.set_call(file)
    }
    fn set_err(&self, file: Option<File>) {
        self.inner.set_err(file)
    }
}

/// What a queue task needs: its index, its vring and the guest memory.
#[derive(Clone)]
pub struct QueueLink {
    /// Queue index as the frontend numbers it (0 = high priority).
    pub index: usize,
    /// The vring shared with the vhost-user protocol thread.
    pub vring: WatchedVring,
    /// Guest memory; updated in place when the frontend sends a new memory table.
    pub mem: GuestMemory,
    /// Announces each new memory table.
    pub generations: MemoryGenerations,
}

impl QueueLink {
    /// The queue's own view of guest memory, for a queue thread to pop chains over.
    pub fn queue_memory(&self) -> QueueMemory {
        QueueMemory::new(&self.mem, &self.generations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn vring() -> WatchedVring {
        let mem = GuestMemory::new(GuestMemoryMmap::<()>::new());
        let v = <WatchedVring as VringT<GuestMemory>>::new(mem, 16).unwrap();
        take_created();
        v
    }

    #[test]
    fn drain_waits_for_the_last_chain_and_times_out_while_one_is_out() {
        let v = vring();
        assert!(v.drain(Duration::ZERO), "nothing popped: drained at once");
        v.requests_started(2);
        assert!(!v.drain(Duration::from_millis(20)), "two chains out");
        let waiter = {
            let v = v.clone();
            std::thread::spawn(move || v.drain(Duration::from_secs(30)))
        };
        // Let the waiter register before the chains come back (either order must work).
        std::thread::sleep(Duration::from_millis(20));
        v.request_done();
        v.request_done();
        assert!(waiter.join().unwrap(), "the waiter saw the ring drained");
        assert_eq!(v.in_flight.0.lock().unwrap().waiters, 0);
    }
}
