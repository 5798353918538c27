//! Which keys may be in the cache: a counting Bloom filter over their hashes, in front of
//! moka.
//!
//! A lookup that misses in a large moka cache walks a run of open-addressed buckets, two
//! dependent memory loads each (the bucket, then its key), until it meets an empty one: a
//! microsecond or more per miss once the cache holds a few hundred thousand entries, on
//! every request that is not a hit. This filter answers "certainly absent" from one cache
//! line.
//!
//! Inserts count a key in, the removal listener counts it out (moka reports every removal:
//! size, expiry, invalidation, replacement). A counter that reaches its maximum stays there,
//! which only adds false "maybe"s. A wrong "absent" could only come from a lost count and
//! would cost a hit, never a stale answer: the request goes to the server.

use std::alloc::{self, Layout};
use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};

/// Counters per entry the filter is sized for: about 3% false "maybe" at that many entries.
const COUNTERS_PER_ENTRY: usize = 8;
/// Counters a key sets, all in one block.
const PROBES: usize = 4;
/// At most 64 MiB of counters, however large the cache.
const MAX_BLOCKS: usize = 1 << 20;
const STUCK: u8 = u8::MAX;

/// One cache line of counters.
#[repr(align(64))]
struct Block([AtomicU8; 64]);

pub(super) struct Presence {
    blocks: Box<[Block]>,
    /// `blocks.len() - 1`; the length is a power of two.
    mask: usize,
}

impl Presence {
    /// A filter for up to `entries` keys at about 3% false "maybe".
    pub fn new(entries: usize) -> Presence {
        let blocks = (entries.max(1) * COUNTERS_PER_ENTRY)
            .div_ceil(64)
            .next_power_of_two()
            .min(MAX_BLOCKS);
        // Zeroed memory straight from the allocator, so a page of counters takes memory
        // only once a key lands in it.
        let layout = Layout::array::<Block>(blocks).expect("at most MAX_BLOCKS blocks");
        // SAFETY: the layout is not empty (one block at least); all zeros is a valid block
        // (atomic bytes at 0); the box frees with the layout it was allocated with.
        let blocks = unsafe {
            let first = alloc::alloc_zeroed(layout).cast::<Block>();
            if first.is_null() {
                alloc::handle_alloc_error(layout);
            }
            Box::from_raw(ptr::slice_from_raw_parts_mut(first, blocks))
        };
        Presence {
            mask: blocks.len() - 1,
            blocks,
        }
    }

    /// The counters of `hash`: the block from its high half, one counter per 6 low bits.
    /// (The hash is keyed per process, as the key's; moka rehashes it for its buckets.)
    fn counters(&self, hash: u64) -> impl Iterator<Item = &AtomicU8> {
        let block = &self.blocks[(hash >> 32) as usize & self.mask];
        (0..PROBES).map(move |i| &block.0[(hash >> (6 * i)) as usize & 63])
    }

    pub fn add(&self, hash: u64) {
        for counter in self.counters(hash) {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n != STUCK).then(|| n + 1)
            });
        }
    }

    pub fn remove(&self, hash: u64) {
        for counter in self.counters(hash) {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n != STUCK && n != 0).then(|| n - 1)
            });
        }
    }

    /// False: no entry with this hash is in the cache (nor on its way in).
    pub fn may_contain(&self, hash: u64) -> bool {
        self.counters(hash)
            .all(|counter| counter.load(Ordering::Relaxed) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spread-out hashes, as the keyed key hashes are.
    fn hashes(range: std::ops::Range<u64>) -> impl Iterator<Item = u64> {
        range.map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ 0x5851_F42D)
    }

    #[test]
    fn counts_keys_in_and_out() {
        let presence = Presence::new(1000);
        for h in hashes(0..1000) {
            presence.add(h);
        }
        assert!(hashes(0..1000).all(|h| presence.may_contain(h)));
        let strangers = hashes(1000..11_000)
            .filter(|&h| presence.may_contain(h))
            .count();
        assert!(
            strangers < 600,
            "{strangers} of 10000 absent keys said maybe"
        );

        // Removing half keeps the other half: shared counters were counted twice.
        for h in hashes(0..500) {
            presence.remove(h);
        }
        assert!(hashes(500..1000).all(|h| presence.may_contain(h)));
        for h in hashes(500..1000) {
            presence.remove(h);
        }
        assert!(hashes(0..11_000).all(|h| !presence.may_contain(h)));
    }

    #[test]
    fn a_key_added_twice_stays_until_removed_twice() {
        // A replaced entry: the new value counts in before the old one counts out.
        let presence = Presence::new(10);
        presence.add(42);
        presence.add(42);
        presence.remove(42);
        assert!(presence.may_contain(42));
        presence.remove(42);
        assert!(!presence.may_contain(42));
    }

    #[test]
    fn a_full_counter_sticks_rather_than_wrap() {
        let presence = Presence::new(1);
        for _ in 0..300 {
            presence.add(7);
        }
        for _ in 0..300 {
            presence.remove(7);
        }
        // Its count was lost at the top: it stays a "maybe", never a wrong "absent".
        assert!(presence.may_contain(7));
    }
}
