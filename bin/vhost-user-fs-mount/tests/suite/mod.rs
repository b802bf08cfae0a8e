//! The POSIX behaviour suite: run on a directory, it checks what a program sees through plain
//! system calls (results and errno values). Run on the host's own filesystem it is the
//! reference; run on a bridge mount it checks a backend through the kernel's FUSE client.
//!
//! Every case works in a fresh directory of its own (`Ctx::dir`). Cases that need other users
//! run closures as uids 1001..1003 through [`common::as_user`] (the test runs as root).

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::{as_user, errno};

/// Where a case runs.
pub struct Ctx {
    /// The case's own empty directory (mode 0777).
    pub dir: PathBuf,
}

/// A case's verdict.
pub type Outcome = Result<(), String>;

/// A named case.
pub struct Case {
    /// Name (stable: docs/bridge.md and the known-difference table refer to it).
    pub name: &'static str,
    /// The check.
    pub run: fn(&Ctx) -> Outcome,
}

const A: u32 = 1001;
const B: u32 = 1002;
const C: u32 = 1003;
const GROUP: u32 = 2000;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

macro_rules! ensure {
    ($c:expr, $($fmt:tt)+) => {
        if !$c {
            return Err(format!($($fmt)+));
        }
    };
}

/// The errno of `r`, or an error if it succeeded.
fn err_of<T: std::fmt::Debug>(what: &str, r: io::Result<T>) -> Result<i32, String> {
    match r {
        Ok(v) => Err(format!("{what}: succeeded ({v:?}), expected an error")),
        Err(e) => Ok(errno(&e)),
    }
}

fn expect_errno<T: std::fmt::Debug>(what: &str, r: io::Result<T>, want: i32) -> Outcome {
    let got = err_of(what, r)?;
    ensure!(
        got == want,
        "{what}: errno {} ({}), expected {} ({})",
        got,
        io::Error::from_raw_os_error(got),
        want,
        io::Error::from_raw_os_error(want)
    );
    Ok(())
}

fn ok<T>(what: &str, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn rename2(a: &Path, b: &Path, flags: u32) -> io::Result<()> {
    let (a, b) = (cpath(a), cpath(b));
    // SAFETY: valid NUL-terminated paths.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    })
}

fn chown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid))
}

fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

fn mode_of(p: &Path) -> Result<u32, String> {
    Ok(ok("stat", fs::symlink_metadata(p))?.mode() & 0o7777)
}

fn utimens(p: &Path, atime: (i64, i64), mtime: (i64, i64), flags: i32) -> io::Result<()> {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid path and a two-element timespec array.
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) })
}

fn setxattr(p: &Path, name: &str, v: &[u8], flags: i32) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid strings and a buffer of v.len() bytes.
    cvt(unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), flags) })
}

fn lsetxattr(p: &Path, name: &str, v: &[u8]) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: as above.
    cvt(unsafe { libc::lsetxattr(c.as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) })
}

fn getxattr(p: &Path, name: &str) -> io::Result<Vec<u8>> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: a size query with a null buffer, then a read into a buffer of that size.
    let size = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut v = vec![0u8; size as usize];
    // SAFETY: as above.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    v.truncate(r as usize);
    Ok(v)
}

fn getxattr_into(p: &Path, name: &str, size: usize) -> io::Result<usize> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    let mut v = vec![0u8; size];
    // SAFETY: a buffer of `size` bytes.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), size) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn listxattr(p: &Path) -> io::Result<Vec<String>> {
    let c = cpath(p);
    let mut v = vec![0u8; 65536];
    // SAFETY: a buffer of v.len() bytes.
    let r = unsafe { libc::listxattr(c.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    v.truncate(r as usize);
    Ok(v.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .filter(|s| s.starts_with("user."))
        .collect())
}

fn removexattr(p: &Path, name: &str) -> io::Result<()> {
    let (c, n) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: valid strings.
    cvt(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) })
}

fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid descriptor.
    cvt(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) })
}

fn lseek(f: &File, off: i64, whence: i32) -> io::Result<i64> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: a valid descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn access(p: &Path, mode: i32) -> io::Result<()> {
    let c = cpath(p);
    // SAFETY: a valid path. faccessat with AT_EACCESS checks the effective (fs) ids.
    cvt(unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_EACCESS) })
}

fn names(dir: &Path) -> Result<Vec<String>, String> {
    let mut v: Vec<String> = ok("read_dir", fs::read_dir(dir))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()
        .map_err(|e| format!("readdir: {e}"))?;
    v.sort();
    Ok(v)
}

/// FNV-1a, as a cheap checksum.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Creates `p` owned by `uid:gid` with `mode`, containing `data`.
fn file_of(p: &Path, uid: u32, gid: u32, mode: u32, data: &[u8]) -> Outcome {
    ok("write", fs::write(p, data))?;
    ok("chown", chown(p, uid, gid))?;
    ok("chmod", chmod(p, mode))
}

fn dir_of(p: &Path, uid: u32, gid: u32, mode: u32) -> Outcome {
    ok("mkdir", fs::create_dir(p))?;
    ok("chown", chown(p, uid, gid))?;
    ok("chmod", chmod(p, mode))
}

// ---------------------------------------------------------------------------------------
// Files

fn create_write_read(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    let data = pattern(1, 100_000);
    ok("write", fs::write(&p, &data))?;
    ensure!(ok("read", fs::read(&p))? == data, "content differs");
    ensure!(ok("stat", fs::metadata(&p))?.len() == 100_000, "size");
    Ok(())
}

fn create_exclusive(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok(
        "create_new",
        OpenOptions::new().write(true).create_new(true).open(&p),
    )?;
    expect_errno(
        "create_new on an existing file",
        OpenOptions::new().write(true).create_new(true).open(&p),
        libc::EEXIST,
    )
}

fn create_mode_and_umask(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok(
        "create 0640",
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            .open(&p),
    )?;
    ensure!(mode_of(&p)? == 0o640, "mode {:o}", mode_of(&p)?);
    // SAFETY: umask is process-wide; the suite runs its cases one at a time.
    let old = unsafe { libc::umask(0o077) };
    let r = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o666)
        .open(c.dir.join("g"));
    unsafe { libc::umask(old) };
    ok("create under umask 077", r)?;
    let m = mode_of(&c.dir.join("g"))?;
    ensure!(m == 0o600, "umask not applied: {m:o}");
    Ok(())
}

fn append_mode(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"abc"))?;
    let mut f = ok("open", OpenOptions::new().append(true).open(&p))?;
    ok("seek", f.seek(SeekFrom::Start(0)))?;
    ok("append", f.write_all(b"def"))?;
    let mut g = ok("open", OpenOptions::new().append(true).open(&p))?;
    ok("append", g.write_all(b"ghi"))?;
    ok("append", f.write_all(b"jkl"))?;
    ensure!(
        ok("read", fs::read(&p))? == b"abcdefghijkl",
        "append content"
    );
    Ok(())
}

fn truncate_grow_shrink(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, pattern(2, 10_000)))?;
    let f = ok("open", OpenOptions::new().write(true).open(&p))?;
    ok("shrink", f.set_len(100))?;
    ok("grow", f.set_len(50_000))?;
    let d = ok("read", fs::read(&p))?;
    ensure!(d.len() == 50_000, "len {}", d.len());
    ensure!(d[..100] == pattern(2, 10_000)[..100], "kept part");
    ensure!(d[100..].iter().all(|&b| b == 0), "grown part not zero");
    ok(
        "O_TRUNC",
        OpenOptions::new().write(true).truncate(true).open(&p),
    )?;
    ensure!(ok("stat", fs::metadata(&p))?.len() == 0, "O_TRUNC size");
    Ok(())
}

fn pwrite_pread(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    let f = ok(
        "create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p),
    )?;
    ok("pwrite", f.write_all_at(b"world", 6))?;
    ok("pwrite", f.write_all_at(b"hello", 0))?;
    let mut b = [0u8; 11];
    ok("pread", f.read_exact_at(&mut b, 0))?;
    ensure!(&b == b"hello\0world", "{b:?}");
    let mut short = [0u8; 64];
    let n = ok("pread past end", f.read_at(&mut short, 8))?;
    ensure!(n == 3, "short read {n}");
    ensure!(
        ok("pread at eof", f.read_at(&mut short, 100))? == 0,
        "read past eof"
    );
    Ok(())
}

fn unlink_while_open(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"still here"))?;
    let mut f = ok("open", File::open(&p))?;
    ok("unlink", fs::remove_file(&p))?;
    expect_errno("stat after unlink", fs::metadata(&p), libc::ENOENT)?;
    let mut s = String::new();
    ok("read after unlink", f.read_to_string(&mut s))?;
    ensure!(s == "still here", "{s}");
    ensure!(
        ok("fstat", f.metadata())?.nlink() == 0,
        "nlink after unlink"
    );
    ensure!(names(&c.dir)?.is_empty(), "listed after unlink");
    Ok(())
}

fn lookup_errors(c: &Ctx) -> Outcome {
    expect_errno("open missing", File::open(c.dir.join("nope")), libc::ENOENT)?;
    ok("write", fs::write(c.dir.join("f"), b"x"))?;
    expect_errno(
        "path through a file",
        File::open(c.dir.join("f/x")),
        libc::ENOTDIR,
    )?;
    expect_errno(
        "O_DIRECTORY on a file",
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(c.dir.join("f")),
        libc::ENOTDIR,
    )?;
    expect_errno(
        "open a directory for writing",
        OpenOptions::new().write(true).open(&c.dir),
        libc::EISDIR,
    )?;
    let long = "n".repeat(255);
    ok("255-byte name", fs::write(c.dir.join(&long), b"x"))?;
    expect_errno(
        "256-byte name",
        fs::write(c.dir.join("n".repeat(256)), b"x"),
        libc::ENAMETOOLONG,
    )
}

fn write_on_read_only_fd(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"x"))?;
    let mut f = ok("open", File::open(&p))?;
    expect_errno("write on O_RDONLY", f.write(b"y"), libc::EBADF)
}

fn fsync_files_and_dirs(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    let f = ok("create", File::create(&p))?;
    ok("write", (&f).write_all(b"data"))?;
    ok("fsync", f.sync_all())?;
    ok("fdatasync", f.sync_data())?;
    ok("fsync dir", File::open(&c.dir).and_then(|d| d.sync_all()))
}

fn mmap_shared_write(c: &Ctx) -> Outcome {
    use std::os::unix::io::AsRawFd;
    let p = c.dir.join("f");
    let f = ok(
        "create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p),
    )?;
    ok("set_len", f.set_len(8192))?;
    // SAFETY: a fresh shared mapping of 8192 bytes of `f`, unmapped below.
    unsafe {
        let m = libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        ensure!(
            m != libc::MAP_FAILED,
            "mmap: {}",
            io::Error::last_os_error()
        );
        std::ptr::copy_nonoverlapping(b"mapped!".as_ptr(), m.cast::<u8>().add(4096), 7);
        let r = libc::msync(m, 8192, libc::MS_SYNC);
        libc::munmap(m, 8192);
        ensure!(r == 0, "msync: {}", io::Error::last_os_error());
    }
    drop(f);
    let d = ok("read", fs::read(&p))?;
    ensure!(&d[4096..4103] == b"mapped!", "mapped write not in the file");
    Ok(())
}

fn copy_file_range_copies(c: &Ctx) -> Outcome {
    let (a, b) = (c.dir.join("a"), c.dir.join("b"));
    let data = pattern(3, 300_000);
    ok("write", fs::write(&a, &data))?;
    ok("copy", fs::copy(&a, &b))?;
    ensure!(ok("read", fs::read(&b))? == data, "copy differs");
    Ok(())
}

fn fifo_and_special_files(c: &Ctx) -> Outcome {
    let p = c.dir.join("fifo");
    let cp = cpath(&p);
    // SAFETY: a valid path.
    ok("mkfifo", cvt(unsafe { libc::mkfifo(cp.as_ptr(), 0o644) }))?;
    let md = ok("lstat", fs::symlink_metadata(&p))?;
    use std::os::unix::fs::FileTypeExt;
    ensure!(md.file_type().is_fifo(), "not a fifo");
    let s = c.dir.join("sock");
    let l = ok("bind", std::os::unix::net::UnixListener::bind(&s));
    // A socket file: created by bind(2) through the filesystem (mknod S_IFSOCK).
    ok(
        "bind",
        l.map(drop).map_err(|e| io::Error::other(e.to_string())),
    )?;
    let md = ok("lstat", fs::symlink_metadata(&s))?;
    ensure!(md.file_type().is_socket(), "not a socket");
    Ok(())
}

fn statfs_reports(c: &Ctx) -> Outcome {
    let cp = cpath(&c.dir);
    // SAFETY: zeroed out-struct and a valid path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    ok(
        "statvfs",
        cvt(unsafe { libc::statvfs(cp.as_ptr(), &mut st) }),
    )?;
    ensure!(st.f_blocks > 0 && st.f_bsize > 0, "empty statvfs");
    ensure!(st.f_namemax >= 255, "namemax {}", st.f_namemax);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Directories, links, renames

fn mkdir_rmdir(c: &Ctx) -> Outcome {
    let d = c.dir.join("d");
    ok("mkdir", fs::create_dir(&d))?;
    expect_errno("mkdir existing", fs::create_dir(&d), libc::EEXIST)?;
    ok("write", fs::write(d.join("f"), b"x"))?;
    expect_errno("rmdir non-empty", fs::remove_dir(&d), libc::ENOTEMPTY)?;
    expect_errno("unlink a directory", fs::remove_file(&d), libc::EISDIR)?;
    expect_errno("rmdir a file", fs::remove_dir(d.join("f")), libc::ENOTDIR)?;
    ok("unlink", fs::remove_file(d.join("f")))?;
    ok("rmdir", fs::remove_dir(&d))?;
    expect_errno("stat removed", fs::metadata(&d), libc::ENOENT)
}

fn dir_nlink(c: &Ctx) -> Outcome {
    let n0 = ok("stat", fs::metadata(&c.dir))?.nlink();
    ok("mkdir", fs::create_dir(c.dir.join("a")))?;
    ok("mkdir", fs::create_dir(c.dir.join("b")))?;
    let n1 = ok("stat", fs::metadata(&c.dir))?.nlink();
    ensure!(n1 == n0 + 2, "parent nlink {n0} -> {n1}");
    Ok(())
}

fn readdir_many(c: &Ctx) -> Outcome {
    for i in 0..1000 {
        ok("create", File::create(c.dir.join(format!("entry-{i:04}"))))?;
    }
    let got = names(&c.dir)?;
    let want: Vec<String> = (0..1000).map(|i| format!("entry-{i:04}")).collect();
    ensure!(got == want, "{} entries listed, want 1000", got.len());
    for i in (0..1000).step_by(2) {
        ok(
            "unlink",
            fs::remove_file(c.dir.join(format!("entry-{i:04}"))),
        )?;
    }
    ensure!(names(&c.dir)?.len() == 500, "after unlinking half");
    Ok(())
}

fn hard_links(c: &Ctx) -> Outcome {
    let (a, b) = (c.dir.join("a"), c.dir.join("b"));
    ok("write", fs::write(&a, b"one"))?;
    ok("link", fs::hard_link(&a, &b))?;
    let (ma, mb) = (ok("stat", fs::metadata(&a))?, ok("stat", fs::metadata(&b))?);
    ensure!(ma.ino() == mb.ino(), "different inodes");
    ensure!(ma.nlink() == 2, "nlink {}", ma.nlink());
    ok("write via b", fs::write(&b, b"two"))?;
    ensure!(ok("read", fs::read(&a))? == b"two", "shared content");
    ok("unlink a", fs::remove_file(&a))?;
    ensure!(
        ok("stat", fs::metadata(&b))?.nlink() == 1,
        "nlink after unlink"
    );
    expect_errno("link existing name", fs::hard_link(&b, &b), libc::EEXIST)?;
    ok("mkdir", fs::create_dir(c.dir.join("d")))?;
    expect_errno(
        "link a directory",
        fs::hard_link(c.dir.join("d"), c.dir.join("d2")),
        libc::EPERM,
    )
}

fn symlinks(c: &Ctx) -> Outcome {
    let (t, l) = (c.dir.join("target"), c.dir.join("link"));
    ok("write", fs::write(&t, b"pointed at"))?;
    ok("symlink", std::os::unix::fs::symlink("target", &l))?;
    ensure!(
        ok("readlink", fs::read_link(&l))? == Path::new("target"),
        "readlink"
    );
    ensure!(
        ok("read via link", fs::read(&l))? == b"pointed at",
        "follow"
    );
    ensure!(
        ok("lstat", fs::symlink_metadata(&l))?
            .file_type()
            .is_symlink(),
        "lstat type"
    );
    let long = "x/".repeat(1000) + "y";
    ok(
        "long symlink",
        std::os::unix::fs::symlink(&long, c.dir.join("long")),
    )?;
    ensure!(
        ok("readlink long", fs::read_link(c.dir.join("long")))? == Path::new(&long),
        "long target"
    );
    ok(
        "dangling",
        std::os::unix::fs::symlink("missing", c.dir.join("dangling")),
    )?;
    expect_errno(
        "open dangling",
        File::open(c.dir.join("dangling")),
        libc::ENOENT,
    )?;
    ok(
        "loop",
        std::os::unix::fs::symlink("loop", c.dir.join("loop")),
    )?;
    expect_errno("open loop", File::open(c.dir.join("loop")), libc::ELOOP)?;
    expect_errno(
        "O_NOFOLLOW on a link",
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&l),
        libc::ELOOP,
    )
}

fn rename_files_and_dirs(c: &Ctx) -> Outcome {
    let d = &c.dir;
    ok("write", fs::write(d.join("a"), b"a"))?;
    ok("write", fs::write(d.join("b"), b"b"))?;
    ok("rename over file", fs::rename(d.join("a"), d.join("b")))?;
    ensure!(
        ok("read", fs::read(d.join("b")))? == b"a",
        "replaced content"
    );
    expect_errno("old name", fs::metadata(d.join("a")), libc::ENOENT)?;
    ok("mkdir", fs::create_dir(d.join("x")))?;
    ok("mkdir", fs::create_dir(d.join("y")))?;
    ok("write", fs::write(d.join("y/f"), b""))?;
    expect_errno(
        "dir over non-empty dir",
        fs::rename(d.join("x"), d.join("y")),
        libc::ENOTEMPTY,
    )?;
    expect_errno(
        "dir over file",
        fs::rename(d.join("x"), d.join("b")),
        libc::ENOTDIR,
    )?;
    expect_errno(
        "file over dir",
        fs::rename(d.join("b"), d.join("x")),
        libc::EISDIR,
    )?;
    expect_errno(
        "dir into itself",
        fs::rename(d.join("x"), d.join("x/sub")),
        libc::EINVAL,
    )?;
    ok("mkdir", fs::create_dir(d.join("empty")))?;
    ok(
        "dir over empty dir",
        fs::rename(d.join("x"), d.join("empty")),
    )?;
    ok(
        "move across dirs",
        fs::rename(d.join("b"), d.join("y/moved")),
    )?;
    ensure!(
        ok("read", fs::read(d.join("y/moved")))? == b"a",
        "moved content"
    );
    ok("link", fs::hard_link(d.join("y/moved"), d.join("y/alias")))?;
    ok(
        "rename between links of one inode",
        fs::rename(d.join("y/moved"), d.join("y/alias")),
    )?;
    ensure!(
        ok("stat", fs::metadata(d.join("y/moved"))).is_ok(),
        "both names stay"
    );
    Ok(())
}

fn rename_noreplace(c: &Ctx) -> Outcome {
    let d = &c.dir;
    ok("write", fs::write(d.join("a"), b"a"))?;
    ok("write", fs::write(d.join("b"), b"b"))?;
    expect_errno(
        "NOREPLACE onto existing",
        rename2(&d.join("a"), &d.join("b"), libc::RENAME_NOREPLACE),
        libc::EEXIST,
    )?;
    ensure!(
        ok("read", fs::read(d.join("b")))? == b"b",
        "target untouched"
    );
    ok(
        "NOREPLACE onto new name",
        rename2(&d.join("a"), &d.join("c"), libc::RENAME_NOREPLACE),
    )?;
    ensure!(ok("read", fs::read(d.join("c")))? == b"a", "moved");
    Ok(())
}

fn rename_exchange(c: &Ctx) -> Outcome {
    let d = &c.dir;
    ok("write", fs::write(d.join("a"), b"a"))?;
    ok("mkdir", fs::create_dir(d.join("b")))?;
    ok(
        "EXCHANGE file and dir",
        rename2(&d.join("a"), &d.join("b"), libc::RENAME_EXCHANGE),
    )?;
    ensure!(
        ok("stat", fs::metadata(d.join("a")))?.is_dir(),
        "a is the dir now"
    );
    ensure!(
        ok("read", fs::read(d.join("b")))? == b"a",
        "b is the file now"
    );
    expect_errno(
        "EXCHANGE with a missing name",
        rename2(&d.join("b"), &d.join("zz"), libc::RENAME_EXCHANGE),
        libc::ENOENT,
    )?;
    expect_errno(
        "EXCHANGE | NOREPLACE",
        rename2(
            &d.join("a"),
            &d.join("b"),
            libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE,
        ),
        libc::EINVAL,
    )
}

// ---------------------------------------------------------------------------------------
// Attributes, timestamps

fn chmod_chown_as_root(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"x"))?;
    for m in [0o000, 0o644, 0o4755, 0o2755, 0o1777, 0o7777] {
        ok("chmod", chmod(&p, m))?;
        ensure!(mode_of(&p)? == m, "mode {:o} reads {:o}", m, mode_of(&p)?);
    }
    ok("chown", chown(&p, A, GROUP))?;
    let md = ok("stat", fs::metadata(&p))?;
    ensure!(
        (md.uid(), md.gid()) == (A, GROUP),
        "owner {}:{}",
        md.uid(),
        md.gid()
    );
    Ok(())
}

fn chown_clears_setuid(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"x"))?;
    ok("chmod", chmod(&p, 0o6755))?;
    ok("chown", chown(&p, A, A))?;
    let m = mode_of(&p)?;
    ensure!(m & 0o4000 == 0, "setuid kept across chown: {m:o}");
    Ok(())
}

fn write_by_other_clears_setuid(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    file_of(&p, A, A, 0o4777, b"x")?;
    let q = p.clone();
    as_user(B, B, &[], move || {
        OpenOptions::new()
            .write(true)
            .open(&q)
            .and_then(|mut f| f.write_all(b"y"))
    })
    .map_err(|e| format!("write as another user: {e}"))?;
    let m = mode_of(&p)?;
    ensure!(
        m & 0o4000 == 0,
        "setuid kept after a write by another user: {m:o}"
    );
    Ok(())
}

fn timestamps_set_and_read_back(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"x"))?;
    ok(
        "utimensat",
        utimens(
            &p,
            (1_000_000_000, 123_456_789),
            (1_100_000_000, 987_654_321),
            0,
        ),
    )?;
    let md = ok("stat", fs::metadata(&p))?;
    ensure!(
        (md.atime(), md.atime_nsec()) == (1_000_000_000, 123_456_789),
        "atime {}.{}",
        md.atime(),
        md.atime_nsec()
    );
    ensure!(
        (md.mtime(), md.mtime_nsec()) == (1_100_000_000, 987_654_321),
        "mtime {}.{}",
        md.mtime(),
        md.mtime_nsec()
    );
    ok(
        "UTIME_OMIT atime",
        utimens(&p, (0, libc::UTIME_OMIT), (1_200_000_000, 5), 0),
    )?;
    let md = ok("stat", fs::metadata(&p))?;
    ensure!(md.atime() == 1_000_000_000, "atime changed by UTIME_OMIT");
    ensure!((md.mtime(), md.mtime_nsec()) == (1_200_000_000, 5), "mtime");
    // Symlink's own times.
    ok("symlink", std::os::unix::fs::symlink("f", c.dir.join("l")))?;
    ok(
        "lutimes",
        utimens(
            &c.dir.join("l"),
            (1_000, 0),
            (2_000, 0),
            libc::AT_SYMLINK_NOFOLLOW,
        ),
    )?;
    let lm = ok("lstat", fs::symlink_metadata(c.dir.join("l")))?;
    ensure!(lm.mtime() == 2_000, "symlink mtime {}", lm.mtime());
    Ok(())
}

fn timestamps_follow_changes(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"x"))?;
    ok("utimensat", utimens(&p, (1000, 0), (1000, 0), 0))?;
    let before = ok("stat", fs::metadata(&p))?;
    ok(
        "write",
        OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|mut f| f.write_all(b"yy")),
    )?;
    let after = ok("stat", fs::metadata(&p))?;
    ensure!(after.mtime() > 1000, "mtime not updated by write");
    ensure!(after.ctime() >= before.ctime(), "ctime went back");
    let ct = (after.ctime(), after.ctime_nsec());
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok("chmod", chmod(&p, 0o600))?;
    let ch = ok("stat", fs::metadata(&p))?;
    ensure!(
        (ch.ctime(), ch.ctime_nsec()) > ct,
        "ctime not updated by chmod"
    );
    let dm = ok("stat dir", fs::metadata(&c.dir))?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok("create", fs::write(c.dir.join("new"), b""))?;
    let dm2 = ok("stat dir", fs::metadata(&c.dir))?;
    ensure!(
        (dm2.mtime(), dm2.mtime_nsec()) > (dm.mtime(), dm.mtime_nsec()),
        "dir mtime not updated by create"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Permissions as several users

fn perm_read_other_users_private_file(c: &Ctx) -> Outcome {
    let p = c.dir.join("secret");
    file_of(&p, A, A, 0o600, b"secret")?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || fs::read(&q));
    expect_errno("read a 0600 file of another user", r, libc::EACCES)?;
    let q = p.clone();
    let r = as_user(A, A, &[], move || fs::read(&q));
    ensure!(ok("owner reads", r)? == b"secret", "owner content");
    Ok(())
}

fn perm_write_read_only_file(c: &Ctx) -> Outcome {
    let p = c.dir.join("ro");
    file_of(&p, A, A, 0o644, b"x")?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || {
        OpenOptions::new().write(true).open(&q).map(drop)
    });
    expect_errno("open 0644 of another user for writing", r, libc::EACCES)?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || {
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&q)
            .map(drop)
    });
    expect_errno("O_TRUNC 0644 of another user", r, libc::EACCES)?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || {
        std::fs::File::open(&q).and_then(|f| f.set_len(0))
    });
    ensure!(
        matches!(
            err_of("ftruncate on a read-only fd", r)?,
            libc::EINVAL | libc::EBADF
        ),
        "ftruncate on O_RDONLY"
    );
    Ok(())
}

fn perm_group_and_supplementary_groups(c: &Ctx) -> Outcome {
    let p = c.dir.join("g");
    file_of(&p, A, GROUP, 0o640, b"group")?;
    let q = p.clone();
    let r = as_user(B, B, &[GROUP], move || fs::read(&q));
    ensure!(
        ok("read via supplementary group", r)? == b"group",
        "content"
    );
    let q = p.clone();
    let r = as_user(B, GROUP, &[], move || fs::read(&q));
    ensure!(ok("read via primary group", r)? == b"group", "content");
    let q = p.clone();
    let r = as_user(C, C, &[], move || fs::read(&q));
    expect_errno("read by others", r, libc::EACCES)
}

fn perm_create_in_foreign_dir(c: &Ctx) -> Outcome {
    let d = c.dir.join("d");
    dir_of(&d, A, A, 0o755)?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::write(q.join("f"), b"x"));
    expect_errno("create in a 0755 dir of another user", r, libc::EACCES)?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::create_dir(q.join("sub")));
    expect_errno("mkdir in it", r, libc::EACCES)?;
    let q = d.clone();
    let r = as_user(A, A, &[], move || fs::write(q.join("f"), b"x"));
    ok("owner creates", r)?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::remove_file(q.join("f")));
    expect_errno("unlink in it", r, libc::EACCES)?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::rename(q.join("f"), q.join("g")));
    expect_errno("rename in it", r, libc::EACCES)
}

fn perm_search_bit(c: &Ctx) -> Outcome {
    let d = c.dir.join("d");
    dir_of(&d, A, A, 0o700)?;
    ok("write", fs::write(d.join("f"), b"x"))?;
    ok("chmod", chmod(&d.join("f"), 0o644))?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::metadata(q.join("f")));
    expect_errno("lookup through a 0700 dir of another user", r, libc::EACCES)?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::read_dir(&q).map(drop));
    expect_errno("list it", r, libc::EACCES)?;
    ok("chmod", chmod(&d, 0o711))?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::read(q.join("f")));
    ok("read through an x-only dir", r)?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::read_dir(&q).map(drop));
    expect_errno("list an x-only dir", r, libc::EACCES)
}

fn perm_owner_only_attribute_changes(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    file_of(&p, A, A, 0o666, b"x")?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || chmod(&q, 0o777));
    expect_errno("chmod by non-owner", r, libc::EPERM)?;
    let q = p.clone();
    let r = as_user(A, A, &[], move || chown(&q, B, A));
    expect_errno("give away a file", r, libc::EPERM)?;
    let q = p.clone();
    let r = as_user(A, A, &[GROUP], move || chown(&q, A, GROUP));
    ok("chgrp to a group of one's own", r)?;
    let q = p.clone();
    let r = as_user(A, A, &[], move || chown(&q, A, C));
    expect_errno("chgrp to a foreign group", r, libc::EPERM)?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || utimens(&q, (5, 0), (5, 0), 0));
    expect_errno("explicit times by non-owner", r, libc::EPERM)?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || {
        utimens(&q, (0, libc::UTIME_NOW), (0, libc::UTIME_NOW), 0)
    });
    ok("UTIME_NOW by a writer", r)?;
    let q = p.clone();
    let r = as_user(A, A, &[], move || chmod(&q, 0o640));
    ok("chmod by owner", r)
}

fn perm_setgid_cleared_on_chmod_by_non_member(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    file_of(&p, A, GROUP, 0o644, b"x")?;
    let q = p.clone();
    let r = as_user(A, A, &[], move || chmod(&q, 0o2755));
    ok("chmod g+s as owner outside the group", r)?;
    let m = mode_of(&p)?;
    ensure!(m & 0o2000 == 0, "setgid kept for a non-member: {m:o}");
    Ok(())
}

fn perm_access_syscall(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    file_of(&p, A, A, 0o640, b"x")?;
    let q = p.clone();
    let r = as_user(A, A, &[], move || {
        (access(&q, libc::R_OK | libc::W_OK), access(&q, libc::X_OK))
    });
    ok("access rw as owner", r.0)?;
    expect_errno("access x as owner", r.1, libc::EACCES)?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || access(&q, libc::R_OK));
    expect_errno("access r as other", r, libc::EACCES)
}

fn sticky_directory(c: &Ctx) -> Outcome {
    let d = c.dir.join("tmp");
    dir_of(&d, 0, 0, 0o1777)?;
    let q = d.clone();
    as_user(A, A, &[], move || {
        fs::write(q.join("a1"), b"x").and_then(|()| fs::write(q.join("a2"), b"x"))
    })
    .map_err(|e| format!("create as A: {e}"))?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::remove_file(q.join("a1")));
    expect_errno("unlink another user's file in a sticky dir", r, libc::EPERM)?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || fs::rename(q.join("a1"), q.join("b1")));
    expect_errno("rename another user's file in a sticky dir", r, libc::EPERM)?;
    let q = d.clone();
    let r = as_user(B, B, &[], move || {
        fs::write(q.join("b"), b"y").and_then(|()| fs::rename(q.join("b"), q.join("a2")))
    });
    expect_errno(
        "replace another user's file in a sticky dir",
        r,
        libc::EPERM,
    )?;
    let q = d.clone();
    let r = as_user(A, A, &[], move || fs::remove_file(q.join("a1")));
    ok("owner unlinks", r)?;
    ok("root unlinks", fs::remove_file(d.join("a2")))
}

fn setgid_directory_inheritance(c: &Ctx) -> Outcome {
    let d = c.dir.join("sg");
    dir_of(&d, 0, GROUP, 0o2777)?;
    let q = d.clone();
    as_user(A, A, &[], move || {
        fs::write(q.join("f"), b"x").and_then(|()| fs::create_dir(q.join("sub")))
    })
    .map_err(|e| format!("create as A: {e}"))?;
    let f = ok("stat", fs::metadata(d.join("f")))?;
    ensure!(
        f.gid() == GROUP,
        "file gid {} (want the dir's {GROUP})",
        f.gid()
    );
    let s = ok("stat", fs::metadata(d.join("sub")))?;
    ensure!(s.gid() == GROUP, "subdir gid {}", s.gid());
    ensure!(s.mode() & 0o2000 != 0, "subdir lost setgid: {:o}", s.mode());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Large and sparse files, fallocate

fn large_file_checksum(c: &Ctx) -> Outcome {
    let p = c.dir.join("big");
    let mut f = ok("create", File::create(&p))?;
    let mut h = Vec::new();
    for i in 0..48u64 {
        let chunk = pattern(i + 100, 1 << 20);
        h.push(fnv(&chunk));
        ok("write", f.write_all(&chunk))?;
    }
    ok("fsync", f.sync_all())?;
    drop(f);
    let mut f = ok("open", File::open(&p))?;
    let mut buf = vec![0u8; 1 << 20];
    for (i, want) in h.iter().enumerate() {
        ok("read", f.read_exact(&mut buf))?;
        ensure!(fnv(&buf) == *want, "MiB {i} differs");
    }
    ensure!(
        ok("read at eof", f.read(&mut buf))? == 0,
        "data past the end"
    );
    Ok(())
}

fn large_offsets(c: &Ctx) -> Outcome {
    let p = c.dir.join("far");
    let f = ok(
        "create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p),
    )?;
    let off = 5u64 << 30;
    ok("pwrite at 5 GiB", f.write_all_at(b"far away", off))?;
    ensure!(ok("fstat", f.metadata())?.len() == off + 8, "size");
    let mut b = [0u8; 8];
    ok("pread at 5 GiB", f.read_exact_at(&mut b, off))?;
    ensure!(&b == b"far away", "content");
    ok("pread in the hole", f.read_exact_at(&mut b, 1 << 30))?;
    ensure!(b == [0; 8], "hole not zero");
    Ok(())
}

fn sparse_files_seek_data_hole(c: &Ctx) -> Outcome {
    let p = c.dir.join("sparse");
    let f = ok(
        "create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p),
    )?;
    ok("write", f.write_all_at(&[1u8; 4096], 1 << 20))?;
    ok("set_len", f.set_len(4 << 20))?;
    let md = ok("fstat", f.metadata())?;
    ensure!(
        md.blocks() * 512 < 1 << 20,
        "not sparse: {} blocks",
        md.blocks()
    );
    ensure!(
        ok("SEEK_DATA", lseek(&f, 0, libc::SEEK_DATA))? == 1 << 20,
        "SEEK_DATA"
    );
    ensure!(
        ok("SEEK_HOLE", lseek(&f, 1 << 20, libc::SEEK_HOLE))? == (1 << 20) + 4096,
        "SEEK_HOLE"
    );
    expect_errno(
        "SEEK_DATA past the last data",
        lseek(&f, 2 << 20, libc::SEEK_DATA),
        libc::ENXIO,
    )
}

fn fallocate_modes(c: &Ctx) -> Outcome {
    let p = c.dir.join("fa");
    let f = ok(
        "create",
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p),
    )?;
    ok("fallocate", fallocate(&f, 0, 0, 1 << 20))?;
    let md = ok("fstat", f.metadata())?;
    ensure!(md.len() == 1 << 20, "size {}", md.len());
    ensure!(md.blocks() * 512 >= 1 << 20, "not allocated");
    ok(
        "KEEP_SIZE",
        fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20),
    )?;
    ensure!(
        ok("fstat", f.metadata())?.len() == 1 << 20,
        "KEEP_SIZE grew it"
    );
    ok("fill", f.write_all_at(&[7u8; 65536], 0))?;
    ok(
        "PUNCH_HOLE",
        fallocate(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            4096,
            8192,
        ),
    )?;
    let mut b = vec![0u8; 16384];
    ok("read", f.read_exact_at(&mut b, 0))?;
    ensure!(b[..4096].iter().all(|&x| x == 7), "before the hole");
    ensure!(b[4096..12288].iter().all(|&x| x == 0), "hole not zero");
    ensure!(b[12288..].iter().all(|&x| x == 7), "after the hole");
    ok(
        "ZERO_RANGE",
        fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 16384, 4096),
    )?;
    ok("read", f.read_exact_at(&mut b[..4096], 16384))?;
    ensure!(b[..4096].iter().all(|&x| x == 0), "zero range");
    expect_errno(
        "PUNCH_HOLE without KEEP_SIZE",
        fallocate(&f, libc::FALLOC_FL_PUNCH_HOLE, 0, 4096),
        libc::EOPNOTSUPP,
    )
}

// ---------------------------------------------------------------------------------------
// Extended attributes

fn xattr_set_get_list_remove(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"x"))?;
    ok("set", setxattr(&p, "user.one", b"1", 0))?;
    ok("set", setxattr(&p, "user.two", &pattern(9, 4000), 0))?;
    ok("set empty", setxattr(&p, "user.empty", b"", 0))?;
    ensure!(ok("get", getxattr(&p, "user.one"))? == b"1", "value");
    ensure!(
        ok("get", getxattr(&p, "user.two"))? == pattern(9, 4000),
        "4000-byte value"
    );
    ensure!(
        ok("get empty", getxattr(&p, "user.empty"))?.is_empty(),
        "empty value"
    );
    let mut l = ok("list", listxattr(&p))?;
    l.sort();
    ensure!(l == ["user.empty", "user.one", "user.two"], "list {l:?}");
    expect_errno("get missing", getxattr(&p, "user.nope"), libc::ENODATA)?;
    expect_errno(
        "small buffer",
        getxattr_into(&p, "user.two", 10),
        libc::ERANGE,
    )?;
    ok("remove", removexattr(&p, "user.one"))?;
    expect_errno("remove again", removexattr(&p, "user.one"), libc::ENODATA)?;
    ensure!(ok("list", listxattr(&p))?.len() == 2, "list after remove");
    Ok(())
}

fn xattr_create_replace_flags(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    ok("write", fs::write(&p, b"x"))?;
    ok("CREATE", setxattr(&p, "user.k", b"v1", libc::XATTR_CREATE))?;
    expect_errno(
        "CREATE existing",
        setxattr(&p, "user.k", b"v2", libc::XATTR_CREATE),
        libc::EEXIST,
    )?;
    ok(
        "REPLACE",
        setxattr(&p, "user.k", b"v3", libc::XATTR_REPLACE),
    )?;
    ensure!(
        ok("get", getxattr(&p, "user.k"))? == b"v3",
        "replaced value"
    );
    expect_errno(
        "REPLACE missing",
        setxattr(&p, "user.missing", b"v", libc::XATTR_REPLACE),
        libc::ENODATA,
    )
}

fn xattr_on_directories_and_symlinks(c: &Ctx) -> Outcome {
    ok("set on dir", setxattr(&c.dir, "user.dir", b"d", 0))?;
    ensure!(
        ok("get on dir", getxattr(&c.dir, "user.dir"))? == b"d",
        "dir value"
    );
    ok(
        "symlink",
        std::os::unix::fs::symlink("nowhere", c.dir.join("l")),
    )?;
    expect_errno(
        "user xattr on a symlink",
        lsetxattr(&c.dir.join("l"), "user.x", b"v"),
        libc::EPERM,
    )?;
    expect_errno(
        "unknown namespace",
        setxattr(&c.dir, "bogus.x", b"v", 0),
        libc::EOPNOTSUPP,
    )
}

fn xattr_permissions(c: &Ctx) -> Outcome {
    let p = c.dir.join("f");
    file_of(&p, A, A, 0o644, b"x")?;
    ok("set", setxattr(&p, "user.k", b"v", 0))?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || getxattr(&q, "user.k"));
    ensure!(ok("get as reader", r)? == b"v", "value");
    let q = p.clone();
    let r = as_user(B, B, &[], move || setxattr(&q, "user.k", b"w", 0));
    expect_errno("set as non-writer", r, libc::EACCES)?;
    let q = p.clone();
    let r = as_user(B, B, &[], move || setxattr(&q, "trusted.k", b"w", 0));
    expect_errno("trusted.* as a user", r, libc::EPERM)
}

// ---------------------------------------------------------------------------------------
// Concurrency

fn concurrent_writers_one_file(c: &Ctx) -> Outcome {
    let p = c.dir.join("shared");
    let f = ok("create", File::create(&p))?;
    const W: u64 = 8;
    const CHUNK: usize = 64 << 10;
    const ROUNDS: u64 = 8;
    let errs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..W)
            .map(|w| {
                let f = &f;
                s.spawn(move || -> io::Result<()> {
                    for r in 0..ROUNDS {
                        let off = (r * W + w) * CHUNK as u64;
                        f.write_all_at(&pattern(r * W + w, CHUNK), off)?;
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().unwrap().err().map(|e| e.to_string()))
            .collect()
    });
    ensure!(errs.is_empty(), "writers failed: {errs:?}");
    ok("fsync", f.sync_all())?;
    drop(f);
    let d = ok("read", fs::read(&p))?;
    ensure!(d.len() == (W * ROUNDS) as usize * CHUNK, "size {}", d.len());
    for (i, chunk) in d.chunks(CHUNK).enumerate() {
        ensure!(
            fnv(chunk) == fnv(&pattern(i as u64, CHUNK)),
            "chunk {i} corrupted"
        );
    }
    Ok(())
}

fn concurrent_writers_many_files(c: &Ctx) -> Outcome {
    let dir = c.dir.clone();
    let errs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8u64)
            .map(|w| {
                let dir = &dir;
                s.spawn(move || -> Result<(), String> {
                    for i in 0..20u64 {
                        let seed = w * 1000 + i;
                        let len = 1000 + (seed as usize * 7919) % 200_000;
                        let data = pattern(seed, len);
                        let p = dir.join(format!("w{w}-{i}"));
                        let mut f = File::create(&p).map_err(|e| e.to_string())?;
                        for part in data.chunks(13_001) {
                            f.write_all(part).map_err(|e| e.to_string())?;
                        }
                        drop(f);
                        let back = fs::read(&p).map_err(|e| e.to_string())?;
                        if fnv(&back) != fnv(&data) {
                            return Err(format!("{} corrupted", p.display()));
                        }
                        if i % 3 == 0 {
                            fs::remove_file(&p).map_err(|e| e.to_string())?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    ensure!(errs.is_empty(), "{errs:?}");
    ensure!(
        names(&c.dir)?.len() == 8 * 13,
        "{} files left",
        names(&c.dir)?.len()
    );
    Ok(())
}

fn concurrent_appenders(c: &Ctx) -> Outcome {
    let p = c.dir.join("log");
    ok("create", File::create(&p))?;
    std::thread::scope(|s| {
        for w in 0..6u8 {
            let p = &p;
            s.spawn(move || {
                let mut f = OpenOptions::new().append(true).open(p).unwrap();
                for _ in 0..100 {
                    f.write_all(&[b'a' + w; 100]).unwrap();
                }
            });
        }
    });
    let d = ok("read", fs::read(&p))?;
    ensure!(d.len() == 6 * 100 * 100, "appended {} bytes", d.len());
    for rec in d.chunks(100) {
        ensure!(rec.iter().all(|&b| b == rec[0]), "interleaved record");
    }
    Ok(())
}

/// Every case, in order.
pub fn cases() -> Vec<Case> {
    macro_rules! cases {
        ($($f:ident),* $(,)?) => { vec![$(Case { name: stringify!($f), run: $f }),*] };
    }
    cases![
        create_write_read,
        create_exclusive,
        create_mode_and_umask,
        append_mode,
        truncate_grow_shrink,
        pwrite_pread,
        unlink_while_open,
        lookup_errors,
        write_on_read_only_fd,
        fsync_files_and_dirs,
        mmap_shared_write,
        copy_file_range_copies,
        fifo_and_special_files,
        statfs_reports,
        mkdir_rmdir,
        dir_nlink,
        readdir_many,
        hard_links,
        symlinks,
        rename_files_and_dirs,
        rename_noreplace,
        rename_exchange,
        chmod_chown_as_root,
        chown_clears_setuid,
        write_by_other_clears_setuid,
        timestamps_set_and_read_back,
        timestamps_follow_changes,
        perm_read_other_users_private_file,
        perm_write_read_only_file,
        perm_group_and_supplementary_groups,
        perm_create_in_foreign_dir,
        perm_search_bit,
        perm_owner_only_attribute_changes,
        perm_setgid_cleared_on_chmod_by_non_member,
        perm_access_syscall,
        sticky_directory,
        setgid_directory_inheritance,
        large_file_checksum,
        large_offsets,
        sparse_files_seek_data_hole,
        fallocate_modes,
        xattr_set_get_list_remove,
        xattr_create_replace_flags,
        xattr_on_directories_and_symlinks,
        xattr_permissions,
        concurrent_writers_one_file,
        concurrent_writers_many_files,
        concurrent_appenders,
    ]
}

/// Runs every case under `root` (each in `root/NAME`, mode 0777); returns the failures.
pub fn run_all(root: &Path) -> Vec<(&'static str, String)> {
    let mut failed = Vec::new();
    for case in cases() {
        let dir = root.join(case.name);
        let made = fs::create_dir(&dir).and_then(|()| chmod(&dir, 0o777));
        let r = match made {
            Ok(()) => {
                let ctx = Ctx { dir };
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (case.run)(&ctx))) {
                    Ok(r) => r,
                    Err(p) => Err(format!(
                        "panicked: {}",
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    )),
                }
            }
            Err(e) => Err(format!("case directory: {e}")),
        };
        if let Err(e) = r {
            failed.push((case.name, e));
        }
    }
    failed
}
