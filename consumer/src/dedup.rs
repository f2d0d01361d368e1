//! Exactly once across nodes: the keys of the notifications the replica holds, by day.
//!
//! A notification is one `(platform, id)`. Its copies reach the replica through different
//! producers when a client retries on another ingest node, or re-sends after its entry turned
//! red: the master holds each copy (it is the raw log of what every node accepted), and the one
//! committer keeps the first. A retry carries the same `occurred_at`, so the copies fall in the
//! same `day` partition, and the index is kept per day.
//!
//! A key is 128 bits of SipHash-1-3 of the platform and id, keyed at random per process: at
//! 10 million keys in one day the chance that two distinct notifications share a key is about
//! 10⁻²⁵, and a client cannot craft a key that collides with another platform's notification
//! (it does not know the key). The index is rebuilt from the replica whenever it is loaded, so
//! the random key costs nothing across restarts.
//!
//! Memory: a day's keys are a `HashSet<u128>`, 16 bytes per key plus one control byte, in a
//! table whose bucket count is a power of two at most 7/8 full: between 19.4 and 38.9 bytes per
//! key, 28.5 at 10 million keys (`heap_bytes`; measured in bench/README.md).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

use siphasher::sip128::{Hasher128, SipHasher13};

/// A notification's key in the index.
pub type Key = u128;

/// A day partition: days since 1970-01-01, as the replica's `day` column stores it.
pub type Day = i32;

/// The days the index holds, each with the keys of every notification of that day.
#[derive(Debug)]
pub struct SeenKeys {
    hash_keys: (u64, u64),
    days: BTreeMap<Day, DayKeys>,
}

/// A key is already a uniform hash: the table uses its low 64 bits as they are.
#[derive(Default)]
struct LowBits(u64);

impl Hasher for LowBits {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

type DayKeys = HashSet<Key, BuildHasherDefault<LowBits>>;

impl Default for SeenKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl SeenKeys {
    pub fn new() -> Self {
        // Two words of a randomly keyed SipHash: random without another dependency.
        let random = RandomState::new();
        SeenKeys {
            hash_keys: (random.hash_one(1u8), random.hash_one(2u8)),
            days: BTreeMap::new(),
        }
    }

    /// The key of `(platform, id)`. The platform's length goes first, so that `("ab", "c")`
    /// and `("a", "bc")` are different notifications.
    pub fn key(&self, platform: &str, id: &str) -> Key {
        let mut hasher = SipHasher13::new_with_keys(self.hash_keys.0, self.hash_keys.1);
        hasher.write_usize(platform.len());
        hasher.write(platform.as_bytes());
        hasher.write(id.as_bytes());
        hasher.finish128().as_u128()
    }

    /// Whether the keys of `day` are in the index.
    pub fn holds_day(&self, day: Day) -> bool {
        self.days.contains_key(&day)
    }

    /// Makes room for the keys of `day` (none yet): the day is held from now on.
    pub fn hold_day(&mut self, day: Day) {
        self.days.entry(day).or_default();
    }

    /// Adds `key` to a held `day`. False when the day held it already: a second copy.
    ///
    /// # Panics
    /// When `day` is not held; the caller loads it first.
    pub fn insert(&mut self, day: Day, key: Key) -> bool {
        self.days
            .get_mut(&day)
            .expect("the day's keys are loaded before its rows are checked")
            .insert(key)
    }

    /// Forgets every day: the next look-up of a day loads it again.
    pub fn clear(&mut self) {
        self.days.clear();
    }

    /// Forgets the days before `first`, except those in `in_use` (a backfill of an old day
    /// keeps it while its rows keep coming).
    pub fn forget_days_before(&mut self, first: Day, in_use: &BTreeSet<Day>) {
        self.days
            .retain(|day, _| *day >= first || in_use.contains(day));
    }

    /// Keys held, over every day.
    pub fn len(&self) -> usize {
        self.days.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn days(&self) -> usize {
        self.days.len()
    }

    /// The heap the keys take: each day's table of buckets (a key and a control byte each, and
    /// one group of control bytes more), as the standard library's hash table lays them out.
    pub fn heap_bytes(&self) -> usize {
        const GROUP: usize = 16;
        self.days
            .values()
            .map(|keys| {
                let capacity = keys.capacity();
                if capacity == 0 {
                    return 0;
                }
                let buckets = if capacity < 8 {
                    (capacity + 1).next_power_of_two()
                } else {
                    (capacity * 8 / 7).next_power_of_two()
                };
                buckets * (size_of::<Key>() + 1) + GROUP
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_platform_and_the_id_not_their_concatenation() {
        let seen = SeenKeys::new();
        assert_eq!(seen.key("x", "1"), seen.key("x", "1"));
        assert_ne!(seen.key("ab", "c"), seen.key("a", "bc"));
        assert_ne!(seen.key("x", "1"), seen.key("y", "1"));
        // Another process draws other hash keys.
        assert_ne!(SeenKeys::new().key("x", "1"), seen.key("x", "1"));
    }

    #[test]
    fn the_second_copy_of_a_key_is_seen_within_its_day_only() {
        let mut seen = SeenKeys::new();
        let key = seen.key("x", "1");
        seen.hold_day(10);
        seen.hold_day(11);
        assert!(seen.insert(10, key));
        assert!(!seen.insert(10, key));
        assert!(seen.insert(11, key));
        assert_eq!(seen.len(), 2);
        seen.forget_days_before(12, &BTreeSet::from([11]));
        assert!(!seen.holds_day(10));
        assert!(seen.holds_day(11));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn heap_bytes_follow_the_table_layout() {
        let mut seen = SeenKeys::new();
        seen.hold_day(0);
        for i in 0..100_000u32 {
            let key = seen.key("x", &i.to_string());
            assert!(seen.insert(0, key));
        }
        let per_key = seen.heap_bytes() as f64 / seen.len() as f64;
        // 100,000 keys fill 131,072 buckets (7/8 of which is 114,688) of 17 bytes each.
        assert!((22.0..23.0).contains(&per_key), "{per_key} bytes per key");
    }
}
