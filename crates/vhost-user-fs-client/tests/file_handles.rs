//! `--inode-file-handles` in the real daemon, as a guest sees it: with `mandatory` (root, the
//! namespace sandbox and the seccomp filter, the defaults) it serves every kind of request, the
//! serving process keeps CAP_DAC_READ_SEARCH, and thousands of nodes the guest holds leave its
//! descriptor count flat (with `never` each one is a descriptor); a host inode number used again
//! never brings back the old node.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::os::unix::fs::MetadataExt;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{Errno, FsClient, FuseOps};

const NODES: usize = 3000;
/// The capability's bit in /proc/PID/status's masks.
const CAP_DAC_READ_SEARCH: u64 = 1 << 2;
const CREATE_EXCL: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;

/// The process that serves the guest: the namespace supervisor's only child.
fn served_pid(d: &Daemon) -> u32 {
    let pid = d.pid();
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap()
        .split_whitespace()
        .next()
        .expect("a sandboxed child")
        .parse()
        .unwrap()
}

fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

/// Every READDIRPLUS record of directory `nodeid`: (name, node id).
fn list_plus(c: &FsClient, nodeid: u64) -> Vec<(String, u64)> {
    let fh = c.opendir(nodeid, 0).unwrap().fh;
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let batch = c.readdirplus(nodeid, fh, offset, 64 * 1024).unwrap();
        let Some(last) = batch.last() else { break };
        offset = last.dirent.off;
        all.extend(
            batch
                .into_iter()
                .map(|p| (String::from_utf8(p.dirent.name).unwrap(), p.entry.nodeid)),
        );
    }
    c.releasedir(nodeid, fh).unwrap();
    all
}

#[test]
fn mandatory_serves_and_holds_no_descriptor_per_node() {
    let mut held = Vec::new();
    for mode in ["never", "mandatory"] {
        let mut d = Daemon::start(&[&format!("--inode-file-handles={mode}")]);
        std::fs::create_dir(d.share.join("d")).unwrap();
        for i in 0..NODES {
            std::fs::write(d.share.join(format!("d/f{i}")), format!("file {i}")).unwrap();
        }
        let c = d.connect(d.config());
        c.init().unwrap();
        let pid = served_pid(&d);
        let dac_read_search = effective_caps(pid) & CAP_DAC_READ_SEARCH != 0;
        assert_eq!(dac_read_search, mode == "mandatory", "{mode}");
        let before = fds_of(pid);

        let dir = c.lookup(ROOT_ID, "d").unwrap();
        let nodes: Vec<u64> = (0..NODES)
            .map(|i| c.lookup(dir.nodeid, format!("f{i}")).unwrap().nodeid)
            .collect();
        let listed = list_plus(&c, dir.nodeid);
        assert_eq!(listed.iter().filter(|(_, n)| *n != 0).count(), NODES);
        for (name, nodeid) in listed.iter().filter(|(_, n)| *n != 0) {
            let i: usize = name[1..].parse().unwrap();
            assert_eq!(*nodeid, nodes[i], "{mode}: READDIRPLUS and LOOKUP agree");
        }
        let after = fds_of(pid);
        eprintln!(
            "{mode}: the guest holds {} nodes; the daemon holds {before} descriptors before, \
             {after} after",
            NODES + 1
        );
        held.push((mode, after - before));

        // Every kind of request on those nodes.
        let f = nodes[7];
        assert_eq!(c.getattr(f, None).unwrap().attr.size, 6);
        let o = c.open(f, libc::O_RDWR as u32).unwrap();
        assert_eq!(c.read(f, o.fh, 0, 64).unwrap(), b"file 7");
        c.write(f, o.fh, 0, b"FILE").unwrap();
        assert_eq!(c.getattr(f, Some(o.fh)).unwrap().attr.size, 6);
        c.release(f, o.fh, libc::O_RDWR as u32).unwrap();
        assert_eq!(std::fs::read(d.share.join("d/f7")).unwrap(), b"FILE 7");
        let (e, o) = c
            .create(dir.nodeid, "new", CREATE_EXCL, libc::S_IFREG | 0o644, 0)
            .unwrap();
        c.write(e.nodeid, o.fh, 0, b"guest").unwrap();
        c.release(e.nodeid, o.fh, 0).unwrap();
        c.rename(dir.nodeid, "new", ROOT_ID, "moved").unwrap();
        assert_eq!(c.lookup(ROOT_ID, "moved").unwrap().nodeid, e.nodeid);
        let l = c.link(e.nodeid, dir.nodeid, "again").unwrap();
        assert_eq!((l.nodeid, l.attr.nlink), (e.nodeid, 2));
        c.unlink(ROOT_ID, "moved").unwrap();
        assert_eq!(std::fs::read(d.share.join("d/again")).unwrap(), b"guest");
        assert_eq!(errno(c.lookup(ROOT_ID, "moved")), Errno::ENOENT);

        // The host deletes a file the guest still knows; its inode number comes back.
        let old = c.lookup(dir.nodeid, "f9").unwrap();
        std::fs::remove_file(d.share.join("d/f9")).unwrap();
        let reused = (0..200).find(|i| {
            let p = d.share.join(format!("d/n{i}"));
            std::fs::write(&p, b"new").unwrap();
            p.metadata().unwrap().ino() == old.attr.ino
        });
        if let Some(i) = reused {
            let new = c.lookup(dir.nodeid, format!("n{i}")).unwrap();
            assert_eq!(new.attr.ino, old.attr.ino);
            if mode == "mandatory" {
                assert_ne!(new.nodeid, old.nodeid, "the stale node was handed out");
                assert_eq!(errno(c.getattr(old.nodeid, None)), Errno(libc::ESTALE));
            }
            assert_eq!(c.getattr(new.nodeid, None).unwrap().attr.size, 3);
        } else if mode == "mandatory" {
            eprintln!("SKIP the inode reuse part: this filesystem did not reuse the number");
        }
        d.assert_alive(mode);
    }
    let (never, mandatory) = (held[0].1, held[1].1);
    assert!(
        never > NODES,
        "never: {never} descriptors for {NODES} nodes"
    );
    assert!(
        mandatory <= 4,
        "mandatory: {mandatory} descriptors for {NODES} nodes"
    );
}

/// `prefer` where open_by_handle_at is not permitted: O_PATH descriptors (the warning it logs
/// at startup is checked by async-virtiofsd's compat_options test).
#[test]
fn prefer_without_the_capability_serves_with_descriptors() {
    let mut d = Daemon::start(&["--inode-file-handles=prefer", "--modcaps=-dac_read_search"]);
    for i in 0..100 {
        std::fs::write(d.share.join(format!("f{i}")), b"x").unwrap();
    }
    let c = d.connect(d.config());
    c.init().unwrap();
    let pid = served_pid(&d);
    assert_eq!(effective_caps(pid) & CAP_DAC_READ_SEARCH, 0);
    let before = fds_of(pid);
    for i in 0..100 {
        c.lookup(ROOT_ID, format!("f{i}")).unwrap();
    }
    assert!(fds_of(pid) >= before + 100);
    d.assert_alive("prefer without DAC_READ_SEARCH");
}

/// The other sandboxes: the mount descriptors are directories of the share, so a chroot into it
/// (or no sandbox) changes nothing.
#[test]
fn mandatory_serves_in_the_chroot_sandbox_and_without_one() {
    for sandbox in ["chroot", "none"] {
        let mut d = Daemon::start(&["--inode-file-handles=mandatory", "--sandbox", sandbox]);
        std::fs::create_dir(d.share.join("d")).unwrap();
        std::fs::write(d.share.join("d/f"), b"in the share").unwrap();
        let c = d.connect(d.config());
        c.init().unwrap();
        let dir = c.lookup(ROOT_ID, "d").unwrap();
        let f = c.lookup(dir.nodeid, "f").unwrap();
        let o = c.open(f.nodeid, libc::O_RDONLY as u32).unwrap();
        assert_eq!(c.read(f.nodeid, o.fh, 0, 64).unwrap(), b"in the share");
        c.release(f.nodeid, o.fh, 0).unwrap();
        let listed = list_plus(&c, dir.nodeid);
        assert!(listed.contains(&("f".to_string(), f.nodeid)), "{listed:?}");
        assert_eq!(c.lookup(dir.nodeid, "..").unwrap().nodeid, ROOT_ID);
        d.assert_alive(sandbox);
    }
}
