//! Point reads of the replica for the other services: every notification of one post (its
//! audit trail), and one notification by its key (a red entry's record).
//!
//! They are built with DataFusion's DataFrame API, never by pasting input into SQL text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, TimeUnit, TimestampMicrosecondType};
use datafusion::logical_expr::{SortExpr, col, lit};
use datafusion::scalar::ScalarValue;
use sluice_proto::v1;

use crate::engine::{self, Limits, TABLE};
use crate::error::QueryError;
use crate::rules::{self, RuleSwitches};
use crate::snapshot::Snapshot;

const COLUMNS: [&str; 13] = [
    "platform",
    "id",
    "type",
    "occurred_at",
    "received_at",
    "post_id",
    "author_id",
    "actor_id",
    "text",
    "lang",
    "tags",
    "metrics",
    "attributes",
];

/// The post's notifications in the replica, oldest first (by event time, then arrival, then
/// id); with `as_of`, only those that occurred at or before it.
pub async fn post_events(
    snapshot: &Arc<Snapshot>,
    limits: &Limits,
    platform: &str,
    post_id: &str,
    as_of_micros: Option<i64>,
) -> Result<Vec<v1::Notification>, QueryError> {
    let ctx = engine::session(snapshot, &scan_only(limits)?)?;
    let mut filter = col("platform")
        .eq(lit(platform))
        .and(col("post_id").eq(lit(post_id)));
    if let Some(as_of) = as_of_micros {
        filter = filter.and(
            col("occurred_at").lt_eq(lit(ScalarValue::TimestampMicrosecond(
                Some(as_of),
                Some("UTC".into()),
            ))),
        );
    }
    let batches = ctx
        .table(TABLE)
        .await?
        .filter(filter)?
        .select_columns(&COLUMNS)?
        .sort(vec![
            SortExpr::new(col("occurred_at"), true, false),
            SortExpr::new(col("received_at"), true, false),
            SortExpr::new(col("id"), true, false),
        ])?
        .limit(0, Some(limits.max_result_rows as usize + 1))?
        .collect()
        .await?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows as u64 > limits.max_result_rows {
        return Err(QueryError::ResultTooLarge(format!(
            "post {platform}/{post_id} has more than {} notifications; ask with an earlier as_of or use SQL",
            limits.max_result_rows
        )));
    }
    to_notifications(&batches)
}

/// A feed's history in `snapshot`: the newest `limit` notifications of `platform` (and of
/// `post_id`, and of `kind`, when given), oldest first; and whether older ones were left out.
pub async fn feed_history(
    snapshot: &Arc<Snapshot>,
    limits: &Limits,
    filter: &crate::feed::Filter,
    limit: usize,
) -> Result<(Vec<v1::Notification>, bool), QueryError> {
    let ctx = engine::session(snapshot, &scan_only(limits)?)?;
    let mut condition = col("platform").eq(lit(filter.platform.as_str()));
    if let Some(post_id) = &filter.post_id {
        condition = condition.and(col("post_id").eq(lit(post_id.as_str())));
    }
    if let Some(kind) = &filter.kind {
        condition = condition.and(col("type").eq(lit(kind.as_str())));
    }
    let batches = ctx
        .table(TABLE)
        .await?
        .filter(condition)?
        .select_columns(&COLUMNS)?
        .sort(vec![
            SortExpr::new(col("occurred_at"), false, true),
            SortExpr::new(col("received_at"), false, true),
            SortExpr::new(col("id"), false, true),
        ])?
        .limit(0, Some(limit + 1))?
        .collect()
        .await?;
    let mut newest_first = to_notifications(&batches)?;
    let truncated = newest_first.len() > limit;
    newest_first.truncate(limit);
    newest_first.reverse();
    Ok((newest_first, truncated))
}

/// The notification `(platform, id)` from the replica, if it is there.
pub async fn find_notification(
    snapshot: &Arc<Snapshot>,
    limits: &Limits,
    platform: &str,
    id: &str,
) -> Result<Option<v1::Notification>, QueryError> {
    let ctx = engine::session(snapshot, &scan_only(limits)?)?;
    let batches = ctx
        .table(TABLE)
        .await?
        .filter(col("platform").eq(lit(platform)).and(col("id").eq(lit(id))))?
        .select_columns(&COLUMNS)?
        .limit(0, Some(1))?
        .collect()
        .await?;
    Ok(to_notifications(&batches)?.into_iter().next())
}

/// `limits` with every rule off but the handler's scan: the rules rewrite aggregates, joins and
/// kernels, none of which a point read has, and a point read has no fallback of its own.
fn scan_only(limits: &Limits) -> Result<Limits, QueryError> {
    let mut limits = limits.clone();
    let others: Vec<String> = RuleSwitches::names()
        .into_iter()
        .filter(|name| name != "dictionary_scan")
        .collect();
    rules::turn_off(limits.session.options_mut(), &others)?;
    Ok(limits)
}

/// Rows of [`COLUMNS`] as wire notifications. Columns are cast to one canonical type first:
/// the Parquet reader may hand strings over as views or dictionaries.
pub(crate) fn to_notifications(
    batches: &[RecordBatch],
) -> Result<Vec<v1::Notification>, QueryError> {
    let utf8 = DataType::Utf8;
    let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
    let tags_type = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
    let mut out = Vec::new();
    for batch in batches {
        let column = |name: &str, to: &DataType| -> Result<ArrayRef, QueryError> {
            let array = batch
                .column_by_name(name)
                .ok_or_else(|| QueryError::Internal(format!("the replica has no {name} column")))?;
            Ok(cast(array, to)?)
        };
        let strings = |name: &str| column(name, &utf8);
        let (platform, id, kind) = (strings("platform")?, strings("id")?, strings("type")?);
        let (post_id, author_id, actor_id) = (
            strings("post_id")?,
            strings("author_id")?,
            strings("actor_id")?,
        );
        let (text, lang, attributes) = (strings("text")?, strings("lang")?, strings("attributes")?);
        let occurred_at = column("occurred_at", &micros)?;
        let received_at = column("received_at", &micros)?;
        let tags = column("tags", &tags_type)?;
        let metrics = batch
            .column_by_name("metrics")
            .ok_or_else(|| QueryError::Internal("the replica has no metrics column".into()))?;

        let text_of = |a: &ArrayRef, row: usize| -> Option<String> {
            a.is_valid(row)
                .then(|| a.as_string::<i32>().value(row).to_string())
        };
        let micros_of = |a: &ArrayRef, row: usize| -> i64 {
            a.as_primitive::<TimestampMicrosecondType>().value(row)
        };
        for row in 0..batch.num_rows() {
            let tags = if tags.is_valid(row) {
                let list = tags.as_list::<i32>().value(row);
                let list = list.as_string::<i32>();
                list.iter().flatten().map(str::to_string).collect()
            } else {
                Vec::new()
            };
            let mut metric_values = std::collections::BTreeMap::new();
            if metrics.is_valid(row) {
                let entries = metrics.as_map().value(row);
                let keys = cast(entries.column(0), &utf8)?;
                let values = cast(entries.column(1), &DataType::Int64)?;
                let values = values.as_primitive::<arrow::datatypes::Int64Type>();
                for i in 0..entries.len() {
                    if values.is_valid(i) {
                        metric_values.insert(
                            keys.as_string::<i32>().value(i).to_string(),
                            values.value(i),
                        );
                    }
                }
            }
            out.push(v1::Notification {
                platform: text_of(&platform, row).unwrap_or_default(),
                id: text_of(&id, row).unwrap_or_default(),
                r#type: text_of(&kind, row).unwrap_or_default(),
                occurred_at_micros: micros_of(&occurred_at, row),
                received_at_micros: micros_of(&received_at, row),
                post_id: text_of(&post_id, row),
                author_id: text_of(&author_id, row),
                actor_id: text_of(&actor_id, row),
                text: text_of(&text, row),
                lang: text_of(&lang, row),
                tags,
                metrics: metric_values,
                attributes_json: text_of(&attributes, row),
            });
        }
    }
    Ok(out)
}
