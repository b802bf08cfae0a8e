//! The kernel side: /dev/fuse, mount(2) and the ways a FUSE mount ends (umount, lazy detach,
//! connection abort), plus /proc/self/mountinfo lookups shared with the tests.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where the fusectl filesystem lives (`/sys/fs/fuse/connections/N/abort`).
pub const FUSECTL: &str = "/sys/fs/fuse/connections";

/// Options of one mount(2) call.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// `fsname` shown in /proc/mounts (the mount source).
    pub fsname: String,
    /// Subtype: the type shows as `fuse.SUBTYPE`.
    pub subtype: String,
    /// `allow_other`: users other than the mounter may use the mount (needed for the backend's
    /// permission checks to matter at all).
    pub allow_other: bool,
    /// `default_permissions`: let the kernel check permissions from the attributes. Off by
    /// default, as in a virtio-fs guest: the backend decides.
    pub default_permissions: bool,
    /// `MS_RDONLY`.
    pub read_only: bool,
}

/// A FUSE mount this process made: the /dev/fuse file and where it is mounted.
#[derive(Debug)]
pub struct FuseMount {
    dev: File,
    mountpoint: PathBuf,
    /// The mount's device number as `(major, minor)`; the fusectl connection is
    /// `major << 20 | minor`.
    pub device: (u32, u32),
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::InvalidArgument("path contains a NUL byte"))
}

fn errno(what: &'static str) -> Error {
    Error::Sys(what, io::Error::last_os_error())
}

impl FuseMount {
    /// Opens /dev/fuse and mounts it on `mountpoint` with `fd=`, `rootmode=`, `user_id=`,
    /// `group_id=` and the given options.
    pub fn mount(mountpoint: &Path, opts: &MountOptions) -> Result<Self> {
        let meta = std::fs::metadata(mountpoint).map_err(|e| Error::Sys("stat mountpoint", e))?;
        if !meta.is_dir() {
            return Err(Error::InvalidArgument("the mount point is not a directory"));
        }
        let mountpoint = mountpoint
            .canonicalize()
            .map_err(|e| Error::Sys("resolving the mount point", e))?;
        let dev_path = CString::new("/dev/fuse").expect("no NUL");
        // SAFETY: a valid NUL-terminated path; the result is checked and then owned by a File.
        let fd = unsafe { libc::open(dev_path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(errno("open /dev/fuse"));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let dev = unsafe { File::from_raw_fd(fd) };
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut data = format!(
            "fd={},rootmode={:o},user_id={uid},group_id={gid}",
            dev.as_raw_fd(),
            libc::S_IFDIR
        );
        if opts.allow_other {
            data.push_str(",allow_other");
        }
        if opts.default_permissions {
            data.push_str(",default_permissions");
        }
        let source = cstring(OsStr::new(&opts.fsname))?;
        let fstype = cstring(OsStr::new(&format!("fuse.{}", opts.subtype)))?;
        let target = cstring(mountpoint.as_os_str())?;
        let cdata = CString::new(data).expect("no NUL");
        let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
        if opts.read_only {
            flags |= libc::MS_RDONLY;
        }
        // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
        let r = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                cdata.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(errno("mount"));
        }
        let device = find_mount(&mountpoint)
            .and_then(|m| m.fuse_device())
            .ok_or_else(|| {
                Error::Sys(
                    "finding the new mount in /proc/self/mountinfo",
                    io::Error::from(io::ErrorKind::NotFound),
                )
            })?;
        Ok(Self {
            dev,
            mountpoint,
            device,
        })
    }

    /// The /dev/fuse descriptor.
    pub fn fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }

    /// The (canonical) mount point.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The fusectl connection number.
    pub fn connection(&self) -> u64 {
        (u64::from(self.device.0) << 20) | u64::from(self.device.1)
    }

    /// Whether our mount is still in the mount table.
    pub fn is_mounted(&self) -> bool {
        mounted_with_device(&self.mountpoint, self.device)
    }

    /// umount2(2) with `flags` if our mount is still there; Ok(false) if it was not.
    pub fn unmount(&self, flags: libc::c_int) -> Result<bool> {
        if !self.is_mounted() {
            return Ok(false);
        }
        let target = cstring(self.mountpoint.as_os_str())?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), flags) } != 0 {
            return Err(errno("umount2"));
        }
        Ok(true)
    }

    /// Aborts the FUSE connection through fusectl (mounting fusectl if needed): every request
    /// in flight and every later one fails with ENOTCONN, and /dev/fuse reads return ENODEV.
    pub fn abort(&self) -> Result<()> {
        abort_connection(self.connection())
    }
}

/// Writes to `/sys/fs/fuse/connections/CONN/abort`, mounting fusectl first if it is not.
pub fn abort_connection(conn: u64) -> Result<()> {
    let path = Path::new(FUSECTL).join(conn.to_string()).join("abort");
    if !path.exists() && Path::new(FUSECTL).is_dir() {
        let (src, dir, ty) = (
            CString::new("fusectl").expect("no NUL"),
            CString::new(FUSECTL).expect("no NUL"),
            CString::new("fusectl").expect("no NUL"),
        );
        // SAFETY: valid NUL-terminated strings; no data. EBUSY (already mounted) is harmless.
        unsafe {
            libc::mount(src.as_ptr(), dir.as_ptr(), ty.as_ptr(), 0, std::ptr::null());
        }
    }
    std::fs::write(&path, b"1").map_err(|e| Error::Sys("writing the fusectl abort file", e))
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the mounted filesystem.
    pub device: (u32, u32),
    /// Mount point (unescaped).
    pub mountpoint: PathBuf,
    /// Filesystem type, e.g. `fuse.vhost-user-fs`.
    pub fstype: String,
    /// Mount source.
    pub source: String,
}

impl MountEntry {
    /// The device if this is a FUSE mount.
    pub fn fuse_device(&self) -> Option<(u32, u32)> {
        (self.fstype == "fuse" || self.fstype.starts_with("fuse.")).then_some(self.device)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(v) = b
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Every mount in this process's mount namespace.
pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let mut f = line.split(' ');
    let _id = f.next()?;
    let _parent = f.next()?;
    let (ma, mi) = f.next()?.split_once(':')?;
    let _root = f.next()?;
    let mp = f.next()?;
    let rest: Vec<&str> = f.collect();
    let sep = rest.iter().position(|&s| s == "-")?;
    let fstype = rest.get(sep + 1)?;
    let source = rest.get(sep + 2).copied().unwrap_or("");
    Some(MountEntry {
        device: (ma.parse().ok()?, mi.parse().ok()?),
        mountpoint: PathBuf::from(OsStr::from_bytes(&unescape(mp))),
        fstype: (*fstype).to_string(),
        source: String::from_utf8_lossy(&unescape(source)).into_owned(),
    })
}

/// The topmost mount on `mountpoint`, if any.
pub fn find_mount(mountpoint: &Path) -> Option<MountEntry> {
    mounts()
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == mountpoint)
}

/// Whether a mount of `device` sits on `mountpoint`.
pub fn mounted_with_device(mountpoint: &Path, device: (u32, u32)) -> bool {
    mounts()
        .iter()
        .any(|m| m.mountpoint == mountpoint && m.device == device)
}

/// The device number of `path`'s filesystem as `(major, minor)` (stat, so it talks to the
/// filesystem: use only on paths that answer).
pub fn device_of(path: &Path) -> io::Result<(u32, u32)> {
    let dev = std::fs::metadata(path)?.dev();
    Ok((libc::major(dev), libc::minor(dev)))
}

/// Starts the watchdog: a forked child that holds only a pipe and, when this process dies
/// however it dies (SIGKILL included), lazily unmounts `mountpoint` if our mount (`device`) is
/// still there: the auto-unmount of libfuse, so no dead mount is left behind. Must be called
/// before any thread is started. Returns the pipe's write end (keep it open for the life of
/// the process).
pub fn spawn_watchdog(mountpoint: &Path, device: (u32, u32)) -> Result<File> {
    let target = cstring(mountpoint.as_os_str())?;
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno("pipe2"));
    }
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: the process is single-threaded here (documented precondition); the child only
    // makes system calls and reads /proc before it _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno("fork"));
    }
    if pid == 0 {
        // Child: keep only the pipe's read end, ignore terminal signals (the parent handles
        // them and unmounts itself), wait for EOF, then clean up if needed.
        // SAFETY: plain system calls on descriptors and signal dispositions of this process.
        unsafe {
            libc::dup2(rd, 3);
            libc::close_range(4, u32::MAX, 0);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            let mut b = [0u8; 1];
            while libc::read(3, b.as_mut_ptr().cast(), 1) != 0 {
                if *libc::__errno_location() != libc::EINTR {
                    break;
                }
            }
            let path = Path::new(OsStr::from_bytes(target.as_bytes()));
            if mounted_with_device(path, device) {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
            libc::_exit(0);
        }
    }
    // SAFETY: `rd` is ours and no longer needed in the parent; `wr` is a fresh descriptor.
    unsafe {
        libc::close(rd);
        Ok(File::from_raw_fd(wr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines_with_escapes() {
        let l = "36 35 0:52 / /tmp/a\\040b rw,nosuid - fuse.vhost-user-fs vhost-user-fs:/run/x\\040y rw,user_id=0";
        let m = parse_mountinfo_line(l).unwrap();
        assert_eq!(m.device, (0, 52));
        assert_eq!(m.mountpoint, Path::new("/tmp/a b"));
        assert_eq!(m.fstype, "fuse.vhost-user-fs");
        assert_eq!(m.source, "vhost-user-fs:/run/x y");
        assert_eq!(m.fuse_device(), Some((0, 52)));
        let l = "22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw";
        let m = parse_mountinfo_line(l).unwrap();
        assert_eq!(m.fuse_device(), None);
        assert!(parse_mountinfo_line("garbage").is_none());
        assert_eq!(unescape("a\\134b\\"), b"a\\b\\");
    }
}
