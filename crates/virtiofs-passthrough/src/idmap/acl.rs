//! The ids inside POSIX ACL values (`system.posix_acl_access`, `system.posix_acl_default`),
//! translated as the kernel translates them on an idmapped mount: the id of each named-user
//! (ACL_USER) and named-group (ACL_GROUP) entry, guest → host when the guest sets an ACL and
//! host → guest when it reads one. The other entries carry no id.
//!
//! An entry naming a guest id a `forbid-guest` rule refuses makes the whole SETXATTR EINVAL,
//! the kernel's answer (`posix_acl_from_xattr` in `fs/posix_acl.c`) for an ACL entry whose id
//! cannot be mapped, where chown of such an id is EPERM (the Rust virtiofsd's rule). A value
//! that is not a well-formed ACL (length not 4 + 8n, version not 2) is left as it is: the host
//! kernel refuses it with its own errno. The Rust virtiofsd 1.14 refuses `--posix-acl` with
//! `--translate-uid`/`--translate-gid` instead.

use super::{Forbidden, IdMaps};

/// `POSIX_ACL_XATTR_VERSION`.
const VERSION: u32 = 2;
/// `ACL_USER`: a named user's entry.
const ACL_USER: u16 = 0x02;
/// `ACL_GROUP`: a named group's entry.
const ACL_GROUP: u16 = 0x08;

/// Whether `name` (the guest's xattr name) holds an ACL.
pub fn is_acl_name(name: &[u8]) -> bool {
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

impl IdMaps {
    /// The guest's ACL `value` made the host's, in place; `Err` names a forbidden id.
    pub fn acl_to_host(&self, value: &mut [u8]) -> Result<(), Forbidden> {
        each_named_id(value, |user, id| {
            if user {
                self.uid.to_host(id)
            } else {
                self.gid.to_host(id)
            }
        })
    }

    /// The host's ACL `value` made the guest's, in place.
    pub fn acl_to_guest(&self, value: &mut [u8]) {
        let _ = each_named_id(value, |user, id| {
            Ok(if user {
                self.uid.to_guest(id)
            } else {
                self.gid.to_guest(id)
            })
        });
    }
}

/// Replaces the id of every named entry of the ACL `value` by `f(is_user, id)`; does nothing to
/// a value that is not an ACL.
fn each_named_id(
    value: &mut [u8],
    mut f: impl FnMut(bool, u32) -> Result<u32, Forbidden>,
) -> Result<(), Forbidden> {
    if value.len() < 4 || (value.len() - 4) % 8 != 0 {
        return Ok(());
    }
    let (header, entries) = value.split_at_mut(4);
    if u32::from_le_bytes(header.try_into().expect("4 bytes")) != VERSION {
        return Ok(());
    }
    // Each entry: tag (u16), perm (u16), id (u32), little-endian.
    for e in entries.chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        if tag != ACL_USER && tag != ACL_GROUP {
            continue;
        }
        let id = u32::from_le_bytes(e[4..8].try_into().expect("4 bytes"));
        e[4..8].copy_from_slice(&f(tag == ACL_USER, id)?.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IdMap, IdRule};

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    fn maps(uid: &str, gid: &str) -> IdMaps {
        IdMaps {
            uid: IdMap::new(&[uid.parse::<IdRule>().unwrap()]).unwrap(),
            gid: IdMap::new(&[gid.parse::<IdRule>().unwrap()]).unwrap(),
        }
    }

    const U: u32 = u32::MAX; // ACL_UNDEFINED_ID

    #[test]
    fn named_entries_are_translated_both_ways_and_the_rest_kept() {
        let m = maps("map:1000:5000:10", "map:1000:6000:10");
        let guest = acl(&[
            (0x01, 6, U),
            (ACL_USER, 4, 1003),
            (ACL_USER, 4, 42),
            (0x04, 4, U),
            (ACL_GROUP, 5, 1009),
            (0x10, 7, U),
            (0x20, 0, U),
        ]);
        let mut v = guest.clone();
        m.acl_to_host(&mut v).unwrap();
        let host = acl(&[
            (0x01, 6, U),
            (ACL_USER, 4, 5003),
            (ACL_USER, 4, 42),
            (0x04, 4, U),
            (ACL_GROUP, 5, 6009),
            (0x10, 7, U),
            (0x20, 0, U),
        ]);
        assert_eq!(v, host);
        m.acl_to_guest(&mut v);
        assert_eq!(v, guest);
    }

    #[test]
    fn a_forbidden_id_is_refused_and_uid_rules_do_not_touch_groups() {
        let m = maps("forbid-guest:1500:1", "map:0:0:1");
        let mut v = acl(&[(ACL_USER, 4, 1500)]);
        assert_eq!(m.acl_to_host(&mut v), Err(Forbidden(1500)));
        let mut v = acl(&[(ACL_GROUP, 4, 1500)]);
        m.acl_to_host(&mut v).unwrap();
        assert_eq!(v, acl(&[(ACL_GROUP, 4, 1500)]));
    }

    #[test]
    fn values_that_are_not_acls_are_left_alone() {
        let m = maps("map:1000:5000:10", "map:1000:6000:10");
        for bad in [
            vec![],
            vec![2, 0, 0],
            [acl(&[(ACL_USER, 4, 1000)]), vec![0]].concat(),
            {
                let mut v = acl(&[(ACL_USER, 4, 1000)]);
                v[0] = 1; // version 1
                v
            },
        ] {
            let mut v = bad.clone();
            m.acl_to_host(&mut v).unwrap();
            m.acl_to_guest(&mut v);
            assert_eq!(v, bad);
        }
        assert!(is_acl_name(b"system.posix_acl_default"));
        assert!(!is_acl_name(b"user.posix_acl_access"));
    }
}
