//! Security labels (`--security-label`): a guest with an LSM (SELinux, Smack) computes the
//! label of each node it creates and sends it with MKNOD, MKDIR, SYMLINK, CREATE and TMPFILE
//! (SECURITY_CTX, decoded by `virtiofs_fuse::ext`): an xattr name (`security.selinux`) and its
//! value. The daemon stores it on the new host node, under the `--xattrmap` name if a map is
//! given. `auto` offers SECURITY_CTX to guests that support it, `always` refuses a guest that
//! does not (EPROTO).
//!
//! **How atomic.** The node is made first (as the caller) and labelled right after (as the
//! daemon: the caller's ids carry no capabilities), through its own descriptor, before the
//! reply; if the label cannot be set the node is removed again and the guest gets the errno,
//! so a node the guest learns of always has its label. The guest's kernel holds the parent
//! directory locked for the whole request, so no other process of the guest can see the node
//! in between; a host process can, for that moment, see it without the label. This is what the
//! Rust virtiofsd 1.14 does too. The alternative, writing the label into
//! `/proc/thread-self/attr/fscreate` so the host kernel creates the node labelled (what the C
//! virtiofsd did for `security.selinux`), was left out: it works only for `security.selinux` on
//! a host that runs SELinux with a policy that knows the guest's label, not for a mapped name
//! (`--xattrmap` to `user.*`, the usual setup on hosts without SELinux), it needs a per-thread
//! procfs file the sandbox has no path to, and it cannot be tested on a host without SELinux.
//!
//! Only `security.*` names other than `security.capability` are accepted (EINVAL): every LSM
//! names its label so, and anything else would let a guest set other attributes (file
//! capabilities, `trusted.*`) as the daemon while creating a file. Whether the host takes the
//! name is the host's LSM's decision: under SELinux its policy must allow the relabel (and know
//! the label); without an LSM a 6.18 host stores it as a plain xattr for the daemon as it runs
//! by default. Where the host refuses it, every labelled request fails with the host's errno:
//! map the name with `--xattrmap` (to `user.*`, which cannot go on symlinks or devices, so
//! SYMLINK and MKNOD of a device then fail).

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use virtiofs_fuse::abi::init_flags as f;
use virtiofs_fuse::{Errno, SecCtx};

use crate::passthrough::{Passthrough, Result};
use crate::{sys, Negotiation};

/// Whether the host's refusal of a label was logged (once per process).
static HOST_REFUSAL_LOGGED: AtomicBool = AtomicBool::new(false);

/// The prefix every LSM's label xattr has.
const SECURITY_PREFIX: &[u8] = b"security.";

impl Passthrough {
    /// The INIT flags `--security-label` wants of those the guest offers (`capable`).
    pub(crate) fn seclabel_flags(&self, capable: u64) -> Result<u64> {
        match self.cfg.security_label {
            Negotiation::Never => Ok(0),
            _ if capable & f::SECURITY_CTX != 0 => Ok(f::SECURITY_CTX),
            Negotiation::Auto => {
                tracing::warn!(
                    "--security-label=auto: the guest does not send security contexts \
                     (FUSE_SECURITY_CTX); new files get no label from it"
                );
                Ok(0)
            }
            Negotiation::Always => {
                tracing::error!(
                    "--security-label=always: the guest does not send security contexts \
                     (FUSE_SECURITY_CTX); its session is refused"
                );
                Err(Errno(libc::EPROTO))
            }
        }
    }

    /// Labels the node `fd` just made as `secctx` says; when that fails, removes the node
    /// (`name` in `dir`, with `unlink_flags`; `None`: an unnamed O_TMPFILE, gone with its last
    /// descriptor) and returns the errno. Must run with the daemon's own ids.
    pub(crate) fn label_new(
        &self,
        secctx: Option<&SecCtx>,
        fd: BorrowedFd<'_>,
        named: Option<(BorrowedFd<'_>, &CStr, i32)>,
    ) -> Result<()> {
        let Some(sc) = secctx else {
            return Ok(());
        };
        let Err(e) = self.set_label(sc, fd) else {
            return Ok(());
        };
        // The host refusing labels fails every new file: worth saying once (EINVAL is the
        // guest's own malformed context, not the host's doing).
        if e.0 != libc::EINVAL && !HOST_REFUSAL_LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                name = ?sc.name,
                "the host refuses the guest's security label ({}): new files fail with that \
                 errno (see --xattrmap to store labels under another name); logged once",
                std::io::Error::from_raw_os_error(e.0)
            );
        }
        tracing::debug!(
            name = ?sc.name,
            errno = e.0,
            "security context not set on a new node; the node is removed"
        );
        if let Some((dir, name, flags)) = named {
            if let Err(u) = sys::unlinkat(dir, name, flags) {
                tracing::warn!("removing a new node whose label failed: {u}");
            }
        }
        Err(e)
    }

    /// Labels `secctx` in `dir`: opens the node (O_PATH, never following a symlink) and labels
    /// it as [`Self::label_new`] does.
    pub(crate) fn label_named(
        &self,
        secctx: Option<&SecCtx>,
        dir: BorrowedFd<'_>,
        name: &CStr,
        unlink_flags: i32,
    ) -> Result<()> {
        if secctx.is_none() {
            return Ok(());
        }
        let node = match sys::openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
            Ok(node) => node,
            Err(e) => {
                let _ = sys::unlinkat(dir, name, unlink_flags);
                return Err(e.into());
            }
        };
        self.label_new(secctx, node.as_fd(), Some((dir, name, unlink_flags)))
    }

    fn set_label(&self, sc: &SecCtx, fd: BorrowedFd<'_>) -> Result<()> {
        let guest = sc.name.as_bytes();
        if !guest.starts_with(SECURITY_PREFIX) || guest == b"security.capability" {
            return Err(Errno(libc::EINVAL));
        }
        let host = self.host_name(&sc.name)?;
        // Through the descriptor's /proc/self/fd entry, which leads to the node itself
        // whatever its type (a symlink too: the magic link is not followed further).
        let fd_name = sys::fd_name(fd.as_raw_fd());
        sys::in_thread_dir(self.proc_fd(), || {
            // SAFETY: NUL-terminated path and name; the value is readable for its length.
            let r = unsafe {
                libc::setxattr(
                    fd_name.as_cstr().as_ptr(),
                    host.as_ptr(),
                    sc.value.as_ptr().cast(),
                    sc.value.len(),
                    0,
                )
            };
            if r != 0 {
                return Err(Errno::last());
            }
            Ok(())
        })?
    }
}
