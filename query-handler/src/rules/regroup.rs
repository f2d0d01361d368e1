//! Aggregates over low-cardinality columns, grouped by those columns first.
//!
//! A pivot such as `sum(CASE WHEN type = 'post.liked' THEN 1 ELSE 0 END) … GROUP BY platform`
//! evaluates a string comparison for every row and every column of the pivot. `type`,
//! `platform` and `lang` hold a handful of values each (the notification contract's
//! enumerations), so the handler first groups the rows by the aggregate's own groups plus
//! those columns, counting rows, and then evaluates the per-row part once per group:
//!
//! ```text
//! Aggregate: groupBy=[platform], aggr=[sum(CASE WHEN type = 'x' THEN 1 ELSE 0 END)]
//!   TableScan: notifications
//! ```
//! becomes
//! ```text
//! Projection: (the original names)
//!   Aggregate: groupBy=[platform], aggr=[sum(CAST(CASE WHEN type = 'x' THEN 1 ELSE 0 END) * n)]
//!     Aggregate: groupBy=[platform, type], aggr=[count(*) AS n]
//!       TableScan: notifications
//! ```
//!
//! The rewrite is exact whatever the data holds; the columns' low cardinality only makes it pay.
//! Each aggregate must be one of the following, or nothing is rewritten:
//! - over the outer groups' columns and the low-cardinality columns only (its argument and its
//!   `FILTER`): `count`, `count(DISTINCT …)`, `min`, `max`, and `sum` of an integer, evaluated
//!   once per inner group (`count` as a sum of `n` where the argument is not null, `sum` of
//!   `argument × n`);
//! - over other columns, without `DISTINCT`: `count`, `sum`, `min` or `max`, computed per inner
//!   group and combined (a sum of counts or sums, a min of mins, a max of maxes).
//!
//! A group computed from the low-cardinality columns alone, such as `coalesce(lang, 'und')`, is
//! computed once per inner group too: the inner aggregate groups by its columns instead.
//!
//! No ordered aggregate, no grouping set, nothing volatile, no subquery. And only where it
//! saves work: some aggregate or group must compute something from those columns (a
//! comparison, a CASE, a function), since grouping by one more column costs about what a plain
//! `count(DISTINCT type)` or an `IS NULL` filter would save (bench/README.md).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{
    Aggregate, AggregateUDF, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder, cast, when,
};
use datafusion::prelude::{col, lit};

use crate::rules::Rewrite;

/// The inner aggregate's row count.
const ROWS: &str = "__sluice_rows";

/// The rule, switched by `sluice.regroup`.
#[derive(Debug)]
pub struct Regroup {
    low_cardinality: Arc<[String]>,
}

impl Regroup {
    pub fn new(low_cardinality: Arc<[String]>) -> Self {
        Regroup { low_cardinality }
    }
}

impl Rewrite for Regroup {
    fn name(&self) -> &'static str {
        "regroup"
    }

    /// Rewrites every aggregate of the plan that qualifies (see the module's comment).
    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        if self.low_cardinality.is_empty() {
            return Ok(Transformed::no(plan));
        }
        plan.transform_up(|node| match node {
            LogicalPlan::Aggregate(aggregate) => {
                match rewrite(&aggregate, &self.low_cardinality)? {
                    Some(rewritten) => Ok(Transformed::yes(rewritten)),
                    None => Ok(Transformed::no(LogicalPlan::Aggregate(aggregate))),
                }
            }
            other => Ok(Transformed::no(other)),
        })
    }
}

/// How one aggregate is computed after the rewrite.
struct Part {
    /// What the inner aggregate computes for it per inner group, if anything (aliased).
    inner: Option<Expr>,
    /// What the outer aggregate computes from the inner groups.
    outer: Expr,
    /// A count turned into a sum, which is null where no group passed: 0 then.
    zero_if_null: bool,
}

fn rewrite(aggregate: &Aggregate, low_cardinality: &[String]) -> Result<Option<LogicalPlan>> {
    let input_schema = aggregate.input.schema();
    if aggregate
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)) || !plain(e))
    {
        return Ok(None);
    }
    // An aggregate this rule made already (it reads the inner one's columns) stays as it is.
    let made_here = aggregate
        .group_expr
        .iter()
        .chain(&aggregate.aggr_expr)
        .any(|e| {
            e.column_refs()
                .iter()
                .any(|c| c.name.starts_with("__sluice_"))
        });
    if made_here {
        return Ok(None);
    }
    let grouped: BTreeSet<&Column> = aggregate
        .group_expr
        .iter()
        .filter_map(|e| match e {
            Expr::Column(column) => Some(column),
            _ => None,
        })
        .collect();
    // Computed groups of low-cardinality columns alone, such as `coalesce(lang, 'und')`: the
    // inner aggregate groups by their columns, and the outer one computes them once per group.
    let computed_from_low_cardinality: Vec<bool> = aggregate
        .group_expr
        .iter()
        .map(|e| {
            let columns = e.column_refs();
            !matches!(e, Expr::Column(_))
                && !columns.is_empty()
                && columns.iter().all(|c| low_cardinality.contains(&c.name))
        })
        .collect();
    // The low-cardinality columns the aggregates and those groups read that are not groups
    // already.
    let mut added: BTreeSet<Column> = BTreeSet::new();
    let read = aggregate.aggr_expr.iter().chain(
        aggregate
            .group_expr
            .iter()
            .zip(&computed_from_low_cardinality)
            .filter_map(|(e, &computed)| computed.then_some(e)),
    );
    for expr in read {
        for column in expr.column_refs() {
            if !grouped.contains(column) && low_cardinality.contains(&column.name) {
                added.insert(column.clone());
            }
        }
    }
    if added.is_empty() {
        return Ok(None);
    }
    let outer_only = |e: &Expr| {
        plain(e)
            && e.column_refs()
                .iter()
                .all(|c| grouped.contains(c) || added.contains(*c))
    };

    let rows = col(ROWS);
    let mut parts = Vec::with_capacity(aggregate.aggr_expr.len());
    // Whether some aggregate computes per row what the rewrite computes per group; grouping by
    // more columns costs about what a `count(DISTINCT …)` or a null check saves, so only a
    // comparison, a CASE or a function of the low-cardinality columns makes it pay.
    let mut saves_work = computed_from_low_cardinality.contains(&true);
    for expr in &aggregate.aggr_expr {
        // The optimizer may alias an aggregate to its name before type coercion; the projection
        // at the end restores every name.
        let expr = match expr {
            Expr::Alias(alias) => alias.expr.as_ref(),
            expr => expr,
        };
        let Expr::AggregateFunction(AggregateFunction { func, params }) = expr else {
            return Ok(None);
        };
        if !params.order_by.is_empty() || params.null_treatment.is_some() {
            return Ok(None);
        }
        let filter = params.filter.as_deref();
        let on_outer = params.args.iter().all(outer_only) && filter.is_none_or(outer_only);
        saves_work |= on_outer && params.args.iter().chain(filter).any(computed);
        let name = func.name();
        let split = |combine: Arc<AggregateUDF>| {
            let alias = format!("__sluice_part_{}", parts.len());
            Part {
                inner: Some(expr.clone().alias(&alias)),
                outer: aggregate_of(combine, col(alias), None),
                zero_if_null: name == "count",
            }
        };
        let part = match (name, params.distinct, on_outer) {
            ("count", true, true) | ("min" | "max", _, true) => Part {
                inner: None,
                outer: expr.clone(),
                zero_if_null: false,
            },
            ("count", false, true) => {
                // Rows of the group where every argument is not null.
                let present = params
                    .args
                    .iter()
                    .filter(|a| !matches!(a, Expr::Literal(v, _) if !v.is_null()))
                    .map(|a| a.clone().is_not_null())
                    .reduce(Expr::and);
                let counted = match present {
                    Some(present) => when(present, rows.clone()).end()?,
                    None => rows.clone(),
                };
                Part {
                    inner: None,
                    outer: aggregate_of(sum_udaf(), counted, filter.cloned()),
                    zero_if_null: true,
                }
            }
            ("sum", false, true) => {
                let [argument] = params.args.as_slice() else {
                    return Ok(None);
                };
                if !matches!(
                    argument.get_type(input_schema)?,
                    DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
                ) {
                    // Float sums would round differently; unsigned sums have another type.
                    return Ok(None);
                }
                let weighted = cast(argument.clone(), DataType::Int64) * rows.clone();
                Part {
                    inner: None,
                    outer: aggregate_of(sum_udaf(), weighted, filter.cloned()),
                    zero_if_null: false,
                }
            }
            ("count", false, false) => split(sum_udaf()),
            ("sum" | "min" | "max", false, false) => split(Arc::clone(func)),
            _ => return Ok(None),
        };
        parts.push(part);
    }
    if !saves_work {
        return Ok(None);
    }

    // The inner aggregate: the original groups (complex ones under an alias the outer one can
    // name), the added columns, the row count and the split aggregates.
    let mut inner_groups = Vec::new();
    let mut outer_groups = Vec::new();
    for (i, group) in aggregate.group_expr.iter().enumerate() {
        match group {
            Expr::Column(_) => {
                inner_groups.push(group.clone());
                outer_groups.push(group.clone());
            }
            _ if computed_from_low_cardinality[i] => outer_groups.push(group.clone()),
            _ => {
                let alias = format!("__sluice_group_{i}");
                inner_groups.push(group.clone().alias(&alias));
                outer_groups.push(col(alias));
            }
        }
    }
    inner_groups.extend(added.iter().cloned().map(Expr::Column));
    let mut inner_aggregates = vec![aggregate_of(count_udaf(), lit(1_i64), None).alias(ROWS)];
    inner_aggregates.extend(parts.iter().filter_map(|p| p.inner.clone()));
    let group_count = outer_groups.len();
    let zero_if_null: Vec<bool> = parts.iter().map(|p| p.zero_if_null).collect();
    let outer_exprs_named = |exprs: Vec<Expr>, offset: usize| -> Vec<Expr> {
        exprs
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.alias(format!("__sluice_out_{}", i + offset)))
            .collect()
    };
    let regrouped = LogicalPlanBuilder::from(aggregate.input.as_ref().clone())
        .aggregate(inner_groups, inner_aggregates)?
        .aggregate(
            outer_exprs_named(outer_groups, 0),
            outer_exprs_named(parts.into_iter().map(|p| p.outer).collect(), group_count),
        )?
        .build()?;
    // Each column under its original name and type: a sum of sums of DECIMAL(p, s) is
    // DECIMAL(p + 20, s) where the original was DECIMAL(p + 10, s), with the same value.
    let original: &DFSchema = &aggregate.schema;
    let names = (0..original.fields().len())
        .map(|i| {
            let (qualifier, field) = original.qualified_field(i);
            let value = col(format!("__sluice_out_{i}"));
            // `coalesce` is only planned after the simplifier turned it into a CASE. Written
            // this way round, DataFusion's logical and physical plans both see that it is never
            // null (`WHEN v IS NULL THEN 0 ELSE v` is not null to the first only, and an
            // aggregate above then refuses its input).
            let value = if i >= group_count && zero_if_null[i - group_count] {
                when(value.clone().is_not_null(), value).otherwise(lit(0_i64))?
            } else {
                value
            };
            let value = if regrouped.schema().field(i).data_type() == field.data_type() {
                value
            } else {
                cast(value, field.data_type().clone())
            };
            Ok(value.alias_qualified(qualifier.cloned(), field.name()))
        })
        .collect::<Result<Vec<Expr>>>()?;
    let plan = LogicalPlanBuilder::from(regrouped)
        .project(names)?
        .build()?;
    Ok(Some(plan))
}

/// Whether `expr` may be evaluated once per group instead of once per row: nothing volatile,
/// no subquery.
fn plain(expr: &Expr) -> bool {
    !expr.is_volatile()
        && !expr
            .exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
                ))
            })
            .unwrap_or(true)
}

/// Whether `expr` computes something per row beyond reading columns and checking nulls.
fn computed(expr: &Expr) -> bool {
    expr.exists(|e| {
        Ok(!matches!(
            e,
            Expr::Column(_) | Expr::Literal(..) | Expr::IsNull(_) | Expr::IsNotNull(_)
        ))
    })
    .unwrap_or(true)
}

fn aggregate_of(func: Arc<AggregateUDF>, argument: Expr, filter: Option<Expr>) -> Expr {
    Expr::AggregateFunction(AggregateFunction::new_udf(
        func,
        vec![argument],
        false,
        filter.map(Box::new),
        vec![],
        None,
    ))
}
