//! The POSIX behaviour suite (tests/suite) on the host's own filesystem (the reference) and
//! through the bridge on async-virtiofsd, the C virtiofsd and the Rust virtiofsd, each in the
//! bridge's default mode (no `default_permissions`: the backend alone decides on permissions)
//! and in the guest's mode (`--default-permissions`, as the Linux virtio-fs driver mounts).
//!
//! A case that fails where it passes on the host must be listed in [`KNOWN`] with its reason
//! (and in docs/bridge.md); otherwise the test fails. A listed difference that no longer shows
//! is reported, so the list does not rot. Reference daemons that are not installed are
//! skipped, unless `BRIDGE_REQUIRE_ALL_DAEMONS` is set (CI).
//!
//! `cargo test -p vhost-user-fs-mount --test posix -- --nocapture --test-threads 1` prints a
//! table per run; results also go to `$CARGO_TARGET_DIR/bridge-posix/NAME.txt`.

mod common;
mod suite;

use std::path::PathBuf;
use std::sync::Mutex;

use common::{Kind, Mounted};

/// One suite at a time: cases change the umask and load the machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// Bridge mode of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No default_permissions (the bridge's default): the backend decides.
    Backend,
    /// default_permissions: the kernel checks modes first, as in a virtio-fs guest.
    Guest,
}

/// Cases no backend passes without `default_permissions`: virtio-fs daemons leave permission
/// checks on OPEN, LOOKUP, UNLINK, RENAME, SETATTR (and the sticky bit, setgid clearing) to
/// the guest kernel, which a Linux virtio-fs guest always mounts with `default_permissions`.
/// They do check creation (MKNOD/MKDIR/CREATE/SYMLINK/LINK run with the caller's fsuid).
const BACKEND_MODE_PERMISSIONS: &[&str] = &[
    "perm_read_other_users_private_file",
    "perm_write_read_only_file",
    "perm_group_and_supplementary_groups",
    "perm_create_in_foreign_dir",
    "perm_search_bit",
    "perm_owner_only_attribute_changes",
    "perm_setgid_cleared_on_chmod_by_non_member",
    "sticky_directory",
];

const NO_DEFAULT_PERMISSIONS: &str = "the backend does not check permissions itself; it relies \
     on the guest kernel's default_permissions (docs/bridge.md)";

/// Known differences from the host: why `case` fails on `kind` in `mode`, if it is expected to.
fn known(kind: Kind, mode: Mode, case: &str) -> Option<&'static str> {
    if mode == Mode::Backend && BACKEND_MODE_PERMISSIONS.contains(&case) {
        return Some(NO_DEFAULT_PERMISSIONS);
    }
    match (kind, mode, case) {
        (_, Mode::Backend, "xattr_permissions") => {
            Some("SETXATTR is not checked against the file mode by the backend (runs as root)")
        }
        (Kind::C, Mode::Backend, "perm_access_syscall") => {
            Some("the C virtiofsd answers ACCESS from its own credentials (root), so X_OK passes")
        }
        _ => None,
    }
}

fn report_dir() -> PathBuf {
    let t = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    t.join("bridge-posix")
}

fn write_report(name: &str, total: usize, failed: &[(&'static str, String)], notes: &[String]) {
    let mut s = format!("{name}: {} of {total} cases pass\n", total - failed.len());
    for (c, e) in failed {
        s.push_str(&format!("  FAIL {c}: {e}\n"));
    }
    for n in notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    println!("{s}");
    let d = report_dir();
    let _ = std::fs::create_dir_all(&d);
    let _ = std::fs::write(d.join(format!("{name}.txt")), s);
}

#[test]
fn posix_host_reference() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::Builder::new()
        .prefix("vufs-posix-host-")
        .tempdir()
        .unwrap();
    common::set_mode(dir.path(), 0o777);
    let failed = suite::run_all(dir.path());
    write_report("host", suite::cases().len(), &failed, &[]);
    assert!(
        failed.is_empty(),
        "the suite must pass on the host's own filesystem: {failed:#?}"
    );
}

fn run_on(kind: Kind, mode: Mode) {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Two request queues where the daemon serves them (ours); the references serve one.
    let queues = common::bridge_queues(kind).to_string();
    let mut extra = vec!["--queues", queues.as_str()];
    if mode == Mode::Guest {
        extra.push("--default-permissions");
    }
    let Some(mut m) = Mounted::start(kind, &extra) else {
        return;
    };
    let name = format!(
        "{}{}",
        kind.name(),
        if mode == Mode::Guest {
            "+default_permissions"
        } else {
            ""
        }
    );
    let failed = suite::run_all(&m.mnt);
    assert!(
        m.bridge_status().is_none(),
        "the bridge died during the suite:\n{}",
        m.log.text()
    );
    assert!(m.backend.alive(), "{} died during the suite", kind.name());
    let mut notes = Vec::new();
    let mut unexpected = Vec::new();
    for (case, err) in &failed {
        match known(kind, mode, case) {
            Some(why) => notes.push(format!("{case}: known difference: {why}")),
            None => unexpected.push((*case, err.clone())),
        }
    }
    for case in suite::cases() {
        if known(kind, mode, case.name).is_some() && !failed.iter().any(|(f, _)| *f == case.name) {
            notes.push(format!(
                "{}: listed as a known difference but passes now",
                case.name
            ));
        }
    }
    write_report(&name, suite::cases().len(), &failed, &notes);
    assert!(
        unexpected.is_empty(),
        "{name}: cases that pass on the host fail here: {unexpected:#?}"
    );
}

#[test]
fn posix_async_virtiofsd() {
    run_on(Kind::Ours, Mode::Backend);
}

#[test]
fn posix_async_virtiofsd_default_permissions() {
    run_on(Kind::Ours, Mode::Guest);
}

#[test]
fn posix_c_virtiofsd() {
    run_on(Kind::C, Mode::Backend);
}

#[test]
fn posix_c_virtiofsd_default_permissions() {
    run_on(Kind::C, Mode::Guest);
}

#[test]
fn posix_rust_virtiofsd() {
    run_on(Kind::Rust, Mode::Backend);
}

#[test]
fn posix_rust_virtiofsd_default_permissions() {
    run_on(Kind::Rust, Mode::Guest);
}
