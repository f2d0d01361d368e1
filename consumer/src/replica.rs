//! The replica table: a Delta Lake table of Parquet files (zstd), partitioned by day.
//!
//! Delta gives atomic commits on S3 (put-if-absent of the next log entry), snapshot isolation
//! for readers, time travel, compaction, and a table that DuckDB, Spark, Polars and Trino read as
//! is. Every commit carries one Delta transaction id (`txn`) per producer whose batches it holds:
//! app id = producer id, version = that producer's last batch sequence in the commit. That
//! record, inside the same atomic commit as the rows, is what makes replication exactly-once.

use std::collections::{BTreeMap, HashMap};

use arrow::array::RecordBatch;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Transaction};
use deltalake::operations::write::SchemaMode;
use deltalake::parquet::basic::{Compression, Encoding, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::DeltaOperation;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::lease::{COMMITTER_APP_ID, Fence, MAINTENANCE_APP_ID};
use crate::schema::{PARTITION_COLUMN, delta_columns};

/// zstd level of the Parquet files replication appends. Level 9 made files about 5% smaller than
/// level 3 but slowed replication enough to hurt freshness (bench/README.md); compaction of
/// closed days recompresses at [`crate::Config::compact_zstd_level`].
pub const REPLICA_ZSTD_LEVEL: i32 = 3;

/// The most commits [`Replica::changes_no_rows`] reads.
const MAX_COMMITS_READ: u64 = 64;

/// Where the replica lives inside the store, unless told otherwise.
pub const DEFAULT_REPLICA_PATH: &str = "replica";

/// Columns whose row groups carry a Parquet bloom filter: the keys a point read looks up
/// (a notification by `id`, a post's trail by `post_id`). Their values are spread over every
/// file, so min/max statistics prune nothing; a bloom filter lets the reader skip every row
/// group that cannot hold the key, and a look-up of an unknown id reads only footers and
/// filters instead of the whole table (bench/README.md, "Point look-ups").
pub const BLOOM_COLUMNS: [&str; 2] = ["id", "post_id"];

/// The false-positive rate of those filters: a row group is read in vain once in a hundred.
const BLOOM_FPP: f64 = 0.01;

/// How the replica's Parquet files are written: zstd, bloom filters on the look-up keys
/// ([`BLOOM_COLUMNS`]; sized for `rows`, else for a full row group, and folded down to what it
/// holds), and delta encoding for the two integer columns that grow with arrival order
/// (`received_at`, `batch_row`). Their dictionaries would hold nearly every value; their deltas
/// are small (about 2% smaller files in an experiment on the replication benchmark's data
/// shape, bench/README.md).
pub fn writer_properties(
    zstd_level: i32,
    rows: Option<usize>,
) -> Result<WriterProperties, DeltaTableError> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?));
    for column in BLOOM_COLUMNS {
        let path = ColumnPath::from(column);
        builder = builder
            .set_column_bloom_filter_enabled(path.clone(), true)
            .set_column_bloom_filter_fpp(path.clone(), BLOOM_FPP);
        if let Some(rows) = rows {
            builder = builder.set_column_bloom_filter_max_ndv(path, rows.max(1) as u64);
        }
    }
    for column in ["received_at", "batch_row"] {
        let path = ColumnPath::from(column);
        builder = builder
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder.build())
}

/// The version of the Delta transaction `app_id` that `table`'s loaded snapshot records.
async fn transaction_version(
    table: &DeltaTable,
    app_id: &str,
) -> Result<Option<u64>, DeltaTableError> {
    let version = table
        .snapshot()?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await?;
    Ok(version.map(|v| v.max(0) as u64))
}

/// Refuses a commit by the holder of `fence` onto `table`'s loaded snapshot when the lease is
/// no longer its own, or when the snapshot records a newer lease epoch for `app_id` (the
/// committer's or maintenance's transaction id): another consumer has taken over
/// ([`crate::lease`]).
pub async fn check_epoch(
    table: &DeltaTable,
    fence: &Fence,
    app_id: &str,
) -> Result<(), DeltaTableError> {
    fence
        .check()
        .map_err(|lost| DeltaTableError::Generic(lost.to_string()))?;
    epoch_allows(fence, app_id, transaction_version(table, app_id).await?)
}

/// [`check_epoch`] once the snapshot's `recorded` epoch for `app_id` is known.
fn epoch_allows(fence: &Fence, app_id: &str, recorded: Option<u64>) -> Result<(), DeltaTableError> {
    match recorded {
        Some(recorded) if recorded > fence.epoch() => Err(DeltaTableError::Generic(format!(
            "the replica records lease epoch {recorded} for {app_id}, newer than this \
             consumer's {}: another consumer commits now",
            fence.epoch()
        ))),
        _ => Ok(()),
    }
}

/// A handle on the replica table.
pub struct Replica {
    table: DeltaTable,
    transactions: std::sync::Mutex<Transactions>,
}

/// The Delta transaction versions (app id → version) known at one table version. Each is a log
/// replay to read (delta-kernel reads every commit since the last checkpoint, and the
/// checkpoint), and a round asks for several; so they are kept, and this handle's own commit
/// moves them on without a replay.
#[derive(Default)]
struct Transactions {
    at: Option<u64>,
    versions: HashMap<String, Option<u64>>,
}

impl Replica {
    /// Opens the table, creating it (empty, with the replica's columns) when it does not exist.
    pub async fn open_or_create(
        url: Url,
        options: HashMap<String, String>,
    ) -> Result<Self, DeltaTableError> {
        deltalake::aws::register_handlers(None);
        let table = DeltaTable::try_from_url_with_storage_options(url, options)
            .await?
            .create()
            .with_table_name("notifications")
            .with_columns(delta_columns())
            .with_partition_columns([PARTITION_COLUMN])
            .with_save_mode(SaveMode::Ignore)
            .await?;
        Ok(Replica {
            table,
            transactions: Default::default(),
        })
    }

    pub fn table(&self) -> &DeltaTable {
        &self.table
    }

    /// The table version this handle sees.
    pub fn version(&self) -> u64 {
        self.table.version().unwrap_or(0)
    }

    /// Reloads the latest committed version.
    pub async fn refresh(&mut self) -> Result<(), DeltaTableError> {
        self.table.update_state().await
    }

    /// Whether the commits after version `after` up to `upto` leave every row where it was
    /// in the table's contents: compactions (files added and removed without `dataChange`), a
    /// lease holder's claim, metadata. False when one adds or removes data, when a commit cannot
    /// be read (cleaned from the log), or past [`MAX_COMMITS_READ`] commits, where reading them
    /// would cost more than what it saves.
    pub async fn changes_no_rows(&self, after: u64, upto: u64) -> Result<bool, DeltaTableError> {
        if upto <= after {
            return Ok(true);
        }
        if upto - after > MAX_COMMITS_READ {
            return Ok(false);
        }
        let log = self.table.log_store();
        for version in after + 1..=upto {
            let Some(commit) = log.read_commit_entry(version).await? else {
                return Ok(false);
            };
            let changes_rows = deltalake::logstore::get_actions(version, &commit)?
                .iter()
                .any(|action| match action {
                    Action::Add(add) => add.data_change,
                    Action::Remove(remove) => remove.data_change,
                    Action::Cdc(_) => true,
                    _ => false,
                });
            if changes_rows {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The last batch sequence committed for `producer` (0 when none), as the latest loaded
    /// snapshot records it.
    pub async fn committed_sequence(&self, producer: &str) -> Result<u64, DeltaTableError> {
        Ok(self.transaction_version(producer).await?.unwrap_or(0))
    }

    /// The version of `app_id`'s transaction at the loaded snapshot: remembered for this
    /// table version, else read from the log.
    async fn transaction_version(&self, app_id: &str) -> Result<Option<u64>, DeltaTableError> {
        let at = self.version();
        {
            let known = self.known_transactions();
            if known.at == Some(at)
                && let Some(version) = known.versions.get(app_id)
            {
                return Ok(*version);
            }
        }
        let version = transaction_version(&self.table, app_id).await?;
        let mut known = self.known_transactions();
        if known.at != Some(at) {
            known.at = Some(at);
            known.versions.clear();
        }
        known.versions.insert(app_id.to_string(), version);
        Ok(version)
    }

    fn known_transactions(&self) -> std::sync::MutexGuard<'_, Transactions> {
        self.transactions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new lease holder's first commit: it records the holder's epoch for the committer and
    /// for maintenance, and holds nothing else. Any commit that an earlier holder prepared on an
    /// older snapshot now conflicts with it (both set the same transaction ids), and any it
    /// prepares on a newer one is refused by [`check_epoch`].
    pub async fn claim(&mut self, fence: &Fence) -> Result<u64, DeltaTableError> {
        self.refresh().await?;
        check_epoch(&self.table, fence, COMMITTER_APP_ID).await?;
        check_epoch(&self.table, fence, MAINTENANCE_APP_ID).await?;
        let epoch = fence.epoch() as i64;
        let properties = CommitProperties::default().with_application_transactions(vec![
            Transaction::new(COMMITTER_APP_ID, epoch),
            Transaction::new(MAINTENANCE_APP_ID, epoch),
        ]);
        CommitBuilder::from(properties)
            .build(
                Some(self.table.snapshot()?),
                self.table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: None,
                    predicate: None,
                },
            )
            .await?;
        self.refresh().await?;
        Ok(self.version())
    }

    /// Appends `batches` in one commit that also records, for each producer, the last batch
    /// sequence the commit holds, and the committer's lease epoch (`fence`). Returns the new
    /// table version.
    pub async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        last_sequences: &BTreeMap<String, u64>,
        fence: &Fence,
    ) -> Result<u64, DeltaTableError> {
        fence
            .check()
            .map_err(|lost| DeltaTableError::Generic(lost.to_string()))?;
        epoch_allows(
            fence,
            COMMITTER_APP_ID,
            self.transaction_version(COMMITTER_APP_ID).await?,
        )?;
        let base = self.version();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut transactions: Vec<Transaction> = last_sequences
            .iter()
            .map(|(producer, sequence)| {
                Transaction::new_with_last_update(producer, *sequence as i64, Some(now_ms))
            })
            .collect();
        transactions.push(Transaction::new(COMMITTER_APP_ID, fence.epoch() as i64));
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let writer = writer_properties(REPLICA_ZSTD_LEVEL, Some(rows))?;
        self.table = self
            .table
            .clone()
            .write(batches)
            .with_save_mode(SaveMode::Append)
            // A column that a newer Sluice adds to the contract is added to an older table
            // (its old rows read as null) instead of failing the write.
            .with_schema_mode(SchemaMode::Merge)
            .with_partition_columns([PARTITION_COLUMN])
            .with_writer_properties(writer)
            .with_commit_properties(
                CommitProperties::default()
                    .with_application_transactions(transactions)
                    // Not at every commit: delta-rs lists the whole log for it, which made each
                    // commit slower than the one before (maintenance cleans the log instead).
                    .with_cleanup_expired_logs(Some(false)),
            )
            .await?;
        let version = self.version();
        let mut known = self.known_transactions();
        if known.at == Some(base) && version == base + 1 {
            // Nothing came between the snapshot and this commit: its transactions are the
            // only change.
            known.at = Some(version);
            for (producer, sequence) in last_sequences {
                known.versions.insert(producer.clone(), Some(*sequence));
            }
            known
                .versions
                .insert(COMMITTER_APP_ID.to_string(), Some(fence.epoch()));
        }
        Ok(version)
    }
}
