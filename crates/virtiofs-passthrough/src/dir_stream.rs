//! A directory listing in progress on one open directory: the host records read by
//! `getdents64` and not yet sent to the guest.
//!
//! A READDIRPLUS reply of one page holds a sixth of the records a page of `getdents64` returns.
//! Dropping the rest and seeking back on the next request costs the host a fresh walk: on an
//! ext4 hashed directory every seek frees and rebuilds the listing's tree of names. So the
//! unsent records stay here, and a request that continues where the last reply stopped is
//! served from them without a system call. A request for any other offset drops them and
//! seeks (rewinddir, seekdir, or two readers of one handle). This is what the C virtiofsd gets
//! from its `DIR` streams; a listing that sees names removed meanwhile is what readdir(3)
//! allows (the lookup of such a name fails and READDIRPLUS skips it).
//!
//! What all streams keep between requests is bounded ([`RETAINED_MAX`]): a guest that opens
//! many directories and reads each part-way gets the seek-back behaviour beyond it, never a
//! daemon that grows with its open directories.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::sys;

/// The fixed part of a `linux_dirent64`: ino, off, reclen, type.
const DIRENT64_HEADER: usize = 19;

/// One host directory record.
#[derive(Debug)]
pub(crate) struct HostDirent<'b> {
    /// Inode number.
    pub(crate) ino: u64,
    /// The offset of the next record (what the guest sends to continue after this one).
    pub(crate) off: u64,
    /// `DT_*` type.
    pub(crate) typ: u8,
    /// The name, without its NUL.
    pub(crate) name: &'b [u8],
    /// The record's length in the buffer.
    reclen: usize,
}

/// The first record of `buf` (as getdents64 filled it); None if none is whole.
fn first_record(buf: &[u8]) -> Option<HostDirent<'_>> {
    if buf.len() < DIRENT64_HEADER {
        return None;
    }
    let ino = u64::from_ne_bytes(buf[0..8].try_into().ok()?);
    let off = u64::from_ne_bytes(buf[8..16].try_into().ok()?);
    let reclen = u16::from_ne_bytes(buf[16..18].try_into().ok()?) as usize;
    let typ = buf[18];
    if reclen < DIRENT64_HEADER || reclen > buf.len() {
        return None;
    }
    let name = &buf[DIRENT64_HEADER..reclen];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    Some(HostDirent {
        ino,
        off,
        typ,
        name,
        reclen,
    })
}

/// The records in `buf`.
pub(crate) fn records(buf: &[u8]) -> impl Iterator<Item = HostDirent<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let d = first_record(buf.get(at..)?)?;
        at += d.reclen;
        Some(d)
    })
}

/// Bytes of buffers all the streams of one filesystem keep between requests: 4,096 listings
/// of a page each.
pub const RETAINED_MAX: usize = 16 << 20;

/// The bytes the streams of one filesystem keep between requests.
#[derive(Debug, Default)]
pub struct Retained(AtomicUsize);

impl Retained {
    /// The bytes kept now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The listing state of one open directory (its lock also serialises the handle's readers:
/// the descriptor's position is shared state).
#[derive(Debug)]
pub struct DirStream {
    /// Records read from the host; the unsent ones are `buf[start..end]`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The offset a request continues from: that of the last record taken (or where the
    /// stream was positioned). The buffered records follow it.
    resume: u64,
    /// Where the descriptor stands (the `off` of the last record read), if known.
    fd_pos: Option<u64>,
    /// What this stream's buffer counts in `retained` (0: nothing kept).
    counted: usize,
    retained: Arc<Retained>,
}

impl DirStream {
    /// A stream whose buffer between requests counts in `retained`.
    pub fn new(retained: Arc<Retained>) -> Self {
        DirStream {
            buf: Vec::new(),
            start: 0,
            end: 0,
            resume: 0,
            fd_pos: None,
            counted: 0,
            retained,
        }
    }

    /// A request is over: the buffer stays for the next one while all streams keep no more
    /// than [`RETAINED_MAX`]; else it goes, and the next request seeks.
    pub(crate) fn settle(&mut self) {
        let cap = self.buf.capacity();
        if cap == self.counted {
            return;
        }
        self.uncount();
        if cap == 0 {
            return;
        }
        if self.retained.0.fetch_add(cap, Ordering::Relaxed) + cap > RETAINED_MAX {
            self.retained.0.fetch_sub(cap, Ordering::Relaxed);
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            // The descriptor stands past the records dropped: the next request seeks.
            self.fd_pos = None;
        } else {
            self.counted = cap;
        }
    }

    fn uncount(&mut self) {
        if self.counted > 0 {
            self.retained.0.fetch_sub(self.counted, Ordering::Relaxed);
            self.counted = 0;
        }
    }

    /// Makes the next record the one at `offset` (a guest's READDIR offset): the buffered
    /// records if they continue from there, else a seek (skipped when the descriptor already
    /// stands there).
    pub(crate) fn position(&mut self, fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
        if self.start < self.end && self.resume == offset {
            return Ok(());
        }
        self.start = 0;
        self.end = 0;
        if self.fd_pos != Some(offset) {
            self.fd_pos = None;
            sys::lseek(fd, offset as i64, libc::SEEK_SET)?;
            self.fd_pos = Some(offset);
        }
        self.resume = offset;
        Ok(())
    }

    /// The next record, read from the host in a `getdents64` of `size` bytes when none is
    /// buffered; None at the end of the directory. It stays next until [`Self::advance`].
    pub(crate) fn peek(
        &mut self,
        fd: BorrowedFd<'_>,
        size: usize,
    ) -> io::Result<Option<HostDirent<'_>>> {
        if first_record(&self.buf[self.start..self.end]).is_none() {
            self.fill(fd, size)?;
        }
        Ok(first_record(&self.buf[self.start..self.end]))
    }

    /// Takes the record [`Self::peek`] returned: the next request continues after it.
    pub(crate) fn advance(&mut self) {
        if let Some(d) = first_record(&self.buf[self.start..self.end]) {
            self.resume = d.off;
            self.start += d.reclen;
        }
    }

    /// Reads the next records (none buffered).
    fn fill(&mut self, fd: BorrowedFd<'_>, size: usize) -> io::Result<()> {
        self.start = 0;
        self.end = 0;
        if self.buf.len() != size {
            self.buf.resize(size, 0);
        }
        let n = match sys::getdents64(fd, &mut self.buf) {
            Ok(n) => n,
            Err(e) => {
                self.fd_pos = None;
                return Err(e);
            }
        };
        if n == 0 {
            // The end: nothing to keep between requests.
            self.buf = Vec::new();
            return Ok(());
        }
        self.end = n;
        // The descriptor now stands after the last record read.
        let mut at = 0;
        while let Some(d) = first_record(&self.buf[at..n]) {
            self.fd_pos = Some(d.off);
            at += d.reclen;
        }
        Ok(())
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        self.uncount();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn stream() -> DirStream {
        DirStream::new(Arc::default())
    }

    #[test]
    fn host_records_parse_and_a_truncated_one_ends_the_list() {
        let mut buf = Vec::new();
        for (ino, off, name) in [(5u64, 10u64, &b"a"[..]), (6, 20, b"long-name")] {
            let reclen = (DIRENT64_HEADER + name.len() + 1 + 7) & !7;
            let start = buf.len();
            buf.extend_from_slice(&ino.to_ne_bytes());
            buf.extend_from_slice(&off.to_ne_bytes());
            buf.extend_from_slice(&(reclen as u16).to_ne_bytes());
            buf.push(libc::DT_REG);
            buf.extend_from_slice(name);
            buf.resize(start + reclen, 0);
        }
        let got: Vec<_> = records(&buf)
            .map(|d| (d.ino, d.off, d.name.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![(5, 10, b"a".to_vec()), (6, 20, b"long-name".to_vec())]
        );
        assert_eq!(
            records(&buf[..buf.len() - 1]).count(),
            1,
            "a cut record is not read"
        );
    }

    /// A directory holding `n` empty files `{prefix}000`, `{prefix}001`..., and its descriptor.
    fn dir_with_files(n: usize, prefix: &str) -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..n {
            std::fs::write(dir.path().join(format!("{prefix}{i:03}")), b"").unwrap();
        }
        let fd = std::fs::File::open(dir.path()).unwrap().into();
        (dir, fd)
    }

    /// Every name of the listing from `offset` on, taking records `take` at a time (as
    /// replies of `take` entries would) and re-positioning at the offset a guest would send.
    fn list(s: &mut DirStream, fd: BorrowedFd<'_>, mut offset: u64, take: usize) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            s.position(fd, offset).unwrap();
            for _ in 0..take {
                let Some(d) = s.peek(fd, 1024).unwrap() else {
                    return names;
                };
                names.push(String::from_utf8(d.name.to_vec()).unwrap());
                offset = d.off;
                s.advance();
            }
        }
    }

    #[test]
    fn a_listing_in_small_replies_sees_every_name_once_and_rewinds() {
        let (dir, fd) = dir_with_files(300, "file-");
        let mut s = stream();
        let mut names = list(&mut s, fd.as_fd(), 0, 7);
        assert!(s.buf.is_empty(), "the end of the listing keeps no buffer");
        names.retain(|n| n.starts_with("file-"));
        names.sort();
        let want: Vec<_> = (0..300).map(|i| format!("file-{i:03}")).collect();
        assert_eq!(names, want);
        // Back to 0 (rewinddir): a new file shows up, as after a seek it must.
        std::fs::write(dir.path().join("late"), b"").unwrap();
        let again = list(&mut s, fd.as_fd(), 0, 1000);
        assert!(again.iter().any(|n| n == "late"));
        assert_eq!(again.len(), 303, "300 files, late, . and ..");
    }

    #[test]
    fn an_offset_other_than_where_the_last_reply_stopped_seeks() {
        let (_dir, fd) = dir_with_files(50, "n");
        let mut s = stream();
        // Walk 20 records, noting the offset after the 5th.
        s.position(fd.as_fd(), 0).unwrap();
        let mut after5 = 0;
        let mut sixth = String::new();
        for i in 0..20 {
            let d = s.peek(fd.as_fd(), 4096).unwrap().unwrap();
            if i == 4 {
                after5 = d.off;
            }
            if i == 5 {
                sixth = String::from_utf8(d.name.to_vec()).unwrap();
            }
            s.advance();
        }
        // A second reader of the handle goes back to after the 5th: it gets the 6th.
        s.position(fd.as_fd(), after5).unwrap();
        let d = s.peek(fd.as_fd(), 4096).unwrap().unwrap();
        assert_eq!(String::from_utf8(d.name.to_vec()).unwrap(), sixth);
    }

    #[test]
    fn buffers_kept_between_requests_are_counted_and_bounded() {
        let (_dir, fd) = dir_with_files(200, "e");
        let retained = Arc::new(Retained::default());
        // Within the bound: a part-way listing keeps its buffer, and gives it back at the end
        // and when the stream goes.
        let mut s = DirStream::new(retained.clone());
        s.position(fd.as_fd(), 0).unwrap();
        s.peek(fd.as_fd(), 4096).unwrap();
        s.advance();
        s.settle();
        assert!(retained.bytes() >= 4096, "kept: {}", retained.bytes());
        drop(s);
        assert_eq!(retained.bytes(), 0);
        // At the bound: the buffer goes after each request, and the listing is still whole
        // (every continuation seeks).
        retained.0.store(RETAINED_MAX, Ordering::Relaxed);
        let mut s = DirStream::new(retained.clone());
        let mut offset = 0;
        let mut names = 0;
        'listing: loop {
            s.position(fd.as_fd(), offset).unwrap();
            for _ in 0..9 {
                let Some(d) = s.peek(fd.as_fd(), 4096).unwrap() else {
                    break 'listing;
                };
                offset = d.off;
                names += 1;
                s.advance();
            }
            s.settle();
            assert_eq!(s.buf.capacity(), 0, "nothing kept past the bound");
            assert_eq!(retained.bytes(), RETAINED_MAX);
        }
        assert_eq!(names, 202, "200 files, . and ..");
    }
}
