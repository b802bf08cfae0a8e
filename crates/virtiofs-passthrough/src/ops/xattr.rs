//! Extended attributes (`--xattr`): SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR.
//!
//! An O_PATH descriptor cannot carry xattr calls, so they go by the node's `/proc/self/fd`
//! entry (relative to the thread's working directory, moved there: no absolute path, so it
//! works in every sandbox), whose magic link leads to the node itself, whatever its type; no
//! file is opened. Symlinks are refused with EOPNOTSUPP: the path call would follow them.
//! Without `--xattr` every call is ENOSYS, and the guest stops asking.

use std::borrow::Cow;
use std::ffi::CStr;

use virtiofs_fuse::{Errno, Name, Xattr};

use crate::idmap::is_acl_name;
use crate::inode::Inode;
use crate::passthrough::{Passthrough, Result};
use crate::Forbidden;

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
    /// Runs an xattr `call` on the path of node `nodeid`, once the option and the file type
    /// allow it.
    fn on_xattr_path<T>(&self, nodeid: u64, call: impl FnOnce(&CStr) -> Result<T>) -> Result<T> {
        if !self.cfg.xattr {
            return Err(Errno(libc::ENOSYS));
        }
        let inode: std::sync::Arc<Inode> = self.inode(nodeid)?;
        if inode.kind == libc::S_IFLNK {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        self.with_node_path(&inode, call)
    }

    /// The host's name for the guest's `name` (`--xattrmap`), or the errno it is refused with.
    pub(crate) fn host_name<'a>(&self, name: &'a Name) -> Result<Cow<'a, CStr>> {
        if !self.cfg.xattr {
            return Err(Errno(libc::ENOSYS));
        }
        match &self.cfg.xattrmap {
            Some(map) => map.to_host(name.as_cstr()),
            None => Ok(Cow::Borrowed(name.as_cstr())),
        }
    }

    pub(crate) fn do_setxattr(
        &self,
        nodeid: u64,
        name: &Name,
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        // An ACL's named users and groups are guest ids (`idmap/acl.rs`).
        let value: Cow<'_, [u8]> = match &self.idmaps {
            Some(m) if is_acl_name(name.as_bytes()) => {
                let mut v = value.to_vec();
                m.acl_to_host(&mut v).map_err(|Forbidden(id)| {
                    tracing::debug!("an ACL entry names the forbidden guest id {id}: EINVAL");
                    Errno(libc::EINVAL)
                })?;
                Cow::Owned(v)
            }
            _ => Cow::Borrowed(value),
        };
        let name = self.host_name(name)?;
        self.on_xattr_path(nodeid, |path| {
            // SAFETY: NUL-terminated path and name; `value` is readable for its length.
            let r = unsafe {
                libc::setxattr(
                    path.as_ptr(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags as i32,
                )
            };
            check(r as libc::ssize_t).map(drop)
        })
    }

    pub(crate) fn do_getxattr(&self, nodeid: u64, name: &Name, size: u32) -> Result<Xattr> {
        let acl_ids = self
            .idmaps
            .as_deref()
            .filter(|_| is_acl_name(name.as_bytes()));
        let name = self.host_name(name)?;
        let mut reply = self.on_xattr_path(nodeid, |path| {
            let get = |buf: &mut [u8]| {
                // SAFETY: NUL-terminated path and name; `buf` is writable for its length.
                check(unsafe {
                    libc::getxattr(
                        path.as_ptr(),
                        name.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                })
            };
            sized(size, get)
        })?;
        if let (Some(m), Xattr::Data(value)) = (acl_ids, &mut reply) {
            m.acl_to_guest(value);
        }
        Ok(reply)
    }

    pub(crate) fn do_listxattr(&self, nodeid: u64, size: u32) -> Result<Xattr> {
        self.on_xattr_path(nodeid, |path| {
            let list = |buf: &mut [u8]| {
                // SAFETY: NUL-terminated path; `buf` is writable for its length.
                check(unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
            };
            match &self.cfg.xattrmap {
                None => sized(size, list),
                // The guest's list is known only once the host's whole list is mapped.
                Some(map) => {
                    let mut host = vec![0u8; XATTR_MAX as usize];
                    let n = list(&mut host)?;
                    let guest = map.list_to_guest(&host[..n]);
                    match size {
                        0 => Ok(Xattr::Size(guest.len() as u32)),
                        s if guest.len() > s as usize => Err(Errno(libc::ERANGE)),
                        _ => Ok(Xattr::Data(guest)),
                    }
                }
            }
        })
    }

    pub(crate) fn do_removexattr(&self, nodeid: u64, name: &Name) -> Result<()> {
        let name = self.host_name(name)?;
        self.on_xattr_path(nodeid, |path| remove(path, &name))
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
