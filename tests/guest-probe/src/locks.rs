//! Locks, O_TMPFILE and syncfs: what a daemon with real host locks (async-virtiofsd) serves and
//! the reference daemons emulate in the guest or refuse.

use std::fs::File;
use std::io;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{cpath, create, cvt, describe, ensure_eq, pattern, Context, Tap};

/// fcntl record lock `cmd` of type `typ` over the whole file.
fn record_lock(file: &File, cmd: libc::c_int, typ: libc::c_int) -> io::Result<()> {
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: fcntl on an open descriptor with a valid flock.
    cvt(unsafe { libc::fcntl(file.as_raw_fd(), cmd, &mut fl) }).map(drop)
}

fn is_conflict(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES))
}

/// Two open file descriptions are two lock owners (F_OFD_*): they conflict, and a waiting
/// F_OFD_SETLKW gets the lock once the other lets go.
pub fn posix_locks(tap: &mut Tap, dir: &Path) {
    let path = dir.join("posix-lock");
    let (a, b) = match create(&path, b"x").and_then(|a| Ok((a, File::open(&path)?))) {
        Ok(files) => files,
        Err(e) => return tap.not_ok("posix lock files", &describe(&e)),
    };
    tap.check(
        "F_OFD_SETLK F_WRLCK",
        record_lock(&a, libc::F_OFD_SETLK, libc::F_WRLCK).context("lock"),
    );
    tap.check(
        "F_OFD_SETLK F_RDLCK of another description conflicts",
        match record_lock(&b, libc::F_OFD_SETLK, libc::F_RDLCK) {
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(describe(&e)),
            Ok(()) => Err("granted".into()),
        },
    );
    let fd = b.as_raw_fd();
    let waiter = std::thread::spawn(move || {
        // SAFETY: `b` outlives the thread (joined below); ManuallyDrop keeps it open.
        let b = std::mem::ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
        let t = Instant::now();
        record_lock(&b, libc::F_OFD_SETLKW, libc::F_RDLCK).map(|()| t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let waiting = !waiter.is_finished();
    let unlocked = record_lock(&a, libc::F_OFD_SETLK, libc::F_UNLCK);
    tap.check(
        "F_OFD_SETLKW waits for the holder, then gets the lock",
        (|| {
            unlocked.context("unlock")?;
            let waited = waiter
                .join()
                .expect("waiter thread")
                .context("F_OFD_SETLKW")?;
            ensure_eq("waited while the lock was held", true, waiting)?;
            ensure_eq(
                "waited at least 250 ms",
                true,
                waited >= Duration::from_millis(250),
            )
        })(),
    );
    drop(b);
}

/// Locks a host process holds on `path` (run-e2e.sh --host-locks): the guest cannot take them.
pub fn host_locks(tap: &mut Tap, path: &Path) {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) => return tap.not_ok("host-locked file", &describe(&e)),
    };
    tap.check(
        "F_SETLK on a file a host process has locked: EAGAIN",
        match record_lock(&f, libc::F_SETLK, libc::F_WRLCK) {
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(describe(&e)),
            Ok(()) => Err("granted: the host's lock is not seen".into()),
        },
    );
    // SAFETY: flock on an open descriptor.
    let r = cvt(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) });
    tap.check(
        "flock on a file a host process has flocked: EWOULDBLOCK",
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(()),
            Err(e) => Err(describe(&e)),
            Ok(_) => Err("granted: the host's flock is not seen".into()),
        },
    );
}

/// O_TMPFILE, written, then given a name with linkat; and syncfs of the share.
pub fn tmpfile_and_syncfs(tap: &mut Tap, dir: &Path) {
    let data = pattern(10_000, 3);
    let target = dir.join("was-tmpfile");
    tap.check(
        "O_TMPFILE then linkat gives it a name",
        (|| {
            let d = cpath(dir);
            // SAFETY: a valid path.
            let fd = cvt(unsafe { libc::open(d.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o600) })
                .context("open O_TMPFILE")?;
            // SAFETY: just opened, owned here.
            let f = unsafe { File::from_raw_fd(fd) };
            std::os::unix::fs::FileExt::write_all_at(&f, &data, 0).context("write")?;
            let from = cpath(Path::new(&format!("/proc/self/fd/{fd}")));
            let to = cpath(&target);
            // SAFETY: valid paths.
            cvt(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            })
            .context("linkat")?;
            drop(f);
            crate::drop_caches();
            ensure_eq(
                "named file has the data",
                true,
                std::fs::read(&target).context("read")? == data,
            )
        })(),
    );
    let d = File::open(dir);
    tap.check(
        "syncfs",
        d.context("open dir").and_then(|d| {
            // SAFETY: an open descriptor.
            cvt(unsafe { libc::syncfs(d.as_raw_fd()) })
                .context("syncfs")
                .map(drop)
        }),
    );
}
