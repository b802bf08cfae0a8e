//! READ, WRITE and FSYNC prepared for the pipeline's io_uring: everything `do_read`,
//! `do_write` and `do_fsync` do before their system call (handle lookup, killpriv), returned as
//! a [`PreparedIo`] holding the handle (so its descriptor stays open until the I/O is done).
//!
//! A WRITE under a byte quota is not prepared (it runs `do_write`): its growth is measured
//! around the system call, holding a per-file lock that lives on the calling thread.

use std::os::fd::AsRawFd;

use virtiofs_fuse::abi::{flags as fuse_flags, ReadIn, WriteIn};
use virtiofs_fuse::{GuestSlice, IoKind, PreparedIo};

use crate::ops::file::iovecs;
use crate::passthrough::{Passthrough, Result};
use crate::sys::IOV_MAX;

impl Passthrough {
    /// Whether WRITE can be prepared (no byte quota: see the module docs).
    pub fn prepares_writes(&self) -> bool {
        self.byte_quota().is_none()
    }

    pub(crate) fn do_prepare_read(
        &self,
        nodeid: u64,
        arg: &ReadIn,
        dst: &[GuestSlice<'_>],
    ) -> Result<Option<PreparedIo>> {
        let h = self.handles.get(nodeid, arg.fh)?;
        let iov = iovecs(dst, arg.size as usize);
        // Nothing to read, or more iovecs than one preadv takes: the synchronous path.
        if iov.is_empty() || iov.len() > IOV_MAX {
            return Ok(None);
        }
        Ok(Some(PreparedIo {
            kind: IoKind::Read,
            fd: h.fd().as_raw_fd(),
            offset: arg.offset,
            iovecs: iov.into_vec(),
            keep: Box::new(h),
        }))
    }

    pub(crate) fn do_prepare_write(
        &self,
        nodeid: u64,
        arg: &WriteIn,
        src: &[GuestSlice<'_>],
    ) -> Result<Option<PreparedIo>> {
        if self.byte_quota().is_some() {
            return Ok(None);
        }
        let h = self.handles.get(nodeid, arg.fh)?;
        let iov = iovecs(src, arg.size as usize);
        if iov.is_empty() || iov.len() > IOV_MAX {
            return Ok(None);
        }
        self.kill_suidgid(
            arg.write_flags & fuse_flags::WRITE_KILL_SUIDGID != 0,
            h.fd(),
        )?;
        Ok(Some(PreparedIo {
            kind: IoKind::Write,
            fd: h.fd().as_raw_fd(),
            offset: arg.offset,
            iovecs: iov.into_vec(),
            keep: Box::new(h),
        }))
    }

    pub(crate) fn do_prepare_fsync(
        &self,
        nodeid: u64,
        fh: u64,
        datasync: bool,
    ) -> Result<Option<PreparedIo>> {
        let h = self.handles.get(nodeid, fh)?;
        Ok(Some(PreparedIo {
            kind: IoKind::Fsync { datasync },
            fd: h.fd().as_raw_fd(),
            offset: 0,
            iovecs: Vec::new(),
            keep: Box::new(h),
        }))
    }
}
