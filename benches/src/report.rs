//! Reports from `results.csv` (and `skipped.csv`): the ratio table ours / best other daemon per
//! cell (`ratios.md`) and a hand-written SVG plot of ops/s against queue depth (`ops.svg`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use crate::daemon::Kind;
use crate::workload::Workload;

pub const HEADER: &str = "daemon,config,workload,queue_depth,queues,ops_per_s,p50_us,p99_us,p999_us,cpu_s_per_mop,peak_rss_kib,kicks_per_op,calls_per_op,client_cpu_s_per_mop,busy_cpus";
/// The columns [`HEADER`] ends with since session 31; files without them are still read.
const ADDED: &str = ",client_cpu_s_per_mop,busy_cpus";

#[derive(Debug, Clone)]
pub struct Row {
    pub daemon: String,
    pub config: String,
    pub workload: String,
    pub depth: usize,
    pub queues: u16,
    pub ops: f64,
    /// The daemon's (or the floor's) CPU per operation, µs.
    pub cpu_us: f64,
    /// The client's CPU per operation, µs (direct daemon cells).
    pub client_cpu_us: Option<f64>,
    /// CPUs of the machine busy on average during the cell.
    pub busy_cpus: Option<f64>,
}

pub fn read_results(path: &Path) -> Result<Vec<Row>, String> {
    let s = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = s.lines();
    let fields = match lines.next() {
        Some(HEADER) => 15,
        Some(h) if HEADER.strip_suffix(ADDED) == Some(h) => 13,
        _ => return Err(format!("{}: unexpected header", path.display())),
    };
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            if f.len() != fields {
                return Err(format!("bad line: {l}"));
            }
            let num = |i: usize| f[i].parse::<f64>().map_err(|e| format!("{l}: {e}"));
            let opt = |i: usize| match f.get(i) {
                None | Some(&"") => Ok(None),
                Some(_) => num(i).map(Some),
            };
            Ok(Row {
                daemon: f[0].into(),
                config: f[1].into(),
                workload: f[2].into(),
                depth: f[3].parse().map_err(|e| format!("{l}: {e}"))?,
                queues: f[4].parse().map_err(|e| format!("{l}: {e}"))?,
                ops: num(5)?,
                cpu_us: num(9)?,
                client_cpu_us: opt(13)?,
                busy_cpus: opt(14)?,
            })
        })
        .collect()
}

fn workload_order(w: &str) -> usize {
    Workload::ALL
        .iter()
        .position(|x| x.name() == w)
        .or_else(|| {
            crate::fio::WORKLOADS
                .iter()
                .position(|&x| x == w)
                .map(|i| Workload::ALL.len() + i)
        })
        .unwrap_or(usize::MAX)
}

fn best<'a>(rows: impl Iterator<Item = &'a Row>) -> Option<&'a Row> {
    rows.max_by(|a, b| a.ops.total_cmp(&b.ops))
}

fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// One comparison: ours (best config) against the best other daemon, and the host floor.
#[derive(Debug)]
struct Cmp<'a> {
    workload: String,
    depth: usize,
    queues: u16,
    ours: Option<&'a Row>,
    other: Option<&'a Row>,
    host: Option<&'a Row>,
}

impl Cmp<'_> {
    fn ratio(&self) -> Option<f64> {
        Some(self.ours?.ops / self.other?.ops)
    }
}

fn comparisons(rows: &[Row]) -> Vec<Cmp<'_>> {
    let mut keys: BTreeSet<(usize, String, u16, usize)> = BTreeSet::new();
    for r in rows.iter().filter(|r| r.daemon != "host-syscalls") {
        keys.insert((
            workload_order(&r.workload),
            r.workload.clone(),
            r.queues,
            r.depth,
        ));
    }
    keys.into_iter()
        .map(|(_, w, q, d)| {
            let cell = |r: &&Row| r.workload == w && r.depth == d && r.queues == q;
            Cmp {
                ours: best(
                    rows.iter()
                        .filter(cell)
                        .filter(|r| r.daemon == Kind::Ours.name()),
                ),
                other: best(
                    rows.iter()
                        .filter(cell)
                        .filter(|r| Kind::REFERENCES.iter().any(|k| r.daemon == k.name())),
                ),
                host: best(
                    rows.iter()
                        .filter(|r| r.daemon == "host-syscalls" && r.workload == w && r.depth == d),
                ),
                workload: w,
                depth: d,
                queues: q,
            }
        })
        .collect()
}

fn label(r: Option<&Row>, with_daemon: bool) -> String {
    match r {
        None => "—".into(),
        Some(r) if with_daemon => {
            let short = match Kind::from_name(&r.daemon) {
                Some(Kind::C) => "C",
                Some(Kind::Rust) => "Rust",
                _ => r.daemon.as_str(),
            };
            format!("{} ({short} {})", human(r.ops), r.config)
        }
        Some(r) => format!("{} ({})", human(r.ops), r.config),
    }
}

/// The header of a table with one column per queue depth.
fn depth_table_header(md: &mut String, depths: &BTreeSet<usize>) {
    let mut head = "| workload |".to_string();
    let mut sep = "|---|".to_string();
    for d in depths {
        let _ = write!(head, " qd {d} |");
        sep.push_str("---:|");
    }
    let _ = writeln!(md, "{head}\n{sep}");
}

/// The workloads measured at `queues` request queues, in report order.
fn workloads_at<'a>(cmps: &'a [Cmp<'_>], queues: u16) -> Vec<&'a str> {
    let mut ws: Vec<&str> = cmps
        .iter()
        .filter(|c| c.queues == queues)
        .map(|c| c.workload.as_str())
        .collect();
    ws.dedup();
    ws
}

/// What bounds every daemon on the machine a run was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rig {
    /// CPUs, shared by the client and the daemon.
    pub cpus: usize,
    /// Client threads driving a 1-queue cell (`--client-threads`; one by default).
    pub client_threads: usize,
}

/// The most ops/s any daemon could reach in a cell on `rig`, and which bound binds: one whose
/// own CPU per operation were the floor's least (`floor_us`: the system call alone), driven by
/// the cheapest client measured in the cell (`client_us` per operation). Two bounds:
/// - **client**: each client thread does `client_us` of work per operation one after the other
///   (submit, look at the used ring, check the reply), so no daemon gets more than
///   `client_threads / client_us` from it;
/// - **CPUs**: client and daemon share the CPUs, at most `cpus / (client_us + floor_us)`.
///
/// An upper bound everywhere; a close one where the cell kept a client thread or the CPUs
/// busy (depth 4 and above), not at depth 1, where the client mostly sleeps and wakes.
pub fn ceiling_ops(rig: Rig, client_us: f64, floor_us: f64) -> Option<(f64, &'static str)> {
    if client_us <= 0.0 || floor_us < 0.0 || rig.cpus == 0 || rig.client_threads == 0 {
        return None;
    }
    let cpus = rig.cpus as f64 / (client_us + floor_us) * 1e6;
    let client = rig.client_threads as f64 / client_us * 1e6;
    Some(if client < cpus {
        (client, "client")
    } else {
        (cpus, "CPUs")
    })
}

/// The workloads whose floor is the least any daemon must do per operation: the same one
/// system call on the same file. Not `create-unlink` (the floor's `queue_depth` threads meet
/// on the directory's lock: its CPU per operation grows with the depth, 39 µs at 16 and 194 at
/// 256, where a daemon's few threads queue) nor `readdirplus10k` (the floor's 4 KiB of
/// `getdents64` holds about five times the entries of a 4 KiB READDIRPLUS reply, each one
/// stat'ed: 80 µs against our 20).
const CEILING_WORKLOADS: [&str; 6] = [
    "randread4k",
    "randwrite4k",
    "getattr",
    "lookup",
    "lookup-miss",
    "seqread1m",
];

/// The "Ceiling" section of `ratios.md`: per direct 1-queue cell, [`ceiling_ops`] against the
/// best other daemon and against ours.
fn ceiling_markdown(md: &mut String, rows: &[Row], cmps: &[Cmp<'_>], rig: Rig) {
    let mut lines = Vec::new();
    let floor_is_the_least = |w: &str| CEILING_WORKLOADS.contains(&w);
    for c in cmps
        .iter()
        .filter(|c| c.queues == 1 && floor_is_the_least(&c.workload))
    {
        let (Some(ours), Some(other)) = (c.ours, c.other) else {
            continue;
        };
        // The system call's least cost: at depth 1 it runs uncontended with warm caches, as
        // a daemon thread issuing them one after the other could; at depth its threads meet
        // on the inode's lock and take turns on the CPUs.
        let floor = rows
            .iter()
            .filter(|r| r.daemon == "host-syscalls" && r.workload == c.workload)
            .map(|r| r.cpu_us)
            .filter(|&f| f > 0.0)
            .min_by(f64::total_cmp);
        let Some(floor) = floor else { continue };
        let client = rows
            .iter()
            .filter(|r| r.workload == c.workload && r.depth == c.depth && r.queues == 1)
            .filter_map(|r| r.client_cpu_us)
            .min_by(f64::total_cmp);
        let Some(client) = client else { continue };
        let Some((ceiling, bound)) = ceiling_ops(rig, client, floor) else {
            continue;
        };
        let busy = other.busy_cpus.map_or("—".into(), |b| format!("{b:.2}"));
        lines.push(format!(
            "| {} | {} | {:.2} | {:.2} | {} | {bound} | {:.2} | {:.2} | {:.2} | {busy} |",
            c.workload,
            c.depth,
            ceiling / other.ops,
            ours.ops / ceiling,
            human(ceiling),
            client,
            floor,
            other.cpu_us,
        ));
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n### Ceiling: the most any daemon could do here ({} CPUs, {} client thread(s) per 1-queue cell)\n\n\
         A daemon that cost only its system call (the floor's least CPU per operation at any \
         depth), driven by the cheapest client measured in the cell, gets at most the lower of \
         client threads ÷ client CPU per operation (each thread's work comes one operation \
         after the other) and CPUs ÷ (client + floor) (they share the CPUs). \
         `ceiling / best other` above 1.5 is where a 1.5× lead is possible at all. Close where \
         the cell kept the client or the CPUs busy (depth 4 and above), loose at depth 1 \
         (`busy` = CPUs of the machine busy during the best other daemon's cell).\n\n\
         | workload | qd | ceiling / best other | ours / ceiling | ceiling ops/s | bound | client µs/op | floor µs/op | best other µs/op | busy |\n\
         |---|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        rig.cpus,
        rig.client_threads
    );
    for l in lines {
        let _ = writeln!(md, "{l}");
    }
}

pub fn ratios_markdown(rows: &[Row], skipped: &str, rig: Rig) -> String {
    let cmps = comparisons(rows);
    let mut md = String::new();
    let depths: BTreeSet<usize> = rows.iter().map(|r| r.depth).collect();
    let queues: BTreeSet<u16> = rows
        .iter()
        .filter(|r| r.daemon != "host-syscalls")
        .map(|r| r.queues)
        .collect();
    let _ = writeln!(
        md,
        "### ops/s ratio: async-virtiofsd (best of its configs) / best other daemon\n\n\
         Above 1: we are faster. `n/a`: no other daemon could serve the cell."
    );
    for &q in &queues {
        let plural = if q > 1 { "s" } else { "" };
        if !cmps.iter().any(|c| c.queues == q && c.ratio().is_some()) {
            let _ = writeln!(
                md,
                "\n**{q} request queue{plural}**: no other daemon served any cell (see Skipped cells)."
            );
            continue;
        }
        let _ = writeln!(md, "\n**{q} request queue{plural}**\n");
        depth_table_header(&mut md, &depths);
        for w in workloads_at(&cmps, q) {
            let mut line = format!("| {w} |");
            for &d in &depths {
                let c = cmps
                    .iter()
                    .find(|c| c.workload == w && c.queues == q && c.depth == d);
                let cell = match c {
                    None => " |".to_string(),
                    Some(c) => match c.ratio() {
                        Some(r) => format!(" {r:.2} |"),
                        None if c.ours.is_some() => " n/a |".into(),
                        None => " — |".into(),
                    },
                };
                line.push_str(&cell);
            }
            let _ = writeln!(md, "{line}");
        }
    }

    // No other daemon serves more than one request queue: compare ours at N queues with the
    // best other daemon at 1 queue, same total depth.
    let multi: Vec<u16> = queues.iter().copied().filter(|&q| q > 1).collect();
    for &q in &multi {
        let _ = writeln!(
            md,
            "\n**ours at {q} request queues / best other daemon at 1 queue (same total depth)**\n"
        );
        depth_table_header(&mut md, &depths);
        for w in workloads_at(&cmps, q) {
            let mut line = format!("| {w} |");
            for &d in &depths {
                let ours = cmps
                    .iter()
                    .find(|c| c.workload == w && c.queues == q && c.depth == d)
                    .and_then(|c| c.ours);
                let other = cmps
                    .iter()
                    .find(|c| c.workload == w && c.queues == 1 && c.depth == d)
                    .and_then(|c| c.other);
                match (ours, other) {
                    (Some(o), Some(b)) => {
                        let _ = write!(line, " {:.2} |", o.ops / b.ops);
                    }
                    _ => line.push_str(" — |"),
                }
            }
            let _ = writeln!(md, "{line}");
        }
    }

    let mut worst: Vec<&Cmp> = cmps.iter().filter(|c| c.ratio().is_some()).collect();
    worst.sort_by(|a, b| a.ratio().unwrap().total_cmp(&b.ratio().unwrap()));
    let _ = writeln!(
        md,
        "\n### The three cells where we are furthest behind the best other daemon\n"
    );
    for c in worst.iter().take(3) {
        let _ = writeln!(
            md,
            "- {} qd {} q {}: ratio {:.2} — ours {} vs {}",
            c.workload,
            c.depth,
            c.queues,
            c.ratio().unwrap(),
            label(c.ours, false),
            label(c.other, true)
        );
    }

    let _ = writeln!(
        md,
        "\n### Every cell (ops/s; best configuration of each side; host = same syscalls, no daemon)\n\n\
         | workload | qd | queues | ours | best other | ratio | host floor | ours/host |\n\
         |---|---:|---:|---|---|---:|---:|---:|"
    );
    for c in &cmps {
        let ratio = c.ratio().map_or("n/a".into(), |r| format!("{r:.2}"));
        let floor = c.host.map_or("—".into(), |h| human(h.ops));
        let of_floor = match (c.ours, c.host) {
            (Some(o), Some(h)) => format!("{:.2}", o.ops / h.ops),
            _ => "—".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {ratio} | {floor} | {of_floor} |",
            c.workload,
            c.depth,
            c.queues,
            label(c.ours, false),
            label(c.other, true)
        );
    }

    ceiling_markdown(&mut md, rows, &cmps, rig);

    // Skipped cells, grouped by daemon configuration, queue count and reason.
    let mut groups: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for l in skipped.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = l.splitn(6, ',').collect();
        if f.len() == 6 {
            let reason = f[5]
                .trim_matches('"')
                .trim_start_matches("setup failed in an earlier cell: ")
                .to_string();
            *groups
                .entry((f[0].into(), f[1].into(), f[4].into(), reason))
                .or_default() += 1;
        }
    }
    if !groups.is_empty() {
        let _ = writeln!(md, "\n### Skipped cells\n");
        for ((d, c, q, reason), n) in groups {
            let _ = writeln!(md, "- {d} {c}, {q} queue(s): {n} cell(s): {reason}");
        }
    }
    md
}

const COLORS: [(&str, &str, &str); 7] = [
    (Kind::Ours.name(), "pool=0", "#1f77b4;5,3"),
    (Kind::Ours.name(), "pool=64", "#1f77b4;"),
    (Kind::C.name(), "pool=0", "#d62728;5,3"),
    (Kind::C.name(), "pool=64", "#d62728;"),
    (Kind::Rust.name(), "pool=0", "#2ca02c;5,3"),
    (Kind::Rust.name(), "pool=64", "#2ca02c;"),
    ("host-syscalls", "", "#7f7f7f;2,2"),
];

fn style(daemon: &str, config: &str) -> (&'static str, &'static str) {
    let s = COLORS
        .iter()
        .find(|(d, c, _)| *d == daemon && (c.is_empty() || *c == config))
        .map_or("#000000;", |x| x.2);
    s.split_once(';').expect("color;dash")
}

/// ops/s (log scale) against queue depth (log scale), one panel per workload and request-queue
/// count, one line per daemon configuration.
pub fn svg(rows: &[Row]) -> String {
    let mut panels: Vec<(String, u16)> = Vec::new();
    let mut seen = BTreeSet::new();
    let queues: BTreeSet<u16> = rows
        .iter()
        .filter(|r| r.daemon != "host-syscalls")
        .map(|r| r.queues)
        .collect();
    let mut ws: Vec<&str> = rows.iter().map(|r| r.workload.as_str()).collect();
    ws.sort_by_key(|w| workload_order(w));
    ws.dedup();
    for w in &ws {
        for &q in &queues {
            if seen.insert((w.to_string(), q)) {
                panels.push((w.to_string(), q));
            }
        }
    }
    let depths: Vec<usize> = rows
        .iter()
        .map(|r| r.depth)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let cols = 4usize;
    let (pw, ph) = (300.0, 210.0);
    let (ml, mt) = (58.0, 28.0);
    let (cw, ch) = (pw + ml + 14.0, ph + mt + 40.0);
    let legend_h = 56.0;
    let nrows = panels.len().div_ceil(cols);
    let width = cols as f64 * cw + 10.0;
    let height = legend_h + nrows as f64 * ch + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="18" font-size="14" font-weight="bold">ops/s vs queue depth (log-log); dashed = pool=0, solid = pool=64, dotted grey = host syscalls (no daemon)</text>"#
    );
    for (i, (d, c, _)) in COLORS.iter().enumerate() {
        let (col, dash) = style(d, c);
        let x = 10.0 + i as f64 * 175.0;
        let name = if c.is_empty() {
            d.to_string()
        } else {
            format!("{d} {c}")
        };
        let _ = writeln!(
            s,
            r#"<line x1="{x}" y1="38" x2="{}" y2="38" stroke="{col}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{}" y="42">{name}</text>"#,
            x + 24.0,
            x + 28.0
        );
    }
    let xpos = |d: usize| -> f64 {
        if depths.len() < 2 {
            return pw / 2.0;
        }
        let lo = (depths[0] as f64).ln();
        let hi = (*depths.last().unwrap() as f64).ln();
        (((d as f64).ln() - lo) / (hi - lo)) * (pw - 20.0) + 10.0
    };
    for (pi, (w, q)) in panels.iter().enumerate() {
        let ox = 10.0 + (pi % cols) as f64 * cw + ml;
        let oy = legend_h + (pi / cols) as f64 * ch + mt;
        let sel: Vec<&Row> = rows
            .iter()
            .filter(|r| {
                &r.workload == w && (r.queues == *q || r.daemon == "host-syscalls") && r.ops > 0.0
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<text x="{ox}" y="{}" font-weight="bold">{w}, {q} request queue{}</text>"#,
            oy - 8.0,
            if *q > 1 { "s" } else { "" }
        );
        let _ = writeln!(
            s,
            r##"<rect x="{ox}" y="{oy}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
        );
        if sel.is_empty() {
            continue;
        }
        let lo = sel.iter().map(|r| r.ops).fold(f64::MAX, f64::min);
        let hi = sel.iter().map(|r| r.ops).fold(0.0, f64::max);
        let (e0, e1) = (
            lo.log10().floor(),
            hi.log10().ceil().max(lo.log10().floor() + 1.0),
        );
        let ypos = |v: f64| oy + ph - (v.log10() - e0) / (e1 - e0) * ph;
        let mut e = e0;
        while e <= e1 + 1e-9 {
            let y = ypos(10f64.powf(e));
            let _ = writeln!(
                s,
                r##"<line x1="{ox}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                ox + pw,
                ox - 4.0,
                y + 4.0,
                human(10f64.powf(e))
            );
            e += 1.0;
        }
        for &d in &depths {
            let x = ox + xpos(d);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{oy}" x2="{x:.1}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{d}</text>"##,
                oy + ph,
                oy + ph + 14.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">queue depth</text>"#,
            ox + pw / 2.0,
            oy + ph + 28.0
        );
        let series: BTreeSet<(String, String)> = sel
            .iter()
            .map(|r| {
                let c = if r.daemon == "host-syscalls" {
                    String::new()
                } else {
                    r.config.clone()
                };
                (r.daemon.clone(), c)
            })
            .collect();
        for (d, c) in series {
            let mut pts: Vec<(usize, f64)> = sel
                .iter()
                .filter(|r| r.daemon == d && (c.is_empty() || r.config == c))
                .map(|r| (r.depth, r.ops))
                .collect();
            pts.sort_by_key(|p| p.0);
            let (col, dash) = style(&d, &c);
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, v)| format!("{:.1},{:.1}", ox + xpos(x), ypos(v)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{col}" stroke-width="1.8" stroke-dasharray="{dash}"><title>{d} {c}</title></polyline>"#,
                path.join(" ")
            );
            for &(x, v) in &pts {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="{col}"><title>{d} {c} qd {x}: {v:.0} ops/s</title></circle>"#,
                    ox + xpos(x),
                    ypos(v)
                );
            }
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Writes `ratios.md` and `ops.svg` from `results.csv` and prints the ratio table.
/// Writes `ratios.md` and `ops.svg` from `dir`'s results; `client_threads` is the run's
/// `--client-threads` (`None`: one per request queue).
pub fn write_reports(dir: &Path, client_threads: Option<u16>) -> Result<(), String> {
    let rows = read_results(&dir.join("results.csv"))?;
    let skipped = fs::read_to_string(dir.join("skipped.csv")).unwrap_or_default();
    let rig = Rig {
        // The machine the run was on (reports are written at its end).
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        client_threads: usize::from(client_threads.unwrap_or(1).max(1)),
    };
    let md = ratios_markdown(&rows, &skipped, rig);
    fs::write(dir.join("ratios.md"), &md).map_err(|e| e.to_string())?;
    fs::write(dir.join("ops.svg"), svg(&rows)).map_err(|e| e.to_string())?;
    println!("\n{md}");
    println!(
        "wrote {0}/results.csv, {0}/skipped.csv, {0}/ratios.md, {0}/ops.svg",
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_is_the_lower_of_the_client_and_the_cpu_bound() {
        // 2 CPUs, a client at 1.5 µs and a floor at 0.5 µs per operation: 1M ops/s at most.
        let rig = |cpus, client_threads| Rig {
            cpus,
            client_threads,
        };
        // A client at 1.5 µs and a floor at 0.5 µs per operation: 2 CPUs give 1M ops/s, one
        // client thread 667k.
        let (ops, bound) = ceiling_ops(rig(2, 1), 1.5, 0.5).unwrap();
        assert_eq!((ops.round(), bound), (666_667.0, "client"));
        assert_eq!(ceiling_ops(rig(2, 2), 1.5, 0.5), Some((1e6, "CPUs")));
        assert_eq!(ceiling_ops(rig(4, 4), 1.5, 0.5), Some((2e6, "CPUs")));
        // A costly floor: the CPUs bind even one client thread.
        assert_eq!(ceiling_ops(rig(2, 1), 0.5, 3.5), Some((500_000.0, "CPUs")));
        assert_eq!(ceiling_ops(rig(2, 1), 0.0, 0.5), None, "nothing measured");
        assert_eq!(ceiling_ops(rig(0, 1), 1.0, 1.0), None);
    }

    fn results(header: &str, rows: &[&str]) -> Result<Vec<Row>, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("results.csv");
        fs::write(&p, format!("{header}\n{}\n", rows.join("\n"))).unwrap();
        read_results(&p)
    }

    #[test]
    fn results_of_both_layouts_are_read() {
        let old = results(
            "daemon,config,workload,queue_depth,queues,ops_per_s,p50_us,p99_us,p999_us,cpu_s_per_mop,peak_rss_kib,kicks_per_op,calls_per_op",
            &["c-virtiofsd,pool=0,getattr,16,1,1000.0,1,2,3,1.500,100,0.1,0.2"],
        )
        .unwrap();
        assert_eq!((old[0].ops, old[0].cpu_us), (1000.0, 1.5));
        assert_eq!((old[0].client_cpu_us, old[0].busy_cpus), (None, None));
        let new = results(
            HEADER,
            &[
                "async-virtiofsd,pool=64,getattr,16,1,2000.0,1,2,3,1.250,100,0.1,0.2,1.4000,1.9800",
                "host-syscalls,threads=16,getattr,16,1,5000.0,1,2,3,0.400,,,,,1.9000",
            ],
        )
        .unwrap();
        assert_eq!(new[0].client_cpu_us, Some(1.4));
        assert_eq!(new[0].busy_cpus, Some(1.98));
        assert_eq!((new[1].client_cpu_us, new[1].busy_cpus), (None, Some(1.9)));
        assert!(results(HEADER, &["a,b,getattr,16,1,1,1,2,3,1,,,"]).is_err());
        assert!(results("daemon,config", &[]).is_err());
    }

    #[test]
    fn the_ceiling_section_compares_both_daemons_with_the_ceiling() {
        let row_at = |depth, daemon: &str, ops: f64, cpu: f64, client: Option<f64>| Row {
            daemon: daemon.into(),
            config: "pool=0".into(),
            workload: "getattr".into(),
            depth,
            queues: 1,
            ops,
            cpu_us: cpu,
            client_cpu_us: client,
            busy_cpus: Some(2.0),
        };
        let row = |daemon: &str, ops: f64, cpu: f64, client: Option<f64>| {
            row_at(16, daemon, ops, cpu, client)
        };
        let rows = [
            row(Kind::Ours.name(), 600_000.0, 1.4, Some(1.6)),
            row(Kind::C.name(), 500_000.0, 1.6, Some(1.5)),
            row("host-syscalls", 5_000_000.0, 0.9, None),
            row_at(1, "host-syscalls", 2_000_000.0, 0.5, None),
        ];
        let two = |client_threads| Rig {
            cpus: 2,
            client_threads,
        };
        // Two client threads: 2 CPUs / (1.5 + 0.5) µs (the cheapest client, the floor's least
        // at any depth) = 1M ops/s: 2.00 × C, ours at 0.60 of it.
        let md = ratios_markdown(&rows, "", two(2));
        assert!(
            md.contains(
                "| getattr | 16 | 2.00 | 0.60 | 1.00M | CPUs | 1.50 | 0.50 | 1.60 | 2.00 |"
            ),
            "{md}"
        );
        // One: 1 / 1.5 µs = 667k: 1.33 × C, ours at 0.90 of it.
        let md = ratios_markdown(&rows, "", two(1));
        assert!(
            md.contains("| getattr | 16 | 1.33 | 0.90 | 666.7k | client | 1.50 | 0.50 |"),
            "{md}"
        );
    }
}
