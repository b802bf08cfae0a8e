//! Where a request runs: on its queue's own thread, or on the pool.
//!
//! The rule ([`place`]): a request runs on the queue thread (inline: no thread hop, its
//! completion batched with the others of its drain) unless the queue has a pool and
//! - other requests wait behind it in the same drain (popped with it, or still in the ring):
//!   it goes to the pool so that they need not wait for it, unless it holds the same inode's
//!   lock as another request of its batch ([`Behind::SameInode`]: a small WRITE to the same
//!   file, a name change in the same directory, see [`crate::request::serial_key`]). The
//!   kernel runs those one after the other anyway: given to runners, all but one would sleep
//!   on the lock, and a pool of 64 made 4 KiB writes to one file 10–16 % slower than no pool
//!   at depth 64–256, creating and removing names in one directory 20–30 % at depth 16–256.
//!   The price: where such requests block (writes throttled on a slow disk), the ones behind
//!   them in the batch wait, as without a pool. Turning the rule off above a recent service
//!   time was tried and trapped itself: on the pool the requests wait for each other's lock,
//!   which keeps the service time high, and create-unlink fell to a third. So was handing
//!   them to the pool as one group job per inode (quick while requests were, long above
//!   50 µs): 4 KiB writes kept most of the gain, create-unlink lost all of it (groups of
//!   consecutive batches ran on two runners at once and met on the directory's lock); or
//! - it is [`Weight::Long`] (a flush, a copy): it goes to the pool so that the queue stays
//!   responsive (a SETLKW retry goes there too when a runner is free); or
//! - it is [`Weight::Bulk`] (a READ or WRITE of more than 128 KiB) and either others wait
//!   behind it or the queue's recent bulk requests took [`BULK_INLINE_NS`] or more each (a
//!   disk, not the page cache). With nothing behind it and quick, it runs inline: handing
//!   it to a runner cost a thread wake-up per request, and 1 MiB READs one at a time ran at
//!   0.85 of the best other daemon with a pool against 0.97 without.
//!
//! What the pool does with it is [`crate::pool`]'s business: at most `--thread-pool-size`
//! runners, woken one at a time, and the queue thread takes back the quick requests no runner
//! has started once it has dispatched its batch. A quick request that would only come back
//! that way (no runner alive, and not enough work queued and behind it to wake one) runs
//! inline at once instead ([`crate::pool::Pool::would_come_back`]): the trip through the pool
//! cost 5-6 % of randread4k at depth 16. `--thread-pool-size=0` (and the hiprio queue) has no
//! pool: everything runs inline.

use crate::request::Weight;

/// A bulk request with nothing behind it in its drain runs inline while the queue's recent
/// bulk requests took less than this each ([`crate::QueueStats::bulk_ns`]): what a 1 MiB copy
/// from the page cache takes on a slow host, far below a read from a disk. A request arriving
/// meanwhile waits at most about this long.
pub const BULK_INLINE_NS: u64 = 300_000;

/// Where one request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On the queue thread, now.
    Inline,
    /// Into the queue's pool.
    Pool,
}

/// What waits behind a request in its drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behind {
    /// Nothing: it is the drain's last.
    Nothing,
    /// Other requests, and it shares the inode it locks with one of its batch.
    SameInode,
    /// Other requests.
    Others,
}

/// The rule of the module docs: `has_pool` says whether the queue has a pool, `behind` what
/// waits behind the request in its drain, `bulk_ns` the queue's recent time per bulk request.
pub(crate) fn place(has_pool: bool, weight: Weight, behind: Behind, bulk_ns: u64) -> Placement {
    let to_pool = match weight {
        Weight::Quick => behind == Behind::Others,
        Weight::Bulk => behind != Behind::Nothing || bulk_ns >= BULK_INLINE_NS,
        Weight::Long => true,
    };
    if has_pool && to_pool {
        Placement::Pool
    } else {
        Placement::Inline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_and_quick_runs_inline_the_rest_goes_to_the_pool() {
        use Behind::{Nothing, Others, SameInode};
        use Placement::{Inline, Pool};
        use Weight::{Bulk, Long, Quick};
        let fast = BULK_INLINE_NS - 1;
        assert_eq!(place(true, Quick, Nothing, 0), Inline, "nothing behind it");
        assert_eq!(place(true, Quick, Others, 0), Pool, "others wait behind it");
        assert_eq!(
            place(true, Quick, SameInode, 0),
            Inline,
            "another request of the batch holds the same lock"
        );
        assert_eq!(place(true, Long, Nothing, 0), Pool, "long, even alone");
        assert_eq!(place(true, Long, Others, 0), Pool);
        assert_eq!(place(true, Long, SameInode, 0), Pool);
        assert_eq!(
            place(true, Bulk, Nothing, fast),
            Inline,
            "bulk, alone, and bulk has been quick"
        );
        assert_eq!(
            place(true, Bulk, Nothing, BULK_INLINE_NS),
            Pool,
            "bulk, alone, but bulk has been slow"
        );
        assert_eq!(place(true, Bulk, Others, fast), Pool, "others behind it");
        for weight in [Quick, Bulk, Long] {
            for behind in [Nothing, SameInode, Others] {
                for bulk_ns in [0, u64::MAX] {
                    assert_eq!(
                        place(false, weight, behind, bulk_ns),
                        Inline,
                        "no pool: all inline"
                    );
                }
            }
        }
    }
}
