//! What Sluice's operators watch: Prometheus metrics, access logs and the log format, the same
//! for every service.
//!
//! - Metrics go through the `metrics` facade to one Prometheus recorder per process
//!   ([`install`]). Every series Sluice records is named and described once, in [`names`], so
//!   the catalogue, the code and the Grafana dashboard (`infra/grafana/sluice.json`) agree.
//! - Each REST service serves `GET /metrics` on its own port ([`router`]); the gRPC services
//!   serve it on a small HTTP port of their own (`--metrics-addr`, [`serve`]). In `sluice all`
//!   every service shares the process, so each `/metrics` shows every series.
//! - Values that are read rather than counted (entries by color, pending segments) are set by
//!   the services' scrape hooks ([`on_scrape`]) just before a scrape renders.
//! - [`track_http`] is the access log and the request metrics of every REST route: one info
//!   line and one count per request, by route template (never by raw path, which a caller
//!   controls), with the rejected ones counted by reason.
//! - [`init_logs`]: logs to stderr, as text or, with `SLUICE_LOG_FORMAT=json`, one JSON object
//!   per line.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod names;

/// Bucket bounds of every `_seconds` histogram: 1 ms to 2 minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Bucket bounds of every other histogram (rows, bytes): powers of ten up to 1e9.
const SIZE_BUCKETS: &[f64] = &[1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

type Hook = Box<dyn Fn() + Send + Sync>;
static SCRAPE_HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// Installs the process's Prometheus recorder and describes every series; later calls return
/// the same handle. Spawns the recorder's upkeep on the current runtime, if there is one.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), SECONDS_BUCKETS)
            .and_then(|builder| builder.set_buckets(SIZE_BUCKETS))
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only Sluice's"
            );
        }
        names::describe();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let upkeep = handle.clone();
            runtime.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        handle
    })
}

/// Runs `hook` before every scrape: for gauges whose value is read from a service's state.
pub fn on_scrape(hook: impl Fn() + Send + Sync + 'static) {
    SCRAPE_HOOKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .push(Box::new(hook));
}

/// The Prometheus text of every series this process records.
pub fn render() -> String {
    let handle = install();
    for hook in SCRAPE_HOOKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
    {
        hook();
    }
    handle.render()
}

/// `GET /metrics`, open like the probes: it shows counts and durations, never a key, an id or
/// a notification.
pub async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(),
    )
        .into_response()
}

/// A router with `GET /metrics`, to merge into a service's own.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/metrics", get(metrics))
}

/// Serves `GET /metrics` (and `GET /healthz`) on `listener` until `shutdown`: the metrics port
/// of a gRPC service.
pub async fn serve(listener: TcpListener, service: &'static str, shutdown: CancellationToken) {
    install();
    let addr = listener.local_addr().ok();
    tracing::info!(?addr, service, "metrics listening");
    let app = router()
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(service, track_http));
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::warn!(%error, service, "metrics server stopped");
    }
}

/// The access log and request metrics of one REST service (`State` is its name). Add it with
/// `Router::layer` after the routes, so that it sees the matched route template.
pub async fn track_http(
    State(service): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    // HTTP lets a caller invent methods: only the standard ones become label values.
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    let status = response.status();
    let seconds = started.elapsed().as_secs_f64();
    let labels = [
        ("service", service.to_string()),
        ("route", route.clone()),
        ("method", method.to_string()),
    ];
    metrics::histogram!(names::HTTP_REQUEST_SECONDS, &labels).record(seconds);
    let mut counted = labels.to_vec();
    counted.push(("status", status.as_u16().to_string()));
    metrics::counter!(names::HTTP_REQUESTS, &counted).increment(1);
    if let Some(reason) = rejection_reason(status) {
        metrics::counter!(names::HTTP_REJECTED, "service" => service, "reason" => reason)
            .increment(1);
    }
    // Probes and scrapes come every few seconds: the access log leaves them at debug.
    if matches!(route.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(
            service,
            method,
            route,
            status = status.as_u16(),
            ms = seconds * 1e3,
            "request"
        );
    } else {
        tracing::info!(
            service,
            method,
            route,
            status = status.as_u16(),
            ms = seconds * 1e3,
            "request"
        );
    }
    response
}

/// Why a request was refused, by its status: the `reason` label of rejected requests.
fn rejection_reason(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "too_large",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "rate_limited",
        503 => "unavailable",
        504 => "timeout",
        _ if status.is_client_error() => "other_client_error",
        _ if status.is_server_error() => "server_error",
        _ => return None,
    })
}

/// Logs to stderr. `SLUICE_LOG` (or `RUST_LOG`) sets the filter, `info` by default;
/// `SLUICE_LOG_FORMAT=json` writes one JSON object per line, for a log pipeline.
pub fn init_logs() -> Result<(), String> {
    let filter = std::env::var("SLUICE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_string());
    let format = std::env::var("SLUICE_LOG_FORMAT").unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr);
    match format.as_str() {
        "" | "text" => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        "json" => builder.json().with_current_span(false).init(),
        other => {
            builder.with_ansi(false).init();
            return Err(format!(
                "SLUICE_LOG_FORMAT={other:?} is not a log format: use text or json"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn requests_are_counted_by_route_template_and_rejections_by_reason() {
        install();
        let app: Router = Router::new()
            .route("/v1/things/{id}", get(|| async { StatusCode::FORBIDDEN }))
            .merge(router())
            .layer(axum::middleware::from_fn_with_state("unit", track_http));
        for id in ["a", "b", "c%20d"] {
            let request = axum::http::Request::get(format!("/v1/things/{id}"))
                .body(Body::empty())
                .unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
        }
        let unknown = axum::http::Request::get("/nowhere/secret-looking-path")
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(unknown).await.unwrap();
        let invented = axum::http::Request::builder()
            .method("INVENTED-METHOD")
            .uri("/v1/things/a")
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(invented).await.unwrap();
        on_scrape(|| metrics::gauge!(names::MEMORY_BUDGET_BYTES).set(42.0));

        let scrape = axum::http::Request::get("/metrics")
            .body(Body::empty())
            .unwrap();
        let response = app.oneshot(scrape).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .to_string()
        };
        let requests = line(
            "sluice_http_requests_total{service=\"unit\",route=\"/v1/things/{id}\",method=\"GET\"",
        );
        assert!(requests.ends_with(" 3"), "{requests}");
        assert!(
            line("sluice_http_rejected_total{service=\"unit\",reason=\"forbidden\"}")
                .ends_with(" 3")
        );
        assert!(text.contains("route=\"unmatched\""));
        assert!(!text.contains("secret-looking-path") && !text.contains("c%20d"));
        assert!(!text.contains("INVENTED") && text.contains("method=\"other\""));
        assert!(line("sluice_memory_budget_bytes").ends_with(" 42"));
        assert!(text.contains("# HELP sluice_http_requests_total"));
        assert!(text.contains("sluice_http_request_seconds_bucket{"));
    }
}
