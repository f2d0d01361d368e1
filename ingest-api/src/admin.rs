//! Dead letters for operators (the `admin` scope): list them, read one, replay a refused batch.
//!
//! The letters live beside the master store ([`sluice_core::dead_letter`]); this node reaches
//! them through the publisher. A replay sends the letter's notifications through the same path
//! as a POST with `ack=durable` (today's validation, shared memory, a new batch of this node),
//! and only once they are durable is the letter moved to `replayed/`. A notification the table
//! already holds is dropped by the replica as for any retry, so replaying twice stores nothing
//! twice.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_auth::Caller;
use sluice_core::Notification;
use sluice_core::notification::now_micros;
use sluice_proto::v1::{GetDeadLetterRequest, ListDeadLettersRequest};

use crate::AppState;
use crate::error::ApiError;
use crate::memory::Admitted;
use crate::openapi::{ErrorBody, KeyRefusals};
use crate::routes::{Ack, admit_and_wait};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// The most letters listed (100 unless given).
    limit: Option<u32>,
}

/// A dead letter's id in a path, as the OpenAPI document names its parts (the handlers take
/// them as one tuple).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
struct LetterPath {
    /// refused, quarantined or replayed
    kind: String,
    producer: String,
    sequence: String,
}

/// `GET /v1/admin/dead-letters[?limit=N]`: the letters waiting for an operator, oldest first,
/// without their notifications.
#[utoipa::path(get, path = "/v1/admin/dead-letters", tag = "admin", params(ListParams),
    responses(
        (status = 200, description = "The letters and how many there are", body = Object),
        (status = 503, description = "The publisher does not answer", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let Query(params) = params.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut request = tonic::Request::new(ListDeadLettersRequest {
        limit: params.limit.unwrap_or(100),
    });
    request.set_timeout(Duration::from_secs(30));
    let answer = state
        .publisher
        .clone()
        .list_dead_letters(request)
        .await
        .map_err(|s| unavailable("list the dead letters", &s))?
        .into_inner();
    let letters = answer
        .letters_json
        .iter()
        .map(|letter| parse_letter(letter))
        .collect::<Result<Vec<Value>, ApiError>>()?;
    Ok(Json(json!({ "total": answer.total, "letters": letters })))
}

/// `GET /v1/admin/dead-letters/{kind}/{producer}/{sequence}`: one letter with its notifications.
#[utoipa::path(get, path = "/v1/admin/dead-letters/{kind}/{producer}/{sequence}", tag = "admin",
    params(LetterPath),
    responses(
        (status = 200, description = "The letter with its notifications", body = Object),
        (status = 400, description = "Not a dead letter's id", body = ErrorBody),
        (status = 404, description = "No such letter", body = ErrorBody),
        (status = 503, description = "The publisher does not answer", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, producer, sequence)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let letter = read_letter(&state, &format!("{kind}/{producer}/{sequence}")).await?;
    Ok(Json(letter))
}

/// `POST /v1/admin/dead-letters/refused/{producer}/{sequence}/replay`
#[utoipa::path(post, path = "/v1/admin/dead-letters/{kind}/{producer}/{sequence}/replay", tag = "admin",
    params(LetterPath),
    responses(
        (status = 200, description = "Replayed: its notifications are durable again", body = Object),
        (status = 400, description = "Not a refused batch's letter", body = ErrorBody),
        (status = 404, description = "No such letter", body = ErrorBody),
        (status = 503, description = "The publisher does not answer", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, producer, sequence)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let id = format!("{kind}/{producer}/{sequence}");
    let letter = read_letter(&state, &id).await?;
    if letter["kind"] != "refused" {
        return Err(ApiError::BadRequest(format!(
            "dead letter {id} is a {} segment, not a refused batch: it has no rows to replay",
            letter["kind"].as_str().unwrap_or("different")
        )));
    }
    let rows = letter["notifications"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut notifications = Vec::with_capacity(rows.len());
    let mut invalid = Vec::new();
    for (index, row) in rows.iter().enumerate() {
        let received_at = row["received_at"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(now_micros, |t| t.timestamp_micros());
        match Notification::from_json(&row.to_string(), received_at) {
            Ok(notification) => notifications.push(notification),
            Err(reason) => invalid.push(json!({"index": index, "reason": reason})),
        }
    }
    if !invalid.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "dead letter {id} holds {} notifications that are not valid today, so it stays \
             as it is: {}",
            invalid.len(),
            Value::Array(invalid)
        )));
    }
    let rows = notifications.len();
    let outcomes = if notifications.is_empty() {
        Vec::new()
    } else {
        admit_and_wait(&state, notifications, Ack::Durable).await?
    };
    let mut request = tonic::Request::new(GetDeadLetterRequest {
        letter_id: id.clone(),
    });
    request.set_timeout(Duration::from_secs(30));
    state
        .publisher
        .clone()
        .resolve_dead_letter(request)
        .await
        .map_err(|s| unavailable("mark the dead letter replayed", &s))?;
    let duplicates = outcomes
        .iter()
        .filter(|o| matches!(o, Admitted::Duplicate { .. }))
        .count();
    tracing::info!(letter = id, rows, duplicates, "dead letter replayed");
    Ok(Json(json!({
        "letter": id,
        "replayed": rows,
        "accepted": rows - duplicates,
        "duplicates": duplicates,
    })))
}

async fn read_letter(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let mut request = tonic::Request::new(GetDeadLetterRequest {
        letter_id: id.to_string(),
    });
    request.set_timeout(Duration::from_secs(30));
    let answer = state
        .publisher
        .clone()
        .get_dead_letter(request)
        .await
        .map_err(|s| match s.code() {
            tonic::Code::NotFound => ApiError::NotFound(format!("no dead letter {id}")),
            tonic::Code::InvalidArgument => ApiError::BadRequest(s.message().to_string()),
            _ => unavailable("read the dead letter", &s),
        })?
        .into_inner();
    parse_letter(&answer.letter_json)
}

fn parse_letter(letter: &str) -> Result<Value, ApiError> {
    serde_json::from_str(letter).map_err(|e| {
        ApiError::Internal(format!("the publisher sent a letter that is not JSON: {e}"))
    })
}

fn unavailable(what: &str, status: &tonic::Status) -> ApiError {
    ApiError::Unavailable(format!(
        "cannot {what}: the publisher answered {:?}: {}",
        status.code(),
        status.message()
    ))
}
