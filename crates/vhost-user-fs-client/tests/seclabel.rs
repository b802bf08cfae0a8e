//! `--security-label` (issue 13): what is negotiated with which guest, the security context a
//! guest sends with MKNOD, MKDIR, SYMLINK, CREATE and TMPFILE stored as the new host node's
//! xattr, and no node left behind when the context is malformed or cannot be set.
//!
//! On a host without SELinux a `security.*` xattr is a plain xattr the daemon (root) may set
//! with its default capabilities; a refusal is provoked by mapping the name to `trusted.*`,
//! which takes CAP_SYS_ADMIN, a capability the daemon does not keep.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::path::Path;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::init_flags::SECURITY_CTX;
use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{Errno, FsClient, FuseOps, FuseRequest, InitParams};

const SELINUX: &[u8] = b"security.selinux";
const LABEL: &[u8] = b"system_u:object_r:container_file_t:s0:c1,c2\0";

fn session(d: &Daemon, flags: u64, minor: Option<u32>) -> Result<FsClient, Errno> {
    let c = d.connect(d.config());
    let mut p = InitParams::default();
    p.flags |= flags;
    if let Some(m) = minor {
        p.minor = m;
    }
    match c.init_with(p) {
        Ok(_) => Ok(c),
        Err(e) => Err(e.errno().expect("an errno")),
    }
}

/// An xattr of `path` itself (not following a symlink), read on the host; None: absent.
fn host_lgetxattr(path: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 4096) };
    if n < 0 {
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENODATA),
            "host lgetxattr"
        );
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// A request that makes a node of the given name.
type Maker = fn(&str) -> FuseRequest;

/// The named kinds of node a context comes with, each with the request that makes one.
fn makers() -> Vec<(&'static str, Maker)> {
    vec![
        ("create", |n| {
            FuseRequest::create(ROOT_ID, n, libc::O_RDWR as u32, 0o100644, 0)
        }),
        ("mkdir", |n| FuseRequest::mkdir(ROOT_ID, n, 0o40755, 0)),
        ("mknod", |n| {
            FuseRequest::mknod(ROOT_ID, n, libc::S_IFIFO | 0o644, 0, 0)
        }),
        ("symlink", |n| FuseRequest::symlink(ROOT_ID, n, "target")),
    ]
}

#[test]
fn negotiation_follows_the_mode_and_the_guest() {
    for (opt, guest, minor, want) in [
        ("--security-label=never", SECURITY_CTX, None, Ok(0)),
        (
            "--security-label=auto",
            SECURITY_CTX,
            None,
            Ok(SECURITY_CTX),
        ),
        ("--security-label=auto", 0, None, Ok(0)),
        ("--security-label", SECURITY_CTX, None, Ok(SECURITY_CTX)),
        ("--security-label=always", 0, None, Err(Errno(libc::EPROTO))),
        // 7.36/7.37 guests send the context as a plain argument: not served, not agreed.
        ("--security-label=auto", SECURITY_CTX, Some(37), Ok(0)),
        (
            "--security-label=always",
            SECURITY_CTX,
            Some(37),
            Err(Errno(libc::EPROTO)),
        ),
        ("--xattr", SECURITY_CTX, None, Ok(0)),
    ] {
        let d = Daemon::start(&[opt]);
        let got = session(&d, guest, minor).map(|c| c.session_flags() & SECURITY_CTX);
        assert_eq!(got, want, "{opt}, guest offers {guest:#x}, minor {minor:?}");
    }
}

#[test]
fn each_new_node_gets_the_guests_label_on_the_host() {
    let d = Daemon::start(&["--security-label"]);
    let c = session(&d, SECURITY_CTX, None).unwrap();
    let ext = FuseRequest::secctx_ext(Some((SELINUX, LABEL)));
    for (kind, make) in makers() {
        let name = format!("labelled-{kind}");
        let r = c.call(make(&name).with_ext(ext.clone())).unwrap();
        assert_eq!(r.error, None, "{kind}");
        let got = host_lgetxattr(&d.share.join(&name), SELINUX);
        assert_eq!(got.as_deref(), Some(LABEL), "{kind}");
    }
    // TMPFILE has no name: the label is read back through the daemon.
    let req = FuseRequest::tmpfile(ROOT_ID, libc::O_RDWR as u32, 0o100600, 0).with_ext(ext);
    let (e, _) = c.call(req).unwrap().create().unwrap();
    match c.getxattr(e.nodeid, SELINUX, 4096).unwrap() {
        vhost_user_fs_client::XattrReply::Data(v) => assert_eq!(v, LABEL),
        other => panic!("tmpfile: {other:?}"),
    }
    // A CREATE of a file that is there already (made on the host meanwhile) opens it and
    // leaves its label alone.
    let there = d.share.join("there");
    std::fs::write(&there, b"x").unwrap();
    let ext = FuseRequest::secctx_ext(Some((SELINUX, b"other_t\0")));
    let req = makers()[0].1("there").with_ext(ext.clone());
    assert_eq!(c.call(req).unwrap().error, None);
    assert_eq!(host_lgetxattr(&there, SELINUX), None);
    // ... unless the guest asked for O_EXCL: EEXIST.
    let excl = (libc::O_RDWR | libc::O_EXCL) as u32;
    let req = FuseRequest::create(ROOT_ID, "there", excl, 0o100644, 0).with_ext(ext);
    assert_eq!(errno(c.call(req).unwrap().create()), Errno(libc::EEXIST));
}

#[test]
fn no_context_means_no_label() {
    let d = Daemon::start(&["--security-label"]);
    let c = session(&d, SECURITY_CTX, None).unwrap();
    for (kind, make) in makers() {
        // The guest's LSM gave none (nr_secctx 0), or no extension came at all.
        for (how, ext) in [("empty", FuseRequest::secctx_ext(None)), ("none", vec![])] {
            let name = format!("{kind}-{how}");
            let r = c.call(make(&name).with_ext(ext)).unwrap();
            assert_eq!(r.error, None, "{kind} {how}");
            let path = d.share.join(&name);
            assert!(path.symlink_metadata().is_ok(), "{kind} {how}");
            assert_eq!(host_lgetxattr(&path, SELINUX), None, "{kind} {how}");
        }
    }
}

#[test]
fn bad_contexts_are_einval_and_leave_no_node() {
    let d = Daemon::start(&["--security-label"]);
    let c = session(&d, SECURITY_CTX, None).unwrap();
    let good = FuseRequest::secctx_ext(Some((SELINUX, LABEL)));
    let set_u32 = |mut v: Vec<u8>, at: usize, x: u32| {
        v[at..at + 4].copy_from_slice(&x.to_le_bytes());
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("two contexts", set_u32(good.clone(), 4, 2)),
        ("value size 0", set_u32(good.clone(), 8, 0)),
        ("value past the end", set_u32(good.clone(), 8, 4096)),
        ("value over XATTR_SIZE_MAX", set_u32(good.clone(), 8, 65537)),
        (
            "record past the end",
            set_u32(good.clone(), 0, good.len() as u32 + 64),
        ),
        (
            "record cut after the size",
            set_u32(good[..16].to_vec(), 0, 16),
        ),
        ("context twice", [good.clone(), good.clone()].concat()),
        (
            "not a security. name",
            FuseRequest::secctx_ext(Some((b"trusted.evil", LABEL))),
        ),
        (
            "file capabilities",
            FuseRequest::secctx_ext(Some((b"security.capability", LABEL))),
        ),
    ];
    for (what, ext) in cases {
        for (kind, make) in makers() {
            let name = format!("bad-{kind}");
            let r = c.call(make(&name).with_ext(ext.clone())).unwrap();
            assert_eq!(r.error, Some(Errno(libc::EINVAL)), "{what}: {kind}");
            let path = d.share.join(&name);
            assert!(
                path.symlink_metadata().is_err(),
                "{what}: {kind} left behind"
            );
        }
    }
    // The session goes on: a good context still works.
    let r = c.call(makers()[1].1("after").with_ext(good)).unwrap();
    assert_eq!(r.error, None);
}

#[test]
fn a_label_the_host_refuses_fails_the_request_and_removes_the_node() {
    // trusted.* names take CAP_SYS_ADMIN, which the daemon does not have: EPERM.
    let d = Daemon::start(&[
        "--security-label",
        "--xattrmap=:map:security.selinux:trusted.virtiofs.:",
    ]);
    let c = session(&d, SECURITY_CTX, None).unwrap();
    let ext = FuseRequest::secctx_ext(Some((SELINUX, LABEL)));
    for (kind, make) in makers() {
        let name = format!("refused-{kind}");
        let r = c.call(make(&name).with_ext(ext.clone())).unwrap();
        assert_eq!(r.error, Some(Errno::EPERM), "{kind}");
        assert!(d.share.join(&name).symlink_metadata().is_err(), "{kind}");
    }
    let req = FuseRequest::tmpfile(ROOT_ID, libc::O_RDWR as u32, 0o100600, 0).with_ext(ext);
    assert_eq!(errno(c.call(req).unwrap().create()), Errno::EPERM);
    assert_eq!(std::fs::read_dir(&d.share).unwrap().count(), 0);
    // The administrator is told, once.
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = d.take_log();
    assert_eq!(
        log.matches("refuses the guest's security label").count(),
        1,
        "{log}"
    );
}

#[test]
fn xattrmap_names_the_label_on_the_host() {
    // The usual setup on a host without SELinux: the guest's label under user.virtiofs.,
    // which needs no capability.
    let d = Daemon::start(&[
        "--security-label",
        "--xattrmap=:map:security.selinux:user.virtiofs.:",
    ]);
    let c = session(&d, SECURITY_CTX, None).unwrap();
    let ext = FuseRequest::secctx_ext(Some((SELINUX, LABEL)));
    let r = c.call(makers()[0].1("mapped").with_ext(ext)).unwrap();
    assert_eq!(r.error, None);
    let path = d.share.join("mapped");
    assert_eq!(
        host_lgetxattr(&path, b"user.virtiofs.security.selinux").as_deref(),
        Some(LABEL)
    );
    assert_eq!(host_lgetxattr(&path, SELINUX), None);
}
