//! `--xattrmap`: translating extended attribute names between the guest and the host, in the
//! rule language of the Rust virtiofsd (its `doc/xattr-mapping.md`; QEMU's C virtiofsd had the
//! same).
//!
//! A map is a list of rules, each `<sep>type<sep>scope<sep>key<sep>prepend<sep>` where `<sep>` is
//! the rule's first character, or `<sep>map<sep>key<sep>prepend<sep>` (at most one, last). The
//! first rule that matches decides:
//!
//! - a name from the guest (GETXATTR, SETXATTR, REMOVEXATTR) matches a `client` or `all` rule
//!   whose `key` it starts with: `prefix` passes `prepend` + name to the host, `ok` the name
//!   unchanged, `bad` refuses with EPERM, `unsupported` with EOPNOTSUPP;
//! - a name from the host (LISTXATTR) matches a `server` or `all` rule whose `prepend` it starts
//!   with: `prefix` strips `prepend`, `ok` passes it, `bad` and `unsupported` hide it.
//!
//! A name no rule matches is refused (EPERM) from the guest and hidden from the host's lists:
//! a map should end with a catch-all rule. `map:key:prepend` expands as the Rust virtiofsd
//! does: a `prefix` rule for `key`, then (when `key` is not empty) a `bad` rule hiding unprefixed
//! `key` names on the host and stopping the guest from naming `prepend` itself, then a final
//! `ok` (or `bad` when `key` is empty) for everything else.
//!
//! `security.capability`: without HANDLE_KILLPRIV_V2 (offered only with `--killpriv-v2`) the
//! guest's kernel removes it itself on a write or a chown, through REMOVEXATTR, which is mapped
//! like any other name. With it, the host kernel removes the host's real `security.capability`
//! on the daemon's writes and truncates, not a remapped copy of it (e.g. under `user.`): a map
//! that renames `security.capability` and `--killpriv-v2` do not go together.

use std::borrow::Cow;
use std::ffi::{CStr, CString};
use std::str::FromStr;

use virtiofs_fuse::Errno;

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Prefix,
    Ok,
    Bad,
    Unsupported,
}

/// One rule, `map` rules already expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    kind: Kind,
    /// Applies to names from the guest.
    client: bool,
    /// Applies to names from the host.
    server: bool,
    key: Vec<u8>,
    prepend: Vec<u8>,
}

/// Why a `--xattrmap` does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XattrMapError {
    /// The map has no rule.
    #[error("no rule")]
    Empty,
    /// A rule ends before its last field's separator.
    #[error("rule {0}: incomplete (every field ends with the rule's separator)")]
    Incomplete(usize),
    /// The type is not one of the known ones.
    #[error("rule {0}: unknown type '{1}' (allowed: prefix, ok, bad, unsupported, map)")]
    Type(usize, String),
    /// The scope is not one of the known ones.
    #[error("rule {0}: unknown scope '{1}' (allowed: client, server, all)")]
    Scope(usize, String),
    /// A `map` rule that is not the last one.
    #[error("rule {0}: a 'map' rule must be the last one")]
    MapNotLast(usize),
    /// A field with a NUL byte.
    #[error("rule {0}: a NUL byte in a name")]
    Nul(usize),
}

/// A parsed `--xattrmap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrMap {
    rules: Vec<Rule>,
}

impl FromStr for XattrMap {
    type Err = XattrMapError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let mut rules = Vec::new();
        let mut rest = input.trim_start();
        let mut n = 0;
        while !rest.is_empty() {
            n += 1;
            let sep = rest.chars().next().expect("not empty");
            let mut fields = Vec::with_capacity(4);
            let mut body = &rest[sep.len_utf8()..];
            let want = |fields: &Vec<&str>| match fields.first() {
                Some(&"map") => 3,
                _ => 4,
            };
            while fields.is_empty() || fields.len() < want(&fields) {
                let end = body.find(sep).ok_or(XattrMapError::Incomplete(n))?;
                fields.push(&body[..end]);
                body = &body[end + sep.len_utf8()..];
            }
            rest = body.trim_start();
            let bytes = |s: &str| {
                if s.contains('\0') {
                    Err(XattrMapError::Nul(n))
                } else {
                    Ok(s.as_bytes().to_vec())
                }
            };
            if fields[0] == "map" {
                if !rest.is_empty() {
                    return Err(XattrMapError::MapNotLast(n));
                }
                rules.extend(expand_map(bytes(fields[1])?, bytes(fields[2])?));
                continue;
            }
            let kind = match fields[0] {
                "prefix" => Kind::Prefix,
                "ok" => Kind::Ok,
                "bad" => Kind::Bad,
                "unsupported" => Kind::Unsupported,
                other => return Err(XattrMapError::Type(n, other.into())),
            };
            let (client, server) = match fields[1] {
                "client" => (true, false),
                "server" => (false, true),
                "all" => (true, true),
                other => return Err(XattrMapError::Scope(n, other.into())),
            };
            rules.push(Rule {
                kind,
                client,
                server,
                key: bytes(fields[2])?,
                prepend: bytes(fields[3])?,
            });
        }
        if rules.is_empty() {
            return Err(XattrMapError::Empty);
        }
        Ok(XattrMap { rules })
    }
}

/// The rules a `map:key:prepend` stands for.
fn expand_map(key: Vec<u8>, prepend: Vec<u8>) -> Vec<Rule> {
    let all = |kind, key: &[u8], prepend: &[u8]| Rule {
        kind,
        client: true,
        server: true,
        key: key.to_vec(),
        prepend: prepend.to_vec(),
    };
    let mut rules = vec![all(Kind::Prefix, &key, &prepend)];
    if key.is_empty() {
        rules.push(all(Kind::Bad, b"", b""));
    } else {
        // Hide the host's unprefixed `key` names; keep the guest from naming `prepend`.
        rules.push(all(Kind::Bad, &prepend, &key));
        rules.push(all(Kind::Ok, b"", b""));
    }
    rules
}

impl XattrMap {
    /// The host's name for the guest's `name`, or the errno the guest gets.
    pub fn to_host<'a>(&self, name: &'a CStr) -> Result<Cow<'a, CStr>, Errno> {
        let bytes = name.to_bytes();
        let rule = self
            .rules
            .iter()
            .find(|r| r.client && bytes.starts_with(&r.key))
            .ok_or(Errno(libc::EPERM))?;
        match rule.kind {
            Kind::Ok => Ok(Cow::Borrowed(name)),
            Kind::Bad => Err(Errno(libc::EPERM)),
            Kind::Unsupported => Err(Errno(libc::EOPNOTSUPP)),
            Kind::Prefix => {
                let mut host = rule.prepend.clone();
                host.extend_from_slice(bytes);
                Ok(Cow::Owned(
                    CString::new(host).expect("no NUL in either part"),
                ))
            }
        }
    }

    /// The guest's name for the host's `name`, or `None` when it is hidden.
    pub fn to_guest<'a>(&self, name: &'a [u8]) -> Option<&'a [u8]> {
        let rule = self
            .rules
            .iter()
            .find(|r| r.server && name.starts_with(&r.prepend))?;
        match rule.kind {
            Kind::Ok => Some(name),
            Kind::Bad | Kind::Unsupported => None,
            Kind::Prefix => Some(&name[rule.prepend.len()..]),
        }
    }

    /// A host LISTXATTR answer (NUL-terminated names) as the guest sees it.
    pub fn list_to_guest(&self, host: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(host.len());
        for name in host.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            if let Some(guest) = self.to_guest(name).filter(|g| !g.is_empty()) {
                out.extend_from_slice(guest);
                out.push(0);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(s: &str) -> XattrMap {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn host(m: &XattrMap, name: &str) -> Result<String, i32> {
        let c = CString::new(name).unwrap();
        m.to_host(&c)
            .map(|n| n.to_str().unwrap().to_owned())
            .map_err(|e| e.0)
    }

    fn listed(m: &XattrMap, names: &[&str]) -> Vec<String> {
        let mut raw = Vec::new();
        for n in names {
            raw.extend_from_slice(n.as_bytes());
            raw.push(0);
        }
        m.list_to_guest(&raw)
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(|n| String::from_utf8(n.to_vec()).unwrap())
            .collect()
    }

    /// The documented rule examples, one by one.
    #[test]
    fn single_rules_of_the_documentation() {
        let m = map(":prefix:client:trusted.:user.virtiofs.:");
        assert_eq!(host(&m, "trusted.x").unwrap(), "user.virtiofs.trusted.x");
        assert_eq!(host(&m, "user.x"), Err(libc::EPERM), "no rule matches");
        let m = map(":prefix:server::user.virtiofs.:");
        assert_eq!(
            listed(&m, &["user.virtiofs.trusted.x", "user.y"]),
            ["trusted.x"]
        );
        let m = map(":prefix:all:trusted.:user.virtiofs.:");
        assert_eq!(host(&m, "trusted.x").unwrap(), "user.virtiofs.trusted.x");
        assert_eq!(listed(&m, &["user.virtiofs.trusted.x"]), ["trusted.x"]);
        let m = map(":ok:client:user.::");
        assert_eq!(host(&m, "user.a").unwrap(), "user.a");
        let m = map(":ok:server::security.:");
        assert_eq!(
            listed(&m, &["security.selinux", "user.a"]),
            ["security.selinux"]
        );
        let m = map(":ok:all:::");
        assert_eq!(host(&m, "anything").unwrap(), "anything");
        let m = map(":bad:server::security.::ok:all:::");
        assert_eq!(listed(&m, &["security.selinux", "user.a"]), ["user.a"]);
        let m = map(":unsupported:all:security.:security.::ok:all:::");
        assert_eq!(host(&m, "security.x"), Err(libc::EOPNOTSUPP));
        assert_eq!(listed(&m, &["security.x", "user.a"]), ["user.a"]);
    }

    /// Example 1: everything under `user.virtiofs.`, as two rules and as one `map`.
    #[test]
    fn example_prefix_all_attributes() {
        for m in [
            map(":prefix:all::user.virtiofs.::bad:all:::"),
            map(":map::user.virtiofs.:"),
        ] {
            assert_eq!(host(&m, "trusted.x").unwrap(), "user.virtiofs.trusted.x");
            assert_eq!(host(&m, "user.a").unwrap(), "user.virtiofs.user.a");
            assert_eq!(
                listed(
                    &m,
                    &[
                        "user.virtiofs.trusted.x",
                        "user.host-only",
                        "security.selinux"
                    ]
                ),
                ["trusted.x"],
                "unprefixed host names are hidden"
            );
        }
    }

    /// Example 2: `trusted.` remapped (what overlayfs in the guest needs), others through, the
    /// target of the remapping out of the guest's reach; as four rules and as one `map`.
    #[test]
    fn example_prefix_trusted_only() {
        let four = "/prefix/all/trusted./user.virtiofs./
            /bad/server//trusted./
            /bad/client/user.virtiofs.//
            /ok/all///";
        for m in [map(four), map("/map/trusted./user.virtiofs./")] {
            assert_eq!(
                host(&m, "trusted.overlay.opaque").unwrap(),
                "user.virtiofs.trusted.overlay.opaque"
            );
            assert_eq!(host(&m, "user.a").unwrap(), "user.a");
            assert_eq!(host(&m, "user.virtiofs.trusted.x"), Err(libc::EPERM));
            assert_eq!(
                listed(
                    &m,
                    &[
                        "user.virtiofs.trusted.overlay.opaque",
                        "trusted.host",
                        "user.a"
                    ]
                ),
                ["trusted.overlay.opaque", "user.a"]
            );
        }
    }

    /// Example 3: `security.` hidden both ways, everything else through.
    #[test]
    fn example_hide_security() {
        let m = map("/bad/all/security./security./\n            /ok/all///");
        assert_eq!(host(&m, "security.selinux"), Err(libc::EPERM));
        assert_eq!(host(&m, "user.a").unwrap(), "user.a");
        assert_eq!(listed(&m, &["security.selinux", "user.a"]), ["user.a"]);
    }

    #[test]
    fn bad_maps_are_refused_with_the_rule_number() {
        assert_eq!("".parse::<XattrMap>(), Err(XattrMapError::Empty));
        assert_eq!("   ".parse::<XattrMap>(), Err(XattrMapError::Empty));
        assert_eq!(
            ":prefix:all:trusted.:user.vm.".parse::<XattrMap>(),
            Err(XattrMapError::Incomplete(1))
        );
        assert_eq!(
            ":ok:all::: :frob:all:::".parse::<XattrMap>(),
            Err(XattrMapError::Type(2, "frob".into()))
        );
        assert_eq!(
            ":ok:guest:::".parse::<XattrMap>(),
            Err(XattrMapError::Scope(1, "guest".into()))
        );
        assert_eq!(
            ":map::user.:  :ok:all:::".parse::<XattrMap>(),
            Err(XattrMapError::MapNotLast(1))
        );
        // Any separator, any whitespace between rules.
        assert!("|ok|all||| \n\t#bad#all###".parse::<XattrMap>().is_ok());
    }
}
