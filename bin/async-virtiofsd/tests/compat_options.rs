//! Every option of the Rust virtiofsd 1.14 (its `Opt` struct and every `-o` form of its
//! `parse_compat`, in virtiofsd-1.14.0/src/main.rs) against the real binary: each is accepted
//! (the daemon starts and serves) or refused with the one-line "not implemented yet" error, exit
//! code 2. A new option of the reference has to be added to [`TABLE`] (the `--help` check below
//! finds it when the Rust virtiofsd is installed).

use std::collections::BTreeSet;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vhost_user_fs_client::daemons::{Kind, RUST_VIRTIOFSD_VERSION};

const BIN: &str = env!("CARGO_BIN_EXE_async-virtiofsd");

/// What the daemon must do with an option.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Starts and serves a frontend; its log contains this text (if not empty).
    Serves(&'static str),
    /// Starts, serves, and logs this warning.
    Warns(&'static str),
    /// Exit code 2 with one line: this name and "not implemented yet".
    NotYet(&'static str),
    /// Prints something on stdout and exits 0 without a share or socket.
    Prints(&'static str),
    /// Exit code 1 with one error line containing this text.
    Fails(&'static str),
}

use Expect::*;

/// Option of the reference (`--long` or `-o item` / `-x`) → example arguments → expectation.
/// `{dir}` is the shared directory and `{sock}` the socket path; the daemon gets
/// `--shared-dir {dir}` / `--socket-path {sock}` unless the arguments give their own.
/// `{fd}` is an inherited listening socket.
const TABLE: &[(&str, &[&str], Expect)] = &[
    // ---- the `Opt` struct, in its order ----
    ("--shared-dir", &["--shared-dir", "{dir}"], Serves("")),
    ("--tag", &["--tag=myfs"], Serves("")),
    (
        "--socket",
        &["--shared-dir", "{dir}", "--socket", "{sock}"],
        Serves(""),
    ),
    ("--socket-path", &["--socket-path={sock}"], Serves("")),
    ("--socket-group", &["--socket-group", "root"], Serves("")),
    ("--fd", &["--shared-dir", "{dir}", "--fd={fd}"], Serves("")),
    (
        "--thread-pool-size",
        &["--thread-pool-size", "0"],
        Serves(""),
    ),
    ("--xattr", &["--xattr"], Serves("")),
    ("--posix-acl", &["--posix-acl"], Serves("")),
    ("--posix-acl", &["--posix-acl=always"], Serves("")),
    ("--posix-acl", &["--posix-acl=auto"], Serves("")),
    ("--posix-acl", &["--posix-acl=never"], Serves("")),
    (
        "--xattrmap",
        &["--xattrmap", ":map::user.virtiofs.:"],
        Serves(""),
    ),
    (
        "--sandbox",
        &["--sandbox", "chroot"],
        Serves("sandbox Chroot"),
    ),
    ("--sandbox", &["--sandbox=none"], Serves("sandbox None")),
    ("--readonly", &["--readonly"], Serves("")),
    ("--seccomp", &["--seccomp=log"], Serves("")),
    (
        "--announce-submounts",
        &["--announce-submounts"],
        Serves(""),
    ),
    (
        "--no-announce-submounts",
        &["--no-announce-submounts"],
        Serves(""),
    ),
    (
        "--inode-file-handles",
        &["--inode-file-handles=never"],
        Serves(""),
    ),
    (
        "--inode-file-handles",
        &["--inode-file-handles=prefer"],
        Serves("the guest's inodes are file handles"),
    ),
    (
        "--inode-file-handles",
        &["--inode-file-handles=fallback"],
        Serves("--inode-file-handles=prefer: the guest's inodes are file handles"),
    ),
    (
        "--inode-file-handles",
        &["--inode-file-handles=mandatory"],
        Serves("the guest's inodes are file handles"),
    ),
    (
        "--inode-file-handles",
        &["--inode-file-handles=prefer", "--modcaps=-dac_read_search"],
        Warns("cannot open file handles"),
    ),
    ("--cache", &["--cache=metadata"], Serves("")),
    ("--allow-mmap", &["--allow-mmap"], Serves("")),
    ("--no-readdirplus", &["--no-readdirplus"], Serves("")),
    ("--writeback", &["--writeback"], Serves("")),
    ("--allow-direct-io", &["--allow-direct-io"], Serves("")),
    (
        "--print-capabilities",
        &["--print-capabilities"],
        Prints("posix-acl-negotiation-mode"),
    ),
    ("--modcaps", &["--modcaps=-mknod:+sys_admin"], Serves("")),
    ("--log-level", &["--log-level", "debug"], Serves("DEBUG")),
    ("--log-level", &["--log-level=error"], Serves("")),
    ("--syslog", &["--syslog"], Serves("")),
    (
        "--rlimit-nofile",
        &["--rlimit-nofile=8192"],
        Serves("open-file limit 8192"),
    ),
    ("-o", &["-o", "cache=always"], Serves("")),
    ("-d", &["-d"], Serves("DEBUG")),
    ("--no-killpriv-v2", &["--no-killpriv-v2"], Serves("")),
    ("--killpriv-v2", &["--killpriv-v2"], Serves("")),
    ("-f", &["-f"], Serves("")),
    ("--security-label", &["--security-label"], Serves("")),
    ("--security-label", &["--security-label=always"], Serves("")),
    ("--security-label", &["--security-label=auto"], Serves("")),
    ("--security-label", &["--security-label=never"], Serves("")),
    // A user namespace is for a daemon started as non-root (the tests run as root; the
    // non-root case is in crates/vhost-user-fs-client/tests/idmap.rs).
    (
        "--uid-map",
        &["--uid-map", ":0:100000:65536:"],
        Fails("are for a daemon started as non-root"),
    ),
    (
        "--gid-map",
        &["--gid-map=:0:100000:65536:"],
        Fails("are for a daemon started as non-root"),
    ),
    (
        "--translate-uid",
        &["--translate-uid", "map:0:1000:1"],
        Serves(""),
    ),
    (
        "--translate-gid",
        &["--translate-gid=forbid-guest:0:10"],
        Serves(""),
    ),
    ("--preserve-noatime", &["--preserve-noatime"], Serves("")),
    (
        "--migration-mode",
        &["--migration-mode=file-handles"],
        NotYet("--migration-mode"),
    ),
    (
        "--migration-on-error",
        &["--migration-on-error", "guest-error"],
        NotYet("--migration-on-error"),
    ),
    (
        "--migration-verify-handles",
        &["--migration-verify-handles"],
        NotYet("--migration-verify-handles"),
    ),
    (
        "--migration-confirm-paths",
        &["--migration-confirm-paths"],
        NotYet("--migration-confirm-paths"),
    ),
    ("--help", &["--help"], Prints("--shared-dir")),
    ("--version", &["--version"], Prints("async-virtiofsd")),
    // ---- every `-o` form of `parse_compat` ----
    (
        "-o xattrmap",
        &["-o", "xattrmap=:map::user.virtiofs.:"],
        Serves(""),
    ),
    ("-o cache", &["-o", "cache=none"], Serves("")),
    ("-o cache", &["-o", "cache=auto"], Serves("")),
    ("-o cache", &["-o", "cache=always"], Serves("")),
    ("-o cache", &["-o", "cache=metadata"], Serves("")),
    ("-o loglevel", &["-o", "loglevel=debug"], Serves("DEBUG")),
    ("-o loglevel", &["-o", "loglevel=info"], Serves("")),
    ("-o loglevel", &["-o", "loglevel=warn"], Serves("")),
    ("-o loglevel", &["-o", "loglevel=err"], Serves("")),
    (
        "-o sandbox",
        &["-o", "sandbox=namespace"],
        Serves("sandbox Namespace"),
    ),
    (
        "-o sandbox",
        &["-o", "sandbox=chroot"],
        Serves("sandbox Chroot"),
    ),
    ("-o source", &["-o", "source={dir}"], Serves("")),
    (
        "-o modcaps",
        &["-o", "modcaps=+sys_admin"],
        Serves("CAP_SYS_ADMIN"),
    ),
    ("-o xattr", &["-o", "xattr"], Serves("")),
    ("-o no_xattr", &["-o", "no_xattr"], Serves("")),
    ("-o readdirplus", &["-o", "readdirplus"], Serves("")),
    ("-o no_readdirplus", &["-o", "no_readdirplus"], Serves("")),
    ("-o writeback", &["-o", "writeback"], Serves("")),
    ("-o no_writeback", &["-o", "no_writeback"], Serves("")),
    ("-o allow_direct_io", &["-o", "allow_direct_io"], Serves("")),
    (
        "-o no_allow_direct_io",
        &["-o", "no_allow_direct_io"],
        Serves(""),
    ),
    (
        "-o announce_submounts",
        &["-o", "announce_submounts"],
        Serves(""),
    ),
    ("-o killpriv_v2", &["-o", "killpriv_v2"], Serves("")),
    ("-o no_killpriv_v2", &["-o", "no_killpriv_v2"], Serves("")),
    ("-o posix_acl", &["-o", "posix_acl"], Serves("")),
    ("-o no_posix_acl", &["-o", "no_posix_acl"], Serves("")),
    ("-o security_label", &["-o", "security_label"], Serves("")),
    (
        "-o no_security_label",
        &["-o", "no_security_label"],
        Serves(""),
    ),
    ("-o no_posix_lock", &["-o", "no_posix_lock"], Serves("")),
    ("-o no_flock", &["-o", "no_flock"], Serves("")),
    // Not in the Rust virtiofsd (the C one had them): host locks are served (the default).
    ("-o posix_lock", &["-o", "posix_lock"], Serves("")),
    ("-o flock", &["-o", "flock"], Serves("")),
];

/// The long options of the Rust virtiofsd 1.14's `Opt` struct (clap derives `--no-killpriv-v2`
/// from its field `_no_killpriv_v2`), plus clap's own `--help` / `--version`.
const REFERENCE_LONG: &[&str] = &[
    "--shared-dir",
    "--tag",
    "--socket",
    "--socket-path",
    "--socket-group",
    "--fd",
    "--thread-pool-size",
    "--xattr",
    "--posix-acl",
    "--xattrmap",
    "--sandbox",
    "--readonly",
    "--seccomp",
    "--announce-submounts",
    "--no-announce-submounts",
    "--inode-file-handles",
    "--cache",
    "--allow-mmap",
    "--no-readdirplus",
    "--writeback",
    "--allow-direct-io",
    "--print-capabilities",
    "--modcaps",
    "--log-level",
    "--syslog",
    "--rlimit-nofile",
    "--no-killpriv-v2",
    "--killpriv-v2",
    "--security-label",
    "--uid-map",
    "--gid-map",
    "--translate-uid",
    "--translate-gid",
    "--preserve-noatime",
    "--migration-mode",
    "--migration-on-error",
    "--migration-verify-handles",
    "--migration-confirm-paths",
    "--help",
    "--version",
];

/// The short options and every `-o` item of the reference's `parse_compat`.
const REFERENCE_SHORT_AND_COMPAT: &[&str] = &[
    "-o",
    "-d",
    "-f",
    "-o xattrmap",
    "-o cache",
    "-o loglevel",
    "-o sandbox",
    "-o source",
    "-o modcaps",
    "-o xattr",
    "-o no_xattr",
    "-o readdirplus",
    "-o no_readdirplus",
    "-o writeback",
    "-o no_writeback",
    "-o allow_direct_io",
    "-o no_allow_direct_io",
    "-o announce_submounts",
    "-o killpriv_v2",
    "-o no_killpriv_v2",
    "-o posix_acl",
    "-o no_posix_acl",
    "-o security_label",
    "-o no_security_label",
    "-o no_posix_lock",
    "-o no_flock",
];

fn expand(args: &[&str], prints: bool, dir: &Path, sock: &Path, fd: i32) -> Vec<String> {
    let mut out: Vec<String> = args
        .iter()
        .map(|a| {
            a.replace("{dir}", dir.to_str().unwrap())
                .replace("{sock}", sock.to_str().unwrap())
                .replace("{fd}", &fd.to_string())
        })
        .collect();
    let joined = args.join(" ");
    if !joined.contains("{dir}") && !prints {
        out.extend(["--shared-dir".into(), dir.to_str().unwrap().into()]);
    }
    if !joined.contains("{sock}") && !joined.contains("{fd}") && !prints {
        out.extend(["--socket-path".into(), sock.to_str().unwrap().into()]);
    }
    out
}

/// Runs the daemon with `args`; when it serves, connects and disconnects a frontend, which makes
/// it exit 0. Returns (exit code, stdout, stderr).
fn run_one(args: &[&str], expect: Expect) -> (i32, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("share");
    std::fs::create_dir(&dir).unwrap();
    let sock = tmp.path().join("vfs.sock");
    let listener = UnixListener::bind(tmp.path().join("inherited.sock")).unwrap();
    let inherited = listener.as_raw_fd();
    let argv = expand(args, matches!(expect, Prints(_)), &dir, &sock, 3);
    let mut cmd = Command::new(BIN);
    cmd.args(&argv)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG");
    // SAFETY: dup2 and fcntl are async-signal-safe; they put the inherited socket at fd 3
    // without CLOEXEC.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if inherited == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(inherited, 3) == 3
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    if matches!(expect, Serves(_) | Warns(_)) {
        let target = if argv.iter().any(|a| a.starts_with("--fd")) {
            tmp.path().join("inherited.sock")
        } else {
            sock.clone()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if UnixStream::connect(&target).is_ok() {
                break; // dropped at once: the daemon sees its frontend disconnect
            }
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "{args:?}: exited {status} before listening: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(Instant::now() < deadline, "{args:?}: never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?}: did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(listener);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            -out.status.signal().unwrap_or(0)
        }),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_reference_option_is_accepted_or_refused_as_not_implemented_yet() {
    let mut failures = Vec::new();
    for (option, args, expect) in TABLE {
        let (code, stdout, stderr) = run_one(args, *expect);
        let ok = match expect {
            Serves(text) => code == 0 && stderr.contains(text),
            Warns(text) => {
                code == 0
                    && stderr
                        .lines()
                        .any(|l| l.contains("WARN") && l.contains(text))
            }
            NotYet(name) => {
                code == 2
                    && stderr.lines().count() == 1
                    && stderr.contains(name)
                    && stderr.contains("not implemented yet")
                    && !stderr.contains("Usage")
            }
            Prints(text) => code == 0 && stdout.contains(text),
            Fails(text) => {
                code == 1
                    && stderr.lines().filter(|l| l.contains("error")).count() == 1
                    && stderr.contains(text)
            }
        };
        if !ok {
            failures.push(format!(
                "{option} {args:?}: expected {expect:?}, got exit {code}\nstdout: {stdout}\nstderr: {stderr}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_table_covers_every_reference_option() {
    let covered: BTreeSet<&str> = TABLE.iter().map(|(o, _, _)| *o).collect();
    let missing: Vec<&&str> = REFERENCE_LONG
        .iter()
        .chain(REFERENCE_SHORT_AND_COMPAT)
        .filter(|o| !covered.contains(**o))
        .collect();
    assert!(missing.is_empty(), "not in TABLE: {missing:?}");
}

/// The Rust virtiofsd's own `--help`, when it is installed (the benchmark builds it): every long
/// option it lists must be in [`REFERENCE_LONG`].
#[test]
fn reference_help_lists_no_option_missing_from_the_table() {
    let Some(bin) = Kind::Rust.binary() else {
        eprintln!("the Rust virtiofsd is not installed: --help check skipped");
        return;
    };
    let bin = bin.display().to_string();
    let out = Command::new(&bin).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let mut listed = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[') {
        if let Some(name) = word.strip_prefix("--") {
            let name: String = name
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                listed.insert(format!("--{name}"));
            }
        }
    }
    let missing: Vec<&String> = listed
        .iter()
        .filter(|o| !REFERENCE_LONG.contains(&o.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{bin} --help lists {missing:?}, not in the table"
    );
}

/// The Rust virtiofsd 1.14's source, when cargo has it (the benchmark fetches it): every long
/// option of its `Opt` struct must be in [`REFERENCE_LONG`], and every `-o` item its
/// `parse_compat` matches in [`REFERENCE_SHORT_AND_COMPAT`].
#[test]
fn reference_source_has_no_option_missing_from_the_table() {
    let Some(home) = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
    else {
        return;
    };
    let Some(main) = std::fs::read_dir(home.join("registry/src"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| {
            d.path()
                .join(format!("virtiofsd-{RUST_VIRTIOFSD_VERSION}/src/main.rs"))
        })
        .find(|p| p.exists())
    else {
        eprintln!("the Rust virtiofsd 1.14 source is not in the cargo registry: check skipped");
        return;
    };
    let src = std::fs::read_to_string(&main).unwrap();
    let opt = &src[src.find("struct Opt {").unwrap()..];
    let opt = &opt[..opt.find("\n}\n").unwrap()];
    let mut long = BTreeSet::new();
    let mut pending: Option<Option<String>> = None; // inside #[arg(long ...)]: explicit name?
    for line in opt.lines().map(str::trim) {
        if line.starts_with("#[arg(") && line.contains("long") {
            let explicit = line
                .split("long = \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned);
            pending = Some(explicit);
        } else if let (Some(name), Some((field, _))) = (&pending, line.split_once(':')) {
            if !line.starts_with("///") && !line.starts_with("#[") {
                let derived = field.trim_start_matches('_').replace('_', "-");
                long.insert(format!("--{}", name.clone().unwrap_or(derived)));
                pending = None;
            }
        }
    }
    assert!(
        long.len() > 30,
        "parsed too few options from {}: {long:?}",
        main.display()
    );
    let missing: Vec<&String> = long
        .iter()
        .filter(|o| !REFERENCE_LONG.contains(&o.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} has {missing:?}, not in the table",
        main.display()
    );

    // parse_tuple: `["key", value] => match value { "v" => ..., }`; parse_single: `"a" | "b" =>`.
    let body = |f: &str| {
        let b = &src[src.find(f).unwrap()..];
        b[..b.find("\n    }\n").unwrap()].to_owned()
    };
    let mut items = BTreeSet::new();
    let mut values = BTreeSet::new();
    let mut key = None;
    for line in body("fn parse_tuple").lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("[\"") {
            let k = rest.split('"').next().unwrap().to_owned();
            items.insert(format!("-o {k}"));
            key = Some(k);
        } else if let (Some(k), Some(v)) = (&key, line.strip_prefix('"')) {
            values.insert(format!("{k}={}", v.split('"').next().unwrap()));
        }
    }
    for line in body("fn parse_single").lines().map(str::trim) {
        if line.starts_with('"') && line.contains("=>") {
            for alt in line.split("=>").next().unwrap().split('|') {
                items.insert(format!("-o {}", alt.trim().trim_matches('"')));
            }
        }
    }
    assert!(items.len() > 20 && values.len() > 8, "{items:?} {values:?}");
    let tried: BTreeSet<String> = TABLE
        .iter()
        .flat_map(|(_, args, _)| args.iter().map(|a| a.to_string()))
        .collect();
    let untried: Vec<&String> = values.iter().filter(|v| !tried.contains(*v)).collect();
    assert!(
        untried.is_empty(),
        "parse_compat accepts {untried:?}, not tried in the table"
    );
    let missing: Vec<&String> = items
        .iter()
        .filter(|o| !REFERENCE_SHORT_AND_COMPAT.contains(&o.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "parse_compat has {missing:?}, not in the table"
    );
}
