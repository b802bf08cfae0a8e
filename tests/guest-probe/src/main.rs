//! `guest-probe DIR [--xattr] [--host-locked FILE] [--guest-locks DIR] [--direct-io]
//! [--o-direct-model FILE]`: the
//! system calls the e2e guest's busybox cannot make, run inside the guest on the virtio-fs share.
//! tests/e2e/guest-fs-test.sh runs it as `/e2e/guest-probe /mnt/probe [OPTIONS]`; like that
//! script it prints one TAP-like line per check:
//!
//! ```text
//! ok - NAME            not ok - NAME: DETAIL        ok - NAME # SKIP WHY        # NOTE
//! ```
//!
//! and exits 1 if any check failed (2 on usage errors).
//!
//! DIR is emptied and recreated. The probe removes what it created except DIR/xattr-host-check,
//! which with `--xattr` carries `user.e2e=from-guest` for the host to verify (run-e2e.sh --xattr),
//! and DIR/o-direct-host-check, written with O_DIRECT at unaligned offsets, sizes and buffers,
//! whose intended contents go to the `--o-direct-model` file (the shell script prints its md5 for
//! the host). `--xattr` says the daemon serves extended attributes; without it the xattr calls must
//! fail with EOPNOTSUPP (the guest kernel's answer when the daemon says ENOSYS). `--direct-io`
//! says the daemon passes O_DIRECT to the host (`--allow-direct-io`): unaligned transfers may then
//! fail EINVAL, as the host filesystem decides; without it they must work. `--host-locked FILE`:
//! a host process holds locks on FILE that the guest must not get. `--guest-locks DIR`: a host
//! process (tests/e2e/host-lock-peer.py) takes turns with the probe through files in DIR to check
//! that it cannot take the locks a guest process holds on DIR/target, and can once that process
//! was killed or closed the file (see `locks::guest_locks`).
//!
//! `guest-probe as|setxattr|getxattr|listxattr|setacl|getacl ...`: small tools for the guest's
//! scripts instead (see `tools`); `mmap-write|mmap-read|noatime-read ...` (see `mapio`).
//!
//! Built statically (glibc, `-C target-feature=+crt-static`) so the busybox initramfs needs no
//! shared libraries: see tests/e2e/setup.sh.

use std::ffi::CString;
use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

mod direct;
mod locks;
mod mapio;
mod tools;
mod xattr;

const KIB: usize = 1024;
const MIB: i64 = 1 << 20;

const USAGE: &str = "usage: guest-probe DIR [--xattr] [--host-locked FILE] [--guest-locks DIR] \
                     [--direct-io] [--o-direct-model FILE]\n       \
                     guest-probe as|setxattr|getxattr|listxattr|setacl|getacl ARGS...\n       \
                     guest-probe mmap-write|mmap-read|noatime-read ARGS...";

/// The TAP-like output of guest-fs-test.sh (`ok`, `not_ok`, `skip`, `note` there).
#[derive(Default)]
struct Tap {
    passed: u32,
    failed: u32,
    skipped: u32,
}

impl Tap {
    fn ok(&mut self, name: &str) {
        self.passed += 1;
        println!("ok - {name}");
    }

    fn not_ok(&mut self, name: &str, detail: &str) {
        self.failed += 1;
        println!("not ok - {name}: {detail}");
    }

    fn skip(&mut self, name: &str, why: &str) {
        self.skipped += 1;
        println!("ok - {name} # SKIP {why}");
    }

    fn note(&self, msg: &str) {
        println!("# {msg}");
    }

    fn check(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => self.ok(name),
            Err(detail) => self.not_ok(name, &detail),
        }
    }

    /// The call must fail with `want`.
    fn refuse<T>(&mut self, name: &str, result: io::Result<T>, want: i32) {
        match result {
            Ok(_) => self.not_ok(
                name,
                &format!("unexpectedly succeeded (expected {})", errno_name(want)),
            ),
            Err(e) if e.raw_os_error() == Some(want) => self.ok(name),
            Err(e) => self.not_ok(
                name,
                &format!("expected {}, got {}", errno_name(want), describe(&e)),
            ),
        }
    }
}

fn errno_name(errno: i32) -> &'static str {
    match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::ENODEV => "ENODEV",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN/EWOULDBLOCK",
        libc::EACCES => "EACCES",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOTTY => "ENOTTY",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::ESPIPE => "ESPIPE",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::ENOLCK => "ENOLCK",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "E?",
    }
}

fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(errno) => format!("{} ({e})", errno_name(errno)),
        None => e.to_string(),
    }
}

/// `Result<T, io::Error>` to `Result<T, String>` naming the step that failed.
trait Context<T> {
    fn context(self, what: &str) -> Result<T, String>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {}", describe(&e)))
    }
}

fn ensure_eq<T: PartialEq + Display>(what: &str, expected: T, actual: T) -> Result<(), String> {
    if expected == actual {
        Ok(())
    } else {
        Err(format!("{what}: expected '{expected}', got '{actual}'"))
    }
}

/// Turns the -1 / errno convention into `io::Result`.
fn cvt<T: Default + PartialOrd>(ret: T) -> io::Result<T> {
    if ret < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cpath(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths from argv have no NUL byte")
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL byte")
}

/// Flushes and drops the guest's page, dentry and inode caches so what follows is answered by the
/// daemon (best effort: needs root, which the e2e guest is).
fn drop_caches() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

/// Deterministic, position-dependent bytes (no two 4 KiB blocks alike).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ ((i >> 12) as u8) ^ seed)
        .collect()
}

fn create(path: &Path, data: &[u8]) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all_at(data, 0)?;
    Ok(file)
}

// --------------------------------------------------------- SEEK_DATA/HOLE

fn lseek(file: &File, offset: i64, whence: libc::c_int) -> io::Result<i64> {
    // SAFETY: lseek on an open descriptor.
    cvt(unsafe { libc::lseek(file.as_raw_fd(), offset, whence) })
}

fn seek_data_hole(tap: &mut Tap, dir: &Path) {
    // Data at [0, 4 KiB) and [1 MiB, 1 MiB + 4 KiB), a hole in between.
    // SEEK_DATA/SEEK_HOLE are answered from the host file's layout. Under the guest's writeback
    // cache (`--writeback`) the data may still be dirty in the guest, and Linux 6.1 sends
    // FUSE_LSEEK without flushing first, so flush: this checks the daemon, not the guest cache.
    let setup = create(&dir.join("sparse"), &[b'a'; 4 * KIB]).and_then(|f| {
        f.write_all_at(&[b'b'; 4 * KIB], MIB as u64)?;
        f.sync_all()?;
        Ok(f)
    });
    let f = match setup {
        Ok(f) => f,
        Err(e) => return tap.not_ok("sparse file for SEEK_DATA/SEEK_HOLE", &describe(&e)),
    };
    let end = MIB + 4 * KIB as i64;
    // Where the first hole starts depends on the host filesystem's block size.
    tap.check(
        "lseek SEEK_HOLE from 0 lands in [4 KiB, 1 MiB)",
        lseek(&f, 0, libc::SEEK_HOLE)
            .context("lseek")
            .and_then(|off| {
                tap.note(&format!("lseek: SEEK_HOLE from 0 = {off}"));
                if (4 * KIB as i64..MIB).contains(&off) {
                    Ok(())
                } else {
                    Err(format!("got {off}"))
                }
            }),
    );
    tap.check(
        "lseek SEEK_DATA from 8 KiB finds the data at 1 MiB",
        lseek(&f, 8 * KIB as i64, libc::SEEK_DATA)
            .context("lseek")
            .and_then(|off| ensure_eq("offset", MIB, off)),
    );
    tap.check(
        "lseek SEEK_HOLE in the last data block finds EOF",
        lseek(&f, MIB, libc::SEEK_HOLE)
            .context("lseek")
            .and_then(|off| ensure_eq("offset", end, off)),
    );
    tap.refuse(
        "lseek SEEK_DATA past EOF fails ENXIO",
        lseek(&f, end + 4096, libc::SEEK_DATA),
        libc::ENXIO,
    );
}

// --------------------------------------------------------------- fallocate

fn fallocate(file: &File, mode: libc::c_int, offset: i64, len: i64) -> io::Result<()> {
    // SAFETY: fallocate on an open descriptor.
    cvt(unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) }).map(drop)
}

/// Checks that `path` is `size` bytes of `fill` except zeros in [zero_at, zero_at + zero_len).
fn check_zeroed(
    path: &Path,
    size: usize,
    fill: u8,
    zero_at: usize,
    zero_len: usize,
) -> Result<(), String> {
    drop_caches();
    let data = fs::read(path).context("read back")?;
    ensure_eq("size", size, data.len())?;
    for (i, &b) in data.iter().enumerate() {
        let want = if (zero_at..zero_at + zero_len).contains(&i) {
            0
        } else {
            fill
        };
        if b != want {
            return Err(format!("byte {i} is {b:#04x}, expected {want:#04x}"));
        }
    }
    Ok(())
}

fn fallocate_modes(tap: &mut Tap, dir: &Path) {
    tap.check(
        "fallocate mode 0 extends the size to 1 MiB",
        create(&dir.join("falloc"), &[])
            .context("create")
            .and_then(|f| {
                fallocate(&f, 0, 0, MIB).context("fallocate")?;
                ensure_eq("size", MIB as u64, f.metadata().context("fstat")?.len())?;
                fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, MIB, MIB)
                    .context("fallocate KEEP_SIZE")?;
                ensure_eq(
                    "size after KEEP_SIZE",
                    MIB as u64,
                    f.metadata().context("fstat")?.len(),
                )
            }),
    );

    // Every filesystem a share plausibly lives on (ext4, xfs, btrfs, tmpfs, overlayfs on those)
    // punches holes, so EOPNOTSUPP here is a failure.
    let name = "fallocate PUNCH_HOLE|KEEP_SIZE zeroes 16 KiB, size unchanged";
    let p = dir.join("punch");
    tap.check(
        name,
        create(&p, &[0xab; 64 * KIB])
            .context("create")
            .and_then(|f| {
                fallocate(
                    &f,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    16 * KIB as i64,
                    16 * KIB as i64,
                )
                .context("fallocate")?;
                check_zeroed(&p, 64 * KIB, 0xab, 16 * KIB, 16 * KIB)
            }),
    );

    // ZERO_RANGE depends on the host filesystem (tmpfs lacks it): EOPNOTSUPP is a skip, named.
    let name = "fallocate ZERO_RANGE zeroes 8 KiB, size unchanged";
    let z = dir.join("zero-range");
    let f = match create(&z, &[0xcd; 64 * KIB]) {
        Ok(f) => f,
        Err(e) => return tap.not_ok(name, &format!("create: {}", describe(&e))),
    };
    match fallocate(
        &f,
        libc::FALLOC_FL_ZERO_RANGE,
        8 * KIB as i64,
        8 * KIB as i64,
    ) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => tap.skip(
            name,
            "EOPNOTSUPP (the guest kernel or the host filesystem does not support it)",
        ),
        Err(e) => tap.not_ok(name, &format!("fallocate: {}", describe(&e))),
        Ok(()) => tap.check(name, check_zeroed(&z, 64 * KIB, 0xcd, 8 * KIB, 8 * KIB)),
    }
}

// ---------------------------------------------------------------- renameat2

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (from, to) = (cpath(from), cpath(to));
    // SAFETY: valid NUL-terminated paths relative to the working directory.
    cvt(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

fn contents(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("<{}>", describe(&e)))
}

fn rename2(tap: &mut Tap, dir: &Path) {
    let (a, b, c) = (dir.join("ren-a"), dir.join("ren-b"), dir.join("ren-c"));
    if let Err(e) = fs::write(&a, "A").and_then(|()| fs::write(&b, "B")) {
        return tap.not_ok("renameat2 test files", &describe(&e));
    }
    let name = "renameat2 RENAME_NOREPLACE onto an existing name fails EEXIST";
    match renameat2(&a, &b, libc::RENAME_NOREPLACE) {
        Ok(()) => tap.not_ok(name, "unexpectedly succeeded"),
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => tap.check(
            name,
            ensure_eq(
                "contents of a and b",
                "A B",
                &format!("{} {}", contents(&a), contents(&b)),
            ),
        ),
        Err(e) => tap.not_ok(name, &format!("expected EEXIST, got {}", describe(&e))),
    }
    tap.check(
        "renameat2 RENAME_NOREPLACE to a free name",
        renameat2(&a, &c, libc::RENAME_NOREPLACE)
            .context("renameat2")
            .and_then(|()| {
                ensure_eq("source", false, a.exists())?;
                ensure_eq("target", "A", &contents(&c))
            }),
    );
    tap.check(
        "renameat2 RENAME_EXCHANGE swaps two files",
        renameat2(&b, &c, libc::RENAME_EXCHANGE)
            .context("renameat2")
            .and_then(|()| {
                let got = || format!("{} {}", contents(&b), contents(&c));
                ensure_eq("contents of b and c", "A B", &got())?;
                drop_caches();
                ensure_eq("contents of b and c (caches dropped)", "A B", &got())
            }),
    );
}

// ------------------------------------------------------ fsync, flock, statx

fn flock(file: &File, op: libc::c_int) -> io::Result<()> {
    // SAFETY: flock on an open descriptor.
    cvt(unsafe { libc::flock(file.as_raw_fd(), op) }).map(drop)
}

fn sync_and_lock(tap: &mut Tap, dir: &Path) {
    let path = dir.join("sync");
    let f = match create(&path, &pattern(64 * KIB, 1)) {
        Ok(f) => f,
        Err(e) => return tap.not_ok("fsync test file", &describe(&e)),
    };
    tap.check("fsync", f.sync_all().context("fsync"));
    tap.check("fdatasync", f.sync_data().context("fdatasync"));

    tap.check(
        "flock LOCK_EX|LOCK_NB",
        flock(&f, libc::LOCK_EX | libc::LOCK_NB).context("flock"),
    );
    match File::open(&path) {
        Ok(g) => {
            tap.refuse(
                "flock from a second open file fails EWOULDBLOCK",
                flock(&g, libc::LOCK_EX | libc::LOCK_NB),
                libc::EWOULDBLOCK,
            );
            tap.check(
                "flock LOCK_UN, then the second open file locks",
                flock(&f, libc::LOCK_UN)
                    .context("LOCK_UN")
                    .and_then(|()| flock(&g, libc::LOCK_EX | libc::LOCK_NB).context("LOCK_EX")),
            );
        }
        Err(e) => tap.not_ok("flock second open", &describe(&e)),
    }
}

/// statx with STATX_BTIME on `sync` (64 KiB), and on `btime-host-check`, which stays for the
/// host: the probe prints `GUEST-BTIME probe/btime-host-check SEC.NSEC` (or `absent`: FUSE
/// serves birth times from protocol 7.39, Linux 6.6) and run-e2e.sh compares it with the host's.
fn statx_btime(tap: &mut Tap, dir: &Path) {
    let stat = |path: &Path| -> io::Result<libc::statx> {
        let cpath = cpath(path);
        // SAFETY: statx is plain data; all-zero is a valid value.
        let mut stx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: a valid path and a writable statx buffer.
        cvt(unsafe {
            libc::statx(
                libc::AT_FDCWD,
                cpath.as_ptr(),
                0,
                libc::STATX_BASIC_STATS | libc::STATX_BTIME,
                &mut stx,
            )
        })?;
        Ok(stx)
    };
    let btime = |stx: &libc::statx| {
        if stx.stx_mask & libc::STATX_BTIME != 0 {
            format!("{}.{:09}", stx.stx_btime.tv_sec, stx.stx_btime.tv_nsec)
        } else {
            "absent".to_owned()
        }
    };
    tap.check(
        "statx STATX_BASIC_STATS|STATX_BTIME",
        stat(&dir.join("sync")).context("statx").and_then(|stx| {
            tap.note(&format!(
                "statx: stx_mask {:#x}, btime {}",
                stx.stx_mask,
                btime(&stx)
            ));
            ensure_eq("stx_size", 64 * KIB as u64, stx.stx_size)
        }),
    );
    let check = dir.join("btime-host-check");
    tap.check(
        "statx birth time of a new file, for the host",
        fs::write(&check, b"born in the guest\n")
            .context("create")
            .and_then(|()| stat(&check).context("statx"))
            .map(|stx| println!("GUEST-BTIME probe/btime-host-check {}", btime(&stx))),
    );
}

// ---------------------------------------------------------- copy_file_range

fn copy_range(tap: &mut Tap, dir: &Path) {
    let (src, dst) = (dir.join("cfr-src"), dir.join("cfr-dst"));
    let data = pattern(64 * KIB, 7);
    tap.check(
        "copy_file_range 64 KiB, identical content",
        (|| {
            let from = create(&src, &data).context("create source")?;
            let to = create(&dst, &[]).context("create target")?;
            let (mut off_in, mut off_out) = (0i64, 0i64);
            while (off_out as usize) < data.len() {
                let left = data.len() - off_out as usize;
                // SAFETY: open descriptors and valid offset pointers.
                let n = cvt(unsafe {
                    libc::copy_file_range(
                        from.as_raw_fd(),
                        &mut off_in,
                        to.as_raw_fd(),
                        &mut off_out,
                        left,
                        0,
                    )
                })
                .context("copy_file_range")?;
                if n == 0 {
                    return Err(format!("copy stopped at {off_out} bytes"));
                }
            }
            drop((from, to));
            drop_caches();
            ensure_eq(
                "target identical",
                true,
                fs::read(&dst).context("read")? == data,
            )
        })(),
    );
}

// -------------------------------------------------------------- utimensat

fn utimes_ns(tap: &mut Tap, dir: &Path) {
    let path = dir.join("times");
    let (atime, mtime) = ((1_000_000_000, 123_456_789), (1_234_567_890, 987_654_321));
    let ts = |(sec, nsec)| libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = [ts(atime), ts(mtime)];
    tap.check(
        "utimensat nanosecond timestamps read back by stat",
        fs::write(&path, "t").context("create").and_then(|()| {
            let c = cpath(&path);
            // SAFETY: a valid path and two timespecs.
            cvt(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) })
                .context("utimensat")?;
            drop_caches();
            let m = fs::metadata(&path).context("stat")?;
            ensure_eq(
                "atime mtime",
                format!("{}.{:09} {}.{:09}", atime.0, atime.1, mtime.0, mtime.1),
                format!(
                    "{}.{:09} {}.{:09}",
                    m.atime(),
                    m.atime_nsec(),
                    m.mtime(),
                    m.mtime_nsec()
                ),
            )
        }),
    );
}

// ---------------------------------------------------------------------- main

/// What the probe leaves for the host to check.
const KEPT: [&str; 3] = [
    "xattr-host-check",
    "o-direct-host-check",
    "btime-host-check",
];

/// Removes what the probe created, keeping [`KEPT`] for the host.
fn cleanup(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if !KEPT.iter().any(|k| entry.file_name() == *k) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().skip(1).collect();
    if let Some(cmd) = argv.first().and_then(|a| a.to_str()) {
        if tools::COMMANDS.contains(&cmd) {
            return tools::run(cmd, &argv[1..]);
        }
        if mapio::COMMANDS.contains(&cmd) {
            return match mapio::run(cmd, &argv[1..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err(msg) => {
                    eprintln!("guest-probe: {msg}");
                    ExitCode::from(1)
                }
            };
        }
    }
    let mut dir = None;
    let mut xattr = false;
    let mut host_locked = None;
    let mut guest_locks = None;
    let mut direct_io = false;
    let mut o_direct_model = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--xattr") => xattr = true,
            Some("--host-locked") => host_locked = args.next().map(PathBuf::from),
            Some("--guest-locks") => guest_locks = args.next().map(PathBuf::from),
            Some("--direct-io") => direct_io = true,
            Some("--o-direct-model") => o_direct_model = args.next().map(PathBuf::from),
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            Some(s) if s.starts_with('-') => {
                eprintln!("guest-probe: unknown option {s}\n{USAGE}");
                return ExitCode::from(2);
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(dir) = dir else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };

    let mut tap = Tap::default();
    if dir.exists() {
        let _ = fs::remove_dir_all(&dir);
    }
    if let Err(e) = fs::create_dir_all(&dir) {
        tap.not_ok(
            "guest-probe setup",
            &format!("mkdir {}: {}", dir.display(), describe(&e)),
        );
        return ExitCode::from(1);
    }
    tap.note(&format!(
        "guest-probe: {}, xattrs {}",
        dir.display(),
        if xattr { "on" } else { "off" }
    ));

    if xattr {
        xattr::xattrs_on(&mut tap, &dir);
    } else {
        xattr::xattrs_off(&mut tap, &dir);
    }
    seek_data_hole(&mut tap, &dir);
    fallocate_modes(&mut tap, &dir);
    rename2(&mut tap, &dir);
    direct::o_direct(&mut tap, &dir);
    direct::o_direct_unaligned(&mut tap, &dir, direct_io, o_direct_model.as_deref());
    sync_and_lock(&mut tap, &dir);
    statx_btime(&mut tap, &dir);
    copy_range(&mut tap, &dir);
    utimes_ns(&mut tap, &dir);
    locks::posix_locks(&mut tap, &dir);
    locks::tmpfile_and_syncfs(&mut tap, &dir);
    if let Some(path) = &host_locked {
        locks::host_locks(&mut tap, path);
    }
    if let Some(dir) = &guest_locks {
        locks::guest_locks(&mut tap, dir);
    }
    tap.check(
        "guest-probe scratch files removed",
        cleanup(&dir).context("cleanup"),
    );

    tap.note(&format!(
        "guest-probe: {} passed, {} failed, {} skipped",
        tap.passed, tap.failed, tap.skipped
    ));
    if tap.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
