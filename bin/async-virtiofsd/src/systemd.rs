//! systemd integration, written against the documented protocols (no libsystemd):
//! readiness notification (`NOTIFY_SOCKET`, sd_notify(3)) and socket activation
//! (`LISTEN_FDS` / `LISTEN_PID`, sd_listen_fds(3)).
//!
//! In namespace mode the daemon is the supervisor's child, in a new PID namespace: systemd (with
//! its default `NotifyAccess=main`) only listens to the process it started. So the child writes
//! its notifications into a pipe and the supervisor, woken by SIGIO, relays them to the notify
//! socket from a signal handler (read(2) and send(2) are async-signal-safe) while it waits for
//! the child.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicI32, Ordering};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// Why socket activation cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not a number.
    #[error("socket activation: LISTEN_FDS={0:?} is not a number")]
    BadCount(String),
    /// Not exactly one socket.
    #[error("socket activation: {0} sockets passed (LISTEN_FDS), exactly one vhost-user socket expected")]
    Count(u32),
}

/// The descriptor systemd passed us (`LISTEN_PID` is our pid and `LISTEN_FDS=1`): fd 3.
/// `None` when there is no socket activation, or it is meant for another process.
pub fn activation_fd() -> Result<Option<RawFd>, ActivationError> {
    let Some(pid) = std::env::var_os("LISTEN_PID") else {
        return Ok(None);
    };
    if pid.to_str().and_then(|p| p.parse::<u32>().ok()) != Some(std::process::id()) {
        return Ok(None);
    }
    let fds = std::env::var("LISTEN_FDS").unwrap_or_default();
    // Ours: consumed, as sd_listen_fds(1) does (this runs first thing, single-threaded).
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    match fds.parse::<u32>() {
        Ok(1) => Ok(Some(LISTEN_FDS_START)),
        Ok(n) => Err(ActivationError::Count(n)),
        Err(_) => Err(ActivationError::BadCount(fds)),
    }
}

/// Sends sd_notify(3) messages, if `NOTIFY_SOCKET` is set; every method does nothing otherwise.
pub struct Notifier {
    target: Target,
}

enum Target {
    None,
    /// Straight to the notify socket (connected before the sandbox hides its path).
    Socket(UnixDatagram),
    /// Through the supervisor: the write end of the relay pipe.
    Relay(OwnedFd),
}

/// The relay's descriptors, for the SIGIO handler: the pipe's read end and the notify socket.
static RELAY_READ: AtomicI32 = AtomicI32::new(-1);
static RELAY_SOCKET: AtomicI32 = AtomicI32::new(-1);

impl Notifier {
    /// Connects to `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace). A socket that
    /// cannot be reached is logged and ignored: readiness is a courtesy, not a reason to fail.
    pub fn from_env() -> Self {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self {
                target: Target::None,
            };
        };
        let connect = || -> io::Result<UnixDatagram> {
            use std::os::unix::ffi::OsStrExt;
            let bytes = name.as_bytes();
            let addr = match bytes.strip_prefix(b"@") {
                Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name)?,
                None => SocketAddr::from_pathname(&name)?,
            };
            let socket = UnixDatagram::unbound()?;
            socket.connect_addr(&addr)?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        };
        match connect() {
            Ok(socket) => Self {
                target: Target::Socket(socket),
            },
            Err(e) => {
                tracing::warn!(
                    "NOTIFY_SOCKET={}: {e}; not notifying systemd",
                    name.to_string_lossy()
                );
                Self {
                    target: Target::None,
                }
            }
        }
    }

    /// Before the namespace sandbox forks: routes the child's messages through a pipe that the
    /// supervisor (this process) relays. Call [`Notifier::child`] in the child afterwards.
    pub fn relay_through_supervisor(&mut self) -> io::Result<()> {
        let Target::Socket(socket) = &self.target else {
            return Ok(());
        };
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on our own descriptor; SIGIO goes to this process when data arrives.
        unsafe {
            if libc::fcntl(read.as_raw_fd(), libc::F_SETOWN, libc::getpid()) < 0
                || libc::fcntl(
                    read.as_raw_fd(),
                    libc::F_SETFL,
                    libc::O_NONBLOCK | libc::O_ASYNC,
                ) < 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        RELAY_SOCKET.store(socket.as_raw_fd(), Ordering::SeqCst);
        RELAY_READ.store(read.into_raw_fd(), Ordering::SeqCst);
        // SAFETY: the handler only uses read(2) and send(2) on descriptors kept open for the
        // process's life (the supervisor never closes them).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = relay_handler as *const () as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGIO, &action, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let Target::Socket(socket) = std::mem::replace(&mut self.target, Target::Relay(write))
        else {
            unreachable!()
        };
        // The supervisor keeps using the socket through RELAY_SOCKET.
        let _ = socket.into_raw_fd();
        Ok(())
    }

    /// In the sandboxed child: ignores SIGIO, which only the supervisor handles, and closes the
    /// supervisor's relay ends.
    pub fn child(&self) {
        // SAFETY: setting a signal disposition, then closing the supervisor's relay descriptors,
        // which this process never uses.
        unsafe {
            libc::signal(libc::SIGIO, libc::SIG_IGN);
            for fd in [&RELAY_READ, &RELAY_SOCKET] {
                let fd = fd.swap(-1, Ordering::SeqCst);
                if fd >= 0 {
                    libc::close(fd);
                }
            }
        }
    }

    /// `READY=1` with a status text: the socket listens and the daemon is set up.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// `STOPPING=1`: shutdown began.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=Shutting down\n");
    }

    fn send(&self, msg: &str) {
        let sent = match &self.target {
            Target::None => return,
            Target::Socket(socket) => socket.send(msg.as_bytes()).map(|_| ()),
            Target::Relay(pipe) => {
                // One write below PIPE_BUF is atomic: the supervisor reads whole messages.
                // SAFETY: writing a live buffer to our own descriptor.
                let n = unsafe { libc::write(pipe.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }
        };
        if let Err(e) = sent {
            tracing::debug!("sd_notify {msg:?}: {e}");
        }
    }
}

/// SIGIO in the supervisor: moves what the child wrote to the notify socket. Only
/// async-signal-safe calls; messages end in `\n`, so a read holding several is still valid.
extern "C" fn relay_handler(_: libc::c_int) {
    let read = RELAY_READ.load(Ordering::Relaxed);
    let socket = RELAY_SOCKET.load(Ordering::Relaxed);
    if read < 0 || socket < 0 {
        return;
    }
    let saved = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: read(2) and send(2) into/from a stack buffer; both are async-signal-safe.
        let n = unsafe { libc::read(read, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        unsafe { libc::send(socket, buf.as_ptr().cast(), n as usize, libc::MSG_DONTWAIT) };
    }
    // SAFETY: restores errno for the code the signal interrupted.
    unsafe { *libc::__errno_location() = saved };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifies_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Target::Socket({
                let s = UnixDatagram::unbound().unwrap();
                s.connect(&path).unwrap();
                s
            }),
        };
        notifier.ready("Waiting");
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=Waiting\n");
        Notifier {
            target: Target::None,
        }
        .stopping(); // no socket: nothing happens
    }
}
