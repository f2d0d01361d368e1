//! The query benchmark: the analyst suite (`tests/analyst_suite.sql`) on Sluice's query handler
//! against DuckDB over the same Parquet files, in one run, as ratios.
//!
//! ```sh
//! cargo bench --bench query                # 5,000,000 generated notifications
//! cargo bench --bench query -- quick       # 1,000,000
//! BENCH_REPEAT=9 cargo bench --bench query # timed runs per query (default 5)
//! BENCH_KEEP=1 cargo bench --bench query    # keep the generated table (its path is printed)
//! ```
//!
//! The replica is a Delta table on local disk (`file://`), written by the consumer's own code in
//! commits of 200,000 rows and then compacted by the consumer's maintenance (at its default
//! archival zstd level), as it leaves closed days. A release `sluice query-handler` with the result
//! cache off (`SLUICE_CACHE_BYTES=0`) and DuckDB (`tests/analyst_suite.py`, the pinned duckdb,
//! every core, reading the table's live Parquet files with the same SQL) first answer the whole
//! suite once, and both answers are compared. Then, query by query, Sluice answers it once to
//! warm up and `BENCH_REPEAT` timed times, and right after DuckDB does the same, so that the
//! two engines' runs of a query are seconds apart on this noisy machine. Sluice's time is the
//! handler's own (`elapsed_ms`: planning, execution, encoding); DuckDB's is `execute` +
//! `fetchall`. Results go to `bench/README.md`.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/it/analyst.rs"]
mod analyst;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_consumer::replica::Replica;
use support::{Sluice, free_addr, wait_for_port};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let batches: u64 = if quick { 100 } else { 500 };
    let repeat: usize = std::env::var("BENCH_REPEAT")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("BENCH_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("BENCH_KEEP: the table stays in {}", dir.path().display());
    }
    let table_dir = dir.path().join("data/replica");
    std::fs::create_dir_all(&table_dir).unwrap();
    let url = url::Url::from_directory_path(&table_dir).unwrap();
    let mut replica = Replica::open_or_create(url, Default::default())
        .await
        .unwrap();
    let started = Instant::now();
    analyst::load(&mut replica, "generated", 1..batches + 1, 20).await;
    // Every generated day is closed: compact them all as the consumer's maintenance does.
    let maintenance = sluice_consumer::Config::for_tests()
        .maintenance()
        .on_every_core();
    let (table, _) = sluice_consumer::maintenance::maintain(
        replica.table().clone(),
        &maintenance,
        chrono::NaiveDate::MAX,
    )
    .await
    .unwrap();
    replica = Replica::open_or_create(table.table_url().clone(), Default::default())
        .await
        .unwrap();
    let rows = batches as usize * analyst::BATCH_ROWS;
    let files = analyst::live_files(&replica, dir.path(), "");
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    eprintln!(
        "{rows} rows in {} files ({} MB) after {:?}",
        files.len(),
        bytes >> 20,
        started.elapsed()
    );

    let (handler_addr, api) = (free_addr(), free_addr());
    let env: Vec<(String, String)> = [
        (
            "SLUICE_STORAGE",
            format!("file://{}", dir.path().join("data").display()),
        ),
        ("SLUICE_QUERY_HANDLER_ADDR", handler_addr.to_string()),
        ("SLUICE_QUERY_ADDR", api.to_string()),
        ("SLUICE_CACHE_BYTES", "0".to_string()),
        ("SLUICE_QUERY_TIMEOUT_MS", "600000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let handler = Sluice::spawn(&["query-handler"], &env, dir.path(), "query-handler");
    let api_process = Sluice::spawn(&["query-api"], &env, dir.path(), "query-api");
    wait_for_port(handler_addr, &handler).await;
    wait_for_port(api, &api_process).await;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !analyst::query(&client, api, json!({"sql": "SELECT 1 AS one"}))
        .await
        .0
        .is_success()
    {
        assert!(Instant::now() < deadline, "{}", handler.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A warm-up pass of the whole suite, whose answers are compared with DuckDB's.
    let (answers, _) = analyst::run_suite(api).await;
    let actual = dir.path().join("sluice.json");
    std::fs::write(&actual, answers.to_string()).unwrap();
    let list = analyst::file_list(dir.path(), &files);
    let expected = dir.path().join("duckdb.json");
    support::run_python(vec![
        analyst::SUITE_PY,
        "run",
        "--files",
        list.to_str().unwrap(),
        "--suite",
        analyst::SUITE,
        "--out",
        expected.to_str().unwrap(),
    ]);

    // Then query by query, each engine in turn: Sluice answers it once more to warm up and
    // `repeat` timed times, and right after, DuckDB does the same. The two engines' runs of a
    // query are seconds apart, so a slow spell of the machine falls on both.
    let mut sluice_ms: BTreeMap<String, f64> = BTreeMap::new();
    let mut duckdb_ms: BTreeMap<String, f64> = BTreeMap::new();
    let repeat_arg = repeat.to_string();
    for (name, sql) in analyst::suite() {
        let mut runs = Vec::with_capacity(repeat);
        for run in 0..=repeat {
            let (status, answer) = analyst::query(&client, api, json!({"sql": sql})).await;
            assert!(status.is_success(), "{name}: {status} {answer}");
            if run > 0 {
                runs.push(answer["elapsed_ms"].as_f64().unwrap());
            }
        }
        sluice_ms.insert(name.clone(), median(&mut runs));
        let timings = dir.path().join(format!("duckdb-{name}.json"));
        support::run_python(vec![
            analyst::SUITE_PY,
            "bench",
            "--files",
            list.to_str().unwrap(),
            "--suite",
            analyst::SUITE,
            "--only",
            &name,
            "--repeat",
            &repeat_arg,
            "--out",
            timings.to_str().unwrap(),
        ]);
        let timed: Value = serde_json::from_slice(&std::fs::read(&timings).unwrap()).unwrap();
        duckdb_ms.insert(name.clone(), timed[&name]["median_ms"].as_f64().unwrap());
    }

    let compared = std::process::Command::new(support::python())
        .args([analyst::SUITE_PY, "compare", "--suite", analyst::SUITE])
        .arg("--expected")
        .arg(&expected)
        .arg("--actual")
        .arg(&actual)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&compared.stdout);
    let verdict = report.lines().last().unwrap_or_default().to_string();

    println!(
        "\n{rows} notifications, {} Parquet files, {} MB; {repeat} timed runs each, medians; answers: {verdict}\n",
        files.len(),
        bytes >> 20
    );
    println!("| query | Sluice ms | DuckDB ms | Sluice ÷ DuckDB |");
    println!("|---|---:|---:|---:|");
    let mut log_ratio = 0.0;
    let mut within = 0;
    let names: Vec<String> = analyst::suite().into_iter().map(|(n, _)| n).collect();
    for name in &names {
        let (ours, theirs) = (sluice_ms[name], duckdb_ms[name]);
        let ratio = ours / theirs;
        log_ratio += ratio.ln();
        within += usize::from(ratio <= 1.0);
        println!("| {name} | {ours:.1} | {theirs:.1} | {ratio:.2} |");
    }
    println!(
        "\ngeometric mean Sluice ÷ DuckDB: {:.2}; {within} of {} queries at or under 1.0×",
        (log_ratio / names.len() as f64).exp(),
        names.len()
    );
    assert!(compared.status.success(), "{report}");
}
