//! The HTTP handlers.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_auth::Caller;
use sluice_proto::Channel;
use sluice_proto::v1::query_handler_client::QueryHandlerClient;
use sluice_proto::v1::{ExecuteRequest, GetQueryRequest, PostEventsRequest, QueryReply};
use tonic::{Code, Status};

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::{ErrorBody, KeyRefusals};
use crate::posts::{self, Event, MemoryEntry, MemoryPost};
use crate::render::{self, ARROW_STREAM, Format};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One read-only statement over the table `notifications`.
    #[schema(min_length = 1)]
    sql: String,
    /// `json` (the default), `csv` or `arrow` (an Arrow IPC stream).
    #[serde(default)]
    #[schema(pattern = "^(json|csv|arrow)$")]
    format: Option<String>,
    /// Answer at once with the query id; `GET /v1/queries/{id}` gives the result later.
    #[serde(default, rename = "async")]
    detach: bool,
}

/// Runs `call` through the balanced client and, when the handler it reached is unavailable
/// (down, restarting, or still loading the replica) or the call broke in transport (the handler
/// died under it), on each handler in turn: reads are safe to repeat, and the first answer the
/// handler itself gave is the answer.
pub(crate) async fn on_any_handler<T, F, Fut>(state: &AppState, call: F) -> Result<T, Status>
where
    F: Fn(QueryHandlerClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let first = call(state.handler.clone()).await;
    match first {
        Err(status) if worth_another_handler(&status) => {
            let mut last = status;
            for handler in state.handlers.all() {
                match call(handler.clone()).await {
                    Err(status) if worth_another_handler(&status) => last = status,
                    answer => return answer,
                }
            }
            Err(last)
        }
        answer => answer,
    }
}

/// UNAVAILABLE, or a status made on this side of the wire from a transport error (a connection
/// reset or closed mid-call gives UNKNOWN, CANCELLED or INTERNAL with the error as its source;
/// a status the handler sent has none).
fn worth_another_handler(status: &Status) -> bool {
    status.code() == Code::Unavailable || std::error::Error::source(status).is_some()
}

/// `POST /v1/query`.
#[utoipa::path(post, path = "/v1/query", tag = "read",
    request_body(content = QueryBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The answer: rows as JSON (or CSV, or Arrow), with the query's id, replica version and time", body = Object),
        (status = 202, description = "Asked with `async`: the query's id, to ask for later", body = Object),
        (status = 400, description = "Not SQL, not read-only, or a failure on the data (e.g. a division by zero)", body = ErrorBody),
        (status = 413, description = "The body is larger than accepted", body = ErrorBody),
        (status = 422, description = "The answer would be larger than allowed, or the query needs more memory than its limit", body = ErrorBody),
        (status = 504, description = "The query did not finish within its timeout", body = ErrorBody),
        (status = 503, description = "No query handler can answer now, a query handler that ran part of a distributed query was lost (retry: the next run leaves it out), or the API is at its in-flight limit; see Retry-After", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn post_query(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    caller.require_read()?;
    let body: QueryBody = serde_json::from_slice(&body?).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be a JSON object {{\"sql\": \"…\", \"format\": \"json\"|\"csv\"|\"arrow\"}}: {e}"
        ))
    })?;
    let format = Format::parse(body.format.as_deref().unwrap_or("json"))?;
    if body.sql.trim().is_empty() {
        return Err(ApiError::BadRequest("sql is empty".into()));
    }
    let request = ExecuteRequest {
        sql: body.sql,
        detach: body.detach,
    };
    let reply = on_any_handler(&state, |mut handler| {
        let request = request.clone();
        async move { handler.execute(request).await }
    })
    .await?
    .into_inner();
    render_reply(reply, format)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FormatParam {
    /// `json` (the default), `csv` or `arrow`.
    format: Option<String>,
}

/// `GET /v1/queries/{id}`: the query's state, and its result while it is cached.
#[utoipa::path(get, path = "/v1/queries/{id}", tag = "read",
    params(("id" = String, Path, description = "The id a query's answer carries"), FormatParam),
    responses(
        (status = 200, description = "The query's state (yellow while waiting or running), and its rows while cached", body = Object),
        (status = 400, description = "An unknown format", body = ErrorBody),
        (status = 404, description = "No handler remembers that query", body = ErrorBody),
        (status = 503, description = "No query handler can answer now, or the API is at its in-flight limit; see Retry-After", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn get_query(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(params): Query<FormatParam>,
) -> Result<Response, ApiError> {
    caller.require_read()?;
    let format = Format::parse(params.format.as_deref().unwrap_or("json"))?;
    // Only the handler that ran the query remembers it: ask each. An unavailable one may be it,
    // so "unavailable" wins over "not found".
    let mut failure: Option<Status> = None;
    for mut handler in state.handlers.all() {
        match handler
            .get_query(GetQueryRequest {
                query_id: id.clone(),
            })
            .await
        {
            Ok(reply) => return render_reply(reply.into_inner(), format),
            Err(status) => {
                if failure
                    .as_ref()
                    .is_none_or(|f| f.code() != Code::Unavailable)
                {
                    failure = Some(status);
                }
            }
        }
    }
    Err(failure
        .unwrap_or_else(|| Status::not_found(format!("no query {id} is remembered")))
        .into())
}

fn meta(reply: &QueryReply) -> Value {
    let mut meta = json!({
        "query_id": reply.query_id,
        "state": reply.state,
        "sql": reply.sql,
        "replica_version": reply.replica_version,
        "elapsed_ms": reply.elapsed_micros as f64 / 1000.0,
        "cached": reply.cached,
        "row_count": reply.rows,
        "rules": reply.rules,
    });
    if !reply.fallback.is_empty() {
        meta["fallback"] = reply.fallback.clone().into();
    }
    if !reply.workers.is_empty() {
        meta["distributed"] = json!({ "stages": reply.stages, "workers": reply.workers });
    }
    if !reply.error.is_empty() {
        meta["error"] = reply.error.clone().into();
        meta["error_code"] = format!("{:?}", tonic::Code::from_i32(reply.error_code)).into();
    }
    meta
}

fn render_reply(reply: QueryReply, format: Format) -> Result<Response, ApiError> {
    let has_result = reply.state == "orange" || reply.state == "done";
    let has_result = has_result && !reply.arrow_ipc.is_empty();
    if !has_result || format == Format::Json {
        // A query that failed answers as it would have when run directly; one still running is
        // 202, so that a script never mistakes either for a result.
        let status = match reply.state.as_str() {
            "failed" => ApiError::from(tonic::Status::new(
                tonic::Code::from_i32(reply.error_code),
                reply.error.clone(),
            ))
            .status(),
            "yellow" => StatusCode::ACCEPTED,
            _ => StatusCode::OK,
        };
        let mut body = meta(&reply);
        if has_result {
            let (schema, batches) = render::decode(&reply.arrow_ipc)?;
            let (columns, rows) = render::to_json(&schema, &batches)?;
            body["columns"] = columns;
            body["rows"] = rows;
        } else if format != Format::Json && status == StatusCode::OK {
            return Err(ApiError::NotFound(format!(
                "query {} is {}: its result is no longer kept; run it again",
                reply.query_id, reply.state
            )));
        }
        return Ok((status, Json(body)).into_response());
    }
    let (content_type, bytes) = match format {
        Format::Arrow => (ARROW_STREAM, reply.arrow_ipc.clone()),
        Format::Csv => {
            let (schema, batches) = render::decode(&reply.arrow_ipc)?;
            (
                "text/csv; charset=utf-8",
                render::to_csv(&schema, &batches)?,
            )
        }
        Format::Json => unreachable!("answered above"),
    };
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    for (name, value) in [
        ("x-sluice-query-id", reply.query_id.clone()),
        (
            "x-sluice-replica-version",
            reply.replica_version.to_string(),
        ),
        (
            "x-sluice-elapsed-ms",
            (reply.elapsed_micros as f64 / 1000.0).to_string(),
        ),
        ("x-sluice-cached", reply.cached.to_string()),
        ("x-sluice-rows", reply.rows.to_string()),
        ("x-sluice-rules", reply.rules.join(",")),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    Ok(response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AsOfParam {
    /// The post as it was at this moment (RFC 3339); now unless given.
    #[param(format = DateTime)]
    as_of: Option<String>,
}

/// The post's trail from every source, for a caller with the `read` scope, and what went wrong
/// on the way (an ingest node that did not answer makes the answer less fresh, not wrong: what
/// it held is either lost with it or on its way to the replica).
async fn trail(
    state: &AppState,
    caller: &Caller,
    platform: &str,
    post_id: &str,
    as_of: Option<&str>,
) -> Result<(Vec<Event>, Value), ApiError> {
    caller.require_read()?;
    let as_of = as_of.map(posts::parse_as_of).transpose()?;
    let memory_reads = state.ingest_urls.iter().map(|base| {
        // The ids go in as path segments, percent-encoded by the URL type.
        let url = reqwest::Url::parse(base).map(|mut url| {
            if let Ok(mut path) = url.path_segments_mut() {
                path.pop_if_empty()
                    .extend(["v1", "memory", "posts", platform, post_id]);
            }
            url
        });
        let http = state.http.clone();
        let authorization = caller.authorization().cloned();
        async move {
            let url = url.map_err(|e| format!("{base} is not a URL: {e}"))?;
            let mut request = http.get(url);
            if let Some(authorization) = authorization {
                request = request.header(header::AUTHORIZATION, authorization);
            }
            let answer = request.send().await.and_then(|r| r.error_for_status());
            match answer {
                Ok(response) => response
                    .json::<MemoryPost>()
                    .await
                    .map(|p| p.notifications)
                    .map_err(|e| format!("{base}: {e}")),
                Err(e) => Err(format!("{base}: {e}")),
            }
        }
    });
    let request = PostEventsRequest {
        platform: platform.to_string(),
        post_id: post_id.to_string(),
        as_of_micros: as_of,
    };
    let replica_read = on_any_handler(state, |mut handler| {
        let request = request.clone();
        async move { handler.post_events(request).await }
    });
    let (memory, replica) = futures::join!(futures::future::join_all(memory_reads), replica_read);
    let replica = replica?.into_inner();
    let mut entries: Vec<MemoryEntry> = Vec::new();
    let mut warnings = Vec::new();
    for read in memory {
        match read {
            Ok(found) => entries.extend(found),
            Err(error) => warnings.push(format!("ingest node not consulted: {error}")),
        }
    }
    let from_memory = entries.len();
    let events = posts::merge(entries, replica.notifications, as_of);
    let sources = json!({
        "memory": from_memory,
        "replica_version": replica.replica_version,
        "warnings": warnings,
    });
    Ok((events, sources))
}

/// `GET /v1/posts/{platform}/{post_id}[?as_of=…]`: the post's state.
#[utoipa::path(get, path = "/v1/posts/{platform}/{post_id}", tag = "read",
    params(("platform" = String, Path), ("post_id" = String, Path), AsOfParam),
    responses(
        (status = 200, description = "The post's state, folded from its notifications", body = Object),
        (status = 400, description = "`as_of` is not an RFC 3339 time", body = ErrorBody),
        (status = 404, description = "No notification of that post (by then)", body = ErrorBody),
        (status = 503, description = "No query handler can answer now, or the API is at its in-flight limit; see Retry-After", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn get_post(
    State(state): State<AppState>,
    caller: Caller,
    Path((platform, post_id)): Path<(String, String)>,
    Query(params): Query<AsOfParam>,
) -> Result<Json<Value>, ApiError> {
    let (events, sources) = trail(
        &state,
        &caller,
        &platform,
        &post_id,
        params.as_of.as_deref(),
    )
    .await?;
    if events.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no notification of post {platform}/{post_id}{}",
            params
                .as_of
                .map(|t| format!(" occurred at or before {t}"))
                .unwrap_or_default()
        )));
    }
    let mut body = json!({"platform": platform, "post_id": post_id, "as_of": params.as_of});
    body["state"] = posts::fold(&events, &state.post_actions);
    body["sources"] = sources;
    Ok(Json(body))
}

/// `GET /v1/posts/{platform}/{post_id}/events[?as_of=…]`: its audit trail, oldest first.
#[utoipa::path(get, path = "/v1/posts/{platform}/{post_id}/events", tag = "read",
    params(("platform" = String, Path), ("post_id" = String, Path), AsOfParam),
    responses(
        (status = 200, description = "The post's notifications, oldest first, with where each came from", body = Object),
        (status = 400, description = "`as_of` is not an RFC 3339 time", body = ErrorBody),
        (status = 503, description = "No query handler can answer now, or the API is at its in-flight limit; see Retry-After", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn get_post_events(
    State(state): State<AppState>,
    caller: Caller,
    Path((platform, post_id)): Path<(String, String)>,
    Query(params): Query<AsOfParam>,
) -> Result<Json<Value>, ApiError> {
    let (events, sources) = trail(
        &state,
        &caller,
        &platform,
        &post_id,
        params.as_of.as_deref(),
    )
    .await?;
    Ok(Json(json!({
        "platform": platform,
        "post_id": post_id,
        "as_of": params.as_of,
        "events": events.iter().map(Event::to_json).collect::<Vec<_>>(),
        "sources": sources,
    })))
}

/// `GET /readyz`: a query handler answers this API (any answer but UNAVAILABLE: one that
/// has not loaded the replica yet still answers, and a table that does not exist yet is no
/// reason to take this API out of a load balancer). Not ready (503, saying why) when none does.
#[utoipa::path(get, path = "/readyz", tag = "probes", security(()),
    responses(
        (status = 200, description = "A query handler answers", body = Object),
        (status = 503, description = "No query handler answers", body = ErrorBody),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut last = None;
    for mut handler in state.handlers.all() {
        let mut request = tonic::Request::new(GetQueryRequest {
            query_id: "readyz".into(),
        });
        request.set_timeout(std::time::Duration::from_secs(2));
        match handler.get_query(request).await {
            Err(status) if status.code() == Code::Unavailable => last = Some(status),
            Err(status) if status.code() == Code::DeadlineExceeded => last = Some(status),
            _ => return Ok(Json(json!({ "ready": true }))),
        }
    }
    Err(ApiError::Unavailable(match last {
        Some(status) => format!("no query handler answers: {}", status.message()),
        None => "no query handler is known (an empty list, or a name that resolves to none)".into(),
    }))
}

/// `GET /healthz`.
#[utoipa::path(get, path = "/healthz", tag = "probes", security(()),
    responses((status = 200, description = "The process is up", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound(
        "no such endpoint; see POST /v1/query, GET /v1/queries/{id}, GET /v1/posts/{platform}/{post_id}[/events], GET /v1/board, and the console at /console/"
            .into(),
    )
}
