//! `--poll-us` on a crowded CPU: a spin that loses its CPU to a busy thread for a time slice
//! pauses polling. Alone in its binary: it pins a busy thread to the queue thread's CPU.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::polling_rig;

/// The thread id of this process's thread named `name`.
fn thread_id(name: &str) -> libc::pid_t {
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == name {
            return t.file_name().to_str().unwrap().parse().unwrap();
        }
    }
    panic!("no thread {name}");
}

/// Pins thread `tid` to CPU `cpu`.
fn pin(tid: libc::pid_t, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET and sched_setaffinity only touch it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

mt_test!(a_spin_that_loses_its_cpu_pauses_polling, || {
    let mut r = polling_rig(Duration::from_millis(200));
    r.train(1, 30);
    let stats = r.pipeline.stats()[1].clone();
    // A busy thread on the queue thread's CPU: the spin yields to it and loses the CPU for
    // the busy thread's time slice.
    let cpu = (0..libc::CPU_SETSIZE as usize)
        .find(|&c| {
            // SAFETY: reads this thread's affinity into a zeroed set.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set);
                libc::CPU_ISSET(c, &set)
            }
        })
        .unwrap();
    pin(thread_id("virtiofs-q1"), cpu);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            pin(0, cpu);
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
