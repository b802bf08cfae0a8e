//! A descriptor chain popped from a request queue, its descriptors read once.
//!
//! Every step of a request needs the chain's segments: the header peek, the check of the
//! header's length against the chain, dispatch (the room for a READ's reply), the FUSE server,
//! and an errno reply. Walking the descriptor table through `virtio-queue` costs a guest-memory
//! translation and a copy per descriptor (an indirect table more), and each step walked it
//! again: four walks per request. [`Chain::new`] walks it once, at pop time, on the queue
//! thread; the guest changing its descriptors afterwards changes nothing for the request.

use smallvec::SmallVec;
use virtio_queue::DescriptorChain;
use virtiofs_device::MemoryTable;
use virtiofs_fuse::input::Segment;
use vm_memory::GuestMemoryMmap;

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
    /// Reads `chain`'s descriptors (following an indirect table) into its segments; `memory`
    /// is the table it was popped over. A walk that `virtio-queue` ends early (a descriptor
    /// outside the table or guest memory, a loop, a chain over 4 GiB) leaves the segments read
    /// until then, as iterating the chain did.
    pub fn new(chain: DescriptorChain<MemoryTable>, memory: &MemoryTable) -> Self {
        let head = chain.head_index();
        let mut segments = Segments::new();
        let mut readable = 0;
        // Readable descriptors after a writable one break the virtio rules; they still count as
        // readable, in order (what virtio-queue's readable() gave), without quadratic inserts.
        let mut late = Segments::new();
        for d in chain {
            let seg = Segment {
                addr: d.addr(),
                len: d.len(),
            };
            if d.is_write_only() {
                segments.push(seg);
            } else if readable == segments.len() {
                segments.push(seg);
                readable += 1;
            } else {
                late.push(seg);
            }
        }
        if !late.is_empty() {
            let writable: Segments = segments.drain(readable..).collect();
            readable += late.len();
            segments.extend(late);
            segments.extend(writable);
        }
        Self {
            memory: memory.clone(),
            head,
            segments,
            readable,
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

/// Sum of the segments' lengths.
pub fn total_len(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| u64::from(s.len)).sum()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::{DescriptorTable, MockSplitQueue};
    use virtio_queue::{Queue, QueueT};
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
    /// reads it; returns the queue too, so a test can change the descriptors afterwards.
    fn pop<'m>(
        mem: &'m MemoryTable,
        descs: &[RawDescriptor],
    ) -> (Chain, MockSplitQueue<'m, GuestMemoryMmap>) {
        let mock = MockSplitQueue::new(&**mem, 16);
        mock.add_desc_chains(descs, 0).unwrap();
        let mut queue: Queue = mock.create_queue().unwrap();
        let popped = queue.pop_descriptor_chain(mem.clone()).expect("a chain");
        (Chain::new(popped, mem), mock)
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
}
