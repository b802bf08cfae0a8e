//! Reading the FUSE header and writing error replies directly in guest memory.
//!
//! The pipeline needs the opcode before it runs a request (to pick the gate side) and must be able
//! to answer a request the server never saw (before INIT, or when the server failed).

use std::ops::Range;
use virtiofs_fuse::abi::{InHeader, Opcode, OutHeader};
use virtiofs_fuse::input::Segment;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::chain::total_len;
use crate::handler::Chain;

/// Size of the FUSE request header.
pub const IN_HEADER_LEN: usize = std::mem::size_of::<InHeader>();
/// Size of the FUSE reply header.
pub const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();

/// Whether the request expects no reply (FORGET and BATCH_FORGET).
pub fn is_forget(opcode: u32) -> bool {
    opcode == Opcode::Forget as u32 || opcode == Opcode::BatchForget as u32
}

/// Walks the first `len` bytes of the given segments, calling `f(address, range in buffer)`
/// for each piece; `false` if they are too short or `f` fails (address outside guest memory).
fn walk_prefix(
    segments: &[Segment],
    len: usize,
    mut f: impl FnMut(GuestAddress, Range<usize>) -> bool,
) -> bool {
    let mut done = 0;
    for seg in segments {
        if done == len {
            break;
        }
        let n = (seg.len as usize).min(len - done);
        if !f(seg.addr, done..done + n) {
            return false;
        }
        done += n;
    }
    done == len
}

fn read_prefix(mem: &GuestMemoryMmap<()>, segments: &[Segment], buf: &mut [u8]) -> bool {
    walk_prefix(segments, buf.len(), |addr, r| {
        mem.read_slice(&mut buf[r], addr).is_ok()
    })
}

/// The FUSE header at the start of the chain's readable part, if it is all there.
pub fn peek_in_header(chain: &Chain) -> Option<InHeader> {
    let mut header = InHeader::default();
    let buf = vm_memory::ByteValued::as_mut_slice(&mut header);
    read_prefix(chain.memory(), chain.readable(), buf).then_some(header)
}

/// Reads the start of the chain's writable part (the reply) into `buf`.
pub fn read_reply_prefix(chain: &Chain, buf: &mut [u8]) -> bool {
    read_prefix(chain.memory(), chain.writable(), buf)
}

/// Overwrites the start of the chain's writable part (the reply) with `buf`.
pub fn write_reply_prefix(chain: &Chain, buf: &[u8]) -> bool {
    let mem = chain.memory();
    walk_prefix(chain.writable(), buf.len(), |addr, r| {
        mem.write_slice(&buf[r], addr).is_ok()
    })
}

/// Writes a reply carrying only `-errno` for request `unique`; returns the bytes written, or
/// `None` if the chain has no room for a reply header.
pub fn reply_error(chain: &Chain, unique: u64, errno: i32) -> Option<usize> {
    let header = OutHeader {
        len: OUT_HEADER_LEN as u32,
        error: -errno,
        unique,
    };
    write_reply_prefix(chain, vm_memory::ByteValued::as_slice(&header)).then_some(OUT_HEADER_LEN)
}

/// READs and WRITEs moving more than this many bytes are [`Weight::Bulk`].
pub const LONG_IO_BYTES: u64 = 128 << 10;

/// What dispatch knows of a request before it runs: whether it may keep its thread long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Normally done in microseconds (metadata, small I/O): runs on the queue thread unless
    /// other requests wait behind it.
    Quick,
    /// Large I/O (a READ or WRITE of more than [`LONG_IO_BYTES`]): a copy of tens to hundreds
    /// of microseconds from the page cache, far longer from a disk. Goes to the pool unless
    /// nothing waits behind it and such requests have been quick of late (see
    /// [`crate::dispatch`]).
    Bulk,
    /// May block for long (flushes to the disk, preallocation, copies between files): always
    /// goes to the pool.
    Long,
}

/// The [`Weight`] of a request, from its header alone: FSYNC, FSYNCDIR, SYNCFS, FALLOCATE and
/// COPY_FILE_RANGE(_64) are long; a WRITE whose `len` (header, arguments and data) and a READ
/// whose reply room (`reply_room`, the chain's writable bytes: asked only for READ) exceed
/// [`LONG_IO_BYTES`] are bulk. No FUSE argument is read: the guest may lie in either number,
/// which only moves its own request to another thread.
pub fn classify(header: &InHeader, reply_room: impl FnOnce() -> u64) -> Weight {
    const LONG: [u32; 6] = [
        Opcode::Fsync as u32,
        Opcode::Fsyncdir as u32,
        Opcode::Syncfs as u32,
        Opcode::Fallocate as u32,
        Opcode::CopyFileRange as u32,
        Opcode::CopyFileRange64 as u32,
    ];
    match header.opcode {
        op if LONG.contains(&op) => Weight::Long,
        op if op == Opcode::Write as u32 && u64::from(header.len) > LONG_IO_BYTES => Weight::Bulk,
        op if op == Opcode::Read as u32 && reply_room() > LONG_IO_BYTES => Weight::Bulk,
        _ => Weight::Quick,
    }
}

/// The inode whose lock the kernel takes exclusively for the whole of this request, when it
/// is quick: a small WRITE (buffered writes to one file hold its `i_rwsem` in ext4, XFS and
/// btrfs alike) or a change of names in a directory (CREATE, MKNOD, MKDIR, SYMLINK, LINK,
/// UNLINK, RMDIR, RENAME(2): the parent's, which is the header's `nodeid` for all of them).
/// Two such requests for one inode run one after the other wherever they run: given to two
/// threads, the second only waits, asleep, for the first. `None` for anything else.
pub fn serial_key(header: &InHeader) -> Option<u64> {
    const NAMES: [u32; 9] = [
        Opcode::Create as u32,
        Opcode::Mknod as u32,
        Opcode::Mkdir as u32,
        Opcode::Symlink as u32,
        Opcode::Link as u32,
        Opcode::Unlink as u32,
        Opcode::Rmdir as u32,
        Opcode::Rename as u32,
        Opcode::Rename2 as u32,
    ];
    let serial = match header.opcode {
        op if op == Opcode::Write as u32 => u64::from(header.len) <= LONG_IO_BYTES,
        op => NAMES.contains(&op),
    };
    serial.then_some(header.nodeid)
}

/// Bytes the chain offers for the reply (its writable part).
pub fn reply_room(chain: &Chain) -> u64 {
    total_len(chain.writable())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: Opcode, len: u32) -> InHeader {
        InHeader {
            len,
            opcode: opcode as u32,
            ..Default::default()
        }
    }

    #[test]
    fn flushes_and_copies_are_long_large_io_is_bulk() {
        let never = || -> u64 { panic!("reply room asked for a request that is not a READ") };
        for op in [
            Opcode::Fsync,
            Opcode::Fsyncdir,
            Opcode::Syncfs,
            Opcode::Fallocate,
            Opcode::CopyFileRange,
            Opcode::CopyFileRange64,
        ] {
            assert_eq!(classify(&header(op, 64), never), Weight::Long, "{op:?}");
        }
        for op in [
            Opcode::Getattr,
            Opcode::Lookup,
            Opcode::Setlkw,
            Opcode::Init,
        ] {
            assert_eq!(classify(&header(op, 64), never), Weight::Quick, "{op:?}");
        }
        let write = |data: u64| header(Opcode::Write, (80 + data) as u32);
        assert_eq!(classify(&write(4096), never), Weight::Quick);
        assert_eq!(classify(&write(LONG_IO_BYTES), never), Weight::Bulk);
        let read = header(Opcode::Read, 80);
        assert_eq!(classify(&read, || 16 + 4096), Weight::Quick);
        assert_eq!(classify(&read, || 16 + (1 << 20)), Weight::Bulk);
        assert_eq!(
            classify(&read, || LONG_IO_BYTES),
            Weight::Quick,
            "at the limit"
        );
    }

    #[test]
    fn small_writes_and_name_changes_are_keyed_by_their_inode() {
        let on = |op: Opcode, len: u32, nodeid: u64| InHeader {
            nodeid,
            ..header(op, len)
        };
        assert_eq!(serial_key(&on(Opcode::Write, 80 + 4096, 7)), Some(7));
        assert_eq!(
            serial_key(&on(Opcode::Write, 80 + LONG_IO_BYTES as u32, 7)),
            None,
            "a bulk WRITE is not keyed"
        );
        for op in [
            Opcode::Create,
            Opcode::Mknod,
            Opcode::Mkdir,
            Opcode::Symlink,
            Opcode::Link,
            Opcode::Unlink,
            Opcode::Rmdir,
            Opcode::Rename,
            Opcode::Rename2,
        ] {
            assert_eq!(serial_key(&on(op, 64, 9)), Some(9), "{op:?}");
        }
        for op in [
            Opcode::Read,
            Opcode::Getattr,
            Opcode::Lookup,
            Opcode::Setattr,
            Opcode::Fsync,
            Opcode::Open,
            Opcode::Release,
        ] {
            assert_eq!(serial_key(&on(op, 64, 9)), None, "{op:?}");
        }
    }
}
