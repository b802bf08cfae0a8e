//! FUSE requests: an opcode, a node id, the argument parts and the reply layout. Builders for
//! every opcode the client speaks.
//!
//! Parts are kept apart the way the Linux virtio-fs driver keeps them (one descriptor for the
//! header, one per argument, one for the reply header, one per reply argument), so a backend
//! sees realistic multi-descriptor chains.

use vm_memory::ByteValued;

use super::abi::*;

/// A FUSE request before it gets its header (unique, credentials) at submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseRequest {
    /// Opcode (see [`opcode`]).
    pub opcode: u32,
    /// Node id the request is about.
    pub nodeid: u64,
    /// Argument parts after the `fuse_in_header`, one descriptor each (empty parts are skipped).
    pub args: Vec<Vec<u8>>,
    /// Sizes of the reply parts after the `fuse_out_header`, one descriptor each.
    pub out: Vec<u32>,
    /// Whether a reply is expected (false for FORGET / BATCH_FORGET: no writable part at all).
    pub expects_reply: bool,
    /// Request extensions after the arguments (7.38; `fuse_in_header.total_extlen` counts them
    /// in 8-byte units), one descriptor; see [`FuseRequest::with_ext`].
    pub ext: Vec<u8>,
}

fn cstr(name: impl AsRef<[u8]>) -> Vec<u8> {
    let mut v = name.as_ref().to_vec();
    v.push(0);
    v
}

fn obj<T: ByteValued>(v: T) -> Vec<u8> {
    v.as_slice().to_vec()
}

impl FuseRequest {
    /// A request with the given opcode and parts that expects a reply.
    pub fn new(opcode: u32, nodeid: u64, args: Vec<Vec<u8>>, out: Vec<u32>) -> Self {
        Self {
            opcode,
            nodeid,
            args,
            out,
            expects_reply: true,
            ext: Vec::new(),
        }
    }

    /// The request with `ext` as its extensions (whole 8-byte units, as the kernel sends them;
    /// a partial unit is sent too, but `total_extlen` does not count it).
    pub fn with_ext(mut self, ext: Vec<u8>) -> Self {
        self.ext = ext;
        self
    }

    /// The security-context extension as Linux builds it (`get_security_context`): header
    /// `{ size, nr_secctx }`, then for a context `fuse_secctx { size }`, the NUL-terminated
    /// xattr name and the value, zero-padded to 8 bytes. `None`: no context (`nr_secctx` 0).
    pub fn secctx_ext(ctx: Option<(&[u8], &[u8])>) -> Vec<u8> {
        let mut body = Vec::new();
        if let Some((name, value)) = ctx {
            body.extend_from_slice(&(value.len() as u32).to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
            body.extend_from_slice(name);
            body.push(0);
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(8), 0);
        }
        let mut v = ((8 + body.len()) as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&u32::from(ctx.is_some()).to_le_bytes());
        v.extend_from_slice(&body);
        v
    }

    /// TMPFILE in `parent` (the VFS's placeholder name "/").
    pub fn tmpfile(parent: u64, flags: u32, mode: u32, umask: u32) -> Self {
        let arg = CreateIn {
            flags,
            mode,
            umask,
            open_flags: 0,
        };
        Self::new(
            opcode::TMPFILE,
            parent,
            vec![obj(arg), cstr("/")],
            vec![128, 16],
        )
    }

    /// Total length of the arguments and extensions (what `fuse_in_header.len` adds to the
    /// header size).
    pub fn args_len(&self) -> usize {
        self.args.iter().map(Vec::len).sum::<usize>() + self.ext.len()
    }

    /// INIT with a 64-byte `fuse_init_in` (16 bytes if `minor` < 36, as older kernels sent).
    pub fn init(major: u32, minor: u32, max_readahead: u32, flags: u64) -> Self {
        let mut flags = flags;
        if minor >= 36 && flags >> 32 != 0 {
            flags |= init_flags::INIT_EXT;
        }
        let init = InitIn {
            major,
            minor,
            max_readahead,
            flags: flags as u32,
            flags2: (flags >> 32) as u32,
            unused: [0; 11],
        };
        let mut arg = obj(init);
        if minor < 36 {
            arg.truncate(16);
        }
        Self::new(opcode::INIT, 0, vec![arg], vec![64])
    }

    /// DESTROY (reply: header only).
    pub fn destroy() -> Self {
        Self::new(opcode::DESTROY, 0, vec![], vec![])
    }

    /// LOOKUP `name` in `parent`.
    pub fn lookup(parent: u64, name: impl AsRef<[u8]>) -> Self {
        Self::new(opcode::LOOKUP, parent, vec![cstr(name)], vec![128])
    }

    /// FORGET `nlookup` references to `nodeid` (no reply).
    pub fn forget(nodeid: u64, nlookup: u64) -> Self {
        Self {
            expects_reply: false,
            ..Self::new(
                opcode::FORGET,
                nodeid,
                vec![obj(ForgetIn { nlookup })],
                vec![],
            )
        }
    }

    /// BATCH_FORGET of `(nodeid, nlookup)` pairs (no reply).
    pub fn batch_forget(items: &[(u64, u64)]) -> Self {
        let mut list = Vec::with_capacity(16 * items.len());
        for &(nodeid, nlookup) in items {
            list.extend_from_slice(ForgetOne { nodeid, nlookup }.as_slice());
        }
        let head = obj(BatchForgetIn {
            count: items.len() as u32,
            dummy: 0,
        });
        Self {
            expects_reply: false,
            ..Self::new(opcode::BATCH_FORGET, 0, vec![head, list], vec![])
        }
    }

    /// GETATTR, optionally through an open handle.
    pub fn getattr(nodeid: u64, fh: Option<u64>) -> Self {
        let arg = GetattrIn {
            getattr_flags: if fh.is_some() { GETATTR_FH } else { 0 },
            dummy: 0,
            fh: fh.unwrap_or(0),
        };
        Self::new(opcode::GETATTR, nodeid, vec![obj(arg)], vec![104])
    }

    /// SETATTR with a fully built `fuse_setattr_in` (see [`fattr`] for `valid`).
    pub fn setattr(nodeid: u64, arg: SetattrIn) -> Self {
        Self::new(opcode::SETATTR, nodeid, vec![obj(arg)], vec![104])
    }

    /// READLINK (reply: up to 4096 bytes of target).
    pub fn readlink(nodeid: u64) -> Self {
        Self::new(opcode::READLINK, nodeid, vec![], vec![4096])
    }

    /// SYMLINK `name` in `parent` pointing to `target`.
    pub fn symlink(parent: u64, name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Self {
        Self::new(
            opcode::SYMLINK,
            parent,
            vec![cstr(name), cstr(target)],
            vec![128],
        )
    }

    /// MKNOD.
    pub fn mknod(parent: u64, name: impl AsRef<[u8]>, mode: u32, rdev: u32, umask: u32) -> Self {
        let arg = MknodIn {
            mode,
            rdev,
            umask,
            padding: 0,
        };
        Self::new(opcode::MKNOD, parent, vec![obj(arg), cstr(name)], vec![128])
    }

    /// MKDIR.
    pub fn mkdir(parent: u64, name: impl AsRef<[u8]>, mode: u32, umask: u32) -> Self {
        Self::new(
            opcode::MKDIR,
            parent,
            vec![obj(MkdirIn { mode, umask }), cstr(name)],
            vec![128],
        )
    }

    /// UNLINK.
    pub fn unlink(parent: u64, name: impl AsRef<[u8]>) -> Self {
        Self::new(opcode::UNLINK, parent, vec![cstr(name)], vec![])
    }

    /// RMDIR.
    pub fn rmdir(parent: u64, name: impl AsRef<[u8]>) -> Self {
        Self::new(opcode::RMDIR, parent, vec![cstr(name)], vec![])
    }

    /// RENAME.
    pub fn rename(
        olddir: u64,
        oldname: impl AsRef<[u8]>,
        newdir: u64,
        newname: impl AsRef<[u8]>,
    ) -> Self {
        Self::new(
            opcode::RENAME,
            olddir,
            vec![obj(RenameIn { newdir }), cstr(oldname), cstr(newname)],
            vec![],
        )
    }

    /// RENAME2 with `RENAME_*` flags.
    pub fn rename2(
        olddir: u64,
        oldname: impl AsRef<[u8]>,
        newdir: u64,
        newname: impl AsRef<[u8]>,
        flags: u32,
    ) -> Self {
        let arg = Rename2In {
            newdir,
            flags,
            padding: 0,
        };
        Self::new(
            opcode::RENAME2,
            olddir,
            vec![obj(arg), cstr(oldname), cstr(newname)],
            vec![],
        )
    }

    /// LINK: a new name `newname` in `newparent` for `nodeid`.
    pub fn link(nodeid: u64, newparent: u64, newname: impl AsRef<[u8]>) -> Self {
        Self::new(
            opcode::LINK,
            newparent,
            vec![obj(LinkIn { oldnodeid: nodeid }), cstr(newname)],
            vec![128],
        )
    }

    /// OPEN with `O_*` flags.
    pub fn open(nodeid: u64, flags: u32) -> Self {
        let arg = OpenIn {
            flags,
            open_flags: 0,
        };
        Self::new(opcode::OPEN, nodeid, vec![obj(arg)], vec![16])
    }

    /// CREATE `name` in `parent` and open it.
    pub fn create(parent: u64, name: impl AsRef<[u8]>, flags: u32, mode: u32, umask: u32) -> Self {
        let arg = CreateIn {
            flags,
            mode,
            umask,
            open_flags: 0,
        };
        Self::new(
            opcode::CREATE,
            parent,
            vec![obj(arg), cstr(name)],
            vec![128, 16],
        )
    }

    /// READ `size` bytes at `offset`.
    pub fn read(nodeid: u64, fh: u64, offset: u64, size: u32) -> Self {
        let arg = ReadIn {
            fh,
            offset,
            size,
            ..Default::default()
        };
        Self::new(opcode::READ, nodeid, vec![obj(arg)], vec![size])
    }

    /// WRITE `data` at `offset`.
    pub fn write(nodeid: u64, fh: u64, offset: u64, data: &[u8]) -> Self {
        let arg = WriteIn {
            fh,
            offset,
            size: data.len() as u32,
            ..Default::default()
        };
        Self::new(
            opcode::WRITE,
            nodeid,
            vec![obj(arg), data.to_vec()],
            vec![8],
        )
    }

    /// STATFS.
    pub fn statfs(nodeid: u64) -> Self {
        Self::new(opcode::STATFS, nodeid, vec![], vec![80])
    }

    /// RELEASE an open file.
    pub fn release(nodeid: u64, fh: u64, flags: u32) -> Self {
        let arg = ReleaseIn {
            fh,
            flags,
            ..Default::default()
        };
        Self::new(opcode::RELEASE, nodeid, vec![obj(arg)], vec![])
    }

    /// FLUSH (sent by the kernel on every close).
    pub fn flush(nodeid: u64, fh: u64) -> Self {
        let arg = FlushIn {
            fh,
            ..Default::default()
        };
        Self::new(opcode::FLUSH, nodeid, vec![obj(arg)], vec![])
    }

    /// FSYNC (or FSYNCDIR when `dir`).
    pub fn fsync(nodeid: u64, fh: u64, datasync: bool, dir: bool) -> Self {
        let arg = FsyncIn {
            fh,
            fsync_flags: if datasync { FSYNC_FDATASYNC } else { 0 },
            padding: 0,
        };
        let op = if dir { opcode::FSYNCDIR } else { opcode::FSYNC };
        Self::new(op, nodeid, vec![obj(arg)], vec![])
    }

    /// SETXATTR; `ext` selects the 16-byte `fuse_setxattr_in` (negotiated `SETXATTR_EXT`).
    pub fn setxattr(
        nodeid: u64,
        name: impl AsRef<[u8]>,
        value: &[u8],
        flags: u32,
        ext: bool,
    ) -> Self {
        let size = value.len() as u32;
        let head = if ext {
            obj(SetxattrIn {
                size,
                flags,
                ..Default::default()
            })
        } else {
            obj(SetxattrInCompat { size, flags })
        };
        Self::new(
            opcode::SETXATTR,
            nodeid,
            vec![head, cstr(name), value.to_vec()],
            vec![],
        )
    }

    /// GETXATTR; `size` 0 asks for the value's size only.
    pub fn getxattr(nodeid: u64, name: impl AsRef<[u8]>, size: u32) -> Self {
        let arg = GetxattrIn { size, padding: 0 };
        let out = if size == 0 { 8 } else { size };
        Self::new(
            opcode::GETXATTR,
            nodeid,
            vec![obj(arg), cstr(name)],
            vec![out],
        )
    }

    /// LISTXATTR; `size` 0 asks for the list's size only.
    pub fn listxattr(nodeid: u64, size: u32) -> Self {
        let arg = GetxattrIn { size, padding: 0 };
        let out = if size == 0 { 8 } else { size };
        Self::new(opcode::LISTXATTR, nodeid, vec![obj(arg)], vec![out])
    }

    /// REMOVEXATTR.
    pub fn removexattr(nodeid: u64, name: impl AsRef<[u8]>) -> Self {
        Self::new(opcode::REMOVEXATTR, nodeid, vec![cstr(name)], vec![])
    }

    /// ACCESS with an `R_OK | W_OK | X_OK | F_OK` mask.
    pub fn access(nodeid: u64, mask: u32) -> Self {
        Self::new(
            opcode::ACCESS,
            nodeid,
            vec![obj(AccessIn { mask, padding: 0 })],
            vec![],
        )
    }

    /// OPENDIR.
    pub fn opendir(nodeid: u64, flags: u32) -> Self {
        Self {
            opcode: opcode::OPENDIR,
            ..Self::open(nodeid, flags)
        }
    }

    /// READDIR of up to `size` bytes of entries from `offset`.
    pub fn readdir(nodeid: u64, fh: u64, offset: u64, size: u32) -> Self {
        Self {
            opcode: opcode::READDIR,
            ..Self::read(nodeid, fh, offset, size)
        }
    }

    /// READDIRPLUS of up to `size` bytes of entries from `offset`.
    pub fn readdirplus(nodeid: u64, fh: u64, offset: u64, size: u32) -> Self {
        Self {
            opcode: opcode::READDIRPLUS,
            ..Self::read(nodeid, fh, offset, size)
        }
    }

    /// RELEASEDIR.
    pub fn releasedir(nodeid: u64, fh: u64) -> Self {
        Self {
            opcode: opcode::RELEASEDIR,
            ..Self::release(nodeid, fh, 0)
        }
    }

    /// FALLOCATE with `FALLOC_FL_*` mode bits.
    pub fn fallocate(nodeid: u64, fh: u64, offset: u64, length: u64, mode: u32) -> Self {
        let arg = FallocateIn {
            fh,
            offset,
            length,
            mode,
            padding: 0,
        };
        Self::new(opcode::FALLOCATE, nodeid, vec![obj(arg)], vec![])
    }

    /// LSEEK (`SEEK_DATA` / `SEEK_HOLE` / ...).
    pub fn lseek(nodeid: u64, fh: u64, offset: u64, whence: u32) -> Self {
        let arg = LseekIn {
            fh,
            offset,
            whence,
            padding: 0,
        };
        Self::new(opcode::LSEEK, nodeid, vec![obj(arg)], vec![8])
    }
}
