//! `--scheduling`: the CPU scheduling policy of the daemon's threads.
//!
//! Where the daemon's threads share CPUs with the threads that make the guest's requests
//! available (vCPUs on a host with fewer cores than vCPUs and daemon threads, or any busy
//! thread of an overcommitted host), the kernel's default policy lets the guest's kick preempt
//! the thread that runs at once: a queue thread (or a pool runner) wakes for the first request
//! of a burst, serves it alone and sleeps again before the guest has made the next one
//! available, a wake-up and two context switches per request. Under `SCHED_BATCH` (sched(7))
//! a woken daemon thread does not preempt the thread that runs: it runs when that one blocks or
//! its time slice ends, and finds the whole burst in the ring (one wake-up, one notification).
//! The price is latency where the CPU stays busy: a request waits for the CPU instead of taking
//! it, which shows at depth 1 (numbers in docs/performance-history.md, session 22). On an idle CPU
//! nothing changes: no thread is there to preempt.
//!
//! The policy is set on the main thread before any other thread of the daemon exists, so every
//! thread (queue threads, pool runners, the vhost-user thread, the sandboxed child) inherits it,
//! and before the seccomp filter, which therefore need not allow `sched_setscheduler`. It is
//! what `chrt --batch 0 async-virtiofsd ...` or systemd's `CPUSchedulingPolicy=batch` do, for
//! launchers that cannot wrap the command (libvirt, Kata's `virtio_fs_extra_args`).

use std::io;

use clap::ValueEnum;

/// The scheduling policy of the daemon's threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Scheduling {
    /// The policy the daemon was started with (normally SCHED_OTHER).
    #[default]
    Inherit,
    /// SCHED_BATCH: a woken thread waits for its CPU instead of preempting the thread there.
    Batch,
}

impl Scheduling {
    /// Gives the calling thread, and so every thread it creates from now on, this policy
    /// (nothing for [`Scheduling::Inherit`]).
    pub fn apply(self) -> io::Result<()> {
        let policy = match self {
            Scheduling::Inherit => return Ok(()),
            Scheduling::Batch => libc::SCHED_BATCH,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> libc::c_int {
        // SAFETY: pid 0 is the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// The policy of a new thread after `sched` was applied in it, and of a thread that one
    /// then created.
    fn policies_after(sched: Scheduling) -> (libc::c_int, libc::c_int) {
        std::thread::spawn(move || {
            sched.apply().unwrap();
            (policy(), std::thread::spawn(policy).join().unwrap())
        })
        .join()
        .unwrap()
    }

    #[test]
    fn batch_is_set_on_the_calling_thread_and_inherited_by_its_new_threads() {
        let ours = policy();
        assert_ne!(ours, libc::SCHED_BATCH, "the test would prove nothing");
        assert_eq!(
            policies_after(Scheduling::Batch),
            (libc::SCHED_BATCH, libc::SCHED_BATCH)
        );
        assert_eq!(policy(), ours, "no other thread changes");
    }

    #[test]
    fn inherit_changes_nothing() {
        let ours = policy();
        assert_eq!(policies_after(Scheduling::Inherit), (ours, ours));
    }
}
