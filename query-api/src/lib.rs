//! The query API: where analysts send SQL, and where anyone reads a post's state.
//!
//! - [`routes`]: `POST /v1/query` sends the SQL to a query handler over gRPC and renders its
//!   Arrow answer ([`render`]) as JSON, CSV or Arrow; `GET /v1/queries/{id}` asks for a
//!   query's state; `GET /v1/posts/{platform}/{post_id}` and `…/events` build a post's state
//!   and audit trail ([`posts`]) from the ingest nodes' shared memory and the replica.
//! - [`feed`]: the newsfeed: `GET /v1/feed` (the current position and the history up to it)
//!   and `GET /v1/feed/stream` (every notification after a position, as Server-Sent Events
//!   that resume with `Last-Event-ID`).
//! - [`error`]: the one mapping from errors (and gRPC codes) to HTTP answers.
//! - [`openapi`]: the OpenAPI document of these routes, at `GET /openapi.json`.
//! - [`board`]: `GET /v1/board`, the pipeline's state gathered from every ingest node and query
//!   handler, which the [`console`] (a web page at `/console/`, built into the binary) draws as
//!   a live board beside its SQL console.
//!
//! Every endpoint but the probe needs an API key with the `read` scope ([`sluice_auth`])
//! unless auth is off; the key is passed on to the ingest nodes a post's trail asks.
//!
//! The service keeps no state: run as many as you like behind a load balancer.

pub mod board;
pub mod console;
pub mod error;
pub mod feed;
pub mod openapi;
pub mod posts;
pub mod render;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sluice_auth::Keys;
use sluice_proto::Channel;
use sluice_proto::v1::query_handler_client::QueryHandlerClient;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

/// The query API's own settings.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "query_api_config")]
pub struct Config {
    /// The ingest APIs whose shared memory holds notifications not yet in the replica
    /// (comma-separated base URLs). Post state and audit trails ask each of them.
    #[arg(
        long,
        env = "SLUICE_INGEST_URLS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:8080"
    )]
    pub ingest_urls: Vec<String>,
    /// The largest query request body accepted, in bytes.
    #[arg(long, env = "SLUICE_QUERY_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub query_max_body_bytes: usize,
    /// Requests served at once (probes and `/metrics` aside); more are answered 503 with
    /// Retry-After at once instead of piling up in memory.
    #[arg(long, env = "SLUICE_QUERY_API_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Newsfeed streams (`GET /v1/feed/stream`) followed at once; they last, so they are
    /// counted apart from `--max-in-flight`, and more are answered 503.
    #[arg(long, env = "SLUICE_QUERY_API_MAX_STREAMS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    #[clap(flatten)]
    pub post_actions: posts::PostActions,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Balanced over every query handler given.
    pub handler: QueryHandlerClient<Channel>,
    /// One client per query handler: a read whose handler is unavailable is tried on each in
    /// turn, and a query's state is asked of each (only the handler that ran it knows it).
    pub handlers: Arc<Handlers>,
    pub http: reqwest::Client,
    pub ingest_urls: Arc<Vec<String>>,
    /// Which notification types create, edit, delete and restore a post.
    pub post_actions: Arc<posts::PostActions>,
    /// The API keys calls are checked against (open when auth is off).
    pub keys: Arc<Keys>,
    /// Slots for newsfeed streams (`--max-streams`).
    pub streams: Arc<Semaphore>,
    /// Fires when the service stops: newsfeed streams end with it.
    pub stop: CancellationToken,
}

impl FromRef<AppState> for Arc<Keys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

pub fn router(state: AppState, config: &Config) -> Router {
    let in_flight = Arc::new(Semaphore::new(config.max_in_flight as usize));
    Router::new()
        .route("/v1/query", post(routes::post_query))
        .route("/v1/board", get(board::get_board))
        .route("/v1/queries/{id}", get(routes::get_query))
        .route("/v1/posts/{platform}/{post_id}", get(routes::get_post))
        .route(
            "/v1/posts/{platform}/{post_id}/events",
            get(routes::get_post_events),
        )
        .route("/v1/feed", get(feed::get_feed))
        .layer(axum::middleware::from_fn_with_state(in_flight, at_most))
        .route("/v1/feed/stream", get(feed::stream_feed))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/", get(console::root))
        .route("/console", get(console::console_bare))
        .route("/console/", get(console::index))
        .route("/console/{file}", get(console::asset))
        .merge(sluice_telemetry::router())
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(config.query_max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            "query-api",
            sluice_telemetry::track_http,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves the request if fewer than the limit are in flight, else answers 503 at once.
async fn at_most(
    State(in_flight): State<Arc<Semaphore>>,
    request: Request,
    next: Next,
) -> Response {
    match in_flight.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => error::ApiError::Unavailable(
            "the query API is serving as many requests as it may at once \
             (--max-in-flight); retry shortly"
                .into(),
        )
        .into_response(),
    }
}

/// A client per query handler: the addresses of a list, or those a `dns://` name resolves to,
/// looked up again every few seconds (a headless Kubernetes Service's ready pods).
pub struct Handlers {
    clients: std::sync::RwLock<Vec<(String, QueryHandlerClient<Channel>)>>,
}

impl Handlers {
    pub fn new(handler_addr: &str) -> anyhow::Result<Arc<Self>> {
        let handlers = Arc::new(Handlers {
            clients: std::sync::RwLock::new(Vec::new()),
        });
        if let Some(name) = handler_addr.trim().strip_prefix("dns://") {
            tokio::spawn(follow_dns(
                name.trim_end_matches('/').to_string(),
                Arc::downgrade(&handlers),
            ));
        } else {
            let clients = handler_addr
                .split(',')
                .map(str::trim)
                .filter(|addr| !addr.is_empty())
                .map(|addr| Ok((addr.to_string(), handler_client(addr)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            *handlers.write() = clients;
        }
        Ok(handlers)
    }

    /// The clients, one per handler known now.
    pub fn all(&self) -> Vec<QueryHandlerClient<Channel>> {
        self.clients
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(_, client)| client.clone())
            .collect()
    }

    /// The clients with their addresses, one per handler known now.
    pub fn named(&self) -> Vec<(String, QueryHandlerClient<Channel>)> {
        self.clients
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<(String, QueryHandlerClient<Channel>)>> {
        self.clients
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Keeps `handlers` to the addresses `name` resolves to, until they are dropped.
async fn follow_dns(name: String, handlers: std::sync::Weak<Handlers>) {
    loop {
        let Some(current) = handlers.upgrade() else {
            return;
        };
        match tokio::net::lookup_host(&name).await {
            Ok(found) => {
                let mut found: Vec<String> = found.map(|a| a.to_string()).collect();
                found.sort();
                found.dedup();
                let mut clients = current.write();
                let mut next = Vec::with_capacity(found.len());
                for addr in found {
                    let known = clients
                        .iter()
                        .find(|(a, _)| *a == addr)
                        .map(|(_, c)| c.clone());
                    match known.map_or_else(|| handler_client(&addr), Ok) {
                        Ok(client) => next.push((addr, client)),
                        Err(error) => tracing::warn!(%error, addr, "not a query handler address"),
                    }
                }
                *clients = next;
            }
            Err(error) => tracing::warn!(%error, name, "cannot resolve the query handlers"),
        }
        drop(current);
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    }
}

/// A client for the query handler at `addr`.
pub fn handler_client(addr: &str) -> anyhow::Result<QueryHandlerClient<Channel>> {
    Ok(QueryHandlerClient::new(sluice_proto::lazy_channel(addr)?)
        .max_decoding_message_size(sluice_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(sluice_proto::MAX_MESSAGE_BYTES))
}

pub fn build(config: &Config, handler_addr: &str, keys: Arc<Keys>) -> anyhow::Result<AppState> {
    Ok(AppState {
        handler: handler_client(handler_addr)?,
        handlers: Handlers::new(handler_addr)?,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?,
        ingest_urls: Arc::new(
            config
                .ingest_urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .filter(|u| !u.is_empty())
                .collect(),
        ),
        post_actions: Arc::new(config.post_actions.clone()),
        keys,
        streams: Arc::new(Semaphore::new(config.max_streams as usize)),
        stop: CancellationToken::new(),
    })
}

/// Serves the query API on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    handler_addr: &str,
    keys: Arc<Keys>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut state = build(&config, handler_addr, keys)?;
    state.stop = shutdown.clone();
    tracing::info!(addr = ?listener.local_addr().ok(), query_handler = handler_addr, ingest = ?config.ingest_urls, "query API listening");
    axum::serve(listener, router(state, &config))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_past_the_in_flight_limit_are_answered_503_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let release = Arc::new(tokio::sync::Notify::new());
        let entered = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(
                "/slow",
                get({
                    let (release, entered) = (release.clone(), entered.clone());
                    move || async move {
                        let released = release.notified();
                        entered.fetch_add(1, Ordering::SeqCst);
                        released.await;
                        "done"
                    }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(Semaphore::new(2)),
                at_most,
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slow", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let held: Vec<_> = (0..2)
            .map(|_| tokio::spawn(client.get(&url).send()))
            .collect();
        while entered.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refused = client.get(&url).send().await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "1");
        let body = refused.text().await.unwrap();
        assert!(body.contains("--max-in-flight"), "{body}");
        release.notify_waiters();
        for request in held {
            assert_eq!(request.await.unwrap().unwrap().status(), 200);
        }
        // With the slots free again, a request is served.
        let third = tokio::spawn(client.get(&url).send());
        while entered.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        release.notify_waiters();
        assert_eq!(third.await.unwrap().unwrap().status(), 200);
    }
}
