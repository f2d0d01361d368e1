//! Distributed queries (docs/distributed.md): three real `sluice query-handler` processes over
//! one replica on a real S3 server run big queries together through `datafusion-distributed`,
//! each a worker of the others, the first coordinating the queries the query API sends it.
//!
//! - The analyst suite run across the three gives the answers of one handler alone and of
//!   DuckDB on the same Parquet files, and its answers name the stages and the handlers that
//!   ran them (more than one).
//! - A handler killed (kill -9) in the middle of a distributed query fails that query with a
//!   clear, retryable 503 well within the query's timeout; the next query runs on the two left.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_consumer::replica::Replica;

use crate::analyst::{assert_suite_matches, duckdb_suite, live_files, load, query, suite_answers};
use crate::read_path::{start_read_side, start_read_side_on};
use crate::support::{BUCKET, S3Server};

/// Every query over the replica is big enough to distribute, in tasks of 256 KiB of files.
const DISTRIBUTE_EVERYTHING: [(&str, &str); 3] = [
    ("SLUICE_DISTRIBUTE_MIN_BYTES", "1"),
    ("SLUICE_DISTRIBUTE_BYTES_PER_TASK", "262144"),
    ("SLUICE_QUERY_TIMEOUT_MS", "300000"),
];

async fn replica_on(s3: &S3Server) -> Replica {
    let (url, options) = s3.table("replica");
    Replica::open_or_create(url, options).await.unwrap()
}

/// The workers a query's answer says ran its stages.
fn workers_of(answer: &Value) -> Vec<String> {
    answer["distributed"]["workers"]
        .as_array()
        .map(|w| w.iter().map(|u| u.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Counts the notifications per platform until the answer ran on more than one handler: a
/// handler that has not loaded the replica yet cannot take a task, and the query then runs on
/// the coordinator alone. Each try's SQL differs, so that none is a cache hit.
async fn until_distributed(api: std::net::SocketAddr) -> (Value, String) {
    let client = crate::support::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    for attempt in 0.. {
        let sql = by_platform(attempt);
        let (status, answer) = query(&client, api, json!({"sql": sql})).await;
        assert!(status.is_success(), "{status} {answer}");
        if workers_of(&answer).len() > 1 {
            return (answer, sql);
        }
        assert!(
            Instant::now() < deadline,
            "the query never ran on more than one handler: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    unreachable!()
}

/// Notifications per platform (a scan of every file: `platform` is no partition column), with
/// `attempt` in the SQL so that it is not the cache's answer of another attempt.
fn by_platform(attempt: usize) -> String {
    format!(
        "SELECT platform, count(*) AS n, {attempt} AS attempt FROM notifications GROUP BY platform"
    )
}

/// The notifications an answer of [`by_platform`] counts.
fn total(answer: &Value) -> u64 {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[1].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_handlers_answer_the_analyst_suite_as_one_handler_and_duckdb_do() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let mut replica = replica_on(&s3).await;
    load(&mut replica, "generated", 1..31, 5).await;

    let dir = tempfile::tempdir().unwrap();
    let together = start_read_side_on(&s3, dir.path(), &DISTRIBUTE_EVERYTHING, 3).await;
    let alone_dir = tempfile::tempdir().unwrap();
    let alone = start_read_side(
        &s3,
        alone_dir.path(),
        &[("SLUICE_QUERY_TIMEOUT_MS", "300000")],
    )
    .await;
    let (first, first_sql) = until_distributed(together.api).await;
    assert_eq!(total(&first), 300_000, "{first}");
    assert!(
        first["distributed"]["stages"].as_u64().unwrap() >= 2,
        "{first}"
    );

    // The cache and the limits hold as for a local query: a repeat is the cache's answer, and
    // a result over the row limit is refused.
    let client = crate::support::client();
    let (_, again) = query(&client, together.api, json!({"sql": first_sql})).await;
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!(again["rows"], first["rows"]);
    let (status, refused) = query(
        &client,
        together.api,
        json!({"sql": "SELECT id FROM notifications WHERE platform <> 'none'"}),
    )
    .await;
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().contains("more than"),
        "{refused}"
    );

    let (distributed, answers) = suite_answers(together.api).await;
    let (local, local_answers) = suite_answers(alone.api).await;
    assert!(
        local_answers
            .iter()
            .all(|(_, a)| a.get("distributed").is_none()),
        "a handler without workers ran a query distributed"
    );
    let spread: Vec<&String> = answers
        .iter()
        .filter(|(_, answer)| workers_of(answer).len() > 1)
        .map(|(name, _)| name)
        .collect();
    assert!(
        spread.len() * 2 >= answers.len(),
        "most of the suite runs on more than one handler; only {spread:?} did:\n{:#?}",
        answers
            .iter()
            .map(|(name, answer)| (name, &answer["distributed"]))
            .collect::<Vec<_>>()
    );

    // DuckDB reads the Parquet files of the table's current version from the bucket's
    // directory on disk.
    let files = live_files(&replica, &s3.bucket_dir(BUCKET), BUCKET);
    let expected = duckdb_suite(dir.path(), &files);
    assert_suite_matches(dir.path(), "distributed", &expected, &distributed);
    assert_suite_matches(dir.path(), "local", &expected, &local);
    eprintln!(
        "distributed: {} of {} suite queries ran on more than one handler",
        spread.len(),
        answers.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_killed_mid_query_fails_that_query_with_a_503_and_the_next_runs_without_it() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let mut replica = replica_on(&s3).await;
    load(&mut replica, "generated", 1..21, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut read = start_read_side_on(&s3, dir.path(), &DISTRIBUTE_EVERYTHING, 3).await;
    let client = crate::support::client();
    until_distributed(read.api).await;

    // A query that runs for seconds across the three: every pair of a day's notifications
    // that share a type.
    let slow = "SELECT a.type, count(*) AS pairs FROM notifications a \
                JOIN notifications b ON a.type = b.type AND a.day = b.day \
                WHERE a.platform <> b.platform GROUP BY a.type ORDER BY a.type";
    let (status, detached) = query(&client, read.api, json!({"sql": slow, "async": true})).await;
    assert_eq!(status, 202, "{detached}");
    let id = detached["query_id"].as_str().unwrap().to_string();
    // The kill falls while the third handler sends tasks' answers to the coordinator.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = reqwest::get(format!("http://{}/metrics", read.handler_metrics[2]))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let streams = metrics
            .lines()
            .find_map(|line| line.strip_prefix("sluice_query_worker_streams "))
            .and_then(|value| value.trim().parse::<f64>().ok());
        if streams.is_some_and(|streams| streams > 0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the third handler never ran a task of the query: {streams:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let killed = Instant::now();
    read.handlers[2].kill9();

    let deadline = Instant::now() + Duration::from_secs(120);
    let failed = loop {
        let state = crate::support::get_json(&format!("http://{}/v1/queries/{id}", read.api)).await;
        if state["state"] != "yellow" {
            break state;
        }
        assert!(Instant::now() < deadline, "still yellow: {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = killed.elapsed();
    assert_eq!(failed["state"], "failed", "{failed}");
    assert_eq!(failed["error_code"], "Unavailable", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("a query handler that ran part of this query failed"),
        "{error}"
    );
    assert!(
        took < Duration::from_secs(60),
        "the query failed {took:?} after the kill"
    );

    // The next query runs, on the two handlers left.
    let (status, answer) = query(&client, read.api, json!({"sql": by_platform(1_000)})).await;
    assert!(
        status.is_success(),
        "{status} {answer}\n{}",
        read.handlers[0].log_text()
    );
    assert_eq!(total(&answer), 200_000, "{answer}");
    assert_eq!(workers_of(&answer).len(), 2, "{answer}");
    let killed_url = format!("http://{}/", read.handler_addrs[2]);
    assert!(
        !workers_of(&answer).contains(&killed_url),
        "the next query was sent to the killed handler: {answer}"
    );
    eprintln!("distributed: a killed worker failed its query {took:?} after the kill");
}
