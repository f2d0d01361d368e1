//! Faster kernels for two per-row operations that DataFusion 55 evaluates slowly on the
//! replica's columns, swapped into the optimized plan under the same names and types:
//!
//! - [`maps`]: `metrics['likes']`, one key looked up in a map column;
//! - [`like`]: `attributes LIKE '%…%'` on a column that holds few distinct strings, evaluated
//!   once per distinct value of each batch instead of once per row.
//!
//! Both give exactly what DataFusion's own kernels give; each falls back to them for input it
//! does not speed up. Table scans keep their pushed-down filters as they are, since the Delta
//! scan reads those for file skipping.

mod like;
mod maps;

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::functions::core::getfield::GetFieldFunc;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF};

use crate::error::QueryError;

/// Swaps the faster kernels into every expression of `plan` outside its table scans.
pub fn use_faster_kernels(plan: LogicalPlan) -> Result<LogicalPlan, QueryError> {
    let lookup = Arc::new(ScalarUDF::new_from_impl(maps::MapLookup::default()));
    Ok(plan
        .transform_up_with_subqueries(|node| {
            if matches!(node, LogicalPlan::TableScan(_)) {
                return Ok(Transformed::no(node));
            }
            node.map_expressions(|expr| {
                expr.transform_up(|expr| match expr {
                    Expr::ScalarFunction(call) if call.func.inner().is::<GetFieldFunc>() => {
                        Ok(Transformed::yes(Expr::ScalarFunction(
                            ScalarFunction::new_udf(lookup.clone(), call.args),
                        )))
                    }
                    Expr::Like(like) => Ok(match like::OncePerValue::replacing(&like) {
                        Some(udf) => {
                            Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                                Arc::new(ScalarUDF::new_from_impl(udf)),
                                vec![*like.expr, *like.pattern],
                            )))
                        }
                        None => Transformed::no(Expr::Like(like)),
                    }),
                    other => Ok(Transformed::no(other)),
                })
            })
        })?
        .data)
}
