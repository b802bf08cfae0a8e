//! `--poll-us` on a host whose every CPU is wanted (`host_load.rs`): a request queue does not
//! spin while the host's runnable threads outnumber its CPUs, and spins again once they do not.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::polling_rig_with;
use virtiofs_pipeline::{HostLoad, PipelineConfig};

mt_test!(a_queue_spins_only_while_the_host_has_a_cpu_to_spare, || {
    // The host's load as the queue reads it: a file in /proc/loadavg's format, 2 CPUs.
    let path = std::env::temp_dir().join(format!("polling-crowded-{}", std::process::id()));
    std::fs::write(&path, "").unwrap();
    let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // Rewritten in place at one length, so that the queue never reads a truncated line.
    let set_running = |n: u32| {
        let line = format!("1.00 1.00 1.00 {n:>4}/300 1\n");
        writer.write_all_at(line.as_bytes(), 0).unwrap();
    };
    set_running(1);
    let load = HostLoad::from_file(File::open(&path).unwrap(), 2).unwrap();
    let mut r = polling_rig_with(PipelineConfig {
        poll_max: Duration::from_millis(200),
        host_load: Some(Arc::new(load)),
        ..Default::default()
    });
    let stats = r.pipeline.stats()[1].clone();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);

    r.train(1, 100);
    assert!(get(&stats.polls) > 0, "a CPU to spare: the queue polls");
    assert_eq!(get(&stats.poll_crowded), 0);

    // 64 threads runnable on 2 CPUs. The queue looks at the load at most every 200 µs: the
    // spin under way when it changes may find one more request.
    set_running(64);
    std::thread::sleep(Duration::from_millis(2));
    let polls = get(&stats.polls);
    r.train(1, 50);
    let spun = get(&stats.polls) - polls;
    assert!(spun <= 1, "{spun} spins on a crowded host");
    assert!(
        get(&stats.poll_crowded) >= 49,
        "the spins held back are counted"
    );

    // The crowd gone: once the average falls back (a look every 200 µs or more), it spins again.
    set_running(1);
    let polls = get(&stats.polls);
    for _ in 0..200 {
        std::thread::sleep(Duration::from_micros(300));
        r.train(1, 1);
        if get(&stats.polls) > polls {
            break;
        }
    }
    assert!(get(&stats.polls) > polls, "polling never came back");
    let _ = std::fs::remove_file(&path);
});
