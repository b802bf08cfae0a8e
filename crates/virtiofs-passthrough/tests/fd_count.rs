//! What the guest makes the daemon hold: with `--inode-file-handles=prefer|mandatory` a node is
//! a file handle and holds no descriptor (only its mount's one, shared), so thousands of nodes
//! leave the daemon's descriptor count flat and do not count against the fd quota; open files
//! still do. With `never`, every node is an O_PATH descriptor.
//!
//! One test, alone in its binary: descriptors are counted for the whole process.

mod common;

use common::{fds_held, Fs, Mounted, ROOT_ID};
use virtiofs_fuse::Errno;
use virtiofs_passthrough::FdQuota;
use virtiofs_passthrough::InodeFileHandles::{Mandatory, Never, Prefer};

const NODES: usize = 3000;

#[test]
fn descriptors_held_for_nodes_in_each_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path();
    std::fs::create_dir(share.join("many")).unwrap();
    for i in 0..NODES {
        std::fs::write(share.join(format!("many/f{i}")), b"x").unwrap();
    }

    for mode in [Never, Prefer, Mandatory] {
        let fs = Fs::new(share, mode);
        let before = fds_held();
        let dir = fs.lookup(ROOT_ID, "many").unwrap();
        let nodes: Vec<u64> = (0..NODES)
            .map(|i| fs.lookup(dir.nodeid, &format!("f{i}")).unwrap().nodeid)
            .collect();
        let after_lookups = fds_held() - before;
        // READDIRPLUS counts one more lookup of each.
        let listed = fs.readdirplus(dir.nodeid).unwrap();
        assert_eq!(listed.iter().filter(|p| p.nodeid != 0).count(), NODES);
        let after_listing = fds_held() - before;
        // Open files hold their descriptors whatever the mode.
        let open: Vec<u64> = nodes[..10]
            .iter()
            .map(|&n| fs.open(n, libc::O_RDONLY).unwrap())
            .collect();
        let with_open_files = fds_held() - before;
        eprintln!(
            "{mode:?}: {} nodes: {after_lookups} descriptors held; after READDIRPLUS \
             {after_listing}; with 10 files open {with_open_files}",
            NODES + 1
        );
        match mode {
            Never => assert!(after_lookups > NODES, "{after_lookups}"),
            // The mount's descriptor, nothing per node.
            _ => {
                assert!(after_lookups <= 2, "{mode:?}: {after_lookups}");
                assert_eq!(after_listing, after_lookups, "{mode:?}");
            }
        }
        assert_eq!(with_open_files, after_listing + 10, "{mode:?}");
        for (&n, fh) in nodes.iter().zip(open) {
            fs.release(n, fh);
        }
        for &n in &nodes {
            fs.forget(n, 2);
        }
        fs.forget(dir.nodeid, 1);
        assert_eq!(
            fds_held(),
            before,
            "{mode:?}: everything forgotten is closed"
        );
    }

    // The fd quota: room for 50 more descriptors. O_PATH nodes use it up; handle nodes do not,
    // open files still do.
    for mode in [Never, Prefer] {
        let mut fs = Fs::new(share, mode);
        fs.fs_mut().set_fd_quota(quota_with_room_for(50));
        let dir = fs.lookup(ROOT_ID, "many").unwrap();
        let looked_up: Vec<_> = (0..NODES)
            .map(|i| fs.lookup(dir.nodeid, &format!("f{i}")))
            .collect();
        let refused = looked_up.iter().filter(|r| r.is_err()).count();
        let mut opened = 0;
        let mut open_error = None;
        for r in looked_up.iter().flatten() {
            match fs.open(r.nodeid, libc::O_RDONLY) {
                Ok(_) => opened += 1,
                Err(e) => {
                    open_error = Some(e);
                    break;
                }
            }
        }
        eprintln!("{mode:?} with a quota of 50 more: {refused} lookups refused, {opened} opens");
        match mode {
            Never => {
                // The directory's node takes one of the 50.
                assert_eq!(refused, NODES - 49, "{mode:?}: refused");
            }
            _ => assert_eq!(refused, 0, "{mode:?}: handle nodes count against the quota"),
        }
        assert_eq!(open_error, Some(Errno(libc::EMFILE)), "{mode:?}");
        if mode == Prefer {
            // The mount's descriptor (for the handles) takes one of the 50.
            assert_eq!(opened, 49, "files opened");
        }
    }

    // READDIRPLUS that runs out of quota mid-listing: the entries that got descriptors are
    // sent, then EMFILE; never a listing that silently ends early.
    let mut fs = Fs::new(share, Never);
    let dir = fs.lookup(ROOT_ID, "many").unwrap();
    // Room for the directory's own descriptor and 20 nodes.
    fs.fs_mut().set_fd_quota(quota_with_room_for(21));
    let mut pages = Vec::new();
    let error = fs.readdirplus_pages(dir.nodeid, &mut pages).unwrap_err();
    assert_eq!(error, Errno(libc::EMFILE));
    let got: usize = pages
        .iter()
        .map(|p| p.iter().filter(|e| e.nodeid != 0).count())
        .sum();
    assert_eq!(got, 20, "entries before EMFILE");

    // READDIRPLUS of files the guest knows opens none of them (a statx finds the node): with
    // no descriptor left in the quota, a listing of known files is whole and counts each once
    // more; a file the guest does not know still needs a descriptor.
    std::fs::create_dir(share.join("known")).unwrap();
    for i in 0..30 {
        std::fs::write(share.join(format!("known/k{i}")), b"x").unwrap();
    }
    let mut fs = Fs::new(share, Never);
    let dir = fs.lookup(ROOT_ID, "known").unwrap();
    let mut nodes: Vec<u64> = (0..30)
        .map(|i| fs.lookup(dir.nodeid, &format!("k{i}")).unwrap().nodeid)
        .collect();
    // Room for the open directory's descriptor only.
    fs.fs_mut().set_fd_quota(quota_with_room_for(1));
    let listed = fs.readdirplus(dir.nodeid).unwrap();
    let mut ids: Vec<u64> = listed
        .iter()
        .map(|p| p.nodeid)
        .filter(|&n| n != 0)
        .collect();
    ids.sort_unstable();
    nodes.sort_unstable();
    assert_eq!(ids, nodes, "every known file listed, as its node");
    for &n in &nodes {
        fs.forget(n, 1);
        assert!(
            fs.getattr(n).is_ok(),
            "node {n}: the listing counted a lookup"
        );
    }
    std::fs::write(share.join("known/new"), b"x").unwrap();
    assert_eq!(
        fs.readdirplus(dir.nodeid).unwrap_err(),
        Errno(libc::EMFILE),
        "an unknown file needs a descriptor"
    );
    for &n in &nodes {
        fs.forget(n, 2);
        assert_eq!(fs.getattr(n).unwrap_err(), Errno(libc::EBADF), "node {n}");
    }

    // LOOKUP of a file the guest knows opens nothing either: with no room left in the quota
    // it finds the same node; a file it does not know still needs a descriptor.
    let mut fs = Fs::new(share, Never);
    let dir = fs.lookup(ROOT_ID, "known").unwrap();
    let nodes: Vec<u64> = (0..30)
        .map(|i| fs.lookup(dir.nodeid, &format!("k{i}")).unwrap().nodeid)
        .collect();
    fs.fs_mut().set_fd_quota(quota_with_room_for(0));
    for (i, &n) in nodes.iter().enumerate() {
        assert_eq!(fs.lookup(dir.nodeid, &format!("k{i}")).unwrap().nodeid, n);
    }
    assert_eq!(
        fs.lookup(dir.nodeid, "new").unwrap_err(),
        Errno(libc::EMFILE),
        "an unknown file needs a descriptor"
    );

    // Per filesystem: a ramfs (no handles) mounted in the share gets O_PATH nodes with `prefer`.
    let Some(_ramfs) = Mounted::new("ramfs", &share.join("ramfs")) else {
        eprintln!("SKIP the ramfs part: cannot mount (needs root)");
        return;
    };
    for i in 0..100 {
        std::fs::write(share.join(format!("ramfs/r{i}")), b"in ram").unwrap();
    }
    let fs = Fs::new(share, Prefer);
    let before = fds_held();
    let dir = fs.lookup(ROOT_ID, "many").unwrap();
    for i in 0..100 {
        fs.lookup(dir.nodeid, &format!("f{i}")).unwrap();
    }
    let on_disk = fds_held() - before;
    let ram = fs.lookup(ROOT_ID, "ramfs").unwrap();
    for i in 0..100 {
        fs.lookup(ram.nodeid, &format!("r{i}")).unwrap();
    }
    let in_ram = fds_held() - before - on_disk;
    eprintln!("Prefer: 101 nodes on disk hold {on_disk} descriptors, 101 in a ramfs {in_ram}");
    assert!(on_disk <= 2, "{on_disk}");
    assert_eq!(in_ram, 101);
}

/// An fd quota that admits exactly `room` more descriptors after its own probe, wherever the
/// free numbers are: the quota compares descriptor numbers (the lowest free one is what the
/// next open gets), and a process can inherit descriptors far above its others (the shell
/// this runs under may; CI's does not), so a count of open descriptors is no limit.
fn quota_with_room_for(room: usize) -> FdQuota {
    // The numbers the next room + 1 opens get (the probe's first), in that order.
    let taken: Vec<std::fs::File> = (0..=room)
        .map(|_| std::fs::File::open("/dev/null").unwrap())
        .collect();
    let last = std::os::fd::AsRawFd::as_raw_fd(taken.last().unwrap());
    drop(taken);
    FdQuota::new(last as u64 + 1).unwrap()
}
