//! A daemon-private copy of the start of each request.
//!
//! The guest can rewrite its request buffers while we serve them (another vCPU, a hostile
//! driver). The pipeline checks the FUSE header, and fuse-backend-rs reads header and arguments
//! again, possibly several times: whatever is checked must be what is used. So before anything
//! looks at a request, [`private_chain`] copies its first [`PRIVATE_PREFIX`] readable bytes
//! (header, fixed-size arguments, names) into memory of this thread that the guest cannot see,
//! and builds a descriptor chain over "guest memory plus that private region": the copy, then
//! whatever readable bytes lie past it (WRITE payloads, left in place), then the guest's writable
//! descriptors unchanged, so replies land in guest memory as before.

use std::cell::RefCell;
use std::sync::Arc;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestRegionMmap};

use crate::handler::Chain;

/// Readable bytes copied out of guest memory per request: the header, every fixed-size argument
/// and two names or a symlink target fit.
pub const PRIVATE_PREFIX: usize = 8192;

/// Descriptors a private chain can hold (the copy plus the original chain's descriptors).
const PRIVATE_QUEUE_SIZE: u16 = 4096;
/// Where the private region lies: above any guest-physical address (x86-64 and arm64 have at
/// most 52 address bits).
const PRIVATE_BASE: u64 = 1 << 56;
const DESC_TABLE: u64 = 0;
const AVAIL_RING: u64 = 0x1_0000;
const USED_RING: u64 = 0x1_3000;
const DATA: u64 = 0x2_0000;
const PRIVATE_SIZE: usize = 0x2_0000 + PRIVATE_PREFIX;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

thread_local! {
    /// This thread's private region (one request at a time runs on a thread).
    static REGION: RefCell<Option<Arc<GuestRegionMmap<()>>>> = const { RefCell::new(None) };
}

/// Why a chain cannot be copied; the request is answered as malformed.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    /// A readable descriptor points outside guest memory.
    #[error("readable descriptor outside guest memory")]
    Unreadable,
    /// More descriptors than a private chain holds.
    #[error("descriptor chain too long")]
    TooLong,
    /// Mapping the private region or adding it to the memory map failed.
    #[error("private region: {0}")]
    Region(String),
}

fn region() -> Result<Arc<GuestRegionMmap<()>>, PrivateError> {
    REGION.with(|r| {
        let mut r = r.borrow_mut();
        if let Some(region) = r.as_ref() {
            return Ok(region.clone());
        }
        let region = GuestRegionMmap::from_range(GuestAddress(PRIVATE_BASE), PRIVATE_SIZE, None)
            .map_err(|e| PrivateError::Region(e.to_string()))?;
        let region = Arc::new(region);
        *r = Some(region.clone());
        Ok(region)
    })
}

fn raw_desc(addr: u64, len: u32, flags: u16, next: u16) -> [u8; 16] {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..16].copy_from_slice(&next.to_le_bytes());
    raw
}

/// `chain` with its first [`PRIVATE_PREFIX`] readable bytes moved to memory the guest cannot
/// change (see the module documentation). The result reads and writes exactly the bytes
/// `chain` does; it is only valid on the calling thread, until its next call.
pub fn private_chain(chain: &Chain) -> Result<Chain, PrivateError> {
    let mem = chain.memory();
    let region = region()?;
    let overlay = mem
        .insert_region(region)
        .map_err(|e| PrivateError::Region(e.to_string()))?;

    // The copy, then the readable rest, then the writable descriptors.
    let mut descs: Vec<(u64, u32, bool)> = Vec::new();
    let mut buf = [0u8; PRIVATE_PREFIX];
    let mut copied = 0usize;
    let mut rest = Vec::new();
    for d in chain.clone().readable() {
        let (addr, len) = (d.addr().0, d.len() as usize);
        let take = len.min(PRIVATE_PREFIX - copied);
        if take > 0 {
            mem.read_slice(&mut buf[copied..copied + take], d.addr())
                .map_err(|_| PrivateError::Unreadable)?;
            copied += take;
        }
        if take < len {
            let addr = addr
                .checked_add(take as u64)
                .ok_or(PrivateError::Unreadable)?;
            rest.push((addr, (len - take) as u32, false));
        }
    }
    descs.push((PRIVATE_BASE + DATA, copied as u32, false));
    descs.extend(rest);
    descs.extend(
        chain
            .clone()
            .writable()
            .map(|d: Descriptor| (d.addr().0, d.len(), true)),
    );
    if descs.len() > usize::from(PRIVATE_QUEUE_SIZE) {
        return Err(PrivateError::TooLong);
    }

    let at = |off: u64| GuestAddress(PRIVATE_BASE + off);
    let write = |bytes: &[u8], off: u64| {
        overlay
            .write_slice(bytes, at(off))
            .map_err(|e| PrivateError::Region(e.to_string()))
    };
    write(&buf[..copied], DATA)?;
    let n = descs.len() as u16;
    for (i, &(addr, len, writable)) in descs.iter().enumerate() {
        let i = i as u16;
        let mut flags = if writable { F_WRITE } else { 0 };
        if i + 1 < n {
            flags |= F_NEXT;
        }
        write(
            &raw_desc(addr, len, flags, i + 1),
            DESC_TABLE + 16 * u64::from(i),
        )?;
    }
    // One chain, head 0, in the private available ring.
    write(&0u16.to_le_bytes(), AVAIL_RING + 4)?;
    write(&1u16.to_le_bytes(), AVAIL_RING + 2)?;

    let mut queue =
        Queue::new(PRIVATE_QUEUE_SIZE).map_err(|e| PrivateError::Region(e.to_string()))?;
    queue
        .try_set_desc_table_address(at(DESC_TABLE))
        .and_then(|_| queue.try_set_avail_ring_address(at(AVAIL_RING)))
        .and_then(|_| queue.try_set_used_ring_address(at(USED_RING)))
        .map_err(|e| PrivateError::Region(e.to_string()))?;
    queue.set_ready(true);
    let overlay = GuestMemoryAtomic::new(overlay);
    queue
        .pop_descriptor_chain(overlay.memory())
        .ok_or_else(|| PrivateError::Region("private chain not available".into()))
}

/// Overwrites bytes `offset..offset + bytes.len()` of the request in a chain made by
/// [`private_chain`]; false (and nothing written) if they are not in its private copy.
pub fn patch_private(chain: &Chain, offset: usize, bytes: &[u8]) -> bool {
    let Some(first) = chain.clone().readable().next() else {
        return false;
    };
    let end = offset.saturating_add(bytes.len());
    if first.addr().0 != PRIVATE_BASE + DATA || end > first.len() as usize {
        return false;
    }
    chain
        .memory()
        .write_slice(bytes, GuestAddress(PRIVATE_BASE + DATA + offset as u64))
        .is_ok()
}

/// Reads bytes `offset..offset + buf.len()` of the request from the private copy of a chain made
/// by [`private_chain`]; false if they are not in it.
pub fn read_private(chain: &Chain, offset: usize, buf: &mut [u8]) -> bool {
    let Some(first) = chain.clone().readable().next() else {
        return false;
    };
    let end = offset.saturating_add(buf.len());
    if first.addr().0 != PRIVATE_BASE + DATA || end > first.len() as usize {
        return false;
    }
    chain
        .memory()
        .read_slice(buf, GuestAddress(PRIVATE_BASE + DATA + offset as u64))
        .is_ok()
}
