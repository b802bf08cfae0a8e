//! Guest memory: memfd-backed regions shared with the backend, and an allocator for rings and
//! request buffers inside them.
//!
//! Regions are laid out in guest-physical address space one after the other with a hole of
//! [`REGION_GAP`] bytes between them, so that an address in a hole is "outside guest memory" and
//! no buffer ever spans two regions.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::unix::io::FromRawFd;
use std::sync::Mutex;

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemory as _, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

use crate::error::{Error, Result};

/// Guest-physical address of the first region.
pub const GUEST_BASE: u64 = 0x1_0000;

/// Unmapped guest-physical bytes between two consecutive regions.
pub const REGION_GAP: u64 = 0x10_0000;

/// Smallest alignment of any allocation.
const MIN_ALIGN: u64 = 64;

/// The guest's memory as seen by the driver: every region is a memfd mapped here and shared with
/// the backend through the vhost-user memory table.
///
/// Some regions may be held back as "hot-pluggable": mapped here from the start, but neither
/// described to the backend nor used for allocations until [`GuestMemory::plug_next`] (memory
/// hot-add: QEMU's `object-add` + `device_add pc-dimm`).
#[derive(Debug)]
pub struct GuestMemory {
    mem: GuestMemoryMmap<()>,
    alloc: Mutex<Allocator>,
    /// Regions the backend knows (the first ones in address order); the rest wait to be plugged.
    plugged: Mutex<usize>,
}

/// A block of guest memory handed out by [`GuestMemory::alloc`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// Guest-physical address of the first byte.
    pub addr: GuestAddress,
    /// Length in bytes (as requested, not rounded).
    pub len: u64,
}

impl GuestMemory {
    /// Creates one memfd-backed region per entry of `region_sizes` (each rounded up to 4 KiB).
    pub fn new(region_sizes: &[u64]) -> Result<Self> {
        Self::with_hotplug(region_sizes, &[])
    }

    /// Like [`GuestMemory::new`], plus one region per entry of `hotplug_sizes` after them that
    /// stays unplugged until [`GuestMemory::plug_next`].
    pub fn with_hotplug(region_sizes: &[u64], hotplug_sizes: &[u64]) -> Result<Self> {
        if region_sizes.is_empty() || region_sizes.contains(&0) || hotplug_sizes.contains(&0) {
            return Err(Error::InvalidConfig(
                "at least one non-empty memory region".into(),
            ));
        }
        let mut ranges = Vec::new();
        let mut next = GUEST_BASE;
        for (i, &size) in region_sizes.iter().chain(hotplug_sizes).enumerate() {
            let size = size.div_ceil(4096) * 4096;
            let file = memfd(&format!("vufs-guest-{i}"), size)?;
            ranges.push((
                GuestAddress(next),
                size as usize,
                Some(FileOffset::new(file, 0)),
            ));
            next += size + REGION_GAP;
        }
        let mem = GuestMemoryMmap::from_ranges_with_files(ranges.iter())
            .map_err(|e| Error::Memory(format!("mapping guest memory: {e:?}")))?;
        let alloc = Allocator::new(
            mem.iter()
                .take(region_sizes.len())
                .map(|r| (r.start_addr().0, r.len()))
                .collect::<Vec<_>>(),
        );
        Ok(Self {
            mem,
            alloc: Mutex::new(alloc),
            plugged: Mutex::new(region_sizes.len()),
        })
    }

    /// Plugs the next held-back region: `announce` gets its memory-table entry and the table of
    /// every plugged region including it, and tells the backend; only once it succeeded may
    /// allocations use the region (a request in it must not reach the backend first). Returns
    /// the entry, or `None` when every region is plugged already.
    pub fn plug_next(
        &self,
        announce: impl FnOnce(&VhostUserMemoryRegionInfo, &[VhostUserMemoryRegionInfo]) -> Result<()>,
    ) -> Result<Option<VhostUserMemoryRegionInfo>> {
        let mut plugged = self.plugged.lock().unwrap();
        let Some(region) = self.mem.iter().nth(*plugged) else {
            return Ok(None);
        };
        let table = self.table(*plugged + 1)?;
        let info = *table.last().expect("the region being plugged");
        announce(&info, &table)?;
        self.alloc
            .lock()
            .unwrap()
            .add_region(region.start_addr().0, region.len());
        *plugged += 1;
        Ok(Some(info))
    }

    /// The vm-memory view of all regions (for reading and writing guest memory).
    pub fn mmap(&self) -> &GuestMemoryMmap<()> {
        &self.mem
    }

    /// The regions as the vhost-user memory table describes them (`userspace_addr` is this
    /// process's mapping address).
    pub fn region_infos(&self) -> Result<Vec<VhostUserMemoryRegionInfo>> {
        self.table(*self.plugged.lock().unwrap())
    }

    /// The memory-table entries of the first `n` regions.
    fn table(&self, n: usize) -> Result<Vec<VhostUserMemoryRegionInfo>> {
        self.mem
            .iter()
            .take(n)
            .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).map_err(Error::Vhost))
            .collect()
    }

    /// `(guest address, length)` of every plugged region, in address order.
    pub fn regions(&self) -> Vec<(GuestAddress, u64)> {
        self.mem
            .iter()
            .take(*self.plugged.lock().unwrap())
            .map(|r| (r.start_addr(), r.len()))
            .collect()
    }

    /// This process's virtual address for guest address `addr` (what vhost-user ring addresses
    /// carry).
    pub fn host_address(&self, addr: GuestAddress) -> Result<u64> {
        self.mem
            .get_host_address(addr)
            .map(|p| p as u64)
            .map_err(|e| Error::Memory(format!("no host address for {:#x}: {e}", addr.0)))
    }

    /// Allocates `len` bytes aligned to `align` (a power of two; at least 64). Consecutive
    /// allocations rotate over the regions, so that every region gets used; a freed block of
    /// up to 4 KiB is handed out again first, from whichever region it is in.
    pub fn alloc(&self, len: u64, align: u64) -> Result<Allocation> {
        let align = align.max(MIN_ALIGN);
        debug_assert!(align.is_power_of_two());
        self.alloc
            .lock()
            .unwrap()
            .alloc(len.max(1), align)
            .map(|start| Allocation {
                addr: GuestAddress(start),
                len,
            })
            .ok_or(Error::OutOfGuestMemory(len))
    }

    /// Returns an allocation to the pool.
    pub fn free(&self, a: Allocation) {
        self.alloc.lock().unwrap().free(a.addr.0, a.len.max(1));
    }

    /// Bytes currently free in all regions together.
    pub fn free_bytes(&self) -> u64 {
        self.alloc.lock().unwrap().free_bytes()
    }

    /// Writes `data` at `addr`.
    pub fn write(&self, addr: GuestAddress, data: &[u8]) -> Result<()> {
        self.mem
            .write_slice(data, addr)
            .map_err(|e| Error::Memory(format!("write at {:#x}: {e}", addr.0)))
    }

    /// Reads `len` bytes at `addr`.
    pub fn read(&self, addr: GuestAddress, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, addr)
            .map_err(|e| Error::Memory(format!("read at {:#x}: {e}", addr.0)))?;
        Ok(buf)
    }

    /// The first guest-physical address past every region, plugged or not (itself outside guest
    /// memory).
    pub fn end(&self) -> GuestAddress {
        self.mem
            .iter()
            .map(|r: &GuestRegionMmap<()>| GuestAddress(r.start_addr().0 + r.len()))
            .max()
            .unwrap_or(GuestAddress(GUEST_BASE))
    }
}

/// Creates a sealed-size memfd of `size` bytes.
fn memfd(name: &str, size: u64) -> Result<File> {
    let cname = CString::new(name).expect("no NUL in memfd name");
    // SAFETY: `cname` is a valid NUL-terminated string; the returned fd is checked and then owned
    // by the `File`.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Io("memfd_create", io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|e| Error::Io("ftruncate memfd", e))?;
    Ok(file)
}

/// First-fit allocator over the free ranges of each region.
#[derive(Debug)]
struct Allocator {
    /// Per region: free ranges, start → length.
    regions: Vec<BTreeMap<u64, u64>>,
    /// Region boundaries `(start, end)`, parallel to `regions`.
    bounds: Vec<(u64, u64)>,
    /// Region the next allocation tries first.
    cursor: usize,
    /// Freed small blocks kept for reuse, per size class (`len / MIN_ALIGN - 1`): a request
    /// allocates and frees a few small buffers, and the free-range maps cost the benchmark's
    /// client a quarter of its time. Given back to the maps when a request does not fit.
    cache: Vec<Vec<u64>>,
    /// Bytes in `cache`.
    cached: u64,
}

/// Largest block [`Allocator::cache`] keeps.
const CACHED_MAX: u64 = 4096;

/// Most blocks kept per size class.
const CACHED_PER_CLASS: usize = 1024;

impl Allocator {
    fn new(regions: Vec<(u64, u64)>) -> Self {
        Self {
            regions: regions
                .iter()
                .map(|&(s, l)| BTreeMap::from([(s, l)]))
                .collect(),
            bounds: regions.iter().map(|&(s, l)| (s, s + l)).collect(),
            cursor: 0,
            cache: (0..CACHED_MAX / MIN_ALIGN).map(|_| Vec::new()).collect(),
            cached: 0,
        }
    }

    fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        let len = len.div_ceil(MIN_ALIGN) * MIN_ALIGN;
        if len <= CACHED_MAX && align == MIN_ALIGN {
            if let Some(start) = self.cache[(len / MIN_ALIGN - 1) as usize].pop() {
                self.cached -= len;
                return Some(start);
            }
        }
        if let Some(start) = self.alloc_range(len, align) {
            return Some(start);
        }
        if self.cached == 0 {
            return None;
        }
        // Cached blocks may be what keeps a large enough range apart.
        self.flush_cache();
        self.alloc_range(len, align)
    }

    /// First fit in the free-range maps, starting at the cursor's region.
    fn alloc_range(&mut self, len: u64, align: u64) -> Option<u64> {
        let n = self.regions.len();
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let free = &mut self.regions[i];
            let found = free.iter().find_map(|(&start, &flen)| {
                let aligned = start.div_ceil(align) * align;
                (aligned + len <= start + flen).then_some((start, flen, aligned))
            });
            if let Some((start, flen, aligned)) = found {
                free.remove(&start);
                if aligned > start {
                    free.insert(start, aligned - start);
                }
                let end = aligned + len;
                if end < start + flen {
                    free.insert(end, start + flen - end);
                }
                self.cursor = (i + 1) % n;
                return Some(aligned);
            }
        }
        None
    }

    fn free(&mut self, start: u64, len: u64) {
        let len = len.div_ceil(MIN_ALIGN) * MIN_ALIGN;
        if len <= CACHED_MAX {
            let class = &mut self.cache[(len / MIN_ALIGN - 1) as usize];
            if class.len() < CACHED_PER_CLASS {
                class.push(start);
                self.cached += len;
                return;
            }
        }
        self.free_range(start, len);
    }

    /// Gives every cached block back to the free-range maps.
    fn flush_cache(&mut self) {
        let mut cache = std::mem::take(&mut self.cache);
        for (i, class) in cache.iter_mut().enumerate() {
            for start in class.drain(..) {
                self.free_range(start, (i as u64 + 1) * MIN_ALIGN);
            }
        }
        self.cache = cache;
        self.cached = 0;
    }

    /// Returns `[start, start + len)` (`len` rounded) to its region's map, merged with its
    /// neighbours.
    fn free_range(&mut self, start: u64, len: u64) {
        let Some(i) = self
            .bounds
            .iter()
            .position(|&(s, e)| start >= s && start + len <= e)
        else {
            debug_assert!(false, "freeing {start:#x} outside every region");
            return;
        };
        let free = &mut self.regions[i];
        let (mut s, mut l) = (start, len);
        if let Some((&ps, &pl)) = free.range(..s).next_back() {
            debug_assert!(ps + pl <= s, "double free at {s:#x}");
            if ps + pl == s {
                free.remove(&ps);
                s = ps;
                l += pl;
            }
        }
        if let Some(&nl) = free.get(&(s + l)) {
            free.remove(&(s + l));
            l += nl;
        }
        free.insert(s, l);
    }

    fn free_bytes(&self) -> u64 {
        self.regions.iter().flat_map(|r| r.values()).sum::<u64>() + self.cached
    }

    /// Makes `[start, start + len)` a new region, all free.
    fn add_region(&mut self, start: u64, len: u64) {
        self.regions.push(BTreeMap::from([(start, len)]));
        self.bounds.push((start, start + len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_rotates_regions_and_coalesces() {
        let mut a = Allocator::new(vec![(0x1000, 0x1000), (0x10000, 0x1000)]);
        let x = a.alloc(100, 64).unwrap();
        let y = a.alloc(100, 64).unwrap();
        assert!(x < 0x2000 && y >= 0x10000, "{x:#x} {y:#x}");
        let z = a.alloc(0x1000, 0x1000);
        assert_eq!(z, None, "no region has 4 KiB free any more");
        a.free(x, 100);
        a.free(y, 100);
        assert_eq!(a.free_bytes(), 0x2000);
        assert_eq!(a.alloc(0x1000, 0x1000), Some(0x1000));
    }

    #[test]
    fn small_blocks_are_reused_and_given_back_when_a_large_one_needs_them() {
        let mut a = Allocator::new(vec![(0x1000, 0x1000)]);
        let blocks: Vec<u64> = (0..64).map(|_| a.alloc(40, 64).unwrap()).collect();
        assert_eq!(a.alloc(1, 64), None, "the region is full");
        for &b in &blocks {
            a.free(b, 40);
        }
        assert_eq!(a.free_bytes(), 0x1000);
        // Reuse: the last freed 64-byte block comes back first.
        assert_eq!(a.alloc(64, 64), Some(blocks[63]));
        a.free(blocks[63], 64);
        // 4 KiB is only there once every cached block is merged back.
        assert_eq!(a.alloc(0x1000, 64), Some(0x1000));
        assert_eq!(a.free_bytes(), 0);
        a.free(0x1000, 0x1000);
        assert_eq!(a.free_bytes(), 0x1000);
    }

    #[test]
    fn memory_regions_have_holes_between_them() {
        let m = GuestMemory::new(&[1 << 20, 1 << 20]).unwrap();
        let r = m.regions();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].0 .0, r[0].0 .0 + r[0].1 + REGION_GAP);
        let a = m.alloc(10, 64).unwrap();
        m.write(a.addr, b"0123456789").unwrap();
        assert_eq!(m.read(a.addr, 10).unwrap(), b"0123456789");
        assert!(m.read(GuestAddress(r[0].0 .0 + r[0].1), 1).is_err());
    }
}
