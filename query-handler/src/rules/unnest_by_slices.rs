//! `unnest` of one list column, without copying the list's values.
//!
//! `SELECT platform, unnest(tags) …` turns each row into one row per tag. DataFusion 55's
//! `UnnestExec` does that for any mix of lists, structs and depths: it appends every element's
//! index to a builder one by one and then takes the values by those indices, and repeats the
//! other columns with 64-bit indices built the same way. That was 19% of
//! `top_tags_per_platform_ranked` (bench/README.md). For the common case, one list column
//! unnested one level, [`ListUnnestExec`] gives the same rows and columns: the values of a
//! batch's lists are one slice of the list's values, and only the other columns are taken, by
//! 32-bit indices filled a row's run at a time.
//!
//! Replaced: `UnnestExec`s of exactly one `List` column, one level deep, and no struct column,
//! that do not turn empty lists into nulls. A batch with null lists keeps DataFusion's
//! semantics: with `preserve_nulls` (DataFusion's default) each null list gives one null row,
//! otherwise none.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::rules::PhysicalRewrite;
use crate::rules::dense_aggregate::with_children;

/// The rule, switched by `sluice.unnest_by_slices`.
#[derive(Debug)]
pub struct UnnestBySlices;

impl PhysicalRewrite for UnnestBySlices {
    fn name(&self) -> &'static str {
        "unnest_by_slices"
    }

    fn rewrite(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        unnest_by_slices(plan)
    }
}

/// Replaces every `UnnestExec` of `plan` that qualifies (see the module's comment).
fn unnest_by_slices(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(unnest) = node.downcast_ref::<UnnestExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(column) = one_list(unnest) else {
                return Ok(Transformed::no(node));
            };
            Ok(Transformed::yes(Arc::new(ListUnnestExec {
                unnest: Arc::new(unnest.clone()),
                column,
            }) as Arc<dyn ExecutionPlan>))
        })?
        .data)
}

/// The input column `unnest` unnests, when it qualifies.
fn one_list(unnest: &UnnestExec) -> Option<usize> {
    let [list] = unnest.list_column_indices() else {
        return None;
    };
    let column = list.index_in_input_schema;
    let input = unnest.input().schema();
    (list.depth == 1
        && unnest.struct_column_indices().is_empty()
        && !unnest.options().expand_empty_as_null()
        && matches!(input.field(column).data_type(), DataType::List(_))
        && unnest.schema().fields().len() == input.fields().len())
    .then_some(column)
}

/// DataFusion's `UnnestExec` of one list column, by slices (see the module's comment).
#[derive(Debug)]
struct ListUnnestExec {
    unnest: Arc<UnnestExec>,
    column: usize,
}

impl DisplayAs for ListUnnestExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListUnnestExec: column={}", self.column)
    }
}

impl ExecutionPlan for ListUnnestExec {
    fn name(&self) -> &str {
        "ListUnnestExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.unnest.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.unnest.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.unnest.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(ListUnnestExec {
            unnest: with_children(&self.unnest, children)?,
            column: self.column,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.unnest.input().execute(partition, context)?;
        let schema = self.unnest.schema();
        let (column, preserve_nulls) = (self.column, self.unnest.options().preserve_nulls());
        let output_schema = Arc::clone(&schema);
        let output = input.filter_map(move |batch| {
            let unnested = batch
                .and_then(|batch| unnest(&batch, column, preserve_nulls, &output_schema))
                .transpose();
            std::future::ready(unnested)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }
}

/// One row per element of `batch`'s list `column`, the other columns repeated; None when that
/// is no row at all.
fn unnest(
    batch: &RecordBatch,
    column: usize,
    preserve_nulls: bool,
    schema: &SchemaRef,
) -> Result<Option<RecordBatch>> {
    let lists = batch.column(column).as_list::<i32>();
    let offsets = lists.value_offsets();
    let has_nulls = lists.null_count() > 0;
    // The input row of each output row.
    let mut rows: Vec<u32> = Vec::with_capacity(lists.values().len());
    // With null lists, the element of each output row, none for a null list's row.
    let mut elements: Vec<Option<u32>> = Vec::new();
    for row in 0..lists.len() {
        let (start, end) = (offsets[row] as u32, offsets[row + 1] as u32);
        if has_nulls && lists.is_null(row) {
            if preserve_nulls {
                rows.push(row as u32);
                elements.push(None);
            }
            continue;
        }
        rows.extend(std::iter::repeat_n(row as u32, (end - start) as usize));
        if has_nulls {
            elements.extend((start..end).map(Some));
        }
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let values: ArrayRef = if has_nulls {
        take(lists.values().as_ref(), &UInt32Array::from(elements), None)?
    } else {
        // Every list's elements, in order: one slice of the values.
        let first = offsets[0] as usize;
        lists
            .values()
            .slice(first, offsets[lists.len()] as usize - first)
    };
    let rows = UInt32Array::from(rows);
    let columns = batch
        .columns()
        .iter()
        .enumerate()
        .map(|(i, array)| {
            if i == column {
                Ok(Arc::clone(&values))
            } else {
                Ok(take(array.as_ref(), &rows, None)?)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(RecordBatch::try_new(Arc::clone(schema), columns)?))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, ListArray, StringArray};
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema};

    use super::*;

    fn batch(lists: Vec<Option<Vec<Option<i32>>>>) -> RecordBatch {
        let ids = Int32Array::from((0..lists.len() as i32).collect::<Vec<_>>());
        let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(lists);
        let names = StringArray::from_iter_values((0..ids.len()).map(|i| format!("r{i}")));
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("list", lists.data_type().clone(), true),
            Field::new("name", DataType::Utf8, false),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(ids), Arc::new(lists), Arc::new(names)],
        )
        .unwrap()
    }

    fn output_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("element", DataType::Int32, true),
            Field::new("name", DataType::Utf8, false),
        ]))
    }

    fn rows(batch: &RecordBatch) -> Vec<(i32, Option<i32>, String)> {
        let ids = batch.column(0).as_primitive::<Int32Type>();
        let elements = batch.column(1).as_primitive::<Int32Type>();
        let names = batch.column(2).as_string::<i32>();
        (0..batch.num_rows())
            .map(|i| {
                (
                    ids.value(i),
                    elements.is_valid(i).then(|| elements.value(i)),
                    names.value(i).to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn each_element_is_a_row_with_the_other_columns_repeated() {
        let input = batch(vec![
            Some(vec![Some(1), Some(2)]),
            Some(vec![]),
            Some(vec![Some(3), None]),
        ]);
        // A slice of the batch: offsets that do not start at 0.
        for (input, first) in [(input.clone(), 0), (input.slice(1, 2), 1)] {
            let out = unnest(&input, 1, true, &output_schema()).unwrap().unwrap();
            let mut expected = vec![
                (0, Some(1), "r0".to_string()),
                (0, Some(2), "r0".to_string()),
                (2, Some(3), "r2".to_string()),
                (2, None, "r2".to_string()),
            ];
            if first == 1 {
                expected.drain(..2);
            }
            assert_eq!(rows(&out), expected);
        }
    }

    #[test]
    fn a_null_list_is_one_null_row_when_nulls_are_preserved_and_none_otherwise() {
        let input = batch(vec![
            Some(vec![Some(1)]),
            None,
            Some(vec![Some(2), Some(3)]),
        ]);
        let preserved = unnest(&input, 1, true, &output_schema()).unwrap().unwrap();
        assert_eq!(
            rows(&preserved),
            [
                (0, Some(1), "r0".to_string()),
                (1, None, "r1".to_string()),
                (2, Some(2), "r2".to_string()),
                (2, Some(3), "r2".to_string()),
            ]
        );
        let dropped = unnest(&input, 1, false, &output_schema()).unwrap().unwrap();
        assert_eq!(
            rows(&dropped),
            [
                (0, Some(1), "r0".to_string()),
                (2, Some(2), "r2".to_string()),
                (2, Some(3), "r2".to_string()),
            ]
        );
        // Only empty and null lists: no rows.
        let none = batch(vec![Some(vec![]), None]);
        assert!(unnest(&none, 1, false, &output_schema()).unwrap().is_none());
    }
}
