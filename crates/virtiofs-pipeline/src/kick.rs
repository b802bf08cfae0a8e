//! A queue's kick eventfd (or an io_uring's CQ eventfd), polled by the queue thread's runtime.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// An eventfd polled by tokio and never read (see [`AsyncKick::wait`]).
pub(crate) struct AsyncKick(AsyncFd<OwnedFd>);

impl AsyncKick {
    /// Registers `fd` (a duplicate of the ring's kick eventfd) with the current runtime.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Self> {
        // The frontend's eventfd may be blocking; AsyncFd needs O_NONBLOCK (a status flag shared
        // with the library's copy, which never reads it for our queues).
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on an fd we own; no memory is passed.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is an OwnedFd that the AsyncFd owns until it is dropped.
        let afd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self(afd))
    }

    /// Waits for a kick. The eventfd is never read: epoll (tokio's, edge-triggered) reports
    /// every write to an eventfd as a new event whatever its counter holds, so clearing tokio's
    /// readiness is all a wait needs, and a wake-up costs the `epoll_wait` alone instead of
    /// that and a `read` (one syscall per request at depth 1). Nothing else reads these fds
    /// (`virtiofs-device` gives the library no epoll thread) and nothing reads them level-
    /// triggered, so the counter is only a sum nobody looks at: at one kick per request it
    /// would take millennia to reach the eventfd's limit. A kick after the clear is not lost:
    /// it is a new edge, reported at the runtime's next poll.
    pub(crate) async fn wait(&self) -> io::Result<()> {
        let mut guard = self.0.readable().await?;
        guard.clear_ready();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, FromRawFd};
    use std::time::Duration;

    use super::*;

    fn eventfd() -> OwnedFd {
        // SAFETY: eventfd(2) takes no pointers; the fd it returns is ours alone.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", io::Error::last_os_error());
        // SAFETY: `fd` was just created and is owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    fn kick(fd: &OwnedFd) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a local buffer to an eventfd we own.
        let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        assert_eq!(n, 8);
    }

    fn counter(fd: &OwnedFd) -> u64 {
        let mut buf = [0u8; 8];
        // SAFETY: reads 8 bytes into a local buffer from an eventfd we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(n, 8, "read: {}", io::Error::last_os_error());
        u64::from_ne_bytes(buf)
    }

    #[tokio::test]
    async fn every_kick_wakes_although_the_counter_is_never_read() {
        let guest = eventfd();
        let waiter = AsyncKick::new(guest.as_fd().try_clone_to_owned().unwrap()).unwrap();
        for _ in 0..3 {
            kick(&guest);
            tokio::time::timeout(Duration::from_secs(10), waiter.wait())
                .await
                .expect("a kick wakes the wait")
                .unwrap();
        }
        assert_eq!(counter(&guest), 3, "the waits did not consume the kicks");
    }

    #[tokio::test]
    async fn a_wait_without_a_new_kick_sleeps_although_the_counter_is_not_zero() {
        let guest = eventfd();
        let waiter = AsyncKick::new(guest.as_fd().try_clone_to_owned().unwrap()).unwrap();
        kick(&guest);
        waiter.wait().await.unwrap();
        let again = tokio::time::timeout(Duration::from_millis(100), waiter.wait()).await;
        assert!(again.is_err(), "woke for a kick it had already seen");
        // And the next kick still gets through.
        kick(&guest);
        tokio::time::timeout(Duration::from_secs(10), waiter.wait())
            .await
            .expect("a new kick wakes the wait")
            .unwrap();
    }
}
