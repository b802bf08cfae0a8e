//! One arm per opcode: decode the arguments, call the [`Filesystem`] method, encode its reply.
//! Opcodes a virtio-fs server deliberately does not serve are answered ENOSYS here.

use std::cell::Cell;

use vm_memory::ByteValued;

use crate::abi::{
    flags, init_flags, AccessIn, BatchForgetIn, CopyFileRangeIn, CopyFileRangeOut, CreateIn,
    FallocateIn, FlushIn, ForgetIn, ForgetOne, FsyncIn, GetattrIn, GetxattrIn, GetxattrOut,
    IoctlIn, IoctlOut, LinkIn, LkIn, LkOut, LseekIn, LseekOut, MkdirIn, MknodIn, Opcode, OpenIn,
    PollIn, PollOut, ReadIn, ReleaseIn, Rename2In, RenameIn, SetattrIn, SetxattrIn, StatfsOut,
    StatxIn, SyncfsIn, WriteIn, WriteOut, COMPAT_SETXATTR_IN_SIZE,
};
use crate::deferred::{Deferred, PendingReply, PreparedIo};
use crate::dirent::DirSink;
use crate::filesystem::{Context, Entry, Errno, Filesystem, Opened, Xattr};
use crate::input::{DecodeError, Input};
use crate::name::{Name, NAME_MAX};
use crate::output::{Output, OUT_HEADER_LEN};
use crate::reply::{attr_out, entry_out, open_out, statx_out};
use crate::server::{Failure, Request, Server};

/// The largest xattr value (`XATTR_SIZE_MAX`) and list (`XATTR_LIST_MAX`).
const XATTR_MAX: usize = 65536;
/// The longest symlink target with its NUL (`PATH_MAX`).
const PATH_MAX: usize = 4096;
/// The largest ioctl argument the kernel passes (`FUSE_MAX_PAGES_PER_REQ`-bounded, 16 KiB).
const IOCTL_MAX: usize = 16 << 10;

type Outcome = Result<(), Failure>;

/// A reply of the header alone.
pub(crate) fn empty(unique: u64, out: &mut Output<'_>) -> Outcome {
    out.begin()?;
    out.write_header(unique, 0)?;
    Ok(())
}

/// Leaves `io` for the caller to perform; the reply is written by [`Server::finish`].
fn defer(
    slot: &Cell<Option<Deferred>>,
    io: PreparedIo,
    unique: u64,
    opcode: Opcode,
    want: usize,
) -> Outcome {
    let reply = PendingReply {
        unique,
        opcode,
        want,
    };
    slot.set(Some(Deferred { io, reply }));
    Ok(())
}

/// The reply of a deferred READ, WRITE or FSYNC whose I/O came to `result` (bytes moved, or
/// an errno).
pub(crate) fn finish(
    p: &PendingReply,
    result: Result<usize, Errno>,
    out: &mut Output<'_>,
) -> Outcome {
    let n = result?;
    match p.opcode {
        Opcode::Read => {
            out.begin()?;
            out.skip(n.min(p.want))?;
            out.write_header(p.unique, 0)?;
            Ok(())
        }
        Opcode::Write => reply_obj(
            p.unique,
            out,
            &WriteOut {
                size: n.min(p.want) as u32,
                padding: 0,
            },
        ),
        _ => empty(p.unique, out),
    }
}

/// A reply of one struct.
pub(crate) fn reply_obj<T: ByteValued>(unique: u64, out: &mut Output<'_>, v: &T) -> Outcome {
    reply_bytes(unique, out, &[v.as_slice()])
}

/// A reply of several byte strings one after another.
fn reply_bytes(unique: u64, out: &mut Output<'_>, parts: &[&[u8]]) -> Outcome {
    out.begin()?;
    for p in parts {
        out.write_all(p)?;
    }
    out.write_header(unique, 0)?;
    Ok(())
}

fn entry(unique: u64, out: &mut Output<'_>, e: &Entry) -> Outcome {
    reply_obj(unique, out, &entry_out(e))
}

fn created(unique: u64, out: &mut Output<'_>, (e, o): &(Entry, Opened)) -> Outcome {
    reply_bytes(
        unique,
        out,
        &[entry_out(e).as_slice(), open_out(o).as_slice()],
    )
}

/// The rest of the arguments, which must be at most `N` bytes, copied onto the stack.
fn rest<const N: usize>(args: &mut Input<'_>) -> Result<([u8; N], usize), DecodeError> {
    let len = args.remaining();
    if len > N {
        return Err(DecodeError::NameTooLong);
    }
    let mut buf = [0u8; N];
    args.read_exact(&mut buf[..len])?;
    Ok((buf, len))
}

/// The one name that ends the arguments.
fn name(args: &mut Input<'_>) -> Result<Name, DecodeError> {
    let (buf, len) = rest::<{ NAME_MAX + 1 }>(args)?;
    Ok(Name::split_first(&buf[..len])?.0)
}

/// The two names that end RENAME's and RENAME2's arguments.
fn two_names(args: &mut Input<'_>) -> Result<(Name, Name), DecodeError> {
    let (buf, len) = rest::<{ 2 * (NAME_MAX + 1) }>(args)?;
    let (old, tail) = Name::split_first(&buf[..len])?;
    let (new, _) = Name::split_first(tail)?;
    Ok((old, new))
}

/// Serves a request of a live session.
pub(crate) fn dispatch<F: Filesystem>(
    server: &Server<F>,
    op: Opcode,
    req: &Request<'_>,
    args: &mut Input<'_>,
    out: &mut Output<'_>,
) -> Outcome {
    let (h, ctx, secctx) = (req.h, req.ctx, req.secctx);
    let fs = &server.fs;
    let (u, node) = (h.unique, h.nodeid);
    match op {
        Opcode::Lookup => entry(u, out, &fs.lookup(ctx, node, &name(args)?)?),
        Opcode::Forget => {
            let a: ForgetIn = args.read_obj()?;
            fs.forget(node, a.nlookup);
            Ok(())
        }
        Opcode::BatchForget => batch_forget(fs, args),
        Opcode::Getattr => {
            let a: GetattrIn = args.read_obj()?;
            let fh = (a.getattr_flags & flags::GETATTR_FH != 0).then_some(a.fh);
            reply_obj(u, out, &attr_out(&fs.getattr(ctx, node, fh)?))
        }
        Opcode::Setattr => {
            let a: SetattrIn = args.read_obj()?;
            reply_obj(u, out, &attr_out(&fs.setattr(ctx, node, &a)?))
        }
        Opcode::Readlink => {
            let target = fs.readlink(ctx, node)?;
            reply_bytes(u, out, &[&target])
        }
        Opcode::Symlink => {
            let len = args.remaining();
            if len > NAME_MAX + 1 + PATH_MAX {
                return Err(DecodeError::NameTooLong.into());
            }
            let mut buf = vec![0u8; len];
            args.read_exact(&mut buf)?;
            let (name, tail) = Name::split_first(&buf)?;
            let end = tail
                .iter()
                .position(|&b| b == 0)
                .ok_or(DecodeError::Invalid("symlink target without NUL"))?;
            entry(u, out, &fs.symlink(ctx, node, &name, &tail[..end], secctx)?)
        }
        Opcode::Mknod => {
            let a: MknodIn = args.read_obj()?;
            entry(
                u,
                out,
                &fs.mknod(ctx, node, &name(args)?, a.mode, a.rdev, a.umask, secctx)?,
            )
        }
        Opcode::Mkdir => {
            let a: MkdirIn = args.read_obj()?;
            let n = name(args)?;
            entry(u, out, &fs.mkdir(ctx, node, &n, a.mode, a.umask, secctx)?)
        }
        Opcode::Unlink => {
            fs.unlink(ctx, node, &name(args)?)?;
            empty(u, out)
        }
        Opcode::Rmdir => {
            fs.rmdir(ctx, node, &name(args)?)?;
            empty(u, out)
        }
        Opcode::Rename => {
            let a: RenameIn = args.read_obj()?;
            let (old, new) = two_names(args)?;
            fs.rename(ctx, node, &old, a.newdir, &new, 0)?;
            empty(u, out)
        }
        Opcode::Rename2 => {
            let a: Rename2In = args.read_obj()?;
            let (old, new) = two_names(args)?;
            fs.rename(ctx, node, &old, a.newdir, &new, a.flags)?;
            empty(u, out)
        }
        Opcode::Link => {
            let a: LinkIn = args.read_obj()?;
            entry(u, out, &fs.link(ctx, a.oldnodeid, node, &name(args)?)?)
        }
        Opcode::Open => {
            let a: OpenIn = args.read_obj()?;
            reply_obj(
                u,
                out,
                &open_out(&fs.open(ctx, node, a.flags, a.open_flags)?),
            )
        }
        Opcode::Opendir => {
            let a: OpenIn = args.read_obj()?;
            reply_obj(u, out, &open_out(&fs.opendir(ctx, node, a.flags)?))
        }
        Opcode::Read => {
            let a: ReadIn = args.read_obj()?;
            tracing::trace!(unique = u, size = a.size, offset = a.offset, "READ");
            out.begin()?;
            let want = (a.size as usize).min(out.remaining());
            let dst = out.slices(want)?;
            if let Some(slot) = req.defer {
                if let Some(io) = fs.prepare_read(ctx, node, &a, &dst)? {
                    return defer(slot, io, u, op, want);
                }
            }
            let got = fs.read(ctx, node, &a, &dst)?.min(want);
            out.truncate(OUT_HEADER_LEN + got);
            out.write_header(u, 0)?;
            Ok(())
        }
        Opcode::Write => {
            let a: WriteIn = args.read_obj()?;
            let size = a.size as usize;
            if size > args.remaining() || a.size > server.state.max_write() {
                return Err(DecodeError::Invalid("WRITE size beyond its data or max_write").into());
            }
            tracing::trace!(unique = u, size = a.size, offset = a.offset, "WRITE");
            let src = args.slices(size)?;
            if let Some(slot) = req.defer {
                if let Some(io) = fs.prepare_write(ctx, node, &a, &src)? {
                    return defer(slot, io, u, op, size);
                }
            }
            let n = fs.write(ctx, node, &a, &src)?.min(size);
            reply_obj(
                u,
                out,
                &WriteOut {
                    size: n as u32,
                    padding: 0,
                },
            )
        }
        Opcode::Statfs => reply_obj(
            u,
            out,
            &StatfsOut {
                st: fs.statfs(ctx, node)?,
            },
        ),
        Opcode::Release => {
            let a: ReleaseIn = args.read_obj()?;
            fs.release(ctx, node, &a)?;
            empty(u, out)
        }
        Opcode::Releasedir => {
            let a: ReleaseIn = args.read_obj()?;
            fs.releasedir(ctx, node, a.fh, a.flags)?;
            empty(u, out)
        }
        Opcode::Fsync | Opcode::Fsyncdir => {
            let a: FsyncIn = args.read_obj()?;
            let datasync = a.fsync_flags & flags::FSYNC_FDATASYNC != 0;
            if op == Opcode::Fsync {
                if let Some(slot) = req.defer {
                    if let Some(io) = fs.prepare_fsync(ctx, node, a.fh, datasync)? {
                        return defer(slot, io, u, op, 0);
                    }
                }
                fs.fsync(ctx, node, a.fh, datasync)?;
            } else {
                fs.fsyncdir(ctx, node, a.fh, datasync)?;
            }
            empty(u, out)
        }
        Opcode::Setxattr => setxattr(server, ctx, node, args, out, u),
        Opcode::Getxattr => {
            let a: GetxattrIn = args.read_obj()?;
            let reply = fs.getxattr(ctx, node, &name(args)?, a.size)?;
            xattr(u, out, a.size, reply)
        }
        Opcode::Listxattr => {
            let a: GetxattrIn = args.read_obj()?;
            let reply = fs.listxattr(ctx, node, a.size)?;
            xattr(u, out, a.size, reply)
        }
        Opcode::Removexattr => {
            fs.removexattr(ctx, node, &name(args)?)?;
            empty(u, out)
        }
        Opcode::Flush => {
            let a: FlushIn = args.read_obj()?;
            fs.flush(ctx, node, a.fh, a.lock_owner)?;
            empty(u, out)
        }
        Opcode::Readdir | Opcode::Readdirplus => {
            let a: ReadIn = args.read_obj()?;
            out.begin()?;
            let mut sink = DirSink::new(out, a.size as usize, op == Opcode::Readdirplus);
            fs.readdir(ctx, node, a.fh, a.offset, &mut sink)?;
            if let Some(e) = sink.into_error() {
                return Err(e.into());
            }
            out.write_header(u, 0)?;
            Ok(())
        }
        Opcode::Getlk => {
            let a: LkIn = args.read_obj()?;
            reply_obj(
                u,
                out,
                &LkOut {
                    lk: fs.getlk(ctx, node, &a)?,
                },
            )
        }
        Opcode::Setlk | Opcode::Setlkw => {
            let a: LkIn = args.read_obj()?;
            fs.setlk(ctx, node, &a, op == Opcode::Setlkw)?;
            empty(u, out)
        }
        Opcode::Access => {
            let a: AccessIn = args.read_obj()?;
            fs.access(ctx, node, a.mask)?;
            empty(u, out)
        }
        Opcode::Create => {
            let a: CreateIn = args.read_obj()?;
            created(u, out, &fs.create(ctx, node, &name(args)?, &a, secctx)?)
        }
        Opcode::Tmpfile => {
            // The name is the VFS's placeholder ("/"): there is none.
            let a: CreateIn = args.read_obj()?;
            created(u, out, &fs.tmpfile(ctx, node, &a, secctx)?)
        }
        Opcode::Ioctl => {
            let a: IoctlIn = args.read_obj()?;
            if a.flags & flags::IOCTL_UNRESTRICTED != 0 {
                // Only CUSE may ask for the argument's memory to be walked.
                return Err(Errno(libc::ENOSYS).into());
            }
            let len = a.in_size as usize;
            if len > IOCTL_MAX || len > args.remaining() {
                return Err(DecodeError::Invalid("IOCTL in_size").into());
            }
            let mut data = vec![0u8; len];
            args.read_exact(&mut data)?;
            let mut reply = fs.ioctl(ctx, node, &a, &data)?;
            reply.data.truncate(a.out_size as usize);
            let head = IoctlOut {
                result: reply.result,
                ..Default::default()
            };
            reply_bytes(u, out, &[head.as_slice(), &reply.data])
        }
        Opcode::Poll => {
            let a: PollIn = args.read_obj()?;
            reply_obj(
                u,
                out,
                &PollOut {
                    revents: fs.poll(ctx, node, &a)?,
                    padding: 0,
                },
            )
        }
        Opcode::Fallocate => {
            let a: FallocateIn = args.read_obj()?;
            fs.fallocate(ctx, node, &a)?;
            empty(u, out)
        }
        Opcode::Lseek => {
            let a: LseekIn = args.read_obj()?;
            let offset = fs.lseek(ctx, node, a.fh, a.offset, a.whence)?;
            reply_obj(u, out, &LseekOut { offset })
        }
        Opcode::CopyFileRange => {
            let mut a: CopyFileRangeIn = args.read_obj()?;
            // The reply counts in 32 bits: copy no more than it can say.
            a.len = a.len.min(u64::from(u32::MAX) & !0xfff);
            let n = fs.copy_file_range(ctx, node, &a)?;
            reply_obj(
                u,
                out,
                &WriteOut {
                    size: n as u32,
                    padding: 0,
                },
            )
        }
        Opcode::CopyFileRange64 => {
            let a: CopyFileRangeIn = args.read_obj()?;
            let bytes_copied = fs.copy_file_range(ctx, node, &a)?;
            reply_obj(u, out, &CopyFileRangeOut { bytes_copied })
        }
        Opcode::Syncfs => {
            let _: SyncfsIn = args.read_obj()?;
            fs.syncfs(ctx, node)?;
            empty(u, out)
        }
        Opcode::Statx => {
            let a: StatxIn = args.read_obj()?;
            reply_obj(u, out, &statx_out(&fs.statx(ctx, node, &a)?))
        }
        // The virtio-fs driver never interrupts (and the kernel stops after an ENOSYS); BMAP is
        // for block-device FUSE (fuseblk); SETUPMAPPING and REMOVEMAPPING need a DAX window,
        // which is never offered; a NOTIFY_REPLY answers a NOTIFY_RETRIEVE, which is never sent.
        Opcode::Interrupt | Opcode::Bmap | Opcode::SetupMapping | Opcode::RemoveMapping => {
            Err(Errno(libc::ENOSYS).into())
        }
        Opcode::NotifyReply => Ok(()),
        // Handled by the server before dispatch.
        Opcode::Init | Opcode::Destroy => Err(Errno(libc::EIO).into()),
    }
}

/// BATCH_FORGET: the entries go to the filesystem in stack-sized chunks.
fn batch_forget<F: Filesystem>(fs: &F, args: &mut Input<'_>) -> Outcome {
    let a: BatchForgetIn = args.read_obj()?;
    let count = (a.count as usize).min(args.remaining() / std::mem::size_of::<ForgetOne>());
    let mut chunk = [ForgetOne::default(); 64];
    let mut left = count;
    while left > 0 {
        let n = left.min(chunk.len());
        for item in &mut chunk[..n] {
            *item = args.read_obj()?;
        }
        fs.batch_forget(&chunk[..n]);
        left -= n;
    }
    Ok(())
}

fn setxattr<F: Filesystem>(
    server: &Server<F>,
    ctx: &Context,
    node: u64,
    args: &mut Input<'_>,
    out: &mut Output<'_>,
    unique: u64,
) -> Outcome {
    let ext = server.state.has(init_flags::SETXATTR_EXT);
    let a: SetxattrIn = if ext {
        args.read_obj()?
    } else {
        args.read_obj_prefix(COMPAT_SETXATTR_IN_SIZE)?
    };
    let size = a.size as usize;
    if size > XATTR_MAX {
        return Err(Errno(libc::E2BIG).into());
    }
    let name_len = args
        .remaining()
        .checked_sub(size)
        .ok_or(DecodeError::Invalid("SETXATTR size beyond the request"))?;
    let mut names = args.take(name_len)?;
    let name = name(&mut names)?;
    let mut value = vec![0u8; size];
    args.read_exact(&mut value)?;
    server.fs.setxattr(
        ctx,
        node,
        &name,
        &value,
        a.flags,
        if ext { a.setxattr_flags } else { 0 },
    )?;
    empty(unique, out)
}

/// GETXATTR's and LISTXATTR's reply: the size when asked for it, else the data, which must
/// fit what the guest asked for.
fn xattr(unique: u64, out: &mut Output<'_>, asked: u32, reply: Xattr) -> Outcome {
    match reply {
        Xattr::Size(size) => reply_obj(unique, out, &GetxattrOut { size, padding: 0 }),
        Xattr::Data(data) if asked == 0 => {
            let size = data.len() as u32;
            reply_obj(unique, out, &GetxattrOut { size, padding: 0 })
        }
        Xattr::Data(data) if data.len() > asked as usize => Err(Errno(libc::ERANGE).into()),
        Xattr::Data(data) => reply_bytes(unique, out, &[&data]),
    }
}
