//! The command line, compatible with the Rust virtiofsd for the options we implement.
//!
//! Long options and their `-o` compatibility forms may be mixed and repeated; the one given last
//! wins (Kata, for one, prepends its own `--thread-pool-size`).

use std::os::unix::io::RawFd;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use virtiofs_passthrough::{CacheMode, ShareOptions};
use virtiofs_sandbox::{CapabilityPolicy, SandboxMode, SeccompMode};

/// Where the vhost-user frontend connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Create (or take over a stale) socket at this path.
    Path(PathBuf),
    /// An already listening socket inherited from the caller (libvirt, Kata).
    Fd(RawFd),
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Lifecycle events (default).
    Info,
    /// Per-queue and per-connection detail.
    Debug,
    /// Every request.
    Trace,
    /// Nothing.
    Off,
}

impl LogLevel {
    /// As an `EnvFilter` directive.
    pub fn as_directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
            LogLevel::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CacheArg {
    Never,
    Auto,
    Always,
    Metadata,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SandboxArg {
    Namespace,
    Chroot,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SeccompArg {
    None,
    Kill,
    Log,
    Trap,
}

/// Largest `--thread-pool-size`: each pooled request may hold a blocking thread.
pub const MAX_THREAD_POOL_SIZE: usize = 1024;

#[derive(Debug, Parser)]
#[command(
    name = "async-virtiofsd",
    version,
    about = "virtio-fs vhost-user backend: serves a host directory to a QEMU guest",
    args_override_self = true
)]
struct Args {
    /// Shared directory path.
    #[arg(long, value_name = "DIR")]
    shared_dir: Option<PathBuf>,

    /// vhost-user socket path to create and listen on.
    #[arg(long, value_name = "PATH")]
    socket_path: Option<PathBuf>,

    /// File descriptor of an already listening vhost-user socket.
    #[arg(long, value_name = "FD", conflicts_with = "socket_path")]
    fd: Option<RawFd>,

    /// Requests each request queue runs at once (0: one at a time on the queue task).
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(0..=MAX_THREAD_POOL_SIZE as u64))]
    thread_pool_size: u64,

    /// Guest caching policy.
    #[arg(long, value_enum, default_value = "auto")]
    cache: CacheArg,

    /// Serve extended attributes.
    #[arg(long)]
    xattr: bool,

    /// Let the guest use its writeback cache.
    #[arg(long)]
    writeback: bool,

    /// Do not offer READDIRPLUS.
    #[arg(long)]
    no_readdirplus: bool,

    /// Honour O_DIRECT from the guest.
    #[arg(long)]
    allow_direct_io: bool,

    /// How the daemon is confined to the shared directory: namespace (mount/PID/network
    /// namespaces + pivot_root), chroot, or none (the caller contains the daemon).
    #[arg(long, value_enum, default_value = "namespace")]
    sandbox: SandboxArg,

    /// What a system call outside the allowlist does: kill the daemon, log it, trap (SIGSYS),
    /// or none (no filter).
    #[arg(long, value_enum, default_value = "kill")]
    seccomp: SeccompArg,

    /// Adjust the kept capabilities, e.g. `+sys_admin:-mknod`.
    #[arg(long, value_name = "MODCAPS", allow_hyphen_values = true)]
    modcaps: Option<String>,

    /// Open-file limit (default min(1000000, /proc/sys/fs/nr_open); 0 leaves it unchanged).
    #[arg(long, value_name = "N")]
    rlimit_nofile: Option<u64>,

    /// Log level (RUST_LOG, when set, takes precedence).
    #[arg(long, value_enum, default_value = "info")]
    log_level: LogLevel,

    /// Compatibility options, comma separated: source=DIR, cache=MODE, xattr, no_xattr,
    /// readdirplus, no_readdirplus, writeback, no_writeback, allow_direct_io, log_level=LEVEL
    /// (no_posix_lock, posix_lock, no_flock, flock are accepted and ignored).
    #[arg(short = 'o', value_name = "OPTIONS", action = ArgAction::Append)]
    compat: Vec<String>,

    /// Same as --log-level=debug.
    #[arg(short = 'd', hide = true)]
    debug: bool,

    /// Foreground (accepted for compatibility; the daemon always runs in the foreground).
    #[arg(short = 'f', hide = true)]
    foreground: bool,
}

/// The daemon's settings after parsing.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to share and how.
    pub share: ShareOptions,
    /// Where the frontend connects.
    pub listen: Listen,
    /// `--thread-pool-size`.
    pub thread_pool_size: usize,
    /// `--log-level`.
    pub log_level: LogLevel,
    /// `--sandbox`.
    pub sandbox: SandboxMode,
    /// `--seccomp`.
    pub seccomp: SeccompMode,
    /// The capabilities kept (`--modcaps` applied).
    pub capabilities: CapabilityPolicy,
    /// `--rlimit-nofile` (None: the default target).
    pub rlimit_nofile: Option<u64>,
}

/// A command-line problem: printed as one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// What parsing produced.
pub enum Parsed {
    /// Run the daemon.
    Run(Box<Options>),
    /// Help or version text to print before exiting successfully.
    Exit(String),
}

/// One setting, from a long option or from `-o`, with its position on the command line.
enum Setting {
    Source(PathBuf),
    Cache(CacheMode),
    Xattr(bool),
    Readdirplus(bool),
    Writeback(bool),
    DirectIo(bool),
    LogLevel(LogLevel),
}

const COMPAT_ALLOWED: &str = "source=DIR, cache=never|auto|always|metadata, xattr, no_xattr, \
     readdirplus, no_readdirplus, writeback, no_writeback, allow_direct_io, \
     log_level=error|warn|info|debug|trace|off";

fn parse_compat(item: &str) -> Result<Option<Setting>, UsageError> {
    let (key, value) = match item.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    };
    let flag = |on: bool, s: fn(bool) -> Setting| match value {
        None => Ok(Some(s(on))),
        Some(_) => Err(UsageError(format!("-o {key} takes no value"))),
    };
    match (key, value) {
        ("source", Some(dir)) if !dir.is_empty() => Ok(Some(Setting::Source(dir.into()))),
        ("cache", Some(mode)) => mode
            .parse()
            .map(|m| Some(Setting::Cache(m)))
            .map_err(|e| UsageError(format!("-o cache: {e}"))),
        ("log_level", Some(level)) => LogLevel::from_str(level, true)
            .map(|l| Some(Setting::LogLevel(l)))
            .map_err(|_| {
                UsageError(format!(
                    "-o log_level: invalid level '{level}' (allowed: error, warn, info, debug, trace, off)"
                ))
            }),
        ("xattr", _) => flag(true, Setting::Xattr),
        ("no_xattr", _) => flag(false, Setting::Xattr),
        ("readdirplus", _) => flag(true, Setting::Readdirplus),
        ("no_readdirplus", _) => flag(false, Setting::Readdirplus),
        ("writeback", _) => flag(true, Setting::Writeback),
        ("no_writeback", _) => flag(false, Setting::Writeback),
        ("allow_direct_io", _) => flag(true, Setting::DirectIo),
        ("no_allow_direct_io", _) => flag(false, Setting::DirectIo),
        // Locking options the Rust virtiofsd also accepts and ignores.
        ("no_posix_lock" | "posix_lock" | "no_flock" | "flock", None) => Ok(None),
        _ => Err(UsageError(format!(
            "invalid -o option '{item}' (allowed: {COMPAT_ALLOWED})"
        ))),
    }
}

/// Turns a clap error into one line that names the option and the allowed values.
fn one_line(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::InvalidValue || e.kind() == ErrorKind::ValueValidation {
        let arg = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(s)) => s.clone(),
            _ => "an option".into(),
        };
        let value = match e.get(ContextKind::InvalidValue) {
            Some(ContextValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        let allowed = match e.get(ContextKind::ValidValue) {
            Some(ContextValue::Strings(v)) => v.join(", "),
            _ if arg.starts_with("--thread-pool-size") => {
                format!("a whole number from 0 to {MAX_THREAD_POOL_SIZE}")
            }
            _ => String::new(),
        };
        if !allowed.is_empty() {
            return format!("invalid value '{value}' for '{arg}' (allowed: {allowed})");
        }
    }
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or("invalid command line");
    first.trim_start_matches("error: ").to_string()
}

/// Parses the command line (`argv[0]` first).
pub fn parse<I, T>(argv: I) -> Result<Parsed, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = match Args::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Parsed::Exit(e.render().to_string()))
        }
        Err(e) => return Err(UsageError(one_line(&e))),
    };
    let args = Args::from_arg_matches(&matches).map_err(|e| UsageError(one_line(&e)))?;

    // Every setting with its position; applied in order, so the last one given wins.
    let pos = |id: &str| -> Option<usize> {
        matches
            .value_source(id)
            .filter(|s| *s == clap::parser::ValueSource::CommandLine)
            .and_then(|_| matches.indices_of(id))
            .and_then(|mut i| i.next_back())
    };
    let mut settings: Vec<(usize, Setting)> = Vec::new();
    if let (Some(p), Some(dir)) = (pos("shared_dir"), &args.shared_dir) {
        settings.push((p, Setting::Source(dir.clone())));
    }
    if let Some(p) = pos("cache") {
        let mode = match args.cache {
            CacheArg::Never => CacheMode::Never,
            CacheArg::Auto => CacheMode::Auto,
            CacheArg::Always => CacheMode::Always,
            CacheArg::Metadata => CacheMode::Metadata,
        };
        settings.push((p, Setting::Cache(mode)));
    }
    for (id, on, make) in [
        ("xattr", args.xattr, Setting::Xattr as fn(bool) -> Setting),
        ("writeback", args.writeback, Setting::Writeback),
        ("allow_direct_io", args.allow_direct_io, Setting::DirectIo),
    ] {
        if let (Some(p), true) = (pos(id), on) {
            settings.push((p, make(true)));
        }
    }
    if let (Some(p), true) = (pos("no_readdirplus"), args.no_readdirplus) {
        settings.push((p, Setting::Readdirplus(false)));
    }
    if let Some(p) = pos("log_level") {
        settings.push((p, Setting::LogLevel(args.log_level)));
    }
    if let (Some(p), true) = (pos("debug"), args.debug) {
        settings.push((p, Setting::LogLevel(LogLevel::Debug)));
    }
    if let Some(indices) = matches.indices_of("compat") {
        for (p, value) in indices.zip(&args.compat) {
            for item in value.split(',').filter(|s| !s.is_empty()) {
                if let Some(s) = parse_compat(item)? {
                    settings.push((p, s));
                }
            }
        }
    }
    settings.sort_by_key(|(p, _)| *p);

    let mut share = ShareOptions {
        shared_dir: PathBuf::new(),
        cache: CacheMode::Auto,
        xattr: false,
        writeback: false,
        readdirplus: true,
        allow_direct_io: false,
    };
    let mut log_level = LogLevel::Info;
    let mut source = None;
    for (_, s) in settings {
        match s {
            Setting::Source(d) => source = Some(d),
            Setting::Cache(c) => share.cache = c,
            Setting::Xattr(b) => share.xattr = b,
            Setting::Readdirplus(b) => share.readdirplus = b,
            Setting::Writeback(b) => share.writeback = b,
            Setting::DirectIo(b) => share.allow_direct_io = b,
            Setting::LogLevel(l) => log_level = l,
        }
    }
    share.shared_dir = source.ok_or_else(|| {
        UsageError("missing shared directory: give --shared-dir DIR or -o source=DIR".into())
    })?;
    let listen = match (args.socket_path, args.fd) {
        (Some(p), None) => Listen::Path(p),
        (None, Some(fd)) if fd >= 0 => Listen::Fd(fd),
        (None, Some(fd)) => return Err(UsageError(format!("invalid --fd {fd}"))),
        _ => {
            return Err(UsageError(
                "missing vhost-user socket: give --socket-path PATH or --fd FD".into(),
            ))
        }
    };
    if share.xattr && args.sandbox == SandboxArg::Chroot {
        // fuse-backend-rs names /proc/self/fd/N by path for xattrs; a chroot has no /proc.
        return Err(UsageError(
            "--xattr cannot be served with --sandbox chroot (use namespace or none)".into(),
        ));
    }
    let mut capabilities = CapabilityPolicy::default();
    if let Some(spec) = &args.modcaps {
        capabilities
            .modify(spec)
            .map_err(|e| UsageError(e.to_string()))?;
    }
    Ok(Parsed::Run(Box::new(Options {
        share,
        listen,
        thread_pool_size: args.thread_pool_size as usize,
        log_level,
        sandbox: match args.sandbox {
            SandboxArg::Namespace => SandboxMode::Namespace,
            SandboxArg::Chroot => SandboxMode::Chroot,
            SandboxArg::None => SandboxMode::None,
        },
        seccomp: match args.seccomp {
            SeccompArg::None => SeccompMode::None,
            SeccompArg::Kill => SeccompMode::Kill,
            SeccompArg::Log => SeccompMode::Log,
            SeccompArg::Trap => SeccompMode::Trap,
        },
        capabilities,
        rlimit_nofile: args.rlimit_nofile,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        let argv = std::iter::once("async-virtiofsd").chain(args.iter().copied());
        match parse(argv) {
            Ok(Parsed::Run(o)) => Ok(*o),
            Ok(Parsed::Exit(text)) => Err(format!("exit: {text}")),
            Err(e) => Err(e.0),
        }
    }

    #[test]
    fn long_options() {
        let o = run(&[
            "--shared-dir=/srv",
            "--socket-path",
            "/tmp/s",
            "--thread-pool-size=0",
            "--cache=never",
            "--xattr",
            "--no-readdirplus",
        ])
        .unwrap();
        assert_eq!(o.share.shared_dir, PathBuf::from("/srv"));
        assert_eq!(o.listen, Listen::Path("/tmp/s".into()));
        assert_eq!(o.thread_pool_size, 0);
        assert_eq!(o.share.cache, CacheMode::Never);
        assert!(o.share.xattr && !o.share.readdirplus && !o.share.writeback);
    }

    #[test]
    fn compat_forms_and_last_one_wins() {
        let o = run(&[
            "-o",
            "source=/a,cache=always,xattr",
            "--socket-path=/s",
            "--cache=never",
            "-o",
            "no_xattr,no_posix_lock",
            "--shared-dir=/b",
        ])
        .unwrap();
        assert_eq!(o.share.shared_dir, PathBuf::from("/b"));
        assert_eq!(o.share.cache, CacheMode::Never);
        assert!(!o.share.xattr);
        let o = run(&[
            "--shared-dir=/b",
            "--fd=3",
            "-o",
            "source=/a",
            "--cache=never",
            "-o",
            "cache=metadata",
        ])
        .unwrap();
        assert_eq!(o.share.shared_dir, PathBuf::from("/a"));
        assert_eq!(o.share.cache, CacheMode::Metadata);
        assert_eq!(o.listen, Listen::Fd(3));
    }

    #[test]
    fn repeated_options_are_accepted() {
        // Kata prepends --thread-pool-size=1 to what the user configured.
        let o = run(&[
            "--thread-pool-size=1",
            "--shared-dir=/a",
            "--socket-path=/s",
            "--thread-pool-size=16",
        ])
        .unwrap();
        assert_eq!(o.thread_pool_size, 16);
    }

    #[test]
    fn bad_values_name_the_option_and_allowed_values() {
        let e = run(&["--shared-dir=/a", "--socket-path=/s", "--cache=sometimes"]).unwrap_err();
        assert!(
            e.contains("--cache") && e.contains("never, auto, always, metadata"),
            "{e}"
        );
        assert!(!e.contains('\n'), "one line: {e}");
        let e = run(&[
            "--shared-dir=/a",
            "--socket-path=/s",
            "--thread-pool-size=-1",
        ])
        .unwrap_err();
        assert!(e.contains("--thread-pool-size"), "{e}");
        let e = run(&[
            "--shared-dir=/a",
            "--socket-path=/s",
            "--thread-pool-size=99999",
        ])
        .unwrap_err();
        assert!(e.contains("0 to 1024"), "{e}");
        let e = run(&["-o", "source=/a,cache=bogus", "--socket-path=/s"]).unwrap_err();
        assert!(
            e.contains("cache") && e.contains("never, auto, always, metadata"),
            "{e}"
        );
        let e = run(&["-o", "source=/a,sandbox=chroot", "--socket-path=/s"]).unwrap_err();
        assert!(e.contains("sandbox=chroot") && e.contains("allowed"), "{e}");
        let e = run(&["--shared-dir=/a", "--socket-path=/s", "--log-level=loud"]).unwrap_err();
        assert!(e.contains("--log-level") && e.contains("trace"), "{e}");
        let e = run(&["--shared-dir=/a", "--socket-path=/s", "--bogus"]).unwrap_err();
        assert!(e.contains("--bogus"), "{e}");
    }

    #[test]
    fn missing_share_or_socket_is_an_error() {
        assert!(run(&["--socket-path=/s"])
            .unwrap_err()
            .contains("--shared-dir"));
        assert!(run(&["--shared-dir=/a"])
            .unwrap_err()
            .contains("--socket-path"));
        assert!(run(&["--shared-dir=/a", "--socket-path=/s", "--fd=3"]).is_err());
    }

    #[test]
    fn confinement_options() {
        let o = run(&["--shared-dir=/a", "--fd=3"]).unwrap();
        assert_eq!(o.sandbox, SandboxMode::Namespace);
        assert_eq!(o.seccomp, SeccompMode::Kill);
        assert_eq!(o.capabilities, CapabilityPolicy::default());
        assert_eq!(o.rlimit_nofile, None);
        let o = run(&[
            "--shared-dir=/a",
            "--fd=3",
            "--sandbox=none",
            "--seccomp",
            "log",
            "--modcaps",
            "-mknod:+sys_admin",
            "--rlimit-nofile=4096",
        ])
        .unwrap();
        assert_eq!(o.sandbox, SandboxMode::None);
        assert_eq!(o.seccomp, SeccompMode::Log);
        assert!(!o.capabilities.kept().contains(&caps::Capability::CAP_MKNOD));
        assert_eq!(o.rlimit_nofile, Some(4096));
        let e = run(&["--shared-dir=/a", "--fd=3", "--sandbox=jail"]).unwrap_err();
        assert!(
            e.contains("--sandbox") && e.contains("namespace, chroot, none"),
            "{e}"
        );
        let e = run(&["--shared-dir=/a", "--fd=3", "--seccomp=deny"]).unwrap_err();
        assert!(
            e.contains("--seccomp") && e.contains("none, kill, log, trap"),
            "{e}"
        );
        let e = run(&["--shared-dir=/a", "--fd=3", "--modcaps=+teleport"]).unwrap_err();
        assert!(e.contains("--modcaps") && e.contains("teleport"), "{e}");
        let e = run(&["--shared-dir=/a", "--fd=3", "--sandbox=chroot", "--xattr"]).unwrap_err();
        assert!(e.contains("--xattr") && e.contains("chroot"), "{e}");
        let e = run(&["--shared-dir=/a", "--fd=3", "--rlimit-nofile=lots"]).unwrap_err();
        assert!(e.contains("--rlimit-nofile"), "{e}");
    }

    #[test]
    fn debug_flag_and_log_level() {
        assert_eq!(
            run(&["-o", "source=/a", "--fd=3", "-d"]).unwrap().log_level,
            LogLevel::Debug
        );
        assert_eq!(
            run(&["-o", "source=/a,log_level=warn", "--fd=3"])
                .unwrap()
                .log_level,
            LogLevel::Warn
        );
    }
}
