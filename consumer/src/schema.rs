//! The replica's columns, and the conversion of master segments into Arrow record batches.
//!
//! Columns follow the notification contract: UTC timestamps, `tags` a list of strings,
//! `metrics` a map of string to integer, `attributes` JSON text. Three columns say where a row
//! came from and order it: `producer_id`, `batch_sequence` and `batch_row` (a producer's
//! batches are numbered without gaps, so these three are unique and give ingestion order).
//! `day`, the UTC date of `occurred_at`, is the partition column.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Builder, Int32Builder, Int64Builder, ListBuilder, MapBuilder, MapFieldNames,
    RecordBatch, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use deltalake::kernel::{ArrayType, DataType as DeltaType, MapType, StructField as DeltaField};
use sluice_core::segment::Segment;

/// The partition column.
pub const PARTITION_COLUMN: &str = "day";

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The `day` partition of a notification that occurred at `occurred_at` (µs since the epoch):
/// its UTC date, in days since 1970-01-01.
pub fn day_of(occurred_at: i64) -> i32 {
    occurred_at.div_euclid(MICROS_PER_DAY) as i32
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn tags_field() -> Arc<Field> {
    Arc::new(Field::new("element", DataType::Utf8, true))
}

fn map_names() -> MapFieldNames {
    // Delta's names for a map's parts; Arrow's defaults (entries/keys/values) do not match.
    MapFieldNames {
        entry: "key_value".into(),
        key: "key".into(),
        value: "value".into(),
    }
}

/// The Arrow schema of a replica batch.
pub static ARROW_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let map_entries = Field::new(
        "key_value",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Int64, true),
        ])),
        false,
    );
    Arc::new(Schema::new(vec![
        Field::new("platform", DataType::Utf8, false),
        Field::new("id", DataType::Utf8, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("occurred_at", timestamp(), false),
        Field::new("received_at", timestamp(), false),
        Field::new("post_id", DataType::Utf8, true),
        Field::new("author_id", DataType::Utf8, true),
        Field::new("actor_id", DataType::Utf8, true),
        Field::new("text", DataType::Utf8, true),
        Field::new("lang", DataType::Utf8, true),
        Field::new("tags", DataType::List(tags_field()), true),
        Field::new("metrics", DataType::Map(Arc::new(map_entries), false), true),
        Field::new("attributes", DataType::Utf8, true),
        Field::new("producer_id", DataType::Utf8, false),
        Field::new("batch_sequence", DataType::Int64, false),
        Field::new("batch_row", DataType::Int32, false),
        Field::new(PARTITION_COLUMN, DataType::Date32, false),
    ]))
});

/// The same columns as Delta declares them when the table is created.
pub fn delta_columns() -> Vec<DeltaField> {
    vec![
        DeltaField::new("platform", DeltaType::STRING, false),
        DeltaField::new("id", DeltaType::STRING, false),
        DeltaField::new("type", DeltaType::STRING, false),
        DeltaField::new("occurred_at", DeltaType::TIMESTAMP, false),
        DeltaField::new("received_at", DeltaType::TIMESTAMP, false),
        DeltaField::new("post_id", DeltaType::STRING, true),
        DeltaField::new("author_id", DeltaType::STRING, true),
        DeltaField::new("actor_id", DeltaType::STRING, true),
        DeltaField::new("text", DeltaType::STRING, true),
        DeltaField::new("lang", DeltaType::STRING, true),
        DeltaField::new("tags", ArrayType::new(DeltaType::STRING, true), true),
        DeltaField::new(
            "metrics",
            MapType::new(DeltaType::STRING, DeltaType::LONG, true),
            true,
        ),
        DeltaField::new("attributes", DeltaType::STRING, true),
        DeltaField::new("producer_id", DeltaType::STRING, false),
        DeltaField::new("batch_sequence", DeltaType::LONG, false),
        DeltaField::new("batch_row", DeltaType::INTEGER, false),
        DeltaField::new(PARTITION_COLUMN, DeltaType::DATE, false),
    ]
}

/// One record batch holding the rows of `segments`, in order.
pub fn to_record_batch(segments: &[Segment]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let rows: usize = segments.iter().map(|s| s.records.len()).sum();
    let string = || StringBuilder::with_capacity(rows, rows * 16);
    let (mut platform, mut id, mut kind) = (string(), string(), string());
    let mut occurred_at = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let mut received_at = TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC");
    let (mut post_id, mut author_id, mut actor_id) = (string(), string(), string());
    let (mut text, mut lang, mut attributes) = (string(), string(), string());
    let mut tags = ListBuilder::new(StringBuilder::new()).with_field(tags_field());
    let mut metrics = MapBuilder::new(Some(map_names()), StringBuilder::new(), Int64Builder::new());
    let mut producer_id = string();
    let mut batch_sequence = Int64Builder::with_capacity(rows);
    let mut batch_row = Int32Builder::with_capacity(rows);
    let mut day = Date32Builder::with_capacity(rows);

    for segment in segments {
        let header = &segment.header;
        for (row, n) in segment.records.iter().enumerate() {
            platform.append_value(&n.platform);
            id.append_value(&n.id);
            kind.append_value(&n.kind);
            occurred_at.append_value(n.occurred_at);
            received_at.append_value(n.received_at);
            post_id.append_option(n.post_id.as_deref());
            author_id.append_option(n.author_id.as_deref());
            actor_id.append_option(n.actor_id.as_deref());
            text.append_option(n.text.as_deref());
            lang.append_option(n.lang.as_deref());
            for tag in &n.tags {
                tags.values().append_value(tag);
            }
            tags.append(true);
            for (name, value) in &n.metrics {
                metrics.keys().append_value(name);
                metrics.values().append_value(*value);
            }
            metrics.append(true)?;
            attributes.append_option(n.attributes.as_deref());
            producer_id.append_value(&header.producer);
            batch_sequence.append_value(header.sequence as i64);
            batch_row.append_value(row as i32);
            day.append_value(day_of(n.occurred_at));
        }
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(platform.finish()),
        Arc::new(id.finish()),
        Arc::new(kind.finish()),
        Arc::new(occurred_at.finish()),
        Arc::new(received_at.finish()),
        Arc::new(post_id.finish()),
        Arc::new(author_id.finish()),
        Arc::new(actor_id.finish()),
        Arc::new(text.finish()),
        Arc::new(lang.finish()),
        Arc::new(tags.finish()),
        Arc::new(metrics.finish()),
        Arc::new(attributes.finish()),
        Arc::new(producer_id.finish()),
        Arc::new(batch_sequence.finish()),
        Arc::new(batch_row.finish()),
        Arc::new(day.finish()),
    ];
    RecordBatch::try_new(ARROW_SCHEMA.clone(), columns)
}
