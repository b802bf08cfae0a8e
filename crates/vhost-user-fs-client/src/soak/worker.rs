//! One request queue's share of the workload: keeps its part of the depth in flight with
//! [`FsClient::submit`], takes completions as they come and checks each against the model.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::model::{block_content, Model};
use crate::abi::Attr;
use crate::{Creds, Error, FsClient, FuseOps, FuseRequest, FuseToken, Reply, Result, Token};

const CREATE_FLAGS: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;

/// A request in flight and what it is about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Op {
    /// WRITE of generation `gen` into a block.
    Write { slot: usize, block: usize, gen: u64 },
    /// READ of a block; `min_blocks`: the file's acknowledged size when it was sent.
    Read {
        slot: usize,
        block: usize,
        min_blocks: usize,
    },
    /// GETATTR of a file (through its handle).
    Getattr { slot: usize, min_blocks: usize },
    /// LOOKUP of a file by name.
    Lookup { slot: usize, min_blocks: usize },
    /// FSYNC of a file.
    Fsync { slot: usize },
    /// STATFS of the soak directory.
    Statfs,
}

/// What every worker of a phase shares.
pub(crate) struct Ctx<'a> {
    /// The client.
    pub client: &'a FsClient,
    /// The model.
    pub model: &'a Mutex<Model>,
    /// Node id of the soak directory in this session.
    pub dir: u64,
    /// When to stop submitting.
    pub phase_end: Instant,
    /// Wait this long for a completion before declaring the daemon stalled.
    pub timeout: Duration,
    /// Progress printing: the run's start, the last line's time and its interval.
    pub progress: Option<(&'a Mutex<Instant>, Instant, Duration)>,
}

/// A small xorshift generator: the workload is reproducible from the seed.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (> 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Runs the workload on request queue `queue` with up to `depth` requests in flight until the
/// phase ends; then drains (or, with `abandon`, returns what is still in flight at once).
pub(crate) fn run(
    ctx: &Ctx<'_>,
    queue: usize,
    depth: usize,
    rng: &mut Rng,
    abandon: bool,
) -> Result<Vec<Op>> {
    let vq = ctx.client.device().queue(queue)?;
    let mut pending: HashMap<Token, (FuseToken, Op)> = HashMap::new();
    let mut forgets = Vec::new();
    // A slot waiting for its requests to finish before a CREATE / RENAME / UNLINK.
    let mut reserved = None;
    loop {
        let stopping = Instant::now() >= ctx.phase_end;
        if let Some(slot) = reserved {
            if !stopping && namespace_op(ctx, queue, slot, rng)? {
                reserved = None;
            }
        }
        // A frontend that goes away does so with its queues full: fill them, then leave.
        if !stopping || abandon {
            while pending.len() < depth {
                if reserved.is_none() && !stopping && rng.below(200) == 0 {
                    reserved = reserve(ctx, rng);
                }
                let Some((req, op)) = pick(ctx, rng) else {
                    break;
                };
                let req = match (req, op) {
                    (Next::Request(req), _) => req,
                    (
                        Next::Write {
                            nodeid,
                            fh,
                            seed,
                            bs,
                        },
                        Op::Write { slot, block, gen },
                    ) => {
                        // The payload is generated outside the lock.
                        let data = block_content(seed, slot as u32, block as u32, gen, bs);
                        FuseRequest::write(nodeid, fh, (block * bs) as u64, &data)
                    }
                    (Next::Write { .. }, _) => unreachable!("only writes are built late"),
                };
                let t = ctx.client.submit(queue, &req, Creds::root())?;
                pending.insert(t.token, (t, op));
            }
        }
        if stopping && abandon {
            return Ok(pending.into_values().map(|(_, op)| op).collect());
        }
        if pending.is_empty() {
            if stopping {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        for token in vq.wait_any(ctx.timeout)? {
            let Some((ft, op)) = pending.remove(&token) else {
                continue;
            };
            let reply = ctx.client.try_take(ft)?.ok_or(Error::UnknownToken)?;
            complete(ctx, op, reply, &mut forgets);
        }
        if forgets.len() >= 16 {
            ctx.client.batch_forget(&std::mem::take(&mut forgets))?;
        }
        if queue == 1 {
            progress(ctx);
        }
    }
    if !forgets.is_empty() {
        ctx.client.batch_forget(&forgets)?;
    }
    Ok(Vec::new())
}

fn progress(ctx: &Ctx<'_>) {
    let Some((last, start, every)) = ctx.progress else {
        return;
    };
    let mut last = last.lock().unwrap();
    if last.elapsed() < every {
        return;
    }
    *last = Instant::now();
    let m = ctx.model.lock().unwrap();
    let s = &m.stats;
    let ops: u64 = s.ops.values().sum();
    let errors: u64 = s.errors.values().sum();
    eprintln!(
        "soak: {:>6.0} s  {ops:>10} ops  {:>9.1} MiB written  {:>9.1} MiB verified  \
         lost {} corrupted {} errors {errors}",
        start.elapsed().as_secs_f64(),
        s.bytes_written as f64 / (1 << 20) as f64,
        (s.bytes_verified_read + s.bytes_verified_host) as f64 / (1 << 20) as f64,
        s.lost,
        s.corrupted,
    );
}

/// A request picked: built, or a WRITE to build outside the lock.
enum Next {
    Request(FuseRequest),
    Write {
        nodeid: u64,
        fh: u64,
        seed: u64,
        bs: usize,
    },
}

/// Picks the next asynchronous request (marking what it touches busy), or `None` if nothing
/// is free right now.
fn pick(ctx: &Ctx<'_>, rng: &mut Rng) -> Option<(Next, Op)> {
    let mut m = ctx.model.lock().unwrap();
    let kind = rng.below(100);
    if kind < 2 {
        m.stats.op("STATFS");
        return Some((Next::Request(FuseRequest::statfs(ctx.dir)), Op::Statfs));
    }
    let nslots = m.slots.len();
    let slot = (0..8)
        .map(|_| rng.below(nslots))
        .find(|&i| m.slots[i].usable())?;
    let (bs, seed) = (m.block_size, m.seed);
    let gen = m.gen();
    let s = &mut m.slots[slot];
    let (nodeid, fh) = s.handle.expect("usable");
    // Requests may complete in any order: what a READ or GETATTR may see is bounded by what
    // was acknowledged before it was sent.
    let min_blocks = s.size_blocks();
    let (req, op) = match kind {
        2..=5 => (
            Next::Request(FuseRequest::getattr(nodeid, Some(fh))),
            Op::Getattr { slot, min_blocks },
        ),
        6..=8 => (
            Next::Request(FuseRequest::lookup(ctx.dir, s.name())),
            Op::Lookup { slot, min_blocks },
        ),
        9..=10 => (
            Next::Request(FuseRequest::fsync(nodeid, fh, rng.below(2) == 0, false)),
            Op::Fsync { slot },
        ),
        _ => {
            let nblocks = s.gens.len();
            let block = (0..8).map(|_| rng.below(nblocks)).find(|&b| !s.busy[b])?;
            s.busy[block] = true;
            let offset = (block * bs) as u64;
            if kind < 55 {
                let next = Next::Write {
                    nodeid,
                    fh,
                    seed,
                    bs,
                };
                (next, Op::Write { slot, block, gen })
            } else {
                (
                    Next::Request(FuseRequest::read(nodeid, fh, offset, bs as u32)),
                    Op::Read {
                        slot,
                        block,
                        min_blocks,
                    },
                )
            }
        }
    };
    let s = &mut m.slots[slot];
    s.shared += 1;
    m.stats.op(op_name(&op));
    Some((req, op))
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Write { .. } => "WRITE",
        Op::Read { .. } => "READ",
        Op::Getattr { .. } => "GETATTR",
        Op::Lookup { .. } => "LOOKUP",
        Op::Fsync { .. } => "FSYNC",
        Op::Statfs => "STATFS",
    }
}

/// Checks a completion against the model and releases what the request held.
fn complete(ctx: &Ctx<'_>, op: Op, reply: Reply, forgets: &mut Vec<(u64, u64)>) {
    if let Op::Read {
        slot,
        block,
        min_blocks,
    } = op
    {
        if reply.error.is_none() {
            // The block is busy: its expected content cannot change meanwhile.
            let e = ctx.model.lock().unwrap().expect(slot, block);
            let v = e.verdict(min_blocks, &reply.body);
            let mut m = ctx.model.lock().unwrap();
            m.record(&e, v, &reply.body, "READ", false);
            release(&mut m, &op);
            return;
        }
    }
    let mut m = ctx.model.lock().unwrap();
    let m = &mut *m;
    let bs = m.block_size;
    let name = op_name(&op);
    let check_attr = |m: &mut Model, slot: usize, min_blocks: usize, attr: &Attr, via: &str| {
        let s = &m.slots[slot];
        let min = (min_blocks * bs) as u64;
        // Not "in whole blocks": while a WRITE beyond the blocks known complete is being
        // copied, the host kernel may show a size inside its block (a short copy from a page
        // not yet faulted in, then the rest), and a GETATTR or LOOKUP then reports it (seen
        // once in CI: 3,008 bytes into a block). What was complete before the request is
        // checked; the content of every block is checked by READs and at the end on the host.
        if attr.ino != s.ino || attr.size < min {
            let what = format!(
                "{via} {}: ino {} size {}, want ino {} size >= {min}",
                s.name(),
                attr.ino,
                attr.size,
                s.ino
            );
            *m.stats
                .errors
                .entry(format!("{via} wrong attributes"))
                .or_default() += 1;
            m.stats.problem(what);
        }
    };
    let outcome: Result<()> = match op {
        Op::Write { slot, block, gen } => reply.written().map(|n| {
            if n as usize == bs {
                m.slots[slot].gens[block] = gen;
                m.stats.bytes_written += u64::from(n);
            } else {
                let what = format!("WRITE of {bs} bytes wrote {n}");
                *m.stats.errors.entry("WRITE short".into()).or_default() += 1;
                m.stats.problem(what);
                // Which bytes made it is now unknown; the host check will tell.
                m.slots[slot].uncertain[block] = Some(gen);
            }
        }),
        Op::Read {
            slot,
            block,
            min_blocks,
        } => reply
            .ok()
            .map(|data| m.verify(slot, block, min_blocks, &data, "READ", false)),
        Op::Getattr { slot, min_blocks } => reply
            .attr()
            .map(|a| check_attr(m, slot, min_blocks, &a.attr, "GETATTR")),
        Op::Lookup { slot, min_blocks } => reply.entry().map(|e| {
            forgets.push((e.nodeid, 1));
            check_attr(m, slot, min_blocks, &e.attr, "LOOKUP");
        }),
        Op::Fsync { .. } => reply.empty(),
        Op::Statfs => reply.statfs().map(|st| {
            if st.bsize == 0 || st.blocks == 0 {
                *m.stats.errors.entry("STATFS empty".into()).or_default() += 1;
            }
        }),
    };
    if let Err(e) = outcome {
        record_error(m, name, &e);
    }
    release(m, &op);
}

fn record_error(m: &mut Model, op: &'static str, e: &Error) {
    if e.errno().is_none() {
        m.stats.problem(format!("{op}: {e}"));
    }
    m.stats.error(op, e);
}

/// Releases what `op` held in the model.
pub(crate) fn release(m: &mut Model, op: &Op) {
    match *op {
        Op::Write { slot, block, .. } | Op::Read { slot, block, .. } => {
            m.slots[slot].busy[block] = false;
            m.slots[slot].shared -= 1;
        }
        Op::Getattr { slot, .. } | Op::Lookup { slot, .. } | Op::Fsync { slot } => {
            m.slots[slot].shared -= 1;
        }
        Op::Statfs => {}
    }
}

/// A synchronous CREATE (of an absent file), RENAME or UNLINK (+ RELEASE + FORGET) on an idle
/// slot, on this worker's queue.
/// Reserves a slot for a namespace operation: no new request may use it from now on; the
/// operation runs once the requests in flight on it are done ([`namespace_op`]).
fn reserve(ctx: &Ctx<'_>, rng: &mut Rng) -> Option<usize> {
    let mut m = ctx.model.lock().unwrap();
    let n = m.slots.len();
    let slot = (0..8)
        .map(|_| rng.below(n))
        .find(|&i| !m.slots[i].exclusive && (!m.slots[i].present || m.slots[i].handle.is_some()))?;
    m.slots[slot].exclusive = true;
    Some(slot)
}

/// Runs the namespace operation on a reserved `slot` if nothing is in flight on it any more;
/// false if it has to wait.
fn namespace_op(ctx: &Ctx<'_>, queue: usize, slot: usize, rng: &mut Rng) -> Result<bool> {
    let (present, name, handle, unlink) = {
        let m = ctx.model.lock().unwrap();
        let s = &m.slots[slot];
        if s.shared > 0 {
            return Ok(false);
        }
        (s.present, s.name(), s.handle, rng.below(3) == 0)
    };
    let c = ctx.client.on_queue(queue);
    let dir = ctx.dir;
    let mut m_ops: Vec<&'static str> = Vec::new();
    let result = if !present {
        m_ops.push("CREATE");
        c.create(dir, &name, CREATE_FLAGS, libc::S_IFREG | 0o644, 0)
            .map(|(e, o)| Some((e.nodeid, o.fh, e.attr.ino)))
    } else if unlink {
        let (nodeid, fh) = handle.expect("present slots are open");
        m_ops.extend(["UNLINK", "RELEASE", "FORGET"]);
        c.unlink(dir, &name)
            .and_then(|()| c.release(nodeid, fh, 0))
            .and_then(|()| ctx.client.forget(nodeid, 1))
            .map(|()| None)
    } else {
        m_ops.push("RENAME");
        let next = {
            let m = ctx.model.lock().unwrap();
            let mut s = m.slots[slot].clone();
            s.version += 1;
            s.name()
        };
        c.rename(dir, &name, dir, &next).map(|()| None)
    };
    let mut m = ctx.model.lock().unwrap();
    for op in &m_ops {
        m.stats.op(op);
    }
    match result {
        Ok(created) => {
            let s = &mut m.slots[slot];
            match created {
                Some((nodeid, fh, ino)) => {
                    s.present = true;
                    s.handle = Some((nodeid, fh));
                    s.ino = ino;
                    s.clear();
                }
                None if unlink => {
                    s.present = false;
                    s.handle = None;
                    s.clear();
                    s.version += 1;
                }
                None => s.version += 1,
            }
        }
        Err(e) => record_error(&mut m, m_ops[0], &e),
    }
    m.slots[slot].exclusive = false;
    Ok(true)
}
