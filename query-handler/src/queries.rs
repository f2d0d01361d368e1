//! The handler's memory of recent queries, for `GetQuery`: each one's state (yellow while it
//! waits for a slot or runs; orange once answered and cached), and where its result is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use dashmap::DashMap;

use crate::cache::CacheKey;

/// How many queries the log remembers; the oldest are forgotten first.
const REMEMBERED: usize = 10_000;

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

#[derive(Default)]
pub struct QueryLog {
    records: DashMap<String, QueryRecord>,
    next: AtomicU64,
}

impl QueryLog {
    /// Records a new query as queued and returns its id.
    pub fn start(&self, sql: &str) -> String {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.records.insert(
            id.clone(),
            QueryRecord {
                sql: sql.to_string(),
                state: QueryState::Yellow,
                seq,
                started: Instant::now(),
            },
        );
        if self.records.len() > REMEMBERED {
            self.forget_oldest();
        }
        id
    }

    pub fn set(&self, id: &str, state: QueryState) {
        if let Some(mut record) = self.records.get_mut(id) {
            record.state = state;
        }
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
        let excess = self.records.len().saturating_sub(REMEMBERED * 9 / 10);
        for (_, id) in seqs.into_iter().take(excess) {
            self.records.remove(&id);
        }
    }
}
