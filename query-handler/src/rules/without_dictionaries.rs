//! Answers never show the handler's dictionaries.
//!
//! The handler's scan reads the low-cardinality columns as dictionaries ([`crate::scan`]);
//! delta-rs's reads them as string views. A result column that is still a dictionary is cast
//! to views at the top of the plan, so clients see the table's types whichever scan ran; so is
//! one inside a list, struct or map (`array_agg(type)`). This is part of the scan, not a
//! rewrite of its own: it follows the scan's switch, `dictionary_scan`.

use std::sync::Arc;

use arrow::compute::can_cast_types;
use arrow::datatypes::{DataType, FieldRef, Fields};
use datafusion::common::Result;
use datafusion::config::ConfigOptions;
use datafusion::physical_expr::expressions::CastExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};

use crate::rules::RuleSwitches;
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
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if RuleSwitches::of(config).dictionary_scan {
            without_dictionaries(plan)
        } else {
            Ok(plan)
        }
    }

    /// The result's types change: that is the point.
    fn schema_check(&self) -> bool {
        false
    }
}

/// `plan` with each dictionary of its output, at the top or inside a list, struct or map, cast
/// to its values' type (string views for strings): the type the table would show without
/// [`crate::scan::ReplicaTable`]'s dictionaries.
fn without_dictionaries(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = plan.schema();
    let undictionaried: Vec<Option<DataType>> = schema
        .fields()
        .iter()
        .map(|f| without_dictionary(f.data_type()).filter(|to| can_cast_types(f.data_type(), to)))
        .collect();
    if undictionaried.iter().all(Option::is_none) {
        return Ok(plan);
    }
    let columns: Vec<(Arc<dyn PhysicalExpr>, String)> = schema
        .fields()
        .iter()
        .zip(undictionaried)
        .enumerate()
        .map(|(i, (field, to))| {
            let column: Arc<dyn PhysicalExpr> = Arc::new(
                datafusion::physical_expr::expressions::Column::new(field.name(), i),
            );
            let column = match to {
                Some(to) => Arc::new(CastExpr::new(column, to, None)) as _,
                None => column,
            };
            (column, field.name().clone())
        })
        .collect();
    Ok(Arc::new(ProjectionExec::try_new(columns, plan)?))
}

/// `data_type` with every dictionary in it replaced by its values' type (string views for
/// strings); None when it holds none.
fn without_dictionary(data_type: &DataType) -> Option<DataType> {
    let field = |f: &FieldRef| -> Option<FieldRef> {
        without_dictionary(f.data_type()).map(|to| Arc::new(f.as_ref().clone().with_data_type(to)))
    };
    let fields = |fields: &Fields| -> Option<Fields> {
        let changed: Vec<Option<FieldRef>> = fields.iter().map(field).collect();
        changed.iter().any(Option::is_some).then(|| {
            fields
                .iter()
                .zip(changed)
                .map(|(f, changed)| changed.unwrap_or_else(|| Arc::clone(f)))
                .collect()
        })
    };
    match data_type {
        DataType::Dictionary(_, values) if is_string(values) => Some(DataType::Utf8View),
        DataType::Dictionary(_, values) => {
            Some(without_dictionary(values).unwrap_or_else(|| values.as_ref().clone()))
        }
        DataType::List(item) => field(item).map(DataType::List),
        DataType::LargeList(item) => field(item).map(DataType::LargeList),
        DataType::FixedSizeList(item, size) => {
            field(item).map(|item| DataType::FixedSizeList(item, *size))
        }
        DataType::Struct(members) => fields(members).map(DataType::Struct),
        DataType::Map(entries, sorted) => field(entries).map(|e| DataType::Map(e, *sorted)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Field;

    use super::*;

    #[test]
    fn dictionaries_inside_lists_structs_and_maps_become_their_values() {
        let dictionary = crate::scan::dictionary();
        let list = DataType::List(Arc::new(Field::new("item", dictionary.clone(), true)));
        assert_eq!(
            without_dictionary(&list),
            Some(DataType::List(Arc::new(Field::new(
                "item",
                DataType::Utf8View,
                true
            ))))
        );
        assert!(can_cast_types(&list, &without_dictionary(&list).unwrap()));
        let members = Fields::from(vec![
            Field::new("a", dictionary.clone(), true),
            Field::new("b", DataType::Int64, true),
        ]);
        let expected = Fields::from(vec![
            Field::new("a", DataType::Utf8View, true),
            Field::new("b", DataType::Int64, true),
        ]);
        assert_eq!(
            without_dictionary(&DataType::Struct(members)),
            Some(DataType::Struct(expected))
        );
        assert_eq!(without_dictionary(&dictionary), Some(DataType::Utf8View));
        assert_eq!(without_dictionary(&DataType::Utf8), None);
        assert_eq!(without_dictionary(&DataType::Int64), None);
    }
}
