//! The harnesses behind the fuzz targets of async-virtiofsd (see `fuzz/README.md`).
//!
//! [`decoder::run_fuse_decoder`] (target `fuse_decoder`) drives our FUSE server alone over a
//! filesystem that does nothing; see [`decoder`].
//!
//! [`run_request_pipeline`] (target `request_pipeline`) plays a guest: for each request of the
//! input it lays a FUSE message out in a descriptor chain in guest memory ([`ring`]), pops the
//! chain with `virtio-queue` and runs it through [`virtiofs_pipeline::serve_chain`] — what a
//! queue task runs per chain — over the daemon's real [`Share`] (our FUSE server over our
//! passthrough filesystem) on a temporary directory ([`sandbox`]), then completes it on the used
//! ring. It asserts:
//!
//! - no panic;
//! - the used length never exceeds the chain's writable bytes;
//! - a reply's header `len` equals the used length, its `unique` is the request's, its `error` is
//!   0 or a negative errno, and an error reply is a bare header; FORGETs get no reply;
//! - a request with a header gets a reply when its chain has room for one;
//! - the thread's credentials are root's again after each request;
//! - no file descriptor is leaked once the share is dropped;
//! - nothing outside the shared directory changed (sentinel file, its directory, a directory
//!   beside the share), though the share holds symlinks pointing there.

pub mod decoder;
pub mod decoder_fs;
pub mod decoder_input;
pub mod decoder_seeds;
pub mod format_all;
pub mod input;
pub mod ring;
pub mod sandbox;
pub mod seeds;

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use virtiofs_fuse::abi::{EntryOut, InHeader, Opcode, OutHeader};
use virtiofs_passthrough::{CacheMode, IdMap, IdMaps, InodeFileHandles, Share, ShareOptions};
use virtiofs_pipeline::chain::total_len;
use virtiofs_pipeline::request::{is_forget, peek_in_header, read_reply_prefix, IN_HEADER_LEN};
use virtiofs_pipeline::{serve_chain, QueueStats, SessionGate};
use vm_memory::ByteValued;

use input::{Input, Request, Special};
use ring::{Desc, Ring, BUF_START, MEM_END};
use sandbox::Sandbox;

const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();
const ENTRY_OUT_LEN: usize = std::mem::size_of::<EntryOut>();
/// uid and gid of [`input::UNPRIVILEGED`] requests.
const GUEST_USER: u32 = 1000;
/// FALLOCATE lengths are capped (the harness's own safety, not the daemon's: a guest could fill
/// the host's disk, which is a quota question, not a decoding one).
const FALLOCATE_MAX: u64 = 1 << 20;

/// Node ids and file handles the server returned during one input.
#[derive(Default)]
struct Learned {
    nodes: Vec<u64>,
    handles: Vec<u64>,
}

impl Learned {
    fn push(v: &mut Vec<u64>, x: u64) {
        if v.len() < 64 && !v.contains(&x) {
            v.push(x);
        }
    }
}

struct State {
    ring: Ring,
    sandbox: Sandbox,
    fds: Vec<(String, String)>,
    euid: u32,
    egid: u32,
    /// `FUZZ_VERBOSE` set: print every request and its outcome to stderr.
    verbose: bool,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs one input of the `request_pipeline` target (any byte string).
pub fn run_request_pipeline(data: &[u8]) {
    let input = Input::parse(data);
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let state = s.get_or_insert_with(State::new);
        state.run(&input);
    });
}

impl State {
    fn new() -> State {
        sandbox::limit_file_size();
        let sandbox = Sandbox::new();
        // Warm up: whatever the library opens once per process is not a leak.
        drop(Share::open(&share_options(sandbox.share(), 0)).expect("open the share"));
        State {
            ring: Ring::new(),
            sandbox,
            fds: sandbox::open_fds(),
            // SAFETY: plain getters.
            euid: unsafe { libc::geteuid() },
            egid: unsafe { libc::getegid() },
            verbose: std::env::var_os("FUZZ_VERBOSE").is_some(),
        }
    }

    fn run(&mut self, input: &Input) {
        self.ring.reset();
        self.sandbox.rebuild_share();
        let share = Share::open(&share_options(self.sandbox.share(), input.options))
            .expect("open the share");
        let gate = SessionGate::new();
        let stats = QueueStats::default();
        let mut learned = Learned::default();
        for (i, req) in input.requests.iter().enumerate() {
            self.request(&share, &gate, &stats, &mut learned, req, i as u64 + 1);
        }
        drop(share);
        let fds = sandbox::open_fds();
        if fds.len() != self.fds.len() {
            panic!(
                "file descriptors leaked:\nbefore {:?}\nafter  {fds:?}",
                self.fds
            );
        }
        if let Err(e) = self.sandbox.check() {
            panic!("{e}");
        }
    }

    fn request(
        &mut self,
        share: &Share,
        gate: &SessionGate,
        stats: &QueueStats,
        learned: &mut Learned,
        req: &Request,
        unique: u64,
    ) {
        let msg = message(req, unique, learned);
        let (descs, bent_writable) = self.layout(req, &msg);
        let Some(chain) = self.ring.post(&descs, req.flags & input::INDIRECT != 0) else {
            panic!("a posted chain was not popped");
        };
        let head = chain.head_index();
        let writable = total_len(chain.writable());
        let readable_ok = chain.readable().iter().all(|d| {
            d.addr
                .0
                .checked_add(u64::from(d.len))
                .is_some_and(|end| end <= MEM_END)
        });

        // What the queue task does per chain.
        let header = peek_in_header(&chain);
        let mut pass = block_on(gate.pass_for(header.as_ref()));
        let len = serve_chain(share, &chain, header, pass.as_mut(), stats, 1);
        drop(pass);

        assert!(
            u64::from(len) <= writable,
            "used length {len} > {writable} writable bytes"
        );
        // SAFETY: plain getters.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!(
            (euid, egid),
            (self.euid, self.egid),
            "credentials not restored"
        );

        if self.verbose {
            let mut out = [0u8; OUT_HEADER_LEN];
            let error = (len as usize >= OUT_HEADER_LEN && read_reply_prefix(&chain, &mut out))
                .then(|| out_header(&out).error);
            eprintln!(
                "request {unique}: opcode {:?} node {:?} used {len} error {error:?}",
                header.map(|h| h.opcode),
                header.map(|h| h.nodeid)
            );
        }
        if let Some(h) = header {
            self.check_reply(
                &chain,
                &h,
                len,
                writable,
                bent_writable,
                readable_ok,
                learned,
            );
        } else {
            assert_eq!(len, 0, "a reply to a chain without a FUSE header");
        }
        assert_eq!(self.ring.complete(head, len), len);
    }

    #[allow(clippy::too_many_arguments)]
    fn check_reply(
        &self,
        chain: &virtiofs_pipeline::Chain,
        h: &InHeader,
        len: u32,
        writable: u64,
        bent_writable: bool,
        readable_ok: bool,
        learned: &mut Learned,
    ) {
        // Our server answers INTERRUPT (ENOSYS); NOTIFY_REPLY answers a notification, unanswered.
        let no_reply = is_forget(h.opcode) || h.opcode == Opcode::NotifyReply as u32;
        if is_forget(h.opcode) {
            assert_eq!(len, 0, "a reply to a FORGET");
        }
        if len == 0 {
            // Every request that expects a reply must get one if it fits.
            let fits = !bent_writable && readable_ok && writable >= OUT_HEADER_LEN as u64;
            assert!(
                no_reply || !fits,
                "no reply to opcode {} with {writable} writable bytes",
                h.opcode
            );
            return;
        }
        assert!(
            len as usize >= OUT_HEADER_LEN,
            "used length {len} < reply header"
        );
        if bent_writable {
            return; // the reply may have overwritten itself; only the length is checked
        }
        let mut buf = [0u8; OUT_HEADER_LEN + ENTRY_OUT_LEN + 16];
        let n = (len as usize).min(buf.len());
        assert!(
            read_reply_prefix(chain, &mut buf[..n]),
            "reply not readable"
        );
        let out = out_header(&buf);
        assert_eq!(out.len, len, "reply header len != used length");
        assert_eq!(out.unique, h.unique, "reply unique != request unique");
        assert!(
            out.error == 0 || (-4095..=-1).contains(&out.error),
            "reply error {} is not 0 or a negative errno",
            out.error
        );
        if out.error != 0 {
            assert_eq!(len as usize, OUT_HEADER_LEN, "an error reply with a body");
            return;
        }
        // Learn node ids and file handles for later requests of this input.
        let at = |off: usize| {
            (n >= off + 8).then(|| u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap()))
        };
        let op = h.opcode;
        let entry = [
            Opcode::Lookup,
            Opcode::Symlink,
            Opcode::Mknod,
            Opcode::Mkdir,
        ]
        .iter()
        .chain(&[Opcode::Link, Opcode::Create])
        .any(|o| *o as u32 == op);
        if entry {
            if let Some(node) = at(OUT_HEADER_LEN).filter(|&n| n != 0) {
                Learned::push(&mut learned.nodes, node);
            }
        }
        let fh = if op == Opcode::Open as u32 || op == Opcode::Opendir as u32 {
            at(OUT_HEADER_LEN)
        } else if op == Opcode::Create as u32 {
            at(OUT_HEADER_LEN + ENTRY_OUT_LEN)
        } else {
            None
        };
        if let Some(fh) = fh {
            Learned::push(&mut learned.handles, fh);
        }
    }

    /// The descriptors of `req` with `msg` written into their buffers; whether a writable
    /// descriptor was bent.
    fn layout(&self, req: &Request, msg: &[u8]) -> (Vec<Desc>, bool) {
        let mut sizes: Vec<u32> = if req.readable.is_empty() {
            vec![msg.len() as u32]
        } else {
            req.readable.iter().map(|&s| u32::from(s)).collect()
        };
        let sum: usize = sizes.iter().map(|&s| s as usize).sum();
        if sum < msg.len() && req.flags & input::DROP_TAIL == 0 {
            sizes.push((msg.len() - sum) as u32);
        }
        let writable: Vec<u32> = match req.nwrite {
            input::WRITE_DEFAULT => vec![4096],
            input::WRITE_NONE => vec![],
            _ => req.writable.iter().map(|&s| u32::from(s)).collect(),
        };
        let mut next = BUF_START;
        let mut descs = Vec::new();
        for (s, write) in sizes
            .iter()
            .map(|&s| (s, false))
            .chain(writable.iter().map(|&s| (s, true)))
        {
            descs.push(Desc {
                addr: next,
                len: s,
                write,
            });
            next += u64::from(s);
        }
        let nr = sizes.len();
        let mut bent_writable = false;
        if req.flags & input::SPECIAL_R != 0 && nr > 0 {
            bend(
                &mut descs,
                usize::from(req.special_r.at) % nr,
                req.special_r,
            );
        }
        if req.flags & input::SPECIAL_W != 0 && !writable.is_empty() {
            let i = nr + usize::from(req.special_w.at) % writable.len();
            bend(&mut descs, i, req.special_w);
            bent_writable = true;
        }
        // The message, padded with zeros to the readable size, then 0xAA in the reply buffers
        // (so a reply the server did not write is not mistaken for zeros).
        let mut done = 0usize;
        for d in &descs {
            let n = d.len.min(0x1_0000) as usize;
            if d.write {
                self.ring.write(d.addr, &vec![0xAA; n]);
            } else {
                let mut piece = vec![0u8; n];
                if done < msg.len() {
                    let k = n.min(msg.len() - done);
                    piece[..k].copy_from_slice(&msg[done..done + k]);
                }
                self.ring.write(d.addr, &piece);
                done += n;
            }
        }
        (descs, bent_writable)
    }
}

/// The reply header at the start of `bytes` (which need not be aligned).
fn out_header(bytes: &[u8]) -> OutHeader {
    let mut h = OutHeader::default();
    h.as_mut_slice().copy_from_slice(&bytes[..OUT_HEADER_LEN]);
    h
}

/// Bends descriptor `i` as `s` says.
fn bend(descs: &mut [Desc], i: usize, s: Special) {
    match s.kind % 4 {
        0 => descs[i].addr = s.value,
        1 => descs[i].addr = MEM_END - (s.value % 0x1000),
        2 => descs[i].addr = descs[0].addr,
        _ => descs[i].len = s.value as u32,
    }
}

/// The FUSE message of `req`.
fn message(req: &Request, unique: u64, learned: &Learned) -> Vec<u8> {
    if req.flags & input::RAW != 0 {
        let mut m = req.args.clone();
        sanitize(&mut m);
        return m;
    }
    let nodeid = match req.node {
        0 => 1,
        n if n < input::NODE_LEARNED_END => {
            let k = usize::from(n - 1);
            learned
                .nodes
                .get(k % learned.nodes.len().max(1))
                .copied()
                .unwrap_or(1)
        }
        0xFF => req.raw_node,
        n => u64::from(n - input::NODE_LEARNED_END),
    };
    let mut args = req.args.clone();
    if req.flags & input::FH != 0 {
        let off = if req.fh & 0x80 != 0 { 8 } else { 0 };
        let k = usize::from(req.fh & 0x7F);
        let fh = match learned.handles.len() {
            0 => k as u64,
            n => learned.handles[k % n],
        };
        if args.len() < off + 8 {
            args.resize(off + 8, 0);
        }
        args[off..off + 8].copy_from_slice(&fh.to_ne_bytes());
    }
    let exact = (IN_HEADER_LEN + args.len()) as i64;
    let len = if req.flags & input::LEN_DELTA != 0 {
        (exact + i64::from(req.len_delta)).clamp(0, i64::from(u32::MAX)) as u32
    } else {
        exact as u32
    };
    let id = if req.flags & input::UNPRIVILEGED != 0 {
        GUEST_USER
    } else {
        0
    };
    let header = InHeader {
        len,
        opcode: req.opcode(),
        unique,
        nodeid,
        uid: id,
        gid: id,
        pid: 1,
        ..Default::default()
    };
    let mut m = header.as_slice().to_vec();
    m.extend(args);
    sanitize(&mut m);
    m
}

/// Keeps the fuzzer from harming the host it runs on (not from finding bugs): no device nodes
/// (MKNOD of a block or character device becomes a regular file) and FALLOCATE lengths capped.
fn sanitize(m: &mut [u8]) {
    if m.len() < IN_HEADER_LEN + 4 {
        return;
    }
    let opcode = u32::from_ne_bytes(m[4..8].try_into().unwrap());
    let args = &mut m[IN_HEADER_LEN..];
    if opcode == Opcode::Mknod as u32 {
        let mode = u32::from_ne_bytes(args[0..4].try_into().unwrap());
        let kind = mode & libc::S_IFMT;
        if kind == libc::S_IFCHR || kind == libc::S_IFBLK {
            let mode = (mode & !libc::S_IFMT) | libc::S_IFREG;
            args[0..4].copy_from_slice(&mode.to_ne_bytes());
        }
    } else if opcode == Opcode::Fallocate as u32 && args.len() >= 24 {
        let length = u64::from_ne_bytes(args[16..24].try_into().unwrap());
        args[16..24].copy_from_slice(&length.min(FALLOCATE_MAX).to_ne_bytes());
    }
}

fn share_options(dir: &std::path::Path, options: u8) -> ShareOptions {
    ShareOptions {
        shared_dir: dir.to_owned(),
        cache: [
            CacheMode::Never,
            CacheMode::Auto,
            CacheMode::Metadata,
            CacheMode::Always,
        ][usize::from(options & 3)],
        xattr: options & 4 != 0,
        writeback: options & 8 != 0,
        readdirplus: options & 16 == 0,
        allow_direct_io: options & 32 != 0,
        xattrmap: None,
        posix_acl: virtiofs_passthrough::Negotiation::Never,
        security_label: virtiofs_passthrough::Negotiation::Never,
        readonly: false,
        killpriv_v2: false,
        allow_mmap: false,
        preserve_noatime: false,
        posix_locks: true,
        flock_locks: true,
        announce_submounts: options & 64 != 0,
        inode_file_handles: if options & 128 != 0 {
            InodeFileHandles::Prefer
        } else {
            InodeFileHandles::Never
        },
        // The quota's paths, with the writeback bit (no bit is left): small limits the
        // harness's requests reach.
        max_inodes: (options & 8 != 0).then_some(64),
        max_bytes: (options & 8 != 0).then_some(1 << 20),
        // The id translation's paths too (guest ids map to themselves: the harness's checks of
        // owners still hold; host ids 1..1000 show as 65534).
        idmaps: if options & 8 != 0 {
            let rules = |r: &[&str]| r.iter().map(|r| r.parse().unwrap()).collect::<Vec<_>>();
            IdMaps {
                uid: IdMap::new(&rules(&["map:1000:1000:1", "squash-host:1:65534:999"])).unwrap(),
                gid: IdMap::new(&rules(&["guest:0:0:1"])).unwrap(),
            }
        } else {
            IdMaps::default()
        },
    }
}

/// Polls a future that must complete at once (an uncontended gate: the harness runs one
/// request at a time).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the session gate blocked with one request in flight"),
    }
}
