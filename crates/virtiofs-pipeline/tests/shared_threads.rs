//! `queue_threads`: request queues share T threads, queue N on thread (N - 1) mod T, and a
//! queue that shares its thread does not poll. One test in this file: it counts the process's
//! threads by name.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use virtiofs_pipeline::PipelineConfig;

mt_test!(four_request_queues_on_two_threads, || {
    let config = PipelineConfig {
        thread_pool_size: 0,
        queue_threads: 2,
        // Long enough that a queue allowed to poll would be seen polling.
        poll_max: Duration::from_millis(200),
        ..Default::default()
    };
    let mut r = rig_config(4, config, true, |_| true, None);
    r.init(1);
    for q in 1..=4 {
        let d = &mut r.drivers[q];
        d.post(GETATTR, 10 + q as u64);
        d.kick();
        assert_eq!(d.wait_used(1)[0].reply.error, 0, "queue {q}");
    }
    let on: Vec<_> = (1..=4).map(|q| r.thread_of(10 + q)).collect();
    assert_eq!(
        on,
        ["virtiofs-q1", "virtiofs-q2", "virtiofs-q1", "virtiofs-q2"]
    );
    let mut threads = threads_named("virtiofs-");
    threads.sort();
    assert_eq!(threads, ["virtiofs-q1", "virtiofs-q2"], "two queue threads");
    // Requests in quick succession on a queue that shares its thread: never a poll (it would
    // keep the other queue of the thread waiting). Counted from here: before queue 3 started,
    // queue 1 was alone on its thread and could poll (FUSE_INIT, its first GETATTR).
    let polls = |r: &Rig| r.pipeline.stats()[1].polls.load(Ordering::Relaxed);
    let before = polls(&r);
    r.train(1, 30);
    assert_eq!(
        polls(&r) - before,
        0,
        "queue 1 polled while sharing its thread"
    );
    // Both queues of a thread keep being served, interleaved.
    for round in 0..5u64 {
        for q in [1, 3] {
            let d = &mut r.drivers[q];
            d.post(GETATTR, 100 + round * 10 + q as u64);
            d.kick();
        }
        for q in [1, 3] {
            assert_eq!(r.drivers[q].wait_used(1)[0].reply.error, 0);
        }
    }
});
