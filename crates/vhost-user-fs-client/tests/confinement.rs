//! Confinement (issue 4): every way out of the share a guest could try, under each `--sandbox`
//! mode (the file server must hold even with `--sandbox none`); the fd quota; the seccomp filter
//! and the capabilities of the process that serves the guest.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::time::Duration;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::{fattr, SetattrIn, ROOT_ID};
use vhost_user_fs_client::{Creds, Errno, FsClient, FuseOps, FuseRequest};

const O_RDONLY: u32 = libc::O_RDONLY as u32;
const O_RDWR: u32 = libc::O_RDWR as u32;
const O_CREAT: u32 = libc::O_CREAT as u32;
const S_IFMT: u32 = libc::S_IFMT;

/// Everything next to the share (names, sizes, modes, mtimes, link counts), recursively except
/// for the share itself: it must not change whatever the guest does.
fn outside_snapshot(share: &Path) -> BTreeMap<String, (u64, u32, i64, u64)> {
    let parent = share.parent().unwrap();
    let mut out = BTreeMap::new();
    let mut stack = vec![parent.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p == share || p.extension().is_some_and(|x| x == "sock") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.insert(
                p.display().to_string(),
                (
                    m.size(),
                    m.mode(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000,
                    m.nlink(),
                ),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// A request that must fail fast (never block a daemon thread) with one of `allowed`.
fn fails_fast(c: &FsClient, req: FuseRequest, allowed: &[Errno], what: &str) {
    let t = c.submit(1, &req, Creds::root()).unwrap();
    let r = c
        .wait_timeout(t, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{what}: no reply within 5 s ({e})"));
    let e = errno(r.empty());
    assert!(
        allowed.contains(&e),
        "{what}: got {e:?}, expected one of {allowed:?}"
    );
}

fn escapes_fail(sandbox: &str) {
    let d = Daemon::start(&["--sandbox", sandbox]);
    let outside_dir = d.share.parent().unwrap().join("outside");
    std::fs::create_dir(&outside_dir).unwrap();
    std::fs::write(outside_dir.join("secret"), b"host only").unwrap();
    // Host-made traps inside the share: symlinks out, a FIFO, a socket.
    symlink(&outside_dir, d.share.join("to_outside_dir")).unwrap();
    symlink(outside_dir.join("secret"), d.share.join("to_secret")).unwrap();
    symlink("../outside/secret", d.share.join("relative_out")).unwrap();
    symlink("/proc/self/fd/3", d.share.join("magic")).unwrap();
    std::fs::create_dir(d.share.join("sub")).unwrap();
    let fifo = std::ffi::CString::new(d.share.join("fifo").into_os_string().into_encoded_bytes());
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.unwrap().as_ptr(), 0o666) }, 0);
    let _sock = std::os::unix::net::UnixListener::bind(d.share.join("sock")).unwrap();
    let before = outside_snapshot(&d.share);

    let c = d.connect(d.config());
    c.init().unwrap();
    let share_ino = std::fs::metadata(&d.share).unwrap().ino();

    // ".." at the root is the root; from a subdirectory it stops at the root too.
    assert_eq!(
        c.lookup(ROOT_ID, "..").unwrap().attr.ino,
        share_ino,
        "{sandbox}"
    );
    let sub = c.lookup(ROOT_ID, "sub").unwrap();
    let up = c.lookup(sub.nodeid, "..").unwrap();
    assert_eq!(up.attr.ino, share_ino, "{sandbox}: sub/..");
    assert_eq!(
        c.lookup(up.nodeid, "..").unwrap().attr.ino,
        share_ino,
        "{sandbox}: sub/../.."
    );

    // Names with a slash, or "." / ".." where a new name is made: EINVAL.
    for name in ["../outside", "sub/../../outside", "/etc", "a/b"] {
        assert_eq!(
            errno(c.lookup(ROOT_ID, name)),
            Errno::EINVAL,
            "{sandbox}: lookup {name}"
        );
    }
    for name in ["..", ".", "../escaped", "x/y"] {
        assert_eq!(
            errno(c.mkdir(ROOT_ID, name, 0o755, 0)),
            Errno::EINVAL,
            "{sandbox}: mkdir {name}"
        );
        assert_eq!(
            errno(c.create(ROOT_ID, name, O_RDWR | O_CREAT, libc::S_IFREG | 0o644, 0)),
            Errno::EINVAL,
            "{sandbox}: create {name}"
        );
        assert_eq!(
            errno(c.symlink(ROOT_ID, name, "/etc/passwd")),
            Errno::EINVAL,
            "{sandbox}: symlink {name}"
        );
        assert_eq!(
            errno(c.mknod(ROOT_ID, name, libc::S_IFIFO | 0o644, 0, 0)),
            Errno::EINVAL,
            "{sandbox}: mknod {name}"
        );
        assert_eq!(
            errno(c.link(sub.nodeid, ROOT_ID, name)),
            Errno::EINVAL,
            "{sandbox}: link {name}"
        );
        assert_eq!(
            errno(c.rename(ROOT_ID, "sub", ROOT_ID, name)),
            Errno::EINVAL,
            "{sandbox}: rename to {name}"
        );
    }

    // Symlinks out are returned as symlinks and never followed by the daemon.
    for (name, target) in [
        ("to_outside_dir", outside_dir.to_str().unwrap()),
        ("relative_out", "../outside/secret"),
        ("magic", "/proc/self/fd/3"),
    ] {
        let e = c.lookup(ROOT_ID, name).unwrap();
        assert_eq!(
            e.attr.mode & S_IFMT,
            libc::S_IFLNK,
            "{sandbox}: {name} is a symlink"
        );
        assert_eq!(
            c.readlink(e.nodeid).unwrap(),
            target.as_bytes(),
            "{sandbox}: {name}"
        );
        assert_eq!(
            errno(c.lookup(e.nodeid, "secret")),
            Errno::ENOTDIR,
            "{sandbox}: lookup through {name}"
        );
        assert_eq!(
            errno(c.mkdir(e.nodeid, "planted", 0o755, 0)),
            Errno::ENOTDIR,
            "{sandbox}: mkdir through {name}"
        );
        // Opening the symlink node (a hostile guest can send it) must not reach the target.
        let e2 = errno(c.open(e.nodeid, O_RDWR));
        assert!(
            [Errno::EBADF, Errno::ELOOP, Errno::EACCES].contains(&e2),
            "{sandbox}: open {name}: {e2:?}"
        );
        // Nor may truncating it through SETATTR.
        let trunc = SetattrIn {
            valid: fattr::SIZE,
            size: 0,
            ..Default::default()
        };
        assert!(
            c.setattr(e.nodeid, trunc).is_err(),
            "{sandbox}: truncate {name}"
        );
    }
    let secret = c.lookup(ROOT_ID, "to_secret").unwrap();
    // CREATE over an existing symlink opens nothing (O_CREAT never follows it here).
    assert!(
        c.create(
            ROOT_ID,
            "to_secret",
            O_RDWR | O_CREAT,
            libc::S_IFREG | 0o644,
            0
        )
        .is_err(),
        "{sandbox}: create over a symlink"
    );
    // A hard link of the symlink links the symlink, not the file outside.
    let hl = c.link(secret.nodeid, ROOT_ID, "hardlink").unwrap();
    assert_eq!(
        hl.attr.mode & S_IFMT,
        libc::S_IFLNK,
        "{sandbox}: hard link of a symlink"
    );
    // Node ids the daemon never gave out cannot name anything.
    assert_eq!(
        errno(c.link(987_654, ROOT_ID, "stolen")),
        Errno::EBADF,
        "{sandbox}"
    );
    assert_eq!(errno(c.getattr(987_654, None)), Errno::EBADF, "{sandbox}");

    // Special files: looked up, never opened for I/O (a FIFO would block a daemon thread).
    for name in ["fifo", "sock"] {
        let e = c.lookup(ROOT_ID, name).unwrap();
        for flags in [O_RDONLY, O_RDWR, O_RDONLY | libc::O_NONBLOCK as u32] {
            fails_fast(
                &c,
                FuseRequest::open(e.nodeid, flags),
                &[Errno::EBADF, Errno::ENXIO, Errno::EACCES],
                &format!("{sandbox}: open {name} flags {flags:#o}"),
            );
        }
        let trunc = SetattrIn {
            valid: fattr::SIZE,
            size: 0,
            ..Default::default()
        };
        fails_fast(
            &c,
            FuseRequest::setattr(e.nodeid, trunc),
            &[Errno::EBADF, Errno::EINVAL, Errno::ENXIO],
            &format!("{sandbox}: truncate {name}"),
        );
    }
    // A device node the guest makes (CAP_MKNOD is kept) is inert: the daemon will not open it.
    let null = c
        .mknod(
            ROOT_ID,
            "null",
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3) as u32,
            0,
        )
        .unwrap();
    fails_fast(
        &c,
        FuseRequest::open(null.nodeid, O_RDWR),
        &[Errno::EBADF, Errno::EACCES],
        &format!("{sandbox}: open a device node"),
    );

    // The share still works, and nothing outside it changed.
    let (f, o) = c
        .create(
            ROOT_ID,
            "ok.txt",
            O_RDWR | O_CREAT,
            libc::S_IFREG | 0o644,
            0,
        )
        .unwrap();
    assert_eq!(c.write(f.nodeid, o.fh, 0, b"inside").unwrap(), 6);
    assert_eq!(std::fs::read(d.share.join("ok.txt")).unwrap(), b"inside");
    assert_eq!(
        outside_snapshot(&d.share),
        before,
        "{sandbox}: the host outside the share changed"
    );
    assert_eq!(
        std::fs::read(outside_dir.join("secret")).unwrap(),
        b"host only"
    );
    assert_eq!(
        std::fs::metadata(outside_dir.join("secret"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn escapes_fail_without_a_sandbox() {
    escapes_fail("none");
}

#[test]
fn escapes_fail_in_the_namespace_sandbox() {
    escapes_fail("namespace");
}

#[test]
fn escapes_fail_in_the_chroot_sandbox() {
    escapes_fail("chroot");
}

/// A file created in a set-group-ID directory by a user outside its group: the kernel's rules
/// (group inherited, S_ISGID dropped from the file) hold because the daemon creates with the
/// caller's fsuid/fsgid and so without CAP_FSETID.
#[test]
fn setgid_directory_semantics_match_the_kernel() {
    let d = Daemon::start(&[]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let dir = c.mkdir(ROOT_ID, "sgid", 0o777, 0).unwrap();
    let set = SetattrIn {
        valid: fattr::MODE | fattr::GID,
        mode: libc::S_IFDIR | 0o2777,
        gid: 4242,
        ..Default::default()
    };
    c.setattr(dir.nodeid, set).unwrap();
    let user = c.with_creds(Creds::user(1000, 1000));
    let (f, _) = user
        .create(dir.nodeid, "f", O_RDWR | O_CREAT, libc::S_IFREG | 0o2755, 0)
        .unwrap();
    let sub = user.mkdir(dir.nodeid, "d", 0o755, 0).unwrap();
    let host = std::fs::metadata(d.share.join("sgid/f")).unwrap();
    assert_eq!(
        (host.uid(), host.gid()),
        (1000, 4242),
        "owner and inherited group"
    );
    assert_eq!(
        host.mode() & 0o7777,
        0o755,
        "S_ISGID dropped: creator is not in group 4242"
    );
    assert_eq!(f.attr.mode & 0o7777, 0o755);
    let host = std::fs::metadata(d.share.join("sgid/d")).unwrap();
    assert_eq!(host.gid(), 4242);
    assert_eq!(host.mode() & 0o2000, 0o2000, "directories inherit S_ISGID");
    assert_eq!(sub.attr.mode & 0o2000, 0o2000);
}

/// The guest runs out of descriptors: it gets EMFILE, requests that need no new descriptor keep
/// working, and once it releases some it can open again. The daemon never dies or stalls.
#[test]
fn fd_exhaustion_gives_emfile_and_the_daemon_keeps_serving() {
    // 1000 descriptors, 609 + (pool 0 → 1 thread + 65 queues + 4) kept back: the quota is 321,
    // counting the daemon's own ~150 (eventfds of 65 queues, sockets, /proc/self/fd).
    let mut d = Daemon::start(&["--rlimit-nofile", "1000", "--thread-pool-size", "0"]);
    for i in 0..400 {
        std::fs::write(d.share.join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    let c = d.connect(d.config());
    c.init().unwrap();
    let mut open = Vec::new();
    let mut first_error = None;
    for i in 0..400 {
        let r = c
            .lookup(ROOT_ID, format!("f{i}"))
            .and_then(|e| c.open(e.nodeid, O_RDONLY).map(|o| (e.nodeid, o.fh)));
        match r {
            Ok(h) => open.push(h),
            Err(e) => {
                first_error = Some((i, e.errno()));
                break;
            }
        }
    }
    let (at, e) = first_error.expect("400 files open on a 1000-descriptor daemon");
    assert!(
        [Some(Errno::EMFILE), Some(Errno::ENFILE)].contains(&e),
        "file {at}: {e:?}"
    );
    assert!(at >= 20, "the guest got only {at} files");
    d.assert_alive("after EMFILE");
    // Open files keep working; so do requests that open nothing.
    let (node, fh) = open[0];
    assert_eq!(c.read(node, fh, 0, 64).unwrap(), b"file 0");
    c.getattr(ROOT_ID, None).unwrap();
    c.statfs(ROOT_ID).unwrap();
    // Still refused while full...
    assert!(c.lookup(ROOT_ID, "f399").is_err());
    // ...and served again after releases.
    for (node, fh) in open.drain(..) {
        c.release(node, fh, O_RDONLY).unwrap();
        c.forget(node, 2).unwrap();
    }
    let e = c.lookup(ROOT_ID, "f399").unwrap();
    let o = c.open(e.nodeid, O_RDONLY).unwrap();
    assert_eq!(c.read(e.nodeid, o.fh, 0, 64).unwrap(), b"file 399");
    // A new session (DESTROY + INIT) starts clean.
    c.destroy().unwrap();
    c.init().unwrap();
    c.lookup(ROOT_ID, "f1").unwrap();
    d.assert_alive("end");
}

/// The process that serves the guest: every thread under the seccomp filter (mode 2), only the
/// file-server capabilities, in its own namespaces with the share as its only view of the host.
#[test]
fn serving_process_is_filtered_and_stripped() {
    let d = Daemon::start(&[]);
    // The served process is the supervisor's only child.
    let pid = d.pid();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let child: u32 = children
        .split_whitespace()
        .next()
        .expect("a sandboxed child")
        .parse()
        .unwrap();
    let c = d.connect(d.config());
    c.init().unwrap();
    c.getattr(ROOT_ID, None).unwrap();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{child}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(tasks.len() >= 3, "runtime threads: {tasks:?}");
    // The queue threads start when the frontend starts their queue, after the filter was
    // installed: they must carry it too.
    let names: Vec<String> = tasks
        .iter()
        .map(|t| {
            std::fs::read_to_string(t.join("comm"))
                .unwrap()
                .trim_end()
                .to_owned()
        })
        .collect();
    // (The hiprio queue has no thread: it runs on the main thread.)
    assert!(names.iter().any(|n| n == "virtiofs-q1"), "{names:?}");
    for t in &tasks {
        let status = std::fs::read_to_string(t.join("status")).unwrap();
        assert!(status.contains("Seccomp:\t2"), "{t:?}:\n{status}");
        let field = |name: &str| {
            let line = status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        // CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP.
        let expected: u64 = [0, 1, 3, 4, 6, 7, 27, 31].iter().map(|b| 1u64 << b).sum();
        assert_eq!(
            field("CapEff:") & !expected,
            0,
            "{t:?}: extra effective caps"
        );
        assert_eq!(field("CapPrm:"), expected, "{t:?}: permitted");
        assert_eq!(field("CapBnd:"), expected, "{t:?}: bounding");
    }
    for ns in ["mnt", "pid", "net"] {
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = std::fs::read_link(format!("/proc/{child}/ns/{ns}")).unwrap();
        assert_ne!(ours, theirs, "{ns} namespace");
    }
    // The sandbox's root is the share itself (pivot_root into it): nothing else of the host,
    // not even /proc, is in sight.
    let root = std::fs::metadata(format!("/proc/{child}/root/")).unwrap();
    let share = std::fs::metadata(&d.share).unwrap();
    assert_eq!(
        (root.dev(), root.ino()),
        (share.dev(), share.ino()),
        "the sandbox root is the shared directory"
    );
    std::fs::write(d.share.join("marker"), b"x").unwrap();
    let names: Vec<_> = std::fs::read_dir(format!("/proc/{child}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["marker"], "the sandbox root holds the share only");
    // Mounted nodev, nosuid, noexec in the daemon's namespace (and still read-write).
    let mountinfo = std::fs::read_to_string(format!("/proc/{child}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no root mount:\n{mountinfo}"));
    let options: Vec<_> = root.split_whitespace().nth(5).unwrap().split(',').collect();
    for want in ["rw", "nodev", "nosuid", "noexec"] {
        assert!(
            options.contains(&want),
            "root mount {options:?} lacks {want}"
        );
    }
}

/// A directory the host moves out of the share while the guest knows it: its ".." is outside,
/// and LOOKUP ".." must not reach it. In the namespace sandbox the kernel refuses the walk
/// itself (the share is the root mount: the moved directory is cut off from it); with chroot
/// and none the daemon's walk up to the share's root does.
fn moved_out_directory_has_no_parent(sandbox: &str) {
    let d = Daemon::start(&["--sandbox", sandbox]);
    std::fs::create_dir_all(d.share.join("sub/deep")).unwrap();
    let c = d.connect(d.config());
    c.init().unwrap();
    let sub = c.lookup(ROOT_ID, "sub").unwrap();
    let deep = c.lookup(sub.nodeid, "deep").unwrap();
    assert_eq!(
        c.lookup(deep.nodeid, "..").unwrap().nodeid,
        sub.nodeid,
        "{sandbox}: deep/.. before the move"
    );
    d.take_log();
    let moved = d.share.parent().unwrap().join("moved-out");
    std::fs::rename(d.share.join("sub"), &moved).unwrap();
    assert_eq!(
        errno(c.lookup(deep.nodeid, "..")),
        Errno::ENOENT,
        "{sandbox}: deep/.. after sub moved out"
    );
    assert_eq!(
        errno(c.lookup(sub.nodeid, "..")),
        Errno::ENOENT,
        "{sandbox}: sub/.. after it moved out"
    );
    // The share itself still serves.
    assert_eq!(
        c.lookup(ROOT_ID, "..").unwrap().attr.ino,
        std::fs::metadata(&d.share).unwrap().ino()
    );
    let mut log = String::new();
    for _ in 0..20 {
        log.push_str(&d.take_log());
        if log.contains("outside the shared directory") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let refused_by_daemon = log.contains("outside the shared directory");
    assert_eq!(
        refused_by_daemon,
        sandbox != "namespace",
        "{sandbox}: who refused (daemon log: {log})"
    );
}

#[test]
fn moved_out_directory_has_no_parent_without_a_sandbox() {
    moved_out_directory_has_no_parent("none");
}

#[test]
fn moved_out_directory_has_no_parent_in_the_chroot_sandbox() {
    moved_out_directory_has_no_parent("chroot");
}

#[test]
fn moved_out_directory_has_no_parent_in_the_namespace_sandbox() {
    moved_out_directory_has_no_parent("namespace");
}

/// xattrs reach every file type (no file is opened for them) in every sandbox, including
/// chroot, where no /proc path exists: they go by the node's /proc/self/fd entry relative to
/// the thread's working directory.
#[test]
fn xattrs_are_served_in_every_sandbox_and_on_special_files() {
    use vhost_user_fs_client::XattrReply;
    for sandbox in ["chroot", "namespace", "none"] {
        let d = Daemon::start(&["--sandbox", sandbox, "--xattr"]);
        std::fs::write(d.share.join("f"), b"x").unwrap();
        let fifo =
            std::ffi::CString::new(d.share.join("fifo").into_os_string().into_encoded_bytes())
                .unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o666) }, 0);
        let c = d.connect(d.config());
        c.init().unwrap();
        let f = c.lookup(ROOT_ID, "f").unwrap();
        c.setxattr(f.nodeid, "user.k", b"value", 0).unwrap();
        assert_eq!(
            common::host_getxattr(&d.share.join("f"), "user.k"),
            b"value",
            "{sandbox}"
        );
        assert_eq!(
            c.getxattr(f.nodeid, "user.k", 64).unwrap(),
            XattrReply::Data(b"value".to_vec()),
            "{sandbox}"
        );
        let dir = c.getxattr(ROOT_ID, "user.none", 64);
        assert_eq!(errno(dir), Errno::ENODATA, "{sandbox}: the root");
        // A FIFO is reached without being opened (an open would block): ENODATA for a name it
        // does not have, its (empty) list, and quickly.
        let p = c.lookup(ROOT_ID, "fifo").unwrap();
        fails_fast(
            &c,
            FuseRequest::getxattr(p.nodeid, "user.none", 64),
            &[Errno::ENODATA],
            &format!("{sandbox}: getxattr of a FIFO"),
        );
        assert_eq!(
            c.listxattr(p.nodeid, 0).unwrap(),
            XattrReply::Size(0),
            "{sandbox}"
        );
    }
}
