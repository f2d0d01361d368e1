//! Answers never show the handler's dictionaries.
//!
//! The handler's scan reads the low-cardinality columns as dictionaries ([`crate::scan`]);
//! delta-rs's reads them as string views. A result column that is still a dictionary is cast
//! to views at the top of the plan, so clients see the table's types whichever scan ran. This
//! is part of the scan, not a rewrite of its own: it has no switch, and changes nothing where
//! there is no dictionary.

use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::expressions::CastExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use crate::scan::is_string;

/// The rule, which casts the result's dictionaries to views.
#[derive(Debug)]
pub struct WithoutDictionaries;

impl PhysicalOptimizerRule for WithoutDictionaries {
    fn name(&self) -> &str {
        "without_dictionaries"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        without_dictionaries(plan)
    }

    /// The result's types change: that is the point.
    fn schema_check(&self) -> bool {
        false
    }
}

/// `plan` with each dictionary column of its output cast to string views, the type the table
/// would show without [`ReplicaTable`]'s dictionaries.
fn without_dictionaries(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    if !schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Dictionary(..)))
    {
        return Ok(plan);
    }
    let columns: Vec<(Arc<dyn PhysicalExpr>, String)> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let column: Arc<dyn PhysicalExpr> = Arc::new(
                datafusion::physical_expr::expressions::Column::new(field.name(), i),
            );
            let column = match field.data_type() {
                DataType::Dictionary(_, values) if is_string(values) => {
                    Arc::new(CastExpr::new(column, DataType::Utf8View, None)) as _
                }
                DataType::Dictionary(_, values) => {
                    Arc::new(CastExpr::new(column, values.as_ref().clone(), None)) as _
                }
                _ => column,
            };
            (column, field.name().clone())
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(columns, plan)?))
}
