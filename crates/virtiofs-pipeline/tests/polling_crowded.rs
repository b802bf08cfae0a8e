//! `--poll-us` on a host whose every CPU is wanted (`host_load.rs`): a request queue does not
//! spin while the host's runnable threads outnumber its CPUs, and spins again once they do not.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{polling_rig_with, FakeLoad};
use virtiofs_pipeline::PipelineConfig;

mt_test!(a_queue_spins_only_while_the_host_has_a_cpu_to_spare, || {
    // The host's load as the queue reads it, 2 CPUs: 1 thread runnable.
    let load = FakeLoad::new("polling-crowded", 1);
    let mut r = polling_rig_with(PipelineConfig {
        poll_max: Duration::from_millis(200),
        host_load: Some(load.host_load(2)),
        ..Default::default()
    });
    let stats = r.pipeline.stats()[1].clone();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);

    r.train(1, 100);
    assert!(get(&stats.polls) > 0, "a CPU to spare: the queue polls");
    assert_eq!(get(&stats.poll_crowded), 0);

    // 64 threads runnable on 2 CPUs. The queue looks at the load at most every 200 µs: the
    // spin under way when it changes may find one more request.
    // A spin preempted earlier pauses polling for some waits (`poll.rs`), which are neither
    // spins nor held back: the queue serves requests until 40 spins were held back.
    load.set_running(64);
    std::thread::sleep(Duration::from_millis(2));
    let (polls, crowded) = (get(&stats.polls), get(&stats.poll_crowded));
    let mut served = 0;
    while get(&stats.poll_crowded) - crowded < 40 && served < 1000 {
        r.train(1, 1);
        served += 1;
    }
    let spun = get(&stats.polls) - polls;
    assert!(spun <= 1, "{spun} spins on a crowded host");
    let held = get(&stats.poll_crowded) - crowded;
    assert!(
        held >= 40,
        "the spins held back are counted: {held} in {served} requests"
    );

    // The crowd gone: once the average falls back (a look every 200 µs or more), it spins again.
    load.set_running(1);
    let polls = get(&stats.polls);
    for _ in 0..200 {
        std::thread::sleep(Duration::from_micros(300));
        r.train(1, 1);
        if get(&stats.polls) > polls {
            break;
        }
    }
    assert!(get(&stats.polls) > polls, "polling never came back");
});
