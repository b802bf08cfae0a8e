//! `--queue-affinity`: which CPUs a request queue's thread and its pool runners may run on.
//!
//! `auto` spreads the request queues over the CPUs the daemon may use: with no more queues
//! than CPUs each queue gets its own contiguous share of them, with more each gets one CPU,
//! round robin. `Q:CPUS[,Q:CPUS...]` pins request queue `Q` (1 is the first request queue)
//! to `CPUS`, a list of CPUs and ranges such as `0-1` or `2,4-5` (a bare number or range
//! after a `Q:` entry adds to that entry's set). Queues not named stay unpinned, and so does
//! the hiprio queue (queue 0): FORGETs and interrupts must not wait behind a busy CPU.
//!
//! A queue thread is pinned once, when it starts; a pool runner when it starts taking the
//! queue's requests, and it gives the pin back when it stops (runners are the runtime's
//! blocking threads, which may do other work next).

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::str::FromStr;

/// A set of CPU numbers, sorted, without duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSet(Vec<usize>);

/// Most CPUs a set may name (the size of the kernel's `cpu_set_t` in glibc).
pub const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

impl CpuSet {
    /// A set of the given CPUs.
    pub fn new(mut cpus: Vec<usize>) -> Self {
        cpus.sort_unstable();
        cpus.dedup();
        Self(cpus)
    }

    /// The CPUs, ascending.
    pub fn cpus(&self) -> &[usize] {
        &self.0
    }

    /// The CPUs the calling thread may run on.
    pub fn of_this_thread() -> io::Result<Self> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is this thread; the size is the set's.
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: CPU_ISSET reads the set for indices below CPU_SETSIZE.
        let cpus = (0..MAX_CPUS).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
        Ok(Self(cpus.collect()))
    }

    /// Restricts the calling thread to these CPUs.
    pub fn pin_this_thread(&self) -> io::Result<()> {
        // SAFETY: a zeroed cpu_set_t is a valid empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &c in &self.0 {
            // SAFETY: every CPU of a CpuSet is below CPU_SETSIZE (checked when parsed).
            unsafe { libc::CPU_SET(c, &mut set) };
        }
        // SAFETY: pid 0 is this thread; the set lives across the call.
        let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl fmt::Display for CpuSet {
    /// The kernel's list format (`0-1,4`), as in `/proc/PID/status` Cpus_allowed_list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.0.len() {
            let start = self.0[i];
            let mut end = start;
            while i + 1 < self.0.len() && self.0[i + 1] == end + 1 {
                i += 1;
                end = self.0[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// `--queue-affinity` as given (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueAffinity {
    /// Spread the request queues over the allowed CPUs.
    Auto,
    /// Request queue number (1-based) to its CPUs.
    Map(BTreeMap<usize, CpuSet>),
}

/// Parses `N` or `N-M` into CPUs.
fn parse_cpus(item: &str, into: &mut Vec<usize>) -> Result<(), String> {
    let cpu = |s: &str| -> Result<usize, String> {
        let c: usize = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a CPU number"))?;
        if c >= MAX_CPUS {
            return Err(format!("CPU {c} is beyond the largest ({})", MAX_CPUS - 1));
        }
        Ok(c)
    };
    match item.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (cpu(a)?, cpu(b)?);
            if a > b {
                return Err(format!("CPU range '{item}' is backwards"));
            }
            into.extend(a..=b);
        }
        None => into.push(cpu(item)?),
    }
    Ok(())
}

impl FromStr for QueueAffinity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "auto" {
            return Ok(Self::Auto);
        }
        let mut map: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let mut current: Option<usize> = None;
        for item in s.split(',') {
            let cpus = match item.split_once(':') {
                Some((q, cpus)) => {
                    let q: usize = q
                        .trim()
                        .parse()
                        .map_err(|_| format!("'{q}' is not a queue number"))?;
                    if q == 0 {
                        return Err(
                            "queue 0 is the hiprio queue, which stays unpinned; request queues \
                             are numbered from 1"
                                .into(),
                        );
                    }
                    if map.contains_key(&q) {
                        return Err(format!("queue {q} is given twice"));
                    }
                    current = Some(q);
                    cpus
                }
                None => item,
            };
            let q = current.ok_or_else(|| {
                format!("'{item}' names no queue (expected auto or QUEUE:CPUS, e.g. 1:0-1,2:2-3)")
            })?;
            parse_cpus(cpus, map.entry(q).or_default())?;
        }
        Ok(Self::Map(
            map.into_iter().map(|(q, c)| (q, CpuSet::new(c))).collect(),
        ))
    }
}

impl QueueAffinity {
    /// The CPUs of request queue `queue` (1-based) of `request_queues`, given the CPUs the
    /// daemon may use; `None`: unpinned.
    pub fn cpus_for(
        &self,
        queue: usize,
        request_queues: usize,
        allowed: &CpuSet,
    ) -> Option<CpuSet> {
        match self {
            Self::Map(map) => map.get(&queue).cloned(),
            Self::Auto => {
                let cpus = allowed.cpus();
                if queue == 0 || cpus.len() < 2 || request_queues == 0 {
                    return None;
                }
                let n = cpus.len();
                if request_queues <= n {
                    // Contiguous shares; the first `n % queues` shares are one CPU larger.
                    let (base, extra) = (n / request_queues, n % request_queues);
                    let i = queue - 1;
                    let start = i * base + i.min(extra);
                    let len = base + usize::from(i < extra);
                    Some(CpuSet::new(cpus[start..start + len].to_vec()))
                } else {
                    Some(CpuSet::new(vec![cpus[(queue - 1) % n]]))
                }
            }
        }
    }

    /// Checks a map against the daemon's queues and CPUs: every queue exists and every CPU
    /// is one the daemon may use. The message names what is wrong.
    pub fn check(&self, request_queues: usize, allowed: &CpuSet) -> Result<(), String> {
        let Self::Map(map) = self else { return Ok(()) };
        for (q, set) in map {
            if *q > request_queues {
                return Err(format!(
                    "queue {q} does not exist: the daemon offers {request_queues} request queue(s)"
                ));
            }
            if let Some(c) = set.cpus().iter().find(|c| !allowed.cpus().contains(c)) {
                return Err(format!(
                    "CPU {c} of queue {q} is not one the daemon may run on (allowed: {allowed})"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(usize, &[usize])]) -> QueueAffinity {
        QueueAffinity::Map(
            pairs
                .iter()
                .map(|(q, c)| (*q, CpuSet::new(c.to_vec())))
                .collect(),
        )
    }

    #[test]
    fn parses_auto_and_queue_maps() {
        assert_eq!("auto".parse(), Ok(QueueAffinity::Auto));
        assert_eq!(
            "1:0-1,2:2-3".parse(),
            Ok(map(&[(1, &[0, 1]), (2, &[2, 3])]))
        );
        assert_eq!(
            "1:0,2,4-5,3:1".parse(),
            Ok(map(&[(1, &[0, 2, 4, 5]), (3, &[1])]))
        );
    }

    #[test]
    fn refuses_what_is_not_a_map() {
        for bad in [
            "", "0:1", "1:", "x:1", "1:a", "1:3-2", "0-1", "1:0,1:1", "1:99999", "1:0-",
        ] {
            let r: Result<QueueAffinity, String> = bad.parse();
            assert!(r.is_err(), "{bad:?} accepted: {r:?}");
        }
        let e = "0:1".parse::<QueueAffinity>().unwrap_err();
        assert!(e.contains("hiprio"), "{e}");
    }

    #[test]
    fn auto_spreads_queues_over_the_allowed_cpus() {
        let four = CpuSet::new(vec![0, 1, 2, 3]);
        let a = QueueAffinity::Auto;
        let of = |q, n, allowed: &CpuSet| a.cpus_for(q, n, allowed).map(|s| s.to_string());
        assert_eq!(of(1, 1, &four).as_deref(), Some("0-3"), "one queue: all");
        assert_eq!(of(1, 2, &four).as_deref(), Some("0-1"));
        assert_eq!(of(2, 2, &four).as_deref(), Some("2-3"));
        assert_eq!(of(1, 3, &four).as_deref(), Some("0-1"), "remainder first");
        assert_eq!(of(3, 3, &four).as_deref(), Some("3"));
        assert_eq!(of(5, 8, &four).as_deref(), Some("0"), "round robin");
        assert_eq!(of(8, 8, &four).as_deref(), Some("3"));
        assert_eq!(of(0, 8, &four), None, "hiprio unpinned");
        assert_eq!(
            of(1, 4, &CpuSet::new(vec![5])),
            None,
            "one CPU: nothing to spread"
        );
        let odd = CpuSet::new(vec![2, 5, 7]);
        assert_eq!(of(2, 2, &odd).as_deref(), Some("7"));
    }

    #[test]
    fn check_names_missing_queues_and_foreign_cpus() {
        let allowed = CpuSet::new(vec![0, 1]);
        assert!(map(&[(1, &[0]), (2, &[1])]).check(2, &allowed).is_ok());
        let e = map(&[(3, &[0])]).check(2, &allowed).unwrap_err();
        assert!(e.contains("queue 3"), "{e}");
        let e = map(&[(1, &[4])]).check(2, &allowed).unwrap_err();
        assert!(e.contains("CPU 4") && e.contains("0-1"), "{e}");
        assert!(QueueAffinity::Auto.check(64, &allowed).is_ok());
    }

    #[test]
    fn cpu_sets_print_in_the_kernel_list_format() {
        assert_eq!(
            CpuSet::new(vec![3, 0, 1, 1, 5, 6, 7]).to_string(),
            "0-1,3,5-7"
        );
        assert_eq!(CpuSet::new(vec![]).to_string(), "");
    }

    #[test]
    fn pinning_this_thread_is_what_the_kernel_reports() {
        let before = CpuSet::of_this_thread().unwrap();
        let first = CpuSet::new(vec![before.cpus()[0]]);
        std::thread::spawn(move || {
            first.pin_this_thread().unwrap();
            assert_eq!(CpuSet::of_this_thread().unwrap(), first);
        })
        .join()
        .unwrap();
        assert_eq!(
            CpuSet::of_this_thread().unwrap(),
            before,
            "other threads untouched"
        );
    }
}
