//! How the handler reads a real Delta table in a directory: a filter on the `day` partition
//! reads only that day's files, and row counts by day come from the log without reading any.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::ipc::reader::StreamReader;
use datafusion::common::tree_node::TreeNode;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::SessionConfig;
use sluice_consumer::replica::Replica;
use sluice_consumer::schema::to_record_batch;
use sluice_core::Notification;
use sluice_core::segment::{Segment, SegmentHeader};
use sluice_query_handler::counts;
use sluice_query_handler::engine::{self, Limits};
use sluice_query_handler::replica::{ReplicaView, Snapshot};

fn on_day(day: u32, id: usize) -> Notification {
    Notification::from_json(
        &format!(
            r#"{{"platform":"p","id":"{day}-{id}","type":"post.liked","occurred_at":"2026-11-{day}T10:00:00Z","text":"t{id}"}}"#
        ),
        0,
    )
    .unwrap()
}

/// A table of 100 notifications over 20–22 November, in two commits; its view, refreshed.
async fn three_days(dir: &std::path::Path) -> ReplicaView {
    std::fs::create_dir(dir.join("replica")).unwrap();
    let url = url::Url::from_directory_path(dir.join("replica")).unwrap();
    let mut replica = Replica::open_or_create(url.clone(), HashMap::new())
        .await
        .unwrap();
    for (sequence, ids) in [(1, 0..60), (2, 60..100)] {
        let records: Vec<Notification> = ids.map(|i| on_day(20 + (i % 3) as u32, i)).collect();
        let segment = Segment {
            header: SegmentHeader {
                producer: "test".into(),
                sequence,
                rows: records.len() as u64,
                crc32c: 0,
            },
            records,
        };
        replica
            .append(
                vec![to_record_batch(&[segment]).unwrap()],
                &BTreeMap::from([("test".to_string(), sequence)]),
            )
            .await
            .unwrap();
    }
    let view = ReplicaView::new(url, HashMap::new());
    view.refresh().await.unwrap();
    view
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 64 << 20,
        max_result_rows: 1_000,
        max_result_bytes: 1 << 20,
        session: SessionConfig::new().with_target_partitions(2),
    }
}

#[tokio::test]
async fn a_day_filter_reads_only_that_days_files() {
    let dir = tempfile::tempdir().unwrap();
    let view = three_days(dir.path()).await;
    let snapshot = view.current().unwrap();
    let ctx = engine::session(&snapshot, &limits()).unwrap();
    // max(length(text)) cannot be answered from statistics: the files must be read.
    let plan = ctx
        .sql("SELECT max(length(text)) AS longest, count(*) AS n FROM notifications WHERE day = DATE '2026-11-21'")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let shown = displayable(plan.as_ref()).indent(true).to_string();
    assert!(shown.contains("day=2026-11-21"), "{shown}");
    assert!(
        !shown.contains("day=2026-11-20") && !shown.contains("day=2026-11-22"),
        "other days are not read: {shown}"
    );
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    let n = batches[0]
        .column_by_name("n")
        .unwrap()
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 33);
}

/// Runs `sql` through the handler's engine and decodes the answer into one batch's columns.
async fn answer(sql: &str, snapshot: &Arc<Snapshot>) -> Vec<ArrayRef> {
    let parsed = engine::parse(sql).unwrap();
    let answer = engine::execute(parsed.statement, snapshot.clone(), limits())
        .await
        .unwrap();
    let reader = StreamReader::try_new(answer.ipc.as_slice(), None).unwrap();
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&schema, &batches)
        .unwrap()
        .columns()
        .to_vec()
}

/// Whether the optimized plan of `sql` still scans the table once counts are taken from the log.
async fn scans(sql: &str, snapshot: &Snapshot) -> bool {
    let ctx = engine::session(snapshot, &limits()).unwrap();
    let state = ctx.state();
    let plan = state.create_logical_plan(sql).await.unwrap();
    let plan = counts::answer_from_log(state.optimize(&plan).unwrap(), snapshot).unwrap();
    plan.exists(|node| Ok(matches!(node, LogicalPlan::TableScan(_))))
        .unwrap()
}

#[tokio::test]
async fn counts_by_day_come_from_the_log_and_match_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let view = three_days(dir.path()).await;
    let snapshot = view.current().unwrap();
    let counts = snapshot
        .counts
        .as_deref()
        .expect("every file has its row count");
    assert_eq!(counts.columns, ["day"]);
    assert_eq!(
        counts.rows.values().collect::<Vec<_>>(),
        [&34, &33, &33],
        "{counts:?}"
    );
    // The same snapshot without the log's counts: DataFusion reads the files.
    let scanned = Arc::new(Snapshot {
        version: snapshot.version,
        provider: snapshot.provider.clone(),
        counts: None,
    });

    for (sql, from_log) in [
        (
            "SELECT day, count(*) AS n FROM notifications GROUP BY day ORDER BY day",
            true,
        ),
        (
            "SELECT count(*) AS n, count(1) AS m FROM notifications",
            true,
        ),
        (
            "SELECT day, n, sum(n) OVER (ORDER BY day) AS running \
             FROM (SELECT day, count(*) AS n FROM notifications GROUP BY day) AS d ORDER BY day",
            true,
        ),
        (
            "SELECT day, count(*) AS n FROM notifications GROUP BY day HAVING count(*) > 33 ORDER BY day",
            true,
        ),
        // Anything the row counts alone cannot answer is left to DataFusion.
        (
            "SELECT day, count(*) AS n FROM notifications WHERE id <> '20-0' GROUP BY day ORDER BY day",
            false,
        ),
        // A filter on the partition alone is evaluated on the partition values.
        (
            "SELECT day, count(*) AS n FROM notifications WHERE day > DATE '2026-11-20' GROUP BY day ORDER BY day",
            true,
        ),
        (
            "SELECT count(*) AS n FROM notifications WHERE day IN (DATE '2026-11-20', DATE '2026-11-22')",
            true,
        ),
        (
            "SELECT day, count(*) AS n FROM notifications WHERE day > DATE '2026-11-20' AND id <> '21-1' GROUP BY day ORDER BY day",
            false,
        ),
        (
            "SELECT day, count(*) AS n FROM notifications \
             WHERE day = (SELECT max(day) FROM notifications) GROUP BY day ORDER BY day",
            false,
        ),
        (
            "SELECT day, count(text) AS n FROM notifications GROUP BY day ORDER BY day",
            false,
        ),
        (
            "SELECT day, count(DISTINCT platform) AS n FROM notifications GROUP BY day ORDER BY day",
            false,
        ),
        (
            "SELECT type, count(*) AS n FROM notifications GROUP BY type ORDER BY type",
            false,
        ),
        (
            "SELECT day, count(*) FILTER (WHERE type = 'x') AS n FROM notifications GROUP BY day ORDER BY day",
            false,
        ),
    ] {
        assert_eq!(scans(sql, &snapshot).await, !from_log, "{sql}");
        assert!(scans(sql, &scanned).await, "{sql}");
        let (logged, read) = (answer(sql, &snapshot).await, answer(sql, &scanned).await);
        assert_eq!(logged, read, "{sql}");
        assert!(!logged.is_empty() && !logged[0].is_empty(), "{sql}");
    }
    let columns = answer(
        "SELECT day, count(*) AS n FROM notifications GROUP BY day ORDER BY day",
        &snapshot,
    )
    .await;
    assert_eq!(
        arrow::util::display::array_value_to_string(&columns[0], 0).unwrap(),
        "2026-11-20"
    );
}
