//! Gathering a batch (`gather.rs`): at depth 1 a polling queue soon stops waiting for a second
//! request; a stream of cheap requests gathers batches.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{polling_rig, polling_rig_with};
use virtiofs_pipeline::gather::GATHER_PROBE;
use virtiofs_pipeline::{CpuSet, PipelineConfig};

/// One test at a time: each keeps a queue thread and a client spinning, two tests four threads
/// on two CPUs, and a preempted spin pauses polling.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

mt_test!(requests_one_at_a_time_are_seldom_held_back, || {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = polling_rig(Duration::from_millis(200));
    let stats = r.pipeline.stats()[1].clone();
    // Each request is posted after the reply to the one before: the spin finds it a round
    // trip of the test's client after it began, not within `gather::STREAMING`, unless the
    // queue thread lost its CPU between its reply and its spin (a loaded machine). Such a
    // wait is never met, and after two unmet ones only trials wait.
    r.train(1, 300);
    assert!(stats.polls.load(Ordering::Relaxed) > 0, "the queue polled");
    assert!(
        stats.poll_hits.load(Ordering::Relaxed) > 0,
        "the spin found requests"
    );
    let (waits, met) = (
        stats.gathers.load(Ordering::Relaxed),
        stats.gathered.load(Ordering::Relaxed),
    );
    assert_eq!(met, 0, "a second request came at depth 1");
    assert!(
        waits <= 2 + 300 / u64::from(GATHER_PROBE),
        "{waits} requests of 300 waited"
    );
});

/// Spins for about `us` microseconds.
fn spin_us(us: u64) {
    let until = std::time::Instant::now() + Duration::from_micros(us);
    while std::time::Instant::now() < until {
        std::hint::spin_loop();
    }
}

mt_test!(a_stream_of_cheap_requests_gathers_batches, || {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The client and the queue thread on CPUs of their own: on one CPU the queue's wait for a
    // second request would hold the CPU the client needs to make it. Gathering also needs the
    // queue thread quicker per request than the client's pace (else requests pile up and
    // batches form without waiting): the debug build's queue thread is near 1-2 us, hence
    // paces up to 3 us below.
    let cpus = CpuSet::of_this_thread().unwrap().cpus().to_vec();
    let [queue_cpu, client_cpu, ..] = cpus[..] else {
        eprintln!("skipped: needs two CPUs, this thread may use {cpus:?}");
        return;
    };
    let mut r = polling_rig_with(PipelineConfig {
        poll_max: Duration::from_millis(200),
        queue_affinity: Some(format!("1:{queue_cpu}").parse().unwrap()),
        ..Default::default()
    });
    CpuSet::new(vec![client_cpu]).pin_this_thread().unwrap();
    let stats = r.pipeline.stats()[1].clone();
    r.train(1, 300);
    // A client that makes its requests 1-3 us apart without waiting for replies (the queue
    // sees them as they come: its notifications are off while it polls). The first of each
    // group arrives as the queue's spin begins, the second within `gather::GATHER`. A loaded
    // machine pauses polling for a while; the groups go on until a batch is gathered.
    let mut unique = 2000;
    for pace_us in [1, 2, 3].into_iter().cycle().take(4000) {
        let d = &mut r.drivers[1];
        for _ in 0..8 {
            d.post(common::GETATTR, unique);
            unique += 1;
            spin_us(pace_us);
        }
        d.kick();
        d.wait_used(8);
        if stats.gathered.load(Ordering::Relaxed) > 0 {
            return;
        }
    }
    panic!(
        "no batch gathered: {} waits for a second request, {} polls",
        stats.gathers.load(Ordering::Relaxed),
        stats.polls.load(Ordering::Relaxed)
    );
});
