//! Unit tests of the daemon definitions: the command lines each configuration produces (the
//! ones docs/performance.md and docs/bridge.md quote), and the binary lookup with its
//! environment overrides.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

const S: &str = "/tmp/x/vfs.sock";
const D: &str = "/tmp/x/share";

fn args(kind: Kind, opts: &Options) -> Vec<String> {
    kind.args(Path::new(S), Path::new(D), opts)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A fixed environment for the lookup.
fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
    let m: HashMap<String, OsString> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
        .collect();
    move |k: &str| m.get(k).cloned()
}

#[test]
fn names_round_trip_and_are_the_report_names() {
    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names, ["async-virtiofsd", "c-virtiofsd", "rust-virtiofsd"]);
    for k in Kind::ALL {
        assert_eq!(Kind::from_name(k.name()), Some(k));
    }
    assert_eq!(Kind::from_name("host-syscalls"), None);
    assert_eq!(Kind::REFERENCES, [Kind::C, Kind::Rust]);
}

#[test]
fn bench_command_lines_for_pool_0_and_64() {
    for pool in [0u32, 64] {
        let n = pool.to_string();
        let rust_style = strings(&[
            "--socket-path",
            S,
            "--shared-dir",
            D,
            "--thread-pool-size",
            &n,
            "--cache",
            "auto",
        ]);
        assert_eq!(args(Kind::Ours, &Options::bench(pool)), rust_style);
        assert_eq!(args(Kind::Rust, &Options::bench(pool)), rust_style);
        assert_eq!(
            args(Kind::C, &Options::bench(pool)),
            vec![
                format!("--socket-path={S}"),
                "-o".into(),
                format!("source={D},cache=auto"),
                format!("--thread-pool-size={pool}"),
            ]
        );
    }
}

#[test]
fn bench_extra_arguments_come_last_as_given() {
    let o = Options::bench(64).with_extra(["--sandbox", "none"]);
    assert_eq!(args(Kind::Rust, &o)[8..], strings(&["--sandbox", "none"]));
    let o = Options::bench(0).with_extra(["-o", "sandbox=chroot"]);
    assert_eq!(args(Kind::C, &o)[4..], strings(&["-o", "sandbox=chroot"]));
}

#[test]
fn test_command_lines_have_xattrs_and_a_pool_only_where_it_works() {
    let rust_style = strings(&[
        "--socket-path",
        S,
        "--shared-dir",
        D,
        "--thread-pool-size",
        "16",
        "--cache",
        "auto",
        "--xattr",
    ]);
    assert_eq!(
        args(Kind::Ours, &Options::for_tests(Kind::Ours)),
        rust_style
    );
    assert_eq!(
        args(Kind::Rust, &Options::for_tests(Kind::Rust)),
        rust_style
    );
    // The C virtiofsd's pool is killed by its own seccomp filter: one thread per request.
    assert_eq!(
        args(Kind::C, &Options::for_tests(Kind::C)),
        vec![
            format!("--socket-path={S}"),
            "-o".into(),
            format!("source={D},cache=auto,xattr"),
            "--thread-pool-size=0".into(),
        ]
    );
    let o = Options::for_tests(Kind::Ours).with_extra(["--inode-file-handles=mandatory"]);
    assert_eq!(
        args(Kind::Ours, &o).last().unwrap(),
        "--inode-file-handles=mandatory"
    );
}

#[test]
fn cache_modes_are_named_per_daemon() {
    let cache_of = |k: Kind, c: Cache| {
        let mut o = Options::bench(0);
        o.cache = c;
        args(k, &o)
    };
    assert_eq!(
        cache_of(Kind::C, Cache::Never)[2],
        format!("source={D},cache=none")
    );
    assert_eq!(
        cache_of(Kind::C, Cache::Always)[2],
        format!("source={D},cache=always")
    );
    assert_eq!(cache_of(Kind::Rust, Cache::Never)[7], "never");
    assert_eq!(cache_of(Kind::Ours, Cache::Always)[7], "always");
}

#[test]
fn command_runs_the_binary_with_the_args() {
    let c = Kind::C.command(
        Path::new("/bin/c"),
        Path::new(S),
        Path::new(D),
        &Options::bench(0),
    );
    assert_eq!(c.get_program(), "/bin/c");
    let a: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(a, args(Kind::C, &Options::bench(0)));
}

#[test]
fn known_limits() {
    assert_eq!(Kind::Ours.request_queues(), 64);
    assert_eq!(Kind::C.request_queues(), 1);
    assert_eq!(Kind::Rust.request_queues(), 1);
    assert!(Kind::Ours.thread_pool_works());
    assert!(!Kind::C.thread_pool_works());
    assert!(Kind::Rust.thread_pool_works());
}

#[test]
fn candidates_without_overrides() {
    let home = Path::new("/home/u");
    let env = env_of(&[("HOME", home)]);
    let ours = Kind::Ours.candidates_in(&env);
    assert_eq!(ours.len(), 1);
    assert!(ours[0].ends_with("crates/vhost-user-fs-client/../../target/debug/async-virtiofsd"));
    assert_eq!(
        Kind::C.candidates_in(&env),
        [PathBuf::from("/usr/lib/qemu/virtiofsd")]
    );
    assert_eq!(
        Kind::Rust.candidates_in(&env),
        [PathBuf::from(
            "/home/u/.cache/async-virtiofsd/bench-tools/bin/virtiofsd"
        )]
    );
    assert_eq!(
        bench_tools_dir(&env),
        Some(PathBuf::from("/home/u/.cache/async-virtiofsd/bench-tools"))
    );
    // No HOME: nowhere to look for the Rust virtiofsd by default.
    assert!(Kind::Rust.candidates_in(&env_of(&[])).is_empty());
}

#[test]
fn candidates_with_overrides_in_lookup_order() {
    let env = env_of(&[
        ("HOME", Path::new("/home/u")),
        ("XDG_CACHE_HOME", Path::new("/xdg")),
        ("BENCH_TOOLS", Path::new("/tools")),
        ("CARGO_TARGET_DIR", Path::new("/tgt")),
        ("ASYNC_VIRTIOFSD_BIN", Path::new("/o/async-virtiofsd")),
        ("C_VIRTIOFSD_BIN", Path::new("/c/virtiofsd")),
        ("RUST_VIRTIOFSD_BIN", Path::new("/r/virtiofsd")),
    ]);
    let ours = Kind::Ours.candidates_in(&env);
    assert_eq!(
        ours[..2],
        [
            PathBuf::from("/o/async-virtiofsd"),
            "/tgt/debug/async-virtiofsd".into()
        ]
    );
    assert!(ours[2].ends_with("target/debug/async-virtiofsd"));
    assert_eq!(
        Kind::C.candidates_in(&env),
        [PathBuf::from("/c/virtiofsd"), C_VIRTIOFSD_PATH.into()]
    );
    assert_eq!(
        Kind::Rust.candidates_in(&env),
        [
            PathBuf::from("/tools/bin/virtiofsd"),
            "/r/virtiofsd".into(),
            "/xdg/async-virtiofsd/bench-tools/bin/virtiofsd".into(),
        ]
    );
    assert_eq!(bench_tools_dir(&env), Some(PathBuf::from("/tools")));
}

/// An executable-looking file at `dir/rel`.
fn touch(dir: &Path, rel: &str) -> PathBuf {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"#!/bin/sh\n").unwrap();
    p
}

#[test]
fn binary_is_the_first_candidate_that_is_a_file() {
    let t = tempfile::tempdir().unwrap();
    let own = touch(t.path(), "own/virtiofsd");
    let home = t.path().join("home");
    let cached = touch(&home, ".cache/async-virtiofsd/bench-tools/bin/virtiofsd");

    // The override wins when it is a file.
    let env = env_of(&[("HOME", &home), ("RUST_VIRTIOFSD_BIN", &own)]);
    assert_eq!(Kind::Rust.binary_in(&env), Some(own.clone()));
    // An override that is no file falls through to the bench-tools install.
    let missing = t.path().join("nothing");
    let env = env_of(&[("HOME", &home), ("RUST_VIRTIOFSD_BIN", &missing)]);
    assert_eq!(Kind::Rust.binary_in(&env), Some(cached.clone()));
    // A directory is no binary.
    let env = env_of(&[("HOME", &home), ("RUST_VIRTIOFSD_BIN", t.path())]);
    assert_eq!(Kind::Rust.binary_in(&env), Some(cached));
    // BENCH_TOOLS moves the install.
    let tools = t.path().join("tools");
    let moved = touch(&tools, "bin/virtiofsd");
    let env = env_of(&[("HOME", &home), ("BENCH_TOOLS", &tools)]);
    assert_eq!(Kind::Rust.binary_in(&env), Some(moved));
    // Nothing there: no binary (the caller skips or fails).
    let env = env_of(&[("HOME", &missing)]);
    assert_eq!(Kind::Rust.binary_in(&env), None);

    let env = env_of(&[("C_VIRTIOFSD_BIN", &own)]);
    assert_eq!(Kind::C.binary_in(&env), Some(own.clone()));
    let env = env_of(&[("ASYNC_VIRTIOFSD_BIN", &own)]);
    assert_eq!(Kind::Ours.binary_in(&env), Some(own));
}

#[test]
fn waiting_for_a_socket() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("s.sock");
    let t0 = Instant::now();
    assert_eq!(
        wait_for_socket(&sock, Duration::from_millis(50), || true),
        Err(NotListening::TimedOut)
    );
    assert!(t0.elapsed() >= Duration::from_millis(50));
    assert_eq!(
        wait_for_socket(&sock, Duration::from_secs(10), || false),
        Err(NotListening::Exited)
    );
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert_eq!(wait_for_socket(&sock, Duration::ZERO, || false), Ok(()));
    assert_eq!(wait_listening(&sock, Duration::ZERO, || true), Ok(()));
}

#[test]
fn the_process_tree_holds_forked_children() {
    let mut sh = std::process::Command::new("sh")
        .args(["-c", "sleep 30 & sleep 30 & wait"])
        .spawn()
        .unwrap();
    let pid = sh.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    let tree = loop {
        let t = process_tree(pid);
        if t.len() >= 3 || Instant::now() >= deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(tree[0], pid);
    assert_eq!(tree.len(), 3, "{tree:?}");
    kill_process_tree(pid);
    sh.wait().unwrap();
    for p in &tree[1..] {
        let deadline = Instant::now() + Duration::from_secs(10);
        // Reaped by init once killed; a zombie is gone from the tree's point of view too.
        while Path::new(&format!("/proc/{p}")).exists()
            && !std::fs::read_to_string(format!("/proc/{p}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(Instant::now() < deadline, "child {p} survived");
    }
}

#[test]
fn cpu_seconds_count_a_busy_child_and_nothing_for_a_gone_one() {
    // A shell that spins for a fraction of a second of CPU, then sleeps.
    let mut sh = std::process::Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done; sleep 30",
        ])
        .spawn()
        .unwrap();
    let pid = sh.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut cpu = 0.0;
    while cpu < 0.1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        cpu = proc_cpu_seconds(pid);
    }
    assert!(cpu >= 0.1, "{cpu} s of CPU");
    assert!(cpu < 60.0, "{cpu} s of CPU");
    kill_process_tree(pid);
    sh.wait().unwrap();
    assert_eq!(proc_cpu_seconds(pid), 0.0, "reaped: no /proc entry");
}
