//! Open directories: OPENDIR, READDIR, READDIRPLUS, RELEASEDIR, FSYNCDIR.
//!
//! A listing reads the host's `getdents64` records and passes their offsets (`d_off`) to the
//! guest unchanged, so the guest's next READDIR resumes exactly where the reply stopped; the
//! records a reply had no room for wait in the handle's [`crate::dir_stream::DirStream`].

use std::os::fd::{AsFd, BorrowedFd};

use virtiofs_fuse::abi::Attr;
use virtiofs_fuse::{DirSink, Entry, Errno, Opened};

use crate::dir_stream::{DirStream, HostDirent};
use crate::inode::InodeKey;
use crate::passthrough::{Passthrough, Result};
use crate::sys;

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
            Some(self.inode(nodeid)?)
        } else {
            None
        };
        let mut stream = h.dir.lock().expect("directory stream lock");
        let listed = self.list(&mut stream, h.fd(), dir.as_deref(), offset, out);
        stream.settle();
        listed
    }

    /// The entries from `offset` on into `out` (READDIRPLUS when `dir`, the directory's node,
    /// is given), through the handle's `stream` of descriptor `fd`.
    fn list(
        &self,
        stream: &mut DirStream,
        fd: BorrowedFd<'_>,
        dir: Option<&crate::inode::Inode>,
        offset: u64,
        out: &mut DirSink<'_, '_>,
    ) -> Result<()> {
        stream.position(fd, offset)?;
        // A FUSE record is at least as long as the host's, so a read of the reply's room never
        // reads much more than fits; what does not fit waits in the stream for the next request.
        let size = out.room().clamp(1024, 64 * 1024);
        while let Some(d) = stream.peek(fd, size)? {
            let fitted = match dir {
                None => out.add(d.ino, d.off, u32::from(d.typ), d.name),
                Some(dir) => match self.add_plus(out, dir, fd, &d) {
                    // Out of descriptors: the entries so far go, or the error if none did.
                    Err(e) if out.is_empty() => return Err(e),
                    Err(_) => false,
                    Ok(fitted) => fitted,
                },
            };
            if !fitted {
                return Ok(());
            }
            stream.advance();
        }
        Ok(())
    }

    /// A READDIRPLUS record: the entry is looked up (and counted) only if it is sent. Names
    /// are looked up relative to the open directory `dir_fd` (no O_PATH descriptor of `dir` is
    /// needed, which a handle node would have to open for each name). Ok(false): no room left;
    /// Err: the descriptors (the guest's fd quota or the host's) are used up.
    fn add_plus(
        &self,
        out: &mut DirSink<'_, '_>,
        dir: &crate::inode::Inode,
        dir_fd: BorrowedFd<'_>,
        d: &HostDirent,
    ) -> Result<bool> {
        if !out.fits(d.name) {
            return Ok(false);
        }
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
            return Ok(out.add_plus(&entry, d.off, u32::from(d.typ), d.name));
        }
        let Ok(name) = std::ffi::CString::new(d.name) else {
            return Ok(true); // cannot happen: getdents64 names end at their NUL
        };
        // The entry's inode number is a hint that the guest knows the file (the lookup
        // checks it); only then is a statx first worth it.
        let hint = InodeKey {
            ino: d.ino,
            ..dir.key
        };
        let looked_up = if self.inodes.knows(&hint) {
            self.lookup_known_at(dir, dir_fd, &name)
        } else {
            self.lookup_at(dir, dir_fd, &name)
        };
        match looked_up {
            Ok(entry) => {
                if out.add_plus(&entry, d.off, u32::from(d.typ), d.name) {
                    Ok(true)
                } else {
                    // Only a failed write into guest memory gets here (the room was checked).
                    self.inodes.forget(entry.nodeid, 1);
                    Ok(false)
                }
            }
            Err(e @ Errno(libc::EMFILE | libc::ENFILE)) => Err(e),
            // Gone since the listing was read: skip the name, as if the listing had been read
            // a moment later.
            Err(_) => Ok(true),
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
