//! Putting chains back on the used ring, and making sure each popped chain goes back once.
//!
//! - [`UsedBatch`]: the completions of one batch run on the queue thread, published together
//!   under one vring lock with at most one guest notification, decided by `virtio-queue`'s
//!   `needs_notification` after the batch's `add_used` calls (EVENT_IDX-correct: the guest's
//!   `used_event` is looked for anywhere in the range the batch added). A driver that has
//!   taken everything may get the batch's first completion early, without a notification
//!   ([`UsedBatch::flush_if_awaited`]).
//! - [`complete_one`]: a completion on its own (pooled requests, SETLKW waits), notifying as the
//!   ring asks.
//! - [`Popped`]: chains popped from the avail ring and not started yet; whatever is left when it
//!   is dropped (shutdown, a bug) goes back with an error reply.
//! - [`Unanswered`]: a chain owned away from its queue thread (a pooled request, a waiting
//!   SETLKW); dropped without an answer (its job was never run: the pool shut down), it goes
//!   back with an error reply.
//!
//! Each type consumes the chain it returns, so a chain cannot go back twice.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use smallvec::SmallVec;
use tracing::{debug, warn};
use vhost_user_backend::VringT;
use virtio_queue::{QueueOwnedT, QueueT};
use virtiofs_device::{MemoryTable, QueueLink};
use virtiofs_fuse::abi::InHeader;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::chain::DescTable;
use crate::handler::{Chain, FuseHandler};
use crate::queue::{QueueContext, MAX_BATCH};
use crate::request::{is_forget, peek_in_header, reply_error, serial_key};
use crate::stats::QueueStats;

/// Writes an `-errno` reply into `chain` if it has a FUSE header and expects a reply; returns
/// the used length for it.
fn error_reply(chain: &Chain, errno: i32) -> u32 {
    match peek_in_header(chain) {
        Some(h) if !is_forget(h.opcode) => reply_error(chain, h.unique, errno).unwrap_or(0) as u32,
        _ => 0,
    }
}

/// Guest memory as the queue thread holds it (see [`virtiofs_device::QueueMemory`]): the
/// ring is reached through it, not through the vring's own `GuestMemoryAtomic`.
type Mem = GuestMemoryMmap<()>;

/// Turns guest notifications (kicks) of `link`'s ring off.
pub(crate) fn disable_notification(link: &QueueLink, mem: &Mem) -> Result<(), virtio_queue::Error> {
    link.vring
        .get_mut()
        .get_queue_mut()
        .disable_notification(mem)
}

/// Turns guest notifications of `link`'s ring back on; `true` if chains arrived while they
/// were off.
pub(crate) fn enable_notification(
    link: &QueueLink,
    mem: &Mem,
) -> Result<bool, virtio_queue::Error> {
    link.vring
        .get_mut()
        .get_queue_mut()
        .enable_notification(mem)
}

/// Notifies the guest if the ring asks for it; call with the vring locked, after `add_used`.
fn notify_if_needed(
    state: &mut vhost_user_backend::VringState<virtiofs_device::GuestMemory>,
    mem: &Mem,
    link: &QueueLink,
    stats: &QueueStats,
) {
    match state.get_queue_mut().needs_notification(mem) {
        Ok(true) => match state.signal_used_queue() {
            Ok(()) => {
                stats.notifications.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => warn!(queue = link.index, "notify guest: {e}"),
        },
        Ok(false) => {}
        Err(e) => debug!(queue = link.index, "needs_notification: {e}"),
    }
}

/// Returns one chain (`head`, popped over `mem`) to the guest and notifies it if the ring
/// wants a notification.
pub(crate) fn complete_one(link: &QueueLink, stats: &QueueStats, mem: &Mem, head: u16, len: u32) {
    {
        let mut state = link.vring.get_mut();
        match state.get_queue_mut().add_used(mem, head, len) {
            Ok(()) => {
                stats.completed.fetch_add(1, Ordering::Relaxed);
                notify_if_needed(&mut state, mem, link, stats);
            }
            Err(e) => warn!(queue = link.index, "add_used: {e}"),
        }
    }
    // Counted done whatever add_used said, so stopping the ring never waits for it in vain;
    // after the vring lock is released.
    link.vring.request_done();
}

/// The most requests a driver may have out (made available, not used yet) for a batch's first
/// completion to go out early ([`UsedBatch::flush_if_awaited`]): with more, every completion
/// is one of many it waits for, and the head start does not pay for the extra publication.
pub const EARLY_MAX_OUT: u16 = 4;

/// Completions waiting to be published together (see the module docs). Dropping it publishes
/// what it holds.
pub(crate) struct UsedBatch<'a> {
    link: &'a QueueLink,
    stats: &'a QueueStats,
    mem: &'a Mem,
    entries: Vec<(u16, u32)>,
    /// Whether [`UsedBatch::flush_if_awaited`] looked at the driver already.
    looked: bool,
    /// Completions published without a look at whether the guest wants a notification.
    unsignalled: bool,
}

impl<'a> UsedBatch<'a> {
    /// An empty batch for the queue of `link`, whose chains were popped over `mem`.
    pub(crate) fn new(link: &'a QueueLink, stats: &'a QueueStats, mem: &'a Mem) -> Self {
        Self {
            link,
            stats,
            mem,
            entries: Vec::new(),
            looked: false,
            unsignalled: false,
        }
    }

    /// Publishes the completions held so far at once, without a notification, if the driver
    /// has taken every one published before (with EVENT_IDX its `used_event` is the used
    /// index: it asked to hear of the very next one, so it is about to wait for this queue)
    /// and has few requests out ([`EARLY_MAX_OUT`]: each completion gates its next request).
    /// Once per batch, called for its first completion with others still to run: a driver
    /// that looks at the used index once more before it sleeps (as Linux's does when it
    /// turns callbacks back on) works on it while this thread runs the rest, instead of both
    /// waiting in turn for the batch's end. A driver already asleep is notified by
    /// [`UsedBatch::flush`] as before (its check covers this publication too), so no
    /// notification is lost and none is added.
    pub(crate) fn flush_if_awaited(&mut self) {
        if self.looked || self.entries.is_empty() {
            return;
        }
        self.looked = true;
        let awaited = {
            let state = self.link.vring.get_ref();
            let queue = state.get_queue();
            let used = queue.next_used();
            // virtio-queue reads `used_event` only inside `needs_notification`: it follows the
            // avail ring's `size` entries.
            let used_event = queue
                .avail_ring()
                .checked_add(4 + 2 * u64::from(queue.size()))
                .and_then(|at| {
                    self.mem
                        .load::<u16>(GuestAddress(at), Ordering::Acquire)
                        .ok()
                })
                .map(u16::from_le);
            queue.event_idx_enabled()
                && used_event == Some(used)
                && queue
                    .avail_idx(self.mem, Ordering::Acquire)
                    .is_ok_and(|avail| avail.0.wrapping_sub(used) <= EARLY_MAX_OUT)
        };
        if awaited {
            self.stats.early.fetch_add(1, Ordering::Relaxed);
            self.publish(false);
        }
    }

    /// Adds the completion of chain `head` with `len` reply bytes.
    pub(crate) fn push(&mut self, head: u16, len: u32) {
        self.entries.push((head, len));
    }

    /// Puts every held completion on the used ring under one vring lock, then notifies the
    /// guest once if the ring asks for it.
    pub(crate) fn flush(&mut self) {
        self.publish(true);
    }

    /// Puts every held completion on the used ring; with `notify`, notifies the guest if the
    /// ring asks for it. Without, the next check (the batch's flush, with EVENT_IDX) covers
    /// what this one published: the ring checks `used_event` against everything used since it
    /// last checked.
    fn publish(&mut self, notify: bool) {
        if self.entries.is_empty() {
            if notify && self.unsignalled {
                // The batch's only completions went out early: their notification is due.
                self.unsignalled = false;
                let mut state = self.link.vring.get_mut();
                notify_if_needed(&mut state, self.mem, self.link, self.stats);
            }
            return;
        }
        let n = self.entries.len();
        {
            let mut state = self.link.vring.get_mut();
            let mut added = 0;
            let queue = state.get_queue_mut();
            for (head, len) in self.entries.drain(..) {
                match queue.add_used(self.mem, head, len) {
                    Ok(()) => added += 1,
                    Err(e) => warn!(queue = self.link.index, "add_used: {e}"),
                }
            }
            if added > 0 {
                self.stats.completed.fetch_add(added, Ordering::Relaxed);
                if notify {
                    notify_if_needed(&mut state, self.mem, self.link, self.stats);
                }
                self.unsignalled = !notify;
            }
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.link.vring.requests_done(n);
    }
}

impl Drop for UsedBatch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A popped chain and its request header, read once at pop time (`None`: too short for one).
pub(crate) type PoppedChain = (Chain, Option<InHeader>);

/// Chains popped in one go and not started yet (see the module docs).
pub(crate) struct Popped<'a> {
    link: &'a QueueLink,
    stats: &'a QueueStats,
    mem: &'a MemoryTable,
    /// The queue task's buffer: empty before the pop, and again once the batch is dropped.
    chains: &'a mut VecDeque<PoppedChain>,
    /// The [`serial_key`]s that two or more requests of the batch share, sorted.
    serial: SmallVec<[u64; 4]>,
    /// The avail ring had more than the batch took.
    pub(crate) more_in_ring: bool,
}

impl<'a> Popped<'a> {
    /// Pops up to `max` available chains of `link`'s ring over `mem` (each chain holds it) into
    /// `chains` (empty).
    pub(crate) fn pop(
        link: &'a QueueLink,
        stats: &'a QueueStats,
        mem: &'a MemoryTable,
        max: usize,
        chains: &'a mut VecDeque<PoppedChain>,
    ) -> Self {
        debug_assert!(chains.is_empty());
        let mut more_in_ring = false;
        {
            let mut state = link.vring.get_mut();
            let queue = state.get_queue_mut();
            // Translated once for the batch; chains are read over it (see crate::chain).
            let table = DescTable::new(mem, GuestAddress(queue.desc_table()), queue.size());
            match queue.iter(mem.clone()) {
                Ok(mut iter) => {
                    chains.extend(
                        iter.by_ref()
                            .take(max)
                            .map(|c| (Chain::read(&table, c.head_index(), mem), None)),
                    );
                    if chains.len() == max && iter.next().is_some() {
                        // Left for the next batch.
                        iter.go_to_previous_position();
                        more_in_ring = true;
                    }
                }
                // Not ready (stopped), or a guest that made more available than the ring holds.
                Err(e) => debug!(queue = link.index, "nothing popped: {e}"),
            }
            // Counted before the vring lock is released: a ring stopped from now on waits for
            // these chains.
            if !chains.is_empty() {
                link.vring.requests_started(chains.len());
            }
        }
        // Measured (getattr, randread4k at depth 64, no polling): daemon CPU per request −2 %.
        // Prefetching the descriptors as well (heads collected first), or the used-ring
        // entries the batch will fill, saved nothing more.
        chains.iter().for_each(|(chain, _)| chain.prefetch());
        for (chain, header) in chains.iter_mut() {
            *header = peek_in_header(chain);
        }
        let serial = shared_keys(chains.iter().filter_map(|(_, h)| serial_key(h.as_ref()?)));
        Self {
            link,
            stats,
            mem,
            chains,
            serial,
            more_in_ring,
        }
    }

    /// Whether nothing was popped or everything has been taken.
    pub(crate) fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    /// The next chain and its header, in ring order.
    pub(crate) fn next(&mut self) -> Option<PoppedChain> {
        self.chains.pop_front()
    }

    /// Whether the request of `header` shares the inode it locks with another request of the
    /// batch ([`serial_key`]).
    pub(crate) fn serialized(&self, header: Option<&InHeader>) -> bool {
        header
            .and_then(serial_key)
            .is_some_and(|k| self.serial.binary_search(&k).is_ok())
    }

    /// Whether chains wait behind the one last taken: in this batch, or in the ring.
    pub(crate) fn others_waiting(&self) -> bool {
        !self.chains.is_empty() || self.more_in_ring
    }

    /// How many chains wait behind the one last taken, at least: the rest of this batch, and
    /// a whole batch more when the ring held more than this batch.
    pub(crate) fn behind(&self) -> usize {
        self.chains.len() + if self.more_in_ring { MAX_BATCH } else { 0 }
    }
}

impl Drop for Popped<'_> {
    fn drop(&mut self) {
        if self.chains.is_empty() {
            return;
        }
        debug!(
            queue = self.link.index,
            chains = self.chains.len(),
            "returning chains that were not started (EIO)"
        );
        let mut used = UsedBatch::new(self.link, self.stats, self.mem);
        for (chain, _) in self.chains.drain(..) {
            used.push(chain.head_index(), error_reply(&chain, libc::EIO));
        }
    }
}

/// The keys that occur more than once in `keys` (at most [`MAX_BATCH`] of them are looked at),
/// sorted.
fn shared_keys(keys: impl Iterator<Item = u64>) -> SmallVec<[u64; 4]> {
    let mut all: SmallVec<[u64; MAX_BATCH]> = keys.take(MAX_BATCH).collect();
    all.sort_unstable();
    let mut shared = SmallVec::new();
    for pair in all.windows(2) {
        if pair[0] == pair[1] && shared.last() != Some(&pair[0]) {
            shared.push(pair[0]);
        }
    }
    shared
}

/// A chain owned away from its queue thread (see the module docs).
pub(crate) struct Unanswered<H: FuseHandler> {
    ctx: Arc<QueueContext<H>>,
    chain: Option<Chain>,
    /// The reply it gets if dropped unanswered.
    errno: i32,
}

impl<H: FuseHandler> Unanswered<H> {
    /// Takes charge of `chain` of `ctx`'s queue; dropped unanswered it gets `-errno`.
    pub(crate) fn new(ctx: Arc<QueueContext<H>>, chain: Chain, errno: i32) -> Self {
        Self {
            ctx,
            chain: Some(chain),
            errno,
        }
    }

    /// The same, getting `-errno` if dropped unanswered from now on.
    pub(crate) fn with_errno(mut self, errno: i32) -> Self {
        self.errno = errno;
        self
    }

    /// The chain.
    pub(crate) fn chain(&self) -> &Chain {
        self.chain.as_ref().expect("an unanswered chain")
    }

    /// The queue it belongs to.
    pub(crate) fn ctx(&self) -> &Arc<QueueContext<H>> {
        &self.ctx
    }

    /// The chain, for the caller to return itself (the queue thread taking a pooled request
    /// back, whose completion joins its batch).
    pub(crate) fn into_chain(mut self) -> Chain {
        self.chain.take().expect("an unanswered chain")
    }

    /// Returns the chain with `len` reply bytes.
    pub(crate) fn answer(mut self, len: u32) {
        let chain = self.chain.take().expect("an unanswered chain");
        let (link, stats) = (&self.ctx.link, &self.ctx.stats);
        complete_one(link, stats, chain.memory(), chain.head_index(), len);
    }

    /// Returns the chain with a `-errno` reply.
    pub(crate) fn answer_error(mut self, errno: i32) {
        self.errno = errno;
        drop(self);
    }
}

impl<H: FuseHandler> Drop for Unanswered<H> {
    fn drop(&mut self) {
        if let Some(chain) = self.chain.take() {
            let len = error_reply(&chain, self.errno);
            let (link, stats) = (&self.ctx.link, &self.ctx.stats);
            complete_one(link, stats, chain.memory(), chain.head_index(), len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shared_keys;

    #[test]
    fn shared_keys_are_those_seen_twice_or_more_once_each() {
        let keys = |v: &[u64]| shared_keys(v.iter().copied()).to_vec();
        assert_eq!(keys(&[]), Vec::<u64>::new());
        assert_eq!(keys(&[7, 5, 9]), Vec::<u64>::new());
        assert_eq!(keys(&[7, 5, 7, 9, 5, 7]), vec![5, 7]);
        assert_eq!(keys(&[3; 40]), vec![3], "more than a batch: still once");
    }
}
