//! The fio mode: the kernel's own FUSE client drives each daemon through the
//! `vhost-user-fs-mount` bridge (/dev/fuse ↔ vhost-user), and fio (Debian's) measures what an
//! application sees. Rows go to the same `results.csv`, with `workload` prefixed `fio-`.
//!
//! Every cell: start the daemon over the prepared share, mount it through the bridge
//! (`--queues Q`), run fio with `--numjobs=DEPTH` synchronous (`psync`) O_DIRECT jobs (so depth
//! means requests in flight whatever the daemon negotiates: FUSE's async direct I/O depends on
//! `FUSE_ASYNC_DIO`), unmount. O_DIRECT keeps the host's page cache of the *mount* out of the
//! way; what the daemon does with it on the host file is up to the daemon. `host-syscalls`
//! rows are fio on the shared directory itself.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vhost_user_fs_client::daemons;

use crate::daemon::{DaemonSpec, Running};

/// fio workloads, in report order.
pub const WORKLOADS: [&str; 4] = [
    "fio-randread4k",
    "fio-randwrite4k",
    "fio-seqread1m",
    "fio-seqwrite1m",
];

/// The data file fio works on, in the share.
pub const DATA_FILE: &str = "fio-data.bin";
/// Its size.
pub const DATA_SIZE: u64 = 256 << 20;

/// `(rw, bs)` of a workload.
pub fn spec(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "fio-randread4k" => ("randread", "4k"),
        "fio-randwrite4k" => ("randwrite", "4k"),
        "fio-seqread1m" => ("read", "1m"),
        "fio-seqwrite1m" => ("write", "1m"),
        _ => return None,
    })
}

/// Creates the data file (non-sparse, so reads hit real blocks) unless it is there.
pub fn prepare(share: &Path) -> Result<(), String> {
    let p = share.join(DATA_FILE);
    if fs::metadata(&p)
        .map(|m| m.len() == DATA_SIZE)
        .unwrap_or(false)
    {
        return Ok(());
    }
    let mut f = fs::File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..DATA_SIZE >> 20 {
        for b in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        f.write_all(&chunk).map_err(|e| e.to_string())?;
    }
    f.sync_all().map_err(|e| e.to_string())
}

/// What one fio run measured.
#[derive(Debug, Clone, Copy)]
pub struct FioResult {
    pub ops_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Seconds fio ran (ramp + measurement), for CPU accounting.
    pub wall_s: f64,
}

/// Runs fio on `dir` for `workload` with `depth` jobs.
pub fn run(
    fio: &Path,
    dir: &Path,
    workload: &str,
    depth: usize,
    runtime: Duration,
    ramp: Duration,
) -> Result<FioResult, String> {
    let (rw, bs) = spec(workload).ok_or_else(|| format!("unknown fio workload {workload}"))?;
    let per_job = (DATA_SIZE / depth.max(1) as u64).max(4 << 20) & !((1 << 20) - 1);
    let t = Instant::now();
    let out = Command::new(fio)
        .arg("--name=bench")
        .arg(format!("--filename={}", dir.join(DATA_FILE).display()))
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={bs}"))
        .args([
            "--direct=1",
            "--ioengine=psync",
            "--thread",
            "--group_reporting",
        ])
        .args(["--time_based", "--randrepeat=0", "--norandommap"])
        .arg(format!("--numjobs={depth}"))
        .arg(format!("--size={per_job}"))
        .arg(format!("--offset_increment={per_job}"))
        .arg(format!("--runtime={}ms", runtime.as_millis()))
        .arg(format!("--ramp_time={}ms", ramp.as_millis()))
        .args(["--percentile_list=50:99:99.9", "--output-format=json"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", fio.display()))?;
    let wall_s = t.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "fio failed ({}): {}",
            out.status,
            err.lines().last().unwrap_or("")
        ));
    }
    let dir_key = if rw.contains("read") { "read" } else { "write" };
    parse(&text, dir_key).map(|(ops, p50, p99, p999)| FioResult {
        ops_per_s: ops,
        p50_us: p50,
        p99_us: p99,
        p999_us: p999,
        wall_s,
    })
}

/// The number after `"key" :` at or after `from`.
fn number_after(s: &str, key: &str, from: usize) -> Option<(f64, usize)> {
    let pat = format!("\"{key}\" :");
    let i = s[from..].find(&pat)? + from + pat.len();
    let rest = s[i..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    Some((rest[..end].parse().ok()?, i))
}

/// `(iops, p50, p99, p99.9 completion latency in µs)` of the `read` or `write` section of fio's
/// JSON output (one job: `--group_reporting`).
fn parse(json: &str, section: &str) -> Result<(f64, f64, f64, f64), String> {
    let start = json
        .find("\"jobs\"")
        .and_then(|j| json[j..].find(&format!("\"{section}\" :")).map(|i| i + j))
        .ok_or("no job section in fio's output")?;
    let (iops, _) = number_after(json, "iops", start).ok_or("no iops")?;
    let clat = json[start..]
        .find("\"clat_ns\"")
        .map(|i| i + start)
        .ok_or("no clat_ns")?;
    let pct = |k: &str| {
        number_after(json, k, clat)
            .map(|(v, _)| v / 1000.0)
            .ok_or(format!("no {k} percentile"))
    };
    Ok((
        iops,
        pct("50.000000")?,
        pct("99.000000")?,
        pct("99.900000")?,
    ))
}

/// A bridge mount for one cell; unmounted (and never left behind) on drop.
pub struct BridgeMount {
    child: Option<Child>,
    pub mnt: PathBuf,
    log: PathBuf,
}

fn fuse_mounted(mnt: &Path) -> bool {
    let want = mnt.to_string_lossy().replace(' ', "\\040");
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.get(4) == Some(&want.as_str()) && l.contains(" - fuse")
        })
}

fn detach(mnt: &Path) {
    if let Ok(c) = std::ffi::CString::new(mnt.to_string_lossy().as_bytes()) {
        for _ in 0..4 {
            if !fuse_mounted(mnt) {
                break;
            }
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

impl BridgeMount {
    /// Mounts `socket` on `mnt` with `queues` request queues; waits for the FUSE session.
    pub fn start(
        bridge: &Path,
        socket: &Path,
        mnt: &Path,
        queues: u16,
        depth: usize,
        log: &Path,
    ) -> Result<Self, String> {
        fs::create_dir_all(mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
        let out = fs::File::create(log).map_err(|e| format!("bridge log: {e}"))?;
        let child = Command::new(bridge)
            .arg(socket)
            .arg(mnt)
            .arg(format!("--queues={queues}"))
            .arg(format!("--queue-depth={}", depth.clamp(16, 1024)))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bridge.display()))?;
        let mut m = Self {
            child: Some(child),
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = fs::read_to_string(log).unwrap_or_default();
            if text.contains("FUSE session up") {
                return Ok(m);
            }
            if let Some(Ok(Some(st))) = m.child.as_mut().map(|c| c.try_wait()) {
                let last = text
                    .lines()
                    .rfind(|l| l.contains("error"))
                    .unwrap_or("")
                    .to_string();
                return Err(format!("bridge exited ({st}): {last}"));
            }
            if Instant::now() >= deadline {
                return Err("bridge: no FUSE session after 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether the bridge still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The bridge's log tail.
    pub fn log_tail(&self) -> String {
        let s = fs::read_to_string(&self.log).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(2)..].join(" | ")
    }
}

impl Drop for BridgeMount {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(8);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        detach(&self.mnt);
    }
}

/// One fio cell on a daemon.
#[allow(clippy::too_many_arguments)]
pub fn daemon_cell(
    spec: &DaemonSpec,
    pool: u32,
    bridge: &Path,
    fio: &Path,
    workload: &str,
    depth: usize,
    queues: u16,
    runtime: Duration,
    ramp: Duration,
    share: &Path,
    logs: &Path,
    tag: &str,
) -> Result<crate::measure::CellResult, String> {
    let tmp = std::env::temp_dir().join(format!("virtiofs-bench-fio-{}", std::process::id()));
    detach(&tmp.join("mnt"));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("temp dir: {e}"))?;
    let socket = tmp.join("vfs.sock");
    let mut d = Running::start(spec, &socket, share, pool, &logs.join(format!("{tag}.log")))?;
    if daemons::wait_listening(&socket, Duration::from_secs(15), || d.alive()).is_err() {
        return Err(format!("daemon did not listen: {}", d.log_tail(3)));
    }
    let result = (|| {
        let mut m = BridgeMount::start(
            bridge,
            &socket,
            &tmp.join("mnt"),
            queues,
            depth,
            &logs.join(format!("{tag}.bridge.log")),
        )?;
        let cpu0 = d.cpu_seconds();
        let r = run(fio, &m.mnt, workload, depth, runtime, ramp);
        let cpu = d.cpu_seconds() - cpu0;
        if !d.alive() {
            return Err(format!("during the run: {}", d.death_reason()));
        }
        if !m.alive() {
            return Err(format!("the bridge died: {}", m.log_tail()));
        }
        let r = r?;
        let ops = r.ops_per_s * r.wall_s;
        Ok(crate::measure::CellResult {
            ops_per_s: r.ops_per_s,
            p50_us: r.p50_us,
            p99_us: r.p99_us,
            p999_us: r.p999_us,
            cpu_s_per_mop: if ops > 0.0 { cpu / ops * 1e6 } else { 0.0 },
            peak_rss_kib: Some(d.peak_rss_kib()),
            kicks_per_op: None,
            calls_per_op: None,
            client_cpu_s_per_mop: None,
            busy_cpus: None,
        })
    })();
    d.finish(Duration::from_secs(3));
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// One fio cell on the shared directory itself (the floor). CPU: fio's own process.
pub fn host_cell(
    fio: &Path,
    share: &Path,
    workload: &str,
    depth: usize,
    runtime: Duration,
    ramp: Duration,
) -> Result<crate::measure::CellResult, String> {
    let r = run(fio, share, workload, depth, runtime, ramp)?;
    Ok(crate::measure::CellResult {
        ops_per_s: r.ops_per_s,
        p50_us: r.p50_us,
        p99_us: r.p99_us,
        p999_us: r.p999_us,
        cpu_s_per_mop: 0.0,
        peak_rss_kib: None,
        kicks_per_op: None,
        calls_per_op: None,
        client_cpu_s_per_mop: None,
        busy_cpus: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fio_json() {
        let j = r#"{ "fio version" : "fio-3.33", "jobs" : [ { "jobname" : "bench",
          "read" : { "io_bytes" : 1, "bw" : 2, "iops" : 12345.678, "runtime" : 2000,
            "slat_ns" : { "min" : 0 }, "clat_ns" : { "min" : 1, "percentile" : {
              "50.000000" : 20480, "99.000000" : 55296, "99.900000" : 120832 } } },
          "write" : { "iops" : 0.0, "clat_ns" : { "percentile" : { "50.000000" : 0 } } } } ] }"#;
        let (iops, p50, p99, p999) = parse(j, "read").unwrap();
        assert_eq!(iops, 12345.678);
        assert_eq!((p50, p99, p999), (20.48, 55.296, 120.832));
        assert!(parse(j, "trim").is_err());
        assert!(parse("garbage", "read").is_err());
    }
}
