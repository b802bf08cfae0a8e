//! Faults of the host and of the frontend: the backing filesystem full, the shared directory
//! renamed or removed under a running daemon, the guest killed mid-write. Each must end in an
//! errno for the guest or a clean exit, never a crash, a hang or corrupted data.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{Creds, Errno, FuseOps, FuseRequest};

const CREATE_EXCL: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const S_IFREG: u32 = libc::S_IFREG;
const S_IFDIR: u32 = libc::S_IFDIR;

/// A small tmpfs mounted on `dir` for the length of a test (unmounted on drop).
struct SmallFs<'a>(&'a Path);

impl<'a> SmallFs<'a> {
    /// Mounts a tmpfs of `size` bytes with `inodes` inodes, or `None` when this process may not
    /// mount (not root): the caller then skips, saying so.
    fn mount(dir: &'a Path, size: u64, inodes: u64) -> Option<Self> {
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},nr_inodes={inodes},mode=0755"))
            .arg("tmpfs")
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for SmallFs<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0)
            .status();
    }
}

/// The backing filesystem fills up: WRITE gets ENOSPC (the bytes that fit are reported as
/// written, the rest refused), CREATE gets ENOSPC once the inodes run out, and the daemon keeps
/// serving: after an UNLINK frees space, writes succeed again. Both sandbox modes that see the
/// host's mounts differently.
#[test]
fn a_full_backing_filesystem_is_enospc_and_the_daemon_keeps_serving() {
    for sandbox in ["namespace", "none"] {
        let root = tempfile::tempdir().unwrap();
        let share = root.path().join("share");
        std::fs::create_dir(&share).unwrap();
        let Some(_fs) = SmallFs::mount(&share, 1 << 20, 64) else {
            eprintln!("SKIP: cannot mount a tmpfs (needs root); the ENOSPC test did not run");
            return;
        };
        let mut d = Daemon::start_on(&share, &["--sandbox", sandbox]);
        let c = d.connect(d.config());
        c.init().unwrap();
        let (e, o) = c
            .create(ROOT_ID, "fill", CREATE_EXCL, S_IFREG | 0o644, 0)
            .unwrap();
        let chunk = vec![0xabu8; 64 << 10];
        let mut written = 0u64;
        let full = loop {
            match c.write(e.nodeid, o.fh, written, &chunk) {
                Ok(n) => {
                    assert!(n > 0, "{sandbox}: a zero-length write");
                    written += u64::from(n);
                    assert!(
                        written <= 2 << 20,
                        "{sandbox}: 1 MiB tmpfs took {written} bytes"
                    );
                }
                Err(err) => break err.errno(),
            }
        };
        assert_eq!(full, Some(Errno::ENOSPC), "{sandbox}: write on a full fs");
        assert_eq!(
            std::fs::metadata(share.join("fill")).unwrap().len(),
            written,
            "{sandbox}: the host file holds exactly what was acknowledged"
        );
        // Still serving while full.
        assert_eq!(c.getattr(e.nodeid, Some(o.fh)).unwrap().attr.size, written);
        assert!(
            c.statfs(ROOT_ID).unwrap().bfree <= 1,
            "{sandbox}: statfs says full"
        );
        // Inodes run out too.
        let mut made = 0;
        let inodes = loop {
            match c.mkdir(ROOT_ID, format!("d{made}"), 0o755, 0) {
                Ok(_) => made += 1,
                Err(err) => break err.errno(),
            }
            assert!(
                made < 100,
                "{sandbox}: 64-inode tmpfs took {made} directories"
            );
        };
        assert_eq!(
            inodes,
            Some(Errno::ENOSPC),
            "{sandbox}: mkdir with no inodes left"
        );
        // Free space and an inode, and carry on.
        c.release(e.nodeid, o.fh, 0).unwrap();
        c.unlink(ROOT_ID, "fill").unwrap();
        c.forget(e.nodeid, 1).unwrap();
        c.rmdir(ROOT_ID, "d0").unwrap();
        let (e2, o2) = c
            .create(ROOT_ID, "after", CREATE_EXCL, S_IFREG | 0o644, 0)
            .expect("create once space and an inode are free");
        assert_eq!(
            c.write(e2.nodeid, o2.fh, 0, &chunk).unwrap() as usize,
            chunk.len()
        );
        assert!(std::fs::read(share.join("after")).unwrap() == chunk);
        d.assert_alive(sandbox);
    }
}

/// The shared directory is renamed, then removed, on the host while a daemon serves it: the
/// rename changes nothing for the guest (the daemon holds the directory, not its path); after
/// the removal, operations that need the directory fail with an errno (ENOENT for new names),
/// those on open files keep working, and the daemon neither crashes nor hangs.
#[test]
fn the_share_renamed_or_removed_under_a_running_daemon() {
    for sandbox in ["namespace", "none"] {
        let root = tempfile::tempdir().unwrap();
        let share = root.path().join("share");
        std::fs::create_dir(&share).unwrap();
        std::fs::write(share.join("kept"), b"kept data").unwrap();
        let mut d = Daemon::start_on(&share, &["--sandbox", sandbox]);
        let c = d.connect(d.config());
        c.init().unwrap();
        let kept = c.lookup(ROOT_ID, "kept").unwrap();
        let kept_fh = c.open(kept.nodeid, libc::O_RDWR as u32).unwrap().fh;

        let moved = root.path().join("moved");
        std::fs::rename(&share, &moved).unwrap();
        let (e, o) = c
            .create(ROOT_ID, "after-rename", CREATE_EXCL, S_IFREG | 0o644, 0)
            .expect("create after the share was renamed");
        c.write(e.nodeid, o.fh, 0, b"x").unwrap();
        assert_eq!(
            std::fs::read(moved.join("after-rename")).unwrap(),
            b"x",
            "{sandbox}"
        );
        c.release(e.nodeid, o.fh, 0).unwrap();

        std::fs::remove_dir_all(&moved).unwrap();
        assert_eq!(
            errno(c.create(ROOT_ID, "after-rm", CREATE_EXCL, S_IFREG | 0o644, 0)),
            Errno::ENOENT,
            "{sandbox}: create in a removed directory"
        );
        assert_eq!(
            errno(c.mkdir(ROOT_ID, "dir-after-rm", 0o755, 0)),
            Errno::ENOENT,
            "{sandbox}: mkdir in a removed directory"
        );
        assert_eq!(errno(c.lookup(ROOT_ID, "kept")), Errno::ENOENT, "{sandbox}");
        let root_attr = c
            .getattr(ROOT_ID, None)
            .expect("GETATTR of the removed root");
        assert_eq!(root_attr.attr.mode & libc::S_IFMT, S_IFDIR);
        assert_eq!(
            root_attr.attr.nlink, 0,
            "{sandbox}: the root is gone on the host"
        );
        // The file that was open still reads and writes (it is unlinked, not gone).
        assert_eq!(c.read(kept.nodeid, kept_fh, 0, 64).unwrap(), b"kept data");
        assert_eq!(c.write(kept.nodeid, kept_fh, 0, b"KEPT").unwrap(), 4);
        c.release(kept.nodeid, kept_fh, 0).unwrap();
        // Listing a removed directory: nothing, or ENOENT as the host's getdents says.
        match c.read_dir_names(ROOT_ID) {
            Ok(names) => assert!(
                names.iter().all(|n| n == b"." || n == b".."),
                "{sandbox}: {names:?}"
            ),
            Err(err) => assert_eq!(err.errno(), Some(Errno::ENOENT), "{sandbox}"),
        }
        d.assert_alive(sandbox);
    }
}

/// The guest dies in the middle of large writes (its frontend disconnects with them in flight):
/// the daemon exits 0, a new daemon takes over the same share and serves the next frontend, and
/// every write either reached the file whole or not at all.
#[test]
fn a_guest_killed_mid_write_then_a_new_daemon_takes_over() {
    const CHUNK: usize = 256 << 10;
    const N: usize = 48;
    let mut first = Daemon::start(&["--thread-pool-size", "16"]);
    let mut cfg = first.config();
    cfg.request_queues = 2;
    cfg.memory_regions = vec![64 << 20];
    let c = first.connect(cfg);
    c.init().unwrap();
    let (e, o) = c
        .create(ROOT_ID, "victim", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    for i in 0..N {
        let chunk = vec![(i % 250) as u8 + 1; CHUNK];
        let req = FuseRequest::write(e.nodeid, o.fh, (i * CHUNK) as u64, &chunk);
        c.submit(1 + i % 2, &req, Creds::root()).unwrap();
    }
    drop(c); // the guest is gone
    let (code, log) = first
        .wait_exit_within(Duration::from_secs(10))
        .expect("the daemon still runs 10 s after its frontend died");
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("panicked"), "{log}");

    let mut second = Daemon::start_on(&first.share, &[]);
    let c = second.connect(second.config());
    c.init().unwrap();
    let e = c.lookup(ROOT_ID, "victim").unwrap();
    let host = std::fs::read(first.share.join("victim")).unwrap();
    assert_eq!(e.attr.size as usize, host.len());
    for (i, part) in host.chunks(CHUNK).enumerate() {
        let want = (i % 250) as u8 + 1;
        assert!(
            part.iter().all(|&b| b == want) || part.iter().all(|&b| b == 0),
            "chunk {i} is torn"
        );
    }
    let o = c.open(e.nodeid, libc::O_RDWR as u32).unwrap();
    assert_eq!(c.write(e.nodeid, o.fh, 0, b"next guest").unwrap(), 10);
    c.release(e.nodeid, o.fh, 0).unwrap();
    second.assert_alive("the daemon that took over");
}
