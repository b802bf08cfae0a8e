//! `--sandbox`: where the daemon's filesystem root is once it serves a guest.
//!
//! - `namespace`: new mount, PID and network namespaces (plus a user namespace when not root),
//!   then pivot_root into the shared directory itself: the share is `/`, nothing else of the
//!   host is mounted. The file server opens `/proc/self/fd` (from a private /proc of the new PID
//!   namespace) before the pivot and uses it by descriptor only. A supervisor process stays
//!   outside, forwards signals and exits with the daemon's status.
//! - `chroot`: chroot(2) into the shared directory, no namespaces, no supervisor.
//! - `none`: nothing; for callers that contain the daemon themselves (Kata's runtime-rs).
//!
//! docs/security.md says which escape each layer stops.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{
    sigaction, sigprocmask, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{chdir, chroot, fork, getegid, geteuid, pivot_root, ForkResult, Pid};

use crate::userns::{self, NsIdMaps};
use crate::Error;

/// The `--sandbox` choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Namespaces and pivot_root into the share (default).
    #[default]
    Namespace,
    /// chroot(2) into the share.
    Chroot,
    /// No sandbox.
    None,
}

impl SandboxMode {
    /// The names accepted on the command line.
    pub const NAMES: &'static [&'static str] = &["namespace", "chroot", "none"];

    /// The path of the shared directory as the daemon sees it once inside the sandbox.
    pub fn root_inside(self, shared_dir: &Path) -> PathBuf {
        match self {
            SandboxMode::None => shared_dir.to_owned(),
            SandboxMode::Namespace | SandboxMode::Chroot => PathBuf::from("/"),
        }
    }
}

impl FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "namespace" => Ok(Self::Namespace),
            "chroot" => Ok(Self::Chroot),
            "none" => Ok(Self::None),
            _ => Err(format!(
                "invalid sandbox mode '{s}' (allowed: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// Where [`enter`] returned.
#[derive(Debug)]
pub enum Entered<T> {
    /// In the sandbox, with what `prepare` built.
    Inside(T),
    /// In the supervisor (namespace mode): the sandboxed daemon has ended with this exit code
    /// (128 + signal number when a signal killed it).
    Supervisor(u8),
}

/// A failure of [`enter`]: the sandbox itself, or the caller's `prepare` step.
#[derive(Debug)]
pub enum EnterError<E> {
    /// Setting up the sandbox failed.
    Sandbox(Error),
    /// `prepare` failed.
    Prepare(E),
}

impl<E: fmt::Display> fmt::Display for EnterError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnterError::Sandbox(e) => e.fmt(f),
            EnterError::Prepare(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for EnterError<E> {}

/// Enters the sandbox. `prepare` runs inside the new namespaces but before the root changes,
/// with the sandbox's own /proc mounted: open what must come from outside the share there (the
/// file server's /proc/self/fd). Must be called while the process has a single thread: namespace
/// mode forks.
///
/// `ns_maps` (`--uid-map`, `--gid-map`) are for namespace mode as non-root only (`userns.rs`).
pub fn enter<T, E>(
    mode: SandboxMode,
    shared_dir: &Path,
    ns_maps: &NsIdMaps,
    prepare: impl FnOnce() -> Result<T, E>,
) -> Result<Entered<T>, EnterError<E>> {
    let sandbox = EnterError::Sandbox;
    if mode != SandboxMode::Namespace && !ns_maps.is_empty() {
        return Err(sandbox(Error::UserNs(
            "--uid-map and --gid-map need --sandbox namespace".into(),
        )));
    }
    match mode {
        SandboxMode::None => prepare().map(Entered::Inside).map_err(EnterError::Prepare),
        SandboxMode::Chroot => {
            let t = prepare().map_err(EnterError::Prepare)?;
            chdir(shared_dir)
                .map_err(|e| sandbox(Error::sys("chdir to the shared directory", e)))?;
            chroot(".").map_err(|e| sandbox(Error::sys("chroot into the shared directory", e)))?;
            chdir("/").map_err(|e| sandbox(Error::sys("chdir /", e)))?;
            Ok(Entered::Inside(t))
        }
        SandboxMode::Namespace => {
            if let Some(code) = unshare_and_fork(ns_maps).map_err(sandbox)? {
                return Ok(Entered::Supervisor(code));
            }
            mount_private_proc().map_err(sandbox)?;
            let t = prepare().map_err(EnterError::Prepare)?;
            pivot_into_share(shared_dir).map_err(sandbox)?;
            Ok(Entered::Inside(t))
        }
    }
}

/// Creates the namespaces and forks. Returns `Some(exit code)` in the supervisor once the child
/// has ended, `None` in the child (PID 1 of the new PID namespace, in its own mount and network
/// namespaces: the supervisor keeps the host's view, to remove the socket path at the end).
fn unshare_and_fork(ns_maps: &NsIdMaps) -> Result<Option<u8>, Error> {
    let (uid, gid) = (geteuid(), getegid());
    let mut flags = CloneFlags::CLONE_NEWPID;
    let pending = if uid.is_root() {
        if !ns_maps.is_empty() {
            return Err(Error::UserNs(
                "--uid-map and --gid-map are for a daemon started as non-root (as root it needs no user namespace)"
                    .into(),
            ));
        }
        None
    } else {
        flags |= CloneFlags::CLONE_NEWUSER;
        Some(userns::prepare(ns_maps, uid, gid)?)
    };
    unshare(flags).map_err(|e| {
        Error::sys(
            if uid.is_root() {
                "cannot create a PID namespace (use --sandbox chroot or none where namespaces are not allowed)"
            } else {
                "cannot create a user namespace as non-root (enable unprivileged user namespaces, run as root, or use --sandbox none)"
            },
            e,
        )
    })?;
    if let Some(pending) = pending {
        // Our own ids as root inside (or the --uid-map/--gid-map ranges), so the mounts below
        // are allowed.
        userns::write_maps(pending)?;
    }
    // The signals the supervisor forwards are held back from before the fork until handlers are
    // in place: in the supervisor until it installs its own (a caller may signal the pid it
    // started as soon as the child says it is ready, which the supervisor may relay before it
    // gets to run), and in the child until the daemon calls `release_held_signals`: the child
    // is PID 1 of its namespace, and the kernel drops a signal sent to it from outside while
    // its disposition is the default, unless the signal is blocked (then it waits).
    let forwarded: SigSet = FORWARDED.iter().copied().collect();
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&forwarded), Some(&mut old_mask))
        .map_err(|e| Error::sys("block signals", e))?;
    // SAFETY: the caller guarantees a single-threaded process.
    let forked = unsafe { fork() };
    if forked.is_err() {
        let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    }
    match forked.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            // Die with the supervisor: callers (libvirt, Kata) track and kill the pid they started.
            // SAFETY: plain prctl with constant arguments.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys("cannot create mount/network namespaces", e))?;
            Ok(None)
        }
        ForkResult::Parent { child } => Ok(Some(supervise(child, &old_mask))),
    }
}

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Unblocks the signals the namespace supervisor forwards, which the sandboxed daemon holds
/// from its start (see `unshare_and_fork`); call once the daemon's handlers for them are
/// installed. Any that arrived meanwhile are delivered then. Does nothing harmful in the other
/// modes (they were never blocked).
pub fn release_held_signals() {
    let forwarded: SigSet = FORWARDED.iter().copied().collect();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&forwarded), None) {
        tracing::warn!("cannot unblock SIGTERM/SIGINT/SIGHUP/SIGUSR1: {e}");
    }
}

/// What the supervisor forwards to the daemon: SIGTERM/SIGINT/SIGHUP, and SIGUSR1 (statistics).
const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGUSR1,
];

/// Forwards [`FORWARDED`] signals to the daemon and waits for it. They are blocked on entry
/// (since before the fork); `old_mask` is restored once the handlers are in place, so one
/// that arrived meanwhile is forwarded then.
fn supervise(child: Pid, old_mask: &SigSet) -> u8 {
    CHILD.store(child.as_raw(), Ordering::Relaxed);
    let action = SigAction::new(
        SigHandler::Handler(forward_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in FORWARDED {
        // SAFETY: the handler only calls kill(2).
        let _ = unsafe { sigaction(sig, &action) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None);
    // From here on this process only waits: the code it ran to start up need not stay mapped.
    let released = crate::code_pages::release();
    tracing::debug!(
        "sandboxed daemon is pid {child}; supervisor let go of {released} bytes of code mappings"
    );
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return code as u8,
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                tracing::error!("the sandboxed daemon was killed by {sig}");
                return 128u8.saturating_add(sig as u8);
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!("waiting for the sandboxed daemon: {e}");
                return 1;
            }
        }
    }
}

/// Stops mount events from reaching the host and mounts a /proc of the new PID namespace.
fn mount_private_proc() -> Result<(), Error> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make / a slave mount", e))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOSUID | MsFlags::MS_RELATIME,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount a private /proc", e))
}

/// Makes the shared directory the root: bind-mounts it onto itself (with every mount inside it,
/// so submounts stay visible), pivots into it and detaches the old root. From then on the
/// kernel resolves `/` and every `..` that reaches the share's top to the share itself, and a
/// directory the host moves out of the share has no `..` (ENOENT), whatever the file server does.
fn pivot_into_share(shared_dir: &Path) -> Result<(), Error> {
    mount(
        Some(shared_dir),
        shared_dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("bind-mount the shared directory onto itself", e))?;
    chdir(shared_dir).map_err(|e| Error::sys("chdir to the shared directory", e))?;
    // The old root ends up stacked on ".": unmount it lazily, leaving the share alone.
    pivot_root(".", ".").map_err(|e| Error::sys("pivot_root into the shared directory", e))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make the old root a slave mount", e))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("detach the old root", e))?;
    chdir("/").map_err(|e| Error::sys("chdir /", e))?;
    // The daemon never executes a file of the share nor opens a device node in it (the file
    // server refuses to): in its namespace the kernel refuses too.
    set_root_attributes(
        MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        "mount the share nodev, nosuid, noexec",
    )
}

/// Makes the sandbox's root, the share and every mount inside it, read-only (`--readonly` in
/// namespace mode, after [`enter`]): the kernel then refuses every modification with EROFS,
/// whatever the file server does.
pub fn make_root_readonly() -> Result<(), Error> {
    set_root_attributes(
        MOUNT_ATTR_RDONLY,
        MsFlags::MS_RDONLY,
        "make the share read-only",
    )
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// Sets mount attributes on `/` and every mount under it in this namespace with
/// `mount_setattr(2)` (Linux 5.12); on an older kernel, remounts `/` alone with `flags`. Only
/// ever adds restrictions, which a user namespace may do to mounts it inherited.
fn set_root_attributes(attr_set: u64, flags: MsFlags, what: &'static str) -> Result<(), Error> {
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    // struct mount_attr { attr_set, attr_clr, propagation, userns_fd }
    let attr: [u64; 4] = [attr_set, 0, 0, 0];
    // SAFETY: a valid path and a mount_attr of the size given.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            AT_RECURSIVE,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = nix::errno::Errno::last();
    if e != nix::errno::Errno::ENOSYS {
        return Err(Error::sys(what, e));
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(|e| Error::sys(what, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_say_where_the_root_is() {
        assert_eq!(
            "chroot".parse::<SandboxMode>().unwrap(),
            SandboxMode::Chroot
        );
        let e = "jail".parse::<SandboxMode>().unwrap_err();
        assert!(e.contains("namespace, chroot, none"), "{e}");
        let dir = Path::new("/srv/share");
        assert_eq!(SandboxMode::None.root_inside(dir), dir);
        assert_eq!(SandboxMode::Namespace.root_inside(dir), Path::new("/"));
        assert_eq!(SandboxMode::Chroot.root_inside(dir), Path::new("/"));
    }
}
