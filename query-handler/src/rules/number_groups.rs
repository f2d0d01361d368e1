//! Grouping by a number per string instead of by the string.
//!
//! `GROUP BY type` hashes and compares every row's string: 40% of `SELECT type, count(*) …` was
//! DataFusion's string-view group table (bench/README.md). `type`, `platform` and `lang` hold a
//! handful of values each, so the handler numbers their strings instead: [`Code`] gives each
//! distinct string of the query a small number, once per distinct view of a batch (rows from
//! the same Parquet dictionary entry share their 16-byte view, see `kernels::like`), and the
//! aggregate groups by that number, with [`super::dense_aggregate`]'s table indexed by it.
//! [`StringOf`] turns the numbers of the few result rows back into their strings:
//!
//! ```text
//! Aggregate: groupBy=[type], aggr=[count(*), count(DISTINCT platform)]
//!   TableScan: notifications
//! ```
//! becomes
//! ```text
//! Projection: string_of(code) AS type, (the other columns under their names)
//!   Aggregate: groupBy=[code(type) AS code], aggr=[count(*), count(DISTINCT code(platform))]
//!     TableScan: notifications
//! ```
//!
//! `count(DISTINCT platform)` counts distinct numbers, with a bit per number and group instead of
//! a set of strings per group. The numbering is exact whatever the data holds: equal strings get
//! equal numbers and nulls stay null, so the groups and counts are the same. Only the speed
//! depends on the columns holding few values. The numbers live as long as the query, two
//! copies of each distinct string, counted in the query's memory pool. Since the columns' values
//! come from clients, a query numbers at most [`MAX_NUMBERED`] strings: past that, or past its
//! pool, it fails with [`NumberingGaveUp`] and the engine runs it again without this rule.
//!
//! Rewritten: aggregates whose input is the table itself (under filters, aliases and
//! projections that pick columns) and whose groups, one or two, are all low-cardinality string
//! columns; their `count(DISTINCT …)` of such columns too. The numbers pay because
//! [`super::dense_aggregate`] then finds a row's group by indexing a table with them, without hashing:
//! with DataFusion's own grouping of the numbers, numbering two columns was 15–30% slower than
//! grouping the strings (bench/README.md), and with the handler's it is 10–20% faster; so two
//! groups are numbered only when every aggregate is a `count`, `sum`, `min`, `max` or `avg`,
//! which have grouped accumulators. Not more groups, not under a group that is not numbered (a numbered `count(DISTINCT platform)` under
//! `GROUP BY day` was 11–15% slower), and not `min`/`max`, which need the strings' order.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, StringViewArray, StringViewBuilder, UInt32Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::Int32Type;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, DataFusionError, Result, ScalarValue, exec_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction};
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Expr, ExprSchemable, LogicalPlan, LogicalPlanBuilder,
    ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::ScalarFunctionExpr;
use datafusion::physical_plan::PhysicalExpr;

use crate::rules::Rewrite;
use crate::rules::kernels::SeenViews;
use crate::scan::holds_strings;
use crate::snapshot::Snapshot;

/// More distinct views than this in one batch, and the batch is numbered row by row.
const MAX_DISTINCT: usize = 1024;

/// The most groups an aggregate may have to be numbered; [`super::dense_aggregate`] groups by
/// as many.
pub(crate) const MAX_GROUPS: usize = 2;

/// The most distinct strings one query numbers, unless its limits say otherwise. The columns
/// numbered hold tens, but their values come from clients: a query that meets more gives up
/// numbering and runs again without it ([`NumberingGaveUp`]).
pub const MAX_NUMBERED: usize = 1 << 16;

/// Bytes a numbered string costs besides its own (twice): the map's entry, the list's.
const PER_STRING_BYTES: usize = 64;

/// The rule, switched by `sluice.number_groups`.
#[derive(Debug)]
pub struct NumberGroups {
    low_cardinality: Arc<[String]>,
    snapshot: Arc<Snapshot>,
    /// The query's memory pool, which the numbering's strings are counted in.
    pool: Arc<dyn MemoryPool>,
    /// The most distinct strings the query numbers.
    max_strings: usize,
}

impl NumberGroups {
    pub fn new(
        low_cardinality: Arc<[String]>,
        snapshot: Arc<Snapshot>,
        pool: Arc<dyn MemoryPool>,
        max_strings: usize,
    ) -> Self {
        NumberGroups {
            low_cardinality,
            snapshot,
            pool,
            max_strings,
        }
    }
}

impl Rewrite for NumberGroups {
    fn name(&self) -> &'static str {
        "number_groups"
    }

    /// Rewrites every aggregate of the plan that qualifies (see the module's comment). The plan
    /// must be optimized.
    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        if self.low_cardinality.is_empty() {
            return Ok(Transformed::no(plan));
        }
        let strings = Arc::new(Strings::new(&self.pool, self.max_strings));
        plan.transform_up(|node| {
            let LogicalPlan::Aggregate(aggregate) = &node else {
                return Ok(Transformed::no(node));
            };
            if !self.snapshot.is_read_directly_by(&aggregate.input) {
                return Ok(Transformed::no(node));
            }
            match rewrite(aggregate, &self.low_cardinality, &strings)? {
                Some(rewritten) => Ok(Transformed::yes(rewritten)),
                None => Ok(Transformed::no(node)),
            }
        })
    }
}

/// A query's numbering met more strings than it numbers ([`MAX_NUMBERED`]) or than its memory
/// pool holds: the query runs again without [`NumberGroups`].
#[derive(Debug, thiserror::Error)]
#[error("numbering the strings of a low-cardinality column gave up: {0}")]
pub struct NumberingGaveUp(String);

impl NumberingGaveUp {
    /// Whether `error` is, at its root, a numbering that gave up.
    pub fn caused(error: &DataFusionError) -> bool {
        matches!(error.find_root(), DataFusionError::External(inner) if inner.is::<NumberingGaveUp>())
    }
}

fn rewrite(
    aggregate: &Aggregate,
    low_cardinality: &[String],
    strings: &Arc<Strings>,
) -> Result<Option<LogicalPlan>> {
    let input = aggregate.input.schema();
    // One group or two, every one numbered: see the module's comment.
    if !(1..=MAX_GROUPS).contains(&aggregate.group_expr.len()) {
        return Ok(None);
    }
    // The string type of `expr` when it is a low-cardinality column of strings.
    let coded = |expr: &Expr| -> Result<Option<DataType>> {
        let Expr::Column(column) = expr else {
            return Ok(None);
        };
        if !low_cardinality.contains(&column.name) {
            return Ok(None);
        }
        let data_type = expr.get_type(input)?;
        Ok(holds_strings(&data_type).then_some(data_type))
    };
    let code = |expr: Expr| {
        Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(ScalarUDF::new_from_impl(Code::new(strings))),
            vec![expr],
        ))
    };

    let mut group_types = Vec::with_capacity(aggregate.group_expr.len());
    let mut groups = Vec::with_capacity(aggregate.group_expr.len());
    for (i, group) in aggregate.group_expr.iter().enumerate() {
        let Some(group_type) = coded(group)? else {
            return Ok(None);
        };
        group_types.push(group_type);
        groups.push(code(group.clone()).alias(format!("__sluice_code_{i}")));
    }
    // Two numbered groups pay only on `CodeAggregateExec`, which needs grouped accumulators:
    // DataFusion's own grouping of two numbers is slower than of the strings.
    if groups.len() > 1 {
        for expr in &aggregate.aggr_expr {
            let Expr::AggregateFunction(AggregateFunction { func, params }) =
                expr.clone().unalias()
            else {
                return Ok(None);
            };
            let grouped = ["count", "sum", "min", "max", "avg"].contains(&func.name())
                && params.order_by.is_empty()
                && (!params.distinct
                    || func.name() == "count"
                        && matches!(params.args.as_slice(), [argument] if coded(argument)?.is_some()));
            if !grouped {
                return Ok(None);
            }
        }
    }
    let mut aggregates = Vec::with_capacity(aggregate.aggr_expr.len());
    for expr in &aggregate.aggr_expr {
        let (inner, alias) = match expr {
            Expr::Alias(alias) => (alias.expr.as_ref(), Some(alias)),
            other => (other, None),
        };
        let distinct_count_of_coded = match inner {
            Expr::AggregateFunction(AggregateFunction { func, params })
                if func.name() == "count" && params.distinct =>
            {
                match params.args.as_slice() {
                    [argument] => coded(argument)?.is_some(),
                    _ => false,
                }
            }
            _ => false,
        };
        if !distinct_count_of_coded {
            aggregates.push(expr.clone());
            continue;
        }
        let Expr::AggregateFunction(AggregateFunction { func, params }) = inner else {
            unreachable!("matched above");
        };
        let mut params = params.clone();
        params.args = params.args.into_iter().map(code).collect();
        let counted = Expr::AggregateFunction(AggregateFunction {
            func: Arc::clone(func),
            params,
        });
        aggregates.push(match alias {
            Some(alias) => counted.alias_qualified(alias.relation.clone(), alias.name.clone()),
            None => counted.alias(inner.schema_name().to_string()),
        });
    }

    let numbered = LogicalPlanBuilder::from(aggregate.input.as_ref().clone())
        .aggregate(groups, aggregates)?
        .build()?;
    // Each column of the original aggregate, under its name, from the numbered one.
    let original: &DFSchema = &aggregate.schema;
    let names = (0..original.fields().len())
        .map(|i| {
            let (qualifier, field) = original.qualified_field(i);
            let value = Expr::Column(Column::from(numbered.schema().qualified_field(i)));
            let value = match group_types.get(i) {
                Some(group_type) => Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(ScalarUDF::new_from_impl(StringOf::new(
                        strings,
                        group_type.clone(),
                    ))),
                    vec![value],
                )),
                None => value,
            };
            value.alias_qualified(qualifier.cloned(), field.name())
        })
        .collect::<Vec<_>>();
    Ok(Some(
        LogicalPlanBuilder::from(numbered).project(names)?.build()?,
    ))
}

/// The strings one query has numbered: the number of each, and the string of each number.
#[derive(Debug)]
struct Strings(Mutex<Numbering>);

#[derive(Debug)]
struct Numbering {
    codes: HashMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
    /// The strings' memory, in the query's pool.
    reservation: MemoryReservation,
    max_strings: usize,
}

impl Numbering {
    fn code(&mut self, string: &str) -> Result<u32> {
        if let Some(&code) = self.codes.get(string) {
            return Ok(code);
        }
        let gave_up = |reason: String| DataFusionError::External(Box::new(NumberingGaveUp(reason)));
        if self.strings.len() >= self.max_strings {
            return Err(gave_up(format!(
                "more than {} distinct strings",
                self.max_strings
            )));
        }
        self.reservation
            .try_grow(2 * string.len() + PER_STRING_BYTES)
            .map_err(|e| gave_up(e.to_string()))?;
        // u32::MAX itself marks an empty slot of SeenViews.
        let Some(code) = u32::try_from(self.strings.len())
            .ok()
            .filter(|&code| code < u32::MAX)
        else {
            return Err(gave_up("more than 2^32 - 1 distinct strings".into()));
        };
        self.strings.push(string.into());
        self.codes.insert(string.into(), code);
        Ok(code)
    }
}

impl Strings {
    fn new(pool: &Arc<dyn MemoryPool>, max_strings: usize) -> Self {
        Strings(Mutex::new(Numbering {
            codes: HashMap::new(),
            strings: Vec::new(),
            reservation: MemoryConsumer::new("number_groups").register(pool),
            max_strings,
        }))
    }

    fn numbering(&self) -> std::sync::MutexGuard<'_, Numbering> {
        // A panic elsewhere cannot leave the numbering half-updated: each insert is whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The number of each row's string, null for a null row.
    fn codes(&self, values: &dyn Array) -> Result<UInt32Array> {
        if let Some(keys) = values.as_dictionary_opt::<Int32Type>() {
            return self.codes_of_keys(keys);
        }
        if let Some(views) = values.as_string_view_opt()
            && let Some(codes) = self.codes_once_per_view(views)?
        {
            return Ok(codes);
        }
        let mut numbering = self.numbering();
        let codes: Vec<u32> = match values.data_type() {
            DataType::Utf8View => rows(values.as_string_view().iter(), &mut numbering)?,
            DataType::Utf8 => rows(values.as_string::<i32>().iter(), &mut numbering)?,
            DataType::LargeUtf8 => rows(values.as_string::<i64>().iter(), &mut numbering)?,
            other => return exec_err!("cannot number strings of type {other}"),
        };
        Ok(UInt32Array::new(codes.into(), values.nulls().cloned()))
    }

    /// The number of each row's string in a dictionary array: the dictionary's strings are
    /// numbered, and each row takes its key's number. A Parquet column chunk's dictionary
    /// holds the strings of the whole chunk, at most a few hundred for the columns numbered,
    /// against thousands of rows a batch.
    fn codes_of_keys(&self, keys: &DictionaryArray<Int32Type>) -> Result<UInt32Array> {
        let of_key = self.codes(keys.values().as_ref())?;
        let nulls = keys.logical_nulls();
        let codes = keys
            .keys()
            .values()
            .iter()
            .map(|&key| {
                // A null row's key may be anything, even out of range: the mask hides it.
                of_key.values().get(key as usize).copied().unwrap_or(0)
            })
            .collect::<Vec<u32>>();
        Ok(UInt32Array::new(codes.into(), nulls))
    }

    /// The number of each row's string, looked up once per distinct view of the batch: equal
    /// views are equal strings (see the module's comment). None when the batch has more than
    /// [`MAX_DISTINCT`] distinct views.
    fn codes_once_per_view(&self, values: &StringViewArray) -> Result<Option<UInt32Array>> {
        let mut seen = SeenViews::default();
        let mut codes = Vec::with_capacity(values.len());
        let nulls = values.nulls().filter(|nulls| nulls.null_count() > 0);
        for (row, &view) in values.views().iter().enumerate() {
            if nulls.is_some_and(|nulls| nulls.is_null(row)) {
                // Hidden by the null mask.
                codes.push(0);
                continue;
            }
            let slot = seen.slot(view);
            let code = match seen.numbers[slot] {
                SeenViews::EMPTY if seen.distinct == MAX_DISTINCT => return Ok(None),
                SeenViews::EMPTY => {
                    let code = self.numbering().code(values.value(row))?;
                    seen.insert(slot, view, code);
                    code
                }
                code => code,
            };
            codes.push(code);
        }
        Ok(Some(UInt32Array::new(
            codes.into(),
            values.nulls().cloned(),
        )))
    }

    /// The string of each number, null for a null number.
    fn strings(&self, codes: &UInt32Array) -> Result<StringViewArray> {
        let numbering = self.numbering();
        let mut builder = StringViewBuilder::with_capacity(codes.len());
        for code in codes {
            match code {
                Some(code) => match numbering.strings.get(code as usize) {
                    Some(string) => builder.append_value(string),
                    None => return exec_err!("no string has the number {code}"),
                },
                None => builder.append_null(),
            }
        }
        Ok(builder.finish())
    }
}

/// The number of each row's string, one row at a time (0 for a null row, which stays null).
fn rows<'a>(
    strings: impl Iterator<Item = Option<&'a str>>,
    numbering: &mut Numbering,
) -> Result<Vec<u32>> {
    strings
        .map(|string| string.map_or(Ok(0), |s| numbering.code(s)))
        .collect()
}

/// Whether `expr` is a call of `code(…)`, whose numbers [`super::dense_aggregate`] groups by.
pub(crate) fn is_code(expr: &dyn PhysicalExpr) -> bool {
    expr.downcast_ref::<ScalarFunctionExpr>()
        .is_some_and(|call| call.fun().inner().is::<Code>())
}

/// `code(string)`: the query's number for the string.
#[derive(Debug)]
struct Code {
    strings: Arc<Strings>,
    signature: Signature,
}

impl Code {
    fn new(strings: &Arc<Strings>) -> Self {
        Code {
            strings: Arc::clone(strings),
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// `string_of(code)`: the string the query numbered `code`, as `data_type`.
#[derive(Debug)]
struct StringOf {
    strings: Arc<Strings>,
    data_type: DataType,
    signature: Signature,
}

impl StringOf {
    fn new(strings: &Arc<Strings>, data_type: DataType) -> Self {
        StringOf {
            strings: Arc::clone(strings),
            data_type,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

/// Two functions are the same when they share their query's numbering.
macro_rules! same_by_numbering {
    ($udf:ty) => {
        impl PartialEq for $udf {
            fn eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.strings, &other.strings) && self.signature == other.signature
            }
        }
        impl Eq for $udf {}
        impl Hash for $udf {
            fn hash<H: Hasher>(&self, state: &mut H) {
                Arc::as_ptr(&self.strings).hash(state);
            }
        }
    };
}
same_by_numbering!(Code);
same_by_numbering!(StringOf);

impl ScalarUDFImpl for Code {
    fn name(&self) -> &str {
        "code"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt32)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|field| field.is_nullable());
        Ok(Field::new(self.name(), DataType::UInt32, nullable).into())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("code takes one string");
        };
        match value {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(Arc::new(
                self.strings.codes(array.as_ref())?,
            ))),
            ColumnarValue::Scalar(scalar) => {
                let codes = self.strings.codes(scalar.to_array()?.as_ref())?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                    &codes, 0,
                )?))
            }
        }
    }
}

impl ScalarUDFImpl for StringOf {
    fn name(&self) -> &str {
        "string_of"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|field| field.is_nullable());
        Ok(Field::new(self.name(), self.data_type.clone(), nullable).into())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("string_of takes one code");
        };
        let codes = value.to_array(args.number_rows)?;
        let Some(codes) = codes.as_primitive_opt() else {
            return exec_err!("string_of takes a UInt32 code, not {}", codes.data_type());
        };
        let strings: ArrayRef = Arc::new(self.strings.strings(codes)?);
        let strings = if self.data_type == DataType::Utf8View {
            strings
        } else {
            cast(&strings, &self.data_type)?
        };
        Ok(match value {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&strings, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(strings),
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, LargeStringArray, StringArray};

    use super::*;

    /// A batch the way the Parquet reader gives a dictionary-encoded column: equal strings
    /// share one view.
    fn shared_views(rows: &[Option<&str>]) -> StringViewArray {
        let mut builder = StringViewBuilder::new().with_deduplicate_strings();
        for row in rows {
            builder.append_option(*row);
        }
        builder.finish()
    }

    impl Strings {
        fn unbounded() -> Self {
            let pool: Arc<dyn MemoryPool> =
                Arc::new(datafusion::execution::memory_pool::UnboundedMemoryPool::default());
            Strings::new(&pool, MAX_NUMBERED)
        }
    }

    fn codes(strings: &Strings, values: &dyn Array) -> Vec<Option<u32>> {
        strings.codes(values).unwrap().iter().collect()
    }

    #[test]
    fn equal_strings_get_equal_numbers_in_every_batch_and_type_and_nulls_stay_null() {
        let strings = Strings::unbounded();
        let long = "a string longer than twelve bytes";
        let rows = [
            Some("b"),
            None,
            Some(long),
            Some("b"),
            Some(""),
            None,
            Some(long),
        ];
        let first = codes(&strings, &shared_views(&rows));
        assert_eq!(
            first,
            [Some(0), None, Some(1), Some(0), Some(2), None, Some(1)]
        );
        // Views of other buffers, plain and large strings: the same numbers.
        assert_eq!(
            codes(&strings, &StringViewArray::from(rows.to_vec())),
            first
        );
        assert_eq!(codes(&strings, &StringArray::from(rows.to_vec())), first);
        assert_eq!(
            codes(&strings, &LargeStringArray::from(rows.to_vec())),
            first
        );
        // A dictionary, as the handler's scan reads a low-cardinality column: keys in another
        // order, a null key, a null value, a value no row uses, and a slice.
        let dictionary = DictionaryArray::<Int32Type>::new(
            Int32Array::from(vec![Some(1), Some(0), Some(3), None, Some(1)]),
            Arc::new(StringArray::from(vec![
                Some(long),
                Some("b"),
                Some("z"),
                None,
            ])),
        );
        assert_eq!(
            codes(&strings, &dictionary),
            [Some(0), Some(1), None, None, Some(0)]
        );
        assert_eq!(codes(&strings, &dictionary.slice(1, 2)), [Some(1), None]);
        // A sliced batch, and one of nulls only.
        let sliced = shared_views(&rows).slice(2, 3);
        assert_eq!(codes(&strings, &sliced), [Some(1), Some(0), Some(2)]);
        assert_eq!(codes(&strings, &shared_views(&[None, None])), [None, None]);
    }

    #[test]
    fn a_batch_of_many_distinct_strings_is_numbered_row_by_row_consistently() {
        let strings = Strings::unbounded();
        let many: Vec<String> = (0..MAX_DISTINCT + 10)
            .map(|i| format!("value {i}"))
            .collect();
        let rows: Vec<Option<&str>> = many.iter().map(|s| Some(s.as_str())).collect();
        let views = shared_views(&rows);
        assert!(strings.codes_once_per_view(&views).unwrap().is_none());
        let all = codes(&strings, &views);
        let expected: Vec<Option<u32>> = (0..rows.len() as u32).map(Some).collect();
        assert_eq!(all, expected);
        // Past the table's first sizes, each string twice: numbered once per view still.
        let some: Vec<Option<&str>> = rows[..300].iter().chain(&rows[..300]).copied().collect();
        let twice = strings.codes_once_per_view(&shared_views(&some)).unwrap();
        let twice: Vec<Option<u32>> = twice.unwrap().iter().collect();
        assert_eq!(twice, [&expected[..300], &expected[..300]].concat());
        // A later small batch gets the numbers given row by row.
        let few = shared_views(&[Some("value 7"), Some("value 3"), Some("value 7")]);
        assert_eq!(codes(&strings, &few), [Some(7), Some(3), Some(7)]);
    }

    fn invoke(udf: &dyn ScalarUDFImpl, value: ColumnarValue, rows: usize) -> ColumnarValue {
        let field = |data_type: DataType| Arc::new(Field::new("x", data_type, true));
        let input_type = value.data_type();
        udf.invoke_with_args(ScalarFunctionArgs {
            args: vec![value],
            arg_fields: vec![field(input_type)],
            number_rows: rows,
            return_field: field(udf.return_type(&[]).unwrap()),
            config_options: Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn numbers_turn_back_into_their_strings_in_the_columns_type() {
        let strings = Arc::new(Strings::unbounded());
        let rows = [Some("liked"), None, Some("shared"), Some("liked")];
        let values: ArrayRef = Arc::new(shared_views(&rows));
        let numbered = invoke(
            &Code::new(&strings),
            ColumnarValue::Array(values),
            rows.len(),
        );
        for data_type in [
            DataType::Utf8View,
            DataType::Utf8,
            DataType::LargeUtf8,
            crate::scan::dictionary(),
        ] {
            let back = invoke(
                &StringOf::new(&strings, data_type.clone()),
                numbered.clone(),
                rows.len(),
            )
            .to_array(rows.len())
            .unwrap();
            let expected = cast(&StringArray::from(rows.to_vec()), &data_type).unwrap();
            assert_eq!(&back, &expected);
        }
        // Scalars, as a constant argument would be.
        let scalar = ColumnarValue::Scalar(ScalarValue::Utf8View(Some("shared".into())));
        let ColumnarValue::Scalar(code) = invoke(&Code::new(&strings), scalar, 1) else {
            panic!("a scalar in, a scalar out");
        };
        assert_eq!(code, ScalarValue::UInt32(Some(1)));
        let unknown = ColumnarValue::Array(Arc::new(UInt32Array::from(vec![9])));
        let err = StringOf::new(&strings, DataType::Utf8)
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![unknown],
                arg_fields: vec![Arc::new(Field::new("x", DataType::UInt32, true))],
                number_rows: 1,
                return_field: Arc::new(Field::new("x", DataType::Utf8, true)),
                config_options: Default::default(),
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("no string has the number 9"),
            "{err}"
        );
    }

    #[test]
    fn numbering_gives_up_past_its_bound_or_its_pool_and_says_so() {
        let pool: Arc<dyn MemoryPool> = Arc::new(
            datafusion::execution::memory_pool::GreedyMemoryPool::new(1_000),
        );
        let strings = Strings::new(&pool, MAX_NUMBERED);
        let many: Vec<String> = (0..100).map(|i| format!("platform {i}")).collect();
        let rows: Vec<Option<&str>> = many.iter().map(|s| Some(s.as_str())).collect();
        let error = strings
            .codes(&StringArray::from(rows))
            .expect_err("a thousand bytes hold a dozen strings");
        assert!(NumberingGaveUp::caused(&error), "{error}");
        // Wrapped on its way up, as an operator's error is.
        let wrapped = DataFusionError::Context("aggregate".into(), Box::new(error));
        assert!(NumberingGaveUp::caused(&wrapped), "{wrapped}");
        assert!(!NumberingGaveUp::caused(&DataFusionError::Plan("x".into())));
        // The bound on the count, whatever the pool holds.
        let strings = Strings::unbounded();
        let many: Vec<String> = (0..=MAX_NUMBERED).map(|i| i.to_string()).collect();
        let rows: Vec<Option<&str>> = many.iter().map(|s| Some(s.as_str())).collect();
        let error = strings.codes(&StringArray::from(rows)).unwrap_err();
        assert!(error.to_string().contains("distinct strings"), "{error}");
        assert!(NumberingGaveUp::caused(&error));
    }
}
