//! The orange cache: answered queries, keyed by normalized SQL and the replica version they were
//! computed on.
//!
//! Because the version is part of the key, a query can never be answered from a result of an
//! older replica: once the replica moves on, the old entries are unreachable and are dropped at
//! the next refresh. A TTL bounds how long an entry lives and a byte budget how much they hold
//! together; when an insert goes over the budget, the oldest entries go first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::engine::Answer;

/// Normalized SQL and the replica version.
pub type CacheKey = (String, u64);

struct Cached {
    answer: Arc<Answer>,
    inserted: Instant,
    /// What the entry holds: its answer and its key (the normalized SQL, up to the largest
    /// query body).
    size: usize,
}

/// The bytes an entry of `key` and `answer` holds.
fn entry_size(key: &CacheKey, answer: &Answer) -> usize {
    answer.size_bytes() + key.0.len()
}

pub struct ResultCache {
    entries: DashMap<CacheKey, Cached>,
    used_bytes: AtomicUsize,
    /// Answers of older versions are refused: no query can reach them any more.
    oldest_version: AtomicU64,
    budget: usize,
    ttl: Duration,
}

impl ResultCache {
    pub fn new(budget: usize, ttl: Duration) -> Self {
        ResultCache {
            entries: DashMap::new(),
            used_bytes: AtomicUsize::new(0),
            oldest_version: AtomicU64::new(0),
            budget,
            ttl,
        }
    }

    /// The cached answer for `key`, unless it is missing or older than the TTL.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Answer>> {
        let hit = self
            .entries
            .get(key)
            .map(|c| (c.inserted, c.answer.clone()))?;
        if hit.0.elapsed() < self.ttl {
            return Some(hit.1);
        }
        self.remove_if(key, |c| c.inserted == hit.0);
        None
    }

    /// Caches `answer` under `key`. An answer larger than a quarter of the budget is not kept:
    /// it would push out many small ones, and analysts repeat small answers.
    pub fn insert(&self, key: CacheKey, answer: Arc<Answer>) -> bool {
        let size = entry_size(&key, &answer);
        if size > self.budget / 4 || key.1 < self.oldest_version.load(Ordering::Acquire) {
            return false;
        }
        // Count the bytes before the entry is visible, so that a concurrent removal of it never
        // subtracts what was not added yet.
        let used = self.used_bytes.fetch_add(size, Ordering::AcqRel) + size;
        let inserted = Instant::now();
        let entry = Cached {
            answer,
            inserted,
            size,
        };
        if let Some(old) = self.entries.insert(key, entry) {
            self.used_bytes.fetch_sub(old.size, Ordering::AcqRel);
        }
        if used > self.budget {
            self.shrink_to(self.budget);
        }
        true
    }

    /// Drops every entry computed on a version older than `version`: no query can reach them.
    pub fn retire_before(&self, version: u64) {
        self.oldest_version.fetch_max(version, Ordering::AcqRel);
        let old: Vec<CacheKey> = self
            .entries
            .iter()
            .filter(|e| e.key().1 < version)
            .map(|e| e.key().clone())
            .collect();
        for key in old {
            self.remove_if(&key, |_| true);
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes.load(Ordering::Acquire)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Evicts expired entries, then the oldest, until at most `target` bytes are held.
    fn shrink_to(&self, target: usize) {
        let mut by_age: Vec<(Instant, CacheKey)> = self
            .entries
            .iter()
            .map(|e| (e.inserted, e.key().clone()))
            .collect();
        by_age.sort();
        for (inserted, key) in by_age {
            if self.used_bytes() <= target && inserted.elapsed() < self.ttl {
                break;
            }
            self.remove_if(&key, |c| c.inserted == inserted);
        }
    }

    fn remove_if(&self, key: &CacheKey, predicate: impl FnOnce(&Cached) -> bool) {
        if let Some((_, removed)) = self.entries.remove_if(key, |_, c| predicate(c)) {
            self.used_bytes.fetch_sub(removed.size, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(bytes: usize) -> Arc<Answer> {
        Arc::new(Answer::for_tests(vec![0; bytes]))
    }

    #[test]
    fn the_budget_pushes_out_the_oldest_entries() {
        // Room for five entries, not six.
        let budget = answer(150).size_bytes() * 6 - 1;
        let cache = ResultCache::new(budget, Duration::from_secs(60));
        for i in 0..5 {
            assert!(cache.insert((format!("q{i}"), 1), answer(150)));
        }
        assert!(cache.insert(("q5".into(), 1), answer(150)));
        assert!(cache.used_bytes() <= budget);
        assert!(
            cache.get(&("q0".into(), 1)).is_none(),
            "the oldest went first"
        );
        assert!(cache.get(&("q5".into(), 1)).is_some());
        assert!(
            !cache.insert(("big".into(), 1), answer(budget / 4)),
            "over a quarter"
        );
    }

    #[test]
    fn expired_and_retired_entries_are_gone() {
        let cache = ResultCache::new(1_000, Duration::from_millis(20));
        cache.insert(("q".into(), 1), answer(10));
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(&("q".into(), 1)).is_none());
        assert_eq!(cache.used_bytes(), 0);

        let cache = ResultCache::new(1_000, Duration::from_secs(60));
        cache.insert(("q".into(), 1), answer(10));
        cache.insert(("q".into(), 2), answer(10));
        cache.retire_before(2);
        assert!(cache.get(&("q".into(), 1)).is_none());
        assert!(
            !cache.insert(("late".into(), 1), answer(10)),
            "an old version's answer"
        );
        assert!(cache.get(&("q".into(), 2)).is_some());
        assert_eq!(cache.used_bytes(), answer(10).size_bytes() + "q".len());
    }

    #[test]
    fn a_long_query_text_counts_against_the_budget() {
        let cache = ResultCache::new(1 << 20, Duration::from_secs(60));
        let long = "x".repeat(300_000);
        assert!(
            !cache.insert((long.clone(), 1), answer(10)),
            "a key over a quarter of the budget"
        );
        for i in 0..10 {
            cache.insert((format!("{i}{}", &long[..200_000]), 1), answer(10));
        }
        assert!(cache.used_bytes() <= 1 << 20, "{}", cache.used_bytes());
        assert!(cache.len() <= 5);
    }
}
