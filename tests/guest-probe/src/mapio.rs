//! `mmap-write`, `mmap-read` and `noatime-read`: the guest tools for `--allow-mmap` and
//! `--preserve-noatime` (busybox cannot mmap a file or open it O_NOATIME).
//!
//! ```text
//! guest-probe mmap-write PATH TEXT           maps PATH's first bytes shared and writable,
//!                                            copies TEXT there, msync(MS_SYNC), munmap
//! guest-probe mmap-read PATH shared|private  maps all of PATH read-only and prints it
//! guest-probe noatime-read PATH              opens PATH O_RDONLY|O_NOATIME, prints it
//! ```
//!
//! Errors as the other tools: `CALL PATH: ERRNO (message)` for stderr, exit 1.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::{cvt, describe};

/// The commands of this module.
pub const COMMANDS: &[&str] = &["mmap-write", "mmap-read", "noatime-read"];

/// Runs one of [`COMMANDS`]; `Err` is the message for stderr.
pub fn run(cmd: &str, args: &[OsString]) -> Result<(), String> {
    let fail = |call: &str, e: io::Error| {
        format!("{call} {}: {}", args[0].to_string_lossy(), describe(&e))
    };
    let out = |data: &[u8]| {
        io::stdout()
            .write_all(data)
            .map_err(|e| format!("write stdout: {e}"))
    };
    match (cmd, args.len()) {
        ("mmap-write", 2) => {
            let text = args[1].as_bytes();
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(Path::new(&args[0]))
                .map_err(|e| fail("open", e))?;
            let map = Map::new(&f, text.len(), libc::PROT_READ | libc::PROT_WRITE, true)
                .map_err(|e| fail("mmap", e))?;
            // SAFETY: the mapping is text.len() bytes long and writable.
            unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), map.ptr, text.len()) };
            // SAFETY: ptr/len are the live mapping.
            cvt(unsafe { libc::msync(map.ptr.cast(), map.len, libc::MS_SYNC) })
                .map_err(|e| fail("msync", e))?;
            Ok(())
        }
        ("mmap-read", 2) => {
            let shared = match args[1].to_str() {
                Some("shared") => true,
                Some("private") => false,
                _ => return Err("mmap-read: say shared or private".into()),
            };
            let f = File::open(Path::new(&args[0])).map_err(|e| fail("open", e))?;
            let len = f.metadata().map_err(|e| fail("fstat", e))?.len() as usize;
            let map = Map::new(&f, len, libc::PROT_READ, shared).map_err(|e| fail("mmap", e))?;
            // SAFETY: the mapping is len readable bytes, alive while `map` is.
            out(unsafe { std::slice::from_raw_parts(map.ptr, map.len) })
        }
        ("noatime-read", 1) => {
            let mut f = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME)
                .open(Path::new(&args[0]))
                .map_err(|e| fail("open", e))?;
            let mut data = Vec::new();
            f.read_to_end(&mut data).map_err(|e| fail("read", e))?;
            out(&data)
        }
        _ => Err(format!(
            "usage: guest-probe {cmd} ... (see tests/guest-probe/src/mapio.rs)"
        )),
    }
}

/// A mapping of a file's first `len` bytes, unmapped on drop.
struct Map {
    ptr: *mut u8,
    len: usize,
}

impl Map {
    fn new(f: &File, len: usize, prot: i32, shared: bool) -> io::Result<Map> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let flags = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        // SAFETY: a new mapping chosen by the kernel; checked for MAP_FAILED.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, f.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Map {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
