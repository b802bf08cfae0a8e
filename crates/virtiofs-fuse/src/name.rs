//! File and xattr names as the guest sends them: NUL-terminated, at most NAME_MAX bytes, copied
//! into a fixed buffer (no allocation) that also serves as the C string for system calls.

use std::ffi::CStr;

use crate::input::DecodeError;

/// The longest name: `NAME_MAX` (and `XATTR_NAME_MAX`), 255 bytes.
pub const NAME_MAX: usize = 255;

/// A name: 0 to 255 bytes without NUL. Whether it is a valid file name ("/", "." and ".."
/// inside a share) is for the filesystem to decide.
#[derive(Clone, Copy)]
pub struct Name {
    /// The bytes, NUL-terminated at `len`.
    buf: [u8; NAME_MAX + 1],
    len: u8,
}

impl Name {
    /// A name from `bytes`, which must hold no NUL.
    pub fn new(bytes: &[u8]) -> Result<Name, DecodeError> {
        if bytes.len() > NAME_MAX {
            return Err(DecodeError::NameTooLong);
        }
        if bytes.contains(&0) {
            return Err(DecodeError::Invalid("NUL inside a name"));
        }
        let mut buf = [0; NAME_MAX + 1];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(Name {
            buf,
            len: bytes.len() as u8,
        })
    }

    /// A name from the start of `bytes` up to its first NUL, which must be there; returns the
    /// name and what follows the NUL.
    pub fn split_first(bytes: &[u8]) -> Result<(Name, &[u8]), DecodeError> {
        let end = bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Invalid("name without NUL terminator"))?;
        Ok((Name::new(&bytes[..end])?, &bytes[end + 1..]))
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    /// The name as a C string.
    pub fn as_cstr(&self) -> &CStr {
        // The buffer holds no NUL before `len` and a NUL at `len`.
        CStr::from_bytes_with_nul(&self.buf[..=self.len as usize]).expect("NUL-terminated")
    }

    /// Whether the name is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_nul_terminated_and_bounded() {
        let (a, rest) = Name::split_first(b"old\0new\0").unwrap();
        assert_eq!(a.as_bytes(), b"old");
        assert_eq!(a.as_cstr().to_bytes_with_nul(), b"old\0");
        let (b, rest) = Name::split_first(rest).unwrap();
        assert_eq!((b.as_bytes(), rest), (&b"new"[..], &b""[..]));
        assert!(Name::split_first(b"no-nul").is_err());
        assert_eq!(Name::new(&[b'x'; 256]), Err(DecodeError::NameTooLong));
        assert!(Name::new(&[b'x'; 255]).is_ok());
        assert!(Name::new(b"a\0b").is_err());
        assert!(Name::new(b"").unwrap().is_empty());
    }
}
