//! The consumer: replicates master segments into the columnar replica, exactly once, and turns
//! notifications green.
//!
//! - [`replica`]: the Delta Lake table (Parquet, zstd, partitioned by day) and its `txn`
//!   records, one per producer.
//! - [`schema`]: the replica's columns and the segment → Arrow conversion.
//! - [`replicator`]: the one committer of the table. It learns of segments from publishers
//!   (gRPC `SegmentStored`) and from listing `master/`, buffers them by rows, bytes and age,
//!   and commits each producer's segments in sequence order with their `txn` versions.
//! - [`dedup`]: the keys of the notifications the table holds, by day, so that a copy stored
//!   by another node is not committed twice.
//! - [`maintenance`]: compaction of the day partitions and vacuum, beside replication.
//! - [`fenced_log`]: the log store compactions commit through, which fences them like appends.
//! - [`lease`]: one committer at a time. Several consumers may run; the one that holds the
//!   replica's lease replicates and maintains, the others stand by and take over when it dies.
//!
//! Ingest APIs ask `Progress` for their producer's replicated sequence: every batch up to it is
//! green. The consumer keeps no state of its own: progress lives in the Delta log. Only the
//! lease holder answers `Progress` and `SegmentStored`, and only it reports itself serving on
//! the standard gRPC health service, so that a load balancer (a Kubernetes Service with a gRPC
//! readiness probe) sends those calls to it.

pub mod dedup;
pub mod fenced_log;
pub mod lease;
pub mod maintenance;
pub mod replica;
pub mod replicator;
pub mod schema;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use sluice_core::master::{MasterStore, check_producer_id};
use sluice_core::storage::{Storage, retry_while_unreachable};
use sluice_proto::v1::consumer_server::{Consumer, ConsumerServer};
use sluice_proto::v1::{
    ProgressRequest, ProgressResponse, SegmentStoredRequest, SegmentStoredResponse,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use sluice_telemetry::names;

use crate::lease::{Fence, LeaseStore};
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
    /// How often to compact the replica's days and vacuum (0: never).
    #[arg(long, env = "SLUICE_MAINTENANCE_INTERVAL_SECS", default_value_t = 600)]
    pub maintenance_interval_secs: u64,
    /// zstd level at which compaction rewrites closed days (1-22). High levels cost CPU once per
    /// day and save storage for as long as the day is kept; reads are as fast.
    #[arg(long, env = "SLUICE_COMPACT_ZSTD_LEVEL", default_value_t = 16,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    pub compact_zstd_level: i32,
    /// Size in MiB of the files that compaction merges the open days (today and later, UTC)
    /// into, at the append level, so that a day's queries do not open a file per replication
    /// round (0: leave open days to the closed pass).
    #[arg(long, env = "SLUICE_COMPACT_OPEN_FILE_MIB", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(0..=4096))]
    pub compact_open_file_mib: u64,
    /// Vacuum keeps files that snapshots younger than this may read. At least 1: the files of
    /// a commit under way are in no snapshot until it lands, and vacuum must not take them.
    #[arg(long, env = "SLUICE_VACUUM_RETENTION_HOURS", default_value_t = 168,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub vacuum_retention_hours: u64,
    /// Days before today (UTC) whose notification keys stay in memory to drop copies that
    /// arrive through another node. Older days are read from the replica when a copy for them
    /// arrives: this bounds memory, not the guarantee (docs/replica.md).
    #[arg(long, env = "SLUICE_DEDUP_WINDOW_DAYS", default_value_t = 7)]
    pub dedup_window_days: u32,
    /// How long the replica's lease lasts unrenewed: a standby takes over this long after the
    /// committer stops renewing it (it renews every third of it).
    #[arg(long, env = "SLUICE_LEASE_TTL_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(300..))]
    pub lease_ttl_ms: u64,
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
            compact_open_file_mib: 32,
            vacuum_retention_hours: 168,
            dedup_window_days: 7,
            lease_ttl_ms: 2_000,
        }
    }

    fn replicator(&self) -> ReplicatorConfig {
        ReplicatorConfig {
            max_rows: self.replicate_max_rows,
            max_bytes: self.replicate_max_bytes,
            max_age: Duration::from_millis(self.replicate_max_age_ms),
            list_interval: Duration::from_secs(self.list_interval_secs.max(1)),
            read_concurrency: 8,
            dedup_window_days: self.dedup_window_days,
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
            open_target_file_bytes: (self.compact_open_file_mib > 0)
                .then_some(self.compact_open_file_mib << 20),
        }
    }
}

/// Opens (or creates) the replica table at `path` inside `storage`.
pub async fn open_replica(storage: &Storage, path: &str) -> anyhow::Result<Replica> {
    let (url, options) = storage.url.table_location(path)?;
    Ok(Replica::open_or_create(url, options).await?)
}

/// What this consumer is now: the committer (with its replicator's progress and the fence of
/// its lease) or a standby. A committer whose lease is no longer surely its own (paused past
/// it, or renewals failing) answers as a standby at once, before its replicator has noticed.
#[derive(Default)]
struct Role {
    committing: RwLock<Option<(Arc<Progress>, Arc<Fence>)>>,
}

impl Role {
    fn progress(&self) -> Result<Arc<Progress>, Status> {
        let committing = self
            .committing
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match committing {
            Some((progress, fence)) if fence.check().is_ok() => Ok(progress),
            _ => Err(Status::unavailable(
                "this consumer is a standby: the holder of the replica's lease answers",
            )),
        }
    }

    fn set(&self, committing: Option<(Arc<Progress>, Arc<Fence>)>) {
        *self
            .committing
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = committing;
    }
}

pub struct ConsumerService {
    notices: mpsc::UnboundedSender<SegmentNotice>,
    role: Arc<Role>,
}

#[tonic::async_trait]
impl Consumer for ConsumerService {
    async fn segment_stored(
        &self,
        request: Request<SegmentStoredRequest>,
    ) -> Result<Response<SegmentStoredResponse>, Status> {
        // A standby would only queue notices it cannot use; the committer lists the master.
        self.role.progress()?;
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
        let progress = self.role.progress()?;
        let producer = request.into_inner().producer_id;
        Ok(Response::new(ProgressResponse {
            replicated_sequence: progress.replicated(&producer),
            table_version: progress.table_version(),
        }))
    }
}

/// The name this process gives itself in the lease: host name (a pod's name on Kubernetes),
/// listening address and pid. A consumer restarted on the same host and address takes over
/// from its earlier incarnation at once ([`LeaseStore`]); one whose host has no name never does.
fn holder_name(listener: &TcpListener) -> String {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".into(), |addr| addr.to_string());
    match host_name() {
        Some(host) => format!("{host} {addr} pid {}", uuid_like()),
        None => format!("consumer {addr} {}", uuid_like()),
    }
}

fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
}

/// A name no other process takes: the pid and a random number (a container's pid is often 1).
fn uuid_like() -> String {
    use std::hash::BuildHasher;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    format!("{}-{random:016x}", std::process::id())
}

/// The replica's lease, for a consumer or `sluice maintain`: probes whether the store can fence
/// two committers, and says loudly when it cannot.
async fn lease_store(
    storage: &Storage,
    config: &Config,
    holder: String,
    shutdown: &CancellationToken,
) -> anyhow::Result<LeaseStore> {
    let fenced = retry_while_unreachable("probing the storage", shutdown, || {
        storage.probe_put_if_absent()
    })
    .await?;
    if !fenced {
        tracing::warn!(
            storage = %storage.url,
            "the store does NOT enforce put-if-absent: two consumers cannot be fenced, so this \
             one refuses to run while another holds the replica's lease. Run one consumer, or \
             use AWS S3 or MinIO"
        );
    }
    Ok(LeaseStore::new(
        storage.store.clone(),
        &config.replica_path,
        holder,
        Duration::from_millis(config.lease_ttl_ms),
        fenced,
    ))
}

/// Runs the consumer until `shutdown` fires: the gRPC service (with the standard health
/// service) on `listener`, and, while this process holds the replica's lease, the replicator
/// and the maintenance task. On shutdown it stops accepting, replicates what is ready once
/// more, releases the lease and returns.
pub async fn serve(
    listener: TcpListener,
    storage: Storage,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let holder = holder_name(&listener);
    let role = Arc::new(Role::default());
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<ConsumerServer<ConsumerService>>()
        .await;
    let (notices, notices_rx) = mpsc::unbounded_channel();
    let service = ConsumerService {
        notices,
        role: role.clone(),
    };
    let mut committing = tokio::spawn(commit_while_leased(
        storage.clone(),
        config.clone(),
        holder,
        Lifecycle {
            role,
            health,
            shutdown: shutdown.clone(),
        },
        notices_rx,
    ));
    tracing::info!(addr = ?listener.local_addr().ok(), storage = %storage.url, replica = config.replica_path, "consumer listening");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let serving = sluice_proto::tls::server()?
        .add_service(health_service)
        .add_service(sluice_proto::cluster::guarded(ConsumerServer::new(service)))
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    // Whichever ends first ends the other: the gRPC server on shutdown or a transport error,
    // the committing loop on an error it cannot get past (then the process exits, and its
    // supervisor starts it again, rather than serving as a consumer that never commits).
    tokio::select! {
        served = serving => {
            shutdown.cancel();
            committing.await??;
            served?;
        }
        committed = &mut committing => {
            shutdown.cancel();
            committed??;
        }
    }
    Ok(())
}

/// The task that renews a lease, stopped (and the lease released) by [`KeptLease::finish`], or
/// aborted if dropped without it (the lease then expires, and a standby takes over).
struct KeptLease {
    done: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl KeptLease {
    fn keep(lease: lease::Lease) -> Self {
        let done = CancellationToken::new();
        KeptLease {
            task: Some(tokio::spawn(lease.keep(done.clone()))),
            done,
        }
    }

    /// Stops renewing; releases the lease unless it was lost.
    async fn finish(mut self) {
        self.done.cancel();
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "the lease's renewal task failed");
        }
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// What the committing loop tells the rest of the consumer.
struct Lifecycle {
    role: Arc<Role>,
    health: tonic_health::server::HealthReporter,
    shutdown: CancellationToken,
}

/// Waits for the lease, replicates and maintains under it until it is lost or `shutdown`
/// fires, and waits for it again after a loss. Every term starts from the table: the previous
/// term's buffered segments are listed again from the master.
async fn commit_while_leased(
    storage: Storage,
    config: Config,
    holder: String,
    lifecycle: Lifecycle,
    mut notices: mpsc::UnboundedReceiver<SegmentNotice>,
) -> anyhow::Result<()> {
    let Lifecycle {
        role,
        health,
        shutdown,
    } = lifecycle;
    // Probed here, not before listening: a consumer started while S3 is away answers its
    // liveness probe while it waits for S3.
    let leases = lease_store(&storage, &config, holder, &shutdown).await?;
    let mut backoff = Duration::from_millis(250);
    let mut term_backoff = Duration::from_millis(250);
    loop {
        let lease = match leases.acquire(&shutdown, None).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Ok(()),
            Err(error @ lease::LeaseError::Unfenceable { .. }) => return Err(error.into()),
            Err(error) => {
                tracing::warn!(%error, "cannot read the replica's lease; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(250);
        let fence = lease.fence();
        let kept = KeptLease::keep(lease);
        match start_term(&storage, &config, fence.clone()).await {
            Ok(replicator) => {
                term_backoff = Duration::from_millis(250);
                // Notices that arrived while standing by were refused; any left are stale.
                while notices.try_recv().is_ok() {}
                role.set(Some((replicator.progress(), fence.clone())));
                metrics::gauge!(names::LEASE_HELD).set(1.0);
                metrics::gauge!(names::LEASE_EPOCH).set(fence.epoch() as f64);
                health
                    .set_serving::<ConsumerServer<ConsumerService>>()
                    .await;
                // NOT_SERVING the moment the lease is lost, not when the replicator gets there.
                let lost = fence.lost().clone();
                let reporter = health.clone();
                let health_follows_lease = tokio::spawn(async move {
                    lost.cancelled().await;
                    reporter
                        .set_not_serving::<ConsumerServer<ConsumerService>>()
                        .await;
                });
                let maintaining = tokio::spawn(maintenance::run(
                    replicator.table().clone(),
                    config.maintenance(),
                    fence.clone(),
                    shutdown.clone(),
                ));
                notices = replicator.run(notices, shutdown.clone()).await;
                health_follows_lease.abort();
                health
                    .set_not_serving::<ConsumerServer<ConsumerService>>()
                    .await;
                role.set(None);
                metrics::gauge!(names::LEASE_HELD).set(0.0);
                if let Err(error) = maintaining.await {
                    tracing::error!(%error, "the maintenance task failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start committing under the lease");
                // Each try takes a new epoch: do not churn through them.
                term_backoff = (term_backoff * 2).min(Duration::from_secs(10));
            }
        }
        // Released only after the last commit: a standby may take over from here on.
        kept.finish().await;
        if shutdown.is_cancelled() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(term_backoff) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// A new term under the lease of `fence`: the table is opened, the epoch recorded in it, and a
/// replicator made ready.
async fn start_term(
    storage: &Storage,
    config: &Config,
    fence: Arc<Fence>,
) -> anyhow::Result<Replicator> {
    let mut replica = open_replica(storage, &config.replica_path).await?;
    let version = replica.claim(&fence).await?;
    tracing::info!(
        epoch = fence.epoch(),
        version,
        "recorded the lease epoch in the replica"
    );
    Ok(Replicator::new(
        MasterStore::new(storage.store.clone()),
        replica,
        config.replicator(),
        fence,
    ))
}

/// Rebuilds a replica from the master store alone into the table at `to` (which must not hold
/// other data), and reports what it replicated.
pub async fn replay(
    storage: &Storage,
    to: &str,
    config: &Config,
) -> anyhow::Result<replicator::RoundReport> {
    let replica = open_replica(storage, to).await?;
    // A new table has no other committer (and `sluice replay` says it must be new).
    let mut replicator = Replicator::new(
        MasterStore::new(storage.store.clone()),
        replica,
        config.replicator(),
        Fence::sole(),
    );
    replicator.list_master().await?;
    replicator.replicate_ready().await
}

/// One maintenance pass over the replica now, on every core: what `sluice maintain` runs, e.g.
/// after a backfill or a replay. It takes the replica's lease first, so that it never compacts
/// beside a live consumer: when one holds the lease and renews it, this refuses and says who.
pub async fn maintain_once(
    storage: &Storage,
    config: &Config,
) -> anyhow::Result<maintenance::MaintenanceReport> {
    let holder = format!(
        "sluice maintain on {} {}",
        host_name().unwrap_or_default(),
        uuid_like()
    );
    let leases = lease_store(storage, config, holder, &CancellationToken::new()).await?;
    // Long enough to tell a live holder from a dead one.
    let patience = leases.ttl() + leases.ttl() / 2;
    let lease = leases
        .acquire(&CancellationToken::new(), Some(patience))
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "{error}; the consumer that holds it compacts the replica itself \
                 (--maintenance-interval-secs); stop it first to run a pass by hand"
            )
        })?
        .ok_or_else(|| anyhow::anyhow!("interrupted while waiting for the replica's lease"))?;
    let fence = lease.fence();
    let kept = CancellationToken::new();
    let keeping = tokio::spawn(lease.keep(kept.clone()));
    let result = async {
        let mut replica = open_replica(storage, &config.replica_path).await?;
        replica.claim(&fence).await?;
        let maintenance = config.maintenance().on_every_core();
        let today = chrono::Utc::now().date_naive();
        let (_, report) =
            maintenance::maintain(replica.table().clone(), &maintenance, today, &fence).await?;
        anyhow::Ok(report)
    }
    .await;
    kept.cancel();
    keeping.await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committer_whose_lease_is_lost_answers_as_a_standby_at_once() {
        let role = Role::default();
        assert_eq!(
            role.progress().unwrap_err().code(),
            tonic::Code::Unavailable
        );
        let fence = Fence::fixed(3);
        role.set(Some((Arc::new(Progress::default()), fence.clone())));
        assert!(role.progress().is_ok());
        // Lost, though the replicator has not yet given the role up.
        fence.lost().cancel();
        let refused = role.progress().unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(refused.message().contains("standby"), "{refused:?}");
    }
}
