//! The newsfeed over REST: `GET /v1/feed` answers the current position in the replicated order
//! and the history up to it; `GET /v1/feed/stream` follows every notification after a position
//! as Server-Sent Events, each with its position as the event's id, so that a client that
//! reconnects with `Last-Event-ID` goes on exactly where it stopped, on whichever query API and
//! query handler it reaches (the query handler's `feed` module says why positions are stable).
//!
//! Readers never touch the write side: both read the replica through the query handlers.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_auth::Caller;
use sluice_core::Notification;
use sluice_proto::v1::{self, FeedBatch, FeedFilter, FeedHistoryRequest, FollowRequest};

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::{ErrorBody, KeyRefusals};
use crate::routes::on_any_handler;

/// The history's default length.
const DEFAULT_LIMIT: u32 = 1000;

/// Which notifications a feed carries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct FeedParams {
    /// The platform whose notifications the feed carries.
    platform: String,
    /// Only this post's notifications.
    post_id: Option<String>,
    /// Only notifications of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
    /// The most notifications of the history (the newest), 1 to 10000; 1000 by default.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// Where a stream starts, and which notifications it carries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamParams {
    /// The position to follow from: a feed's `version`, or an event's id (`V` or `V.F.R`).
    /// A `Last-Event-ID` header wins over it.
    from: Option<String>,
    platform: String,
    post_id: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    kind: Option<String>,
}

fn filter(platform: &str, post_id: &Option<String>, kind: &Option<String>) -> FeedFilter {
    FeedFilter {
        platform: platform.to_string(),
        post_id: post_id.clone(),
        r#type: kind.clone(),
    }
}

/// A notification as the REST API shows it everywhere.
fn to_json(notification: v1::Notification) -> Value {
    match Notification::try_from(notification) {
        Ok(n) => n.to_json(),
        Err(error) => {
            json!({"error": format!("the replica holds an invalid notification: {error}")})
        }
    }
}

/// `GET /v1/feed`.
#[utoipa::path(get, path = "/v1/feed", tag = "read",
    params(FeedParams),
    responses(
        (status = 200, description = "`version` (where the stream continues), the history up to it oldest first, and whether the limit left older ones out", body = Object),
        (status = 400, description = "A bad platform or limit", body = ErrorBody),
        (status = 503, description = "No query handler can answer now; see Retry-After", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn get_feed(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<FeedParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require_read_of(&params.platform)?;
    let request = FeedHistoryRequest {
        filter: Some(filter(&params.platform, &params.post_id, &params.kind)),
        limit: params.limit.unwrap_or(DEFAULT_LIMIT),
    };
    let reply = on_any_handler(&state, |mut handler| {
        let request = request.clone();
        async move { handler.feed_history(request).await }
    })
    .await?
    .into_inner();
    let notifications: Vec<Value> = reply.notifications.into_iter().map(to_json).collect();
    Ok(Json(json!({
        "version": reply.version.to_string(),
        "notifications": notifications,
        "truncated": reply.truncated,
    })))
}

/// `GET /v1/feed/stream`.
#[utoipa::path(get, path = "/v1/feed/stream", tag = "read",
    params(StreamParams, ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: the stream resumes right after it")),
    responses(
        (status = 200, description = "Server-Sent Events: `notification` (id: its position, data: the notification) for each one replicated after the position, in replicated order; `checkpoint` (id: a version) when a version has been sent whole", content_type = "text/event-stream", body = String),
        (status = 400, description = "No position, a malformed one, one past the replica's end, or a bad platform", body = ErrorBody),
        (status = 410, description = "The replica's log no longer holds that version: read the feed again", body = ErrorBody),
        (status = 503, description = "No query handler can answer now, or the API follows as many streams as it may (--max-streams); see Retry-After", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn stream_feed(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(params): Query<StreamParams>,
) -> Result<Response, ApiError> {
    caller.require_read_of(&params.platform)?;
    let resume = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map(|v| v.trim().to_string())
                .map_err(|_| ApiError::BadRequest("Last-Event-ID is not text".into()))
        })
        .transpose()?;
    let after = resume.or(params.from).ok_or_else(|| {
        ApiError::BadRequest(
            "say where to follow from: `from` (the `version` of GET /v1/feed) or a Last-Event-ID header"
                .into(),
        )
    })?;
    let permit = state.streams.clone().try_acquire_owned().map_err(|_| {
        ApiError::Unavailable(
            "the query API follows as many feed streams as it may (--max-streams); retry shortly"
                .into(),
        )
    })?;
    let request = FollowRequest {
        filter: Some(filter(&params.platform, &params.post_id, &params.kind)),
        after,
    };
    let batches = on_any_handler(&state, |mut handler| {
        let request = request.clone();
        async move { handler.follow(request).await }
    })
    .await?
    .into_inner();
    let events = events(batches)
        // The stream holds its slot until it ends, and ends when the service stops (a graceful
        // shutdown waits for every response to finish).
        .map(move |event| {
            let _slot = &permit;
            event
        })
        .take_until(state.stop.clone().cancelled_owned());
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The handler's batches as SSE events. A failure of the handler mid-stream (it stopped, the
/// connection broke) ends the stream with an `error` event: the client reconnects with its last
/// event id, and another handler goes on from there.
fn events(
    batches: impl Stream<Item = Result<FeedBatch, tonic::Status>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    batches
        .scan(false, |failed, batch| {
            let out = if *failed {
                None
            } else {
                match batch {
                    Ok(batch) => Some(batch_events(batch)),
                    Err(status) => {
                        *failed = true;
                        let message = ApiError::from(status).to_string();
                        Some(vec![Event::default().event("error").data(message)])
                    }
                }
            };
            futures::future::ready(out)
        })
        .flat_map(|events| futures::stream::iter(events.into_iter().map(Ok)))
}

fn batch_events(batch: FeedBatch) -> Vec<Event> {
    let mut events: Vec<Event> = batch
        .items
        .into_iter()
        .map(|item| {
            let data = item.notification.map(to_json).unwrap_or(Value::Null);
            Event::default()
                .event("notification")
                .id(item.position)
                .data(data.to_string())
        })
        .collect();
    if let Some(version) = batch.checkpoint {
        events.push(
            Event::default()
                .event("checkpoint")
                .id(version.to_string())
                .data(json!({"version": version}).to_string()),
        );
    }
    events
}
