//! `LIKE` evaluated once per distinct value of a batch.
//!
//! A column such as `attributes` holds a few dozen distinct JSON strings, dictionary-encoded in
//! Parquet. The reader hands them on as string views, and rows that came from the same
//! dictionary entry carry the very same 16-byte view (length, prefix, buffer, offset); short
//! strings are stored whole in their view. So equal views are equal strings, and
//! [`OncePerValue`] matches the pattern once per distinct view of a batch, then copies each
//! answer to its rows. Per row, that is a hash of 16 bytes instead of a substring search: the
//! `LIKE` of `web_client_by_platform` cost 11 ms per million rows (bench/README.md).
//!
//! A batch with many distinct views gains nothing from this, so after [`MAX_DISTINCT`] distinct
//! views the batch goes to DataFusion's own kernel, and after [`GIVE_UP_AFTER`] such batches
//! the query stops trying. Other string types, a pattern that is not a constant, and an escape
//! character other than `\` go to DataFusion's kernel too.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, StringViewArray, UInt32Array};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::expr::Like;
use datafusion::logical_expr::{
    ColumnarValue, Expr, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::physical_expr_common::datum::apply_cmp;

use super::SeenViews;

/// More distinct views than this in one batch, and the batch is matched row by row.
const MAX_DISTINCT: usize = 256;
/// After this many batches with too many distinct views, every batch is matched row by row.
const GIVE_UP_AFTER: u32 = 4;

/// `expr [NOT] [I]LIKE pattern`, matched once per distinct value of each batch.
#[derive(Debug)]
pub(super) struct OncePerValue {
    negated: bool,
    case_insensitive: bool,
    escape_char: Option<char>,
    signature: Signature,
    batches_given_up: AtomicU32,
}

impl OncePerValue {
    /// The replacement for `like`, unless DataFusion would not plan it either (an escape
    /// character other than `\`).
    pub(super) fn replacing(like: &Like) -> Option<Self> {
        (like.escape_char.unwrap_or('\\') == '\\').then(|| OncePerValue {
            negated: like.negated,
            case_insensitive: like.case_insensitive,
            escape_char: like.escape_char,
            signature: Signature::any(2, Volatility::Immutable),
            batches_given_up: AtomicU32::new(0),
        })
    }

    fn operator(&self) -> Operator {
        match (self.negated, self.case_insensitive) {
            (false, false) => Operator::LikeMatch,
            (false, true) => Operator::ILikeMatch,
            (true, false) => Operator::NotLikeMatch,
            (true, true) => Operator::NotILikeMatch,
        }
    }

    /// The answer for each row of `values`, or None when the batch has too many distinct views.
    fn once_per_view(
        &self,
        values: &StringViewArray,
        pattern: &ColumnarValue,
    ) -> Result<Option<BooleanArray>> {
        let Some((distinct, slots)) = distinct_views(values) else {
            return Ok(None);
        };
        if distinct.is_empty() {
            // Every row is null (or there is none): nothing to match, and the mask answers.
            let unmatched = BooleanBuffer::new_unset(values.len());
            return Ok(Some(BooleanArray::new(unmatched, values.nulls().cloned())));
        }
        let firsts = UInt32Array::from(distinct);
        let distinct_values = take(values, &firsts, None)?;
        let answers = apply_cmp(
            self.operator(),
            &ColumnarValue::Array(distinct_values),
            pattern,
        )?
        .into_array(firsts.len())?;
        let answers: Vec<bool> = answers.as_boolean().values().iter().collect();
        // Null rows have slot 0 (see distinct_views); the null mask hides what they get.
        let matched = BooleanBuffer::collect_bool(values.len(), |row| answers[slots[row] as usize]);
        Ok(Some(BooleanArray::new(matched, values.nulls().cloned())))
    }
}

impl PartialEq for OncePerValue {
    fn eq(&self, other: &Self) -> bool {
        (self.negated, self.case_insensitive, self.escape_char)
            == (other.negated, other.case_insensitive, other.escape_char)
    }
}

impl Eq for OncePerValue {}

impl Hash for OncePerValue {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.negated, self.case_insensitive, self.escape_char).hash(state);
    }
}

impl ScalarUDFImpl for OncePerValue {
    fn name(&self) -> &str {
        "like_once_per_value"
    }

    /// The name of the `LIKE` it replaces, so that the plan's columns keep theirs.
    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        let [expr, pattern] = args else {
            return datafusion::common::plan_err!("LIKE takes a value and a pattern");
        };
        let like = Expr::Like(Like::new(
            self.negated,
            Box::new(expr.clone()),
            Box::new(pattern.clone()),
            self.escape_char,
            self.case_insensitive,
        ));
        Ok(like.schema_name().to_string())
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().any(|field| field.is_nullable());
        Ok(Field::new(self.name(), DataType::Boolean, nullable).into())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [values, pattern] = args.args.as_slice() else {
            return datafusion::common::exec_err!("LIKE takes a value and a pattern");
        };
        if let (ColumnarValue::Array(array), ColumnarValue::Scalar(scalar)) = (values, pattern)
            && let Some(views) = array.as_string_view_opt()
            && !scalar.is_null()
            && self.batches_given_up.load(Ordering::Relaxed) < GIVE_UP_AFTER
        {
            match self.once_per_view(views, pattern)? {
                Some(answers) => return Ok(ColumnarValue::Array(std::sync::Arc::new(answers))),
                None => {
                    self.batches_given_up.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        apply_cmp(self.operator(), values, pattern)
    }
}

/// The distinct views of the non-null rows of `values`: the first row of each, and each row's
/// index among them (0 for a null row, whose view may equal that of an empty string). None
/// when there are more than [`MAX_DISTINCT`].
fn distinct_views(values: &StringViewArray) -> Option<(Vec<u32>, Vec<u32>)> {
    let mut seen = SeenViews::default();
    let mut firsts = Vec::new();
    let mut slots = Vec::with_capacity(values.len());
    let nulls = values.nulls();
    for (row, &view) in values.views().iter().enumerate() {
        if nulls.is_some_and(|nulls| nulls.is_null(row)) {
            slots.push(0);
            continue;
        }
        let slot = seen.slot(view);
        let index = match seen.numbers[slot] {
            SeenViews::EMPTY if firsts.len() == MAX_DISTINCT => return None,
            SeenViews::EMPTY => {
                let index = firsts.len() as u32;
                seen.insert(slot, view, index);
                firsts.push(row as u32);
                index
            }
            index => index,
        };
        slots.push(index);
    }
    Some((firsts, slots))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, StringViewBuilder};
    use datafusion::common::ScalarValue;
    use datafusion::common::config::ConfigOptions;

    use super::*;

    /// A batch the way the Parquet reader gives a dictionary-encoded column: equal strings
    /// share one view.
    fn column(rows: &[Option<&str>]) -> StringViewArray {
        let mut builder = StringViewBuilder::new().with_deduplicate_strings();
        for row in rows {
            builder.append_option(*row);
        }
        builder.finish()
    }

    fn like(negated: bool, case_insensitive: bool) -> OncePerValue {
        let like = Like::new(
            negated,
            Box::new(Expr::Literal(ScalarValue::Null, None)),
            Box::new(Expr::Literal(ScalarValue::Null, None)),
            None,
            case_insensitive,
        );
        OncePerValue::replacing(&like).expect("no escape character")
    }

    fn run(udf: &OncePerValue, values: &StringViewArray, pattern: &str) -> BooleanArray {
        let values: ArrayRef = Arc::new(values.clone());
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Array(values.clone()),
                ColumnarValue::Scalar(ScalarValue::Utf8View(Some(pattern.into()))),
            ],
            arg_fields: vec![
                Field::new("v", DataType::Utf8View, true).into(),
                Field::new("p", DataType::Utf8View, false).into(),
            ],
            number_rows: values.len(),
            return_field: Field::new("r", DataType::Boolean, true).into(),
            config_options: Arc::new(ConfigOptions::default()),
        };
        let answer = udf
            .invoke_with_args(args)
            .unwrap()
            .into_array(values.len())
            .unwrap();
        answer.as_boolean().clone()
    }

    /// What DataFusion's own kernel answers.
    fn expected(udf: &OncePerValue, values: &StringViewArray, pattern: &str) -> BooleanArray {
        let pattern = ColumnarValue::Scalar(ScalarValue::Utf8View(Some(pattern.into())));
        let values = ColumnarValue::Array(Arc::new(values.clone()));
        let answer = apply_cmp(udf.operator(), &values, &pattern).unwrap();
        answer.into_array(1).unwrap().as_boolean().clone()
    }

    #[test]
    fn answers_what_datafusion_answers_for_every_row() {
        let web = r#"{"client":"web","v":7}"#;
        let ios = r#"{"client":"ios","v":5}"#;
        let values = column(&[
            Some(web),
            None,
            Some(""),
            Some(ios),
            Some(web),
            Some("WEB"),
            None,
            Some(""),
            Some(ios),
            Some("short web"),
        ]);
        for pattern in [r#"%"client":"web"%"#, "%web%", "%", "", "web", "_"] {
            for (negated, case_insensitive) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let udf = like(negated, case_insensitive);
                assert_eq!(
                    run(&udf, &values, pattern),
                    expected(&udf, &values, pattern),
                    "{pattern} negated={negated} case_insensitive={case_insensitive}"
                );
                assert_eq!(udf.batches_given_up.load(Ordering::Relaxed), 0);
            }
        }
        let udf = like(false, false);
        let answer = run(&udf, &values, "%web%");
        let answer: Vec<_> = answer.iter().collect();
        let (t, f) = (Some(true), Some(false));
        assert_eq!(answer, [t, None, f, f, t, f, None, f, f, t]);
    }

    #[test]
    fn a_batch_of_nulls_only_or_of_no_rows_answers_null_for_each_row() {
        for rows in [vec![None, None, None], vec![]] {
            let values = column(&rows);
            for (negated, case_insensitive) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                let udf = like(negated, case_insensitive);
                let answer = run(&udf, &values, "%a%");
                assert_eq!(answer, expected(&udf, &values, "%a%"));
                assert_eq!(answer.len(), rows.len());
                assert_eq!(answer.null_count(), rows.len());
            }
        }
        // A slice whose rows are all null, of a batch that has values elsewhere.
        let values = column(&[Some("a"), None, None, Some("b")]).slice(1, 2);
        let udf = like(false, false);
        assert_eq!(run(&udf, &values, "%a%"), expected(&udf, &values, "%a%"));
    }

    #[test]
    fn a_batch_of_many_distinct_values_is_matched_row_by_row_and_stays_right() {
        let strings: Vec<String> = (0..1000).map(|i| format!("value number {i}")).collect();
        let rows: Vec<Option<&str>> = strings.iter().map(|s| Some(s.as_str())).collect();
        let values = column(&rows);
        let udf = like(false, false);
        for round in 1..=GIVE_UP_AFTER + 1 {
            assert_eq!(
                run(&udf, &values, "%number 9%"),
                expected(&udf, &values, "%number 9%")
            );
            assert_eq!(
                udf.batches_given_up.load(Ordering::Relaxed),
                round.min(GIVE_UP_AFTER)
            );
        }
        let few = column(&[Some("a number 9"), Some("b")]);
        assert_eq!(
            run(&udf, &few, "%number 9%"),
            expected(&udf, &few, "%number 9%")
        );
    }
}
