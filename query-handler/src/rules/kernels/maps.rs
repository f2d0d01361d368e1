//! Map lookups (`metrics['likes']`) gathered with one `take`.
//!
//! DataFusion's `get_field` compares every key of the map column with the one asked for, then
//! copies the matching values one row at a time through `MutableArrayData`. On the replica's
//! `metrics` column each lookup added 8–15 ms per million rows (bench/README.md).
//! [`MapLookup`] walks each row's entries only up to its first match, compares short keys as
//! one machine word, and gathers every value with one `take`. It is `get_field` in every other
//! respect (names, types, placement), and hands anything that is not a map looked up by one
//! string key to `get_field` itself.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, MapArray, UInt32Array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::functions::core::getfield::GetFieldFunc;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ExpressionPlacement, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDFImpl, Signature,
};

/// `get_field`, with a faster lookup of one string key in a map.
#[derive(Debug, Default, PartialEq, Eq, Hash)]
pub(super) struct MapLookup {
    get_field: GetFieldFunc,
}

impl ScalarUDFImpl for MapLookup {
    fn name(&self) -> &str {
        "get_field"
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.get_field.schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.get_field.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.get_field.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        self.get_field.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.get_field.coerce_types(arg_types)
    }

    fn placement(&self, args: &[ExpressionPlacement]) -> ExpressionPlacement {
        self.get_field.placement(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.get_field.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [ColumnarValue::Array(map), ColumnarValue::Scalar(key)] = args.args.as_slice()
            && let Some(map) = map.as_map_opt()
            && let Some(Some(key)) = key.try_as_str()
            && matches!(
                map.keys().data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            )
        {
            return Ok(ColumnarValue::Array(lookup(map, key)?));
        }
        self.get_field.invoke_with_args(args)
    }
}

/// The value of `key` in each row of `map`: the first entry whose key equals it, or null when
/// there is none or the map itself is null.
fn lookup(map: &MapArray, key: &str) -> Result<ArrayRef> {
    let keys = map.keys();
    let (indices, found) = match keys.data_type() {
        DataType::Utf8 => {
            let keys = keys.as_string::<i32>();
            let (offsets, data, key) = (keys.value_offsets(), keys.value_data(), Key::new(key));
            first_matches(map, |e| {
                key.is_at(data, offsets[e] as usize, offsets[e + 1] as usize)
            })
        }
        DataType::LargeUtf8 => {
            let keys = keys.as_string::<i64>();
            let (offsets, data, key) = (keys.value_offsets(), keys.value_data(), Key::new(key));
            first_matches(map, |e| {
                key.is_at(data, offsets[e] as usize, offsets[e + 1] as usize)
            })
        }
        DataType::Utf8View => {
            let keys = keys.as_string_view();
            match inline_view(key) {
                // A key of at most 12 bytes lives whole in its 16-byte view.
                Some(view) => {
                    let views = keys.views();
                    first_matches(map, |e| views[e] == view)
                }
                None => first_matches(map, |e| keys.value(e) == key),
            }
        }
        other => {
            return Err(datafusion::common::DataFusionError::Internal(format!(
                "map keys of type {other} reached the string lookup"
            )));
        }
    };
    let nulls = NullBuffer::union(Some(&NullBuffer::new(found)), map.nulls());
    let indices = UInt32Array::new(indices.into(), nulls);
    Ok(take(map.values().as_ref(), &indices, None)?)
}

/// For each row of `map`, the index of its first entry for which `is_key` holds, and whether
/// there was one.
fn first_matches(
    map: &MapArray,
    is_key: impl Fn(usize) -> bool,
) -> (Vec<u32>, datafusion::arrow::buffer::BooleanBuffer) {
    let offsets = map.value_offsets();
    let mut indices = vec![0u32; map.len()];
    let mut found = BooleanBufferBuilder::new(map.len());
    for (row, index) in indices.iter_mut().enumerate() {
        // Offsets index the entries' arrays, which stay whole when the map is sliced.
        let entries = offsets[row] as usize..offsets[row + 1] as usize;
        match entries.into_iter().find(|&e| is_key(e)) {
            Some(entry) => {
                // Offsets are i32, so an entry index always fits.
                *index = entry as u32;
                found.append(true);
            }
            None => found.append(false),
        }
    }
    (indices, found.finish())
}

/// A string key compared with stretches of a string array's bytes. Keys of 1 to 8 bytes, the
/// usual case, are compared as one masked 8-byte word instead of through `memcmp`.
struct Key<'a> {
    bytes: &'a [u8],
    word: Option<(u64, u64)>,
}

impl<'a> Key<'a> {
    fn new(key: &'a str) -> Self {
        let bytes = key.as_bytes();
        let word = (1..=8).contains(&bytes.len()).then(|| {
            let mut padded = [0u8; 8];
            padded[..bytes.len()].copy_from_slice(bytes);
            (
                u64::from_le_bytes(padded),
                u64::MAX >> (8 * (8 - bytes.len())),
            )
        });
        Key { bytes, word }
    }

    /// Whether `data[start..end]` is this key.
    #[inline]
    fn is_at(&self, data: &[u8], start: usize, end: usize) -> bool {
        if end - start != self.bytes.len() {
            return false;
        }
        match (self.word, data.get(start..start + 8)) {
            (Some((word, mask)), Some(window)) => {
                u64::from_le_bytes(window.try_into().expect("8 bytes")) & mask == word
            }
            _ => &data[start..end] == self.bytes,
        }
    }
}

/// The 16-byte view of a string short enough to be stored inline: its length, then its bytes.
fn inline_view(key: &str) -> Option<u128> {
    let bytes = key.as_bytes();
    (bytes.len() <= 12).then(|| {
        let mut view = [0u8; 16];
        view[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        view[4..4 + bytes.len()].copy_from_slice(bytes);
        u128::from_le_bytes(view)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{
        Int64Array, Int64Builder, MapBuilder, StringBuilder, StructArray,
    };
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{Field, Fields};

    use super::*;

    /// A map row: its entries, or None for a null map.
    type Row<'a> = Option<&'a [(&'a str, Option<i64>)]>;

    fn metrics(rows: &[Row<'_>]) -> MapArray {
        let mut builder = MapBuilder::new(None, StringBuilder::new(), Int64Builder::new());
        for row in rows {
            if let Some(entries) = row {
                for (key, value) in *entries {
                    builder.keys().append_value(key);
                    builder.values().append_option(*value);
                }
            }
            builder.append(row.is_some()).unwrap();
        }
        builder.finish()
    }

    /// The same map with its keys cast to `to` (what the Parquet reader gives for `Utf8View`).
    fn with_keys_as(map: &MapArray, to: &DataType) -> MapArray {
        let keys = cast(map.keys(), to).unwrap();
        let fields = Fields::from(vec![
            Field::new("keys", to.clone(), false),
            Field::new("values", map.values().data_type().clone(), true),
        ]);
        let entries = StructArray::new(fields.clone(), vec![keys, map.values().clone()], None);
        let field = Arc::new(Field::new("entries", DataType::Struct(fields), false));
        MapArray::try_new(
            field,
            map.offsets().clone(),
            entries,
            map.nulls().cloned(),
            false,
        )
        .unwrap()
    }

    fn looked_up(map: &MapArray, key: &str) -> Vec<Option<i64>> {
        let values = lookup(map, key).unwrap();
        let values: &Int64Array = values.as_primitive();
        values.iter().collect()
    }

    #[test]
    fn finds_the_first_entry_of_each_row_and_null_where_there_is_none() {
        let map = metrics(&[
            Some(&[
                ("likes", Some(3)),
                ("shares", Some(1)),
                ("comments", Some(4)),
            ]),
            None,
            Some(&[]),
            Some(&[("shares", Some(7)), ("impressions_total", Some(70))]),
            Some(&[("likes", None), ("shares", Some(2))]),
            Some(&[
                ("impressions_total", Some(50)),
                ("likes", Some(9)),
                ("likes", Some(10)),
            ]),
        ]);
        for keys in [DataType::Utf8, DataType::LargeUtf8, DataType::Utf8View] {
            let map = with_keys_as(&map, &keys);
            assert_eq!(
                looked_up(&map, "likes"),
                [Some(3), None, None, None, None, Some(9)],
                "{keys}"
            );
            assert_eq!(
                looked_up(&map, "shares"),
                [Some(1), None, None, Some(7), Some(2), None],
                "{keys}"
            );
            assert_eq!(
                looked_up(&map, "impressions_total"),
                [None, None, None, Some(70), None, Some(50)],
                "{keys}"
            );
            assert_eq!(
                looked_up(&map, "comments"),
                [Some(4), None, None, None, None, None],
                "{keys}"
            );
            assert_eq!(looked_up(&map, "like"), [None; 6], "{keys}");
            assert_eq!(looked_up(&map, ""), [None; 6], "{keys}");
        }
    }

    #[test]
    fn a_sliced_map_looks_up_its_own_rows() {
        let map = metrics(&[
            Some(&[("likes", Some(1))]),
            Some(&[("likes", Some(2))]),
            Some(&[("shares", Some(4)), ("likes", Some(3))]),
            Some(&[("likes", Some(4))]),
        ]);
        let sliced = map.slice(1, 2);
        assert_eq!(looked_up(&sliced, "likes"), [Some(2), Some(3)]);
        assert_eq!(looked_up(&sliced, "shares"), [None, Some(4)]);
    }
}
