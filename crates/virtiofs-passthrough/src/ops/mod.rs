//! The operations, by kind. Each is an inherent method of [`crate::passthrough::Passthrough`]
//! that `filesystem.rs` calls from the [`virtiofs_fuse::Filesystem`] trait.

pub(crate) mod acl;
pub(crate) mod attr;
pub(crate) mod deferred;
pub(crate) mod dir;
pub(crate) mod entry;
pub(crate) mod file;
pub(crate) mod ioctl;
pub(crate) mod lock;
pub(crate) mod quota;
pub(crate) mod readonly;
pub(crate) mod seclabel;
pub(crate) mod xattr;
