//! The readable part of a request in guest memory, read front to back once.
//!
//! Every header and argument is copied out of guest memory exactly once into a value the guest
//! can no longer change (no TOCTOU between checking a field and using it); only WRITE's data is
//! left in place and handed to the filesystem as slices of guest memory, to be written to the
//! file without a copy.

use smallvec::SmallVec;
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemory, VolatileSlice};

/// Guest memory as the vhost-user backend maps it.
pub type Memory = vm_memory::GuestMemoryMmap<()>;

/// One range of guest memory of a descriptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// Slices of guest memory; most requests' data fits in a few.
pub type Slices<'a> = SmallVec<[VolatileSlice<'a, ()>; 4]>;

/// Why a request could not be decoded; answered with an errno when the header was read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the request claims or needs.
    #[error("request too short: {needed} bytes needed, {left} left")]
    Short {
        /// Bytes the next field needs.
        needed: usize,
        /// Bytes left in the request.
        left: usize,
    },
    /// A descriptor points outside guest memory.
    #[error("request is not in guest memory at {0:#x}")]
    BadAddress(u64),
    /// A field holds a value the protocol does not allow.
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// A name longer than NAME_MAX, or a path longer than PATH_MAX.
    #[error("name too long")]
    NameTooLong,
}

impl DecodeError {
    /// The errno the guest gets.
    pub fn errno(&self) -> i32 {
        match self {
            DecodeError::NameTooLong => libc::ENAMETOOLONG,
            _ => libc::EINVAL,
        }
    }
}

/// A cursor over the readable segments of a request.
pub struct Input<'a> {
    mem: &'a Memory,
    pos: Position<'a>,
    /// Bytes the cursor may still read (the segments' total, or a limit set by [`Self::take`]).
    left: usize,
}

/// A place in a list of segments: which segment, and how far into it. Shared by the request's
/// [`Input`] and the reply's [`crate::output::Output`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position<'a> {
    segs: &'a [Segment],
    seg: usize,
    off: u32,
}

impl<'a> Position<'a> {
    /// The start of `segs`.
    pub(crate) fn start(segs: &'a [Segment]) -> Self {
        Position {
            segs,
            seg: 0,
            off: 0,
        }
    }

    /// Moves `n` bytes on (the caller checked that they are there), calling `f` with each
    /// contiguous guest range; `bad` is the error for a range whose address overflows.
    pub(crate) fn walk<E>(
        &mut self,
        mut n: usize,
        bad: impl Fn(u64) -> E,
        mut f: impl FnMut(GuestAddress, usize) -> Result<(), E>,
    ) -> Result<(), E> {
        while n > 0 {
            let seg = self.segs[self.seg];
            let avail = (seg.len - self.off) as usize;
            if avail == 0 {
                self.seg += 1;
                self.off = 0;
                continue;
            }
            let step = avail.min(n);
            let addr = seg
                .addr
                .checked_add(u64::from(self.off))
                .ok_or_else(|| bad(seg.addr.0))?;
            f(addr, step)?;
            self.off += step as u32;
            n -= step;
        }
        Ok(())
    }
}

impl<'a> Input<'a> {
    /// A cursor at the start of `segs`.
    pub fn new(mem: &'a Memory, segs: &'a [Segment]) -> Self {
        let left = segs.iter().map(|s| s.len as usize).sum();
        Input {
            mem,
            pos: Position::start(segs),
            left,
        }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.left
    }

    /// Limits the cursor to the next `n` bytes (a request's own length, shorter than its
    /// descriptors); error if fewer are left.
    pub fn limit(&mut self, n: usize) -> Result<(), DecodeError> {
        self.check(n)?;
        self.left = n;
        Ok(())
    }

    /// Splits off the next `n` bytes as their own cursor and moves this one past them.
    pub fn take(&mut self, n: usize) -> Result<Input<'a>, DecodeError> {
        self.check(n)?;
        let head = Input { left: n, ..*self };
        self.advance(n)?;
        Ok(head)
    }

    fn check(&self, needed: usize) -> Result<(), DecodeError> {
        if needed > self.left {
            return Err(DecodeError::Short {
                needed,
                left: self.left,
            });
        }
        Ok(())
    }

    /// Walks `n` bytes, calling `f` with each contiguous guest range.
    fn walk(
        &mut self,
        n: usize,
        f: impl FnMut(GuestAddress, usize) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.check(n)?;
        self.left -= n;
        self.pos.walk(n, DecodeError::BadAddress, f)
    }

    fn advance(&mut self, n: usize) -> Result<(), DecodeError> {
        self.walk(n, |_, _| Ok(()))
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.advance(n)
    }

    /// Copies the next `buf.len()` bytes.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), DecodeError> {
        let mem = self.mem;
        let mut at = 0;
        self.walk(buf.len(), |addr, len| {
            mem.read_slice(&mut buf[at..at + len], addr)
                .map_err(|_| DecodeError::BadAddress(addr.0))?;
            at += len;
            Ok(())
        })
    }

    /// Copies the next `size_of::<T>()` bytes into a `T`.
    pub fn read_obj<T: ByteValued>(&mut self) -> Result<T, DecodeError> {
        let mut v = T::zeroed();
        self.read_exact(v.as_mut_slice())?;
        Ok(v)
    }

    /// Reads a `T` of which a guest may send only the first `len` bytes (structs that grew
    /// across protocol versions); the rest is zero.
    pub fn read_obj_prefix<T: ByteValued>(&mut self, len: usize) -> Result<T, DecodeError> {
        let mut v = T::zeroed();
        let len = len.min(std::mem::size_of::<T>());
        self.read_exact(&mut v.as_mut_slice()[..len])?;
        Ok(v)
    }

    /// The next `n` bytes as slices of guest memory, not copied (WRITE's data). The cursor
    /// moves past them.
    pub fn slices(&mut self, n: usize) -> Result<Slices<'a>, DecodeError> {
        let mem = self.mem;
        let mut out = Slices::new();
        self.walk(n, |addr, len| {
            for s in mem.get_slices(addr, len) {
                out.push(s.map_err(|_| DecodeError::BadAddress(addr.0))?);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    /// Guest memory of two regions with a hole between them, for request tests.
    pub fn memory() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x10000),
            (GuestAddress(0x20000), 0x10000),
        ])
        .unwrap()
    }

    /// Writes `bytes` into `mem` split into segments of the given lengths, each at its own
    /// address; returns the segments.
    pub fn place(mem: &GuestMemoryMmap<()>, bytes: &[u8], lens: &[usize], at: u64) -> Vec<Segment> {
        let mut segs = Vec::new();
        let (mut addr, mut done) = (at, 0);
        for &len in lens {
            mem.write_slice(&bytes[done..done + len], GuestAddress(addr))
                .unwrap();
            segs.push(Segment {
                addr: GuestAddress(addr),
                len: len as u32,
            });
            done += len;
            addr += len as u64 + 64; // not contiguous
        }
        assert_eq!(done, bytes.len());
        segs
    }

    #[test]
    fn reads_across_segments_and_stops_at_the_end() {
        let mem = memory();
        let bytes: Vec<u8> = (0..100).collect();
        let segs = place(&mem, &bytes, &[3, 0, 50, 47], 0x100);
        let mut input = Input::new(&mem, &segs);
        assert_eq!(input.remaining(), 100);
        let v: u64 = input.read_obj().unwrap();
        assert_eq!(v.to_le_bytes(), [0, 1, 2, 3, 4, 5, 6, 7]);
        let mut head = input.take(10).unwrap();
        let mut buf = [0u8; 10];
        head.read_exact(&mut buf).unwrap();
        assert_eq!(buf[0], 8);
        assert!(head.read_exact(&mut [0]).is_err());
        let data = input.slices(80).unwrap();
        let total: usize = data.iter().map(|s| s.len()).sum();
        assert_eq!(total, 80);
        assert_eq!(
            input.read_exact(&mut [0; 3]),
            Err(DecodeError::Short { needed: 3, left: 2 })
        );
    }

    #[test]
    fn a_segment_outside_guest_memory_is_an_error_not_a_panic() {
        let mem = memory();
        let segs = [Segment {
            addr: GuestAddress(0x12000),
            len: 16,
        }];
        let mut input = Input::new(&mem, &segs);
        assert!(matches!(
            input.read_obj::<u64>(),
            Err(DecodeError::BadAddress(_))
        ));
        let segs = [Segment {
            addr: GuestAddress(u64::MAX - 4),
            len: 16,
        }];
        let mut input = Input::new(&mem, &segs);
        assert!(input.read_exact(&mut [0; 16]).is_err());
        assert!(Input::new(&mem, &segs).slices(16).is_err());
    }

    #[test]
    fn a_short_prefix_leaves_the_rest_zero() {
        let mem = memory();
        let segs = place(&mem, &[1, 0, 0, 0, 2, 0, 0, 0], &[8], 0);
        let v: [u32; 4] = Input::new(&mem, &segs).read_obj_prefix(8).unwrap();
        assert_eq!(v, [1, 2, 0, 0]);
    }
}
