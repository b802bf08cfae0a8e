//! Queue threads exist only for queues the frontend started. This file holds one test so that
//! its process has no other pipeline: it counts the process's threads by name.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Waits (up to 10 s) until `name` is among this process's threads.
fn wait_for_thread(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !threads_named(name).iter().any(|n| n == name) {
        assert!(Instant::now() < deadline, "no thread {name}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

mt_test!(a_thread_per_started_request_queue_only, || {
    // Eight request queues offered; the guest starts hiprio and queue 1.
    let mut r = rig_with(8, 64, true, |q| q <= 1, None);
    r.init(1);
    wait_for_thread("virtiofs-q1");
    // The hiprio queue has no thread: its task runs on the shared runtime, and serves there.
    let d = &mut r.drivers[0];
    d.post(GETATTR, 6);
    d.kick();
    assert_eq!(d.wait_used(1)[0].reply.error, 0);
    let hiprio = r.thread_of(6);
    assert!(
        !hiprio.starts_with("virtiofs-"),
        "hiprio served on {hiprio}"
    );
    assert_eq!(
        threads_named("virtiofs-"),
        ["virtiofs-q1"],
        "threads of started request queues only"
    );
    // Starting queue 5 later starts its thread, which serves it.
    r.drivers[5].start(&r.vrings[5], true);
    wait_for_thread("virtiofs-q5");
    let d = &mut r.drivers[5];
    d.post(GETATTR, 7);
    d.kick();
    assert_eq!(d.wait_used(1)[0].reply.error, 0);
    assert_eq!(r.thread_of(7), "virtiofs-q5");
    assert_eq!(threads_named("virtiofs-").len(), 2);
});
