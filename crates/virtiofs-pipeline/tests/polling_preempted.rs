//! `--poll-us` on a crowded CPU: a spin that loses its CPU to a busy thread for a time slice
//! pauses polling. Alone in its binary: it pins a busy thread to the queue thread's CPU.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::polling_rig_with;
use virtiofs_pipeline::{CpuSet, PipelineConfig};

mt_test!(a_spin_that_loses_its_cpu_pauses_polling, || {
    // The queue thread pinned (as `--queue-affinity 1:CPU` does) to a CPU this test may use.
    let cpu = CpuSet::of_this_thread().unwrap().cpus()[0];
    let mut r = polling_rig_with(PipelineConfig {
        poll_max: Duration::from_millis(200),
        queue_affinity: Some(format!("1:{cpu}").parse().unwrap()),
        ..Default::default()
    });
    r.train(1, 30);
    let stats = r.pipeline.stats()[1].clone();
    // A busy thread on the queue thread's CPU: the spin yields to it and loses the CPU for
    // the busy thread's time slice.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            CpuSet::new(vec![cpu]).pin_this_thread().unwrap();
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    let polls_before = stats.polls.load(Ordering::Relaxed);
    let preempted_before = stats.poll_preempted.load(Ordering::Relaxed);
    r.train(1, 40);
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    let preempted = stats.poll_preempted.load(Ordering::Relaxed) - preempted_before;
    let polls = stats.polls.load(Ordering::Relaxed) - polls_before;
    assert!(preempted >= 1, "no spin noticed it lost the CPU");
    // Each preempted spin pauses polling for 16 waits or more: most of the 40 requests were
    // served without a spin.
    assert!(
        polls <= 40 / 2,
        "{polls} spins for 40 requests with a busy thread on the CPU ({preempted} preempted)"
    );
});
