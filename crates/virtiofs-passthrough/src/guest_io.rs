//! READ and WRITE data between a file and guest memory with no copy in between: the guest's
//! slices, as [`virtiofs_fuse`] hands them over, behind fuse-backend-rs's zero-copy traits, so
//! its passthrough filesystem preadv()s and pwritev()s them directly.

use std::io;

use fuse_backend_rs::api::filesystem::{ZeroCopyReader, ZeroCopyWriter};
use fuse_backend_rs::file_buf::FileVolatileSlice;
use fuse_backend_rs::file_traits::FileReadWriteVolatile;
use virtiofs_fuse::GuestSlice;

/// A cursor over guest slices: which slice, and how far into it.
struct Cursor<'s, 'm> {
    slices: &'s [GuestSlice<'m>],
    index: usize,
    offset: usize,
}

impl<'s, 'm> Cursor<'s, 'm> {
    fn new(slices: &'s [GuestSlice<'m>]) -> Self {
        Cursor {
            slices,
            index: 0,
            offset: 0,
        }
    }

    fn remaining(&self) -> usize {
        self.slices[self.index.min(self.slices.len())..]
            .iter()
            .map(|s| s.len())
            .sum::<usize>()
            - self.offset
    }

    /// The next `count` bytes (or fewer) as guest slices.
    fn next(&self, count: usize) -> Vec<GuestSlice<'m>> {
        let mut out = Vec::with_capacity(self.slices.len() - self.index.min(self.slices.len()));
        let mut left = count;
        let mut offset = self.offset;
        for s in self.slices.iter().skip(self.index) {
            if left == 0 {
                break;
            }
            let len = (s.len() - offset).min(left);
            if len > 0 {
                // In range: offset + len <= s.len().
                if let Ok(sub) = s.subslice(offset, len) {
                    out.push(sub);
                }
            }
            left -= len;
            offset = 0;
        }
        out
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 && self.index < self.slices.len() {
            let left = self.slices[self.index].len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.index += 1;
            self.offset = 0;
        }
    }
}

/// The library's view of guest slices for its vectored file I/O.
fn file_slices<'m>(slices: &[GuestSlice<'m>]) -> Vec<FileVolatileSlice<'m>> {
    slices
        .iter()
        .map(FileVolatileSlice::from_volatile_slice)
        .collect()
}

/// Guest memory a READ's data goes to.
pub struct GuestWriter<'s, 'm>(Cursor<'s, 'm>);

impl<'s, 'm> GuestWriter<'s, 'm> {
    /// Data written goes to `dst`, in order.
    pub fn new(dst: &'s [GuestSlice<'m>]) -> Self {
        GuestWriter(Cursor::new(dst))
    }

    /// Bytes written so far.
    pub fn written(&self, capacity: usize) -> usize {
        capacity - self.0.remaining()
    }
}

impl io::Write for GuestWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut done = 0;
        for s in self.0.next(buf.len()) {
            s.copy_from(&buf[done..done + s.len()]);
            done += s.len();
        }
        self.0.advance(done);
        Ok(done)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ZeroCopyWriter for GuestWriter<'_, '_> {
    fn write_from(
        &mut self,
        f: &mut dyn FileReadWriteVolatile,
        count: usize,
        off: u64,
    ) -> io::Result<usize> {
        let bufs = file_slices(&self.0.next(count));
        if bufs.is_empty() {
            return Ok(0);
        }
        let n = f.read_vectored_at_volatile(&bufs, off)?;
        self.0.advance(n);
        Ok(n)
    }

    fn available_bytes(&self) -> usize {
        self.0.remaining()
    }
}

/// Guest memory a WRITE's data comes from.
pub struct GuestReader<'s, 'm>(Cursor<'s, 'm>);

impl<'s, 'm> GuestReader<'s, 'm> {
    /// Data comes from `src`, in order.
    pub fn new(src: &'s [GuestSlice<'m>]) -> Self {
        GuestReader(Cursor::new(src))
    }
}

impl io::Read for GuestReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        for s in self.0.next(buf.len()) {
            s.copy_to(&mut buf[done..done + s.len()]);
            done += s.len();
        }
        self.0.advance(done);
        Ok(done)
    }
}

impl ZeroCopyReader for GuestReader<'_, '_> {
    fn read_to(
        &mut self,
        f: &mut dyn FileReadWriteVolatile,
        count: usize,
        off: u64,
    ) -> io::Result<usize> {
        let bufs = file_slices(&self.0.next(count));
        if bufs.is_empty() {
            return Ok(0);
        }
        let n = f.write_vectored_at_volatile(&bufs, off)?;
        self.0.advance(n);
        Ok(n)
    }
}
