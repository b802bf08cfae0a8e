//! Where measured cells go: the progress line, `rounds.csv` (every round), `results.csv` (the
//! median round of each daemon configuration per cell, what the reports read) and
//! `skipped.csv`.
//!
//! A cell measured once moves by 10–40 % between runs on these machines (page cache, writeback,
//! which core the scheduler picks): with `--rounds N` each cell runs N times, the daemons
//! interleaved within each round, and the report uses the median.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::measure::CellResult;
use crate::report;

/// What a row names: daemon, configuration, workload, depth, request queues.
#[derive(Debug, Clone, PartialEq)]
pub struct CellKey {
    pub daemon: &'static str,
    pub config: String,
    pub workload: String,
    pub depth: usize,
    pub queues: u16,
}

/// The output files of one run.
pub struct Recorder {
    results: fs::File,
    rounds: fs::File,
    skipped: fs::File,
    /// Rounds measured and skipped.
    pub ok: usize,
    pub skip: usize,
    /// This cell's rounds so far, per daemon configuration.
    pending: Vec<(CellKey, Vec<CellResult>)>,
    /// The configurations already in `skipped.csv` for this cell (a cell is listed once,
    /// whatever the number of rounds it failed).
    skipped_now: Vec<CellKey>,
}

fn io(e: std::io::Error) -> String {
    e.to_string()
}

impl Recorder {
    /// Creates the files in `out` (replacing earlier ones).
    pub fn create(out: &Path) -> Result<Self, String> {
        let new = |name: &str, header: &str| -> Result<fs::File, String> {
            let mut f = fs::File::create(out.join(name)).map_err(io)?;
            writeln!(f, "{header}").map_err(io)?;
            Ok(f)
        };
        Ok(Self {
            results: new("results.csv", report::HEADER)?,
            rounds: new("rounds.csv", &format!("{},round", report::HEADER))?,
            skipped: new(
                "skipped.csv",
                "daemon,config,workload,queue_depth,queues,reason",
            )?,
            ok: 0,
            skip: 0,
            pending: Vec::new(),
            skipped_now: Vec::new(),
        })
    }

    /// One round of a cell measured: printed after `head`, kept for the median.
    pub fn measured(
        &mut self,
        head: &str,
        key: &CellKey,
        round: usize,
        r: CellResult,
    ) -> Result<(), String> {
        self.ok += 1;
        println!(
            "{head} {:>10.0} ops/s  p50 {:>8.1} us  p99 {:>8.1} us  p99.9 {:>8.1} us  cpu {:>6.2} s/Mop  rss {} KiB{}{}",
            r.ops_per_s,
            r.p50_us,
            r.p99_us,
            r.p999_us,
            r.cpu_s_per_mop,
            fmt_opt(r.peak_rss_kib),
            match (r.kicks_per_op, r.calls_per_op) {
                (Some(k), Some(c)) => format!("  kicks/op {k:.3}  calls/op {c:.3}"),
                _ => String::new(),
            },
            match (r.client_cpu_s_per_mop, r.busy_cpus) {
                (Some(c), Some(b)) => format!("  client {c:.2} s/Mop  busy {b:.2} CPUs"),
                (None, Some(b)) => format!("  busy {b:.2} CPUs"),
                _ => String::new(),
            }
        );
        writeln!(self.rounds, "{},{round}", row(key, &r)).map_err(io)?;
        self.rounds.flush().map_err(io)?;
        match self.pending.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => v.push(r),
            None => self.pending.push((key.clone(), vec![r])),
        }
        Ok(())
    }

    /// One round of a cell that could not be measured.
    pub fn skipped(&mut self, head: &str, key: &CellKey, e: &str) -> Result<(), String> {
        self.skip += 1;
        let e = e.replace(['\n', '\r'], " ");
        println!("{head} SKIPPED: {e}");
        if self.skipped_now.contains(key) {
            return Ok(());
        }
        self.skipped_now.push(key.clone());
        let quoted = format!("\"{}\"", e.replace('"', "'"));
        writeln!(
            self.skipped,
            "{},{},{},{},{},{quoted}",
            key.daemon, key.config, key.workload, key.depth, key.queues
        )
        .map_err(io)?;
        self.skipped.flush().map_err(io)
    }

    /// A cell's rounds are over: each configuration's median round goes to `results.csv`.
    pub fn cell_done(&mut self) -> Result<(), String> {
        self.skipped_now.clear();
        for (key, mut rounds) in std::mem::take(&mut self.pending) {
            let r = median(&mut rounds);
            writeln!(self.results, "{}", row(&key, &r)).map_err(io)?;
        }
        self.results.flush().map_err(io)
    }
}

/// An optional count as a CSV field: empty when absent.
fn fmt_opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// A `results.csv` row (without the round).
fn row(key: &CellKey, r: &CellResult) -> String {
    format!(
        "{},{},{},{},{},{:.1},{:.2},{:.2},{:.2},{:.3},{},{},{},{},{}",
        key.daemon,
        key.config,
        key.workload,
        key.depth,
        key.queues,
        r.ops_per_s,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.cpu_s_per_mop,
        fmt_opt(r.peak_rss_kib),
        fmt_ratio(r.kicks_per_op),
        fmt_ratio(r.calls_per_op),
        fmt_ratio(r.client_cpu_s_per_mop),
        fmt_ratio(r.busy_cpus)
    )
}

/// An optional ratio as a CSV field: empty when absent.
fn fmt_ratio(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.4}")).unwrap_or_default()
}

/// The median round by ops/s (of an even count, the lower middle one): a round that was
/// measured, with its own latencies and CPU, not an average of several.
fn median(rounds: &mut [CellResult]) -> CellResult {
    rounds.sort_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s));
    rounds[(rounds.len() - 1) / 2].clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ops: f64) -> CellResult {
        CellResult {
            ops_per_s: ops,
            p50_us: ops / 10.0,
            p99_us: 0.0,
            p999_us: 0.0,
            cpu_s_per_mop: ops / 100.0,
            peak_rss_kib: None,
            kicks_per_op: None,
            calls_per_op: None,
            client_cpu_s_per_mop: Some(ops / 50.0),
            busy_cpus: None,
        }
    }

    #[test]
    fn the_median_round_is_one_that_was_measured() {
        let mut odd = [result(30.0), result(10.0), result(20.0)];
        let m = median(&mut odd);
        assert_eq!((m.ops_per_s, m.p50_us), (20.0, 2.0));
        let mut even = [result(40.0), result(10.0), result(30.0), result(20.0)];
        assert_eq!(median(&mut even).ops_per_s, 20.0);
        assert_eq!(median(&mut [result(5.0)]).ops_per_s, 5.0);
    }

    #[test]
    fn results_get_one_median_row_per_configuration_and_rounds_every_round() {
        let dir = tempfile::tempdir().unwrap();
        let mut rec = Recorder::create(dir.path()).unwrap();
        let key = |daemon| CellKey {
            daemon,
            config: "pool=0".into(),
            workload: "getattr".into(),
            depth: 1,
            queues: 1,
        };
        for (round, ops) in [(1, 100.0), (2, 300.0), (3, 200.0)] {
            rec.measured("", &key("async-virtiofsd"), round, result(ops))
                .unwrap();
            rec.measured("", &key("c-virtiofsd"), round, result(ops / 2.0))
                .unwrap();
        }
        for _round in 1..=2 {
            rec.skipped("", &key("rust-virtiofsd"), "not\ninstalled")
                .unwrap();
        }
        rec.cell_done().unwrap();
        drop(rec);
        let rows = report::read_results(&dir.path().join("results.csv")).unwrap();
        let ops: Vec<_> = rows.iter().map(|r| (r.daemon.as_str(), r.ops)).collect();
        assert_eq!(ops, [("async-virtiofsd", 200.0), ("c-virtiofsd", 100.0)]);
        let cpu: Vec<_> = rows
            .iter()
            .map(|r| (r.cpu_us, r.client_cpu_us, r.busy_cpus))
            .collect();
        assert_eq!(cpu, [(2.0, Some(4.0), None), (1.0, Some(2.0), None)]);
        let rounds = fs::read_to_string(dir.path().join("rounds.csv")).unwrap();
        assert_eq!(rounds.lines().count(), 1 + 6);
        assert!(rounds.lines().nth(2).unwrap().ends_with(",1"));
        let skipped = fs::read_to_string(dir.path().join("skipped.csv")).unwrap();
        assert!(skipped.contains("\"not installed\""), "{skipped}");
        assert_eq!(
            skipped.lines().count(),
            2,
            "one row per cell, not per round"
        );
    }
}
