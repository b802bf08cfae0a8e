//! The floor: the same operations as direct system calls on the host, in this process, with
//! one thread per in-flight operation (the same concurrency as the daemons get).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::measure::{Hist, Phase};
use crate::workload::*;

/// An open file descriptor, closed on drop.
#[derive(Debug)]
pub struct Fd(pub i32);

impl Drop for Fd {
    fn drop(&mut self) {
        unsafe {
            libc::close(self.0);
        }
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

fn open_at(dir: i32, path: &CString, flags: i32) -> Result<Fd, String> {
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        return Err(format!(
            "open {path:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(Fd(fd))
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Descriptors shared by all threads of a host cell.
#[derive(Debug)]
pub struct HostFiles {
    w: Workload,
    share: Fd,
    file: Option<Fd>,
    dir: Option<Fd>,
    seq_next: AtomicU64,
    name_next: AtomicU64,
}

impl HostFiles {
    pub fn open(share: &Path, w: Workload) -> Result<Self, String> {
        let p = CString::new(share.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let root = open_at(libc::AT_FDCWD, &p, libc::O_PATH | libc::O_DIRECTORY)?;
        let (file, dir) = match w {
            Workload::RandRead4k | Workload::Getattr => (
                Some(open_at(root.0, &cstr(RAND_READ_FILE), libc::O_RDONLY)?),
                None,
            ),
            Workload::RandWrite4k => (
                Some(open_at(root.0, &cstr(RAND_WRITE_FILE), libc::O_RDWR)?),
                None,
            ),
            Workload::SeqRead1m => (
                Some(open_at(root.0, &cstr(SEQ_FILE), libc::O_RDONLY)?),
                None,
            ),
            Workload::Lookup | Workload::LookupMiss | Workload::ReaddirPlus10k => (
                None,
                Some(open_at(
                    root.0,
                    &cstr(DIR10K),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )?),
            ),
            Workload::CreateUnlink => (
                None,
                Some(open_at(
                    root.0,
                    &cstr(CU_DIR),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )?),
            ),
        };
        Ok(Self {
            w,
            share: root,
            file,
            dir,
            seq_next: AtomicU64::new(0),
            name_next: AtomicU64::new(0),
        })
    }
}

/// The page size the floor's read buffers are aligned to.
const PAGE: usize = 4096;

/// One thread's loop: one operation at a time until stop.
pub fn host_worker(h: &HostFiles, seed: u64, ph: &Phase) -> Result<Hist, String> {
    let mut hist = Hist::default();
    let mut rng = Rng::new(seed + 1);
    let big = matches!(h.w, Workload::SeqRead1m);
    // Page-aligned, as a guest's read buffers are: `vec!` of 1 MiB returns a mapping's start
    // + 16 bytes, and 1 MiB copies to there ran 6–9 % faster than to a page boundary (or to
    // +64 or +2048) on this machine: a floor the daemons' copies into guest pages could not
    // reach (docs/performance.md, session 31).
    let len = if big { IO1M } else { IO4K };
    let mut storage = vec![0u8; len + PAGE];
    let at = storage.as_ptr().align_offset(PAGE);
    let buf = &mut storage[at..at + len];
    let data = vec![0x5au8; IO4K];
    let file = h.file.as_ref().map_or(-1, |f| f.0);
    let dir = h.dir.as_ref().map_or(-1, |f| f.0);
    // readdir needs a file position of its own.
    let own_dir = if h.w == Workload::ReaddirPlus10k {
        Some(open_at(
            h.share.0,
            &cstr(DIR10K),
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?)
    } else {
        None
    };
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    while !ph.stopping() && !ph.failed() {
        let start = Instant::now();
        match h.w {
            Workload::RandRead4k | Workload::SeqRead1m => {
                let off = if big {
                    let chunks = SEQ_FILE_SIZE / IO1M as u64;
                    (h.seq_next.fetch_add(1, Ordering::Relaxed) % chunks) * IO1M as u64
                } else {
                    rng.offset4k(RAND_FILE_SIZE)
                };
                let n = unsafe {
                    libc::pread(file, buf.as_mut_ptr().cast(), buf.len(), off as libc::off_t)
                };
                if n != buf.len() as isize {
                    return Err(format!("pread: {n} {}", errno()));
                }
            }
            Workload::RandWrite4k => {
                let off = rng.offset4k(RAND_FILE_SIZE);
                let n =
                    unsafe { libc::pwrite(file, data.as_ptr().cast(), IO4K, off as libc::off_t) };
                if n != IO4K as isize {
                    return Err(format!("pwrite: {n} {}", errno()));
                }
            }
            Workload::Getattr => {
                if unsafe { libc::fstat(file, &mut st) } != 0 {
                    return Err(format!("fstat: {}", errno()));
                }
            }
            Workload::Lookup | Workload::LookupMiss => {
                let i = rng.below(DIR_ENTRIES as u64);
                let miss = h.w == Workload::LookupMiss;
                let name = cstr(&if miss {
                    missing_name(i)
                } else {
                    dir_entry_name(i)
                });
                let r = unsafe {
                    libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW)
                };
                let ok = if miss {
                    r != 0 && errno().raw_os_error() == Some(libc::ENOENT)
                } else {
                    r == 0
                };
                if !ok {
                    return Err(format!("fstatat {name:?}: {r} {}", errno()));
                }
            }
            Workload::CreateUnlink => {
                let name = cstr(&format!(
                    "host-{}",
                    h.name_next.fetch_add(1, Ordering::Relaxed)
                ));
                let f = open_at(dir, &name, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)?;
                let n = unsafe { libc::pwrite(f.0, data.as_ptr().cast(), IO4K, 0) };
                if n != IO4K as isize {
                    return Err(format!("pwrite: {n} {}", errno()));
                }
                drop(f);
                if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } != 0 {
                    return Err(format!("unlink: {}", errno()));
                }
            }
            Workload::ReaddirPlus10k => {
                let d = own_dir.as_ref().expect("opened").0;
                // One page of entries, each stat'ed: what READDIRPLUS does.
                let n = unsafe {
                    libc::syscall(libc::SYS_getdents64, d, buf.as_mut_ptr(), READDIR_BUF)
                };
                if n < 0 {
                    return Err(format!("getdents64: {}", errno()));
                }
                if n == 0 {
                    unsafe { libc::lseek(d, 0, libc::SEEK_SET) };
                }
                let mut pos = 0usize;
                while pos < n as usize {
                    // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
                    let reclen = u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
                    let name = &buf[pos + 19..pos + reclen];
                    let nul = name.iter().position(|&b| b == 0).unwrap_or(name.len());
                    let name = &name[..nul];
                    if name != b"." && name != b".." {
                        let c = CString::new(name).expect("no NUL");
                        if unsafe {
                            libc::fstatat(d, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW)
                        } != 0
                        {
                            return Err(format!("fstatat: {}", errno()));
                        }
                    }
                    pos += reclen;
                }
            }
        }
        if ph.measuring() {
            hist.record(start.elapsed());
        }
    }
    Ok(hist)
}
