//! POSIX ACLs (`--posix-acl`). The ACLs themselves are the `system.posix_acl_access` and
//! `system.posix_acl_default` xattrs, served like any other (`xattr.rs`); the host kernel keeps
//! them consistent with the mode (a chmod updates the mask entry, a new file inherits the
//! parent's default ACL). What the daemon adds:
//!
//! - INIT negotiates POSIX_ACL (the guest then enforces ACLs itself), DONT_MASK and
//!   SETXATTR_EXT. `auto` offers them only to a guest that supports POSIX_ACL, `always` refuses a
//!   guest that does not (EPROTO).
//! - DONT_MASK: the guest sends a new file's mode without its umask applied, and the umask
//!   apart, because only the server knows whether the parent has a default ACL (which replaces
//!   the umask). The file is made with the guest's umask as the thread's own, so the host kernel
//!   decides as it does for a local caller.
//! - SETXATTR_EXT's FUSE_SETXATTR_ACL_KILL_SGID: the guest found that setting an access ACL must
//!   drop the file's SGID bit (the caller is not in the file's group and lacks CAP_FSETID);
//!   the daemon, which has CAP_FSETID, drops it itself.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;

use virtiofs_fuse::abi::{flags as fuse_flags, init_flags as f};
use virtiofs_fuse::{Errno, Name};

use crate::passthrough::{Passthrough, Result};
use crate::{sys, Negotiation};

/// The access ACL's xattr name.
const ACL_ACCESS: &[u8] = b"system.posix_acl_access";

impl Passthrough {
    /// The INIT flags `--posix-acl` wants of those the guest offers (`capable`).
    pub(crate) fn acl_flags(&self, capable: u64) -> Result<u64> {
        let on = match self.cfg.posix_acl {
            Negotiation::Never => false,
            _ if capable & f::POSIX_ACL != 0 => true,
            Negotiation::Auto => false,
            Negotiation::Always => {
                tracing::error!(
                    "--posix-acl=always: the guest does not support POSIX ACLs (FUSE_POSIX_ACL); \
                     its session is refused"
                );
                return Err(Errno(libc::EPROTO));
            }
        };
        self.dont_mask
            .store(on && capable & f::DONT_MASK != 0, Ordering::Relaxed);
        Ok(if on {
            f::POSIX_ACL | f::DONT_MASK | f::SETXATTR_EXT
        } else {
            0
        })
    }

    /// Runs `make` (a call that creates a file as the caller) with the guest's `umask` as the
    /// thread's when DONT_MASK is in force; otherwise the mode came masked and the daemon's
    /// umask (0) applies.
    pub(crate) fn with_guest_umask<T>(
        &self,
        umask: u32,
        make: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        if self.dont_mask.load(Ordering::Relaxed) {
            sys::with_thread_umask(umask, make)?
        } else {
            make()
        }
    }

    /// After a SETXATTR of `name` on `nodeid` with the guest's `setxattr_flags`: drops SGID
    /// when the guest asked (FUSE_SETXATTR_ACL_KILL_SGID on an access ACL).
    pub(crate) fn acl_kill_sgid(
        &self,
        nodeid: u64,
        name: &Name,
        setxattr_flags: u32,
    ) -> Result<()> {
        if setxattr_flags & fuse_flags::SETXATTR_ACL_KILL_SGID == 0 || name.as_bytes() != ACL_ACCESS
        {
            return Ok(());
        }
        let inode = self.inode(nodeid)?;
        let fd = inode.fd()?;
        let mode = u32::from(sys::fstatx(fd.as_fd(), libc::STATX_MODE)?.stx_mode);
        if mode & libc::S_ISGID != 0 {
            let name = sys::fd_name(fd.as_raw_fd());
            sys::fchmodat(
                self.proc_fd(),
                name.as_cstr(),
                mode & 0o7777 & !libc::S_ISGID,
            )?;
        }
        Ok(())
    }
}
