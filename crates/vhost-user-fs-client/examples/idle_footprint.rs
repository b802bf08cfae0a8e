//! Density of a daemon that has served a guest and gone idle: connects with Q request queues,
//! sends INIT and a burst of GETATTRs (D in flight per queue, R rounds), then waits S seconds
//! with the connection open and prints the threads and resident memory of the daemon's process
//! tree (the supervisor and its sandboxed child included).
//!
//! usage: idle_footprint SOCKET DAEMON_PID QUEUES DEPTH ROUNDS SETTLE_SECS
//!
//! Output: one line `threads=T rss_kib=K pss_kib=P private_dirty_kib=D` per process
//! (`pid=...`) and a `total` line. RSS counts the shared binary's text in every process; PSS
//! (proportional set size) and private dirty memory are closer to what one more daemon costs.
//! The `total` line also has `idle_cpu_ms_per_s`: the tree's CPU time per second of the settle
//! period after its first second (an adaptive poll window must have closed by then).

use std::time::Duration;

use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::daemons::{proc_cpu_seconds, process_tree};
use vhost_user_fs_client::{DeviceConfig, FsClient, FuseRequest};

/// A `Name: value` field (the first number after the name) of a /proc text file.
fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `[Threads, VmRSS, Pss, Private_Dirty]` (memory in KiB) of one process.
fn footprint(pid: u32) -> [u64; 4] {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    [
        field(&status, "Threads:"),
        field(&status, "VmRSS:"),
        field(&smaps, "Pss:"),
        field(&smaps, "Private_Dirty:"),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, socket, pid, queues, depth, rounds, settle] = &args[..] else {
        eprintln!("usage: idle_footprint SOCKET DAEMON_PID QUEUES DEPTH ROUNDS SETTLE_SECS");
        std::process::exit(2);
    };
    let num =
        |s: &str, what: &str| -> u64 { s.parse().unwrap_or_else(|_| panic!("{what}: a number")) };
    let pid = num(pid, "DAEMON_PID") as u32;
    let (depth, rounds) = (num(depth, "DEPTH"), num(rounds, "ROUNDS"));
    let mut config = DeviceConfig::new(socket);
    config.request_queues = num(queues, "QUEUES") as u16;
    config.queue_size = 1024;
    let c = FsClient::connect(config).expect("connect");
    c.init().expect("INIT");
    for _ in 0..rounds {
        let tokens: Vec<_> = (1..=c.request_queues())
            .flat_map(|q| (0..depth).map(move |_| q))
            .map(|q| {
                c.on_queue(q)
                    .submit(&FuseRequest::getattr(ROOT_ID, None))
                    .expect("submit")
            })
            .collect();
        for t in tokens {
            c.wait(t).expect("GETATTR").attr().expect("attr");
        }
    }
    let settle = num(settle, "SETTLE_SECS").max(2);
    std::thread::sleep(Duration::from_secs(1));
    let (pids, t0) = (process_tree(pid), std::time::Instant::now());
    let cpu = || pids.iter().map(|&p| proc_cpu_seconds(p)).sum::<f64>();
    let cpu0 = cpu();
    std::thread::sleep(Duration::from_secs(settle - 1));
    let idle_ms = (cpu() - cpu0) * 1000.0 / t0.elapsed().as_secs_f64();
    let mut total = [0; 4];
    let line = |[t, r, p, d]: [u64; 4]| {
        format!("threads={t} rss_kib={r} pss_kib={p} private_dirty_kib={d}")
    };
    for p in process_tree(pid) {
        let f = footprint(p);
        println!("pid={p} {}", line(f));
        total.iter_mut().zip(f).for_each(|(t, v)| *t += v);
    }
    println!("total {} idle_cpu_ms_per_s={idle_ms:.1}", line(total));
    // The Rust virtiofsd returns DESTROY without a reply: not an error here.
    let _ = c.destroy();
}
