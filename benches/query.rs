//! The query benchmark: the analyst suite (`tests/analyst_suite.sql`) on Sluice's query handler
//! against DuckDB over the same Parquet files, in one run, as ratios.
//!
//! ```sh
//! cargo bench --bench query                # 5,000,000 generated notifications
//! cargo bench --bench query -- quick       # 1,000,000
//! BENCH_REPEAT=9 cargo bench --bench query # timed runs per query (default 5)
//! BENCH_KEEP=1 cargo bench --bench query    # keep the generated table (its path is printed)
//! BENCH_LAYOUT=rounds cargo bench --bench query -- quick  # a file per commit and day, as
//!                                                         # replication leaves an open day
//! BENCH_LAYOUT=open cargo bench --bench query -- quick    # the same after the open-day pass
//! BENCH_RULES=0 cargo bench --bench query  # the suite against DuckDB only, not each rule off
//! ```
//!
//! The replica is a Delta table on local disk (`file://`), written by the consumer's own code in
//! commits of 200,000 rows and then compacted by the consumer's maintenance (at its default
//! archival zstd level), as it leaves closed days. A release `sluice query-handler` with the result
//! cache off (`SLUICE_CACHE_BYTES=0`) answers each query once to warm up and then `BENCH_REPEAT`
//! times; the time is the handler's own (`elapsed_ms`: planning, execution, encoding). DuckDB
//! (`tests/analyst_suite.py serve`, the pinned duckdb, every core) reads the table's live Parquet
//! files with the same SQL, warmed up the same way; its time is `execute` + `fetchall`. Each
//! timed pass of Sluice over the suite is followed by one of DuckDB. Both answers are also
//! compared. Results go to `bench/README.md`.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/it/analyst.rs"]
mod analyst;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
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
    let started = Instant::now();
    let table_dir = dir.path().join("data/replica");
    let layout = std::env::var("BENCH_LAYOUT").unwrap_or_else(|_| "closed".to_string());
    let replica = match layout.as_str() {
        "closed" => analyst::compacted_table(&table_dir, batches).await,
        "rounds" => analyst::rounds_table(&table_dir, batches, false).await,
        "open" => analyst::rounds_table(&table_dir, batches, true).await,
        other => panic!("BENCH_LAYOUT={other}: closed, rounds or open"),
    };
    let rows = batches as usize * analyst::BATCH_ROWS;
    let files = analyst::live_files(&replica, dir.path(), "");
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    eprintln!(
        "{rows} rows in {} files ({} MB) after {:?}",
        files.len(),
        bytes >> 20,
        started.elapsed()
    );

    let started_read = |extra: &[(&str, &str)]| {
        let (handler_addr, api) = (free_addr(), free_addr());
        let mut env = read_env(dir.path(), handler_addr, api);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let handler = Sluice::spawn(&["query-handler"], &env, dir.path(), "query-handler");
        let api_process = Sluice::spawn(&["query-api"], &env, dir.path(), "query-api");
        (handler, api_process, handler_addr, api)
    };
    let (handler, api_process, handler_addr, api) = started_read(&[]);
    wait_until_ready(&handler, &api_process, handler_addr, api).await;
    // DuckDB in a process of its own over the same files, warmed up, which times one pass over
    // the suite whenever it is asked.
    let list = analyst::file_list(dir.path(), &files);
    let mut duckdb = std::process::Command::new(support::python())
        .args([analyst::SUITE_PY, "serve", "--files"])
        .arg(&list)
        .args(["--suite", analyst::SUITE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_duckdb = duckdb.stdin.take().unwrap();
    let mut from_duckdb = BufReader::new(duckdb.stdout.take().unwrap()).lines();
    assert_eq!(from_duckdb.next().unwrap().unwrap(), "ready");

    // Sluice: a warm-up pass (whose answers are compared with DuckDB's). Then each timed pass
    // of Sluice is followed by one of DuckDB, so both see the same spells of this noisy
    // machine; before, all of Sluice's passes ran first and a slow spell fell on one side.
    let (answers, _) = analyst::run_suite(api).await;
    let actual = dir.path().join("sluice.json");
    std::fs::write(&actual, answers.to_string()).unwrap();
    let mut sluice_ms: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut duckdb_ms: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for _ in 0..repeat {
        let (_, elapsed) = analyst::run_suite(api).await;
        for (name, ms) in elapsed {
            sluice_ms.entry(name).or_default().push(ms);
        }
        writeln!(to_duckdb, "pass").unwrap();
        to_duckdb.flush().unwrap();
        let pass: BTreeMap<String, f64> =
            serde_json::from_str(&from_duckdb.next().unwrap().unwrap()).unwrap();
        for (name, ms) in pass {
            duckdb_ms.entry(name).or_default().push(ms);
        }
    }
    drop(to_duckdb);
    assert!(duckdb.wait().unwrap().success());

    let expected = analyst::duckdb_suite(dir.path(), &files);
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
        "\n{rows} notifications, {} Parquet files ({layout}), {} MB; {repeat} timed runs each, medians; answers: {verdict}\n",
        files.len(),
        bytes >> 20
    );
    println!("| query | Sluice ms | DuckDB ms | Sluice ÷ DuckDB |");
    println!("|---|---:|---:|---:|");
    let mut log_ratio = 0.0;
    let mut within = 0;
    let names: Vec<String> = analyst::suite().into_iter().map(|(n, _)| n).collect();
    for name in &names {
        let ours = median(sluice_ms.get_mut(name).unwrap());
        let theirs = median(duckdb_ms.get_mut(name).unwrap());
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
    if std::env::var("BENCH_RULES").is_ok_and(|rules| rules == "0") {
        return;
    }

    // What each rule of the handler buys: handlers with one rule off, and with every rule off,
    // each pass followed by one of the handler with all of them on.
    let all_on: BTreeMap<String, f64> = names
        .iter()
        .map(|name| (name.clone(), median(sluice_ms.get_mut(name).unwrap())))
        .collect();
    let rules = sluice_query_handler::rules::RuleSwitches::names();
    let mut configurations = vec![("every rule off".to_string(), rules.join(","))];
    configurations.extend(
        rules
            .iter()
            .map(|rule| (format!("{rule} off"), rule.clone())),
    );
    println!("\n| rules | geometric mean ÷ all on | most changed query (÷ all on) | ÷ DuckDB |");
    println!("|---|---:|---|---:|");
    let mut every_rule_off = BTreeMap::new();
    for (label, off) in configurations {
        let (handler_off, api_off_process, handler_off_addr, api_off) =
            started_read(&[("SLUICE_QUERY_RULES_OFF", off.as_str())]);
        wait_until_ready(&handler_off, &api_off_process, handler_off_addr, api_off).await;
        // The same answers, to the suite's tolerances (floats sum in another order, and an
        // approximate percentile merges its partitions' digests as they finish).
        let (answers_off, _) = analyst::run_suite(api_off).await;
        analyst::assert_suite_matches(dir.path(), &label, &actual, &answers_off);
        let mut off_ms: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut on_ms: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for _ in 0..repeat {
            for (api, times) in [(api_off, &mut off_ms), (api, &mut on_ms)] {
                let (_, elapsed) = analyst::run_suite(api).await;
                for (name, ms) in elapsed {
                    times.entry(name).or_default().push(ms);
                }
            }
        }
        let mut log_ratio = 0.0;
        let mut log_duckdb = 0.0;
        let mut most = (String::new(), 1.0f64);
        for name in &names {
            let ours = median(off_ms.get_mut(name).unwrap());
            let on = median(on_ms.get_mut(name).unwrap());
            let ratio = ours / on;
            log_ratio += ratio.ln();
            log_duckdb += (ours / median(duckdb_ms.get_mut(name).unwrap())).ln();
            if (ratio.ln()).abs() > most.1.ln().abs() {
                most = (name.clone(), ratio);
            }
            if label == "every rule off" {
                every_rule_off.insert(name.clone(), ours);
            }
        }
        let count = names.len() as f64;
        println!(
            "| {label} | {:.2} | {} ({:.2}) | {:.2} |",
            (log_ratio / count).exp(),
            most.0,
            most.1,
            (log_duckdb / count).exp()
        );
    }
    println!("\nEvery rule off, per query:\n");
    println!("| query | all on ms | every rule off ms | off ÷ on | off ÷ DuckDB |");
    println!("|---|---:|---:|---:|---:|");
    for name in &names {
        let (on, off) = (all_on[name], every_rule_off[name]);
        let theirs = median(duckdb_ms.get_mut(name).unwrap());
        println!(
            "| {name} | {on:.1} | {off:.1} | {:.2} | {:.2} |",
            off / on,
            off / theirs
        );
    }
}

/// The environment of a read side (query handler and query API) over the table in `dir`.
fn read_env(dir: &std::path::Path, handler: SocketAddr, api: SocketAddr) -> Vec<(String, String)> {
    [
        (
            "SLUICE_STORAGE",
            format!("file://{}", dir.join("data").display()),
        ),
        ("SLUICE_QUERY_HANDLER_ADDR", handler.to_string()),
        ("SLUICE_QUERY_ADDR", api.to_string()),
        ("SLUICE_CACHE_BYTES", "0".to_string()),
        ("SLUICE_QUERY_TIMEOUT_MS", "600000".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(support::auth_env())
    .collect()
}

/// Waits until the query API answers through the handler (which loads the table first).
async fn wait_until_ready(
    handler: &Sluice,
    api_process: &Sluice,
    handler_addr: SocketAddr,
    api: SocketAddr,
) {
    wait_for_port(handler_addr, handler).await;
    wait_for_port(api, api_process).await;
    let client = support::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !analyst::query(&client, api, json!({"sql": "SELECT 1 AS one"}))
        .await
        .0
        .is_success()
    {
        assert!(Instant::now() < deadline, "{}", handler.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
