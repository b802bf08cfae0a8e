//! Small commands for the guest's shell scripts, where busybox has no tool (it has no setfattr,
//! getfattr, setfacl, getfacl, and no way to run a command as a uid without a user database):
//!
//! ```text
//! guest-probe as UID GID CMD [ARG...]      run CMD with real, effective and saved uid UID and
//!                                          gid GID, no supplementary groups (the same in the
//!                                          FUSE requests it makes)
//! guest-probe setxattr PATH NAME VALUE     setxattr(2), no flags
//! guest-probe getxattr PATH NAME           prints the value
//! guest-probe listxattr PATH               prints the names, one a line
//! guest-probe setacl PATH access|default ENTRIES
//!                                          writes system.posix_acl_access (or _default) in
//!                                          the kernel's binary layout; ENTRIES is getfacl's
//!                                          short form: u::rw-,u:1000:r--,g::r--,m::r--,o::---
//! guest-probe getacl PATH access|default   prints the ACL in that form (same order)
//! ```
//!
//! A failing call prints `guest-probe: CALL PATH: ERRNO (message)` on stderr and exits 1, so a
//! script can match the errno name (`EACCES`, `EDQUOT`, ...).

use std::ffi::{CString, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::ExitCode;

use crate::xattr::{get_xattr, list_xattr, set_xattr};
use crate::{cstr, cvt, describe};

/// The commands this module answers; anything else is the probe's test run.
pub const COMMANDS: &[&str] = &[
    "as",
    "setxattr",
    "getxattr",
    "listxattr",
    "setacl",
    "getacl",
];

const ACL_VERSION: u32 = 2;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
/// The ACL entry tags (`linux/posix_acl.h`) and their getfacl letters, in the order the kernel
/// requires them.
const TAGS: &[(u16, &str)] = &[
    (0x01, "u"), // ACL_USER_OBJ
    (0x02, "u"), // ACL_USER
    (0x04, "g"), // ACL_GROUP_OBJ
    (0x08, "g"), // ACL_GROUP
    (0x10, "m"), // ACL_MASK
    (0x20, "o"), // ACL_OTHER
];

/// Runs `guest-probe CMD ARGS...` for a `CMD` in [`COMMANDS`].
pub fn run(cmd: &str, args: &[OsString]) -> ExitCode {
    let arg = |i: usize| args.get(i).map(|a| a.as_bytes());
    let path = |i: usize| args.get(i).map(Path::new);
    let result = match (cmd, args.len()) {
        ("as", n) if n >= 3 => run_as(args),
        ("setxattr", 3) => set_xattr(path(0).unwrap(), arg(1).unwrap(), arg(2).unwrap(), 0)
            .map_err(|e| failed("setxattr", &args[0], &e)),
        ("getxattr", 2) => get_xattr(path(0).unwrap(), arg(1).unwrap())
            .map(|v| println!("{}", String::from_utf8_lossy(&v)))
            .map_err(|e| failed("getxattr", &args[0], &e)),
        ("listxattr", 1) => list_xattr(path(0).unwrap())
            .map(|names| names.iter().for_each(|n| println!("{n}")))
            .map_err(|e| failed("listxattr", &args[0], &e)),
        ("setacl", 3) => acl_name(arg(1).unwrap()).and_then(|name| {
            let text = String::from_utf8_lossy(arg(2).unwrap());
            let value = encode_acl(&text)?;
            set_xattr(path(0).unwrap(), name.as_bytes(), &value, 0)
                .map_err(|e| failed("setacl", &args[0], &e))
        }),
        ("getacl", 2) => acl_name(arg(1).unwrap()).and_then(|name| {
            let value = get_xattr(path(0).unwrap(), name.as_bytes())
                .map_err(|e| failed("getacl", &args[0], &e))?;
            println!("{}", decode_acl(&value)?);
            Ok(())
        }),
        _ => Err(format!(
            "usage: guest-probe {cmd} ... (see the commands in tests/guest-probe/src/tools.rs)"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("guest-probe: {msg}");
            ExitCode::from(1)
        }
    }
}

fn failed(call: &str, path: &OsString, e: &io::Error) -> String {
    format!("{call} {}: {}", path.to_string_lossy(), describe(e))
}

/// `as UID GID CMD ARGS...`: drops to the ids and execs CMD (returns only on failure).
fn run_as(args: &[OsString]) -> Result<(), String> {
    let id = |i: usize| -> Result<u32, String> {
        args[i]
            .to_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("as: not a number: {}", args[i].to_string_lossy()))
    };
    let (uid, gid) = (id(0)?, id(1)?);
    let argv: Vec<CString> = args[2..]
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "as: NUL in an argument".to_owned()))
        .collect::<Result<_, _>>()?;
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: plain system calls; execvp gets a NULL-terminated array of valid C strings that
    // outlive the call.
    unsafe {
        cvt(libc::setgroups(0, std::ptr::null())).map_err(|e| format!("setgroups: {e}"))?;
        cvt(libc::setresgid(gid, gid, gid)).map_err(|e| format!("setresgid: {e}"))?;
        cvt(libc::setresuid(uid, uid, uid)).map_err(|e| format!("setresuid: {e}"))?;
        libc::execvp(ptrs[0], ptrs.as_ptr());
    }
    Err(format!(
        "as: exec {}: {}",
        args[2].to_string_lossy(),
        describe(&io::Error::last_os_error())
    ))
}

fn acl_name(which: &[u8]) -> Result<CString, String> {
    match which {
        b"access" => Ok(cstr("system.posix_acl_access")),
        b"default" => Ok(cstr("system.posix_acl_default")),
        _ => Err("setacl/getacl: say access or default".to_owned()),
    }
}

/// `u::rw-,u:1000:r--,...` to the xattr's bytes (little-endian: version, then tag, perm, id per
/// entry).
fn encode_acl(text: &str) -> Result<Vec<u8>, String> {
    let mut out = ACL_VERSION.to_le_bytes().to_vec();
    for entry in text.split(',') {
        let bad = || format!("bad ACL entry '{entry}' (want e.g. u:1000:r--)");
        let mut parts = entry.split(':');
        let (kind, id, perm) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(k), Some(i), Some(p), None) => (k, i, p),
            _ => return Err(bad()),
        };
        let named = !id.is_empty();
        let tag = match (kind, named) {
            ("u", false) => 0x01,
            ("u", true) => 0x02,
            ("g", false) => 0x04,
            ("g", true) => 0x08,
            ("m", false) => 0x10,
            ("o", false) => 0x20,
            _ => return Err(bad()),
        };
        let id = if named {
            id.parse::<u32>().map_err(|_| bad())?
        } else {
            ACL_UNDEFINED_ID
        };
        let perm = match perm.as_bytes() {
            [r, w, x] if matches!((r, w, x), (b'r' | b'-', b'w' | b'-', b'x' | b'-')) => {
                u16::from(*r == b'r') << 2 | u16::from(*w == b'w') << 1 | u16::from(*x == b'x')
            }
            _ => return Err(bad()),
        };
        out.extend_from_slice(&u16::to_le_bytes(tag));
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

/// The xattr's bytes to the short text form.
fn decode_acl(value: &[u8]) -> Result<String, String> {
    if value.len() < 4 || (value.len() - 4) % 8 != 0 {
        return Err(format!("ACL of {} bytes", value.len()));
    }
    let version = u32::from_le_bytes(value[..4].try_into().unwrap());
    if version != ACL_VERSION {
        return Err(format!("ACL version {version}"));
    }
    let mut entries = Vec::new();
    for e in value[4..].chunks(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let perm = u16::from_le_bytes([e[2], e[3]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let letter = TAGS
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, l)| *l)
            .ok_or_else(|| format!("unknown ACL tag {tag:#x}"))?;
        let id = if tag == 0x02 || tag == 0x08 {
            id.to_string()
        } else {
            String::new()
        };
        let bit = |b: u16, c: char| if perm & b != 0 { c } else { '-' };
        entries.push(format!(
            "{letter}:{id}:{}{}{}",
            bit(4, 'r'),
            bit(2, 'w'),
            bit(1, 'x')
        ));
    }
    Ok(entries.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_text_round_trips_through_the_binary_layout() {
        let text = "u::rw-,u:1000:r--,g::r--,g:7:rwx,m::r-x,o::---";
        let bytes = encode_acl(text).unwrap();
        assert_eq!(bytes.len(), 4 + 6 * 8);
        assert_eq!(&bytes[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&bytes[12..20], &[2, 0, 4, 0, 0xe8, 3, 0, 0]);
        assert_eq!(decode_acl(&bytes).unwrap(), text);
        assert!(encode_acl("u:x:rw-").is_err());
        assert!(encode_acl("m:5:rw-").is_err());
        assert!(encode_acl("o::rwz").is_err());
    }
}
