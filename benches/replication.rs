//! The replication benchmark: freshness (durable ack → green) under a steady 50,000
//! notifications/s, replication throughput, and the replica's size against the raw NDJSON.
//!
//! ```sh
//! cargo bench --bench replication            # 1,000,000 notifications at 50,000/s
//! cargo bench --bench replication -- quick   # 200,000
//! ```
//!
//! A real `sluice all` (release build) on an `s3s-fs` S3 server on loopback. The load is paced
//! at 50 requests of 1,000 notifications a second with `ack=durable`; freshness is what the
//! ingest API measures per batch from the publisher's confirmation to the consumer's
//! `Progress` (row-weighted, `/v1/stats`). Throughput is `sluice replay` rebuilding the replica
//! from the master store alone, against the same-run reference: delta-rs's Python package
//! writing the same rows, read from the NDJSON, as a Delta table (zstd) on local disk.
//! Sizes are taken as appended (zstd 3) and again after `sluice maintain` has compacted the
//! closed days of both tables at the archival zstd level (every generated day is before today).
//! Results: `bench/README.md`.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{S3Server, Sluice, free_addr, wait_for_port};

const RATE_REQUESTS_PER_SEC: u64 = 50;
const PER_REQUEST: usize = 1_000;

/// Notifications shaped like real traffic: random ids, words from a vocabulary, a few tags and
/// metrics, a small attributes object, times spread over a few days.
fn realistic(rng: &mut StdRng, words: &[String]) -> Value {
    let types = [
        "post.created",
        "post.edited",
        "post.liked",
        "post.shared",
        "post.commented",
        "post.deleted",
    ];
    let platforms = ["mastodon", "bsky", "threads", "lemmy"];
    let langs = ["en", "de", "fr", "es", "ja"];
    let clients = ["web", "ios", "android"];
    let lang = langs[rng.random_range(0..langs.len())];
    let client = clients[rng.random_range(0..clients.len())];
    let text: Vec<&str> = (0..rng.random_range(4..30))
        .map(|_| words[rng.random_range(0..words.len())].as_str())
        .collect();
    let tags: Vec<String> = (0..rng.random_range(0..4))
        .map(|_| format!("tag{}", rng.random_range(0..500)))
        .collect();
    json!({
        "platform": platforms[rng.random_range(0..platforms.len())],
        "id": format!("{:016x}", rng.random::<u64>()),
        "type": types[rng.random_range(0..types.len())],
        "occurred_at": format!("2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            rng.random_range(20..24), rng.random_range(0..24), rng.random_range(0..60),
            rng.random_range(0..60), rng.random_range(0..1000)),
        "post_id": format!("{:012x}", rng.random_range(0..2_000_000u64)),
        "author_id": format!("u{}", rng.random_range(0..100_000)),
        "actor_id": format!("u{}", rng.random_range(0..100_000)),
        "text": text.join(" "),
        "lang": lang,
        "tags": tags,
        "metrics": {"likes": rng.random_range(0..5000), "shares": rng.random_range(0..300)},
        "attributes": {"client": client, "v": rng.random_range(1..9)},
    })
}

fn bodies(requests: usize) -> Vec<Bytes> {
    let mut rng = StdRng::seed_from_u64(42);
    let words: Vec<String> = (0..2_000)
        .map(|i| {
            let len = 2 + (i * 7919) % 9;
            (0..len)
                .map(|j| (b'a' + ((i * 31 + j * 17) % 26) as u8) as char)
                .collect()
        })
        .collect();
    (0..requests)
        .map(|_| {
            let lines: Vec<String> = (0..PER_REQUEST)
                .map(|_| realistic(&mut rng, &words).to_string())
                .collect();
            Bytes::from(lines.join("\n") + "\n")
        })
        .collect()
}

fn bytes_under(dir: &Path, extension: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            total += bytes_under(&path, extension);
        } else if path.extension().is_some_and(|e| e == extension) {
            total += path.metadata().unwrap().len();
        }
    }
    total
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let requests = if quick { 200 } else { 1_000 };
    let total = requests * PER_REQUEST;
    let bodies = Arc::new(bodies(requests));
    let raw_bytes: u64 = bodies.iter().map(|b| b.len() as u64).sum();

    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (ingest, publisher, consumer) = (free_addr(), free_addr(), free_addr());
    let mut env = s3.env();
    env.extend([
        ("SLUICE_INGEST_ADDR".to_string(), ingest.to_string()),
        ("SLUICE_PUBLISHER_ADDR".to_string(), publisher.to_string()),
        ("SLUICE_CONSUMER_ADDR".to_string(), consumer.to_string()),
        ("SLUICE_MEMORY_BYTES".to_string(), (4u64 << 30).to_string()),
    ]);
    let mut sluice = Sluice::spawn(&["all"], &env, dir.path(), "sluice");
    wait_for_port(ingest, &sluice).await;

    // Paced load: request i leaves at start + i / rate, whatever the answers do.
    let client = support::client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..requests {
        let due = started + Duration::from_micros(i as u64 * 1_000_000 / RATE_REQUESTS_PER_SEC);
        tokio::time::sleep_until(due.into()).await;
        let (client, bodies) = (client.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(format!("http://{ingest}/v1/notifications"))
                .header("content-type", "application/x-ndjson")
                .body(bodies[i].clone())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let sent_in = started.elapsed().as_secs_f64();
    let stats = loop {
        let (green, stats) = support::replicated_count(ingest).await;
        if green == total as u64 {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(sluice.terminate(), 0, "{}", sluice.log_text());

    let master_bytes = bytes_under(&s3.bucket_dir(support::BUCKET).join("master"), "avro");

    // Throughput: rebuild the replica from the master store alone.
    let replay_started = Instant::now();
    let mut replay = Sluice::spawn(
        &["replay", "--to", "replica-replay"],
        &s3.env(),
        dir.path(),
        "replay",
    );
    assert_eq!(replay.wait(), 0, "{}", replay.log_text());
    let replay_secs = replay_started.elapsed().as_secs_f64();

    // The reference: delta-rs (Python) writing the same rows from NDJSON to a local table.
    let ndjson = dir.path().join("load.ndjson");
    std::fs::write(
        &ndjson,
        bodies
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let script = r#"
import sys, time
import pyarrow.json as pj
from deltalake import write_deltalake, WriterProperties
t = time.time()
table = pj.read_json(sys.argv[1])
write_deltalake(sys.argv[2], table, writer_properties=WriterProperties(compression="ZSTD"))
print(time.time() - t)
"#;
    let stdout = support::run_python([
        std::ffi::OsStr::new("-c"),
        script.as_ref(),
        ndjson.as_os_str(),
        dir.path().join("python-delta").as_os_str(),
    ]);
    let python_secs: f64 = String::from_utf8(stdout).unwrap().trim().parse().unwrap();
    // Bytes of the files each table's latest version references (what a reader reads; files
    // that compaction replaced and vacuum has not yet deleted do not count).
    let live = r#"
import json, sys
from deltalake import DeltaTable
sizes = {}
for name, uri, options in json.loads(sys.argv[1]):
    actions = DeltaTable(uri, storage_options=options).get_add_actions(flatten=True)
    sizes[name] = sum(actions.column("size_bytes").to_pylist())
print(json.dumps(sizes))
"#;
    let tables = json!([
        [
            "replica",
            s3.table("replica").0.as_str(),
            s3.table("replica").1
        ],
        [
            "replay",
            s3.table("replica-replay").0.as_str(),
            s3.table("replica-replay").1
        ],
        [
            "reference",
            dir.path().join("python-delta").to_str().unwrap(),
            {}
        ],
    ]);
    let sizes_now = || -> Value {
        let stdout = support::run_python(["-c", live, &tables.to_string()]);
        serde_json::from_slice(&stdout).unwrap()
    };
    let appended = sizes_now();

    // Compaction of closed days, as the consumer's maintenance does once a day has ended (every
    // generated day lies before today): one `sluice maintain` per table, on every core.
    let compact_started = Instant::now();
    for table in ["replica", "replica-replay"] {
        let mut maintain = Sluice::spawn(
            &["maintain", "--replica-path", table],
            &s3.env(),
            dir.path(),
            &format!("maintain-{table}"),
        );
        assert_eq!(maintain.wait(), 0, "{}", maintain.log_text());
    }
    let compact_secs = compact_started.elapsed().as_secs_f64();
    let compacted = sizes_now();
    let share = |sizes: &Value, name: &str| {
        let bytes = sizes[name].as_u64().unwrap();
        format!(
            "{bytes} B ({:.1}% of raw)",
            100.0 * bytes as f64 / raw_bytes as f64
        )
    };

    println!("| measure | value |");
    println!("|---|---:|");
    println!("| notifications | {total} |");
    println!(
        "| offered rate (durable acks) | {:.0}/s |",
        total as f64 / sent_in
    );
    for (label, key) in [
        ("durable ack → green", "durable_to_green"),
        ("received → green", "received_to_green"),
    ] {
        let f = &stats["freshness"][key];
        println!(
            "| freshness {label}, p50 / p99 / max | {} / {} / {} ms |",
            f["p50_ms"], f["p99_ms"], f["max_ms"]
        );
    }
    println!(
        "| replay (master → replica, S3) | {:.0} rows/s |",
        total as f64 / replay_secs
    );
    println!(
        "| delta-rs Python, NDJSON → Delta on local disk (reference) | {:.0} rows/s |",
        total as f64 / python_secs
    );
    println!("| replay ÷ reference | {:.2} |", python_secs / replay_secs);
    println!("| raw NDJSON | {raw_bytes} B |");
    println!(
        "| master (Avro, zstd) | {master_bytes} B ({:.1}% of raw) |",
        100.0 * master_bytes as f64 / raw_bytes as f64
    );
    println!(
        "| replica as replicated live (Parquet, zstd 3) | {} |",
        share(&appended, "replica")
    );
    println!(
        "| replica rebuilt by replay (larger files, zstd 3) | {} |",
        share(&appended, "replay")
    );
    println!(
        "| replica after compaction of closed days (zstd archival level) | {} |",
        share(&compacted, "replica")
    );
    println!(
        "| replay after compaction of closed days | {} |",
        share(&compacted, "replay")
    );
    println!(
        "| compaction, both tables (`sluice maintain`, every core) | {:.0} rows/s |",
        2.0 * total as f64 / compact_secs
    );
    println!(
        "| reference's Parquet | {} |",
        share(&appended, "reference")
    );
}
