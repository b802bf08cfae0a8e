//! The shared directory and what lies next to it, checked after every input.
//!
//! ```text
//! <TMPDIR>/async-virtiofsd-fuzz.<pid>/
//!     sentinel            a file outside the share: content and every stat field must stay
//!     outside/inner       a directory outside the share: its listing and file must stay
//!     share/              the shared directory, rebuilt for every input:
//!         file            "hello, world\n" * 64
//!         dir/nested      a directory with a file in it
//!         esc   -> ../sentinel        symlinks pointing out of the share
//!         escdir -> ../outside
//!         abs   -> <absolute path of sentinel>
//! ```

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const SENTINEL: &[u8] = b"outside the share: must never change\n";

/// What must not change outside the share.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    parent: Vec<String>,
    outside: Vec<String>,
    sentinel: Vec<u8>,
    /// (ino, mode, nlink, uid, gid, size, mtime, mtime_nsec, ctime, ctime_nsec) per file.
    stats: Vec<[i64; 10]>,
}

/// The temporary tree.
pub struct Sandbox {
    root: PathBuf,
    share: PathBuf,
    before: Snapshot,
}

static ROOT: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_root() {
    if let Some(root) = ROOT.get() {
        let _ = fs::remove_dir_all(root);
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn stat(path: &Path) -> [i64; 10] {
    match fs::symlink_metadata(path) {
        Ok(m) => [
            m.ino() as i64,
            i64::from(m.mode()),
            m.nlink() as i64,
            i64::from(m.uid()),
            i64::from(m.gid()),
            m.size() as i64,
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ],
        Err(_) => [-1; 10],
    }
}

impl Sandbox {
    /// Creates the tree under `$TMPDIR` (removed at exit).
    pub fn new() -> Sandbox {
        let root =
            std::env::temp_dir().join(format!("async-virtiofsd-fuzz.{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("outside")).expect("create sandbox");
        if ROOT.set(root.clone()).is_ok() {
            // SAFETY: registers a plain extern "C" function.
            unsafe { libc::atexit(remove_root) };
        }
        fs::write(root.join("sentinel"), SENTINEL).unwrap();
        fs::write(root.join("outside/inner"), SENTINEL).unwrap();
        let share = root.join("share");
        let mut sandbox = Sandbox {
            before: Snapshot {
                parent: vec![],
                outside: vec![],
                sentinel: vec![],
                stats: vec![],
            },
            root,
            share,
        };
        sandbox.rebuild_share();
        sandbox.before = sandbox.snapshot();
        sandbox
    }

    /// The shared directory.
    pub fn share(&self) -> &Path {
        &self.share
    }

    /// Deletes the share and creates it anew.
    pub fn rebuild_share(&mut self) {
        let share = &self.share;
        if share.exists() {
            fs::remove_dir_all(share).expect("remove the share");
        }
        fs::create_dir(share).unwrap();
        fs::write(share.join("file"), b"hello, world\n".repeat(64)).unwrap();
        fs::create_dir(share.join("dir")).unwrap();
        fs::write(share.join("dir/nested"), b"nested\n").unwrap();
        std::os::unix::fs::symlink("../sentinel", share.join("esc")).unwrap();
        std::os::unix::fs::symlink("../outside", share.join("escdir")).unwrap();
        std::os::unix::fs::symlink(self.root.join("sentinel"), share.join("abs")).unwrap();
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            parent: names(&self.root),
            outside: names(&self.root.join("outside")),
            sentinel: fs::read(self.root.join("sentinel")).unwrap_or_default(),
            // Not the parent's own stat: rebuilding the share changes its mtime.
            stats: [
                self.root.join("sentinel"),
                self.root.join("outside"),
                self.root.join("outside/inner"),
            ]
            .iter()
            .map(|p| stat(p))
            .collect(),
        }
    }

    /// Fails if anything outside the share changed.
    pub fn check(&self) -> Result<(), String> {
        let now = self.snapshot();
        if now == self.before {
            Ok(())
        } else {
            Err(format!(
                "something outside the share changed:\nbefore {:?}\nafter  {:?}",
                self.before, now
            ))
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// This process's open file descriptors and what they point to (but pipes).
pub fn open_fds() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| {
                    let target = fs::read_link(e.path()).unwrap_or_default();
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        target.to_string_lossy().into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    // Not the directory being read, nor pipes: the sanitizer's symbolizer (started when
    // libFuzzer prints a new function) talks to the process through two pipes.
    let listing = format!("/proc/{}/fd", std::process::id());
    v.retain(|(_, t)| *t != listing && !t.starts_with("pipe:"));
    v.sort();
    v
}

/// Caps file sizes (the guest may write at any offset or truncate upwards) at 64 MiB: writes
/// beyond fail with EFBIG instead of a SIGXFSZ that would kill the fuzzer.
pub fn limit_file_size() {
    // SAFETY: plain libc calls with valid arguments.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: 64 << 20,
            rlim_max: 64 << 20,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
}
