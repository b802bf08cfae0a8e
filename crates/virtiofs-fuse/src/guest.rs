//! Copies between guest memory and the server's own buffers (headers, arguments, replies).
//!
//! `Bytes::read_slice`/`write_slice` on the memory table walk the range region by region
//! through a slice iterator, which costs more than the copy for the few bytes of an argument.
//! A segment is one guest buffer, nearly always inside one region: one region lookup and a copy
//! then; a range across two regions goes through vm-memory's walk as before.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use crate::input::Memory;

/// Copies `buf.len()` bytes at `addr` into `buf`; false if they are not all guest memory.
pub fn read(mem: &Memory, buf: &mut [u8], addr: GuestAddress) -> bool {
    match mem.get_slice(addr, buf.len()) {
        Ok(slice) => slice.copy_to(buf) == buf.len(),
        Err(_) => mem.read_slice(buf, addr).is_ok(),
    }
}

/// Copies `bytes` to `addr`; false if the range is not all guest memory.
pub fn write(mem: &Memory, bytes: &[u8], addr: GuestAddress) -> bool {
    match mem.get_slice(addr, bytes.len()) {
        Ok(slice) => {
            slice.copy_from(bytes);
            true
        }
        Err(_) => mem.write_slice(bytes, addr).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two adjacent regions (a range may cross from one to the other), then a hole.
    fn memory() -> Memory {
        Memory::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)]).unwrap()
    }

    #[test]
    fn within_one_region_and_across_two() {
        let mem = memory();
        let data: Vec<u8> = (0..64).collect();
        for at in [0x10, 0xfe0] {
            // 0xfe0: 32 bytes in the first region, 32 in the second.
            assert!(write(&mem, &data, GuestAddress(at)));
            let mut back = [0u8; 64];
            assert!(read(&mem, &mut back, GuestAddress(at)));
            assert_eq!(back[..], data[..], "at {at:#x}");
            let mut direct = [0u8; 64];
            mem.read_slice(&mut direct, GuestAddress(at)).unwrap();
            assert_eq!(direct[..], data[..]);
        }
    }

    #[test]
    fn outside_guest_memory_is_refused() {
        let mem = memory();
        let mut buf = [0u8; 16];
        assert!(
            !read(&mem, &mut buf, GuestAddress(0x1ff8)),
            "runs past the end"
        );
        assert!(!read(&mem, &mut buf, GuestAddress(0x5000)), "in no region");
        assert!(!write(&mem, &buf, GuestAddress(0x1ff8)));
        assert!(!write(&mem, &buf, GuestAddress(u64::MAX - 4)));
        // Nothing of a refused write landed.
        let mut tail = [1u8; 8];
        mem.read_slice(&mut tail, GuestAddress(0x1ff8)).unwrap();
        assert_eq!(tail, [0u8; 8]);
    }
}
