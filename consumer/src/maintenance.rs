//! Compaction and retention of the replica, beside replication, never in its way.
//!
//! `optimize` rewrites the small files of closed partitions (days before today, UTC) into
//! large ones; `vacuum` deletes files that no snapshot within the retention period needs.
//! Compaction is also where a closed day gets its archival compression: replication appends at
//! zstd 3 to keep freshness, compaction rewrites at [`MaintenanceConfig::zstd_level`] (16 by
//! default: about 17% smaller than level 3 on whole days, bench/README.md). A day whose
//! files are already one file is left as it is.
//!
//! The open days (today and later, UTC) get a file a replication round, one a second at the
//! default batching: 86,400 by the end of a day, each opened by every query that reads the day.
//! They are compacted too, at the append level and into files of
//! [`MaintenanceConfig::open_target_file_bytes`] (32 MiB by default), a quarter of the closed
//! days' size: so a closed pass still finds several files in a day and rewrites them at the
//! archival level, and the open pass rewrites about one partial file's bytes again each time.
//! Optimize removes files without changing data (`dataChange: false`) and appends never read
//! what they add to, so Delta's conflict check lets both commit side by side. It also lets two
//! optimizes of the same files both commit (each removes them and adds a copy: rows doubled),
//! so maintenance runs only under the replica's lease ([`crate::lease`]), and each compaction
//! commits through [`crate::fenced_log`], which records the holder's epoch as the Delta
//! transaction `sluice:maintenance` and refuses a compaction after a newer holder's claim or
//! another compaction of the same files, whichever consumers run them. (delta-rs's `optimize`
//! drops the transactions of the commit properties it is given.)

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::{DeltaTable, DeltaTableError, FilterOp, FilterValue};
use tokio_util::sync::CancellationToken;

use crate::lease::{Fence, MAINTENANCE_APP_ID};
use crate::replica::check_epoch;

#[derive(Debug, Clone)]
pub struct MaintenanceConfig {
    /// How often to compact and vacuum; `None` turns maintenance off.
    pub interval: Option<Duration>,
    /// Files a snapshot younger than this may read are kept.
    pub retention: Duration,
    /// The size compaction aims for.
    pub target_file_bytes: u64,
    /// zstd level of the files compaction writes.
    pub zstd_level: i32,
    /// How many partitions compaction rewrites at once, each on one core.
    pub concurrency: usize,
    /// The size compaction of the open days (today and later) aims for, at the append level;
    /// `None` leaves them as replication wrote them.
    pub open_target_file_bytes: Option<u64>,
}

impl MaintenanceConfig {
    /// The same pass with every core rewriting partitions: for a one-off pass with nothing
    /// else to share the cores with (`sluice maintain`, benchmarks).
    pub fn on_every_core(self) -> Self {
        MaintenanceConfig {
            concurrency: std::thread::available_parallelism().map_or(1, usize::from),
            ..self
        }
    }
}

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Files of closed days rewritten, and the files that replaced them.
    pub files_removed: u64,
    pub files_added: u64,
    /// Files of open days rewritten, and the files that replaced them.
    pub open_files_removed: u64,
    pub open_files_added: u64,
    pub files_deleted: usize,
}

/// Compacts every closed partition, then the open ones, then vacuums, as the holder of `fence`.
pub async fn maintain(
    table: DeltaTable,
    config: &MaintenanceConfig,
    today: chrono::NaiveDate,
    fence: &Fence,
) -> Result<(DeltaTable, MaintenanceReport), DeltaTableError> {
    let today = today.format("%Y-%m-%d").to_string();
    let (table, closed) = compact(
        table,
        config,
        fence,
        FilterOp::Lt,
        &today,
        config.target_file_bytes,
        config.zstd_level,
    )
    .await?;
    let (table, open) = match config.open_target_file_bytes {
        Some(target) => {
            compact(
                table,
                config,
                fence,
                FilterOp::Ge,
                &today,
                target,
                crate::replica::REPLICA_ZSTD_LEVEL,
            )
            .await?
        }
        None => (table, Default::default()),
    };
    // Vacuum deletes only files no snapshot within the retention references, so it cannot lose
    // rows; it still waits for the lease, to leave a table it no longer commits to alone.
    check_epoch(&table, fence, MAINTENANCE_APP_ID).await?;
    let retention =
        chrono::Duration::from_std(config.retention).unwrap_or_else(|_| chrono::Duration::days(7));
    let (table, vacuumed) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .await?;
    // Replication's commits leave the log's expired entries alone (each cleanup lists the
    // whole log, which grows by a commit a round): they go here, past the table's log
    // retention (30 days by default) and only up to a checkpoint.
    let logs_cleaned = deltalake::checkpoints::cleanup_metadata(&table, None).await?;
    if logs_cleaned > 0 {
        tracing::info!(logs_cleaned, "expired log entries deleted");
    }
    let report = MaintenanceReport {
        files_removed: closed.num_files_removed,
        files_added: closed.num_files_added,
        open_files_removed: open.num_files_removed,
        open_files_added: open.num_files_added,
        files_deleted: vacuumed.files_deleted.len(),
    };
    Ok((table, report))
}

/// Compacts the partitions whose day is `op` `today` into files of `target` bytes at
/// `zstd_level`, in one commit that records the holder's epoch (no commit when no partition
/// has two files to merge).
async fn compact(
    table: DeltaTable,
    config: &MaintenanceConfig,
    fence: &Fence,
    op: FilterOp,
    today: &str,
    target: u64,
    zstd_level: i32,
) -> Result<(DeltaTable, deltalake::operations::optimize::Metrics), DeltaTableError> {
    check_epoch(&table, fence, MAINTENANCE_APP_ID).await?;
    let days = vec![(
        crate::schema::PARTITION_COLUMN,
        op,
        FilterValue::Scalar(today),
    )];
    let log = table.log_store();
    // The fence gives the commit `(sluice:maintenance, epoch)` and refuses it after a newer
    // holder's claim or another compaction of the same files (crate::fenced_log).
    let (table, metrics) = crate::fenced_log::fenced(table, fence.epoch())
        .optimize()
        .with_type(OptimizeType::Compact)
        .with_filters(&days)
        .with_target_size(NonZeroU64::new(target.max(1)).expect("at least 1"))
        .with_writer_properties(crate::replica::writer_properties(zstd_level, None)?)
        .with_max_concurrent_tasks(config.concurrency.max(1))
        .await?;
    Ok((crate::fenced_log::with_log_store(table, log), metrics))
}

/// Runs [`maintain`] every `config.interval` on its own handle of the table, while `fence`'s
/// lease holds.
pub async fn run(
    mut table: DeltaTable,
    config: MaintenanceConfig,
    fence: std::sync::Arc<Fence>,
    shutdown: CancellationToken,
) {
    let Some(interval) = config.interval else {
        return;
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
            () = fence.lost().cancelled() => return,
        }
        if let Err(error) = table.update_state().await {
            tracing::warn!(%error, "maintenance cannot load the replica");
            continue;
        }
        let today = chrono::Utc::now().date_naive();
        match maintain(table.clone(), &config, today, &fence).await {
            Ok((updated, report)) => {
                tracing::info!(?report, "replica compacted and vacuumed");
                table = updated;
            }
            Err(error) => tracing::warn!(%error, "replica maintenance failed"),
        }
    }
}
