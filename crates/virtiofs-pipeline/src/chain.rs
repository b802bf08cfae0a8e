//! A descriptor chain popped from a request queue, its descriptors read once.
//!
//! Every step of a request needs the chain's segments: the header peek, the check of the
//! header's length against the chain, dispatch (the room for a READ's reply), the FUSE server,
//! and an errno reply. Walking the descriptor table through `virtio-queue` costs a guest-memory
//! translation and a copy per descriptor (an indirect table more), and each step walked it
//! again: four walks per request. A chain is now walked once, at pop time, on the queue
//! thread; the guest changing its descriptors afterwards changes nothing for the request.
//!
//! [`Chain::read`] walks it over a [`DescTable`], the queue's descriptor table translated to
//! host memory once per batch: a descriptor is then a bounds check and a 16-byte read, where
//! `virtio-queue` looks its address up in the memory table and copies it through a slice
//! iterator (a table across memory regions is read entry by entry through the memory table,
//! as `virtio-queue` reads every table). The walk keeps `virtio-queue`'s rules
//! ([`Chain::new`] is that walk, and the reference of the tests): at most as many descriptors
//! as the table has, an index outside the table ends the chain, one level of indirect table
//! (its length a multiple of 16, at most 65,535 entries), at most 4 GiB in all.

use smallvec::SmallVec;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use virtiofs_device::MemoryTable;
use virtiofs_fuse::input::Segment;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, VolatileMemory, VolatileSlice,
};

/// Bytes per split-ring descriptor.
const DESC_SIZE: usize = 16;

/// A descriptor table: the queue's, or an indirect one.
#[derive(Clone, Copy)]
pub struct DescTable<'m> {
    place: Place<'m>,
    entries: u16,
}

/// Where a descriptor table's entries are read from.
#[derive(Clone, Copy)]
enum Place<'m> {
    /// In one region: host memory, translated once.
    Host(VolatileSlice<'m, ()>),
    /// Across regions or (partly) outside guest memory: each entry through the memory table,
    /// as `virtio-queue` reads every entry (an entry outside guest memory ends the chain).
    Spread(&'m GuestMemoryMmap<()>, GuestAddress),
}

impl<'m> DescTable<'m> {
    /// The table of `entries` descriptors at `addr` in `mem`.
    pub fn new(mem: &'m GuestMemoryMmap<()>, addr: GuestAddress, entries: u16) -> Self {
        let place = match mem.get_slice(addr, usize::from(entries) * DESC_SIZE) {
            Ok(slice) => Place::Host(slice),
            Err(_) => Place::Spread(mem, addr),
        };
        Self { place, entries }
    }

    /// Whether the table was translated to host memory (the fast case).
    pub fn in_one_region(&self) -> bool {
        matches!(self.place, Place::Host(_))
    }

    /// Descriptor `index`, if the table has it and it is in guest memory.
    fn get(&self, index: u16) -> Option<Descriptor> {
        if index >= self.entries {
            return None;
        }
        let at = usize::from(index) * DESC_SIZE;
        match self.place {
            Place::Host(slice) => Some(slice.get_ref::<Descriptor>(at).ok()?.load()),
            Place::Spread(mem, addr) => mem.read_obj(addr.checked_add(at as u64)?).ok(),
        }
    }
}

/// A chain's segments, readable first: a request's header and arguments and its reply's header
/// and result fit inline (kept small: a chain is moved a few times on its way through the
/// queue).
pub type Segments = SmallVec<[Segment; 4]>;

/// A descriptor chain popped from a virtqueue: its head index, its readable and writable
/// segments in chain order, and the guest memory they point into (its queue's own snapshot of
/// the memory table, [`virtiofs_device::QueueMemory`], which keeps the mappings alive while the
/// chain exists).
#[derive(Clone)]
pub struct Chain {
    memory: MemoryTable,
    head: u16,
    /// Readable segments, then writable ones.
    segments: Segments,
    /// How many of `segments` are readable.
    readable: usize,
}

impl Chain {
    /// Reads `chain`'s descriptors through `virtio-queue` (following an indirect table) into
    /// its segments; `memory` is the table it was popped over. The reference walk that the
    /// tests and the fuzz target hold [`Chain::read`] to (the queue task reads with that). A
    /// walk that `virtio-queue` ends early (a descriptor outside the table or guest memory, a
    /// loop, a chain over 4 GiB) leaves the segments read until then, as iterating the chain
    /// did.
    pub fn new(chain: DescriptorChain<MemoryTable>, memory: &MemoryTable) -> Self {
        let head = chain.head_index();
        let mut split = Split::default();
        for d in chain {
            split.push(&d);
        }
        split.into_chain(memory, head)
    }

    /// The chain at `head` of the queue whose descriptor table is `table`, read over it (see
    /// the module docs).
    pub fn read(table: &DescTable<'_>, head: u16, memory: &MemoryTable) -> Self {
        let mut split = Split::default();
        let mut table = *table;
        let mut next = head;
        let mut ttl = table.entries;
        let mut indirect = false;
        let mut bytes = 0u32;
        while ttl > 0 {
            let Some(d) = table.get(next) else { break };
            if d.refers_to_indirect_table() {
                let entries = d.len() as usize / DESC_SIZE;
                if indirect || d.len() as usize % DESC_SIZE != 0 || entries > usize::from(u16::MAX)
                {
                    break;
                }
                table = DescTable::new(memory, d.addr(), entries as u16);
                (next, ttl, indirect) = (0, table.entries, true);
                continue;
            }
            let Some(total) = bytes.checked_add(d.len()) else {
                break;
            };
            bytes = total;
            split.push(&d);
            if d.has_next() {
                next = d.next();
                ttl -= 1;
            } else {
                break;
            }
        }
        split.into_chain(memory, head)
    }

    /// Starts loading the request's header and the first line of its reply's room into this
    /// CPU's cache, without waiting for them. The guest's CPU wrote them last, so each is a
    /// cache miss; asked for a batch at once, at pop time, the misses overlap instead of
    /// stalling each request in turn.
    pub fn prefetch(&self) {
        let host = |s: Option<&Segment>| s.and_then(|s| self.memory.get_host_address(s.addr).ok());
        if let Some(p) = host(self.readable().first()) {
            prefetch_read(p);
        }
        if let Some(p) = host(self.writable().first()) {
            prefetch_write(p);
        }
    }

    /// The guest memory the segments point into.
    pub fn memory(&self) -> &GuestMemoryMmap<()> {
        &self.memory
    }

    /// The index of the chain's first descriptor (what goes on the used ring).
    pub fn head_index(&self) -> u16 {
        self.head
    }

    /// The device-readable segments (the request), in chain order.
    pub fn readable(&self) -> &[Segment] {
        &self.segments[..self.readable]
    }

    /// The device-writable segments (room for the reply), in chain order.
    pub fn writable(&self) -> &[Segment] {
        &self.segments[self.readable..]
    }
}

/// Segments as a walk meets them, readable and writable apart.
#[derive(Default)]
struct Split {
    segments: Segments,
    readable: usize,
    /// Readable descriptors after a writable one: against the virtio rules, but they still
    /// count as readable, in order (what virtio-queue's readable() gave), without quadratic
    /// inserts.
    late: Segments,
}

impl Split {
    fn push(&mut self, d: &Descriptor) {
        let seg = Segment {
            addr: d.addr(),
            len: d.len(),
        };
        if d.is_write_only() {
            self.segments.push(seg);
        } else if self.readable == self.segments.len() {
            self.segments.push(seg);
            self.readable += 1;
        } else {
            self.late.push(seg);
        }
    }

    fn into_chain(mut self, memory: &MemoryTable, head: u16) -> Chain {
        if !self.late.is_empty() {
            let writable: Segments = self.segments.drain(self.readable..).collect();
            self.readable += self.late.len();
            self.segments.extend(self.late);
            self.segments.extend(writable);
        }
        Chain {
            memory: memory.clone(),
            head,
            segments: self.segments,
            readable: self.readable,
        }
    }
}

/// Asks the CPU to load the cache line at `p` to read it soon.
fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks the CPU to load the cache line at `p` to write it soon (a plain prefetch where the CPU
/// has no write hint).
fn prefetch_write(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p);
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(target_arch = "x86_64")]
fn prefetch<const HINT: i32>(p: *const u8) {
    // SAFETY: a prefetch is a hint: it reads nothing into the program and never faults,
    // whatever the address; SSE is part of x86_64.
    unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(p.cast()) }
}

/// Sum of the segments' lengths.
pub fn total_len(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| u64::from(s.len)).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::{DescriptorTable, MockSplitQueue};
    use virtio_queue::{Queue, QueueOwnedT, QueueT};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    use super::*;

    // Descriptor flags (virtio 1.2, 2.7.5).
    const READ: u16 = 0;
    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const INDIRECT: u16 = 4;

    fn memory() -> MemoryTable {
        Arc::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap())
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    fn seg(addr: u64, len: u32) -> Segment {
        Segment {
            addr: GuestAddress(addr),
            len,
        }
    }

    /// Makes `descs` (one chain from descriptor 0) available in a queue over `mem`, pops it and
    /// reads it both ways (over the translated table, and through virtio-queue), which must
    /// agree; returns the queue too, so a test can change the descriptors afterwards.
    fn pop<'m>(
        mem: &'m MemoryTable,
        descs: &[RawDescriptor],
    ) -> (Chain, MockSplitQueue<'m, GuestMemoryMmap>) {
        let mock = MockSplitQueue::new(&**mem, 16);
        mock.add_desc_chains(descs, 0).unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        let popped = queue.pop_descriptor_chain(mem.clone()).expect("a chain");
        let table = DescTable::new(mem, mock.desc_table_addr(), 16);
        assert!(table.in_one_region());
        let fast = Chain::read(&table, popped.head_index(), mem);
        let reference = Chain::new(popped, mem);
        assert_same(&fast, &reference);
        (fast, mock)
    }

    fn assert_same(a: &Chain, b: &Chain) {
        assert_eq!(a.head_index(), b.head_index());
        assert_eq!(
            a.readable(),
            b.readable(),
            "readable, head {}",
            a.head_index()
        );
        assert_eq!(
            a.writable(),
            b.writable(),
            "writable, head {}",
            a.head_index()
        );
    }

    #[test]
    fn segments_are_split_by_direction_in_chain_order() {
        let mem = memory();
        let (chain, _) = pop(
            &mem,
            &[
                desc(0x1000, 40, READ | NEXT, 1),
                desc(0x2000, 16, READ | NEXT, 2),
                desc(0x3000, 100, WRITE | NEXT, 3),
                desc(0x4000, 50, WRITE, 0),
            ],
        );
        assert_eq!(chain.head_index(), 0);
        assert_eq!(chain.readable(), [seg(0x1000, 40), seg(0x2000, 16)]);
        assert_eq!(chain.writable(), [seg(0x3000, 100), seg(0x4000, 50)]);
        assert_eq!(total_len(chain.readable()), 56);
        assert_eq!(total_len(chain.writable()), 150);
    }

    #[test]
    fn a_readable_descriptor_after_a_writable_one_counts_as_readable() {
        // Against the virtio rules, but what virtio-queue's readable()/writable() gave too.
        let mem = memory();
        let (chain, _) = pop(
            &mem,
            &[
                desc(0x1000, 8, READ | NEXT, 1),
                desc(0x2000, 9, WRITE | NEXT, 2),
                desc(0x3000, 10, READ | NEXT, 3),
                desc(0x4000, 11, WRITE | NEXT, 4),
                desc(0x5000, 12, READ, 0),
            ],
        );
        assert_eq!(
            chain.readable(),
            [seg(0x1000, 8), seg(0x3000, 10), seg(0x5000, 12)]
        );
        assert_eq!(chain.writable(), [seg(0x2000, 9), seg(0x4000, 11)]);
    }

    #[test]
    fn an_indirect_table_is_followed() {
        let mem = memory();
        let table = DescriptorTable::new(&*mem, GuestAddress(0x8000), 2);
        table.store(0, desc(0x1000, 40, READ | NEXT, 1)).unwrap();
        table.store(1, desc(0x3000, 64, WRITE, 0)).unwrap();
        let (chain, _) = pop(&mem, &[desc(0x8000, 32, INDIRECT, 0)]);
        assert_eq!(chain.readable(), [seg(0x1000, 40)]);
        assert_eq!(chain.writable(), [seg(0x3000, 64)]);
    }

    #[test]
    fn descriptors_changed_after_the_pop_change_nothing() {
        let mem = memory();
        let (chain, mock) = pop(
            &mem,
            &[desc(0x1000, 40, READ | NEXT, 1), desc(0x3000, 64, WRITE, 0)],
        );
        // A guest rewriting the chain while the request runs: the request keeps what was read.
        mock.desc_table()
            .store(0, desc(0xf_0000, 4096, READ | NEXT, 1))
            .unwrap();
        mock.desc_table().store(1, desc(0, 1, WRITE, 0)).unwrap();
        assert_eq!(chain.readable(), [seg(0x1000, 40)]);
        assert_eq!(chain.writable(), [seg(0x3000, 64)]);
        assert_eq!(chain.clone().writable(), chain.writable());
    }

    #[test]
    fn a_chain_cut_short_by_a_bad_next_index_keeps_what_was_read() {
        let mem = memory();
        // Descriptor 1 points past the 16-entry table: the walk stops there.
        let (chain, _) = pop(
            &mem,
            &[
                desc(0x1000, 40, READ | NEXT, 1),
                desc(0x3000, 64, WRITE | NEXT, 99),
            ],
        );
        assert_eq!(chain.readable(), [seg(0x1000, 40)]);
        assert_eq!(chain.writable(), [seg(0x3000, 64)]);
    }

    #[test]
    fn a_chain_longer_than_the_inline_room_keeps_every_segment() {
        let mem = memory();
        let descs: Vec<_> = (0..12u16)
            .map(|i| {
                let dir = if i < 5 { READ } else { WRITE };
                let flags = if i < 11 { dir | NEXT } else { dir };
                desc(
                    0x1000 * (u64::from(i) + 1),
                    100 + u32::from(i),
                    flags,
                    i + 1,
                )
            })
            .collect();
        let (chain, _) = pop(&mem, &descs);
        assert_eq!(chain.readable().len(), 5);
        assert_eq!(chain.writable().len(), 7);
        assert_eq!(chain.readable()[4], seg(0x5000, 104));
        assert_eq!(chain.writable()[6], seg(0xc000, 111));
    }

    /// xorshift64: reproducible pseudo-random numbers without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A random descriptor: mostly plausible, sometimes hostile (next outside the table, an
    /// indirect table that is nested, misaligned, empty, too long or outside guest memory,
    /// lengths that overflow 4 GiB together).
    fn random_desc(rng: &mut Rng, entries: u64) -> RawDescriptor {
        let mut flags = 0;
        if rng.below(4) != 0 {
            flags |= NEXT;
        }
        if rng.below(2) == 0 {
            flags |= WRITE;
        }
        let (addr, len) = if rng.below(6) == 0 {
            flags |= INDIRECT;
            let len = match rng.below(8) {
                0 => rng.below(200) as u32,          // often not a multiple of 16
                1 => 0,                              // empty table
                2 => 16 * (u32::from(u16::MAX) + 1), // one entry too many
                _ => 16 * (1 + rng.below(8) as u32),
            };
            let addr = match rng.below(8) {
                0 => 0xf_fff0,  // runs past the end of guest memory
                1 => 0x20_0000, // outside guest memory
                _ => INDIRECT_AREA + 0x100 * rng.below(16),
            };
            (addr, len)
        } else {
            let len = match rng.below(8) {
                0 => u32::MAX - rng.below(100) as u32,
                _ => rng.below(0x2000) as u32,
            };
            (rng.below(0x10_0000), len)
        };
        let next = if rng.below(8) == 0 {
            entries as u16 + rng.below(4) as u16 // outside the table
        } else {
            rng.below(entries) as u16
        };
        desc(addr, len, flags, next)
    }

    /// Where the random indirect tables live (16 tables of 16 entries).
    const INDIRECT_AREA: u64 = 0x8_0000;

    #[test]
    fn reading_over_the_table_matches_virtio_queue_on_random_tables() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut compared = 0;
        for _ in 0..300 {
            let mem = memory();
            let mock = MockSplitQueue::new(&*mem, 16);
            for i in 0..16 {
                mock.desc_table()
                    .store(i, random_desc(&mut rng, 16))
                    .unwrap();
            }
            for t in 0..16u64 {
                let table =
                    DescriptorTable::new(&*mem, GuestAddress(INDIRECT_AREA + 0x100 * t), 16);
                for i in 0..16 {
                    table.store(i, random_desc(&mut rng, 16)).unwrap();
                }
            }
            // Every descriptor is a head once.
            for head in 0..16u16 {
                mock.avail()
                    .ring()
                    .ref_at(usize::from(head))
                    .unwrap()
                    .store(head);
            }
            mock.avail().idx().store(16);
            let mut queue: Queue = mock.create_queue().unwrap();
            let table = DescTable::new(&mem, mock.desc_table_addr(), 16);
            let chains: Vec<_> = queue.iter(mem.clone()).unwrap().collect();
            assert_eq!(chains.len(), 16);
            for c in chains {
                let head = c.head_index();
                let fast = Chain::read(&table, head, &mem);
                let reference = Chain::new(c, &mem);
                assert_same(&fast, &reference);
                compared += 1;
            }
        }
        assert_eq!(compared, 300 * 16);
    }

    #[test]
    fn a_table_outside_one_region_is_read_entry_by_entry() {
        let ranges = [(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)];
        let mem = GuestMemoryMmap::from_ranges(&ranges).unwrap();
        let d = |i: u16| Descriptor::new(0x100 * u64::from(i), 10 + u32::from(i), 0, i);
        for (i, at) in [0xff0u64, 0x1000].into_iter().enumerate() {
            mem.write_obj(d(i as u16), GuestAddress(at)).unwrap();
        }
        let across = DescTable::new(&mem, GuestAddress(0xff0), 2);
        assert!(!across.in_one_region());
        assert_eq!(across.get(0).map(|x| x.len()), Some(10));
        assert_eq!(
            across.get(1).map(|x| x.len()),
            Some(11),
            "in the second region"
        );
        assert!(across.get(2).is_none(), "past its entries");
        let past_the_end = DescTable::new(&mem, GuestAddress(0x1ff0), 2);
        assert!(!past_the_end.in_one_region());
        assert!(past_the_end.get(0).is_some());
        assert!(past_the_end.get(1).is_none(), "outside guest memory");
        assert!(DescTable::new(&mem, GuestAddress(0x1fe0), 2).in_one_region());
    }
}
