//! `--max-bytes` and `--max-inodes` through the host kernel's FUSE client: `statvfs` (what `df`
//! shows) reports the quota, `dd` stops with "Disk quota exceeded" with no byte past the limit
//! on the host, and creating files stops with EDQUOT at the inode limit.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{Kind, Mounted};

fn statvfs(p: &Path) -> libc::statvfs {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs is plain integers; all-zero is valid; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut st) }, 0);
    st
}

#[test]
fn df_shows_the_quota_and_dd_stops_with_edquot() {
    const LIMIT: u64 = 8 << 20;
    let m = Mounted::start_with(Kind::Ours, &[], &["--max-bytes=8M", "--max-inodes=50"], &[])
        .expect("async-virtiofsd must be built for these tests");
    let st = statvfs(&m.mnt);
    assert_eq!(st.f_blocks * st.f_frsize, LIMIT, "df's size is the quota");
    assert_eq!(st.f_files, 50);
    assert_eq!(st.f_ffree, 50);

    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M", "count=20", "conv=fsync"])
        .arg(format!("of={}", m.mnt.join("big").display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "dd wrote 20 MiB under an 8 MiB quota: {err}"
    );
    assert!(err.contains("Disk quota exceeded"), "{err}");
    let host = fs::metadata(m.backend.share.join("big")).unwrap();
    assert!(
        host.blocks() * 512 <= LIMIT,
        "{} bytes allocated",
        host.blocks() * 512
    );
    assert!(
        host.len() <= LIMIT && host.len() > LIMIT / 2,
        "{}",
        host.len()
    );
    let st = statvfs(&m.mnt);
    assert!(st.f_bavail * st.f_frsize < 1 << 20, "df: nothing left");

    // Space comes back with the file.
    fs::remove_file(m.mnt.join("big")).unwrap();
    fs::write(m.mnt.join("again"), vec![1u8; 4 << 20]).unwrap();

    // Inodes: "again" is one; 49 more, then EDQUOT.
    for i in 0..49 {
        fs::write(m.mnt.join(format!("f{i}")), b"x").unwrap();
    }
    let e = fs::write(m.mnt.join("one-too-many"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    let e = fs::create_dir(m.mnt.join("dir")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    assert_eq!(statvfs(&m.mnt).f_ffree, 0);
}
