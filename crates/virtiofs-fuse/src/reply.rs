//! Typed replies turned into their wire structs.

use std::time::Duration;

use crate::abi::{AttrOut, EntryOut, OpenOut, StatxOut};
use crate::filesystem::{AttrReply, Entry, Opened, StatxReply};

/// A cache timeout as the kernel's (seconds, nanoseconds).
fn split(d: Duration) -> (u64, u32) {
    (d.as_secs(), d.subsec_nanos())
}

/// `fuse_entry_out` of an entry.
pub(crate) fn entry_out(e: &Entry) -> EntryOut {
    let (entry_valid, entry_valid_nsec) = split(e.entry_valid);
    let (attr_valid, attr_valid_nsec) = split(e.attr_valid);
    EntryOut {
        nodeid: e.nodeid,
        generation: e.generation,
        entry_valid,
        attr_valid,
        entry_valid_nsec,
        attr_valid_nsec,
        attr: e.attr,
    }
}

/// `fuse_attr_out` of attributes.
pub(crate) fn attr_out(a: &AttrReply) -> AttrOut {
    let (attr_valid, attr_valid_nsec) = split(a.valid);
    AttrOut {
        attr_valid,
        attr_valid_nsec,
        dummy: 0,
        attr: a.attr,
    }
}

/// `fuse_statx_out`.
pub(crate) fn statx_out(s: &StatxReply) -> StatxOut {
    let (attr_valid, attr_valid_nsec) = split(s.valid);
    StatxOut {
        attr_valid,
        attr_valid_nsec,
        flags: 0,
        spare: [0; 2],
        stat: s.statx,
    }
}

/// `fuse_open_out`.
pub(crate) fn open_out(o: &Opened) -> OpenOut {
    OpenOut {
        fh: o.fh,
        open_flags: o.open_flags,
        backing_id: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_split_into_seconds_and_nanoseconds() {
        let e = Entry {
            nodeid: 3,
            entry_valid: Duration::from_millis(1500),
            attr_valid: Duration::from_nanos(7),
            ..Default::default()
        };
        let out = entry_out(&e);
        assert_eq!((out.entry_valid, out.entry_valid_nsec), (1, 500_000_000));
        assert_eq!((out.attr_valid, out.attr_valid_nsec), (0, 7));
    }
}
