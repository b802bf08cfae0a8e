//! FUSE replies: header checks and typed decoding.

use vm_memory::ByteValued;

use super::abi::*;
use crate::error::{Errno, Error, Result};

/// A FUSE reply whose header has been checked against its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Opcode of the request.
    pub opcode: u32,
    /// `unique` of the request (and of the reply).
    pub unique: u64,
    /// The error, if the header carried one.
    pub error: Option<Errno>,
    /// The bytes after the `fuse_out_header`.
    pub body: Vec<u8>,
}

/// Reply to GETXATTR / LISTXATTR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    /// The size needed (request size was 0).
    Size(u32),
    /// The value or the NUL-separated name list.
    Data(Vec<u8>),
}

/// One READDIR entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// Offset to pass to the next READDIR to continue after this entry.
    pub off: u64,
    /// `DT_*` type.
    pub typ: u32,
    /// Name.
    pub name: Vec<u8>,
}

/// One READDIRPLUS entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntryPlus {
    /// The lookup result (nodeid 0 for entries not looked up, e.g. `.` and `..`).
    pub entry: EntryOut,
    /// The directory entry.
    pub dirent: DirEntry,
}

impl Reply {
    /// Decodes the writable bytes of a completed chain (`data` = the first `used_len` bytes).
    pub fn parse(opcode: u32, unique: u64, used_len: u32, data: &[u8]) -> Result<Self> {
        let hdr = OutHeader::from_slice(data.get(..16).ok_or_else(|| {
            Error::BadReply(format!(
                "opcode {opcode}: {used_len} bytes used, less than a reply header"
            ))
        })?)
        .copied()
        .expect("16 bytes");
        if hdr.len != used_len {
            return Err(Error::BadReply(format!(
                "opcode {opcode}: header len {} but used len {used_len}",
                hdr.len
            )));
        }
        if hdr.unique != unique {
            return Err(Error::BadReply(format!(
                "opcode {opcode}: reply unique {} for request {unique}",
                hdr.unique
            )));
        }
        let error = match hdr.error {
            0 => None,
            e if (-4095..0).contains(&e) => {
                if hdr.len != 16 {
                    return Err(Error::BadReply(format!(
                        "opcode {opcode}: error {e} with {} body bytes",
                        hdr.len - 16
                    )));
                }
                Some(Errno(-e))
            }
            e => {
                return Err(Error::BadReply(format!(
                    "opcode {opcode}: error field {e} out of range"
                )))
            }
        };
        Ok(Self {
            opcode,
            unique,
            error,
            body: data[16..].to_vec(),
        })
    }

    /// The body, or the error as [`Error::Errno`].
    pub fn ok(self) -> Result<Vec<u8>> {
        match self.error {
            Some(e) => Err(Error::Errno(e)),
            None => Ok(self.body),
        }
    }

    /// Success with an empty body.
    pub fn empty(self) -> Result<()> {
        let op = self.opcode;
        let b = self.ok()?;
        if !b.is_empty() {
            return Err(Error::BadReply(format!(
                "opcode {op}: {} unexpected body bytes",
                b.len()
            )));
        }
        Ok(())
    }

    /// Success with a body of exactly one `T`.
    pub fn object<T: ByteValued>(self) -> Result<T> {
        let op = self.opcode;
        let b = self.ok()?;
        exact::<T>(op, &b)
    }

    /// A `fuse_entry_out` (LOOKUP, MKDIR, MKNOD, SYMLINK, LINK).
    pub fn entry(self) -> Result<EntryOut> {
        self.object()
    }

    /// A `fuse_attr_out` (GETATTR, SETATTR).
    pub fn attr(self) -> Result<AttrOut> {
        self.object()
    }

    /// A `fuse_open_out` (OPEN, OPENDIR).
    pub fn open(self) -> Result<OpenOut> {
        self.object()
    }

    /// `fuse_entry_out` + `fuse_open_out` (CREATE).
    pub fn create(self) -> Result<(EntryOut, OpenOut)> {
        let op = self.opcode;
        let b = self.ok()?;
        if b.len() != 144 {
            return Err(Error::BadReply(format!(
                "opcode {op}: {} body bytes, want 144",
                b.len()
            )));
        }
        Ok((exact(op, &b[..128])?, exact(op, &b[128..])?))
    }

    /// The byte count of a WRITE.
    pub fn written(self) -> Result<u32> {
        self.object::<WriteOut>().map(|w| w.size)
    }

    /// `fuse_kstatfs` (STATFS).
    pub fn statfs(self) -> Result<Kstatfs> {
        self.object()
    }

    /// The new offset of an LSEEK.
    pub fn lseek(self) -> Result<u64> {
        self.object::<LseekOut>().map(|o| o.offset)
    }

    /// GETXATTR / LISTXATTR; `size_only` when the request size was 0.
    pub fn xattr(self, size_only: bool) -> Result<XattrReply> {
        if size_only {
            self.object::<GetxattrOut>()
                .map(|o| XattrReply::Size(o.size))
        } else {
            self.ok().map(XattrReply::Data)
        }
    }

    /// `fuse_init_out`, zero-extended from the 8- and 24-byte layouts of old minors.
    pub fn init(self) -> Result<InitOut> {
        let op = self.opcode;
        let b = self.ok()?;
        if ![8, 24, 64].contains(&b.len()) {
            return Err(Error::BadReply(format!(
                "INIT: {} body bytes, want 8, 24 or 64",
                b.len()
            )));
        }
        let mut full = [0u8; 64];
        full[..b.len()].copy_from_slice(&b);
        exact(op, &full)
    }

    /// READDIR entries.
    pub fn dirents(self) -> Result<Vec<DirEntry>> {
        let op = self.opcode;
        let b = self.ok()?;
        let mut out = Vec::new();
        let mut rest = &b[..];
        while !rest.is_empty() {
            let (d, used) = dirent(op, rest)?;
            out.push(d);
            rest = &rest[used.min(rest.len())..];
        }
        Ok(out)
    }

    /// READDIRPLUS entries.
    pub fn direntplus(self) -> Result<Vec<DirEntryPlus>> {
        let op = self.opcode;
        let b = self.ok()?;
        let mut out = Vec::new();
        let mut rest = &b[..];
        while !rest.is_empty() {
            if rest.len() < 128 {
                return Err(Error::BadReply(format!(
                    "READDIRPLUS: {} trailing bytes",
                    rest.len()
                )));
            }
            let entry: EntryOut = exact(op, &rest[..128])?;
            let (d, used) = dirent(op, &rest[128..])?;
            out.push(DirEntryPlus { entry, dirent: d });
            rest = &rest[(128 + used).min(rest.len())..];
        }
        Ok(out)
    }
}

fn exact<T: ByteValued>(op: u32, b: &[u8]) -> Result<T> {
    T::from_slice(b).copied().ok_or_else(|| {
        Error::BadReply(format!(
            "opcode {op}: {} body bytes, want {}",
            b.len(),
            std::mem::size_of::<T>()
        ))
    })
}

/// One `fuse_dirent` + name at the start of `b`; returns it and its padded length.
fn dirent(op: u32, b: &[u8]) -> Result<(DirEntry, usize)> {
    if b.len() < 24 {
        return Err(Error::BadReply(format!(
            "opcode {op}: {} trailing dirent bytes",
            b.len()
        )));
    }
    let d: Dirent = exact(op, &b[..24])?;
    let end = 24 + d.namelen as usize;
    if d.namelen == 0 || end > b.len() {
        return Err(Error::BadReply(format!(
            "opcode {op}: dirent namelen {} with {} bytes left",
            d.namelen,
            b.len() - 24
        )));
    }
    let padded = end.div_ceil(8) * 8;
    Ok((
        DirEntry {
            ino: d.ino,
            off: d.off,
            typ: d.typ,
            name: b[24..end].to_vec(),
        },
        padded,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let mut d = OutHeader {
            len: 16,
            error: -2,
            unique: 7,
        }
        .as_slice()
        .to_vec();
        let r = Reply::parse(1, 7, 16, &d).unwrap();
        assert_eq!(r.error, Some(Errno::ENOENT));
        assert!(Reply::parse(1, 8, 16, &d).is_err(), "unique mismatch");
        assert!(Reply::parse(1, 7, 15, &d[..15]).is_err(), "short");
        d.extend_from_slice(&[0; 8]);
        assert!(Reply::parse(1, 7, 24, &d).is_err(), "len mismatch");
    }

    #[test]
    fn dirents_decode_with_padding() {
        let mut b = Vec::new();
        for (i, name) in ["a", "bcdefghij"].iter().enumerate() {
            let d = Dirent {
                ino: 10 + i as u64,
                off: 1 + i as u64,
                namelen: name.len() as u32,
                typ: 8,
            };
            b.extend_from_slice(d.as_slice());
            b.extend_from_slice(name.as_bytes());
            b.resize(b.len().div_ceil(8) * 8, 0);
        }
        let r = Reply {
            opcode: opcode::READDIR,
            unique: 1,
            error: None,
            body: b,
        };
        let e = r.dirents().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].name, b"bcdefghij");
        assert_eq!(e[1].ino, 11);
    }
}
