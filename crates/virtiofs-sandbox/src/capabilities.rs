//! Capabilities: keep only what a passthrough file server needs (`--modcaps` adjusts the set).

use std::collections::HashSet;
use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};

use crate::Error;

/// What the file server itself needs once the sandbox is set up:
/// - CHOWN, FOWNER, FSETID, SETFCAP: SETATTR/SETXATTR on files the daemon does not own, and
///   keeping SUID/SGID bits where the kernel would;
/// - DAC_OVERRIDE: reaching every file of the share whatever its mode (the guest kernel checks
///   permissions, the daemon serves);
/// - SETUID, SETGID: switching to the caller's fsuid/fsgid for create-type requests;
/// - MKNOD: MKNOD of device nodes (FIFOs and sockets need no capability).
///
/// DAC_READ_SEARCH is not kept by default: it is only needed for file handles
/// (open_by_handle_at, `--inode-file-handles=prefer|mandatory`:
/// [`CapabilityPolicy::for_file_handles`]), and it is the capability container escapes via
/// open_by_handle_at rely on.
pub const DEFAULT_CAPABILITIES: [Capability; 8] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_MKNOD,
    Capability::CAP_SETFCAP,
];

/// The capability set the daemon keeps: the defaults adjusted by `--modcaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityPolicy {
    keep: CapsHashSet,
}

impl Default for CapabilityPolicy {
    fn default() -> Self {
        Self {
            keep: DEFAULT_CAPABILITIES.into_iter().collect(),
        }
    }
}

impl CapabilityPolicy {
    /// The defaults, plus DAC_READ_SEARCH when nodes may be file handles: open_by_handle_at
    /// needs it. (The file server opens only handles it made itself, of files it reached inside
    /// the share; `--modcaps=-dac_read_search` still drops it, and the file server then falls
    /// back to O_PATH descriptors, or refuses to start with `mandatory`.)
    pub fn for_file_handles(file_handles: bool) -> Self {
        let mut p = Self::default();
        if file_handles {
            p.keep.insert(Capability::CAP_DAC_READ_SEARCH);
        }
        p
    }

    /// The capabilities that will be kept, sorted by number.
    pub fn kept(&self) -> Vec<Capability> {
        let mut v: Vec<_> = self.keep.iter().copied().collect();
        v.sort_by_key(|c| c.index());
        v
    }

    /// Applies a `--modcaps` value: `+cap` adds, `-cap` removes, items separated by `:` (or `,`);
    /// names are case-insensitive, with or without the `cap_` prefix.
    pub fn modify(&mut self, spec: &str) -> Result<(), Error> {
        for item in spec.split([':', ',']).filter(|s| !s.is_empty()) {
            let (add, name) = match item.split_at(1) {
                ("+", name) => (true, name),
                ("-", name) => (false, name),
                _ => {
                    return Err(Error::ModCaps(format!(
                        "'{item}' must start with '+' (keep) or '-' (drop)"
                    )))
                }
            };
            let cap = parse_capability(name)?;
            if add {
                self.keep.insert(cap);
            } else {
                self.keep.remove(&cap);
            }
        }
        Ok(())
    }

    /// Drops every other capability from the calling thread's effective, permitted, inheritable,
    /// ambient and bounding sets. Call it while the process has one thread: threads created later
    /// inherit the result, threads that exist already do not.
    pub fn apply(&self) -> Result<(), Error> {
        let err =
            |what: &'static str| move |e: caps::errors::CapsError| Error::Capabilities(what, e);
        let permitted = caps::read(None, CapSet::Permitted).map_err(err("read permitted"))?;
        // The bounding set first: lowering it needs CAP_SETPCAP, which we are about to drop.
        if permitted.contains(&Capability::CAP_SETPCAP) {
            for cap in caps::runtime::thread_all_supported() {
                if !self.keep.contains(&cap) {
                    caps::drop(None, CapSet::Bounding, cap).map_err(err("drop bounding"))?;
                }
            }
        }
        caps::clear(None, CapSet::Ambient).map_err(err("clear ambient"))?;
        caps::clear(None, CapSet::Inheritable).map_err(err("clear inheritable"))?;
        let keep: CapsHashSet = self.keep.intersection(&permitted).copied().collect();
        // Effective before permitted: capset refuses an effective set larger than permitted.
        caps::set(None, CapSet::Effective, &keep).map_err(err("set effective"))?;
        caps::set(None, CapSet::Permitted, &keep).map_err(err("set permitted"))?;
        let missing: HashSet<_> = self.keep.difference(&permitted).collect();
        if !missing.is_empty() {
            let mut names: Vec<_> = missing.iter().map(|c| c.to_string()).collect();
            names.sort();
            tracing::warn!(
                "running without {} (not permitted to this process); requests needing them fail with EPERM",
                names.join(", ")
            );
        }
        Ok(())
    }
}

/// `chown`, `CAP_CHOWN` and `cap_chown` all name the same capability.
pub fn parse_capability(name: &str) -> Result<Capability, Error> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    Capability::from_str(&full).map_err(|_| Error::ModCaps(format!("unknown capability '{name}'")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modcaps_adds_and_removes_by_any_spelling() {
        let mut p = CapabilityPolicy::default();
        p.modify("+sys_admin:-MKNOD,-cap_setfcap").unwrap();
        let kept = p.kept();
        assert!(kept.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!kept.contains(&Capability::CAP_MKNOD));
        assert!(!kept.contains(&Capability::CAP_SETFCAP));
        assert!(kept.contains(&Capability::CAP_CHOWN));
        assert_eq!(kept.len(), 7);
    }

    #[test]
    fn file_handles_keep_dac_read_search_unless_modcaps_drops_it() {
        assert!(!CapabilityPolicy::default()
            .kept()
            .contains(&Capability::CAP_DAC_READ_SEARCH));
        assert_eq!(
            CapabilityPolicy::for_file_handles(false),
            CapabilityPolicy::default()
        );
        let mut p = CapabilityPolicy::for_file_handles(true);
        assert!(p.kept().contains(&Capability::CAP_DAC_READ_SEARCH));
        assert_eq!(p.kept().len(), DEFAULT_CAPABILITIES.len() + 1);
        p.modify("-dac_read_search").unwrap();
        assert_eq!(p, CapabilityPolicy::default());
    }

    #[test]
    fn modcaps_rejects_unknown_names_and_missing_signs() {
        let mut p = CapabilityPolicy::default();
        let e = p.modify("+fly").unwrap_err().to_string();
        assert!(e.contains("unknown capability 'fly'"), "{e}");
        let e = p.modify("chown").unwrap_err().to_string();
        assert!(e.contains("must start with '+'"), "{e}");
        assert_eq!(p, CapabilityPolicy::default());
    }
}
