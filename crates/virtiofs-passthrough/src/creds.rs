//! The caller's credentials on the thread that runs a request, so a new file belongs to the
//! guest user who made it.
//!
//! Linux keeps credentials per thread at the system-call level (glibc's `setresuid` changes
//! every thread; the raw system call only the caller), so the switch is raw `setresuid` /
//! `setresgid` of the effective ids and `setgroups` of the supplementary groups, undone when the
//! guard drops. The guard is made and dropped within one synchronous filesystem method, so it is
//! never held across an `.await`. Switching the effective uid from 0 clears the effective
//! capabilities and switching back restores them from the permitted set, so while switched the
//! thread has exactly the caller's rights, as the guest kernel (which already checked them)
//! expects.

use std::io;

/// Whether this process can switch credentials at all (it runs as root, maybe in a user
/// namespace); without that, files are made as the daemon's user, as with the references run
/// unprivileged.
pub fn can_switch() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn set_egid(gid: u32) -> io::Result<()> {
    // SAFETY: raw system call on the calling thread; -1 leaves real and saved ids alone.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, -1i32, gid, -1i32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_euid(uid: u32) -> io::Result<()> {
    // SAFETY: as `set_egid`.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, -1i32, uid, -1i32) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: raw system call on the calling thread with a valid array of `len` gids.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The calling thread runs as another user until this drops.
pub struct Switched {
    uid: bool,
    gid: bool,
    /// The thread's groups before the switch, when they were changed.
    groups: Option<Vec<u32>>,
}

fn get_groups() -> io::Result<Vec<u32>> {
    let mut groups = vec![0u32; 256];
    // SAFETY: raw system call writing at most `len` gids into the array.
    let n = unsafe { libc::syscall(libc::SYS_getgroups, groups.len(), groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

/// Switches the calling thread to `uid`/`gid` (and `supp_group` as its only supplementary
/// group); ids that are already 0 are left alone. Nothing is switched when `enabled` is false.
pub fn switch(enabled: bool, uid: u32, gid: u32, supp_group: Option<u32>) -> io::Result<Switched> {
    let mut s = Switched {
        uid: false,
        gid: false,
        groups: None,
    };
    if !enabled {
        return Ok(s);
    }
    // Groups first: once the uid is not 0 the thread may no longer change them.
    if let Some(g) = supp_group {
        let before = get_groups()?;
        set_groups(&[g])?;
        s.groups = Some(before);
    }
    if gid != 0 {
        set_egid(gid)?;
        s.gid = true;
    }
    if uid != 0 {
        set_euid(uid)?;
        s.uid = true;
    }
    Ok(s)
}

impl Drop for Switched {
    fn drop(&mut self) {
        // Undo in reverse; a failure here would leave a worker thread as a guest user, which
        // must never serve another request.
        if self.uid {
            set_euid(0).expect("restore euid 0 on a worker thread");
        }
        if self.gid {
            set_egid(0).expect("restore egid 0 on a worker thread");
        }
        if let Some(groups) = &self.groups {
            set_groups(groups).expect("restore supplementary groups on a worker thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switched_thread_makes_files_as_the_caller_and_switches_back() {
        if !can_switch() {
            eprintln!("skipped: needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let path = tmp.path().join("f");
        // A thread of its own: the switch is per thread, the test harness's threads stay root.
        let p = path.clone();
        std::thread::spawn(move || {
            let guard = switch(true, 4321, 8765, Some(999)).unwrap();
            std::fs::write(&p, b"x").unwrap();
            drop(guard);
            // SAFETY: plain getters.
            assert_eq!(unsafe { (libc::geteuid(), libc::getegid()) }, (0, 0));
        })
        .join()
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
        // SAFETY: plain getter.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "other threads never switched"
        );
    }
}
