//! Where a request runs: on its queue's own thread, or on the pool.
//!
//! The rule ([`place`]): a request runs on the queue thread (inline: no thread hop, its
//! completion batched with the others of its drain) unless the queue has a pool and
//! - other requests wait behind it in the same drain (popped with it, or still in the ring):
//!   it goes to the pool so that they need not wait for it. A request that holds the same
//!   inode's lock as another request of its batch ([`Behind::SameInode`]: a small WRITE to the
//!   same file, a name change in the same directory, see [`crate::request::serial_key`]) goes
//!   there in a group with the others ([`Placement::Group`]): one job, whose requests run one
//!   after the other on one thread. The kernel runs them one after the other anyway: given to
//!   runners one by one, all but one slept on the lock, and a pool of 64 made 4 KiB writes to
//!   one file 10–16 % slower than no pool at depth 64–256, creating and removing names in one
//!   directory 20–30 % at depth 16–256. A group is queued as quick while the queue's requests
//!   are (the queue thread takes it back when no runner is on its way, see [`crate::pool`]),
//!   as long once they block (a runner runs it and the queue thread stays free for the
//!   others). Unlike singles on the pool, a group does not wait on its own members' locks, so
//!   its time per request stays honest (a switch that sent the requests to the pool one by one
//!   above 50 µs trapped itself: the lock waits kept the time high); or
//! - it is [`Weight::Long`] (a flush, a large READ or WRITE, a copy): it goes to the pool so
//!   that the queue stays responsive (a SETLKW retry goes there too when a runner is free).
//!
//! What the pool does with it is [`crate::pool`]'s business: at most `--thread-pool-size`
//! runners, woken one at a time, and the queue thread takes back the quick requests no runner
//! has started once it has dispatched its batch. `--thread-pool-size=0` (and the hiprio queue)
//! has no pool: everything runs inline.

use crate::pool::HANDOFF_NS;
use crate::request::Weight;

/// Where one request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On the queue thread, now.
    Inline,
    /// Into the queue's pool.
    Pool,
    /// Into the queue's pool, in one job with the batch's other requests for the same inode.
    Group,
}

/// What else is in a request's drain, as [`place`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behind {
    /// Nothing: it is the drain's last.
    Nothing,
    /// Requests for the inode it locks, of its batch (before or after it).
    SameInode,
    /// Other requests.
    Others,
}

/// The rule of the module docs: `has_pool` says whether the queue has a pool, `behind` what
/// waits behind the request in its drain.
pub(crate) fn place(has_pool: bool, weight: Weight, behind: Behind) -> Placement {
    match (has_pool, weight, behind) {
        (false, _, _) | (true, Weight::Quick, Behind::Nothing) => Placement::Inline,
        (true, Weight::Quick, Behind::SameInode) => Placement::Group,
        (true, Weight::Long, _) | (true, Weight::Quick, Behind::Others) => Placement::Pool,
    }
}

/// How a group of requests for one inode is queued on the pool: as long once the queue's
/// recent time per request (`service_ns`) reaches [`HANDOFF_NS`] (its requests block: a
/// runner takes it, the queue thread stays free), as quick before (the queue thread takes it
/// back unless a runner is on its way: no thread hop for requests of microseconds).
pub(crate) fn group_weight(service_ns: u64) -> Weight {
    if service_ns >= HANDOFF_NS {
        Weight::Long
    } else {
        Weight::Quick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_and_quick_runs_inline_the_rest_goes_to_the_pool() {
        use Behind::{Nothing, Others, SameInode};
        use Placement::{Group, Inline, Pool};
        use Weight::{Long, Quick};
        assert_eq!(place(true, Quick, Nothing), Inline, "nothing behind it");
        assert_eq!(place(true, Quick, Others), Pool, "others wait behind it");
        assert_eq!(
            place(true, Quick, SameInode),
            Group,
            "another request of the batch holds the same lock"
        );
        assert_eq!(place(true, Long, Nothing), Pool, "long, even alone");
        assert_eq!(place(true, Long, Others), Pool);
        assert_eq!(place(true, Long, SameInode), Pool);
        for weight in [Quick, Long] {
            for behind in [Nothing, SameInode, Others] {
                assert_eq!(place(false, weight, behind), Inline, "no pool: all inline");
            }
        }
    }

    #[test]
    fn a_group_is_long_once_requests_block() {
        assert_eq!(group_weight(0), Weight::Quick);
        assert_eq!(group_weight(HANDOFF_NS - 1), Weight::Quick);
        assert_eq!(group_weight(HANDOFF_NS), Weight::Long);
    }
}
