//! Request extensions (7.38, `fuse_in_header.total_extlen`): what follows a request's arguments.
//! The kernel appends them to MKNOD, MKDIR, SYMLINK, CREATE and TMPFILE when the session
//! negotiated them, each an 8-byte-aligned record that starts with a `fuse_ext_header`:
//!
//! - SECURITY_CTX: the new node's security context, first, always present (with no context
//!   when the guest's LSM has none): header `{ size, nr_secctx }` with `nr_secctx` ≤ 31 as its
//!   type; for one context a `fuse_secctx { size }`, the xattr name with its NUL, `size` bytes of
//!   value, zero padding to 8 bytes (Linux's `get_security_context`).
//! - CREATE_SUPP_GROUP: `fuse_supp_groups { nr_groups }` and the group ids; Linux sends one, the
//!   parent directory's group when the caller is in it but it is not the caller's fsgid.
//!
//! Other types are skipped. A malformed record is a [`DecodeError`] (EINVAL).

use crate::abi::{ext, ExtHeader, Secctx};
use crate::input::{DecodeError, Input};
use crate::name::{Name, NAME_MAX};

/// The largest security context value (`XATTR_SIZE_MAX`).
pub const SECCTX_VALUE_MAX: usize = 65536;

/// A new node's security context (SECURITY_CTX): the xattr that holds its label on the host
/// (`security.selinux` under SELinux) and the label, as the guest's LSM chose them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecCtx {
    /// The xattr name, as the guest names it.
    pub name: Name,
    /// The value (an SELinux context comes with its trailing NUL).
    pub value: Vec<u8>,
}

/// The extensions of one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Extensions {
    /// The first supplementary group (CREATE_SUPP_GROUP).
    pub(crate) supp_group: Option<u32>,
    /// The security context, when there was one with a context in it.
    pub(crate) secctx: Option<SecCtx>,
}

/// Which extensions the session negotiated (others are skipped).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Negotiated {
    pub(crate) supp_group: bool,
    pub(crate) secctx: bool,
}

/// Reads every extension in `input` (the request's extension area).
pub(crate) fn parse(input: &mut Input<'_>, on: Negotiated) -> Result<Extensions, DecodeError> {
    let mut out = Extensions::default();
    let mut secctx_seen = false;
    while input.remaining() >= std::mem::size_of::<ExtHeader>() {
        let eh: ExtHeader = input.read_obj()?;
        let len = (eh.size as usize)
            .checked_sub(std::mem::size_of::<ExtHeader>())
            .filter(|n| n % 8 == 0)
            .ok_or(DecodeError::Invalid("extension length"))?;
        let mut body = input.take(len)?;
        match eh.typ {
            n if n <= ext::MAX_NR_SECCTX && on.secctx => {
                if secctx_seen {
                    return Err(DecodeError::Invalid("two security context extensions"));
                }
                secctx_seen = true;
                out.secctx = secctx(n, &mut body)?;
            }
            ext::GROUPS if on.supp_group && out.supp_group.is_none() => {
                let n: u32 = body.read_obj()?;
                if n >= 1 {
                    out.supp_group = Some(body.read_obj()?);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The security-context extension's body holding `nr` contexts.
fn secctx(nr: u32, body: &mut Input<'_>) -> Result<Option<SecCtx>, DecodeError> {
    match nr {
        0 => return Ok(None), // the guest's LSM gave none
        1 => {}
        // Linux sends one; which of several would be the label is not defined.
        _ => return Err(DecodeError::Invalid("more than one security context")),
    }
    let head: Secctx = body.read_obj()?;
    let size = head.size as usize;
    if size == 0 || size > SECCTX_VALUE_MAX {
        return Err(DecodeError::Invalid("security context size"));
    }
    // Name, NUL, value and at most 7 bytes of padding: nothing else may be there.
    let len = body.remaining();
    if len > NAME_MAX + 1 + size + 7 {
        return Err(DecodeError::Invalid(
            "security context longer than its parts",
        ));
    }
    let mut buf = vec![0u8; len];
    body.read_exact(&mut buf)?;
    let nul = buf
        .iter()
        .take(NAME_MAX + 1)
        .position(|&b| b == 0)
        .ok_or(DecodeError::Invalid("security context name"))?;
    if nul == 0 {
        return Err(DecodeError::Invalid("empty security context name"));
    }
    let name = Name::new(&buf[..nul])?;
    let rest = &buf[nul + 1..];
    if rest.len() < size || rest.len() - size > 7 {
        return Err(DecodeError::Invalid("security context value length"));
    }
    Ok(Some(SecCtx {
        name,
        value: rest[..size].to_vec(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::tests::place;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    const BOTH: Negotiated = Negotiated {
        supp_group: true,
        secctx: true,
    };

    /// The security-context extension as Linux builds it.
    fn secctx_ext(nr: u32, name: &[u8], value: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if nr > 0 {
            body.extend_from_slice(&(value.len() as u32).to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
            body.extend_from_slice(name);
            body.push(0);
            body.extend_from_slice(value);
            body.resize(body.len().next_multiple_of(8), 0);
        }
        let mut v = ((8 + body.len()) as u32).to_le_bytes().to_vec();
        v.extend_from_slice(&nr.to_le_bytes());
        v.extend_from_slice(&body);
        v
    }

    fn groups_ext(gid: u32) -> Vec<u8> {
        let mut v = 16u32.to_le_bytes().to_vec();
        v.extend_from_slice(&ext::GROUPS.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&gid.to_le_bytes());
        v
    }

    fn decode(bytes: &[u8], on: Negotiated) -> Result<Extensions, DecodeError> {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x40000)]).unwrap();
        // Split in odd places: records may straddle descriptors.
        let cut = bytes.len() / 3;
        let segs = place(&mem, bytes, &[cut, bytes.len() - cut], 0x1000);
        parse(&mut Input::new(&mem, &segs), on)
    }

    #[test]
    fn a_security_context_and_a_group_decode_as_linux_sends_them() {
        let label = b"system_u:object_r:user_home_t:s0\0";
        let mut bytes = secctx_ext(1, b"security.selinux", label);
        assert_eq!(bytes.len() % 8, 0);
        bytes.extend(groups_ext(1234));
        let got = decode(&bytes, BOTH).unwrap();
        assert_eq!(got.supp_group, Some(1234));
        let sc = got.secctx.unwrap();
        assert_eq!(sc.name.as_bytes(), b"security.selinux");
        assert_eq!(sc.value, label);
        // No context (no LSM in the guest): nothing, and the group still comes through.
        let mut bytes = secctx_ext(0, b"", b"");
        bytes.extend(groups_ext(7));
        let got = decode(&bytes, BOTH).unwrap();
        assert_eq!((got.secctx, got.supp_group), (None, Some(7)));
    }

    #[test]
    fn extensions_not_negotiated_are_skipped() {
        let mut bytes = secctx_ext(1, b"security.selinux", b"x\0");
        bytes.extend(groups_ext(5));
        let off = Negotiated {
            supp_group: false,
            secctx: false,
        };
        assert_eq!(decode(&bytes, off).unwrap(), Extensions::default());
    }

    #[test]
    fn malformed_security_contexts_are_einval() {
        let good = secctx_ext(1, b"security.selinux", b"label\0");
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // Two contexts, or the extension twice.
        cases.push(("nr 2", secctx_ext(2, b"security.selinux", b"label\0")));
        cases.push(("twice", [good.clone(), good.clone()].concat()));
        // A value size of 0, above XATTR_SIZE_MAX, or past the record's end.
        for size in [0u32, 65537, 64] {
            let mut b = good.clone();
            b[8..12].copy_from_slice(&size.to_le_bytes());
            cases.push(("value size", b));
        }
        // A record size past the area, or not in 8-byte units.
        let mut b = good.clone();
        b[0..4].copy_from_slice(&(good.len() as u32 + 8).to_le_bytes());
        cases.push(("record past the end", b));
        let mut b = good.clone();
        b[0..4].copy_from_slice(&(good.len() as u32 - 3).to_le_bytes());
        cases.push(("record size", b));
        // A name without NUL, an empty name, a name over 255 bytes.
        let mut b = secctx_ext(1, b"", b"label\0");
        b.truncate(16);
        b.extend_from_slice(b"security.selinux");
        b.resize(b.len().next_multiple_of(8), b'x');
        let size = b.len() as u32;
        b[0..4].copy_from_slice(&size.to_le_bytes());
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        cases.push(("no NUL", b));
        cases.push(("empty name", secctx_ext(1, b"", b"label\0")));
        cases.push(("long name", secctx_ext(1, &[b'n'; 256], b"label\0")));
        // Bytes beyond the value and its padding.
        let mut b = good.clone();
        b.extend_from_slice(&[0; 8]);
        let size = b.len() as u32;
        b[0..4].copy_from_slice(&size.to_le_bytes());
        cases.push(("trailing bytes", b));
        for (what, bytes) in cases {
            let e = decode(&bytes, BOTH).expect_err(what);
            assert!(
                matches!(e, DecodeError::Invalid(_) | DecodeError::Short { .. }),
                "{what}: {e}"
            );
            assert_eq!(e.errno(), libc::EINVAL, "{what}");
        }
        // The well-formed one decodes, and a value of exactly XATTR_SIZE_MAX too.
        assert!(decode(&good, BOTH).unwrap().secctx.is_some());
        let big = vec![7u8; SECCTX_VALUE_MAX];
        let got = decode(&secctx_ext(1, b"security.x", &big), BOTH).unwrap();
        assert_eq!(got.secctx.unwrap().value, big);
    }
}
