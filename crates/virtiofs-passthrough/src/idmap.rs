//! `--translate-uid` / `--translate-gid`: translating user and group ids between the guest and
//! the host inside the daemon, in the Rust virtiofsd's rule language.
//!
//! A rule is `TYPE:A:B:COUNT` (`forbid-guest:A:COUNT`); the separator may be any character that
//! is not a letter, digit, `-` or `_`, the same throughout the rule; TYPE is case-insensitive:
//!
//! | rule | guest → host | host → guest |
//! |---|---|---|
//! | `guest:G:H:N` | G..G+N ↦ H..H+N | |
//! | `host:H:G:N` | | H..H+N ↦ G..G+N |
//! | `map:G:H:N` | G..G+N ↦ H..H+N | H..H+N ↦ G..G+N |
//! | `squash-guest:G:H:N` | G..G+N ↦ H | |
//! | `squash-host:H:G:N` | | H..H+N ↦ G |
//! | `forbid-guest:G:N` | G..G+N: EPERM | |
//!
//! The two directions are independent. An id no rule of its direction covers passes unchanged
//! (the Rust virtiofsd's rule: no overflow id). The source ranges of one direction must not
//! overlap (one rule per id); a range or its target reaching past 4294967294 is refused, so the
//! id 4294967295 (-1, "unchanged" in chown) is never produced nor translated.
//!
//! Guest → host applies to the caller of each request that runs as the caller (its uid, gid and
//! supplementary group: the new file's owner, the access check) and to the ids of a chown
//! (SETATTR); a forbidden id there is EPERM. Host → guest applies to the owner in every
//! attribute reply (LOOKUP, GETATTR, SETATTR, READDIRPLUS, CREATE, MKNOD, MKDIR, SYMLINK, LINK,
//! TMPFILE, STATX), and both ways to the ids inside POSIX ACL values (`acl.rs`). The ids are
//! those the daemon sees: inside its user namespace when it has one.

use std::fmt;
use std::str::FromStr;

/// One `--translate-uid` / `--translate-gid` rule, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// `guest:GUEST:HOST:COUNT`: guest ids to host ids, one to one.
    Guest {
        /// First guest id.
        guest: u32,
        /// First host id.
        host: u32,
        /// How many.
        count: u32,
    },
    /// `host:HOST:GUEST:COUNT`: host ids to guest ids, one to one.
    Host {
        /// First host id.
        host: u32,
        /// First guest id.
        guest: u32,
        /// How many.
        count: u32,
    },
    /// `map:GUEST:HOST:COUNT`: one to one, both ways.
    Map {
        /// First guest id.
        guest: u32,
        /// First host id.
        host: u32,
        /// How many.
        count: u32,
    },
    /// `squash-guest:GUEST:HOST:COUNT`: every guest id of the range to one host id.
    SquashGuest {
        /// First guest id.
        guest: u32,
        /// The host id.
        host: u32,
        /// How many guest ids.
        count: u32,
    },
    /// `squash-host:HOST:GUEST:COUNT`: every host id of the range to one guest id.
    SquashHost {
        /// First host id.
        host: u32,
        /// The guest id.
        guest: u32,
        /// How many host ids.
        count: u32,
    },
    /// `forbid-guest:GUEST:COUNT`: a request using one of these guest ids is EPERM.
    ForbidGuest {
        /// First guest id.
        guest: u32,
        /// How many.
        count: u32,
    },
}

const USAGE: &str = "expected guest|host|map|squash-guest|squash-host:BASE:BASE:COUNT \
                     or forbid-guest:BASE:COUNT";

impl FromStr for IdRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let split = s
            .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
            .ok_or(USAGE)?;
        let (kind, rest) = s.split_at(split);
        let sep = rest.chars().next().ok_or(USAGE)?;
        let fields = rest[sep.len_utf8()..]
            .split(sep)
            .map(|f| {
                f.parse::<u32>()
                    .map_err(|_| format!("'{f}' is not an id or count (0 to 4294967295); {USAGE}"))
            })
            .collect::<Result<Vec<u32>, String>>()?;
        let kind = kind.to_lowercase();
        let want = if kind == "forbid-guest" { 2 } else { 3 };
        if fields.len() != want {
            return Err(format!(
                "{kind} takes {want} numbers, not {}; {USAGE}",
                fields.len()
            ));
        }
        let (a, b, n) = (fields[0], fields[1], fields[want - 1]);
        let rule = match kind.as_str() {
            "guest" => IdRule::Guest {
                guest: a,
                host: b,
                count: n,
            },
            "host" => IdRule::Host {
                host: a,
                guest: b,
                count: n,
            },
            "map" => IdRule::Map {
                guest: a,
                host: b,
                count: n,
            },
            "squash-guest" => IdRule::SquashGuest {
                guest: a,
                host: b,
                count: n,
            },
            "squash-host" => IdRule::SquashHost {
                host: a,
                guest: b,
                count: n,
            },
            "forbid-guest" => IdRule::ForbidGuest { guest: a, count: n },
            _ => return Err(format!("unknown rule type '{kind}'; {USAGE}")),
        };
        rule.check()?;
        Ok(rule)
    }
}

impl fmt::Display for IdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IdRule::Guest { guest, host, count } => write!(f, "guest:{guest}:{host}:{count}"),
            IdRule::Host { host, guest, count } => write!(f, "host:{host}:{guest}:{count}"),
            IdRule::Map { guest, host, count } => write!(f, "map:{guest}:{host}:{count}"),
            IdRule::SquashGuest { guest, host, count } => {
                write!(f, "squash-guest:{guest}:{host}:{count}")
            }
            IdRule::SquashHost { host, guest, count } => {
                write!(f, "squash-host:{host}:{guest}:{count}")
            }
            IdRule::ForbidGuest { guest, count } => write!(f, "forbid-guest:{guest}:{count}"),
        }
    }
}

/// The end (exclusive) of `count` ids from `base`, if the last is at most 4294967294.
fn end(base: u32, count: u32) -> Option<u32> {
    base.checked_add(count)
}

impl IdRule {
    /// Its ranges, each as (direction is guest → host, source start, count, target).
    fn spans(&self) -> Vec<(bool, Span)> {
        let span = |start, count, to| Span { start, count, to };
        match *self {
            IdRule::Guest { guest, host, count } => {
                vec![(true, span(guest, count, To::Base(host)))]
            }
            IdRule::Host { host, guest, count } => {
                vec![(false, span(host, count, To::Base(guest)))]
            }
            IdRule::Map { guest, host, count } => vec![
                (true, span(guest, count, To::Base(host))),
                (false, span(host, count, To::Base(guest))),
            ],
            IdRule::SquashGuest { guest, host, count } => {
                vec![(true, span(guest, count, To::One(host)))]
            }
            IdRule::SquashHost { host, guest, count } => {
                vec![(false, span(host, count, To::One(guest)))]
            }
            IdRule::ForbidGuest { guest, count } => vec![(true, span(guest, count, To::Forbid))],
        }
    }

    /// Source and target ranges stay below 4294967295.
    fn check(&self) -> Result<(), String> {
        for (_, s) in self.spans() {
            let target_ok = match s.to {
                To::Base(b) => end(b, s.count).is_some(),
                To::One(id) => id != u32::MAX,
                To::Forbid => true,
            };
            if end(s.start, s.count).is_none() || !target_ok {
                return Err(format!(
                    "{self}: the range passes 4294967294, the highest id"
                ));
            }
        }
        Ok(())
    }
}

/// Where a source range goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    /// One to one from this base.
    Base(u32),
    /// All to this id.
    One(u32),
    /// Refused (EPERM).
    Forbid,
}

/// A source range and its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    count: u32,
    to: To,
}

impl Span {
    fn contains(&self, id: u32) -> bool {
        id >= self.start && id - self.start < self.count
    }
}

/// A guest id that a `forbid-guest` rule refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forbidden(pub u32);

/// The translation of one kind of id (uids or gids) in both directions. Empty, it translates
/// nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    /// Guest → host, sorted by start, not overlapping.
    to_host: Vec<Span>,
    /// Host → guest, the same.
    to_guest: Vec<Span>,
    /// The rules as given, for messages.
    rules: Vec<IdRule>,
}

impl IdMap {
    /// The map of `rules`; an error names two rules whose source ranges overlap in one
    /// direction.
    pub fn new(rules: &[IdRule]) -> Result<Self, String> {
        let mut map = IdMap::default();
        let mut owners: Vec<(bool, Span, IdRule)> = Vec::new();
        for rule in rules {
            for (to_host, span) in rule.spans() {
                if span.count == 0 {
                    continue; // covers nothing
                }
                let last = span.start + (span.count - 1);
                if let Some((_, _, other)) = owners.iter().find(|(dir, o, _)| {
                    *dir == to_host && o.start <= last && span.start <= o.start + (o.count - 1)
                }) {
                    return Err(format!(
                        "{rule} overlaps {other} ({} ids {}..={last} and {}..={})",
                        if to_host { "guest" } else { "host" },
                        span.start,
                        other_start(other, to_host),
                        other_last(other, to_host),
                    ));
                }
                owners.push((to_host, span, *rule));
                if to_host {
                    map.to_host.push(span);
                } else {
                    map.to_guest.push(span);
                }
            }
            map.rules.push(*rule);
        }
        map.to_host.sort_by_key(|s| s.start);
        map.to_guest.sort_by_key(|s| s.start);
        Ok(map)
    }

    /// No rule: every id passes unchanged.
    pub fn is_empty(&self) -> bool {
        self.to_host.is_empty() && self.to_guest.is_empty()
    }

    /// The rules, as given.
    pub fn rules(&self) -> &[IdRule] {
        &self.rules
    }

    /// The host id for the guest's `id`.
    pub fn to_host(&self, id: u32) -> Result<u32, Forbidden> {
        match find(&self.to_host, id) {
            None => Ok(id),
            Some(s) => match s.to {
                To::Base(b) => Ok(b + (id - s.start)),
                To::One(h) => Ok(h),
                To::Forbid => Err(Forbidden(id)),
            },
        }
    }

    /// The guest id for the host's `id`.
    pub fn to_guest(&self, id: u32) -> u32 {
        match find(&self.to_guest, id) {
            None => id,
            Some(s) => match s.to {
                To::Base(b) => b + (id - s.start),
                To::One(g) => g,
                To::Forbid => id, // no host → guest rule forbids
            },
        }
    }
}

fn other_start(rule: &IdRule, to_host: bool) -> u32 {
    rule.spans()
        .into_iter()
        .find(|(d, _)| *d == to_host)
        .map_or(0, |(_, s)| s.start)
}

fn other_last(rule: &IdRule, to_host: bool) -> u32 {
    rule.spans()
        .into_iter()
        .find(|(d, _)| *d == to_host)
        .map_or(0, |(_, s)| s.start + s.count.saturating_sub(1))
}

/// The span of sorted, disjoint `spans` that holds `id`.
fn find(spans: &[Span], id: u32) -> Option<&Span> {
    // The last span starting at or before `id`.
    let i = spans.partition_point(|s| s.start <= id);
    spans[..i].last().filter(|s| s.contains(id))
}

/// Both maps of a share (`--translate-uid`, `--translate-gid`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMaps {
    /// User ids.
    pub uid: IdMap,
    /// Group ids.
    pub gid: IdMap,
}

impl IdMaps {
    /// Neither map has a rule.
    pub fn is_empty(&self) -> bool {
        self.uid.is_empty() && self.gid.is_empty()
    }
}

mod acl;
pub use acl::is_acl_name;

#[cfg(test)]
mod tests;
