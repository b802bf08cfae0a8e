//! Options that change what the guest is offered or how files open (issue 13's family):
//! host locks on or off, shared mmap of direct-I/O files, O_NOATIME, xattr name mapping.
//! `--readonly` has its own
//! file (`readonly.rs`).
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use common::{errno, Daemon};
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

fn host_setxattr(path: &std::path::Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and a value of the given length.
    let r = unsafe {
        libc::setxattr(
            c.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "host setxattr: {}", std::io::Error::last_os_error());
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
