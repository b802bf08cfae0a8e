//! Error paths of every opcode against the real daemon, each checked against the host: the
//! errno the guest gets, and that the host filesystem is unchanged by a failed request (or
//! changed as it should be by the successful request next to it).
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{errno, host_getxattr, Daemon};
use vhost_user_fs_client::abi::{fattr, opcode, SetattrIn, ROOT_ID};
use vhost_user_fs_client::{Creds, Errno, FsClient, FuseOps, FuseRequest, XattrReply};

const O_RDONLY: u32 = libc::O_RDONLY as u32;
const O_WRONLY: u32 = libc::O_WRONLY as u32;
const O_RDWR: u32 = libc::O_RDWR as u32;
const CREATE_EXCL: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const S_IFREG: u32 = libc::S_IFREG;

/// Names in a host directory.
fn host_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn started() -> (Daemon, FsClient) {
    let d = Daemon::start(&[]);
    let c = d.connect(d.config());
    c.init().unwrap();
    (d, c)
}

/// ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, EINVAL, EPERM, ENAMETOOLONG from LOOKUP, MKDIR,
/// MKNOD, CREATE, SYMLINK, LINK, UNLINK, RMDIR, RENAME, RENAME2, READLINK, OPEN, OPENDIR and
/// SETATTR; after every failure the host tree is what it was, after every success what it
/// should be.
#[test]
fn namespace_errors_match_the_host() {
    let (d, c) = started();
    let share = &d.share;
    std::fs::create_dir(share.join("dir")).unwrap();
    std::fs::write(share.join("dir/inner"), b"inner").unwrap();
    std::fs::create_dir(share.join("empty")).unwrap();
    std::fs::write(share.join("file"), b"data").unwrap();
    symlink("file", share.join("link")).unwrap();
    let tree = names(&["dir", "empty", "file", "link"]);
    let check = |what: &str| assert_eq!(host_names(share), tree, "host tree after {what}");

    let dir = c.lookup(ROOT_ID, "dir").unwrap();
    let empty = c.lookup(ROOT_ID, "empty").unwrap();
    assert_eq!(empty.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert!(c
        .read_dir_names(empty.nodeid)
        .unwrap()
        .iter()
        .all(|n| n.starts_with(b".")));
    let file = c.lookup(ROOT_ID, "file").unwrap();
    let link = c.lookup(ROOT_ID, "link").unwrap();
    assert_eq!(
        file.attr.ino,
        std::fs::metadata(share.join("file")).unwrap().ino()
    );
    assert_eq!(
        link.attr.mode & libc::S_IFMT,
        libc::S_IFLNK,
        "LOOKUP does not follow"
    );

    // LOOKUP
    assert_eq!(errno(c.lookup(ROOT_ID, "missing")), Errno::ENOENT);
    assert_eq!(errno(c.lookup(dir.nodeid, "missing")), Errno::ENOENT);
    assert_eq!(errno(c.lookup(file.nodeid, "x")), Errno::ENOTDIR);
    assert_eq!(
        errno(c.lookup(ROOT_ID, "n".repeat(300))),
        Errno::ENAMETOOLONG
    );
    assert_eq!(c.lookup(dir.nodeid, "inner").unwrap().attr.size, 5);
    assert_eq!(
        errno(c.lookup(ROOT_ID, "dir/inner")),
        Errno::EINVAL,
        "slash"
    );
    assert_eq!(errno(c.mkdir(dir.nodeid, "../up", 0o755, 0)), Errno::EINVAL);

    // MKDIR / MKNOD / CREATE / SYMLINK onto existing names, and under a non-directory.
    assert_eq!(errno(c.mkdir(ROOT_ID, "file", 0o755, 0)), Errno::EEXIST);
    assert_eq!(errno(c.mkdir(ROOT_ID, "dir", 0o755, 0)), Errno::EEXIST);
    assert_eq!(errno(c.mkdir(file.nodeid, "x", 0o755, 0)), Errno::ENOTDIR);
    assert_eq!(
        errno(c.mknod(ROOT_ID, "link", libc::S_IFIFO | 0o644, 0, 0)),
        Errno::EEXIST
    );
    assert_eq!(
        errno(c.create(ROOT_ID, "file", CREATE_EXCL, S_IFREG | 0o644, 0)),
        Errno::EEXIST
    );
    assert_eq!(
        errno(c.create(ROOT_ID, "dir", CREATE_EXCL, S_IFREG | 0o644, 0)),
        Errno::EEXIST
    );
    assert_eq!(
        errno(c.create(file.nodeid, "x", CREATE_EXCL, S_IFREG | 0o644, 0)),
        Errno::ENOTDIR
    );
    assert_eq!(errno(c.symlink(ROOT_ID, "empty", "t")), Errno::EEXIST);
    // LINK onto an existing name, of a directory, and from a missing parent name.
    assert_eq!(errno(c.link(file.nodeid, ROOT_ID, "link")), Errno::EEXIST);
    assert_eq!(errno(c.link(dir.nodeid, ROOT_ID, "dirlink")), Errno::EPERM);
    assert_eq!(errno(c.link(file.nodeid, file.nodeid, "x")), Errno::ENOTDIR);
    check("failed creations");
    assert_eq!(std::fs::read(share.join("file")).unwrap(), b"data");

    // UNLINK / RMDIR
    assert_eq!(errno(c.unlink(ROOT_ID, "missing")), Errno::ENOENT);
    assert_eq!(errno(c.unlink(ROOT_ID, "empty")), Errno::EISDIR);
    assert_eq!(errno(c.rmdir(ROOT_ID, "missing")), Errno::ENOENT);
    assert_eq!(errno(c.rmdir(ROOT_ID, "file")), Errno::ENOTDIR);
    assert_eq!(errno(c.rmdir(ROOT_ID, "dir")), Errno::ENOTEMPTY);
    check("failed removals");

    // RENAME / RENAME2
    assert_eq!(
        errno(c.rename(ROOT_ID, "missing", ROOT_ID, "x")),
        Errno::ENOENT
    );
    assert_eq!(
        errno(c.rename(ROOT_ID, "file", dir.nodeid, "../x")),
        Errno::EINVAL,
        "a name with a slash is refused, not walked"
    );
    assert_eq!(
        errno(c.rename(ROOT_ID, "empty", ROOT_ID, "dir")),
        Errno::ENOTEMPTY,
        "directory over a non-empty directory"
    );
    assert_eq!(
        errno(c.rename(ROOT_ID, "file", ROOT_ID, "empty")),
        Errno::EISDIR,
        "file over a directory"
    );
    assert_eq!(
        errno(c.rename(ROOT_ID, "empty", ROOT_ID, "file")),
        Errno::ENOTDIR,
        "directory over a file"
    );
    assert_eq!(
        errno(c.rename(ROOT_ID, "dir", dir.nodeid, "sub")),
        Errno::EINVAL,
        "directory into itself"
    );
    assert_eq!(
        errno(c.rename2(ROOT_ID, "file", ROOT_ID, "link", libc::RENAME_NOREPLACE)),
        Errno::EEXIST
    );
    assert_eq!(
        errno(c.rename2(ROOT_ID, "file", ROOT_ID, "nothing", libc::RENAME_EXCHANGE)),
        Errno::ENOENT,
        "exchange with a missing name"
    );
    assert_eq!(
        errno(c.rename2(
            ROOT_ID,
            "file",
            ROOT_ID,
            "x",
            libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE
        )),
        Errno::EINVAL
    );
    check("failed renames");

    // READLINK / OPEN / OPENDIR / SETATTR on the wrong kind of node.
    // EINVAL for a non-symlink, as the host's readlink(2) says (fuse-backend-rs said ENOENT,
    // from readlinkat(fd, "") on its O_PATH fd). A guest kernel never sends READLINK for a
    // node it knows is not a symlink.
    assert_eq!(errno(c.readlink(file.nodeid)), Errno::EINVAL);
    assert_eq!(errno(c.readlink(dir.nodeid)), Errno::EINVAL);
    assert_eq!(c.readlink(link.nodeid).unwrap(), b"file");
    assert_eq!(errno(c.opendir(file.nodeid, O_RDONLY)), Errno::ENOTDIR);
    assert_eq!(errno(c.open(dir.nodeid, O_RDWR)), Errno::EISDIR);
    assert_eq!(errno(c.open(dir.nodeid, O_WRONLY)), Errno::EISDIR);
    let truncate_dir = SetattrIn {
        valid: fattr::SIZE,
        size: 0,
        ..Default::default()
    };
    assert_eq!(errno(c.setattr(dir.nodeid, truncate_dir)), Errno::EISDIR);
    check("failed opens");

    // The successful counterparts, checked on the host.
    c.rename(ROOT_ID, "file", dir.nodeid, "moved").unwrap();
    assert!(!share.join("file").exists());
    assert_eq!(std::fs::read(share.join("dir/moved")).unwrap(), b"data");
    c.rename(ROOT_ID, "empty", ROOT_ID, "empty2").unwrap();
    assert!(share.join("empty2").is_dir());
    c.rename2(ROOT_ID, "empty2", ROOT_ID, "dir", libc::RENAME_EXCHANGE)
        .unwrap();
    assert!(share.join("empty2/inner").is_file(), "exchanged");
    assert_eq!(host_names(&share.join("dir")), names(&[]), "exchanged");
    let l = c.link(file.nodeid, ROOT_ID, "hard").unwrap();
    assert_eq!(l.attr.nlink, 2);
    assert_eq!(std::fs::metadata(share.join("hard")).unwrap().nlink(), 2);
    c.unlink(ROOT_ID, "link").unwrap();
    c.rmdir(ROOT_ID, "dir").unwrap();
    let m = c.mkdir(ROOT_ID, "made", 0o750, 0).unwrap();
    let hm = std::fs::metadata(share.join("made")).unwrap();
    assert!(hm.is_dir());
    assert_eq!((hm.mode() & 0o7777, m.attr.ino), (0o750, hm.ino()));
    assert_eq!(host_names(share), names(&["empty2", "hard", "made"]));
    assert_eq!(
        errno(c.rmdir(ROOT_ID, "empty2")),
        Errno::ENOTEMPTY,
        "the exchanged directory has the file now"
    );
    assert_eq!(errno(c.lookup(ROOT_ID, "dir")), Errno::ENOENT, "removed");
}

/// EBADF for file and directory handles that were released, never issued, belong to another
/// node or to a previous session; EBADF for node ids that were forgotten, never issued or
/// dropped by DESTROY (fuse-backend-rs's `PassthroughFs` answers EBADF for an unknown node, as
/// the C and Rust virtiofsd do); EBADF writing through a read-only handle; EINVAL / ENXIO from
/// LSEEK.
#[test]
fn stale_handles_and_forgotten_nodes() {
    let (d, c) = started();
    let (f, fo) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(c.write(f.nodeid, fo.fh, 0, b"hello").unwrap(), 5);
    let (g, go) = c
        .create(ROOT_ID, "g", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();

    // A handle of another node is not this node's.
    assert_eq!(errno(c.read(f.nodeid, go.fh, 0, 10)), Errno::EBADF);
    assert_eq!(errno(c.write(f.nodeid, go.fh, 0, b"x")), Errno::EBADF);
    // A never-issued handle.
    let bogus = 0xdead_beef_u64;
    assert_eq!(errno(c.read(f.nodeid, bogus, 0, 10)), Errno::EBADF);
    assert_eq!(errno(c.release(f.nodeid, bogus, 0)), Errno::EBADF);

    // Released handles.
    c.release(f.nodeid, fo.fh, 0).unwrap();
    let stale = fo.fh;
    assert_eq!(errno(c.read(f.nodeid, stale, 0, 10)), Errno::EBADF);
    assert_eq!(errno(c.write(f.nodeid, stale, 0, b"x")), Errno::EBADF);
    assert_eq!(errno(c.release(f.nodeid, stale, 0)), Errno::EBADF);
    assert_eq!(errno(c.flush(f.nodeid, stale)), Errno::EBADF);
    assert_eq!(errno(c.fsync(f.nodeid, stale, false)), Errno::EBADF);
    assert_eq!(errno(c.fallocate(f.nodeid, stale, 0, 10, 0)), Errno::EBADF);
    assert_eq!(
        errno(c.lseek(f.nodeid, stale, 0, libc::SEEK_SET as u32)),
        Errno::EBADF
    );
    assert_eq!(
        std::fs::read(d.share.join("f")).unwrap(),
        b"hello",
        "nothing written through stale handles"
    );

    // Directory handles.
    let dh = c.opendir(ROOT_ID, O_RDONLY).unwrap().fh;
    assert!(!c.readdir(ROOT_ID, dh, 0, 4096).unwrap().is_empty());
    c.releasedir(ROOT_ID, dh).unwrap();
    assert_eq!(errno(c.readdir(ROOT_ID, dh, 0, 4096)), Errno::EBADF);
    assert_eq!(errno(c.readdirplus(ROOT_ID, dh, 0, 4096)), Errno::EBADF);
    assert_eq!(errno(c.fsyncdir(ROOT_ID, dh, false)), Errno::EBADF);
    assert_eq!(errno(c.readdir(ROOT_ID, bogus, 0, 4096)), Errno::EBADF);

    // Read-only handle: the host refuses the write.
    let ro = c.open(f.nodeid, O_RDONLY).unwrap().fh;
    assert_eq!(errno(c.write(f.nodeid, ro, 0, b"XX")), Errno::EBADF);
    assert_eq!(c.read(f.nodeid, ro, 0, 10).unwrap(), b"hello");
    assert_eq!(c.read(f.nodeid, ro, 100, 10).unwrap(), b"", "past EOF");

    // LSEEK
    assert_eq!(errno(c.lseek(f.nodeid, ro, 0, 99)), Errno::EINVAL, "whence");
    assert_eq!(
        errno(c.lseek(f.nodeid, ro, u64::MAX, libc::SEEK_SET as u32)),
        Errno::EINVAL,
        "negative offset"
    );
    assert_eq!(
        errno(c.lseek(f.nodeid, ro, 5, libc::SEEK_DATA as u32)),
        Errno::ENXIO,
        "data at EOF"
    );
    assert_eq!(c.lseek(f.nodeid, ro, 2, libc::SEEK_SET as u32).unwrap(), 2);
    c.release(f.nodeid, ro, 0).unwrap();

    // Forgotten node ids: CREATE gave one reference, this LOOKUP another; forget both.
    let again = c.lookup(ROOT_ID, "f").unwrap();
    assert_eq!(again.nodeid, f.nodeid);
    c.forget(f.nodeid, 2).unwrap();
    assert_eq!(errno(c.getattr(f.nodeid, None)), Errno::EBADF);
    assert_eq!(errno(c.open(f.nodeid, O_RDONLY)), Errno::EBADF);
    assert_eq!(
        errno(c.setattr(
            f.nodeid,
            SetattrIn {
                valid: fattr::MODE,
                mode: S_IFREG | 0o600,
                ..Default::default()
            }
        )),
        Errno::EBADF
    );
    assert_eq!(
        std::fs::metadata(d.share.join("f")).unwrap().mode() & 0o7777,
        0o644,
        "SETATTR on a forgotten node changed nothing"
    );
    // Never-issued node ids, as a node and as a parent.
    for bad in [0, 0x7777_0000_u64, u64::MAX] {
        assert_eq!(errno(c.getattr(bad, None)), Errno::EBADF, "nodeid {bad:#x}");
        assert_eq!(errno(c.lookup(bad, "f")), Errno::EBADF, "nodeid {bad:#x}");
        assert_eq!(
            errno(c.mkdir(bad, "x", 0o755, 0)),
            Errno::EBADF,
            "nodeid {bad:#x}"
        );
    }
    // Forgetting unknown nodes, or too many references, is harmless.
    c.forget(0x7777_0000, 5).unwrap();
    c.batch_forget(&[(f.nodeid, 10), (u64::MAX, 1)]).unwrap();
    c.forget(ROOT_ID, 100).unwrap();
    assert!(
        c.getattr(ROOT_ID, None).is_ok(),
        "the root is never forgotten"
    );
    // A fresh LOOKUP works again.
    let f2 = c.lookup(ROOT_ID, "f").unwrap();
    assert_eq!(f2.attr.size, 5);

    // Handles and node ids of a previous session (DESTROY drops them all).
    c.destroy().unwrap();
    c.init().unwrap();
    assert_eq!(errno(c.read(g.nodeid, go.fh, 0, 10)), Errno::EBADF);
    assert_eq!(errno(c.getattr(g.nodeid, None)), Errno::EBADF);
    let g2 = c.lookup(ROOT_ID, "g").unwrap();
    let h = c.open(g2.nodeid, O_RDWR).unwrap().fh;
    assert_eq!(
        errno(c.read(g2.nodeid, go.fh, 0, 10)),
        Errno::EBADF,
        "old handle on the new node"
    );
    assert_eq!(c.write(g2.nodeid, h, 0, b"new").unwrap(), 3);
    c.release(g2.nodeid, h, 0).unwrap();
    assert_eq!(std::fs::read(d.share.join("g")).unwrap(), b"new");
}

/// With `--xattr`: ENODATA, ERANGE, EEXIST (XATTR_CREATE), ENODATA (XATTR_REPLACE); sizes and
/// lists equal the host's.
#[test]
fn xattr_errors_with_xattr_enabled() {
    let d = Daemon::start(&["--xattr"]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let (f, fo) = c
        .create(ROOT_ID, "x", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    c.release(f.nodeid, fo.fh, 0).unwrap();
    let n = f.nodeid;

    assert_eq!(errno(c.getxattr(n, "user.none", 64)), Errno::ENODATA);
    assert_eq!(errno(c.getxattr(n, "user.none", 0)), Errno::ENODATA);
    assert_eq!(errno(c.removexattr(n, "user.none")), Errno::ENODATA);
    assert_eq!(
        errno(c.setxattr(n, "user.none", b"v", libc::XATTR_REPLACE as u32)),
        Errno::ENODATA
    );
    assert_eq!(c.listxattr(n, 0).unwrap(), XattrReply::Size(0));

    c.setxattr(n, "user.a", b"12345", libc::XATTR_CREATE as u32)
        .unwrap();
    c.setxattr(n, "user.bb", b"x", 0).unwrap();
    assert_eq!(
        errno(c.setxattr(n, "user.a", b"other", libc::XATTR_CREATE as u32)),
        Errno::EEXIST
    );
    assert_eq!(c.getxattr(n, "user.a", 0).unwrap(), XattrReply::Size(5));
    assert_eq!(errno(c.getxattr(n, "user.a", 2)), Errno::ERANGE);
    assert_eq!(
        c.getxattr(n, "user.a", 5).unwrap(),
        XattrReply::Data(b"12345".to_vec())
    );
    let list = b"user.a\0user.bb\0";
    assert_eq!(
        c.listxattr(n, 0).unwrap(),
        XattrReply::Size(list.len() as u32)
    );
    assert_eq!(errno(c.listxattr(n, 3)), Errno::ERANGE);
    let XattrReply::Data(got) = c.listxattr(n, 256).unwrap() else {
        panic!("LISTXATTR data")
    };
    let got: BTreeSet<&[u8]> = got.split(|&b| b == 0).filter(|s| !s.is_empty()).collect();
    assert_eq!(got, BTreeSet::from([&b"user.a"[..], &b"user.bb"[..]]));
    c.setxattr(n, "user.a", b"z", libc::XATTR_REPLACE as u32)
        .unwrap();
    assert_eq!(
        host_getxattr(&d.share.join("x"), "user.a"),
        b"z",
        "replaced on the host"
    );
    assert_eq!(
        errno(c.setxattr(n, "bogus.ns", b"v", 0)),
        Errno::EOPNOTSUPP,
        "unknown namespace (host errno)"
    );
    c.removexattr(n, "user.a").unwrap();
    assert_eq!(errno(c.getxattr(n, "user.a", 8)), Errno::ENODATA);
    c.forget(n, 1).unwrap();
    assert_eq!(
        errno(c.getxattr(n, "user.bb", 8)),
        Errno::EBADF,
        "forgotten"
    );
}

/// Without `--xattr` every xattr op is ENOSYS (the FUSE way to say "not supported": the guest
/// kernel stops asking and reports EOPNOTSUPP to its callers). Unknown opcodes, BMAP (no block
/// device behind the share) and POLL are ENOSYS; SETUPMAPPING without a DAX window is ENOSYS,
/// IOCTL is ENOTTY. The operations fuse-backend-rs did not serve (COPY_FILE_RANGE, SYNCFS,
/// TMPFILE, STATX, GETLK/SETLK/SETLKW) get real answers. The session carries on after each.
#[test]
fn unsupported_operations_are_enosys() {
    let (d, c) = started();
    let (f, fo) = c
        .create(ROOT_ID, "f", CREATE_EXCL, S_IFREG | 0o644, 0)
        .unwrap();
    let n = f.nodeid;
    assert_eq!(errno(c.setxattr(n, "user.a", b"v", 0)), Errno::ENOSYS);
    assert_eq!(errno(c.getxattr(n, "user.a", 64)), Errno::ENOSYS);
    assert_eq!(errno(c.getxattr(n, "user.a", 0)), Errno::ENOSYS);
    assert_eq!(errno(c.listxattr(n, 0)), Errno::ENOSYS);
    assert_eq!(errno(c.listxattr(n, 256)), Errno::ENOSYS);
    assert_eq!(errno(c.removexattr(n, "user.a")), Errno::ENOSYS);

    let cases: Vec<(&str, FuseRequest)> = vec![
        ("opcode 9999", FuseRequest::new(9999, n, vec![], vec![64])),
        (
            "opcode 0",
            FuseRequest::new(0, n, vec![vec![0; 16]], vec![64]),
        ),
        (
            "opcode u32::MAX",
            FuseRequest::new(u32::MAX, n, vec![], vec![64]),
        ),
        (
            "BMAP",
            FuseRequest::new(opcode::BMAP, n, vec![vec![0; 16]], vec![8]),
        ),
        (
            "POLL",
            FuseRequest::new(opcode::POLL, n, vec![vec![0; 24]], vec![8]),
        ),
    ];
    // DAX mapping requests: no DAX window is ever offered, so the operation does not exist
    // (fuse-backend-rs answered EINVAL).
    let map = FuseRequest::new(opcode::SETUPMAPPING, n, vec![vec![0; 40]], vec![]);
    assert_eq!(c.call(map).unwrap().error, Some(Errno::ENOSYS));
    // IOCTL: ENOTTY, as ioctl(2) on a file that has none.
    let ioctl = FuseRequest::new(opcode::IOCTL, n, vec![vec![0; 32]], vec![16]);
    assert_eq!(c.call(ioctl).unwrap().error, Some(Errno(libc::ENOTTY)));
    for (what, req) in cases {
        let got = c.call(req).map(|r| r.error);
        assert!(
            matches!(got, Ok(Some(Errno::ENOSYS))),
            "{what}: want ENOSYS, got {got:?}"
        );
        assert!(c.getattr(n, None).is_ok(), "{what}: session carries on");
    }

    // Served now. fuse_lk_in: fh, owner, fuse_file_lock {start, end, type, pid}, lk_flags.
    let lk = |typ: i32| {
        let mut lk = vec![0u8; 48];
        lk[..8].copy_from_slice(&fo.fh.to_ne_bytes());
        lk[8..16].copy_from_slice(&7u64.to_ne_bytes());
        lk[24..32].copy_from_slice(&u64::MAX.to_ne_bytes()); // to the end
        lk[32..36].copy_from_slice(&(typ as u32).to_ne_bytes());
        lk
    };
    let served: Vec<(&str, FuseRequest, Option<Errno>)> = vec![
        (
            "COPY_FILE_RANGE of a handle never opened",
            FuseRequest::new(opcode::COPY_FILE_RANGE, n, vec![vec![0; 56]], vec![8]),
            Some(Errno::EBADF),
        ),
        (
            "SYNCFS",
            FuseRequest::new(opcode::SYNCFS, ROOT_ID, vec![vec![0; 8]], vec![]),
            None,
        ),
        (
            "STATX",
            FuseRequest::new(opcode::STATX, n, vec![vec![0; 24]], vec![288]),
            None,
        ),
        (
            "SETLK F_WRLCK",
            FuseRequest::new(opcode::SETLK, n, vec![lk(libc::F_WRLCK)], vec![]),
            None,
        ),
        (
            "GETLK by the owner holding it",
            FuseRequest::new(opcode::GETLK, n, vec![lk(libc::F_WRLCK)], vec![24]),
            None,
        ),
        (
            "SETLKW F_UNLCK",
            FuseRequest::new(opcode::SETLKW, n, vec![lk(libc::F_UNLCK)], vec![]),
            None,
        ),
        (
            "SETLK of an unknown lock type",
            FuseRequest::new(opcode::SETLK, n, vec![lk(77)], vec![]),
            Some(Errno::EINVAL),
        ),
    ];
    for (what, req, want) in served {
        let got = c.call(req).map(|r| r.error);
        assert!(
            matches!(got, Ok(e) if e == want),
            "{what}: want {want:?}, got {got:?}"
        );
    }
    // TMPFILE: an unnamed file, opened (entry + open reply), that no directory lists.
    let tmp = FuseRequest::tmpfile(ROOT_ID, libc::O_RDWR as u32, 0o600, 0);
    assert_eq!(c.call(tmp).unwrap().error, None);
    assert_eq!(host_names(&d.share), names(&["f"]));
    c.release(n, fo.fh, 0).unwrap();
    let log = d.take_log();
    assert!(!log.contains("panicked"), "{log}");
}

/// Credentials per request, as a non-root caller: the operations the daemon runs with the
/// caller's uid/gid (CREATE, MKDIR, MKNOD, SYMLINK) get EACCES where the host would refuse that
/// user and succeed (owned by the caller) where it would not; ACCESS checks the mode bits.
#[test]
fn non_root_callers_are_refused_by_the_host() {
    let (d, c) = started();
    let share = &d.share;
    let root_dir = share.join("rootdir");
    std::fs::create_dir(&root_dir).unwrap();
    std::fs::set_permissions(&root_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root_dir.join("secret"), b"s").unwrap();
    std::fs::set_permissions(
        root_dir.join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let group_dir = share.join("group");
    std::fs::create_dir(&group_dir).unwrap();
    std::os::unix::fs::chown(&group_dir, Some(0), Some(1000)).unwrap();
    std::fs::set_permissions(&group_dir, std::fs::Permissions::from_mode(0o770)).unwrap();

    let rd = c.lookup(ROOT_ID, "rootdir").unwrap().nodeid;
    let gd = c.lookup(ROOT_ID, "group").unwrap().nodeid;
    let secret = c.lookup(rd, "secret").unwrap().nodeid;
    let user = c.with_creds(Creds::user(1000, 1000));
    let other = c.with_creds(Creds::user(1001, 1001));

    assert_eq!(
        errno(user.create(rd, "x", CREATE_EXCL, S_IFREG | 0o644, 0)),
        Errno::EACCES
    );
    assert_eq!(errno(user.mkdir(rd, "d", 0o755, 0)), Errno::EACCES);
    assert_eq!(
        errno(user.mknod(rd, "p", libc::S_IFIFO | 0o644, 0, 0)),
        Errno::EACCES
    );
    assert_eq!(errno(user.symlink(rd, "l", "secret")), Errno::EACCES);
    assert_eq!(
        host_names(&root_dir),
        names(&["secret"]),
        "nothing created as uid 1000"
    );
    // The same in a group-writable directory: the group member may, the other user may not.
    assert_eq!(errno(other.mkdir(gd, "d", 0o755, 0)), Errno::EACCES);
    let (ue, uo) = user
        .create(gd, "mine", CREATE_EXCL, S_IFREG | 0o600, 0)
        .unwrap();
    user.release(ue.nodeid, uo.fh, 0).unwrap();
    let ud = user.mkdir(gd, "d", 0o700, 0).unwrap();
    assert_eq!((ud.attr.uid, ud.attr.gid), (1000, 1000));
    for name in ["mine", "d"] {
        let md = std::fs::metadata(group_dir.join(name)).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{name} owned by caller");
    }
    // In the caller's own 0700 directory the other user is refused.
    assert_eq!(
        errno(other.create(ud.nodeid, "y", CREATE_EXCL, S_IFREG | 0o644, 0)),
        Errno::EACCES
    );
    user.symlink(ud.nodeid, "l", "target").unwrap();
    assert!(group_dir.join("d/l").is_symlink());

    // ACCESS
    let (r, w, x) = (libc::R_OK as u32, libc::W_OK as u32, libc::X_OK as u32);
    assert_eq!(errno(user.access(secret, r)), Errno::EACCES);
    assert_eq!(errno(user.access(secret, w)), Errno::EACCES);
    assert_eq!(errno(user.access(rd, w)), Errno::EACCES);
    user.access(rd, r | x).unwrap();
    user.access(secret, libc::F_OK as u32).unwrap();
    c.access(secret, r | w).unwrap();
    assert_eq!(
        errno(c.access(secret, x)),
        Errno::EACCES,
        "root cannot execute a file nobody may execute"
    );
    assert_eq!(errno(other.access(ud.nodeid, r)), Errno::EACCES);
    user.access(ud.nodeid, r | w | x).unwrap();
}

/// OPEN, SETATTR (chmod, chown), UNLINK and RENAME run with the daemon's own credentials in
/// fuse-backend-rs 0.14 (only CREATE, MKDIR, MKNOD and SYMLINK switch to the caller's): a
/// virtio-fs guest mounts with `default_permissions`, so its kernel checks permissions before
/// it sends these. The C and Rust virtiofsd behave the same. This pins that down, so a change
/// (e.g. per-request credentials for SETATTR) is noticed.
#[test]
fn permission_checks_left_to_the_guest_kernel() {
    let (d, c) = started();
    let root_dir = d.share.join("rootdir");
    std::fs::create_dir(&root_dir).unwrap();
    std::fs::write(root_dir.join("secret"), b"s3cret").unwrap();
    std::fs::set_permissions(
        root_dir.join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let rd = c.lookup(ROOT_ID, "rootdir").unwrap().nodeid;
    let secret = c.lookup(rd, "secret").unwrap().nodeid;
    let user = c.with_creds(Creds::user(1000, 1000));

    let fh = user.open(secret, O_RDONLY).unwrap().fh;
    assert_eq!(user.read(secret, fh, 0, 64).unwrap(), b"s3cret");
    user.release(secret, fh, 0).unwrap();
    let chmod = SetattrIn {
        valid: fattr::MODE,
        mode: S_IFREG | 0o644,
        ..Default::default()
    };
    user.setattr(secret, chmod).unwrap();
    let chown = SetattrIn {
        valid: fattr::UID | fattr::GID,
        uid: 2000,
        gid: 2000,
        ..Default::default()
    };
    user.setattr(secret, chown).unwrap();
    let md = std::fs::metadata(root_dir.join("secret")).unwrap();
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o644, 2000, 2000)
    );
    user.rename(rd, "secret", rd, "moved").unwrap();
    user.unlink(rd, "moved").unwrap();
    assert_eq!(host_names(&root_dir), names(&[]));
}
