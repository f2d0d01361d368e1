//! Point look-ups on the replica: a notification by a key the table does not hold (what
//! `GET /v1/notifications/{platform}/{id}` asks the replica when a notification is not in an
//! ingest node's memory) and by one it holds, with the row groups' bloom filters read and
//! ignored, against DuckDB over the same Parquet files, in one run.
//!
//! ```sh
//! cargo bench --bench lookup                 # 5,000,000 generated notifications
//! cargo bench --bench lookup -- quick        # 1,000,000
//! cargo bench --bench lookup --profile dev   # without a release build (slower, same ratios' sense)
//! ```
//!
//! The table is the query benchmark's (the analyst workload, committed 200,000 rows at a time
//! and compacted as the consumer's maintenance does), written with the replica's own writer
//! properties, so its files carry the bloom filters of `id` and `post_id`. The ids are
//! `g<batch>-<row>`: every day's file spans nearly all of them, so min/max statistics prune
//! nothing and an id the table lacks (`g<batch>-<row ≥ 10,000>`) lies inside every file's
//! range. "Without" reads the same files with `bloom_filter_on_read` off: what a look-up
//! cost before the files had filters. Each look-up runs through the handler's own
//! `lookup::find_notification` (its scan, its session); the times are medians of
//! `BENCH_REPEAT` (default 5) runs per key, interleaved. DuckDB (the pinned wheel, every core)
//! runs `SELECT * … WHERE platform = ? AND id = ?` over the live files.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/it/analyst.rs"]
mod analyst;

use std::collections::HashMap;
use std::time::Instant;

use sluice_query_handler::lookup;
use sluice_query_handler::replica::ReplicaView;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

const DUCKDB_LOOKUPS: &str = r#"
import duckdb, json, sys, time
files = [l for l in open(sys.argv[1]).read().split("\n") if l]
keys = json.loads(sys.argv[2])
repeat = int(sys.argv[3])
con = duckdb.connect()
listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
con.execute(f"CREATE VIEW n AS SELECT * FROM read_parquet([{listed}])")
out = {}
for platform, id in keys:
    con.execute("SELECT * FROM n WHERE platform = ? AND id = ?", [platform, id]).to_arrow_table()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        con.execute("SELECT * FROM n WHERE platform = ? AND id = ?", [platform, id]).to_arrow_table()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    out[id] = times[len(times) // 2]
print(json.dumps(out))
"#;

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let batches: u64 = if quick { 100 } else { 500 };
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let replica = analyst::compacted_table(&dir.path().join("replica"), batches).await;
    let url = replica.table().table_url().clone();
    let rows = batches as usize * analyst::BATCH_ROWS;
    let files = analyst::live_files(&replica, dir.path(), "");
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    eprintln!(
        "{rows} rows in {} files ({} MB) after {:?}",
        files.len(),
        bytes >> 20,
        started.elapsed()
    );

    let config = sluice_query_handler::Config::for_tests();
    let view = ReplicaView::new(url, HashMap::new(), &config.low_cardinality_columns);
    view.refresh().await.unwrap();
    let snapshot = view.current().unwrap();
    let with = config.limits().unwrap();
    let mut without = with.clone();
    without
        .session
        .options_mut()
        .execution
        .parquet
        .bloom_filter_on_read = false;

    // Keys: ids the table lacks, inside every file's range, and ids it holds (the platform is
    // the one batch b's row r has).
    let unknown: Vec<(String, String)> = (0..10)
        .map(|i| {
            (
                "bsky".to_string(),
                format!("g{}-{}", 1 + i * batches / 10, 10_000 + i),
            )
        })
        .collect();
    let known: Vec<(String, String)> = (0..10)
        .map(|i| {
            let batch = 1 + i * batches / 10;
            let row = (i * 997) as usize % analyst::BATCH_ROWS;
            let n = &analyst::generated_batch(batch)[row];
            (n.platform.clone(), n.id.clone())
        })
        .collect();

    let mut results = Vec::new();
    for (what, keys, expected) in [("unknown id", &unknown, false), ("known id", &known, true)] {
        let (mut on, mut off) = (Vec::new(), Vec::new());
        for (platform, id) in keys {
            let (mut on_ms, mut off_ms) = (Vec::new(), Vec::new());
            for run in 0..=repeat {
                for (limits, times) in [(&with, &mut on_ms), (&without, &mut off_ms)] {
                    let t = Instant::now();
                    let found = lookup::find_notification(&snapshot, limits, platform, id)
                        .await
                        .unwrap();
                    assert_eq!(found.is_some(), expected, "{platform}/{id}");
                    if run > 0 {
                        times.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
            on.push(median(&mut on_ms));
            off.push(median(&mut off_ms));
        }
        eprintln!("{what}: with {on:.1?} ms, without {off:.1?} ms");
        let list = analyst::file_list(dir.path(), &files);
        let output = std::process::Command::new(support::python())
            .args(["-c", DUCKDB_LOOKUPS])
            .arg(&list)
            .arg(serde_json::to_string(keys).unwrap())
            .arg(repeat.to_string())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let duckdb: HashMap<String, f64> = serde_json::from_slice(&output.stdout).unwrap();
        let mut duckdb: Vec<f64> = duckdb.into_values().collect();
        results.push((what, median(&mut on), median(&mut off), median(&mut duckdb)));
    }

    println!(
        "\n{rows} notifications, {} Parquet files, {} MB; medians over 10 keys of {repeat} runs each\n",
        files.len(),
        bytes >> 20
    );
    println!(
        "| look-up | with bloom filters | without | without / with | DuckDB | with / DuckDB |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (what, on, off, duckdb) in results {
        println!(
            "| {what} | {on:.1} ms | {off:.1} ms | {:.1}× | {duckdb:.1} ms | {:.2} |",
            off / on,
            on / duckdb
        );
    }
}
