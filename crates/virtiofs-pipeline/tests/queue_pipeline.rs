//! The pipeline driven through real split rings in guest memory, kicked and completed through
//! eventfds as QEMU and a guest driver would, with a scripted FUSE handler.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use vhost_user_backend::VringT;
use virtiofs_device::{FsBackend, FsBackendConfig};
use virtiofs_fuse::abi::{InHeader, Opcode};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryMmap};

mt_test!(pool_size_bounds_requests_in_flight_per_queue, || {
    let mut r = rig(1, 3, false);
    r.init(1);
    r.handler.delay_ms.store(30, Ordering::SeqCst);
    r.train(1, 2);
    let d = &mut r.drivers[1];
    for i in 0..24 {
        d.post(GETATTR, 100 + i);
    }
    d.kick();
    let used = d.wait_used(24);
    // Never more than the pool's 3 on the pool, plus the one the queue thread runs itself.
    assert_eq!(r.handler.peak_pooled.load(Ordering::SeqCst), 3, "pool of 3");
    assert!(r.handler.peak.load(Ordering::SeqCst) <= 4);
    let mut uniques: Vec<u64> = used.iter().map(|u| u.reply.unique).collect();
    uniques.sort();
    assert_eq!(
        uniques,
        (100..124).collect::<Vec<_>>(),
        "every request answered once"
    );
    assert!(used.iter().all(|u| u.len == 16 && u.reply.error == 0));
    assert!(r.pipeline.stats()[1].peak_in_flight.load(Ordering::SeqCst) <= 4);
});

mt_test!(init_is_told_the_smallest_started_request_queue, || {
    let mut r = rig(3, 4, false);
    // The hiprio queue carries no READ or WRITE: its size does not count.
    r.vrings[0].set_queue_size(16);
    r.vrings[3].set_queue_size(32);
    r.init(1);
    assert_eq!(
        *r.handler.queue_sizes.lock().unwrap(),
        [(32, 0)],
        "told once, before the INIT ran"
    );
    let d = &mut r.drivers[1];
    d.post(GETATTR, 2);
    d.kick();
    d.wait_used(1);
    assert_eq!(
        r.handler.queue_sizes.lock().unwrap().len(),
        1,
        "only at INIT"
    );
    // A stopped queue does not count.
    r.vrings[3].set_queue_ready(false);
    r.init(2);
    assert_eq!(r.handler.queue_sizes.lock().unwrap()[1], (QUEUE_SIZE, 2));
});

mt_test!(pool_size_zero_runs_one_request_at_a_time, || {
    let mut r = rig(1, 0, false);
    r.init(1);
    r.handler.delay_ms.store(5, Ordering::SeqCst);
    let d = &mut r.drivers[1];
    for i in 0..10 {
        d.post(GETATTR, 10 + i);
    }
    // Long requests too stay on the queue thread without a pool.
    d.post(Opcode::Fsync as u32, 20);
    d.post(Opcode::Syncfs as u32, 21);
    d.kick();
    let used = d.wait_used(12);
    assert_eq!(r.handler.peak.load(Ordering::SeqCst), 1);
    // One at a time on the queue thread: completions come in submission order.
    let uniques: Vec<u64> = used.iter().map(|u| u.reply.unique).collect();
    assert_eq!(uniques, (10..22).collect::<Vec<_>>());
    let log = r.handler.log.lock().unwrap();
    assert!(
        log.iter().all(|e| e.4 == "virtiofs-q1"),
        "every request on the queue's own thread: {:?}",
        log.iter().map(|e| &e.4).collect::<Vec<_>>()
    );
    assert_eq!(r.pipeline.stats()[1].pooled.load(Ordering::SeqCst), 0);
});

mt_test!(
    each_queue_has_its_own_pool_and_all_queues_are_served,
    || {
        let mut r = rig(2, 2, true);
        r.init(1);
        r.handler.delay_ms.store(40, Ordering::SeqCst);
        r.train(1, 2);
        r.train(2, 2);
        for q in 1..=2 {
            let d = &mut r.drivers[q];
            for i in 0..6 {
                d.post(GETATTR, (q as u64) * 1000 + i);
            }
            d.kick();
        }
        for q in 1..=2 {
            let used = r.drivers[q].wait_used(6);
            assert!(used.iter().all(|u| u.reply.unique / 1000 == q as u64));
        }
        // Two queues with two permits each (and their own threads): more than one queue's
        // worth on the pool at once, never more than both pools.
        let pooled = r.handler.peak_pooled.load(Ordering::SeqCst);
        assert!(pooled > 2 && pooled <= 4, "peak on the pool {pooled}");
        let threads: std::collections::BTreeSet<String> = r
            .handler
            .log
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.4.clone())
            .collect();
        assert!(threads.contains("virtiofs-q1") && threads.contains("virtiofs-q2"));
        assert_eq!(r.pipeline.stats()[1].completed(), 9); // INIT + 2 + 6
        assert_eq!(r.pipeline.stats()[2].completed(), 8);
    }
);

mt_test!(
    request_before_init_gets_eio_without_reaching_the_server,
    || {
        let mut r = rig(1, 4, false);
        let d = &mut r.drivers[1];
        d.post(GETATTR, 7);
        d.kick();
        let used = d.wait_used(1);
        assert_eq!(used[0].reply.error, -libc::EIO);
        assert_eq!(used[0].reply.unique, 7);
        assert_eq!(used[0].len, 16);
        assert_eq!(r.handler.handled.load(Ordering::SeqCst), 0);
        // The guest can still initialise afterwards.
        r.init(1);
    }
);

mt_test!(
    destroy_waits_for_in_flight_requests_and_remount_works,
    || {
        let mut r = rig(1, 8, false);
        r.init(1);
        r.handler.delay_ms.store(100, Ordering::SeqCst);
        let d = &mut r.drivers[1];
        for i in 0..4 {
            d.post(GETATTR, 10 + i);
        }
        d.post(DESTROY, 20);
        d.post(GETATTR, 21); // after DESTROY: the session is gone
        d.kick();
        let used = d.wait_used(6);
        let log = r.handler.log.lock().unwrap().clone();
        let destroy = log.iter().find(|e| e.0 == DESTROY).unwrap();
        for e in log.iter().filter(|e| e.0 == GETATTR) {
            assert!(
                e.3 <= destroy.2,
                "DESTROY started before request {} finished",
                e.1
            );
        }
        let after = used.iter().find(|u| u.reply.unique == 21).unwrap();
        assert_eq!(after.reply.error, -libc::EIO, "request after DESTROY");
        // Remount: INIT again, then requests work.
        r.handler.delay_ms.store(0, Ordering::SeqCst);
        r.init(1);
        let d = &mut r.drivers[1];
        d.post(GETATTR, 30);
        d.kick();
        assert_eq!(d.wait_used(1)[0].reply.error, 0);
    }
);

mt_test!(
    init_in_a_live_session_and_device_reset_end_the_session,
    || {
        let mut r = rig(2, 4, true);
        r.init(1);
        // Slow requests in flight on queue 2 when the new driver's INIT arrives on queue 1.
        r.handler.delay_ms.store(40, Ordering::SeqCst);
        for i in 0..6 {
            r.drivers[2].post(GETATTR, 10 + i);
        }
        r.drivers[2].kick();
        std::thread::sleep(Duration::from_millis(10));
        r.init(1);
        let used = r.drivers[2].wait_used(6);
        assert!(
            used.iter().all(|u| u.reply.error == 0),
            "requests of the old session that were in flight complete"
        );
        assert_eq!(r.handler.sessions_ended.load(Ordering::SeqCst), 1);
        assert_eq!(
            r.handler.running_at_end.load(Ordering::SeqCst),
            0,
            "the session ended while a request ran"
        );
        // The new session serves.
        r.handler.delay_ms.store(0, Ordering::SeqCst);
        let d = &mut r.drivers[1];
        d.post(GETATTR, 20);
        d.kick();
        assert_eq!(
            d.wait_used(1)[0].reply.error,
            0,
            "request in the new session"
        );

        // A device reset (RESET_DEVICE, from the protocol thread) ends it too.
        let reset = r.pipeline.session_reset();
        assert!(std::thread::spawn(move || reset.reset()).join().unwrap());
        assert_eq!(r.handler.sessions_ended.load(Ordering::SeqCst), 2);
        let d = &mut r.drivers[1];
        d.post(GETATTR, 21);
        d.kick();
        assert_eq!(
            d.wait_used(1)[0].reply.error,
            -libc::EIO,
            "no session after a device reset"
        );
        // A reset with no session ends nothing; the next INIT starts one without ending any.
        let reset = r.pipeline.session_reset();
        assert!(!std::thread::spawn(move || reset.reset()).join().unwrap());
        r.init(1);
        assert_eq!(r.handler.sessions_ended.load(Ordering::SeqCst), 2);
    }
);

mt_test!(
    malformed_chains_are_returned_and_the_queue_keeps_serving,
    || {
        let mut r = rig(1, 4, false);
        r.init(1);
        let d = &mut r.drivers[1];
        let buf = d.buf_addr(40);
        // Too short for a FUSE header.
        let short = d.post_raw(&[(buf, 8, false), (buf + 0x100, 64, true)]);
        // Header readable part points outside guest memory.
        let outside = d.post_raw(&[
            (MEM_SIZE as u64 + 0x1000, 40, false),
            (buf + 0x100, 64, true),
        ]);
        // No writable part at all.
        let header = InHeader {
            len: 40,
            opcode: GETATTR,
            unique: 5,
            ..Default::default()
        };
        d.mem.write_obj(header, GuestAddress(buf + 0x200)).unwrap();
        let no_reply_room = d.post_raw(&[(buf + 0x200, 40, false)]);
        // Then a valid request.
        let valid = d.post(GETATTR, 99);
        d.kick();
        // Requests run concurrently (pool of 4): match completions by head, not by order.
        let used = d.wait_used(4);
        let by_head = |head: u16| *used.iter().find(|u| u.id == head as u32).unwrap();
        for head in [short, outside, no_reply_room] {
            assert_eq!(by_head(head).len, 0, "a malformed chain is returned empty");
        }
        assert_eq!(by_head(valid).reply.unique, 99);
        assert_eq!(
            by_head(valid).reply.error,
            0,
            "the next valid request succeeds"
        );
        assert_eq!(r.pipeline.stats()[1].malformed.load(Ordering::SeqCst), 3);
    }
);

mt_test!(guest_is_notified_through_the_call_eventfd, || {
    let mut r = rig(1, 2, false);
    assert!(
        r.drivers[1].call.read().is_err(),
        "no notification before any request"
    );
    r.init(1);
    assert!(r.drivers[1].call.read().unwrap() >= 1);
});

mt_test!(hiprio_forget_reaches_the_server_before_init, || {
    let mut r = rig(1, 2, false);
    let d = &mut r.drivers[0];
    d.post(Opcode::Forget as u32, 3);
    d.kick();
    let used = d.wait_used(1);
    assert_eq!(
        used[0].len, 16,
        "the scripted handler wrote a reply for FORGET"
    );
    assert_eq!(
        r.handler.handled.load(Ordering::SeqCst),
        1,
        "FORGET reached the server"
    );
    assert_eq!(r.pipeline.stats()[0].completed(), 1);
});

mt_test!(stopping_a_ring_waits_for_its_in_flight_requests, || {
    let mut r = rig(1, 4, false);
    r.init(1);
    r.handler.delay_ms.store(300, Ordering::SeqCst);
    r.drivers[1].post(GETATTR, 60);
    r.drivers[1].kick();
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.handler.running.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    // What GET_VRING_BASE does: stop the ring. It must return only once the request is back.
    r.vrings[1].set_queue_ready(false);
    assert_eq!(
        r.pipeline.stats()[1].completed(),
        2,
        "ring stopped while a request was still in flight"
    );
    assert_eq!(r.drivers[1].wait_used(1)[0].reply.unique, 60);
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_in_flight_requests() {
    let r = tokio::task::spawn_blocking(|| {
        let mut r = rig(1, 4, false);
        r.init(1);
        r.handler.delay_ms.store(300, Ordering::SeqCst);
        r.drivers[1].post(GETATTR, 50);
        r.drivers[1].kick();
        // Wait until the request is running.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.handler.running.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(1));
        }
        r
    })
    .await
    .unwrap();
    let stats = r.pipeline.stats()[1].clone();
    r.pipeline.shutdown(Duration::from_secs(10)).await;
    assert_eq!(
        r.handler.handled.load(Ordering::SeqCst),
        2,
        "the in-flight request finished"
    );
    assert_eq!(stats.completed(), 2, "and its chain went back to the guest");
}

#[test]
fn memory_guard_sees_replaced_guest_memory() {
    // The queues hold the `GuestMemoryAtomic` the vhost-user thread updates in place.
    let backend = FsBackend::new(FsBackendConfig { request_queues: 1 });
    let (_daemon, links) = backend.create_daemon("test").unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    links[0].mem.lock().unwrap().replace(mem);
    assert_eq!(
        vm_memory::GuestMemory::num_regions(&*links[1].mem.memory()),
        1
    );
}
