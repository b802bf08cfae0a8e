//! The dispatch rule, batching and the exactly-once return of chains, through real rings:
//! where each request runs (the handler records its thread), how many guest notifications a
//! batch costs, and what shutdown does to requests in flight.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use virtiofs_fuse::abi::{InHeader, Opcode};
use virtiofs_pipeline::dispatch::BULK_INLINE_NS;
use virtiofs_pipeline::pool::worth_a_runner;
use vm_memory::{Bytes, GuestAddress};

/// Whether `thread` is the pipeline's thread of request queue 1.
fn is_queue_thread(thread: &str) -> bool {
    thread == "virtiofs-q1"
}

mt_test!(shallow_requests_run_inline_on_the_queue_thread, || {
    let mut r = rig(1, 64, true);
    r.init(1);
    for i in 0..5 {
        let d = &mut r.drivers[1];
        d.post(GETATTR, 10 + i);
        d.kick();
        d.wait_used(1);
        assert_eq!(r.thread_of(10 + i), "virtiofs-q1", "request {i}");
    }
    assert_eq!(r.thread_of(1), "virtiofs-q1", "INIT");
    let stats = &r.pipeline.stats()[1];
    assert_eq!(stats.inline.load(Ordering::SeqCst), 6);
    assert_eq!(stats.pooled.load(Ordering::SeqCst), 0);
    assert_eq!(r.handler.peak_pooled.load(Ordering::SeqCst), 0);
});

mt_test!(a_deep_queue_overlaps_its_requests_on_the_pool, || {
    let mut r = rig(1, 8, false);
    r.init(1);
    // Requests that block: worth handing to runners when others wait behind them.
    r.handler.delay_ms.store(20, Ordering::SeqCst);
    r.train(1, 2);
    r.handler.delay_ms.store(0, Ordering::SeqCst);
    // Each GETATTR waits until all 8 run at once: only the pool can do that.
    r.handler.rendezvous.store(8, Ordering::SeqCst);
    let d = &mut r.drivers[1];
    d.post_batch((0..8).map(|i| (GETATTR, 100 + i)));
    d.kick();
    let used = d.wait_used(8);
    assert!(used.iter().all(|u| u.reply.error == 0));
    assert_eq!(r.handler.met.load(Ordering::SeqCst), 8, "all 8 ran at once");
    // The 7 with others behind them went to the pool; the last ran on the queue thread.
    assert_eq!(r.handler.peak_pooled.load(Ordering::SeqCst), 7);
    assert!(is_queue_thread(&r.thread_of(107)));
    assert!((100..107).all(|u| !is_queue_thread(&r.thread_of(u))));
    let stats = &r.pipeline.stats()[1];
    assert_eq!(stats.pooled.load(Ordering::SeqCst), 7);
    assert_eq!(
        stats.inline.load(Ordering::SeqCst),
        4,
        "INIT, 2 alone and the last"
    );
});

mt_test!(
    the_pool_bound_holds_and_the_queue_thread_takes_the_rest,
    || {
        let mut r = rig(1, 2, false);
        r.init(1);
        r.handler.delay_ms.store(20, Ordering::SeqCst);
        r.train(1, 2);
        let d = &mut r.drivers[1];
        d.post_batch((0..12).map(|i| (GETATTR, 100 + i)));
        d.kick();
        let used = d.wait_used(12);
        assert!(used.iter().all(|u| u.reply.error == 0));
        assert!(
            r.handler.peak_pooled.load(Ordering::SeqCst) <= 2,
            "more than the pool's 2 permits on the pool"
        );
        assert!(r.handler.peak.load(Ordering::SeqCst) <= 3);
        let stats = &r.pipeline.stats()[1];
        let (pooled, inline) = (
            stats.pooled.load(Ordering::SeqCst),
            stats.inline.load(Ordering::SeqCst),
        );
        assert_eq!(pooled + inline, 15, "INIT, 2 alone, 12");
        assert!(pooled >= 2, "the pool was used ({pooled})");
        assert!(
            inline >= 2,
            "a full pool leaves the queue thread working ({inline})"
        );
    }
);

mt_test!(
    cheap_requests_behind_each_other_run_at_once_on_the_queue_thread,
    || {
        let mut r = rig(1, 64, false);
        r.init(1);
        let stats = r.pipeline.stats()[1].clone();
        // The rule weighs the queue's recent time per request (see `pool::worth_a_runner`):
        // on a loaded machine a request preempted in the middle makes 8 quick ones look like
        // work for a runner, and rightly so; the average forgets it only after a few dozen
        // requests. So each attempt first brings the average down to a GETATTR's own, and a
        // batch is judged only when the rule, given that average, says "no runner". A
        // broken rule fails every judged attempt.
        let mut seen = Vec::new();
        for attempt in 0..5 {
            let mut trained = 0;
            while worth_a_runner(8, false, stats.service_ns()) && trained < 256 {
                r.train(1, 8);
                trained += 8;
            }
            let service_ns = stats.service_ns();
            if worth_a_runner(8, false, service_ns) {
                seen.push(format!(
                    "average {service_ns} ns after {trained} alone: not judged"
                ));
                continue;
            }
            let runners = stats.runners.load(Ordering::SeqCst);
            // Quick and cheap: 8 queued behind each other are less work than a thread
            // wake-up.
            let first = 100 + 10 * attempt;
            let d = &mut r.drivers[1];
            d.post_batch((first..first + 8).map(|u| (GETATTR, u)));
            d.kick();
            d.wait_used(8);
            let woken = stats.runners.load(Ordering::SeqCst) - runners;
            let inline = (first..first + 8)
                .filter(|&u| is_queue_thread(&r.thread_of(u)))
                .count();
            // Run at once, in ring order: not queued for a runner and taken back after the
            // batch's last (which ran first then).
            let order: Vec<u64> = r
                .handler
                .log
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.1)
                .filter(|u| (first..first + 8).contains(u))
                .collect();
            let in_ring_order = order.iter().copied().eq(first..first + 8);
            if woken == 0 && inline == 8 && in_ring_order {
                return;
            }
            seen.push(format!(
                "average {service_ns} ns: {woken} runners woken, {inline} of 8 inline, \
                 run as {order:?}"
            ));
        }
        panic!("per attempt: {seen:#?}");
    }
);

/// Posts `batch` (`(opcode, unique, nodeid)`) on request queue 1 at once, waits for every
/// answer and returns how many ran off the queue thread.
fn run_batch(r: &mut Rig, batch: &[(u32, u64, u64)]) -> usize {
    let d = &mut r.drivers[1];
    d.post_batch_to(batch.iter().copied());
    d.kick();
    assert!(d.wait_used(batch.len()).iter().all(|u| u.reply.error == 0));
    batch
        .iter()
        .filter(|&&(_, unique, _)| !is_queue_thread(&r.thread_of(unique)))
        .count()
}

mt_test!(
    requests_that_lock_one_inode_stay_on_the_queue_thread,
    || {
        let mut r = rig(1, 8, false);
        r.init(1);
        // Requests that block: worth handing to runners when others wait behind them.
        r.handler.delay_ms.store(20, Ordering::SeqCst);
        r.train(1, 2);
        let stats = r.pipeline.stats()[1].clone();
        let pooled = stats.pooled.load(Ordering::SeqCst);
        // Small WRITEs to file 7, a CREATE and an UNLINK in directory 5: the kernel runs those
        // for one inode one after the other, so runners would only wait for each other.
        let same = [
            (WRITE, 100, 7),
            (CREATE, 101, 5),
            (WRITE, 102, 7),
            (UNLINK, 103, 5),
            (WRITE, 104, 7),
        ];
        assert_eq!(run_batch(&mut r, &same), 0, "ran off the queue thread");
        assert_eq!(stats.pooled.load(Ordering::SeqCst), pooled, "none pooled");
        // The same requests for five inodes overlap on the pool.
        let apart = same.map(|(op, unique, node)| (op, unique + 100, node + unique % 100));
        assert!(
            run_batch(&mut r, &apart) >= 1,
            "none of the five ran on the pool"
        );
        assert!(stats.pooled.load(Ordering::SeqCst) > pooled);
    }
);

/// Posts a chain whose readable part is `readable` bytes starting with `header`, and whose
/// writable part is `writable` bytes; both far from the ring's own buffers.
fn post_sized(d: &mut Driver, header: InHeader, readable: u32, writable: u32) {
    let (inbuf, outbuf) = (0xA0_0000, 0xC0_0000);
    d.mem.write_obj(header, GuestAddress(inbuf)).unwrap();
    d.post_raw(&[(inbuf, readable, false), (outbuf, writable, true)]);
}

mt_test!(long_requests_go_to_the_pool_even_alone, || {
    let mut r = rig(1, 4, false);
    r.init(1);
    let long = [
        Opcode::Fsync,
        Opcode::Fsyncdir,
        Opcode::Syncfs,
        Opcode::Fallocate,
        Opcode::CopyFileRange,
        Opcode::CopyFileRange64,
    ];
    for (i, op) in long.iter().enumerate() {
        let d = &mut r.drivers[1];
        d.post(*op as u32, 20 + i as u64);
        d.kick();
        d.wait_used(1);
        let thread = r.thread_of(20 + i as u64);
        assert!(!is_queue_thread(&thread), "{op:?} ran on {thread}");
    }
    let d = &mut r.drivers[1];
    d.post(GETATTR, 40);
    d.kick();
    d.wait_used(1);
    assert!(is_queue_thread(&r.thread_of(40)), "a quick request alone");
});

/// Posts a READ or WRITE of `bytes` alone on request queue 1, waits for its answer and says
/// whether it ran off the queue thread.
fn io_alone_pooled(r: &mut Rig, opcode: Opcode, unique: u64, bytes: u32) -> bool {
    let (readable, writable) = match opcode {
        Opcode::Write => (80 + bytes, 64),
        _ => (80, 16 + bytes),
    };
    let header = InHeader {
        len: readable,
        opcode: opcode as u32,
        unique,
        nodeid: 1,
        ..Default::default()
    };
    let d = &mut r.drivers[1];
    post_sized(d, header, readable, writable);
    d.kick();
    d.wait_used(1);
    !is_queue_thread(&r.thread_of(unique))
}

mt_test!(bulk_io_alone_runs_inline_while_it_is_quick, || {
    let mut r = rig(1, 4, false);
    r.init(1);
    let stats = r.pipeline.stats()[1].clone();
    let (big, small) = (160 << 10, 4096);
    // Large I/O alone, quick of late (a copy from the page cache): no thread hop.
    for (op, unique, bytes) in [
        (Opcode::Write, 30, big),
        (Opcode::Read, 31, big),
        (Opcode::Write, 32, small),
        (Opcode::Read, 33, small),
    ] {
        assert!(
            !io_alone_pooled(&mut r, op, unique, bytes),
            "{op:?} {unique}"
        );
    }
    // Slow large I/O (a disk): after a few, the queue hands the next to a runner.
    r.handler.delay_ms.store(2, Ordering::SeqCst);
    let mut unique = 50;
    while stats.bulk_ns() < BULK_INLINE_NS {
        assert!(
            unique < 70,
            "the bulk average never rose: {} ns",
            stats.bulk_ns()
        );
        io_alone_pooled(&mut r, Opcode::Write, unique, big);
        unique += 1;
    }
    assert!(unique > 50);
    for op in [Opcode::Write, Opcode::Read] {
        assert!(
            io_alone_pooled(&mut r, op, unique, big),
            "slow {op:?} alone"
        );
        unique += 1;
    }
    assert!(
        !io_alone_pooled(&mut r, Opcode::Write, unique, small),
        "small I/O alone stays inline"
    );
    // Quick again (the cache warmed): the average comes down on the pool too, and bulk
    // requests alone come back to the queue thread.
    r.handler.delay_ms.store(0, Ordering::SeqCst);
    let back = (unique + 1..unique + 40).find(|&u| !io_alone_pooled(&mut r, Opcode::Read, u, big));
    assert!(
        back.is_some(),
        "bulk I/O never came back: {} ns",
        stats.bulk_ns()
    );
});

/// Posts `n` READs of `bytes` each (uniques from `first`) on request queue 1 at once, waits
/// for their answers, and returns the most that ran on the pool at once.
fn bulk_batch_peak_pooled(r: &mut Rig, first: u64, n: u64, bytes: u32) -> usize {
    r.handler.peak_pooled.store(0, Ordering::SeqCst);
    let d = &mut r.drivers[1];
    d.holding = true;
    for i in 0..n {
        let header = InHeader {
            len: 80,
            opcode: Opcode::Read as u32,
            unique: first + i,
            nodeid: 1,
            ..Default::default()
        };
        // Headers apart; the reply buffers may overlap (nothing reads them).
        let inbuf = 0xA0_0000 + 0x100 * i;
        d.mem.write_obj(header, GuestAddress(inbuf)).unwrap();
        d.post_raw(&[(inbuf, 80, false), (0xC0_0000, 16 + bytes, true)]);
    }
    d.holding = false;
    d.publish();
    d.kick();
    d.wait_used(n as usize);
    r.handler.peak_pooled.load(Ordering::SeqCst)
}

mt_test!(quick_bulk_io_takes_a_runner_per_cpu_slow_the_pool, || {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let mut r = rig(1, 64, false);
    r.init(1);
    let stats = r.pipeline.stats()[1].clone();
    let big = 160 << 10;
    // Copies from the page cache (bulk requests quick of late): more runners than CPUs
    // would only take turns on them. 24 queued at once, each 200 us: without the bound the
    // runners ramp up well past the CPUs. Judged only while the bulk average stayed quick (a
    // loaded machine may stretch a 200 us sleep past the bound).
    r.handler.delay_us.store(200, Ordering::SeqCst);
    let mut seen = Vec::new();
    for attempt in 0..5 {
        let peak = bulk_batch_peak_pooled(&mut r, 100 + 40 * attempt, 24, big);
        let bulk_ns = stats.bulk_ns();
        if bulk_ns < BULK_INLINE_NS {
            assert!(peak <= cpus, "{peak} on the pool at once, {cpus} CPUs");
            seen.push(format!("judged: {peak} at once"));
            break;
        }
        seen.push(format!("bulk average {bulk_ns} ns: not judged"));
        // Let the average come down again.
        r.handler.delay_us.store(0, Ordering::SeqCst);
        for u in 0..40 {
            io_alone_pooled(&mut r, Opcode::Read, 2000 + 100 * attempt + u, big);
        }
        r.handler.delay_us.store(200, Ordering::SeqCst);
    }
    assert!(
        seen.last().unwrap().starts_with("judged"),
        "never judged: {seen:?}"
    );
    // Slow bulk requests (a disk): runners for all of them, up to the pool.
    r.handler.delay_us.store(0, Ordering::SeqCst);
    r.handler.delay_ms.store(3, Ordering::SeqCst);
    let mut unique = 300;
    while stats.bulk_ns() < BULK_INLINE_NS {
        assert!(unique < 330, "the bulk average never rose");
        io_alone_pooled(&mut r, Opcode::Read, unique, big);
        unique += 1;
    }
    let peak = bulk_batch_peak_pooled(&mut r, 400, 24, big);
    assert!(
        peak > cpus.min(6),
        "{peak} slow bulk requests on the pool at once"
    );
});

mt_test!(one_notification_per_batch_without_event_idx, || {
    let mut r = rig(1, 0, false);
    r.init(1);
    let d = &mut r.drivers[1];
    d.notifications();
    d.post_batch((0..16).map(|i| (GETATTR, 100 + i)));
    d.kick();
    d.wait_used(16);
    // Without EVENT_IDX every check says "notify": one check per batch, one notification.
    assert_eq!(d.notifications(), 1, "16 quick requests, one batch");
    let stats = &r.pipeline.stats()[1];
    assert_eq!(
        stats.notifications.load(Ordering::SeqCst),
        2,
        "INIT and the batch"
    );
});

mt_test!(one_notification_per_batch_with_event_idx, || {
    let mut r = rig(1, 0, true);
    r.init(1);
    let d = &mut r.drivers[1];
    d.notifications();
    // Notify me at the first completion: one notification for the batch.
    d.set_used_event(d.next_used);
    d.post_batch((0..16).map(|i| (GETATTR, 100 + i)));
    d.kick();
    d.wait_used(16);
    assert_eq!(
        d.notifications(),
        1,
        "used_event at the batch's first entry"
    );
    // Not before 20 more: the batch of 16 stays silent.
    d.set_used_event(d.next_used.wrapping_add(20));
    d.post_batch((0..16).map(|i| (GETATTR, 200 + i)));
    d.kick();
    d.wait_used(16);
    assert_eq!(d.notifications(), 0, "used_event beyond the batch");
    // At the batch's last entry: found inside the batch, one notification.
    d.set_used_event(d.next_used.wrapping_add(15));
    d.post_batch((0..16).map(|i| (GETATTR, 300 + i)));
    d.kick();
    d.wait_used(16);
    assert_eq!(d.notifications(), 1, "used_event at the batch's last entry");
});

mt_test!(
    a_waiting_driver_gets_the_first_completion_before_the_rest_run,
    || {
        let mut r = rig(1, 0, true);
        r.init(1);
        r.handler.delay_ms.store(50, Ordering::SeqCst);
        // One request alone first: the rule looks at the queue's recent service time, which
        // INIT alone may leave under EARLY_SERVICE_NS (it does in a release build).
        let d = &mut r.drivers[1];
        d.post_batch([(GETATTR, 499)]);
        d.kick();
        d.wait_used(1);
        let done = |r: &Rig| r.handler.handled.load(Ordering::SeqCst) - 2; // but INIT and 499
        let d = &mut r.drivers[1];
        // The driver took everything and asked to hear of the next completion (it waits),
        // with few requests out.
        d.set_used_event(d.next_used);
        d.post_batch((0..3).map(|i| (GETATTR, 500 + i)));
        d.kick();
        let first = d.wait_used(1);
        assert_eq!(first[0].reply.unique, 500);
        let now = done(&r);
        assert!(
            now < 3,
            "the first went back with the batch's end ({now} done)"
        );
        r.drivers[1].wait_used(2);
        assert_eq!(r.pipeline.stats()[1].early.load(Ordering::SeqCst), 1);

        // A driver still busy (it asked to hear only 20 completions on): the batch's end.
        let d = &mut r.drivers[1];
        d.set_used_event(d.next_used.wrapping_add(20));
        d.post_batch((0..3).map(|i| (GETATTR, 600 + i)));
        d.kick();
        d.wait_used(1);
        assert_eq!(done(&r), 3 + 3, "none went back before the batch's end");
        r.drivers[1].wait_used(2);

        // A waiting driver with many requests out (more than EARLY_MAX_OUT): the same.
        let d = &mut r.drivers[1];
        d.set_used_event(d.next_used);
        d.post_batch((0..6).map(|i| (GETATTR, 700 + i)));
        d.kick();
        d.wait_used(1);
        assert_eq!(done(&r), 3 + 3 + 6, "none went back before the batch's end");
        r.drivers[1].wait_used(5);
        assert_eq!(r.pipeline.stats()[1].early.load(Ordering::SeqCst), 1);
    }
);

/// Checks that `used` holds each of `heads` exactly once.
fn assert_each_once(used: &[Used], heads: &[u16]) {
    let mut ids: Vec<u32> = used.iter().map(|u| u.id).collect();
    ids.sort();
    let mut want: Vec<u32> = heads.iter().map(|&h| u32::from(h)).collect();
    want.sort();
    assert_eq!(ids, want, "every popped chain back exactly once");
}

/// The used index the device has published.
fn used_index(d: &Driver) -> u16 {
    d.mem.read_obj(GuestAddress(d.used_addr() + 2)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_popped_chains_not_started_with_eio() {
    let (r, heads) = tokio::task::spawn_blocking(|| {
        let mut r = rig(1, 0, false);
        r.init(1);
        r.handler.delay_ms.store(100, Ordering::SeqCst);
        let d = &mut r.drivers[1];
        d.holding = true;
        let heads: Vec<u16> = (0..10).map(|i| d.post(GETATTR, 100 + i)).collect();
        d.holding = false;
        d.publish();
        d.kick();
        r.wait_running(1);
        (r, heads)
    })
    .await
    .unwrap();
    let stats = r.pipeline.stats()[1].clone();
    r.pipeline.shutdown(Duration::from_secs(10)).await;
    let mut d = r.drivers.into_iter().nth(1).unwrap();
    let used = tokio::task::spawn_blocking(move || {
        let used = d.wait_used(10);
        assert_eq!(used_index(&d), 11, "nothing returned twice");
        used
    })
    .await
    .unwrap();
    assert_each_once(&used, &heads);
    assert!(used
        .iter()
        .all(|u| [0, -libc::EIO].contains(&u.reply.error)));
    let eio = used.iter().filter(|u| u.reply.error == -libc::EIO).count();
    assert!(eio >= 1, "the daemon stopped before serving them all");
    assert_eq!(r.handler.handled.load(Ordering::SeqCst), 1 + 10 - eio);
    assert_eq!(stats.completed(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_requests_and_lock_waits_come_back_when_the_pool_is_gone() {
    // The pool runs on a runtime of its own, shut down once the queue thread is running: a job
    // handed to it afterwards is dropped without running.
    let pool_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pool = pool_rt.handle().clone();
    let mut r = tokio::task::spawn_blocking(move || {
        let mut r = rig_with(1, 8, false, |q| q == 1, Some(pool));
        r.init(1);
        // Requests that block: worth a runner when others wait behind them.
        r.handler.delay_ms.store(20, Ordering::SeqCst);
        r.train(1, 2);
        r.handler.delay_ms.store(0, Ordering::SeqCst);
        r
    })
    .await
    .unwrap();
    pool_rt.shutdown_background();
    let (r, heads) = tokio::task::spawn_blocking(move || {
        // A SETLKW whose lock is held: it waits, and its retries go to the pool.
        r.handler.lock_held.store(true, Ordering::SeqCst);
        let d = &mut r.drivers[1];
        let mut heads = vec![d.post(SETLKW, 50)];
        d.kick();
        // Its first try ran (alone, so inline) before the others come.
        while r.handler.handled.load(Ordering::SeqCst) < 4 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let d = &mut r.drivers[1];
        // Five of these go to the pool (others wait behind them), the last runs inline.
        d.holding = true;
        heads.extend((0..6).map(|i| d.post(GETATTR, 100 + i)));
        d.holding = false;
        d.publish();
        d.kick();
        let used = d.wait_used(7);
        (r, heads, used)
    })
    .await
    .map(|(r, heads, used)| {
        assert_each_once(&used, &heads);
        let setlkw = used.iter().find(|u| u.id == u32::from(heads[0])).unwrap();
        assert_eq!(
            setlkw.reply.error,
            -libc::EINTR,
            "the lock wait was interrupted"
        );
        let eio = used.iter().filter(|u| u.reply.error == -libc::EIO).count();
        assert_eq!(eio, 5, "pooled jobs dropped by the pool are answered EIO");
        (r, heads)
    })
    .unwrap();
    assert_eq!(r.thread_of(105), "virtiofs-q1", "the last one, inline");
    let stats = r.pipeline.stats()[1].clone();
    r.pipeline.shutdown(Duration::from_secs(10)).await;
    let d = &r.drivers[1];
    assert_eq!(
        used_index(d),
        3 + heads.len() as u16,
        "nothing returned twice"
    );
    assert_eq!(stats.completed(), 10);
}
