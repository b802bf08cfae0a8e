//! `--poll-us`: a request queue that polls finds requests the guest made available without a
//! kick, adapts its window, and spins no longer than that once the guest goes idle.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{polling_rig, Rig, GETATTR};

/// Whether a request posted without a kick is served within `within`.
fn served_without_kick(r: &mut Rig, unique: u64, within: Duration) -> bool {
    let d = &mut r.drivers[1];
    d.post(GETATTR, unique);
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if r.handler.handled.load(Ordering::SeqCst) > 0
            && r.handler.log.lock().unwrap().iter().any(|e| e.1 == unique)
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

mt_test!(
    a_polling_queue_serves_requests_posted_without_a_kick,
    || {
        // A long maximum, so that scheduling delays of the test cannot outlast the window.
        let mut r = polling_rig(Duration::from_millis(200));
        let stats = r.pipeline.stats()[1].clone();
        let preempted = || stats.poll_preempted.load(Ordering::Relaxed);
        let mut unique = 7;
        let before = preempted();
        loop {
            // Requests in quick succession: each wait is short, the window grows to the
            // maximum (and outlasts any pause a busy machine caused).
            r.train(1, 300);
            assert!(stats.polls.load(Ordering::Relaxed) > 0, "the queue polled");
            // Posted right after the last completion, without a kick: only polling finds it.
            if served_without_kick(&mut r, unique, Duration::from_secs(5)) {
                break;
            }
            // Only another thread holding the CPU for a time slice ends the spin early, and
            // pauses polling for a number of waits that may outlast a round (see poll.rs); a
            // few tries get past a busy moment of the machine.
            assert!(
                preempted() > before && unique < 10,
                "a request made available during the poll window was not served"
            );
            r.drivers[1].kick();
            r.drivers[1].wait_used(1);
            unique += 1;
        }
        let used = r.drivers[1].wait_used(1);
        assert_eq!(used[0].reply.error, 0);
        assert!(stats.poll_hits.load(Ordering::Relaxed) >= 1);
    }
);

mt_test!(without_polling_a_request_waits_for_its_kick, || {
    let mut r = polling_rig(Duration::ZERO);
    r.train(1, 30);
    assert!(
        !served_without_kick(&mut r, 7, Duration::from_millis(300)),
        "served without a kick or polling"
    );
    r.drivers[1].kick();
    assert_eq!(r.drivers[1].wait_used(1)[0].reply.error, 0);
    assert_eq!(r.pipeline.stats()[1].polls.load(Ordering::Relaxed), 0);
});
