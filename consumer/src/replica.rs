//! The replica table: a Delta Lake table of Parquet files (zstd), partitioned by day.
//!
//! Delta gives atomic commits on S3 (put-if-absent of the next log entry), snapshot isolation
//! for readers, time travel, compaction, and a table that DuckDB, Spark, Polars and Trino read as
//! is. Every commit carries one Delta transaction id (`txn`) per producer whose batches it holds:
//! app id = producer id, version = that producer's last batch sequence in the commit. That
//! record, inside the same atomic commit as the rows, is what makes replication exactly-once.

use std::collections::{BTreeMap, HashMap};

use arrow::array::RecordBatch;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::parquet::basic::{Compression, Encoding, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError};
use url::Url;

use crate::schema::{PARTITION_COLUMN, delta_columns};

/// zstd level of the Parquet files replication appends. Level 9 made files about 5% smaller than
/// level 3 but slowed replication enough to hurt freshness (bench/README.md); compaction of
/// closed days recompresses at [`crate::Config::compact_zstd_level`].
pub const REPLICA_ZSTD_LEVEL: i32 = 3;

/// Where the replica lives inside the store, unless told otherwise.
pub const DEFAULT_REPLICA_PATH: &str = "replica";

/// How the replica's Parquet files are written: zstd, and delta encoding for the two integer
/// columns that grow with arrival order (`received_at`, `batch_row`). Their dictionaries would
/// hold nearly every value; their deltas are small (about 2% smaller files in an experiment on
/// the replication benchmark's data shape, bench/README.md).
pub fn writer_properties(zstd_level: i32) -> Result<WriterProperties, DeltaTableError> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?));
    for column in ["received_at", "batch_row"] {
        let path = ColumnPath::from(column);
        builder = builder
            .set_column_dictionary_enabled(path.clone(), false)
            .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    Ok(builder.build())
}

/// A handle on the replica table.
pub struct Replica {
    table: DeltaTable,
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
        Ok(Replica { table })
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

    /// The last batch sequence committed for `producer` (0 when none), as the latest loaded
    /// snapshot records it.
    pub async fn committed_sequence(&self, producer: &str) -> Result<u64, DeltaTableError> {
        let snapshot = self.table.snapshot()?;
        let version = snapshot
            .transaction_version(self.table.log_store().as_ref(), producer)
            .await?;
        Ok(version.map_or(0, |v| v.max(0) as u64))
    }

    /// Appends `batches` in one commit that also records, for each producer, the last batch
    /// sequence the commit holds. Returns the new table version.
    pub async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        last_sequences: &BTreeMap<String, u64>,
    ) -> Result<u64, DeltaTableError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let transactions = last_sequences
            .iter()
            .map(|(producer, sequence)| {
                Transaction::new_with_last_update(producer, *sequence as i64, Some(now_ms))
            })
            .collect();
        let writer = writer_properties(REPLICA_ZSTD_LEVEL)?;
        let table = self
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
                CommitProperties::default().with_application_transactions(transactions),
            )
            .await?;
        self.table = table;
        Ok(self.version())
    }
}
