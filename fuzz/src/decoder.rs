//! The `fuse_decoder` harness: our FUSE server ([`virtiofs_fuse::Server`]) alone, over a
//! filesystem that does nothing ([`NullFs`]: no file, no system call, every answer made up from
//! the input), fed requests laid out over guest-memory segments the way a virtqueue chain holds
//! them. No pipeline, no virtqueue, no temporary directory: guest memory is mapped once per
//! process and a server costs nothing to build, so an input runs in microseconds.
//!
//! For each request the harness writes the FUSE header it built and the input's arguments into
//! readable segments, poisons the start of the writable ones, bends one segment if the input
//! says so, and calls [`Server::handle`]. Then it checks (panicking on a violation):
//!
//! - no panic in the server (nor in any log message it formats: every `tracing` record but INFO
//!   is formatted, see [`FormatAll`]);
//! - a request whose header cannot be read gets no reply, one whose header can be read does;
//! - the reply's header `len` equals the bytes the server says it wrote, which never exceed the
//!   writable bytes; `unique` is the request's; `error` is 0 or a negative errno and matches the
//!   server's report; an error reply is a bare header;
//! - FORGET, BATCH_FORGET (and NOTIFY_REPLY) get no reply;
//! - EINVAL for a `len` shorter than the header or longer than the segments, or extensions
//!   longer than the request; ENOSYS for an unknown opcode; EIO for requests before INIT; an
//!   errno for arguments shorter than the opcode's fixed part, and a WRITE larger than its data
//!   or than `max_write`; none of these reaches the filesystem or changes the session;
//! - only INIT starts a session and only a successful one; INIT and DESTROY end it, calling the
//!   filesystem's `destroy` once; INIT agrees on no flag the guest did not offer, none the
//!   server never implements, and a `max_write` within the server's limit;
//! - READ, READDIR(PLUS) and GETXATTR/LISTXATTR replies are no longer than asked; READDIR
//!   entries are well formed and fill the reply exactly; WRITE claims no more than it got;
//! - the filesystem gets WRITE data of exactly `size` bytes, READ buffers of at most `size`,
//!   IOCTL input of exactly `in_size`;
//! - a successful reply leaves the reply buffer after it untouched, and the request's segments
//!   are never written.

use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Once;

use virtiofs_fuse::abi::{self, init_flags as f, InHeader, Opcode, OutHeader};
use virtiofs_fuse::{Limits, Memory, Segment, ServeError, Server, IN_HEADER_LEN, NAME_MAX};
use vm_memory::{ByteValued, GuestAddress, GuestMemory};

use crate::decoder_fs::NullFs;
use crate::decoder_input::{self as di, Config, FsInit, Request};
use crate::format_all::FormatAll;

/// Guest memory: region 0 holds requests, region 1 replies; a hole lies between them.
const R_REGION_END: u64 = 0x2_0000;
const W_REGION: u64 = 0x10_0000;
const W_REGION_END: u64 = 0x21_0000;
/// Where the first segment of each side starts.
const R_BASE: u64 = 0x100;
const W_BASE: u64 = W_REGION + 0x100;
/// Bytes left free after each segment: segments are never contiguous.
const GAP: u64 = 16;
/// Segments per side.
pub const MAX_SEGS: usize = 32;
/// Writable bytes for `WSIZE_BIG`: a 1 MiB READ and its header, and a page more.
const W_BIG: usize = (1 << 20) + 4096 + 16;
/// The byte written at the start of the reply buffer before each request.
const POISON: u8 = 0xA5;
static POISON_BYTES: [u8; CANARY] = [POISON; CANARY];
/// How much of the reply buffer is poisoned (and checked after a successful reply).
const CANARY: usize = 256;
/// Replies read back whole up to this size (larger READDIR replies are only length-checked).
const READBACK_MAX: usize = 64 << 10;
const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();

/// The errnos the filesystem fails with (`ANSWER_ERR`).
pub const ERRNOS: [i32; 9] = [
    libc::ENOSYS,
    libc::ENOENT,
    libc::EIO,
    libc::EACCES,
    libc::ERANGE,
    libc::EINVAL,
    libc::EAGAIN,
    libc::ENOTTY,
    4095, // the largest errno Linux lets through (MAX_ERRNO)
];

/// INIT flags the server never agrees to (what a virtio-fs server has no means for).
const NEVER: u64 = f::SPLICE_WRITE
    | f::SPLICE_MOVE
    | f::SPLICE_READ
    | f::MAP_ALIGNMENT
    | f::HAS_INODE_DAX
    | f::PASSTHROUGH
    | f::OVER_IO_URING
    | f::ALLOW_IDMAP
    | f::INIT_RESERVED;
/// INIT flags the server agrees to whatever the filesystem wants.
const SERVER_FLAGS: u64 = f::BIG_WRITES | f::MAX_PAGES | f::INIT_EXT;

/// The shortest arguments an opcode can be served with: its fixed struct, and a NUL per name.
/// Shorter ones must be refused before they reach the filesystem.
fn min_args(op: Opcode, setxattr_ext: bool) -> usize {
    use std::mem::size_of as size;
    match op {
        Opcode::Lookup | Opcode::Unlink | Opcode::Rmdir | Opcode::Removexattr => 1,
        Opcode::Forget => size::<abi::ForgetIn>(),
        Opcode::Getattr => size::<abi::GetattrIn>(),
        Opcode::Setattr => size::<abi::SetattrIn>(),
        Opcode::Symlink => 2,
        Opcode::Mknod => size::<abi::MknodIn>() + 1,
        Opcode::Mkdir => size::<abi::MkdirIn>() + 1,
        Opcode::Rename => size::<abi::RenameIn>() + 2,
        Opcode::Rename2 => size::<abi::Rename2In>() + 2,
        Opcode::Link => size::<abi::LinkIn>() + 1,
        Opcode::Open | Opcode::Opendir => size::<abi::OpenIn>(),
        Opcode::Read | Opcode::Readdir | Opcode::Readdirplus => size::<abi::ReadIn>(),
        Opcode::Write => size::<abi::WriteIn>(),
        Opcode::Release | Opcode::Releasedir => size::<abi::ReleaseIn>(),
        Opcode::Fsync | Opcode::Fsyncdir => size::<abi::FsyncIn>(),
        Opcode::Setxattr if setxattr_ext => size::<abi::SetxattrIn>() + 1,
        Opcode::Setxattr => abi::COMPAT_SETXATTR_IN_SIZE + 1,
        Opcode::Getxattr => size::<abi::GetxattrIn>() + 1,
        Opcode::Listxattr => size::<abi::GetxattrIn>(),
        Opcode::Flush => size::<abi::FlushIn>(),
        Opcode::Init => 16,
        Opcode::Getlk | Opcode::Setlk | Opcode::Setlkw => size::<abi::LkIn>(),
        Opcode::Access => size::<abi::AccessIn>(),
        Opcode::Create => size::<abi::CreateIn>() + 1,
        Opcode::Tmpfile => size::<abi::CreateIn>(),
        Opcode::Ioctl => size::<abi::IoctlIn>(),
        Opcode::Poll => size::<abi::PollIn>(),
        Opcode::BatchForget => size::<abi::BatchForgetIn>(),
        Opcode::Fallocate => size::<abi::FallocateIn>(),
        Opcode::Lseek => size::<abi::LseekIn>(),
        Opcode::CopyFileRange | Opcode::CopyFileRange64 => size::<abi::CopyFileRangeIn>(),
        Opcode::Syncfs => size::<abi::SyncfsIn>(),
        Opcode::Statx => size::<abi::StatxIn>(),
        Opcode::Readlink
        | Opcode::Statfs
        | Opcode::Interrupt
        | Opcode::Bmap
        | Opcode::Destroy
        | Opcode::NotifyReply
        | Opcode::SetupMapping
        | Opcode::RemoveMapping => 0,
    }
}

/// What a request must get, known before it is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Nothing in particular.
    Any,
    /// Refused before the filesystem sees it: an errno (this one when known).
    Refused(Option<i32>),
}

/// What INIT agreed on, as far as the harness knows.
#[derive(Clone, Copy, Debug, Default)]
struct Session {
    /// False after an INIT whose reply could not be read back (bent reply buffer): the checks
    /// that depend on the agreed flags are off until the next INIT.
    known: bool,
    flags: u64,
    max_write: u32,
}

/// What one request got, for tests and `FUZZ_VERBOSE` replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The opcode in the header the server read (None: no header).
    pub opcode: Option<u32>,
    /// The errno the server reported (None: no header, or no room for a reply).
    pub errno: Option<i32>,
    /// Reply bytes written.
    pub written: usize,
}

struct State {
    /// The outcome of each request of the current input.
    log: Vec<Outcome>,
    /// `FUZZ_VERBOSE` set: print each outcome to stderr.
    verbose: bool,
    /// The server's `max_pages` limit and the filesystem's INIT answer in this input.
    max_pages: u16,
    fs_init: FsInit,
    guest: Guest,
    /// The request's and the reply's segments.
    rsegs: [Segment; MAX_SEGS],
    wsegs: [Segment; MAX_SEGS],
    /// The message of the current request.
    msg: Vec<u8>,
    /// Reply bytes read back.
    reply: Vec<u8>,
}

thread_local! {
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

/// Runs one input of the `fuse_decoder` target (any byte string).
pub fn run_fuse_decoder(data: &[u8]) {
    let (config, requests) = di::parse(data);
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        let state = s.get_or_insert_with(State::new);
        state.run(&config, requests);
    });
}

/// Runs one input like [`run_fuse_decoder`] and returns what each request got.
pub fn run_fuse_decoder_logged(data: &[u8]) -> Vec<Outcome> {
    run_fuse_decoder(data);
    STATE.with(|s| {
        s.borrow()
            .as_ref()
            .map(|s| s.log.clone())
            .unwrap_or_default()
    })
}

impl State {
    fn new() -> State {
        static LOGGER: Once = Once::new();
        LOGGER.call_once(|| {
            // Fails only if a subscriber is set already (another harness in a test binary).
            let _ = tracing::subscriber::set_global_default(FormatAll);
        });
        let zero = Segment {
            addr: GuestAddress(0),
            len: 0,
        };
        State {
            guest: Guest::new(),
            rsegs: [zero; MAX_SEGS],
            wsegs: [zero; MAX_SEGS],
            log: Vec::with_capacity(di::MAX_REQUESTS + 1),
            verbose: std::env::var_os("FUZZ_VERBOSE").is_some(),
            max_pages: 0,
            fs_init: FsInit::All,
            msg: Vec::with_capacity(IN_HEADER_LEN + usize::from(u16::MAX)),
            reply: Vec::with_capacity(READBACK_MAX),
        }
    }

    fn run(&mut self, config: &Config, requests: di::Requests<'_>) {
        let limits = Limits {
            max_pages: config.max_pages(),
            ..Limits::default()
        };
        self.max_pages = config.max_pages();
        self.fs_init = config.fs_init();
        let server = Server::new(NullFs::new(self.fs_init), limits);
        self.log.clear();
        let mut session = Session::default();
        if config.cfg & di::CFG_INIT != 0 {
            let init = abi::InitIn {
                major: if config.cfg & di::CFG_INIT_MAJOR8 != 0 {
                    8
                } else {
                    7
                },
                minor: u32::from(config.minor),
                max_readahead: 0x2_0000,
                flags: config.flags as u32,
                flags2: (config.flags >> 32) as u32,
                ..Default::default()
            };
            let len = if config.cfg & di::CFG_INIT_COMPAT != 0 {
                16
            } else {
                init.as_slice().len()
            };
            let mut r = Request::new(Opcode::Init as u32, Vec::new());
            r.args = Cow::Borrowed(&init.as_slice()[..len]);
            self.request(&server, &mut session, &r, 0);
        }
        for (i, r) in requests.enumerate() {
            self.request(&server, &mut session, &r, i as u64 + 1);
        }
    }

    fn request(
        &mut self,
        server: &Server<NullFs>,
        session: &mut Session,
        r: &Request<'_>,
        index: u64,
    ) {
        let fs = server.filesystem();
        let guest = &self.guest;
        let mem = &guest.mem;

        // The message.
        let exact = (IN_HEADER_LEN + r.args.len()) as i64;
        let len = if r.ctl & di::LEN != 0 {
            (exact + i64::from(r.len_delta)).clamp(0, i64::from(u32::MAX)) as u32
        } else {
            exact as u32
        };
        let header = InHeader {
            len,
            opcode: r.opcode(),
            unique: 0x5eed_0000_0000_0000 | index,
            nodeid: 1,
            uid: 1000,
            gid: 1000,
            pid: 7,
            total_extlen: if r.ctl & di::EXT != 0 { r.extlen } else { 0 },
            padding: 0,
        };
        self.msg.clear();
        self.msg.extend_from_slice(header.as_slice());
        self.msg.extend_from_slice(&r.args);
        let msg = &self.msg[..];
        let (answer, size) = if r.ctl & di::ANSWER != 0 {
            (r.answer, r.size)
        } else {
            (0, 8)
        };
        fs.answer
            .store(u32::from(answer) | u32::from(size) << 8, Relaxed);

        // The segments.
        let (rsplit, wsplit, wsize) = if r.ctl & di::LAYOUT != 0 {
            (r.rsplit, r.wsplit, r.wsize)
        } else {
            (0, 0, 4096)
        };
        let wtotal = if wsize == di::WSIZE_BIG {
            W_BIG
        } else {
            usize::from(wsize)
        };
        let (rsegs, wsegs) = (&mut self.rsegs, &mut self.wsegs);
        let nr = split(msg.len(), rsplit, false, R_BASE, rsegs);
        let nw = split(wtotal, wsplit, true, W_BASE, wsegs);
        assert!(guest.write(&rsegs[..nr], msg), "harness: write request");
        let canary = CANARY.min(wtotal);
        assert!(
            guest.write(&wsegs[..nw], &POISON_BYTES[..canary]),
            "harness: poison reply buffer"
        );
        let (mut bent_r, mut bent_w) = (false, false);
        if r.ctl & di::BEND != 0 {
            let b = r.bend;
            let writable = b.kind & 4 != 0;
            let (segs, n, region_end, other) = if writable {
                (&mut *wsegs, nw, W_REGION_END, R_BASE)
            } else {
                (&mut *rsegs, nr, R_REGION_END, W_BASE)
            };
            if n > 0 {
                let s = &mut segs[usize::from(b.at) % n];
                let v = u64::from(b.value % 4096);
                match b.kind & 3 {
                    0 => s.addr = GuestAddress(region_end - v),
                    1 => s.addr = GuestAddress(u64::MAX - v),
                    2 => s.addr = GuestAddress(other),
                    _ => s.len = b.value,
                }
                if writable {
                    bent_w = true;
                } else {
                    bent_r = true;
                }
            }
        }
        let (rsegs, wsegs) = (&rsegs[..nr], &wsegs[..nw]);
        let avail: usize = rsegs.iter().map(|s| s.len as usize).sum();
        let cap: usize = wsegs.iter().map(|s| s.len as usize).sum();
        let intact = !bent_r && !bent_w;

        // The header as the server will read it.
        let mut hbuf = [0u8; IN_HEADER_LEN];
        let seen = guest.read(rsegs, 0, &mut hbuf).then(|| {
            let mut h = InHeader::default();
            h.as_mut_slice().copy_from_slice(&hbuf);
            h
        });

        let live_before = server.is_live();
        let before = fs.counts();
        let result = server.handle(mem, rsegs, wsegs);
        let outcome = Outcome {
            opcode: seen.map(|h| h.opcode),
            errno: result.as_ref().ok().map(|s| s.errno),
            written: result.as_ref().map_or(0, |s| s.written),
        };
        if self.verbose {
            eprintln!(
                "request {index}: {outcome:?} (sent opcode {})",
                header.opcode
            );
        }
        self.log.push(outcome);
        let after = fs.counts();
        let live_after = server.is_live();
        let calls = after.calls - before.calls;
        let inits = after.inits - before.inits;
        let destroys = after.destroys - before.destroys;

        let Some(h) = seen else {
            assert!(
                matches!(result, Err(ServeError::NoHeader(_))),
                "a request without a readable header was served: {result:?}"
            );
            assert_eq!((calls, inits, destroys), (0, 0, 0));
            assert_eq!(live_after, live_before);
            return;
        };
        if !bent_r {
            assert_eq!(h, header, "harness: header read back");
        }
        let op = Opcode::from_u32(h.opcode);
        let no_reply = op.is_some_and(Opcode::has_no_reply);
        let served = match result {
            Ok(s) => Some(s),
            Err(ServeError::NoHeader(e)) => panic!("header readable, yet NoHeader: {e}"),
            Err(ServeError::Reply { unique, error }) => {
                assert!(!no_reply, "opcode {} has no reply: {error}", h.opcode);
                assert!(
                    cap < OUT_HEADER_LEN || bent_w,
                    "no reply in {cap} writable bytes: {error}"
                );
                assert_eq!(unique, h.unique);
                None
            }
        };

        // What the request must get.
        let body = (h.len as usize)
            .checked_sub(IN_HEADER_LEN)
            .filter(|&b| b <= avail - IN_HEADER_LEN);
        let ext_len = usize::from(h.total_extlen) * 8;
        let args_len = body.and_then(|b| b.checked_sub(ext_len));
        let known = session.known && !bent_r;
        let setxattr_ext = session.flags & f::SETXATTR_EXT != 0;
        let expect = match (args_len, op) {
            (None, _) => Expect::Refused(Some(libc::EINVAL)),
            (Some(_), None) => Expect::Refused((ext_len == 0).then_some(libc::ENOSYS)),
            (Some(_), Some(op)) if op != Opcode::Init && op != Opcode::Destroy && !live_before => {
                Expect::Refused((ext_len == 0).then_some(libc::EIO))
            }
            // Without SETXATTR_EXT known, the shorter (compat) layout is the bound.
            (Some(n), Some(op)) if n < min_args(op, setxattr_ext && session.known) => {
                Expect::Refused(None)
            }
            (Some(n), Some(Opcode::Write)) if known => {
                let w: abi::WriteIn = obj(&msg[IN_HEADER_LEN..]);
                let data = n - std::mem::size_of::<abi::WriteIn>();
                if w.size as usize > data || w.size > session.max_write {
                    Expect::Refused(Some(libc::EINVAL))
                } else {
                    Expect::Any
                }
            }
            _ => Expect::Any,
        };
        if let Expect::Refused(errno) = expect {
            assert_eq!(
                (calls, inits, destroys),
                (0, 0, 0),
                "a refused request reached the filesystem"
            );
            assert_eq!(
                live_after, live_before,
                "a refused request changed the session"
            );
            if let Some(s) = served {
                assert_ne!(s.errno, 0, "refused request answered with success");
                if let Some(e) = errno {
                    assert_eq!(s.errno, e, "refused with the wrong errno");
                }
            }
        }

        // The session. An INIT in a live session ends it before it starts the next one.
        let replaced = op == Some(Opcode::Init) && inits == 1;
        assert_eq!(
            destroys,
            u32::from(live_before && (!live_after || replaced)),
            "destroy calls"
        );
        match op {
            Some(Opcode::Init) => {
                assert!(inits <= 1);
                // A session this INIT started (a refused INIT leaves a live one as it was).
                if live_after && (inits == 1 || !live_before) {
                    assert!(
                        served.is_some_and(|s| s.errno == 0),
                        "a session started by a failed INIT"
                    );
                    assert_eq!(inits, 1, "a session the filesystem was not asked about");
                }
            }
            // Ends the session, unless refused (inconsistent, or a malformed supplementary-group
            // extension: only possible with extensions).
            Some(Opcode::Destroy) => {
                let must_end = args_len.is_some() && ext_len == 0;
                let succeeded = served.is_some_and(|s| s.errno == 0);
                assert!(
                    !live_after || !(must_end || succeeded),
                    "DESTROY left the session live"
                );
                assert_eq!(inits, 0);
            }
            _ => {
                assert_eq!(
                    live_after, live_before,
                    "only INIT and DESTROY change the session"
                );
                assert_eq!(inits, 0);
            }
        }

        let Some(s) = served else { return };
        assert_eq!(s.opcode, op);
        assert!(s.written <= cap, "{} bytes written into {cap}", s.written);
        assert!((0..=4095).contains(&s.errno), "errno {}", s.errno);
        if no_reply {
            assert_eq!(s.written, 0, "a reply to opcode {}", h.opcode);
            return;
        }
        assert!(s.written >= OUT_HEADER_LEN, "reply of {} bytes", s.written);
        let mut obuf = [0u8; OUT_HEADER_LEN];
        assert!(guest.read(wsegs, 0, &mut obuf), "reply header unreadable");
        let out: OutHeader = obj(&obuf);
        assert_eq!(out.len as usize, s.written, "reply len != bytes written");
        assert_eq!(out.unique, h.unique, "reply unique != request unique");
        assert_eq!(out.error, -s.errno, "reply error != the server's errno");
        if s.errno != 0 {
            assert_eq!(s.written, OUT_HEADER_LEN, "an error reply with a body");
        }
        if op == Some(Opcode::Init) && s.errno == 0 {
            *session = Session::default();
        }
        if s.errno != 0 || !intact {
            return;
        }

        // A successful reply, and nothing but it, was written; the request was not.
        if s.written < canary {
            self.reply.resize(canary - s.written, 0);
            assert!(guest.read(wsegs, s.written, &mut self.reply));
            assert!(
                self.reply.iter().all(|&b| b == POISON),
                "bytes written after the {}-byte reply",
                s.written
            );
        }
        self.reply.resize(msg.len().min(avail), 0);
        assert!(guest.read(rsegs, 0, &mut self.reply));
        assert!(
            self.reply[..] == msg[..self.reply.len()],
            "the request was written"
        );

        let body_len = s.written - OUT_HEADER_LEN;
        // The arguments as the server saw them (`len` may have cut them short).
        let args = &msg[IN_HEADER_LEN..];
        let args = &args[..args_len.map_or(0, |n| n.min(args.len()))];
        let Some(op) = op else {
            panic!("success for unknown opcode {}", h.opcode)
        };
        match op {
            Opcode::Init => {
                assert_eq!(body_len, std::mem::size_of::<abi::InitOut>());
                let mut b = [0u8; std::mem::size_of::<abi::InitOut>()];
                assert!(guest.read(wsegs, OUT_HEADER_LEN, &mut b));
                let offered: abi::InitIn = obj(args);
                *session = self.check_init(&offered, &obj(&b), live_after);
            }
            Opcode::Read => {
                let a: abi::ReadIn = obj(args);
                assert!(body_len <= a.size as usize, "READ reply beyond size");
            }
            Opcode::Readdir | Opcode::Readdirplus => {
                let a: abi::ReadIn = obj(args);
                assert!(body_len <= a.size as usize, "READDIR reply beyond size");
                if body_len <= READBACK_MAX {
                    self.reply.resize(body_len, 0);
                    assert!(guest.read(wsegs, OUT_HEADER_LEN, &mut self.reply));
                    check_dirents(&self.reply, op == Opcode::Readdirplus);
                }
            }
            Opcode::Getxattr | Opcode::Listxattr => {
                let a: abi::GetxattrIn = obj(args);
                if a.size == 0 {
                    assert_eq!(body_len, 8, "xattr size reply");
                } else {
                    assert!(body_len <= a.size as usize, "xattr reply beyond size");
                }
            }
            Opcode::Write => {
                let a: abi::WriteIn = obj(args);
                assert_eq!(body_len, 8);
                let mut b = [0u8; 8];
                assert!(guest.read(wsegs, OUT_HEADER_LEN, &mut b));
                let w: abi::WriteOut = obj(&b);
                assert!(w.size <= a.size, "WRITE claims {} of {}", w.size, a.size);
            }
            _ => {}
        }
    }
}

impl State {
    /// Checks a successful INIT's reply against what the guest offered; returns the session.
    fn check_init(&self, offered: &abi::InitIn, reply: &abi::InitOut, live: bool) -> Session {
        assert_eq!(reply.major, abi::KERNEL_VERSION);
        if !live {
            assert!(
                offered.major > abi::KERNEL_VERSION,
                "INIT succeeded, no session"
            );
            assert_eq!(reply.minor, abi::KERNEL_MINOR_VERSION);
            assert_eq!((reply.flags, reply.flags2, reply.max_write), (0, 0, 0));
            return Session::default();
        }
        assert_eq!(offered.major, abi::KERNEL_VERSION);
        assert!(offered.minor >= abi::MIN_KERNEL_MINOR_VERSION);
        assert_eq!(reply.minor, offered.minor.min(abi::KERNEL_MINOR_VERSION));
        let mut capable = u64::from(offered.flags);
        if capable & f::INIT_EXT != 0 {
            capable |= u64::from(offered.flags2) << 32;
        }
        let mut agreed = u64::from(reply.flags);
        if agreed & f::INIT_EXT != 0 {
            agreed |= u64::from(reply.flags2) << 32;
        } else {
            assert_eq!(reply.flags2, 0, "flags2 without INIT_EXT");
        }
        assert_eq!(
            agreed & !capable,
            0,
            "agreed to flags not offered: {}",
            f::describe(agreed & !capable)
        );
        assert_eq!(
            agreed & NEVER,
            0,
            "agreed to {}",
            f::describe(agreed & NEVER)
        );
        match self.fs_init {
            FsInit::Fails => panic!("a session though the filesystem failed INIT"),
            FsInit::Nothing => assert_eq!(agreed & !SERVER_FLAGS, 0),
            FsInit::All | FsInit::Offered => {}
        }
        let limit = u32::from(self.max_pages.max(1)) * 4096;
        let w = reply.max_write;
        assert!(
            w > 0 && w.is_multiple_of(4096) && w <= limit,
            "max_write {w}"
        );
        if agreed & f::MAX_PAGES != 0 {
            assert_eq!(u32::from(reply.max_pages) * 4096, w);
        } else {
            assert_eq!(reply.max_pages, 0);
        }
        Session {
            known: true,
            flags: agreed,
            max_write: w,
        }
    }
}

/// Splits `total` bytes into segments from `base` as `split` says (`SPLIT_*`); returns how many.
fn split(
    total: usize,
    split: u8,
    writable: bool,
    base: u64,
    segs: &mut [Segment; MAX_SEGS],
) -> usize {
    let piece = usize::from(split & di::SPLIT_PIECE);
    let zeros = split & di::SPLIT_ZEROS != 0;
    let odd = split & di::SPLIT_ODD != 0;
    let (mut n, mut addr, mut left) = (0, base, total);
    let mut push = |n: &mut usize, len: usize| {
        segs[*n] = Segment {
            addr: GuestAddress(addr),
            len: len as u32,
        };
        *n += 1;
        addr += len as u64 + GAP;
    };
    if writable && odd && left > 0 {
        push(&mut n, 1);
        left -= 1;
    }
    while left > 0 {
        let take = if piece == 0 || n >= MAX_SEGS - 2 {
            left
        } else {
            piece.min(left)
        };
        push(&mut n, take);
        left -= take;
        if zeros && left > 0 && n < MAX_SEGS - 2 {
            push(&mut n, 0);
        }
    }
    if !writable && odd {
        n = n.saturating_sub(1);
    }
    n
}

/// Calls `f` with each guest range of `len` bytes of `segs` after the first `skip`; false if
/// the segments end first or `f` fails.
fn walk_segs(
    segs: &[Segment],
    mut skip: usize,
    mut len: usize,
    mut f: impl FnMut(GuestAddress, std::ops::Range<usize>) -> bool,
) -> bool {
    let mut at = 0;
    for s in segs {
        if len == 0 {
            break;
        }
        let slen = s.len as usize;
        if skip >= slen {
            skip -= slen;
            continue;
        }
        let n = (slen - skip).min(len);
        let Some(addr) = s.addr.0.checked_add(skip as u64) else {
            return false;
        };
        if !f(GuestAddress(addr), at..at + n) {
            return false;
        }
        at += n;
        len -= n;
        skip = 0;
    }
    len == 0
}

/// Guest memory, and the host addresses of its two regions for the harness's own copies
/// (plain `memcpy`s: the server's accesses go through vm-memory, the harness's need not).
struct Guest {
    mem: Memory,
    r0: *mut u8,
    w: *mut u8,
}

impl Guest {
    fn new() -> Guest {
        let mem = Memory::from_ranges(&[
            (GuestAddress(0), R_REGION_END as usize),
            (GuestAddress(W_REGION), (W_REGION_END - W_REGION) as usize),
        ])
        .expect("guest memory");
        let r0 = mem.get_host_address(GuestAddress(0)).unwrap();
        let w = mem.get_host_address(GuestAddress(W_REGION)).unwrap();
        Guest { mem, r0, w }
    }

    /// The host address of guest range `addr..addr + len`, if it lies in one region.
    fn host(&self, addr: GuestAddress, len: usize) -> Option<*mut u8> {
        let start = addr.0;
        let end = start.checked_add(len as u64)?;
        if end <= R_REGION_END {
            // SAFETY: inside region 0, which is mapped for as long as `self.mem` lives.
            Some(unsafe { self.r0.add(start as usize) })
        } else if start >= W_REGION && end <= W_REGION_END {
            // SAFETY: inside region 1, likewise.
            Some(unsafe { self.w.add((start - W_REGION) as usize) })
        } else {
            None
        }
    }

    /// Reads `buf.len()` bytes of `segs` after the first `skip`.
    fn read(&self, segs: &[Segment], skip: usize, buf: &mut [u8]) -> bool {
        walk_segs(segs, skip, buf.len(), |addr, r| {
            let Some(p) = self.host(addr, r.len()) else {
                return false;
            };
            // SAFETY: `p` points at `r.len()` mapped bytes (`host`); the server is not running.
            let dst = &mut buf[r];
            unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), dst.len()) };
            true
        })
    }

    /// Writes `bytes` into `segs`, as far as they reach; false on a range outside guest memory.
    fn write(&self, segs: &[Segment], bytes: &[u8]) -> bool {
        let room: usize = segs.iter().map(|s| s.len as usize).sum();
        let n = room.min(bytes.len());
        walk_segs(segs, 0, n, |addr, r| {
            let Some(p) = self.host(addr, r.len()) else {
                return false;
            };
            // SAFETY: as in `read`.
            let src = &bytes[r];
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
            true
        })
    }
}

/// A `T` from the start of `bytes` (zeros where they end first).
fn obj<T: ByteValued>(bytes: &[u8]) -> T {
    let mut v = T::zeroed();
    let n = bytes.len().min(std::mem::size_of::<T>());
    v.as_mut_slice()[..n].copy_from_slice(&bytes[..n]);
    v
}

/// Checks that a READDIR(PLUS) reply body is a sequence of whole, padded entries with names of
/// 1 to 255 bytes.
fn check_dirents(body: &[u8], plus: bool) {
    let entry = if plus {
        std::mem::size_of::<abi::EntryOut>()
    } else {
        0
    };
    let head = entry + std::mem::size_of::<abi::Dirent>();
    let mut at = 0;
    while at < body.len() {
        assert!(at + head <= body.len(), "READDIR entry header cut at {at}");
        let d: abi::Dirent = obj(&body[at + entry..]);
        let namelen = d.namelen as usize;
        assert!(
            (1..=NAME_MAX).contains(&namelen),
            "READDIR name of {namelen} bytes"
        );
        let rec = (head + namelen + 7) & !7;
        assert!(at + rec <= body.len(), "READDIR entry cut at {at}");
        let name = &body[at + head..at + head + namelen];
        assert!(!name.contains(&0), "READDIR name with a NUL");
        assert!(
            body[at + head + namelen..at + rec].iter().all(|&b| b == 0),
            "READDIR padding not zero"
        );
        at += rec;
    }
}
