//! Extended attributes (`--xattr`): SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR.
//!
//! An O_PATH descriptor cannot carry xattr calls, so they go by the node's `/proc/self/fd/N`
//! path, whose magic link leads to the node itself (needs /proc in the sandbox: `--sandbox
//! chroot` refuses `--xattr`). Symlinks are refused with EOPNOTSUPP: the path call would follow
//! them. Without `--xattr` every call is ENOSYS, and the guest stops asking.

use std::ffi::CStr;

use virtiofs_fuse::{Errno, Name, Xattr};

use crate::inode::Inode;
use crate::passthrough::{Passthrough, Result};

/// The largest value or list (`XATTR_SIZE_MAX`, `XATTR_LIST_MAX`): a guest asking for more gets
/// this much at most, not an allocation of its choosing.
const XATTR_MAX: u32 = 65536;

fn check(ret: libc::ssize_t) -> Result<usize> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(ret as usize)
    }
}

impl Passthrough {
    /// The node's path for xattr calls, once the option and the file type allow them.
    fn xattr_path(&self, nodeid: u64) -> Result<crate::passthrough::ProcPath> {
        if !self.cfg.xattr {
            return Err(Errno(libc::ENOSYS));
        }
        let inode: std::sync::Arc<Inode> = self.inode(nodeid)?;
        if inode.kind == libc::S_IFLNK {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        self.proc_path(inode)
    }

    pub(crate) fn do_setxattr(
        &self,
        nodeid: u64,
        name: &Name,
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        let path = self.xattr_path(nodeid)?;
        // SAFETY: NUL-terminated path and name; `value` is readable for its length.
        let r = unsafe {
            libc::setxattr(
                path.as_ptr(),
                name.as_cstr().as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags as i32,
            )
        };
        check(r as libc::ssize_t).map(drop)
    }

    pub(crate) fn do_getxattr(&self, nodeid: u64, name: &Name, size: u32) -> Result<Xattr> {
        let path = self.xattr_path(nodeid)?;
        let get = |buf: &mut [u8]| {
            // SAFETY: NUL-terminated path and name; `buf` is writable for its length.
            check(unsafe {
                libc::getxattr(
                    path.as_ptr(),
                    name.as_cstr().as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            })
        };
        sized(size, get)
    }

    pub(crate) fn do_listxattr(&self, nodeid: u64, size: u32) -> Result<Xattr> {
        let path = self.xattr_path(nodeid)?;
        let list = |buf: &mut [u8]| {
            // SAFETY: NUL-terminated path; `buf` is writable for its length.
            check(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
        };
        sized(size, list)
    }

    pub(crate) fn do_removexattr(&self, nodeid: u64, name: &Name) -> Result<()> {
        let path = self.xattr_path(nodeid)?;
        remove(&path, name.as_cstr())
    }
}

fn remove(path: &CStr, name: &CStr) -> Result<()> {
    // SAFETY: NUL-terminated path and name.
    let r = unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) };
    check(r as libc::ssize_t).map(drop)
}

/// A GETXATTR/LISTXATTR answer: the size when `size` is 0, else the data (ERANGE when it is
/// bigger than `size`, from the host).
fn sized(size: u32, call: impl Fn(&mut [u8]) -> Result<usize>) -> Result<Xattr> {
    if size == 0 {
        return Ok(Xattr::Size(call(&mut [])? as u32));
    }
    let mut buf = vec![0u8; size.min(XATTR_MAX) as usize];
    let n = call(&mut buf)?;
    buf.truncate(n);
    Ok(Xattr::Data(buf))
}
