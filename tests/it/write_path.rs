//! The write path end to end: `sluice` processes, a real S3 server, real HTTP and gRPC.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::Value;
use sluice_core::master::MasterStore;

use crate::support::{
    BUCKET, S3Server, Sluice, count_master, free_addr, get_json, notification, post_all,
    wait_for_port,
};

const TOTAL: usize = 100_000;

/// 100,000 distinct notifications plus 2% of them a second time, shuffled so that a duplicate
/// may arrive while its original is still gray.
fn load_with_duplicates() -> Vec<usize> {
    let mut items: Vec<usize> = (0..TOTAL).collect();
    items.extend((0..TOTAL).filter(|i| i % 50 == 7));
    items.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
    items
}

async fn assert_stored_exactly_once(s3: &S3Server, total: usize) {
    let master = MasterStore::new(s3.store(BUCKET));
    let counts = count_master(&master).await;
    let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(doubled.is_empty(), "stored twice: {doubled:?}");
    let missing: Vec<usize> = (0..total)
        .filter(|&i| {
            let n = notification(i);
            let key = (
                n["platform"].as_str().unwrap().to_string(),
                n["id"].as_str().unwrap().to_string(),
            );
            !counts.contains_key(&key)
        })
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert_eq!(counts.len(), total);
}

struct Pipeline {
    publisher: Sluice,
    ingest: Sluice,
    publisher_addr: SocketAddr,
    ingest_addr: SocketAddr,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Pipeline {
    async fn start(s3: &S3Server) -> Pipeline {
        let dir = tempfile::tempdir().unwrap();
        let publisher_addr = free_addr();
        let ingest_addr = free_addr();
        let mut env = s3.env();
        env.push(("SLUICE_PUBLISHER_ADDR".into(), publisher_addr.to_string()));
        env.push(("SLUICE_INGEST_ADDR".into(), ingest_addr.to_string()));
        // No consumer runs here; the address is this test's own, so no other test's consumer
        // hears of these segments.
        env.push(("SLUICE_CONSUMER_ADDR".into(), free_addr().to_string()));
        let publisher = Sluice::spawn(&["publisher"], &env, dir.path(), "publisher");
        let ingest = Sluice::spawn(&["ingest-api"], &env, dir.path(), "ingest");
        wait_for_port(publisher_addr, &publisher).await;
        wait_for_port(ingest_addr, &ingest).await;
        Pipeline {
            publisher,
            ingest,
            publisher_addr,
            ingest_addr,
            env,
            dir,
        }
    }

    fn restart_publisher(&mut self) {
        self.publisher = Sluice::spawn(&["publisher"], &self.env, self.dir.path(), "publisher-2");
    }

    async fn restart_ingest(&mut self) {
        self.ingest = Sluice::spawn(&["ingest-api"], &self.env, self.dir.path(), "ingest-2");
        wait_for_port(self.ingest_addr, &self.ingest).await;
    }

    async fn get(&self, path: &str) -> Value {
        get_json(&format!("http://{}{path}", self.ingest_addr)).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sluice_all_on_the_embedded_default_answers_blue_then_green() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = free_addr();
    let publisher = free_addr();
    let (ingest_arg, publisher_arg) = (ingest.to_string(), publisher.to_string());
    let mut sluice = Sluice::spawn(
        &[
            "all",
            "--ingest-addr",
            &ingest_arg,
            "--publisher-addr",
            &publisher_arg,
        ],
        // Every port its own: a default one may be held by another test's outgoing
        // connection (seen once: the consumer's 50052).
        &[
            ("SLUICE_CONSUMER_ADDR".to_string(), free_addr().to_string()),
            (
                "SLUICE_QUERY_HANDLER_ADDR".to_string(),
                free_addr().to_string(),
            ),
            ("SLUICE_QUERY_ADDR".to_string(), free_addr().to_string()),
        ],
        dir.path(),
        "all",
    );
    wait_for_port(ingest, &sluice).await;
    let client = crate::support::client();
    let answer: Value = client
        .post(format!("http://{ingest}/v1/notifications"))
        .json(&notification(1))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    let state = get_json(&format!("http://{ingest}/v1/notifications/bsky/n1")).await;
    assert_eq!(state["color"], "blue", "{state}");

    // ack=replicated answers once the notification is in the replica: green.
    let answer = client
        .post(format!("http://{ingest}/v1/notifications?ack=replicated"))
        .json(&notification(2))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let state = get_json(&format!("http://{ingest}/v1/notifications/threads/n2")).await;
    assert_eq!(state["color"], "green", "{state}");

    assert_eq!(sluice.terminate(), 0, "{}", sluice.log_text());
    let segments: Vec<_> = walk(&dir.path().join("data/master"));
    assert_eq!(segments.len(), 2, "{segments:?}");
    let parquet = walk(&dir.path().join("data/replica"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert!(parquet >= 1, "the replica holds Parquet files");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_store_every_notification_exactly_once() {
    let s3 = S3Server::start().await;
    let mut pipeline = Pipeline::start(&s3).await;
    let report = post_all(
        pipeline.ingest_addr,
        load_with_duplicates(),
        100,
        16,
        Arc::default(),
    )
    .await;
    assert_eq!(report.retries, 0, "nothing failed, so nothing was retried");

    let state = pipeline.get("/v1/notifications/mastodon/n0").await;
    assert_eq!(state["color"], "blue");
    let stats = pipeline.get("/v1/stats").await;
    assert_eq!(stats["memory"]["entries"], TOTAL);
    assert_eq!(stats["memory"]["gray"], 0);
    assert_stored_exactly_once(&s3, TOTAL).await;

    assert_eq!(pipeline.ingest.terminate(), 0);
    assert_eq!(pipeline.publisher.terminate(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_publisher_mid_load_loses_nothing_and_doubles_nothing() {
    let s3 = S3Server::start().await;
    let mut pipeline = Pipeline::start(&s3).await;
    let items = load_with_duplicates();
    let requests = items.len().div_ceil(100);
    let progress = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn(post_all(
        pipeline.ingest_addr,
        items,
        100,
        16,
        progress.clone(),
    ));

    while progress.load(Ordering::Relaxed) < requests / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pipeline.publisher.kill9();
    let done_at_kill = progress.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    pipeline.restart_publisher();
    wait_for_port(pipeline.publisher_addr, &pipeline.publisher).await;

    load.await.unwrap();
    assert!(
        done_at_kill < requests,
        "the kill happened in the middle of the load"
    );
    assert_stored_exactly_once(&s3, TOTAL).await;
    assert!(
        pipeline
            .ingest
            .log_text()
            .contains("append failed; retrying the same batch"),
        "the batcher saw the publisher die"
    );
    assert_eq!(pipeline.ingest.terminate(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stored_but_unanswered_when_ingest_dies_is_stored_once_when_retried() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let mut pipeline = Pipeline::start(&s3).await;
    let master = MasterStore::new(s3.store(BUCKET));
    let body: Vec<Value> = (0..1_000).map(notification).collect();
    let url = format!("http://{}/v1/notifications", pipeline.ingest_addr);
    let client = crate::support::client();
    let first = tokio::spawn(client.post(&url).json(&body).send());

    // The moment the batch is in the master store, the ingest node dies: whether or not its
    // answer got out, the client cannot know and retries.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while master.list_segments().await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing was stored");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    pipeline.ingest.kill9();
    let _ = first.await;
    pipeline.restart_ingest().await;

    let retry: Value = client
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let duplicates = retry["duplicates"].as_array().unwrap().len();
    assert_eq!(
        retry["accepted"].as_u64().unwrap() as usize + duplicates,
        1_000,
        "{retry}"
    );
    assert!(duplicates > 0, "the stored batch was recognized: {retry}");
    assert_stored_exactly_once(&s3, 1_000).await;
    assert!(
        pipeline.ingest.log_text().contains("recovered=1000"),
        "{}",
        pipeline.ingest.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_every_staged_notification_before_exit() {
    let s3 = S3Server::start().await;
    let mut pipeline = Pipeline::start(&s3).await;
    let client = crate::support::client();
    let body: String = (0..5_000)
        .map(|i| notification(i).to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let response = client
        .post(format!(
            "http://{}/v1/notifications?ack=staged",
            pipeline.ingest_addr
        ))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        pipeline.ingest.terminate(),
        0,
        "{}",
        pipeline.ingest.log_text()
    );
    assert_stored_exactly_once(&s3, 5_000).await;
}
