//! Open directories: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR.
//!
//! A listing reads the host's `getdents64` records and passes their offsets (`d_off`) to the
//! guest unchanged, so the guest's next READDIR resumes exactly where the reply stopped.

use std::os::fd::{AsFd, BorrowedFd};

use virtiofs_fuse::abi::Attr;
use virtiofs_fuse::{DirSink, Entry, Errno, Opened};

use crate::passthrough::{Passthrough, Result};
use crate::sys;

/// The fixed part of a `linux_dirent64`: ino, off, reclen, type.
const DIRENT64_HEADER: usize = 19;

/// One host directory record.
pub(crate) struct HostDirent<'b> {
    ino: u64,
    off: u64,
    typ: u8,
    pub(crate) name: &'b [u8],
}

/// The records in `buf` (as getdents64 filled it).
pub(crate) fn records(buf: &[u8]) -> impl Iterator<Item = HostDirent<'_>> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let rec = buf.get(at..)?;
        if rec.len() < DIRENT64_HEADER {
            return None;
        }
        let ino = u64::from_ne_bytes(rec[0..8].try_into().ok()?);
        let off = u64::from_ne_bytes(rec[8..16].try_into().ok()?);
        let reclen = u16::from_ne_bytes(rec[16..18].try_into().ok()?) as usize;
        let typ = rec[18];
        if reclen < DIRENT64_HEADER || reclen > rec.len() {
            return None;
        }
        let name = &rec[DIRENT64_HEADER..reclen];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        at += reclen;
        Some(HostDirent {
            ino,
            off,
            typ,
            name,
        })
    })
}

impl Passthrough {
    pub(crate) fn do_opendir(&self, nodeid: u64, flags: u32) -> Result<Opened> {
        self.check_fd_quota()?;
        let inode = self.inode(nodeid)?;
        if !inode.is_dir() {
            return Err(Errno(libc::ENOTDIR));
        }
        let flags = (flags as i32 & (libc::O_NONBLOCK | libc::O_NOATIME))
            | libc::O_RDONLY
            | libc::O_DIRECTORY;
        let fd = self.reopen(&inode, flags)?;
        Ok(Opened {
            fh: self.handles.insert(nodeid, fd, flags),
            open_flags: self.open_reply_flags(true),
        })
    }

    pub(crate) fn do_readdir(
        &self,
        nodeid: u64,
        fh: u64,
        offset: u64,
        out: &mut DirSink<'_, '_>,
    ) -> Result<()> {
        let h = self.handles.get(nodeid, fh)?;
        let dir = if out.is_plus() {
            let dir = self.inode(nodeid)?;
            self.node_quota(&dir)?;
            Some(dir)
        } else {
            None
        };
        // One reader of a handle at a time: the descriptor's position is shared state.
        let mut position = h.dir_offset.lock().expect("directory position lock");
        if *position != Some(offset) {
            sys::lseek(h.fd(), offset as i64, libc::SEEK_SET)?;
        }
        *position = Some(offset);
        // A FUSE record is at least as long as the host's, so a buffer of the reply's room never
        // reads much more than fits.
        let mut buf = vec![0u8; out.room().clamp(1024, 64 * 1024)];
        loop {
            let n = sys::getdents64(h.fd(), &mut buf)?;
            if n == 0 {
                return Ok(());
            }
            for d in records(&buf[..n]) {
                let fitted = match &dir {
                    None => out.add(d.ino, d.off, u32::from(d.typ), d.name),
                    Some(dir) => self.add_plus(out, dir, h.fd(), &d),
                };
                if !fitted {
                    // The rest of this read is not sent: the next READDIR seeks back to `off`.
                    *position = None;
                    return Ok(());
                }
                *position = Some(d.off);
            }
        }
    }

    /// A READDIRPLUS record: the entry is looked up (and counted) only if it is sent. Names
    /// are looked up relative to the open directory `dir_fd` (no O_PATH descriptor of `dir` is
    /// needed, which a handle node would have to open for each name).
    fn add_plus(
        &self,
        out: &mut DirSink<'_, '_>,
        dir: &crate::inode::Inode,
        dir_fd: BorrowedFd<'_>,
        d: &HostDirent,
    ) -> bool {
        if d.name == b"." || d.name == b".." {
            // The guest skips these; no lookup is counted for them (node id 0).
            let entry = Entry {
                attr: Attr {
                    ino: d.ino,
                    mode: u32::from(d.typ) << 12,
                    ..Default::default()
                },
                ..Default::default()
            };
            return out.add_plus(&entry, d.off, u32::from(d.typ), d.name);
        }
        let Ok(name) = std::ffi::CString::new(d.name) else {
            return true; // cannot happen: getdents64 names end at their NUL
        };
        match self.lookup_at(dir, dir_fd, &name) {
            Ok(entry) => {
                if out.add_plus(&entry, d.off, u32::from(d.typ), d.name) {
                    true
                } else {
                    self.inodes.forget(entry.nodeid, 1);
                    false
                }
            }
            // Gone since the listing was read (or the quota is reached): skip the name, as if
            // the listing had been read a moment later.
            Err(_) => true,
        }
    }

    pub(crate) fn do_releasedir(&self, nodeid: u64, fh: u64) -> Result<()> {
        self.handles.remove(nodeid, fh).map(drop)
    }

    pub(crate) fn do_fsyncdir(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<()> {
        let h = self.handles.get(nodeid, fh)?;
        Ok(sys::fsync(h.fd().as_fd(), datasync)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
