//! Hostile and racy input against the real daemon: malformed descriptor chains and FUSE headers,
//! oversize writes, requests outside a session, INIT/DESTROY with requests in flight, and the
//! frontend vanishing mid-request. Every case must end in an errno reply or a chain returned
//! with used length 0 (docs/architecture.md, "Bad input from the guest"), never in a panic or a
//! hang, and the next valid request must succeed.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::time::Duration;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::{opcode, GetattrIn, InHeader, OutHeader, WriteIn, ROOT_ID};
use vhost_user_fs_client::{
    Buffers, Completion, Creds, Errno, FsClient, FuseOps, FuseRequest, RawChain, RawDescriptor,
    ReadPart, WritePart,
};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{ByteValued, GuestAddress};

const O_RDWR: u32 = libc::O_RDWR as u32;
const CREATE_EXCL: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const S_IFREG: u32 = libc::S_IFREG;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;
const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// A `fuse_in_header` as bytes.
fn header(len: u32, opcode: u32, unique: u64, nodeid: u64) -> Vec<u8> {
    InHeader {
        len,
        opcode,
        unique,
        nodeid,
        uid: 0,
        gid: 0,
        pid: std::process::id(),
        total_extlen: 0,
        padding: 0,
    }
    .as_slice()
    .to_vec()
}

/// A GETATTR of the root: header and argument in one buffer.
fn getattr_bytes(unique: u64) -> Vec<u8> {
    let mut b = header(56, opcode::GETATTR, unique, ROOT_ID);
    b.extend_from_slice(GetattrIn::default().as_slice());
    b
}

/// Posts a raw chain on request queue 1 and waits for it.
fn run(c: &FsClient, chain: &RawChain) -> Completion {
    let t = c.device().submit_raw(1, chain).unwrap();
    c.device().wait(t).expect("the chain comes back")
}

fn rd(parts: Vec<Vec<u8>>) -> Vec<ReadPart> {
    parts.into_iter().map(ReadPart::Bytes).collect()
}

/// The reply header of a completion that must be an error reply for `unique`.
fn error_reply(what: &str, comp: &Completion, unique: u64) -> Errno {
    assert_eq!(comp.used_len, 16, "{what}: an error reply header: {comp:?}");
    let data = comp.data();
    let out = OutHeader::from_slice(&data[..16]).copied().unwrap();
    assert_eq!(
        (out.len, out.unique),
        (16, unique),
        "{what}: reply header {out:?}"
    );
    assert!(out.error < 0, "{what}: reply header {out:?}");
    Errno(-out.error)
}

/// The daemon is alive, has not panicked, and answers a valid request.
fn still_serving(d: &mut Daemon, c: &FsClient, what: &str) {
    let a = c
        .getattr(ROOT_ID, None)
        .unwrap_or_else(|e| panic!("{what}: next valid request failed: {e}"));
    assert_eq!(a.attr.mode & libc::S_IFMT, libc::S_IFDIR, "{what}");
    d.assert_alive(what);
}

/// Malformed chains: each comes back (used length 0, or an EINVAL/EIO reply where there is room
/// for one), and a valid request right after succeeds.
#[test]
fn malformed_chains_come_back_and_the_daemon_carries_on() {
    let mut d = Daemon::start(&[]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let dev = c.device();
    let unmapped = dev.unmapped_address().0;
    let (r0_start, r0_len) = dev.memory().regions()[0];
    let region_end = r0_start.0 + r0_len;
    let reply = || vec![WritePart::Len(256)];

    // Control: a valid GETATTR split over odd descriptor boundaries works.
    let u = c.next_unique();
    let b = getattr_bytes(u);
    let comp = run(
        &c,
        &RawChain {
            readable: rd(vec![b[..7].to_vec(), b[7..33].to_vec(), b[33..].to_vec()]),
            writable: vec![WritePart::Len(10), WritePart::Len(200)],
            indirect: false,
        },
    );
    assert_eq!(comp.used_len, 120, "split GETATTR: {comp:?}");

    // Returned with used length 0: nothing to reply to, or nowhere to reply.
    let zero_cases: Vec<(&str, RawChain)> = vec![
        (
            "chain shorter than the FUSE header",
            RawChain {
                readable: rd(vec![getattr_bytes(c.next_unique())[..20].to_vec()]),
                writable: reply(),
                indirect: false,
            },
        ),
        (
            "header outside guest memory",
            RawChain {
                readable: vec![ReadPart::Raw {
                    addr: unmapped,
                    len: 56,
                }],
                writable: reply(),
                indirect: false,
            },
        ),
        (
            "header straddling the end of a region",
            RawChain {
                readable: vec![ReadPart::Raw {
                    addr: region_end - 20,
                    len: 56,
                }],
                writable: reply(),
                indirect: true,
            },
        ),
        (
            "no writable part",
            RawChain {
                readable: rd(vec![getattr_bytes(c.next_unique())]),
                writable: vec![],
                indirect: false,
            },
        ),
        (
            "writable part of 8 bytes",
            RawChain {
                readable: rd(vec![getattr_bytes(c.next_unique())]),
                writable: vec![WritePart::Len(8)],
                indirect: true,
            },
        ),
        (
            "writable part outside guest memory",
            RawChain {
                readable: rd(vec![getattr_bytes(c.next_unique())]),
                writable: vec![WritePart::Raw {
                    addr: unmapped,
                    len: 256,
                }],
                indirect: false,
            },
        ),
        (
            "writable part straddling the end of a region",
            RawChain {
                readable: rd(vec![getattr_bytes(c.next_unique())]),
                writable: vec![WritePart::Raw {
                    addr: region_end - 8,
                    len: 256,
                }],
                indirect: false,
            },
        ),
        (
            "FORGET without its argument",
            RawChain {
                readable: rd(vec![header(40, opcode::FORGET, c.next_unique(), 12345)]),
                writable: vec![],
                indirect: false,
            },
        ),
    ];
    for (what, chain) in &zero_cases {
        let comp = run(&c, chain);
        assert_eq!(comp.used_len, 0, "{what}: {comp:?}");
        still_serving(&mut d, &c, what);
    }

    // Undecodable requests with room for a reply: EINVAL (or the server's own errno).
    let name = b"missing\0".to_vec();
    let lookup = |len: u32, name: Vec<u8>| -> (u64, RawChain) {
        let u = c.next_unique();
        let chain = RawChain {
            readable: rd(vec![header(len, opcode::LOOKUP, u, ROOT_ID), name]),
            writable: reply(),
            indirect: false,
        };
        (u, chain)
    };
    let errno_cases: Vec<(&str, (u64, RawChain), Errno)> = vec![
        (
            "LOOKUP, len shorter than the header",
            lookup(8, name.clone()),
            Errno::EINVAL,
        ),
        (
            "LOOKUP, len past the chain",
            lookup(40 + 1000, name.clone()),
            Errno::EINVAL,
        ),
        (
            // fuse-backend-rs refuses requests over its 1 MiB + 4 KiB buffer before decoding.
            // Past the chain: the pipeline's len check answers before the library's size limit
            // (which would say ENOMEM).
            "LOOKUP, len of 4 GiB",
            lookup(u32::MAX, name.clone()),
            Errno::EINVAL,
        ),
        (
            "LOOKUP, name without NUL",
            lookup(47, b"missing".to_vec()),
            Errno::EINVAL,
        ),
        (
            "LOOKUP, name outside guest memory",
            {
                let u = c.next_unique();
                (
                    u,
                    RawChain {
                        readable: vec![
                            ReadPart::Bytes(header(48, opcode::LOOKUP, u, ROOT_ID)),
                            ReadPart::Raw {
                                addr: unmapped,
                                len: 8,
                            },
                        ],
                        writable: reply(),
                        indirect: false,
                    },
                )
            },
            Errno::EINVAL,
        ),
        (
            "GETATTR reply larger than the writable part",
            {
                let u = c.next_unique();
                (
                    u,
                    RawChain {
                        readable: rd(vec![getattr_bytes(u)]),
                        writable: vec![WritePart::Len(16)],
                        indirect: false,
                    },
                )
            },
            Errno::EIO,
        ),
        (
            "unknown opcode",
            {
                let u = c.next_unique();
                (
                    u,
                    RawChain {
                        readable: rd(vec![header(40, 7777, u, ROOT_ID)]),
                        writable: reply(),
                        indirect: true,
                    },
                )
            },
            Errno::ENOSYS,
        ),
    ];
    for (what, (u, chain), want) in &errno_cases {
        let comp = run(&c, chain);
        assert_eq!(error_reply(what, &comp, *u), *want, "{what}");
        still_serving(&mut d, &c, what);
    }
    let log = d.take_log();
    assert!(!log.contains("panicked"), "{log}");
}

/// `fuse_in_header.len` shorter than the header or longer than the chain gets EINVAL for every
/// request, not only where fuse-backend-rs reads a variable-length body (the pipeline checks it;
/// the library trusted it for fixed-size arguments).
#[test]
fn header_len_must_match_the_request() {
    let mut d = Daemon::start(&[]);
    let c = d.connect(d.config());
    c.init().unwrap();
    for len in [8u32, 39, 4096] {
        let u = c.next_unique();
        let mut b = getattr_bytes(u);
        b[..4].copy_from_slice(&len.to_le_bytes());
        let comp = run(
            &c,
            &RawChain {
                readable: rd(vec![b]),
                writable: vec![WritePart::Len(256)],
                indirect: false,
            },
        );
        let what = format!("GETATTR with len {len}");
        assert_eq!(error_reply(&what, &comp, u), Errno::EINVAL, "{what}");
        still_serving(&mut d, &c, &what);
    }
}

/// Chains no correct driver builds, posted descriptor by descriptor: indirect tables at bad
/// addresses or of bad sizes, `next` out of range, a loop, a writable part before the readable
/// one, and descriptors aliasing the rings themselves.
#[test]
fn raw_descriptor_abuse_and_ring_aliasing() {
    let mut d = Daemon::start(&[]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let dev = c.device();
    let mem = dev.memory();
    let unmapped = dev.unmapped_address().0;
    let layout = dev.queue(1).unwrap().layout();

    // Buffers in guest memory that the test owns: a GETATTR request and a reply buffer.
    let put = |bytes: &[u8]| {
        let a = mem.alloc(bytes.len() as u64, 64).unwrap();
        mem.write(a.addr, bytes).unwrap();
        a
    };
    let raw = |descs: &[RawDescriptor], read_back: Vec<(GuestAddress, u32)>| {
        let t = dev
            .submit_descriptors(
                1,
                descs,
                Buffers {
                    owned: vec![],
                    read_back,
                },
            )
            .unwrap();
        dev.wait(t).expect("the chain comes back")
    };

    let u = c.next_unique();
    let req = put(&getattr_bytes(u));
    let out = put(&[0u8; 256]);
    let desc = |a: vhost_user_fs_client::memory::Allocation, len: u32, flags: u16, next: u16| {
        RawDescriptor {
            addr: a.addr.0,
            len,
            flags,
            next,
        }
    };

    // Indirect table outside guest memory, of a length that is not a multiple of 16, empty.
    for (what, addr, len) in [
        ("indirect table outside guest memory", unmapped, 32),
        ("indirect table of 24 bytes", out.addr.0, 24),
        ("indirect table of 0 bytes", out.addr.0, 0),
    ] {
        let comp = raw(
            &[RawDescriptor {
                addr,
                len,
                flags: INDIRECT,
                next: 0,
            }],
            vec![],
        );
        assert_eq!(comp.used_len, 0, "{what}");
        still_serving(&mut d, &c, what);
    }

    // `next` past the queue: the chain is cut there, so it has no writable part.
    let comp = raw(&[desc(req, 56, NEXT, 1000)], vec![]);
    assert_eq!(comp.used_len, 0, "next out of range");
    still_serving(&mut d, &c, "next out of range");

    // A loop (header → reply → header ...): virtio-queue stops after a queue's worth of
    // descriptors; the request either runs on what it got or comes back empty.
    let comp = raw(
        &[desc(req, 56, NEXT, 1), desc(out, 256, NEXT | WRITE, 0)],
        vec![(out.addr, 256)],
    );
    assert!(
        comp.used_len == 0 || comp.used_len >= 16,
        "descriptor loop: {comp:?}"
    );
    still_serving(&mut d, &c, "descriptor loop");

    // The reply part first, then the request: the device reads the readable descriptors and
    // writes the writable ones wherever they are in the chain, so this one just works.
    let u2 = c.next_unique();
    let req2 = put(&getattr_bytes(u2));
    mem.write(out.addr, &[0u8; 256]).unwrap();
    let comp = raw(
        &[desc(out, 256, NEXT | WRITE, 1), desc(req2, 56, 0, 0)],
        vec![(out.addr, 256)],
    );
    assert_eq!(comp.used_len, 120, "writable before readable: {comp:?}");
    let reply = OutHeader::from_slice(&comp.written[0][..16])
        .copied()
        .unwrap();
    assert_eq!((reply.unique, reply.error), (u2, 0));

    // A "request" read out of the descriptor table itself: garbage, but it comes back.
    let comp = run(
        &c,
        &RawChain {
            readable: vec![ReadPart::Raw {
                addr: layout.desc.0,
                len: 64,
            }],
            writable: vec![WritePart::Len(256)],
            indirect: false,
        },
    );
    assert!(
        comp.used_len == 0 || comp.data()[4..8] != [0; 4],
        "descriptor table as a request: used length 0 or an error reply: {comp:?}"
    );
    still_serving(&mut d, &c, "header aliasing the descriptor table");

    // A reply written into the descriptor table: into its last four slots, which the driver
    // does not use with so few requests in flight. The device writes there like anywhere else.
    let tail = layout.desc.0 + 16 * u64::from(layout.size) - 64;
    let u3 = c.next_unique();
    let comp = run(
        &c,
        &RawChain {
            readable: rd(vec![
                header(48, opcode::LOOKUP, u3, ROOT_ID),
                b"missing\0".to_vec(),
            ]),
            writable: vec![WritePart::Raw {
                addr: tail,
                len: 64,
            }],
            indirect: false,
        },
    );
    assert_eq!(comp.used_len, 16, "reply into the descriptor table");
    let got = mem.read(GuestAddress(tail), 16).unwrap();
    let reply = OutHeader::from_slice(&got).copied().unwrap();
    assert_eq!(
        (reply.len, reply.error, reply.unique),
        (16, -libc::ENOENT, u3),
        "the ENOENT reply landed in the descriptor table"
    );
    mem.write(GuestAddress(tail), &[0u8; 64]).unwrap();
    still_serving(&mut d, &c, "reply aliasing the descriptor table");
    for i in 0..50 {
        still_serving(&mut d, &c, &format!("ring still sound ({i})"));
    }
}

/// WRITE with a `size` larger than the data in the chain, or larger than the `max_write` agreed
/// at INIT, is refused with EINVAL before the filesystem sees it (never a write of bytes from
/// outside the chain); a WRITE of exactly `max_write` is written whole.
#[test]
fn oversize_writes_write_nothing_they_should_not() {
    let mut d = Daemon::start(&[]);
    let mut cfg = d.config();
    cfg.memory_regions = vec![16 << 20];
    cfg.queue_size = 512;
    let c = d.connect(cfg);
    let init = c.init().unwrap();
    // As many pages as a chain of the queue carries: the queue size less the request's and
    // the reply's headers and arguments.
    assert_eq!(init.max_pages, 512 - 4, "max_pages");
    assert_eq!(init.max_write, (512 - 4) * 4096, "max_write");
    let (e, o) = c
        .create(ROOT_ID, "w", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    let path = d.share.join("w");
    let write = |size: u32, off: u64, data: &[u8]| {
        let u = c.next_unique();
        let arg = WriteIn {
            fh: o.fh,
            offset: off,
            size,
            ..Default::default()
        };
        let len = (80 + data.len()) as u32;
        let chain = RawChain {
            readable: rd(vec![
                header(len, opcode::WRITE, u, e.nodeid),
                arg.as_slice().to_vec(),
                data.to_vec(),
            ]),
            writable: vec![WritePart::Len(24)],
            indirect: true,
        };
        (u, run(&c, &chain))
    };

    // A size beyond the data that came with it (4096 with 10 bytes, u32::MAX with 3): a
    // malformed request, refused with nothing written (fuse-backend-rs wrote what was there).
    let (u, comp) = write(4096, 0, b"0123456789");
    assert_eq!(error_reply("WRITE size > data", &comp, u), Errno::EINVAL);
    let (u, comp) = write(u32::MAX, 10, b"abc");
    assert_eq!(error_reply("WRITE size u32::MAX", &comp, u), Errno::EINVAL);
    assert_eq!(std::fs::read(&path).unwrap(), b"", "nothing written");
    still_serving(&mut d, &c, "inconsistent WRITE sizes");

    // Beyond max_write, data and all: refused too.
    let big = vec![0x5a; init.max_write as usize + 1];
    let (u, comp) = write(big.len() as u32, 0, &big);
    assert_eq!(error_reply("WRITE > max_write", &comp, u), Errno::EINVAL);
    assert_eq!(std::fs::read(&path).unwrap(), b"", "unchanged");
    still_serving(&mut d, &c, "oversize WRITE");

    // Exactly max_write, in one request: written whole.
    let full = vec![0xa5; init.max_write as usize];
    assert_eq!(
        c.write(e.nodeid, o.fh, 0, &full).unwrap() as usize,
        full.len()
    );
    assert!(std::fs::read(&path).unwrap() == full);
    c.release(e.nodeid, o.fh, 0).unwrap();
    d.assert_alive("max_write WRITE");
}

/// Outside a session every request but INIT gets EIO (also unknown opcodes; FORGETs come back
/// with no reply); INITs the server cannot accept leave the session down; DESTROY before INIT
/// is harmless. (An INIT in a live session starts a new one: `tests/reset.rs`.)
#[test]
fn requests_outside_a_session() {
    let mut d = Daemon::start(&[]);
    let mut cfg = d.config();
    cfg.request_queues = 2;
    let c = d.connect(cfg);
    assert_eq!(errno(c.getattr(ROOT_ID, None)), Errno::EIO);
    assert_eq!(errno(c.lookup(ROOT_ID, "x")), Errno::EIO);
    assert_eq!(errno(c.mkdir(ROOT_ID, "x", 0o755, 0)), Errno::EIO);
    assert!(!d.share.join("x").exists());
    let u = c.next_unique();
    let comp = run(
        &c,
        &RawChain {
            readable: rd(vec![header(40, 9999, u, ROOT_ID)]),
            writable: vec![WritePart::Len(64)],
            indirect: false,
        },
    );
    assert_eq!(
        error_reply("unknown opcode before INIT", &comp, u),
        Errno::EIO
    );
    c.forget(5, 1).unwrap();
    c.batch_forget(&[(5, 1), (6, 1)]).unwrap();
    d.assert_alive("requests before INIT");

    // INITs that do not start a session.
    let short_init = FuseRequest::new(opcode::INIT, 0, vec![vec![7, 0, 0, 0]], vec![64]);
    assert_eq!(
        c.call(short_init).unwrap().error,
        Some(Errno::EINVAL),
        "truncated fuse_init_in"
    );
    assert_eq!(
        errno(c.init_with(vhost_user_fs_client::InitParams {
            major: 6,
            ..Default::default()
        })),
        Errno::EPROTO
    );
    assert_eq!(
        errno(c.getattr(ROOT_ID, None)),
        Errno::EIO,
        "still no session"
    );
    c.destroy().unwrap(); // DESTROY with no session: harmless
    assert_eq!(errno(c.getattr(ROOT_ID, None)), Errno::EIO);

    c.init().unwrap();
    still_serving(&mut d, &c, "INIT after refused INITs");
}

/// DESTROY with many large reads and writes in flight on two queues, three times over: every
/// request completes with success (all bytes) or EIO, those queued before DESTROY on its own
/// queue all succeed, DESTROY succeeds, nothing runs until the next INIT, and the host files
/// hold exactly the data of the writes that succeeded.
#[test]
fn destroy_and_init_with_requests_in_flight() {
    const FILES: usize = 4;
    const CHUNKS: usize = 4;
    const CHUNK: usize = 256 << 10;
    let mut d = Daemon::start(&[]);
    let mut cfg = d.config();
    cfg.request_queues = 2;
    let c = d.connect(cfg);
    let source: Vec<u8> = (0..CHUNKS * CHUNK).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.share.join("source"), &source).unwrap();
    for f in 0..FILES {
        std::fs::write(d.share.join(format!("f{f}")), vec![0u8; CHUNKS * CHUNK]).unwrap();
    }
    let mut host_want: Vec<Vec<u8>> = vec![vec![0u8; CHUNKS * CHUNK]; FILES];

    for round in 0..3u8 {
        c.init().unwrap();
        let src = c.lookup(ROOT_ID, "source").unwrap().nodeid;
        let src_fh = c.open(src, libc::O_RDONLY as u32).unwrap().fh;
        let files: Vec<(u64, u64)> = (0..FILES)
            .map(|f| {
                let n = c.lookup(ROOT_ID, format!("f{f}")).unwrap().nodeid;
                (n, c.open(n, O_RDWR).unwrap().fh)
            })
            .collect();
        let fill = |f: usize, ch: usize| vec![round * 16 + (f * CHUNKS + ch) as u8 + 1; CHUNK];
        let mut writes = Vec::new();
        let mut reads = Vec::new();
        let mut k = 0;
        for ch in 0..CHUNKS {
            for (f, &(n, fh)) in files.iter().enumerate() {
                let q = 1 + k % 2;
                let req = FuseRequest::write(n, fh, (ch * CHUNK) as u64, &fill(f, ch));
                writes.push((f, ch, q, c.submit(q, &req, Creds::root()).unwrap()));
                let req = FuseRequest::read(src, src_fh, (ch * CHUNK) as u64, CHUNK as u32);
                reads.push((ch, q, c.submit(q, &req, Creds::root()).unwrap()));
                k += 1;
            }
        }
        let destroy = c.submit(1, &FuseRequest::destroy(), Creds::root()).unwrap();
        let (mut ok, mut eio) = (0, 0);
        for (f, ch, q, t) in writes {
            match c.wait(t).unwrap().written() {
                Ok(n) => {
                    assert_eq!(n as usize, CHUNK, "round {round}: whole write");
                    host_want[f][ch * CHUNK..(ch + 1) * CHUNK].copy_from_slice(&fill(f, ch));
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(e.errno(), Some(Errno::EIO), "round {round}: {e}");
                    assert_ne!(q, 1, "round {round}: queued before DESTROY on its queue");
                    eio += 1;
                }
            }
        }
        for (ch, q, t) in reads {
            match c.wait(t).unwrap().ok() {
                Ok(data) => {
                    assert!(
                        data == source[ch * CHUNK..(ch + 1) * CHUNK],
                        "round {round}"
                    );
                    ok += 1;
                }
                Err(e) => {
                    assert_eq!(e.errno(), Some(Errno::EIO), "round {round}: {e}");
                    assert_ne!(q, 1, "round {round}: queued before DESTROY on its queue");
                    eio += 1;
                }
            }
        }
        let r = c.wait(destroy).unwrap();
        assert_eq!((r.error, r.body.len()), (None, 0), "round {round}: DESTROY");
        assert!(ok >= FILES * CHUNKS, "round {round}: {ok} ok, {eio} EIO");
        assert_eq!(
            errno(c.getattr(ROOT_ID, None)),
            Errno::EIO,
            "round {round}: no session after DESTROY"
        );
        for (f, want) in host_want.iter().enumerate() {
            let host = std::fs::read(d.share.join(format!("f{f}"))).unwrap();
            assert!(host == *want, "round {round}: f{f} on the host");
        }
        d.assert_alive(&format!("round {round}"));
    }
    c.init().unwrap();
    still_serving(&mut d, &c, "after three DESTROYs");
}

/// The frontend disconnects with large requests in flight: the daemon finishes or drops them,
/// exits 0 within its 5 s grace (plus slack), removes its socket and never panics; with a
/// thread pool and with `--thread-pool-size 0`.
#[test]
fn frontend_disconnect_mid_request_exits_cleanly() {
    for pool in ["64", "0"] {
        let mut d = Daemon::start(&["--thread-pool-size", pool]);
        let mut cfg = d.config();
        cfg.request_queues = 2;
        cfg.memory_regions = vec![40 << 20];
        let c = d.connect(cfg);
        c.init().unwrap();
        let (e, o) = c
            .create(ROOT_ID, "big", CREATE_EXCL, S_IFREG | 0o644, 0)
            .unwrap();
        let chunk = vec![0x42u8; 512 << 10];
        for i in 0..32 {
            let req = FuseRequest::write(e.nodeid, o.fh, (i * chunk.len()) as u64, &chunk);
            c.submit(1 + i % 2, &req, Creds::root()).unwrap();
        }
        for i in 0..16 {
            let req = FuseRequest::read(e.nodeid, o.fh, (i * chunk.len()) as u64, 512 << 10);
            c.submit(1 + i % 2, &req, Creds::root()).unwrap();
        }
        drop(c);
        let socket = d.socket.clone();
        let (code, log) = d
            .wait_exit_within(Duration::from_secs(8))
            .unwrap_or_else(|| panic!("pool {pool}: daemon still running 8 s after disconnect"));
        assert_eq!(code, 0, "pool {pool}: exit code; log:\n{log}");
        assert!(!log.contains("panicked"), "pool {pool}:\n{log}");
        assert!(log.contains("disconnected"), "pool {pool}:\n{log}");
        assert!(!socket.exists(), "pool {pool}: socket file left behind");
    }
}
