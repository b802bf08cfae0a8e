//! `IoEngine::IoUring`: a deferred READ is a READV in the queue thread's io_uring. Here it
//! reads from a pipe, so it stays in the ring until the test writes: DESTROY, stopping the
//! ring and shutdown must each wait for it, and its chain goes back exactly once, after its
//! CQE, with what the kernel read.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use vhost_user_backend::VringT;
use virtiofs_pipeline::uring::IoEngine;
use virtiofs_pipeline::PipelineConfig;
use vm_memory::{Bytes, GuestAddress};

/// One request queue on io_uring, `pool` permits, after INIT; READs read from a new pipe,
/// whose write end is returned.
fn uring_rig(pool: usize) -> (Rig, OwnedFd) {
    uring_rig_polling(pool, Duration::ZERO)
}

/// [`uring_rig`] with `--poll-us` at `poll_max`.
fn uring_rig_polling(pool: usize, poll_max: Duration) -> (Rig, OwnedFd) {
    let config = PipelineConfig {
        thread_pool_size: pool,
        io_engine: IoEngine::IoUring,
        poll_max,
        ..Default::default()
    };
    let mut r = rig_config(1, config, true, |_| true, None);
    r.init(1);
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two descriptors, which we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    *r.handler.read_from.lock().unwrap() = Some(Arc::new(rd));
    (r, wr)
}

fn write_pipe(fd: &OwnedFd, data: &[u8]) {
    use std::os::fd::AsRawFd;
    // SAFETY: writes `data` to a pipe we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
    assert_eq!(n, data.len() as isize);
}

/// Waits until `n` READs are in the ring.
fn wait_deferred(r: &Rig, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.handler.deferred.load(Ordering::SeqCst) < n {
        assert!(
            Instant::now() < deadline,
            "{n} READs never reached the ring"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Chains the device has put on the used ring so far.
fn used_index(d: &Driver) -> u16 {
    d.mem.read_obj(GuestAddress(d.used_addr() + 2)).unwrap()
}

/// The data after the reply header of the chain whose head is `id`.
fn reply_data(d: &Driver, id: u32, len: usize) -> Vec<u8> {
    let at = d.buf_addr((id as u16 + 1) % QUEUE_SIZE) + 16;
    let mut buf = vec![0; len];
    d.mem.read_slice(&mut buf, GuestAddress(at)).unwrap();
    buf
}

mt_test!(destroy_waits_for_a_read_in_the_ring, || {
    let (mut r, wr) = uring_rig(4);
    let d = &mut r.drivers[1];
    d.post(READ, 10);
    d.kick();
    wait_deferred(&r, 1);
    let d = &mut r.drivers[1];
    d.post(DESTROY, 11);
    d.post(GETATTR, 12); // after DESTROY: no session
    d.kick();
    std::thread::sleep(Duration::from_millis(300));
    let d = &mut r.drivers[1];
    assert_eq!(
        used_index(d),
        d.next_used,
        "nothing answered while the READ is in the ring"
    );
    assert!(
        !r.handler.log.lock().unwrap().iter().any(|e| e.0 == DESTROY),
        "DESTROY ran with a READ in the ring"
    );
    write_pipe(&wr, b"hello");
    let used = r.drivers[1].wait_used(3);
    assert_eq!(used[0].reply.unique, 10, "the READ first: {used:?}");
    assert_eq!((used[0].len, used[0].reply.error), (21, 0));
    assert_eq!(reply_data(&r.drivers[1], used[0].id, 5), b"hello");
    let destroy = used.iter().find(|u| u.reply.unique == 11).unwrap();
    assert_eq!(destroy.reply.error, 0);
    let after = used.iter().find(|u| u.reply.unique == 12).unwrap();
    assert_eq!(after.reply.error, -libc::EIO);
    // Exactly once: nothing more comes back.
    std::thread::sleep(Duration::from_millis(100));
    let d = &r.drivers[1];
    assert_eq!(used_index(d), d.next_used);
    assert_eq!(
        r.handler.finished.lock().unwrap().as_slice(),
        &[(10, Ok(5))]
    );
    assert_eq!(r.pipeline.stats()[1].uring.load(Ordering::SeqCst), 1);
});

mt_test!(a_polling_queue_does_not_hold_a_read_behind_its_spin, || {
    // A window far longer than a READ from a ready pipe takes: quick requests one at a time
    // grow the window to it.
    let window = Duration::from_secs(4);
    let (mut r, wr) = uring_rig_polling(0, window);
    r.train(1, 30);
    let d = &mut r.drivers[1];
    d.post(READ, 30);
    d.kick();
    wait_deferred(&r, 1);
    // The READ is in the io_uring and the ring is empty: a spin on the avail ring would not
    // see its completion until the window ends.
    let written = Instant::now();
    write_pipe(&wr, b"xy");
    let used = r.drivers[1].wait_used(1);
    assert_eq!((used[0].reply.unique, used[0].len), (30, 18));
    let took = written.elapsed();
    assert!(
        took < window / 2,
        "the READ came back {took:?} after its data: held behind a {window:?} poll window"
    );
    // The window was open: the queue polled between the training requests.
    assert!(r.pipeline.stats()[1].polls.load(Ordering::Relaxed) > 0);
});

mt_test!(stopping_the_ring_waits_for_reads_in_the_ring, || {
    let (mut r, wr) = uring_rig(0);
    let d = &mut r.drivers[1];
    for i in 0..3 {
        d.post(READ, 20 + i);
    }
    d.kick();
    wait_deferred(&r, 3);
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        // Pipe reads take what is there: 3 READs of 2 bytes each.
        for part in [b"ab", b"cd", b"ef"] {
            write_pipe(&wr, part);
            std::thread::sleep(Duration::from_millis(50));
        }
        wr
    });
    // What GET_VRING_BASE does: it returns only once every request is back.
    r.vrings[1].set_queue_ready(false);
    assert_eq!(
        r.pipeline.stats()[1].completed(),
        4,
        "ring stopped with READs still in the io_uring"
    );
    let _wr = writer.join().unwrap();
    let used = r.drivers[1].wait_used(3);
    let mut data: Vec<u8> = used
        .iter()
        .inspect(|u| assert_eq!((u.len, u.reply.error), (18, 0)))
        .flat_map(|u| reply_data(&r.drivers[1], u.id, 2))
        .collect();
    data.sort();
    assert_eq!(data, b"abcdef");
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_the_ring() {
    let (r, wr) = tokio::task::spawn_blocking(|| {
        let (mut r, wr) = uring_rig(4);
        r.drivers[1].post(READ, 30);
        r.drivers[1].kick();
        wait_deferred(&r, 1);
        (r, wr)
    })
    .await
    .unwrap();
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        write_pipe(&wr, b"late");
    });
    let stats = r.pipeline.stats()[1].clone();
    r.pipeline.shutdown(Duration::from_secs(10)).await;
    writer.join().unwrap();
    assert_eq!(
        r.handler.finished.lock().unwrap().as_slice(),
        &[(30, Ok(4))],
        "the READ completed before the queue thread let go of the ring"
    );
    assert_eq!(stats.completed(), 2, "INIT and the READ, each once");
}
