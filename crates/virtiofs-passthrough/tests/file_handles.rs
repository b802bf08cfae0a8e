//! `--inode-file-handles`: every kind of operation on nodes kept as file handles (`prefer`,
//! `mandatory`) answers as with O_PATH descriptors (`never`); a host inode number used again
//! for a new file never brings back the old node; a filesystem without handles gets O_PATH
//! nodes with `prefer` and is refused with `mandatory`.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{Fs, Mounted, ROOT_ID};
use virtiofs_fuse::abi::{fattr, SetattrIn, StatxIn};
use virtiofs_fuse::{Context, Errno, Filesystem, Name, Xattr};
use virtiofs_passthrough::InodeFileHandles::{self, Mandatory, Never, Prefer};

const MODES: [InodeFileHandles; 3] = [Never, Prefer, Mandatory];

#[test]
fn every_operation_answers_the_same_in_every_mode() {
    for mode in MODES {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path();
        std::fs::create_dir(share.join("d")).unwrap();
        std::fs::write(share.join("d/f"), b"host data").unwrap();
        let fs = Fs::new(share, mode);

        let d = fs.lookup(ROOT_ID, "d").unwrap();
        let f = fs.lookup(d.nodeid, "f").unwrap();
        assert_eq!(f.attr.ino, share.join("d/f").metadata().unwrap().ino());
        assert_eq!(fs.lookup(d.nodeid, "f").unwrap().nodeid, f.nodeid);
        assert_eq!(fs.getattr(f.nodeid).unwrap().attr.size, 9);
        assert_eq!(fs.lookup(d.nodeid, "..").unwrap().nodeid, ROOT_ID);
        assert_eq!(
            fs.lookup(d.nodeid, "nope").unwrap_err(),
            Errno(libc::ENOENT)
        );

        // Open, read, write through the node.
        let fh = fs.open(f.nodeid, libc::O_RDWR).unwrap();
        assert_eq!(fs.read(f.nodeid, fh, 64).unwrap(), b"host data");
        assert_eq!(fs.write(f.nodeid, fh, 0, b"HOST").unwrap(), 4);
        fs.release(f.nodeid, fh);
        assert_eq!(std::fs::read(share.join("d/f")).unwrap(), b"HOST data");

        // Attributes, by node: SETATTR (mode, size, times), STATX, STATFS, ACCESS, xattrs,
        // SYNCFS.
        let ctx = Context::default();
        let set = SetattrIn {
            valid: fattr::MODE | fattr::SIZE | fattr::MTIME,
            mode: 0o600,
            size: 4,
            mtime: 1_000_000,
            ..Default::default()
        };
        let attr = fs.fs().setattr(&ctx, f.nodeid, &set).unwrap().attr;
        assert_eq!(
            (attr.mode & 0o7777, attr.size, attr.mtime),
            (0o600, 4, 1_000_000)
        );
        let host = share.join("d/f").metadata().unwrap();
        assert_eq!(
            (host.mode() & 0o7777, host.len(), host.mtime()),
            (0o600, 4, 1_000_000)
        );
        let sx = StatxIn {
            sx_mask: libc::STATX_BASIC_STATS,
            ..Default::default()
        };
        assert_eq!(fs.fs().statx(&ctx, f.nodeid, &sx).unwrap().statx.size, 4);
        assert!(fs.fs().statfs(&ctx, d.nodeid).unwrap().blocks > 0);
        fs.fs().access(&ctx, f.nodeid, libc::R_OK as u32).unwrap();
        let name = Name::new(b"user.handle").unwrap();
        fs.fs().setxattr(&ctx, f.nodeid, &name, b"v", 0, 0).unwrap();
        assert_eq!(
            fs.fs().getxattr(&ctx, f.nodeid, &name, 64).unwrap(),
            Xattr::Data(b"v".to_vec())
        );
        fs.fs().syncfs(&ctx, f.nodeid).unwrap();
        std::fs::write(share.join("d/f"), b"HOST data").unwrap();

        // Made by the guest.
        let (c, fh) = fs.create(d.nodeid, "new", 0o640).unwrap();
        fs.write(c.nodeid, fh, 0, b"guest").unwrap();
        fs.release(c.nodeid, fh);
        assert_eq!(std::fs::read(share.join("d/new")).unwrap(), b"guest");
        // O_TMPFILE, then a name for it (what linkat of /proc/self/fd/N sends).
        let (t, fh) = fs.tmpfile(d.nodeid).unwrap();
        fs.write(t.nodeid, fh, 0, b"was unnamed").unwrap();
        let named = fs.link(t.nodeid, ROOT_ID, "named").unwrap();
        assert_eq!(named.nodeid, t.nodeid);
        fs.release(t.nodeid, fh);
        assert_eq!(std::fs::read(share.join("named")).unwrap(), b"was unnamed");
        let sub = fs.mkdir(d.nodeid, "sub").unwrap();
        assert!(share.join("d/sub").is_dir());
        let l = fs.symlink(sub.nodeid, "l", "../f").unwrap();
        assert_eq!(fs.readlink(l.nodeid).unwrap(), b"../f");

        // READDIRPLUS: every name, each counted as a lookup of the node LOOKUP gives.
        let mut names: Vec<_> = fs
            .readdirplus(d.nodeid)
            .unwrap()
            .into_iter()
            .filter(|p| p.nodeid != 0)
            .map(|p| (p.name, p.nodeid))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                ("f".to_string(), f.nodeid),
                ("new".to_string(), c.nodeid),
                ("sub".to_string(), sub.nodeid),
            ]
        );

        // Rename keeps the node; link is the same node; unlink leaves the other name.
        fs.rename(d.nodeid, "f", sub.nodeid, "g").unwrap();
        assert_eq!(fs.lookup(sub.nodeid, "g").unwrap().nodeid, f.nodeid);
        assert_eq!(fs.getattr(f.nodeid).unwrap().attr.size, 9, "{mode:?}");
        let h = fs.link(f.nodeid, d.nodeid, "h").unwrap();
        assert_eq!(h.nodeid, f.nodeid);
        assert_eq!(h.attr.nlink, 2);
        fs.unlink(sub.nodeid, "g").unwrap();
        assert_eq!(fs.getattr(f.nodeid).unwrap().attr.nlink, 1);
        let fh = fs.open(f.nodeid, libc::O_RDONLY).unwrap();
        assert_eq!(fs.read(f.nodeid, fh, 64).unwrap(), b"HOST data");
        fs.release(f.nodeid, fh);
        assert!(share.join("d/h").exists() && !share.join("d/sub/g").exists());
    }
}

/// Creates files in `dir` until one gets inode number `ino` again (ext4 and xfs hand a freed
/// number out again at once); false if none did.
fn reuse_inode_number(dir: &std::path::Path, ino: u64) -> Option<std::path::PathBuf> {
    for i in 0..200 {
        let p = dir.join(format!("new-{i}"));
        std::fs::write(&p, b"new file").unwrap();
        if p.metadata().unwrap().ino() == ino {
            return Some(p);
        }
    }
    None
}

#[test]
fn a_reused_inode_number_is_a_new_node_and_the_old_one_answers_estale() {
    for mode in [Prefer, Mandatory] {
        let tmp = tempfile::tempdir().unwrap();
        let share = tmp.path();
        std::fs::write(share.join("old"), b"old file").unwrap();
        let fs = Fs::new(share, mode);
        let old = fs.lookup(ROOT_ID, "old").unwrap();

        // The guest still knows `old` (no FORGET) when the host deletes it.
        std::fs::remove_file(share.join("old")).unwrap();
        let Some(path) = reuse_inode_number(share, old.attr.ino) else {
            eprintln!(
                "SKIP {mode:?}: this filesystem did not reuse inode {}",
                old.attr.ino
            );
            return;
        };
        let name = path.file_name().unwrap().to_str().unwrap();
        let new = fs.lookup(ROOT_ID, name).unwrap();
        assert_eq!(new.attr.ino, old.attr.ino, "same (dev, ino, mount)");
        assert_ne!(
            new.nodeid, old.nodeid,
            "{mode:?}: the stale node was handed out"
        );
        assert_eq!(new.attr.size, 8);
        assert_eq!(fs.lookup(ROOT_ID, name).unwrap().nodeid, new.nodeid);
        // The stale node: an errno for every operation, never the new file's data.
        assert_eq!(fs.getattr(old.nodeid).unwrap_err(), Errno(libc::ESTALE));
        assert_eq!(
            fs.open(old.nodeid, libc::O_RDONLY).unwrap_err(),
            Errno(libc::ESTALE)
        );
        assert_eq!(
            fs.link(old.nodeid, ROOT_ID, "resurrected").unwrap_err(),
            Errno(libc::ESTALE)
        );
        // Its FORGET leaves the new node alone.
        fs.forget(old.nodeid, 1);
        assert_eq!(fs.lookup(ROOT_ID, name).unwrap().nodeid, new.nodeid);
        let fh = fs.open(new.nodeid, libc::O_RDONLY).unwrap();
        assert_eq!(fs.read(new.nodeid, fh, 64).unwrap(), b"new file");
        fs.release(new.nodeid, fh);
    }
}

#[test]
fn a_filesystem_without_handles_gets_descriptors_with_prefer_and_is_refused_by_mandatory() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path();
    std::fs::write(share.join("on-disk"), b"x").unwrap();
    // ramfs makes no file handles (EOPNOTSUPP).
    let Some(_ramfs) = Mounted::new("ramfs", &share.join("ramfs")) else {
        eprintln!("SKIP: cannot mount a ramfs (needs root)");
        return;
    };
    for i in 0..20 {
        std::fs::write(share.join(format!("ramfs/r{i}")), b"in ram").unwrap();
    }

    // (How many descriptors each kind of node holds: tests/fd_count.rs.)
    let fs = Fs::new(share, Prefer);
    let disk = fs.lookup(ROOT_ID, "on-disk").unwrap();
    let ram = fs.lookup(ROOT_ID, "ramfs").unwrap();
    let files: Vec<_> = (0..20)
        .map(|i| fs.lookup(ram.nodeid, &format!("r{i}")).unwrap())
        .collect();
    let fh = fs.open(files[3].nodeid, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(files[3].nodeid, fh, 64).unwrap(), b"in ram");
    fs.release(files[3].nodeid, fh);
    fs.getattr(disk.nodeid).unwrap();
    drop(fs);

    let fs = Fs::new(share, Mandatory);
    assert!(fs.lookup(ROOT_ID, "on-disk").is_ok());
    assert_eq!(
        fs.lookup(ROOT_ID, "ramfs").unwrap_err(),
        Errno(libc::EOPNOTSUPP)
    );
    drop(fs);

    // A share on such a filesystem: `mandatory` does not start, `prefer` serves it.
    let e = Fs::try_new(&share.join("ramfs"), Mandatory).err().unwrap();
    assert!(
        e.contains("mandatory") && e.contains("does not support file handles"),
        "{e}"
    );
    let fs = Fs::new(&share.join("ramfs"), Prefer);
    assert_eq!(fs.lookup(ROOT_ID, "r0").unwrap().attr.size, 6);
}
