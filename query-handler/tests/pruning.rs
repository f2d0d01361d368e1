//! The handler's sessions prune: a filter on the `day` partition reads only that day's files,
//! on a real Delta table in a directory.

use std::collections::{BTreeMap, HashMap};

use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::SessionConfig;
use sluice_consumer::replica::Replica;
use sluice_consumer::schema::to_record_batch;
use sluice_core::Notification;
use sluice_core::segment::{Segment, SegmentHeader};
use sluice_query_handler::engine::{self, Limits};
use sluice_query_handler::replica::ReplicaView;

fn on_day(day: u32, id: usize) -> Notification {
    Notification::from_json(
        &format!(
            r#"{{"platform":"p","id":"{day}-{id}","type":"post.liked","occurred_at":"2026-11-{day}T10:00:00Z","text":"t{id}"}}"#
        ),
        0,
    )
    .unwrap()
}

#[tokio::test]
async fn a_day_filter_reads_only_that_days_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("replica")).unwrap();
    let url = url::Url::from_directory_path(dir.path().join("replica")).unwrap();
    let mut replica = Replica::open_or_create(url.clone(), HashMap::new())
        .await
        .unwrap();
    let records: Vec<Notification> = (0..100).map(|i| on_day(20 + (i % 3) as u32, i)).collect();
    let segment = Segment {
        header: SegmentHeader {
            producer: "test".into(),
            sequence: 1,
            rows: records.len() as u64,
            crc32c: 0,
        },
        records,
    };
    replica
        .append(
            vec![to_record_batch(&[segment]).unwrap()],
            &BTreeMap::from([("test".to_string(), 1)]),
        )
        .await
        .unwrap();

    let view = ReplicaView::new(url, HashMap::new());
    view.refresh().await.unwrap();
    let snapshot = view.current().unwrap();
    let limits = Limits {
        memory_bytes: 64 << 20,
        max_result_rows: 1_000,
        max_result_bytes: 1 << 20,
        session: SessionConfig::new().with_target_partitions(2),
    };
    let ctx = engine::session(&snapshot, &limits).unwrap();
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
