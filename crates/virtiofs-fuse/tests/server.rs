//! The server end to end on guest memory: requests as a guest driver lays them out (header and
//! arguments over several descriptors), replies read back from the writable descriptors, and a
//! recording filesystem to check what each method received.

use std::sync::Mutex;
use std::time::Duration;

use virtiofs_fuse::abi::{self, init_flags as f, Opcode};
use virtiofs_fuse::{
    Context, DirSink, Entry, Errno, Filesystem, GuestSlice, Limits, Memory, Name, Segment,
    ServeError, Server, Xattr,
};
use vm_memory::{ByteValued, Bytes, GuestAddress};

/// What the filesystem saw.
#[derive(Default)]
struct Seen {
    forgets: Vec<(u64, u64)>,
    destroys: usize,
    written: Vec<u8>,
    xattr: Option<(Vec<u8>, Vec<u8>, u32, u32)>,
    supp_group: Option<u32>,
    copy_len: u64,
}

#[derive(Default)]
struct Fake {
    seen: Mutex<Seen>,
}

impl Filesystem for Fake {
    fn init(&self, capable: u64) -> Result<u64, Errno> {
        Ok(capable & (f::ASYNC_READ | f::SETXATTR_EXT | f::CREATE_SUPP_GROUP))
    }
    fn destroy(&self) {
        self.seen.lock().unwrap().destroys += 1;
    }
    fn lookup(&self, _: &Context, parent: u64, name: &Name) -> Result<Entry, Errno> {
        if name.as_bytes() != b"hello" {
            return Err(Errno(libc::ENOENT));
        }
        let mut e = Entry {
            nodeid: parent + 1,
            generation: 7,
            ..Default::default()
        };
        e.attr.ino = 1234;
        e.entry_valid = Duration::from_secs(1);
        Ok(e)
    }
    fn forget(&self, nodeid: u64, nlookup: u64) {
        self.seen.lock().unwrap().forgets.push((nodeid, nlookup));
    }
    fn read(
        &self,
        _: &Context,
        _: u64,
        arg: &abi::ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> Result<usize, Errno> {
        // Byte i of the file is (offset + i) % 251; a read past 100 000 is short.
        let end = (arg.offset + u64::from(arg.size)).min(100_000);
        let mut pos = arg.offset;
        for s in dst {
            let n = (s.len() as u64).min(end.saturating_sub(pos)) as usize;
            let bytes: Vec<u8> = (0..n as u64).map(|i| ((pos + i) % 251) as u8).collect();
            s.copy_from(&bytes);
            pos += n as u64;
        }
        Ok((pos - arg.offset) as usize)
    }
    fn write(
        &self,
        _: &Context,
        _: u64,
        arg: &abi::WriteIn,
        src: &[GuestSlice<'_>],
    ) -> Result<usize, Errno> {
        let mut seen = self.seen.lock().unwrap();
        for s in src {
            let mut buf = vec![0u8; s.len()];
            s.copy_to(&mut buf);
            seen.written.extend_from_slice(&buf);
        }
        Ok(arg.size as usize)
    }
    fn readdir(
        &self,
        _: &Context,
        _: u64,
        _: u64,
        offset: u64,
        out: &mut DirSink<'_, '_>,
    ) -> Result<(), Errno> {
        for i in offset..1000 {
            let name = format!("file-{i}");
            if !out.add(100 + i, i + 1, libc::DT_REG.into(), name.as_bytes()) {
                break;
            }
        }
        Ok(())
    }
    fn setxattr(
        &self,
        _: &Context,
        _: u64,
        name: &Name,
        value: &[u8],
        flags: u32,
        sflags: u32,
    ) -> Result<(), Errno> {
        self.seen.lock().unwrap().xattr =
            Some((name.as_bytes().to_vec(), value.to_vec(), flags, sflags));
        Ok(())
    }
    fn getxattr(&self, _: &Context, _: u64, _: &Name, _: u32) -> Result<Xattr, Errno> {
        Ok(Xattr::Data(b"0123456789".to_vec()))
    }
    fn mkdir(
        &self,
        ctx: &Context,
        _: u64,
        _: &Name,
        _: u32,
        _: u32,
        _: Option<&virtiofs_fuse::SecCtx>,
    ) -> Result<Entry, Errno> {
        self.seen.lock().unwrap().supp_group = ctx.supp_group;
        Ok(Entry {
            nodeid: 5,
            ..Default::default()
        })
    }
    fn copy_file_range(
        &self,
        _: &Context,
        _: u64,
        arg: &abi::CopyFileRangeIn,
    ) -> Result<u64, Errno> {
        self.seen.lock().unwrap().copy_len = arg.len;
        Ok(arg.len)
    }
}

/// A guest's side: lays requests out in memory and reads replies back.
struct Guest {
    mem: Memory,
    server: Server<Fake>,
    unique: u64,
}

/// A reply: header and body.
struct Reply {
    len: u32,
    error: i32,
    unique: u64,
    body: Vec<u8>,
    written: usize,
}

impl Reply {
    fn obj<T: ByteValued>(&self) -> T {
        *T::from_slice(&self.body[..std::mem::size_of::<T>()]).expect("reply body")
    }
}

const IN_AT: u64 = 0x1000;
const OUT_AT: u64 = 0xc0_0000;

impl Guest {
    fn new() -> Self {
        let mem = Memory::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
        Guest {
            mem,
            server: Server::new(Fake::default(), Limits::default()),
            unique: 0,
        }
    }

    /// Sends `opcode` with `args`, the request split into `split`-byte descriptors, and
    /// `out_len` bytes of reply buffer in two descriptors.
    fn send_raw(
        &mut self,
        header: abi::InHeader,
        args: &[u8],
        split: usize,
        out_len: usize,
    ) -> Result<Reply, ServeError> {
        let mut bytes = header.as_slice().to_vec();
        bytes.extend_from_slice(args);
        let mut readable = Vec::new();
        let mut at = IN_AT;
        for chunk in bytes.chunks(split.max(1)) {
            self.mem.write_slice(chunk, GuestAddress(at)).unwrap();
            readable.push(Segment {
                addr: GuestAddress(at),
                len: chunk.len() as u32,
            });
            at += chunk.len() as u64 + 64; // gaps between descriptors
        }
        let first = out_len.min(24);
        let writable = [
            Segment {
                addr: GuestAddress(OUT_AT),
                len: first as u32,
            },
            Segment {
                addr: GuestAddress(OUT_AT + 0x1000),
                len: (out_len - first) as u32,
            },
        ];
        self.mem
            .write_slice(&vec![0xee; out_len], GuestAddress(OUT_AT + 0x1000))
            .ok();
        let served = self.server.handle(&self.mem, &readable, &writable)?;
        let mut out = vec![0u8; served.written];
        let a = served.written.min(first);
        self.mem
            .read_slice(&mut out[..a], GuestAddress(OUT_AT))
            .unwrap();
        self.mem
            .read_slice(&mut out[a..], GuestAddress(OUT_AT + 0x1000))
            .unwrap();
        if served.written == 0 {
            return Ok(Reply {
                len: 0,
                error: 0,
                unique: 0,
                body: vec![],
                written: 0,
            });
        }
        let h = *abi::OutHeader::from_slice(&out[..16]).unwrap();
        assert_eq!(
            h.len as usize, served.written,
            "header length = bytes written"
        );
        assert_eq!(-h.error, served.errno);
        Ok(Reply {
            len: h.len,
            error: h.error,
            unique: h.unique,
            body: out[16..].to_vec(),
            written: served.written,
        })
    }

    fn header(&mut self, opcode: u32, nodeid: u64, args_len: usize) -> abi::InHeader {
        self.unique += 1;
        abi::InHeader {
            len: (40 + args_len) as u32,
            opcode,
            unique: self.unique,
            nodeid,
            uid: 1000,
            gid: 1000,
            pid: 42,
            ..Default::default()
        }
    }

    fn send(&mut self, op: Opcode, nodeid: u64, args: &[u8]) -> Reply {
        let h = self.header(op as u32, nodeid, args.len());
        let r = self.send_raw(h, args, 29, 1 << 20).unwrap();
        if r.written > 0 {
            assert_eq!(r.unique, h.unique);
        }
        r
    }

    fn init(&mut self, minor: u32, flags: u64) -> abi::InitOut {
        let arg = abi::InitIn {
            major: 7,
            minor,
            max_readahead: 1 << 17,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            ..Default::default()
        };
        let r = self.send(Opcode::Init, 0, arg.as_slice());
        assert_eq!(r.error, 0);
        r.obj()
    }
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

const LINUX_6_12: u64 = f::ASYNC_READ
    | f::POSIX_LOCKS
    | f::ATOMIC_O_TRUNC
    | f::EXPORT_SUPPORT
    | f::BIG_WRITES
    | f::DONT_MASK
    | f::FLOCK_LOCKS
    | f::DO_READDIRPLUS
    | f::READDIRPLUS_AUTO
    | f::PARALLEL_DIROPS
    | f::MAX_PAGES
    | f::SUBMOUNTS
    | f::SETXATTR_EXT
    | f::INIT_EXT
    | f::CREATE_SUPP_GROUP
    | f::MAP_ALIGNMENT
    | f::HAS_INODE_DAX;

#[test]
fn nothing_but_init_before_init_and_a_1_mib_session_after() {
    let mut g = Guest::new();
    assert_eq!(g.send(Opcode::Lookup, 1, b"hello\0").error, -libc::EIO);
    let out = g.init(41, LINUX_6_12);
    assert_eq!((out.major, out.minor), (7, 41));
    assert_eq!((out.max_write, out.max_pages), (1 << 20, 256));
    let agreed = u64::from(out.flags) | (u64::from(out.flags2) << 32);
    assert_eq!(
        agreed,
        f::ASYNC_READ
            | f::BIG_WRITES
            | f::MAX_PAGES
            | f::INIT_EXT
            | f::SETXATTR_EXT
            | f::CREATE_SUPP_GROUP,
        "{}",
        f::describe(agreed)
    );
    assert!(g.server.is_live());
}

#[test]
fn lookup_names_are_checked() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let r = g.send(Opcode::Lookup, 1, b"hello\0");
    let e: abi::EntryOut = r.obj();
    assert_eq!(
        (e.nodeid, e.generation, e.attr.ino, e.entry_valid),
        (2, 7, 1234, 1)
    );
    assert_eq!(r.len as usize, 16 + 128);
    assert_eq!(g.send(Opcode::Lookup, 1, b"other\0").error, -libc::ENOENT);
    assert_eq!(g.send(Opcode::Lookup, 1, b"no-nul").error, -libc::EINVAL);
    let long = cat(&[&[b'x'; 256], b"\0"]);
    assert_eq!(g.send(Opcode::Lookup, 1, &long).error, -libc::ENAMETOOLONG);
    assert_eq!(g.send(Opcode::Lookup, 1, b"").error, -libc::EINVAL);
}

#[test]
fn unknown_opcodes_and_inconsistent_headers_get_errno_replies() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    for op in [0, 7, 19, 54, 4096, u32::MAX] {
        let h = g.header(op, 1, 0);
        let r = g.send_raw(h, &[], 40, 4096).unwrap();
        assert_eq!(
            (r.error, r.unique),
            (-libc::ENOSYS, h.unique),
            "opcode {op}"
        );
    }
    // A length beyond what the descriptors hold, and one shorter than the header.
    let mut h = g.header(Opcode::Getattr as u32, 1, 16);
    h.len = 4000;
    assert_eq!(
        g.send_raw(h, &[0; 16], 64, 4096).unwrap().error,
        -libc::EINVAL
    );
    h.len = 8;
    assert_eq!(
        g.send_raw(h, &[0; 16], 64, 4096).unwrap().error,
        -libc::EINVAL
    );
    // Extensions longer than the request.
    let mut h = g.header(Opcode::Getattr as u32, 1, 16);
    h.total_extlen = 100;
    assert_eq!(
        g.send_raw(h, &[0; 16], 64, 4096).unwrap().error,
        -libc::EINVAL
    );
    // A truncated argument struct.
    let h = g.header(Opcode::Getattr as u32, 1, 4);
    assert_eq!(
        g.send_raw(h, &[0; 4], 64, 4096).unwrap().error,
        -libc::EINVAL
    );
    // Not even a header: nothing to reply to.
    let mem = &g.mem;
    let short = [Segment {
        addr: GuestAddress(IN_AT),
        len: 20,
    }];
    let out = [Segment {
        addr: GuestAddress(OUT_AT),
        len: 4096,
    }];
    assert!(matches!(
        g.server.handle(mem, &short, &out),
        Err(ServeError::NoHeader(_))
    ));
    // A header outside guest memory.
    let wild = [Segment {
        addr: GuestAddress(1 << 40),
        len: 64,
    }];
    assert!(matches!(
        g.server.handle(mem, &wild, &out),
        Err(ServeError::NoHeader(_))
    ));
}

#[test]
fn replies_that_do_not_fit_become_eio_or_nothing() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let h = g.header(Opcode::Lookup as u32, 1, 6);
    let r = g.send_raw(h, b"hello\0", 64, 60).unwrap();
    assert_eq!(
        (r.error, r.len),
        (-libc::EIO, 16),
        "an entry does not fit 60 bytes"
    );
    let h = g.header(Opcode::Lookup as u32, 1, 6);
    assert!(matches!(
        g.send_raw(h, b"hello\0", 64, 10),
        Err(ServeError::Reply { .. })
    ));
}

#[test]
fn a_1_mib_write_over_many_descriptors_reaches_the_filesystem_whole() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 256) as u8).collect();
    let arg = abi::WriteIn {
        fh: 1,
        offset: 0,
        size: data.len() as u32,
        ..Default::default()
    };
    let h = g.header(Opcode::Write as u32, 2, 40 + data.len());
    let r = g
        .send_raw(h, &cat(&[arg.as_slice(), &data]), 4096, 4096)
        .unwrap();
    assert_eq!(r.error, 0);
    assert_eq!(r.obj::<abi::WriteOut>().size, 1 << 20);
    assert!(
        g.server.filesystem().seen.lock().unwrap().written == data,
        "data differs"
    );
    // Beyond max_write, or beyond the data that came with it.
    let arg = abi::WriteIn {
        size: (1 << 20) + 1,
        ..Default::default()
    };
    let big = vec![0u8; (1 << 20) + 1];
    assert_eq!(
        g.send(Opcode::Write, 2, &cat(&[arg.as_slice(), &big]))
            .error,
        -libc::EINVAL
    );
    let arg = abi::WriteIn {
        size: 100,
        ..Default::default()
    };
    assert_eq!(
        g.send(Opcode::Write, 2, &cat(&[arg.as_slice(), &[0; 50]]))
            .error,
        -libc::EINVAL
    );
}

#[test]
fn a_queue_of_1024_descriptors_takes_writes_of_1020_pages() {
    let mut g = Guest::new();
    // What the pipeline tells the server before INIT: the smallest request queue's size.
    g.server.set_queue_size(1024);
    let out = g.init(41, LINUX_6_12);
    assert_eq!((out.max_pages, out.max_write), (1020, 1020 * 4096));
    // One WRITE of 1020 pages, one descriptor each, reaches the filesystem whole.
    let data: Vec<u8> = (0..1020 * 4096u32).map(|i| (i * 13 % 251) as u8).collect();
    let arg = abi::WriteIn {
        fh: 1,
        size: data.len() as u32,
        ..Default::default()
    };
    let h = g.header(Opcode::Write as u32, 2, 40 + data.len());
    let r = g
        .send_raw(h, &cat(&[arg.as_slice(), &data]), 4096, 4096)
        .unwrap();
    assert_eq!(r.error, 0);
    assert_eq!(r.obj::<abi::WriteOut>().size as usize, data.len());
    assert!(
        g.server.filesystem().seen.lock().unwrap().written == data,
        "data differs"
    );
    // A byte beyond max_write is refused.
    let arg = abi::WriteIn {
        size: 1020 * 4096 + 1,
        ..Default::default()
    };
    let big = vec![0u8; 1020 * 4096 + 1];
    assert_eq!(
        g.send(Opcode::Write, 2, &cat(&[arg.as_slice(), &big]))
            .error,
        -libc::EINVAL
    );
    // A new driver on a smaller queue gets a new offer at its INIT; 0 forgets the size.
    g.server.set_queue_size(128);
    let out = g.init(41, LINUX_6_12);
    assert_eq!((out.max_pages, out.max_write), (124, 124 * 4096));
    g.server.set_queue_size(0);
    let out = g.init(41, LINUX_6_12);
    assert_eq!((out.max_pages, out.max_write), (256, 1 << 20));
}

#[test]
fn reads_land_in_guest_memory_and_short_reads_are_short_replies() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let arg = abi::ReadIn {
        fh: 1,
        offset: 1000,
        size: 65536,
        ..Default::default()
    };
    let r = g.send(Opcode::Read, 2, arg.as_slice());
    assert_eq!(r.len as usize, 16 + 65536);
    assert!(r
        .body
        .iter()
        .enumerate()
        .all(|(i, &b)| b == ((1000 + i) % 251) as u8));
    let arg = abi::ReadIn {
        offset: 99_990,
        size: 4096,
        ..Default::default()
    };
    let r = g.send(Opcode::Read, 2, arg.as_slice());
    assert_eq!(r.body.len(), 10, "short read at the end of the file");
    // A buffer smaller than the read asked for: the read is cut to the buffer.
    let h = g.header(Opcode::Read as u32, 2, 40);
    let arg = abi::ReadIn {
        size: 8192,
        ..Default::default()
    };
    let r = g.send_raw(h, arg.as_slice(), 64, 16 + 100).unwrap();
    assert_eq!(r.body.len(), 100);
}

#[test]
fn readdir_fills_up_to_the_size_asked_and_resumes_at_the_offset() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let arg = abi::ReadIn {
        fh: 1,
        offset: 0,
        size: 4096,
        ..Default::default()
    };
    let r = g.send(Opcode::Readdir, 1, arg.as_slice());
    assert!(r.body.len() <= 4096 && r.body.len() > 4096 - 40);
    let mut at = 0;
    let mut last_off = 0;
    while at < r.body.len() {
        let d = *abi::Dirent::from_slice(&r.body[at..at + 24]).unwrap();
        let name = &r.body[at + 24..at + 24 + d.namelen as usize];
        assert_eq!(name, format!("file-{}", d.off - 1).as_bytes());
        last_off = d.off;
        at += (24 + d.namelen as usize + 7) & !7;
    }
    assert_eq!(at, r.body.len());
    let arg = abi::ReadIn {
        offset: last_off,
        size: 4096,
        ..Default::default()
    };
    let r = g.send(Opcode::Readdir, 1, arg.as_slice());
    let d = *abi::Dirent::from_slice(&r.body[..24]).unwrap();
    assert_eq!(d.off, last_off + 1);
}

#[test]
fn forgets_get_no_reply_and_batch_forget_takes_only_what_is_there() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let r = g.send(Opcode::Forget, 9, abi::ForgetIn { nlookup: 3 }.as_slice());
    assert_eq!(r.written, 0);
    let mut args = abi::BatchForgetIn {
        count: 1000,
        dummy: 0,
    }
    .as_slice()
    .to_vec();
    for i in 0..100u64 {
        args.extend_from_slice(
            abi::ForgetOne {
                nodeid: 10 + i,
                nlookup: i,
            }
            .as_slice(),
        );
    }
    assert_eq!(g.send(Opcode::BatchForget, 0, &args).written, 0);
    let seen = g.server.filesystem().seen.lock().unwrap();
    assert_eq!(
        seen.forgets.len(),
        101,
        "1 FORGET + the 100 entries present of the 1000 claimed"
    );
    assert_eq!(seen.forgets[0], (9, 3));
    assert_eq!(seen.forgets[100], (109, 99));
}

#[test]
fn setxattr_layout_follows_setxattr_ext() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12); // SETXATTR_EXT agreed: 16-byte argument
    let arg = abi::SetxattrIn {
        size: 3,
        flags: 1,
        setxattr_flags: 1,
        padding: 0,
    };
    assert_eq!(
        g.send(
            Opcode::Setxattr,
            2,
            &cat(&[arg.as_slice(), b"user.a\0", b"xyz"])
        )
        .error,
        0
    );
    let seen = g
        .server
        .filesystem()
        .seen
        .lock()
        .unwrap()
        .xattr
        .take()
        .unwrap();
    assert_eq!(seen, (b"user.a".to_vec(), b"xyz".to_vec(), 1, 1));
    let mut g = Guest::new();
    g.init(31, LINUX_6_12 & !f::SETXATTR_EXT); // old layout: 8 bytes
    let arg = abi::SetxattrIn {
        size: 3,
        flags: 2,
        ..Default::default()
    };
    let args = cat(&[&arg.as_slice()[..8], b"user.b\0", b"xyz"]);
    assert_eq!(g.send(Opcode::Setxattr, 2, &args).error, 0);
    let seen = g
        .server
        .filesystem()
        .seen
        .lock()
        .unwrap()
        .xattr
        .take()
        .unwrap();
    assert_eq!(seen, (b"user.b".to_vec(), b"xyz".to_vec(), 2, 0));
    let arg = abi::SetxattrIn {
        size: 70000,
        ..Default::default()
    };
    assert_eq!(
        g.send(Opcode::Setxattr, 2, &cat(&[&arg.as_slice()[..8], b"u\0"]))
            .error,
        -libc::E2BIG
    );
}

#[test]
fn getxattr_answers_the_size_or_erange() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let ask = |size| cat(&[abi::GetxattrIn { size, padding: 0 }.as_slice(), b"user.a\0"]);
    assert_eq!(
        g.send(Opcode::Getxattr, 2, &ask(0))
            .obj::<abi::GetxattrOut>()
            .size,
        10
    );
    assert_eq!(g.send(Opcode::Getxattr, 2, &ask(4)).error, -libc::ERANGE);
    assert_eq!(g.send(Opcode::Getxattr, 2, &ask(64)).body, b"0123456789");
}

#[test]
fn destroy_and_a_second_init_end_the_session() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    g.init(38, LINUX_6_12); // a new driver: the old session ends first
    assert_eq!(g.server.filesystem().seen.lock().unwrap().destroys, 1);
    assert_eq!(g.send(Opcode::Destroy, 0, &[]).error, 0);
    assert_eq!(g.server.filesystem().seen.lock().unwrap().destroys, 2);
    assert_eq!(g.send(Opcode::Lookup, 1, b"hello\0").error, -libc::EIO);
    g.server.end_session(); // no session: nothing to destroy
    assert_eq!(
        g.send(Opcode::Destroy, 0, &[]).error,
        0,
        "DESTROY without a session: harmless"
    );
    assert_eq!(g.server.filesystem().seen.lock().unwrap().destroys, 2);
    let short_init = g.send(Opcode::Init, 0, &[7, 0, 0, 0, 38, 0, 0, 0]);
    assert_eq!(short_init.error, -libc::EINVAL, "fuse_init_in of 8 bytes");
}

#[test]
fn the_supplementary_group_extension_reaches_the_filesystem() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let mkdir = abi::MkdirIn {
        mode: 0o755,
        umask: 0o22,
    };
    let args = cat(&[mkdir.as_slice(), b"d\0"]);
    // Extension: fuse_ext_header (16 bytes with the group list), nr_groups = 1, group 4242.
    let ext = cat(&[
        abi::ExtHeader {
            size: 16,
            typ: abi::ext::GROUPS,
        }
        .as_slice(),
        &1u32.to_le_bytes(),
        &4242u32.to_le_bytes(),
    ]);
    let mut h = g.header(Opcode::Mkdir as u32, 1, args.len() + ext.len());
    h.total_extlen = 2;
    let r = g.send_raw(h, &cat(&[&args, &ext]), 64, 4096).unwrap();
    assert_eq!(r.error, 0);
    assert_eq!(
        g.server.filesystem().seen.lock().unwrap().supp_group,
        Some(4242)
    );
}

#[test]
fn copy_file_range_32_bit_replies_never_overflow() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let arg = abi::CopyFileRangeIn {
        len: 1 << 40,
        ..Default::default()
    };
    let r = g.send(Opcode::CopyFileRange, 2, arg.as_slice());
    let copied = g.server.filesystem().seen.lock().unwrap().copy_len;
    assert!(copied <= u64::from(u32::MAX));
    assert_eq!(u64::from(r.obj::<abi::WriteOut>().size), copied);
    let r = g.send(Opcode::CopyFileRange64, 2, arg.as_slice());
    assert_eq!(r.obj::<abi::CopyFileRangeOut>().bytes_copied, 1 << 40);
}

#[test]
fn every_opcode_the_filesystem_does_not_serve_is_enosys() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    for op in [
        Opcode::Getlk,
        Opcode::Statx,
        Opcode::Tmpfile,
        Opcode::Syncfs,
        Opcode::Interrupt,
        Opcode::Bmap,
        Opcode::SetupMapping,
        Opcode::Lseek,
        Opcode::Poll,
        Opcode::Fallocate,
    ] {
        let r = g.send(op, 2, &[0; 64]);
        assert_eq!(r.error, -libc::ENOSYS, "{op:?}");
    }
    assert_eq!(g.send(Opcode::Ioctl, 2, &[0; 64]).error, -libc::ENOTTY);
}

/// Random requests, valid headers with random bodies and random bytes, must all be answered or
/// refused without a panic (a short fuzz; `fuzz/` has the long one for the pipeline).
#[test]
fn random_requests_never_panic() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let len = (next() % 600) as usize;
        let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let op = (next() % 56) as u32;
        let mut h = g.header(op, next() % 4, len);
        if next() % 4 == 0 {
            h.len = next() as u32;
        }
        if next() % 8 == 0 {
            h.total_extlen = next() as u16;
        }
        let out_len = 16 + (next() % 300) as usize;
        let split = 1 + (next() % 64) as usize;
        let _ = g.send_raw(h, &body, split, out_len);
        if op == Opcode::Destroy as u32 || op == Opcode::Init as u32 {
            g.init(38, LINUX_6_12);
        }
    }
}

/// The pipeline reads the header once and picks the INIT/DESTROY gate side by it; the server
/// must serve that header, not what the guest has written there since.
#[test]
fn a_header_handed_over_is_used_as_given_not_read_again() {
    let mut g = Guest::new();
    g.init(38, LINUX_6_12);
    // In guest memory: a DESTROY. Handed over: the LOOKUP the pipeline saw first.
    let in_memory = g.header(Opcode::Destroy as u32, 0, 6);
    let seen = g.header(Opcode::Lookup as u32, 1, 6);
    let mut bytes = in_memory.as_slice().to_vec();
    bytes.extend_from_slice(b"hello\0");
    g.mem.write_slice(&bytes, GuestAddress(IN_AT)).unwrap();
    let readable = [Segment {
        addr: GuestAddress(IN_AT),
        len: bytes.len() as u32,
    }];
    let writable = [Segment {
        addr: GuestAddress(OUT_AT),
        len: 4096,
    }];
    let served = g
        .server
        .handle_with_header(&g.mem, &seen, &readable, &writable)
        .unwrap();
    assert_eq!((served.opcode, served.errno), (Some(Opcode::Lookup), 0));
    let reply: abi::OutHeader = g.mem.read_obj(GuestAddress(OUT_AT)).unwrap();
    assert_eq!(reply.unique, seen.unique);
    assert!(
        g.server.is_live(),
        "the DESTROY in guest memory was not served"
    );
    assert_eq!(g.server.filesystem().seen.lock().unwrap().destroys, 0);
}
