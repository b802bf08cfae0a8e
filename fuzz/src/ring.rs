//! Guest memory and one split virtqueue, played from the driver side: the harness writes
//! descriptors and the available ring as a guest would, and pops the chain with `virtio-queue`
//! and reads it exactly as a queue task does (checking the fast walk against virtio-queue's).

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use virtiofs_pipeline::chain::DescTable;
use virtiofs_pipeline::Chain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Queue size (descriptors in the table and in an indirect table).
pub const QUEUE_SIZE: u16 = 256;
/// Guest memory: two adjacent regions, so buffers can cross a region boundary.
pub const REGIONS: [(u64, usize); 2] = [(0, 0x4_0000), (0x4_0000, 0xC_0000)];
/// End of guest memory.
pub const MEM_END: u64 = 0x10_0000;
const DESC_TABLE: u64 = 0x0;
const AVAIL_RING: u64 = 0x1000;
const USED_RING: u64 = 0x2000;
const INDIRECT_TABLE: u64 = 0x3000;
/// Where data buffers start.
pub const BUF_START: u64 = 0x4000;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;

/// One descriptor as the driver writes it.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    /// Guest address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable.
    pub write: bool,
}

/// Guest memory with one split queue in it.
pub struct Ring {
    mem: Arc<GuestMemoryMmap<()>>,
    queue: Queue,
    next_avail: u16,
    zeros: Vec<u8>,
}

impl Default for Ring {
    fn default() -> Self {
        Self::new()
    }
}

impl Ring {
    /// Maps guest memory and sets the queue up.
    pub fn new() -> Ring {
        let ranges: Vec<_> = REGIONS.iter().map(|&(a, n)| (GuestAddress(a), n)).collect();
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).expect("guest memory");
        let mut ring = Ring {
            mem: Arc::new(mem),
            queue: Queue::new(QUEUE_SIZE).expect("queue"),
            next_avail: 0,
            zeros: vec![0; REGIONS[1].1],
        };
        ring.reset();
        ring
    }

    /// Zeroes guest memory and starts a fresh queue (one per fuzz input, so inputs do not
    /// depend on each other).
    pub fn reset(&mut self) {
        let mem = &*self.mem;
        for &(a, n) in &REGIONS {
            mem.write_slice(&self.zeros[..n], GuestAddress(a))
                .expect("zero guest memory");
        }
        let mut q = Queue::new(QUEUE_SIZE).expect("queue");
        q.try_set_desc_table_address(GuestAddress(DESC_TABLE))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(AVAIL_RING))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(USED_RING))
            .unwrap();
        q.set_ready(true);
        assert!(q.is_valid(&*mem));
        self.queue = q;
        self.next_avail = 0;
    }

    /// Writes `bytes` at `addr`, as much of it as lies in guest memory.
    pub fn write(&self, addr: u64, bytes: &[u8]) {
        let mem = &*self.mem;
        if mem.write_slice(bytes, GuestAddress(addr)).is_ok() {
            return;
        }
        let n = (bytes.len() as u64).min(MEM_END.saturating_sub(addr));
        for i in 0..n {
            let _ = mem.write_obj(bytes[i as usize], GuestAddress(addr + i));
        }
    }

    /// Reads `buf.len()` bytes at `addr`; false if not all of it is guest memory.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.mem.read_slice(buf, GuestAddress(addr)).is_ok()
    }

    fn write_desc(&self, table: u64, i: u16, d: Desc, next: Option<u16>) {
        let mut flags = if d.write { F_WRITE } else { 0 };
        if next.is_some() {
            flags |= F_NEXT;
        }
        let mut raw = [0u8; 16];
        raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&d.len.to_le_bytes());
        raw[12..14].copy_from_slice(&flags.to_le_bytes());
        raw[14..16].copy_from_slice(&next.unwrap_or(0).to_le_bytes());
        self.write(table + 16 * u64::from(i), &raw);
    }

    /// Makes `descs` available as one chain (through an indirect table if `indirect`) and pops
    /// it as a queue task does; `None` if the queue yields nothing.
    pub fn post(&mut self, descs: &[Desc], indirect: bool) -> Option<Chain> {
        let n = descs.len().min(usize::from(QUEUE_SIZE)) as u16;
        let table = if indirect { INDIRECT_TABLE } else { DESC_TABLE };
        for i in 0..n {
            let next = (i + 1 < n).then_some(i + 1);
            self.write_desc(table, i, descs[usize::from(i)], next);
        }
        if indirect {
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&INDIRECT_TABLE.to_le_bytes());
            raw[8..12].copy_from_slice(&(16 * u32::from(n)).to_le_bytes());
            raw[12..14].copy_from_slice(&F_INDIRECT.to_le_bytes());
            self.write(DESC_TABLE, &raw);
        } else if n == 0 {
            // An empty chain: one zero-length readable descriptor.
            self.write_desc(
                DESC_TABLE,
                0,
                Desc {
                    addr: BUF_START,
                    len: 0,
                    write: false,
                },
                None,
            );
        }
        let slot = AVAIL_RING + 4 + 2 * u64::from(self.next_avail % QUEUE_SIZE);
        self.write(slot, &0u16.to_le_bytes());
        self.next_avail = self.next_avail.wrapping_add(1);
        fence(Ordering::SeqCst);
        self.write(AVAIL_RING + 2, &self.next_avail.to_le_bytes());
        let popped = self.queue.pop_descriptor_chain(self.mem.clone())?;
        // As the queue task reads it: over the descriptor table (translated, or entry by entry
        // across regions). virtio-queue's walk must agree on whatever the input wrote.
        let table = DescTable::new(
            &self.mem,
            GuestAddress(self.queue.desc_table()),
            self.queue.size(),
        );
        let fast = Chain::read(&table, popped.head_index(), &self.mem);
        let reference = Chain::new(popped, &self.mem);
        assert_eq!(fast.readable(), reference.readable(), "readable segments");
        assert_eq!(fast.writable(), reference.writable(), "writable segments");
        Some(fast)
    }

    /// Puts the chain `head` on the used ring with `len` bytes, as a queue task does, and
    /// returns the length the guest reads back.
    pub fn complete(&mut self, head: u16, len: u32) -> u32 {
        let mem = &*self.mem;
        self.queue
            .add_used(&*mem, head, len)
            .expect("add_used of a popped chain");
        let idx = self.queue.next_used().wrapping_sub(1);
        let at = USED_RING + 4 + 8 * u64::from(idx % QUEUE_SIZE);
        let mut e = [0u8; 8];
        assert!(self.read(at, &mut e));
        assert_eq!(
            u32::from_le_bytes(e[0..4].try_into().unwrap()),
            u32::from(head)
        );
        u32::from_le_bytes(e[4..8].try_into().unwrap())
    }
}
