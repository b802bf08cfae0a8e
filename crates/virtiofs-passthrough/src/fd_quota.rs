//! The guest's share of the daemon's file descriptors.
//!
//! The kernel hands out the lowest free descriptor, so "every descriptor below the quota is in
//! use" is exactly "the lowest free descriptor is at or above the quota": one F_DUPFD probe tells.
//! Requests that would open descriptors are refused with EMFILE once the quota is reached; the
//! descriptors above it stay for the daemon (vhost-user messages carry fds, memory regions, the
//! kick eventfds dup'ed on a ring restart), so a guest that opens everything cannot break its own
//! device or starve requests that need no new descriptor.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Refuses descriptor-opening requests once the guest holds `limit` descriptors.
#[derive(Debug)]
pub struct FdQuota {
    limit: u64,
    probe: OwnedFd,
}

impl FdQuota {
    /// A quota of `limit` descriptors (counting the daemon's own, which sit at the lowest numbers).
    pub fn new(limit: u64) -> io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor we own.
        let probe = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { limit, probe })
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether `fd`, just opened (the kernel gave the lowest free number), lies below the
    /// limit: false exactly when [`Self::exhausted`] would have been true before the open.
    pub fn admits(&self, fd: &OwnedFd) -> bool {
        (fd.as_raw_fd() as u64) < self.limit
    }

    /// True when no descriptor below the limit is free.
    pub fn exhausted(&self) -> bool {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own; the copy is closed at once.
        let fd = unsafe { libc::fcntl(self.probe.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            return true; // EMFILE: not even one is free
        }
        // SAFETY: `fd` was just created by us.
        unsafe { libc::close(fd) };
        fd as u64 >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_sees_the_lowest_free_descriptor() {
        let quota = FdQuota::new(0).unwrap();
        assert!(quota.exhausted(), "limit 0 is always exhausted");
        let lowest = {
            let f = std::fs::File::open("/dev/null").unwrap();
            f.as_raw_fd() as u64
        };
        // The descriptor `lowest` is free again: a quota above it has room.
        assert!(!FdQuota::new(lowest + 100).unwrap().exhausted());
        // A new descriptor is the probe itself: admitted below the limit, not at it.
        let f: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let n = f.as_raw_fd() as u64;
        assert!(FdQuota::new(n + 1).unwrap().admits(&f));
        assert!(!FdQuota::new(n).unwrap().admits(&f));
    }
}
