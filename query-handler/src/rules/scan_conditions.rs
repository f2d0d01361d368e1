//! One copy of each condition a Parquet scan checks row by row.
//!
//! A `WHERE` on the replica reaches its Parquet scan twice: the Delta scan passes the filters
//! DataFusion offered it to the Parquet reader, and DataFusion's physical filter pushdown then
//! moves the `Filter` above the scan into the same reader. The scan's predicate ends up as
//! `type = 'post.created' AND post_id IS NOT NULL AND type = 'post.created' AND post_id IS NOT
//! NULL`, and the reader evaluates each condition as its own row filter, each copy decoding
//! its column again for the rows left. [`without_repeated_conditions`] keeps the first copy of
//! each; the answer cannot change, since `a AND a` is `a`.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::utils::{conjunction, split_conjunction};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use crate::rules::PhysicalRewrite;

/// The rule, switched by `sluice.scan_conditions_once`.
#[derive(Debug)]
pub struct ScanConditionsOnce;

impl PhysicalRewrite for ScanConditionsOnce {
    fn name(&self) -> &'static str {
        "scan_conditions_once"
    }

    fn rewrite(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        without_repeated_conditions(plan)
    }
}

/// Drops the repeated conditions of every Parquet scan's predicate in `plan`.
fn without_repeated_conditions(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            let Some(parquet) = config.file_source.downcast_ref::<ParquetSource>() else {
                return Ok(Transformed::no(node));
            };
            let Some(predicate) = config.file_source.filter() else {
                return Ok(Transformed::no(node));
            };
            let conditions = split_conjunction(&predicate);
            let before = conditions.len();
            let mut kept: Vec<Arc<dyn PhysicalExpr>> = Vec::with_capacity(conditions.len());
            for condition in conditions {
                if !kept.iter().any(|k| k.as_ref() == condition.as_ref()) {
                    kept.push(Arc::clone(condition));
                }
            }
            if kept.len() == before {
                return Ok(Transformed::no(node));
            }
            let source = Arc::new(parquet.with_predicate(conjunction(kept)));
            let config = FileScanConfigBuilder::from(config.clone())
                .with_source(source)
                .build();
            let exec = exec.clone().with_data_source(Arc::new(config));
            Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>))
        })?
        .data)
}
