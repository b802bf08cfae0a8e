//! IOCTL: the file attribute commands (`lsattr`/`chattr`, and what the guest kernel's fileattr
//! calls send: FS_IOC_GETFLAGS/SETFLAGS, FS_IOC_FSGETXATTR/FSSETXATTR), run on the host file
//! of the open handle. Every other command is ENOTTY, what ioctl(2) answers for a command a
//! file does not have: the host's ioctls reach devices and filesystems in ways no guest should
//! choose. The guest kernel checks ownership before it sends a SET (`vfs_fileattr_set`); the
//! host still needs CAP_LINUX_IMMUTABLE for the immutable and append-only flags, which the
//! daemon does not keep (EPERM).

use virtiofs_fuse::abi::IoctlIn;
use virtiofs_fuse::{Errno, IoctlReply};

use crate::passthrough::{Passthrough, Result};

/// `_IOR('f', 1, long)`: the inode flags (the kernel reads and writes an `int`).
const FS_IOC_GETFLAGS: u32 = 0x8008_6601;
/// `_IOW('f', 2, long)`.
const FS_IOC_SETFLAGS: u32 = 0x4008_6602;
/// `_IOR('X', 31, struct fsxattr)`.
const FS_IOC_FSGETXATTR: u32 = 0x801c_581f;
/// `_IOW('X', 32, struct fsxattr)`.
const FS_IOC_FSSETXATTR: u32 = 0x401c_5820;
/// `sizeof(struct fsxattr)`.
const FSXATTR_LEN: usize = 28;

impl Passthrough {
    pub(crate) fn do_ioctl(&self, nodeid: u64, arg: &IoctlIn, data: &[u8]) -> Result<IoctlReply> {
        // (command, bytes the host reads or writes, whether it writes them back)
        let (len, out) = match arg.cmd {
            FS_IOC_GETFLAGS => (4, true),
            FS_IOC_SETFLAGS => (4, false),
            FS_IOC_FSGETXATTR => (FSXATTR_LEN, true),
            FS_IOC_FSSETXATTR => (FSXATTR_LEN, false),
            _ => return Err(Errno(libc::ENOTTY)),
        };
        if (out && (arg.out_size as usize) < len) || (!out && data.len() < len) {
            return Err(Errno(libc::EINVAL));
        }
        if !out {
            self.writable()?;
        }
        let h = self.handles.get(nodeid, arg.fh)?;
        // The kernel reads or writes exactly `len` bytes here: a buffer of that size, aligned
        // for the int and the struct.
        let mut buf = [0u64; FSXATTR_LEN.div_ceil(8)];
        if !out {
            // SAFETY: `buf` has room for `len` bytes; u64s of any bytes are valid.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), len) };
            bytes.copy_from_slice(&data[..len]);
        }
        // SAFETY: the command reads or writes at most `len` bytes at the pointer, which `buf`
        // holds; the descriptor is borrowed for the call.
        let r = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&h.fd()),
                arg.cmd as libc::Ioctl,
                buf.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(Errno::last());
        }
        let data = if out {
            // SAFETY: as above, `len` bytes of `buf`.
            unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), len) }.to_vec()
        } else {
            Vec::new()
        };
        Ok(IoctlReply { result: r, data })
    }
}
