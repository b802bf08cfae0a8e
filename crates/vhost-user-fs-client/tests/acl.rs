//! `--posix-acl` (issue 13): what is negotiated with which guest, the guest's umask applied by
//! the host kernel (DONT_MASK) or replaced by the parent's default ACL, ACLs set and read back as
//! the host has them, and SGID dropped when the guest says an ACL change must drop it.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{errno, host_setxattr, Daemon};
use vhost_user_fs_client::abi::init_flags::{DONT_MASK, POSIX_ACL, SETXATTR_EXT};
use vhost_user_fs_client::abi::{opcode, SetxattrIn, ROOT_ID};
use vhost_user_fs_client::{Errno, FsClient, FuseOps, FuseRequest, InitParams, XattrReply};
use vm_memory::ByteValued;

const ACL_FLAGS: u64 = POSIX_ACL | DONT_MASK | SETXATTR_EXT;
const SETXATTR_ACL_KILL_SGID: u32 = 1;

/// A POSIX ACL in its xattr form: version 2, then (tag, perm, id) entries in tag order.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const NONE: u32 = u32::MAX;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn session(d: &Daemon, flags: u64) -> Result<FsClient, Errno> {
    let c = d.connect(d.config());
    let mut p = InitParams::default();
    p.flags |= flags;
    match c.init_with(p) {
        Ok(_) => Ok(c),
        Err(e) => Err(e.errno().expect("an errno")),
    }
}

#[test]
fn negotiation_follows_the_mode_and_the_guest() {
    for (opt, guest, want) in [
        ("--posix-acl=never", ACL_FLAGS, Ok(0)),
        ("--posix-acl=auto", ACL_FLAGS, Ok(ACL_FLAGS)),
        ("--posix-acl=auto", 0, Ok(0)),
        ("--posix-acl=always", ACL_FLAGS, Ok(ACL_FLAGS)),
        ("--posix-acl=always", 0, Err(Errno(libc::EPROTO))),
    ] {
        let d = Daemon::start(&[opt]);
        let got = session(&d, guest).map(|c| c.session_flags() & ACL_FLAGS);
        assert_eq!(got, want, "{opt}, guest offers {guest:#x}");
    }
}

/// With DONT_MASK the mode arrives unmasked with the guest's umask: the host applies the umask,
/// unless the parent has a default ACL, which replaces it (the kernel's rule for any caller).
#[test]
fn the_guests_umask_or_the_default_acl_decides_a_new_files_mode() {
    let d = Daemon::start(&["--posix-acl=auto"]);
    std::fs::create_dir(d.share.join("plain")).unwrap();
    std::fs::create_dir(d.share.join("inherits")).unwrap();
    let rwx_all = acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 7, NONE), (OTHER, 7, NONE)]);
    host_setxattr(
        &d.share.join("inherits"),
        "system.posix_acl_default",
        &rwx_all,
    );
    let c = session(&d, ACL_FLAGS).unwrap();
    let plain = c.lookup(ROOT_ID, "plain").unwrap().nodeid;
    let inherits = c.lookup(ROOT_ID, "inherits").unwrap().nodeid;
    let rw = libc::O_RDWR as u32 | libc::O_CREAT as u32;
    for (dir, name, umask, want_file, want_dir) in [
        (plain, "plain", 0o022, 0o644, 0o755),
        (plain, "plain", 0o077, 0o600, 0o700),
        (inherits, "inherits", 0o077, 0o666, 0o777),
    ] {
        let f = format!("f{umask:o}");
        let (e, o) = c.create(dir, &f, rw, libc::S_IFREG | 0o666, umask).unwrap();
        c.release(e.nodeid, o.fh, 0).unwrap();
        assert_eq!(mode(&d.share.join(name).join(&f)), want_file, "{name}/{f}");
        let sub = format!("d{umask:o}");
        c.mkdir(dir, &sub, 0o777, umask).unwrap();
        assert_eq!(
            mode(&d.share.join(name).join(&sub)),
            want_dir,
            "{name}/{sub}"
        );
        let fifo = format!("p{umask:o}");
        c.mknod(dir, &fifo, libc::S_IFIFO | 0o666, 0, umask)
            .unwrap();
        assert_eq!(
            mode(&d.share.join(name).join(&fifo)),
            want_file,
            "{name}/{fifo}"
        );
    }
    // Without DONT_MASK (a guest without ACLs) the mode is taken as sent, masked by the guest.
    // (A daemon serves one frontend: a new one for the new guest.)
    let d = Daemon::start(&["--posix-acl=auto"]);
    let c = session(&d, 0).unwrap();
    let (e, o) = c
        .create(ROOT_ID, "masked", rw, libc::S_IFREG | 0o640, 0o077)
        .unwrap();
    c.release(e.nodeid, o.fh, 0).unwrap();
    assert_eq!(mode(&d.share.join("masked")), 0o640);
}

/// An access ACL set by the guest is the host's (bytes and mode mask), and reads back; the
/// guest's FUSE_SETXATTR_ACL_KILL_SGID drops SGID, which the daemon (with CAP_FSETID) would
/// otherwise keep.
#[test]
fn access_acls_round_trip_and_kill_sgid_when_asked() {
    let d = Daemon::start(&["--posix-acl"]);
    let c = session(&d, ACL_FLAGS).unwrap();
    let with_user = acl(&[
        (USER_OBJ, 7, NONE),
        (USER, 6, 1000),
        (GROUP_OBJ, 5, NONE),
        (MASK, 6, NONE),
        (OTHER, 4, NONE),
    ]);
    let set = |node: u64, value: &[u8], kill: bool| {
        let arg = SetxattrIn {
            size: value.len() as u32,
            flags: 0,
            setxattr_flags: if kill { SETXATTR_ACL_KILL_SGID } else { 0 },
            padding: 0,
        };
        let req = FuseRequest::new(
            opcode::SETXATTR,
            node,
            vec![
                arg.as_slice().to_vec(),
                b"system.posix_acl_access\0".to_vec(),
                value.to_vec(),
            ],
            vec![16],
        );
        c.call(req).unwrap().error
    };
    for (name, kill, want) in [("keep", false, 0o2764), ("kill", true, 0o764)] {
        let path = d.share.join(name);
        std::fs::write(&path, b"x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o2770)).unwrap();
        let n = c.lookup(ROOT_ID, name).unwrap().nodeid;
        assert_eq!(set(n, &with_user, kill), None, "{name}");
        // The ACL's mask (rw-) and other (r--) entries are the host file's group and other bits.
        assert_eq!(mode(&path), want, "{name}: mode after the ACL");
        assert_eq!(
            common::host_getxattr(&path, "system.posix_acl_access"),
            with_user,
            "{name}: the host's ACL"
        );
        assert_eq!(
            c.getxattr(n, "system.posix_acl_access", 256).unwrap(),
            XattrReply::Data(with_user.clone()),
            "{name}: read back"
        );
    }
    // Not an ACL: the flag is for access ACLs only.
    assert_eq!(errno(c.getxattr(ROOT_ID, "user.none", 16)), Errno::ENODATA);
}

const GROUP: u16 = 0x08;

/// With `--translate-uid`/`--translate-gid` the named users and groups of an ACL are guest ids
/// to the guest and host ids on the host, both ways and for default ACLs and what inherits
/// them, as the kernel translates ACLs on an idmapped mount; an entry naming a forbidden guest
/// id is EINVAL (the kernel's errno for an id it cannot map in an ACL) and changes nothing.
#[test]
fn acl_ids_are_translated_both_ways() {
    let d = Daemon::start(&[
        "--posix-acl",
        "--translate-uid=map:1000:5000:10",
        "--translate-uid=forbid-guest:1500:1",
        "--translate-gid=map:1000:6000:10",
    ]);
    let c = session(&d, ACL_FLAGS).unwrap();
    let guest = |user: u32, group: u32| {
        acl(&[
            (USER_OBJ, 6, NONE),
            (USER, 4, user),
            (GROUP_OBJ, 4, NONE),
            (GROUP, 6, group),
            (MASK, 6, NONE),
            (OTHER, 0, NONE),
        ])
    };
    let access = "system.posix_acl_access";
    let default = "system.posix_acl_default";
    std::fs::write(d.share.join("f"), b"x").unwrap();
    let f = c.lookup(ROOT_ID, "f").unwrap().nodeid;
    c.setxattr(f, access, &guest(1003, 1009), 0).unwrap();
    assert_eq!(
        common::host_getxattr(&d.share.join("f"), access),
        guest(5003, 6009),
        "the host holds host ids"
    );
    assert_eq!(
        c.getxattr(f, access, 256).unwrap(),
        XattrReply::Data(guest(1003, 1009)),
        "the guest reads its own ids back"
    );
    assert_eq!(
        c.getxattr(f, access, 0).unwrap(),
        XattrReply::Size(guest(0, 0).len() as u32)
    );

    // Set on the host: host ids in a rule's range show translated, others unchanged.
    host_setxattr(&d.share.join("f"), access, &guest(5005, 42));
    assert_eq!(
        c.getxattr(f, access, 256).unwrap(),
        XattrReply::Data(guest(1005, 42))
    );

    // A forbidden id: EINVAL, the host's ACL untouched; a forbidden group id is a gid rule's
    // business (none here), so 1500 as a group passes.
    assert_eq!(
        errno(c.setxattr(f, access, &guest(1500, 1000), 0)),
        Errno::EINVAL
    );
    assert_eq!(
        common::host_getxattr(&d.share.join("f"), access),
        guest(5005, 42)
    );
    c.setxattr(f, access, &guest(1000, 1500), 0).unwrap();
    assert_eq!(
        common::host_getxattr(&d.share.join("f"), access),
        guest(5000, 1500)
    );

    // A default ACL: translated on the way in; a new file inherits the host's ids, which the
    // guest reads as its own.
    let dir = c.mkdir(ROOT_ID, "d", 0o755, 0).unwrap().nodeid;
    c.setxattr(dir, default, &guest(1001, 1002), 0).unwrap();
    assert_eq!(
        common::host_getxattr(&d.share.join("d"), default),
        guest(5001, 6002)
    );
    let (e, o) = c
        .create(
            dir,
            "new",
            libc::O_RDWR as u32 | libc::O_CREAT as u32,
            libc::S_IFREG | 0o660,
            0,
        )
        .unwrap();
    c.release(e.nodeid, o.fh, 0).unwrap();
    assert_eq!(
        common::host_getxattr(&d.share.join("d/new"), access),
        guest(5001, 6002),
        "inherited on the host"
    );
    assert_eq!(
        c.getxattr(e.nodeid, access, 256).unwrap(),
        XattrReply::Data(guest(1001, 1002))
    );
    assert_eq!(
        c.getxattr(dir, default, 256).unwrap(),
        XattrReply::Data(guest(1001, 1002))
    );

    // Other xattrs are bytes, whatever they hold.
    let looks_like_an_acl = guest(1003, 1009);
    c.setxattr(f, "user.acl-lookalike", &looks_like_an_acl, 0)
        .unwrap();
    assert_eq!(
        common::host_getxattr(&d.share.join("f"), "user.acl-lookalike"),
        looks_like_an_acl
    );
}
