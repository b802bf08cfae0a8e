//! Starting a backend daemon on a fresh socket, and reading its CPU time and peak RSS from
//! /proc (over the whole process tree: the C and the Rust virtiofsd may fork a sandboxed child
//! that does the work while the parent waits). What the daemons are, where their binaries are,
//! their command lines and what they cannot do: `vhost_user_fs_client::daemons`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vhost_user_fs_client::daemons::{proc_cpu_seconds, process_tree, Options};
use vhost_user_fs_client::{DeviceConfig, FsClient};

pub use vhost_user_fs_client::daemons::Kind;

/// How to start one daemon kind.
#[derive(Debug, Clone)]
pub struct DaemonSpec {
    pub kind: Kind,
    pub bin: PathBuf,
    /// Extra arguments appended to the standard command line (e.g. `--sandbox none`).
    pub extra: Vec<String>,
}

impl DaemonSpec {
    /// The command line for `socket`, `share` and a pool of `pool` threads: the configuration
    /// `pool=N` ([`Options::bench`]: cache=auto for all three; see docs/performance.md), then
    /// the extra arguments.
    pub fn args(&self, socket: &Path, share: &Path, pool: u32) -> Vec<String> {
        let opts = Options::bench(pool).with_extra(self.extra.iter().cloned());
        self.kind.args(socket, share, &opts)
    }
}

/// A running daemon; killed (with any children it forked) on drop.
pub struct Running {
    child: Child,
    pub pid: u32,
    log: PathBuf,
    /// The process tree as seen once the daemon accepted us (for post-mortems).
    known: Vec<u32>,
}

impl Running {
    /// Starts `spec` with its stderr/stdout in `log`.
    pub fn start(
        spec: &DaemonSpec,
        socket: &Path,
        share: &Path,
        pool: u32,
        log: &Path,
    ) -> Result<Self, String> {
        let out = fs::File::create(log).map_err(|e| format!("log file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("log file: {e}"))?;
        let mut cmd = Command::new(&spec.bin);
        crate::placement::confine_daemon(&mut cmd);
        let child = cmd
            .args(spec.args(socket, share, pool))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", spec.bin.display()))?;
        Ok(Self {
            pid: child.id(),
            child,
            log: log.to_path_buf(),
            known: Vec::new(),
        })
    }

    /// Whether the daemon (the process we started) is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Exit status text, if it exited.
    pub fn exit_status(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(st)) => Some(st.to_string()),
            _ => None,
        }
    }

    /// The last lines the daemon logged (for skip reasons).
    pub fn log_tail(&self, lines: usize) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
        v[v.len().saturating_sub(lines)..].join(" | ")
    }

    /// Connects the client, retrying while the socket is not listening yet. A refused connect
    /// never reaches the daemon's accept, so the retries cannot be taken for a frontend (see
    /// `vhost_user_fs_client::daemons::wait_for_socket`).
    pub fn connect(&mut self, config: &DeviceConfig) -> Result<FsClient, String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if !self.alive() {
                return Err(format!(
                    "daemon exited before accepting ({}): {}",
                    self.exit_status().unwrap_or_default(),
                    self.log_tail(3)
                ));
            }
            if config.socket.exists() {
                match FsClient::connect(config.clone()) {
                    Ok(c) => {
                        self.known = process_tree(self.pid);
                        return Ok(c);
                    }
                    Err(vhost_user_fs_client::Error::Setup {
                        step: "connect", ..
                    }) if Instant::now() < deadline => {}
                    Err(e) => {
                        std::thread::sleep(Duration::from_millis(100));
                        let tail = self.log_tail(3);
                        return Err(format!("vhost-user setup failed: {e}; daemon log: {tail}"));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err("socket not listening after 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Why the daemon died, as far as we can tell: its exit status, and a seccomp kill of one
    /// of its processes if the kernel audit log (dmesg) recorded one.
    pub fn death_reason(&mut self) -> String {
        let status = self.exit_status().unwrap_or_else(|| "still running".into());
        match seccomp_kill(&self.known) {
            Some(k) => format!("daemon exited ({status}): {k}"),
            None => format!("daemon exited ({status}); see {}", self.log.display()),
        }
    }

    /// CPU seconds (user + system) of the daemon's process tree.
    pub fn cpu_seconds(&self) -> f64 {
        process_tree(self.pid)
            .iter()
            .map(|&p| proc_cpu_seconds(p))
            .sum()
    }

    /// Peak RSS (VmHWM, KiB): the largest of the process tree.
    pub fn peak_rss_kib(&self) -> u64 {
        process_tree(self.pid)
            .iter()
            .filter_map(|&p| vm_hwm_kib(p))
            .max()
            .unwrap_or(0)
    }

    /// Waits up to `grace` for the daemon to exit after the client disconnected, then kills
    /// what is left of its process tree.
    pub fn finish(mut self, grace: Duration) -> Option<String> {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st.to_string());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pids = process_tree(self.pid);
        if self.alive() {
            let _ = self.child.kill();
        }
        for p in pids.into_iter().filter(|&p| p != self.pid) {
            // Children the daemon forked (its sandbox); they are ours to clean up.
            unsafe {
                libc::kill(p as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

/// VmHWM of a process in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// A seccomp kill (audit type 1326) of one of `pids` in the kernel log, described.
fn seccomp_kill(pids: &[u32]) -> Option<String> {
    let out = Command::new("dmesg").stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| {
        l.contains("type=1326") && pids.iter().any(|p| l.contains(&format!(" pid={p} ")))
    })?;
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .map(|v| v.trim_matches('"').to_string())
    };
    let nr = field("syscall=").unwrap_or_default();
    let name = match nr.as_str() {
        "204" => " (sched_getaffinity)",
        "203" => " (sched_setaffinity)",
        "435" => " (clone3)",
        "334" => " (rseq)",
        _ => "",
    };
    Some(format!(
        "killed by its own seccomp filter (signal {}) in thread \"{}\" on syscall {nr}{name} \
         [kernel audit log]",
        field("sig=").unwrap_or_default(),
        field("comm=").unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vhost_user_fs_client::daemons::{
        BENCH_TOOLS_ENV, BENCH_TOOLS_SUBDIR, C_VIRTIOFSD_PATH, RUST_VIRTIOFSD_VERSION,
    };

    /// The command lines of the `pool=N` configurations, as docs/performance.md quotes them.
    #[test]
    fn command_lines_are_the_documented_ones() {
        let doc = include_str!("../../docs/performance.md");
        for (kind, bin) in [
            (Kind::Ours, "async-virtiofsd"),
            (Kind::C, C_VIRTIOFSD_PATH),
            (Kind::Rust, "virtiofsd"),
        ] {
            let spec = DaemonSpec {
                kind,
                bin: bin.into(),
                extra: Vec::new(),
            };
            let line = spec
                .args(Path::new("S"), Path::new("D"), 7)
                .join(" ")
                .replace('7', "N");
            let row = format!("| {} | `{bin} {line}` |", kind.name());
            assert!(doc.contains(&row), "docs/performance.md has no row {row}");
        }
    }

    #[test]
    fn extra_arguments_follow_the_configuration() {
        let spec = DaemonSpec {
            kind: Kind::C,
            bin: C_VIRTIOFSD_PATH.into(),
            extra: vec!["-o".into(), "sandbox=chroot".into()],
        };
        assert_eq!(
            spec.args(Path::new("/s"), Path::new("/d"), 64),
            [
                "--socket-path=/s",
                "-o",
                "source=/d,cache=auto",
                "--thread-pool-size=64",
                "-o",
                "sandbox=chroot"
            ]
        );
    }

    /// benches/run (bash) installs the reference daemons where the definitions look for them,
    /// and scripts/test.sh points the bridge tests at the same Rust virtiofsd.
    #[test]
    fn the_scripts_agree_with_the_definitions() {
        let run = include_str!("../run");
        let tools = format!(
            "${{{BENCH_TOOLS_ENV}:-${{XDG_CACHE_HOME:-$HOME/.cache}}/{BENCH_TOOLS_SUBDIR}}}"
        );
        for want in [
            format!("C_BIN={C_VIRTIOFSD_PATH}\n"),
            format!("TOOLS=\"{tools}\"\n"),
            "RUST_BIN=\"$TOOLS/bin/virtiofsd\"\n".to_string(),
            format!("--version {RUST_VIRTIOFSD_VERSION} --locked --root \"$TOOLS\""),
            format!("!= *{RUST_VIRTIOFSD_VERSION}*"),
        ] {
            assert!(run.contains(&want), "benches/run lacks {want:?}");
        }
        let test_sh = include_str!("../../scripts/test.sh");
        let want = format!("RUST_VIRTIOFSD_BIN=\"{tools}/bin/virtiofsd\"");
        assert!(test_sh.contains(&want), "scripts/test.sh lacks {want:?}");
    }
}
