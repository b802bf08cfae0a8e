//! Reading the FUSE header and writing error replies directly in guest memory.
//!
//! The pipeline needs the opcode before it runs a request (to pick the gate side) and must be able
//! to answer a request the server never saw (before INIT, or when the server failed).

use std::ops::Range;
use virtio_queue::desc::split::Descriptor;
use virtiofs_fuse::abi::{InHeader, Opcode, OutHeader};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::handler::Chain;

/// Size of the FUSE request header.
pub const IN_HEADER_LEN: usize = std::mem::size_of::<InHeader>();
/// Size of the FUSE reply header.
pub const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();

/// Whether the request expects no reply (FORGET and BATCH_FORGET).
pub fn is_forget(opcode: u32) -> bool {
    opcode == Opcode::Forget as u32 || opcode == Opcode::BatchForget as u32
}

/// Walks the first `len` bytes of the given descriptors, calling `f(address, range in buffer)`
/// for each piece; `false` if they are too short or `f` fails (address outside guest memory).
fn walk_prefix(
    descs: impl Iterator<Item = Descriptor>,
    len: usize,
    mut f: impl FnMut(GuestAddress, Range<usize>) -> bool,
) -> bool {
    let mut done = 0;
    for desc in descs {
        if done == len {
            break;
        }
        let n = (desc.len() as usize).min(len - done);
        if !f(desc.addr(), done..done + n) {
            return false;
        }
        done += n;
    }
    done == len
}

fn read_prefix(
    mem: &GuestMemoryMmap<()>,
    descs: impl Iterator<Item = Descriptor>,
    buf: &mut [u8],
) -> bool {
    walk_prefix(descs, buf.len(), |addr, r| {
        mem.read_slice(&mut buf[r], addr).is_ok()
    })
}

/// The FUSE header at the start of the chain's readable part, if it is all there.
pub fn peek_in_header(chain: &Chain) -> Option<InHeader> {
    let mut header = InHeader::default();
    let buf = vm_memory::ByteValued::as_mut_slice(&mut header);
    read_prefix(chain.memory(), chain.clone().readable(), buf).then_some(header)
}

/// Reads the start of the chain's writable part (the reply) into `buf`.
pub fn read_reply_prefix(chain: &Chain, buf: &mut [u8]) -> bool {
    read_prefix(chain.memory(), chain.clone().writable(), buf)
}

/// Overwrites the start of the chain's writable part (the reply) with `buf`.
pub fn write_reply_prefix(chain: &Chain, buf: &[u8]) -> bool {
    let mem = chain.memory();
    walk_prefix(chain.clone().writable(), buf.len(), |addr, r| {
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
