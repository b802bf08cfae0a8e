//! Compatibility with the Rust virtiofsd 1.14 command line: its `-o` forms, and the value
//! syntax of the options whose feature we do not have yet (so they are refused with one clear
//! line instead of a clap usage error).

use std::path::PathBuf;

use clap::ValueEnum;
use virtiofs_passthrough::{CacheMode, XattrMap, XattrMapError};
use virtiofs_sandbox::SandboxMode;

use crate::cli::{LogLevel, UsageError};

/// Longest `--tag` (the virtio-fs config space's tag field), as in the Rust virtiofsd.
pub use virtiofs_device::MAX_TAG_LEN;

/// `--posix-acl` / `--security-label`: whether to offer the feature to the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Negotiation {
    /// Do not offer it (what we do).
    Never,
    /// Offer it when the guest supports it.
    Auto,
    /// Require it.
    Always,
}

/// `--inode-file-handles` as written (see `virtiofs_passthrough::InodeFileHandles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InodeFileHandles {
    /// O_PATH descriptors only.
    Never,
    /// File handles where the filesystem supports them, else O_PATH descriptors.
    Prefer,
    /// Deprecated alias of `prefer`.
    Fallback,
    /// File handles only.
    Mandatory,
}

/// `--migration-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrationMode {
    /// Transfer the paths of the guest's inodes.
    FindPaths,
    /// Transfer file handles.
    FileHandles,
}

/// `--migration-on-error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrationOnError {
    /// Fail the migration.
    Abort,
    /// Finish it; the guest gets errors on the inodes that did not migrate.
    GuestError,
}

/// One setting, from a long option or from `-o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// `--shared-dir` / `-o source=`.
    Source(PathBuf),
    /// `--cache` / `-o cache=`.
    Cache(CacheMode),
    /// `--xattr` / `-o xattr`, `-o no_xattr`.
    Xattr(bool),
    /// `--no-readdirplus` / `-o readdirplus`, `-o no_readdirplus`.
    Readdirplus(bool),
    /// `--writeback` / `-o writeback`, `-o no_writeback`.
    Writeback(bool),
    /// `--allow-direct-io` / `-o allow_direct_io`, `-o no_allow_direct_io`.
    DirectIo(bool),
    /// `--log-level` / `-o loglevel=`, `-o log_level=`, `-d`.
    LogLevel(LogLevel),
    /// `--sandbox` / `-o sandbox=`.
    Sandbox(SandboxMode),
    /// `--modcaps` / `-o modcaps=`.
    Modcaps(String),
    /// `--killpriv-v2`, `--no-killpriv-v2` / `-o killpriv_v2`, `-o no_killpriv_v2`, with the
    /// option as written.
    KillprivV2(bool, String),
    /// `--posix-acl[=MODE]` / `-o posix_acl`, `-o no_posix_acl`.
    PosixAcl(Negotiation, String),
    /// `--security-label[=MODE]` / `-o security_label`, `-o no_security_label`.
    SecurityLabel(Negotiation, String),
    /// `--announce-submounts`, `--no-announce-submounts` / `-o announce_submounts`.
    AnnounceSubmounts(bool, String),
    /// `-o posix_lock`, `-o no_posix_lock`: serve POSIX locks on the host (default on).
    PosixLock(bool),
    /// `-o flock`, `-o no_flock`: serve flock(2) locks on the host (default on).
    Flock(bool),
    /// `--xattrmap` / `-o xattrmap=`.
    XattrMap(XattrMap),
    /// An option whose feature is not built yet, as written: refused.
    NotYet(String),
}

const COMPAT_ALLOWED: &str = "source=DIR, cache=never|none|auto|always|metadata, xattr, \
     no_xattr, readdirplus, no_readdirplus, writeback, no_writeback, allow_direct_io, \
     no_allow_direct_io, loglevel=LEVEL, log_level=LEVEL, sandbox=namespace|chroot|none, \
     modcaps=CAPS, announce_submounts, posix_lock, no_posix_lock, flock, no_flock, \
     no_killpriv_v2, no_posix_acl, no_security_label";

/// Parses one item of a `-o` list.
pub fn parse_compat(item: &str) -> Result<Option<Setting>, UsageError> {
    let (key, value) = match item.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (item, None),
    };
    let written = format!("-o {key}");
    let flag = |s: Setting| match value {
        None => Ok(Some(s)),
        Some(_) => Err(UsageError(format!("-o {key} takes no value"))),
    };
    match (key, value) {
        ("source", Some(dir)) if !dir.is_empty() => Ok(Some(Setting::Source(dir.into()))),
        ("cache", Some(mode)) => mode
            .parse()
            .map(|m| Some(Setting::Cache(m)))
            .map_err(|e| UsageError(format!("-o cache: {e}"))),
        // The Rust virtiofsd's form is `loglevel=debug|info|warn|err`; `log_level=` is ours.
        ("loglevel" | "log_level", Some(level)) => {
            let parsed = if level == "err" {
                Ok(LogLevel::Error)
            } else {
                LogLevel::from_str(level, true)
            };
            parsed.map(|l| Some(Setting::LogLevel(l))).map_err(|_| {
                UsageError(format!(
                    "-o {key}: invalid level '{level}' (allowed: error, err, warn, info, debug, trace, off)"
                ))
            })
        }
        ("sandbox", Some(mode)) => match mode {
            "namespace" => Ok(Some(Setting::Sandbox(SandboxMode::Namespace))),
            "chroot" => Ok(Some(Setting::Sandbox(SandboxMode::Chroot))),
            "none" => Ok(Some(Setting::Sandbox(SandboxMode::None))),
            _ => Err(UsageError(format!(
                "-o sandbox: invalid mode '{mode}' (allowed: namespace, chroot, none)"
            ))),
        },
        ("modcaps", Some(caps)) => Ok(Some(Setting::Modcaps(caps.into()))),
        ("xattrmap", Some(map)) => parse_xattrmap(map)
            .map(|m| Some(Setting::XattrMap(m)))
            .map_err(|e| UsageError(format!("-o xattrmap: {e}"))),
        ("xattr", _) => flag(Setting::Xattr(true)),
        ("no_xattr", _) => flag(Setting::Xattr(false)),
        ("readdirplus", _) => flag(Setting::Readdirplus(true)),
        ("no_readdirplus", _) => flag(Setting::Readdirplus(false)),
        ("writeback", _) => flag(Setting::Writeback(true)),
        ("no_writeback", _) => flag(Setting::Writeback(false)),
        ("allow_direct_io", _) => flag(Setting::DirectIo(true)),
        ("no_allow_direct_io", _) => flag(Setting::DirectIo(false)),
        ("announce_submounts", _) => flag(Setting::AnnounceSubmounts(true, written)),
        ("killpriv_v2", _) => flag(Setting::KillprivV2(true, written)),
        ("no_killpriv_v2", _) => flag(Setting::KillprivV2(false, written)),
        ("posix_acl", _) => flag(Setting::PosixAcl(Negotiation::Always, written)),
        ("no_posix_acl", _) => flag(Setting::PosixAcl(Negotiation::Never, written)),
        ("security_label", _) => flag(Setting::SecurityLabel(Negotiation::Always, written)),
        ("no_security_label", _) => flag(Setting::SecurityLabel(Negotiation::Never, written)),
        // The C virtiofsd's lock options (libvirt's `<lock posix= flock=>`); the Rust virtiofsd
        // takes only the `no_` forms, as no-ops (it serves no lock).
        ("posix_lock", _) => flag(Setting::PosixLock(true)),
        ("no_posix_lock", _) => flag(Setting::PosixLock(false)),
        ("flock", _) => flag(Setting::Flock(true)),
        ("no_flock", _) => flag(Setting::Flock(false)),
        _ => Err(UsageError(format!(
            "invalid -o option '{item}' (allowed: {COMPAT_ALLOWED})"
        ))),
    }
}

/// The `--print-capabilities` output: the vhost-user.json backend capabilities a manager reads
/// (QEMU's vhost-user "backend program conventions"). What we have, in the Rust virtiofsd's
/// words: `posix-acl-negotiation-mode` and `security-label-negotiation-mode` (`--posix-acl` and
/// `--security-label` take `=always|auto|never`; Incus, for one, then passes
/// `--posix-acl=auto` so a guest without ACLs still mounts) and `separate-options` (libvirt
/// passes `--shared-dir`, `--cache`, `--sandbox`, `--xattr`, ... instead of one `-o` list). Not
/// `migrate-precopy`: no live migration.
pub fn capabilities_json() -> String {
    let features = [
        "posix-acl-negotiation-mode",
        "security-label-negotiation-mode",
        "separate-options",
    ];
    let list: Vec<String> = features.iter().map(|f| format!("    \"{f}\"")).collect();
    format!(
        "{{\n  \"type\": \"fs\",\n  \"features\": [\n{}\n  ]\n}}\n",
        list.join(",\n")
    )
}

/// `--tag`: 1 to 36 bytes of UTF-8.
pub fn parse_tag(tag: &str) -> Result<String, String> {
    if !tag.is_empty() && tag.len() <= MAX_TAG_LEN {
        Ok(tag.into())
    } else {
        Err(format!("the tag must be 1 to {MAX_TAG_LEN} bytes"))
    }
}

/// `--xattrmap`: the rule list, in the Rust virtiofsd's syntax (`virtiofs_passthrough::XattrMap`).
pub fn parse_xattrmap(map: &str) -> Result<XattrMap, String> {
    map.parse().map_err(|e: XattrMapError| e.to_string())
}

/// `--uid-map` / `--gid-map`: `:namespace_id:host_id:count:`, any non-alphanumeric
/// delimiter, as in the Rust virtiofsd.
pub fn parse_ns_idmap(map: &str) -> Result<virtiofs_sandbox::NsRange, String> {
    map.parse()
}

/// `--translate-uid` / `--translate-gid`: `TYPE:a:b:count` (`forbid-guest:a:count`).
pub fn parse_translate_idmap(map: &str) -> Result<virtiofs_passthrough::IdRule, String> {
    map.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compat_items() {
        assert_eq!(
            parse_compat("cache=none").unwrap(),
            Some(Setting::Cache(CacheMode::Never))
        );
        assert_eq!(
            parse_compat("loglevel=err").unwrap(),
            Some(Setting::LogLevel(LogLevel::Error))
        );
        assert_eq!(
            parse_compat("sandbox=chroot").unwrap(),
            Some(Setting::Sandbox(SandboxMode::Chroot))
        );
        assert_eq!(
            parse_compat("no_flock").unwrap(),
            Some(Setting::Flock(false))
        );
        assert_eq!(parse_compat("flock").unwrap(), Some(Setting::Flock(true)));
        assert_eq!(
            parse_compat("posix_lock").unwrap(),
            Some(Setting::PosixLock(true))
        );
        assert!(parse_compat("flock=yes").is_err());
        assert_eq!(
            parse_compat("xattrmap=:map::user.virtiofs.:").unwrap(),
            Some(Setting::XattrMap(":map::user.virtiofs.:".parse().unwrap()))
        );
        let e = parse_compat("xattrmap=:frob:all:::").unwrap_err().0;
        assert!(e.contains("-o xattrmap") && e.contains("frob"), "{e}");
        assert!(parse_compat("sandbox=jail").is_err());
        assert!(parse_compat("xattr=1").is_err());
        assert!(parse_compat("loglevel=loud").is_err());
    }

    #[test]
    fn id_maps() {
        assert!(parse_ns_idmap(":0:100000:65536:").is_ok());
        assert!(parse_ns_idmap("/0/100000/65536/").is_ok());
        assert!(parse_ns_idmap(":0:100000:").is_err());
        assert!(parse_ns_idmap("0:1:2").is_err());
        assert!(parse_translate_idmap("guest:0:1000:1").is_ok());
        assert!(parse_translate_idmap("forbid-guest:0:10").is_ok());
        assert!(parse_translate_idmap("squash-host/0/1/2").is_ok());
        assert!(parse_translate_idmap("forbid-guest:0:1:2").is_err());
        assert!(parse_translate_idmap("sideways:0:1:2").is_err());
        assert!(parse_tag("myfs").is_ok());
        assert!(parse_tag("").is_err());
        assert!(parse_tag(&"x".repeat(37)).is_err());
    }
}
