//! Shared memory: every notification this node accepted, keyed by `(platform, id)`, with its
//! color, bounded by a byte budget.
//!
//! It answers three questions: is this a retry of something we already have (dedupe), what
//! is the state of notification X, and which requests are still waiting for their
//! notifications to reach a color. Gray and blue entries are never dropped: when the budget is
//! spent, green entries are evicted oldest first (they turn red: still in both stores), and if
//! that is not enough, [`SharedMemory::admit`] refuses the whole request and the client is told
//! to retry. Green entries also turn red once they have been green for a TTL.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;
use serde::Serialize;
use sluice_core::{Color, Notification};
use tokio::sync::Notify;

/// The idempotency key.
pub type Key = (String, String);

fn key_of(n: &Notification) -> Key {
    (n.platform.clone(), n.id.clone())
}

struct Entry {
    color: Color,
    record: Arc<Notification>,
    /// Requests waiting for this entry to reach a color.
    waiters: Vec<(Color, Arc<AckWaiter>)>,
}

/// One request waiting for all of its notifications to reach a color.
///
/// It counts the entries it still waits for, plus one guard held by the request itself while
/// it registers, so that entries turning blue during registration cannot wake it early.
pub struct AckWaiter {
    remaining: AtomicUsize,
    done: Notify,
    /// Set when an entry it waited for will never get there (its batch was dead-lettered).
    failure: OnceLock<&'static str>,
}

impl AckWaiter {
    pub fn new() -> Arc<Self> {
        Arc::new(AckWaiter {
            remaining: AtomicUsize::new(1),
            done: Notify::new(),
            failure: OnceLock::new(),
        })
    }

    /// Why an entry the request waited for will never reach its color, if one will not.
    pub fn failure(&self) -> Option<&'static str> {
        self.failure.get().copied()
    }

    fn add(&self) {
        self.remaining.fetch_add(1, Ordering::AcqRel);
    }

    fn release(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            // notify_one keeps a permit when nobody waits yet, so the wake-up is never lost.
            self.done.notify_one();
        }
    }

    /// Drops the registration guard and waits until every registered entry arrived.
    pub async fn wait(&self) {
        self.release();
        self.done.notified().await;
    }
}

/// What became of one admitted notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    Accepted,
    /// Already known; its key and its color when this request saw it.
    Duplicate {
        key: Key,
        color: Color,
    },
}

/// Bytes of the budget held for a request body ([`SharedMemory::hold`]).
pub struct Held {
    memory: Arc<SharedMemory>,
    bytes: usize,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.memory
            .used_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Shared memory had no room for a request.
#[derive(Debug, Clone, Copy)]
pub struct MemoryFull {
    pub needed: usize,
    pub used: usize,
    pub budget: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryStats {
    pub entries: usize,
    pub gray: u64,
    pub blue: u64,
    pub green: u64,
    /// Entries evicted so far (they turned red).
    pub evicted: u64,
    pub used_bytes: usize,
    pub budget_bytes: usize,
}

pub struct SharedMemory {
    entries: DashMap<Key, Entry>,
    /// `(platform, post_id)` → ids of the entries about that post, for post reads.
    by_post: DashMap<Key, HashSet<String>>,
    /// Keys this node's previous incarnations stored just before this one started: a client
    /// whose request a crash left unanswered retries it here, and must get a duplicate.
    recovered: dashmap::DashSet<Key>,
    used_bytes: AtomicUsize,
    budget: usize,
    gray: AtomicU64,
    blue: AtomicU64,
    green: AtomicU64,
    evicted: AtomicU64,
    /// Green entries in the order they turned green: the eviction order.
    green_since: Mutex<VecDeque<(Instant, Key)>>,
}

impl SharedMemory {
    pub fn new(budget: usize) -> Self {
        SharedMemory {
            entries: DashMap::new(),
            by_post: DashMap::new(),
            recovered: dashmap::DashSet::new(),
            used_bytes: AtomicUsize::new(0),
            budget,
            gray: AtomicU64::new(0),
            blue: AtomicU64::new(0),
            green: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            green_since: Mutex::new(VecDeque::new()),
        }
    }

    /// Reserves `needed` bytes, evicting green entries if that makes room.
    fn reserve(&self, needed: usize) -> Result<(), MemoryFull> {
        let try_reserve = || {
            self.used_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                    (used + needed <= self.budget).then_some(used + needed)
                })
                .map(|_| ())
        };
        try_reserve()
            .or_else(|_| {
                self.evict(Duration::MAX, needed);
                try_reserve()
            })
            .map_err(|used| MemoryFull {
                needed,
                used,
                budget: self.budget,
            })
    }

    /// Holds `bytes` of the budget until the returned guard drops: a request body while it is
    /// read and parsed, so that bodies in flight count against the budget as their
    /// notifications will (a thousand concurrent 16 MB bodies cannot take 16 GB).
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Result<Held, MemoryFull> {
        self.reserve(bytes)?;
        Ok(Held {
            memory: Arc::clone(self),
            bytes,
        })
    }

    /// Admits a request's notifications as gray entries, all or none.
    ///
    /// Known keys are duplicates and take no room. With `wait`, the waiter is registered on
    /// every entry of the request (new or duplicate) that has not reached the wanted color, so
    /// a retry of a notification that is still gray waits for it like the first request did.
    /// Returns the outcome of each input and the new records, which the caller hands to the
    /// batcher.
    pub fn admit(
        &self,
        items: Vec<Notification>,
        wait: Option<(Color, &Arc<AckWaiter>)>,
    ) -> Result<(Vec<Admitted>, Vec<Arc<Notification>>), MemoryFull> {
        let sizes: Vec<usize> = items.iter().map(Notification::approx_size).collect();
        let needed: usize = sizes.iter().sum();
        // Reserve the whole request up front; duplicates give their share back below. A
        // compare-and-swap keeps concurrent requests from overshooting the budget together.
        self.reserve(needed)?;

        let mut outcomes = Vec::with_capacity(items.len());
        let mut staged = Vec::with_capacity(items.len());
        let mut unused = 0;
        for (item, size) in items.into_iter().zip(sizes) {
            match self.entries.entry(key_of(&item)) {
                MapEntry::Occupied(mut occupied) => {
                    unused += size;
                    let entry = occupied.get_mut();
                    if let Some((level, waiter)) = wait
                        && entry.color < level
                    {
                        waiter.add();
                        entry.waiters.push((level, waiter.clone()));
                    }
                    outcomes.push(Admitted::Duplicate {
                        key: (item.platform, item.id),
                        color: entry.color,
                    });
                }
                MapEntry::Vacant(vacant) if self.recovered.contains(vacant.key()) => {
                    // Stored by an earlier incarnation of this node: durable (blue) already.
                    unused += size;
                    outcomes.push(Admitted::Duplicate {
                        key: (item.platform, item.id),
                        color: Color::Blue,
                    });
                }
                MapEntry::Vacant(vacant) => {
                    let record = Arc::new(item);
                    if let Some(post_id) = &record.post_id {
                        self.by_post
                            .entry((record.platform.clone(), post_id.clone()))
                            .or_default()
                            .insert(record.id.clone());
                    }
                    let mut waiters = Vec::new();
                    if let Some((level, waiter)) = wait {
                        waiter.add();
                        waiters.push((level, waiter.clone()));
                    }
                    vacant.insert(Entry {
                        color: Color::Gray,
                        record: record.clone(),
                        waiters,
                    });
                    self.gray.fetch_add(1, Ordering::Relaxed);
                    staged.push(record);
                    outcomes.push(Admitted::Accepted);
                }
            }
        }
        self.used_bytes.fetch_sub(unused, Ordering::AcqRel);
        Ok((outcomes, staged))
    }

    /// Turns the batch's entries blue and wakes the requests that waited for them.
    pub fn mark_durable(&self, records: &[Arc<Notification>]) {
        self.advance(records, Color::Blue);
    }

    /// Forgets the entries of a batch the publisher refused for good (it is kept as a dead
    /// letter), so that sending them again stores them; tells their waiters why and wakes them.
    pub fn refuse(&self, records: &[Arc<Notification>], reason: &'static str) {
        for record in records {
            let Some((_, entry)) = self
                .entries
                .remove_if(&key_of(record), |_, e| Arc::ptr_eq(&e.record, record))
            else {
                continue;
            };
            self.counter(entry.color).fetch_sub(1, Ordering::Relaxed);
            self.used_bytes
                .fetch_sub(entry.record.approx_size(), Ordering::AcqRel);
            self.forget_post_link(&entry.record);
            for (_, waiter) in entry.waiters {
                let _ = waiter.failure.set(reason);
                waiter.release();
            }
        }
    }

    /// Turns the batch's entries green (they are in the replica) and wakes the requests that
    /// waited for them. From now on their TTL runs and they may be evicted.
    pub fn mark_replicated(&self, records: &[Arc<Notification>]) {
        let turned = self.advance(records, Color::Green);
        let now = Instant::now();
        let mut order = self.green_since.lock().expect("green_since lock poisoned");
        order.extend(turned.into_iter().map(|key| (now, key)));
    }

    /// Moves entries forward to `color` (never back) and releases the waiters it satisfies.
    /// Returns the keys whose color changed.
    fn advance(&self, records: &[Arc<Notification>], color: Color) -> Vec<Key> {
        let mut turned = Vec::new();
        for record in records {
            let key = key_of(record);
            let Some(mut entry) = self.entries.get_mut(&key) else {
                continue;
            };
            if entry.color < color {
                self.counter(entry.color).fetch_sub(1, Ordering::Relaxed);
                self.counter(color).fetch_add(1, Ordering::Relaxed);
                entry.color = color;
                turned.push(key);
            }
            let reached_color = entry.color;
            entry.waiters.retain(|(level, waiter)| {
                let reached = *level <= reached_color;
                if reached {
                    waiter.release();
                }
                !reached
            });
        }
        turned
    }

    fn counter(&self, color: Color) -> &AtomicU64 {
        match color {
            Color::Gray => &self.gray,
            Color::Blue => &self.blue,
            Color::Green | Color::Red => &self.green,
        }
    }

    /// Evicts green entries, oldest first: every one green for at least `ttl`, and more while
    /// fewer than `needed` bytes of the budget are free. Returns how many turned red.
    pub fn evict(&self, ttl: Duration, needed: usize) -> usize {
        let mut evicted = 0;
        loop {
            let next = {
                let mut order = self.green_since.lock().expect("green_since lock poisoned");
                let free = self.budget - self.used_bytes.load(Ordering::Acquire).min(self.budget);
                match order.front() {
                    Some((since, _)) if since.elapsed() >= ttl || free < needed => {
                        order.pop_front()
                    }
                    _ => None,
                }
            };
            let Some((_, key)) = next else {
                return evicted;
            };
            if let Some((_, entry)) = self.entries.remove_if(&key, |_, e| e.color == Color::Green) {
                self.used_bytes
                    .fetch_sub(entry.record.approx_size(), Ordering::AcqRel);
                self.green.fetch_sub(1, Ordering::Relaxed);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                evicted += 1;
                self.forget_post_link(&entry.record);
            }
        }
    }

    fn forget_post_link(&self, record: &Notification) {
        if let Some(post_id) = &record.post_id {
            let post = (record.platform.clone(), post_id.clone());
            if let Some(mut ids) = self.by_post.get_mut(&post) {
                ids.remove(&record.id);
            }
            self.by_post.remove_if(&post, |_, ids| ids.is_empty());
        }
    }

    /// The record and color of a notification this node holds.
    pub fn get(&self, platform: &str, id: &str) -> Option<(Color, Arc<Notification>)> {
        self.entries
            .get(&(platform.to_string(), id.to_string()))
            .map(|e| (e.color, e.record.clone()))
    }

    /// Remembers keys that earlier incarnations of this node stored (see `recovered`).
    pub fn remember_stored(&self, keys: impl IntoIterator<Item = Key>) -> usize {
        keys.into_iter()
            .map(|key| usize::from(self.recovered.insert(key)))
            .sum()
    }

    /// Forgets the recovered keys once their clients have long stopped retrying.
    pub fn forget_recovered(&self) {
        self.recovered.clear();
    }

    /// Every notification about post `(platform, post_id)` this node holds, with its color.
    pub fn post(&self, platform: &str, post_id: &str) -> Vec<(Color, Arc<Notification>)> {
        let ids = self
            .by_post
            .get(&(platform.to_string(), post_id.to_string()))
            .map(|ids| ids.clone())
            .unwrap_or_default();
        let mut found: Vec<(Color, Arc<Notification>)> = ids
            .into_iter()
            .filter_map(|id| self.get(platform, &id))
            .collect();
        found.sort_by(|a, b| (a.1.occurred_at, &a.1.id).cmp(&(b.1.occurred_at, &b.1.id)));
        found
    }

    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            entries: self.entries.len(),
            gray: self.gray.load(Ordering::Relaxed),
            blue: self.blue.load(Ordering::Relaxed),
            green: self.green.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            used_bytes: self.used_bytes.load(Ordering::Relaxed),
            budget_bytes: self.budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn note(id: &str) -> Notification {
        Notification::from_json(
            &format!(
                r#"{{"platform":"p","id":"{id}","type":"t","occurred_at":"2026-01-01T00:00:00Z"}}"#
            ),
            0,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn retries_are_duplicates_and_wait_like_the_original() {
        let memory = SharedMemory::new(1 << 20);
        let first = AckWaiter::new();
        let (outcomes, staged) = memory
            .admit(vec![note("a"), note("b")], Some((Color::Blue, &first)))
            .unwrap();
        assert_eq!(outcomes, vec![Admitted::Accepted, Admitted::Accepted]);
        assert_eq!(staged.len(), 2);

        let retry = AckWaiter::new();
        let (outcomes, restaged) = memory
            .admit(vec![note("b"), note("b")], Some((Color::Blue, &retry)))
            .unwrap();
        let dup = Admitted::Duplicate {
            key: ("p".to_string(), "b".to_string()),
            color: Color::Gray,
        };
        assert_eq!(outcomes, vec![dup.clone(), dup]);
        assert!(restaged.is_empty());
        assert_eq!(memory.stats().used_bytes, note("a").approx_size() * 2);

        // Nothing is durable yet: neither request may finish.
        let pending = tokio::time::timeout(Duration::from_millis(20), retry.wait()).await;
        assert!(pending.is_err());

        memory.mark_durable(&staged);
        first.wait().await;
        retry.done.notified().await;
        assert_eq!(memory.get("p", "b").unwrap().0, Color::Blue);
        assert_eq!(memory.stats().gray, 0);
        assert_eq!(memory.stats().blue, 2);
    }

    #[tokio::test]
    async fn replicated_waiters_wait_for_green_and_green_entries_expire() {
        let memory = SharedMemory::new(1 << 20);
        let waiter = AckWaiter::new();
        let about_post = |id: &str| Notification {
            post_id: Some("post-g".into()),
            ..note(id)
        };
        let (_, staged) = memory
            .admit(vec![about_post("g")], Some((Color::Green, &waiter)))
            .unwrap();
        memory.admit(vec![about_post("other")], None).unwrap();
        memory.mark_durable(&staged);
        let post: Vec<(Color, String)> = memory
            .post("p", "post-g")
            .into_iter()
            .map(|(color, n)| (color, n.id.clone()))
            .collect();
        assert_eq!(
            post,
            [
                (Color::Blue, "g".to_string()),
                (Color::Gray, "other".to_string())
            ]
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiter.wait())
                .await
                .is_err(),
            "blue is not enough for ack=replicated"
        );
        memory.mark_replicated(&staged);
        waiter.done.notified().await;
        assert_eq!(memory.get("p", "g").unwrap().0, Color::Green);
        assert_eq!(
            memory.evict(Duration::from_secs(60), 0),
            0,
            "not expired yet"
        );
        assert_eq!(memory.evict(Duration::ZERO, 0), 1);
        assert!(memory.get("p", "g").is_none(), "red: gone from memory");
        let left: Vec<String> = memory
            .post("p", "post-g")
            .into_iter()
            .map(|(_, n)| n.id.clone())
            .collect();
        assert_eq!(left, ["other"], "and from the post index");
        let stats = memory.stats();
        assert_eq!((stats.green, stats.evicted), (0, 1));
    }

    #[test]
    fn keys_stored_by_an_earlier_incarnation_are_duplicates() {
        let memory = SharedMemory::new(1 << 20);
        assert_eq!(memory.remember_stored([("p".into(), "old".into())]), 1);
        let (outcomes, staged) = memory.admit(vec![note("old"), note("new")], None).unwrap();
        assert_eq!(
            outcomes,
            [
                Admitted::Duplicate {
                    key: ("p".into(), "old".into()),
                    color: Color::Blue
                },
                Admitted::Accepted
            ]
        );
        assert_eq!(staged.len(), 1);
        memory.forget_recovered();
        let (outcomes, _) = memory.admit(vec![note("old")], None).unwrap();
        assert_eq!(outcomes, [Admitted::Accepted]);
    }

    #[test]
    fn memory_pressure_evicts_green_before_refusing() {
        let one = note("x").approx_size();
        let memory = SharedMemory::new(one * 2);
        let (_, staged) = memory.admit(vec![note("1"), note("2")], None).unwrap();
        memory.mark_durable(&staged[..1]);
        memory.mark_replicated(&staged[..1]);
        // "1" is green, "2" is blue: one entry's room can be made, not two.
        assert!(memory.admit(vec![note("3"), note("4")], None).is_err());
        assert!(
            memory.get("p", "1").is_none(),
            "green gives way under pressure"
        );
        assert!(memory.get("p", "2").is_some(), "blue is never evicted");
        memory.admit(vec![note("3")], None).unwrap();
        assert_eq!(memory.stats().evicted, 1);
    }

    #[test]
    fn a_full_memory_refuses_whole_requests_and_keeps_what_it_has() {
        let one = note("x").approx_size();
        let memory = SharedMemory::new(one * 3);
        memory.admit(vec![note("1"), note("2")], None).unwrap();
        let full = memory.admit(vec![note("3"), note("4")], None).unwrap_err();
        assert_eq!(full.needed, one * 2);
        assert!(memory.get("p", "3").is_none(), "all or none");
        assert!(memory.get("p", "1").is_some());
        // A duplicate costs nothing once admitted, so it fits when reserved space allows.
        memory.admit(vec![note("1")], None).unwrap();
        assert_eq!(memory.stats().used_bytes, one * 2);
    }

    #[tokio::test]
    async fn a_refused_batch_is_forgotten_and_its_waiters_are_told() {
        let memory = SharedMemory::new(1 << 20);
        let first = AckWaiter::new();
        let about_post = |id: &str| Notification {
            post_id: Some("post-r".into()),
            ..note(id)
        };
        let (_, staged) = memory
            .admit(
                vec![about_post("a"), note("b")],
                Some((Color::Blue, &first)),
            )
            .unwrap();
        let retry = AckWaiter::new();
        memory
            .admit(vec![note("b")], Some((Color::Blue, &retry)))
            .unwrap();
        memory.refuse(&staged, "refused");
        first.wait().await;
        retry.wait().await;
        assert_eq!(first.failure(), Some("refused"));
        assert_eq!(retry.failure(), Some("refused"));
        assert!(memory.get("p", "a").is_none() && memory.post("p", "post-r").is_empty());
        let stats = memory.stats();
        assert_eq!((stats.entries, stats.gray, stats.used_bytes), (0, 0, 0));
        // Sent again, they are new notifications, and a waiter that saw no refusal has none.
        let again = AckWaiter::new();
        let (outcomes, staged) = memory
            .admit(vec![note("a")], Some((Color::Blue, &again)))
            .unwrap();
        assert_eq!(outcomes, vec![Admitted::Accepted]);
        memory.mark_durable(&staged);
        again.wait().await;
        assert_eq!(again.failure(), None);
    }
}
