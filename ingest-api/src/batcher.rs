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
//! nothing twice. An Append refused for a reason no retry cures (the batch is invalid, or its
//! key holds a different batch: [`is_refusal`]) ends that batch instead of wedging the node:
//! the publisher keeps it as a dead letter and fills its place in the sequence, its waiters
//! are told, and the batcher goes on with the next sequence. Only an abandon signal (a
//! shutdown that ran out of time) stops the retries, and then the rows that were not stored
//! are counted and reported.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::Notification;
use sluice_core::producer::ProducerIdentity;
use sluice_proto::Channel;
use sluice_proto::v1;
use sluice_proto::v1::publisher_client::PublisherClient;
use sluice_telemetry::names;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::green::DurableBatch;
use crate::health::WriteHealth;
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
    /// Rows of batches the publisher refused for good, kept as dead letters.
    pub dead_lettered: u64,
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
    health: Arc<WriteHealth>,
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
        health: Arc<WriteHealth>,
    ) -> Self {
        Batcher {
            staged,
            publisher,
            memory,
            durable,
            producer,
            next_sequence: 1,
            limits,
            health,
        }
    }

    /// Runs until every sender of staged notifications is gone and everything they sent is
    /// stored, or until `abandon` fires.
    pub async fn run(mut self, abandon: CancellationToken) -> BatcherReport {
        let mut report = BatcherReport::default();
        while let Some(batch) = self.next_batch().await {
            let rows = batch.len() as u64;
            let sequence = self.next_sequence;
            let started = std::time::Instant::now();
            self.health.batch_started();
            let published = self.publish(&batch, &abandon).await;
            let kept = match published {
                Published::Stored => {
                    report.batches += 1;
                    report.rows += rows;
                    metrics::counter!(names::BATCHES).increment(1);
                    metrics::histogram!(names::BATCH_ROWS).record(rows as f64);
                    let bytes: usize = batch.iter().map(|n| n.approx_size()).sum();
                    metrics::histogram!(names::BATCH_BYTES).record(bytes as f64);
                    metrics::histogram!(names::APPEND_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    // The tracker outlives the batcher; if it is gone, nobody waits for green.
                    let _ = self.durable.send(DurableBatch {
                        sequence,
                        records: batch,
                        durable_at: std::time::Instant::now(),
                    });
                    true
                }
                Published::Refused(refusal) => {
                    let kept = self.dead_letter(&batch, &refusal, &abandon).await;
                    if kept {
                        report.dead_lettered += rows;
                        metrics::counter!(names::DEAD_LETTERED_ROWS).increment(rows);
                        self.memory.refuse(&batch, DEAD_LETTERED);
                    }
                    kept
                }
                Published::Abandoned => false,
            };
            self.health.batch_done();
            if !kept {
                report.lost += rows;
                self.drain_abandoned(&mut report).await;
                break;
            }
            self.next_sequence += 1;
        }
        report
    }

    /// Counts what is left without trying to store it, once the batcher is abandoned.
    async fn drain_abandoned(&mut self, report: &mut BatcherReport) {
        self.staged.close();
        while self.staged.recv().await.is_some() {
            report.lost += 1;
        }
        tracing::error!(
            lost = report.lost,
            "shutdown timed out: gray notifications were not stored"
        );
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

    /// Appends one batch, retrying until it is stored, refused for good, or `abandon` fires.
    async fn publish(
        &mut self,
        batch: &[Arc<Notification>],
        abandon: &CancellationToken,
    ) -> Published {
        let sequence = self.next_sequence;
        // Built from the batch on each attempt: a retry re-converts, the usual single attempt
        // converts once and copies nothing more.
        let message = || v1::AppendRequest {
            producer_id: self.producer.id.clone(),
            sequence,
            notifications: batch.iter().map(|n| v1::Notification::from(&**n)).collect(),
            producer_proof: self.producer.proof.clone(),
        };
        let publisher = self.publisher.clone();
        let answer = retry("append", sequence, abandon, is_refusal, || {
            let mut publisher = publisher.clone();
            let mut request = tonic::Request::new(message());
            request.set_timeout(APPEND_TIMEOUT);
            async move { publisher.append(request).await }
        })
        .await;
        match answer {
            Some(Ok(response)) => {
                let response = response.into_inner();
                tracing::debug!(
                    sequence,
                    rows = batch.len(),
                    segment = response.segment_key,
                    "batch durable"
                );
                self.memory.mark_durable(batch);
                Published::Stored
            }
            Some(Err(refusal)) => {
                tracing::error!(
                    sequence,
                    rows = batch.len(),
                    code = ?refusal.code(),
                    message = refusal.message(),
                    "the publisher refused the batch for good; keeping it as a dead letter"
                );
                Published::Refused(refusal)
            }
            None => Published::Abandoned,
        }
    }

    /// Hands a refused batch to the publisher as a dead letter, retrying until it is kept
    /// (true) or `abandon` fires (false). Only then does the batcher take the next sequence.
    async fn dead_letter(
        &mut self,
        batch: &[Arc<Notification>],
        refusal: &tonic::Status,
        abandon: &CancellationToken,
    ) -> bool {
        let sequence = self.next_sequence;
        let rows: Vec<serde_json::Value> = batch.iter().map(|n| n.to_json()).collect();
        let notifications_json = serde_json::to_vec(&rows).expect("JSON values serialize");
        let request = v1::DeadLetterRequest {
            producer_id: self.producer.id.clone(),
            producer_proof: self.producer.proof.clone(),
            sequence,
            reason: format!("{:?}: {}", refusal.code(), refusal.message()),
            notifications_json,
        };
        let publisher = self.publisher.clone();
        // Nothing refuses a letter for good; a misconfigured node keeps trying, and says so.
        let answer = retry(
            "dead letter",
            sequence,
            abandon,
            |_| false,
            || {
                let mut publisher = publisher.clone();
                let mut request = tonic::Request::new(request.clone());
                request.set_timeout(APPEND_TIMEOUT);
                async move { publisher.dead_letter(request).await }
            },
        )
        .await;
        match answer {
            Some(Ok(response)) => {
                tracing::warn!(
                    sequence,
                    rows = batch.len(),
                    letter = response.into_inner().letter_id,
                    "batch kept as a dead letter; going on with the next"
                );
                true
            }
            Some(Err(_)) | None => false,
        }
    }
}

/// What the waiters of a dead-lettered batch are told.
const DEAD_LETTERED: &str = "the master store refused the batch holding these notifications \
    for a reason that retrying that batch cannot cure; they are kept as a dead letter for an \
    operator (GET /v1/admin/dead-letters), and sending them again stores them in a new batch";

/// What became of a batch.
enum Published {
    Stored,
    /// The publisher refused it for a reason that no retry cures.
    Refused(tonic::Status),
    /// `abandon` fired first.
    Abandoned,
}

/// Whether the publisher refused a batch for good: the batch itself is invalid, too large, or
/// its key holds a different batch. Everything else (the store or a publisher away, a missing
/// cluster secret or producer proof, which an operator mends) is retried.
pub(crate) fn is_refusal(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::AlreadyExists
            | tonic::Code::FailedPrecondition
            | tonic::Code::OutOfRange
    )
}

/// Calls `call` until it succeeds or fails in a way `gives_up` accepts (`Some`), backing off
/// between attempts, or until `abandon` fires (`None`).
async fn retry<T, F, Fut>(
    what: &str,
    sequence: u64,
    abandon: &CancellationToken,
    gives_up: impl Fn(&tonic::Status) -> bool,
    call: F,
) -> Option<Result<T, tonic::Status>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let answer = tokio::select! {
            answer = call() => answer,
            () = abandon.cancelled() => return None,
        };
        match answer {
            Ok(value) => return Some(Ok(value)),
            Err(status) if gives_up(&status) => return Some(Err(status)),
            Err(status) => {
                metrics::counter!(names::APPEND_RETRIES, "call" => what.to_string(), "code" => format!("{:?}", status.code()))
                    .increment(1);
                tracing::warn!(
                    what,
                    sequence,
                    attempt,
                    code = ?status.code(),
                    message = status.message(),
                    "{what} failed; retrying the same batch"
                );
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = abandon.cancelled() => return None,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_that_no_retry_cures_end_a_batch() {
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::AlreadyExists,
            tonic::Code::FailedPrecondition,
            tonic::Code::OutOfRange,
        ] {
            assert!(is_refusal(&tonic::Status::new(code, "")), "{code:?}");
        }
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
            tonic::Code::Internal,
            tonic::Code::Unknown,
            tonic::Code::ResourceExhausted,
            tonic::Code::Cancelled,
        ] {
            assert!(!is_refusal(&tonic::Status::new(code, "")), "{code:?}");
        }
    }
}
