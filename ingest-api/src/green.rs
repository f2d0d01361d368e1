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
use sluice_proto::v1::ProgressRequest;
use sluice_proto::v1::consumer_client::ConsumerClient;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::memory::SharedMemory;

/// A batch the master store confirmed, waiting to be replicated.
pub struct DurableBatch {
    pub sequence: u64,
    pub records: Vec<Arc<Notification>>,
    /// When the publisher confirmed it (blue).
    pub durable_at: Instant,
}

/// Freshness: how long notifications take from blue (durable) to green (in the replica), as
/// this node observes it, weighted by rows.
pub struct Freshness {
    millis: Mutex<Histogram<u64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FreshnessSummary {
    pub notifications: u64,
    pub p50_ms: u64,
    pub p99_ms: u64,
    pub max_ms: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            millis: Mutex::new(Histogram::new(3).expect("3 significant digits is valid")),
        }
    }
}

impl Freshness {
    fn record(&self, elapsed: Duration, rows: usize) {
        let mut millis = self.millis.lock().expect("freshness lock poisoned");
        millis.saturating_record_n(elapsed.as_millis() as u64, rows as u64);
    }

    pub fn summary(&self) -> FreshnessSummary {
        let millis = self.millis.lock().expect("freshness lock poisoned");
        FreshnessSummary {
            notifications: millis.len(),
            p50_ms: millis.value_at_quantile(0.5),
            p99_ms: millis.value_at_quantile(0.99),
            max_ms: millis.max(),
        }
    }
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
                    Some(batch) => waiting.push_back(batch),
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
            self.freshness
                .record(batch.durable_at.elapsed(), batch.records.len());
        }
    }
}
