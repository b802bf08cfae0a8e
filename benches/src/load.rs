//! The load generator over the vhost-user-fs client: client threads (by default one per request
//! queue; `--client-threads`), each keeping its share of `queue_depth` operations in flight on
//! its queue (submit / wait for its own completions / try_take), with a small state machine per
//! in-flight slot for multi-request operations (create-unlink).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::error::Errno;
use vhost_user_fs_client::memory::Allocation;
use vhost_user_fs_client::{
    Error, FsClient, FuseOps, FuseRequest, FuseToken, RawChain, ReadPart, Reply, Token, WritePart,
};

use crate::measure::{Hist, Phase};
use crate::workload::*;

const O_RDONLY: u32 = libc::O_RDONLY as u32;
const O_RDWR: u32 = libc::O_RDWR as u32;
const CREATE_FLAGS: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;

/// A request that takes longer than this is reported as a hung daemon.
const STALL: Duration = Duration::from_secs(10);

/// Guest memory for a cell: room for every in-flight request's buffers.
pub fn memory_bytes(w: Workload, depth: usize) -> u64 {
    let per = match w {
        Workload::SeqRead1m => IO1M as u64 + 8192,
        _ => 3 * 4096 + 4096,
    };
    (64 << 20) + per * depth as u64 * 2
}

/// Node ids and handles set up (synchronously) after INIT.
#[derive(Debug)]
pub struct Session {
    w: Workload,
    file: (u64, u64),
    dir: u64,
    seq_next: AtomicU64,
    name_next: AtomicU64,
    data: Vec<u8>,
}

fn fmt_err(what: &str, e: Error) -> String {
    format!("{what}: {e}")
}

impl Session {
    pub fn open(c: &FsClient, w: Workload) -> Result<Self, String> {
        let lookup = |name: &str| {
            c.lookup(ROOT_ID, name)
                .map(|e| e.nodeid)
                .map_err(|e| fmt_err(&format!("LOOKUP {name}"), e))
        };
        let open = |name: &str, flags: u32| -> Result<(u64, u64), String> {
            let n = lookup(name)?;
            let fh = c
                .open(n, flags)
                .map_err(|e| fmt_err(&format!("OPEN {name}"), e))?
                .fh;
            Ok((n, fh))
        };
        let mut file = (0, 0);
        let mut dir = 0;
        match w {
            Workload::RandRead4k => file = open(RAND_READ_FILE, O_RDONLY)?,
            Workload::RandWrite4k => file = open(RAND_WRITE_FILE, O_RDWR)?,
            Workload::Getattr => file = (lookup(RAND_READ_FILE)?, 0),
            Workload::SeqRead1m => file = open(SEQ_FILE, O_RDONLY)?,
            Workload::Lookup | Workload::LookupMiss | Workload::ReaddirPlus10k => {
                dir = lookup(DIR10K)?
            }
            Workload::CreateUnlink => dir = lookup(CU_DIR)?,
        }
        Ok(Self {
            w,
            file,
            dir,
            seq_next: AtomicU64::new(0),
            name_next: AtomicU64::new(0),
            data: vec![0x5a; IO4K],
        })
    }
}

/// A request in flight: typed, or a READ posted as a raw chain whose data lands in the slot's
/// own guest buffer and is not copied back (only the 16-byte reply header is), so that the
/// client's copying does not dominate the large reads.
#[derive(Debug, Clone, Copy)]
enum InFlight {
    Fuse(FuseToken),
    Read {
        token: Token,
        unique: u64,
        size: u32,
    },
}

impl InFlight {
    fn seq(&self) -> u64 {
        match self {
            InFlight::Fuse(t) => t.token.seq,
            InFlight::Read { token, .. } => token.seq,
        }
    }
}

#[derive(Debug)]
struct Slot {
    tok: Option<InFlight>,
    buf: Option<Allocation>,
    start: Instant,
    stage: u8,
    rng: Rng,
    name: String,
    nodeid: u64,
    fh: u64,
    off: u64,
}

enum Step {
    Next(FuseRequest),
    Done,
}

impl Slot {
    fn first(&mut self, s: &Session) -> FuseRequest {
        self.stage = 0;
        match s.w {
            Workload::RandRead4k => FuseRequest::read(
                s.file.0,
                s.file.1,
                self.rng.offset4k(RAND_FILE_SIZE),
                IO4K as u32,
            ),
            Workload::RandWrite4k => FuseRequest::write(
                s.file.0,
                s.file.1,
                self.rng.offset4k(RAND_FILE_SIZE),
                &s.data,
            ),
            Workload::Getattr => FuseRequest::getattr(s.file.0, None),
            Workload::Lookup => {
                FuseRequest::lookup(s.dir, dir_entry_name(self.rng.below(DIR_ENTRIES as u64)))
            }
            Workload::LookupMiss => {
                FuseRequest::lookup(s.dir, missing_name(self.rng.below(DIR_ENTRIES as u64)))
            }
            Workload::CreateUnlink => {
                self.name = format!("cu-{}", s.name_next.fetch_add(1, Ordering::Relaxed));
                FuseRequest::create(s.dir, &self.name, CREATE_FLAGS, libc::S_IFREG | 0o644, 0)
            }
            Workload::ReaddirPlus10k => {
                FuseRequest::readdirplus(s.dir, self.fh, self.off, READDIR_BUF)
            }
            Workload::SeqRead1m => {
                let chunks = SEQ_FILE_SIZE / IO1M as u64;
                let off = (s.seq_next.fetch_add(1, Ordering::Relaxed) % chunks) * IO1M as u64;
                FuseRequest::read(s.file.0, s.file.1, off, IO1M as u32)
            }
        }
    }

    /// Checks `r` and says what comes next; `forget` is set to a node id to FORGET.
    fn advance(&mut self, s: &Session, r: Reply, forget: &mut Option<u64>) -> Result<Step, Error> {
        match (s.w, self.stage) {
            (Workload::RandRead4k, _) | (Workload::SeqRead1m, _) => {
                unreachable!("reads go out as raw chains")
            }
            (Workload::RandWrite4k, _) => {
                let n = r.written()?;
                if n as usize != IO4K {
                    return Err(Error::BadReply(format!("WRITE wrote {n} bytes")));
                }
                Ok(Step::Done)
            }
            (Workload::Getattr, _) => r.attr().map(|_| Step::Done),
            (Workload::Lookup, _) => r.entry().map(|_| Step::Done),
            (Workload::LookupMiss, _) => match r.error {
                Some(e) if e == Errno::ENOENT => Ok(Step::Done),
                Some(e) => Err(Error::Errno(e)),
                // A negative entry (node id 0) is the other correct answer.
                None => match r.entry()? {
                    e if e.nodeid == 0 => Ok(Step::Done),
                    e => Err(Error::BadReply(format!(
                        "missing name found as node {}",
                        e.nodeid
                    ))),
                },
            },
            (Workload::CreateUnlink, 0) => {
                let (e, o) = r.create()?;
                self.nodeid = e.nodeid;
                self.fh = o.fh;
                self.stage = 1;
                Ok(Step::Next(FuseRequest::write(
                    self.nodeid,
                    self.fh,
                    0,
                    &s.data,
                )))
            }
            (Workload::CreateUnlink, 1) => {
                let n = r.written()?;
                if n as usize != IO4K {
                    return Err(Error::BadReply(format!("WRITE wrote {n} bytes")));
                }
                self.stage = 2;
                Ok(Step::Next(FuseRequest::release(
                    self.nodeid,
                    self.fh,
                    O_RDWR,
                )))
            }
            (Workload::CreateUnlink, 2) => {
                r.empty()?;
                self.stage = 3;
                Ok(Step::Next(FuseRequest::unlink(s.dir, &self.name)))
            }
            (Workload::CreateUnlink, _) => {
                r.empty()?;
                *forget = Some(self.nodeid);
                Ok(Step::Done)
            }
            (Workload::ReaddirPlus10k, _) => {
                let v = r.direntplus()?;
                self.off = v.last().map_or(0, |e| e.dirent.off);
                Ok(Step::Done)
            }
        }
    }
}

/// Whether the workload's requests go out as raw READ chains.
fn raw_read(w: Workload) -> bool {
    matches!(w, Workload::RandRead4k | Workload::SeqRead1m)
}

/// Runs queue `q`'s share of the load: `nslots` operations in flight until the phase says stop,
/// then drains. Returns the latency histogram of the operations completed while measuring.
pub fn queue_worker(
    c: &FsClient,
    s: &Session,
    q: usize,
    nslots: usize,
    seed: u64,
    ph: &Phase,
) -> Result<Hist, String> {
    let mut hist = Hist::default();
    if nslots == 0 {
        return Ok(hist);
    }
    let vq = c.device().queue(q).map_err(|e| e.to_string())?;
    let mem = c.device().memory().clone();
    let mut slots: Vec<Slot> = (0..nslots)
        .map(|i| Slot {
            tok: None,
            buf: None,
            start: Instant::now(),
            stage: 0,
            rng: Rng::new(seed * 1000 + i as u64 + 1),
            name: String::new(),
            nodeid: 0,
            fh: 0,
            off: 0,
        })
        .collect();
    let result = (|| {
        if raw_read(s.w) {
            let size = if s.w == Workload::SeqRead1m {
                IO1M
            } else {
                IO4K
            } as u64;
            for sl in &mut slots {
                sl.buf = Some(
                    mem.alloc(size, 4096)
                        .map_err(|e| fmt_err("guest buffer", e))?,
                );
            }
        }
        if s.w == Workload::ReaddirPlus10k {
            // Each slot lists the directory through a handle of its own, as separate guest
            // processes would.
            for sl in &mut slots {
                sl.fh = c
                    .on_queue(q)
                    .opendir(s.dir, O_RDONLY)
                    .map_err(|e| fmt_err("OPENDIR", e))?
                    .fh;
            }
        }
        run_slots(c, s, q, vq, &mut slots, ph, &mut hist)?;
        if s.w == Workload::ReaddirPlus10k {
            for sl in &slots {
                c.on_queue(q)
                    .releasedir(s.dir, sl.fh)
                    .map_err(|e| fmt_err("RELEASEDIR", e))?;
            }
        }
        Ok(())
    })();
    if result.is_ok() {
        for sl in &mut slots {
            if let Some(b) = sl.buf.take() {
                mem.free(b);
            }
        }
    }
    result.map(|()| hist)
}

fn run_slots(
    c: &FsClient,
    s: &Session,
    q: usize,
    vq: &vhost_user_fs_client::virtqueue::Virtqueue,
    slots: &mut [Slot],
    ph: &Phase,
    hist: &mut Hist,
) -> Result<(), String> {
    let mut by_seq: HashMap<u64, usize> = HashMap::with_capacity(slots.len() * 2);
    let mut forgets: Vec<FuseToken> = Vec::new();
    // Once, not per request: each `Creds::root()` is a getpid.
    let root = vhost_user_fs_client::Creds::root();
    let submit = |sl: &mut Slot, req: &FuseRequest, by_seq: &mut HashMap<u64, usize>, i| {
        let t = if raw_read(s.w) {
            submit_read(c, q, req, sl.buf.expect("allocated"), root.pid)
        } else {
            c.submit(q, req, root).map(InFlight::Fuse)
        }
        .map_err(|e| fmt_err("submit", e))?;
        by_seq.insert(t.seq(), i);
        sl.tok = Some(t);
        Ok::<(), String>(())
    };
    for (i, sl) in slots.iter_mut().enumerate() {
        let req = sl.first(s);
        sl.start = Instant::now();
        submit(sl, &req, &mut by_seq, i)?;
    }
    let mut last_progress = Instant::now();
    loop {
        if ph.failed() {
            return Err("aborted".into());
        }
        // Only this worker's requests: other workers may share the queue (`--client-threads`).
        let ready =
            match vq.wait_any_of(Duration::from_millis(200), |seq| by_seq.contains_key(&seq)) {
                Ok(v) => v,
                Err(Error::Timeout(_)) => {
                    if last_progress.elapsed() > STALL {
                        return Err(format!(
                            "no reply on queue {q} for {} s with {} requests in flight",
                            STALL.as_secs(),
                            by_seq.len()
                        ));
                    }
                    continue;
                }
                Err(e) => return Err(fmt_err("waiting for completions", e)),
            };
        last_progress = Instant::now();
        for t in ready {
            let Some(i) = by_seq.remove(&t.seq) else {
                continue;
            };
            let sl = &mut slots[i];
            let step = match sl.tok.take().expect("slot in flight") {
                InFlight::Read {
                    token,
                    unique,
                    size,
                } => {
                    check_read(c, token, unique, size)
                        .map_err(|e| format!("{}: {e}", s.w.name()))?;
                    Step::Done
                }
                InFlight::Fuse(ft) => {
                    let reply = c
                        .try_take(ft)
                        .map_err(|e| fmt_err("taking a completion", e))?
                        .ok_or_else(|| "a ready completion was not there".to_string())?;
                    let opcode = reply.opcode;
                    let mut forget = None;
                    let step = sl
                        .advance(s, reply, &mut forget)
                        .map_err(|e| format!("{} (opcode {opcode}): {e}", s.w.name()))?;
                    if let Some(n) = forget {
                        let t = c
                            .submit(0, &FuseRequest::forget(n, 1), root)
                            .map_err(|e| fmt_err("FORGET", e))?;
                        forgets.push(t);
                    }
                    step
                }
            };
            match step {
                Step::Next(req) => submit(sl, &req, &mut by_seq, i)?,
                Step::Done => {
                    let now = Instant::now();
                    if ph.measuring() {
                        hist.record(now - sl.start);
                    }
                    if !ph.stopping() {
                        let req = sl.first(s);
                        sl.start = now;
                        submit(sl, &req, &mut by_seq, i)?;
                    }
                }
            }
        }
        if forgets.len() >= 64 {
            reap_forgets(c, &mut forgets, false)?;
        }
        if ph.stopping() && by_seq.is_empty() {
            break;
        }
    }
    reap_forgets(c, &mut forgets, true)
}

/// Takes the FORGET chains the daemon has returned (all of them if `all`).
fn reap_forgets(c: &FsClient, v: &mut Vec<FuseToken>, all: bool) -> Result<(), String> {
    let mut keep = Vec::with_capacity(v.len());
    for t in v.drain(..) {
        let r = if all {
            c.wait(t).map(Some)
        } else {
            c.try_take(t)
        };
        match r.map_err(|e| fmt_err("FORGET completion", e))? {
            Some(_) => {}
            None => keep.push(t),
        }
    }
    *v = keep;
    Ok(())
}

/// Posts `req` (a READ) as a raw chain: header and arguments, a 16-byte reply header read
/// back, and the data into `buf` (not read back).
fn submit_read(
    c: &FsClient,
    q: usize,
    req: &FuseRequest,
    buf: Allocation,
    pid: u32,
) -> Result<InFlight, Error> {
    let unique = c.next_unique();
    let args: Vec<u8> = req.args.concat();
    let mut bytes = Vec::with_capacity(40 + args.len());
    bytes.extend_from_slice(&((40 + args.len()) as u32).to_le_bytes());
    bytes.extend_from_slice(&req.opcode.to_le_bytes());
    bytes.extend_from_slice(&unique.to_le_bytes());
    bytes.extend_from_slice(&req.nodeid.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // uid
    bytes.extend_from_slice(&0u32.to_le_bytes()); // gid
    bytes.extend_from_slice(&pid.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 4]); // total_extlen, padding
    bytes.extend_from_slice(&args);
    let size = buf.len as u32;
    let chain = RawChain {
        readable: vec![ReadPart::Bytes(bytes)],
        writable: vec![
            WritePart::Len(16),
            WritePart::Raw {
                addr: buf.addr.0,
                len: size,
            },
        ],
        indirect: true,
    };
    let token = c.device().submit_raw(q, &chain)?;
    Ok(InFlight::Read {
        token,
        unique,
        size,
    })
}

/// Checks the reply header of a raw READ: no error, the full size returned.
fn check_read(c: &FsClient, token: Token, unique: u64, size: u32) -> Result<(), String> {
    let comp = c
        .device()
        .try_take(token)
        .map_err(|e| fmt_err("taking a completion", e))?
        .ok_or_else(|| "a ready completion was not there".to_string())?;
    let h = comp.written.first().map(Vec::as_slice).unwrap_or(&[]);
    if h.len() < 16 {
        return Err("READ: no reply header".into());
    }
    let len = u32::from_le_bytes(h[0..4].try_into().expect("4"));
    let error = i32::from_le_bytes(h[4..8].try_into().expect("4"));
    let uniq = u64::from_le_bytes(h[8..16].try_into().expect("8"));
    if uniq != unique {
        return Err(format!("READ: reply unique {uniq} for {unique}"));
    }
    if error != 0 {
        return Err(format!("READ: FUSE error {}", -error));
    }
    if len != comp.used_len || len != 16 + size {
        return Err(format!(
            "READ of {size}: header len {len}, used len {}",
            comp.used_len
        ));
    }
    Ok(())
}
