//! What readiness reads of the write path's progress: whether the batcher is stuck on a batch,
//! and how long durable batches have waited for the replica. The batcher and the green tracker
//! write it; `/readyz` and `/metrics` read it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sluice_core::notification::now_micros;

#[derive(Debug, Default)]
pub struct WriteHealth {
    /// When the batch now being appended was first tried (µs since the epoch); 0 when none.
    in_flight_since: AtomicI64,
    /// When the oldest durable batch not yet in the replica became durable; 0 when none.
    oldest_unreplicated: AtomicI64,
}

impl WriteHealth {
    pub fn batch_started(&self) {
        self.in_flight_since.store(now_micros(), Ordering::Relaxed);
    }

    pub fn batch_done(&self) {
        self.in_flight_since.store(0, Ordering::Relaxed);
    }

    /// How long the batch now being appended has been trying; zero when none is.
    pub fn in_flight(&self) -> Duration {
        age(self.in_flight_since.load(Ordering::Relaxed))
    }

    /// Sets when the oldest durable batch still waiting for the replica became durable.
    pub fn set_oldest_unreplicated(&self, durable_at_micros: Option<i64>) {
        self.oldest_unreplicated
            .store(durable_at_micros.unwrap_or(0), Ordering::Relaxed);
    }

    /// How long the oldest durable batch has waited for the replica; zero when none waits.
    pub fn replication_lag(&self) -> Duration {
        age(self.oldest_unreplicated.load(Ordering::Relaxed))
    }
}

fn age(since_micros: i64) -> Duration {
    if since_micros == 0 {
        return Duration::ZERO;
    }
    Duration::from_micros((now_micros() - since_micros).max(0) as u64)
}
