//! `--inode-file-handles=mandatory` under the host kernel's FUSE client: a file the guest has
//! looked up is deleted on the host and its inode number given to a new file; the guest reads the
//! new file, never the old node (which nothing keeps alive with handles). And a tree of thousands
//! of files the kernel keeps looked up costs the daemon no descriptor per file.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::{Kind, Mounted};

fn mandatory() -> Mounted {
    Mounted::start_with(Kind::Ours, &[], &["--inode-file-handles=mandatory"], &[])
        .expect("async-virtiofsd must be built for these tests")
}

/// The descriptors of the process serving `m` (the sandbox supervisor's child).
fn daemon_fds(m: &Mounted) -> usize {
    let pid = m.backend.pid().unwrap();
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let served = children.split_whitespace().next().unwrap_or_else(|| {
        panic!("no sandboxed child of {pid}");
    });
    fs::read_dir(format!("/proc/{served}/fd")).unwrap().count()
}

#[test]
fn a_reused_inode_number_reads_the_new_file() {
    let m = mandatory();
    let share = m.backend.share.clone();
    fs::write(share.join("old"), b"old data").unwrap();
    // The guest kernel looks it up and keeps the node (its dentry is cached).
    let old_ino = fs::metadata(m.mnt.join("old")).unwrap().ino();
    assert_eq!(old_ino, fs::metadata(share.join("old")).unwrap().ino());

    fs::remove_file(share.join("old")).unwrap();
    let reused = (0..200).find(|i| {
        let p = share.join(format!("new{i}"));
        fs::write(&p, format!("new data {i}")).unwrap();
        p.metadata().unwrap().ino() == old_ino
    });
    let Some(i) = reused else {
        eprintln!("SKIP: this filesystem did not reuse inode {old_ino}");
        return;
    };
    let name = format!("new{i}");
    assert_eq!(fs::metadata(m.mnt.join(&name)).unwrap().ino(), old_ino);
    assert_eq!(
        fs::read_to_string(m.mnt.join(&name)).unwrap(),
        format!("new data {i}")
    );
    fs::write(m.mnt.join(&name), b"written by the guest").unwrap();
    assert_eq!(
        fs::read(share.join(&name)).unwrap(),
        b"written by the guest"
    );
    assert!(m
        .backend
        .log
        .text()
        .lines()
        .all(|l| !l.contains("panicked")));
}

#[test]
fn thousands_of_files_looked_up_hold_no_descriptor_each() {
    let m = mandatory();
    let share = m.backend.share.clone();
    fs::create_dir(share.join("tree")).unwrap();
    for d in 0..20 {
        fs::create_dir(share.join(format!("tree/d{d}"))).unwrap();
        for f in 0..100 {
            fs::write(share.join(format!("tree/d{d}/f{f}")), b"x").unwrap();
        }
    }
    let before = daemon_fds(&m);
    // A walk: READDIRPLUS and LOOKUP of 2020 names, which the kernel keeps (no FORGET yet).
    let mut files = 0;
    for d in fs::read_dir(m.mnt.join("tree")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            assert_eq!(f.unwrap().metadata().unwrap().len(), 1);
            files += 1;
        }
    }
    assert_eq!(files, 2000);
    let after = daemon_fds(&m);
    eprintln!(
        "2021 nodes looked up by the kernel: the daemon holds {before} descriptors, then {after}"
    );
    assert!(after <= before + 4, "{before} -> {after}");
}
