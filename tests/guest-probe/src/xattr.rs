//! Extended attributes on the share: set, get, list, remove with their errno paths, or, when the
//! daemon does not serve them, EOPNOTSUPP for each call.

use std::fs;
use std::io;
use std::path::Path;

use crate::{cpath, cstr, cvt, describe, ensure_eq, Context, Tap, KIB};

/// setxattr(2) of `name` (bytes, as a guest tool takes them) with `flags`.
pub(crate) fn set_xattr(
    path: &Path,
    name: &[u8],
    value: &[u8],
    flags: libc::c_int,
) -> io::Result<()> {
    let (path, name) = (cpath(path), cbytes(name)?);
    // SAFETY: valid NUL-terminated strings and a buffer of value.len() bytes.
    cvt(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

/// getxattr(2) of `name`, up to 64 KiB (the largest value Linux allows).
pub(crate) fn get_xattr(path: &Path, name: &[u8]) -> io::Result<Vec<u8>> {
    let (path, name) = (cpath(path), cbytes(name)?);
    let mut buf = vec![0u8; 64 * KIB];
    // SAFETY: valid NUL-terminated strings and a writable buffer of buf.len() bytes.
    let n = cvt(unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n as usize);
    Ok(buf)
}

/// listxattr(2): the names, up to 64 KiB of them.
pub(crate) fn list_xattr(path: &Path) -> io::Result<Vec<String>> {
    let path = cpath(path);
    let mut buf = vec![0u8; 64 * KIB];
    // SAFETY: a valid NUL-terminated string and a writable buffer of buf.len() bytes.
    let n = cvt(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    Ok(buf[..n as usize]
        .split(|&b| b == 0)
        .filter(|name| !name.is_empty())
        .map(|name| String::from_utf8_lossy(name).into_owned())
        .collect())
}

/// `name` as a C string; a NUL inside is EINVAL.
fn cbytes(name: &[u8]) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let (path, name) = (cpath(path), cstr(name));
    // SAFETY: valid NUL-terminated strings.
    cvt(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

pub fn xattrs_on(tap: &mut Tap, dir: &Path) {
    let f = dir.join("xattr");
    if let Err(e) = fs::write(&f, "x\n") {
        tap.not_ok("xattr test file", &describe(&e));
        return;
    }
    tap.check(
        "setxattr user.test=value",
        set_xattr(&f, b"user.test", b"value", 0).context("setxattr"),
    );
    tap.check(
        "getxattr user.test reads it back",
        get_xattr(&f, b"user.test")
            .context("getxattr")
            .and_then(|v| ensure_eq("value", "value", &String::from_utf8_lossy(&v))),
    );
    tap.check(
        "listxattr lists user.test",
        list_xattr(&f).context("listxattr").and_then(|names| {
            if names.iter().any(|n| n == "user.test") {
                Ok(())
            } else {
                Err(format!("user.test not in {names:?}"))
            }
        }),
    );
    tap.refuse(
        "setxattr XATTR_CREATE on an existing name fails EEXIST",
        set_xattr(&f, b"user.test", b"other", libc::XATTR_CREATE),
        libc::EEXIST,
    );
    tap.refuse(
        "setxattr XATTR_REPLACE on a missing name fails ENODATA",
        set_xattr(&f, b"user.missing", b"v", libc::XATTR_REPLACE),
        libc::ENODATA,
    );
    tap.check(
        "removexattr user.test",
        remove_xattr(&f, "user.test").context("removexattr"),
    );
    tap.refuse(
        "getxattr after removexattr fails ENODATA",
        get_xattr(&f, b"user.test"),
        libc::ENODATA,
    );

    // Left behind for the host: run-e2e.sh --xattr reads it with os.getxattr.
    let h = dir.join("xattr-host-check");
    tap.check(
        "xattr-host-check carries user.e2e=from-guest",
        fs::write(&h, "xattr host check\n")
            .context("write")
            .and_then(|()| set_xattr(&h, b"user.e2e", b"from-guest", 0).context("setxattr"))
            .and_then(|()| get_xattr(&h, b"user.e2e").context("getxattr"))
            .and_then(|v| ensure_eq("value", "from-guest", &String::from_utf8_lossy(&v))),
    );
}

pub fn xattrs_off(tap: &mut Tap, dir: &Path) {
    let f = dir.join("xattr");
    if let Err(e) = fs::write(&f, "x\n") {
        tap.not_ok("xattr test file", &describe(&e));
        return;
    }
    // EOPNOTSUPP and ENOTSUP are the same number on Linux.
    tap.refuse(
        "xattrs off: setxattr fails EOPNOTSUPP",
        set_xattr(&f, b"user.test", b"value", 0),
        libc::EOPNOTSUPP,
    );
    tap.refuse(
        "xattrs off: getxattr fails EOPNOTSUPP",
        get_xattr(&f, b"user.test"),
        libc::EOPNOTSUPP,
    );
    tap.refuse(
        "xattrs off: listxattr fails EOPNOTSUPP",
        list_xattr(&f),
        libc::EOPNOTSUPP,
    );
}
