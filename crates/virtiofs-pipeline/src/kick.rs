//! A queue's kick eventfd, polled by the queue thread's runtime, or waited for in poll(2) by a
//! queue task alone on its thread (no other task there to run meanwhile).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A kick eventfd polled by tokio.
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

    /// A duplicate of the eventfd (for [`crate::alarm::Alarms::set_nudge`]).
    pub(crate) fn try_clone(&self) -> io::Result<OwnedFd> {
        self.0.get_ref().try_clone()
    }

    /// Blocks the thread in poll(2) until a kick comes, then consumes it (one read). Only for
    /// a task that nothing else on its thread waits for: tokio runs nothing meanwhile. Saves
    /// tokio's wake-up path (its park, IO driver, readiness and task wake: ~1,450 instructions
    /// of a GETATTR at depth 1); the system calls are those of [`Self::wait`] (a wait, a read).
    pub(crate) fn wait_blocking(&self) -> io::Result<()> {
        let fd = self.0.get_ref().as_raw_fd();
        loop {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on the stack, for an fd we own.
            if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            match read_counter(fd) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                r => return r,
            }
        }
    }

    /// Waits for a kick and consumes it (one read, whatever number of kicks it sums).
    ///
    /// The read is not needed for correctness (epoll here is edge-triggered and reports every
    /// write), but without it a queue thread that shares a CPU with the guest's submitting
    /// thread went back to sleep sooner and woke once per request: it lost in the guest and at
    /// depth 16 (docs/performance-history.md, session 22). Keep it unless that is measured again.
    pub(crate) async fn wait(&self) -> io::Result<()> {
        loop {
            let mut guard = self.0.readable().await?;
            let res = guard.try_io(|fd| read_counter(fd.as_raw_fd()));
            match res {
                Ok(Ok(())) => {
                    // The read reset the eventfd's counter to 0: it is not readable any more.
                    // Saying so now saves the next wait a read(2) that would only find EAGAIN
                    // (one syscall per wake-up). A kick after our read is not lost: epoll is
                    // edge-triggered and reports it at the runtime's next poll.
                    guard.clear_ready();
                    return Ok(());
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Reads (and so resets) the counter of eventfd `fd`, whatever number of kicks it sums.
fn read_counter(fd: RawFd) -> io::Result<()> {
    let mut buf = [0u8; 8];
    // SAFETY: reads 8 bytes into a local buffer from an eventfd the caller owns.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
