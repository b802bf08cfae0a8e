//! RLIMIT_NOFILE (`--rlimit-nofile`) and the share of it the guest may use.

use crate::Error;

/// Default target, as the Rust virtiofsd: enough for a million open guest files.
pub const DEFAULT_NOFILE: u64 = 1_000_000;

/// Descriptors kept back from the guest: one per possible guest memory slot (the vhost-user
/// frontend sends one fd per region, up to 509 with CONFIGURE_MEM_SLOTS), plus room for the
/// daemon's own eventfds, sockets and log output.
pub const INTERNAL_FD_RESERVE: u64 = 509 + 100;

/// Sets RLIMIT_NOFILE and returns the limit in force.
///
/// `Some(0)` leaves the limit unchanged. `None` raises it to min([`DEFAULT_NOFILE`], nr_open),
/// falling back to the hard limit (with a warning) when the process may not raise that. An
/// explicit value that cannot be set is an error.
pub fn raise_nofile(requested: Option<u64>) -> Result<u64, Error> {
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_err(|e| Error::Rlimit(format!("getrlimit: {e}")))?;
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(hard);
    let target = match requested {
        Some(0) => return Ok(soft),
        Some(n) if n > nr_open => {
            return Err(Error::Rlimit(format!(
                "--rlimit-nofile {n} is above the system maximum /proc/sys/fs/nr_open = {nr_open}"
            )))
        }
        Some(n) => n,
        None if soft >= DEFAULT_NOFILE => return Ok(soft),
        None => DEFAULT_NOFILE.min(nr_open),
    };
    match set_nofile(target) {
        Ok(()) => Ok(target),
        Err(e) if requested.is_some() => Err(Error::Rlimit(format!(
            "cannot set the open-file limit to {target}: {e} (hard limit {hard}; raising it needs CAP_SYS_RESOURCE)"
        ))),
        Err(e) => {
            tracing::warn!(
                "cannot raise the open-file limit to {target} ({e}); using the hard limit {hard}"
            );
            set_nofile(hard).map_err(|e| Error::Rlimit(format!("setrlimit {hard}: {e}")))?;
            Ok(hard)
        }
    }
}

fn set_nofile(n: u64) -> nix::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
}

/// How many descriptors the guest may hold open: the limit minus [`INTERNAL_FD_RESERVE`] and one
/// per request that may run at once (a request opens its descriptor before the quota sees it).
pub fn guest_fd_limit(nofile: u64, concurrent_requests: u64) -> Result<u64, Error> {
    let reserve = INTERNAL_FD_RESERVE + concurrent_requests.max(1);
    match nofile.checked_sub(reserve) {
        Some(n) if n >= 16 => {
            if n < 128 {
                tracing::warn!("only {n} file descriptors are left for the guest");
            }
            Ok(n)
        }
        _ => Err(Error::Rlimit(format!(
            "the open-file limit {nofile} is too small: the daemon keeps {reserve} for itself \
             and the guest needs at least 16 (use --rlimit-nofile {} or more)",
            reserve + 16
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_share_leaves_the_reserve() {
        assert_eq!(guest_fd_limit(10_000, 64).unwrap(), 10_000 - 609 - 64);
        assert_eq!(guest_fd_limit(10_000, 0).unwrap(), 10_000 - 610);
        let e = guest_fd_limit(700, 256).unwrap_err().to_string();
        assert!(
            e.contains("too small") && e.contains("--rlimit-nofile 881"),
            "{e}"
        );
    }

    #[test]
    fn zero_leaves_the_limit_alone() {
        let (soft, _) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raise_nofile(Some(0)).unwrap(), soft);
    }

    #[test]
    fn above_nr_open_is_refused() {
        let e = raise_nofile(Some(u64::MAX / 2)).unwrap_err().to_string();
        assert!(e.contains("nr_open"), "{e}");
    }
}
