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

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// Posts one chain of `(addr, len, writable)` parts on a fresh queue in `mem` and pops it.
    fn chain(mem: &GuestMemoryAtomic<GuestMemoryMmap<()>>, parts: &[(u64, u32, bool)]) -> Chain {
        let m = mem.memory();
        for (i, &(addr, len, writable)) in parts.iter().enumerate() {
            let mut flags = if writable { F_WRITE } else { 0 };
            if i + 1 < parts.len() {
                flags |= F_NEXT;
            }
            let raw = raw_desc(addr, len, flags, i as u16 + 1);
            m.write_slice(&raw, GuestAddress(16 * i as u64)).unwrap();
        }
        m.write_slice(&0u16.to_le_bytes(), GuestAddress(0x1004))
            .unwrap();
        m.write_slice(&1u16.to_le_bytes(), GuestAddress(0x1002))
            .unwrap();
        let mut q = Queue::new(16).unwrap();
        q.try_set_desc_table_address(GuestAddress(0)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(0x1000)).unwrap();
        q.try_set_used_ring_address(GuestAddress(0x2000)).unwrap();
        q.set_ready(true);
        q.pop_descriptor_chain(mem.memory()).unwrap()
    }

    fn readable(c: &Chain) -> Vec<u8> {
        let mut out = Vec::new();
        for d in c.clone().readable() {
            let mut buf = vec![0u8; d.len() as usize];
            c.memory().read_slice(&mut buf, d.addr()).unwrap();
            out.extend(buf);
        }
        out
    }

    #[test]
    fn guest_changes_after_the_copy_are_not_seen_and_replies_reach_the_guest() {
        let mem = GuestMemoryAtomic::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap(),
        );
        let request: Vec<u8> = (0..PRIVATE_PREFIX + 100).map(|i| i as u8).collect();
        // Split over three readable descriptors; the last crosses the end of the copy.
        let (a, b) = (0x4000u64, 0x8000u64);
        let m = mem.memory();
        m.write_slice(&request[..10], GuestAddress(a)).unwrap();
        m.write_slice(&request[10..], GuestAddress(b)).unwrap();
        let original = chain(
            &mem,
            &[
                (a, 10, false),
                (b, 20, false),
                (b + 20, (request.len() - 30) as u32, false),
                (0x2_0000, 64, true),
            ],
        );
        let private = private_chain(&original).unwrap();
        assert_eq!(readable(&private), request, "same bytes, same order");

        // The guest rewrites its request: the copied prefix keeps the old bytes; the part past
        // the copy is still read from guest memory.
        m.write_slice(&[0xEE; 10], GuestAddress(a)).unwrap();
        let last = b + request.len() as u64 - 10 - 1;
        m.write_slice(&[0xEE], GuestAddress(last)).unwrap();
        let seen = readable(&private);
        assert_eq!(seen[..PRIVATE_PREFIX], request[..PRIVATE_PREFIX]);
        assert_eq!(*seen.last().unwrap(), 0xEE);

        // Replies go to the guest's writable buffer.
        assert!(crate::request::write_reply_prefix(&private, b"reply"));
        let mut reply = [0u8; 5];
        m.read_slice(&mut reply, GuestAddress(0x2_0000)).unwrap();
        assert_eq!(&reply, b"reply");
    }

    #[test]
    fn unreadable_descriptor_is_refused() {
        let mem = GuestMemoryAtomic::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap(),
        );
        let c = chain(&mem, &[(0xF_FFF0, 64, false), (0x2_0000, 64, true)]);
        assert!(matches!(private_chain(&c), Err(PrivateError::Unreadable)));
    }
}
