//! READDIR and READDIRPLUS replies: entries packed into the guest's buffer as the filesystem
//! produces them, until the size the guest asked for is reached.

use vm_memory::ByteValued;

use crate::abi::{Dirent, EntryOut};
use crate::filesystem::Entry;
use crate::output::{Output, ReplyError};
use crate::reply::entry_out;

/// Where a READDIR(PLUS) reply's entries go.
pub struct DirSink<'o, 'm> {
    out: &'o mut Output<'m>,
    /// Bytes of entries the reply may still take.
    room: usize,
    plus: bool,
    added: usize,
    /// A write into guest memory failed: the reply becomes an error.
    failed: Option<ReplyError>,
}

/// The longest record: an entry, a dirent and a name of NAME_MAX bytes, padded.
const MAX_RECORD: usize =
    (std::mem::size_of::<EntryOut>() + std::mem::size_of::<Dirent>() + crate::name::NAME_MAX + 7)
        & !7;

/// An entry's length in the reply: header, name, padding to 8 bytes.
fn record_len(header: usize, name: &[u8]) -> usize {
    (header + name.len() + 7) & !7
}

impl<'o, 'm> DirSink<'o, 'm> {
    /// Entries of at most `size` bytes in all go to `out` (READDIRPLUS when `plus`).
    pub(crate) fn new(out: &'o mut Output<'m>, size: usize, plus: bool) -> Self {
        let room = size.min(out.remaining());
        DirSink {
            out,
            room,
            plus,
            added: 0,
            failed: None,
        }
    }

    /// Whether this is READDIRPLUS: entries must then be added with [`Self::add_plus`].
    pub fn is_plus(&self) -> bool {
        self.plus
    }

    /// Bytes the reply may still take.
    pub fn room(&self) -> usize {
        self.room
    }

    /// Entries added so far.
    pub fn len(&self) -> usize {
        self.added
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.added == 0
    }

    /// Whether an entry named `name` still fits (READDIRPLUS: worth looking it up).
    pub fn fits(&self, name: &[u8]) -> bool {
        record_len(self.header_len(), name) <= self.room
    }

    fn header_len(&self) -> usize {
        if self.plus {
            std::mem::size_of::<EntryOut>() + std::mem::size_of::<Dirent>()
        } else {
            std::mem::size_of::<Dirent>()
        }
    }

    /// Adds a READDIR entry; false when it does not fit (the filesystem stops there, and the
    /// guest asks again from the last offset it got). `off` is the offset of the next entry.
    pub fn add(&mut self, ino: u64, off: u64, typ: u32, name: &[u8]) -> bool {
        debug_assert!(!self.plus, "READDIRPLUS entries need add_plus");
        self.put(None, ino, off, typ, name)
    }

    /// Adds a READDIRPLUS entry; false when it does not fit, and then the entry was not sent:
    /// the filesystem must not count a lookup for it.
    pub fn add_plus(&mut self, entry: &Entry, off: u64, typ: u32, name: &[u8]) -> bool {
        debug_assert!(self.plus, "READDIR entries need add");
        self.put(Some(entry_out(entry)), entry.attr.ino, off, typ, name)
    }

    fn put(&mut self, entry: Option<EntryOut>, ino: u64, off: u64, typ: u32, name: &[u8]) -> bool {
        if self.failed.is_some() || name.is_empty() || name.len() > crate::name::NAME_MAX {
            return false;
        }
        let header = self.header_len();
        let len = record_len(header, name);
        if len > self.room {
            return false;
        }
        let dirent = Dirent {
            ino,
            off,
            namelen: name.len() as u32,
            typ,
        };
        // The record is put together here and written in one go: each write into guest memory
        // looks its region up again.
        let mut rec = [0u8; MAX_RECORD];
        let mut at = 0;
        if let Some(e) = entry {
            let e = e.as_slice();
            rec[..e.len()].copy_from_slice(e);
            at = e.len();
        }
        let d = dirent.as_slice();
        rec[at..at + d.len()].copy_from_slice(d);
        at += d.len();
        rec[at..at + name.len()].copy_from_slice(name);
        let written = self.out.write_all(&rec[..len]);
        match written {
            Ok(()) => {
                self.room -= len;
                self.added += 1;
                true
            }
            Err(e) => {
                self.failed = Some(e);
                false
            }
        }
    }

    /// The write error that stopped the listing, if any.
    pub(crate) fn into_error(self) -> Option<ReplyError> {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::tests::memory;
    use crate::input::Segment;
    use vm_memory::{Bytes, GuestAddress};

    #[test]
    fn entries_are_padded_to_8_and_stop_at_the_size_asked_for() {
        let mem = memory();
        let segs = [Segment {
            addr: GuestAddress(0x1000),
            len: 4096,
        }];
        let mut out = Output::new(&mem, &segs);
        let mut sink = DirSink::new(&mut out, 64, false);
        assert!(sink.add(5, 1, libc::DT_REG as u32, b"abc")); // 24 + 3 -> 32
        assert!(sink.add(6, 2, libc::DT_DIR as u32, b"12345678")); // 24 + 8 -> 32
        assert!(
            !sink.add(7, 3, 0, b"x"),
            "64 bytes used: no room for a third"
        );
        assert_eq!(sink.len(), 2);
        assert_eq!(out.written(), 64);
        let d: Dirent = mem.read_obj(GuestAddress(0x1020)).unwrap();
        assert_eq!(
            (d.ino, d.off, d.namelen, d.typ),
            (6, 2, 8, libc::DT_DIR as u32)
        );
        let pad: [u8; 5] = mem.read_obj(GuestAddress(0x1000 + 27)).unwrap();
        assert_eq!(pad, [0; 5]);
    }

    #[test]
    fn plus_entries_carry_the_entry_first() {
        let mem = memory();
        let segs = [Segment {
            addr: GuestAddress(0x1000),
            len: 4096,
        }];
        let mut out = Output::new(&mem, &segs);
        let mut sink = DirSink::new(&mut out, 4096, true);
        let mut entry = Entry {
            nodeid: 9,
            ..Default::default()
        };
        entry.attr.ino = 77;
        assert!(sink.add_plus(&entry, 1, 8, b"f"));
        assert_eq!(out.written(), 128 + 24 + 8);
        let e: EntryOut = mem.read_obj(GuestAddress(0x1000)).unwrap();
        let d: Dirent = mem.read_obj(GuestAddress(0x1000 + 128)).unwrap();
        assert_eq!((e.nodeid, d.ino, d.namelen), (9, 77, 1));
    }
}
