//! Green and red: learns which of this producer's batches are in the replica and turns their
//! entries green, and lets green entries expire to red.
//!
//! Batches of one producer are replicated in sequence order, so one number says it all: the
//! consumer's `Progress` for this producer is the highest replicated batch sequence, and every
//! durable batch up to it is green. The tracker asks for it every `poll` while durable batches
//! wait, which bounds the extra freshness delay to one poll.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use sluice_core::Notification;
use sluice_proto::Channel;
use sluice_proto::v1::ProgressRequest;
use sluice_proto::v1::consumer_client::ConsumerClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::health::WriteHealth;
use crate::memory::SharedMemory;

/// A batch the master store confirmed, waiting to be replicated.
pub struct DurableBatch {
    pub sequence: u64,
    pub records: Vec<Arc<Notification>>,
    /// When the publisher confirmed it (blue).
    pub durable_at: Instant,
}

/// Freshness as this node observes it, per notification: from the durable ack to green (what
/// a client that waited for `ack=durable` sees), and from arrival to green (the whole path,
/// which also bounds the first from above when acks are delayed).
pub struct Freshness {
    durable_to_green: Mutex<Histogram<u64>>,
    received_to_green: Mutex<Histogram<u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FreshnessSummary {
    pub notifications: u64,
    pub durable_to_green: Percentiles,
    pub received_to_green: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        // Fixed bounds (1 ms to 1 hour): a saturating record clamps to the highest trackable
        // value, which an auto-resizing histogram would set at its first, small, value.
        let histogram = || {
            Mutex::new(Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds"))
        };
        Freshness {
            durable_to_green: histogram(),
            received_to_green: histogram(),
        }
    }
}

impl Freshness {
    pub fn record(&self, batch: &DurableBatch) {
        let rows = batch.records.len() as u64;
        let durable_ms = batch.durable_at.elapsed().as_millis() as u64;
        lock(&self.durable_to_green).saturating_record_n(durable_ms, rows);
        let now = sluice_core::notification::now_micros();
        let mut received = lock(&self.received_to_green);
        for record in &batch.records {
            let ms = (now - record.received_at).max(0) as u64 / 1000;
            received.saturating_record(ms);
        }
    }

    pub fn summary(&self) -> FreshnessSummary {
        let percentiles = |histogram: &Histogram<u64>| Percentiles {
            p50_ms: histogram.value_at_quantile(0.5),
            p99_ms: histogram.value_at_quantile(0.99),
            max_ms: histogram.max(),
        };
        let durable = lock(&self.durable_to_green);
        FreshnessSummary {
            notifications: durable.len(),
            durable_to_green: percentiles(&durable),
            received_to_green: percentiles(&lock(&self.received_to_green)),
        }
    }
}

fn lock(histogram: &Mutex<Histogram<u64>>) -> std::sync::MutexGuard<'_, Histogram<u64>> {
    histogram.lock().expect("freshness lock poisoned")
}

pub struct GreenTracker {
    pub durable: mpsc::UnboundedReceiver<DurableBatch>,
    pub consumer: ConsumerClient<Channel>,
    pub memory: Arc<SharedMemory>,
    pub freshness: Arc<Freshness>,
    pub producer_id: String,
    pub poll: Duration,
    /// How long an entry stays green before it is evicted (turns red).
    pub ttl: Duration,
    pub health: Arc<WriteHealth>,
}

impl GreenTracker {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut waiting: VecDeque<DurableBatch> = VecDeque::new();
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batcher_running = true;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                batch = self.durable.recv(), if batcher_running => match batch {
                    Some(batch) => {
                        waiting.push_back(batch);
                        self.note_oldest(&waiting);
                    }
                    // The batcher is gone: nothing new will become durable.
                    None => batcher_running = false,
                },
                _ = tick.tick() => {
                    self.memory.evict(self.ttl, 0);
                    if !waiting.is_empty() {
                        self.mark_replicated(&mut waiting).await;
                    }
                }
            }
        }
    }

    async fn mark_replicated(&mut self, waiting: &mut VecDeque<DurableBatch>) {
        let mut request = tonic::Request::new(ProgressRequest {
            producer_id: self.producer_id.clone(),
        });
        request.set_timeout(Duration::from_secs(2));
        let replicated = match self.consumer.progress(request).await {
            Ok(progress) => progress.into_inner().replicated_sequence,
            Err(status) => {
                tracing::debug!(code = ?status.code(), message = status.message(), "consumer progress unavailable");
                return;
            }
        };
        while waiting.front().is_some_and(|b| b.sequence <= replicated) {
            let batch = waiting.pop_front().expect("front exists");
            self.memory.mark_replicated(&batch.records);
            self.freshness.record(&batch);
            metrics::histogram!(sluice_telemetry::names::DURABLE_TO_GREEN_SECONDS)
                .record(batch.durable_at.elapsed().as_secs_f64());
        }
        self.note_oldest(waiting);
    }

    fn note_oldest(&self, waiting: &VecDeque<DurableBatch>) {
        let now = sluice_core::notification::now_micros();
        self.health.set_oldest_unreplicated(
            waiting
                .front()
                .map(|b| now - b.durable_at.elapsed().as_micros() as i64),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_percentiles_cover_seconds() {
        let freshness = Freshness::default();
        for (ms, rows) in [(3, 10usize), (1_500, 80), (4_000, 10)] {
            let received = sluice_core::notification::now_micros() - ms * 1000;
            let record = Arc::new(
                Notification::from_json(
                    r#"{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#,
                    received,
                )
                .unwrap(),
            );
            freshness.record(&DurableBatch {
                sequence: 1,
                records: vec![record; rows],
                durable_at: Instant::now() - Duration::from_millis(ms as u64),
            });
        }
        let summary = freshness.summary();
        assert_eq!(summary.notifications, 100);
        for p in [summary.durable_to_green, summary.received_to_green] {
            assert!((1_490..=1_510).contains(&p.p50_ms), "{p:?}");
            assert!((3_990..=4_010).contains(&p.p99_ms), "{p:?}");
        }
    }
}
