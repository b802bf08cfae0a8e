//! The writable part of a request: where the reply goes, written straight into guest memory.

use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemory};

use crate::abi::OutHeader;
use crate::input::{Memory, Position, Segment, Slices};

/// Why a reply could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The guest's buffers are smaller than the reply.
    #[error("reply of {needed} bytes does not fit the {capacity}-byte buffer")]
    NoRoom {
        /// Bytes the reply needs.
        needed: usize,
        /// Bytes of writable buffer the request has.
        capacity: usize,
    },
    /// A descriptor points outside guest memory.
    #[error("reply buffer is not in guest memory at {0:#x}")]
    BadAddress(u64),
}

/// Size of the reply header.
pub const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();

/// A cursor over the writable segments of a request.
pub struct Output<'a> {
    mem: &'a Memory,
    segs: &'a [Segment],
    pos: Position<'a>,
    written: usize,
    capacity: usize,
}

impl<'a> Output<'a> {
    /// A cursor at the start of `segs`.
    pub fn new(mem: &'a Memory, segs: &'a [Segment]) -> Self {
        Output {
            mem,
            segs,
            pos: Position::start(segs),
            written: 0,
            capacity: segs.iter().map(|s| s.len as usize).sum(),
        }
    }

    /// Total writable bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes written (or skipped) so far: the reply's length.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Bytes still free.
    pub fn remaining(&self) -> usize {
        self.capacity - self.written
    }

    fn walk(
        &mut self,
        n: usize,
        f: impl FnMut(GuestAddress, usize) -> Result<(), ReplyError>,
    ) -> Result<(), ReplyError> {
        if n > self.remaining() {
            return Err(ReplyError::NoRoom {
                needed: self.written + n,
                capacity: self.capacity,
            });
        }
        self.written += n;
        self.pos.walk(n, ReplyError::BadAddress, f)
    }

    /// Writes `bytes` at the cursor.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), ReplyError> {
        let mem = self.mem;
        let mut at = 0;
        self.walk(bytes.len(), |addr, len| {
            mem.write_slice(&bytes[at..at + len], addr)
                .map_err(|_| ReplyError::BadAddress(addr.0))?;
            at += len;
            Ok(())
        })
    }

    /// Writes `v` as its bytes.
    pub fn write_obj<T: ByteValued>(&mut self, v: &T) -> Result<(), ReplyError> {
        self.write_all(v.as_slice())
    }

    /// Writes `n` zero bytes (padding).
    pub fn write_zeros(&mut self, n: usize) -> Result<(), ReplyError> {
        const ZEROS: [u8; 8] = [0; 8];
        let mut n = n;
        while n > 0 {
            let step = n.min(ZEROS.len());
            self.write_all(&ZEROS[..step])?;
            n -= step;
        }
        Ok(())
    }

    /// The next `n` bytes as slices of guest memory (READ's data goes there directly); the
    /// cursor moves past them.
    pub fn slices(&mut self, n: usize) -> Result<Slices<'a>, ReplyError> {
        let mem = self.mem;
        let mut out = Slices::new();
        self.walk(n, |addr, len| {
            for s in mem.get_slices(addr, len) {
                out.push(s.map_err(|_| ReplyError::BadAddress(addr.0))?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Moves the cursor back by `n` bytes' worth of reply length: data that was reserved with
    /// [`Self::slices`] but not filled is not part of the reply.
    pub fn truncate(&mut self, len: usize) {
        debug_assert!(len <= self.written);
        let mut fresh = Output::new(self.mem, self.segs);
        // Cannot fail: `len` bytes were walked already.
        let _ = fresh.walk(len.min(self.written), |_, _| Ok(()));
        *self = fresh;
    }

    /// Writes the reply header at the start of the buffer (after the body, once the length is
    /// known); the cursor stays where it was.
    pub fn write_header(&mut self, unique: u64, error: i32) -> Result<(), ReplyError> {
        let len = self.written.max(OUT_HEADER_LEN);
        let header = OutHeader {
            len: len as u32,
            error,
            unique,
        };
        let mut at_start = Output::new(self.mem, self.segs);
        at_start.write_obj(&header)?;
        if self.written < OUT_HEADER_LEN {
            *self = at_start;
        }
        Ok(())
    }

    /// Moves the cursor past `n` bytes already filled in (READ data written by deferred I/O).
    pub fn skip(&mut self, n: usize) -> Result<(), ReplyError> {
        self.walk(n, |_, _| Ok(()))
    }

    /// Starts a reply: reserves room for the header, to be written by [`Self::write_header`].
    pub fn begin(&mut self) -> Result<(), ReplyError> {
        self.walk(OUT_HEADER_LEN, |_, _| Ok(()))
    }

    /// A whole error reply: just the header, `error` = -errno.
    pub fn reply_error(&mut self, unique: u64, errno: i32) -> Result<usize, ReplyError> {
        self.truncate(0);
        self.begin()?;
        self.write_header(unique, -errno)?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::tests::memory;

    #[test]
    fn header_is_written_last_with_the_length_of_what_follows() {
        let mem = memory();
        let segs = [
            Segment {
                addr: GuestAddress(0x100),
                len: 10,
            },
            Segment {
                addr: GuestAddress(0x200),
                len: 30,
            },
        ];
        let mut out = Output::new(&mem, &segs);
        out.begin().unwrap();
        out.write_all(&[7; 12]).unwrap();
        out.write_header(42, 0).unwrap();
        assert_eq!(out.written(), 28);
        let mut hdr = [0u8; 16];
        mem.read_slice(&mut hdr[..10], GuestAddress(0x100)).unwrap();
        mem.read_slice(&mut hdr[10..], GuestAddress(0x200)).unwrap();
        assert_eq!(u32::from_le_bytes(hdr[0..4].try_into().unwrap()), 28);
        assert_eq!(u64::from_le_bytes(hdr[8..16].try_into().unwrap()), 42);
        let body: u8 = mem.read_obj(GuestAddress(0x206)).unwrap();
        assert_eq!(body, 7);
        assert_eq!(
            out.write_all(&[0; 13]),
            Err(ReplyError::NoRoom {
                needed: 41,
                capacity: 40
            })
        );
    }

    #[test]
    fn an_error_reply_replaces_a_half_written_one() {
        let mem = memory();
        let segs = [Segment {
            addr: GuestAddress(0x100),
            len: 64,
        }];
        let mut out = Output::new(&mem, &segs);
        out.begin().unwrap();
        out.write_all(&[1; 20]).unwrap();
        assert_eq!(out.reply_error(9, libc::ENOENT), Ok(16));
        let hdr: OutHeader = mem.read_obj(GuestAddress(0x100)).unwrap();
        assert_eq!((hdr.len, hdr.error, hdr.unique), (16, -libc::ENOENT, 9));
        let tiny = [Segment {
            addr: GuestAddress(0x100),
            len: 8,
        }];
        assert!(Output::new(&mem, &tiny).reply_error(1, 1).is_err());
    }
}
