//! The publisher: a stateless gRPC service that turns each batch of notifications it is sent
//! into one durable segment of the master store (the notifications turn blue).
//!
//! `Append` validates the batch, encodes it as an Avro segment and writes it put-if-absent at
//! the key of (producer, sequence) through [`sluice_core::master::MasterStore`]. It answers
//! only after the object store confirmed the write, and a retry of a batch that already landed
//! answers OK without writing, so callers simply retry until they get an answer. An Append
//! must carry its producer's proof ([`sluice_core::producer`]): nobody else can append under a
//! live producer's id.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::dead_letter::{DeadLetter, DeadLetters, LetterKind};
use sluice_core::master::{MasterStore, SegmentWrite, check_producer_id};
use sluice_core::storage::Storage;
use sluice_core::{Error, Notification};
use sluice_proto::Channel;
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::publisher_server::{Publisher, PublisherServer};
use sluice_proto::v1::{
    AppendRequest, AppendResponse, DeadLetterRequest, DeadLetterResponse, GetDeadLetterRequest,
    GetDeadLetterResponse, Key, ListDeadLettersRequest, ListDeadLettersResponse, RecentKeysChunk,
    RecentKeysRequest, ResolveDeadLetterResponse, SegmentStoredRequest, StatusRequest,
    StatusResponse,
};
use sluice_telemetry::names;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

pub struct PublisherService {
    master: MasterStore,
    letters: DeadLetters,
    status: StatusResponse,
    /// Told of every stored segment, so replication need not wait for its next listing.
    consumer: Option<ConsumerClient<Channel>>,
}

impl PublisherService {
    /// Prepares a publisher over an opened store, probing whether the store enforces
    /// put-if-absent. A store that does not still works, but the log says loudly that a
    /// retried batch is then protected only by its identical content.
    pub async fn open(storage: &Storage) -> Result<Self, Error> {
        let enforced = storage.probe_put_if_absent().await?;
        if enforced {
            tracing::info!(storage = %storage.url, "store enforces put-if-absent");
        } else {
            tracing::warn!(
                storage = %storage.url,
                "store does NOT enforce put-if-absent (If-None-Match: *): segment keys still \
                 only collide on retries of one batch, but use AWS S3 or MinIO in production"
            );
        }
        let master = MasterStore::new(storage.store.clone());
        // Every series from the first scrape on, so that rates start at zero, not at the
        // first event.
        for result in ["created", "already_present", "conflict", "failed"] {
            metrics::counter!(names::SEGMENTS_WRITTEN, "result" => result).increment(0);
        }
        metrics::counter!(names::DEAD_LETTERS, "kind" => "refused").increment(0);
        Ok(PublisherService {
            letters: master.dead_letters(),
            master,
            status: StatusResponse {
                storage: storage.url.to_string(),
                put_if_absent_enforced: enforced,
            },
            consumer: None,
        })
    }

    /// Announces each stored segment to this consumer.
    pub fn with_consumer(mut self, consumer: ConsumerClient<Channel>) -> Self {
        self.consumer = Some(consumer);
        self
    }
}

#[tonic::async_trait]
impl Publisher for PublisherService {
    async fn append(
        &self,
        request: Request<AppendRequest>,
    ) -> Result<Response<AppendResponse>, Status> {
        let AppendRequest {
            producer_id,
            sequence,
            notifications,
            producer_proof,
        } = request.into_inner();
        check_caller(&producer_id, &producer_proof, sequence)?;
        if notifications.is_empty() {
            return Err(Status::invalid_argument(
                "an Append needs at least one notification",
            ));
        }
        let records = notifications
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                Notification::try_from(n).map_err(|reason| {
                    Status::invalid_argument(format!("notification {i}: {reason}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rows = records.len() as u64;
        // The write and its announcement run apart from the call: when the ingest node that
        // asked dies mid-call (and tonic drops this future), a segment that lands is still
        // announced, rather than waiting for the consumer's next listing (30 s by default).
        let (master, consumer) = (self.master.clone(), self.consumer.clone());
        let written = tokio::spawn(async move {
            let started = std::time::Instant::now();
            let written = master
                .write_segment(&producer_id, sequence, Arc::from(records))
                .await;
            let result = match &written {
                Ok(SegmentWrite::Created { .. }) => "created",
                Ok(SegmentWrite::AlreadyPresent { .. }) => "already_present",
                Err(Error::SegmentConflict { .. }) => "conflict",
                Err(_) => "failed",
            };
            metrics::counter!(names::SEGMENTS_WRITTEN, "result" => result).increment(1);
            metrics::histogram!(names::SEGMENT_WRITE_SECONDS)
                .record(started.elapsed().as_secs_f64());
            let written = written?;
            let bytes = match &written {
                SegmentWrite::Created { path, bytes } => {
                    tracing::debug!(path, rows, bytes, "segment written");
                    metrics::histogram!(names::SEGMENT_BYTES).record(*bytes as f64);
                    *bytes as u64
                }
                SegmentWrite::AlreadyPresent { path } => {
                    tracing::info!(path, rows, "retried batch was already stored");
                    0
                }
            };
            announce(
                consumer,
                SegmentStoredRequest {
                    producer_id,
                    sequence,
                    segment_key: written.path().to_string(),
                    rows,
                    bytes,
                },
            );
            Ok::<_, Error>(written)
        })
        .await
        .map_err(|e| Status::internal(format!("the segment write stopped: {e}")))?
        .map_err(AppendError::from)?;
        Ok(Response::new(AppendResponse {
            segment_key: written.path().to_string(),
            rows,
            already_present: matches!(written, SegmentWrite::AlreadyPresent { .. }),
        }))
    }

    async fn dead_letter(
        &self,
        request: Request<DeadLetterRequest>,
    ) -> Result<Response<DeadLetterResponse>, Status> {
        let DeadLetterRequest {
            producer_id,
            producer_proof,
            sequence,
            reason,
            notifications_json,
        } = request.into_inner();
        check_caller(&producer_id, &producer_proof, sequence)?;
        let notifications: Vec<serde_json::Value> = serde_json::from_slice(&notifications_json)
            .map_err(|e| {
                Status::invalid_argument(format!("notifications_json is not a JSON array: {e}"))
            })?;
        let segment = MasterStore::segment_path(&producer_id, sequence)
            .map_err(AppendError::from)?
            .to_string();
        let letter = DeadLetter {
            kind: LetterKind::Refused,
            producer: producer_id.clone(),
            sequence,
            reason,
            at_micros: sluice_core::notification::now_micros(),
            rows: notifications.len() as u64,
            segment: Some(segment),
            notifications,
        };
        // The letter first: once the gap is filled, the rows are nowhere else.
        self.letters
            .write(&letter)
            .await
            .map_err(AppendError::from)?;
        let filled = self
            .master
            .fill_gap(&producer_id, sequence)
            .await
            .map_err(AppendError::from)?;
        metrics::counter!(names::DEAD_LETTERS, "kind" => "refused").increment(1);
        tracing::warn!(
            letter = letter.id(),
            rows = letter.rows,
            reason = letter.reason,
            "batch kept as a dead letter; its producer goes on"
        );
        let bytes = match &filled {
            SegmentWrite::Created { bytes, .. } => *bytes as u64,
            SegmentWrite::AlreadyPresent { .. } => 0,
        };
        self.announce(SegmentStoredRequest {
            producer_id,
            sequence,
            segment_key: filled.path().to_string(),
            rows: 0,
            bytes,
        });
        Ok(Response::new(DeadLetterResponse {
            letter_id: letter.id(),
        }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        let limit = match request.into_inner().limit {
            0 => 100,
            limit => limit.min(1000),
        };
        let (letters, total) = self
            .letters
            .list(
                &[LetterKind::Refused, LetterKind::Quarantined],
                limit as usize,
            )
            .await
            .map_err(AppendError::from)?;
        Ok(Response::new(ListDeadLettersResponse {
            letters_json: letters.iter().map(letter_json).collect(),
            total: total as u64,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<GetDeadLetterResponse>, Status> {
        let letter = self.read_letter(&request.into_inner().letter_id).await?;
        Ok(Response::new(GetDeadLetterResponse {
            letter_json: letter_json(&letter),
        }))
    }

    async fn resolve_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<ResolveDeadLetterResponse>, Status> {
        let letter = self.read_letter(&request.into_inner().letter_id).await?;
        if letter.kind != LetterKind::Refused {
            return Err(Status::failed_precondition(format!(
                "dead letter {} is not a refused batch; only those are replayed",
                letter.id()
            )));
        }
        self.letters
            .mark_replayed(&letter)
            .await
            .map_err(AppendError::from)?;
        tracing::info!(letter = letter.id(), "dead letter replayed");
        Ok(Response::new(ResolveDeadLetterResponse {}))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.status.clone()))
    }

    type RecentKeysStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<RecentKeysChunk, Status>> + Send>>;

    async fn recent_keys(
        &self,
        request: Request<RecentKeysRequest>,
    ) -> Result<Response<Self::RecentKeysStream>, Status> {
        let RecentKeysRequest {
            node_id,
            window_micros,
        } = request.into_inner();
        if node_id.is_empty() {
            return Err(Status::invalid_argument("node_id is empty"));
        }
        let keys = self
            .master
            .recent_keys(&node_id, window_micros.max(0))
            .await
            .map_err(|e| Status::unavailable(format!("cannot read the master store: {e}")))?;
        tracing::info!(node_id, keys = keys.len(), "recent keys sent");
        let chunks: Vec<Result<RecentKeysChunk, Status>> = keys
            .chunks(RECENT_KEYS_PER_CHUNK)
            .map(|chunk| {
                Ok(RecentKeysChunk {
                    keys: chunk
                        .iter()
                        .map(|(platform, id)| Key {
                            platform: platform.clone(),
                            id: id.clone(),
                        })
                        .collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }
}

impl PublisherService {
    async fn read_letter(&self, id: &str) -> Result<DeadLetter, Status> {
        if DeadLetters::parse_id(id).is_none() {
            return Err(Status::invalid_argument(format!(
                "{id:?} is not a dead letter id: use <refused|quarantined|replayed>/<producer>/<sequence>"
            )));
        }
        Ok(self.letters.read(id).await.map_err(AppendError::from)?)
    }

    /// [`announce`] to this publisher's consumer.
    fn announce(&self, segment: SegmentStoredRequest) {
        announce(self.consumer.clone(), segment);
    }
}

/// Tells the consumer of a stored segment, in the background: the call has been answered by
/// then, and a lost announcement only delays replication until the consumer's next listing.
fn announce(consumer: Option<ConsumerClient<Channel>>, segment: SegmentStoredRequest) {
    let Some(mut consumer) = consumer else {
        return;
    };
    tokio::spawn(async move {
        let mut request = Request::new(segment);
        request.set_timeout(Duration::from_secs(5));
        if let Err(status) = consumer.segment_stored(request).await {
            tracing::debug!(code = ?status.code(), message = status.message(), "consumer not told of a segment");
        }
    });
}

/// Only the process that made a producer id holds the secret its uuid commits to: a forged
/// batch under a live producer's id would otherwise take its next sequence and wedge it.
fn check_caller(producer_id: &str, proof: &str, sequence: u64) -> Result<(), Status> {
    check_producer_id(producer_id).map_err(AppendError::from)?;
    if !sluice_core::producer::proves(producer_id, proof) {
        return Err(Status::permission_denied(format!(
            "producer {producer_id}: the producer proof does not match; only the ingest \
             process that made a producer id may append under it"
        )));
    }
    if sequence == 0 {
        return Err(Status::invalid_argument("sequence starts at 1"));
    }
    Ok(())
}

fn letter_json(letter: &DeadLetter) -> String {
    serde_json::to_string(letter).expect("a dead letter serializes")
}

/// Keys per streamed message: about 1 MB each.
const RECENT_KEYS_PER_CHUNK: usize = 10_000;

/// The one place storage errors become gRPC statuses.
struct AppendError(Error);

impl From<Error> for AppendError {
    fn from(e: Error) -> Self {
        AppendError(e)
    }
}

impl From<AppendError> for Status {
    fn from(AppendError(e): AppendError) -> Self {
        match e {
            Error::InvalidProducerId(_) => Status::invalid_argument(e.to_string()),
            Error::NotFound { .. } => Status::not_found(e.to_string()),
            Error::SegmentConflict { .. } => {
                tracing::error!(error = %e, "refused to overwrite a different batch");
                Status::already_exists(e.to_string())
            }
            // Everything else is the store failing: the caller retries the same batch.
            e => {
                tracing::warn!(error = %e, "segment write failed");
                Status::unavailable(format!("master store write failed: {e}"))
            }
        }
    }
}

/// Serves the publisher on `listener` until `shutdown` completes, then finishes the Appends in
/// flight before returning.
pub async fn serve(
    listener: TcpListener,
    service: PublisherService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "publisher listening");
    // Small acks must not wait for Nagle's algorithm.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // The standard gRPC health service ("" is SERVING while the server runs): what a
    // Kubernetes gRPC probe asks.
    let (_, health) = tonic_health::server::health_reporter();
    sluice_proto::tls::server()?
        .add_service(health)
        .add_service(sluice_proto::cluster::guarded(
            PublisherServer::new(service)
                .max_decoding_message_size(sluice_proto::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(sluice_proto::MAX_MESSAGE_BYTES),
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
