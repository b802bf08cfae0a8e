//! `--readonly` (issue 13): every request that would change the share is refused with the errno
//! a read-only mount gives, in every sandbox, and nothing in the share changes; reading works.
//! In the namespace sandbox the share is also mounted read-only in the daemon's namespace.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::{fattr, opcode, SetattrIn, ROOT_ID};
use vhost_user_fs_client::{Errno, FuseOps, FuseRequest, XattrReply};

const O_RDONLY: u32 = libc::O_RDONLY as u32;
const O_WRONLY: u32 = libc::O_WRONLY as u32;
const O_RDWR: u32 = libc::O_RDWR as u32;
const O_CREAT: u32 = libc::O_CREAT as u32;
const O_EXCL: u32 = libc::O_EXCL as u32;
const O_TRUNC: u32 = libc::O_TRUNC as u32;
const EROFS: Errno = Errno(libc::EROFS);

/// Every name under `dir` with its type, size, mode, mtime and link count.
fn snapshot(dir: &Path) -> BTreeMap<String, (u32, u64, i64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            out.insert(
                p.display().to_string(),
                (
                    m.mode(),
                    m.size(),
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

fn readonly_share_refuses_every_change(sandbox: &str) {
    let d = Daemon::start(&["--sandbox", sandbox, "--readonly", "--xattr"]);
    std::fs::write(d.share.join("f"), b"read me").unwrap();
    std::fs::create_dir(d.share.join("d")).unwrap();
    std::fs::write(d.share.join("d/g"), b"g").unwrap();
    symlink("f", d.share.join("ln")).unwrap();
    let before = snapshot(&d.share);

    let c = d.connect(d.config());
    c.init().unwrap();
    let f = c.lookup(ROOT_ID, "f").unwrap();
    let dir = c.lookup(ROOT_ID, "d").unwrap();
    let s = sandbox;

    // Names that would be made: EEXIST when taken, EROFS when new (the kernel's order).
    assert_eq!(
        errno(c.mkdir(ROOT_ID, "new", 0o755, 0)),
        EROFS,
        "{s}: mkdir"
    );
    assert_eq!(errno(c.mkdir(ROOT_ID, "d", 0o755, 0)), Errno::EEXIST, "{s}");
    let fifo = libc::S_IFIFO | 0o644;
    assert_eq!(
        errno(c.mknod(ROOT_ID, "p", fifo, 0, 0)),
        EROFS,
        "{s}: mknod"
    );
    assert_eq!(errno(c.symlink(ROOT_ID, "s", "f")), EROFS, "{s}: symlink");
    assert_eq!(errno(c.symlink(ROOT_ID, "ln", "f")), Errno::EEXIST, "{s}");
    assert_eq!(errno(c.link(f.nodeid, ROOT_ID, "f2")), EROFS, "{s}: link");
    assert_eq!(
        errno(c.link(f.nodeid, dir.nodeid, "g")),
        Errno::EEXIST,
        "{s}"
    );
    // Removing and renaming.
    assert_eq!(errno(c.unlink(ROOT_ID, "f")), EROFS, "{s}: unlink");
    assert_eq!(errno(c.rmdir(ROOT_ID, "d")), EROFS, "{s}: rmdir");
    assert_eq!(errno(c.rename(ROOT_ID, "f", ROOT_ID, "f3")), EROFS, "{s}");
    assert_eq!(
        errno(c.rename2(ROOT_ID, "f", ROOT_ID, "d", 2)),
        EROFS,
        "{s}"
    );
    // Attributes and xattrs.
    let trunc = SetattrIn {
        valid: fattr::SIZE,
        size: 0,
        ..Default::default()
    };
    assert_eq!(errno(c.setattr(f.nodeid, trunc)), EROFS, "{s}: truncate");
    let chmod = SetattrIn {
        valid: fattr::MODE,
        mode: 0o600,
        ..Default::default()
    };
    assert_eq!(errno(c.setattr(f.nodeid, chmod)), EROFS, "{s}: chmod");
    assert_eq!(errno(c.setxattr(f.nodeid, "user.x", b"v", 0)), EROFS, "{s}");
    assert_eq!(errno(c.removexattr(f.nodeid, "user.x")), EROFS, "{s}");
    assert_eq!(
        errno(c.getxattr(f.nodeid, "user.x", 64)),
        Errno::ENODATA,
        "{s}: reading xattrs works"
    );
    // Opening: only for reading, never truncating.
    for flags in [O_WRONLY, O_RDWR, O_RDONLY | O_TRUNC] {
        assert_eq!(
            errno(c.open(f.nodeid, flags)),
            EROFS,
            "{s}: open {flags:#o}"
        );
    }
    let o = c.open(f.nodeid, O_RDONLY).unwrap();
    assert_eq!(c.read(f.nodeid, o.fh, 0, 64).unwrap(), b"read me", "{s}");
    assert_eq!(errno(c.write(f.nodeid, o.fh, 0, b"x")), EROFS, "{s}: write");
    // A handle open for reading cannot be written through by other means either.
    assert_eq!(
        errno(c.fallocate(f.nodeid, o.fh, 0, 4096, 0)),
        Errno::EBADF,
        "{s}: fallocate"
    );
    let setflags = {
        let mut arg = Vec::new();
        arg.extend_from_slice(&o.fh.to_ne_bytes());
        arg.extend_from_slice(&0u32.to_ne_bytes());
        arg.extend_from_slice(&0x4008_6602u32.to_ne_bytes()); // FS_IOC_SETFLAGS
        arg.extend_from_slice(&0u64.to_ne_bytes());
        arg.extend_from_slice(&4u32.to_ne_bytes());
        arg.extend_from_slice(&0u32.to_ne_bytes());
        FuseRequest::new(opcode::IOCTL, f.nodeid, vec![arg, vec![0; 4]], vec![16])
    };
    assert_eq!(c.call(setflags).unwrap().error, Some(EROFS), "{s}: chattr");
    c.release(f.nodeid, o.fh, 0).unwrap();
    // CREATE: a new name is EROFS, an existing file opens for reading unless O_EXCL.
    let mode = libc::S_IFREG | 0o644;
    assert_eq!(
        errno(c.create(ROOT_ID, "new", O_RDWR | O_CREAT, mode, 0)),
        EROFS,
        "{s}: create"
    );
    assert_eq!(
        errno(c.create(ROOT_ID, "f", O_RDONLY | O_CREAT | O_EXCL, mode, 0)),
        Errno::EEXIST,
        "{s}: create O_EXCL of an existing file"
    );
    assert_eq!(
        errno(c.create(ROOT_ID, "f", O_RDWR | O_CREAT, mode, 0)),
        EROFS,
        "{s}: create for writing of an existing file"
    );
    let (e, o) = c.create(ROOT_ID, "f", O_RDONLY | O_CREAT, mode, 0).unwrap();
    assert_eq!(e.nodeid, f.nodeid, "{s}: the existing file");
    assert_eq!(c.read(e.nodeid, o.fh, 0, 64).unwrap(), b"read me", "{s}");
    c.release(e.nodeid, o.fh, 0).unwrap();
    let tmpfile = FuseRequest::new(
        opcode::TMPFILE,
        ROOT_ID,
        vec![
            [
                (O_RDWR | libc::O_TMPFILE as u32).to_ne_bytes(),
                mode.to_ne_bytes(),
            ]
            .concat(),
            vec![0; 8],
        ],
        vec![256],
    );
    assert_eq!(
        c.call(tmpfile).unwrap().error,
        Some(EROFS),
        "{s}: O_TMPFILE"
    );
    // access(2): W_OK of files and directories is EROFS, reading is fine.
    assert_eq!(errno(c.access(f.nodeid, libc::W_OK as u32)), EROFS, "{s}");
    assert_eq!(errno(c.access(dir.nodeid, libc::W_OK as u32)), EROFS, "{s}");
    c.access(f.nodeid, libc::R_OK as u32).unwrap();
    // Listing and statfs work.
    let names = c.read_dir_names(ROOT_ID).unwrap();
    assert!(names.iter().any(|n| n == b"d"), "{s}: {names:?}");
    c.statfs(ROOT_ID).unwrap();
    assert_eq!(
        c.listxattr(f.nodeid, 0).unwrap(),
        XattrReply::Size(0),
        "{s}"
    );

    assert_eq!(snapshot(&d.share), before, "{s}: the share changed");
}

#[test]
fn readonly_without_a_sandbox() {
    readonly_share_refuses_every_change("none");
}

#[test]
fn readonly_in_the_chroot_sandbox() {
    readonly_share_refuses_every_change("chroot");
}

#[test]
fn readonly_in_the_namespace_sandbox() {
    readonly_share_refuses_every_change("namespace");
}

/// In the namespace sandbox the kernel enforces it too: the daemon's root mount (the share) and
/// the mounts inside it are read-only in its mount namespace, and only there.
#[test]
fn namespace_sandbox_mounts_the_share_read_only() {
    let d = Daemon::start(&["--readonly"]);
    let pid = d.pid();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let child: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
    let mountinfo = std::fs::read_to_string(format!("/proc/{child}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no root mount:\n{mountinfo}"));
    let options = root.split_whitespace().nth(5).unwrap();
    assert!(
        options.split(',').any(|o| o == "ro"),
        "root mount options {options}: {root}"
    );
    // The host's view of the share is untouched: still writable there.
    std::fs::write(d.share.join("host-writes"), b"ok").unwrap();
}
