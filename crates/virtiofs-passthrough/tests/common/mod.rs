//! The passthrough filesystem driven in-process, as the FUSE server drives it: most operations
//! through the [`Filesystem`] trait, READDIRPLUS through the server on guest memory (its reply
//! sink exists only there).

#![allow(dead_code)] // each test binary uses part of it

use std::path::Path;

use virtiofs_fuse::abi::{self, CreateIn, Opcode, ReadIn, ReleaseIn, WriteIn};
use virtiofs_fuse::{
    AttrReply, Context, Entry, Errno, Filesystem, GuestSlice, Limits, Memory, Name, Segment, Server,
};
use virtiofs_passthrough::{CacheMode, Config, InodeFileHandles, Passthrough};
use vm_memory::{ByteValued, Bytes, GuestAddress};

pub use virtiofs_fuse::abi::ROOT_ID;

const IN_AT: u64 = 0x1000;
const OUT_AT: u64 = 0x10_0000;
const OUT_LEN: usize = 1 << 20;

/// The share `dir` served with `mode`, session started.
pub struct Fs {
    server: Server<Passthrough>,
    mem: Memory,
    ctx: Context,
}

/// A READDIRPLUS record: name and node id (0 for "." and "..").
#[derive(Debug, Clone)]
pub struct Plus {
    pub name: String,
    pub nodeid: u64,
    pub ino: u64,
}

pub fn config(mode: InodeFileHandles) -> Config {
    Config {
        cache: CacheMode::Auto,
        xattr: true,
        writeback: false,
        readdirplus: true,
        allow_direct_io: false,
        announce_submounts: false,
        xattrmap: None,
        posix_acl: virtiofs_passthrough::Negotiation::Never,
        security_label: virtiofs_passthrough::Negotiation::Never,
        readonly: false,
        killpriv_v2: false,
        allow_mmap: false,
        preserve_noatime: false,
        posix_locks: true,
        flock_locks: true,
        inode_file_handles: mode,
        max_inodes: None,
        max_bytes: None,
        idmaps: Default::default(),
    }
}

impl Fs {
    /// `dir` served with `mode`; Err: the mode's startup check refused it.
    pub fn try_new(dir: &Path, mode: InodeFileHandles) -> Result<Fs, String> {
        let mut fs = Passthrough::new(config(mode), dir).map_err(|e| e.to_string())?;
        fs.import().map_err(|e| e.to_string())?;
        fs.enable_file_handles()?;
        let fs = Fs {
            server: Server::new(fs, Limits::default()),
            mem: Memory::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap(),
            ctx: Context::default(),
        };
        let init = abi::InitIn {
            major: 7,
            minor: 45,
            max_readahead: 1 << 17,
            flags: (abi::init_flags::DO_READDIRPLUS | abi::init_flags::INIT_EXT) as u32,
            flags2: 0,
            ..Default::default()
        };
        let (error, _) = fs.send(Opcode::Init, 0, init.as_slice());
        assert_eq!(error, 0, "INIT");
        Ok(fs)
    }

    pub fn new(dir: &Path, mode: InodeFileHandles) -> Fs {
        Fs::try_new(dir, mode).unwrap_or_else(|e| panic!("{mode:?}: {e}"))
    }

    pub fn fs(&self) -> &Passthrough {
        self.server.filesystem()
    }

    pub fn fs_mut(&mut self) -> &mut Passthrough {
        self.server.filesystem_mut()
    }

    /// One request through the server: the reply's error and body.
    fn send(&self, op: Opcode, nodeid: u64, args: &[u8]) -> (i32, Vec<u8>) {
        let header = abi::InHeader {
            len: (std::mem::size_of::<abi::InHeader>() + args.len()) as u32,
            opcode: op as u32,
            unique: 1,
            nodeid,
            ..Default::default()
        };
        let mut bytes = header.as_slice().to_vec();
        bytes.extend_from_slice(args);
        self.mem.write_slice(&bytes, GuestAddress(IN_AT)).unwrap();
        let readable = [Segment {
            addr: GuestAddress(IN_AT),
            len: bytes.len() as u32,
        }];
        let writable = [Segment {
            addr: GuestAddress(OUT_AT),
            len: OUT_LEN as u32,
        }];
        let served = self
            .server
            .handle(&self.mem, &readable, &writable)
            .expect("served");
        let mut out = vec![0u8; served.written];
        self.mem.read_slice(&mut out, GuestAddress(OUT_AT)).unwrap();
        let h = *abi::OutHeader::from_slice(&out[..16]).unwrap();
        (h.error, out[16..].to_vec())
    }

    pub fn lookup(&self, parent: u64, name: &str) -> Result<Entry, Errno> {
        self.fs()
            .lookup(&self.ctx, parent, &Name::new(name.as_bytes()).unwrap())
    }

    pub fn forget(&self, nodeid: u64, n: u64) {
        self.fs().forget(nodeid, n)
    }

    pub fn getattr(&self, nodeid: u64) -> Result<AttrReply, Errno> {
        self.fs().getattr(&self.ctx, nodeid, None)
    }

    pub fn open(&self, nodeid: u64, flags: i32) -> Result<u64, Errno> {
        self.fs()
            .open(&self.ctx, nodeid, flags as u32, 0)
            .map(|o| o.fh)
    }

    pub fn create(&self, parent: u64, name: &str, mode: u32) -> Result<(Entry, u64), Errno> {
        let arg = CreateIn {
            flags: (libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) as u32,
            mode: libc::S_IFREG | mode,
            umask: 0,
            open_flags: 0,
        };
        self.fs()
            .create(
                &self.ctx,
                parent,
                &Name::new(name.as_bytes()).unwrap(),
                &arg,
                None,
            )
            .map(|(e, o)| (e, o.fh))
    }

    /// O_TMPFILE in `parent`: its entry and open handle.
    pub fn tmpfile(&self, parent: u64) -> Result<(Entry, u64), Errno> {
        let arg = CreateIn {
            flags: libc::O_RDWR as u32,
            mode: libc::S_IFREG | 0o600,
            umask: 0,
            open_flags: 0,
        };
        self.fs()
            .tmpfile(&self.ctx, parent, &arg, None)
            .map(|(e, o)| (e, o.fh))
    }

    pub fn mkdir(&self, parent: u64, name: &str) -> Result<Entry, Errno> {
        let name = Name::new(name.as_bytes()).unwrap();
        self.fs().mkdir(&self.ctx, parent, &name, 0o755, 0, None)
    }

    pub fn read(&self, nodeid: u64, fh: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let mut buf = vec![0u8; size as usize];
        let arg = ReadIn {
            fh,
            size,
            ..Default::default()
        };
        let n = self
            .fs()
            .read(&self.ctx, nodeid, &arg, &[GuestSlice::from(&mut buf[..])])?;
        buf.truncate(n);
        Ok(buf)
    }

    pub fn write(&self, nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Result<usize, Errno> {
        let mut buf = data.to_vec();
        let arg = WriteIn {
            fh,
            offset,
            size: data.len() as u32,
            ..Default::default()
        };
        self.fs()
            .write(&self.ctx, nodeid, &arg, &[GuestSlice::from(&mut buf[..])])
    }

    pub fn release(&self, nodeid: u64, fh: u64) {
        let arg = ReleaseIn {
            fh,
            ..Default::default()
        };
        self.fs().release(&self.ctx, nodeid, &arg).unwrap();
    }

    pub fn rename(&self, olddir: u64, old: &str, newdir: u64, new: &str) -> Result<(), Errno> {
        let (old, new) = (
            Name::new(old.as_bytes()).unwrap(),
            Name::new(new.as_bytes()).unwrap(),
        );
        self.fs().rename(&self.ctx, olddir, &old, newdir, &new, 0)
    }

    pub fn link(&self, nodeid: u64, newparent: u64, name: &str) -> Result<Entry, Errno> {
        let name = Name::new(name.as_bytes()).unwrap();
        self.fs().link(&self.ctx, nodeid, newparent, &name)
    }

    pub fn unlink(&self, parent: u64, name: &str) -> Result<(), Errno> {
        let name = Name::new(name.as_bytes()).unwrap();
        self.fs().unlink(&self.ctx, parent, &name)
    }

    pub fn symlink(&self, parent: u64, name: &str, target: &str) -> Result<Entry, Errno> {
        let name = Name::new(name.as_bytes()).unwrap();
        self.fs()
            .symlink(&self.ctx, parent, &name, target.as_bytes(), None)
    }

    pub fn readlink(&self, nodeid: u64) -> Result<Vec<u8>, Errno> {
        self.fs().readlink(&self.ctx, nodeid)
    }

    /// OPENDIR, READDIRPLUS until the end, RELEASEDIR: every record.
    pub fn readdirplus(&self, nodeid: u64) -> Result<Vec<Plus>, Errno> {
        let mut pages = Vec::new();
        self.readdirplus_pages(nodeid, &mut pages)?;
        Ok(pages.concat())
    }

    /// [`Self::readdirplus`] a reply at a time: each reply's records go to `pages` as they
    /// come, so a listing that fails part-way shows what it sent before the error.
    pub fn readdirplus_pages(&self, nodeid: u64, pages: &mut Vec<Vec<Plus>>) -> Result<(), Errno> {
        let fh = self.fs().opendir(&self.ctx, nodeid, 0)?.fh;
        let listed = self.readdirplus_fh(nodeid, fh, pages);
        self.fs().releasedir(&self.ctx, nodeid, fh, 0)?;
        listed
    }

    fn readdirplus_fh(
        &self,
        nodeid: u64,
        fh: u64,
        pages: &mut Vec<Vec<Plus>>,
    ) -> Result<(), Errno> {
        let mut offset = 0;
        loop {
            let arg = ReadIn {
                fh,
                offset,
                size: 64 * 1024,
                ..Default::default()
            };
            let (error, body) = self.send(Opcode::Readdirplus, nodeid, arg.as_slice());
            if error != 0 {
                return Err(Errno(-error));
            }
            if body.is_empty() {
                return Ok(());
            }
            let mut page = Vec::new();
            let mut at = 0;
            while at < body.len() {
                let entry = *abi::EntryOut::from_slice(&body[at..at + 128]).unwrap();
                let d = *abi::Dirent::from_slice(&body[at + 128..at + 152]).unwrap();
                let name = &body[at + 152..at + 152 + d.namelen as usize];
                page.push(Plus {
                    name: String::from_utf8(name.to_vec()).unwrap(),
                    nodeid: entry.nodeid,
                    ino: d.ino,
                });
                offset = d.off;
                at += (152 + d.namelen as usize + 7) & !7;
            }
            pages.push(page);
        }
    }
}

/// How many descriptors this process holds.
pub fn fds_held() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A filesystem mounted on `dir` for the length of a test (unmounted on drop).
pub struct Mounted(std::path::PathBuf);

impl Mounted {
    /// `mount -t FSTYPE`; `None` when this process may not mount (not root): the caller skips.
    pub fn new(fstype: &str, dir: &Path) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", fstype, fstype])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mounted(dir.to_owned()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
