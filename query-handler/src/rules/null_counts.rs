//! `count(column)` of a column that no file of the snapshot holds a null in is `count(*)`, and
//! `column IS NOT NULL` is true.
//!
//! Every file the consumer adds carries, in the Delta log, the number of nulls in each of its
//! columns. When the log says a column has none in any live file, counting its non-null values
//! counts rows, and the scan need not read the column at all. `count(post_id)` then costs what
//! `count(*)` costs. DuckDB does the same from the Parquet footers' statistics. A `WHERE post_id
//! IS NOT NULL`, the usual guard of an analyst's query, is then dropped: the scan evaluates it
//! as a row filter, which decodes `post_id` once more for nothing.
//!
//! Only a count or a condition over the table's own column is rewritten: its input must be a scan
//! of the snapshot's table, possibly under filters, aliases and projections that only pick
//! columns, none of which adds a null. Behind a computed projection or an outer join the same
//! name may hold nulls the log knows nothing of, so those are left as they are. The rewritten
//! count keeps its name, and a dropped filter's schema is its input's, so the plan above still
//! binds.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{Aggregate, Expr, Filter, LogicalPlan};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::{OptimizerContext, OptimizerRule};
use datafusion::prelude::lit;

use crate::rules::Rewrite;
use crate::snapshot::Snapshot;

/// The rule, switched by `sluice.null_counts`.
#[derive(Debug)]
pub struct NullCounts {
    snapshot: Arc<Snapshot>,
}

impl NullCounts {
    pub fn new(snapshot: Arc<Snapshot>) -> Self {
        NullCounts { snapshot }
    }
}

impl Rewrite for NullCounts {
    fn name(&self) -> &'static str {
        "null_counts"
    }

    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        use_null_counts(plan, &self.snapshot)
    }
}

/// Rewrites `count(c)` to `count(*)` and drops `c IS NOT NULL` conditions wherever the log
/// says `c` has no null, then drops the columns no longer read from the scans. `plan` must be
/// optimized.
fn use_null_counts(plan: LogicalPlan, snapshot: &Snapshot) -> Result<Transformed<LogicalPlan>> {
    if snapshot.without_nulls.is_empty() {
        return Ok(Transformed::no(plan));
    }
    let without_nulls = &snapshot.without_nulls;
    let rewritten = plan.transform_up(|node| match node {
        LogicalPlan::Aggregate(aggregate) if snapshot.is_read_directly_by(&aggregate.input) => {
            let Aggregate {
                input,
                group_expr,
                aggr_expr,
                schema,
                ..
            } = aggregate;
            let mut changed = false;
            let aggr_expr = aggr_expr
                .into_iter()
                .map(|expr| match count_of_rows(&expr, without_nulls) {
                    Some(rows) => {
                        changed = true;
                        let name = expr.schema_name().to_string();
                        match expr {
                            Expr::Alias(alias) => rows.alias_qualified(alias.relation, alias.name),
                            _ => rows.alias(name),
                        }
                    }
                    None => expr,
                })
                .collect();
            let node = LogicalPlan::Aggregate(Aggregate::try_new_with_schema(
                input, group_expr, aggr_expr, schema,
            )?);
            Ok(Transformed::new_transformed(node, changed))
        }
        LogicalPlan::Filter(filter) if snapshot.is_read_directly_by(&filter.input) => {
            let conditions = split_conjunction_owned(filter.predicate.clone());
            let before = conditions.len();
            let kept: Vec<Expr> = conditions
                .into_iter()
                .filter(|c| !always_true(c, without_nulls))
                .collect();
            if kept.len() == before {
                return Ok(Transformed::no(LogicalPlan::Filter(filter)));
            }
            // A filter of proven conditions alone goes: its schema is its input's.
            Ok(Transformed::yes(match conjunction(kept) {
                Some(predicate) => LogicalPlan::Filter(Filter::try_new(predicate, filter.input)?),
                None => Arc::unwrap_or_clone(filter.input),
            }))
        }
        LogicalPlan::TableScan(mut scan) if snapshot.is_read_by(&scan) => {
            let before = scan.filters.len();
            scan.filters.retain(|c| !always_true(c, without_nulls));
            let changed = scan.filters.len() < before;
            Ok(Transformed::new_transformed(
                LogicalPlan::TableScan(scan),
                changed,
            ))
        }
        other => Ok(Transformed::no(other)),
    })?;
    if !rewritten.transformed {
        return Ok(rewritten);
    }
    // The scan still reads the columns; the projection rule removes what nothing uses now.
    let pruned = OptimizeProjections::new().rewrite(
        rewritten.data,
        &OptimizerContext::new_with_config_options(Arc::new(ConfigOptions::default())),
    )?;
    Ok(Transformed::yes(pruned.data))
}

/// Whether `condition` is `c IS NOT NULL` of a column the log says has no null.
fn always_true(condition: &Expr, without_nulls: &BTreeSet<String>) -> bool {
    matches!(condition, Expr::IsNotNull(inner)
        if matches!(inner.as_ref(), Expr::Column(Column { name, .. }) if without_nulls.contains(name)))
}

/// `count(*)` in place of `expr`, when `expr` is a plain `count` of one column without nulls
/// (a `FILTER` stays: it selects rows either way).
fn count_of_rows(expr: &Expr, without_nulls: &BTreeSet<String>) -> Option<Expr> {
    let inner = match expr {
        Expr::Alias(alias) => alias.expr.as_ref(),
        other => other,
    };
    let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
        return None;
    };
    let [Expr::Column(Column { name, .. })] = params.args.as_slice() else {
        return None;
    };
    if func.name() != "count" || params.distinct || !without_nulls.contains(name) {
        return None;
    }
    let mut params = params.clone();
    params.args = vec![lit(ScalarValue::Int64(Some(1)))];
    Some(Expr::AggregateFunction(AggregateFunction {
        func: Arc::clone(func),
        params,
    }))
}
