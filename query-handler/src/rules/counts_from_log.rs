//! Row counts by partition, answered from the Delta log instead of the Parquet files.
//!
//! Every file the consumer adds carries its row count (`numRecords`) and its partition values
//! in the log. A query that only counts rows grouped by partition columns (`SELECT day,
//! count(*) FROM notifications GROUP BY day`, the daily totals behind most dashboards) needs
//! nothing else, so the handler answers that aggregate from the snapshot's log: no file is
//! opened and no row is hashed. DuckDB does the same from Parquet footers; without it,
//! DataFusion reads every row's partition value and groups them one by one.
//!
//! The rewrite is narrow on purpose. It applies only to an aggregate directly over a scan of
//! the snapshot's own table with no limit and no filter except on partition columns (which is
//! evaluated on the partition values), grouped by partition columns only,
//! whose aggregates are all `count(*)` (or `count` of a non-null literal) without `DISTINCT`,
//! `FILTER` or ordering; and only when every file in the snapshot has a row count and no
//! deletion vector. Anything else runs as DataFusion plans it.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::Schema;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, TableScan};
use datafusion::physical_expr::create_physical_expr;
use datafusion::prelude::{col, lit};

use crate::rules::Rewrite;
use crate::snapshot::{PartitionCounts, Snapshot};

/// The rule, switched by `sluice.counts_from_log`.
#[derive(Debug)]
pub struct CountsFromLog {
    snapshot: Arc<Snapshot>,
}

impl CountsFromLog {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        CountsFromLog { snapshot }
    }
}

impl Rewrite for CountsFromLog {
    fn name(&self) -> &'static str {
        "counts_from_log"
    }

    /// Replaces every aggregate that the log can answer (see the module's comment) with the
    /// log's counts. The plan must be optimized, so that projections and filters sit in the
    /// scan.
    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        let snapshot = &self.snapshot;
        let Some(counts) = snapshot.counts.as_deref() else {
            return Ok(Transformed::no(plan));
        };
        plan.transform_up(|node| {
            let LogicalPlan::Aggregate(aggregate) = &node else {
                return Ok(Transformed::no(node));
            };
            match from_log(aggregate, snapshot, counts)? {
                Some(values) => Ok(Transformed::yes(values)),
                None => Ok(Transformed::no(node)),
            }
        })
    }
}

fn from_log(
    aggregate: &Aggregate,
    snapshot: &Snapshot,
    counts: &PartitionCounts,
) -> Result<Option<LogicalPlan>> {
    let LogicalPlan::TableScan(scan) = aggregate.input.as_ref() else {
        return Ok(None);
    };
    if !scans_snapshot(scan, snapshot) {
        return Ok(None);
    }
    // Which partition column each grouping expression is.
    let mut groups = Vec::with_capacity(aggregate.group_expr.len());
    for expr in &aggregate.group_expr {
        let Expr::Column(column) = expr else {
            return Ok(None);
        };
        let Some(index) = counts.columns.iter().position(|c| *c == column.name) else {
            return Ok(None);
        };
        groups.push(index);
    }
    if !aggregate.aggr_expr.iter().all(counts_rows) {
        return Ok(None);
    }
    // Only now, for an aggregate of the right shape, type the partition values and filter them.
    let Some((values, kept)) = partitions(scan, counts)? else {
        return Ok(None);
    };

    // Sum the counts over the partition columns the query does not group by; each group keeps
    // the index of one of its partitions, whose typed values become the group's key.
    let mut grouped: BTreeMap<Vec<Option<&str>>, (usize, u64)> = BTreeMap::new();
    for (index, ((key, rows), kept)) in counts.rows.iter().zip(kept).enumerate() {
        if kept {
            let key = groups.iter().map(|&i| key[i].as_deref()).collect();
            grouped.entry(key).or_insert((index, 0)).1 += rows;
        }
    }
    if grouped.is_empty() {
        // No partition passes the filters; DataFusion answers an empty input its own way.
        return Ok(None);
    }

    // One literal row per group: its partition values, then its count once per aggregate.
    let mut rows = Vec::with_capacity(grouped.len());
    for &(index, count) in grouped.values() {
        let mut row = groups
            .iter()
            .map(|&i| ScalarValue::try_from_array(values.column(i), index).map(lit))
            .collect::<Result<Vec<_>>>()?;
        row.extend(aggregate.aggr_expr.iter().map(|_| lit(count as i64)));
        rows.push(row);
    }

    // Named and qualified exactly as the aggregate's output, so the plan above it still binds.
    let names = aggregate
        .schema
        .iter()
        .enumerate()
        .map(|(i, (qualifier, field))| {
            col(format!("column{}", i + 1)).alias_qualified(qualifier.cloned(), field.name())
        });
    Ok(Some(
        LogicalPlanBuilder::values(rows)?.project(names)?.build()?,
    ))
}

/// Whether `scan` reads the snapshot's own table, without a limit.
fn scans_snapshot(scan: &TableScan, snapshot: &Snapshot) -> bool {
    scan.fetch.is_none() && snapshot.is_read_by(scan)
}

/// The entries of `counts.rows` as a batch of partition values typed like the table's columns,
/// and which of them the scan's filters keep. None when a partition value does not fit its
/// column's type, or a filter cannot be decided from the partition values alone.
fn partitions(
    scan: &TableScan,
    counts: &PartitionCounts,
) -> Result<Option<(RecordBatch, Vec<bool>)>> {
    let table = scan.source.schema();
    let mut fields = Vec::with_capacity(counts.columns.len());
    let mut arrays = Vec::with_capacity(counts.columns.len());
    for (position, name) in counts.columns.iter().enumerate() {
        let field = table.field_with_name(name)?;
        let text: StringArray = counts
            .rows
            .keys()
            .map(|key| key[position].as_deref())
            .collect();
        let strict = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let Ok(typed) = cast_with_options(&text, field.data_type(), &strict) else {
            return Ok(None);
        };
        fields.push(field.clone().with_nullable(true));
        arrays.push(typed);
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?;
    let Some(filter) = conjunction(scan.filters.iter().cloned()) else {
        let all = vec![true; batch.num_rows()];
        return Ok(Some((batch, all)));
    };
    // Evaluated once per partition instead of once per row, the filter must depend on the
    // partition values alone: no other column, no subquery, nothing volatile like `random()`.
    let only_partitions = filter
        .column_refs()
        .iter()
        .all(|column| counts.columns.contains(&column.name));
    let subquery = filter.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)
        ))
    })?;
    if !only_partitions || subquery || filter.is_volatile() {
        return Ok(None);
    }
    let schema = DFSchema::try_from_qualified_schema(scan.table_name.clone(), &batch.schema())?;
    // A filter that cannot be evaluated here is left to DataFusion.
    let Ok(mask) = create_physical_expr(
        &filter,
        &schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
    .and_then(|predicate| predicate.evaluate(&batch)?.into_array(batch.num_rows())) else {
        return Ok(None);
    };
    let Some(mask) = mask.as_boolean_opt() else {
        return Ok(None);
    };
    let kept = mask.iter().map(|keep| keep == Some(true)).collect();
    Ok(Some((batch, kept)))
}

/// Whether `expr` is `count(*)`: a plain count of a non-null literal.
fn counts_rows(expr: &Expr) -> bool {
    let expr = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(function) = expr else {
        return false;
    };
    let params = &function.params;
    function.func.name() == "count"
        && !params.distinct
        && params.filter.is_none()
        && params.order_by.is_empty()
        && matches!(params.args.as_slice(), [Expr::Literal(value, _)] if !value.is_null())
}
