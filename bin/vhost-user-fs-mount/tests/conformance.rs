//! Conformance: a seeded random series of namespace and data operations, applied to a bridge
//! mount of a daemon and, the same ones, to a plain host directory on the same filesystem as the
//! share. Every result (success or errno) and, after each step, the touched names' type, size,
//! link count, permissions and contents must match the host's own. The names come from a small
//! pool, so files are created, linked, renamed and unlinked over and over and the host reuses
//! inode numbers: the case where fuse-backend-rs's inode store handed out a stale entry.
//!
//! `CONFORMANCE_OPS` (default 3000) and `CONFORMANCE_SEED` (default fixed) size the run; the
//! long run is documented in README.md (`CONFORMANCE_OPS=200000`).

mod common;

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use common::{Kind, Mounted};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FILES: &[&str] = &[
    "f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9", "d0/f0", "d0/f1", "d0/f2", "d1/f0",
    "d1/f1", "d0/d2/f0",
];
const DIRS: &[&str] = &["d0", "d1", "d0/d2", "d3"];

#[derive(Debug, Clone)]
enum Op {
    Write {
        path: &'static str,
        len: usize,
        seed: u8,
        append: bool,
    },
    Truncate {
        path: &'static str,
        len: u64,
    },
    Unlink {
        path: &'static str,
    },
    Link {
        from: &'static str,
        to: &'static str,
    },
    Rename {
        from: &'static str,
        to: &'static str,
    },
    Mkdir {
        path: &'static str,
    },
    Rmdir {
        path: &'static str,
    },
    Symlink {
        target: &'static str,
        path: &'static str,
    },
    Chmod {
        path: &'static str,
        mode: u32,
    },
}

fn random_op(rng: &mut Rng) -> Op {
    let file = |rng: &mut Rng| FILES[rng.below(FILES.len())];
    let any = |rng: &mut Rng| match rng.below(4) {
        0 => DIRS[rng.below(DIRS.len())],
        _ => FILES[rng.below(FILES.len())],
    };
    match rng.below(20) {
        0..=4 => Op::Write {
            path: file(rng),
            len: rng.below(20_000),
            seed: rng.next() as u8,
            append: rng.below(3) == 0,
        },
        5..=6 => Op::Truncate {
            path: file(rng),
            len: rng.below(30_000) as u64,
        },
        7..=9 => Op::Unlink { path: file(rng) },
        10..=11 => Op::Link {
            from: file(rng),
            to: file(rng),
        },
        12..=13 => Op::Rename {
            from: any(rng),
            to: any(rng),
        },
        14..=15 => Op::Mkdir {
            path: DIRS[rng.below(DIRS.len())],
        },
        16 => Op::Rmdir {
            path: DIRS[rng.below(DIRS.len())],
        },
        17 => Op::Symlink {
            target: file(rng),
            path: file(rng),
        },
        _ => Op::Chmod {
            path: any(rng),
            mode: [0o600, 0o644, 0o755, 0o700][rng.below(4)],
        },
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ seed)
        .collect()
}

/// Runs `op` under `root`; the errno on failure.
fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let p = |s: &str| root.join(s);
    let r: io::Result<()> = match op {
        Op::Write {
            path,
            len,
            seed,
            append,
        } => OpenOptions::new()
            .write(true)
            .create(true)
            .append(*append)
            .truncate(!*append)
            .open(p(path))
            .and_then(|mut f| f.write_all(&data(*len, *seed))),
        Op::Truncate { path, len } => OpenOptions::new()
            .write(true)
            .open(p(path))
            .and_then(|f| f.set_len(*len)),
        Op::Unlink { path } => fs::remove_file(p(path)),
        Op::Link { from, to } => fs::hard_link(p(from), p(to)),
        Op::Rename { from, to } => fs::rename(p(from), p(to)),
        Op::Mkdir { path } => fs::create_dir(p(path)),
        Op::Rmdir { path } => fs::remove_dir(p(path)),
        Op::Symlink { target, path } => symlink(target, p(path)),
        Op::Chmod { path, mode } => {
            // Not through a symlink: lchmod does not exist, and chmod would follow it.
            match fs::symlink_metadata(p(path)) {
                Ok(m) if m.file_type().is_symlink() => Ok(()),
                _ => fs::set_permissions(p(path), fs::Permissions::from_mode(*mode)),
            }
        }
    };
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

/// What a name is, as far as the guest can tell without timestamps or inode numbers.
fn describe(root: &Path, name: &str) -> String {
    let path = root.join(name);
    match fs::symlink_metadata(&path) {
        Err(e) => format!("error {}", e.raw_os_error().unwrap_or(-1)),
        Ok(m) if m.file_type().is_symlink() => {
            format!("symlink -> {:?}", fs::read_link(&path).ok())
        }
        Ok(m) if m.is_dir() => {
            let mut names: Vec<String> = fs::read_dir(&path)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            format!("dir {:o} {names:?}", m.mode() & 0o7777)
        }
        Ok(m) => {
            let content = fs::read(&path).map(|d| {
                // A checksum keeps failure messages short.
                d.iter()
                    .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(*b)))
            });
            format!(
                "file {:o} size {} nlink {} sum {content:?}",
                m.mode() & 0o7777,
                m.len(),
                m.nlink()
            )
        }
    }
}

fn touched(op: &Op) -> Vec<&'static str> {
    match *op {
        Op::Write { path, .. }
        | Op::Truncate { path, .. }
        | Op::Unlink { path }
        | Op::Mkdir { path }
        | Op::Rmdir { path }
        | Op::Symlink { path, .. }
        | Op::Chmod { path, .. } => vec![path],
        Op::Link { from, to } | Op::Rename { from, to } => vec![from, to],
    }
}

fn run(kind: Kind, daemon_args: &[&str]) {
    let ops: usize = std::env::var("CONFORMANCE_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let seed: u64 = std::env::var("CONFORMANCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe);
    let Some(m) = Mounted::start_with(kind, &[], daemon_args, &[]) else {
        return;
    };
    // The reference: a plain directory next to the share, on the same filesystem.
    let reference = m.backend.share.parent().unwrap().join("reference");
    fs::create_dir(&reference).unwrap();
    fs::set_permissions(&reference, fs::Permissions::from_mode(0o777)).unwrap();
    let mut rng = Rng(seed | 1);
    let mut history: Vec<String> = Vec::new();
    let start = std::time::Instant::now();
    let mut succeeded = 0;
    for i in 0..ops {
        let op = random_op(&mut rng);
        let want = apply(&reference, &op);
        let got = apply(&m.mnt, &op);
        history.push(format!("{i}: {op:?} -> {want:?}"));
        succeeded += usize::from(want.is_ok());
        let recent = || history[history.len().saturating_sub(25)..].join("\n");
        assert_eq!(
            got,
            want,
            "{}: op {i} {op:?} (seed {seed}); the host says {want:?}; last ops:\n{}",
            kind.name(),
            recent()
        );
        // Every few steps, every name; otherwise the names the step touched.
        let names: Vec<&str> = if i % 50 == 49 {
            FILES.iter().chain(DIRS).copied().chain([""]).collect()
        } else {
            touched(&op)
        };
        for name in names {
            let (want, got) = (describe(&reference, name), describe(&m.mnt, name));
            assert_eq!(
                got,
                want,
                "{}: '{name}' after op {i} {op:?} (seed {seed}); last ops:\n{}",
                kind.name(),
                recent()
            );
        }
        if i % 1000 == 999 {
            eprintln!("{}: {} operations match the host", kind.name(), i + 1);
        }
    }
    eprintln!(
        "{}: {ops} operations (seed {seed}, {succeeded} succeeded) matched the host in {:?}",
        kind.name(),
        start.elapsed()
    );
    // The mix must exercise success paths, not only errors.
    assert!(
        succeeded * 3 > ops,
        "only {succeeded} of {ops} operations succeeded"
    );
    assert!(m
        .backend
        .log
        .text()
        .lines()
        .all(|l| !l.contains("panicked")));
}

#[test]
fn random_operations_match_the_host_async_virtiofsd() {
    run(Kind::Ours, &[]);
}

/// Nodes as file handles (nothing keeps a deleted file's inode alive, so its number comes back
/// for the next file): every result must still match. (A number reused under a node the guest
/// still holds: tests/file_handles.rs.)
#[test]
fn random_operations_match_the_host_async_virtiofsd_with_file_handles() {
    run(Kind::Ours, &["--inode-file-handles=mandatory"]);
}

#[test]
fn random_operations_match_the_host_rust_virtiofsd() {
    run(Kind::Rust, &[]);
}
