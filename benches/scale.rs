//! Scaling out the write path: durable ingest with 1, 2 and 4 ingest+publisher pairs, each
//! its own `sluice` process, one consumer, on an `s3s-fs` server on loopback.
//!
//! ```sh
//! cargo bench --bench scale              # 200 requests of 1,000 notifications per step
//! cargo bench --bench scale -- quick     # 40 requests per step
//! BENCH_REQUESTS=1000 cargo bench --bench scale   # 1,000 requests (1M notifications) per step
//! ```
//!
//! Each step starts fresh (a new S3 server and new processes). The load is the same at every
//! step: requests of 1,000 notifications with `ack=durable`, from 4 clients per pair, spread
//! over the pairs in turn. Reported: notifications/s and p99 ack latency, each as a ratio to the
//! single pair measured in the same run, and freshness (durable ack → green) p99, the worst of
//! the ingest nodes. Also the cores each part kept busy during the load (from `/proc`), which
//! shows where the machine's ceiling is. Results: `bench/README.md`, "Scaling out".

#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hdrhistogram::Histogram;
use support::{BUCKET, S3Server, Sluice, free_addr, get_json, notification, wait_for_port};

const PER_REQUEST: usize = 1_000;
const CLIENTS_PER_PAIR: usize = 4;

struct Step {
    pairs: usize,
    per_second: f64,
    p99_ack_ms: f64,
    freshness_p99_ms: f64,
    /// Cores kept busy during the load, on average: by the ingest and publisher processes, by
    /// the consumer, and by this process (the load generator and the S3 server).
    cores_pairs: f64,
    cores_consumer: f64,
    cores_bench: f64,
}

async fn step(pairs: usize, requests: usize) -> Step {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let consumer_addr = free_addr();
    let mut env = s3.env();
    env.push(("SLUICE_CONSUMER_ADDR".into(), consumer_addr.to_string()));
    let consumer = Sluice::spawn(&["consumer"], &env, dir.path(), "consumer");
    wait_for_port(consumer_addr, &consumer).await;
    let mut processes = vec![consumer];
    let mut nodes: Vec<SocketAddr> = Vec::new();
    for pair in 0..pairs {
        let (publisher, node) = (free_addr(), free_addr());
        let mut env = env.clone();
        env.push(("SLUICE_PUBLISHER_ADDR".into(), publisher.to_string()));
        env.push(("SLUICE_INGEST_ADDR".into(), node.to_string()));
        env.push(("SLUICE_NODE_ID".into(), format!("n{pair}")));
        let p = Sluice::spawn(
            &["publisher"],
            &env,
            dir.path(),
            &format!("publisher-{pair}"),
        );
        wait_for_port(publisher, &p).await;
        let i = Sluice::spawn(&["ingest-api"], &env, dir.path(), &format!("ingest-{pair}"));
        wait_for_port(node, &i).await;
        processes.extend([p, i]);
        nodes.push(node);
    }

    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..requests)
            .map(|r| {
                let lines: Vec<String> = (r * PER_REQUEST..(r + 1) * PER_REQUEST)
                    .map(|i| notification(i).to_string())
                    .collect();
                Bytes::from(lines.join("\n"))
            })
            .collect(),
    );
    let client = support::client();
    let next = Arc::new(AtomicUsize::new(0));
    let nodes = Arc::new(nodes);
    let cpu = |processes: &[Sluice]| -> (f64, f64, f64) {
        let consumer = processes[0].cpu_seconds();
        let pairs: f64 = processes[1..].iter().map(Sluice::cpu_seconds).sum();
        (pairs, consumer, support::cpu_seconds_of("self"))
    };
    let cpu_before = cpu(&processes);
    let started = Instant::now();
    let tasks: Vec<_> = (0..pairs * CLIENTS_PER_PAIR)
        .map(|_| {
            let (client, bodies, next, nodes) =
                (client.clone(), bodies.clone(), next.clone(), nodes.clone());
            tokio::spawn(async move {
                let mut latencies = Histogram::<u64>::new(3).unwrap();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return latencies;
                    };
                    let node = nodes[i % nodes.len()];
                    let sent = Instant::now();
                    let response = client
                        .post(format!("http://{node}/v1/notifications?ack=durable"))
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200);
                    response.bytes().await.unwrap();
                    latencies.record(sent.elapsed().as_micros() as u64).unwrap();
                }
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new(3).unwrap();
    for task in tasks {
        latencies.add(task.await.unwrap()).unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = cpu(&processes);

    // Freshness once everything is green: the worst p99 of the nodes.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut freshness_p99_ms: f64 = 0.0;
    for (k, node) in nodes.iter().enumerate() {
        let sent = ((0..requests).filter(|i| i % pairs == k).count() * PER_REQUEST) as u64;
        loop {
            let (green, stats) = support::replicated_count(*node).await;
            if green >= sent {
                break;
            }
            assert!(Instant::now() < deadline, "never green: {stats}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let stats = get_json(&format!("http://{node}/v1/stats")).await;
        let p99 = stats["freshness"]["durable_to_green"]["p99_ms"]
            .as_f64()
            .unwrap_or(f64::NAN);
        freshness_p99_ms = freshness_p99_ms.max(p99);
    }
    drop(processes);
    Step {
        pairs,
        per_second: (requests * PER_REQUEST) as f64 / elapsed,
        p99_ack_ms: latencies.value_at_quantile(0.99) as f64 / 1000.0,
        freshness_p99_ms,
        cores_pairs: (cpu_after.0 - cpu_before.0) / elapsed,
        cores_consumer: (cpu_after.1 - cpu_before.1) / elapsed,
        cores_bench: (cpu_after.2 - cpu_before.2) / elapsed,
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let requests = match std::env::var("BENCH_REQUESTS") {
        Ok(n) => n.parse().expect("BENCH_REQUESTS is a number"),
        Err(_) if quick => 40,
        Err(_) => 200,
    };
    let mut steps = Vec::new();
    for pairs in [1, 2, 4] {
        steps.push(step(pairs, requests).await);
    }
    let base = &steps[0];
    println!(
        "| pairs | notifications/s | × one pair | p99 ack | × one pair | freshness p99 (durable → green) | cores busy: pairs + consumer + load and S3 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---|");
    for s in &steps {
        println!(
            "| {} | {:.0} | {:.2} | {:.0} ms | {:.2} | {:.0} ms | {:.2} + {:.2} + {:.2} = {:.2} |",
            s.pairs,
            s.per_second,
            s.per_second / base.per_second,
            s.p99_ack_ms,
            s.p99_ack_ms / base.p99_ack_ms,
            s.freshness_p99_ms,
            s.cores_pairs,
            s.cores_consumer,
            s.cores_bench,
            s.cores_pairs + s.cores_consumer + s.cores_bench,
        );
    }
}
