//! Options that change what the guest is offered or how files open (issue 13's family):
//! host locks on or off, shared mmap of direct-I/O files, O_NOATIME, xattr name mapping.
//! `--readonly` has its own
//! file (`readonly.rs`).
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use common::{errno, host_setxattr, Daemon};
use vhost_user_fs_client::abi::init_flags::{DIRECT_IO_ALLOW_MMAP, FLOCK_LOCKS, POSIX_LOCKS};
use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{Errno, FuseOps, InitParams};

/// Host locks are offered by default (POSIX_LOCKS, FLOCK_LOCKS) and not with the C virtiofsd's
/// `-o no_posix_lock` / `-o no_flock` (what libvirt's `<lock posix='off' flock='off'/>` passes),
/// each on its own; the guest then keeps those locks locally.
#[test]
fn lock_options_decide_what_init_offers() {
    let both = POSIX_LOCKS | FLOCK_LOCKS;
    for (opts, want) in [
        (&[][..], both),
        (&["-o", "no_posix_lock"][..], FLOCK_LOCKS),
        (&["-o", "no_flock"][..], POSIX_LOCKS),
        (&["-o", "no_posix_lock,no_flock"][..], 0),
        (&["-o", "no_flock", "-o", "flock,posix_lock"][..], both),
    ] {
        let d = Daemon::start(opts);
        let c = d.connect(d.config());
        let mut p = InitParams::default();
        p.flags |= both;
        c.init_with(p).unwrap();
        assert_eq!(c.session_flags() & both, want, "{opts:?}");
    }
}

/// `--allow-mmap` offers DIRECT_IO_ALLOW_MMAP (guests from 6.6 then allow shared mmap of files
/// opened with direct I/O, as `--cache=never|metadata` opens them); without it, it is not.
#[test]
fn allow_mmap_offers_direct_io_allow_mmap() {
    for (opts, want) in [
        (&["--cache=never"][..], 0),
        (&["--cache=never", "--allow-mmap"][..], DIRECT_IO_ALLOW_MMAP),
    ] {
        let d = Daemon::start(opts);
        let c = d.connect(d.config());
        let mut p = InitParams::default();
        p.flags |= DIRECT_IO_ALLOW_MMAP | vhost_user_fs_client::abi::init_flags::INIT_EXT;
        c.init_with(p).unwrap();
        assert_eq!(c.session_flags() & DIRECT_IO_ALLOW_MMAP, want, "{opts:?}");
    }
}

/// O_NOATIME on a file the daemon may not use it for (it lacks CAP_FOWNER here and does not
/// own the file): the host says EPERM. By default the file opens without it (the guest's
/// kernel already checked the caller may ask); with `--preserve-noatime` the guest gets EPERM.
#[test]
fn o_noatime_is_dropped_where_the_host_refuses_it_unless_preserved() {
    const O_NOATIME: u32 = libc::O_NOATIME as u32;
    for (preserve, want) in [(false, None), (true, Some(Errno::EPERM))] {
        let mut args = vec!["--modcaps=-fowner"];
        if preserve {
            args.push("--preserve-noatime");
        }
        let d = Daemon::start(&args);
        let path = d.share.join("theirs");
        std::fs::write(&path, b"x").unwrap();
        std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
        let c = d.connect(d.config());
        c.init().unwrap();
        let e = c.lookup(ROOT_ID, "theirs").unwrap();
        let got = c.open(e.nodeid, libc::O_RDONLY as u32 | O_NOATIME);
        match want {
            None => {
                let o = got.unwrap_or_else(|e| panic!("preserve={preserve}: {e}"));
                assert_eq!(c.read(e.nodeid, o.fh, 0, 8).unwrap(), b"x");
            }
            Some(want) => assert_eq!(errno(got), want, "preserve={preserve}"),
        }
        // Without O_NOATIME nothing changes.
        c.open(e.nodeid, libc::O_RDONLY as u32).unwrap();
    }
}

/// The host's xattr names on `path`.
fn host_xattr_names(path: &std::path::Path) -> Vec<String> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: a valid path and a buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "host listxattr: {}",
        std::io::Error::last_os_error()
    );
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect()
}

/// `--xattrmap` with the mapping overlayfs in a guest needs (the Rust virtiofsd's example 2 as
/// one `map` rule): the guest's `trusted.` names live under `user.virtiofs.` on the host (a
/// daemon without CAP_SYS_ADMIN cannot set `trusted.` itself), other names pass, the target of
/// the remapping is out of the guest's reach, and the host's own `trusted.` names are hidden.
/// It turns xattrs on by itself.
#[test]
fn xattrmap_remaps_trusted_for_the_guest() {
    use vhost_user_fs_client::XattrReply;
    let d = Daemon::start(&["--xattrmap", "/map/trusted./user.virtiofs./"]);
    let path = d.share.join("f");
    std::fs::write(&path, b"x").unwrap();
    host_setxattr(&path, "trusted.host-only", b"h");
    host_setxattr(&path, "user.virtiofs.trusted.preset", b"p");
    let c = d.connect(d.config());
    c.init().unwrap();
    let f = c.lookup(ROOT_ID, "f").unwrap().nodeid;

    c.setxattr(f, "trusted.overlay.opaque", b"y", 0).unwrap();
    c.setxattr(f, "user.plain", b"u", 0).unwrap();
    let mut host = host_xattr_names(&path);
    host.sort();
    assert_eq!(
        host,
        [
            "trusted.host-only",
            "user.plain",
            "user.virtiofs.trusted.overlay.opaque",
            "user.virtiofs.trusted.preset"
        ]
    );
    assert_eq!(
        c.getxattr(f, "trusted.preset", 16).unwrap(),
        XattrReply::Data(b"p".to_vec()),
        "a host name under the prefix is the guest's trusted. name"
    );
    assert_eq!(
        errno(c.getxattr(f, "user.virtiofs.trusted.preset", 16)),
        Errno::EPERM
    );
    assert_eq!(
        errno(c.setxattr(f, "user.virtiofs.x", b"v", 0)),
        Errno::EPERM
    );
    assert_eq!(
        errno(c.getxattr(f, "trusted.host-only", 16)),
        Errno::ENODATA
    );
    let want = b"trusted.overlay.opaque\0trusted.preset\0user.plain\0";
    let list = match c.listxattr(f, 256).unwrap() {
        XattrReply::Data(d) => d,
        other => panic!("{other:?}"),
    };
    let mut names: Vec<&[u8]> = list.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            &b"trusted.overlay.opaque"[..],
            b"trusted.preset",
            b"user.plain"
        ]
    );
    assert_eq!(
        c.listxattr(f, 0).unwrap(),
        XattrReply::Size(want.len() as u32)
    );
    assert_eq!(
        errno(c.listxattr(f, 8)),
        Errno::ERANGE,
        "the mapped list is longer"
    );
    c.removexattr(f, "trusted.overlay.opaque").unwrap();
    assert!(!host_xattr_names(&path).contains(&"user.virtiofs.trusted.overlay.opaque".into()));
}

/// `--killpriv-v2` (HANDLE_KILLPRIV_V2): the guest leaves clearing SUID/SGID and file
/// capabilities to the daemon and says when (a write or truncate by a caller without
/// CAP_FSETID, an open with O_TRUNC). The daemon then works without CAP_FSETID, so the host
/// kernel applies its own rules: SUID always goes, SGID only with group execute,
/// `security.capability` goes. Without the guest's flag nothing is cleared (a root caller).
#[test]
fn killpriv_v2_clears_suid_sgid_and_capabilities_when_the_guest_asks() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use vhost_user_fs_client::abi::init_flags::HANDLE_KILLPRIV_V2;
    use vhost_user_fs_client::abi::{fattr, opcode, OpenIn, SetattrIn, WriteIn};
    use vhost_user_fs_client::FuseRequest;
    use vm_memory::ByteValued;
    const WRITE_KILL_SUIDGID: u32 = 1 << 2;
    const OPEN_KILL_SUIDGID: u32 = 1 << 0;
    // A v2 vfs_cap_data with CAP_NET_BIND_SERVICE permitted and effective.
    const CAPS: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    let d = Daemon::start(&["--killpriv-v2"]);
    let c = d.connect(d.config());
    let mut p = InitParams::default();
    p.flags |= HANDLE_KILLPRIV_V2;
    c.init_with(p).unwrap();
    assert_ne!(c.session_flags() & HANDLE_KILLPRIV_V2, 0, "negotiated");
    let mode = |name: &str| std::fs::metadata(d.share.join(name)).unwrap().mode() & 0o7777;
    let make = |name: &str, mode: u32| {
        let path = d.share.join(name);
        std::fs::write(&path, b"0123456789").unwrap();
        std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        c.lookup(ROOT_ID, name).unwrap().nodeid
    };
    let write = |node: u64, fh: u64, flags: u32| {
        let arg = WriteIn {
            fh,
            size: 1,
            write_flags: flags,
            ..Default::default()
        };
        let req = FuseRequest::new(
            opcode::WRITE,
            node,
            vec![arg.as_slice().to_vec(), vec![b'x']],
            vec![24],
        );
        assert_eq!(c.call(req).unwrap().error, None, "WRITE");
    };

    // A write without the flag (the guest caller had CAP_FSETID) keeps everything.
    let n = make("keep", 0o4755);
    let fh = c.open(n, libc::O_RDWR as u32).unwrap().fh;
    write(n, fh, 0);
    assert_eq!(mode("keep"), 0o4755);
    // With it: SUID goes; SGID goes with group execute, stays without (the kernel's rules).
    for (name, before, after) in [
        ("suid", 0o4755, 0o755),
        ("sgid-x", 0o2755, 0o755),
        ("sgid", 0o2644, 0o2644),
    ] {
        let n = make(name, before);
        let fh = c.open(n, libc::O_RDWR as u32).unwrap().fh;
        write(n, fh, WRITE_KILL_SUIDGID);
        assert_eq!(mode(name), after, "{name}: write");
    }
    // security.capability goes with a flagged write.
    let n = make("caps", 0o755);
    host_setxattr(&d.share.join("caps"), "security.capability", &CAPS);
    let fh = c.open(n, libc::O_RDWR as u32).unwrap().fh;
    write(n, fh, WRITE_KILL_SUIDGID);
    assert!(
        !host_xattr_names(&d.share.join("caps")).contains(&"security.capability".into()),
        "file capabilities cleared"
    );
    // Truncate with FATTR_KILL_SUIDGID.
    let n = make("trunc", 0o4755);
    let arg = SetattrIn {
        valid: fattr::SIZE | fattr::KILL_SUIDGID,
        size: 1,
        ..Default::default()
    };
    c.setattr(n, arg).unwrap();
    assert_eq!(mode("trunc"), 0o755, "truncate");
    // Open with O_TRUNC and FUSE_OPEN_KILL_SUIDGID.
    let n = make("otrunc", 0o4755);
    let open = OpenIn {
        flags: (libc::O_RDWR | libc::O_TRUNC) as u32,
        open_flags: OPEN_KILL_SUIDGID,
    };
    let req = FuseRequest::new(opcode::OPEN, n, vec![open.as_slice().to_vec()], vec![32]);
    assert_eq!(c.call(req).unwrap().error, None, "OPEN");
    assert_eq!(mode("otrunc"), 0o755, "open O_TRUNC");
    assert_eq!(std::fs::metadata(d.share.join("otrunc")).unwrap().len(), 0);
}

/// Without `--killpriv-v2` HANDLE_KILLPRIV_V2 is not offered, and a guest's flag is ignored
/// (its kernel clears the bits itself then, with a SETATTR).
#[test]
fn killpriv_v2_is_off_by_default() {
    use vhost_user_fs_client::abi::init_flags::HANDLE_KILLPRIV_V2;
    let d = Daemon::start(&[]);
    let c = d.connect(d.config());
    let mut p = InitParams::default();
    p.flags |= HANDLE_KILLPRIV_V2;
    c.init_with(p).unwrap();
    assert_eq!(c.session_flags() & HANDLE_KILLPRIV_V2, 0);
}

/// Without `--killpriv-v2` the guest's kernel clears SUID/SGID itself, with a SETATTR, except
/// on an open with O_TRUNC: with ATOMIC_O_TRUNC the open truncates and the kernel sends
/// nothing more. So the daemon clears them for such an open by a caller other than root, as
/// ext4 does for a truncate by a caller without CAP_FSETID (OPEN and CREATE of an existing
/// file); root's keeps them, and an open without O_TRUNC changes nothing.
#[test]
fn o_trunc_by_a_non_root_caller_clears_suid_without_killpriv_v2() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use vhost_user_fs_client::abi::{opcode, CreateIn, OpenIn};
    use vhost_user_fs_client::{Creds, FuseRequest};
    use vm_memory::ByteValued;

    let d = Daemon::start(&[]);
    let c = d.connect(d.config());
    c.init().unwrap();
    let mode = |name: &str| std::fs::metadata(d.share.join(name)).unwrap().mode() & 0o7777;
    let make = |name: &str, mode: u32| {
        let path = d.share.join(name);
        std::fs::write(&path, b"0123456789").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        c.lookup(ROOT_ID, name).unwrap().nodeid
    };
    let open = |node: u64, flags: i32, creds: Creds| {
        let arg = OpenIn {
            flags: flags as u32,
            open_flags: 0,
        };
        let req = FuseRequest::new(opcode::OPEN, node, vec![arg.as_slice().to_vec()], vec![32]);
        assert_eq!(c.with_creds(creds).call(req).unwrap().error, None, "OPEN");
    };
    let (user, root) = (Creds::user(1000, 1000), Creds::root());
    let (trunc, wtrunc) = (libc::O_RDWR | libc::O_TRUNC, libc::O_WRONLY | libc::O_TRUNC);
    for (name, before, creds, flags, after) in [
        ("suid", 0o4777, user, trunc, 0o777),
        ("sgid-x", 0o2777, user, wtrunc, 0o777),
        ("sgid", 0o2666, user, trunc, 0o2666),
        ("root", 0o4777, root, trunc, 0o4777),
        ("no-trunc", 0o4777, user, libc::O_RDWR, 0o4777),
    ] {
        let n = make(name, before);
        open(n, flags, creds);
        assert_eq!(mode(name), after, "{name}");
    }
    // CREATE of an existing name with O_TRUNC, by the user.
    make("created", 0o4777);
    let arg = CreateIn {
        flags: (libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC) as u32,
        mode: libc::S_IFREG | 0o644,
        umask: 0o022,
        open_flags: 0,
    };
    let req = FuseRequest::new(
        opcode::CREATE,
        ROOT_ID,
        vec![arg.as_slice().to_vec(), b"created\0".to_vec()],
        vec![16 + 128 + 32],
    );
    assert_eq!(c.with_creds(user).call(req).unwrap().error, None, "CREATE");
    assert_eq!(mode("created"), 0o777, "CREATE O_TRUNC of an existing file");
    assert_eq!(std::fs::metadata(d.share.join("created")).unwrap().len(), 0);
}
