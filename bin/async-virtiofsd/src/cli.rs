//! The command line, compatible with the Rust virtiofsd 1.14: every option it has is accepted by
//! the parser; those whose feature is not built yet are refused with one line (exit code 2).
//!
//! Long options and their `-o` compatibility forms ([`crate::compat`]) may be mixed and
//! repeated; the one given last wins (Kata, for one, prepends its own `--thread-pool-size`).

use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, ValueEnum};
use virtiofs_device::MAX_REQUEST_QUEUES;
use virtiofs_passthrough::{CacheMode, InodeFileHandles as NodeMode, ShareOptions};
use virtiofs_passthrough::{IdMap, IdMaps, IdRule};
use virtiofs_pipeline::{CpuSet, QueueAffinity};
use virtiofs_sandbox::{CapabilityPolicy, NsIdMaps, NsRange, SandboxMode, SeccompMode};

use crate::compat::{
    self, InodeFileHandles, MigrationMode, MigrationOnError, Negotiation, Setting,
};
use crate::scheduling::Scheduling;

/// `--poll-us` by default (see docs/performance-history.md, session 24, for how it was chosen).
pub const DEFAULT_POLL_US: u64 = 20;
/// The largest `--poll-us`: a millisecond of spinning per request is already more than any
/// wake-up it could save.
pub const MAX_POLL_US: u64 = 1000;

/// `--queue-threads`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueThreadsArg {
    /// Half the CPUs the daemon may use ([`auto_queue_threads`]).
    Auto,
    /// This many.
    Count(usize),
}

/// `--queue-threads auto` on a host where the daemon may use `cpus` CPUs (`None`: unknown, a
/// thread per queue): half of them, rounded up. The guest that fills the queues runs on the
/// same host, each request needing a vCPU to submit it as well as a queue thread to serve it;
/// queue threads for every CPU fought the guest's vCPUs for the cores. On 2 CPUs, 4 queues on
/// 1 thread against 2 served fio in a 4-vCPU guest 15 % faster at depth 16 (median of 5
/// interleaved rounds; faster in 4, level in 1), and in the harness (4 client threads) stayed
/// at 0.95 of 1 queue or above at depth 16 to 256, where 2 threads fell to 0.81-0.90 of it
/// (docs/performance.md, session 33).
fn auto_queue_threads(cpus: Option<usize>) -> usize {
    cpus.map_or(0, |n| n.div_ceil(2))
}

fn parse_queue_threads(s: &str) -> Result<QueueThreadsArg, String> {
    if s == "auto" {
        return Ok(QueueThreadsArg::Auto);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_REQUEST_QUEUES).contains(&n) => Ok(QueueThreadsArg::Count(n)),
        _ => Err(format!(
            "expected `auto` or a number from 1 to {MAX_REQUEST_QUEUES}"
        )),
    }
}

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

/// `--io-engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoEngineArg {
    /// READ, WRITE and FSYNC by system calls on the queue thread or the pool.
    Sync,
    /// Through an io_uring per request queue; the daemon does not start without one.
    IoUring,
    /// What serves best where io_uring works (see docs/performance-history.md), else `sync`.
    Auto,
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

    /// vhost-user socket path to create and listen on (`--socket` is a deprecated alias).
    #[arg(long, value_name = "PATH", alias = "socket")]
    socket_path: Option<PathBuf>,

    /// File descriptor of an already listening vhost-user socket.
    #[arg(long, value_name = "FD", conflicts_with = "socket_path")]
    fd: Option<RawFd>,

    /// Requests each request queue runs at once (0: one at a time on the queue task).
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(0..=MAX_THREAD_POOL_SIZE as u64))]
    thread_pool_size: u64,

    /// CPUs for each request queue's thread and pool runners: `auto` spreads the queues over
    /// the CPUs the daemon may use, `Q:CPUS,...` pins request queue Q (from 1) to CPUS
    /// (e.g. `1:0-1,2:2-3`). The hiprio queue and queues not named stay unpinned.
    #[arg(long, value_name = "auto|Q:CPUS,...", value_parser = clap::value_parser!(QueueAffinity))]
    queue_affinity: Option<QueueAffinity>,

    /// Threads the request queues share: request queue N runs on thread (N - 1) mod T.
    /// `auto`: half the CPUs the daemon may use, rounded up (the guest's vCPUs need the
    /// others; a thread per queue where there are two CPUs per queue). With --queue-affinity
    /// each queue has a thread of its own.
    #[arg(long, value_name = "auto|T", default_value = "auto", value_parser = parse_queue_threads)]
    queue_threads: QueueThreadsArg,

    /// Longest time, in microseconds, a request queue watches its ring for the next request
    /// before sleeping (guest notifications off meanwhile); adapts between 0 and this to the
    /// guest's pace, so an idle guest costs no CPU, yields the CPU to any thread that wants
    /// it, and does not spin while the host's runnable threads outnumber its CPUs. 0: never
    /// poll.
    #[arg(long, value_name = "US", default_value_t = DEFAULT_POLL_US,
          value_parser = clap::value_parser!(u64).range(0..=MAX_POLL_US))]
    poll_us: u64,

    /// CPU scheduling policy of the daemon's threads: `inherit` (the one it was started with,
    /// normally SCHED_OTHER) or `batch` (SCHED_BATCH: a thread woken by the guest's kick waits
    /// for its CPU instead of preempting the thread there, e.g. the vCPU that kicked, and then
    /// finds the whole burst; for hosts where the daemon shares CPUs with vCPUs, at some
    /// latency at depth 1; see docs/performance-history.md, session 22).
    #[arg(
        long,
        value_enum,
        value_name = "inherit|batch",
        default_value = "inherit"
    )]
    scheduling: Scheduling,

    /// How request queues do READ, WRITE and FSYNC: `sync` (system calls on the queue thread
    /// or the pool), `io-uring` (an io_uring per request queue; fails to start where io_uring
    /// is disabled), `auto` (see docs/performance-history.md, "io_uring"; `sync` where
    /// io_uring is disabled).
    #[arg(
        long,
        value_enum,
        value_name = "sync|io-uring|auto",
        default_value = "auto"
    )]
    io_engine: IoEngineArg,

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
    /// readdirplus, no_readdirplus, writeback, no_writeback, allow_direct_io, loglevel=LEVEL,
    /// sandbox=MODE, modcaps=CAPS, announce_submounts, no_posix_lock, no_flock, ...
    #[arg(short = 'o', value_name = "OPTIONS", action = ArgAction::Append)]
    compat: Vec<String>,

    /// Same as --log-level=debug.
    #[arg(short = 'd', hide = true)]
    debug: bool,

    /// Foreground (accepted for compatibility; the daemon always runs in the foreground).
    #[arg(short = 'f', hide = true)]
    foreground: bool,

    /// Tell the guest which directories are mount points (FUSE_ATTR_SUBMOUNT): it mounts each as
    /// a submount with its own st_dev.
    #[arg(long)]
    announce_submounts: bool,

    /// Do not tell the guest which directories are mount points (the default).
    #[arg(long)]
    no_announce_submounts: bool,

    /// Keep the guest's inodes as file handles instead of O_PATH descriptors, so the daemon
    /// holds no descriptor per inode: never (the default); prefer (fallback is an alias) uses
    /// handles where the filesystem gives them and descriptors elsewhere, and descriptors
    /// throughout, with a warning, without CAP_DAC_READ_SEARCH; mandatory refuses to start
    /// without handles and refuses files whose filesystem gives none.
    #[arg(
        long,
        require_equals = true,
        value_enum,
        value_name = "never|prefer|mandatory"
    )]
    inode_file_handles: Option<InodeFileHandles>,

    /// Do not offer HANDLE_KILLPRIV_V2 (the default).
    #[arg(long)]
    no_killpriv_v2: bool,

    /// Offer HANDLE_KILLPRIV_V2: the daemon, not the guest, clears SUID/SGID bits and file
    /// capabilities on write, truncate and O_TRUNC (saves the guest a GETXATTR per write).
    #[arg(long)]
    killpriv_v2: bool,

    /// POSIX ACLs (implies --xattr): `always` (the bare option) refuses guests without ACL
    /// support, `auto` offers them to guests that have it.
    #[arg(long, require_equals = true, num_args = 0..=1, default_missing_value = "always",
          value_enum, value_name = "never|auto|always")]
    posix_acl: Option<Negotiation>,

    /// Security labels (implies --xattr): a new file gets the security context the guest sends
    /// (SELinux, Smack) as an xattr; `always` (the bare option) refuses guests that send none,
    /// `auto` uses them with guests that do.
    #[arg(long, require_equals = true, num_args = 0..=1, default_missing_value = "always",
          value_enum, value_name = "never|auto|always")]
    security_label: Option<Negotiation>,

    /// Extended attribute name mapping rules, e.g. `:map::user.virtiofs.:` (implies --xattr;
    /// the Rust virtiofsd's syntax).
    #[arg(long, value_name = "RULES", value_parser = compat::parse_xattrmap)]
    xattrmap: Option<virtiofs_passthrough::XattrMap>,

    /// Refuse every modification of the share (EROFS, whatever the host permissions; in the
    /// namespace sandbox the share is also mounted read-only).
    #[arg(long)]
    readonly: bool,

    /// Allow shared mmap with --cache=never|metadata (DIRECT_IO_ALLOW_MMAP; guests from Linux
    /// 6.6).
    #[arg(long)]
    allow_mmap: bool,

    /// Keep O_NOATIME from the guest even where the host refuses it (EPERM); by default the file
    /// is then opened without it.
    #[arg(long)]
    preserve_noatime: bool,

    /// UID range of the sandbox's user namespace, :namespace_uid:host_uid:count: (repeatable;
    /// non-root with --sandbox namespace; more than the daemon's own uid needs newuidmap and
    /// /etc/subuid). Default: the daemon's uid as 0.
    #[arg(long, value_name = "MAP", action = ArgAction::Append,
          value_parser = compat::parse_ns_idmap)]
    uid_map: Vec<NsRange>,

    /// GID range of the sandbox's user namespace, :namespace_gid:host_gid:count: (as
    /// --uid-map, with newgidmap and /etc/subgid).
    #[arg(long, value_name = "MAP", action = ArgAction::Append,
          value_parser = compat::parse_ns_idmap)]
    gid_map: Vec<NsRange>,

    /// Translate UIDs between guest and host (repeatable): guest:GUEST:HOST:COUNT,
    /// host:HOST:GUEST:COUNT, map:GUEST:HOST:COUNT (both ways), squash-guest:GUEST:HOST:COUNT,
    /// squash-host:HOST:GUEST:COUNT, forbid-guest:GUEST:COUNT (EPERM). Unmatched ids pass
    /// unchanged.
    #[arg(long, value_name = "RULE", action = ArgAction::Append,
          value_parser = compat::parse_translate_idmap)]
    translate_uid: Vec<IdRule>,

    /// Translate GIDs between guest and host, as --translate-uid.
    #[arg(long, value_name = "RULE", action = ArgAction::Append,
          value_parser = compat::parse_translate_idmap)]
    translate_gid: Vec<IdRule>,

    /// Live migration: how inodes are transferred [not implemented yet].
    #[arg(long, value_enum)]
    migration_mode: Option<MigrationMode>,

    /// Live migration: what an inode that cannot migrate does [not implemented yet].
    #[arg(long, value_enum)]
    migration_on_error: Option<MigrationOnError>,

    /// Live migration: check inode identity with file handles [not implemented yet].
    #[arg(long)]
    migration_verify_handles: bool,

    /// Live migration: re-check paths at switch-over [not implemented yet].
    #[arg(long)]
    migration_confirm_paths: bool,

    /// Tag advertised in the virtio-fs config space (VHOST_USER_PROTOCOL_F_CONFIG; QEMU ignores
    /// it, and QEMU 7.1 to 8.0 crash when it is offered).
    #[arg(long, value_parser = compat::parse_tag)]
    tag: Option<String>,

    /// Group owning the created vhost-user socket (mode 0770).
    #[arg(long, value_name = "GROUP", conflicts_with = "fd")]
    socket_group: Option<String>,

    /// Most inodes (files, directories, symlinks, ...) the shared tree may hold, what it holds
    /// at start included; making more is EDQUOT.
    #[arg(long, value_name = "N", value_parser = quota::parse_count)]
    max_inodes: Option<u64>,

    /// Most bytes the shared tree's regular files may allocate, what they hold at start
    /// included, e.g. 10G (K, M, G, T: powers of 1024); growing past it is EDQUOT.
    #[arg(long, value_name = "SIZE", value_parser = quota::parse_size)]
    max_bytes: Option<u64>,

    /// Print the vhost-user.json capabilities (what libvirt reads) and exit.
    #[arg(long)]
    print_capabilities: bool,

    /// Log to syslog (/dev/log) instead of stderr.
    #[arg(long)]
    syslog: bool,

    /// Print the man page (roff) generated from this CLI definition and exit.
    #[arg(long, hide = true)]
    print_man_page: bool,

    /// Print a completion script for SHELL generated from this CLI definition and exit.
    #[arg(long, value_name = "SHELL", hide = true)]
    print_completions: Option<clap_complete::Shell>,
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
    /// `--queue-affinity`.
    pub queue_affinity: Option<QueueAffinity>,
    /// `--queue-threads`, resolved (0: a thread per request queue).
    pub queue_threads: usize,
    /// `--poll-us`.
    pub poll_max: Duration,
    /// `--scheduling`.
    pub scheduling: Scheduling,
    /// `--io-engine` (`auto` is resolved when the daemon starts).
    pub io_engine: IoEngineArg,
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
    /// `--syslog`.
    pub syslog: bool,
    /// `--socket-group`.
    pub socket_group: Option<String>,
    /// `--tag`.
    pub tag: Option<String>,
    /// `--uid-map`, `--gid-map`: the namespace sandbox's user namespace.
    pub ns_idmaps: NsIdMaps,
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

/// The refusal of options whose feature is not built yet, naming them as written.
fn not_yet(names: &[String]) -> UsageError {
    let verb = if names.len() == 1 { "is" } else { "are" };
    UsageError(format!("{} {verb} not implemented yet", names.join(", ")))
}

/// Parses the command line (`argv[0]` first), with systemd socket activation from the
/// environment (`LISTEN_FDS` / `LISTEN_PID`).
pub fn parse<I, T>(argv: I) -> Result<Parsed, UsageError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let activated = crate::systemd::activation_fd().map_err(|e| UsageError(e.to_string()));
    parse_with(argv, activated)
}

/// Parses the command line; `activated` is the socket systemd passed, if any.
fn parse_with<I, T>(
    argv: I,
    activated: Result<Option<RawFd>, UsageError>,
) -> Result<Parsed, UsageError>
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
    if args.print_man_page {
        return Ok(Parsed::Exit(crate::manual::man_page(Args::command())));
    }
    if let Some(shell) = args.print_completions {
        return Ok(Parsed::Exit(crate::manual::completions(
            Args::command(),
            shell,
        )));
    }
    if args.print_capabilities {
        // Needs no share or socket: libvirt runs it to learn which command line to build.
        return Ok(Parsed::Exit(compat::capabilities_json()));
    }

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
    let flags = [
        ("xattr", args.xattr, Setting::Xattr(true)),
        ("writeback", args.writeback, Setting::Writeback(true)),
        (
            "allow_direct_io",
            args.allow_direct_io,
            Setting::DirectIo(true),
        ),
        (
            "no_readdirplus",
            args.no_readdirplus,
            Setting::Readdirplus(false),
        ),
        ("debug", args.debug, Setting::LogLevel(LogLevel::Debug)),
        (
            "killpriv_v2",
            args.killpriv_v2,
            Setting::KillprivV2(true, "--killpriv-v2".into()),
        ),
        (
            "no_killpriv_v2",
            args.no_killpriv_v2,
            Setting::KillprivV2(false, "--no-killpriv-v2".into()),
        ),
        (
            "announce_submounts",
            args.announce_submounts,
            Setting::AnnounceSubmounts(true, "--announce-submounts".into()),
        ),
        (
            "no_announce_submounts",
            args.no_announce_submounts,
            Setting::AnnounceSubmounts(false, "--no-announce-submounts".into()),
        ),
    ];
    for (id, on, setting) in flags {
        if let (Some(p), true) = (pos(id), on) {
            settings.push((p, setting));
        }
    }
    if let Some(p) = pos("log_level") {
        settings.push((p, Setting::LogLevel(args.log_level)));
    }
    if let Some(p) = pos("sandbox") {
        let mode = match args.sandbox {
            SandboxArg::Namespace => SandboxMode::Namespace,
            SandboxArg::Chroot => SandboxMode::Chroot,
            SandboxArg::None => SandboxMode::None,
        };
        settings.push((p, Setting::Sandbox(mode)));
    }
    if let (Some(p), Some(map)) = (pos("xattrmap"), &args.xattrmap) {
        settings.push((p, Setting::XattrMap(map.clone())));
    }
    if let (Some(p), Some(caps)) = (pos("modcaps"), &args.modcaps) {
        settings.push((p, Setting::Modcaps(caps.clone())));
    }
    if let (Some(p), Some(mode)) = (pos("posix_acl"), args.posix_acl) {
        settings.push((p, Setting::PosixAcl(mode, "--posix-acl".into())));
    }
    if let (Some(p), Some(mode)) = (pos("security_label"), args.security_label) {
        settings.push((p, Setting::SecurityLabel(mode, "--security-label".into())));
    }
    // Options whose feature is not built yet: refused (the `bool` says whether one was given).
    let refused = [
        (
            "migration_mode",
            "--migration-mode",
            args.migration_mode.is_some(),
        ),
        (
            "migration_on_error",
            "--migration-on-error",
            args.migration_on_error.is_some(),
        ),
        (
            "migration_verify_handles",
            "--migration-verify-handles",
            args.migration_verify_handles,
        ),
        (
            "migration_confirm_paths",
            "--migration-confirm-paths",
            args.migration_confirm_paths,
        ),
    ];
    for (id, name, given) in refused {
        if let (Some(p), true) = (pos(id), given) {
            settings.push((p, Setting::NotYet(name.into())));
        }
    }
    if let Some(indices) = matches.indices_of("compat") {
        for (p, value) in indices.zip(&args.compat) {
            for item in value.split(',').filter(|s| !s.is_empty()) {
                if let Some(s) = compat::parse_compat(item)? {
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
        announce_submounts: false,
        xattrmap: None,
        posix_acl: virtiofs_passthrough::Negotiation::Never,
        security_label: virtiofs_passthrough::Negotiation::Never,
        readonly: args.readonly,
        killpriv_v2: false,
        allow_mmap: args.allow_mmap,
        preserve_noatime: args.preserve_noatime,
        posix_locks: true,
        flock_locks: true,
        inode_file_handles: match args.inode_file_handles {
            None | Some(InodeFileHandles::Never) => NodeMode::Never,
            Some(InodeFileHandles::Prefer | InodeFileHandles::Fallback) => NodeMode::Prefer,
            Some(InodeFileHandles::Mandatory) => NodeMode::Mandatory,
        },
        max_inodes: args.max_inodes,
        max_bytes: args.max_bytes,
        idmaps: IdMaps {
            uid: IdMap::new(&args.translate_uid)
                .map_err(|e| UsageError(format!("--translate-uid: {e}")))?,
            gid: IdMap::new(&args.translate_gid)
                .map_err(|e| UsageError(format!("--translate-gid: {e}")))?,
        },
    };
    let mut log_level = LogLevel::Info;
    let mut source = None;
    let mut sandbox = SandboxMode::Namespace;
    let mut modcaps = None;
    let mut not_implemented = Vec::new();
    let negotiation = |mode| match mode {
        Negotiation::Never => virtiofs_passthrough::Negotiation::Never,
        Negotiation::Auto => virtiofs_passthrough::Negotiation::Auto,
        Negotiation::Always => virtiofs_passthrough::Negotiation::Always,
    };
    for (_, s) in settings {
        match s {
            Setting::Source(d) => source = Some(d),
            Setting::Cache(c) => share.cache = c,
            Setting::Xattr(b) => share.xattr = b,
            Setting::XattrMap(m) => share.xattrmap = Some(m),
            Setting::Readdirplus(b) => share.readdirplus = b,
            Setting::Writeback(b) => share.writeback = b,
            Setting::DirectIo(b) => share.allow_direct_io = b,
            Setting::LogLevel(l) => log_level = l,
            Setting::Sandbox(m) => sandbox = m,
            Setting::Modcaps(c) => modcaps = Some(c),
            Setting::KillprivV2(on, _) => share.killpriv_v2 = on,
            Setting::PosixAcl(mode, _) => share.posix_acl = negotiation(mode),
            Setting::SecurityLabel(mode, _) => share.security_label = negotiation(mode),
            Setting::AnnounceSubmounts(on, _) => share.announce_submounts = on,
            Setting::PosixLock(on) => share.posix_locks = on,
            Setting::Flock(on) => share.flock_locks = on,
            Setting::NotYet(name) => not_implemented.push(name),
        }
    }
    // A map is pointless without xattrs: it turns them on (as in the Rust virtiofsd).
    share.xattr |= share.xattrmap.is_some();
    // ACLs are xattrs.
    share.xattr |= share.posix_acl != virtiofs_passthrough::Negotiation::Never;
    // Labels are xattrs.
    share.xattr |= share.security_label != virtiofs_passthrough::Negotiation::Never;
    if !not_implemented.is_empty() {
        return Err(not_yet(&not_implemented));
    }
    let ns_idmaps = NsIdMaps {
        uid: args.uid_map,
        gid: args.gid_map,
    };
    if !ns_idmaps.is_empty() && sandbox != SandboxMode::Namespace {
        return Err(UsageError(
            "--uid-map and --gid-map need --sandbox namespace (they set up its user namespace)"
                .into(),
        ));
    }
    share.shared_dir = source.ok_or_else(|| {
        UsageError("missing shared directory: give --shared-dir DIR or -o source=DIR".into())
    })?;
    let listen = match (args.socket_path, args.fd, activated?) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(UsageError(
                "systemd passed a socket (LISTEN_FDS): give neither --socket-path nor --fd".into(),
            ))
        }
        (None, None, Some(_)) if args.socket_group.is_some() => {
            return Err(UsageError(
                "--socket-group is for a socket created with --socket-path, not one systemd passed"
                    .into(),
            ))
        }
        (None, None, Some(fd)) => Listen::Fd(fd),
        (Some(p), None, None) => Listen::Path(p),
        (None, Some(fd), None) if fd >= 0 => Listen::Fd(fd),
        (None, Some(fd), None) => return Err(UsageError(format!("invalid --fd {fd}"))),
        _ => {
            return Err(UsageError(
                "missing vhost-user socket: give --socket-path PATH or --fd FD".into(),
            ))
        }
    };
    // open_by_handle_at needs DAC_READ_SEARCH; `--modcaps` may still take it away.
    let mut capabilities =
        CapabilityPolicy::for_file_handles(share.inode_file_handles != NodeMode::Never);
    if let Some(spec) = &modcaps {
        capabilities
            .modify(spec)
            .map_err(|e| UsageError(e.to_string()))?;
    }
    if let Some(affinity) = &args.queue_affinity {
        let allowed = CpuSet::of_this_thread().map_err(|e| {
            UsageError(format!(
                "--queue-affinity: cannot read the CPUs allowed: {e}"
            ))
        })?;
        affinity
            .check(MAX_REQUEST_QUEUES, &allowed)
            .map_err(|e| UsageError(format!("--queue-affinity: {e}")))?;
    }
    let queue_threads =
        match (args.queue_threads, &args.queue_affinity) {
            (QueueThreadsArg::Auto, Some(_)) => 0,
            (QueueThreadsArg::Count(_), Some(_)) => return Err(UsageError(
                "--queue-threads cannot be combined with --queue-affinity (each pinned queue has \
                 a thread of its own)"
                    .into(),
            )),
            (QueueThreadsArg::Count(n), None) => n,
            (QueueThreadsArg::Auto, None) => auto_queue_threads(
                CpuSet::of_this_thread()
                    .map(|cpus| cpus.cpus().len())
                    .ok()
                    .filter(|&n| n > 0)
                    .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get())),
            ),
        };
    Ok(Parsed::Run(Box::new(Options {
        share,
        listen,
        thread_pool_size: args.thread_pool_size as usize,
        queue_affinity: args.queue_affinity,
        queue_threads,
        poll_max: Duration::from_micros(args.poll_us),
        scheduling: args.scheduling,
        io_engine: args.io_engine,
        log_level,
        sandbox,
        seccomp: match args.seccomp {
            SeccompArg::None => SeccompMode::None,
            SeccompArg::Kill => SeccompMode::Kill,
            SeccompArg::Log => SeccompMode::Log,
            SeccompArg::Trap => SeccompMode::Trap,
        },
        capabilities,
        rlimit_nofile: args.rlimit_nofile,
        syslog: args.syslog,
        socket_group: args.socket_group,
        tag: args.tag,
        ns_idmaps,
    })))
}

mod quota;
#[cfg(test)]
mod tests;
