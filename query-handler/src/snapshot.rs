//! One version of the replica, ready to query, and what its Delta log says about its rows.
//!
//! This is the base the rest of the handler reads: [`crate::replica`] builds a [`Snapshot`] at
//! each new version, [`crate::engine`] plans queries against one, and the rules of
//! [`crate::rules`] read the log's statistics kept here (rows per partition, columns without
//! nulls) to answer or simplify parts of a plan without opening a file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Expr, LogicalPlan, TableScan};
use deltalake::DeltaTable;

/// One version of the replica, ready to query.
pub struct Snapshot {
    pub version: u64,
    /// The table queries read: the handler's own scan ([`crate::scan::ReplicaTable`]) when it
    /// can read this version, else delta-rs's.
    pub provider: Arc<dyn TableProvider>,
    /// delta-rs's provider of the same version, which reads every string column as views.
    pub delta: Arc<dyn TableProvider>,
    /// Rows per partition from this version's log, when the log alone can say.
    pub counts: Option<Arc<PartitionCounts>>,
    /// Columns that no file of this version holds a null in, by the log's statistics.
    pub without_nulls: BTreeSet<String>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// The handler's own scan of this version, when it reads it.
    fn own_scan(&self) -> Option<&crate::scan::ReplicaTable> {
        self.provider.downcast_ref::<crate::scan::ReplicaTable>()
    }

    /// The bytes of this version's files, when the handler's own scan reads it (only its plans
    /// cross the wire to other query handlers).
    pub fn bytes(&self) -> Option<u64> {
        self.own_scan().map(crate::scan::ReplicaTable::bytes)
    }

    /// Registers the replica's store in `runtime` (a worker's), when the handler's own scan
    /// reads this version.
    pub fn register_store(&self, runtime: &datafusion::execution::runtime_env::RuntimeEnv) {
        if let Some(scan) = self.own_scan() {
            scan.register_store(runtime);
        }
    }

    /// Whether `scan` reads this snapshot's table, through either provider.
    pub fn is_read_by(&self, scan: &TableScan) -> bool {
        source_as_provider(&scan.source).is_ok_and(|provider| {
            Arc::ptr_eq(&provider, &self.provider) || Arc::ptr_eq(&provider, &self.delta)
        })
    }

    /// Whether every column `plan` outputs is this snapshot table's column of the same name
    /// with the same values: a scan of the table, under filters, aliases and projections that
    /// only pick columns.
    pub fn is_read_directly_by(&self, plan: &LogicalPlan) -> bool {
        match plan {
            LogicalPlan::TableScan(scan) => self.is_read_by(scan),
            LogicalPlan::Filter(filter) => self.is_read_directly_by(&filter.input),
            LogicalPlan::Projection(projection) => {
                projection
                    .expr
                    .iter()
                    .all(|expr| matches!(expr, Expr::Column(_)))
                    && self.is_read_directly_by(&projection.input)
            }
            LogicalPlan::SubqueryAlias(alias) => self.is_read_directly_by(&alias.input),
            _ => false,
        }
    }
}

/// Rows per combination of partition values, from one version of the Delta log.
#[derive(Debug)]
pub struct PartitionCounts {
    /// The table's partition columns, in the log's order.
    pub columns: Vec<String>,
    /// Rows per tuple of partition values (as the log writes them; `None` is a null value).
    pub rows: BTreeMap<Vec<Option<String>>, u64>,
}

impl PartitionCounts {
    /// Reads the counts of `table`'s current version; None if a file lacks its row count or
    /// has deleted rows, since then the log alone cannot give exact counts.
    pub fn of(table: &DeltaTable) -> Option<Self> {
        let state = table.snapshot().ok()?;
        let columns = state.metadata().partition_columns().to_vec();
        let mut rows = BTreeMap::new();
        for file in state.log_data().iter() {
            if file.deletion_vector_descriptor().is_some() {
                return None;
            }
            let count = file.num_records()? as u64;
            let values = file.partition_values_map();
            let key = columns
                .iter()
                .map(|c| values.get(c).cloned().flatten())
                .collect();
            *rows.entry(key).or_insert(0) += count;
        }
        Some(PartitionCounts { columns, rows })
    }
}

/// The columns that no live file of `table`'s current version holds a null in, by the log's
/// statistics. A file without statistics for a column rules that column out.
pub fn columns_without_nulls(table: &DeltaTable) -> BTreeSet<String> {
    let Ok(state) = table.snapshot() else {
        return BTreeSet::new();
    };
    let mut without: Option<BTreeSet<String>> = None;
    for file in state.log_data().iter() {
        let in_file: BTreeSet<String> = file
            .stats()
            .and_then(|stats| serde_json::from_str::<serde_json::Value>(&stats).ok())
            .and_then(|stats| {
                let counts = stats.get("nullCount")?.as_object()?;
                Some(
                    counts
                        .iter()
                        .filter(|(_, nulls)| nulls.as_u64() == Some(0))
                        .map(|(column, _)| column.clone())
                        .collect(),
                )
            })
            .unwrap_or_default();
        let columns = match without.take() {
            None => in_file,
            Some(so_far) => so_far.intersection(&in_file).cloned().collect(),
        };
        if columns.is_empty() {
            return columns;
        }
        without = Some(columns);
    }
    // No file at all: nothing to count, nothing to rewrite.
    without.unwrap_or_default()
}
