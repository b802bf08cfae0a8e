//! Where the harness (the "guest") and the daemons run (`--placement`).
//!
//! At queue depth 1 a request is a ping-pong between the harness's thread and the daemon's
//! queue thread, and on a host with idle cores the scheduler settles into one of two steady
//! states by chance: both threads on one CPU (each wake-up a switch on that CPU), or one each
//! (each wake-up an inter-processor interrupt to an idle CPU, on a VM a vCPU exit). On the
//! 2-vCPU VMs of docs/performance.md the first runs getattr up to 1.4x as fast, for every
//! daemon, so a free run's depth-1 cell partly measures which state a daemon happened to get.
//! Pinning decides it: `same` (one CPU does everything) measures the CPU cost of a request and
//! repeats to a few per cent; `split` measures the cross-CPU path a VM's vCPU and its daemon on
//! separate cores take, and still moves by tens of per cent between runs here (how fast the
//! host wakes an idle vCPU).

use std::sync::OnceLock;

/// The `--placement` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Placement {
    /// Nothing pinned: the scheduler decides (the default).
    Free,
    /// Harness and daemons on one CPU (the first the harness may use).
    Same,
    /// The harness on the first CPU it may use, the daemons on the others.
    Split,
}

/// The CPUs daemons are confined to (`split`); set once at startup.
static DAEMON_CPUS: OnceLock<libc::cpu_set_t> = OnceLock::new();

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Result<Vec<usize>, String> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) } != 0 {
        return Err(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: CPU_ISSET reads the set within its size.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// A CPU set of `cpus`.
fn set_of(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: as above.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: `c` < CPU_SETSIZE (it came from allowed_cpus).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    set
}

/// Pins the calling thread (call it first thing: threads and children made later inherit it)
/// and records where daemons go; returns a line for the run's log.
pub fn apply(p: Placement) -> Result<String, String> {
    if p == Placement::Free {
        return Ok("placement: free (the scheduler places the harness and the daemons)".into());
    }
    let cpus = allowed_cpus()?;
    let (&first, rest) = cpus.split_first().ok_or("placement: no CPU is allowed")?;
    if p == Placement::Split {
        if rest.is_empty() {
            return Err("--placement split needs two CPUs; this process may use one".into());
        }
        DAEMON_CPUS
            .set(set_of(rest))
            .expect("placement applied once");
    }
    let harness = set_of(&[first]);
    // SAFETY: a valid cpu_set_t for the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&harness), &harness) } != 0 {
        return Err(format!(
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(match p {
        Placement::Same => format!("placement: same (harness and daemons on CPU {first})"),
        _ => format!("placement: split (harness on CPU {first}, daemons on CPUs {rest:?})"),
    })
}

/// Confines `cmd`'s process to the daemons' CPUs, if `split` placed them.
pub fn confine_daemon(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    if let Some(set) = DAEMON_CPUS.get().copied() {
        // SAFETY: the closure only makes one async-signal-safe system call.
        unsafe {
            cmd.pre_exec(move || {
                if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_exactly_its_cpus() {
        let set = set_of(&[0, 3]);
        // SAFETY: reads within the set.
        let held: Vec<usize> = (0..8)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect();
        assert_eq!(held, vec![0, 3]);
    }

    #[test]
    fn this_process_may_use_some_cpu() {
        assert!(!allowed_cpus().unwrap().is_empty());
    }

    #[test]
    fn same_pins_the_calling_thread_to_its_first_cpu_and_free_pins_nothing() {
        let first = allowed_cpus().unwrap()[0];
        // In threads of their own: the pinning is the calling thread's.
        let (free, same) = std::thread::spawn(move || {
            apply(Placement::Free).unwrap();
            let free = allowed_cpus().unwrap();
            let line = apply(Placement::Same).unwrap();
            assert!(line.contains(&format!("CPU {first}")), "{line}");
            (free, allowed_cpus().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(free, allowed_cpus().unwrap(), "free changes nothing");
        assert_eq!(same, vec![first]);
        assert!(
            DAEMON_CPUS.get().is_none(),
            "daemons are confined by split only"
        );
    }
}
