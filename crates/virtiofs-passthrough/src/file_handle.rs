//! File handles (`--inode-file-handles`): a node named by the handle `name_to_handle_at(2)` gives
//! for its file instead of by an O_PATH descriptor, so a guest that knows a million files does not
//! make the daemon hold a million descriptors. An operation on such a node opens it for itself
//! (`open_by_handle_at(2)`, O_PATH or the flags it needs) and closes it when done.
//!
//! Security: open_by_handle_at opens *any* file of the filesystem a handle names, inside the
//! shared directory or not (which is why it needs CAP_DAC_READ_SEARCH). Every handle the daemon
//! opens was made by name_to_handle_at of a file it reached by a lookup inside the share (or made
//! there itself). The guest names nodes only by the ids we gave out; no handle is ever read from
//! a request, and none leaves the daemon.
//!
//! open_by_handle_at takes the mount to open on as a descriptor (`mount_fd`), which the kernel
//! will not take as O_PATH (EBADF: fs/fhandle.c gets it with fdget, which skips O_PATH files; a
//! quick experiment on 6.18 agrees). [`MountFds`] keeps one read-only descriptor of a directory
//! per mount id, shared by every node of that mount and closed with the last of them, so a host
//! can still unmount a submount the guest no longer uses.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

use smallvec::SmallVec;

/// The largest handle the kernel makes (`MAX_HANDLE_SZ`).
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// A file's handle: names the file on its filesystem for as long as the file exists, and never
/// another file (the filesystem puts a generation number in it: an inode number used again
/// makes a different handle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHandle {
    handle_type: i32,
    // ext4 and tmpfs handles are 8 and 12 bytes, xfs and btrfs up to 24: one allocation per node.
    bytes: SmallVec<[u8; 24]>,
}

impl FileHandle {
    /// The handle of the file `fd` is open on (`name_to_handle_at(fd, "", AT_EMPTY_PATH)`); any
    /// descriptor, O_PATH or not. `Ok(None)` when its filesystem cannot make one (EOPNOTSUPP), or
    /// not one that fits MAX_HANDLE_SZ (EOVERFLOW): that holds for the whole filesystem, always.
    pub fn of(fd: BorrowedFd<'_>) -> io::Result<Option<FileHandle>> {
        let mut raw = RawHandle {
            handle_bytes: MAX_HANDLE_SZ as u32,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        let mut mount_id: libc::c_int = 0;
        // SAFETY: `raw` has room for `handle_bytes` bytes of handle; the empty path is
        // NUL-terminated; `mount_id` is a valid int to write.
        let r = unsafe {
            libc::syscall(
                libc::SYS_name_to_handle_at,
                fd.as_raw_fd(),
                c"".as_ptr(),
                &mut raw as *mut RawHandle,
                &mut mount_id as *mut libc::c_int,
                libc::AT_EMPTY_PATH,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EOVERFLOW) => Ok(None),
                _ => Err(e),
            };
        }
        let len = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
        Ok(Some(FileHandle {
            handle_type: raw.handle_type,
            bytes: SmallVec::from_slice(&raw.f_handle[..len]),
        }))
    }

    /// A handle made up by a test.
    #[cfg(test)]
    pub fn from_parts(handle_type: i32, bytes: &[u8]) -> FileHandle {
        FileHandle {
            handle_type,
            bytes: SmallVec::from_slice(bytes),
        }
    }

    /// Opens the file with `flags` (close-on-exec always) on the mount of `mount`. ESTALE when
    /// the file no longer exists.
    pub fn open(&self, mount: &MountFd, flags: i32) -> io::Result<OwnedFd> {
        let mut raw = RawHandle {
            handle_bytes: self.bytes.len() as u32,
            handle_type: self.handle_type,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        raw.f_handle[..self.bytes.len()].copy_from_slice(&self.bytes);
        // SAFETY: `raw` is a valid file_handle of `handle_bytes` bytes; the result is a new
        // descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mount.fd.as_raw_fd(),
                &raw as *const RawHandle,
                flags | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }
}

/// A descriptor (opened read-only, never O_PATH) of a directory on one mount: what
/// open_by_handle_at needs to know the mount.
#[derive(Debug)]
pub struct MountFd {
    mnt_id: u64,
    fd: OwnedFd,
}

impl MountFd {
    /// `fd` (a non-O_PATH descriptor on mount `mnt_id`) as that mount's descriptor.
    pub fn new(mnt_id: u64, fd: OwnedFd) -> MountFd {
        MountFd { mnt_id, fd }
    }

    /// The mount id (`STATX_MNT_ID`) it is on.
    pub fn mnt_id(&self) -> u64 {
        self.mnt_id
    }
}

/// One [`MountFd`] per mount id, shared. The table holds them weakly: a mount's descriptor is
/// closed when the last node of that mount goes, and made again by the next lookup there.
#[derive(Default)]
pub struct MountFds {
    map: Mutex<HashMap<u64, Weak<MountFd>>>,
    /// Mounts whose lack of file handles was logged already.
    logged: Mutex<HashSet<u64>>,
}

impl MountFds {
    /// The descriptor of mount `mnt_id` if a node still uses one.
    pub fn get(&self, mnt_id: u64) -> Option<Arc<MountFd>> {
        self.map
            .lock()
            .expect("mount fd table")
            .get(&mnt_id)
            .and_then(Weak::upgrade)
    }

    /// Makes `mount` its mount's shared descriptor; the one in use if another lookup made one
    /// meanwhile (`mount` is closed then).
    pub fn insert(&self, mount: MountFd) -> Arc<MountFd> {
        let mut map = self.map.lock().expect("mount fd table");
        if let Some(m) = map.get(&mount.mnt_id).and_then(Weak::upgrade) {
            return m;
        }
        // Entries of mounts no node uses any more go now: the table stays as small as the set
        // of mounts in use.
        map.retain(|_, m| m.strong_count() > 0);
        let m = Arc::new(mount);
        map.insert(m.mnt_id, Arc::downgrade(&m));
        m
    }

    /// True the first time it is asked for `mnt_id`: say once per mount why it has no handles.
    pub fn first_report(&self, mnt_id: u64) -> bool {
        self.logged.lock().expect("mount log").insert(mnt_id)
    }
}

/// Whether file handles work for the directory `dir` (an O_PATH descriptor on mount `mnt_id`):
/// its handle opened through a read-only descriptor of it. The error says why not (EPERM: no
/// CAP_DAC_READ_SEARCH; EOPNOTSUPP: its filesystem makes no handles).
pub fn probe(dir: BorrowedFd<'_>, mnt_id: u64) -> io::Result<MountFd> {
    let handle =
        FileHandle::of(dir)?.ok_or_else(|| io::Error::from_raw_os_error(libc::EOPNOTSUPP))?;
    let fd = crate::sys::openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mount = MountFd::new(mnt_id, fd);
    handle.open(&mount, libc::O_PATH)?;
    Ok(mount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn o_path(path: &std::path::Path) -> OwnedFd {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(path)
            .unwrap();
        OwnedFd::from(f)
    }

    #[test]
    fn a_handle_opens_its_file_and_not_a_new_file_with_the_same_inode_number() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = o_path(tmp.path());
        let mnt_id = crate::sys::fstatx(dir.as_fd(), crate::sys::STATX_WANTED)
            .unwrap()
            .stx_mnt_id;
        let mount = match probe(dir.as_fd(), mnt_id) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("SKIP: file handles do not work here: {e}");
                return;
            }
        };
        let path = tmp.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let handle = FileHandle::of(o_path(&path).as_fd()).unwrap().unwrap();
        assert_eq!(
            handle,
            FileHandle::of(o_path(&path).as_fd()).unwrap().unwrap()
        );
        let fd = handle.open(&mount, libc::O_RDONLY).unwrap();
        let mut data = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(fd), &mut data).unwrap();
        assert_eq!(data, "x");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            handle
                .open(&mount, libc::O_PATH)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::ESTALE),
            "the file is gone"
        );
    }

    #[test]
    fn one_mount_fd_per_mount_while_used() {
        let table = MountFds::default();
        let root = || MountFd::new(7, OwnedFd::from(std::fs::File::open("/").unwrap()));
        assert!(table.get(7).is_none());
        let a = table.insert(root());
        let b = table.insert(root());
        assert!(Arc::ptr_eq(&a, &b), "one descriptor per mount");
        assert!(Arc::ptr_eq(&a, &table.get(7).unwrap()));
        assert_eq!(a.mnt_id(), 7);
        drop((a, b));
        assert!(table.get(7).is_none(), "closed with its last user");
        assert_eq!(table.insert(root()).mnt_id(), 7);
        assert!(table.first_report(7) && !table.first_report(7));
    }
}
