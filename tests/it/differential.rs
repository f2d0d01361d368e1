//! Randomized differential testing of the read path: seeded analytic SQL (`tests/sqlgen.py`)
//! over a replica built to hold the edges every rewrite of the query handler meets (a day whose
//! optional columns are null on every row, a day with thousands of platforms and types, strings
//! with LIKE's wildcards, quotes and multi-byte characters, days no filter keeps), answered by
//!
//! - Sluice: the real `sluice query-handler` and `sluice query-api` processes over a real S3
//!   server, every rule on, asked for each answer as JSON, as Arrow and as CSV;
//! - plain DataFusion on delta-rs's table provider, in this process, without any of Sluice's
//!   rules;
//! - DuckDB on the same Parquet files (`tests/differential.py duckdb`).
//!
//! `tests/differential.py compare` compares them: Sluice must agree with DataFusion on every
//! query and with DuckDB on every query but those a documented dialect rule sets apart (its
//! `DIALECT_RULES`). The three formats of Sluice's answer must hold the same columns and values.
//!
//! The CI run is bounded (two fixed seeds); `differential_soak` is the long run, for any seed
//! (`SLUICE_DIFF_SEED`, `SLUICE_DIFF_QUERIES`), whose figures go in `bench/README.md`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{Array, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::ipc::reader::StreamReader;
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::prelude::SessionContext;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sluice_consumer::replica::Replica;
use sluice_consumer::schema::to_record_batch;
use sluice_core::Notification;
use sluice_core::segment::{Segment, SegmentHeader};

use crate::analyst::{columns_and_rows, file_list, live_files};
use crate::read_path::start_read_side_on;
use crate::support::{BUCKET, S3Server, python, run_python};

/// Failures of the handler's rules that are DataFusion's, not a rule's, where the handler
/// answers without its rules (`engine::execute`). Any other fallback fails the run: it is a
/// rule that breaks a query.
const KNOWN_FALLBACKS: [(&str, &str); 1] = [(
    "ORDER BY expressions must appear in argument list",
    "DataFusion 55 casts the argument of `string_agg(DISTINCT lang ORDER BY lang)` to a \
     string but not its ordering when `lang` is a dictionary, as the handler's scan reads it",
)];

const SQLGEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sqlgen.py");
const DIFFERENTIAL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/differential.py");

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;
/// 2026-11-10T00:00:00Z, the first of the table's twelve days.
const FIRST_DAY: i64 = 1_794_268_800 * MICROS_PER_SEC;
/// The day whose optional columns are null on every row (2026-11-12).
const NULL_DAY: i64 = 2;
/// The day with thousands of platforms and types (2026-11-15).
const WIDE_DAY: i64 = 5;

/// Strings that make LIKE, quoting and string views work: wildcards, quotes, the empty string,
/// multi-byte characters, and lengths on both sides of a view's 12 inline bytes.
const ODD_TEXTS: [&str; 9] = [
    "100% sure",
    "snake_case and more",
    "it's quoted",
    "",
    "café ß straße",
    "日本語のテキスト",
    "short",
    "exactly twelve",
    "a longer text with words, web and ios in it",
];

/// Notification `row` of commit `commit`: day `day` of the twelve.
fn notification(rng: &mut StdRng, commit: u64, row: usize, day: i64) -> Notification {
    let platforms = ["mastodon", "mastodon", "bsky", "bsky", "threads", "lemmy"];
    let types = [
        "post.created",
        "post.edited",
        "post.updated",
        "post.liked",
        "post.liked",
        "post.liked",
        "post.shared",
        "post.commented",
        "post.deleted",
        "post.restored",
    ];
    let langs = ["en", "en", "en", "de", "fr", "es", "ja"];
    let occurred_at = FIRST_DAY + day * MICROS_PER_DAY + rng.random_range(0..MICROS_PER_DAY);
    let lag = if rng.random_ratio(1, 50) {
        rng.random_range(0..3_600 * MICROS_PER_SEC)
    } else {
        rng.random_range(0..30 * MICROS_PER_SEC)
    };
    let skewed = |rng: &mut StdRng, n: f64| (rng.random::<f64>().powi(3) * n) as u64;
    let (platform, kind) = if day == WIDE_DAY {
        (
            format!("p{:04}", rng.random_range(0..3_000)),
            format!("kind.{}", rng.random_range(0..2_000)),
        )
    } else {
        (
            platforms[rng.random_range(0..platforms.len())].to_string(),
            types[rng.random_range(0..types.len())].to_string(),
        )
    };
    let mut n = Notification {
        platform,
        id: format!("d{commit}-{row}"),
        kind,
        occurred_at,
        received_at: occurred_at + lag,
        post_id: Some(format!("post{}", skewed(rng, 2_000.0))),
        author_id: Some(format!("u{}", skewed(rng, 500.0))),
        actor_id: rng
            .random_ratio(4, 5)
            .then(|| format!("u{}", rng.random_range(0..1_000))),
        text: rng.random_ratio(2, 3).then(|| {
            if rng.random_ratio(1, 3) {
                ODD_TEXTS[rng.random_range(0..ODD_TEXTS.len())].to_string()
            } else {
                format!("words {} and more", rng.random_range(0..500))
            }
        }),
        lang: rng
            .random_ratio(9, 10)
            .then(|| langs[rng.random_range(0..langs.len())].to_string()),
        tags: (0..rng.random_range(0..4))
            .map(|_| format!("tag{}", skewed(rng, 40.0)))
            .collect(),
        metrics: BTreeMap::new(),
        attributes: rng.random_ratio(3, 4).then(|| {
            let client = ["web", "ios", "android"][rng.random_range(0..3)];
            json!({"client": client, "v": rng.random_range(1..9)}).to_string()
        }),
    };
    if rng.random_ratio(9, 10) {
        n.metrics
            .insert("likes".into(), skewed(rng, 5_000.0) as i64);
    }
    if rng.random_ratio(1, 2) {
        n.metrics.insert("shares".into(), rng.random_range(0..300));
    }
    if rng.random_ratio(1, 5) {
        n.metrics.insert("replies".into(), rng.random_range(0..50));
    }
    if day == NULL_DAY {
        n.post_id = None;
        n.author_id = None;
        n.actor_id = None;
        n.text = None;
        n.lang = None;
        n.attributes = None;
        n.tags.clear();
        n.metrics.clear();
    }
    n
}

/// Writes the table: six commits of two producers, each commit a few hundred rows on every
/// day, so that every day has several files.
async fn load(replica: &mut Replica) -> usize {
    let mut rows = 0;
    for commit in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(commit);
        let producer = ["node-a-1", "node-b-1"][commit as usize % 2];
        let records: Vec<Notification> = (0..12 * 300)
            .map(|row| notification(&mut rng, commit, row, (row / 300) as i64))
            .collect();
        rows += records.len();
        let segment = Segment {
            header: SegmentHeader {
                producer: producer.to_string(),
                sequence: commit / 2 + 1,
                rows: records.len() as u64,
                crc32c: 0,
            },
            records,
        };
        let batch = to_record_batch(&[segment]).unwrap();
        let last = BTreeMap::from([(producer.to_string(), commit / 2 + 1)]);
        replica
            .append(vec![batch], &last, &sluice_consumer::lease::Fence::sole())
            .await
            .unwrap();
    }
    rows
}

/// The queries of a generated suite file: `(name, sql)`, in order.
fn queries_of(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut queries: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("-- query:") {
            queries.push((name.trim().to_string(), String::new()));
        } else if let Some((_, sql)) = queries.last_mut()
            && !(sql.is_empty() && trimmed.starts_with("--"))
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

/// `batches` as `{"columns": [...], "rows": [...]}`: each row an array in column order, values
/// as Arrow's JSON writer gives them (columns written under their positions, since names may
/// repeat).
fn as_json(schema: &Schema, batches: &[RecordBatch]) -> Value {
    let positions: Vec<String> = (0..schema.fields().len()).map(|i| i.to_string()).collect();
    let mut buffer = Vec::new();
    {
        let mut writer = deltalake::arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, deltalake::arrow::json::writer::JsonArray>(&mut buffer);
        for batch in batches {
            let renamed = Arc::new(Schema::new(
                batch
                    .schema()
                    .fields()
                    .iter()
                    .zip(&positions)
                    .map(|(f, p)| f.as_ref().clone().with_name(p))
                    .collect::<Vec<Field>>(),
            ));
            let batch = RecordBatch::try_new(renamed, batch.columns().to_vec()).unwrap();
            writer.write(&batch).unwrap();
        }
        writer.finish().unwrap();
    }
    let objects: Vec<serde_json::Map<String, Value>> = if buffer.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&buffer).unwrap()
    };
    let rows: Vec<Value> = objects
        .into_iter()
        .map(|mut o| {
            Value::Array(
                positions
                    .iter()
                    .map(|p| o.remove(p).unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect();
    let columns: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    json!({"columns": columns, "rows": rows})
}

/// Whether a column of `data_type` is one value per cell (CSV holds those).
fn flat(data_type: &DataType) -> bool {
    !data_type.is_nested()
}

/// Each cell of `batches` as Arrow's display shows it, row by row; None for a null.
fn cells(schema: &Schema, batches: &[RecordBatch]) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(column, f)| (!column.is_null(row)).then(|| f.value(row).to_string()))
                    .collect(),
            );
        }
    }
    debug_assert!(schema.fields().len() == rows.first().map_or(schema.fields().len(), Vec::len));
    rows
}

/// Checks that Sluice's Arrow and CSV answers to a query hold what its JSON answer holds.
/// Returns a description of the first difference.
fn formats_agree(json_answer: &Value, ipc: &[u8], csv: Option<&str>) -> Result<(), String> {
    let reader = StreamReader::try_new(ipc, None).map_err(|e| format!("arrow: {e}"))?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| format!("arrow: {e}"))?;
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let json_names: Vec<&str> = json_answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    if names != json_names {
        return Err(format!("arrow columns {names:?}, json {json_names:?}"));
    }
    let from_arrow = as_json(&schema, &batches);
    let (arrow_rows, json_rows) = (
        from_arrow["rows"].as_array().unwrap(),
        json_answer["rows"].as_array().unwrap(),
    );
    if arrow_rows.len() != json_rows.len() {
        return Err(format!(
            "arrow {} rows, json {}",
            arrow_rows.len(),
            json_rows.len()
        ));
    }
    if let Some((i, (a, j))) = arrow_rows
        .iter()
        .zip(json_rows)
        .enumerate()
        .find(|(_, (a, j))| !same_values(a, j))
    {
        return Err(format!("row {i}: arrow {}, json {}", short(a), short(j)));
    }
    // Arrow's CSV writer takes lists and maps too; a column it cannot write is a 422.
    let nested = schema.fields().iter().any(|f| !flat(f.data_type()));
    match (csv, nested) {
        (None, true) => Ok(()),
        (None, false) => Err("no CSV answer for a result of flat columns".into()),
        (Some(text), _) => {
            let expected = cells(&schema, &batches);
            let mut lines = csv_records(text).into_iter();
            let header = lines.next().unwrap_or_default();
            if header != names {
                return Err(format!("csv header {header:?}, columns {names:?}"));
            }
            let got: Vec<Vec<String>> = lines.collect();
            if got.len() != expected.len() {
                return Err(format!("csv {} rows, arrow {}", got.len(), expected.len()));
            }
            for (i, (got, expected)) in got.iter().zip(&expected).enumerate() {
                let expected: Vec<String> = expected
                    .iter()
                    .map(|c| c.clone().unwrap_or_default())
                    .collect();
                if *got != expected {
                    return Err(format!("csv row {i} {got:?}, arrow {expected:?}"));
                }
            }
            Ok(())
        }
    }
}

/// Whether two JSON values are equal, floats to their last two bits: an answer the cache could
/// not keep is computed again for the next format, and a float sum may then add in another
/// order.
fn same_values(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_values(a, b))
        }
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| same_values(v, w)))
        }
        (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
        }
        _ => a == b,
    }
}

/// The records of a CSV text (RFC 4180: quoted fields may hold commas, quotes and newlines).
fn csv_records(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut chars) = (false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 200 {
        format!("{}…", &text[..text.floor_char_boundary(200)])
    } else {
        text
    }
}

/// What one differential run found.
struct Figures {
    queries: usize,
    summary: String,
    seconds: f64,
}

/// Builds the table, generates `count` queries for each seed, runs them on the three engines
/// and compares; panics with the comparer's report when any query differs or errs. With
/// `handlers` above one, Sluice is that many query handlers that run every query they can
/// together (docs/distributed.md), and most answers must say they did.
async fn run_differential(seeds: &[u64], count: usize, handlers: usize) -> Figures {
    let started = Instant::now();
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let (url, options) = s3.table("replica");
    let mut replica = Replica::open_or_create(url, options).await.unwrap();
    let rows = load(&mut replica).await;
    let dir = tempfile::tempdir().unwrap();
    // The cache serves the Arrow and CSV answers of a query after its JSON one.
    let read = start_read_side_on(
        &s3,
        dir.path(),
        &[
            ("SLUICE_QUERY_MAX_RESULT_ROWS", "100000"),
            ("SLUICE_QUERY_TIMEOUT_MS", "120000"),
            // Every query over any file is distributed, in tasks of 64 KiB of files.
            ("SLUICE_DISTRIBUTE_MIN_BYTES", "1"),
            ("SLUICE_DISTRIBUTE_BYTES_PER_TASK", "65536"),
        ],
        handlers,
    )
    .await;
    let files = live_files(&replica, &s3.bucket_dir(BUCKET), BUCKET);
    let list = file_list(dir.path(), &files);
    eprintln!(
        "differential: {rows} notifications in {} files, ready after {:?}",
        files.len(),
        started.elapsed()
    );

    // Plain DataFusion, in this process, on delta-rs's provider. It reads the table's files
    // where the S3 server keeps them, on local disk: through the server, which runs in this
    // (debug) process too, each query took a second and a half.
    let local = url::Url::from_directory_path(s3.bucket_dir(BUCKET).join("replica")).unwrap();
    let table = deltalake::open_table(local).await.unwrap();
    let datafusion = SessionContext::new();
    datafusion
        .register_table("notifications", table.table_provider().await.unwrap())
        .unwrap();

    let client = crate::support::client();
    let mut queries = 0;
    let mut summaries = Vec::new();
    for &seed in seeds {
        let suite = dir.path().join(format!("queries-{seed}.sql"));
        run_python([
            SQLGEN,
            "--seed",
            &seed.to_string(),
            "--count",
            &count.to_string(),
            "--out",
            suite.to_str().unwrap(),
        ]);
        let generated = queries_of(&suite);
        assert_eq!(generated.len(), count, "{}", suite.display());
        queries += generated.len();

        let mut sluice = serde_json::Map::new();
        let mut plain = serde_json::Map::new();
        let mut format_problems = Vec::new();
        let mut fallbacks = Vec::new();
        let mut distributed = 0;
        let (mut first_seconds, mut cached_formats, mut formats) = (0.0, 0, 0);
        let (mut in_sluice, mut in_datafusion) = (0.0, 0.0);
        for (name, sql) in &generated {
            let timer = Instant::now();
            let post = |format: &'static str| {
                client
                    .post(format!("http://{}/v1/query", read.api))
                    .json(&json!({"sql": sql, "format": format}))
                    .send()
            };
            let response = post("json").await.unwrap();
            first_seconds += timer.elapsed().as_secs_f64();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            if let Some(reason) = body["fallback"].as_str() {
                fallbacks.push(format!("{name}: {reason}"));
            }
            if body["distributed"]["workers"]
                .as_array()
                .is_some_and(|workers| workers.len() > 1)
            {
                distributed += 1;
            }
            if status.is_success() {
                sluice.insert(name.clone(), columns_and_rows(&body));
                let arrow = post("arrow").await.unwrap();
                let cached = arrow
                    .headers()
                    .get("x-sluice-cached")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string();
                let ipc = arrow.bytes().await.unwrap();
                formats += 1;
                cached_formats += usize::from(cached == "true");
                let csv = post("csv").await.unwrap();
                let csv = match csv.status().as_u16() {
                    200 => Some(csv.text().await.unwrap()),
                    422 => None,
                    other => Some(format!("status {other}: {}", csv.text().await.unwrap())),
                };
                if let Err(problem) = formats_agree(&body, &ipc, csv.as_deref()) {
                    format_problems.push(format!(
                        "{name} (arrow answer cached: {cached}): {problem}\n  {sql}"
                    ));
                }
            } else {
                assert!(status.is_client_error(), "{name}: {status} {body}\n  {sql}");
                sluice.insert(name.clone(), json!({"error": body["error"]}));
            }
            in_sluice += timer.elapsed().as_secs_f64();
            let timer = Instant::now();
            let answer = match datafusion.sql(sql).await {
                Ok(frame) => {
                    let schema = Arc::new(frame.schema().as_arrow().clone());
                    frame.collect().await.map(|batches| (schema, batches))
                }
                Err(error) => Err(error),
            };
            let entry = match answer {
                Ok((schema, batches)) => {
                    let types = |s: &Schema| -> Vec<DataType> {
                        s.fields().iter().map(|f| f.data_type().clone()).collect()
                    };
                    if let Some(batch) = batches
                        .iter()
                        .find(|b| types(&b.schema()) != types(&schema))
                    {
                        eprintln!(
                            "{name}: DataFusion's batches are {:?}, its schema {:?}",
                            types(&batch.schema()),
                            types(&schema)
                        );
                    }
                    as_json(&schema, &batches)
                }
                Err(error) => json!({"error": error.to_string()}),
            };
            plain.insert(name.clone(), entry);
            in_datafusion += timer.elapsed().as_secs_f64();
        }
        eprintln!(
            "seed {seed}: {:.0} s in Sluice ({first_seconds:.0} s of them for the first answers; \
             {cached_formats} of {formats} Arrow answers from the cache), {:.0} s in DataFusion",
            in_sluice, in_datafusion
        );
        assert!(
            format_problems.is_empty(),
            "{} answers differ between formats:\n{}",
            format_problems.len(),
            format_problems.join("\n")
        );

        let sluice_json = dir.path().join(format!("sluice-{seed}.json"));
        let plain_json = dir.path().join(format!("datafusion-{seed}.json"));
        let duckdb_json = dir.path().join(format!("duckdb-{seed}.json"));
        std::fs::write(&sluice_json, Value::Object(sluice).to_string()).unwrap();
        std::fs::write(&plain_json, Value::Object(plain).to_string()).unwrap();
        run_python([
            DIFFERENTIAL,
            "duckdb",
            "--files",
            list.to_str().unwrap(),
            "--suite",
            suite.to_str().unwrap(),
            "--out",
            duckdb_json.to_str().unwrap(),
        ]);
        let compared = std::process::Command::new(python())
            .args([DIFFERENTIAL, "compare", "--suite"])
            .arg(&suite)
            .arg("--sluice")
            .arg(&sluice_json)
            .arg("--datafusion")
            .arg(&plain_json)
            .arg("--duckdb")
            .arg(&duckdb_json)
            .output()
            .unwrap();
        let report = String::from_utf8_lossy(&compared.stdout).to_string();
        assert!(
            compared.status.success(),
            "seed {seed}:\n{report}\n{}",
            String::from_utf8_lossy(&compared.stderr)
        );
        let summary = format!(
            "{}; {} answered without the handler's rules; {distributed} ran on more than one \
             of {handlers} handlers",
            report
                .lines()
                .rfind(|l| l.starts_with("differential:"))
                .unwrap_or_default(),
            fallbacks.len()
        );
        if handlers > 1 {
            assert!(
                distributed * 2 >= count,
                "seed {seed}: only {distributed} of {count} queries ran on more than one handler"
            );
        }
        for fallback in &fallbacks {
            eprintln!("fallback {fallback}");
        }
        let unexplained: Vec<&String> = fallbacks
            .iter()
            .filter(|f| !KNOWN_FALLBACKS.iter().any(|(known, _)| f.contains(known)))
            .collect();
        assert!(
            unexplained.is_empty(),
            "seed {seed}: the handler's rules failed these queries:\n{unexplained:#?}"
        );
        eprintln!("seed {seed}: {summary}");
        summaries.push(format!("seed {seed}: {summary}"));
    }
    Figures {
        queries,
        summary: summaries.join("\n"),
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_queries_get_the_answers_of_datafusion_and_duckdb_in_every_format() {
    let figures = run_differential(&[1, 2], 150, 1).await;
    assert_eq!(figures.queries, 300);
    eprintln!(
        "differential: {} queries in {:.0} s\n{}",
        figures.queries, figures.seconds, figures.summary
    );
}

/// The same queries on three query handlers that run them together: each answer is the one of
/// DataFusion alone and (but for the dialect rules) of DuckDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_queries_across_three_handlers_get_the_answers_of_datafusion_and_duckdb() {
    let figures = run_differential(&[3], 80, 3).await;
    assert_eq!(figures.queries, 80);
    eprintln!(
        "differential, three handlers: {} queries in {:.0} s\n{}",
        figures.queries, figures.seconds, figures.summary
    );
}

/// The long run: `SLUICE_DIFF_QUERIES` queries (5,000 by default) for each seed of
/// `SLUICE_DIFF_SEED` (comma-separated; a time-based one by default), on
/// `SLUICE_DIFF_HANDLERS` query handlers (1 by default) that run them together.
///
/// ```sh
/// SLUICE_DIFF_SEED=11,12 SLUICE_DIFF_QUERIES=2500 cargo test --test it differential_soak -- --ignored --nocapture
/// ```
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a soak of thousands of queries; see bench/README.md"]
async fn differential_soak() {
    let seeds: Vec<u64> = std::env::var("SLUICE_DIFF_SEED")
        .ok()
        .map(|s| s.split(',').map(|s| s.trim().parse().unwrap()).collect())
        .unwrap_or_else(|| {
            vec![
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs(),
            ]
        });
    let count = std::env::var("SLUICE_DIFF_QUERIES")
        .ok()
        .map_or(5_000, |n| n.parse().unwrap());
    let handlers = std::env::var("SLUICE_DIFF_HANDLERS")
        .ok()
        .map_or(1, |n| n.parse().unwrap());
    let figures = run_differential(&seeds, count, handlers).await;
    println!(
        "differential soak: {} queries in {:.0} s\n{}",
        figures.queries, figures.seconds, figures.summary
    );
}

#[test]
fn csv_records_keep_quoted_commas_quotes_and_newlines() {
    let text = "a,b\n\"x, y\",\"say \"\"hi\"\"\"\n\"two\nlines\",\n";
    assert_eq!(
        csv_records(text),
        [
            vec!["a".to_string(), "b".into()],
            vec!["x, y".into(), "say \"hi\"".into()],
            vec!["two\nlines".into(), String::new()],
        ]
    );
}
