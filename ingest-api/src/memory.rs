//! Shared memory: every notification this node accepted, keyed by `(platform, id)`, with its
//! color, bounded by a byte budget.
//!
//! It answers three questions: is this a retry of something we already have (dedupe), what
//! is the state of notification X, and which requests are still waiting for their
//! notifications to reach a color. Gray and blue entries are never dropped: when the budget is
//! spent, [`SharedMemory::admit`] refuses the whole request and the client is told to retry.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

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
}

impl AckWaiter {
    pub fn new() -> Arc<Self> {
        Arc::new(AckWaiter {
            remaining: AtomicUsize::new(1),
            done: Notify::new(),
        })
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
    pub used_bytes: usize,
    pub budget_bytes: usize,
}

pub struct SharedMemory {
    entries: DashMap<Key, Entry>,
    used_bytes: AtomicUsize,
    budget: usize,
    gray: AtomicU64,
    blue: AtomicU64,
}

impl SharedMemory {
    pub fn new(budget: usize) -> Self {
        SharedMemory {
            entries: DashMap::new(),
            used_bytes: AtomicUsize::new(0),
            budget,
            gray: AtomicU64::new(0),
            blue: AtomicU64::new(0),
        }
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
        self.used_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + needed <= self.budget).then_some(used + needed)
            })
            .map_err(|used| MemoryFull {
                needed,
                used,
                budget: self.budget,
            })?;

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
                MapEntry::Vacant(vacant) => {
                    let record = Arc::new(item);
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
        for record in records {
            let Some(mut entry) = self.entries.get_mut(&key_of(record)) else {
                continue;
            };
            if entry.color == Color::Gray {
                entry.color = Color::Blue;
                self.gray.fetch_sub(1, Ordering::Relaxed);
                self.blue.fetch_add(1, Ordering::Relaxed);
            }
            let color = entry.color;
            entry.waiters.retain(|(level, waiter)| {
                let reached = *level <= color;
                if reached {
                    waiter.release();
                }
                !reached
            });
        }
    }

    /// The record and color of a notification this node holds.
    pub fn get(&self, platform: &str, id: &str) -> Option<(Color, Arc<Notification>)> {
        self.entries
            .get(&(platform.to_string(), id.to_string()))
            .map(|e| (e.color, e.record.clone()))
    }

    pub fn stats(&self) -> MemoryStats {
        MemoryStats {
            entries: self.entries.len(),
            gray: self.gray.load(Ordering::Relaxed),
            blue: self.blue.load(Ordering::Relaxed),
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
}
