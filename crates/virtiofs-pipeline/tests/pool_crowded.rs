//! The pool on a host whose every CPU is wanted (`host_load.rs`, `SpareCpu`): quick requests
//! worth a runner stay on the queue thread while no CPU is free for one, and go to runners
//! again once one is.

mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use virtiofs_pipeline::{HostLoad, PipelineConfig};

mt_test!(quick_requests_get_runners_only_while_a_cpu_is_free, || {
    // The host's load as the pool reads it: a file in /proc/loadavg's format, 2 CPUs.
    let path = std::env::temp_dir().join(format!("pool-crowded-{}", std::process::id()));
    std::fs::write(&path, "").unwrap();
    let writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    // Rewritten in place at one length, so that the pool never reads a truncated line.
    let set_running = |n: u32| {
        let line = format!("1.00 1.00 1.00 {n:>4}/300 1\n");
        writer.write_all_at(line.as_bytes(), 0).unwrap();
    };
    set_running(64);
    let load = HostLoad::from_file(File::open(&path).unwrap(), 2).unwrap();
    let config = PipelineConfig {
        thread_pool_size: 8,
        host_load: Some(Arc::new(load)),
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
    set_running(1);
    std::thread::sleep(Duration::from_millis(5));
    r.handler.delay_ms.store(0, Ordering::SeqCst);
    r.handler.rendezvous.store(8, Ordering::SeqCst);
    let d = &mut r.drivers[1];
    d.post_batch((0..8).map(|i| (GETATTR, 200 + i)));
    d.kick();
    assert!(d.wait_used(8).iter().all(|u| u.reply.error == 0));
    assert_eq!(r.handler.met.load(Ordering::SeqCst), 8, "all 8 ran at once");
    assert_eq!(stats.pooled.load(Ordering::SeqCst), 7);
    let _ = std::fs::remove_file(&path);
});
