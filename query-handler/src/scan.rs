//! The handler's own scan of the replica's Parquet files, reading low-cardinality columns as
//! the files store them: dictionary keys.
//!
//! The consumer writes `platform`, `type`, `lang` and `producer_id` with a Parquet dictionary
//! per column chunk, a handful of strings. delta-rs's table provider hands every string column
//! on as string views, so the reader expands each row's key into a 16-byte view, and
//! [`crate::rules::number_groups`] then hashes the views back into numbers: 26% of `count_by_type` was that
//! numbering (bench/README.md). Read as `Dictionary(Int32, Utf8)` instead, a column arrives as
//! the page's keys and one array of its few strings, and `code(…)` numbers the strings once and
//! looks each row's key up.
//!
//! delta-rs cannot be asked for that: its scan declares no per-file read schema, and DataFusion
//! only coerces strings to views on its own. So [`ReplicaTable`] is a table provider over the
//! files of one snapshot's log: their paths, sizes, row counts and partition values. Each file
//! gets the read schema DataFusion passes to the Parquet reader (`PartitionedFile::arrow_schema`),
//! derived from that file's own footer with the low-cardinality columns as dictionaries and
//! checked against the footer once, when the file first appears. Footers go to one cache shared
//! by every query, which delta-rs's scan, on a runtime of its own per query, did not have either.
//!
//! It is used only for tables it reads exactly as delta-rs would: no deletion vectors, no column
//! mapping, partition columns last. Otherwise the snapshot keeps delta-rs's provider. Filters on
//! partition columns alone choose the files, before any is opened; every filter is also given
//! to the Parquet reader to skip row groups by their statistics. Query answers never show the
//! dictionaries: [`crate::rules::without_dictionaries`] turns the result's columns back into
//! string views.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, Result, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::execution::cache::default_cache::DefaultCache;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

use crate::rules::FiredRules;

/// Bytes of Parquet footers kept across queries.
const FOOTER_CACHE_BYTES: usize = 64 << 20;

/// Footers fetched at once when a new version brings new files.
const FOOTER_FETCHES: usize = 16;

/// The type a low-cardinality string column is read as.
pub fn dictionary() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// What the scans of every version share: the footer cache, and the read schema of each file
/// of the latest version (a file never changes under its path, so neither does either).
pub struct Footers {
    cache: Arc<FileMetadataCache>,
    read_as: Mutex<HashMap<Path, Option<SchemaRef>>>,
}

impl Default for Footers {
    fn default() -> Self {
        Footers {
            cache: Arc::new(DefaultCache::new(FOOTER_CACHE_BYTES).with_name("replica footers")),
            read_as: Mutex::default(),
        }
    }
}

/// One version of the replica as a table of Parquet files (see the module's comment).
#[derive(Debug)]
pub struct ReplicaTable {
    /// The files' columns, then the partition columns.
    schema: SchemaRef,
    file_schema: SchemaRef,
    partition_columns: Vec<FieldRef>,
    files: Vec<PartitionedFile>,
    store_url: ObjectStoreUrl,
    store: Arc<dyn ObjectStore>,
    footers: Arc<FileMetadataCache>,
}

impl ReplicaTable {
    /// The table of `table`'s current version, whose columns delta-rs reads as `delta_schema`,
    /// with `dictionary_columns` read as dictionaries. None when the table needs what only
    /// delta-rs's scan does (see the module's comment).
    pub async fn of(
        table: &DeltaTable,
        delta_schema: &Schema,
        dictionary_columns: &[String],
        footers: &Footers,
    ) -> anyhow::Result<Option<Self>> {
        let state = table.snapshot()?;
        let metadata = state.metadata();
        if metadata
            .configuration()
            .get("delta.columnMapping.mode")
            .is_some_and(|mode| mode != "none")
        {
            return Ok(None);
        }
        let partition_names = metadata.partition_columns();
        let columns = delta_schema.fields().len();
        let Some(first_partition) = columns.checked_sub(partition_names.len()) else {
            return Ok(None);
        };
        if delta_schema.fields()[first_partition..]
            .iter()
            .map(|f| f.name())
            .ne(partition_names.iter())
        {
            return Ok(None);
        }
        let fields: Vec<FieldRef> = delta_schema
            .fields()
            .iter()
            .map(|field| {
                if dictionary_columns.contains(field.name()) && holds_strings(field.data_type()) {
                    Arc::new(field.as_ref().clone().with_data_type(dictionary()))
                } else {
                    Arc::clone(field)
                }
            })
            .collect();
        let schema = Arc::new(Schema::new(fields.clone()));
        let file_schema = Arc::new(Schema::new(fields[..first_partition].to_vec()));
        let partition_columns = fields[first_partition..].to_vec();

        let log_store = table.log_store();
        // The Parquet reads of every query show in the object store's request metrics.
        let store: Arc<dyn ObjectStore> = Arc::new(sluice_core::instrumented::Instrumented::new(
            log_store.object_store(None),
            "replica",
        ));
        let mut files = Vec::new();
        for file in state.log_data().iter() {
            if file.deletion_vector_descriptor().is_some() {
                return Ok(None);
            }
            let values = file.partition_values_map();
            let partition_values = partition_columns
                .iter()
                .map(
                    |column| match values.get(column.name()).cloned().flatten() {
                        Some(value) => ScalarValue::try_from_string(value, column.data_type()),
                        None => ScalarValue::try_from(column.data_type()),
                    },
                )
                .collect::<Result<Vec<_>>>()?;
            let meta = ObjectMeta {
                location: file.object_store_path(),
                last_modified: chrono::DateTime::from_timestamp_millis(file.modification_time())
                    .unwrap_or_default(),
                size: file.size() as u64,
                e_tag: None,
                version: None,
            };
            let mut statistics = Statistics::new_unknown(&schema);
            if let Some(rows) = file.num_records() {
                statistics.num_rows = Precision::Exact(rows);
            }
            statistics.total_byte_size = Precision::Inexact(meta.size as usize);
            let mut file = PartitionedFile::new_from_meta(meta);
            file.partition_values = partition_values;
            file.statistics = Some(Arc::new(statistics));
            files.push(file);
        }
        let read_as = footers
            .read_as(&store, &files, &file_schema, dictionary_columns)
            .await?;
        for (file, read_as) in files.iter_mut().zip(read_as) {
            file.arrow_schema = read_as;
        }
        Ok(Some(ReplicaTable {
            schema,
            file_schema,
            partition_columns,
            files,
            store_url: log_store.object_store_url(),
            store,
            footers: Arc::clone(&footers.cache),
        }))
    }

    /// The bytes of every file of this version, by the Delta log.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|file| file.object_meta.size).sum()
    }

    /// Registers the table's store in `runtime`, where a plan that reads its files (one that
    /// came over the wire to a worker) finds it.
    pub fn register_store(&self, runtime: &datafusion::execution::runtime_env::RuntimeEnv) {
        runtime.register_object_store(self.store_url.as_ref(), Arc::clone(&self.store));
    }

    /// Whether `filter` is decided by the partition values alone, the same for every row of a
    /// file.
    fn on_partitions(&self, filter: &Expr) -> bool {
        let columns = filter.column_refs();
        !columns.is_empty()
            && !filter.is_volatile()
            && columns
                .iter()
                .all(|c| self.partition_columns.iter().any(|p| p.name() == &c.name))
    }

    /// The files whose partition values pass every filter of `filters` that is on partitions.
    fn files_kept(&self, state: &dyn Session, filters: &[Expr]) -> Result<Vec<PartitionedFile>> {
        let on_partitions = filters.iter().filter(|f| self.on_partitions(f)).cloned();
        let Some(filter) = conjunction(on_partitions) else {
            return Ok(self.files.clone());
        };
        if self.files.is_empty() {
            return Ok(Vec::new());
        }
        let schema = Arc::new(Schema::new(self.partition_columns.clone()));
        let columns = (0..self.partition_columns.len())
            .map(|i| {
                ScalarValue::iter_to_array(self.files.iter().map(|f| f.partition_values[i].clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        let values = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let predicate =
            state.create_physical_expr(filter, &DFSchema::try_from(schema.as_ref().clone())?)?;
        let kept = predicate.evaluate(&values)?.into_array(values.num_rows())?;
        let kept = kept
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(
                    "a partition filter is not a condition".into(),
                )
            })?;
        Ok(self
            .files
            .iter()
            .enumerate()
            .filter(|&(i, _)| kept.is_valid(i) && kept.value(i))
            .map(|(_, file)| file.clone())
            .collect())
    }
}

impl Footers {
    /// The read schema of each of `files` (see the module's comment), fetching the footers of
    /// the files not seen before.
    async fn read_as(
        &self,
        store: &Arc<dyn ObjectStore>,
        files: &[PartitionedFile],
        table: &SchemaRef,
        dictionary_columns: &[String],
    ) -> anyhow::Result<Vec<Option<SchemaRef>>> {
        let unseen: Vec<ObjectMeta> = {
            let known = self.read_as.lock().expect("footer lock poisoned");
            files
                .iter()
                .filter(|f| !known.contains_key(f.path()))
                .map(|f| f.object_meta.clone())
                .collect()
        };
        let fetches = unseen.into_iter().map(|meta| {
            let (store, cache) = (Arc::clone(store), Arc::clone(&self.cache));
            let table = Arc::clone(table);
            let dictionary_columns = dictionary_columns.to_vec();
            async move {
                let footer = DFParquetMetadata::new(store.as_ref(), &meta)
                    .with_file_metadata_cache(Some(cache))
                    .fetch_metadata()
                    .await?;
                let read_as = read_schema(&footer, &table, &dictionary_columns);
                anyhow::Ok((meta.location, read_as))
            }
        });
        let found: Vec<(Path, Option<SchemaRef>)> = futures::stream::iter(fetches)
            .buffer_unordered(FOOTER_FETCHES)
            .try_collect()
            .await?;
        let mut known = self.read_as.lock().expect("footer lock poisoned");
        known.extend(found);
        // Files compaction removed are not read again.
        let current: HashSet<&Path> = files.iter().map(PartitionedFile::path).collect();
        known.retain(|path, _| current.contains(path));
        Ok(files
            .iter()
            .map(|f| known.get(f.path()).cloned().flatten())
            .collect())
    }
}

/// The schema to read a file of `footer` with: its own columns as the reader infers them, with
/// the dictionary columns as dictionaries and the others as the table declares them. If the
/// reader refuses the table's types (nested fields named or nulled otherwise), only the
/// dictionaries are asked for; if it refuses those too, None, and the file is read as it is.
fn read_schema(
    footer: &Arc<datafusion::parquet::file::metadata::ParquetMetaData>,
    table: &Schema,
    dictionary_columns: &[String],
) -> Option<SchemaRef> {
    let file = footer.file_metadata();
    let inferred = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata()).ok()?;
    let with = |as_table: bool| {
        let fields: Vec<Field> = inferred
            .fields()
            .iter()
            .map(|field| {
                let declared = table.field_with_name(field.name()).ok();
                let data_type = match declared {
                    Some(declared)
                        if dictionary_columns.contains(field.name())
                            && holds_strings(field.data_type()) =>
                    {
                        declared.data_type().clone()
                    }
                    Some(declared) if as_table => declared.data_type().clone(),
                    _ => field.data_type().clone(),
                };
                field.as_ref().clone().with_data_type(data_type)
            })
            .collect();
        Arc::new(Schema::new_with_metadata(
            fields,
            inferred.metadata().clone(),
        ))
    };
    [true, false].into_iter().map(with).find(|schema| {
        let options = ArrowReaderOptions::new().with_schema(Arc::clone(schema));
        ArrowReaderMetadata::try_new(Arc::clone(footer), options).is_ok()
    })
}

/// Whether `data_type` is a string type, not a dictionary.
pub(crate) fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Whether `data_type` holds strings: a string type, or a dictionary of strings with the keys
/// [`dictionary`] reads.
pub(crate) fn holds_strings(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(keys, values) => **keys == DataType::Int32 && is_string(values),
        other => is_string(other),
    }
}

#[async_trait]
impl TableProvider for ReplicaTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| {
                if self.on_partitions(filter) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        state
            .runtime_env()
            .register_object_store(self.store_url.as_ref(), Arc::clone(&self.store));
        if let Some(fired) = state.config().get_extension::<FiredRules>() {
            fired.record("dictionary_scan");
        }
        let files = self.files_kept(state, filters)?;
        if files.is_empty() {
            // No file passes (or the table has none): a scan of no file groups would have no
            // partition at all, which the operators above cannot be planned on.
            let schema = match projection {
                Some(columns) => Arc::new(self.schema.project(columns)?),
                None => Arc::clone(&self.schema),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let every_filter_exact = filters.iter().all(|f| self.on_partitions(f));

        let table_schema = TableSchema::builder(Arc::clone(&self.file_schema))
            .with_table_partition_cols(self.partition_columns.clone())
            .build();
        let options = datafusion::config::TableParquetOptions {
            global: state.config_options().execution.parquet.clone(),
            ..Default::default()
        };
        let mut source = ParquetSource::new(table_schema)
            .with_table_parquet_options(options)
            .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
                Arc::clone(&self.store),
                Arc::clone(&self.footers),
            )));
        if let Some(filter) = conjunction(filters.iter().cloned()) {
            let schema = DFSchema::try_from(self.schema.as_ref().clone())?;
            source = source.with_predicate(state.create_physical_expr(filter, &schema)?);
        }

        let mut statistics = Statistics::new_unknown(&self.schema);
        let rows: Option<usize> = files
            .iter()
            .map(|f| f.statistics.as_ref()?.num_rows.get_value().copied())
            .sum();
        if let Some(rows) = rows {
            statistics.num_rows = if every_filter_exact {
                Precision::Exact(rows)
            } else {
                Precision::Inexact(rows)
            };
        }
        let partitions = state.config().target_partitions().max(1);
        let config = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
            .with_file_groups(FileGroup::new(files).split_files(partitions))
            .with_statistics(statistics)
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        Ok(DataSourceExec::from_data_source(config))
    }
}
