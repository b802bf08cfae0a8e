//! The seccomp allowlist (`--seccomp`): every system call the daemon makes once it serves a guest.
//!
//! The list is the one place to edit when the daemon starts using a new call. It was taken from
//! `strace -f` of the client suites and the guest e2e matrix, and is checked by running both with
//! `--seccomp kill` (CI) and by scanning the kernel log of a `--seccomp log` run.

use std::collections::BTreeMap;
use std::str::FromStr;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::Error;

/// What happens on a call outside the allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeccompMode {
    /// No filter.
    None,
    /// Kill the whole daemon (SIGSYS; the kernel logs the call).
    #[default]
    Kill,
    /// Allow the call but have the kernel log it (for finding a missing entry).
    Log,
    /// Raise SIGSYS in the calling thread (kills the daemon unless a debugger catches it).
    Trap,
}

impl SeccompMode {
    /// The names accepted on the command line.
    pub const NAMES: &'static [&'static str] = &["none", "kill", "log", "trap"];
}

impl FromStr for SeccompMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "kill" => Ok(Self::Kill),
            "log" => Ok(Self::Log),
            "trap" => Ok(Self::Trap),
            _ => Err(format!(
                "invalid seccomp action '{s}' (allowed: {})",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The allowlist, by purpose. Calls used only before the filter is installed (execve, bind,
/// listen, mount, pivot_root, setrlimit, ...) are deliberately absent; unshare only with
/// CLONE_FS ([`conditional_rules`]). `file_handles`: nodes may be file handles
/// (`--inode-file-handles=prefer|mandatory`). `io_uring`: request queues do their I/O through
/// io_uring (`--io-engine`); each ring is restricted to READV, WRITEV and FSYNC before it is
/// enabled (see docs/security.md), since seccomp does not see what a ring does.
pub fn allowed_syscalls(file_handles: bool, io_uring: bool) -> Vec<(&'static str, i64)> {
    macro_rules! calls {
        ($($name:ident),* $(,)?) => { vec![$((stringify!($name), libc::$name)),*] };
    }
    let mut v = Vec::new();
    // Memory management (allocator, thread stacks, guest memory regions from the frontend).
    v.extend(calls![
        SYS_brk,
        SYS_mmap,
        SYS_munmap,
        SYS_mremap,
        SYS_mprotect,
        SYS_madvise
    ]);
    // Threads: tokio workers and blocking pool, the hiprio thread, the vhost-user thread.
    v.extend(calls![
        SYS_clone,
        SYS_clone3,
        SYS_exit,
        SYS_exit_group,
        SYS_futex,
        SYS_set_robust_list,
        SYS_rseq,
        SYS_sched_yield,
        SYS_sched_getaffinity,
        SYS_gettid,
        SYS_getpid,
        SYS_prctl, // thread names (PR_SET_NAME)
        SYS_nanosleep,
        SYS_clock_nanosleep,
        SYS_clock_gettime,
        SYS_gettimeofday,
        SYS_getrandom,
    ]);
    // Signals: SIGTERM/SIGINT handling, SIGSEGV stack guards, abort on a bug.
    v.extend(calls![
        SYS_rt_sigaction,
        SYS_rt_sigprocmask,
        SYS_rt_sigreturn,
        SYS_restart_syscall,
        SYS_sigaltstack,
        SYS_tgkill,
    ]);
    // Event loop and vhost-user: epoll, eventfds (kick/call), the frontend socket with SCM_RIGHTS.
    v.extend(calls![
        SYS_epoll_create1,
        SYS_epoll_ctl,
        SYS_epoll_wait,
        SYS_epoll_pwait,
        SYS_eventfd2,
        SYS_accept4,
        SYS_recvmsg,
        SYS_sendmsg,
        SYS_recvfrom, // tokio's signal pipe
        SYS_sendto,
        SYS_read,
        SYS_write,
        SYS_readv,
        SYS_writev,
        SYS_poll,
        SYS_ppoll,
        SYS_dup,
        SYS_dup3,
        SYS_fcntl,
        SYS_close,
        SYS_shutdown,
    ]);
    // The file server: lookups through O_PATH descriptors and /proc/self/fd, file I/O, metadata.
    v.extend(calls![
        SYS_openat,
        SYS_newfstatat,
        SYS_fstat,
        SYS_statx,
        SYS_readlinkat,
        SYS_getdents64,
        SYS_lseek,
        SYS_pread64,
        SYS_pwrite64,
        SYS_preadv,
        SYS_pwritev,
        SYS_preadv2,
        SYS_pwritev2,
        SYS_fsync,
        SYS_fdatasync,
        SYS_fallocate,
        SYS_ftruncate,
        SYS_flock,
        SYS_fstatfs,
        SYS_mkdirat,
        SYS_mknodat,
        SYS_symlinkat,
        SYS_linkat,
        SYS_unlinkat,
        SYS_renameat, // glibc's renameat2 with flags 0
        SYS_renameat2,
        SYS_fchmod,
        SYS_fchmodat,
        SYS_fchownat,
        SYS_utimensat,
        SYS_umask,
        SYS_ioctl, // FIONREAD-type queries by the runtime; file ioctls are not forwarded
    ]);
    // Extended attributes (--xattr): by the node's /proc/self/fd entry, relative to the
    // thread's own working directory there (fchdir; `conditional_rules` allows unshare(CLONE_FS)).
    v.extend(calls![
        SYS_fchdir,
        SYS_getxattr,
        SYS_setxattr,
        SYS_listxattr,
        SYS_removexattr,
        SYS_fgetxattr,
        SYS_fsetxattr,
        SYS_flistxattr,
        SYS_fremovexattr,
    ]);
    // Operations beyond the basic file calls: COPY_FILE_RANGE, SYNCFS, ACCESS (glibc's
    // faccessat tries faccessat2 first).
    v.extend(calls![
        SYS_copy_file_range,
        SYS_syncfs,
        SYS_faccessat,
        SYS_faccessat2,
    ]);
    // Credentials: the caller's ids on the thread that makes a file (setresuid/setresgid of
    // the thread only, raw syscalls), its supplementary group for CREATE_SUPP_GROUP, and
    // capget/capset for the sandbox's own capability drop.
    v.extend(calls![
        SYS_setresuid,
        SYS_setresgid,
        SYS_setgroups,
        SYS_getgroups,
        SYS_capget,
        SYS_capset,
        SYS_geteuid,
        SYS_getegid,
    ]);
    // File handles, only when nodes may be handles: open_by_handle_at opens any file of a
    // filesystem by handle, so a daemon that does not use it may not call it (the capability it
    // needs, DAC_READ_SEARCH, is dropped then too).
    if file_handles {
        v.extend(calls![SYS_name_to_handle_at, SYS_open_by_handle_at]);
    }
    if io_uring {
        v.extend(calls![
            SYS_io_uring_setup,
            SYS_io_uring_enter,
            SYS_io_uring_register
        ]);
    }
    v
}

/// Calls allowed only with certain arguments: `unshare(CLONE_FS)`, which gives a thread its
/// own working directory (the xattr calls change it; no namespace may be made once serving),
/// and `sched_setaffinity(0, ...)`: a thread pins itself (`--queue-affinity`), never another
/// process.
fn conditional_rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, Error> {
    let err = |e: seccompiler::BackendError| Error::Seccomp(e.to_string());
    let clone_fs = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::Eq,
        libc::CLONE_FS as u64,
    )
    .map_err(err)?;
    let this_thread =
        SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, 0).map_err(err)?;
    Ok(vec![
        (
            libc::SYS_unshare,
            vec![SeccompRule::new(vec![clone_fs]).map_err(err)?],
        ),
        (
            libc::SYS_sched_setaffinity,
            vec![SeccompRule::new(vec![this_thread]).map_err(err)?],
        ),
    ])
}

/// Compiles the filter for `mode` (`file_handles`: see [`allowed_syscalls`]); `None` for
/// [`SeccompMode::None`].
pub fn compile(
    mode: SeccompMode,
    file_handles: bool,
    io_uring: bool,
) -> Result<Option<BpfProgram>, Error> {
    let mismatch = match mode {
        SeccompMode::None => return Ok(None),
        SeccompMode::Kill => SeccompAction::KillProcess,
        SeccompMode::Log => SeccompAction::Log,
        SeccompMode::Trap => SeccompAction::Trap,
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = allowed_syscalls(file_handles, io_uring)
        .into_iter()
        .map(|(_, nr)| (nr, Vec::new()))
        .collect();
    rules.extend(conditional_rules()?);
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| Error::Seccomp(format!("unsupported architecture: {e}")))?;
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, arch)
        .map_err(|e| Error::Seccomp(e.to_string()))?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| Error::Seccomp(e.to_string()))?;
    Ok(Some(program))
}

/// Installs the filter on every thread of the process (TSYNC); threads created later inherit it.
/// `file_handles`, `io_uring`: see [`allowed_syscalls`].
pub fn install(mode: SeccompMode, file_handles: bool, io_uring: bool) -> Result<(), Error> {
    if let Some(program) = compile(mode, file_handles, io_uring)? {
        seccompiler::apply_filter_all_threads(&program)
            .map_err(|e| Error::Seccomp(e.to_string()))?;
        tracing::info!(
            "seccomp filter installed ({} system calls allowed, others: {mode:?})",
            allowed_syscalls(file_handles, io_uring).len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    /// Runs `f` in a forked child with the filter installed; returns how the child ended.
    fn in_filtered_child(mode: SeccompMode, f: fn()) -> WaitStatus {
        in_child_filtered_for(mode, false, f)
    }

    fn in_child_filtered_for(mode: SeccompMode, file_handles: bool, f: fn()) -> WaitStatus {
        in_child_filtered_with(mode, file_handles, false, f)
    }

    fn in_child_filtered_with(
        mode: SeccompMode,
        file_handles: bool,
        io_uring: bool,
        f: fn(),
    ) -> WaitStatus {
        // SAFETY: the test process may be multi-threaded; the child only calls async-signal-safe
        // functions (prctl/seccomp, the syscall under test, _exit) before exiting.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = match compile(mode, file_handles, io_uring).ok().flatten() {
                    Some(p) if seccompiler::apply_filter(&p).is_ok() => {
                        f();
                        0
                    }
                    _ => 99,
                };
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => waitpid(child, None).unwrap(),
        }
    }

    #[test]
    fn forbidden_call_kills_and_allowed_calls_pass() {
        // mount(2) is not on the list: the process dies of SIGSYS.
        let forbidden = || unsafe {
            libc::syscall(libc::SYS_mount, 0, 0, 0, 0, 0);
        };
        assert!(matches!(
            in_filtered_child(SeccompMode::Kill, forbidden),
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        ));
        // Log lets it through (mount fails with EFAULT/EPERM, the child exits normally).
        assert!(matches!(
            in_filtered_child(SeccompMode::Log, forbidden),
            WaitStatus::Exited(_, 0)
        ));
        let allowed = || unsafe {
            libc::syscall(libc::SYS_getpid);
        };
        assert!(matches!(
            in_filtered_child(SeccompMode::Kill, allowed),
            WaitStatus::Exited(_, 0)
        ));
    }

    #[test]
    fn unshare_is_allowed_for_clone_fs_only() {
        let fs = || unsafe {
            if libc::unshare(libc::CLONE_FS) != 0 {
                libc::_exit(3);
            }
        };
        assert!(matches!(
            in_filtered_child(SeccompMode::Kill, fs),
            WaitStatus::Exited(_, 0)
        ));
        let ns = || unsafe {
            libc::unshare(libc::CLONE_NEWNS);
        };
        assert!(matches!(
            in_filtered_child(SeccompMode::Kill, ns),
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        ));
    }

    #[test]
    fn a_thread_may_pin_itself_but_not_another_process() {
        let own = || unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of_val(&set);
            if libc::sched_getaffinity(0, size, &mut set) != 0
                || libc::sched_setaffinity(0, size, &set) != 0
            {
                libc::_exit(3);
            }
        };
        assert!(matches!(
            in_filtered_child(SeccompMode::Kill, own),
            WaitStatus::Exited(_, 0)
        ));
        let other = || unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of_val(&set);
            libc::sched_getaffinity(0, size, &mut set);
            libc::sched_setaffinity(libc::getppid(), size, &set);
        };
        assert!(matches!(
            in_filtered_child(SeccompMode::Kill, other),
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        ));
    }

    #[test]
    fn file_handle_calls_are_allowed_only_with_file_handles() {
        // open_by_handle_at with a bad descriptor: EBADF when allowed, SIGSYS when not.
        let open_by_handle = || unsafe {
            libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0);
            libc::syscall(libc::SYS_name_to_handle_at, -1, 0, 0, 0, 0);
        };
        assert!(matches!(
            in_child_filtered_for(SeccompMode::Kill, false, open_by_handle),
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        ));
        assert!(matches!(
            in_child_filtered_for(SeccompMode::Kill, true, open_by_handle),
            WaitStatus::Exited(_, 0)
        ));
    }

    #[test]
    fn io_uring_calls_are_allowed_only_with_the_io_uring_engine() {
        // io_uring_setup with bad arguments: EFAULT when allowed, SIGSYS when not.
        let setup = || unsafe {
            libc::syscall(libc::SYS_io_uring_setup, 1, 0);
        };
        assert!(matches!(
            in_child_filtered_with(SeccompMode::Kill, false, false, setup),
            WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGSYS, _)
        ));
        assert!(matches!(
            in_child_filtered_with(SeccompMode::Kill, false, true, setup),
            WaitStatus::Exited(_, 0)
        ));
    }

    #[test]
    fn none_compiles_to_no_filter_and_names_parse() {
        assert!(compile(SeccompMode::None, false, false).unwrap().is_none());
        assert!(compile(SeccompMode::Kill, false, false).unwrap().is_some());
        assert_eq!("trap".parse::<SeccompMode>().unwrap(), SeccompMode::Trap);
        assert!("deny"
            .parse::<SeccompMode>()
            .unwrap_err()
            .contains("none, kill, log, trap"));
    }

    #[test]
    fn list_has_no_duplicates() {
        let list = allowed_syscalls(true, true);
        let mut nrs: Vec<_> = list.iter().map(|(_, n)| *n).collect();
        nrs.sort();
        nrs.dedup();
        assert_eq!(nrs.len(), list.len());
    }
}
