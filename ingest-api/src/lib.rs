//! The ingest API: where platforms POST notifications.
//!
//! - [`routes`]: `POST /v1/notifications` parses a body ([`body`]), admits each notification
//!   into [`memory::SharedMemory`] as gray, hands the new ones to the batcher, and — for the
//!   default `ack=durable` — waits until they are blue before it answers.
//!   CloudEvents (structured, batched and binary mode) arrive on the same route and are mapped
//!   onto notifications by [`cloudevents`] before the same checks.
//! - [`batcher`]: group commit. It drains gray notifications into batches and appends each
//!   batch to a publisher over gRPC; when the publisher confirms, the batch turns blue and the
//!   waiting requests are answered.
//! - [`green`]: asks the consumer how far this producer's batches are in the replica, turns
//!   them green, and evicts green entries after a TTL (they turn red).
//! - [`admin`]: dead letters for operators: list, read, replay.
//! - [`error`]: the one mapping from errors to HTTP answers.
//! - [`openapi`]: the OpenAPI document of these routes, at `GET /openapi.json`.
//!
//! Every endpoint but the probes needs an API key ([`sluice_auth`]) unless auth is off: a
//! write needs `write:<platform>` for every notification it carries, so one platform's key can
//! neither write another's notifications nor squat their ids.
//!
//! Each process is one producer: its id (`<node-id>-<uuid v7>`) is new at every start, so the
//! master keys of two incarnations can never collide, and its batch sequence starts at 1. The
//! uuid commits to a secret that only this process knows and sends with each Append, so no
//! other caller can append under its id ([`sluice_core::producer`]).

pub mod admin;
pub mod batcher;
pub mod body;
pub mod cloudevents;
pub mod error;
pub mod green;
pub mod health;
pub mod memory;
pub mod openapi;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{get, post};
use sluice_auth::Keys;
use sluice_core::Notification;
use sluice_core::producer::ProducerIdentity;
use sluice_proto::Channel;
use sluice_proto::v1::RecentKeysRequest;
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_proto::v1::publisher_client::PublisherClient;
use sluice_proto::v1::query_handler_client::QueryHandlerClient;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

use crate::batcher::{BatchLimits, Batcher, BatcherReport};
use crate::green::{Freshness, GreenTracker};
use crate::health::WriteHealth;
use crate::memory::SharedMemory;

/// The ingest API's own settings. The publisher's address and the storage are shared flags of
/// the `sluice` binary.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "ingest_config")]
pub struct Config {
    /// Bytes of notifications that shared memory may hold. When gray and blue entries fill
    /// it, POSTs are answered 503 with Retry-After; nothing accepted is dropped.
    #[arg(long, env = "SLUICE_MEMORY_BYTES", default_value_t = 1 << 30)]
    pub memory_bytes: usize,
    /// The largest request body accepted, in bytes (larger bodies get 413).
    #[arg(long, env = "SLUICE_MAX_BODY_BYTES", default_value_t = 16 << 20)]
    pub max_body_bytes: usize,
    /// The most notifications one request may carry (more get 413).
    #[arg(long, env = "SLUICE_MAX_ITEMS", default_value_t = 10_000)]
    pub max_items: usize,
    /// A batch closes at this many rows.
    #[arg(long, env = "SLUICE_BATCH_MAX_ROWS", default_value_t = 10_000)]
    pub batch_max_rows: usize,
    /// A batch closes at this many bytes.
    #[arg(long, env = "SLUICE_BATCH_MAX_BYTES", default_value_t = 8 << 20)]
    pub batch_max_bytes: usize,
    /// A batch closes this many milliseconds after its first row, full or not.
    #[arg(long, env = "SLUICE_BATCH_LINGER_MS", default_value_t = 2)]
    pub batch_linger_ms: u64,
    /// A durable write that is not stored after this many seconds is answered 503 (it stays
    /// queued, and a retry is safe).
    #[arg(long, env = "SLUICE_ACK_TIMEOUT_SECS", default_value_t = 30)]
    pub ack_timeout_secs: u64,
    /// At shutdown, how long to keep trying to store gray notifications before giving up.
    #[arg(long, env = "SLUICE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// How long a notification stays in shared memory once it is in the replica (green);
    /// then it is evicted (red). Memory pressure evicts green entries sooner.
    #[arg(long, env = "SLUICE_GREEN_TTL_SECS", default_value_t = 300)]
    pub green_ttl_secs: u64,
    /// How often to ask the consumer which batches are in the replica.
    #[arg(long, env = "SLUICE_GREEN_POLL_MS", default_value_t = 100)]
    pub green_poll_ms: u64,
    /// This node's name, the first part of its producer id (A-Z, a-z, 0-9, '.', '_', '-').
    #[arg(long, env = "SLUICE_NODE_ID", default_value = "ingest")]
    pub node_id: String,
    /// At start, load the keys of the batches this node's earlier incarnations stored in their
    /// last this-many seconds, so that a client retrying a request a crash left unanswered gets
    /// a duplicate, not a second copy (0: off). Keep it above --ack-timeout-secs.
    #[arg(long, env = "SLUICE_RECOVER_WINDOW_SECS", default_value_t = 60)]
    pub recover_window_secs: u64,
    /// `/readyz` says not ready once a durable batch has waited this many seconds for the
    /// replica (the consumer is away or far behind).
    #[arg(long, env = "SLUICE_READY_MAX_LAG_SECS", default_value_t = 300)]
    pub ready_max_lag_secs: u64,
    /// A notification whose `occurred_at` is more than this many days before its arrival is
    /// refused (0: any age, e.g. to load history). One request cannot then spread over
    /// thousands of day partitions.
    #[arg(long, env = "SLUICE_MAX_EVENT_AGE_DAYS", default_value_t = 30)]
    pub max_event_age_days: u32,
    /// A notification whose `occurred_at` is more than this many seconds after its arrival is
    /// refused (a platform's clock may run a little ahead, not a day).
    #[arg(long, env = "SLUICE_MAX_EVENT_LEAD_SECS", default_value_t = 86_400)]
    pub max_event_lead_secs: u64,
}

impl Config {
    /// Why `occurred_at` is out of the window around `received_at`, if it is (both in
    /// microseconds since the epoch).
    pub fn outside_window(&self, occurred_at: i64, received_at: i64) -> Option<String> {
        const DAY: i64 = 86_400_000_000;
        let shown = sluice_core::notification::format_micros(occurred_at);
        let age_days = i64::from(self.max_event_age_days);
        if age_days > 0 && occurred_at < received_at.saturating_sub(age_days * DAY) {
            return Some(format!(
                "`occurred_at` {shown} is more than {age_days} days in the past, the oldest this \
                 server accepts (--max-event-age-days)"
            ));
        }
        let lead = i64::try_from(self.max_event_lead_secs)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000);
        if occurred_at > received_at.saturating_add(lead) {
            return Some(format!(
                "`occurred_at` {shown} is more than {} seconds in the future, the furthest this \
                 server accepts (--max-event-lead-secs)",
                self.max_event_lead_secs
            ));
        }
        None
    }
}

impl Config {
    /// Small, fast settings for tests.
    pub fn for_tests() -> Self {
        Config {
            memory_bytes: 64 << 20,
            max_body_bytes: 1 << 20,
            max_items: 1_000,
            batch_max_rows: 1_000,
            batch_max_bytes: 1 << 20,
            batch_linger_ms: 1,
            ack_timeout_secs: 10,
            shutdown_timeout_secs: 10,
            green_ttl_secs: 300,
            green_poll_ms: 20,
            node_id: "test".to_string(),
            recover_window_secs: 60,
            ready_max_lag_secs: 300,
            // Tests replay fixed dates, as a load of history would.
            max_event_age_days: 0,
            max_event_lead_secs: 86_400,
        }
    }
}

impl Config {
    /// Settings that contradict each other stop the start, saying what to change.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.recover_window_secs == 0 || self.recover_window_secs >= self.ack_timeout_secs,
            "--recover-window-secs ({}) must be at least --ack-timeout-secs ({}) (or 0): a client \
             retries a request that a crash left unanswered after its timeout, and by then the \
             stored keys of that request must still be recovered",
            self.recover_window_secs,
            self.ack_timeout_secs
        );
        let cap = sluice_proto::MAX_MESSAGE_BYTES / 2;
        anyhow::ensure!(
            self.batch_max_bytes <= cap,
            "--batch-max-bytes ({}) must be at most {cap}, half the gRPC message cap, so that a \
             full batch and its framing always fit in one Append",
            self.batch_max_bytes
        );
        Ok(())
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub memory: Arc<SharedMemory>,
    pub freshness: Arc<Freshness>,
    pub staged: mpsc::UnboundedSender<Arc<Notification>>,
    pub publisher: PublisherClient<Channel>,
    /// Where a notification that is no longer in memory (red) is looked up.
    pub query_handler: QueryHandlerClient<Channel>,
    pub producer_id: Arc<str>,
    /// The API keys calls are checked against (open when auth is off).
    pub keys: Arc<Keys>,
    pub health: Arc<WriteHealth>,
}

impl FromRef<AppState> for Arc<Keys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route(
            "/v1/notifications",
            post(routes::post_notifications).layer(axum::middleware::from_fn_with_state(
                state.clone(),
                routes::hold_body,
            )),
        )
        .route(
            "/v1/notifications/{platform}/{id}",
            get(routes::get_notification),
        )
        .route(
            "/v1/memory/posts/{platform}/{post_id}",
            get(routes::get_memory_post),
        )
        .route("/v1/stats", get(routes::stats))
        .route("/v1/admin/dead-letters", get(admin::list))
        .route(
            "/v1/admin/dead-letters/{kind}/{producer}/{sequence}",
            get(admin::get),
        )
        .route(
            "/v1/admin/dead-letters/{kind}/{producer}/{sequence}/replay",
            post(admin::replay),
        )
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(sluice_telemetry::router())
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(
            "ingest-api",
            sluice_telemetry::track_http,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A client for the publisher at `addr`.
pub fn publisher_client(addr: &str) -> anyhow::Result<PublisherClient<Channel>> {
    Ok(PublisherClient::new(sluice_proto::lazy_channel(addr)?)
        .max_decoding_message_size(sluice_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(sluice_proto::MAX_MESSAGE_BYTES))
}

/// A fresh producer for this process: `<node-id>-<uuid v7>`, and the proof of owning it.
pub fn new_producer(node_id: &str) -> anyhow::Result<ProducerIdentity> {
    let producer = ProducerIdentity::new(node_id);
    sluice_core::master::check_producer_id(&producer.id).map_err(|_| {
        anyhow::anyhow!(
            "--node-id {node_id:?} must be 1 to 31 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
        )
    })?;
    Ok(producer)
}

/// The background work behind the handlers: both must run for writes to be answered.
pub struct Workers {
    pub batcher: Batcher,
    pub green: GreenTracker,
}

/// The gRPC addresses of the services the ingest API talks to.
#[derive(Debug, Clone)]
pub struct Peers {
    pub publisher: String,
    pub consumer: String,
    pub query_handler: String,
}

/// Builds the handlers' state and the workers that serve it.
pub fn build(
    config: Config,
    peers: &Peers,
    keys: Arc<Keys>,
) -> anyhow::Result<(AppState, Workers)> {
    config.check()?;
    let (publisher_addr, consumer_addr) = (peers.publisher.as_str(), peers.consumer.as_str());
    let producer = new_producer(&config.node_id)?;
    let producer_id = producer.id.clone();
    let publisher = publisher_client(publisher_addr)?;
    let consumer = ConsumerClient::new(sluice_proto::lazy_channel(consumer_addr)?);
    let memory = Arc::new(SharedMemory::new(config.memory_bytes));
    let (staged, staged_rx) = mpsc::unbounded_channel();
    let (durable, durable_rx) = mpsc::unbounded_channel();
    let freshness = Arc::new(Freshness::default());
    let health = Arc::new(WriteHealth::default());
    let green = GreenTracker {
        health: health.clone(),
        durable: durable_rx,
        consumer,
        memory: memory.clone(),
        freshness: freshness.clone(),
        producer_id: producer_id.clone(),
        poll: Duration::from_millis(config.green_poll_ms.max(1)),
        ttl: Duration::from_secs(config.green_ttl_secs),
    };
    let limits = BatchLimits {
        max_rows: config.batch_max_rows,
        max_bytes: config.batch_max_bytes,
        linger: Duration::from_millis(config.batch_linger_ms),
    };
    let batcher = Batcher::new(
        staged_rx,
        publisher.clone(),
        memory.clone(),
        durable,
        producer,
        limits,
        health.clone(),
    );
    let query_handler = QueryHandlerClient::new(sluice_proto::lazy_channel(&peers.query_handler)?)
        .max_decoding_message_size(sluice_proto::MAX_MESSAGE_BYTES);
    let state = AppState {
        config: Arc::new(config),
        memory,
        freshness,
        staged,
        publisher,
        query_handler,
        producer_id: producer_id.into(),
        keys,
        health,
    };
    register_scrape_hook(&state);
    Ok((state, Workers { batcher, green }))
}

/// Sets the gauges read from this node's state before each scrape of `/metrics`. A weak
/// reference: a hook must not keep a stopped node's memory alive.
fn register_scrape_hook(state: &AppState) {
    use sluice_telemetry::names;
    let memory = Arc::downgrade(&state.memory);
    let health = Arc::downgrade(&state.health);
    sluice_telemetry::on_scrape(move || {
        let (Some(memory), Some(health)) = (memory.upgrade(), health.upgrade()) else {
            return;
        };
        let stats = memory.stats();
        for (color, entries) in [
            ("gray", stats.gray),
            ("blue", stats.blue),
            ("green", stats.green),
        ] {
            metrics::gauge!(names::MEMORY_ENTRIES, "color" => color).set(entries as f64);
        }
        metrics::gauge!(names::MEMORY_USED_BYTES).set(stats.used_bytes as f64);
        metrics::gauge!(names::MEMORY_BUDGET_BYTES).set(stats.budget_bytes as f64);
        metrics::counter!(names::MEMORY_EVICTED).absolute(stats.evicted);
        metrics::gauge!(names::BATCH_IN_FLIGHT_SECONDS).set(health.in_flight().as_secs_f64());
    });
}

/// How long recovered keys are kept: clients retry a request a crash left unanswered within
/// seconds or minutes, not hours.
const RECOVERED_KEYS_KEPT: Duration = Duration::from_secs(600);

/// Loads the keys that this node's earlier incarnations stored in their last
/// `recover_window_secs` into shared memory's recovered set, asking the publisher. Waits up to
/// 30 s for a publisher; without one, the node starts unprotected and says so.
pub async fn recover_stored_keys(state: &AppState) {
    let window = state.config.recover_window_secs;
    if window == 0 {
        return;
    }
    let request = RecentKeysRequest {
        node_id: state.config.node_id.clone(),
        window_micros: (window * 1_000_000) as i64,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match state.publisher.clone().recent_keys(request.clone()).await {
            Ok(response) => break response.into_inner(),
            Err(status) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(
                    message = status.message(),
                    "waiting for a publisher to recover keys"
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => {
                tracing::warn!(
                    message = status.message(),
                    "started without the keys earlier incarnations stored: a retry of a request a crash left unanswered may be stored twice"
                );
                return;
            }
        }
    };
    let mut recovered = 0;
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                recovered += state
                    .memory
                    .remember_stored(chunk.keys.into_iter().map(|k| (k.platform, k.id)));
            }
            Ok(None) => break,
            Err(status) => {
                tracing::warn!(
                    message = status.message(),
                    recovered,
                    "recovering stored keys stopped early"
                );
                break;
            }
        }
    }
    tracing::info!(
        recovered,
        window_secs = window,
        "keys stored by earlier incarnations recovered"
    );
}

/// Serves the ingest API on `listener` until `shutdown` fires, then shuts down in order: stop
/// accepting, let in-flight requests finish, store every gray notification (for at most
/// `shutdown_timeout_secs`), and report what the batcher did.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    peers: &Peers,
    keys: Arc<Keys>,
    shutdown: CancellationToken,
) -> anyhow::Result<BatcherReport> {
    let shutdown_timeout = Duration::from_secs(config.shutdown_timeout_secs);
    let (state, workers) = build(config, peers, keys)?;
    let abandon = CancellationToken::new();
    let batcher = tokio::spawn(workers.batcher.run(abandon.clone()));
    // The tracker runs until the last request has been answered: ack=replicated waits on it.
    let tracker_stop = CancellationToken::new();
    let tracker = tokio::spawn(workers.green.run(tracker_stop.clone()));
    // Before the first request: a retry of something an earlier incarnation stored must be
    // recognized from the start.
    recover_stored_keys(&state).await;
    tokio::spawn({
        let memory = state.memory.clone();
        async move {
            tokio::time::sleep(RECOVERED_KEYS_KEPT).await;
            memory.forget_recovered();
        }
    });
    tracing::info!(addr = ?listener.local_addr().ok(), producer_id = %state.producer_id, ?peers, "ingest API listening");
    // When serve returns, the router and with it the last sender of staged notifications are
    // dropped: the batcher then drains what is left and finishes.
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    tracing::info!("ingest API stopped accepting; storing the remaining gray notifications");

    let abandon_later = tokio::spawn({
        let abandon = abandon.clone();
        async move {
            tokio::time::sleep(shutdown_timeout).await;
            abandon.cancel();
        }
    });
    let report = batcher.await?;
    abandon_later.abort();
    tracker_stop.cancel();
    tracker.await?;
    tracing::info!(?report, "batcher finished");
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn contradicting_settings_stop_the_start_and_say_what_to_change() {
        Config::for_tests().check().unwrap();
        let mut short_window = Config::for_tests();
        short_window.recover_window_secs = 5;
        short_window.ack_timeout_secs = 30;
        let error = short_window.check().unwrap_err().to_string();
        assert!(error.contains("--recover-window-secs (5)"), "{error}");
        short_window.recover_window_secs = 0;
        short_window.check().unwrap();

        let mut huge_batches = Config::for_tests();
        huge_batches.batch_max_bytes = sluice_proto::MAX_MESSAGE_BYTES;
        let error = huge_batches.check().unwrap_err().to_string();
        assert!(error.contains("--batch-max-bytes"), "{error}");
    }
}
