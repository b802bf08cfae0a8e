//! The in-memory model of what every soak file must contain, and the block format that lets
//! every byte be verified.
//!
//! A block is `block_size` bytes: a 32-byte header (magic, file slot, block index, generation,
//! checksum of the payload) and a payload generated from `(seed, slot, block, generation)`. A
//! block never written since its file was created reads as zeros (a hole or past the end).

use std::collections::BTreeMap;

/// Magic at the start of every written block.
const MAGIC: u64 = u64::from_le_bytes(*b"SOAKBLK1");
/// Bytes of the block header.
const HEADER: usize = 32;

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The content of block `block` of slot `slot` at generation `gen` (> 0).
pub(crate) fn block_content(seed: u64, slot: u32, block: u32, gen: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut state = seed ^ (u64::from(slot) << 48) ^ (u64::from(block) << 24) ^ gen;
    splitmix(&mut state);
    for chunk in out[HEADER.min(len)..].chunks_mut(8) {
        let v = splitmix(&mut state).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    let sum = fnv(&out[HEADER.min(len)..]);
    let mut hdr = [0u8; HEADER];
    hdr[0..8].copy_from_slice(&MAGIC.to_le_bytes());
    hdr[8..12].copy_from_slice(&slot.to_le_bytes());
    hdr[12..16].copy_from_slice(&block.to_le_bytes());
    hdr[16..24].copy_from_slice(&gen.to_le_bytes());
    hdr[24..32].copy_from_slice(&sum.to_le_bytes());
    let n = HEADER.min(len);
    out[..n].copy_from_slice(&hdr[..n]);
    out
}

/// What a block that does not match its expected content holds instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// The block holds an older intact generation of itself, or zeros: a write acknowledged as
    /// done is not there.
    Lost,
    /// Anything else: torn, foreign or garbage data.
    Corrupted,
}

/// Classifies `got` against the expected generation `want` (0 = zeros) of `(slot, block)`;
/// `None` if it matches.
pub(crate) fn check_block(
    seed: u64,
    slot: u32,
    block: u32,
    want: u64,
    got: &[u8],
    len: usize,
) -> Option<Mismatch> {
    if got.len() != len {
        return Some(Mismatch::Corrupted);
    }
    if want == 0 {
        return (!got.iter().all(|&b| b == 0)).then_some(Mismatch::Corrupted);
    }
    if got == block_content(seed, slot, block, want, len).as_slice() {
        return None;
    }
    if got.iter().all(|&b| b == 0) {
        return Some(Mismatch::Lost);
    }
    match decode_gen(seed, slot, block, got) {
        Some(g) if g < want => Some(Mismatch::Lost),
        _ => Some(Mismatch::Corrupted),
    }
}

/// The generation of an intact block of `(slot, block)`, if `got` is one.
pub(crate) fn decode_gen(seed: u64, slot: u32, block: u32, got: &[u8]) -> Option<u64> {
    if got.len() < HEADER {
        return None;
    }
    let u64_at = |o: usize| u64::from_le_bytes(got[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(got[o..o + 4].try_into().expect("4 bytes"));
    if u64_at(0) != MAGIC || u32_at(8) != slot || u32_at(12) != block {
        return None;
    }
    let gen = u64_at(16);
    (gen > 0 && got == block_content(seed, slot, block, gen, got.len()).as_slice()).then_some(gen)
}

/// One soak file.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// Index of the slot.
    pub index: u32,
    /// Incremented on every rename and re-creation; part of the name.
    pub version: u32,
    /// Whether the file exists (created and not unlinked).
    pub present: bool,
    /// Node id and handle in the current session (None until looked up and opened).
    pub handle: Option<(u64, u64)>,
    /// Host inode number (for LOOKUP / GETATTR checks).
    pub ino: u64,
    /// Generation each block must hold (0: zeros).
    pub gens: Vec<u64>,
    /// A write whose outcome is unknown (in flight when the frontend went away).
    pub uncertain: Vec<Option<u64>>,
    /// Blocks with a request in flight.
    pub busy: Vec<bool>,
    /// Requests in flight on the file as a whole (GETATTR, LOOKUP, FSYNC) or on its blocks.
    pub shared: usize,
    /// A namespace operation (RENAME, UNLINK, CREATE) owns the slot, or waits for it.
    pub exclusive: bool,
}

impl Slot {
    /// A slot whose file does not exist yet.
    pub fn new(index: u32, blocks: usize) -> Self {
        Self {
            index,
            version: 0,
            present: false,
            handle: None,
            ino: 0,
            gens: vec![0; blocks],
            uncertain: vec![None; blocks],
            busy: vec![false; blocks],
            shared: 0,
            exclusive: false,
        }
    }

    /// The file's name in the soak directory.
    pub fn name(&self) -> String {
        format!("f{}.v{}", self.index, self.version)
    }

    /// The size the file must have: up to the end of the last written block.
    pub fn size_blocks(&self) -> usize {
        self.gens.iter().rposition(|&g| g > 0).map_or(0, |b| b + 1)
    }

    /// Whether the slot is usable by requests that share it.
    pub fn usable(&self) -> bool {
        self.present && !self.exclusive && self.handle.is_some()
    }

    /// Forgets the file's content (after UNLINK).
    pub fn clear(&mut self) {
        self.gens.iter_mut().for_each(|g| *g = 0);
        self.uncertain.iter_mut().for_each(|u| *u = None);
    }
}

/// Counters the workers and the orchestration update.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    /// Operations by opcode name (successful or not).
    pub ops: BTreeMap<&'static str, u64>,
    /// Errno replies by name.
    pub errors: BTreeMap<String, u64>,
    /// Bytes of successful WRITEs.
    pub bytes_written: u64,
    /// Bytes checked through READ replies.
    pub bytes_verified_read: u64,
    /// Bytes checked on the host.
    pub bytes_verified_host: u64,
    /// Acknowledged writes missing (stale data or zeros where they should be).
    pub lost: u64,
    /// Blocks with torn or foreign data.
    pub corrupted: u64,
    /// Writes in flight when the frontend disconnected.
    pub abandoned_writes: u64,
    /// Of those, the ones whose data reached the host (whole).
    pub abandoned_landed: u64,
    /// The first problems found, described.
    pub problems: Vec<String>,
}

impl Stats {
    /// Counts one operation.
    pub fn op(&mut self, name: &'static str) {
        *self.ops.entry(name).or_default() += 1;
    }

    /// Counts an error reply.
    pub fn error(&mut self, op: &'static str, e: &crate::Error) {
        let name = match e.errno() {
            Some(n) => format!("{n:?}"),
            None => format!("{e}"),
        };
        *self.errors.entry(format!("{op} {name}")).or_default() += 1;
    }

    /// Records a verification failure.
    pub fn mismatch(&mut self, m: Mismatch, what: String) {
        match m {
            Mismatch::Lost => self.lost += 1,
            Mismatch::Corrupted => self.corrupted += 1,
        }
        self.problem(format!("{m:?}: {what}"));
    }

    /// Records a problem description (the first 50 are kept).
    pub fn problem(&mut self, what: String) {
        if self.problems.len() < 50 {
            self.problems.push(what);
        }
    }
}

/// The whole model: slots, counters, the generation counter.
#[derive(Debug)]
pub(crate) struct Model {
    /// The soak files.
    pub slots: Vec<Slot>,
    /// Counters.
    pub stats: Stats,
    /// Last generation handed out.
    pub next_gen: u64,
    /// Seed of the block contents.
    pub seed: u64,
    /// Block size.
    pub block_size: usize,
}

impl Model {
    /// A fresh generation number.
    pub fn gen(&mut self) -> u64 {
        self.next_gen += 1;
        self.next_gen
    }

    /// Checks one block read back (through READ or on the host) against the model; counts
    /// verified bytes or the mismatch. `min_blocks`: the file size (in blocks) acknowledged
    /// when the read started; past it an empty reply is fine too (nothing acknowledged had
    /// extended the file that far).
    pub fn verify(
        &mut self,
        slot: usize,
        block: usize,
        min_blocks: usize,
        got: &[u8],
        via: &str,
        host: bool,
    ) {
        let e = self.expect(slot, block);
        let v = e.verdict(min_blocks, got);
        self.record(&e, v, got, via, host);
    }

    /// What block `block` of `slot` must hold (to check it without holding the model).
    pub fn expect(&self, slot: usize, block: usize) -> Expect {
        let s = &self.slots[slot];
        Expect {
            seed: self.seed,
            index: s.index,
            name: s.name(),
            block,
            want: s.gens[block],
            bs: self.block_size,
        }
    }

    /// Counts the verdict of [`Expect::verdict`].
    pub fn record(&mut self, e: &Expect, v: Option<Mismatch>, got: &[u8], via: &str, host: bool) {
        match v {
            None if host => self.stats.bytes_verified_host += got.len() as u64,
            None => self.stats.bytes_verified_read += got.len() as u64,
            Some(m) => {
                let found = decode_gen(e.seed, e.index, e.block as u32, got);
                self.stats.mismatch(
                    m,
                    format!(
                        "{via}: {} block {}: want generation {}, got {} bytes \
                         (intact generation {found:?})",
                        e.name,
                        e.block,
                        e.want,
                        got.len()
                    ),
                );
            }
        }
    }
}

/// The expected content of one block.
#[derive(Debug, Clone)]
pub(crate) struct Expect {
    seed: u64,
    index: u32,
    name: String,
    block: usize,
    want: u64,
    bs: usize,
}

impl Expect {
    /// `None` if `got` is what the block must hold, given that the file had `min_blocks`
    /// acknowledged blocks when the read started.
    pub fn verdict(&self, min_blocks: usize, got: &[u8]) -> Option<Mismatch> {
        if self.block >= min_blocks && got.is_empty() {
            return None;
        }
        check_block(
            self.seed,
            self.index,
            self.block as u32,
            self.want,
            got,
            self.bs,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_verify_and_classify() {
        let b = block_content(7, 1, 2, 3, 4096);
        assert_eq!(check_block(7, 1, 2, 3, &b, 4096), None);
        assert_eq!(decode_gen(7, 1, 2, &b), Some(3));
        let newer = block_content(7, 1, 2, 5, 4096);
        assert_eq!(check_block(7, 1, 2, 5, &b, 4096), Some(Mismatch::Lost));
        assert_eq!(
            check_block(7, 1, 2, 3, &newer, 4096),
            Some(Mismatch::Corrupted)
        );
        assert_eq!(
            check_block(7, 1, 2, 3, &[0; 4096], 4096),
            Some(Mismatch::Lost)
        );
        let mut torn = b.clone();
        torn[2048..].copy_from_slice(&newer[2048..]);
        assert_eq!(
            check_block(7, 1, 2, 3, &torn, 4096),
            Some(Mismatch::Corrupted)
        );
        assert_eq!(check_block(7, 1, 2, 0, &[0; 4096], 4096), None);
        assert_eq!(
            check_block(7, 1, 2, 3, &b[..100], 4096),
            Some(Mismatch::Corrupted)
        );
    }
}
