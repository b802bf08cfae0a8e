//! What async-virtiofsd serves beyond the reference daemons, through the host kernel's FUSE
//! client: locks a host process sees (POSIX and flock, both directions, released when the
//! locking process dies, SETLKW that waits), O_TMPFILE then linkat, statx birth time,
//! COPY_FILE_RANGE done on the host, file attribute ioctls (chattr/lsattr), a 1 MiB write
//! arriving as one WRITE, and `--security-label` sessions with the kernel's context extension.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Kind, Mounted};

/// Every request the daemon serves is logged with its opcode at this level.
const REQUEST_LOG: (&str, &str) = (
    "RUST_LOG",
    "info,virtiofs_pipeline::serve=trace,virtiofs_fuse=trace",
);

fn ours() -> Mounted {
    Mounted::start_with_env(Kind::Ours, &[REQUEST_LOG], &[])
        .expect("async-virtiofsd must be built for these tests")
}

fn rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap()
}

/// fcntl record lock `cmd` (F_SETLK, F_SETLKW, F_OFD_SETLK, ...) of type `typ` over the
/// whole file; the errno on failure.
fn lock(fd: RawFd, cmd: i32, typ: i32) -> Result<(), i32> {
    // SAFETY: a zeroed flock is valid; the fields set are plain integers.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: fcntl with a valid flock pointer.
    match unsafe { libc::fcntl(fd, cmd, &mut fl) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap()),
    }
}

fn flock(fd: RawFd, op: i32) -> Result<(), i32> {
    // SAFETY: plain flock(2).
    match unsafe { libc::flock(fd, op) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap()),
    }
}

/// Waits (up to 10 s) until `cond` holds: the daemon's log reaches us through a pipe.
fn eventually(cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// How many requests with `opcode` the daemon's log shows.
fn served(m: &Mounted, opcode: u32) -> usize {
    let needle = format!("opcode={opcode} ");
    m.backend
        .log
        .text()
        .lines()
        .filter(|l| l.contains("request") && l.contains(&needle))
        .count()
}

#[test]
fn posix_locks_conflict_with_host_processes_both_ways() {
    let m = ours();
    let host = m.backend.share.join("locked");
    let via_mount = rw(&m.mnt.join("locked"));
    let on_host = rw(&host);

    // Mount first: the daemon holds the lock on the host file, so the host's lock fails.
    lock(via_mount.as_raw_fd(), libc::F_SETLK, libc::F_WRLCK).unwrap();
    let e = lock(on_host.as_raw_fd(), libc::F_OFD_SETLK, libc::F_RDLCK).unwrap_err();
    assert!(e == libc::EAGAIN || e == libc::EACCES, "host lock: {e}");
    // close(2) through the mount drops the lock (FLUSH with the lock owner).
    drop(via_mount);
    lock(on_host.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK).unwrap();

    // Host first: the mount's lock fails, and its SETLKW waits until the host lets go.
    let via_mount = rw(&m.mnt.join("locked"));
    let e = lock(via_mount.as_raw_fd(), libc::F_SETLK, libc::F_RDLCK).unwrap_err();
    assert!(e == libc::EAGAIN || e == libc::EACCES, "mount lock: {e}");
    let fd = via_mount.as_raw_fd();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        lock(fd, libc::F_SETLKW, libc::F_WRLCK).map(|()| t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !waiter.is_finished(),
        "SETLKW returned while the host held the lock"
    );
    // The daemon still serves everything else while the lock waits.
    assert_eq!(fs::read(m.mnt.join("locked")).unwrap(), b"");
    lock(on_host.as_raw_fd(), libc::F_OFD_SETLK, libc::F_UNLCK).unwrap();
    let waited = waiter
        .join()
        .unwrap()
        .expect("SETLKW after the host unlocked");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    let e = lock(on_host.as_raw_fd(), libc::F_OFD_SETLK, libc::F_RDLCK).unwrap_err();
    assert!(e == libc::EAGAIN || e == libc::EACCES, "host lock: {e}");
    drop(via_mount);
    lock(on_host.as_raw_fd(), libc::F_OFD_SETLK, libc::F_RDLCK).unwrap();
}

#[test]
fn locks_of_a_killed_process_are_released() {
    let m = ours();
    let path = CString::new(m.mnt.join("f").as_os_str().as_bytes()).unwrap();
    fs::write(m.mnt.join("f"), b"x").unwrap();
    let on_host = rw(&m.backend.share.join("f"));
    let mut pipe = [0; 2];
    // SAFETY: pipe(2) into a 2-element array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0);
    // SAFETY: the child calls only async-signal-safe functions (open, fcntl, flock, write,
    // pause) before it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            let mut fl: libc::flock = std::mem::zeroed();
            fl.l_type = libc::F_WRLCK as i16;
            let ok = fd >= 0
                && libc::fcntl(fd, libc::F_SETLK, &mut fl) == 0
                && libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) == 0;
            libc::write(pipe[1], [u8::from(ok)].as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    assert!(child > 0);
    // SAFETY: the read end of our pipe, owned from here on.
    let mut from_child = unsafe { File::from_raw_fd(pipe[0]) };
    let mut ok = [0u8];
    from_child.read_exact(&mut ok).unwrap();
    assert_eq!(ok, [1], "the child took both locks through the mount");
    let e = lock(on_host.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK).unwrap_err();
    assert!(
        e == libc::EAGAIN || e == libc::EACCES,
        "POSIX lock held: {e}"
    );
    assert_eq!(
        flock(on_host.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK)
    );
    // SAFETY: our child.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
        libc::close(pipe[1]);
    }
    // Its descriptors are closed: FLUSH drops the POSIX lock, RELEASE the flock.
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock(on_host.as_raw_fd(), libc::F_OFD_SETLK, libc::F_WRLCK).is_err()
        || flock(on_host.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).is_err()
    {
        assert!(
            Instant::now() < deadline,
            "locks of a dead process still held"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn flock_conflicts_with_host_processes_both_ways() {
    let m = ours();
    let via_mount = rw(&m.mnt.join("f"));
    let on_host = rw(&m.backend.share.join("f"));
    flock(via_mount.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert_eq!(
        flock(on_host.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK)
    );
    flock(via_mount.as_raw_fd(), libc::LOCK_UN).unwrap();
    flock(on_host.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB).unwrap();
    assert_eq!(
        flock(via_mount.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB),
        Err(libc::EWOULDBLOCK)
    );
    // Shared with shared is fine.
    flock(via_mount.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB).unwrap();
}

#[test]
fn tmpfile_then_linkat_makes_a_named_file() {
    let m = ours();
    let dir = CString::new(m.mnt.as_os_str().as_bytes()).unwrap();
    // SAFETY: open(2) with a valid path.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o640) };
    assert!(fd >= 0, "O_TMPFILE: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just opened and is owned here.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(b"unnamed until now").unwrap();
    assert_eq!(fs::read_dir(&m.backend.share).unwrap().count(), 0);
    let from = CString::new(format!("/proc/self/fd/{fd}")).unwrap();
    let to = CString::new(m.mnt.join("named").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid paths.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    assert_eq!(r, 0, "linkat: {}", std::io::Error::last_os_error());
    drop(f);
    let host = m.backend.share.join("named");
    assert_eq!(fs::read(&host).unwrap(), b"unnamed until now");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&host).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

/// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS (`lsattr` / `chattr`) on `p`'s open descriptor.
fn inode_flags(f: &File, set: Option<u32>) -> Result<u32, i32> {
    const GETFLAGS: libc::Ioctl = 0x8008_6601u32 as libc::Ioctl;
    const SETFLAGS: libc::Ioctl = 0x4008_6602u32 as libc::Ioctl;
    let mut flags = set.unwrap_or(0);
    let cmd = if set.is_some() { SETFLAGS } else { GETFLAGS };
    // SAFETY: both commands read or write one int at the pointer.
    match unsafe { libc::ioctl(f.as_raw_fd(), cmd, &mut flags) } {
        0 => Ok(flags),
        _ => Err(std::io::Error::last_os_error().raw_os_error().unwrap()),
    }
}

#[test]
fn chattr_and_lsattr_reach_the_host_file_and_directory() {
    const NODUMP: u32 = 0x40;
    let m = ours();
    fs::write(m.backend.share.join("f"), b"x").unwrap();
    fs::create_dir(m.backend.share.join("d")).unwrap();
    for name in ["f", "d"] {
        let host = File::open(m.backend.share.join(name)).unwrap();
        let guest = File::open(m.mnt.join(name)).unwrap();
        let before = inode_flags(&host, None).unwrap();
        assert_eq!(inode_flags(&guest, None), Ok(before), "{name}: lsattr");
        inode_flags(&guest, Some(before | NODUMP)).unwrap();
        assert_eq!(
            inode_flags(&host, None),
            Ok(before | NODUMP),
            "{name}: chattr +d"
        );
        inode_flags(&guest, Some(before)).unwrap();
        assert_eq!(inode_flags(&host, None), Ok(before), "{name}: chattr -d");
    }
}

#[test]
fn readonly_share_refuses_writes_through_the_kernel() {
    let m = Mounted::start_with(Kind::Ours, &[REQUEST_LOG], &["--readonly"], &[])
        .expect("async-virtiofsd must be built for these tests");
    fs::write(m.backend.share.join("f"), b"host data").unwrap();
    let erofs = |r: std::io::Result<()>| r.map_err(|e| e.raw_os_error());
    assert_eq!(fs::read(m.mnt.join("f")).unwrap(), b"host data");
    assert_eq!(
        erofs(
            OpenOptions::new()
                .write(true)
                .open(m.mnt.join("f"))
                .map(drop)
        ),
        Err(Some(libc::EROFS)),
        "open for writing"
    );
    assert_eq!(
        erofs(fs::write(m.mnt.join("new"), b"x")),
        Err(Some(libc::EROFS))
    );
    assert_eq!(
        erofs(fs::create_dir(m.mnt.join("d"))),
        Err(Some(libc::EROFS))
    );
    assert_eq!(
        erofs(fs::remove_file(m.mnt.join("f"))),
        Err(Some(libc::EROFS))
    );
    assert_eq!(
        erofs(fs::rename(m.mnt.join("f"), m.mnt.join("g"))),
        Err(Some(libc::EROFS))
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        erofs(fs::set_permissions(
            m.mnt.join("f"),
            fs::Permissions::from_mode(0o600)
        )),
        Err(Some(libc::EROFS))
    );
    assert_eq!(fs::read(m.backend.share.join("f")).unwrap(), b"host data");
    assert_eq!(fs::read_dir(&m.backend.share).unwrap().count(), 1);
}

/// mmap(MAP_SHARED) of a file on the mount: Ok, or the errno.
fn mmap_shared(p: &Path) -> Result<(), i32> {
    let f = OpenOptions::new().read(true).write(true).open(p).unwrap();
    // SAFETY: a fresh mapping of 4096 bytes of an open file, unmapped right away.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    // SAFETY: the mapping made above; the first byte is the file's.
    let first = unsafe { *(addr as *const u8) };
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(addr, 4096) };
    assert_eq!(first, b'm', "the mapping shows the file");
    Ok(())
}

#[test]
fn allow_mmap_permits_shared_mmap_with_cache_never() {
    for (allow, want) in [(false, Err(libc::ENODEV)), (true, Ok(()))] {
        let mut args = vec!["--cache=never"];
        if allow {
            args.push("--allow-mmap");
        }
        let m = Mounted::start_with(Kind::Ours, &[REQUEST_LOG], &args, &[])
            .expect("async-virtiofsd must be built for these tests");
        fs::write(m.backend.share.join("f"), b"mapped").unwrap();
        assert_eq!(mmap_shared(&m.mnt.join("f")), want, "--allow-mmap: {allow}");
    }
}

#[test]
fn xattrmap_stores_the_guests_trusted_names_under_user_virtiofs() {
    let m = Mounted::start_with(
        Kind::Ours,
        &[REQUEST_LOG],
        &["--xattrmap=/map/trusted./user.virtiofs./"],
        &[],
    )
    .expect("async-virtiofsd must be built for these tests");
    fs::write(m.backend.share.join("f"), b"x").unwrap();
    let cpath = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
    let (via_mount, on_host) = (cpath(&m.mnt.join("f")), cpath(&m.backend.share.join("f")));
    // SAFETY: valid C strings and a one-byte value (the test runs as root: trusted. is allowed).
    let r = unsafe {
        libc::setxattr(
            via_mount.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            b"y".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
    let get = |path: &CString, name: &std::ffi::CStr| {
        let mut buf = [0u8; 8];
        // SAFETY: valid C strings and a buffer of the given length.
        let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 8) };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    };
    assert_eq!(
        get(&on_host, c"user.virtiofs.trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
    assert_eq!(
        get(&on_host, c"trusted.overlay.opaque"),
        None,
        "not under its own name"
    );
    assert_eq!(
        get(&via_mount, c"trusted.overlay.opaque"),
        Some(b"y".to_vec())
    );
}

fn statx(p: &Path) -> libc::statx {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: a zeroed statx is a valid out-buffer.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and buffer.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS | libc::STATX_BTIME,
            &mut stx,
        )
    };
    assert_eq!(r, 0, "statx {}", p.display());
    stx
}

#[test]
fn statx_birth_time_is_the_hosts() {
    let m = ours();
    fs::write(m.backend.share.join("f"), b"x").unwrap();
    let host = statx(&m.backend.share.join("f"));
    let mnt = statx(&m.mnt.join("f"));
    assert_eq!(
        mnt.stx_mask & libc::STATX_BTIME,
        host.stx_mask & libc::STATX_BTIME,
        "birth time reported exactly when the host has one"
    );
    if host.stx_mask & libc::STATX_BTIME != 0 {
        assert_eq!(
            (mnt.stx_btime.tv_sec, mnt.stx_btime.tv_nsec),
            (host.stx_btime.tv_sec, host.stx_btime.tv_nsec)
        );
    }
    assert_eq!(mnt.stx_ino, host.stx_ino);
}

#[test]
fn copy_file_range_is_served_on_the_host() {
    let m = ours();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m.mnt.join("src"), &data).unwrap();
    let src = File::open(m.mnt.join("src")).unwrap();
    let dst = rw(&m.mnt.join("dst"));
    let (mut off_in, mut off_out) = (1000i64, 0i64);
    // SAFETY: two open descriptors and valid offset pointers.
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            200_000,
            0,
        )
    };
    assert_eq!(n, 200_000, "{}", std::io::Error::last_os_error());
    assert_eq!(
        fs::read(m.backend.share.join("dst")).unwrap(),
        data[1000..201_000]
    );
    assert!(
        // COPY_FILE_RANGE, or COPY_FILE_RANGE_64 from a 7.45 kernel.
        eventually(|| served(&m, 47) + served(&m, 53) >= 1),
        "no COPY_FILE_RANGE reached the daemon"
    );
    // SYNCFS is not checked here: the kernel sends it only to virtio-fs (`fc->sync_fs`), never
    // to a /dev/fuse server; the guest e2e suite checks it.
}

#[test]
fn a_1mib_direct_write_is_one_write_request() {
    let m = ours();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(m.mnt.join("big"))
        .unwrap();
    // O_DIRECT through FUSE needs no alignment, but a page-aligned buffer is what dd uses.
    let layout = std::alloc::Layout::from_size_align(1 << 20, 4096).unwrap();
    // SAFETY: a non-zero layout; freed below.
    let buf = unsafe { std::alloc::alloc_zeroed(layout) };
    // SAFETY: `buf` holds 1 MiB.
    let slice = unsafe { std::slice::from_raw_parts_mut(buf, 1 << 20) };
    slice.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
    assert!(write_sizes(&m).is_empty());
    f.write_all(slice).unwrap();
    eventually(|| write_sizes(&m).iter().sum::<u64>() >= 1 << 20);
    assert_eq!(
        write_sizes(&m),
        [1 << 20],
        "WRITE requests for one 1 MiB write(2)"
    );
    assert_eq!(fs::read(m.backend.share.join("big")).unwrap(), slice);
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(buf, layout) };
}

/// The sizes of the WRITE requests the daemon served, from its log.
fn write_sizes(m: &Mounted) -> Vec<u64> {
    m.backend
        .log
        .text()
        .lines()
        .filter(|l| l.contains("WRITE"))
        .filter_map(|l| {
            let rest = &l[l.find(" size=")? + 6..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// `--security-label=always` through the host kernel, which offers SECURITY_CTX and then sends
/// the security-context extension with every MKNOD, MKDIR, SYMLINK, CREATE and TMPFILE (with
/// no context: this host has no LSM that labels): the session starts, each kind of node is
/// made, and none gets a label it was not given.
#[test]
fn security_label_sessions_serve_the_host_kernels_extensions() {
    let m = Mounted::start_with(Kind::Ours, &[], &["--security-label=always"], &[])
        .expect("async-virtiofsd must be built for these tests");
    let log = m.backend.log.text();
    let agreed = log
        .lines()
        .find_map(|l| {
            l.split_once("agreed: ")?
                .1
                .split_once("; the guest offered")
        })
        .map(|(agreed, _)| agreed.to_owned());
    assert!(
        agreed
            .as_deref()
            .is_some_and(|a| a.contains("SECURITY_CTX")),
        "not agreed: {log}"
    );
    fs::write(m.mnt.join("file"), b"x").unwrap();
    fs::create_dir(m.mnt.join("dir")).unwrap();
    std::os::unix::fs::symlink("file", m.mnt.join("link")).unwrap();
    let fifo = CString::new(m.mnt.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a valid path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let dir = CString::new(m.mnt.as_os_str().as_bytes()).unwrap();
    // SAFETY: open(2) with a valid path; the descriptor is closed at once.
    let fd = unsafe { libc::open(dir.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) };
    assert!(fd >= 0, "O_TMPFILE: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just opened and is owned here.
    drop(unsafe { File::from_raw_fd(fd) });
    for name in ["file", "dir", "link", "fifo"] {
        let host = CString::new(m.backend.share.join(name).as_os_str().as_bytes()).unwrap();
        let mut buf = [0u8; 1024];
        // SAFETY: a valid path and a buffer of the given length.
        let n = unsafe { libc::llistxattr(host.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n >= 0, "{name}: {}", std::io::Error::last_os_error());
        let names = &buf[..n as usize];
        assert!(
            !names.windows(9).any(|w| w == b"security."),
            "{name}: {:?}",
            String::from_utf8_lossy(names)
        );
    }
}
