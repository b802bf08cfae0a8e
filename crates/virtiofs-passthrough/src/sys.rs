//! The system calls the passthrough filesystem makes, as small safe functions over descriptors.
//! Every path argument is one component relative to a directory descriptor (or "" with
//! `AT_EMPTY_PATH`): the filesystem never hands the kernel a path with a slash in it.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The empty path, for `AT_EMPTY_PATH` calls on the descriptor itself.
pub const EMPTY: &CStr = c"";

/// The result of a call that returns -1 and sets errno on failure.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// openat(2); the descriptor is always close-on-exec.
pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the result is a new descriptor or -1.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `statx(dir, name, flags, mask)`: with `name` empty and `AT_EMPTY_PATH`, the descriptor's own
/// file. Symlinks are never followed.
pub fn statx(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mask: u32) -> io::Result<libc::statx> {
    // SAFETY: statx is plain integers; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a NUL-terminated name and to `stx`.
    check(unsafe {
        libc::statx(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::AT_SYMLINK_NOFOLLOW,
            mask,
            &mut stx,
        )
    })?;
    Ok(stx)
}

/// A descriptor's own attributes (`statx(fd, "", AT_EMPTY_PATH)`), with `mask` asked for.
pub fn fstatx(fd: BorrowedFd<'_>, mask: u32) -> io::Result<libc::statx> {
    statx(fd, EMPTY, libc::AT_EMPTY_PATH, mask)
}

/// The attributes the filesystem always asks for: everything `stat` gives plus the mount id.
pub const STATX_WANTED: u32 = libc::STATX_BASIC_STATS | libc::STATX_MNT_ID;

/// readlinkat(2) into a buffer of PATH_MAX.
pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for its length.
    let n = check_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// mkdirat(2).
pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

/// mknodat(2).
pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

/// symlinkat(2).
pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: NUL-terminated strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// linkat(2).
pub fn linkat(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: i32,
) -> io::Result<()> {
    // SAFETY: NUL-terminated names.
    check(unsafe {
        libc::linkat(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// unlinkat(2).
pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// renameat2(2).
pub fn renameat2(
    olddir: BorrowedFd<'_>,
    oldname: &CStr,
    newdir: BorrowedFd<'_>,
    newname: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: NUL-terminated names.
    check(unsafe {
        libc::renameat2(
            olddir.as_raw_fd(),
            oldname.as_ptr(),
            newdir.as_raw_fd(),
            newname.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

/// fchmodat(2) (no flags: Linux cannot change a symlink's mode).
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// fchownat(2); `u32::MAX` leaves an id unchanged.
pub fn fchownat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: u32,
    gid: u32,
    flags: i32,
) -> io::Result<()> {
    // SAFETY: NUL-terminated name.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) }).map(drop)
}

/// utimensat(2).
pub fn utimensat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    times: &[libc::timespec; 2],
    flags: i32,
) -> io::Result<()> {
    // SAFETY: NUL-terminated name, two timespecs.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), times.as_ptr(), flags) })
        .map(drop)
}

/// ftruncate(2).
pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let size = i64::try_from(size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: plain call on a descriptor.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size) }).map(drop)
}

/// `preadv2` into `iov`.
pub fn preadv2(
    fd: BorrowedFd<'_>,
    iov: &[libc::iovec],
    offset: u64,
    flags: i32,
) -> io::Result<usize> {
    // SAFETY: the iovecs describe memory the caller lets the kernel write.
    check_size(unsafe {
        libc::preadv2(
            fd.as_raw_fd(),
            iov.as_ptr(),
            iov.len() as i32,
            offset as i64,
            flags,
        )
    })
}

/// `pwritev2` from `iov`.
pub fn pwritev2(
    fd: BorrowedFd<'_>,
    iov: &[libc::iovec],
    offset: u64,
    flags: i32,
) -> io::Result<usize> {
    // SAFETY: the iovecs describe memory the caller lets the kernel read.
    check_size(unsafe {
        libc::pwritev2(
            fd.as_raw_fd(),
            iov.as_ptr(),
            iov.len() as i32,
            offset as i64,
            flags,
        )
    })
}

/// Most iovecs one `preadv2` / `pwritev2` takes (Linux's `UIO_MAXIOV`; more is `EINVAL`).
pub const IOV_MAX: usize = 1024;

/// `preadv2` of all of `iov` from `offset`, [`IOV_MAX`] iovecs per call: a READ of more pages
/// than that (a queue of more than 1028 descriptors) is one request but several calls. Stops at
/// a short read (end of file); an error after some data was read makes a short read.
pub fn preadv_all(fd: BorrowedFd<'_>, iov: &[libc::iovec], offset: u64) -> io::Result<usize> {
    each_chunk(iov, |chunk, done| {
        preadv2(fd, chunk, offset + done as u64, 0)
    })
}

/// `pwritev2` of all of `iov` at `offset`, [`IOV_MAX`] iovecs per call, as [`preadv_all`].
pub fn pwritev_all(fd: BorrowedFd<'_>, iov: &[libc::iovec], offset: u64) -> io::Result<usize> {
    each_chunk(iov, |chunk, done| {
        pwritev2(fd, chunk, offset + done as u64, 0)
    })
}

/// Runs `io(chunk, bytes done so far)` on `iov` in [`IOV_MAX`] pieces until one is short.
fn each_chunk(
    iov: &[libc::iovec],
    mut io: impl FnMut(&[libc::iovec], usize) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut done = 0;
    for chunk in iov.chunks(IOV_MAX) {
        let want: usize = chunk.iter().map(|v| v.iov_len).sum();
        match io(chunk, done) {
            Ok(n) => {
                done += n;
                if n < want {
                    break;
                }
            }
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// fsync(2) or fdatasync(2).
pub fn fsync(fd: BorrowedFd<'_>, datasync: bool) -> io::Result<()> {
    // SAFETY: plain calls on a descriptor.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    })
    .map(drop)
}

/// syncfs(2).
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain call on a descriptor.
    check(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// fallocate(2).
pub fn fallocate(fd: BorrowedFd<'_>, mode: u32, offset: u64, len: u64) -> io::Result<()> {
    let (offset, len) = match (i64::try_from(offset), i64::try_from(len)) {
        (Ok(o), Ok(l)) => (o, l),
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    // SAFETY: plain call on a descriptor.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode as i32, offset, len) }).map(drop)
}

/// lseek(2).
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: i32) -> io::Result<u64> {
    // SAFETY: plain call on a descriptor.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// copy_file_range(2) between two descriptors at explicit offsets.
pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
    flags: u32,
) -> io::Result<usize> {
    let mut off_in =
        i64::try_from(off_in).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut off_out =
        i64::try_from(off_out).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: the offsets are valid for the call; descriptors are borrowed.
    check_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut off_in,
            fd_out.as_raw_fd(),
            &mut off_out,
            len,
            flags,
        )
    })
}

/// fstatfs(2).
pub fn fstatfs(fd: BorrowedFd<'_>) -> io::Result<libc::statfs64> {
    // SAFETY: statfs64 is plain integers; all-zero is valid.
    let mut st: libc::statfs64 = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    check(unsafe { libc::fstatfs64(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// getdents64(2) into `buf`: the bytes filled (0 at the end of the directory).
pub fn getdents64(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// fcntl(2) with a `flock` argument (F_OFD_GETLK / F_OFD_SETLK / F_OFD_SETLKW).
pub fn fcntl_lock(fd: BorrowedFd<'_>, cmd: i32, lock: &mut libc::flock) -> io::Result<()> {
    // SAFETY: `lock` is a valid flock.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), cmd, lock as *mut libc::flock) }).map(drop)
}

/// flock(2).
pub fn flock(fd: BorrowedFd<'_>, op: i32) -> io::Result<()> {
    // SAFETY: plain call on a descriptor.
    check(unsafe { libc::flock(fd.as_raw_fd(), op) }).map(drop)
}

/// Runs `call` with this thread's working directory at `dir`, then moves it back. The thread
/// gets a working directory of its own first (`unshare(CLONE_FS)`; every time, since a thread
/// made by this one shares it again; a no-op when not shared), so other threads' relative paths
/// never see the change; moving back keeps the caller's own relative paths working (a fuzzer's
/// corpus, a test's). Used to name a node by its `/proc/self/fd` entry in calls that only take
/// paths.
pub fn in_thread_dir<T>(dir: BorrowedFd<'_>, call: impl FnOnce() -> T) -> io::Result<T> {
    // SAFETY: plain call; it only copies this thread's root, cwd and umask when shared.
    check(unsafe { libc::unshare(libc::CLONE_FS) })?;
    // The way back, held for the call only: no descriptor outlives it.
    let home = openat(
        // SAFETY: AT_FDCWD is valid for every *at call.
        unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) },
        c".",
        libc::O_PATH | libc::O_DIRECTORY,
        0,
    )?;
    // SAFETY: plain calls on descriptors (fchdir takes O_PATH directories).
    check(unsafe { libc::fchdir(dir.as_raw_fd()) })?;
    let out = call();
    // SAFETY: as above.
    check(unsafe { libc::fchdir(home.as_raw_fd()) })?;
    Ok(out)
}

/// Runs `call` with `mask` as this thread's umask, then puts the old one back; the thread gets a
/// umask of its own first (`unshare(CLONE_FS)`, as [`in_thread_dir`]).
pub fn with_thread_umask<T>(mask: u32, call: impl FnOnce() -> T) -> io::Result<T> {
    // SAFETY: plain call; it only copies this thread's root, cwd and umask when shared.
    check(unsafe { libc::unshare(libc::CLONE_FS) })?;
    // SAFETY: umask has no failure mode.
    let old = unsafe { libc::umask(mask & 0o777) };
    let out = call();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    Ok(out)
}

/// A descriptor's number as a C string, for naming it in `/proc/self/fd`.
pub fn fd_name(fd: RawFd) -> FdName {
    // Digits written by hand: this runs on every open, and a descriptor is never negative.
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.max(0) as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut buf = [0u8; 12];
    for (i, d) in digits[..len].iter().rev().enumerate() {
        buf[i] = *d;
    }
    FdName { buf }
}

/// See [`fd_name`].
pub struct FdName {
    buf: [u8; 12],
}

impl FdName {
    /// As a C string.
    pub fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).expect("NUL-terminated")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn vectored_io_takes_more_iovecs_than_one_call_can() {
        use std::os::fd::AsFd;
        let file = tempfile::tempfile().unwrap();
        // 3000 iovecs of 7 bytes, over IOV_MAX: three calls.
        let data: Vec<u8> = (0..3000 * 7).map(|i| (i % 251) as u8).collect();
        let iov = |base: *mut u8, len: usize| -> Vec<libc::iovec> {
            (0..len)
                .step_by(7)
                .map(|at| libc::iovec {
                    // SAFETY: `at` is within the buffer of `len` bytes at `base`.
                    iov_base: unsafe { base.add(at) }.cast(),
                    iov_len: 7.min(len - at),
                })
                .collect()
        };
        let src = iov(data.as_ptr().cast_mut(), data.len());
        assert!(src.len() > IOV_MAX);
        assert_eq!(pwritev_all(file.as_fd(), &src, 100).unwrap(), data.len());
        let mut back = vec![0u8; data.len()];
        let dst = iov(back.as_mut_ptr(), back.len());
        assert_eq!(preadv_all(file.as_fd(), &dst, 100).unwrap(), data.len());
        assert!(back == data, "data differs");
        // A read past the end is short, and stops at the end.
        back.fill(0);
        let dst = iov(back.as_mut_ptr(), back.len());
        let n = preadv_all(file.as_fd(), &dst, 100 + 10_000).unwrap();
        assert_eq!(n, data.len() - 10_000);
        assert!(back[..n] == data[10_000..]);
        // An error before any data is the error.
        let bad = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 7,
        };
        let e = pwritev_all(file.as_fd(), &[bad], 0).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT));
    }

    #[test]
    fn in_thread_dir_moves_this_threads_cwd_for_the_call_only() {
        use std::sync::mpsc;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("inside"), b"x").unwrap();
        let dir = std::fs::File::open(tmp.path()).unwrap();
        let before = std::env::current_dir().unwrap();
        // Another thread reports its cwd whenever asked.
        let (ask, asked) = mpsc::channel::<()>();
        let (tell, told) = mpsc::channel();
        let observer = std::thread::spawn(move || {
            while asked.recv().is_ok() {
                tell.send(std::env::current_dir().unwrap()).unwrap();
            }
        });
        let worker = std::thread::spawn(move || {
            let seen = in_thread_dir(dir.as_fd(), || {
                ask.send(()).unwrap();
                (std::fs::read("inside").ok(), told.recv().unwrap())
            })
            .unwrap();
            (seen, std::env::current_dir().unwrap(), {
                in_thread_dir(dir.as_fd(), || ()).unwrap();
                std::env::current_dir().unwrap()
            })
        });
        let ((inside, other), after, after_twice) = worker.join().unwrap();
        observer.join().unwrap();
        assert_eq!(inside.as_deref(), Some(&b"x"[..]), "relative path in `dir`");
        assert_eq!(other, before, "another thread's cwd moved");
        assert_eq!(after, before, "not moved back");
        assert_eq!(after_twice, before, "a second call");
    }

    #[test]
    fn fd_names_are_the_decimal_numbers() {
        for fd in [0, 7, 10, 12345, i32::MAX] {
            assert_eq!(fd_name(fd).as_cstr().to_str().unwrap(), fd.to_string());
        }
    }
}
