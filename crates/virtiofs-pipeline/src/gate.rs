//! FUSE_INIT / FUSE_DESTROY exclusion.
//!
//! As in the 2019 QEMU series (`init_rwlock`): session-changing requests take the write side, all
//! others the read side for as long as they run. DESTROY therefore waits for every in-flight
//! request, and nothing runs while INIT sets the session up.
//!
//! **The read side writes nothing shared.** A request counts itself in its queue's own reader
//! slot ([`SessionGate::for_queue`]: a cache line only that queue's threads touch) and reads
//! one flag and the session's state, which only INIT and DESTROY write: a "big-reader" lock.
//! The write side takes a tokio `RwLock` (which orders writers, and the readers that arrive
//! while one is pending: a queue task waiting for it yields instead of blocking its thread),
//! raises the flag, and waits until every slot is empty. A request that finds the flag raised
//! takes the tokio lock's read side instead, and so waits behind the writer; the writer
//! publishes the session's new state before lowering the flag.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use virtiofs_fuse::abi::{InHeader, Opcode};

use crate::request::is_forget;

/// State of the FUSE session, changed only by INIT and DESTROY.
#[derive(Debug, Default)]
pub struct Session {
    /// An INIT succeeded and no DESTROY followed it.
    pub initialized: bool,
    /// Completed INITs (a remount after DESTROY makes it 2).
    pub inits: u64,
    /// Sessions ended without a DESTROY because their driver went away (an INIT in a live
    /// session, or a device reset from the frontend).
    pub abandoned: u64,
}

impl Session {
    /// Ends a live session whose driver is gone, releasing what it holds through `end`; `false`
    /// (and `end` not called) when there was no session. Must run with no other request in
    /// flight: the caller holds the gate's write side.
    pub fn abandon(&mut self, end: impl FnOnce()) -> bool {
        if !self.initialized {
            return false;
        }
        end();
        self.initialized = false;
        self.abandoned += 1;
        true
    }
}

/// What the readers of every slot read: written only by a writer.
#[derive(Default)]
struct Flag {
    /// A writer holds the tokio lock's write side and waits for, or excludes, fast readers.
    closed: AtomicBool,
    /// The session's state as the last writer left it.
    initialized: AtomicBool,
    inits: AtomicU64,
    /// Woken when a fast reader leaves while `closed` is set.
    drained: Notify,
}

impl Flag {
    /// Publishes `session` for fast readers and lets them in again.
    fn open(&self, session: &Session) {
        self.initialized.store(session.initialized, SeqCst);
        self.inits.store(session.inits, SeqCst);
        self.closed.store(false, SeqCst);
    }
}

/// The fast readers of one queue, on a cache line of their own.
#[repr(align(128))]
struct Slot {
    readers: AtomicUsize,
    flag: Arc<Flag>,
}

/// The lock every request passes through. Clones share it; [`SessionGate::for_queue`] gives a
/// queue a reader slot of its own.
#[derive(Clone)]
pub struct SessionGate {
    lock: Arc<RwLock<Session>>,
    flag: Arc<Flag>,
    slots: Arc<Mutex<Vec<Arc<Slot>>>>,
    slot: Arc<Slot>,
}

impl Default for SessionGate {
    fn default() -> Self {
        let flag = Arc::new(Flag::default());
        let slot = Arc::new(Slot {
            readers: AtomicUsize::new(0),
            flag: flag.clone(),
        });
        Self {
            lock: Arc::default(),
            flag,
            slots: Arc::new(Mutex::new(vec![slot.clone()])),
            slot,
        }
    }
}

/// Permission to run one request; dropped when the request completes.
pub enum Pass {
    /// Any request but INIT/DESTROY.
    Shared(SharedPass),
    /// INIT or DESTROY: nothing else runs meanwhile.
    Exclusive(ExclusivePass),
}

/// The read side, as a request holds it.
pub struct SharedPass(Shared);

enum Shared {
    /// Counted in its queue's slot (no writer was there).
    Fast {
        slot: Arc<Slot>,
        initialized: bool,
        inits: u64,
    },
    /// The tokio lock's read side (a writer was there: taken once it left).
    Locked(OwnedRwLockReadGuard<Session>),
}

impl Drop for SharedPass {
    fn drop(&mut self) {
        if let Shared::Fast { slot, .. } = &self.0 {
            leave(slot);
        }
    }
}

/// A fast reader leaves `slot`; wakes a writer waiting for it.
fn leave(slot: &Slot) {
    slot.readers.fetch_sub(1, SeqCst);
    if slot.flag.closed.load(SeqCst) {
        slot.flag.drained.notify_one();
    }
}

/// The write side, as INIT or DESTROY holds it; dropping it publishes the session.
pub struct ExclusivePass {
    guard: OwnedRwLockWriteGuard<Session>,
    flag: Arc<Flag>,
}

impl Drop for ExclusivePass {
    fn drop(&mut self) {
        self.flag.open(&self.guard);
    }
}

impl Pass {
    /// Whether the session was initialized when this pass was granted.
    pub fn initialized(&self) -> bool {
        match self {
            Pass::Shared(SharedPass(Shared::Fast { initialized, .. })) => *initialized,
            Pass::Shared(SharedPass(Shared::Locked(s))) => s.initialized,
            Pass::Exclusive(x) => x.guard.initialized,
        }
    }

    /// Completed INITs when this pass was granted: which session a request belongs to.
    pub fn inits(&self) -> u64 {
        match self {
            Pass::Shared(SharedPass(Shared::Fast { inits, .. })) => *inits,
            Pass::Shared(SharedPass(Shared::Locked(s))) => s.inits,
            Pass::Exclusive(x) => x.guard.inits,
        }
    }

    /// The session, when this is an exclusive pass (INIT or DESTROY).
    pub fn session_mut(&mut self) -> Option<&mut Session> {
        match self {
            Pass::Shared(_) => None,
            Pass::Exclusive(x) => Some(&mut x.guard),
        }
    }

    /// Records the outcome of an INIT or DESTROY (no effect on a shared pass).
    pub fn record(&mut self, opcode: u32, succeeded: bool) {
        if let Some(session) = self.session_mut() {
            if opcode == Opcode::Init as u32 && succeeded {
                session.initialized = true;
                session.inits += 1;
            } else if opcode == Opcode::Destroy as u32 {
                session.initialized = false;
            }
        }
    }
}

/// A pass that is not free now ([`SessionGate::try_pass_for`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session gate is held")]
pub struct GateBusy;

/// Whether `opcode` changes the session and so needs the write side.
pub fn is_exclusive(opcode: u32) -> bool {
    opcode == Opcode::Init as u32 || opcode == Opcode::Destroy as u32
}

impl SessionGate {
    /// A gate for a session not yet initialized.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same gate, with a reader slot of its own: one per queue, so that the requests of
    /// different queues count themselves on different cache lines.
    pub fn for_queue(&self) -> Self {
        let slot = Arc::new(Slot {
            readers: AtomicUsize::new(0),
            flag: self.flag.clone(),
        });
        self.slots.lock().unwrap().push(slot.clone());
        Self {
            slot,
            ..self.clone()
        }
    }

    /// Waits until a request with `opcode` may run.
    pub async fn enter(&self, opcode: u32) -> Pass {
        if is_exclusive(opcode) {
            let guard = self.lock.clone().write_owned().await;
            self.flag.closed.store(true, SeqCst);
            while self.readers() > 0 {
                self.flag.drained.notified().await;
            }
            Pass::Exclusive(ExclusivePass {
                guard,
                flag: self.flag.clone(),
            })
        } else {
            match self.try_fast() {
                Some(pass) => pass,
                None => Pass::Shared(SharedPass(Shared::Locked(
                    self.lock.clone().read_owned().await,
                ))),
            }
        }
    }

    /// The pass a request with FUSE header `header` runs under: `None` for FORGET and
    /// BATCH_FORGET (they need no session and must never wait behind DESTROY) and for a chain
    /// without a header; otherwise waits as [`SessionGate::enter`] does.
    pub async fn pass_for(&self, header: Option<&InHeader>) -> Option<Pass> {
        match header {
            Some(h) if !is_forget(h.opcode) => Some(self.enter(h.opcode).await),
            _ => None,
        }
    }

    /// [`SessionGate::pass_for`] without waiting: `Err(GateBusy)` when the request would have
    /// to wait (an INIT or DESTROY runs or waits, or this is one and requests run).
    pub fn try_pass_for(&self, header: Option<&InHeader>) -> Result<Option<Pass>, GateBusy> {
        let Some(h) = header.filter(|h| !is_forget(h.opcode)) else {
            return Ok(None);
        };
        let pass = if is_exclusive(h.opcode) {
            let guard = self.lock.clone().try_write_owned().map_err(|_| GateBusy)?;
            self.flag.closed.store(true, SeqCst);
            if self.readers() > 0 {
                // Requests run: let them (and those that saw the flag) go on.
                self.flag.open(&guard);
                return Err(GateBusy);
            }
            Pass::Exclusive(ExclusivePass {
                guard,
                flag: self.flag.clone(),
            })
        } else {
            match self.try_fast() {
                Some(pass) => pass,
                None => {
                    let guard = self.lock.clone().try_read_owned().map_err(|_| GateBusy)?;
                    Pass::Shared(SharedPass(Shared::Locked(guard)))
                }
            }
        };
        Ok(Some(pass))
    }

    /// A read pass counted in this gate's slot, unless a writer is there.
    fn try_fast(&self) -> Option<Pass> {
        let slot = &self.slot;
        // Counted first, then the flag read: a writer raises the flag, then reads the counts,
        // so either it sees this reader or this reader sees its flag.
        slot.readers.fetch_add(1, SeqCst);
        if self.flag.closed.load(SeqCst) {
            leave(slot);
            return None;
        }
        Some(Pass::Shared(SharedPass(Shared::Fast {
            slot: slot.clone(),
            initialized: self.flag.initialized.load(SeqCst),
            inits: self.flag.inits.load(SeqCst),
        })))
    }

    /// Fast readers in every slot.
    fn readers(&self) -> usize {
        let slots = self.slots.lock().unwrap();
        slots.iter().map(|s| s.readers.load(SeqCst)).sum()
    }

    /// Completed INITs so far.
    pub async fn inits(&self) -> u64 {
        self.lock.read().await.inits
    }

    /// Ends the live session, if any, for a device reset: waits (blocking the calling thread,
    /// normally the vhost-user protocol thread) until no request runs, then
    /// [`Session::abandon`]s it. Returns whether a session ended.
    pub fn abandon_blocking(&self, end: impl FnOnce() + Send) -> bool {
        if tokio::runtime::Handle::try_current().is_ok() {
            // `blocking_write` panics on a runtime thread: wait on a plain thread instead.
            return std::thread::scope(|s| {
                s.spawn(|| self.abandon_here(end))
                    .join()
                    .expect("session reset thread")
            });
        }
        self.abandon_here(end)
    }

    fn abandon_here(&self, end: impl FnOnce()) -> bool {
        let mut session = self.lock.blocking_write();
        self.flag.closed.store(true, SeqCst);
        // A device reset is rare and requests are short: a plain poll is enough here.
        while self.readers() > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let ended = session.abandon(end);
        self.flag.open(&session);
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::time::timeout;

    const GETATTR: u32 = Opcode::Getattr as u32;
    const INIT: u32 = Opcode::Init as u32;
    const DESTROY: u32 = Opcode::Destroy as u32;

    #[tokio::test]
    async fn shared_passes_run_together() {
        let gate = SessionGate::new();
        let a = gate.enter(GETATTR).await;
        let b = timeout(Duration::from_secs(1), gate.enter(GETATTR)).await;
        assert!(
            b.is_ok(),
            "a second ordinary request must not wait for the first"
        );
        drop(a);
    }

    #[tokio::test]
    async fn destroy_waits_for_in_flight_requests() {
        let gate = SessionGate::new();
        let in_flight = gate.enter(GETATTR).await;
        let g2 = gate.clone();
        let destroy = tokio::spawn(async move { g2.enter(DESTROY).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !destroy.is_finished(),
            "DESTROY ran while a request was in flight"
        );
        drop(in_flight);
        let pass = timeout(Duration::from_secs(1), destroy)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(pass, Pass::Exclusive(_)));
    }

    #[tokio::test]
    async fn destroy_waits_for_the_requests_of_every_queue_and_new_ones_wait_behind_it() {
        let gate = SessionGate::new();
        let (q1, q2) = (gate.for_queue(), gate.for_queue());
        let mut init = q1.enter(INIT).await;
        init.record(INIT, true);
        drop(init);
        let on_q2 = q2.enter(GETATTR).await;
        assert!(on_q2.initialized(), "INIT published for every queue");
        assert!(
            matches!(
                q1.try_pass_for(Some(&InHeader {
                    opcode: DESTROY,
                    ..Default::default()
                })),
                Err(GateBusy)
            ),
            "DESTROY on queue 1 with a request running on queue 2"
        );
        let q1d = q1.clone();
        let destroy = tokio::spawn(async move {
            let mut p = q1d.enter(DESTROY).await;
            p.record(DESTROY, true);
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !destroy.is_finished(),
            "DESTROY ran beside queue 2's request"
        );
        // A request arriving now waits behind the DESTROY, and sees its outcome.
        let q1r = q1.clone();
        let later = tokio::spawn(async move { q1r.enter(GETATTR).await.initialized() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !later.is_finished(),
            "a new request overtook the waiting DESTROY"
        );
        drop(on_q2);
        timeout(Duration::from_secs(5), destroy)
            .await
            .unwrap()
            .unwrap();
        assert!(
            !later.await.unwrap(),
            "the request after DESTROY has no session"
        );
        assert!(!q2.enter(GETATTR).await.initialized());
    }

    #[tokio::test]
    async fn requests_wait_while_init_runs() {
        let gate = SessionGate::new();
        let init = gate.enter(INIT).await;
        let g2 = gate.clone();
        let req = tokio::spawn(async move { g2.enter(GETATTR).await.initialized() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!req.is_finished(), "a request overlapped INIT");
        let mut init = init;
        init.record(INIT, true);
        drop(init);
        assert!(
            req.await.unwrap(),
            "request after INIT sees the session initialized"
        );
    }

    #[tokio::test]
    async fn init_destroy_init_tracks_the_session() {
        let gate = SessionGate::new();
        assert!(!gate.enter(GETATTR).await.initialized());
        let mut p = gate.enter(INIT).await;
        p.record(INIT, false);
        drop(p);
        assert!(!gate.enter(GETATTR).await.initialized(), "a failed INIT");
        let mut p = gate.enter(INIT).await;
        p.record(INIT, true);
        drop(p);
        assert!(gate.enter(GETATTR).await.initialized());
        let mut p = gate.enter(DESTROY).await;
        p.record(DESTROY, true);
        drop(p);
        assert!(!gate.enter(GETATTR).await.initialized());
        let mut p = gate.enter(INIT).await;
        p.record(INIT, true);
        drop(p);
        assert!(
            gate.enter(GETATTR).await.initialized(),
            "remount after DESTROY"
        );
        assert_eq!(gate.inits().await, 2);
    }

    #[tokio::test]
    async fn abandon_ends_only_a_live_session() {
        let gate = SessionGate::new();
        let mut p = gate.enter(INIT).await;
        let mut ended = 0;
        assert!(
            !p.session_mut().unwrap().abandon(|| ended += 1),
            "no session"
        );
        p.record(INIT, true);
        assert!(p.session_mut().unwrap().abandon(|| ended += 1));
        assert!(!p.initialized());
        assert_eq!(ended, 1);
        drop(p);
        assert!(gate.enter(GETATTR).await.session_mut().is_none());
        assert_eq!(gate.lock.read().await.abandoned, 1);
    }

    #[test]
    fn abandon_blocking_waits_for_requests_in_flight() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let gate = SessionGate::new();
        let (in_flight, ran) = rt.block_on(async {
            let mut p = gate.enter(INIT).await;
            p.record(INIT, true);
            drop(p);
            (
                gate.enter(GETATTR).await,
                Arc::new(std::sync::atomic::AtomicBool::new(false)),
            )
        });
        let (g2, ran2) = (gate.clone(), ran.clone());
        let reset = std::thread::spawn(move || {
            g2.abandon_blocking(|| ran2.store(true, std::sync::atomic::Ordering::SeqCst))
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !ran.load(std::sync::atomic::Ordering::SeqCst),
            "the session ended under a running request"
        );
        drop(in_flight);
        assert!(reset.join().unwrap());
        assert!(ran.load(std::sync::atomic::Ordering::SeqCst));
        assert!(!rt.block_on(gate.enter(GETATTR)).initialized());
    }

    #[tokio::test]
    async fn try_pass_for_never_waits() {
        let header = |opcode| InHeader {
            opcode,
            ..Default::default()
        };
        let gate = SessionGate::new();
        let forget = header(Opcode::Forget as u32);
        let shared = gate.try_pass_for(Some(&header(GETATTR))).unwrap();
        assert!(matches!(shared, Some(Pass::Shared(_))));
        assert_eq!(
            gate.try_pass_for(Some(&header(DESTROY))).err(),
            Some(GateBusy),
            "DESTROY with a request running"
        );
        drop(shared);
        let init = gate.try_pass_for(Some(&header(INIT))).unwrap();
        assert!(matches!(init, Some(Pass::Exclusive(_))));
        assert!(
            gate.try_pass_for(Some(&header(GETATTR))).is_err(),
            "INIT runs"
        );
        assert!(
            gate.try_pass_for(Some(&forget)).unwrap().is_none(),
            "FORGET needs none"
        );
        assert!(gate.try_pass_for(None).unwrap().is_none());
    }

    #[test]
    fn shared_pass_ignores_record() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let gate = SessionGate::new();
            let mut p = gate.enter(GETATTR).await;
            p.record(INIT, true);
            drop(p);
            assert!(!gate.enter(GETATTR).await.initialized());
        });
    }
}
