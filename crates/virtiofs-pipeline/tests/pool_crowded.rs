//! The pool on a host whose every CPU is wanted (`host_load.rs`, `SpareCpu`): quick requests
//! worth a runner stay on the queue thread while no CPU is free for one, and go to runners
//! again once one is.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use virtiofs_pipeline::PipelineConfig;

mt_test!(quick_requests_get_runners_only_while_a_cpu_is_free, || {
    // The host's load as the pool reads it, 2 CPUs: 64 threads runnable.
    let load = FakeLoad::new("pool-crowded", 64);
    let config = PipelineConfig {
        thread_pool_size: 8,
        host_load: Some(load.host_load(2)),
        ..Default::default()
    };
    let mut r = rig_config(1, config, false, |_| true, None);
    r.init(1);
    let stats = r.pipeline.stats()[1].clone();
    // Requests of 5 ms: 8 queued are worth a runner by their time alone.
    r.handler.delay_ms.store(5, Ordering::SeqCst);
    r.train(1, 2);

    // 64 threads runnable on 2 CPUs: all 8 run on the queue thread, one after the other.
    let d = &mut r.drivers[1];
    d.post_batch((0..8).map(|i| (GETATTR, 100 + i)));
    d.kick();
    assert!(d.wait_used(8).iter().all(|u| u.reply.error == 0));
    assert!((100..108).all(|u| r.thread_of(u) == "virtiofs-q1"));
    assert_eq!(stats.pooled.load(Ordering::SeqCst), 0);
    assert_eq!(stats.runners.load(Ordering::SeqCst), 0, "no runner woken");

    // The host calm (one thread runnable), the last look long past: runners again. Each
    // GETATTR waits until all 8 run at once, which only the pool can do.
    load.set_running(1);
    std::thread::sleep(Duration::from_millis(5));
    r.handler.delay_ms.store(0, Ordering::SeqCst);
    r.handler.rendezvous.store(8, Ordering::SeqCst);
    let d = &mut r.drivers[1];
    d.post_batch((0..8).map(|i| (GETATTR, 200 + i)));
    d.kick();
    assert!(d.wait_used(8).iter().all(|u| u.reply.error == 0));
    assert_eq!(r.handler.met.load(Ordering::SeqCst), 8, "all 8 ran at once");
    assert_eq!(stats.pooled.load(Ordering::SeqCst), 7);
});
