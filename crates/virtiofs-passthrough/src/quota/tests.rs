use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::*;

fn blocks_of(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().blocks() * 512
}

fn open_dir(path: &std::path::Path) -> OwnedFd {
    OwnedFd::from(File::open(path).unwrap())
}

#[test]
fn no_limits_is_no_quota() {
    assert!(Quota::new(None, None).is_none());
    assert!(Quota::new(Some(1), None).is_some());
    assert!(Quota::new(None, Some(1)).is_some());
}

#[test]
fn inodes_are_taken_up_to_the_limit_and_given_back_unless_kept() {
    let q = Quota::new(Some(2), None).unwrap();
    q.take_inode().unwrap().keep();
    {
        let _failed = q.take_inode().unwrap(); // the call it was taken for failed: dropped
    }
    assert_eq!(q.usage().inodes, 1);
    q.take_inode().unwrap().keep();
    assert_eq!(q.take_inode().err(), Some(EDQUOT));
    q.free(1, 0);
    q.take_inode().unwrap().keep();
    assert_eq!(q.usage().inodes, 2);
    // Freeing what was never counted does not wrap.
    q.free(10, 10);
    assert_eq!(q.usage(), Usage::default());
}

#[test]
fn parallel_takers_never_pass_the_limit() {
    let q = Arc::new(Quota::new(Some(500), Some(5000)).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                let mut got = (0, 0);
                for _ in 0..1000 {
                    if let Ok(c) = q.take_inode() {
                        c.keep();
                        got.0 += 1;
                    }
                    if q.reserve(7) {
                        got.1 += 7;
                    }
                }
                got
            })
        })
        .collect();
    let got = threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(got, (500, 4998), "exactly what fits, in 7-byte steps");
    assert_eq!(q.usage().inodes, 500);
    assert_eq!(q.usage().bytes, 4998);
}

#[test]
fn spans_are_whole_blocks_and_fitting_prefixes_fit() {
    assert_eq!(span(0, 0, 4096), 0);
    assert_eq!(span(0, 1, 4096), 4096);
    assert_eq!(span(4095, 2, 4096), 8192);
    assert_eq!(span(4096, 4096, 4096), 4096);
    assert_eq!(span(100, 10_000, 4096), 12_288);
    assert!(span(u64::MAX - 10, 100, 4096) > 0, "no overflow");
    // Room for 2 blocks from offset 100: up to 8192.
    assert_eq!(fitting(100, 10_000, 8192, 4096), 8092);
    assert_eq!(span(100, fitting(100, 10_000, 8192, 4096), 4096), 8192);
    // Less than a block of room: nothing fits.
    assert_eq!(fitting(0, 10, 4095, 4096), 0);
    // All fits: the whole length.
    assert_eq!(fitting(0, 10, 1 << 20, 4096), 10);
}

#[test]
fn statfs_reports_the_quota_within_what_the_host_has() {
    let q = Quota::new(Some(100), Some(1 << 20)).unwrap();
    q.set_usage(Usage {
        inodes: 30,
        bytes: 256 << 10,
    });
    let mut st = Kstatfs {
        blocks: 1_000_000,
        bfree: 500_000,
        bavail: 400_000,
        files: 1_000_000,
        ffree: 900_000,
        bsize: 4096,
        frsize: 4096,
        ..Default::default()
    };
    q.statfs(&mut st);
    assert_eq!((st.blocks, st.bfree, st.bavail), (256, 192, 192));
    assert_eq!((st.files, st.ffree), (100, 70));
    // A host with less than the quota wins; one without an inode count leaves the quota.
    let mut st = Kstatfs {
        blocks: 1_000_000,
        bfree: 10,
        bavail: 5,
        files: 0,
        ffree: 0,
        bsize: 4096,
        frsize: 4096,
        ..Default::default()
    };
    q.statfs(&mut st);
    assert_eq!((st.blocks, st.bfree, st.bavail), (256, 10, 5));
    assert_eq!((st.files, st.ffree), (100, 70));
}

#[test]
fn growth_counts_what_the_file_really_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let q = Quota::new(None, Some(1 << 30)).unwrap();
    {
        let mut g = q.measure_file(7, file.as_fd()).unwrap();
        assert!(g.reserve(span(0, 100_000, g.blksize)));
        file.write_all_at(&[1u8; 100_000], 0).unwrap();
        // A sparse write far away allocates a block or so, not the megabyte of hole.
        file.write_all_at(&[1u8; 10], 1 << 20).unwrap();
    }
    assert_eq!(
        q.usage().bytes,
        blocks_of(&path),
        "no reservation left over"
    );
    assert!(q.usage().bytes < 200_000);
    {
        let _g = q.measure_file(7, file.as_fd()).unwrap();
        file.set_len(0).unwrap();
    }
    assert_eq!(q.usage().bytes, 0, "truncation gives the blocks back");
}

#[test]
fn growth_sees_a_truncation_past_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let file = File::create(tmp.path().join("f")).unwrap();
    let q = Quota::new(None, Some(4096)).unwrap();
    let g = q.measure_file(1, file.as_fd()).unwrap();
    file.set_len(1 << 30).unwrap(); // sparse: allocates nothing
    assert!(!g.over_limit());
    (&file).write_all(&[1u8; 8192]).unwrap();
    assert!(g.over_limit(), "8 KiB allocated over a 4 KiB quota");
}

#[test]
fn measuring_counts_every_inode_once_and_regular_files_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::write(root.join("a/one"), vec![1u8; 10_000]).unwrap();
    std::fs::write(root.join("a/b/c/two"), vec![2u8; 50_000]).unwrap();
    std::fs::hard_link(root.join("a/one"), root.join("a/b/one-again")).unwrap();
    std::os::unix::fs::symlink("one", root.join("a/link")).unwrap();
    let sparse = File::create(root.join("sparse")).unwrap();
    sparse.set_len(1 << 30).unwrap();
    let bytes = blocks_of(&root.join("a/one"))
        + blocks_of(&root.join("a/b/c/two"))
        + blocks_of(&root.join("sparse"));
    let usage = measure(open_dir(root), false).unwrap();
    // a, a/b, a/b/c, one (two links), two, link, sparse.
    assert_eq!(usage.inodes, 7);
    assert_eq!(usage.bytes, bytes);
    assert!(usage.bytes < 1 << 20, "a hole is not counted");
}

#[test]
fn measuring_counts_special_files() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("f"), b"x").unwrap();
    let fifo = std::ffi::CString::new(
        tmp.path()
            .join("fifo")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let usage = measure(open_dir(tmp.path()), false).unwrap();
    assert_eq!(usage.inodes, 3, "sub, sub/f, fifo");
}
