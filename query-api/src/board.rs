//! `GET /v1/board`: what the console's live board draws, gathered in one call.
//!
//! The query API keeps no state of its own, so each call asks every ingest node for its
//! `/v1/stats` (shared memory by color, freshness) with the caller's key, and every query
//! handler for its gRPC `Stats` (yellow and orange queries, replica version), all at once and
//! each under a short timeout: a node that does not answer is listed with why, and the rest
//! of the board still draws. Rates (notifications/s) are the browser's to work out from two
//! calls, from the cumulative counts here.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use serde_json::{Value, json};
use sluice_auth::Caller;
use sluice_proto::v1::HandlerStatsRequest;

use crate::AppState;
use crate::error::ApiError;
use crate::openapi::{ErrorBody, KeyRefusals};

/// How long the board waits for any one node: it refreshes every second or two, so a slow node
/// is shown as not answering rather than holding the whole board back.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /v1/board`: the pipeline's state now, per ingest node and per query handler.
#[utoipa::path(get, path = "/v1/board", tag = "read",
    responses(
        (status = 200, description = "Every ingest node's shared memory by color (gray, blue, green; evicted is red) and freshness, every query handler's yellow and orange queries and replica version, and their totals. A node that did not answer has `ok: false` and the reason", body = Object),
        (status = 503, description = "The API is at its in-flight limit; see Retry-After", body = ErrorBody),
        KeyRefusals
    ))]
pub(crate) async fn get_board(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_read()?;
    let authorization = caller.authorization().cloned();
    let ingest = state.ingest_urls.iter().map(|base| {
        let mut request = state
            .http
            .get(format!("{base}/v1/stats"))
            .timeout(ASK_TIMEOUT);
        if let Some(authorization) = &authorization {
            request = request.header(header::AUTHORIZATION, authorization.clone());
        }
        async move {
            let answer = async {
                let response = request.send().await?.error_for_status()?;
                response.json::<Value>().await
            }
            .await;
            match answer {
                Ok(stats) => ingest_node(base, &stats),
                Err(error) => json!({"url": base, "ok": false, "error": error.to_string()}),
            }
        }
    });
    let handlers = state
        .handlers
        .named()
        .into_iter()
        .map(|(addr, mut client)| {
            let mut request = tonic::Request::new(HandlerStatsRequest {});
            request.set_timeout(ASK_TIMEOUT);
            async move {
                match client.stats(request).await {
                    Ok(stats) => {
                        let stats = stats.into_inner();
                        json!({
                            "addr": addr,
                            "ok": true,
                            "queries_waiting": stats.queries_waiting,
                            "queries_running": stats.queries_running,
                            "cached_answers": stats.cached_answers,
                            "cache_bytes": stats.cache_bytes,
                            "replica_version": stats.replica_version,
                            "queries_answered": stats.queries_answered,
                            "queries_failed": stats.queries_failed,
                        })
                    }
                    Err(status) => json!({"addr": addr, "ok": false, "error": status.message()}),
                }
            }
        });
    let (ingest, handlers) = futures::join!(
        futures::future::join_all(ingest),
        futures::future::join_all(handlers)
    );
    let totals = totals(&ingest, &handlers);
    Ok(Json(json!({
        "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "totals": totals,
        "ingest": ingest,
        "handlers": handlers,
    })))
}

/// One ingest node's entry: its stats as it gave them, with its colors named as the design
/// names them (evicted entries are red) and the count it has ever accepted, for rates.
fn ingest_node(url: &str, stats: &Value) -> Value {
    let memory = &stats["memory"];
    let count = |field: &str| memory[field].as_u64().unwrap_or(0);
    json!({
        "url": url,
        "ok": true,
        "producer_id": stats["producer_id"],
        "gray": count("gray"),
        "blue": count("blue"),
        "green": count("green"),
        "red": count("evicted"),
        // Entries are only ever removed by eviction, so these two add up to every
        // notification this node has accepted since it started.
        "accepted": count("entries") + count("evicted"),
        "used_bytes": count("used_bytes"),
        "budget_bytes": count("budget_bytes"),
        "freshness": stats["freshness"],
    })
}

/// The sums over every node that answered; the replica version is the newest any handler reads.
fn totals(ingest: &[Value], handlers: &[Value]) -> Value {
    let sum = |nodes: &[Value], field: &str| -> u64 {
        nodes.iter().filter_map(|n| n[field].as_u64()).sum()
    };
    json!({
        "gray": sum(ingest, "gray"),
        "blue": sum(ingest, "blue"),
        "green": sum(ingest, "green"),
        "red": sum(ingest, "red"),
        "accepted": sum(ingest, "accepted"),
        "yellow": sum(handlers, "queries_waiting") + sum(handlers, "queries_running"),
        "orange": sum(handlers, "cached_answers"),
        "queries_answered": sum(handlers, "queries_answered"),
        "queries_failed": sum(handlers, "queries_failed"),
        "replica_version": handlers.iter().filter_map(|h| h["replica_version"].as_u64()).max(),
        "ingest_nodes": ingest.len(),
        "ingest_nodes_up": ingest.iter().filter(|n| n["ok"] == true).count(),
        "handlers": handlers.len(),
        "handlers_up": handlers.iter().filter(|h| h["ok"] == true).count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_did_not_answer_counts_in_no_total() {
        let stats = json!({
            "producer_id": "p1",
            "memory": {"entries": 10, "gray": 1, "blue": 2, "green": 7, "evicted": 5,
                       "used_bytes": 100, "budget_bytes": 1000},
            "freshness": {"notifications": 7},
        });
        let ingest = vec![
            ingest_node("http://a", &stats),
            json!({"url": "http://b", "ok": false, "error": "refused"}),
        ];
        let handlers = vec![
            json!({"ok": true, "queries_waiting": 1, "queries_running": 2, "cached_answers": 3, "replica_version": 4}),
            json!({"ok": true, "queries_waiting": 0, "queries_running": 1, "cached_answers": 1, "replica_version": 6}),
        ];
        let totals = totals(&ingest, &handlers);
        assert_eq!(ingest[0]["accepted"], 15);
        assert_eq!(ingest[0]["red"], 5);
        assert_eq!(totals["green"], 7);
        assert_eq!(totals["yellow"], 4);
        assert_eq!(totals["orange"], 4);
        assert_eq!(totals["replica_version"], 6);
        assert_eq!(totals["ingest_nodes_up"], 1);
        assert_eq!(totals["ingest_nodes"], 2);
    }
}
