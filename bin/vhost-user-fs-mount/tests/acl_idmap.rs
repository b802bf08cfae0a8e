//! POSIX ACLs with `--translate-uid`/`--translate-gid` through the host kernel's FUSE client,
//! mounted as the Linux virtio-fs driver mounts (`--default-permissions`: the kernel enforces
//! modes and, with POSIX_ACL, the ACLs it reads): an ACL set through the mount names guest
//! ids, which the host's copy holds translated; the kernel grants and denies by the guest ids it
//! reads back; an entry naming a forbidden guest id is EINVAL.

mod common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::{as_user, errno, set_mode, Kind, Mounted};

const ACCESS: &std::ffi::CStr = c"system.posix_acl_access";

/// An access ACL: user::rw-, user:`user`:r--, group::r--, group:`group`:r--, mask::r--, other::---.
fn acl(user: u32, group: u32) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, user),
        (0x04, 4, u32::MAX),
        (0x08, 4, group),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn set_acl(p: &Path, value: &[u8]) -> std::io::Result<()> {
    let path = cpath(p);
    // SAFETY: valid C strings; `value` is readable for its length.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            ACCESS.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn get_acl(p: &Path) -> Vec<u8> {
    let path = cpath(p);
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            ACCESS.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(n >= 0, "getxattr: {}", std::io::Error::last_os_error());
    buf.truncate(n as usize);
    buf
}

#[test]
fn acls_name_guest_ids_and_are_enforced_for_them() {
    let m = Mounted::start_with(
        Kind::Ours,
        &[],
        &[
            "--posix-acl",
            "--translate-uid=map:1000:5000:10",
            "--translate-uid=forbid-guest:1500:1",
            "--translate-gid=map:1000:6000:10",
        ],
        &["--default-permissions"],
    )
    .expect("async-virtiofsd must be built for these tests");
    let f = m.mnt.join("secret");
    fs::write(&f, b"secret").unwrap();
    set_mode(&f, 0o640);
    let read = |uid: u32| {
        let f = f.clone();
        as_user(uid, uid, &[], move || fs::read(&f).map_err(|e| errno(&e)))
    };
    assert_eq!(read(1003), Err(libc::EACCES), "0640 root file, no ACL yet");

    set_acl(&f, &acl(1003, 1009)).unwrap();
    assert_eq!(
        get_acl(&m.backend.share.join("secret")),
        acl(5003, 6009),
        "the host's copy holds host ids"
    );
    assert_eq!(get_acl(&f), acl(1003, 1009), "the mount shows guest ids");
    assert_eq!(read(1003), Ok(b"secret".to_vec()), "its named entry grants");
    assert_eq!(read(1004), Err(libc::EACCES));
    // A member of the named group only.
    let g = f.clone();
    assert_eq!(
        as_user(1100, 1009, &[], move || fs::read(&g).map_err(|e| errno(&e))),
        Ok(b"secret".to_vec()),
        "the named group's entry grants"
    );

    assert_eq!(
        set_acl(&f, &acl(1500, 1009)).map_err(|e| errno(&e)),
        Err(libc::EINVAL),
        "a forbidden guest id"
    );
    assert_eq!(get_acl(&m.backend.share.join("secret")), acl(5003, 6009));
}
