//! Query results as the client asked for them: JSON (columns and rows), CSV, or the Arrow IPC
//! stream the query handler produced.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Csv,
    Arrow,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, ApiError> {
        match text {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            other => Err(ApiError::BadRequest(format!(
                "unknown format {other:?}; use json, csv or arrow"
            ))),
        }
    }
}

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Decodes an Arrow IPC stream.
pub fn decode(ipc: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), ApiError> {
    let reader = StreamReader::try_new(ipc, None)
        .map_err(|e| ApiError::Internal(format!("cannot read the result stream: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("cannot read the result stream: {e}")))?;
    Ok((schema, batches))
}

/// `columns` (name and Arrow type) and `rows` (arrays in column order).
///
/// Arrow's JSON writer makes one object per row, keyed by column name; a result may have
/// several columns of one name (`SELECT a.id, b.id …`), so each column is written under its
/// position instead and read back by it.
pub fn to_json(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<(Value, Value), ApiError> {
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let positions: Vec<String> = (0..schema.fields().len()).map(|i| i.to_string()).collect();
    let by_position = Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .zip(&positions)
            .map(|(field, position)| field.as_ref().clone().with_name(position))
            .collect::<Vec<Field>>(),
        schema.metadata().clone(),
    ));
    let render_error =
        |e: &dyn std::fmt::Display| ApiError::Internal(format!("cannot render the result: {e}"));
    let mut buffer = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buffer);
        for batch in batches {
            let batch = RecordBatch::try_new(Arc::clone(&by_position), batch.columns().to_vec())
                .map_err(|e| render_error(&e))?;
            writer.write(&batch).map_err(|e| render_error(&e))?;
        }
        writer.finish().map_err(|e| render_error(&e))?;
    }
    let objects: Vec<Map<String, Value>> = if buffer.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&buffer).map_err(|e| render_error(&e))?
    };
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|mut object| {
            Value::Array(
                positions
                    .iter()
                    .map(|position| object.remove(position).unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect();
    Ok((Value::Array(columns), Value::Array(rows)))
}

/// CSV with a header line.
pub fn to_csv(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ApiError> {
    let mut buffer = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buffer);
        if batches.is_empty() {
            let header: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Ok(format!("{}\n", header.join(",")).into_bytes());
        }
        for batch in batches {
            writer.write(batch).map_err(|e| {
                ApiError::Unprocessable(format!(
                    "cannot write this result as CSV: {e}; ask for json or arrow"
                ))
            })?;
        }
    }
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};

    use super::*;

    #[test]
    fn columns_that_share_a_name_keep_their_own_values() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("x", arrow::datatypes::DataType::Int64, true),
            Field::new("x", arrow::datatypes::DataType::Int64, true),
            Field::new("id", arrow::datatypes::DataType::Utf8, true),
            Field::new("id", arrow::datatypes::DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(Int64Array::from(vec![Some(2), Some(3)])),
                Arc::new(StringArray::from(vec![Some("a"), Some("b")])),
                Arc::new(StringArray::from(vec![None, Some("c")])),
            ],
        )
        .unwrap();
        let (columns, rows) = to_json(&schema, &[batch]).unwrap();
        assert_eq!(
            columns,
            json!([{"name": "x", "type": "Int64"}, {"name": "x", "type": "Int64"},
                   {"name": "id", "type": "Utf8"}, {"name": "id", "type": "Utf8"}])
        );
        assert_eq!(rows, json!([[1, 2, "a", null], [null, 3, "b", "c"]]));
        let csv = String::from_utf8(to_csv(&schema, &[]).unwrap()).unwrap();
        assert_eq!(csv, "x,x,id,id\n");
    }
}
