//! The ingest API: where platforms POST notifications.
//!
//! - [`routes`]: `POST /v1/notifications` parses a body ([`body`]), admits each notification
//!   into [`memory::SharedMemory`] as gray, hands the new ones to the batcher, and — for the
//!   default `ack=durable` — waits until they are blue before it answers.
//! - [`batcher`]: group commit. It drains gray notifications into batches and appends each
//!   batch to a publisher over gRPC; when the publisher confirms, the batch turns blue and the
//!   waiting requests are answered.
//! - [`error`]: the one mapping from errors to HTTP answers.
//!
//! Each process is one producer: its id (`<node-id>-<uuid v7>`) is new at every start, so the
//! master keys of two incarnations can never collide, and its batch sequence starts at 1.

pub mod batcher;
pub mod body;
pub mod error;
pub mod memory;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use sluice_core::Notification;
use sluice_proto::v1::publisher_client::PublisherClient;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tower_http::trace::TraceLayer;

use crate::batcher::{BatchLimits, Batcher, BatcherReport};
use crate::memory::SharedMemory;

/// The ingest API's own settings. The publisher's address and the storage are shared flags of
/// the `sluice` binary.
#[derive(Debug, Clone, clap::Args)]
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
    /// This node's name, the first part of its producer id (A-Z, a-z, 0-9, '.', '_', '-').
    #[arg(long, env = "SLUICE_NODE_ID", default_value = "ingest")]
    pub node_id: String,
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
            node_id: "test".to_string(),
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub memory: Arc<SharedMemory>,
    pub staged: mpsc::UnboundedSender<Arc<Notification>>,
    pub publisher: PublisherClient<Channel>,
    pub producer_id: Arc<str>,
}

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route("/v1/notifications", post(routes::post_notifications))
        .route(
            "/v1/notifications/{platform}/{id}",
            get(routes::get_notification),
        )
        .route("/v1/stats", get(routes::stats))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// A client for the publisher at `addr` (`host:port` or a URL). It connects lazily and
/// reconnects by itself, so the ingest API can start before its publisher.
pub fn publisher_client(addr: &str) -> anyhow::Result<PublisherClient<Channel>> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let channel = Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_lazy();
    Ok(PublisherClient::new(channel)
        .max_decoding_message_size(sluice_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(sluice_proto::MAX_MESSAGE_BYTES))
}

/// A fresh producer id for this process: `<node-id>-<uuid v7>`.
pub fn new_producer_id(node_id: &str) -> anyhow::Result<String> {
    let id = format!("{node_id}-{}", uuid::Uuid::now_v7().simple());
    sluice_core::master::check_producer_id(&id).map_err(|_| {
        anyhow::anyhow!(
            "--node-id {node_id:?} must be 1 to 31 characters of A-Z, a-z, 0-9, '.', '_' or '-'"
        )
    })?;
    Ok(id)
}

/// Builds the handlers' state and the batcher that serves it; the batcher must be run for
/// durable writes to be answered.
pub fn build(config: Config, publisher_addr: &str) -> anyhow::Result<(AppState, Batcher)> {
    let producer_id = new_producer_id(&config.node_id)?;
    let publisher = publisher_client(publisher_addr)?;
    let memory = Arc::new(SharedMemory::new(config.memory_bytes));
    let (staged, staged_rx) = mpsc::unbounded_channel();
    let limits = BatchLimits {
        max_rows: config.batch_max_rows,
        max_bytes: config.batch_max_bytes,
        linger: Duration::from_millis(config.batch_linger_ms),
    };
    let batcher = Batcher::new(
        staged_rx,
        publisher.clone(),
        memory.clone(),
        producer_id.clone(),
        limits,
    );
    let state = AppState {
        config: Arc::new(config),
        memory,
        staged,
        publisher,
        producer_id: producer_id.into(),
    };
    Ok((state, batcher))
}

/// Serves the ingest API on `listener` until `shutdown` fires, then shuts down in order: stop
/// accepting, let in-flight requests finish, store every gray notification (for at most
/// `shutdown_timeout_secs`), and report what the batcher did.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    publisher_addr: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<BatcherReport> {
    let shutdown_timeout = Duration::from_secs(config.shutdown_timeout_secs);
    let (state, batcher) = build(config, publisher_addr)?;
    let abandon = CancellationToken::new();
    let batcher = tokio::spawn(batcher.run(abandon.clone()));
    tracing::info!(addr = ?listener.local_addr().ok(), producer_id = %state.producer_id, publisher = publisher_addr, "ingest API listening");
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
    tracing::info!(?report, "batcher finished");
    Ok(report)
}
