//! Options that change what the guest is offered or how files open (issue 13's family):
//! host locks on or off, shared mmap of direct-I/O files, O_NOATIME. `--readonly` has its own
//! file (`readonly.rs`).
//!
//! Build the daemon first: `cargo build -p async-virtiofsd` (or set ASYNC_VIRTIOFSD_BIN).

mod common;

use common::{errno, Daemon};
use vhost_user_fs_client::abi::init_flags::{DIRECT_IO_ALLOW_MMAP, FLOCK_LOCKS, POSIX_LOCKS};
use vhost_user_fs_client::abi::ROOT_ID;
use vhost_user_fs_client::{Errno, FuseOps, InitParams};

/// Host locks are offered by default (POSIX_LOCKS, FLOCK_LOCKS) and not with the C virtiofsd's
/// `-o no_posix_lock` / `-o no_flock` (what libvirt's `<lock posix='off' flock='off'/>` passes),
/// each on its own; the guest then keeps those locks locally.
#[test]
fn lock_options_decide_what_init_offers() {
    let both = POSIX_LOCKS | FLOCK_LOCKS;
    for (opts, want) in [
        (&[][..], both),
        (&["-o", "no_posix_lock"][..], FLOCK_LOCKS),
        (&["-o", "no_flock"][..], POSIX_LOCKS),
        (&["-o", "no_posix_lock,no_flock"][..], 0),
        (&["-o", "no_flock", "-o", "flock,posix_lock"][..], both),
    ] {
        let d = Daemon::start(opts);
        let c = d.connect(d.config());
        let mut p = InitParams::default();
        p.flags |= both;
        c.init_with(p).unwrap();
        assert_eq!(c.session_flags() & both, want, "{opts:?}");
    }
}

/// `--allow-mmap` offers DIRECT_IO_ALLOW_MMAP (guests from 6.6 then allow shared mmap of files
/// opened with direct I/O, as `--cache=never|metadata` opens them); without it, it is not.
#[test]
fn allow_mmap_offers_direct_io_allow_mmap() {
    for (opts, want) in [
        (&["--cache=never"][..], 0),
        (&["--cache=never", "--allow-mmap"][..], DIRECT_IO_ALLOW_MMAP),
    ] {
        let d = Daemon::start(opts);
        let c = d.connect(d.config());
        let mut p = InitParams::default();
        p.flags |= DIRECT_IO_ALLOW_MMAP | vhost_user_fs_client::abi::init_flags::INIT_EXT;
        c.init_with(p).unwrap();
        assert_eq!(c.session_flags() & DIRECT_IO_ALLOW_MMAP, want, "{opts:?}");
    }
}

/// O_NOATIME on a file the daemon may not use it for (it lacks CAP_FOWNER here and does not
/// own the file): the host says EPERM. By default the file opens without it (the guest's
/// kernel already checked the caller may ask); with `--preserve-noatime` the guest gets EPERM.
#[test]
fn o_noatime_is_dropped_where_the_host_refuses_it_unless_preserved() {
    const O_NOATIME: u32 = libc::O_NOATIME as u32;
    for (preserve, want) in [(false, None), (true, Some(Errno::EPERM))] {
        let mut args = vec!["--modcaps=-fowner"];
        if preserve {
            args.push("--preserve-noatime");
        }
        let d = Daemon::start(&args);
        let path = d.share.join("theirs");
        std::fs::write(&path, b"x").unwrap();
        std::os::unix::fs::chown(&path, Some(1000), Some(1000)).unwrap();
        let c = d.connect(d.config());
        c.init().unwrap();
        let e = c.lookup(ROOT_ID, "theirs").unwrap();
        let got = c.open(e.nodeid, libc::O_RDONLY as u32 | O_NOATIME);
        match want {
            None => {
                let o = got.unwrap_or_else(|e| panic!("preserve={preserve}: {e}"));
                assert_eq!(c.read(e.nodeid, o.fh, 0, 8).unwrap(), b"x");
            }
            Some(want) => assert_eq!(errno(got), want, "preserve={preserve}"),
        }
        // Without O_NOATIME nothing changes.
        c.open(e.nodeid, libc::O_RDONLY as u32).unwrap();
    }
}
