//! `--translate-uid` / `--translate-gid` (issue 13): the caller's ids translated guest → host
//! for the files it makes and for chown, the owner in every attribute reply host → guest, squash
//! and forbid rules; and a daemon started as non-root (`--uid-map` / `--gid-map`, the default
//! namespace, `--sandbox none` with a translation) serving a guest root.
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{daemon_bin, errno, Daemon};
use vhost_user_fs_client::abi::{fattr, opcode, SetattrIn, ROOT_ID};
use vhost_user_fs_client::{Creds, Errno, FsClient, FuseOps, FuseRequest};

const CREATE_FLAGS: u32 = (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32;
const S_IFREG: u32 = libc::S_IFREG;
/// `nobody`/`nogroup` on Debian: the unprivileged user the daemon runs as.
const NOBODY: u32 = 65534;

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

fn open_to_all(path: &Path) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
}

fn session(d: &Daemon) -> FsClient {
    let c = d.connect(d.config());
    c.init().unwrap();
    c
}

/// STATX's owner (fuse_statx_out: 32 bytes of header, then uid at 20 and gid at 24 of the
/// statx).
fn statx_owner(c: &FsClient, nodeid: u64) -> (u32, u32) {
    let b = c
        .call(FuseRequest::new(
            opcode::STATX,
            nodeid,
            vec![vec![0; 24]],
            vec![288],
        ))
        .unwrap()
        .ok()
        .unwrap();
    let at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    (at(52), at(56))
}

fn chown(uid: Option<u32>, gid: Option<u32>) -> SetattrIn {
    let mut s = SetattrIn::default();
    if let Some(u) = uid {
        s.valid |= fattr::UID;
        s.uid = u;
    }
    if let Some(g) = gid {
        s.valid |= fattr::GID;
        s.gid = g;
    }
    s
}

#[test]
fn guest_rules_make_files_as_the_translated_host_ids() {
    let d = Daemon::start(&[
        "--translate-uid",
        "guest:1000:5000:10",
        "--translate-gid=guest:1000:6000:10",
    ]);
    open_to_all(&d.share);
    let c = session(&d);
    let user = c.with_creds(Creds::user(1001, 1002));
    let (f, _) = user
        .create(ROOT_ID, "f", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    user.mkdir(ROOT_ID, "d", 0o755, 0).unwrap();
    user.mknod(ROOT_ID, "p", libc::S_IFIFO | 0o644, 0, 0)
        .unwrap();
    user.symlink(ROOT_ID, "l", "f").unwrap();
    for name in ["f", "d", "p", "l"] {
        assert_eq!(owner(&d.share.join(name)), (5001, 6002), "{name}");
    }
    // One way only: no host → guest rule, so the guest sees the host ids.
    assert_eq!((f.attr.uid, f.attr.gid), (5001, 6002));
    // Ids outside the rules pass unchanged.
    let other = c.with_creds(Creds::user(1010, 999));
    other.mkdir(ROOT_ID, "o", 0o755, 0).unwrap();
    assert_eq!(owner(&d.share.join("o")), (1010, 999));
    // The access check is the translated caller's: 5001 owns f (0644: writable by its owner).
    user.access(f.nodeid, libc::W_OK as u32).unwrap();
    assert_eq!(
        errno(other.access(f.nodeid, libc::W_OK as u32)),
        Errno::EACCES
    );
}

#[test]
fn host_rules_translate_the_owner_in_every_reply() {
    let d = Daemon::start(&[
        "--translate-uid=host:5000:1000:10",
        "--translate-gid=squash-host:6000:100:10",
    ]);
    let f = d.share.join("f");
    std::fs::write(&f, b"x").unwrap();
    std::os::unix::fs::chown(&f, Some(5003), Some(6007)).unwrap();
    let other = d.share.join("other");
    std::fs::write(&other, b"y").unwrap();
    std::os::unix::fs::chown(&other, Some(7000), Some(7001)).unwrap();
    let c = session(&d);

    let e = c.lookup(ROOT_ID, "f").unwrap();
    assert_eq!((e.attr.uid, e.attr.gid), (1003, 100), "LOOKUP");
    let a = c.getattr(e.nodeid, None).unwrap().attr;
    assert_eq!((a.uid, a.gid), (1003, 100), "GETATTR");
    assert_eq!(statx_owner(&c, e.nodeid), (1003, 100), "STATX");
    let o = c.lookup(ROOT_ID, "other").unwrap();
    assert_eq!((o.attr.uid, o.attr.gid), (7000, 7001), "no rule: unchanged");

    let dh = c.opendir(ROOT_ID, 0).unwrap();
    let plus = c.readdirplus(ROOT_ID, dh.fh, 0, 8192).unwrap();
    let got = |name: &[u8]| {
        let p = plus.iter().find(|p| p.dirent.name == name).unwrap();
        (p.entry.attr.uid, p.entry.attr.gid)
    };
    assert_eq!(got(b"f"), (1003, 100), "READDIRPLUS");
    assert_eq!(got(b"other"), (7000, 7001), "READDIRPLUS, no rule");
    c.releasedir(ROOT_ID, dh.fh).unwrap();

    // A host → guest rule does not change what the guest's ids become on the host.
    let user = c.with_creds(Creds::user(1003, 100));
    open_to_all(&d.share);
    let (n, _) = user
        .create(ROOT_ID, "new", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(owner(&d.share.join("new")), (1003, 100));
    assert_eq!((n.attr.uid, n.attr.gid), (1003, 100));
    // The host changes the owner: the next GETATTR shows it translated.
    std::os::unix::fs::chown(d.share.join("new"), Some(5009), Some(6000)).unwrap();
    let a = c.getattr(n.nodeid, None).unwrap().attr;
    assert_eq!((a.uid, a.gid), (1009, 100));
    // LINK's entry is translated too.
    let l = c.link(e.nodeid, ROOT_ID, "f2").unwrap();
    assert_eq!((l.attr.uid, l.attr.gid), (1003, 100), "LINK");
}

#[test]
fn map_rules_round_trip_and_chown_is_translated() {
    let d = Daemon::start(&[
        "--translate-uid",
        "map:0:100000:65536",
        "--translate-gid",
        "map:0:200000:65536",
    ]);
    // Guest root is host 100000 here: no more than any user in a 0755 directory of host root.
    open_to_all(&d.share);
    let c = session(&d);
    // Guest root makes a file: the host's owner is 100000:200000, the guest sees root.
    let (f, _) = c
        .create(ROOT_ID, "f", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(owner(&d.share.join("f")), (100000, 200000));
    assert_eq!((f.attr.uid, f.attr.gid), (0, 0), "CREATE reply");
    let m = c.mkdir(ROOT_ID, "d", 0o755, 0).unwrap();
    assert_eq!((m.attr.uid, m.attr.gid), (0, 0), "MKDIR reply");

    // chown: the guest's ids are translated, and the reply shows them as the guest gave them.
    let a = c
        .setattr(f.nodeid, chown(Some(1000), Some(1001)))
        .unwrap()
        .attr;
    assert_eq!(owner(&d.share.join("f")), (101000, 201001));
    assert_eq!((a.uid, a.gid), (1000, 1001), "SETATTR reply");
    // One id only: the other stays.
    let a = c.setattr(f.nodeid, chown(None, Some(5))).unwrap().attr;
    assert_eq!(owner(&d.share.join("f")), (101000, 200005));
    assert_eq!((a.uid, a.gid), (1000, 5));
    // Outside the rules: unchanged both ways.
    let a = c.setattr(f.nodeid, chown(Some(70000), None)).unwrap().attr;
    assert_eq!(owner(&d.share.join("f")).0, 70000);
    assert_eq!(a.uid, 70000);
    // A host id outside the host range shows as itself (host root stays 0 in the guest too).
    std::fs::write(d.share.join("host-root"), b"").unwrap();
    let e = c.lookup(ROOT_ID, "host-root").unwrap();
    assert_eq!((e.attr.uid, e.attr.gid), (0, 0));
}

#[test]
fn squash_guest_makes_every_guest_user_one_host_user() {
    let d = Daemon::start(&[
        "--translate-uid=squash-guest:0:4242:4294967295",
        "--translate-gid=squash-guest:0:4343:4294967295",
        "--translate-uid=squash-host:4242:1000:1",
    ]);
    open_to_all(&d.share);
    let c = session(&d);
    for (i, (uid, gid)) in [(0, 0), (1000, 1000), (12345, 7)].into_iter().enumerate() {
        let name = format!("f{i}");
        let (e, _) = c
            .with_creds(Creds::user(uid, gid))
            .create(ROOT_ID, &name, CREATE_FLAGS, S_IFREG | 0o644, 0)
            .unwrap();
        assert_eq!(owner(&d.share.join(&name)), (4242, 4343), "caller {uid}");
        assert_eq!((e.attr.uid, e.attr.gid), (1000, 4343), "caller {uid}");
    }
    // chown to anyone is chown to the squashed ids.
    let e = c.lookup(ROOT_ID, "f0").unwrap();
    std::os::unix::fs::chown(d.share.join("f0"), Some(0), Some(0)).unwrap();
    c.setattr(e.nodeid, chown(Some(7), Some(8))).unwrap();
    assert_eq!(owner(&d.share.join("f0")), (4242, 4343));
}

#[test]
fn forbidden_guest_ids_are_eperm_and_change_nothing() {
    let d = Daemon::start(&[
        "--translate-uid",
        "forbid-guest:1000:10",
        "--translate-gid",
        "forbid-guest:2000:1",
    ]);
    open_to_all(&d.share);
    std::fs::write(d.share.join("f"), b"x").unwrap();
    let c = session(&d);
    let banned = c.with_creds(Creds::user(1005, 100));
    assert_eq!(
        errno(banned.create(ROOT_ID, "x", CREATE_FLAGS, S_IFREG | 0o644, 0)),
        Errno::EPERM
    );
    assert_eq!(errno(banned.mkdir(ROOT_ID, "x", 0o755, 0)), Errno::EPERM);
    assert_eq!(
        errno(banned.mknod(ROOT_ID, "x", libc::S_IFIFO | 0o644, 0, 0)),
        Errno::EPERM
    );
    assert_eq!(errno(banned.symlink(ROOT_ID, "x", "f")), Errno::EPERM);
    let banned_group = c.with_creds(Creds::user(0, 2000));
    assert_eq!(
        errno(banned_group.mkdir(ROOT_ID, "x", 0o755, 0)),
        Errno::EPERM
    );
    assert!(!d.share.join("x").exists(), "nothing was made");
    // Reading is not using the id for a file: LOOKUP and GETATTR work.
    let f = banned.lookup(ROOT_ID, "f").unwrap();
    banned.getattr(f.nodeid, None).unwrap();
    // Giving a file to a forbidden id: EPERM, and the mode in the same SETATTR is not applied.
    let mut set = chown(Some(1003), None);
    set.valid |= fattr::MODE;
    set.mode = S_IFREG | 0o600;
    assert_eq!(errno(c.setattr(f.nodeid, set)), Errno::EPERM);
    assert_eq!(
        errno(c.setattr(f.nodeid, chown(None, Some(2000)))),
        Errno::EPERM
    );
    let m = std::fs::metadata(d.share.join("f")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 0, 0o644));
    // Just past the range: allowed.
    c.with_creds(Creds::user(1010, 100))
        .mkdir(ROOT_ID, "ok", 0o755, 0)
        .unwrap();
    assert_eq!(owner(&d.share.join("ok")), (1010, 100));
    c.setattr(f.nodeid, chown(Some(999), Some(2001))).unwrap();
    assert_eq!(owner(&d.share.join("f")), (999, 2001));
}

/// Whether an unprivileged user may create a user namespace here (the default sandbox needs
/// it as non-root).
fn user_namespaces_work() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .is_ok_and(|s| s.success())
}

/// A guest root creates, as the guest sees it and as the host has it.
/// Guest root's files, made by a daemon running as host `user` (uid, gid) mapped to root.
fn guest_root_round_trip(d: &Daemon, c: &FsClient, user: (u32, u32)) {
    let (f, fh) = c
        .create(ROOT_ID, "by-guest-root", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    c.write(f.nodeid, fh.fh, 0, b"hello").unwrap();
    let dir = c.mkdir(ROOT_ID, "dir", 0o755, 0).unwrap();
    c.with_creds(Creds::root())
        .symlink(dir.nodeid, "link", "../by-guest-root")
        .unwrap();
    for p in ["by-guest-root", "dir", "dir/link"] {
        assert_eq!(
            owner(&d.share.join(p)),
            user,
            "{p}: the daemon's user owns it on the host"
        );
    }
    assert_eq!(
        std::fs::read(d.share.join("by-guest-root")).unwrap(),
        b"hello"
    );
    assert_eq!((f.attr.uid, f.attr.gid), (0, 0), "root's in the guest");
    let a = c.getattr(dir.nodeid, None).unwrap().attr;
    assert_eq!((a.uid, a.gid), (0, 0));
    let e = c.lookup(ROOT_ID, "by-guest-root").unwrap();
    assert_eq!((e.attr.uid, e.attr.gid), (0, 0));
    // The guest root may chmod and chown to itself what it made.
    c.setattr(e.nodeid, {
        let mut s = chown(Some(0), Some(0));
        s.valid |= fattr::MODE;
        s.mode = S_IFREG | 0o600;
        s
    })
    .unwrap();
    let m = std::fs::metadata(d.share.join("by-guest-root")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (user.0, 0o600));
    c.unlink(dir.nodeid, "link").unwrap();
    c.rmdir(ROOT_ID, "dir").unwrap();
    assert!(!d.share.join("dir").exists());
}

#[test]
fn a_non_root_daemon_serves_guest_root_in_its_user_namespace() {
    if !user_namespaces_work() {
        eprintln!("skipped: an unprivileged user cannot create a user namespace here");
        return;
    }
    // The default: the daemon's own ids are 0 in its namespace.
    let d = Daemon::start_as(NOBODY, NOBODY, &[]);
    guest_root_round_trip(&d, &session(&d), (NOBODY, NOBODY));
    drop(d);
    // The same, spelled out with --uid-map/--gid-map (one range of the daemon's own id: no
    // helper program needed).
    let d = Daemon::start_as(
        NOBODY,
        NOBODY,
        &["--uid-map=:0:65534:1:", "--gid-map=:0:65534:1:"],
    );
    let c = session(&d);
    guest_root_round_trip(&d, &c, (NOBODY, NOBODY));
    std::fs::write(d.share.join("hosts"), b"").unwrap();
    std::os::unix::fs::chown(d.share.join("hosts"), Some(0), Some(0)).unwrap();
    let e = c.lookup(ROOT_ID, "hosts").unwrap();
    assert_eq!(
        (e.attr.uid, e.attr.gid),
        (NOBODY, NOBODY),
        "host root is not mapped into the namespace: the overflow id"
    );
    // A guest user the namespace does not map cannot be switched to...
    let user = c.with_creds(Creds::user(1000, 1000));
    assert!(user.mkdir(ROOT_ID, "u", 0o755, 0).is_err());
    // ...unless the translation squashes every guest user to the namespace's root.
    drop(c);
    drop(d);
    let d = Daemon::start_as(
        NOBODY,
        NOBODY,
        &[
            "--translate-uid=squash-guest:0:0:4294967295",
            "--translate-gid=squash-guest:0:0:4294967295",
        ],
    );
    let c = session(&d);
    let e = c
        .with_creds(Creds::user(1000, 1000))
        .mkdir(ROOT_ID, "u", 0o755, 0)
        .unwrap();
    assert_eq!(owner(&d.share.join("u")), (NOBODY, NOBODY));
    assert_eq!((e.attr.uid, e.attr.gid), (0, 0));
}

#[test]
fn a_non_root_daemon_without_a_sandbox_shows_its_files_as_root_by_translation() {
    // No namespace: the daemon cannot switch ids, every file is its user's; the translation
    // shows them as root's, and guest root's chown to root is the daemon's user.
    let d = Daemon::start_as(
        NOBODY,
        NOBODY,
        &[
            "--sandbox=none",
            "--translate-uid=map:0:65534:1",
            "--translate-gid=map:0:65534:1",
        ],
    );
    guest_root_round_trip(&d, &session(&d), (NOBODY, NOBODY));
    // Without the translation the guest sees the host's ids.
    drop(d);
    let d = Daemon::start_as(NOBODY, NOBODY, &["--sandbox=none"]);
    let c = session(&d);
    let (f, _) = c
        .create(ROOT_ID, "f", CREATE_FLAGS, S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!((f.attr.uid, f.attr.gid), (NOBODY, NOBODY));
}

/// Runs the daemon as nobody with `extra`, expecting it to fail at start: its exit code and
/// stderr.
fn failed_start(extra: &[&str]) -> (i32, String) {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    for p in [tmp.path(), share.as_path()] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let out = Command::new(daemon_bin())
        .arg("--shared-dir")
        .arg(&share)
        .arg("--socket-path")
        .arg(tmp.path().join("s"))
        .args(extra)
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn namespace_maps_that_cannot_be_set_up_are_one_line_and_exit_1() {
    if !user_namespaces_work() {
        eprintln!("skipped: an unprivileged user cannot create a user namespace here");
        return;
    }
    let errors = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.contains("error"))
            .map(String::from)
            .collect()
    };
    // Namespace id 0 unmapped: the daemon cannot be root of its namespace.
    let (code, stderr) = failed_start(&["--uid-map=:5:65534:1:"]);
    assert_eq!(code, 1, "{stderr}");
    let e = errors(&stderr);
    assert!(e.len() == 1 && e[0].contains("must map id 0"), "{stderr}");
    // More than the daemon's own id needs newuidmap, and /etc/subuid to allow the range; the
    // test user has none (or the helper is not installed): one line naming it.
    let has_range = std::fs::read_to_string("/etc/subuid").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("nobody:") || l.starts_with("65534:"))
    });
    if has_range {
        eprintln!("nobody has subordinate ids here: the refusal is not checked");
        return;
    }
    let (code, stderr) = failed_start(&["--uid-map=:0:65534:1:", "--uid-map=:1:100000:65536:"]);
    assert_eq!(code, 1, "{stderr}");
    let e = errors(&stderr);
    assert!(
        e.len() == 1 && e[0].contains("--uid-map") && e[0].contains("newuidmap"),
        "{stderr}"
    );
    let (code, stderr) = failed_start(&["--gid-map=:0:65534:2:"]);
    assert_eq!(code, 1, "{stderr}");
    let e = errors(&stderr);
    assert!(
        e.len() == 1 && e[0].contains("--gid-map") && e[0].contains("newgidmap"),
        "{stderr}"
    );
}

/// The first subordinate id range of the user `name` (uid `uid`) in `file` (`/etc/subuid` or
/// `/etc/subgid`).
fn subordinate_range(file: &str, name: &str, uid: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let who = f.next()?;
        if who != name && who != uid.to_string() {
            return None;
        }
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// A user's name, uid, gid, and first subordinate uid and gid ranges (start, count).
type SubordinateUser = (String, u32, u32, (u32, u32), (u32, u32));

/// A host user with subordinate uids and gids to run the daemon as: `avfs-e2e`, which
/// `tests/e2e/setup.sh` makes (so the test runs wherever the README's test command ran), else
/// `nobody` if the machine gave it ranges. Its name, uid, gid and both ranges.
fn user_with_subordinate_ids() -> Option<SubordinateUser> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = |name: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    ["avfs-e2e", "nobody"].into_iter().find_map(|name| {
        let (uid, gid) = entry(name).or((name == "nobody").then_some((NOBODY, NOBODY)))?;
        let su = subordinate_range("/etc/subuid", name, uid)?;
        let sg = subordinate_range("/etc/subgid", name, uid)?;
        Some((name.to_string(), uid, gid, su, sg))
    })
}

fn on_path(program: &str) -> bool {
    Command::new(program)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn subordinate_ids_mapped_by_newuidmap_serve_guest_users() {
    if !user_namespaces_work() {
        eprintln!("skipped: an unprivileged user cannot create a user namespace here");
        return;
    }
    let Some((user, uid, gid, (su, sun), (sg, sgn))) = user_with_subordinate_ids() else {
        eprintln!(
            "skipped: neither avfs-e2e (tests/e2e/setup.sh) nor nobody has ranges in \
             /etc/subuid and /etc/subgid"
        );
        return;
    };
    eprintln!("running the daemon as {user} ({uid}:{gid})");
    if !on_path("newuidmap") || !on_path("newgidmap") {
        eprintln!("skipped: newuidmap/newgidmap are not installed (the uidmap package)");
        return;
    }
    assert!(sun >= 2000 && sgn >= 2000, "the test needs 2000 ids");
    let uid_map = format!("--uid-map=:1:{su}:{sun}:");
    let gid_map = format!("--gid-map=:1:{sg}:{sgn}:");
    let d = Daemon::start_as(
        uid,
        gid,
        &[
            &format!("--uid-map=:0:{uid}:1:"),
            &uid_map,
            &format!("--gid-map=:0:{gid}:1:"),
            &gid_map,
        ],
    );
    open_to_all(&d.share);
    let c = session(&d);
    guest_root_round_trip(&d, &c, (uid, gid));
    // A guest user is namespace id 1000: subordinate id 999 of the range on the host.
    let e = c
        .with_creds(Creds::user(1000, 1001))
        .mkdir(ROOT_ID, "user", 0o755, 0)
        .unwrap();
    assert_eq!(owner(&d.share.join("user")), (su + 999, sg + 1000));
    assert_eq!((e.attr.uid, e.attr.gid), (1000, 1001));
}
