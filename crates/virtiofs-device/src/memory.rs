//! Guest memory as a queue thread holds it: one snapshot per memory-table generation.
//!
//! `vhost-user-backend` keeps the guest's memory table in a `GuestMemoryAtomic` (an
//! `arc-swap`), replaced on SET_MEM_TABLE, ADD_MEM_REG and REM_MEM_REG. Loading it costs an
//! arc-swap debt slot, and each clone of the loaded guard (every popped chain, every chain
//! clone) a reference count on an `Arc` that every queue thread and the protocol thread share.
//! Instead [`FsBackend::update_memory`](crate::FsBackend) counts the table's generations
//! ([`MemoryGenerations`]), and each queue keeps a [`QueueMemory`]: its own `Arc` of the table
//! (the regions themselves are shared, not copied), taken again only when the generation moved.
//! A request then reaches guest memory through that `Arc` alone: one uncontended check per
//! batch of popped chains (a drain may last as long as the guest keeps the ring busy: chains
//! into hot-added memory must find it), reference counts on a cache line only its own queue
//! touches.
//!
//! Invariant kept: a chain holds the table it was popped with (its `Arc`), so a mapping it
//! points into stays mapped while it is in use, whatever the frontend does meanwhile. A new
//! table also counts as a change of every vring ([`crate::WatchedVring::subscribe`]): a queue
//! waiting for a kick then starts over with a new [`QueueMemory`], letting go of the old table,
//! so that removed regions are unmapped once their last chain is back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_memory::{GuestAddressSpace, GuestMemoryMmap};

use crate::GuestMemory;

/// One snapshot of the guest's memory table, as chains hold it.
pub type MemoryTable = Arc<GuestMemoryMmap<()>>;

/// The generation counter of the guest's memory table, bumped after every replacement.
#[derive(Clone, Debug, Default)]
pub struct MemoryGenerations(Arc<AtomicU64>);

impl MemoryGenerations {
    /// Announces a new table; call after it is in place.
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Release);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A queue's view of guest memory (see the module docs).
#[derive(Debug)]
pub struct QueueMemory {
    atomic: GuestMemory,
    generations: MemoryGenerations,
    seen: u64,
    current: MemoryTable,
}

impl QueueMemory {
    /// Takes the current table of `atomic`, whose replacements `generations` announces.
    pub fn new(atomic: &GuestMemory, generations: &MemoryGenerations) -> Self {
        // Read before the load: a table replaced in between is seen as a change.
        let seen = generations.get();
        Self {
            current: snapshot(atomic),
            atomic: atomic.clone(),
            generations: generations.clone(),
            seen,
        }
    }

    /// The current table: the one held, unless a new one was announced since it was taken
    /// (one atomic load of a counter written only then). Call it before popping.
    pub fn current(&mut self) -> &MemoryTable {
        let now = self.generations.get();
        if now != self.seen {
            self.seen = now;
            self.current = snapshot(&self.atomic);
        }
        &self.current
    }
}

/// A queue's own `Arc` of the table `atomic` holds now (the region list copied, the regions
/// shared).
fn snapshot(atomic: &GuestMemory) -> MemoryTable {
    Arc::new(GuestMemoryMmap::clone(&atomic.memory()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemory as _};

    fn table(regions: &[(u64, usize)]) -> GuestMemoryMmap<()> {
        let ranges: Vec<_> = regions.iter().map(|&(a, n)| (GuestAddress(a), n)).collect();
        GuestMemoryMmap::from_ranges(&ranges).unwrap()
    }

    #[test]
    fn a_new_table_is_taken_once_announced_and_the_old_one_lives_in_its_holders() {
        let atomic = GuestMemory::new(table(&[(0, 0x1000)]));
        let generations = MemoryGenerations::default();
        let mut mem = QueueMemory::new(&atomic, &generations);
        let held = mem.current().clone(); // what a chain popped now holds
        assert_eq!(held.num_regions(), 1);
        assert!(
            Arc::ptr_eq(&held, mem.current()),
            "no reload without a change"
        );

        atomic
            .lock()
            .unwrap()
            .replace(table(&[(0, 0x1000), (0x10000, 0x1000)]));
        assert_eq!(mem.current().num_regions(), 1, "not announced yet");
        generations.bump();
        assert_eq!(mem.current().num_regions(), 2);
        assert_eq!(
            held.num_regions(),
            1,
            "a chain keeps the table it was popped with"
        );
        assert!(held.find_region(GuestAddress(0)).is_some());
    }
}
