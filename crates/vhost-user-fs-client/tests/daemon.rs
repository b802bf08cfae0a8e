//! The client against the real async-virtiofsd binary (build it first:
//! `cargo build -p async-virtiofsd`; or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Barrier;

use common::{errno, host_getxattr, Daemon};
use vhost_user_fs_client::abi::{opcode, ROOT_ID};
use vhost_user_fs_client::{Creds, Errno, FuseOps, FuseRequest};

const O_RDONLY: u32 = libc::O_RDONLY as u32;
const O_RDWR: u32 = libc::O_RDWR as u32;
const CREATE_FLAGS: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const S_IFREG: u32 = libc::S_IFREG;

/// Deterministic bytes for (file, chunk), different for every pair.
fn pattern(file: usize, chunk: usize, len: usize) -> Vec<u8> {
    let mut x = (file as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ (chunk as u64 + 1).wrapping_mul(0xc2b2_ae3d);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A device that forgets to notify (e.g. gets EVENT_IDX wrong across the index wrap) makes
/// waiters sleep out their 100 ms poll slice; allow a couple for a loaded machine.
fn assert_no_lost_notifications(st: &vhost_user_fs_client::virtqueue::QueueStats) {
    let stalls = st.stalls.load(Relaxed);
    assert!(
        stalls <= 2,
        "{stalls} completions arrived without a notification: {st:?}"
    );
}

#[test]
fn init_negotiates_and_the_daemon_exits_on_disconnect() {
    let d = Daemon::start(&[]);
    let c = d.connect(d.config());
    let n = c.device().negotiated();
    assert!(n.backend_queues.unwrap() >= 2, "{n:?}");
    assert!(n.event_idx() && n.indirect_desc(), "{n:?}");
    assert!(c.session().is_none());

    let init = c.init().unwrap();
    assert_eq!(init.major, 7);
    assert!(init.minor >= 31, "minor {}", init.minor);
    assert!(init.max_write >= 4096, "max_write {}", init.max_write);
    assert_eq!(c.session(), Some(init));

    let root = c.getattr(ROOT_ID, None).unwrap();
    let md = std::fs::metadata(&d.share).unwrap();
    assert_eq!(root.attr.ino, md.ino());
    assert_eq!(root.attr.mode, md.mode());
    let st = c.statfs(ROOT_ID).unwrap();
    assert!(st.blocks > 0 && st.bsize > 0 && st.namelen > 0, "{st:?}");

    drop(c);
    let (code, log) = d.wait_exit();
    assert_eq!(code, 0, "daemon log:\n{log}");
}

/// create / write / read / lookup / getattr / readdir(plus) / unlink against the host view, on
/// two device set-ups: defaults (one region, EVENT_IDX, indirect, SET_MEM_TABLE, REPLY_ACK) and
/// three regions without EVENT_IDX, indirect or REPLY_ACK, memory sent with ADD_MEM_REG.
#[test]
fn file_round_trip_matches_the_host() {
    for variant in 0..2 {
        let d = Daemon::start(&[]);
        let mut cfg = d.config();
        if variant == 1 {
            cfg.memory_regions = vec![8 << 20, 8 << 20, 8 << 20];
            cfg.event_idx = false;
            cfg.indirect_desc = false;
            cfg.reply_ack = false;
            cfg.add_mem_reg = true;
        }
        let c = d.connect(cfg);
        if variant == 1 {
            let n = c.device().negotiated();
            assert!(!n.event_idx() && !n.indirect_desc(), "{n:?}");
            assert!(n.max_mem_slots.is_some(), "ADD_MEM_REG path taken: {n:?}");
        }
        round_trip(&d, &c);
    }
}

fn round_trip(d: &Daemon, c: &vhost_user_fs_client::FsClient) {
    let init = c.init().unwrap();

    // A file made on the host, read through FUSE.
    std::fs::write(d.share.join("host.txt"), b"from the host").unwrap();
    let e = c.lookup(ROOT_ID, "host.txt").unwrap();
    let md = std::fs::metadata(d.share.join("host.txt")).unwrap();
    assert_eq!(
        (e.attr.ino, e.attr.size, e.attr.mode),
        (md.ino(), 13, md.mode())
    );
    let a = c.getattr(e.nodeid, None).unwrap();
    assert_eq!(
        (a.attr.mtime as i64, a.attr.mtimensec as i64),
        (md.mtime(), md.mtime_nsec())
    );
    let fh = c.open(e.nodeid, O_RDONLY).unwrap().fh;
    assert_eq!(c.read(e.nodeid, fh, 0, 4096).unwrap(), b"from the host");
    assert_eq!(c.read(e.nodeid, fh, 5, 3).unwrap(), b"the");
    assert_eq!(c.read(e.nodeid, fh, 13, 10).unwrap(), b"", "EOF");
    c.release(e.nodeid, fh, 0).unwrap();

    // A file made through FUSE, checked on the host.
    let (ce, co) = c
        .create(ROOT_ID, "guest.bin", CREATE_FLAGS, S_IFREG | 0o640, 0o022)
        .unwrap();
    let data = pattern(1, 1, 300_000);
    let chunk = (init.max_write as usize).min(128 << 10);
    for (i, part) in data.chunks(chunk).enumerate() {
        let n = c.write(ce.nodeid, co.fh, (i * chunk) as u64, part).unwrap();
        assert_eq!(n as usize, part.len());
    }
    c.fsync(ce.nodeid, co.fh, false).unwrap();
    let host = std::fs::read(d.share.join("guest.bin")).unwrap();
    assert!(host == data, "host sees what was written");
    let hmd = std::fs::metadata(d.share.join("guest.bin")).unwrap();
    assert_eq!(hmd.mode() & 0o7777, 0o640);
    assert_eq!(hmd.ino(), ce.attr.ino);
    let mut back = Vec::new();
    for off in (0..data.len()).step_by(64 << 10) {
        back.extend(c.read(ce.nodeid, co.fh, off as u64, 64 << 10).unwrap());
    }
    assert!(back == data, "read back what was written");
    let a = c.getattr(ce.nodeid, Some(co.fh)).unwrap();
    assert_eq!(a.attr.size, data.len() as u64);
    c.flush(ce.nodeid, co.fh).unwrap();
    c.release(ce.nodeid, co.fh, 0).unwrap();

    // A directory listing equals the host's.
    let sub = c.mkdir(ROOT_ID, "sub", 0o755, 0).unwrap();
    assert!(d.share.join("sub").is_dir());
    for i in 0..40 {
        let (fe, fo) = c
            .create(
                sub.nodeid,
                format!("file-{i:02}"),
                CREATE_FLAGS,
                S_IFREG | 0o644,
                0,
            )
            .unwrap();
        c.release(fe.nodeid, fo.fh, 0).unwrap();
    }
    let mut names: Vec<String> = c
        .read_dir_names(sub.nodeid)
        .unwrap()
        .into_iter()
        .map(|n| String::from_utf8(n).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    let mut host_names: Vec<String> = std::fs::read_dir(d.share.join("sub"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    host_names.sort();
    assert_eq!(names, host_names);
    let dh = c.opendir(sub.nodeid, O_RDONLY).unwrap().fh;
    let plus = c.readdirplus(sub.nodeid, dh, 0, 64 << 10).unwrap();
    c.releasedir(sub.nodeid, dh).unwrap();
    let mut seen = 0;
    for p in plus.iter().filter(|p| !p.dirent.name.starts_with(b".")) {
        let name = String::from_utf8(p.dirent.name.clone()).unwrap();
        let md = std::fs::metadata(d.share.join("sub").join(&name)).unwrap();
        assert_ne!(p.entry.nodeid, 0, "{name} looked up");
        assert_eq!(p.entry.attr.ino, md.ino(), "{name}");
        assert_eq!(p.dirent.ino, md.ino(), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 40);

    // READDIRPLUS a page at a time (the records a reply has no room for wait in the daemon
    // for the next request), then a seekdir back into the middle, then a rewind after a new
    // file: every name once, in one order, and the rewind sees the new file.
    let dh = c.opendir(sub.nodeid, O_RDONLY).unwrap().fh;
    let mut paged = Vec::new();
    let mut off = 0;
    loop {
        let page = c.readdirplus(sub.nodeid, dh, off, 1024).unwrap();
        let Some(last) = page.last() else { break };
        assert!(page.len() < 10, "a 1 KiB reply holds a few entries");
        off = last.dirent.off;
        paged.extend(page.into_iter().map(|p| (p.dirent.name, p.dirent.off)));
    }
    let names: Vec<_> = paged.iter().map(|(n, _)| n.clone()).collect();
    let in_order: Vec<_> = plus.iter().map(|p| p.dirent.name.clone()).collect();
    assert_eq!(names, in_order, "paged listing = one-reply listing");
    let (_, mid) = paged[20].clone();
    let again = c.readdirplus(sub.nodeid, dh, mid, 1024).unwrap();
    assert_eq!(
        again[0].dirent.name, paged[21].0,
        "seekdir to the 21st entry's end"
    );
    c.create(sub.nodeid, "late", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .map(|(e, o)| c.release(e.nodeid, o.fh, 0).unwrap())
        .unwrap();
    let rewound = c.readdirplus(sub.nodeid, dh, 0, 64 << 10).unwrap();
    assert!(rewound.iter().any(|p| p.dirent.name == b"late"));
    assert_eq!(rewound.len(), plus.len() + 1);
    c.releasedir(sub.nodeid, dh).unwrap();
    c.unlink(sub.nodeid, "late").unwrap();

    // Unlink, and the errors around it.
    c.unlink(ROOT_ID, "guest.bin").unwrap();
    assert!(!d.share.join("guest.bin").exists());
    assert_eq!(errno(c.lookup(ROOT_ID, "guest.bin")), Errno::ENOENT);
    assert_eq!(errno(c.unlink(ROOT_ID, "guest.bin")), Errno::ENOENT);
    assert_eq!(errno(c.mkdir(ROOT_ID, "sub", 0o755, 0)), Errno::EEXIST);
    assert_eq!(errno(c.rmdir(ROOT_ID, "sub")), Errno::ENOTEMPTY);

    // Credentials per request.
    let private = c.mkdir(ROOT_ID, "private", 0o700, 0).unwrap();
    let user = c.with_creds(Creds::user(1000, 1000));
    assert_eq!(
        errno(user.create(private.nodeid, "x", CREATE_FLAGS, S_IFREG | 0o644, 0)),
        Errno::EACCES
    );
    assert!(!d.share.join("private/x").exists());
    let public = c.mkdir(ROOT_ID, "public", 0o777, 0).unwrap();
    let (ue, uo) = user
        .create(public.nodeid, "mine", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    user.release(ue.nodeid, uo.fh, 0).unwrap();
    let umd = std::fs::metadata(d.share.join("public/mine")).unwrap();
    assert_eq!((umd.uid(), umd.gid()), (1000, 1000));
    assert_eq!((ue.attr.uid, ue.attr.gid), (1000, 1000));
}

/// 256 requests in flight over 4 request queues: 256 writes (64 files × 4 chunks) submitted
/// before any is waited for, then 256 reads from 8 threads sharing the queues two by two.
/// Every byte is checked, on the host and through FUSE.
#[test]
fn requests_in_flight_across_four_queues() {
    const FILES: usize = 64;
    const CHUNKS: usize = 4;
    const CHUNK: usize = 16 << 10;
    let d = Daemon::start(&[]);
    let mut cfg = d.config();
    cfg.request_queues = 4;
    cfg.memory_regions = vec![16 << 20, 16 << 20];
    let c = d.connect(cfg);
    c.init().unwrap();
    let files: Vec<(u64, u64)> = (0..FILES)
        .map(|i| {
            let (e, o) = c
                .create(ROOT_ID, format!("f{i}"), CREATE_FLAGS, S_IFREG | 0o644, 0)
                .unwrap();
            (e.nodeid, o.fh)
        })
        .collect();

    let mut writes = Vec::new();
    for k in 0..FILES * CHUNKS {
        let (f, ch) = (k % FILES, k / FILES);
        let (node, fh) = files[f];
        let req = FuseRequest::write(node, fh, (ch * CHUNK) as u64, &pattern(f, ch, CHUNK));
        writes.push(c.submit(1 + k % 4, &req, Creds::root()).unwrap());
    }
    let outstanding: usize = (1..=4)
        .map(|q| c.device().queue(q).unwrap().outstanding())
        .sum();
    assert_eq!(outstanding, FILES * CHUNKS, "all submitted before any wait");
    for t in writes {
        assert_eq!(c.wait(t).unwrap().written().unwrap() as usize, CHUNK);
    }
    for (f, _) in files.iter().enumerate() {
        let host = std::fs::read(d.share.join(format!("f{f}"))).unwrap();
        let want: Vec<u8> = (0..CHUNKS).flat_map(|ch| pattern(f, ch, CHUNK)).collect();
        assert!(host == want, "file f{f} on the host");
    }

    let threads = 8;
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (c, files, barrier) = (&c, &files, &barrier);
            s.spawn(move || {
                let queue = 1 + t % 4;
                let mine: Vec<usize> = (0..FILES).filter(|f| f % threads == t).collect();
                let mut tokens = Vec::new();
                for &f in &mine {
                    for ch in 0..CHUNKS {
                        let (node, fh) = files[f];
                        let req = FuseRequest::read(node, fh, (ch * CHUNK) as u64, CHUNK as u32);
                        tokens.push((f, ch, c.submit(queue, &req, Creds::root()).unwrap()));
                    }
                }
                barrier.wait(); // every thread has its reads in flight
                for (f, ch, tok) in tokens {
                    let data = c.wait(tok).unwrap().ok().unwrap();
                    assert!(data == pattern(f, ch, CHUNK), "read of f{f} chunk {ch}");
                }
            });
        }
    });
    for q in 1..=4 {
        let st = c.device().queue(q).unwrap().stats();
        let done = st.completed.load(Relaxed);
        assert!(done >= 128, "queue {q} completed {done}");
        assert_no_lost_notifications(st);
    }
    for &(node, fh) in &files {
        c.release(node, fh, 0).unwrap();
    }
}

/// A 16-entry queue whose indices start just below 65536: direct chains of 4–5 descriptors
/// (so only 3–4 fit and submission waits for space), then indirect ones with all 16 slots
/// busy; the 16-bit avail/used indices wrap during the run.
#[test]
fn queue_of_16_wraps_rings_and_indices() {
    const N: usize = 300;
    let d = Daemon::start(&[]);
    let mut cfg = d.config();
    cfg.queue_size = 16;
    cfg.initial_index = u16::MAX - 100;
    let c = d.connect(cfg);
    c.init().unwrap();
    assert!(c.device().negotiated().indirect_desc());
    let (e, o) = c
        .create(ROOT_ID, "wrap", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();

    c.set_indirect(false);
    let writes: Vec<_> = (0..N)
        .map(|i| {
            let req = FuseRequest::write(e.nodeid, o.fh, (i * 1000) as u64, &pattern(i, 0, 1000));
            c.submit(1, &req, Creds::root()).unwrap()
        })
        .collect();
    for t in writes {
        assert_eq!(c.wait(t).unwrap().written().unwrap(), 1000);
    }
    let want: Vec<u8> = (0..N).flat_map(|i| pattern(i, 0, 1000)).collect();
    assert!(std::fs::read(d.share.join("wrap")).unwrap() == want);

    c.set_indirect(true);
    let mut window = VecDeque::new();
    for i in 0..N {
        if window.len() == 16 {
            let (j, t) = window.pop_front().unwrap();
            let data = c.wait(t).unwrap().ok().unwrap();
            assert!(data == pattern(j, 0, 1000), "read {j}");
        }
        let req = FuseRequest::read(e.nodeid, o.fh, (i * 1000) as u64, 1000);
        window.push_back((i, c.submit(1, &req, Creds::root()).unwrap()));
    }
    for (j, t) in window {
        assert!(
            c.wait(t).unwrap().ok().unwrap() == pattern(j, 0, 1000),
            "read {j}"
        );
    }
    let st = c.device().queue(1).unwrap().stats();
    let done = st.completed.load(Relaxed);
    assert!(
        done > 2 * N as u64,
        "{done} completions crossed the index wrap"
    );
    assert_no_lost_notifications(st);
    c.release(e.nodeid, o.fh, 0).unwrap();
}

/// DESTROY ends the session (requests get EIO), INIT starts a new one that sees the files.
#[test]
fn destroy_then_init_again() {
    let d = Daemon::start(&[]);
    let c = d.connect(d.config());
    assert_eq!(
        errno(c.lookup(ROOT_ID, "anything")),
        Errno::EIO,
        "before INIT"
    );
    c.init().unwrap();
    let (e, o) = c
        .create(ROOT_ID, "kept", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    c.write(e.nodeid, o.fh, 0, b"survives").unwrap();
    c.release(e.nodeid, o.fh, 0).unwrap();
    // Strict: the reply must come back with its 16-byte header as used length (fuse-backend-rs
    // returns 0 bytes written for DESTROY; the pipeline corrects it).
    c.destroy().unwrap();
    assert_eq!(errno(c.getattr(ROOT_ID, None)), Errno::EIO, "after DESTROY");

    c.init().unwrap();
    let e2 = c.lookup(ROOT_ID, "kept").unwrap();
    assert_eq!(e2.attr.size, 8);
    let fh = c.open(e2.nodeid, O_RDWR).unwrap().fh;
    assert_eq!(c.read(e2.nodeid, fh, 0, 100).unwrap(), b"survives");
    c.release(e2.nodeid, fh, 0).unwrap();
    c.forget(e2.nodeid, 1).unwrap();
    assert!(c.getattr(ROOT_ID, None).is_ok());
}

/// The remaining typed operations once each, checked on the host: SETATTR, RENAME, RENAME2,
/// LINK, SYMLINK/READLINK, MKNOD, xattrs, FALLOCATE, LSEEK, BATCH_FORGET.
#[test]
fn other_operations_match_the_host() {
    use vhost_user_fs_client::abi::{fattr, SetattrIn};
    use vhost_user_fs_client::XattrReply;
    let d = Daemon::start(&["--xattr"]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let p = |n: &str| d.share.join(n);

    let (a, ah) = c
        .create(ROOT_ID, "a", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    c.write(a.nodeid, ah.fh, 0, &[7u8; 4096]).unwrap();
    let set = SetattrIn {
        valid: fattr::MODE | fattr::SIZE,
        mode: S_IFREG | 0o600,
        size: 100,
        ..Default::default()
    };
    let attr = c.setattr(a.nodeid, set).unwrap().attr;
    let md = std::fs::metadata(p("a")).unwrap();
    assert_eq!((md.len(), md.mode() & 0o7777), (100, 0o600));
    assert_eq!((attr.size, attr.mode), (100, md.mode()));

    c.fallocate(a.nodeid, ah.fh, 0, 1 << 20, 0).unwrap();
    assert_eq!(std::fs::metadata(p("a")).unwrap().len(), 1 << 20);
    let (b, bh) = c
        .create(ROOT_ID, "b", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    c.write(b.nodeid, bh.fh, 0, &[1u8; 4096]).unwrap();
    let data = c.lseek(b.nodeid, bh.fh, 0, libc::SEEK_DATA as u32).unwrap();
    let hole = c.lseek(b.nodeid, bh.fh, 0, libc::SEEK_HOLE as u32).unwrap();
    assert_eq!((data, hole), (0, 4096));
    assert_eq!(
        errno(c.lseek(b.nodeid, bh.fh, 8192, libc::SEEK_DATA as u32)),
        Errno::ENXIO
    );
    c.release(a.nodeid, ah.fh, 0).unwrap();
    c.release(b.nodeid, bh.fh, 0).unwrap();

    c.rename(ROOT_ID, "a", ROOT_ID, "a2").unwrap();
    assert!(!p("a").exists() && p("a2").exists());
    assert_eq!(
        errno(c.rename2(ROOT_ID, "a2", ROOT_ID, "b", libc::RENAME_NOREPLACE)),
        Errno::EEXIST
    );
    c.rename2(ROOT_ID, "a2", ROOT_ID, "b", libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(
        std::fs::metadata(p("b")).unwrap().len(),
        1 << 20,
        "exchanged"
    );
    assert_eq!(std::fs::metadata(p("a2")).unwrap().len(), 4096, "exchanged");

    let l = c.link(b.nodeid, ROOT_ID, "b-link").unwrap();
    assert_eq!(l.attr.nlink, 2);
    assert_eq!(
        std::fs::metadata(p("b-link")).unwrap().ino(),
        std::fs::metadata(p("a2")).unwrap().ino(),
        "b's node is the file now called a2"
    );
    let s = c.symlink(ROOT_ID, "sym", "some/target").unwrap();
    assert_eq!(
        std::fs::read_link(p("sym")).unwrap().to_str(),
        Some("some/target")
    );
    assert_eq!(c.readlink(s.nodeid).unwrap(), b"some/target");
    let f = c
        .mknod(ROOT_ID, "fifo", libc::S_IFIFO | 0o644, 0, 0)
        .unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(p("fifo")).unwrap().file_type().is_fifo());

    c.setxattr(l.nodeid, "user.test", b"value", 0).unwrap();
    assert_eq!(
        c.getxattr(l.nodeid, "user.test", 0).unwrap(),
        XattrReply::Size(5)
    );
    assert_eq!(
        c.getxattr(l.nodeid, "user.test", 64).unwrap(),
        XattrReply::Data(b"value".to_vec())
    );
    match c.listxattr(l.nodeid, 1024).unwrap() {
        XattrReply::Data(list) => assert!(
            list.split(|&b| b == 0).any(|n| n == b"user.test"),
            "{list:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        host_getxattr(&p("b-link"), "user.test"),
        b"value",
        "host sees the xattr"
    );
    c.removexattr(l.nodeid, "user.test").unwrap();
    assert_eq!(errno(c.getxattr(l.nodeid, "user.test", 64)), Errno::ENODATA);

    c.batch_forget(&[(s.nodeid, 1), (f.nodeid, 1)]).unwrap();
    assert!(
        c.getattr(ROOT_ID, None).is_ok(),
        "still serving after forgets"
    );
}

/// IOCTL: the file attribute commands reach the host file of the open handle (files and, with
/// HAS_IOCTL_DIR, directories); the immutable flag needs a capability the daemon does not keep;
/// any other command is ENOTTY.
#[test]
fn file_attribute_ioctls_reach_the_host() {
    const GETFLAGS: u32 = 0x8008_6601;
    const SETFLAGS: u32 = 0x4008_6602;
    const FSGETXATTR: u32 = 0x801c_581f;
    const NODUMP: u32 = 0x40;
    const IMMUTABLE: u32 = 0x10;
    fn ioctl_in(fh: u64, cmd: u32, in_size: u32, out_size: u32) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&fh.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes()); // flags: restricted
        b.extend_from_slice(&cmd.to_ne_bytes());
        b.extend_from_slice(&0u64.to_ne_bytes()); // arg
        b.extend_from_slice(&in_size.to_ne_bytes());
        b.extend_from_slice(&out_size.to_ne_bytes());
        b
    }
    fn host_flags(path: &std::path::Path) -> u32 {
        let f = std::fs::File::open(path).unwrap();
        let mut flags = 0u32;
        // SAFETY: FS_IOC_GETFLAGS writes an int to the pointer.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&f),
                GETFLAGS as libc::Ioctl,
                &mut flags,
            )
        };
        assert_eq!(
            r,
            0,
            "host FS_IOC_GETFLAGS: {}",
            std::io::Error::last_os_error()
        );
        flags
    }
    let d = Daemon::start(&[]);
    std::fs::write(d.share.join("f"), b"x").unwrap();
    std::fs::create_dir(d.share.join("dir")).unwrap();
    let c = d.connect(d.config());
    let mut p = vhost_user_fs_client::InitParams::default();
    p.flags |= vhost_user_fs_client::abi::init_flags::HAS_IOCTL_DIR;
    let init = c.init_with(p).unwrap();
    assert_ne!(
        init.flags64() & vhost_user_fs_client::abi::init_flags::HAS_IOCTL_DIR,
        0,
        "HAS_IOCTL_DIR"
    );
    let get = |node: u64, fh: u64| {
        let r = c
            .call(FuseRequest::new(
                opcode::IOCTL,
                node,
                vec![ioctl_in(fh, GETFLAGS, 0, 4)],
                vec![16 + 4],
            ))
            .unwrap();
        assert_eq!(r.error, None, "GETFLAGS");
        assert_eq!(r.body.len(), 16 + 4, "fuse_ioctl_out + the int");
        u32::from_ne_bytes(r.body[16..20].try_into().unwrap())
    };
    let set = |node: u64, fh: u64, flags: u32| {
        c.call(FuseRequest::new(
            opcode::IOCTL,
            node,
            vec![ioctl_in(fh, SETFLAGS, 4, 0), flags.to_ne_bytes().to_vec()],
            vec![16],
        ))
        .unwrap()
        .error
    };
    for (name, is_dir) in [("f", false), ("dir", true)] {
        let path = d.share.join(name);
        let e = c.lookup(ROOT_ID, name).unwrap();
        let fh = if is_dir {
            c.opendir(e.nodeid, O_RDONLY).unwrap().fh
        } else {
            c.open(e.nodeid, O_RDONLY).unwrap().fh
        };
        let before = host_flags(&path);
        assert_eq!(get(e.nodeid, fh), before, "{name}: the host's flags");
        assert_eq!(
            set(e.nodeid, fh, before | NODUMP),
            None,
            "{name}: set nodump"
        );
        assert_eq!(
            host_flags(&path),
            before | NODUMP,
            "{name}: nodump on the host"
        );
        assert_eq!(get(e.nodeid, fh), before | NODUMP, "{name}");
        assert_eq!(
            set(e.nodeid, fh, before | IMMUTABLE),
            Some(Errno::EPERM),
            "{name}: immutable needs CAP_LINUX_IMMUTABLE"
        );
        assert_eq!(set(e.nodeid, fh, before), None, "{name}: back");
        assert_eq!(host_flags(&path), before, "{name}");
        // struct fsxattr: fsx_xflags first; answered, 28 bytes.
        let r = c
            .call(FuseRequest::new(
                opcode::IOCTL,
                e.nodeid,
                vec![ioctl_in(fh, FSGETXATTR, 0, 28)],
                vec![16 + 28],
            ))
            .unwrap();
        assert_eq!(
            (r.error, r.body.len()),
            (None, 16 + 28),
            "{name}: FSGETXATTR"
        );
        // A wrong handle, a short argument, another command.
        let bad = FuseRequest::new(
            opcode::IOCTL,
            e.nodeid,
            vec![ioctl_in(fh + 1000, GETFLAGS, 0, 4)],
            vec![20],
        );
        assert_eq!(c.call(bad).unwrap().error, Some(Errno::EBADF), "{name}");
        let short = FuseRequest::new(
            opcode::IOCTL,
            e.nodeid,
            vec![ioctl_in(fh, SETFLAGS, 2, 0), vec![0, 0]],
            vec![16],
        );
        assert_eq!(c.call(short).unwrap().error, Some(Errno::EINVAL), "{name}");
        let fionread = FuseRequest::new(
            opcode::IOCTL,
            e.nodeid,
            vec![ioctl_in(fh, libc::FIONREAD as u32, 0, 4)],
            vec![20],
        );
        assert_eq!(
            c.call(fionread).unwrap().error,
            Some(Errno(libc::ENOTTY)),
            "{name}"
        );
    }
}
