//! `--max-inodes` and `--max-bytes` (issue 13): the share's quota, answered by the daemon with
//! EDQUOT, reported by STATFS, counting what the share held at start, given back by removals and
//! truncation, and kept by parallel writers. Every limit is checked on the host too.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::{fattr, opcode, SetattrIn, ROOT_ID};
use vhost_user_fs_client::{Creds, Errno, FuseOps, FuseRequest};

const EDQUOT: Errno = Errno(libc::EDQUOT);
const RW_CREATE: u32 = (libc::O_RDWR | libc::O_CREAT) as u32;
const FILE: u32 = libc::S_IFREG | 0o644;

/// Bytes allocated to regular files under `dir` (each inode once), as the quota counts them.
fn host_bytes(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() && seen.insert(m.ino()) {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

fn tmpfile(parent: u64) -> FuseRequest {
    FuseRequest::tmpfile(parent, libc::O_RDWR as u32, 0o600, 0)
}

/// The inode quota: the share's 3 inodes count; 3 more are made, then every kind of making is
/// EDQUOT (LINK and opening an existing name are not: they make no inode); STATFS reports the
/// limit; the last link of a file, and a directory, give their inode back.
#[test]
fn inode_limit_counts_the_share_and_is_edquot() {
    // Made before the daemon measures: the share holds 3 inodes at start.
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir_all(share.join("sub")).unwrap();
    std::fs::write(share.join("a"), b"a").unwrap();
    std::fs::write(share.join("sub/b"), b"b").unwrap();
    let d = Daemon::start_on(&share, &["--max-inodes", "6"]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let st = c.statfs(ROOT_ID).unwrap();
    assert_eq!(
        (st.files, st.ffree),
        (6, 3),
        "STATFS: the quota and what is left"
    );

    let (e, o) = c.create(ROOT_ID, "new", RW_CREATE, FILE, 0).unwrap();
    c.release(e.nodeid, o.fh, 0).unwrap();
    c.mkdir(ROOT_ID, "dir", 0o755, 0).unwrap();
    c.symlink(ROOT_ID, "ln", "a").unwrap();
    // At the limit: everything that makes an inode.
    let st = c.statfs(ROOT_ID).unwrap();
    assert_eq!((st.files, st.ffree), (6, 0));
    let fifo = libc::S_IFIFO | 0o644;
    assert_eq!(errno(c.create(ROOT_ID, "x", RW_CREATE, FILE, 0)), EDQUOT);
    assert_eq!(errno(c.mkdir(ROOT_ID, "x", 0o755, 0)), EDQUOT);
    assert_eq!(errno(c.mknod(ROOT_ID, "x", fifo, 0, 0)), EDQUOT);
    assert_eq!(errno(c.symlink(ROOT_ID, "x", "a")), EDQUOT);
    assert_eq!(c.call(tmpfile(ROOT_ID)).unwrap().error, Some(EDQUOT));
    assert!(!d.share.join("x").exists());
    // No new inode: a link, and CREATE of a name that exists (not O_EXCL).
    let a = c.lookup(ROOT_ID, "a").unwrap();
    c.link(a.nodeid, ROOT_ID, "a2").unwrap();
    let (e, o) = c.create(ROOT_ID, "a", RW_CREATE, FILE, 0).unwrap();
    assert_eq!(e.nodeid, a.nodeid);
    c.release(e.nodeid, o.fh, 0).unwrap();
    let excl = RW_CREATE | libc::O_EXCL as u32;
    assert_eq!(errno(c.create(ROOT_ID, "a", excl, FILE, 0)), Errno::EEXIST);
    // One link of two goes: nothing freed; the last one: one inode.
    c.unlink(ROOT_ID, "a2").unwrap();
    assert_eq!(errno(c.mkdir(ROOT_ID, "x", 0o755, 0)), EDQUOT);
    c.unlink(ROOT_ID, "a").unwrap();
    c.mkdir(ROOT_ID, "x", 0o755, 0).unwrap();
    assert_eq!(errno(c.mkdir(ROOT_ID, "y", 0o755, 0)), EDQUOT);
    c.rmdir(ROOT_ID, "dir").unwrap();
    c.mknod(ROOT_ID, "p", fifo, 0, 0).unwrap();
    // RENAME over a file frees the one replaced.
    c.rename(ROOT_ID, "ln", ROOT_ID, "new").unwrap();
    c.symlink(ROOT_ID, "ln2", "x").unwrap();
    assert_eq!(errno(c.symlink(ROOT_ID, "ln3", "x")), EDQUOT);
    let log = d.take_log();
    assert!(!log.contains("panicked"), "{log}");
}

/// The byte quota: a 300 KiB file in the share counts; writes of 100,000 bytes go until one is
/// cut short at the limit and the next is EDQUOT, and the host holds no byte past the limit;
/// overwriting allocated blocks still works; STATFS shows the limit; truncation, O_TRUNC, a
/// punched hole and unlinking give space back; FALLOCATE and COPY_FILE_RANGE are held too.
#[test]
fn byte_limit_cuts_writes_short_then_edquot_and_frees_give_room() {
    const LIMIT: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("old"), vec![7u8; 300 << 10]).unwrap();
    let d = Daemon::start_on(&share, &["--max-bytes", "1M"]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let existing = host_bytes(&share);
    assert!(existing >= 300 << 10);

    let (e, o) = c.create(ROOT_ID, "f", RW_CREATE, FILE, 0).unwrap();
    let chunk = vec![1u8; 100_000];
    let mut offset = 0u64;
    let mut short = None;
    for _ in 0..20 {
        match c.write(e.nodeid, o.fh, offset, &chunk) {
            Ok(n) if n as usize == chunk.len() => offset += u64::from(n),
            Ok(n) => {
                offset += u64::from(n);
                short = Some(n);
                break;
            }
            Err(err) => panic!("a write before the limit failed: {err:?}"),
        }
    }
    let short = short.expect("a write was cut short at the limit");
    assert!(short > 0 && (short as usize) < chunk.len());
    assert_eq!(errno(c.write(e.nodeid, o.fh, offset, &chunk)), EDQUOT);
    assert_eq!(errno(c.write(e.nodeid, o.fh, offset, b"x")), EDQUOT);
    let used = host_bytes(&share);
    assert!(used <= LIMIT, "{used} bytes on the host, limit {LIMIT}");
    assert!(
        used > LIMIT - 8192,
        "the quota was used up to its last blocks: {used}"
    );
    assert_eq!(std::fs::metadata(share.join("f")).unwrap().len(), offset);
    // Overwriting what is allocated allocates nothing: allowed at the limit.
    assert_eq!(c.write(e.nodeid, o.fh, 0, &[2u8; 4096]).unwrap(), 4096);
    // STATFS: the limit, nothing left.
    let st = c.statfs(ROOT_ID).unwrap();
    assert_eq!(st.blocks * u64::from(st.frsize), LIMIT);
    assert!(st.bfree * u64::from(st.frsize) < 8192, "{st:?}");
    assert_eq!(st.bavail, st.bfree);
    // FALLOCATE past the limit: EDQUOT, nothing allocated.
    let fallocate = |mode: u32, off: u64, len: u64| c.fallocate(e.nodeid, o.fh, off, len, mode);
    assert_eq!(errno(fallocate(0, offset, 64 << 10)), EDQUOT);
    assert_eq!(host_bytes(&share), used);

    // A punched hole gives its blocks back: writing there again works.
    let punch = (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u32;
    fallocate(punch, 0, 200_704).unwrap();
    assert!(host_bytes(&share) <= used - 200_704);
    assert_eq!(c.write(e.nodeid, o.fh, 0, &chunk).unwrap(), 100_000);
    // Truncation gives back: all of f's blocks, then a write of 200,000 bytes fits.
    let trunc = SetattrIn {
        valid: fattr::SIZE,
        size: 0,
        ..Default::default()
    };
    c.setattr(e.nodeid, trunc).unwrap();
    assert_eq!(
        c.write(e.nodeid, o.fh, 0, &[3u8; 200_000]).unwrap(),
        200_000
    );
    // Growing by truncation allocates nothing on ext4/tmpfs: allowed, sparse.
    let grow = SetattrIn {
        valid: fattr::SIZE,
        size: 10 << 30,
        ..Default::default()
    };
    c.setattr(e.nodeid, grow).unwrap();
    assert!(host_bytes(&share) <= LIMIT);
    c.setattr(e.nodeid, trunc).unwrap();
    c.release(e.nodeid, o.fh, 0).unwrap();

    // COPY_FILE_RANGE from "old" (300 KiB) is cut to what fits.
    let fill = LIMIT - host_bytes(&share) - (100 << 10);
    let (g, go) = c.create(ROOT_ID, "g", RW_CREATE, FILE, 0).unwrap();
    let mut at = 0;
    while at < fill {
        let n = (fill - at).min(128 << 10);
        at += u64::from(
            c.write(g.nodeid, go.fh, at, &vec![4u8; n as usize])
                .unwrap(),
        );
    }
    let old = c.lookup(ROOT_ID, "old").unwrap();
    let oo = c.open(old.nodeid, libc::O_RDONLY as u32).unwrap();
    let (h, ho) = c.create(ROOT_ID, "h", RW_CREATE, FILE, 0).unwrap();
    let mut arg = Vec::new();
    for v in [oo.fh, 0, h.nodeid, ho.fh, 0, 300 << 10, 0] {
        arg.extend_from_slice(&v.to_ne_bytes());
    }
    let copy = FuseRequest::new(opcode::COPY_FILE_RANGE, old.nodeid, vec![arg], vec![8]);
    let reply = c.call(copy).unwrap();
    assert_eq!(reply.error, None, "copy: {reply:?}");
    let copied = u64::from_ne_bytes(reply.ok().unwrap()[..8].try_into().unwrap());
    assert!(copied > 0 && copied <= 100 << 10, "copied {copied}");
    assert!(host_bytes(&share) <= LIMIT);
    // O_TRUNC and UNLINK give back: g is emptied by O_TRUNC, h unlinked.
    c.release(g.nodeid, go.fh, 0).unwrap();
    let before = host_bytes(&share);
    let go = c
        .open(g.nodeid, (libc::O_RDWR | libc::O_TRUNC) as u32)
        .unwrap();
    assert!(host_bytes(&share) < before - (400 << 10));
    c.release(h.nodeid, ho.fh, 0).unwrap();
    c.unlink(ROOT_ID, "h").unwrap();
    let room = LIMIT - host_bytes(&share);
    assert!(room > 600 << 10, "{room}");
    for k in 0..4 {
        let n = c.write(g.nodeid, go.fh, k * (128 << 10), &[5u8; 128 << 10]);
        assert_eq!(n.unwrap(), 128 << 10, "{k}");
    }
    c.release(g.nodeid, go.fh, 0).unwrap();
    c.release(old.nodeid, oo.fh, 0).unwrap();
    let log = d.take_log();
    assert!(!log.contains("panicked"), "{log}");
}

/// A file the guest unlinks while it holds it open keeps its blocks on the host until it is
/// released: they count until then, and not after; so does an O_TMPFILE never linked, and an
/// unlinked file still open when the session ends.
#[test]
fn an_open_unlinked_file_counts_until_released() {
    let d = Daemon::start(&["--max-bytes=512K"]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let (e, o) = c.create(ROOT_ID, "f", RW_CREATE, FILE, 0).unwrap();
    assert_eq!(
        c.write(e.nodeid, o.fh, 0, &[1u8; 400 << 10]).unwrap(),
        400 << 10
    );
    c.unlink(ROOT_ID, "f").unwrap();
    // Still held: a new file gets only the rest.
    let (g, go) = c.create(ROOT_ID, "g", RW_CREATE, FILE, 0).unwrap();
    let n = c.write(g.nodeid, go.fh, 0, &[2u8; 400 << 10]).unwrap();
    assert!(n <= 112 << 10, "wrote {n}");
    c.release(e.nodeid, o.fh, 0).unwrap();
    c.forget(e.nodeid, 1).unwrap();
    // Released: its 400 KiB are free again.
    let more = c.write(g.nodeid, go.fh, u64::from(n), &[2u8; 300 << 10]);
    assert_eq!(more.unwrap(), 300 << 10);
    c.release(g.nodeid, go.fh, 0).unwrap();
    c.unlink(ROOT_ID, "g").unwrap();

    // An O_TMPFILE never linked: counted while open, given back at its RELEASE.
    let reply = c.call(tmpfile(ROOT_ID)).unwrap();
    assert_eq!(reply.error, None);
    let body = reply.ok().unwrap();
    let (t_node, t_fh) = (
        u64::from_ne_bytes(body[..8].try_into().unwrap()),
        u64::from_ne_bytes(body[128..136].try_into().unwrap()),
    );
    assert_eq!(
        c.write(t_node, t_fh, 0, &[3u8; 400 << 10]).unwrap(),
        400 << 10
    );
    let (h, ho) = c.create(ROOT_ID, "h", RW_CREATE, FILE, 0).unwrap();
    assert!(c.write(h.nodeid, ho.fh, 0, &[4u8; 400 << 10]).unwrap() <= 112 << 10);
    c.release(t_node, t_fh, 0).unwrap();
    c.forget(t_node, 1).unwrap();
    c.release(h.nodeid, ho.fh, 0).unwrap();
    c.unlink(ROOT_ID, "h").unwrap();

    // An unlinked file held open when the session ends (the guest rebooted): given back too.
    let (e, o) = c.create(ROOT_ID, "f", RW_CREATE, FILE, 0).unwrap();
    assert_eq!(
        c.write(e.nodeid, o.fh, 0, &[1u8; 400 << 10]).unwrap(),
        400 << 10
    );
    c.unlink(ROOT_ID, "f").unwrap();
    c.destroy().unwrap();
    c.init().unwrap();
    let (g, go) = c.create(ROOT_ID, "g", RW_CREATE, FILE, 0).unwrap();
    assert_eq!(
        c.write(g.nodeid, go.fh, 0, &[2u8; 400 << 10]).unwrap(),
        400 << 10
    );
    assert!(host_bytes(&d.share) <= 512 << 10);
}

/// 64 writes of 128 KiB to 16 files, all in flight at once over 4 request queues, against a
/// 4 MiB quota: the writes that succeed add up to no more than the limit, and neither does what
/// the host holds.
#[test]
fn parallel_writers_cannot_pass_the_limit() {
    const LIMIT: u64 = 4 << 20;
    const CHUNK: usize = 128 << 10;
    let d = Daemon::start(&["--max-bytes=4M", "--thread-pool-size=16"]);
    let mut cfg = d.config();
    cfg.request_queues = 4;
    cfg.memory_regions = vec![32 << 20];
    let c = d.connect(cfg);
    c.init().unwrap();
    let files: Vec<(u64, u64)> = (0..16)
        .map(|i| {
            let (e, o) = c
                .create(ROOT_ID, format!("f{i}"), RW_CREATE, FILE, 0)
                .unwrap();
            (e.nodeid, o.fh)
        })
        .collect();
    let data = vec![9u8; CHUNK];
    let tokens: Vec<_> = (0..64)
        .map(|k| {
            let (node, fh) = files[k % 16];
            let req = FuseRequest::write(node, fh, ((k / 16) * CHUNK) as u64, &data);
            c.submit(1 + k % 4, &req, Creds::root()).unwrap()
        })
        .collect();
    let mut written = 0u64;
    let mut refused = 0;
    for t in tokens {
        let r = c.wait(t).unwrap();
        match r.error {
            None => written += u64::from(r.written().unwrap()),
            Some(e) => {
                assert_eq!(e, EDQUOT);
                refused += 1;
            }
        }
    }
    let used = host_bytes(&d.share);
    assert!(written <= LIMIT, "{written} bytes written, limit {LIMIT}");
    assert!(used <= LIMIT, "{used} bytes on the host, limit {LIMIT}");
    assert!(refused >= 32, "{refused} refused");
    assert!(
        written >= LIMIT - 16 * 4096,
        "the quota was used: {written}"
    );
    let st = c.statfs(ROOT_ID).unwrap();
    assert_eq!(st.blocks * u64::from(st.frsize), LIMIT);
}

/// With `--inode-file-handles=mandatory` (nodes hold no descriptor) the quota is the same: the
/// inode limit, the byte limit, and an unlinked open file given back at its release.
#[test]
fn quota_with_file_handles() {
    let d = Daemon::start(&[
        "--inode-file-handles=mandatory",
        "--max-inodes=2",
        "--max-bytes=256K",
    ]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let (e, o) = c.create(ROOT_ID, "f", RW_CREATE, FILE, 0).unwrap();
    c.mkdir(ROOT_ID, "d", 0o755, 0).unwrap();
    assert_eq!(errno(c.create(ROOT_ID, "g", RW_CREATE, FILE, 0)), EDQUOT);
    assert_eq!(
        c.write(e.nodeid, o.fh, 0, &[1u8; 200 << 10]).unwrap(),
        200 << 10
    );
    let n = c
        .write(e.nodeid, o.fh, 200 << 10, &[1u8; 200 << 10])
        .unwrap();
    assert_eq!(n, 56 << 10, "cut to the limit");
    c.unlink(ROOT_ID, "f").unwrap();
    assert_eq!(errno(c.create(ROOT_ID, "g", RW_CREATE, FILE, 0)), EDQUOT);
    c.release(e.nodeid, o.fh, 0).unwrap();
    let (g, go) = c.create(ROOT_ID, "g", RW_CREATE, FILE, 0).unwrap();
    assert_eq!(
        c.write(g.nodeid, go.fh, 0, &[2u8; 256 << 10]).unwrap(),
        256 << 10
    );
    assert!(host_bytes(&d.share) <= 256 << 10);
}
