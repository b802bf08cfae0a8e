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
//! - it is [`Weight::Long`] (a flush, a large READ or WRITE, a copy): it goes to the pool so
//!   that the queue stays responsive (a SETLKW retry goes there too when a runner is free).
//!
//! What the pool does with it is [`crate::pool`]'s business: at most `--thread-pool-size`
//! runners, woken one at a time, and the queue thread takes back the quick requests no runner
//! has started once it has dispatched its batch. `--thread-pool-size=0` (and the hiprio queue)
//! has no pool: everything runs inline.

use crate::request::Weight;

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
/// waits behind the request in its drain.
pub(crate) fn place(has_pool: bool, weight: Weight, behind: Behind) -> Placement {
    if has_pool && (behind == Behind::Others || weight == Weight::Long) {
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
        use Weight::{Long, Quick};
        assert_eq!(place(true, Quick, Nothing), Inline, "nothing behind it");
        assert_eq!(place(true, Quick, Others), Pool, "others wait behind it");
        assert_eq!(
            place(true, Quick, SameInode),
            Inline,
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
}
