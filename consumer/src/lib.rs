//! The consumer: replicates master segments into the columnar replica, exactly once, and turns
//! notifications green.
//!
//! - [`replica`]: the Delta Lake table (Parquet, zstd, partitioned by day) and its `txn`
//!   records, one per producer.
//! - [`schema`]: the replica's columns and the segment → Arrow conversion.
//! - [`replicator`]: the one committer of the table. It learns of segments from publishers
//!   (gRPC `SegmentStored`) and from listing `master/`, buffers them by rows, bytes and age,
//!   and commits each producer's segments in sequence order with their `txn` versions.
//! - [`maintenance`]: compaction of closed partitions and vacuum, beside replication.
//!
//! Ingest APIs ask `Progress` for their producer's replicated sequence: every batch up to it is
//! green. The consumer keeps no state of its own: progress lives in the Delta log.

pub mod maintenance;
pub mod replica;
pub mod replicator;
pub mod schema;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::master::{MasterStore, check_producer_id};
use sluice_core::storage::Storage;
use sluice_proto::v1::consumer_server::{Consumer, ConsumerServer};
use sluice_proto::v1::{
    ProgressRequest, ProgressResponse, SegmentStoredRequest, SegmentStoredResponse,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::maintenance::MaintenanceConfig;
use crate::replica::Replica;
use crate::replicator::{Progress, Replicator, ReplicatorConfig, SegmentNotice};

/// The consumer's settings.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "consumer_config")]
pub struct Config {
    /// Where the replica table lives inside the storage.
    #[arg(long, env = "SLUICE_REPLICA_PATH", default_value = replica::DEFAULT_REPLICA_PATH)]
    pub replica_path: String,
    /// Replicate once this many rows are waiting.
    #[arg(long, env = "SLUICE_REPLICATE_MAX_ROWS", default_value_t = 200_000)]
    pub replicate_max_rows: u64,
    /// Replicate once this many bytes of segments are waiting.
    #[arg(long, env = "SLUICE_REPLICATE_MAX_BYTES", default_value_t = 64 << 20)]
    pub replicate_max_bytes: u64,
    /// Replicate once the oldest waiting segment has waited this long: the freshness bound.
    #[arg(long, env = "SLUICE_REPLICATE_MAX_AGE_MS", default_value_t = 1_000)]
    pub replicate_max_age_ms: u64,
    /// How often to list master/ for segments no publisher announced.
    #[arg(long, env = "SLUICE_LIST_INTERVAL_SECS", default_value_t = 30)]
    pub list_interval_secs: u64,
    /// How often to compact closed partitions and vacuum (0: never).
    #[arg(long, env = "SLUICE_MAINTENANCE_INTERVAL_SECS", default_value_t = 600)]
    pub maintenance_interval_secs: u64,
    /// zstd level at which compaction rewrites closed days (1-22). High levels cost CPU once per
    /// day and save storage for as long as the day is kept; reads are as fast.
    #[arg(long, env = "SLUICE_COMPACT_ZSTD_LEVEL", default_value_t = 16,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub compact_zstd_level: i32,
    /// Vacuum keeps files that snapshots younger than this may read.
    #[arg(long, env = "SLUICE_VACUUM_RETENTION_HOURS", default_value_t = 168)]
    pub vacuum_retention_hours: u64,
}

impl Config {
    pub fn for_tests() -> Self {
        Config {
            replica_path: replica::DEFAULT_REPLICA_PATH.to_string(),
            replicate_max_rows: 50_000,
            replicate_max_bytes: 64 << 20,
            replicate_max_age_ms: 200,
            list_interval_secs: 2,
            maintenance_interval_secs: 0,
            compact_zstd_level: 16,
            vacuum_retention_hours: 168,
        }
    }

    fn replicator(&self) -> ReplicatorConfig {
        ReplicatorConfig {
            max_rows: self.replicate_max_rows,
            max_bytes: self.replicate_max_bytes,
            max_age: Duration::from_millis(self.replicate_max_age_ms),
            list_interval: Duration::from_secs(self.list_interval_secs.max(1)),
            read_concurrency: 8,
        }
    }

    /// Maintenance beside replication: one partition at a time, so compaction takes one core
    /// from the replicator at most.
    pub fn maintenance(&self) -> MaintenanceConfig {
        MaintenanceConfig {
            interval: (self.maintenance_interval_secs > 0)
                .then(|| Duration::from_secs(self.maintenance_interval_secs)),
            retention: Duration::from_secs(self.vacuum_retention_hours * 3600),
            target_file_bytes: 128 << 20,
            zstd_level: self.compact_zstd_level,
            concurrency: 1,
        }
    }
}

/// Opens (or creates) the replica table at `path` inside `storage`.
pub async fn open_replica(storage: &Storage, path: &str) -> anyhow::Result<Replica> {
    let (url, options) = storage.url.table_location(path)?;
    Ok(Replica::open_or_create(url, options).await?)
}

pub struct ConsumerService {
    notices: mpsc::UnboundedSender<SegmentNotice>,
    progress: Arc<Progress>,
}

#[tonic::async_trait]
impl Consumer for ConsumerService {
    async fn segment_stored(
        &self,
        request: Request<SegmentStoredRequest>,
    ) -> Result<Response<SegmentStoredResponse>, Status> {
        let request = request.into_inner();
        check_producer_id(&request.producer_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let expected = MasterStore::segment_path(&request.producer_id, request.sequence)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if expected.as_ref() != request.segment_key {
            return Err(Status::invalid_argument(format!(
                "segment key {:?} does not belong to {}/{}",
                request.segment_key, request.producer_id, request.sequence
            )));
        }
        self.notices
            .send(SegmentNotice {
                producer: request.producer_id,
                sequence: request.sequence,
                path: request.segment_key,
                rows: Some(request.rows),
                bytes: request.bytes,
            })
            .map_err(|_| Status::unavailable("the consumer is shutting down"))?;
        Ok(Response::new(SegmentStoredResponse {}))
    }

    async fn progress(
        &self,
        request: Request<ProgressRequest>,
    ) -> Result<Response<ProgressResponse>, Status> {
        let producer = request.into_inner().producer_id;
        Ok(Response::new(ProgressResponse {
            replicated_sequence: self.progress.replicated(&producer),
            table_version: self.progress.table_version(),
        }))
    }
}

/// Runs the consumer until `shutdown` fires: the gRPC service on `listener`, the replicator
/// and the maintenance task. On shutdown it stops accepting, replicates what is ready once
/// more, and returns.
pub async fn serve(
    listener: TcpListener,
    storage: Storage,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let replica = open_replica(&storage, &config.replica_path).await?;
    let maintenance_table = replica.table().clone();
    let replicator = Replicator::new(
        MasterStore::new(storage.store.clone()),
        replica,
        config.replicator(),
    );
    let (notices, notices_rx) = mpsc::unbounded_channel();
    let service = ConsumerService {
        notices,
        progress: replicator.progress(),
    };
    let replicating = tokio::spawn(replicator.run(notices_rx, shutdown.clone()));
    let maintaining = tokio::spawn(maintenance::run(
        maintenance_table,
        config.maintenance(),
        shutdown.clone(),
    ));
    tracing::info!(addr = ?listener.local_addr().ok(), storage = %storage.url, replica = config.replica_path, "consumer listening");
    serve_grpc(listener, service, shutdown.cancelled_owned()).await?;
    replicating.await?;
    maintaining.await?;
    Ok(())
}

async fn serve_grpc(
    listener: TcpListener,
    service: ConsumerService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(ConsumerServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Rebuilds a replica from the master store alone into the table at `to` (which must not hold
/// other data), and reports what it replicated.
pub async fn replay(
    storage: &Storage,
    to: &str,
    config: &Config,
) -> anyhow::Result<replicator::RoundReport> {
    let replica = open_replica(storage, to).await?;
    let mut replicator = Replicator::new(
        MasterStore::new(storage.store.clone()),
        replica,
        config.replicator(),
    );
    replicator.list_master().await?;
    replicator.replicate_ready().await
}

/// One maintenance pass over the replica now, on every core: what `sluice maintain` runs, e.g.
/// after a backfill or a replay.
pub async fn maintain_once(
    storage: &Storage,
    config: &Config,
) -> anyhow::Result<maintenance::MaintenanceReport> {
    let replica = open_replica(storage, &config.replica_path).await?;
    let maintenance = config.maintenance().on_every_core();
    let today = chrono::Utc::now().date_naive();
    let (_, report) = maintenance::maintain(replica.table().clone(), &maintenance, today).await?;
    Ok(report)
}
