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

// ------------------------------------------------- locks a guest process holds, seen on the host

/// How long the guest waits for each answer of the host's peer (tests/e2e/host-lock-peer.py),
/// which itself gives up after 60 s waiting for locks to be released.
const HOST_ANSWER_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the guest waits for its own child to report.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process that holds a POSIX write lock (plain F_SETLK: owned by the process) and an
/// exclusive flock on a file it opened itself, so neither the lock owner nor the open file
/// description is shared with the probe. Commands on a pipe: `c` closes the file (the child
/// keeps running), end of file makes it exit.
struct Holder {
    pid: libc::pid_t,
    cmd: Option<File>,
    ack: File,
}

/// The child's side of [`Holder`]: only async-signal-safe calls, no allocation.
///
/// # Safety
/// Runs in a freshly forked child; never returns.
unsafe fn holder_main(
    path: &std::ffi::CStr,
    cmd: libc::c_int,
    ack: libc::c_int,
    parents: [libc::c_int; 2],
) -> ! {
    // The parent's ends of the pipes: with the command pipe's write end open here too, the
    // child would never see the end of file that tells it to exit.
    for fd in parents {
        libc::close(fd);
    }
    let report = |what: u8, errno: i32| {
        let mut msg = [what, 0, 0, 0, 0];
        msg[1..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: a valid buffer of 5 bytes.
        unsafe { libc::write(ack, msg.as_ptr().cast(), msg.len()) };
    };
    let errno = || io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let fd = libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
    if fd < 0 {
        report(b'o', errno());
        libc::_exit(1);
    }
    // SAFETY: flock is plain data; all-zero is a valid value.
    let mut fl: libc::flock = std::mem::zeroed();
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    if libc::fcntl(fd, libc::F_SETLK, &mut fl) < 0 {
        report(b'p', errno());
        libc::_exit(1);
    }
    if libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) < 0 {
        report(b'f', errno());
        libc::_exit(1);
    }
    report(b'k', 0);
    let mut c = 0u8;
    while libc::read(cmd, (&mut c as *mut u8).cast(), 1) == 1 {
        if c == b'c' {
            let r = libc::close(fd);
            report(b'c', if r < 0 { errno() } else { 0 });
        }
    }
    libc::_exit(0);
}

/// Reads `buf.len()` bytes from `file` within `timeout` (poll(2); a pipe).
fn read_within(file: &File, buf: &mut [u8], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer from the child within {timeout:?}"));
        }
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        match cvt(unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as libc::c_int) }) {
            Ok(0) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("poll: {}", describe(&e))),
            Ok(_) => {}
        }
        // SAFETY: the rest of `buf` is writable.
        let n = unsafe {
            libc::read(
                file.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 => return Err("the child exited without answering".into()),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(format!("read: {}", describe(&e)));
                }
            }
            n => got += n as usize,
        }
    }
    Ok(())
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two descriptors.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: just made, owned here.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

impl Holder {
    /// Forks the child and waits until it holds both locks on `path`.
    fn spawn(path: &Path) -> Result<Holder, String> {
        let c = cpath(path);
        let (cmd_rd, cmd_wr) = pipe().context("pipe")?;
        let (ack_rd, ack_wr) = pipe().context("pipe")?;
        // SAFETY: the probe has no other threads now; the child runs holder_main only.
        let pid = cvt(unsafe { libc::fork() }).context("fork")?;
        if pid == 0 {
            // SAFETY: in the child; holder_main never returns.
            unsafe {
                holder_main(
                    &c,
                    cmd_rd.as_raw_fd(),
                    ack_wr.as_raw_fd(),
                    [cmd_wr.as_raw_fd(), ack_rd.as_raw_fd()],
                )
            };
        }
        drop((cmd_rd, ack_wr));
        let mut holder = Holder {
            pid,
            cmd: Some(cmd_wr),
            ack: ack_rd,
        };
        match holder.answer() {
            Ok((b'k', _)) => Ok(holder),
            Ok((what, errno)) => {
                let e = describe(&io::Error::from_raw_os_error(errno));
                let _ = holder.kill();
                Err(match what {
                    b'o' => format!("child's open: {e}"),
                    b'p' => format!("child's F_SETLK F_WRLCK: {e}"),
                    b'f' => format!("child's flock LOCK_EX|LOCK_NB: {e}"),
                    _ => format!("child said {what}"),
                })
            }
            Err(e) => {
                let _ = holder.kill();
                Err(e)
            }
        }
    }

    fn answer(&mut self) -> Result<(u8, i32), String> {
        let mut msg = [0u8; 5];
        read_within(&self.ack, &mut msg, CHILD_TIMEOUT)?;
        Ok((msg[0], i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]])))
    }

    /// The child closes its descriptor and stays alive.
    fn close_file(&mut self) -> Result<(), String> {
        use std::io::Write;
        let cmd = self.cmd.as_mut().ok_or("no command pipe")?;
        cmd.write_all(b"c").context("command pipe")?;
        match self.answer()? {
            (b'c', 0) => Ok(()),
            (b'c', errno) => Err(format!(
                "child's close: {}",
                describe(&io::Error::from_raw_os_error(errno))
            )),
            (what, _) => Err(format!("child said {what}")),
        }
    }

    /// Waits (at most [`CHILD_TIMEOUT`]) for the child, gone or going, and returns its wait
    /// status.
    fn reap(&mut self) -> Result<libc::c_int, String> {
        let deadline = Instant::now() + CHILD_TIMEOUT;
        let mut status = 0;
        loop {
            // SAFETY: our own child; a valid status pointer.
            match cvt(unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) }) {
                Ok(0) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(0) => return Err(format!("the child did not end within {CHILD_TIMEOUT:?}")),
                Ok(_) => {
                    self.pid = 0;
                    return Ok(status);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("waitpid: {}", describe(&e))),
            }
        }
    }

    /// SIGKILL, then reaped: the guest kernel closes its files as the process dies.
    fn kill(&mut self) -> Result<(), String> {
        if self.pid == 0 {
            return Ok(());
        }
        // SAFETY: our own child, not yet reaped.
        cvt(unsafe { libc::kill(self.pid, libc::SIGKILL) }).context("kill")?;
        let status = self.reap()?;
        if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL {
            Ok(())
        } else {
            Err(format!(
                "child ended with wait status {status:#x}, not by SIGKILL"
            ))
        }
    }

    /// Closes the command pipe: the child exits by itself.
    fn finish(mut self) -> Result<(), String> {
        drop(self.cmd.take());
        let status = self.reap()?; // on error, drop kills it
        ensure_eq("child's exit status", 0, libc::WEXITSTATUS(status))
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Tells the host's peer that step `name` is done: a new file in the handshake directory (never
/// a rewrite: under --cache=always the guest may keep what it read of a file).
fn tell_host(dir: &Path, name: &str, what: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(name))
        .and_then(|mut f| std::io::Write::write_all(&mut f, what.as_bytes()))
        .context(&format!("create {name}"))
}

/// Waits for the host's peer to write `name` (it renames a finished file into place, and the
/// daemon caches no negative lookups, so each try asks the daemon) and returns its text.
fn await_host(dir: &Path, name: &str) -> Result<String, String> {
    let path = dir.join(name);
    let deadline = Instant::now() + HOST_ANSWER_TIMEOUT;
    loop {
        match std::fs::read_to_string(&path) {
            Ok(text) => return Ok(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!(
                    "the host's peer did not write {name} within {HOST_ANSWER_TIMEOUT:?}"
                ))
            }
            Err(e) => return Err(format!("read {name}: {}", describe(&e))),
        }
    }
}

/// Guest processes' locks, seen by a host process (run-e2e.sh --host-locks runs the peer,
/// tests/e2e/host-lock-peer.py, on the share's `guest-locks/`; it records what it saw, and the
/// host checks that after the run). Turn by turn, through new files in `dir`:
///
/// 1-held (guest): a child holds F_SETLK F_WRLCK and flock LOCK_EX on `dir/target`;
/// 2-host-checked (host): F_SETLK, F_OFD_SETLK and flock of a host process met the conflict;
/// 3-killed (guest): the child was killed with SIGKILL; 4-host-took (host): the host took
/// each lock; 5-held (guest): a new child holds both; 6-host-checked (host); 7-closed (guest):
/// the child closed the file and still runs; 8-host-took (host). `abort` (guest): the guest gave
/// up, the reason inside. The host's answers are printed here as notes; its verdict is its own.
pub fn guest_locks(tap: &mut Tap, dir: &Path) {
    let target = dir.join("target");
    let abort = |tap: &mut Tap, name: &str, detail: String| {
        tap.not_ok(name, &detail);
        let _ = tell_host(dir, "abort", &format!("{name}: {detail}\n"));
    };
    let host_says = |tap: &mut Tap, text: &str| {
        for line in text.lines() {
            tap.note(&format!("host: {}", line.trim_start_matches("# ")));
        }
    };
    // Each round: a child takes the locks, the host checks them, the child lets go (SIGKILL,
    // or close with the child still running), the host takes them.
    let rounds: [(&str, &str, &str, &str, &str); 2] = [
        (
            "1-held",
            "2-host-checked",
            "3-killed",
            "4-host-took",
            "SIGKILL",
        ),
        (
            "5-held",
            "6-host-checked",
            "7-closed",
            "8-host-took",
            "close",
        ),
    ];
    for (held, checked, released, took, how) in rounds {
        let name = format!(
            "guest locks ({how} round) a child process takes F_SETLK F_WRLCK and flock LOCK_EX"
        );
        let mut holder = match Holder::spawn(&target) {
            Ok(h) => h,
            Err(e) => return abort(tap, &name, e),
        };
        tap.ok(&name);
        let name =
            format!("guest locks ({how} round) the host checked them while the child holds them");
        match tell_host(dir, held, "held\n").and_then(|()| await_host(dir, checked)) {
            Ok(text) => {
                tap.ok(&name);
                host_says(tap, &text);
            }
            Err(e) => return abort(tap, &name, e),
        }
        let name = if how == "SIGKILL" {
            "guest locks (SIGKILL round) the holder is killed with SIGKILL".to_owned()
        } else {
            "guest locks (close round) the holder closes the file and keeps running".to_owned()
        };
        let let_go = if how == "SIGKILL" {
            holder.kill()
        } else {
            holder.close_file()
        };
        if let Err(e) = let_go {
            return abort(tap, &name, e);
        }
        tap.ok(&name);
        let name = format!("guest locks ({how} round) the host tried to take the locks");
        match tell_host(dir, released, "released\n").and_then(|()| await_host(dir, took)) {
            Ok(text) => {
                tap.ok(&name);
                host_says(tap, &text);
            }
            Err(e) => return abort(tap, &name, e),
        }
        if how == "close" {
            tap.check(
                "guest locks (close round) the holder exits",
                holder.finish(),
            );
        }
    }
}
