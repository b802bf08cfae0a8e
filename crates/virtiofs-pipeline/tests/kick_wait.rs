//! Where a queue thread waits for the next kick: in poll(2) on the kick eventfd while its
//! queue task is alone there, on its tokio runtime (epoll) otherwise; and what wakes it from
//! poll(2): a kick, the stop, a changed ring, a queue joining the thread, a SETLKW wait started
//! by a pool runner. One test in this file: it finds the queue thread by name among the
//! process's threads.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use vhost_user_backend::VringT;
use virtiofs_pipeline::PipelineConfig;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The system calls a thread waiting in poll(2) can be in (glibc's `poll` may use either).
fn poll_calls() -> Vec<i64> {
    #[cfg(target_arch = "x86_64")]
    return vec![libc::SYS_poll, libc::SYS_ppoll];
    #[cfg(not(target_arch = "x86_64"))]
    return vec![libc::SYS_ppoll];
}

/// The system calls of a thread waiting on its tokio runtime.
fn epoll_calls() -> Vec<i64> {
    #[cfg(target_arch = "x86_64")]
    return vec![
        libc::SYS_epoll_wait,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
    ];
    #[cfg(not(target_arch = "x86_64"))]
    return vec![libc::SYS_epoll_pwait, libc::SYS_epoll_pwait2];
}

/// The system call this process's thread `name` is blocked in, if it is blocked in one.
fn blocked_in(name: &str) -> Option<i64> {
    let call = std::fs::read_to_string(thread_dir(name)?.join("syscall")).ok()?;
    call.split_whitespace().next()?.parse().ok()
}

/// Waits (up to 10 s) until thread `name` sits in one of `calls`; panics with what it was in.
fn wait_blocked_in(name: &str, calls: &[i64], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = blocked_in(name);
        if now.is_some_and(|n| calls.contains(&n)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never waited {what}: last seen in system call {now:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn getattr(r: &mut Rig, queue: usize, unique: u64) {
    let d = &mut r.drivers[queue];
    d.post(GETATTR, unique);
    d.kick();
    assert_eq!(d.wait_used(1)[0].reply.error, 0, "request {unique}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_waits_in_poll_while_alone_on_its_thread() {
    // One request queue, its own thread: it waits in poll(2), and what must reach it does.
    let r = tokio::task::spawn_blocking(|| {
        let mut r = rig(1, 0, true);
        r.init(1);
        getattr(&mut r, 1, 10);
        wait_blocked_in("virtiofs-q1", &poll_calls(), "in poll(2)");
        // A kick wakes it.
        getattr(&mut r, 1, 11);
        wait_blocked_in("virtiofs-q1", &poll_calls(), "in poll(2) again");
        // The frontend gives the ring a new kick eventfd (SET_VRING_KICK): the change must
        // wake the task blocked on the old one, or kicks on the new one are never seen.
        let new = EventFd::new(EFD_NONBLOCK).unwrap();
        r.vrings[1].set_kick(Some(eventfd_file(&new)));
        r.drivers[1].kick = new;
        getattr(&mut r, 1, 12);
        wait_blocked_in(
            "virtiofs-q1",
            &poll_calls(),
            "in poll(2) on the new eventfd",
        );
        r
    })
    .await
    .unwrap();
    // The stop wakes it too: the thread ends (shutdown returns once it let go of the pipeline,
    // a moment before the OS thread is gone).
    r.pipeline.shutdown(Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !threads_named("virtiofs-q").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the queue thread did not see the stop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Two request queues on one thread; the second starts while the first waits in poll(2).
    let config = PipelineConfig {
        thread_pool_size: 0,
        queue_threads: 1,
        ..Default::default()
    };
    let r = tokio::task::spawn_blocking(move || {
        let mut r = rig_config(2, config, true, |q| q != 2, None);
        r.init(1);
        getattr(&mut r, 1, 20);
        wait_blocked_in("virtiofs-q1", &poll_calls(), "in poll(2), alone");
        r.drivers[2].start(&r.vrings[2], true);
        // Its task runs on the same thread: the blocked one must make way for it.
        getattr(&mut r, 2, 21);
        getattr(&mut r, 1, 22);
        assert_eq!(r.thread_of(21), "virtiofs-q1");
        // Sharing the thread, both wait on the runtime.
        wait_blocked_in("virtiofs-q1", &epoll_calls(), "on its runtime, shared");
        getattr(&mut r, 2, 23);
        r
    })
    .await
    .unwrap();
    r.pipeline.shutdown(Duration::from_secs(10)).await;

    // A SETLKW whose lock is held, its retry on a pool runner while the queue thread waits in
    // poll(2): when the retry finds the lock still held, the runner starts the next wait on the
    // queue thread's runtime, which must wake for it (or the SETLKW is never answered).
    let r = tokio::task::spawn_blocking(|| {
        let mut r = rig(1, 8, true);
        r.init(1);
        r.handler.lock_held.store(true, Ordering::SeqCst);
        r.handler.hold_pooled_setlkw.store(true, Ordering::SeqCst);
        let d = &mut r.drivers[1];
        let setlkw = d.post(SETLKW, 30);
        d.kick();
        // Its first try ran inline; the retry waits on a runner.
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.handler.running_pooled.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "the retry never reached the pool"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        getattr(&mut r, 1, 31);
        wait_blocked_in("virtiofs-q1", &poll_calls(), "in poll(2), the retry pooled");
        let handled = r.handler.handled.load(Ordering::SeqCst);
        r.handler.hold_pooled_setlkw.store(false, Ordering::SeqCst);
        // The retry answers EAGAIN (still held): a new wait begins. Then the lock is free.
        while r.handler.handled.load(Ordering::SeqCst) == handled {
            std::thread::sleep(Duration::from_millis(1));
        }
        r.handler.lock_held.store(false, Ordering::SeqCst);
        let used = r.drivers[1].wait_used(1);
        assert_eq!((used[0].id, used[0].reply.error), (u32::from(setlkw), 0));
        r
    })
    .await
    .unwrap();
    r.pipeline.shutdown(Duration::from_secs(10)).await;
}
