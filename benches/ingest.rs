//! The ingest benchmark: durable ingest throughput and ack latency of a real `sluice all`
//! process (release build), against a local directory and against an S3 server on loopback.
//!
//! ```sh
//! cargo bench --bench ingest            # all scenarios
//! cargo bench --bench ingest -- quick   # a tenth of the load
//! ```
//!
//! Every request is `ack=durable`: it is answered only when its notifications are in the
//! master store. The same-run reference ("parse-only ceiling") is an HTTP server in this
//! process that only parses and validates the same bodies, with no storage, no memory and no
//! gRPC: Sluice's throughput as a share of it shows what durability costs on this machine,
//! whatever else the machine is doing. Results: `bench/README.md`.

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use hdrhistogram::Histogram;
use support::{S3Server, Sluice, free_addr, notification, wait_for_port};

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    per_request: usize,
    requests: usize,
    concurrency: usize,
}

struct Outcome {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Sends `scenario` to `url` from `concurrency` clients; every answer must be a 200.
async fn run(url: &str, scenario: &Scenario, first_id: usize) -> Outcome {
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..scenario.requests)
            .map(|r| {
                let start = first_id + r * scenario.per_request;
                let lines: Vec<String> = (start..start + scenario.per_request)
                    .map(|i| notification(i).to_string())
                    .collect();
                Bytes::from(lines.join("\n"))
            })
            .collect(),
    );
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", support::TEST_KEY).parse().unwrap(),
    );
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(scenario.concurrency)
        .build()
        .unwrap();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..scenario.concurrency {
        let (client, url, bodies, next) = (
            client.clone(),
            url.to_string(),
            bodies.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).unwrap();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return latencies;
                };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                response.bytes().await.unwrap();
                latencies.record(sent.elapsed().as_micros() as u64).unwrap();
            }
        }));
    }
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        latencies.add(task.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    Outcome {
        per_second: (scenario.requests * scenario.per_request) as f64 / elapsed,
        p50_ms: latencies.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// The same-run reference: parse and validate, store nothing.
async fn start_parse_only_server() -> SocketAddr {
    async fn ingest(body: Bytes) -> StatusCode {
        let received = sluice_core::notification::now_micros();
        for line in body.split(|b| *b == b'\n') {
            let text = std::str::from_utf8(line).unwrap();
            sluice_core::Notification::from_json(text, received).unwrap();
        }
        StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/v1/notifications", axum::routing::post(ingest));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn start_sluice(env: &[(String, String)], dir: &std::path::Path) -> (Sluice, SocketAddr) {
    let ingest = free_addr();
    let publisher = free_addr();
    let (ingest_arg, publisher_arg) = (ingest.to_string(), publisher.to_string());
    let sluice = Sluice::spawn(
        &[
            "all",
            "--ingest-addr",
            &ingest_arg,
            "--publisher-addr",
            &publisher_arg,
        ],
        env,
        dir,
        "sluice",
    );
    wait_for_port(ingest, &sluice).await;
    (sluice, ingest)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let scale = if quick { 10 } else { 1 };
    let scenarios = [
        Scenario {
            name: "batches of 1,000",
            per_request: 1_000,
            requests: 1_000 / scale,
            concurrency: std::env::var("BENCH_C")
                .map(|v| v.parse().unwrap())
                .unwrap_or(8),
        },
        Scenario {
            name: "single notifications",
            per_request: 1,
            requests: 50_000 / scale,
            concurrency: 64,
        },
    ];

    let s3 = S3Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local_env = vec![("SLUICE_STORAGE".to_string(), "file://./data".to_string())];
    let peer = start_parse_only_server().await;

    println!(
        "| scenario | store | notifications/s | p50 ack ms | p99 ack ms | parse-only ceiling/s | share of ceiling |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut first_id = 0;
    for (store, env) in [("file://", local_env), ("s3 (s3s-fs)", s3.env())] {
        let (mut sluice, ingest) = start_sluice(&env, dir.path()).await;
        for scenario in &scenarios {
            // Warm the connection pools and the process before measuring.
            let warm = Scenario {
                requests: scenario.concurrency,
                ..*scenario
            };
            run(
                &format!("http://{ingest}/v1/notifications"),
                &warm,
                50_000_000 + first_id,
            )
            .await;
            let ceiling = run(
                &format!("http://{peer}/v1/notifications"),
                scenario,
                first_id,
            )
            .await;
            let outcome = run(
                &format!("http://{ingest}/v1/notifications"),
                scenario,
                first_id,
            )
            .await;
            first_id += scenario.requests * scenario.per_request;
            println!(
                "| {} | {store} | {:.0} | {:.1} | {:.1} | {:.0} | {:.2} |",
                scenario.name,
                outcome.per_second,
                outcome.p50_ms,
                outcome.p99_ms,
                ceiling.per_second,
                outcome.per_second / ceiling.per_second,
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(sluice.terminate(), 0, "{}", sluice.log_text());
    }
}
