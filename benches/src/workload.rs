//! The workloads and the shared directory they run against.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// 4 KiB I/O size.
pub const IO4K: usize = 4096;
/// 1 MiB sequential read size.
pub const IO1M: usize = 1 << 20;
/// Size of each of the two 4 KiB random-I/O files.
pub const RAND_FILE_SIZE: u64 = 64 << 20;
/// Size of the sequential-read file.
pub const SEQ_FILE_SIZE: u64 = 256 << 20;
/// Entries in the readdir/lookup directory.
pub const DIR_ENTRIES: usize = 10_000;
/// READDIRPLUS buffer: one page, as the Linux FUSE client asks for.
pub const READDIR_BUF: u32 = 4096;

/// File read by `randread4k` and stat'ed by `getattr`.
pub const RAND_READ_FILE: &str = "rand-read.bin";
/// File written by `randwrite4k`.
pub const RAND_WRITE_FILE: &str = "rand-write.bin";
/// File read by `seqread1m`.
pub const SEQ_FILE: &str = "seq.bin";
/// The 10k-entry directory (`readdirplus10k`, `lookup`, `lookup-miss`).
pub const DIR10K: &str = "dir10k";
/// Scratch directory of `create-unlink`.
pub const CU_DIR: &str = "create-unlink";

/// Bumped whenever the layout changes, so an old prepared directory is rebuilt.
const MARKER: &str = ".prepared-v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    RandRead4k,
    RandWrite4k,
    Getattr,
    Lookup,
    LookupMiss,
    CreateUnlink,
    ReaddirPlus10k,
    SeqRead1m,
}

impl Workload {
    pub const ALL: [Workload; 8] = [
        Workload::RandRead4k,
        Workload::RandWrite4k,
        Workload::Getattr,
        Workload::Lookup,
        Workload::LookupMiss,
        Workload::CreateUnlink,
        Workload::ReaddirPlus10k,
        Workload::SeqRead1m,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::RandRead4k => "randread4k",
            Workload::RandWrite4k => "randwrite4k",
            Workload::Getattr => "getattr",
            Workload::Lookup => "lookup",
            Workload::LookupMiss => "lookup-miss",
            Workload::CreateUnlink => "create-unlink",
            Workload::ReaddirPlus10k => "readdirplus10k",
            Workload::SeqRead1m => "seqread1m",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }
}

/// A small xorshift generator: deterministic, cheap, good enough for offsets and names.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A 4 KiB-aligned offset inside a file of `size` bytes.
    pub fn offset4k(&mut self, size: u64) -> u64 {
        self.below(size / IO4K as u64) * IO4K as u64
    }
}

/// Name of existing entry `i` of the 10k-entry directory.
pub fn dir_entry_name(i: u64) -> String {
    format!("f{i:05}")
}

/// A name that does not exist in the 10k-entry directory.
pub fn missing_name(i: u64) -> String {
    format!("missing-{i:05}")
}

/// Empties the create-unlink scratch directory (a daemon that died mid-cell leaves files).
pub fn reset_scratch(dir: &Path) -> std::io::Result<()> {
    let cu = dir.join(CU_DIR);
    if cu.exists() {
        fs::remove_dir_all(&cu)?;
    }
    fs::create_dir(&cu)
}

/// Creates (once) the shared directory every daemon and the host runner use.
pub fn prepare_share(dir: &Path) -> std::io::Result<()> {
    if dir.join(MARKER).exists() {
        return reset_scratch(dir);
    }
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    fs::create_dir_all(dir)?;
    let mut rng = Rng::new(42);
    let mut chunk = vec![0u8; IO1M];
    for (name, size) in [
        (RAND_READ_FILE, RAND_FILE_SIZE),
        (RAND_WRITE_FILE, RAND_FILE_SIZE),
        (SEQ_FILE, SEQ_FILE_SIZE),
    ] {
        // Real data, not a sparse file: every block is allocated and (after the first pass)
        // in the page cache, for every daemon alike.
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o644)
            .open(dir.join(name))?;
        for _ in 0..size / IO1M as u64 {
            for w in chunk.chunks_mut(8) {
                w.copy_from_slice(&rng.next().to_le_bytes());
            }
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
    }
    let d = dir.join(DIR10K);
    fs::create_dir(&d)?;
    for i in 0..DIR_ENTRIES as u64 {
        fs::File::create(d.join(dir_entry_name(i)))?;
    }
    fs::create_dir(dir.join(CU_DIR))?;
    fs::write(dir.join(MARKER), b"")?;
    Ok(())
}
