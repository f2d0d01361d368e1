//! Distributed queries: the analyst suite's slowest queries on 1, 2 and 3 query handlers that
//! run them together (docs/distributed.md), as ratios to one handler, in one run.
//!
//! ```sh
//! cargo bench --bench distributed              # 10,000,000 generated notifications
//! cargo bench --bench distributed -- quick     # 2,000,000
//! BENCH_REPEAT=7 cargo bench --bench distributed   # timed runs per query (default 5)
//! BENCH_SLOWEST=6 cargo bench --bench distributed  # how many of the slowest queries (default 5)
//! ```
//!
//! The replica is a Delta table on local disk (`file://`), written and compacted by the
//! consumer's own code as in `benches/query.rs`. Each step starts `n` release `sluice
//! query-handler` processes over it, each listing the step's handlers in `SLUICE_QUERY_WORKERS`
//! (none for one), with the result cache off, and a query API that sends every query to the
//! first, which coordinates. With more than one handler, every query over at least
//! `BENCH_MIN_BYTES` (1 by default: all of them) is distributed in tasks of
//! `BENCH_BYTES_PER_TASK` (32 MiB by default). The one-handler step picks the suite's slowest
//! queries; every step answers each once to warm up and then `BENCH_REPEAT` times; the time is
//! the coordinator's (`elapsed_ms`). Reported: each query's median per step and its ratio to
//! one handler, and how many handlers ran tasks. Results go to `bench/README.md`.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

#[allow(dead_code)]
#[path = "../tests/it/analyst.rs"]
mod analyst;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Sluice, free_addr, wait_for_port};

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One step's processes: `n` handlers and a query API asking the first.
struct Step {
    _processes: Vec<Sluice>,
    api: SocketAddr,
}

async fn start(dir: &std::path::Path, n: usize) -> Step {
    let handlers: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
    let api = free_addr();
    let mut env: Vec<(String, String)> = [
        (
            "SLUICE_STORAGE",
            format!("file://{}", dir.join("data").display()),
        ),
        ("SLUICE_QUERY_ADDR", api.to_string()),
        ("SLUICE_CACHE_BYTES", "0".to_string()),
        ("SLUICE_QUERY_TIMEOUT_MS", "600000".to_string()),
        (
            "SLUICE_DISTRIBUTE_MIN_BYTES",
            setting("BENCH_MIN_BYTES", "1"),
        ),
        (
            "SLUICE_DISTRIBUTE_BYTES_PER_TASK",
            setting("BENCH_BYTES_PER_TASK", &(32u64 << 20).to_string()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .chain(support::auth_env())
    .collect();
    if n > 1 {
        let list: Vec<String> = handlers.iter().map(ToString::to_string).collect();
        env.push(("SLUICE_QUERY_WORKERS".into(), list.join(",")));
    }
    let mut processes = Vec::new();
    for (i, addr) in handlers.iter().enumerate() {
        let mut env = env.clone();
        env.push(("SLUICE_QUERY_HANDLER_ADDR".into(), addr.to_string()));
        processes.push(Sluice::spawn(
            &["query-handler"],
            &env,
            dir,
            &format!("query-handler-{n}-{i}"),
        ));
    }
    let mut api_env = env.clone();
    api_env.push(("SLUICE_QUERY_HANDLER_ADDR".into(), handlers[0].to_string()));
    let api_process = Sluice::spawn(&["query-api"], &api_env, dir, &format!("query-api-{n}"));
    for (addr, process) in handlers.iter().zip(&processes) {
        wait_for_port(*addr, process).await;
    }
    wait_for_port(api, &api_process).await;
    processes.push(api_process);
    let client = support::client();
    let deadline = Instant::now() + Duration::from_secs(120);
    // Ready when a scan runs on every handler of the step (each loads the table first).
    for attempt in 0.. {
        let sql = format!(
            "SELECT platform, count(*) AS n, {attempt} AS a FROM notifications GROUP BY platform"
        );
        let (status, answer) = analyst::query(&client, api, json!({"sql": sql})).await;
        let workers = answer["distributed"]["workers"]
            .as_array()
            .map_or(1, Vec::len);
        if status.is_success() && (n == 1 || workers == n) {
            break;
        }
        assert!(Instant::now() < deadline, "step {n} never ready: {answer}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Step {
        _processes: processes,
        api,
    }
}

/// Answers `sql` once: the coordinator's milliseconds and the handlers that ran tasks.
async fn timed(api: SocketAddr, name: &str, sql: &str) -> (f64, usize) {
    let client = support::client();
    let (status, answer) = analyst::query(&client, api, json!({"sql": sql})).await;
    assert!(status.is_success(), "{name}: {status} {answer}");
    let workers = answer["distributed"]["workers"]
        .as_array()
        .map_or(1, Vec::len);
    (answer["elapsed_ms"].as_f64().unwrap(), workers)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let batches: u64 = if quick { 200 } else { 1_000 };
    let repeat: usize = setting("BENCH_REPEAT", "5").parse().unwrap();
    let slowest: usize = setting("BENCH_SLOWEST", "5").parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let replica = analyst::compacted_table(&dir.path().join("data/replica"), batches).await;
    let files = analyst::live_files(&replica, dir.path(), "");
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    eprintln!(
        "{} rows in {} files ({} MB) after {:?}",
        batches as usize * analyst::BATCH_ROWS,
        files.len(),
        bytes >> 20,
        started.elapsed()
    );
    let suite = analyst::suite();

    // One handler picks the slowest queries (one run each, after a warm-up).
    let one = start(dir.path(), 1).await;
    let mut first: Vec<(f64, String, String)> = Vec::new();
    for (name, sql) in &suite {
        timed(one.api, name, sql).await;
        let (ms, _) = timed(one.api, name, sql).await;
        first.push((ms, name.clone(), sql.clone()));
    }
    drop(one);
    first.sort_by(|a, b| b.0.total_cmp(&a.0));
    let chosen: Vec<(String, String)> = first
        .into_iter()
        .take(slowest)
        .map(|(_, name, sql)| (name, sql))
        .collect();

    let mut medians: BTreeMap<(String, usize), (f64, usize)> = BTreeMap::new();
    for n in [1, 2, 3] {
        let step = start(dir.path(), n).await;
        for (name, sql) in &chosen {
            timed(step.api, name, sql).await;
            let mut times = Vec::new();
            let mut ran_on = 0;
            for _ in 0..repeat {
                let (ms, workers) = timed(step.api, name, sql).await;
                times.push(ms);
                ran_on = ran_on.max(workers);
            }
            medians.insert((name.clone(), n), (median(&mut times), ran_on));
        }
    }

    println!("| query | 1 handler (ms) | 2 handlers (ms) | ratio | 3 handlers (ms) | ratio |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, _) in &chosen {
        let (one, _) = medians[&(name.clone(), 1)];
        let (two, on2) = medians[&(name.clone(), 2)];
        let (three, on3) = medians[&(name.clone(), 3)];
        println!(
            "| {name} | {one:.0} | {two:.0} (on {on2}) | {:.2} | {three:.0} (on {on3}) | {:.2} |",
            two / one,
            three / one
        );
    }
    let total = |n: usize| -> f64 {
        chosen
            .iter()
            .map(|(name, _)| medians[&(name.clone(), n)].0)
            .sum()
    };
    println!(
        "| all {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
        chosen.len(),
        total(1),
        total(2),
        total(2) / total(1),
        total(3),
        total(3) / total(1)
    );
}
