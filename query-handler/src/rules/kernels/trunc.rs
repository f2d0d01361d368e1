//! `date_trunc('hour', occurred_at)` on UTC timestamps by arithmetic.
//!
//! DataFusion 55 truncates a timestamp without a time zone to the hour or day by subtracting
//! the remainder. The replica's timestamps carry the zone `UTC`, and for any zone DataFusion
//! goes through chrono per row: it converts to local time, formats and parses, and converts
//! back. That was 60% of `hourly_histogram` (bench/README.md). UTC has no offset and no
//! daylight saving, so [`UtcDateTrunc`] hands DataFusion's own `date_trunc` the same values
//! labelled without a zone, which takes its arithmetic path, and labels the result `UTC`
//! again. Every other call goes to `date_trunc` unchanged.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, make_array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};

/// The zones that are UTC itself.
const UTC: [&str; 3] = ["UTC", "+00:00", "Etc/UTC"];

/// `date_trunc`, by arithmetic for hours and days of UTC timestamps.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct UtcDateTrunc {
    date_trunc: DateTruncFunc,
}

impl ScalarUDFImpl for UtcDateTrunc {
    fn name(&self) -> &str {
        self.date_trunc.name()
    }

    fn signature(&self) -> &Signature {
        self.date_trunc.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.date_trunc.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.date_trunc.return_field_from_args(args)
    }

    fn aliases(&self) -> &[String] {
        self.date_trunc.aliases()
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.date_trunc.documentation()
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let by_arithmetic = match args.args.as_slice() {
            [
                ColumnarValue::Scalar(granularity),
                ColumnarValue::Array(values),
            ] => {
                granularity.try_as_str().flatten().is_some_and(|g| {
                    g.eq_ignore_ascii_case("hour") || g.eq_ignore_ascii_case("day")
                }) && matches!(values.data_type(), DataType::Timestamp(_, Some(zone)) if UTC.contains(&zone.as_ref()))
            }
            _ => false,
        };
        if !by_arithmetic {
            return self.date_trunc.invoke_with_args(args);
        }
        let ColumnarValue::Array(values) = &args.args[1] else {
            unreachable!("checked above");
        };
        let utc = values.data_type().clone();
        let DataType::Timestamp(unit, _) = &utc else {
            unreachable!("checked above");
        };
        let naive = DataType::Timestamp(*unit, None);
        args.args[1] = ColumnarValue::Array(relabel(values, &naive)?);
        args.arg_fields[1] = Arc::new(
            args.arg_fields[1]
                .as_ref()
                .clone()
                .with_data_type(naive.clone()),
        );
        args.return_field = Arc::new(Field::new(
            args.return_field.name(),
            naive,
            args.return_field.is_nullable(),
        ));
        match self.date_trunc.invoke_with_args(args)? {
            ColumnarValue::Array(truncated) => Ok(ColumnarValue::Array(relabel(&truncated, &utc)?)),
            ColumnarValue::Scalar(scalar) => Ok(ColumnarValue::Scalar(
                ScalarValue::try_from_array(&relabel(&scalar.to_array()?, &utc)?, 0)?,
            )),
        }
    }
}

/// `values` as `data_type`, another time zone label of the same timestamps: the same buffers.
fn relabel(values: &ArrayRef, data_type: &DataType) -> Result<ArrayRef> {
    Ok(make_array(
        values
            .to_data()
            .into_builder()
            .data_type(data_type.clone())
            .build()?,
    ))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMicrosecondArray;
    use datafusion::arrow::datatypes::TimeUnit;

    use super::*;

    fn truncate(udf: &dyn ScalarUDFImpl, granularity: &str, values: &ArrayRef) -> ArrayRef {
        let granularity = ScalarValue::Utf8(Some(granularity.into()));
        let args = ScalarFunctionArgs {
            args: vec![
                ColumnarValue::Scalar(granularity),
                ColumnarValue::Array(Arc::clone(values)),
            ],
            arg_fields: vec![
                Arc::new(Field::new("g", DataType::Utf8, false)),
                Arc::new(Field::new("t", values.data_type().clone(), true)),
            ],
            number_rows: values.len(),
            return_field: Arc::new(Field::new("r", values.data_type().clone(), true)),
            config_options: Default::default(),
        };
        udf.invoke_with_args(args)
            .unwrap()
            .to_array(values.len())
            .unwrap()
    }

    #[test]
    fn hours_and_days_of_utc_timestamps_are_truncated_as_datafusion_truncates_them() {
        // Before and after 1970, on and off the hour, and a null.
        let micros = [
            Some(-86_400_000_001),
            Some(-1),
            Some(0),
            Some(1_764_000_000_123_456),
            None,
            Some(1_764_028_799_999_999),
            Some(3_600_000_000),
        ];
        for zone in UTC {
            let values: ArrayRef =
                Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone(zone));
            assert_eq!(
                values.data_type(),
                &DataType::Timestamp(TimeUnit::Microsecond, Some(zone.into()))
            );
            for granularity in ["hour", "DAY", "minute", "month"] {
                let ours = truncate(&UtcDateTrunc::default(), granularity, &values);
                let theirs = truncate(&DateTruncFunc::new(), granularity, &values);
                assert_eq!(&ours, &theirs, "{granularity} in {zone}");
            }
        }
        // Another zone goes to DataFusion as it is.
        let berlin: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("Europe/Berlin"),
        );
        assert_eq!(
            &truncate(&UtcDateTrunc::default(), "day", &berlin),
            &truncate(&DateTruncFunc::new(), "day", &berlin)
        );
    }
}
