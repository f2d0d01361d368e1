//! Aggregation whose groups are string numbers, without a hash table.
//!
//! [`super::number_groups`] makes `GROUP BY type` group by `code(type)`, the query's small number for
//! each string. DataFusion's aggregate still hashes each row's number into its table of
//! groups (`GroupValuesPrimitive::intern`, 12–20% of `count_by_type`'s time, bench/README.md).
//! The numbers are dense, 0, 1, 2, … in the order the query meets the strings, so
//! [`CodeAggregateExec`] finds a row's group by indexing a vector with its number instead. It
//! keeps everything else of the `AggregateExec` it replaces: the same accumulators, fed the same
//! arguments and filters, and the same output schema, so the `AggregateExec` above it merges its
//! output unchanged.
//!
//! With two groups, `GROUP BY platform, type`, the table is indexed by both numbers in turn.
//!
//! Replaced: aggregates that read rows (partial or single mode) in no particular order, whose
//! groups are all `code(…)`, one or two of them ([`MAX_GROUPS`]), and whose aggregates all have
//! a grouped accumulator and no `ORDER BY` of their own. Unlike DataFusion's, it does not spill:
//! past the query's memory limit it fails with the limit's error. Its groups are the distinct
//! values of low-cardinality columns, so they take little memory.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, UInt32Array,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, FieldRef, UInt32Type};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::aggregates::{
    AggregateExec, AggregateInputMode, AggregateOutputMode, aggregate_expressions, evaluate_many,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream, replace_children_if_necessary,
};
use futures::StreamExt;

use crate::rules::PhysicalRewrite;
use crate::rules::number_groups::{MAX_GROUPS, is_code};

/// The rule, switched by `sluice.dense_aggregate`.
#[derive(Debug)]
pub struct DenseAggregate;

impl PhysicalRewrite for DenseAggregate {
    fn name(&self) -> &'static str {
        "dense_aggregate"
    }

    fn rewrite(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        aggregate_by_codes(plan)
    }
}

/// Replaces every aggregate of `plan` that qualifies (see the module's comment).
fn aggregate_by_codes(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let Some(aggregate) = node.downcast_ref::<AggregateExec>() else {
                return Ok(Transformed::no(node));
            };
            if !qualifies(aggregate) {
                return Ok(Transformed::no(node));
            }
            let aggregate = Arc::new(aggregate.clone());
            Ok(Transformed::yes(
                Arc::new(CodeAggregateExec { aggregate }) as Arc<dyn ExecutionPlan>
            ))
        })?
        .data)
}

fn qualifies(aggregate: &AggregateExec) -> bool {
    let groups = aggregate.group_expr();
    aggregate.mode().input_mode() == AggregateInputMode::Raw
        && groups.is_single()
        && (1..=MAX_GROUPS).contains(&groups.expr().len())
        && groups
            .expr()
            .iter()
            .all(|(group, _)| is_code(group.as_ref()))
        && *aggregate.input_order_mode() == InputOrderMode::Linear
        && aggregate.limit_options().is_none()
        && aggregate.dynamic_expressions_produced().is_empty()
        && aggregate
            .aggr_expr()
            .iter()
            .all(|expr| expr.groups_accumulator_supported() && expr.order_bys().is_empty())
}

/// An `AggregateExec` that finds each row's group by its `code(…)`s (see the module's comment).
#[derive(Debug)]
pub struct CodeAggregateExec {
    aggregate: Arc<AggregateExec>,
}

impl DisplayAs for CodeAggregateExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |exprs: Vec<String>| exprs.join(", ");
        write!(
            f,
            "CodeAggregateExec: mode={:?}, gby=[{}], aggr=[{}]",
            self.aggregate.mode(),
            names(
                self.aggregate
                    .group_expr()
                    .expr()
                    .iter()
                    .map(|(expr, name)| format!("{expr} as {name}"))
                    .collect()
            ),
            names(
                self.aggregate
                    .aggr_expr()
                    .iter()
                    .map(|expr| expr.name().to_string())
                    .collect()
            ),
        )
    }
}

impl ExecutionPlan for CodeAggregateExec {
    fn name(&self) -> &str {
        "CodeAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.aggregate.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.aggregate.input()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.aggregate.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(CodeAggregateExec {
            aggregate: with_children(&self.aggregate, children)?,
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let aggregate = &self.aggregate;
        let input = aggregate.input().execute(partition, Arc::clone(&context))?;
        let accumulators = aggregate
            .aggr_expr()
            .iter()
            .map(|expr| match DistinctCodes::counting(expr)? {
                Some(distinct) => Ok(Box::new(distinct) as Box<dyn GroupsAccumulator>),
                None => expr.create_groups_accumulator(),
            })
            .collect::<Result<Vec<_>>>()?;
        let groups = aggregate.group_expr().expr();
        let mut groups = Groups {
            groups: groups.iter().map(|(expr, _)| Arc::clone(expr)).collect(),
            keys: vec![Vec::new(); groups.len()],
            arguments: aggregate_expressions(aggregate.aggr_expr(), aggregate.mode(), 0)?,
            filters: aggregate.filter_expr().to_vec(),
            accumulators,
            final_values: aggregate.mode().output_mode() == AggregateOutputMode::Final,
            table: Vec::new(),
            wide: None,
            indices: Vec::new(),
            reservation: MemoryConsumer::new(format!("CodeAggregateExec[{partition}]"))
                .register(context.memory_pool()),
        };
        let schema = aggregate.schema();
        let output_schema = Arc::clone(&schema);
        let output = futures::stream::once(async move {
            let mut input = input;
            while let Some(batch) = input.next().await {
                groups.add(&batch?)?;
            }
            groups.emit(output_schema)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, output)))
    }
}

/// `exec` with `children`, for an operator that wraps the one it replaces.
pub(crate) fn with_children<T: ExecutionPlan + Clone>(
    exec: &Arc<T>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<T>> {
    let replaced = replace_children_if_necessary(Arc::clone(exec) as _, children)?;
    match replaced.downcast_ref::<T>() {
        Some(exec) => Ok(Arc::new(exec.clone())),
        None => internal_err!("{} with new children changed its type", exec.name()),
    }
}

/// One partition's groups and accumulators.
struct Groups {
    /// The `code(…)`s each row is grouped by, one or two.
    groups: Vec<Arc<dyn PhysicalExpr>>,
    /// Each accumulator's arguments and `FILTER`.
    arguments: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Whether the output is the aggregates' values (single mode) or their states (partial).
    final_values: bool,
    /// The group of each slot of the first column (0 for null, the number + 1 otherwise) and,
    /// under it, of each slot of the second; with one column, all under slot 0.
    /// [`Groups::NONE`] for a combination not met yet.
    table: Vec<Vec<u32>>,
    /// The groups by slots, instead of `table` once it would pass [`Groups::MAX_TABLE`] slots.
    wide: Option<HashMap<(usize, usize), u32>>,
    /// Each column's number of each group, None for null.
    keys: Vec<Vec<Option<u32>>>,
    /// The group of each row of the current batch.
    indices: Vec<usize>,
    reservation: MemoryReservation,
}

impl Groups {
    const NONE: u32 = u32::MAX;
    /// The most slots `table` may have (16 MiB); past it, `wide` holds the groups.
    const MAX_TABLE: usize = 1 << 22;

    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let columns = self
            .groups
            .iter()
            .map(|group| group.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>>>()?;
        let mut codes = Vec::with_capacity(columns.len());
        for column in &columns {
            let Some(column) = column.as_primitive_opt::<UInt32Type>() else {
                return internal_err!("code(…) gave {}, not UInt32", column.data_type());
            };
            codes.push(column);
        }
        self.assign(&codes);
        let groups = self.keys[0].len();
        let arguments = evaluate_many(&self.arguments, batch)?;
        for ((accumulator, values), filter) in self
            .accumulators
            .iter_mut()
            .zip(&arguments)
            .zip(&self.filters)
        {
            let filter = match filter {
                Some(filter) => Some(filter.evaluate(batch)?.into_array(batch.num_rows())?),
                None => None,
            };
            let filter: Option<&BooleanArray> = filter.as_ref().map(|f| f.as_boolean());
            accumulator.update_batch(values, &self.indices, filter, groups)?;
        }
        let bytes = self.accumulators.iter().map(|a| a.size()).sum::<usize>()
            + self
                .table
                .iter()
                .map(|slots| slots.capacity() * size_of::<u32>())
                .sum::<usize>()
            + self.wide.as_ref().map_or(0, |wide| wide.capacity() * 24)
            + groups * self.keys.len() * size_of::<Option<u32>>()
            + self.indices.capacity() * size_of::<usize>();
        self.reservation.try_resize(bytes)
    }

    /// Sets `indices` to the group of each row, adding groups for combinations met the first
    /// time.
    fn assign(&mut self, columns: &[&UInt32Array]) {
        self.indices.clear();
        let slot = |column: &UInt32Array, row: usize| {
            if column.is_null(row) {
                0
            } else {
                column.values()[row] as usize + 1
            }
        };
        let rows = columns.first().map_or(0, |column| column.len());
        let (first, second) = match columns {
            [first] => (None, *first),
            [first, second] => (Some(*first), *second),
            _ => unreachable!("one or two columns, MAX_GROUPS"),
        };
        // The largest slot of the last column, to grow its tables once per batch.
        let widest = second
            .values()
            .iter()
            .max()
            .map_or(1, |&code| code as usize + 2);
        let outermost = first.map_or(1, |first| {
            first
                .values()
                .iter()
                .max()
                .map_or(1, |&code| code as usize + 2)
        });
        if self.wide.is_none() && outermost.max(self.table.len()) * widest > Self::MAX_TABLE {
            // Two columns of many values: a table of every combination would not fit.
            let mut wide = HashMap::with_capacity(self.keys[0].len());
            for (outer, slots) in self.table.iter().enumerate() {
                for (inner, &group) in slots.iter().enumerate() {
                    if group != Self::NONE {
                        wide.insert((outer, inner), group);
                    }
                }
            }
            self.table = Vec::new();
            self.wide = Some(wide);
        }
        for row in 0..rows {
            let outer = first.map_or(0, |first| slot(first, row));
            let inner = slot(second, row);
            let next = self.keys[0].len() as u32;
            let group = match &mut self.wide {
                Some(wide) => wide.entry((outer, inner)).or_insert(next),
                None => {
                    if outer >= self.table.len() {
                        self.table.resize_with(outer + 1, Vec::new);
                    }
                    let slots = &mut self.table[outer];
                    if slots.len() < widest {
                        slots.resize(widest, Self::NONE);
                    }
                    let group = &mut slots[inner];
                    if *group == Self::NONE {
                        *group = next;
                    }
                    group
                }
            };
            if *group == next {
                for (keys, column) in self.keys.iter_mut().zip(columns) {
                    keys.push(column.is_valid(row).then(|| column.values()[row]));
                }
            }
            self.indices.push(*group as usize);
        }
    }

    /// The groups' numbers and the aggregates' values or states, in the `AggregateExec`'s
    /// schema.
    fn emit(mut self, schema: datafusion::arrow::datatypes::SchemaRef) -> Result<RecordBatch> {
        if self.keys[0].is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        let mut columns: Vec<ArrayRef> = self
            .keys
            .iter()
            .map(|keys| Arc::new(keys.iter().copied().collect::<UInt32Array>()) as ArrayRef)
            .collect();
        for accumulator in &mut self.accumulators {
            if self.final_values {
                columns.push(accumulator.evaluate(EmitTo::All)?);
            } else {
                columns.extend(accumulator.state(EmitTo::All)?);
            }
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// `count(DISTINCT code(…))`: a set of numbers per group, as bits. DataFusion's grouped distinct
/// count hashes each row's (group, number) pair into a set (12% of `count_by_type`); the numbers
/// are dense, so a bit per number and group does (see [`Seen`]).
struct DistinctCodes {
    /// The numbers each group has seen.
    seen: Vec<Seen>,
    /// The state's list field, as DataFusion's `count(DISTINCT)` declares it.
    item: FieldRef,
}

impl DistinctCodes {
    /// The accumulator for `expr` when it is `count(DISTINCT code(…))`.
    fn counting(expr: &AggregateFunctionExpr) -> Result<Option<Self>> {
        let arguments = expr.expressions();
        if expr.fun().name() != "count"
            || !expr.is_distinct()
            || !matches!(arguments.as_slice(), [argument] if is_code(argument.as_ref()))
        {
            return Ok(None);
        }
        let fields = expr.state_fields()?;
        let [field] = fields.as_slice() else {
            return internal_err!("count(DISTINCT) has one state field");
        };
        let DataType::List(item) = field.data_type() else {
            return internal_err!(
                "count(DISTINCT)'s state is a list, not {}",
                field.data_type()
            );
        };
        Ok(Some(DistinctCodes {
            seen: Vec::new(),
            item: Arc::clone(item),
        }))
    }

    fn take(&mut self, emit_to: EmitTo) -> Vec<Seen> {
        emit_to.take_needed(&mut self.seen)
    }

    /// The state: a list of numbers per group, `codes[offsets[i]..offsets[i + 1]]` for group i.
    fn lists(&self, offsets: Vec<i32>, codes: Vec<u32>) -> Result<Vec<ArrayRef>> {
        let list = ListArray::try_new(
            Arc::clone(&self.item),
            OffsetBuffer::new(offsets.into()),
            Arc::new(UInt32Array::from(codes)),
            None,
        )?;
        Ok(vec![Arc::new(list)])
    }
}

/// The numbers one group has seen: a bit for each of the first [`Seen::MAX_BITS`], which holds
/// every number of a low-cardinality column, and a set for the rest, so that a column of many
/// values costs memory by what a group sees rather than by its largest number.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    beyond: HashSet<u32>,
}

impl Seen {
    const MAX_BITS: u32 = 1 << 16;

    fn insert(&mut self, code: u32) {
        if code >= Self::MAX_BITS {
            self.beyond.insert(code);
            return;
        }
        let (word, bit) = (code as usize / 64, code % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= 1 << bit;
    }

    fn count(&self) -> i64 {
        let bits: u32 = self.bits.iter().map(|word| word.count_ones()).sum();
        i64::from(bits) + self.beyond.len() as i64
    }

    /// Appends the numbers to `codes`.
    fn codes(&self, codes: &mut Vec<u32>) {
        for (word, &value) in self.bits.iter().enumerate() {
            let mut rest = value;
            while rest != 0 {
                codes.push(word as u32 * 64 + rest.trailing_zeros());
                rest &= rest - 1;
            }
        }
        codes.extend(&self.beyond);
    }

    fn size(&self) -> usize {
        self.bits.capacity() * size_of::<u64>() + self.beyond.capacity() * size_of::<u32>() * 2
    }
}

/// Whether `row` counts: its number is not null and its `FILTER`, if any, holds.
fn counted(codes: &UInt32Array, filter: Option<&BooleanArray>, row: usize) -> bool {
    codes.is_valid(row) && filter.is_none_or(|filter| filter.is_valid(row) && filter.value(row))
}

impl GroupsAccumulator for DistinctCodes {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.seen.resize_with(total_num_groups, Seen::default);
        let Some(codes) = values[0].as_primitive_opt::<UInt32Type>() else {
            return internal_err!("code(…) gave {}, not UInt32", values[0].data_type());
        };
        for (row, (&group, &code)) in group_indices.iter().zip(codes.values()).enumerate() {
            if counted(codes, opt_filter, row) {
                self.seen[group].insert(code);
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let counts: Int64Array = self
            .take(emit_to)
            .iter()
            .map(|seen| Some(seen.count()))
            .collect();
        Ok(Arc::new(counts))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = self.take(emit_to);
        let mut offsets = Vec::with_capacity(groups.len() + 1);
        let mut codes = Vec::new();
        offsets.push(0i32);
        for seen in &groups {
            seen.codes(&mut codes);
            offsets.push(i32::try_from(codes.len()).map_err(|_| {
                datafusion::common::DataFusionError::ResourcesExhausted(
                    "more than 2^31 distinct numbers in one partition".into(),
                )
            })?);
        }
        self.lists(offsets, codes)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.seen.resize_with(total_num_groups, Seen::default);
        let lists = values[0].as_list::<i32>();
        for (row, &group) in group_indices.iter().enumerate() {
            if lists.is_null(row) {
                continue;
            }
            let codes = lists.value(row);
            let Some(codes) = codes.as_primitive_opt::<UInt32Type>() else {
                return internal_err!(
                    "count(DISTINCT code(…))'s state holds {}",
                    codes.data_type()
                );
            };
            for code in codes.iter().flatten() {
                self.seen[group].insert(code);
            }
        }
        Ok(())
    }

    /// Each row's state on its own: a list of its number, empty when it is not counted.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let Some(codes) = values[0].as_primitive_opt::<UInt32Type>() else {
            return internal_err!("code(…) gave {}, not UInt32", values[0].data_type());
        };
        let mut offsets = Vec::with_capacity(codes.len() + 1);
        let mut kept = Vec::with_capacity(codes.len());
        offsets.push(0i32);
        for (row, &code) in codes.values().iter().enumerate() {
            if counted(codes, opt_filter, row) {
                kept.push(code);
            }
            offsets.push(kept.len() as i32);
        }
        self.lists(offsets, kept)
    }

    fn size(&self) -> usize {
        self.seen.capacity() * size_of::<Seen>() + self.seen.iter().map(Seen::size).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::Field;

    use super::*;

    fn distinct() -> DistinctCodes {
        DistinctCodes {
            seen: Vec::new(),
            item: Arc::new(Field::new_list_field(DataType::UInt32, true)),
        }
    }

    fn counts(accumulator: &mut DistinctCodes, emit_to: EmitTo) -> Vec<i64> {
        let counts = accumulator.evaluate(emit_to).unwrap();
        counts
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .values()
            .to_vec()
    }

    #[test]
    fn distinct_numbers_are_counted_per_group_past_nulls_and_filters_and_survive_their_state() {
        let codes: ArrayRef = Arc::new(UInt32Array::from(vec![
            Some(3),
            Some(3),
            None,
            Some(200),
            Some(0),
            Some(3),
            Some(7),
            Some(70_000),
        ]));
        // 70,000 is past the bits, in the group's set.
        let groups = [0, 0, 0, 1, 1, 1, 2, 1];
        // The last row is filtered out, and a null filter does not count either.
        let filter = BooleanArray::from(vec![
            Some(true),
            Some(true),
            Some(true),
            Some(true),
            None,
            Some(true),
            Some(false),
            Some(true),
        ]);
        let mut accumulator = distinct();
        accumulator
            .update_batch(std::slice::from_ref(&codes), &groups, Some(&filter), 3)
            .unwrap();
        let state = accumulator.state(EmitTo::All).unwrap();
        let lists = state[0].as_list::<i32>();
        let list = |row| {
            let values = lists.value(row);
            values.as_primitive::<UInt32Type>().values().to_vec()
        };
        assert_eq!(
            (list(0), list(1), list(2)),
            (vec![3], vec![3, 200, 70_000], vec![])
        );

        // The state merges back to the same counts, and again with each row's own state.
        let mut merged = distinct();
        merged.merge_batch(&state, &[0, 1, 2], 3).unwrap();
        let rows = distinct()
            .convert_to_state(std::slice::from_ref(&codes), Some(&filter))
            .unwrap();
        merged.merge_batch(&rows, &groups, 3).unwrap();
        assert_eq!(counts(&mut merged, EmitTo::First(2)), [1, 3]);
        assert_eq!(counts(&mut merged, EmitTo::All), [0]);
    }

    #[test]
    fn rows_find_their_groups_by_their_numbers_and_nulls_share_one() {
        let groups = |columns: usize| Groups {
            groups: Vec::new(),
            arguments: Vec::new(),
            filters: Vec::new(),
            accumulators: Vec::new(),
            final_values: false,
            table: Vec::new(),
            wide: None,
            keys: vec![Vec::new(); columns],
            indices: Vec::new(),
            reservation: MemoryConsumer::new("test").register(
                &(Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default())
                    as _),
            ),
        };
        let mut one = groups(1);
        one.assign(&[&UInt32Array::from(vec![Some(5), None, Some(1), Some(5)])]);
        assert_eq!(one.indices, [0, 1, 2, 0]);
        one.assign(&[&UInt32Array::from(vec![Some(1), Some(900), None])]);
        assert_eq!(one.indices, [2, 3, 1]);
        assert_eq!(one.keys, [[Some(5), None, Some(1), Some(900)]]);

        let mut two = groups(2);
        let first = UInt32Array::from(vec![Some(0), Some(0), None, Some(7), None]);
        let second = UInt32Array::from(vec![Some(3), None, Some(3), Some(3), Some(3)]);
        two.assign(&[&first, &second]);
        assert_eq!(two.indices, [0, 1, 2, 3, 2]);
        let first = UInt32Array::from(vec![Some(7), Some(0)]);
        let second = UInt32Array::from(vec![Some(40), None]);
        two.assign(&[&first, &second]);
        assert_eq!(two.indices, [4, 1]);
        assert_eq!(
            two.keys,
            [
                vec![Some(0), Some(0), None, Some(7), Some(7)],
                vec![Some(3), None, Some(3), Some(3), Some(40)]
            ]
        );

        // Numbers too many for a table of every combination: the groups move to a map and
        // keep their indices.
        let first = UInt32Array::from(vec![Some(5000), Some(0), Some(5000)]);
        let second = UInt32Array::from(vec![Some(5000), Some(3), Some(5000)]);
        two.assign(&[&first, &second]);
        assert!(two.wide.is_some() && two.table.is_empty());
        assert_eq!(two.indices, [5, 0, 5]);
        two.assign(&[
            &UInt32Array::from(vec![None, Some(7)]),
            &UInt32Array::from(vec![Some(3), Some(40)]),
        ]);
        assert_eq!(two.indices, [2, 4]);
    }
}
