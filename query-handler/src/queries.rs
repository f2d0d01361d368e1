//! The handler's memory of recent queries, for `GetQuery`: each one's state (yellow while it
//! waits for a slot or runs; orange once answered and cached), and where its result is.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use dashmap::DashMap;

use crate::cache::CacheKey;

/// How many queries the log remembers; the oldest are forgotten first.
const REMEMBERED: usize = 10_000;
/// How many bytes of query text (as sent, and normalized in an answer's cache key) the log
/// keeps at most: a query may be as long as the largest query body, and ten thousand of
/// those would not fit in any machine. Past it the oldest are forgotten first too.
const REMEMBERED_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
pub enum QueryState {
    /// Waiting for a slot, or running.
    Yellow,
    /// Answered. The result lives in the cache under `key` while it is orange.
    Answered {
        key: CacheKey,
        rows: u64,
        elapsed_micros: u64,
        cached: bool,
        kept: bool,
    },
    Failed {
        code: tonic::Code,
        message: String,
    },
}

#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub sql: String,
    pub state: QueryState,
    seq: u64,
    pub started: Instant,
}

impl QueryRecord {
    /// The bytes of text the record holds.
    fn size(&self) -> usize {
        let key = match &self.state {
            QueryState::Answered { key, .. } => key.0.len(),
            QueryState::Failed { message, .. } => message.len(),
            QueryState::Yellow => 0,
        };
        self.sql.len() + key
    }
}

#[derive(Default)]
pub struct QueryLog {
    records: DashMap<String, QueryRecord>,
    next: AtomicU64,
    /// The sum of the records' sizes.
    bytes: AtomicUsize,
}

impl QueryLog {
    /// Records a new query as queued and returns its id.
    pub fn start(&self, sql: &str) -> String {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let record = QueryRecord {
            sql: sql.to_string(),
            state: QueryState::Yellow,
            seq,
            started: Instant::now(),
        };
        self.bytes.fetch_add(record.size(), Ordering::AcqRel);
        self.records.insert(id.clone(), record);
        if self.records.len() > REMEMBERED || self.bytes() > REMEMBERED_BYTES {
            self.forget_oldest();
        }
        id
    }

    pub fn set(&self, id: &str, state: QueryState) {
        if let Some(mut record) = self.records.get_mut(id) {
            let before = record.size();
            record.state = state;
            let after = record.size();
            self.bytes.fetch_add(after, Ordering::AcqRel);
            self.bytes.fetch_sub(before, Ordering::AcqRel);
        }
        if self.bytes() > REMEMBERED_BYTES {
            self.forget_oldest();
        }
    }

    /// The bytes of text the log holds.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    pub fn get(&self, id: &str) -> Option<QueryRecord> {
        self.records.get(id).map(|r| r.clone())
    }

    fn forget_oldest(&self) {
        let mut seqs: Vec<(u64, String)> = self
            .records
            .iter()
            .map(|r| (r.seq, r.key().clone()))
            .collect();
        seqs.sort_unstable();
        // Down to nine tenths of either bound, so that the next queries do not sort again.
        let excess = self.records.len().saturating_sub(REMEMBERED * 9 / 10);
        for (i, (_, id)) in seqs.into_iter().enumerate() {
            if i >= excess && self.bytes() <= REMEMBERED_BYTES * 9 / 10 {
                break;
            }
            if let Some((_, record)) = self.records.remove(&id) {
                self.bytes.fetch_sub(record.size(), Ordering::AcqRel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_queries_are_forgotten_before_they_outgrow_the_bound() {
        let log = QueryLog::default();
        let long = "x".repeat(1 << 20);
        let mut ids = Vec::new();
        for i in 0..200 {
            let id = log.start(&long);
            log.set(
                &id,
                QueryState::Answered {
                    key: (format!("{i}{long}"), 1),
                    rows: 0,
                    elapsed_micros: 0,
                    cached: true,
                    kept: true,
                },
            );
            ids.push(id);
            assert!(log.bytes() <= REMEMBERED_BYTES, "{}", log.bytes());
        }
        let kept: usize = log.records.iter().map(|r| r.size()).sum();
        assert_eq!(kept, log.bytes());
        assert!(log.get(&ids[0]).is_none(), "the oldest went first");
        assert!(log.get(ids.last().unwrap()).is_some());
    }
}
