//! The HTTP handlers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_auth::Caller;
use sluice_core::Color;
use sluice_core::Notification;
use sluice_core::notification::now_micros;
use sluice_proto::v1::{GetNotificationRequest, StatusRequest};
use sluice_telemetry::names;

use crate::AppState;
use crate::body::{self, Framing};
use crate::cloudevents;
use crate::error::ApiError;
use crate::memory::{AckWaiter, Admitted, Held};
use crate::openapi::{
    CloudEventHeaders, CloudEventIn, ErrorBody, KeyRefusals, NotificationIn, NotificationsBody,
};

/// How long a write waits before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ack {
    /// In shared memory (gray): fast, lost if this node dies before the batch is stored.
    Staged,
    /// In the master store (blue). The default.
    Durable,
    /// In the replica (green).
    Replicated,
}

impl Ack {
    fn name(self) -> &'static str {
        match self {
            Ack::Staged => "staged",
            Ack::Durable => "durable",
            Ack::Replicated => "replicated",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IngestParams {
    /// When to answer: `staged` (in shared memory), `durable` (in the master store, the
    /// default) or `replicated` (in the replica).
    #[param(pattern = "^(staged|durable|replicated)$")]
    ack: Option<String>,
}

impl IngestParams {
    fn ack(&self) -> Result<Ack, ApiError> {
        match self.ack.as_deref() {
            None | Some("durable") => Ok(Ack::Durable),
            Some("staged") => Ok(Ack::Staged),
            Some("replicated") => Ok(Ack::Replicated),
            Some(other) => Err(ApiError::BadRequest(format!(
                "unknown ack level {other:?}: use staged, durable or replicated"
            ))),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Duplicate {
    index: usize,
    platform: String,
    id: String,
    /// Where the notification already is: gray, blue, green or red.
    #[schema(value_type = String)]
    color: Color,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Rejected {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<usize>,
    reason: String,
}

/// The answer to a POST: counts for the accepted, and one line for each duplicate and each
/// rejected item, so a large clean batch gets a short answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct IngestResponse {
    ack: Ack,
    accepted: usize,
    duplicates: Vec<Duplicate>,
    rejected: Vec<Rejected>,
}

/// Holds the request body's size (its `Content-Length`, or the largest body accepted when it
/// has none) of the memory budget while the body is read and parsed, or answers 503 when the
/// budget has no room for it. The handler gives it back once the notifications are parsed:
/// from then on they count for themselves.
pub(crate) async fn hold_body(
    State(state): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let max = state.config.max_body_bytes;
    let bytes = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .map_or(max, |length| length.min(max));
    match state.memory.hold(bytes) {
        Ok(held) => {
            request
                .extensions_mut()
                .insert(BodyHold(Arc::new(Mutex::new(Some(held)))));
            next.run(request).await
        }
        Err(full) => ApiError::MemoryFull {
            used: full.used,
            budget: full.budget,
        }
        .into_response(),
    }
}

/// The bytes [`hold_body`] holds for a request, until [`BodyHold::release`] or its end.
#[derive(Clone)]
pub(crate) struct BodyHold(Arc<Mutex<Option<Held>>>);

impl BodyHold {
    fn release(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// How a POST's body is read.
enum Format {
    Native(Framing),
    CloudEvents(cloudevents::Mode),
}

/// `POST /v1/notifications[?ack=staged|durable|replicated]`
#[utoipa::path(post, path = "/v1/notifications", tag = "write",
    params(IngestParams, CloudEventHeaders),
    request_body(content(
        (NotificationsBody = "application/json"),
        (NotificationIn = "application/x-ndjson"),
        (CloudEventIn = "application/cloudevents+json"),
        (Vec<CloudEventIn> = "application/cloudevents-batch+json"),
    ), description = "One notification, an array of them, or NDJSON lines; or CloudEvents 1.0: \
        one structured event, a batch of them, or a binary-mode event (`ce-*` headers, its \
        `data` as the application/json body)"),
    responses(
        (status = 200, description = "Every accepted notification is as safe as `ack` asks", body = IngestResponse),
        (status = 202, description = "Accepted into shared memory (`ack=staged`)", body = IngestResponse),
        (status = 400, description = "Nothing in the body could be accepted; each item's reason is listed", body = IngestResponse),
        (status = 413, description = "The body is larger, or holds more notifications, than accepted", body = ErrorBody),
        (status = 415, description = "Not JSON, NDJSON or CloudEvents JSON", body = ErrorBody),
        (status = 503, description = "Shared memory is full or the store does not answer in time; retry after Retry-After", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn post_notifications(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<IngestParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    hold: Option<Extension<BodyHold>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let ack = params.ack()?;
    // CloudEvents share the route: a CloudEvents sender is given one URL, and its mode is told
    // by the content type or the `ce-specversion` header, which no native request sends.
    let format = match cloudevents::Mode::from_headers(&headers)? {
        Some(mode) => Format::CloudEvents(mode),
        None => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("(not text)"));
            Format::Native(Framing::from_content_type(content_type)?)
        }
    };
    let body = body?;
    let started = std::time::Instant::now();
    metrics::histogram!(names::INGEST_REQUEST_BYTES).record(body.len() as f64);
    let received_at = now_micros();
    let max_items = state.config.max_items;
    let items = match format {
        Format::Native(framing) => body::parse(&body, framing, received_at, max_items),
        Format::CloudEvents(mode) => {
            cloudevents::parse(mode, &headers, &body, received_at, max_items)
        }
    };
    if let Some(Extension(hold)) = hold {
        hold.release();
    }
    drop(body);
    let items = items?;
    metrics::histogram!(names::INGEST_REQUEST_NOTIFICATIONS).record(items.len() as f64);

    let mut rejected = Vec::new();
    let mut candidates = Vec::with_capacity(items.len());
    let mut candidate_indexes = Vec::with_capacity(items.len());
    for item in items {
        let parsed = item.parsed.and_then(|notification| {
            match state
                .config
                .outside_window(notification.occurred_at, received_at)
            {
                Some(reason) => Err(reason),
                None => Ok(notification),
            }
        });
        match parsed {
            Ok(notification) => {
                candidates.push(notification);
                candidate_indexes.push(item.index);
            }
            Err(reason) => rejected.push(Rejected {
                index: item.index,
                line: item.line,
                reason,
            }),
        }
    }
    // Every notification's platform must be the key's before any is admitted: a request that
    // names another platform is refused whole, so nothing of it is stored and no id is taken.
    for notification in &candidates {
        caller.require_write(&notification.platform)?;
    }
    let count = |outcome: &'static str, n: usize| {
        metrics::counter!(names::INGEST_NOTIFICATIONS, "outcome" => outcome).increment(n as u64);
    };
    count("rejected", rejected.len());
    if candidates.is_empty() {
        let answer = IngestResponse {
            ack,
            accepted: 0,
            duplicates: Vec::new(),
            rejected,
        };
        return Ok((StatusCode::BAD_REQUEST, Json(json!(answer))));
    }

    let outcomes = admit_and_wait(&state, candidates, ack).await?;

    let mut accepted = 0;
    let mut duplicates = Vec::new();
    for (outcome, index) in outcomes.into_iter().zip(candidate_indexes) {
        match outcome {
            Admitted::Accepted => accepted += 1,
            Admitted::Duplicate {
                key: (platform, id),
                color: seen,
            } => {
                // Report the color now, after the wait, when it is the fresher answer.
                let color = state
                    .memory
                    .get(&platform, &id)
                    .map_or(seen, |(color, _)| color);
                duplicates.push(Duplicate {
                    index,
                    platform,
                    id,
                    color,
                });
            }
        }
    }
    count("accepted", accepted);
    count("duplicate", duplicates.len());
    metrics::histogram!(names::INGEST_ACK_SECONDS, "ack" => ack.name())
        .record(started.elapsed().as_secs_f64());
    let status = match ack {
        Ack::Staged => StatusCode::ACCEPTED,
        Ack::Durable | Ack::Replicated => StatusCode::OK,
    };
    let answer = IngestResponse {
        ack,
        accepted,
        duplicates,
        rejected,
    };
    Ok((status, Json(json!(answer))))
}

/// Admits notifications into shared memory, hands the new ones to the batcher, and waits until
/// every one of them (new or duplicate) reached the color `ack` asks for.
pub(crate) async fn admit_and_wait(
    state: &AppState,
    candidates: Vec<Notification>,
    ack: Ack,
) -> Result<Vec<Admitted>, ApiError> {
    let wait_for = match ack {
        Ack::Staged => None,
        Ack::Durable => Some(Color::Blue),
        Ack::Replicated => Some(Color::Green),
    };
    let waiter = wait_for.map(|_| AckWaiter::new());
    let (outcomes, staged) = state
        .memory
        .admit(candidates, wait_for.zip(waiter.as_ref()))
        .map_err(|full| ApiError::MemoryFull {
            used: full.used,
            budget: full.budget,
        })?;
    for record in staged {
        // The batcher lives as long as any sender, and this state holds one.
        let _ = state.staged.send(record);
    }

    if let Some(waiter) = waiter {
        let timeout = Duration::from_secs(state.config.ack_timeout_secs);
        if tokio::time::timeout(timeout, waiter.wait()).await.is_err() {
            let (state_wanted, service) = match ack {
                Ack::Replicated => ("replicated", "consumer"),
                _ => ("durable", "publisher"),
            };
            return Err(ApiError::Unavailable(format!(
                "the notifications were accepted but are not {state_wanted} after {}s (is the \
                 {service} reachable?); they stay queued, and retrying this request is safe: \
                 it will not store anything twice",
                timeout.as_secs()
            )));
        }
        if let Some(reason) = waiter.failure() {
            return Err(ApiError::Refused(reason.to_string()));
        }
    }
    Ok(outcomes)
}

/// `GET /v1/notifications/{platform}/{id}`
#[utoipa::path(get, path = "/v1/notifications/{platform}/{id}", tag = "write",
    params(("platform" = String, Path), ("id" = String, Path)),
    responses(
        (status = 200, description = "The notification and its color", body = Object),
        (status = 404, description = "Neither in memory nor in the replica", body = ErrorBody),
        (status = 503, description = "Not in memory, and the replica cannot be asked now", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn get_notification(
    State(state): State<AppState>,
    caller: Caller,
    Path((platform, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_read_of(&platform)?;
    if let Some((color, record)) = state.memory.get(&platform, &id) {
        return Ok(Json(json!({
            "color": color,
            "notification": record.to_json(),
        })));
    }
    // Not in memory: evicted (red) or never sent here. The replica knows which.
    let mut request = tonic::Request::new(GetNotificationRequest {
        platform: platform.clone(),
        id: id.clone(),
    });
    request.set_timeout(Duration::from_secs(10));
    let lookup = state
        .query_handler
        .clone()
        .get_notification(request)
        .await
        .map_err(|s| {
            ApiError::Unavailable(format!(
                "notification {platform}/{id} is not in this node's shared memory, and the replica cannot be consulted: {}",
                s.message()
            ))
        })?
        .into_inner();
    let record = lookup
        .notification
        .map(Notification::try_from)
        .transpose()
        .map_err(|e| ApiError::Internal(format!("the replica holds an invalid notification: {e}")))?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "notification {platform}/{id} is neither in this node's shared memory nor in the replica (version {})",
                lookup.replica_version
            ))
        })?;
    Ok(Json(json!({
        "color": Color::Red,
        "notification": record.to_json(),
        "replica_version": lookup.replica_version,
    })))
}

/// `GET /v1/memory/posts/{platform}/{post_id}`: the notifications about a post that this
/// node's shared memory holds, with their colors. The query API merges them with the replica.
#[utoipa::path(get, path = "/v1/memory/posts/{platform}/{post_id}", tag = "write",
    params(("platform" = String, Path), ("post_id" = String, Path)),
    responses(
        (status = 200, description = "The post's notifications in this node's memory", body = Object),
        KeyRefusals
    ))]
pub(crate) async fn get_memory_post(
    State(state): State<AppState>,
    caller: Caller,
    Path((platform, post_id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_read()?;
    let notifications: Vec<serde_json::Value> = state
        .memory
        .post(&platform, &post_id)
        .into_iter()
        .map(|(color, record)| json!({"color": color, "notification": record.to_json()}))
        .collect();
    Ok(Json(json!({ "notifications": notifications })))
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, description = "The process is up", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: this node can take writes and see them through. Not ready (503, naming each
/// reason) when the publisher does not answer, the batcher has tried to store one batch for
/// longer than the ack timeout, shared memory is full of notifications that are not in the
/// replica yet, or a durable batch has waited longer than `--ready-max-lag-secs` for the
/// replica. It needs no key, so it shows nothing a caller could misuse (not the producer id).
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, description = "Ready", body = Object),
        (status = 503, description = "Not ready; the answer names each reason", body = ErrorBody),
    ))]
pub(crate) async fn readyz(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut problems = Vec::new();
    let mut publisher = state.publisher.clone();
    let mut request = tonic::Request::new(StatusRequest {});
    request.set_timeout(Duration::from_secs(2));
    let status = match publisher.status(request).await {
        Ok(status) => Some(status.into_inner()),
        Err(s) => {
            problems.push(format!("the publisher does not answer: {}", s.message()));
            None
        }
    };
    let in_flight = state.health.in_flight();
    if in_flight > Duration::from_secs(state.config.ack_timeout_secs) {
        problems.push(format!(
            "the batcher has been trying to store one batch for {} s",
            in_flight.as_secs()
        ));
    }
    let memory = state.memory.stats();
    if memory.green == 0 && memory.used_bytes >= memory.budget_bytes / 100 * 95 {
        problems.push(format!(
            "shared memory is full: {} of {} bytes hold notifications not yet in the replica",
            memory.used_bytes, memory.budget_bytes
        ));
    }
    let lag = state.health.replication_lag();
    if lag > Duration::from_secs(state.config.ready_max_lag_secs) {
        problems.push(format!(
            "a durable batch has waited {} s for the replica (bound: --ready-max-lag-secs {})",
            lag.as_secs(),
            state.config.ready_max_lag_secs
        ));
    }
    match status {
        Some(status) if problems.is_empty() => Ok(Json(json!({
            "status": "ready",
            "publisher": {
                "storage": status.storage,
                "put_if_absent_enforced": status.put_if_absent_enforced,
            },
            "replication_lag_ms": lag.as_millis() as u64,
        }))),
        _ => Err(ApiError::Unavailable(format!(
            "not ready: {}",
            problems.join("; ")
        ))),
    }
}

/// `GET /v1/stats`: what shared memory holds, and how fresh the replica is. Any key may ask.
#[utoipa::path(get, path = "/v1/stats", tag = "write",
    responses(
        (status = 200, description = "Entries by color, bytes, freshness", body = Object),
        KeyRefusals
    ))]
pub(crate) async fn stats(
    State(state): State<AppState>,
    _caller: Caller,
) -> Json<serde_json::Value> {
    Json(json!({
        "producer_id": &*state.producer_id,
        "memory": state.memory.stats(),
        "freshness": state.freshness.summary(),
    }))
}

/// Any other path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such endpoint: see POST /v1/notifications and GET /v1/notifications/{platform}/{id}"
            .to_string(),
    )
}
