//! `vhost-user-fs-soak`: runs the soak test of [`vhost_user_fs_client::soak`] against a
//! virtio-fs daemon binary and prints the report. Exit status: 0 pass, 1 the pass criteria
//! failed, 2 bad usage, 3 the run stopped early (daemon stalled, crashed or broke the protocol).
//! See `docs/soak.md`.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vhost_user_fs_client::soak::{self, DaemonProcess, SoakConfig, SoakError, Tolerance};

const USAGE: &str = "\
usage: vhost-user-fs-soak --daemon PATH [options]

  --daemon PATH            the virtio-fs daemon binary (async-virtiofsd or compatible: it gets
                           --shared-dir DIR --socket-path SOCK and then every --daemon-arg)
  --duration D             how long to run: 90s, 10m, 1h (default 60s)
  --queues N               request queues (default 4)
  --depth N                requests in flight in total (default 256)
  --share DIR              the shared directory (default: a new temp dir, removed at the end);
                           the soak works in DIR/soak, which it empties first
  --daemon-arg ARG         an extra daemon argument (repeatable), e.g. --daemon-arg=--sandbox=none
  --files N                files in the workload (default 16)
  --file-size BYTES        size of each file, K/M/G suffixes allowed (default 4M)
  --block-size BYTES       bytes per WRITE / READ (default 64K)
  --seed N                 workload seed (default 1)
  --destroy-every D        DESTROY + INIT interval, 0 = never (default 30s)
  --reconnect-every D      disconnect + new daemon interval, 0 = never (default duration/3)
  --fd-slack N             descriptors allowed above the first daemon's start (default 2)
  --rss-growth-mib N       RSS growth allowed (default 32)
  --quiet                  no progress lines
";

fn duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("bad duration unit in {s:?} (s, m or h)")),
    };
    Ok(Duration::from_secs(n * mult))
}

fn bytes(s: &str) -> Result<u64, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => return Err(format!("bad size unit in {s:?} (K, M or G)")),
    };
    Ok(n << shift)
}

fn number<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{flag}: bad number {s:?}"))
}

struct Args {
    daemon: PathBuf,
    share: Option<PathBuf>,
    daemon_args: Vec<String>,
    cfg: SoakConfig,
    tol: Tolerance,
}

fn parse() -> Result<Args, String> {
    let mut cfg = SoakConfig {
        destroy_every: Some(Duration::from_secs(30)),
        reconnect_every: None,
        ..Default::default()
    };
    let mut tol = Tolerance::default();
    let (mut daemon, mut share, mut daemon_args) = (None, None, Vec::new());
    let mut reconnect = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "--quiet" {
            cfg.progress_every = None;
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let v = match inline {
            Some(v) => v,
            None => it.next().ok_or(format!("{flag} needs a value"))?,
        };
        let every = |v: &str| duration(v).map(|d| (!d.is_zero()).then_some(d));
        match flag.as_str() {
            "--daemon" => daemon = Some(PathBuf::from(v)),
            "--share" => share = Some(PathBuf::from(v)),
            "--daemon-arg" => daemon_args.push(v),
            "--duration" => cfg.duration = duration(&v)?,
            "--queues" => cfg.queues = number(&flag, &v)?,
            "--depth" => cfg.depth = number(&flag, &v)?,
            "--files" => cfg.files = number(&flag, &v)?,
            "--file-size" => cfg.file_size = bytes(&v)?,
            "--block-size" => cfg.block_size = bytes(&v)? as usize,
            "--seed" => cfg.seed = number(&flag, &v)?,
            "--destroy-every" => cfg.destroy_every = every(&v)?,
            "--reconnect-every" => reconnect = Some(every(&v)?),
            "--fd-slack" => tol.fd_slack = number(&flag, &v)?,
            "--rss-growth-mib" => tol.rss_growth_kib = number::<u64>(&flag, &v)? << 10,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    cfg.reconnect_every = reconnect.unwrap_or(Some(cfg.duration / 3).filter(|d| !d.is_zero()));
    Ok(Args {
        daemon: daemon.ok_or("--daemon is required")?,
        share,
        daemon_args,
        cfg,
        tol,
    })
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("vhost-user-fs-soak: {e}\n");
            }
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let work = std::env::temp_dir().join(format!("vhost-user-fs-soak.{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("vhost-user-fs-soak: creating {}: {e}", work.display());
        return ExitCode::from(2);
    }
    let share = args.share.clone().unwrap_or_else(|| work.join("share"));
    if let Err(e) = std::fs::create_dir_all(&share) {
        eprintln!("vhost-user-fs-soak: creating {}: {e}", share.display());
        return ExitCode::from(2);
    }
    let started = AtomicUsize::new(0);
    let start_daemon = || {
        let n = started.fetch_add(1, Ordering::Relaxed);
        let socket = work.join(format!("vfs-{n}.sock"));
        let mut cmd = Command::new(&args.daemon);
        cmd.arg("--shared-dir")
            .arg(&share)
            .arg("--socket-path")
            .arg(&socket)
            .args(&args.daemon_args);
        DaemonProcess::spawn(cmd, socket, Duration::from_secs(30))
    };
    let c = &args.cfg;
    eprintln!(
        "vhost-user-fs-soak: {:?} on {} with {} queues, depth {}, {} files of {} KiB, DESTROY \
         every {:?}, new daemon every {:?}",
        c.duration,
        share.display(),
        c.queues,
        c.depth,
        c.files,
        c.file_size >> 10,
        c.destroy_every,
        c.reconnect_every
    );
    let result = soak::run(c, &share, start_daemon);
    let code = match result {
        Ok(report) => {
            print!("{report}");
            let failures = report.failures(&args.tol);
            if failures.is_empty() {
                println!("PASS");
                ExitCode::SUCCESS
            } else {
                for f in &failures {
                    println!("FAIL: {f}");
                }
                ExitCode::from(1)
            }
        }
        Err(SoakError::Aborted { reason, report }) => {
            print!("{report}");
            println!("FAIL: {reason}");
            ExitCode::from(3)
        }
        Err(e) => {
            println!("FAIL: {e}");
            ExitCode::from(3)
        }
    };
    // The sockets, and the share if we made it.
    let _ = std::fs::remove_dir_all(&work);
    code
}
