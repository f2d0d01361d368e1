//! Query results as the client asked for them: JSON (columns and rows), CSV, or the Arrow IPC
//! stream the query handler produced.

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
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
pub fn to_json(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<(Value, Value), ApiError> {
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut buffer = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buffer);
        for batch in batches {
            writer
                .write(batch)
                .map_err(|e| ApiError::Internal(format!("cannot render the result: {e}")))?;
        }
        writer
            .finish()
            .map_err(|e| ApiError::Internal(format!("cannot render the result: {e}")))?;
    }
    let objects: Vec<Map<String, Value>> = if buffer.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&buffer)
            .map_err(|e| ApiError::Internal(format!("cannot render the result: {e}")))?
    };
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|mut object| {
            Value::Array(
                names
                    .iter()
                    .map(|name| object.remove(name.as_str()).unwrap_or(Value::Null))
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
