//! The analyst workload shared by the read-path tests and the query benchmark: generated
//! notifications written straight into a replica table, and the SQL suite of
//! `tests/analyst_suite.sql` run through Sluice's query API and, as the peer, through DuckDB on
//! the same Parquet files (`tests/analyst_suite.py`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sluice_consumer::replica::Replica;
use sluice_consumer::schema::to_record_batch;
use sluice_core::Notification;
use sluice_core::segment::{Segment, SegmentHeader};

pub(crate) const SUITE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/analyst_suite.sql");
pub(crate) const SUITE_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/analyst_suite.py");

/// Rows per generated batch (one batch = one producer sequence, as a publisher segment would be).
pub(crate) const BATCH_ROWS: usize = 10_000;

const MICROS_PER_SEC: i64 = 1_000_000;
/// 2026-11-14T00:00:00Z: the generated events spread over the ten days after it.
const START_MICROS: i64 = 1_794_614_400 * MICROS_PER_SEC;

/// Notification batch `batch` of a deterministic analyst workload: skewed platforms, types,
/// tags and posts, nulls in the optional fields, ten days of event times.
pub(crate) fn generated_batch(batch: u64) -> Vec<Notification> {
    let mut rng = StdRng::seed_from_u64(batch);
    let platforms = [
        "mastodon", "mastodon", "bsky", "bsky", "bsky", "threads", "lemmy",
    ];
    let types = [
        "post.liked",
        "post.liked",
        "post.liked",
        "post.shared",
        "post.commented",
        "post.commented",
        "post.created",
        "post.edited",
        "post.deleted",
    ];
    let langs = ["en", "en", "en", "de", "fr", "es", "ja"];
    let clients = ["web", "ios", "android"];
    (0..BATCH_ROWS)
        .map(|row| {
            let skewed = |rng: &mut StdRng, n: f64| (rng.random::<f64>().powi(3) * n) as u64;
            let occurred_at = START_MICROS + rng.random_range(0..10 * 86_400 * MICROS_PER_SEC);
            let lag = if rng.random_ratio(1, 100) {
                rng.random_range(0..3_600 * MICROS_PER_SEC)
            } else {
                rng.random_range(0..30 * MICROS_PER_SEC)
            };
            let mut metrics = BTreeMap::new();
            if rng.random_ratio(9, 10) {
                metrics.insert("likes".to_string(), skewed(&mut rng, 5_000.0) as i64);
            }
            if rng.random_ratio(1, 2) {
                metrics.insert("shares".to_string(), rng.random_range(0..300));
            }
            Notification {
                platform: platforms[rng.random_range(0..platforms.len())].to_string(),
                id: format!("g{batch}-{row}"),
                kind: types[rng.random_range(0..types.len())].to_string(),
                occurred_at,
                received_at: occurred_at + lag,
                post_id: Some(format!("post{}", skewed(&mut rng, 100_000.0))),
                author_id: Some(format!("u{}", skewed(&mut rng, 50_000.0))),
                actor_id: rng
                    .random_ratio(4, 5)
                    .then(|| format!("u{}", rng.random_range(0..100_000))),
                text: rng
                    .random_ratio(1, 3)
                    .then(|| format!("words {} and more", rng.random_range(0..10_000))),
                lang: rng
                    .random_ratio(9, 10)
                    .then(|| langs[rng.random_range(0..langs.len())].to_string()),
                tags: (0..rng.random_range(0..5))
                    .map(|_| format!("tag{}", skewed(&mut rng, 300.0)))
                    .collect(),
                metrics,
                attributes: rng.random_ratio(3, 4).then(|| {
                    json!({"client": clients[rng.random_range(0..clients.len())],
                           "v": rng.random_range(1..9)})
                    .to_string()
                }),
            }
        })
        .collect()
}

/// Appends generated batches `batches` to the replica, `per_commit` batches per Delta commit,
/// as producer `producer` with sequences equal to the batch numbers.
pub(crate) async fn load(
    replica: &mut Replica,
    producer: &str,
    batches: std::ops::Range<u64>,
    per_commit: usize,
) {
    let all: Vec<u64> = batches.collect();
    for chunk in all.chunks(per_commit) {
        let segments: Vec<Segment> = chunk
            .iter()
            .map(|&b| {
                let records = generated_batch(b);
                Segment {
                    header: SegmentHeader {
                        producer: producer.to_string(),
                        sequence: b,
                        rows: records.len() as u64,
                        crc32c: 0,
                    },
                    records,
                }
            })
            .collect();
        let batch = to_record_batch(&segments).unwrap();
        let last = BTreeMap::from([(producer.to_string(), *chunk.last().unwrap())]);
        replica
            .append(vec![batch], &last, &sluice_consumer::lease::Fence::sole())
            .await
            .unwrap();
    }
}

/// The benchmarks' table: generated batches `1..=batches` in a new Delta table at `table_dir`,
/// committed 20 batches (200,000 rows) at a time by the consumer's own code and then compacted
/// as the consumer's maintenance leaves closed days.
#[allow(dead_code)] // for benches/query.rs and benches/lookup.rs, which include this file
pub(crate) async fn compacted_table(table_dir: &Path, batches: u64) -> Replica {
    let replica = new_table(table_dir, batches, 20).await;
    // Every generated day is closed the day after the ten: compact them all as the consumer's
    // maintenance does.
    let (replica, report) = maintained(replica, first_day() + chrono::Days::new(10)).await;
    assert_eq!(report.open_files_removed, 0, "{report:?}");
    replica
}

/// The day of the first generated event.
#[allow(dead_code)] // for compacted_table and rounds_table, the benchmarks' tables
fn first_day() -> chrono::NaiveDate {
    chrono::DateTime::from_timestamp_micros(START_MICROS)
        .unwrap()
        .date_naive()
}

/// The table as replication leaves open days: generated batches `1..=batches` in a new Delta
/// table at `table_dir`, a commit per batch (10,000 rows, a file per day it touches); then, with
/// `open_pass`, compacted as the consumer's maintenance compacts open days (every generated
/// day is today or later), else left as written.
#[allow(dead_code)] // for benches/query.rs, which includes this file
pub(crate) async fn rounds_table(table_dir: &Path, batches: u64, open_pass: bool) -> Replica {
    let replica = new_table(table_dir, batches, 1).await;
    if !open_pass {
        return replica;
    }
    let (replica, report) = maintained(replica, first_day()).await;
    assert_eq!(report.files_removed, 0, "{report:?}");
    replica
}

/// Generated batches `1..=batches` in a new Delta table at `table_dir`, `per_commit` a commit.
#[allow(dead_code)] // for compacted_table and rounds_table, the benchmarks' tables
async fn new_table(table_dir: &Path, batches: u64, per_commit: usize) -> Replica {
    std::fs::create_dir_all(table_dir).unwrap();
    let url = url::Url::from_directory_path(table_dir).unwrap();
    let mut replica = Replica::open_or_create(url, Default::default())
        .await
        .unwrap();
    load(&mut replica, "generated", 1..batches + 1, per_commit).await;
    replica
}

/// `replica` after a pass of the consumer's maintenance on every core, as on `today`.
#[allow(dead_code)] // for compacted_table and rounds_table, the benchmarks' tables
async fn maintained(
    replica: Replica,
    today: chrono::NaiveDate,
) -> (Replica, sluice_consumer::maintenance::MaintenanceReport) {
    let maintenance = sluice_consumer::Config::for_tests()
        .maintenance()
        .on_every_core();
    let (table, report) = sluice_consumer::maintenance::maintain(
        replica.table().clone(),
        &maintenance,
        today,
        &sluice_consumer::lease::Fence::sole(),
    )
    .await
    .unwrap();
    let replica = Replica::open_or_create(table.table_url().clone(), Default::default())
        .await
        .unwrap();
    (replica, report)
}

/// The suite's queries, `(name, sql)`, in file order.
pub(crate) fn suite() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(SUITE).unwrap();
    let mut queries: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("-- query:") {
            queries.push((name.trim().to_string(), String::new()));
        } else if let Some((_, sql)) = queries.last_mut()
            && !trimmed.starts_with("-- tolerance:")
        {
            sql.push_str(line);
            sql.push('\n');
        }
    }
    for (_, sql) in &mut queries {
        *sql = sql.trim().trim_end_matches(';').to_string();
    }
    queries
}

/// POSTs one query to the query API; returns the status and the JSON answer.
pub(crate) async fn query(
    client: &reqwest::Client,
    api: SocketAddr,
    body: Value,
) -> (reqwest::StatusCode, Value) {
    let response = client
        .post(format!("http://{api}/v1/query"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A query API answer as the comparers read it: `{"columns": [names], "rows": [...]}`.
pub(crate) fn columns_and_rows(answer: &Value) -> Value {
    let columns: Vec<Value> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    json!({"columns": columns, "rows": answer["rows"]})
}

/// Runs every suite query through the query API: `{name: {"columns": [names], "rows": [...]}}`
/// as `analyst_suite.py compare` reads it, and each answer's server-side milliseconds.
pub(crate) async fn run_suite(api: SocketAddr) -> (Value, BTreeMap<String, f64>) {
    let (results, answers) = suite_answers(api).await;
    let elapsed = answers
        .into_iter()
        .map(|(name, answer)| (name, answer["elapsed_ms"].as_f64().unwrap()))
        .collect();
    (results, elapsed)
}

/// [`run_suite`]'s results, and each query's whole answer by name, in suite order.
pub(crate) async fn suite_answers(api: SocketAddr) -> (Value, Vec<(String, Value)>) {
    let client = crate::support::client();
    let mut results = serde_json::Map::new();
    let mut answers = Vec::new();
    for (name, sql) in suite() {
        let (status, answer) = query(&client, api, json!({"sql": sql})).await;
        assert!(status.is_success(), "{name}: {status} {answer}");
        results.insert(name.clone(), columns_and_rows(&answer));
        answers.push((name, answer));
    }
    (Value::Object(results), answers)
}

/// DuckDB's answers to the suite over `files` (`analyst_suite.py run`), written into `dir`;
/// returns their path.
#[allow(dead_code)] // for benches/query.rs; the other benchmarks that include this file ask no DuckDB
pub(crate) fn duckdb_suite(dir: &Path, files: &[PathBuf]) -> PathBuf {
    let list = file_list(dir, files);
    let expected = dir.join("duckdb.json");
    crate::support::run_python([
        SUITE_PY,
        "run",
        "--files",
        list.to_str().unwrap(),
        "--suite",
        SUITE,
        "--out",
        expected.to_str().unwrap(),
    ]);
    expected
}

/// Compares `actual` (a suite run, written into `dir` as `{label}.json`) with the answers at
/// `expected` (`analyst_suite.py compare`); panics with the comparer's report unless every
/// query of the suite matches.
#[allow(dead_code)] // for the tests and benches/query.rs; benches/lookup.rs and distributed.rs ask no DuckDB
pub(crate) fn assert_suite_matches(dir: &Path, label: &str, expected: &Path, actual: &Value) {
    let path = dir.join(format!("{label}.json"));
    std::fs::write(&path, actual.to_string()).unwrap();
    let compared = std::process::Command::new(crate::support::python())
        .args([SUITE_PY, "compare", "--expected"])
        .arg(expected)
        .arg("--actual")
        .arg(&path)
        .args(["--suite", SUITE])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&compared.stdout);
    let queries = suite().len();
    assert!(queries >= 10);
    assert!(
        compared.status.success()
            && report.contains(&format!("suite: {queries} queries, 0 mismatches")),
        "{label}: {report}\n{}",
        String::from_utf8_lossy(&compared.stderr)
    );
}

/// The local paths of the Parquet files the table's current version reads. A table in S3 is
/// found under `bucket_dir`, the directory that holds the bucket (s3s-fs keeps objects as files).
pub(crate) fn live_files(replica: &Replica, bucket_dir: &Path, bucket: &str) -> Vec<PathBuf> {
    replica
        .table()
        .get_file_uris()
        .unwrap()
        .map(|uri| match uri.strip_prefix("s3://") {
            Some(object) => {
                let key = object
                    .strip_prefix(&format!("{bucket}/"))
                    .unwrap_or_else(|| panic!("{uri} is not in bucket {bucket}"));
                bucket_dir.join(key)
            }
            None => PathBuf::from(uri.strip_prefix("file://").unwrap_or(&uri)),
        })
        .collect()
}

/// Writes `files` one per line into `dir` and returns the list's path, for analyst_suite.py.
pub(crate) fn file_list(dir: &Path, files: &[PathBuf]) -> PathBuf {
    let list = dir.join("files.txt");
    let text: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    std::fs::write(&list, text.join("\n")).unwrap();
    list
}
