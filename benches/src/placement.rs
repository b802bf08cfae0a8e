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

use virtiofs_pipeline::CpuSet;

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
static DAEMON_CPUS: OnceLock<CpuSet> = OnceLock::new();

/// Pins the calling thread (call it first thing: threads and children made later inherit it)
/// and records where daemons go; returns a line for the run's log.
pub fn apply(p: Placement) -> Result<String, String> {
    if p == Placement::Free {
        return Ok("placement: free (the scheduler places the harness and the daemons)".into());
    }
    let allowed = CpuSet::of_this_thread().map_err(|e| format!("sched_getaffinity: {e}"))?;
    let (&first, rest) = allowed
        .cpus()
        .split_first()
        .ok_or("placement: no CPU is allowed")?;
    let daemons = CpuSet::new(rest.to_vec());
    if p == Placement::Split {
        if rest.is_empty() {
            return Err("--placement split needs two CPUs; this process may use one".into());
        }
        DAEMON_CPUS
            .set(daemons.clone())
            .expect("placement applied once");
    }
    CpuSet::new(vec![first])
        .pin_this_thread()
        .map_err(|e| format!("sched_setaffinity: {e}"))?;
    Ok(match p {
        Placement::Same => format!("placement: same (harness and daemons on CPU {first})"),
        _ => format!("placement: split (harness on CPU {first}, daemons on CPUs {daemons})"),
    })
}

/// Confines `cmd`'s process to the daemons' CPUs, if `split` placed them.
pub fn confine_daemon(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    if let Some(cpus) = DAEMON_CPUS.get() {
        // SAFETY: between fork and exec the closure makes one system call and allocates
        // nothing (pin_this_thread fills a cpu_set_t on the stack).
        unsafe { cmd.pre_exec(move || cpus.pin_this_thread()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_pins_the_calling_thread_to_its_first_cpu_and_free_pins_nothing() {
        let allowed = || CpuSet::of_this_thread().unwrap().cpus().to_vec();
        let first = allowed()[0];
        // In threads of their own: the pinning is the calling thread's.
        let (free, same) = std::thread::spawn(move || {
            apply(Placement::Free).unwrap();
            let free = allowed();
            let line = apply(Placement::Same).unwrap();
            assert!(line.contains(&format!("CPU {first}")), "{line}");
            (free, allowed())
        })
        .join()
        .unwrap();
        assert_eq!(free, allowed(), "free changes nothing");
        assert_eq!(same, vec![first]);
        assert!(
            DAEMON_CPUS.get().is_none(),
            "daemons are confined by split only"
        );
    }
}
