//! The queues as a user sees them from outside: per-queue statistics on SIGUSR1,
//! `--queue-affinity` in /proc/PID/task/*/status and `--scheduling` in /proc/PID/task/*/stat.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::Daemon;
use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::daemons::process_tree;
use vhost_user_fs_client::{Creds, FsClient, FuseRequest};

/// Runs `n` GETATTRs on request queue `queue` (1-based), all in flight at once.
fn getattrs(c: &FsClient, queue: usize, n: usize) {
    let tokens: Vec<_> = (0..n)
        .map(|_| {
            c.submit(queue, &FuseRequest::getattr(ROOT_ID, None), Creds::root())
                .unwrap()
        })
        .collect();
    for t in tokens {
        c.wait(t).unwrap().attr().unwrap();
    }
}

/// Waits until `cond` holds on the daemon's log (collected across calls), for up to 10 s.
fn log_until(d: &Daemon, log: &mut String, cond: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        log.push_str(&d.take_log());
        if cond(log) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `queue statistics` line of queue `q` in `log`.
fn stats_line(log: &str, q: usize) -> Option<&str> {
    let tag = format!("queue={q} ");
    log.lines()
        .rev()
        .find(|l| l.contains("queue statistics") && l.contains(&tag))
}

/// The number after `key=` in `line`.
fn field(line: &str, key: &str) -> f64 {
    let rest = &line[line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("{key} in {line}"))
        + key.len()
        + 2..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// Sends SIGUSR1 to the process we started (the supervisor in namespace mode, which
/// forwards it).
fn sigusr1(d: &Daemon) {
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGUSR1) }, 0);
}

#[test]
fn sigusr1_logs_per_queue_statistics_and_the_daemon_keeps_serving() {
    let mut d = Daemon::start(&[]);
    let mut cfg = d.config();
    cfg.request_queues = 2;
    let c = d.connect(cfg);
    c.init().unwrap();
    getattrs(&c, 1, 40);
    getattrs(&c, 2, 7);
    sigusr1(&d);
    let mut log = String::new();
    assert!(
        log_until(&d, &mut log, |l| stats_line(l, 2).is_some()),
        "no statistics after SIGUSR1:\n{log}"
    );
    let q1 = stats_line(&log, 1).expect("queue 1");
    // INIT went to queue 1 (the client sends it on the first request queue).
    assert!(field(q1, "requests") >= 40.0, "{q1}");
    assert_eq!(field(stats_line(&log, 2).unwrap(), "requests"), 7.0);
    let p50 = field(q1, "service_p50_us");
    let p99 = field(q1, "service_p99_us");
    assert!(p50 > 0.0 && p99 >= p50, "{q1}");
    assert!(field(q1, "depth_p99") >= 1.0, "{q1}");
    assert!(
        field(q1, "inline") + field(q1, "pooled") >= 40.0,
        "every request ran somewhere: {q1}"
    );
    // Still serving, and a second signal reports the new requests.
    getattrs(&c, 2, 5);
    sigusr1(&d);
    let mut log = String::new();
    assert!(
        log_until(&d, &mut log, |l| stats_line(l, 2)
            .is_some_and(|q2| field(q2, "requests") == 12.0)),
        "second SIGUSR1:\n{log}"
    );
    d.assert_alive("after SIGUSR1");
}

/// The /proc task directories of every thread of the daemon's process tree named `name`.
fn threads_named(root: u32, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for pid in process_tree(root) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if comm.trim() == name {
                found.push(t.path());
            }
        }
    }
    found
}

/// Cpus_allowed_list of every thread of the daemon's process tree named `name`.
fn cpus_of_threads(root: u32, name: &str) -> Vec<String> {
    threads_named(root, name)
        .iter()
        .filter_map(|t| {
            let status = std::fs::read_to_string(t.join("status")).ok()?;
            let l = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
            Some(l.trim().to_owned())
        })
        .collect()
}

/// A thread's scheduling policy (sched(7)'s number: field 41 of its /proc stat line, counted
/// after the command name, which may hold spaces); `None` if the thread is gone.
fn policy_of(task: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(task.join("stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    // Field 3 (state) is the first after the name.
    Some(after_comm.split(' ').nth(41 - 3)?.parse().unwrap())
}

/// The CPUs in the kernel's list format (`0-1,4`).
fn parse_cpu_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

/// The CPUs this test may run on, as the kernel lists them and one by one.
fn allowed_cpus() -> (String, Vec<usize>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_owned();
    let cpus = parse_cpu_list(&list);
    (list, cpus)
}

/// Waits up to 10 s for threads named `name` in the daemon's tree; their CPU lists.
fn wait_for_threads(root: u32, name: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = cpus_of_threads(root, name);
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn queue_affinity_pins_request_queue_threads_and_leaves_hiprio_alone() {
    let (all, cpus) = allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: fewer than two CPUs allowed ({all})");
        return;
    }
    let (a, b) = (cpus[0], cpus[1]);
    for (spec, want1, want2) in [
        (format!("1:{a},2:{b}"), a.to_string(), b.to_string()),
        // Two CPUs, two queues: one each. (With more CPUs, auto gives each a share.)
        ("auto".to_owned(), String::new(), String::new()),
    ] {
        let d = Daemon::start(&["--queue-affinity", &spec]);
        let mut cfg = d.config();
        cfg.request_queues = 2;
        let c = d.connect(cfg);
        c.init().unwrap();
        getattrs(&c, 1, 3);
        getattrs(&c, 2, 3);
        let q1 = wait_for_threads(d.pid(), "virtiofs-q1");
        let q2 = wait_for_threads(d.pid(), "virtiofs-q2");
        // The hiprio queue runs on the main thread (named like the process, as is the
        // vhost-user thread): never pinned.
        let main = wait_for_threads(d.pid(), "async-virtiofsd");
        if spec == "auto" {
            // Whatever the machine: the two queues get disjoint, non-empty shares.
            assert_eq!((q1.len(), q2.len()), (1, 1), "{spec}: {q1:?} {q2:?}");
            assert_ne!(q1[0], q2[0], "{spec}");
            assert_ne!(q1[0], all, "{spec}: queue 1 pinned");
        } else {
            assert_eq!(q1, vec![want1], "{spec}");
            assert_eq!(q2, vec![want2], "{spec}");
        }
        assert!(
            !main.is_empty() && main.iter().all(|m| *m == all),
            "{spec}: {main:?}"
        );
    }
}

#[test]
fn scheduling_batch_is_the_policy_of_every_thread_of_the_daemon() {
    // SAFETY: pid 0 is the calling thread.
    let ours = unsafe { libc::sched_getscheduler(0) };
    assert_ne!(
        ours,
        libc::SCHED_BATCH,
        "under SCHED_BATCH itself the test could not tell inherit from batch"
    );
    for (args, want) in [
        (&[][..], ours),
        (&["--scheduling", "batch"][..], libc::SCHED_BATCH),
    ] {
        let mut d = Daemon::start(args);
        let c = d.connect(d.config());
        c.init().unwrap();
        getattrs(&c, 1, 3);
        assert_eq!(
            wait_for_threads(d.pid(), "virtiofs-q1").len(),
            1,
            "{args:?}"
        );
        // The queue thread, the main thread (hiprio queue), the vhost-user thread, the
        // runtime's threads, the namespace supervisor: all of them.
        // (A thread that ends meanwhile, e.g. an idle blocking thread, is skipped.)
        let mut checked = 0;
        for pid in process_tree(d.pid()) {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                if let Some(policy) = policy_of(&t.path()) {
                    assert_eq!(policy, want, "{args:?}: {}", t.path().display());
                    checked += 1;
                }
            }
        }
        assert!(checked >= 3, "{args:?}: {checked} threads");
        getattrs(&c, 1, 3);
        d.assert_alive("serving under its policy");
    }
}
