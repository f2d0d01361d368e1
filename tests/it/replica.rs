//! The replica end to end: separate `sluice` processes on a real S3 server, the consumer killed
//! at random moments, counts checked by Sluice's engine and by a reader that is not Sluice, and
//! a replay from the master store alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::Int64Type;
use deltalake::datafusion::prelude::SessionContext;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sluice_consumer::replica::Replica;

use crate::support::{
    S3Server, Sluice, free_addr, notification, post_all, replicated_count, run_python,
    wait_for_port,
};

const TOTAL: usize = 200_000;

/// What the replica must hold: counts by platform and by day of the first `total` notifications.
fn expected(total: usize) -> Value {
    let mut platforms = BTreeMap::<String, u64>::new();
    let mut days = BTreeMap::<String, u64>::new();
    for i in 0..total {
        let n = notification(i);
        *platforms
            .entry(n["platform"].as_str().unwrap().to_string())
            .or_default() += 1;
        *days
            .entry(n["occurred_at"].as_str().unwrap()[..10].to_string())
            .or_default() += 1;
    }
    serde_json::json!({"total": total, "distinct": total, "platforms": platforms, "days": days})
}

async fn sql(ctx: &SessionContext, query: &str) -> RecordBatch {
    let batches = ctx.sql(query).await.unwrap().collect().await.unwrap();
    let schema = batches.first().map(|b| b.schema()).unwrap();
    concat_batches(&schema, &batches).unwrap()
}

async fn session(s3: &S3Server, path: &str) -> SessionContext {
    let (url, options) = s3.table(path);
    let replica = Replica::open_or_create(url, options).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table(
        "notifications",
        replica.table().table_provider().await.unwrap(),
    )
    .unwrap();
    ctx
}

/// The replica's counts, in the shape of [`expected`], as Sluice's own engine reads them.
async fn counts(ctx: &SessionContext) -> Value {
    let total = sql(ctx, "SELECT count(*) FROM notifications").await;
    let distinct = sql(
        ctx,
        "SELECT count(*) FROM (SELECT DISTINCT platform, id FROM notifications)",
    )
    .await;
    let by = |column: &str| {
        format!("SELECT CAST({column} AS VARCHAR), count(*) FROM notifications GROUP BY 1")
    };
    let mut groups = Vec::new();
    for column in ["platform", "day"] {
        let batch = sql(ctx, &by(column)).await;
        let keys = deltalake::arrow::compute::cast(
            batch.column(0),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let keys = keys.as_string::<i32>();
        let counts = batch.column(1).as_primitive::<Int64Type>();
        let map: BTreeMap<String, i64> = (0..batch.num_rows())
            .map(|i| (keys.value(i).to_string(), counts.value(i)))
            .collect();
        groups.push(map);
    }
    serde_json::json!({
        "total": total.column(0).as_primitive::<Int64Type>().value(0),
        "distinct": distinct.column(0).as_primitive::<Int64Type>().value(0),
        "platforms": groups[0],
        "days": groups[1],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_holds_every_notification_exactly_once_through_consumer_crashes() {
    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (publisher_addr, consumer_addr, ingest_addr) = (free_addr(), free_addr(), free_addr());
    let mut env = s3.env();
    env.extend([
        (
            "SLUICE_PUBLISHER_ADDR".to_string(),
            publisher_addr.to_string(),
        ),
        (
            "SLUICE_CONSUMER_ADDR".to_string(),
            consumer_addr.to_string(),
        ),
        ("SLUICE_INGEST_ADDR".to_string(), ingest_addr.to_string()),
        ("SLUICE_REPLICATE_MAX_AGE_MS".to_string(), "300".to_string()),
        ("SLUICE_LIST_INTERVAL_SECS".to_string(), "2".to_string()),
        ("SLUICE_GREEN_POLL_MS".to_string(), "50".to_string()),
        // Compaction commits between the rounds all along, while the re-sent copies arrive:
        // the consumer's duplicate index must stay right across it.
        (
            "SLUICE_MAINTENANCE_INTERVAL_SECS".to_string(),
            "2".to_string(),
        ),
    ]);
    let _publisher = Sluice::spawn(&["publisher"], &env, dir.path(), "publisher");
    let mut consumer = Sluice::spawn(&["consumer"], &env, dir.path(), "consumer");
    let ingest = Sluice::spawn(&["ingest-api"], &env, dir.path(), "ingest");
    for addr in [publisher_addr, consumer_addr, ingest_addr] {
        wait_for_port(addr, &consumer).await;
    }

    let mut items: Vec<usize> = (0..TOTAL).collect();
    items.extend((0..TOTAL).filter(|i| i % 50 == 11));
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    items.shuffle(&mut rng);
    let requests = items.len().div_ceil(200);
    let progress = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(post_all(ingest_addr, items, 200, 16, progress.clone()));

    // kill -9 the consumer at three random moments of the load, restarting it each time.
    let mut kills = 0;
    let mut killed_at = Vec::new();
    for share in [
        rng.random_range(0.1..0.3),
        rng.random_range(0.35..0.55),
        rng.random_range(0.6..0.85),
    ] {
        while (progress.load(Ordering::Relaxed) as f64) < share * requests as f64
            && !load.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        consumer.kill9();
        killed_at.push(progress.load(Ordering::Relaxed));
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
        consumer = Sluice::spawn(
            &["consumer"],
            &env,
            dir.path(),
            &format!("consumer-{kills}"),
        );
        wait_for_port(consumer_addr, &consumer).await;
    }
    load.await.unwrap();
    assert!(
        killed_at.iter().all(|&done| done < requests),
        "every kill fell inside the load: {killed_at:?} of {requests} requests"
    );

    // Every notification turns green once the restarted consumer has caught up.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let (green, stats) = replicated_count(ingest_addr).await;
        if green == TOTAL as u64 {
            assert_eq!(stats["freshness"]["notifications"], TOTAL, "{stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {green} of {TOTAL} turned green: {stats}\n{}",
            consumer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let expected = expected(TOTAL);
    let ctx = session(&s3, "replica").await;
    assert_eq!(counts(&ctx).await, expected, "Sluice's engine");

    // A reader that is not Sluice: delta-rs's Python package, straight from the bucket.
    let (url, options) = s3.table("replica");
    let stdout = run_python([
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/read_replica.py"),
        url.as_str(),
        &serde_json::to_string(&options).unwrap(),
    ]);
    let python_counts: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(python_counts, expected, "Python deltalake");

    // Replay rebuilds the replica from the master store alone, with identical content.
    let mut replay_env = s3.env();
    replay_env.push(("SLUICE_REPLICATE_MAX_ROWS".into(), "100000".into()));
    let mut replay = Sluice::spawn(
        &["replay", "--to", "replica-replay"],
        &replay_env,
        dir.path(),
        "replay",
    );
    assert_eq!(replay.wait(), 0, "{}", replay.log_text());
    let replayed = session(&s3, "replica-replay").await;
    let all_rows = "SELECT * FROM notifications ORDER BY producer_id, batch_sequence, batch_row";
    let (original, rebuilt) = (sql(&ctx, all_rows).await, sql(&replayed, all_rows).await);
    assert_eq!(original.num_rows(), TOTAL);
    assert_same_rows(&original, &rebuilt, "replay");

    // The consumer compacts as it replicates (waited for here, since a pass in a debug build
    // under load can take longer than the load); counted once it stopped, as it releases the
    // replica's lease, which `sluice maintain` takes next.
    let compactions = || {
        let log = s3
            .bucket_dir(crate::support::BUCKET)
            .join("replica/_delta_log");
        std::fs::read_dir(log)
            .unwrap()
            .filter_map(|entry| std::fs::read_to_string(entry.unwrap().path()).ok())
            .filter(|commit| commit.contains(r#""operation":"OPTIMIZE""#))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    while compactions() == 0 {
        assert!(
            Instant::now() < deadline,
            "no compaction: {}",
            consumer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(consumer.terminate(), 0, "{}", consumer.log_text());
    let by_consumer = compactions();
    let key_loads = consumer
        .log_text()
        .matches("loaded the replica's notification keys")
        .count();
    eprintln!(
        "replica: {by_consumer} compactions by the consumers; the last consumer loaded keys \
         {key_loads} times"
    );

    // `sluice maintain` compacts what the consumer's last rounds left since its last pass into
    // one file per day at the archival zstd level; the rows stay the same.
    let mut maintain = Sluice::spawn(&["maintain"], &s3.env(), dir.path(), "maintain");
    assert_eq!(maintain.wait(), 0, "{}", maintain.log_text());
    let log = maintain.log_text();
    let report = log
        .lines()
        .find_map(|line| line.strip_prefix("compacted "))
        .unwrap_or_else(|| panic!("no report in {log}"));
    let numbers: Vec<u64> = report
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(numbers[0] >= numbers[1], "{report}");
    // One commit for each pass (closed days, open days) that merged files.
    assert_eq!(
        compactions() - by_consumer,
        usize::from(numbers[0] > 0) + usize::from(numbers[2] > 0),
        "{report}"
    );
    let compacted = session(&s3, "replica").await;
    assert_same_rows(&original, &sql(&compacted, all_rows).await, "compaction");
    drop(ingest);
}

fn assert_same_rows(original: &RecordBatch, other: &RecordBatch, what: &str) {
    assert_eq!(original.schema(), other.schema(), "{what}");
    for (i, (a, b)) in original.columns().iter().zip(other.columns()).enumerate() {
        assert!(
            a.as_ref() == b.as_ref(),
            "{what}: column {} differs",
            original.schema().field(i).name()
        );
        assert_eq!(a.null_count(), b.null_count(), "{what}");
    }
}
