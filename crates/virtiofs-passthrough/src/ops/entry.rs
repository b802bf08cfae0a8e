//! Names in directories: LOOKUP, FORGET, MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RMDIR, RENAME.
//!
//! Every call names one component relative to the parent's O_PATH descriptor (its own, or one
//! opened from its file handle for the call), so no path is walked; new names are never "." or
//! ".." (EINVAL), and symlinks are never followed. A request that makes a node checks the fd
//! quota first unless the node will be a file handle (it holds no descriptor), and takes an
//! inode of the share's quota (`ops/quota.rs`); removals give theirs back.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use virtiofs_fuse::abi::ROOT_ID;
use virtiofs_fuse::{Context, Entry, Errno, Name, SecCtx};

use crate::ops::quota::made;
use crate::passthrough::{existing_name, new_name, Passthrough, Result};
use crate::sys;

/// How many ".." steps a parent check takes at most (PATH_MAX / 2: no path is deeper).
const MAX_DEPTH: usize = 2048;

/// The host `dev_t` of FUSE's 32-bit device number (the kernel's `new_encode_dev`).
pub(crate) fn host_dev(rdev: u32) -> u64 {
    let major = (rdev & 0xfff00) >> 8;
    let minor = (rdev & 0xff) | ((rdev >> 12) & 0xfff00);
    libc::makedev(major, minor)
}

impl Passthrough {
    pub(crate) fn do_lookup(&self, parent: u64, name: &Name) -> Result<Entry> {
        let dir = self.inode(parent)?;
        if !dir.is_dir() {
            return Err(Errno(libc::ENOTDIR));
        }
        let name = existing_name(name)?;
        if name.to_bytes() != b".." {
            return self.lookup_in(&dir, name);
        }
        // ".." (EXPORT_SUPPORT: the guest asks for parents). Of the root it is the root.
        if dir.id == ROOT_ID {
            return self.lookup_in(&dir, c".");
        }
        self.node_quota(&dir)?;
        let dir_fd = dir.fd()?;
        let up = sys::openat(dir_fd.as_fd(), c"..", libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        self.check_within_share(&up, parent)?;
        self.lookup_fd(&dir, dir_fd.as_fd(), up)
    }

    /// Refuses (ENOENT, as the kernel answers for a directory cut off from its mount's root) a
    /// parent reached by ".." that is not inside the share: a directory the host moved out of
    /// the share has a ".." outside it. In the namespace sandbox the kernel already refuses
    /// that walk (the share is the root mount); with `--sandbox chroot` or `none` this walk up
    /// to the share's root is what stops it.
    fn check_within_share(&self, dir: &OwnedFd, from: u64) -> Result<()> {
        let root = self.inode(ROOT_ID)?;
        let ident = |stx: &libc::statx| (stx.stx_dev_major, stx.stx_dev_minor, stx.stx_ino);
        let root_id = ident(&sys::fstatx(root.fd()?.as_fd(), libc::STATX_INO)?);
        let mut cur = sys::fstatx(dir.as_fd(), libc::STATX_INO)?;
        let mut up: Option<OwnedFd> = None;
        // The depth bound only guards against a filesystem whose ".." never ends.
        for _ in 0..MAX_DEPTH {
            if ident(&cur) == root_id {
                return Ok(());
            }
            let here = up.as_ref().map_or(dir.as_fd(), AsFd::as_fd);
            let next = sys::openat(here, c"..", libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            let next_stx = sys::fstatx(next.as_fd(), libc::STATX_INO)?;
            if ident(&next_stx) == ident(&cur) {
                break; // the top of the filesystem (or of the process's root): not the share
            }
            cur = next_stx;
            up = Some(next);
        }
        tracing::warn!(
            "LOOKUP '..' of node {from}: its parent is outside the shared directory (moved there \
             by the host?); refused"
        );
        Err(Errno(libc::ENOENT))
    }

    #[allow(clippy::too_many_arguments)] // MKNOD's fields, as the trait method takes them
    pub(crate) fn do_mknod(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        mode: u32,
        rdev: u32,
        umask: u32,
        secctx: Option<&SecCtx>,
    ) -> Result<Entry> {
        let dir = self.inode(parent)?;
        self.node_quota(&dir)?;
        let name = new_name(name)?;
        let dir_fd = dir.fd()?;
        let charge = self.take_inode(dir_fd.as_fd(), name)?;
        {
            let _caller = self.as_caller(ctx)?;
            self.with_guest_umask(umask, || {
                Ok(sys::mknodat(dir_fd.as_fd(), name, mode, host_dev(rdev))?)
            })?;
        }
        self.label_named(secctx, dir_fd.as_fd(), name, 0)?;
        made(charge);
        self.lookup_at(&dir, dir_fd.as_fd(), name)
    }

    pub(crate) fn do_mkdir(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        mode: u32,
        umask: u32,
        secctx: Option<&SecCtx>,
    ) -> Result<Entry> {
        let dir = self.inode(parent)?;
        self.node_quota(&dir)?;
        let name = new_name(name)?;
        let dir_fd = dir.fd()?;
        let charge = self.take_inode(dir_fd.as_fd(), name)?;
        {
            let _caller = self.as_caller(ctx)?;
            self.with_guest_umask(umask, || Ok(sys::mkdirat(dir_fd.as_fd(), name, mode)?))?;
        }
        self.label_named(secctx, dir_fd.as_fd(), name, libc::AT_REMOVEDIR)?;
        made(charge);
        self.lookup_at(&dir, dir_fd.as_fd(), name)
    }

    pub(crate) fn do_symlink(
        &self,
        ctx: &Context,
        parent: u64,
        name: &Name,
        target: &[u8],
        secctx: Option<&SecCtx>,
    ) -> Result<Entry> {
        let dir = self.inode(parent)?;
        self.node_quota(&dir)?;
        let name = new_name(name)?;
        let target = CString::new(target).map_err(|_| Errno(libc::EINVAL))?;
        let dir_fd = dir.fd()?;
        let charge = self.take_inode(dir_fd.as_fd(), name)?;
        {
            let _caller = self.as_caller(ctx)?;
            sys::symlinkat(&target, dir_fd.as_fd(), name)?;
        }
        self.label_named(secctx, dir_fd.as_fd(), name, 0)?;
        made(charge);
        self.lookup_at(&dir, dir_fd.as_fd(), name)
    }

    pub(crate) fn do_link(&self, nodeid: u64, newparent: u64, newname: &Name) -> Result<Entry> {
        let inode = self.inode(nodeid)?;
        let dir = self.inode(newparent)?;
        self.node_quota(&dir)?;
        let name = new_name(newname)?;
        // Through the node's /proc/self/fd entry: linking the file the descriptor holds (a
        // symlink stays a symlink), with no need for CAP_DAC_READ_SEARCH (AT_EMPTY_PATH).
        let fd = inode.fd()?;
        let fd_name = sys::fd_name(fd.as_raw_fd());
        let dir_fd = dir.fd()?;
        sys::linkat(
            self.proc_fd(),
            fd_name.as_cstr(),
            dir_fd.as_fd(),
            name,
            libc::AT_SYMLINK_FOLLOW,
        )?;
        self.lookup_at(&dir, dir_fd.as_fd(), name)
    }

    pub(crate) fn do_unlink(&self, parent: u64, name: &Name, flags: i32) -> Result<()> {
        let dir = self.inode(parent)?;
        let name = existing_name(name)?;
        let dir_fd = dir.fd()?;
        let gone = self.removing(dir_fd.as_fd(), name);
        sys::unlinkat(dir_fd.as_fd(), name, flags)?;
        self.removed(gone);
        Ok(())
    }

    pub(crate) fn do_rename(
        &self,
        olddir: u64,
        oldname: &Name,
        newdir: u64,
        newname: &Name,
        flags: u32,
    ) -> Result<()> {
        let old = self.inode(olddir)?;
        let new = self.inode(newdir)?;
        let oldname = existing_name(oldname)?;
        let newname = new_name(newname)?;
        let (old_fd, new_fd) = (old.fd()?, new.fd()?);
        let (from, to) = (old_fd.as_fd(), new_fd.as_fd());
        let gone = self.replacing(from, oldname, to, newname, flags);
        sys::renameat2(from, oldname, to, newname, flags)?;
        self.removed(gone);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_decode_as_the_kernel_encodes_them() {
        // /dev/null is 1:3; a large minor uses the high bits.
        assert_eq!(host_dev((1 << 8) | 3), libc::makedev(1, 3));
        let (major, minor) = (259u32, 70_000u32);
        let fuse = (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
        assert_eq!(host_dev(fuse), libc::makedev(major, minor));
    }
}
