//! The driver side of a split virtqueue (virtio 1.x, section 2.7), as a guest driver runs it.
//!
//! - Descriptors come from a free list; a chain is written, its head published in the avail ring
//!   and `avail.idx` stored with release ordering, then (after a full fence) the driver decides
//!   whether to kick: with `VIRTIO_RING_F_EVENT_IDX` from `avail_event`, otherwise from
//!   `VRING_USED_F_NO_NOTIFY`.
//! - Completions are consumed from the used ring in order; their descriptors go back to the free
//!   list at once, the request's buffers when its owner takes the completion. With EVENT_IDX the
//!   driver publishes `used_event` after each drain and re-checks the used index (no lost
//!   interrupt).
//! - Indices are free-running `u16`s; ring slots are `idx % size` with a power-of-two size, so the
//!   rings wrap correctly past 65535.
//! - Several threads may submit and wait at once: one waiter at a time sleeps on the call eventfd
//!   and drains the ring for everybody; the others sleep on a condition variable.

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use virtio_bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use vm_memory::{ByteValued, Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};
use crate::memory::{Allocation, GuestMemory};

/// Longest single sleep on the call eventfd; bounds how long a lost wake-up could stall a waiter.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// One buffer of a descriptor chain, as the driver describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// Guest-physical address (need not be inside guest memory: hostile tests use bogus ones).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (`VRING_DESC_F_WRITE`).
    pub write: bool,
}

/// A descriptor as written to the descriptor table, for hostile-input tests: any `flags`
/// (`VRING_DESC_F_*`, e.g. INDIRECT pointing at a bad table) and a free-form `next`. See
/// [`Virtqueue::submit_descriptors`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RawDescriptor {
    /// Guest-physical address (anything at all).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// `VRING_DESC_F_NEXT` / `_WRITE` / `_INDIRECT`, or any other bits.
    pub flags: u16,
    /// With `VRING_DESC_F_NEXT`: an index into the submitted list (mapped to the slot that entry
    /// got); an index past the list is written as is (it then names whatever slot that is).
    pub next: u16,
}

/// Identifies a request submitted on a queue until its completion is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    /// Queue index (0 = hiprio).
    pub queue: u16,
    /// Sequence number, unique on its queue.
    pub seq: u64,
}

/// A used-ring entry with the device-writable bytes read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// `len` from the used element: bytes the device says it wrote.
    pub used_len: u32,
    /// Full contents of each read-back writable buffer, in chain order (empty for chains
    /// submitted without read-back buffers).
    pub written: Vec<Vec<u8>>,
}

impl Completion {
    /// The first `used_len` bytes of the writable buffers, concatenated (clamped to what was
    /// read back).
    pub fn data(&self) -> Vec<u8> {
        let mut out: Vec<u8> = self.written.concat();
        out.truncate(self.used_len as usize);
        out
    }
}

/// What a submitter hands over with its chain.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Allocations freed when the completion is taken.
    pub owned: Vec<Allocation>,
    /// Writable buffers `(addr, len)` read back into [`Completion::written`].
    pub read_back: Vec<(GuestAddress, u32)>,
}

/// Counters of one queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Chains published.
    pub submitted: AtomicU64,
    /// Kicks sent (writes to the kick eventfd).
    pub kicks: AtomicU64,
    /// Kicks suppressed by the device (EVENT_IDX or NO_NOTIFY).
    pub kicks_suppressed: AtomicU64,
    /// Times the call eventfd was found signalled.
    pub calls: AtomicU64,
    /// Used elements consumed.
    pub completed: AtomicU64,
    /// Sleeps on the call eventfd that ended by timeout although the drain that followed found
    /// new used elements: each one is a notification that came late or never (a device that
    /// forgets to notify shows up here, and as 100 ms stalls).
    pub stalls: AtomicU64,
}

/// Ring layout and options of a queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLayout {
    /// Number of descriptors (a power of two, at most 32768).
    pub size: u16,
    /// Guest address of the descriptor table.
    pub desc: GuestAddress,
    /// Guest address of the avail ring.
    pub avail: GuestAddress,
    /// Guest address of the used ring.
    pub used: GuestAddress,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct RawDesc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}
// SAFETY: plain old data of fixed layout with no padding (8 + 4 + 2 + 2 bytes).
unsafe impl ByteValued for RawDesc {}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    descs: Vec<u16>,
    indirect: Option<Allocation>,
}

#[derive(Debug)]
struct Pending {
    buffers: Buffers,
    used_len: Option<u32>,
}

#[derive(Debug)]
struct State {
    free: Vec<u16>,
    next_avail: u16,
    last_used: u16,
    heads: Vec<Option<InFlight>>,
    /// How many of `heads` are `Some` (counted, not scanned: the scan cost the benchmark's
    /// client a third of its time at queue size 1024).
    in_flight: usize,
    pending: HashMap<u64, Pending>,
    /// Sequence numbers of completed requests, in completion order, for
    /// [`Virtqueue::wait_any_of`] (which would otherwise scan every pending request per
    /// wake-up); may hold some already taken by token, dropped when seen.
    done: Vec<u64>,
    next_seq: u64,
    polling: bool,
    broken: Option<String>,
}

/// A driver-side split virtqueue in guest memory.
#[derive(Debug)]
pub struct Virtqueue {
    index: u16,
    layout: QueueLayout,
    rings: [Allocation; 3],
    mem: Arc<GuestMemory>,
    event_idx: bool,
    indirect: bool,
    kick: EventFd,
    call: EventFd,
    state: Mutex<State>,
    cv: Condvar,
    stats: QueueStats,
}

impl Virtqueue {
    /// Allocates and zeroes the rings of a queue of `size` descriptors in `mem`.
    /// `event_idx` / `indirect` say whether those features were negotiated. The ring indices
    /// (avail, used and `used_event`) start at `initial_index`, which the backend must be given
    /// with SET_VRING_BASE (a high value reaches the 16-bit index wrap quickly).
    pub fn new(
        index: u16,
        size: u16,
        mem: Arc<GuestMemory>,
        event_idx: bool,
        indirect: bool,
        initial_index: u16,
    ) -> Result<Self> {
        if size == 0 || !size.is_power_of_two() || size > 32768 {
            return Err(Error::InvalidConfig(format!(
                "queue size {size} is not a power of two in 1..=32768"
            )));
        }
        let n = u64::from(size);
        let desc = mem.alloc(16 * n, 4096)?;
        let avail = mem.alloc(6 + 2 * n, 4096)?;
        let used = mem.alloc(6 + 8 * n, 4096)?;
        for a in [desc, avail, used] {
            mem.write(a.addr, &vec![0u8; a.len as usize])?;
        }
        let base = initial_index.to_le_bytes();
        mem.write(GuestAddress(avail.addr.0 + 2), &base)?;
        mem.write(GuestAddress(avail.addr.0 + 4 + 2 * n), &base)?;
        mem.write(GuestAddress(used.addr.0 + 2), &base)?;
        let efd = |what| EventFd::new(EFD_NONBLOCK).map_err(|e| Error::Io(what, e));
        Ok(Self {
            index,
            layout: QueueLayout {
                size,
                desc: desc.addr,
                avail: avail.addr,
                used: used.addr,
            },
            rings: [desc, avail, used],
            mem,
            event_idx,
            indirect,
            kick: efd("kick eventfd")?,
            call: efd("call eventfd")?,
            state: Mutex::new(State {
                free: (0..size).rev().collect(),
                next_avail: initial_index,
                last_used: initial_index,
                heads: (0..size).map(|_| None).collect(),
                in_flight: 0,
                pending: HashMap::new(),
                done: Vec::new(),
                next_seq: 0,
                polling: false,
                broken: None,
            }),
            cv: Condvar::new(),
            stats: QueueStats::default(),
        })
    }

    /// Queue index (0 = hiprio).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Ring addresses and size.
    pub fn layout(&self) -> QueueLayout {
        self.layout
    }

    /// The kick eventfd (given to the backend with SET_VRING_KICK).
    pub fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    /// The call eventfd (given to the backend with SET_VRING_CALL).
    pub fn call_fd(&self) -> &EventFd {
        &self.call
    }

    /// Counters.
    pub fn stats(&self) -> &QueueStats {
        &self.stats
    }

    /// Whether chains may use indirect descriptor tables.
    pub fn indirect_enabled(&self) -> bool {
        self.indirect
    }

    /// Requests submitted whose completion has not been taken yet.
    pub fn outstanding(&self) -> usize {
        self.state.lock().unwrap().pending.len()
    }

    /// Publishes a chain and kicks the device if it wants a kick. Blocks (up to `timeout`) while
    /// the queue has too few free descriptors. `indirect` puts the chain in an indirect table
    /// (only if the feature was negotiated; otherwise the chain goes direct). `buffers` are
    /// released when the completion is taken.
    pub fn submit(
        &self,
        chain: &[Descriptor],
        indirect: bool,
        buffers: Buffers,
        timeout: Duration,
    ) -> Result<Token> {
        if chain.is_empty() {
            return Err(Error::EmptyChain);
        }
        let indirect = indirect && self.indirect && chain.len() > 1;
        let needed = if indirect { 1 } else { chain.len() };
        if needed > usize::from(self.layout.size) {
            return Err(Error::ChainTooLong(chain.len(), self.layout.size));
        }
        let table = if indirect {
            let t = self.mem.alloc(16 * chain.len() as u64, 16)?;
            if let Err(e) = self.write_table(t.addr, chain, |i| i as u16 + 1) {
                self.mem.free(t);
                return Err(e);
            }
            Some(t)
        } else {
            None
        };
        let deadline = Instant::now() + timeout;
        let st = self.state.lock().unwrap();
        let st = match self.wait_locked(st, deadline, |st| (st.free.len() >= needed).then_some(()))
        {
            Ok((st, ())) => st,
            Err(e) => {
                if let Some(t) = table {
                    self.mem.free(t);
                }
                return Err(e);
            }
        };
        self.publish(st, chain, table, buffers)
    }

    fn publish(
        &self,
        mut st: MutexGuard<'_, State>,
        chain: &[Descriptor],
        table: Option<Allocation>,
        buffers: Buffers,
    ) -> Result<Token> {
        let descs: Vec<u16> = match table {
            Some(_) => vec![st.free.pop().expect("checked")],
            None => (0..chain.len())
                .map(|_| st.free.pop().expect("checked"))
                .collect(),
        };
        let written = match table {
            Some(t) => self.write_desc(
                descs[0],
                RawDesc {
                    addr: t.addr.0,
                    len: 16 * chain.len() as u32,
                    flags: VRING_DESC_F_INDIRECT as u16,
                    next: 0,
                },
            ),
            None => chain.iter().enumerate().try_for_each(|(i, d)| {
                let last = i + 1 == chain.len();
                self.write_desc(
                    descs[i],
                    RawDesc {
                        addr: d.addr,
                        len: d.len,
                        flags: flags_of(d, last),
                        next: if last { 0 } else { descs[i + 1] },
                    },
                )
            }),
        };
        if let Err(e) = written {
            st.free.extend(descs);
            if let Some(t) = table {
                self.mem.free(t);
            }
            return Err(e);
        }
        self.make_available(st, descs, table, buffers)
    }

    /// Publishes `descs` exactly as given in free slots of the descriptor table (head =
    /// `descs[0]`; `next` of a chained entry is an index into `descs`, see [`RawDescriptor`]),
    /// never through an indirect table of ours. For chains no correct driver builds: writable
    /// before readable parts, INDIRECT at a bad table, loops, `next` out of range. Blocks (up to
    /// `timeout`) while fewer than `descs.len()` slots are free. The device may return the chain
    /// with any head id it finds; a well-behaved one returns `descs[0]`'s slot.
    pub fn submit_descriptors(
        &self,
        descs: &[RawDescriptor],
        buffers: Buffers,
        timeout: Duration,
    ) -> Result<Token> {
        if descs.is_empty() {
            return Err(Error::EmptyChain);
        }
        if descs.len() > usize::from(self.layout.size) {
            return Err(Error::ChainTooLong(descs.len(), self.layout.size));
        }
        let deadline = Instant::now() + timeout;
        let st = self.state.lock().unwrap();
        let (mut st, ()) = self.wait_locked(st, deadline, |st| {
            (st.free.len() >= descs.len()).then_some(())
        })?;
        let slots: Vec<u16> = (0..descs.len())
            .map(|_| st.free.pop().expect("checked"))
            .collect();
        let written = descs.iter().zip(&slots).try_for_each(|(d, &slot)| {
            let chained = d.flags & VRING_DESC_F_NEXT as u16 != 0;
            let next = match slots.get(usize::from(d.next)) {
                Some(&s) if chained => s,
                _ => d.next,
            };
            self.write_desc(
                slot,
                RawDesc {
                    addr: d.addr,
                    len: d.len,
                    flags: d.flags,
                    next,
                },
            )
        });
        if let Err(e) = written {
            st.free.extend(slots);
            return Err(e);
        }
        self.make_available(st, slots, None, buffers)
    }

    /// Records the chain headed by `descs[0]` as in flight, publishes it in the avail ring and
    /// kicks the device if it wants a kick.
    fn make_available(
        &self,
        mut st: MutexGuard<'_, State>,
        descs: Vec<u16>,
        table: Option<Allocation>,
        buffers: Buffers,
    ) -> Result<Token> {
        let n = usize::from(self.layout.size);
        let head = descs[0];
        let seq = st.next_seq;
        st.next_seq += 1;
        st.in_flight += 1;
        st.heads[usize::from(head)] = Some(InFlight {
            seq,
            descs,
            indirect: table,
        });
        st.pending.insert(
            seq,
            Pending {
                buffers,
                used_len: None,
            },
        );

        // Publish: ring slot first, then (release) the index.
        let old = st.next_avail;
        let slot = usize::from(old) % n;
        let avail = self.layout.avail.0;
        self.store_u16(
            GuestAddress(avail + 4 + 2 * slot as u64),
            head,
            Ordering::Relaxed,
        )?;
        fence(Ordering::Release);
        let new = old.wrapping_add(1);
        self.store_u16(GuestAddress(avail + 2), new, Ordering::Release)?;
        st.next_avail = new;
        self.stats.submitted.fetch_add(1, Ordering::Relaxed);

        // The device's suppression state must be read after our index store is visible.
        fence(Ordering::SeqCst);
        let used = self.layout.used.0;
        let kick = if self.event_idx {
            let avail_event = self.load_u16(GuestAddress(used + 4 + 8 * n as u64))?;
            need_event(avail_event, new, old)
        } else {
            self.load_u16(GuestAddress(used))? & VRING_USED_F_NO_NOTIFY as u16 == 0
        };
        drop(st);
        if kick {
            self.kick
                .write(1)
                .map_err(|e| Error::Io("kick eventfd", e))?;
            self.stats.kicks.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.kicks_suppressed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Token {
            queue: self.index,
            seq,
        })
    }

    /// Waits (up to `timeout`) for the completion of `token` and takes it.
    pub fn wait(&self, token: Token, timeout: Duration) -> Result<Completion> {
        self.check_token(token)?;
        let deadline = Instant::now() + timeout;
        let st = self.state.lock().unwrap();
        let (st, pending) = self.wait_locked(st, deadline, |st| {
            match st.pending.get(&token.seq).map(|p| p.used_len.is_some()) {
                Some(true) => st.pending.remove(&token.seq),
                _ => None,
            }
        })?;
        drop(st);
        self.finish(pending)
    }

    /// Takes the completion of `token` if it has arrived (drains the used ring first); never
    /// blocks.
    pub fn try_take(&self, token: Token) -> Result<Option<Completion>> {
        self.check_token(token)?;
        let mut st = self.state.lock().unwrap();
        self.drain(&mut st)?;
        let done = st
            .pending
            .get(&token.seq)
            .map(|p| p.used_len.is_some())
            .ok_or(Error::UnknownToken)?;
        let pending = if done {
            st.pending.remove(&token.seq)
        } else {
            None
        };
        drop(st);
        pending.map(|p| self.finish(p)).transpose()
    }

    /// Drains the used ring without blocking; returns how many completions are ready to take.
    pub fn poll(&self) -> Result<usize> {
        let mut st = self.state.lock().unwrap();
        self.drain(&mut st)?;
        Ok(st.pending.values().filter(|p| p.used_len.is_some()).count())
    }

    /// Waits (up to `timeout`) until at least one completion is ready and returns the tokens of
    /// all ready completions (not yet taken).
    pub fn wait_any(&self, timeout: Duration) -> Result<Vec<Token>> {
        self.wait_any_of(timeout, |_| true)
    }

    /// Like [`Self::wait_any`], for the completions whose sequence number `mine` accepts: for
    /// several threads that share the queue, as a guest's processes share a virtqueue, each
    /// waiting for its own requests (the others' completions stay for them to take).
    pub fn wait_any_of(
        &self,
        timeout: Duration,
        mut mine: impl FnMut(u64) -> bool,
    ) -> Result<Vec<Token>> {
        let deadline = Instant::now() + timeout;
        let st = self.state.lock().unwrap();
        let (_st, ready) = self.wait_locked(st, deadline, |st| {
            let mut ready = Vec::new();
            let State { done, pending, .. } = st;
            done.retain(|&seq| {
                if !pending.contains_key(&seq) {
                    return false; // taken by its token
                }
                if !mine(seq) {
                    return true;
                }
                ready.push(Token {
                    queue: self.index,
                    seq,
                });
                false
            });
            (!ready.is_empty()).then_some(ready)
        })?;
        Ok(ready)
    }

    fn check_token(&self, token: Token) -> Result<()> {
        if token.queue != self.index {
            return Err(Error::UnknownToken);
        }
        Ok(())
    }

    fn finish(&self, p: Pending) -> Result<Completion> {
        let used_len = p.used_len.expect("completed");
        let written = p
            .buffers
            .read_back
            .iter()
            .map(|&(addr, len)| self.mem.read(addr, len as usize))
            .collect::<Result<Vec<_>>>();
        for a in p.buffers.owned {
            self.mem.free(a);
        }
        Ok(Completion {
            used_len,
            written: written?,
        })
    }

    /// The leader/follower wait loop: drains, evaluates `ready`, and sleeps (on the call eventfd
    /// if nobody else does, else on the condvar) until `ready` returns `Some` or `deadline`.
    fn wait_locked<'a, R>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        deadline: Instant,
        mut ready: impl FnMut(&mut State) -> Option<R>,
    ) -> Result<(MutexGuard<'a, State>, R)> {
        let start = Instant::now();
        loop {
            self.drain(&mut st)?;
            if let Some(r) = ready(&mut st) {
                return Ok((st, r));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(deadline - start));
            }
            let slice = (deadline - now).min(POLL_SLICE);
            if st.polling {
                st = self.cv.wait_timeout(st, slice).unwrap().0;
            } else {
                st.polling = true;
                drop(st);
                let signalled = wait_readable(&self.call, slice);
                if signalled {
                    // Non-blocking read: resets the counter; EAGAIN if someone raced us.
                    let _ = self.call.read();
                    self.stats.calls.fetch_add(1, Ordering::Relaxed);
                }
                st = self.state.lock().unwrap();
                st.polling = false;
                self.cv.notify_all();
                if !signalled {
                    let before = st.last_used;
                    self.drain(&mut st)?;
                    if st.last_used != before {
                        self.stats.stalls.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Consumes every new used element.
    fn drain(&self, st: &mut State) -> Result<()> {
        if let Some(b) = &st.broken {
            return Err(Error::DeviceBug(b.clone()));
        }
        let n = self.layout.size;
        let used = self.layout.used.0;
        let mut consumed = false;
        loop {
            let used_idx = self.load_u16(GuestAddress(used + 2))?;
            let in_flight = st.in_flight;
            if usize::from(used_idx.wrapping_sub(st.last_used)) > in_flight {
                return Err(self.broken(
                    st,
                    format!(
                        "queue {}: used.idx {} is {} past our last seen {} with only {} in flight",
                        self.index,
                        used_idx,
                        used_idx.wrapping_sub(st.last_used),
                        st.last_used,
                        in_flight
                    ),
                ));
            }
            while st.last_used != used_idx {
                let slot = u64::from(st.last_used % n);
                let elem = GuestAddress(used + 4 + 8 * slot);
                let id: u32 = self.load_u32(elem)?;
                let len: u32 = self.load_u32(GuestAddress(elem.0 + 4))?;
                let inflight = usize::try_from(id)
                    .ok()
                    .filter(|&i| i < usize::from(n))
                    .and_then(|i| st.heads[i].take());
                let Some(inf) = inflight else {
                    return Err(self.broken(
                        st,
                        format!(
                            "queue {}: used element {} has id {id}, not a head in flight",
                            self.index, st.last_used
                        ),
                    ));
                };
                st.in_flight -= 1;
                st.free.extend(inf.descs.iter().rev());
                if let Some(t) = inf.indirect {
                    self.mem.free(t);
                }
                if let Some(p) = st.pending.get_mut(&inf.seq) {
                    p.used_len = Some(len);
                    st.done.push(inf.seq);
                }
                st.last_used = st.last_used.wrapping_add(1);
                self.stats.completed.fetch_add(1, Ordering::Relaxed);
                consumed = true;
            }
            if st.done.len() > 2 * usize::from(n) {
                // Nobody calls wait_any_of: forget what was taken by token.
                let State { done, pending, .. } = &mut *st;
                done.retain(|seq| pending.contains_key(seq));
            }
            if self.event_idx {
                // Ask for an interrupt when the next element is used.
                let used_event = GuestAddress(self.layout.avail.0 + 4 + 2 * u64::from(n));
                self.store_u16(used_event, st.last_used, Ordering::Release)?;
            }
            fence(Ordering::SeqCst);
            if self.load_u16(GuestAddress(used + 2))? == st.last_used {
                break;
            }
        }
        if consumed {
            self.cv.notify_all();
        }
        Ok(())
    }

    fn broken(&self, st: &mut State, msg: String) -> Error {
        st.broken = Some(msg.clone());
        self.cv.notify_all();
        Error::DeviceBug(msg)
    }

    fn write_table(
        &self,
        table: GuestAddress,
        chain: &[Descriptor],
        next: impl Fn(usize) -> u16,
    ) -> Result<()> {
        for (i, d) in chain.iter().enumerate() {
            let last = i + 1 == chain.len();
            let raw = RawDesc {
                addr: d.addr,
                len: d.len,
                flags: flags_of(d, last),
                next: if last { 0 } else { next(i) },
            };
            self.mem
                .mmap()
                .write_obj(raw, GuestAddress(table.0 + 16 * i as u64))
                .map_err(|e| Error::Memory(format!("indirect table: {e}")))?;
        }
        Ok(())
    }

    fn write_desc(&self, index: u16, raw: RawDesc) -> Result<()> {
        let addr = GuestAddress(self.layout.desc.0 + 16 * u64::from(index));
        self.mem
            .mmap()
            .write_obj(raw, addr)
            .map_err(|e| Error::Memory(format!("descriptor {index}: {e}")))
    }

    fn store_u16(&self, addr: GuestAddress, v: u16, order: Ordering) -> Result<()> {
        self.mem
            .mmap()
            .store(v.to_le(), addr, order)
            .map_err(|e| Error::Memory(format!("ring store at {:#x}: {e}", addr.0)))
    }

    fn load_u16(&self, addr: GuestAddress) -> Result<u16> {
        self.mem
            .mmap()
            .load::<u16>(addr, Ordering::Acquire)
            .map(u16::from_le)
            .map_err(|e| Error::Memory(format!("ring load at {:#x}: {e}", addr.0)))
    }

    fn load_u32(&self, addr: GuestAddress) -> Result<u32> {
        self.mem
            .mmap()
            .load::<u32>(addr, Ordering::Acquire)
            .map(u32::from_le)
            .map_err(|e| Error::Memory(format!("ring load at {:#x}: {e}", addr.0)))
    }
}

impl Drop for Virtqueue {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap();
        for h in st.heads.iter_mut().filter_map(Option::take) {
            if let Some(t) = h.indirect {
                self.mem.free(t);
            }
        }
        for (_, p) in st.pending.drain() {
            for a in p.buffers.owned {
                self.mem.free(a);
            }
        }
        for a in self.rings {
            self.mem.free(a);
        }
    }
}

fn flags_of(d: &Descriptor, last: bool) -> u16 {
    let mut f = 0;
    if !last {
        f |= VRING_DESC_F_NEXT as u16;
    }
    if d.write {
        f |= VRING_DESC_F_WRITE as u16;
    }
    f
}

/// `vring_need_event` from the virtio spec: did `new_idx` move past `event` since `old`?
pub fn need_event(event: u16, new_idx: u16, old: u16) -> bool {
    new_idx.wrapping_sub(event).wrapping_sub(1) < new_idx.wrapping_sub(old)
}

/// Waits up to `timeout` for the eventfd to become readable.
fn wait_readable(fd: &EventFd, timeout: Duration) -> bool {
    use std::os::unix::io::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: `pfd` is a valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    r > 0 && pfd.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_matches_the_spec_across_wrap() {
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        assert!(need_event(65535, 0, 65535));
        assert!(need_event(65534, 1, 65533));
        assert!(!need_event(5, 3, 1));
    }

    /// Plays the device by hand: completes chains out of order across many wraps of a 4-entry
    /// ring and checks that descriptors and buffers are recycled.
    #[test]
    fn wraps_and_recycles_with_a_hand_played_device() {
        let mem = Arc::new(GuestMemory::new(&[1 << 20]).unwrap());
        let free0 = mem.free_bytes();
        let q = Virtqueue::new(1, 4, mem.clone(), true, true, 65530).unwrap();
        let l = q.layout();
        let mut dev_avail: u16 = 65530;
        let mut dev_used: u16 = 65530;
        for round in 0..20_000u32 {
            let buf = mem.alloc(8, 8).unwrap();
            let chain = [
                Descriptor {
                    addr: buf.addr.0,
                    len: 4,
                    write: false,
                },
                Descriptor {
                    addr: buf.addr.0 + 4,
                    len: 4,
                    write: true,
                },
            ];
            let t = q
                .submit(
                    &chain,
                    round % 2 == 0,
                    Buffers {
                        owned: vec![buf],
                        read_back: vec![(GuestAddress(buf.addr.0 + 4), 4)],
                    },
                    Duration::from_secs(1),
                )
                .unwrap();
            // Device: pop the avail entry and complete it, writing the round number.
            let m = mem.mmap();
            let idx: u16 = m
                .load(GuestAddress(l.avail.0 + 2), Ordering::Acquire)
                .unwrap();
            assert_eq!(idx, dev_avail.wrapping_add(1));
            m.write_obj(round, GuestAddress(buf.addr.0 + 4)).unwrap();
            complete(&q, &mem, dev_used, dev_avail, 4);
            dev_avail = dev_avail.wrapping_add(1);
            dev_used = dev_used.wrapping_add(1);
            let c = q.wait(t, Duration::from_secs(1)).unwrap();
            assert_eq!(c.data(), round.to_le_bytes());
        }
        assert_eq!(q.outstanding(), 0);
        drop(q);
        assert_eq!(mem.free_bytes(), free0, "everything freed");
    }

    /// Submits a chain of one 8-byte writable buffer.
    fn submit_small(q: &Virtqueue, mem: &GuestMemory) -> Token {
        let buf = mem.alloc(8, 8).unwrap();
        let chain = [Descriptor {
            addr: buf.addr.0,
            len: 8,
            write: true,
        }];
        let bufs = Buffers {
            owned: vec![buf],
            read_back: vec![],
        };
        q.submit(&chain, false, bufs, Duration::from_secs(1))
            .unwrap()
    }

    /// Plays the device: used element `used` is the chain of avail entry `avail` with `len`
    /// bytes written, and the used index says `used + 1` (both indices wrap at 2^16).
    fn complete(q: &Virtqueue, mem: &GuestMemory, used: u16, avail: u16, len: u32) {
        let (l, m) = (q.layout(), mem.mmap());
        let n = u64::from(l.size);
        let head: u16 = m
            .read_obj(GuestAddress(l.avail.0 + 4 + 2 * (u64::from(avail) % n)))
            .unwrap();
        let slot = l.used.0 + 4 + 8 * (u64::from(used) % n);
        m.write_obj(u32::from(head), GuestAddress(slot)).unwrap();
        m.write_obj(len, GuestAddress(slot + 4)).unwrap();
        m.store(
            used.wrapping_add(1),
            GuestAddress(l.used.0 + 2),
            Ordering::Release,
        )
        .unwrap();
    }

    /// A device that publishes more used elements than there are chains in flight is caught,
    /// whatever was completed before (the count of chains in flight is kept, not recomputed).
    #[test]
    fn more_used_than_in_flight_is_a_device_bug() {
        let mem = Arc::new(GuestMemory::new(&[1 << 20]).unwrap());
        let q = Virtqueue::new(1, 8, mem.clone(), true, false, 0).unwrap();
        let (a, _b) = (submit_small(&q, &mem), submit_small(&q, &mem));
        complete(&q, &mem, 0, 0, 0);
        q.wait(a, Duration::from_secs(1)).unwrap();
        // One chain is in flight; the device claims two more used elements.
        mem.mmap()
            .store(3u16, GuestAddress(q.layout().used.0 + 2), Ordering::Release)
            .unwrap();
        let err = q.wait_any_of(Duration::from_secs(1), |_| true).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("with only 1 in flight"), "{msg}");
    }

    /// `wait_any_of` returns the completed requests its filter picks, in completion order,
    /// leaves the others for the next caller and skips one already taken by its token.
    #[test]
    fn wait_any_of_picks_its_own_completions() {
        let mem = Arc::new(GuestMemory::new(&[1 << 20]).unwrap());
        let q = Virtqueue::new(1, 8, mem.clone(), true, false, 0).unwrap();
        let tokens: Vec<Token> = (0..4).map(|_| submit_small(&q, &mem)).collect();
        // The device completes them in the order 3, 1, 0, 2.
        for (used, avail) in [3u16, 1, 0, 2].into_iter().enumerate() {
            complete(&q, &mem, used as u16, avail, 0);
        }
        let seq = |k: usize| tokens[k].seq;
        q.wait(tokens[1], Duration::from_secs(1)).unwrap();
        let odd = |s: u64| s == seq(1) || s == seq(3);
        let mine = q.wait_any_of(Duration::from_secs(1), odd).unwrap();
        assert_eq!(mine, vec![tokens[3]], "1 was taken by its token");
        let rest = q.wait_any_of(Duration::from_secs(1), |_| true).unwrap();
        assert_eq!(rest, vec![tokens[0], tokens[2]], "completion order");
    }
}
