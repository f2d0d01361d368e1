//! Sluice: a CQRS ingestion pipeline for social-network notifications on object storage.
//!
//! Platforms POST notifications to the ingest API (`sluice-ingest-api`), which keeps each one
//! in shared memory (gray) and group-commits batches over gRPC to a publisher
//! (`sluice-publisher`), which writes them as Avro segments to the master store on S3 or a
//! directory (blue) and tells the consumer (`sluice-consumer`), which replicates them exactly
//! once into a Delta Lake table of Parquet files (green). Analysts send SQL to the query API
//! (`sluice-query-api`), which hands it to a query handler (`sluice-query-handler`) that runs
//! it with DataFusion over the replica and caches the answers (orange); post state and audit
//! trails join the ingest nodes' shared memory with the replica. This crate is the `sluice`
//! binary that runs those services, one per process or all in one (`sluice all`); in both
//! cases they talk gRPC.
//!
//! Shutdown runs in order: the ingest API stops accepting and finishes in-flight requests,
//! the batcher stores every gray notification, then the publisher stops, and the consumer
//! replicates what is left before it stops.

pub mod cli;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use sluice_auth::Keys;
use sluice_core::storage::{Storage, StorageUrl, retry_while_unreachable};
use sluice_proto::v1::consumer_client::ConsumerClient;
use sluice_publisher::PublisherService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use sluice_ingest_api::Peers;

use crate::cli::{Cli, Command, MetricsAddr};

/// Logs go to stderr; `SLUICE_LOG` (or `RUST_LOG`) sets the filter, `info` by default, and
/// `SLUICE_LOG_FORMAT=json` makes them JSON lines ([`sluice_telemetry::init_logs`]).
pub fn init_tracing() {
    if let Err(problem) = sluice_telemetry::init_logs() {
        tracing::warn!("{problem}; logging as text");
    }
}

/// Serves this gRPC service's `/metrics` on `--metrics-addr`, when one is given.
async fn serve_metrics(
    metrics: &MetricsAddr,
    service: &'static str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = &metrics.metrics_addr {
        let listener = bind(addr, "metrics").await?;
        tokio::spawn(sluice_telemetry::serve(listener, service, shutdown.clone()));
    }
    Ok(())
}

pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    sluice_telemetry::install();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match cli.command {
        Command::Publisher {
            storage,
            publisher,
            consumer_addr,
            metrics,
            cluster,
        } => {
            secure_grpc(&cluster, false)?;
            let listener = bind(&publisher.publisher_addr, "publisher").await?;
            serve_metrics(&metrics, "publisher", &shutdown).await?;
            let service =
                open_publisher(&storage.storage, &consumer_addr.consumer_addr, &shutdown).await?;
            sluice_publisher::serve(listener, service, shutdown.cancelled_owned()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::IngestApi {
            publisher,
            consumer_addr,
            query_handler_addr,
            ingest,
            auth,
        } => {
            let keys = auth.load(false)?;
            secure_grpc(&auth.cluster, false)?;
            let listener = bind(&ingest.ingest_addr, "ingest API").await?;
            let peers = Peers {
                publisher: publisher.publisher_addr,
                consumer: consumer_addr.consumer_addr,
                query_handler: query_handler_addr.query_handler_addr,
            };
            run_ingest(listener, ingest.config, &peers, keys, shutdown).await
        }
        Command::QueryHandler {
            storage,
            query_handler_addr,
            replica_path,
            query_handler,
            metrics,
            auth,
        } => {
            let keys = flight_keys(&auth)?;
            secure_grpc(&auth.cluster, false)?;
            query_handler.check()?;
            let listener = bind(&query_handler_addr.query_handler_addr, "query handler").await?;
            serve_metrics(&metrics, "query-handler", &shutdown).await?;
            let storage = open_storage(&storage.storage, &shutdown).await?;
            sluice_query_handler::serve(
                listener,
                &storage,
                &replica_path,
                query_handler,
                keys,
                shutdown,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::QueryApi {
            query_handler_addr,
            query_api,
            auth,
        } => {
            let keys = auth.load(false)?;
            secure_grpc(&auth.cluster, false)?;
            let listener = bind(&query_api.query_addr, "query API").await?;
            sluice_query_api::serve(
                listener,
                query_api.config,
                &query_handler_addr.query_handler_addr,
                keys,
                shutdown,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Consumer {
            storage,
            consumer_addr,
            consumer,
            metrics,
            cluster,
        } => {
            secure_grpc(&cluster, false)?;
            let listener = bind(&consumer_addr.consumer_addr, "consumer").await?;
            serve_metrics(&metrics, "consumer", &shutdown).await?;
            let storage = open_storage(&storage.storage, &shutdown).await?;
            sluice_consumer::serve(listener, storage, consumer, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            storage,
            to,
            consumer,
        } => {
            anyhow::ensure!(
                to.trim_matches('/') != consumer.replica_path.trim_matches('/'),
                "--to must name a new table, not the replica ({})",
                consumer.replica_path
            );
            let storage = open_storage(&storage.storage, &shutdown).await?;
            let report = sluice_consumer::replay(&storage, &to, &consumer).await?;
            tracing::info!(?report, to, "replay finished");
            println!(
                "replayed {} segments, {} rows into {to} (table version {})",
                report.segments, report.rows, report.table_version
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Key { name, scopes } => {
            let key = sluice_auth::new_key();
            let line = sluice_auth::key_line(&name, &scopes.join(","), &key)
                .map_err(anyhow::Error::msg)?;
            println!("key:  {key}");
            println!("line: {line}");
            eprintln!(
                "Give the key to its client (`Authorization: Bearer <key>`); it is not kept anywhere. \
                 Add the line to the keys file (--keys-file) or SLUICE_KEYS of every ingest and query API."
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Maintain { storage, consumer } => {
            let storage = open_storage(&storage.storage, &shutdown).await?;
            let report = sluice_consumer::maintain_once(&storage, &consumer).await?;
            tracing::info!(
                ?report,
                replica = consumer.replica_path,
                "maintenance finished"
            );
            println!(
                "compacted {} files into {} (closed days) and {} into {} (open days), vacuumed \
                 {} files in {}",
                report.files_removed,
                report.files_added,
                report.open_files_removed,
                report.open_files_added,
                report.files_deleted,
                consumer.replica_path
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::All {
            storage,
            publisher,
            consumer_addr,
            query_handler_addr,
            ingest,
            consumer,
            query_handler,
            mut query_api,
            auth,
        } => {
            // On your own machine's directory, `sluice all` may run open; on S3 it may not.
            let local = matches!(storage.storage.parse()?, StorageUrl::Local(_));
            let keys = auth.load(local)?;
            // Its services are all in this process: a secret of its own closes their ports to
            // everyone else, unless one is given for services started elsewhere.
            secure_grpc(&auth.cluster, true)?;
            // Start-up runs downstream first, shutdown upstream first: the ingest API stops
            // accepting and stores its gray notifications while the publisher still runs, and
            // the consumer replicates the last segments after the publisher stopped.
            let consumer_listener = bind(&consumer_addr.consumer_addr, "consumer").await?;
            let consumer_addr = consumer_listener.local_addr()?.to_string();
            let opened = open_storage(&storage.storage, &shutdown).await?;
            let replica_path = consumer.replica_path.clone();
            let consumer_stop = CancellationToken::new();
            let consumer_task = tokio::spawn(sluice_consumer::serve(
                consumer_listener,
                opened,
                consumer,
                consumer_stop.clone(),
            ));

            let publisher_listener = bind(&publisher.publisher_addr, "publisher").await?;
            let publisher_addr = publisher_listener.local_addr()?.to_string();
            let service = open_publisher(&storage.storage, &consumer_addr, &shutdown).await?;
            let publisher_stop = CancellationToken::new();
            let publisher_task = tokio::spawn(sluice_publisher::serve(
                publisher_listener,
                service,
                publisher_stop.clone().cancelled_owned(),
            ));

            // The read side stops with the signal: it holds nothing that needs draining.
            query_handler.check()?;
            let handler_listener =
                bind(&query_handler_addr.query_handler_addr, "query handler").await?;
            let handler_addr = handler_listener.local_addr()?.to_string();
            let opened = open_storage(&storage.storage, &shutdown).await?;
            let handler_task = tokio::spawn({
                let shutdown = shutdown.clone();
                let keys = Some(keys.clone());
                async move {
                    sluice_query_handler::serve(
                        handler_listener,
                        &opened,
                        &replica_path,
                        query_handler,
                        keys,
                        shutdown,
                    )
                    .await
                }
            });

            let ingest_listener = bind(&ingest.ingest_addr, "ingest API").await?;
            // The query API reads this process's shared memory for fresh post events.
            query_api.config.ingest_urls =
                vec![format!("http://{}", ingest_listener.local_addr()?)];
            let query_listener = bind(&query_api.query_addr, "query API").await?;
            let query_api_task = tokio::spawn({
                let (handler_addr, shutdown) = (handler_addr.clone(), shutdown.clone());
                let keys = keys.clone();
                async move {
                    sluice_query_api::serve(
                        query_listener,
                        query_api.config,
                        &handler_addr,
                        keys,
                        shutdown,
                    )
                    .await
                }
            });

            let peers = Peers {
                publisher: publisher_addr,
                consumer: consumer_addr,
                query_handler: handler_addr,
            };
            let code = run_ingest(
                ingest_listener,
                ingest.config,
                &peers,
                keys,
                shutdown.clone(),
            )
            .await;
            // The read side stops with the ingest API, also when that failed to start.
            shutdown.cancel();
            query_api_task.await??;
            handler_task.await??;
            publisher_stop.cancel();
            publisher_task.await??;
            consumer_stop.cancel();
            consumer_task.await??;
            code
        }
    }
}

/// The analysts' keys for a query handler's Flight SQL: with none given (and auth on), it is
/// not served, so a handler started without them stays closed to everyone but its cluster.
fn flight_keys(auth: &sluice_auth::AuthArgs) -> anyhow::Result<Option<Arc<Keys>>> {
    if auth.keys_file.is_none()
        && auth.keys.is_none()
        && auth.cluster.mode != sluice_auth::AuthMode::Off
    {
        return Ok(None);
    }
    auth.load(false).map(Some)
}

/// Sets this process's cluster secret, which its gRPC services require and its clients send,
/// and its TLS when certificates are given.
fn secure_grpc(cluster: &sluice_auth::ClusterArgs, make_one: bool) -> anyhow::Result<()> {
    if let Some(secret) = cluster.secret(make_one)? {
        sluice_proto::cluster::set_secret(&secret).map_err(anyhow::Error::msg)?;
    }
    if let (Some(cert), Some(key), Some(ca)) =
        (&cluster.tls_cert, &cluster.tls_key, &cluster.tls_ca)
    {
        let read = |path: &std::path::PathBuf, what: &str| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the TLS {what} {}", path.display()))
        };
        sluice_proto::tls::set(sluice_proto::tls::TlsFiles {
            cert_pem: read(cert, "certificate")?,
            key_pem: read(key, "key")?,
            ca_pem: read(ca, "CA certificate")?,
            client_auth: cluster.tls_client_auth,
            server_name: cluster.tls_server_name.clone(),
        })
        .map_err(anyhow::Error::msg)?;
        tracing::info!(
            client_auth = cluster.tls_client_auth,
            "gRPC between services is TLS"
        );
    }
    Ok(())
}

async fn run_ingest(
    listener: TcpListener,
    config: sluice_ingest_api::Config,
    peers: &Peers,
    keys: Arc<Keys>,
    shutdown: CancellationToken,
) -> anyhow::Result<ExitCode> {
    let report = sluice_ingest_api::serve(listener, config, peers, keys, shutdown).await?;
    Ok(if report.lost == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Opens the storage, waiting for S3 while it does not answer (a service started during an
/// outage comes up when S3 does, instead of exiting), until `shutdown`.
async fn open_storage(storage: &str, shutdown: &CancellationToken) -> anyhow::Result<Storage> {
    let url: StorageUrl = storage.parse()?;
    retry_while_unreachable("opening the storage", shutdown, || Storage::open(&url))
        .await
        .with_context(|| format!("cannot open storage {url}"))
}

async fn open_publisher(
    storage: &str,
    consumer_addr: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<PublisherService> {
    let storage = open_storage(storage, shutdown).await?;
    let consumer = ConsumerClient::new(sluice_proto::lazy_channel(consumer_addr)?);
    let opened = retry_while_unreachable("probing the storage", shutdown, || {
        PublisherService::open(&storage)
    });
    Ok(opened.await?.with_consumer(consumer))
}

async fn bind(addr: &str, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for the {what} on {addr}"))
}

/// Cancels `shutdown` on SIGTERM or ctrl-c.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c stops sluice");
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
