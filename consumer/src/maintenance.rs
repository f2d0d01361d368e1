//! Compaction and retention of the replica, beside replication, never in its way.
//!
//! `optimize` rewrites the small files of closed partitions (days before today, UTC) into
//! large ones; `vacuum` deletes files that no snapshot within the retention period needs.
//! Compaction is also where a closed day gets its archival compression: replication appends at
//! zstd 3 to keep freshness, compaction rewrites at [`MaintenanceConfig::zstd_level`] (16 by
//! default: about 17% smaller than level 3 on whole days, bench/README.md). A day whose
//! files are already one file is left as it is.
//! Optimize removes files without changing data (`dataChange: false`) and appends never read
//! what they add to, so Delta's conflict check lets both commit side by side. Only one
//! maintenance task may run per table: two optimizes of the same files would both commit.

use std::num::NonZeroU64;
use std::time::Duration;

use deltalake::operations::optimize::OptimizeType;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::{DeltaTable, DeltaTableError, FilterOp, FilterValue};
use tokio_util::sync::CancellationToken;

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
    pub files_removed: u64,
    pub files_added: u64,
    pub files_deleted: usize,
}

/// Compacts every closed partition, then vacuums.
pub async fn maintain(
    table: DeltaTable,
    config: &MaintenanceConfig,
    today: chrono::NaiveDate,
) -> Result<(DeltaTable, MaintenanceReport), DeltaTableError> {
    let today = today.format("%Y-%m-%d").to_string();
    let closed = vec![(
        crate::schema::PARTITION_COLUMN,
        FilterOp::Lt,
        FilterValue::Scalar(today.as_str()),
    )];
    let (table, optimized) = table
        .optimize()
        .with_type(OptimizeType::Compact)
        .with_filters(&closed)
        .with_target_size(NonZeroU64::new(config.target_file_bytes.max(1)).expect("at least 1"))
        .with_writer_properties(crate::replica::writer_properties(config.zstd_level)?)
        .with_max_concurrent_tasks(config.concurrency.max(1))
        .await?;
    let retention =
        chrono::Duration::from_std(config.retention).unwrap_or_else(|_| chrono::Duration::days(7));
    let (table, vacuumed) = table
        .vacuum()
        .with_retention_period(retention)
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .await?;
    let report = MaintenanceReport {
        files_removed: optimized.num_files_removed,
        files_added: optimized.num_files_added,
        files_deleted: vacuumed.files_deleted.len(),
    };
    Ok((table, report))
}

/// Runs [`maintain`] every `config.interval` on its own handle of the table.
pub async fn run(mut table: DeltaTable, config: MaintenanceConfig, shutdown: CancellationToken) {
    let Some(interval) = config.interval else {
        return;
    };
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = table.update_state().await {
            tracing::warn!(%error, "maintenance cannot load the replica");
            continue;
        }
        let today = chrono::Utc::now().date_naive();
        match maintain(table.clone(), &config, today).await {
            Ok((updated, report)) => {
                tracing::info!(?report, "replica compacted and vacuumed");
                table = updated;
            }
            Err(error) => tracing::warn!(%error, "replica maintenance failed"),
        }
    }
}
