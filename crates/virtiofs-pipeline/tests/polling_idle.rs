//! `--poll-us` on an idle guest: the queue thread spins at most one window after the last
//! request, then sleeps. Alone in its binary: it measures a thread's CPU time by name.

mod common;

use std::time::Duration;

use common::polling_rig;

/// CPU time (user + system, clock ticks) of the thread named `name` in this process.
fn thread_cpu_ticks(name: &str) -> u64 {
    let dir = common::thread_dir(name).unwrap_or_else(|| panic!("no thread {name}"));
    let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
    // Fields after the ")" of the command: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

mt_test!(an_idle_guest_costs_no_polling, || {
    let mut r = polling_rig(Duration::from_millis(20));
    r.train(1, 30);
    // Idle from here: the queue spins at most one window (20 ms), then sleeps.
    std::thread::sleep(Duration::from_millis(100));
    let before = thread_cpu_ticks("virtiofs-q1");
    std::thread::sleep(Duration::from_millis(1000));
    let spent = thread_cpu_ticks("virtiofs-q1") - before;
    // Clock ticks are 10 ms: a sleeping thread adds none, a spinning one ~100.
    assert!(
        spent <= 2,
        "the idle queue thread used {spent} ticks in 1 s"
    );
    // And it still serves the next kicked request.
    r.train(1, 1);
});
