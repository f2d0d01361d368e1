//! Group commit: drains gray notifications into batches and publishes each batch as one
//! Append to a publisher over gRPC.
//!
//! Many concurrent requests share one batch, which is what makes durable ingest fast: a batch
//! closes when it holds `max_rows` rows or `max_bytes` bytes, or `linger` after its first row.
//! Batches go out one at a time, in sequence order, so a producer's segments form a gapless
//! sequence (the replica commits them in that order). While one Append is in flight the next
//! batch fills up, so throughput grows with load instead of with the number of Appends.
//!
//! A failed Append is retried with the same (producer, sequence) and the same rows until it
//! succeeds: the publisher writes put-if-absent, so a retry after a lost answer stores
//! nothing twice. Only an abandon signal (a shutdown that ran out of time) stops the retries,
//! and then the rows that were not stored are counted and reported.

use std::sync::Arc;
use std::time::Duration;

use sluice_core::Notification;
use sluice_core::producer::ProducerIdentity;
use sluice_proto::Channel;
use sluice_proto::v1;
use sluice_proto::v1::publisher_client::PublisherClient;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::green::DurableBatch;
use crate::memory::SharedMemory;

/// How a batch is closed.
#[derive(Debug, Clone)]
pub struct BatchLimits {
    pub max_rows: usize,
    pub max_bytes: usize,
    pub linger: Duration,
}

/// What the batcher did over its life, reported at shutdown.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatcherReport {
    pub batches: u64,
    pub rows: u64,
    /// Rows that were never stored because the batcher was abandoned.
    pub lost: u64,
}

pub struct Batcher {
    staged: mpsc::UnboundedReceiver<Arc<Notification>>,
    publisher: PublisherClient<Channel>,
    memory: Arc<SharedMemory>,
    /// Where stored batches go to wait for the replica.
    durable: mpsc::UnboundedSender<DurableBatch>,
    producer: ProducerIdentity,
    next_sequence: u64,
    limits: BatchLimits,
}

/// A single Append attempt may take this long before it is retried.
const APPEND_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl Batcher {
    pub fn new(
        staged: mpsc::UnboundedReceiver<Arc<Notification>>,
        publisher: PublisherClient<Channel>,
        memory: Arc<SharedMemory>,
        durable: mpsc::UnboundedSender<DurableBatch>,
        producer: ProducerIdentity,
        limits: BatchLimits,
    ) -> Self {
        Batcher {
            staged,
            publisher,
            memory,
            durable,
            producer,
            next_sequence: 1,
            limits,
        }
    }

    /// Runs until every sender of staged notifications is gone and everything they sent is
    /// stored, or until `abandon` fires.
    pub async fn run(mut self, abandon: CancellationToken) -> BatcherReport {
        let mut report = BatcherReport::default();
        while let Some(batch) = self.next_batch().await {
            let rows = batch.len() as u64;
            let sequence = self.next_sequence;
            if self.publish(&batch, &abandon).await {
                report.batches += 1;
                report.rows += rows;
                // The tracker outlives the batcher; if it is gone, nobody waits for green.
                let _ = self.durable.send(DurableBatch {
                    sequence,
                    records: batch,
                    durable_at: std::time::Instant::now(),
                });
            } else {
                report.lost += rows;
                // Abandoned: count what is left without trying to store it.
                self.staged.close();
                while self.staged.recv().await.is_some() {
                    report.lost += 1;
                }
                tracing::error!(
                    lost = report.lost,
                    "shutdown timed out: gray notifications were not stored"
                );
                break;
            }
        }
        report
    }

    /// Waits for the first staged row, then gathers more until a limit closes the batch.
    /// `None` once the channel is closed and empty.
    async fn next_batch(&mut self) -> Option<Vec<Arc<Notification>>> {
        let first = self.staged.recv().await?;
        let mut bytes = first.approx_size();
        let mut batch = vec![first];
        let deadline = Instant::now() + self.limits.linger;
        while batch.len() < self.limits.max_rows && bytes < self.limits.max_bytes {
            let next = match self.staged.try_recv() {
                Ok(next) => next,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::select! {
                        next = self.staged.recv() => match next {
                            Some(next) => next,
                            None => break,
                        },
                        () = tokio::time::sleep_until(deadline) => break,
                    }
                }
            };
            bytes += next.approx_size();
            batch.push(next);
        }
        Some(batch)
    }

    /// Appends one batch, retrying until it is stored (true) or `abandon` fires (false).
    async fn publish(&mut self, batch: &[Arc<Notification>], abandon: &CancellationToken) -> bool {
        let sequence = self.next_sequence;
        // Built from the batch on each attempt: a retry re-converts, the usual single attempt
        // converts once and copies nothing more.
        let message = || v1::AppendRequest {
            producer_id: self.producer.id.clone(),
            sequence,
            notifications: batch.iter().map(|n| v1::Notification::from(&**n)).collect(),
            producer_proof: self.producer.proof.clone(),
        };
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut request = tonic::Request::new(message());
            request.set_timeout(APPEND_TIMEOUT);
            let answer = tokio::select! {
                answer = self.publisher.append(request) => answer,
                () = abandon.cancelled() => return false,
            };
            match answer {
                Ok(response) => {
                    let response = response.into_inner();
                    tracing::debug!(
                        sequence,
                        rows = batch.len(),
                        segment = response.segment_key,
                        attempt,
                        "batch durable"
                    );
                    self.memory.mark_durable(batch);
                    self.next_sequence += 1;
                    return true;
                }
                Err(status) => {
                    tracing::warn!(
                        sequence,
                        attempt,
                        code = ?status.code(),
                        message = status.message(),
                        "append failed; retrying the same batch"
                    );
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = abandon.cancelled() => return false,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}
