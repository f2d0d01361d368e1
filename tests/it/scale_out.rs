//! Several ingest nodes behind a load balancer: a notification is stored once in the replica
//! whichever node each of its copies reached.
//!
//! Every service is its own `sluice` process on a real S3 server. The client is a platform
//! behind a load balancer: it sends each batch to one node, retries a batch that failed on the
//! other node, and re-sends 1% of its notifications later inside another batch (a balancer
//! routes requests, not notifications). One ingest node is killed with SIGKILL mid-load.
//! Before the consumer dropped copies stored by other producers, this run left each such copy
//! in the replica twice (issue 15 measured 723 of 60,000).

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deltalake::arrow::array::AsArray;
use deltalake::arrow::datatypes::Int64Type;
use deltalake::datafusion::prelude::SessionContext;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sluice_consumer::replica::Replica;
use sluice_core::master::MasterStore;

use crate::support::{
    BUCKET, S3Server, Sluice, count_master, free_addr, notification, wait_for_port,
};

const TOTAL: usize = 20_000;
const PER_BATCH: usize = 500;

/// Notification `i`; every other one occurred in the last two days, so that both the days the
/// consumer keeps in memory and older ones it reads back from the replica are exercised.
pub(crate) fn dated_notification(i: usize) -> Value {
    let mut n = notification(i);
    if i.is_multiple_of(2) {
        let at = chrono::Utc::now() - chrono::Duration::hours((i % 40) as i64);
        n["occurred_at"] = Value::from(at.format("%Y-%m-%dT%H:00:00Z").to_string());
    }
    n
}

/// Sends `body` to `nodes[first]`, then to the other node after each failure, until a node
/// answers 200 with every notification accepted or recognized as a duplicate.
async fn send_until_acknowledged(
    client: &reqwest::Client,
    nodes: &[SocketAddr],
    first: usize,
    body: String,
    retries: &AtomicUsize,
) {
    let deadline = Instant::now() + Duration::from_secs(300);
    for attempt in 0.. {
        let node = nodes[(first + attempt) % nodes.len()];
        let answer = client
            .post(format!("http://{node}/v1/notifications?ack=durable"))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == 200 => {
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["rejected"], serde_json::json!([]), "{answer}");
                return;
            }
            Ok(response) if response.status().is_client_error() => panic!(
                "unexpected {}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            _ => {}
        }
        assert!(Instant::now() < deadline, "a batch was never acknowledged");
        retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts that `master` (keys and their copies) holds notifications `0..total`, each at least
/// once, and returns their keys.
pub(crate) fn assert_master_holds_all(
    master: &std::collections::HashMap<(String, String), usize>,
    total: usize,
) -> HashSet<(String, String)> {
    let expected: HashSet<(String, String)> = (0..total)
        .map(|i| {
            let n = notification(i);
            (
                n["platform"].as_str().unwrap().into(),
                n["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    let in_master: HashSet<(String, String)> = master.keys().cloned().collect();
    assert_eq!(
        in_master, expected,
        "the master holds every acknowledged notification"
    );
    expected
}

/// A platform's load behind a load balancer: `total` notifications ([`dated_notification`]) in
/// batches, 1% of them sent a second time inside a later batch, sent with `ack=durable` by
/// several senders, batch `k` first to node `k % nodes`, then to the next node after each
/// failure, until acknowledged.
pub(crate) struct BalancedLoad {
    bodies: Vec<String>,
    /// Notifications sent twice on purpose.
    pub(crate) resent: usize,
    /// Batches acknowledged so far.
    pub(crate) done: Arc<AtomicUsize>,
    /// Failed attempts, each followed by a retry.
    pub(crate) retries: Arc<AtomicUsize>,
}

impl BalancedLoad {
    pub(crate) fn new(total: usize, per_batch: usize, seed: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..total).collect();
        order.shuffle(&mut rng);
        let mut batches: Vec<Vec<usize>> = order.chunks(per_batch).map(<[usize]>::to_vec).collect();
        let mut resent = order.clone();
        resent.shuffle(&mut rng);
        resent.truncate(total / 100);
        for &i in &resent {
            let home = batches.iter().position(|b| b.contains(&i)).unwrap();
            let later = rng.random_range(home..batches.len());
            let later = if later == home {
                (home + 1) % batches.len()
            } else {
                later
            };
            batches[later].push(i);
        }
        let bodies = batches
            .iter()
            .map(|batch| {
                let lines: Vec<String> = batch
                    .iter()
                    .map(|&i| dated_notification(i).to_string())
                    .collect();
                lines.join("\n")
            })
            .collect();
        BalancedLoad {
            bodies,
            resent: resent.len(),
            done: Arc::new(AtomicUsize::new(0)),
            retries: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub(crate) fn batches(&self) -> usize {
        self.bodies.len()
    }

    /// Sends every batch from `senders` concurrent clients; the task ends when all are
    /// acknowledged.
    pub(crate) fn send(
        self,
        nodes: Vec<SocketAddr>,
        senders: usize,
    ) -> tokio::task::JoinHandle<()> {
        let client = crate::support::client();
        let nodes = Arc::new(nodes);
        let queue = Arc::new(std::sync::Mutex::new(
            self.bodies.into_iter().enumerate().collect::<Vec<_>>(),
        ));
        let tasks: Vec<_> = (0..senders)
            .map(|_| {
                let (client, nodes, queue) = (client.clone(), nodes.clone(), queue.clone());
                let (retries, done) = (self.retries.clone(), self.done.clone());
                tokio::spawn(async move {
                    loop {
                        let Some((k, body)) = queue.lock().unwrap().pop() else {
                            return;
                        };
                        send_until_acknowledged(&client, &nodes, k % nodes.len(), body, &retries)
                            .await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::spawn(async move {
            for task in tasks {
                task.await.unwrap();
            }
        })
    }
}

/// Waits until the replica records, for every producer in the master store, its last segment:
/// everything acknowledged has been through the consumer.
pub(crate) async fn wait_until_replicated(s3: &S3Server, consumer: &Sluice) -> Replica {
    let master = MasterStore::new(s3.store(BUCKET));
    let (url, options) = s3.table("replica");
    let mut replica = Replica::open_or_create(url, options).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut last = BTreeMap::<String, u64>::new();
        for segment in master.list_segments().await.unwrap() {
            let entry = last.entry(segment.producer).or_default();
            *entry = (*entry).max(segment.sequence);
        }
        replica.refresh().await.unwrap();
        let mut behind = Vec::new();
        for (producer, sequence) in &last {
            let committed = replica.committed_sequence(producer).await.unwrap();
            if committed < *sequence {
                behind.push(format!("{producer}: {committed} of {sequence}"));
            }
        }
        if behind.is_empty() {
            return replica;
        }
        assert!(
            Instant::now() < deadline,
            "not replicated: {behind:?}\n{}",
            consumer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_through_another_node_are_stored_once() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let (publisher_addr, consumer_addr) = (free_addr(), free_addr());
    let nodes = [free_addr(), free_addr()];
    let mut env = s3.env();
    env.extend([
        (
            "SLUICE_PUBLISHER_ADDR".to_string(),
            publisher_addr.to_string(),
        ),
        (
            "SLUICE_CONSUMER_ADDR".to_string(),
            consumer_addr.to_string(),
        ),
        ("SLUICE_REPLICATE_MAX_AGE_MS".to_string(), "300".to_string()),
        ("SLUICE_LIST_INTERVAL_SECS".to_string(), "2".to_string()),
    ]);
    // The nodes find the publisher by name, as in Kubernetes (a headless Service): every
    // address `localhost` resolves to, looked up again every few seconds.
    let node_env = |name: &str, addr: SocketAddr| {
        let mut env = env.clone();
        env.push(("SLUICE_NODE_ID".into(), name.into()));
        env.push(("SLUICE_INGEST_ADDR".into(), addr.to_string()));
        env.push((
            "SLUICE_PUBLISHER_ADDR".into(),
            format!("dns://localhost:{}", publisher_addr.port()),
        ));
        env
    };
    let _publisher = Sluice::spawn(&["publisher"], &env, dir.path(), "publisher");
    let consumer = Sluice::spawn(&["consumer"], &env, dir.path(), "consumer");
    let mut node_a = Sluice::spawn(&["ingest-api"], &node_env("a", nodes[0]), dir.path(), "a");
    let node_b = Sluice::spawn(&["ingest-api"], &node_env("b", nodes[1]), dir.path(), "b");
    for addr in [publisher_addr, consumer_addr] {
        wait_for_port(addr, &consumer).await;
    }
    wait_for_port(nodes[0], &node_a).await;
    wait_for_port(nodes[1], &node_b).await;

    // 40 batches of 500; 1% of the notifications sent a second time inside a later batch.
    let load = BalancedLoad::new(TOTAL, PER_BATCH, 15);
    let (resent, batches_total) = (load.resent, load.batches());
    let (done, retries) = (load.done.clone(), load.retries.clone());
    let senders = load.send(nodes.to_vec(), 4);

    // kill -9 node a a third of the way in; it comes back a second later under the same name.
    while done.load(Ordering::Relaxed) < batches_total / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node_a.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    node_a = Sluice::spawn(&["ingest-api"], &node_env("a", nodes[0]), dir.path(), "a-2");
    wait_for_port(nodes[0], &node_a).await;
    senders.await.unwrap();

    let replica = wait_until_replicated(&s3, &consumer).await;
    let master = count_master(&MasterStore::new(s3.store(BUCKET))).await;
    let copies: usize = master.values().map(|n| n - 1).sum();
    assert_master_holds_all(&master, TOTAL);
    assert!(
        copies > 0,
        "the run stored some notification through two nodes (else it proves nothing)"
    );

    let ctx = SessionContext::new();
    ctx.register_table(
        "notifications",
        replica.table().table_provider().await.unwrap(),
    )
    .unwrap();
    let counts = ctx
        .sql(
            "SELECT count(*) AS total_rows, \
             (SELECT count(*) FROM (SELECT DISTINCT platform, id FROM notifications)) AS keys \
             FROM notifications",
        )
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let (rows, distinct) = (
        counts[0].column(0).as_primitive::<Int64Type>().value(0),
        counts[0].column(1).as_primitive::<Int64Type>().value(0),
    );
    eprintln!(
        "scale-out: {TOTAL} sent, {} re-sent, {} retries, {copies} copies in the master, \
         {rows} rows in the replica",
        resent,
        retries.load(Ordering::Relaxed)
    );
    assert_eq!(
        (rows, distinct),
        (TOTAL as i64, TOTAL as i64),
        "the replica holds every notification once ({copies} copies in the master)"
    );
    drop(node_b);
}

/// Two query handlers behind one query API (a list of addresses): queries are answered by
/// either, a detached query's state is found whichever handler ran it, and after a kill -9 of
/// one handler every query is still answered, by the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_query_handlers_answer_and_one_dying_fails_no_query() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let (url, options) = s3.table("replica");
    let mut replica = Replica::open_or_create(url, options).await.unwrap();
    crate::analyst::load(&mut replica, "generated", 1..4, 3).await;
    let dir = tempfile::tempdir().unwrap();
    let handlers = [free_addr(), free_addr()];
    let api = free_addr();
    let mut env = s3.env();
    env.push(("SLUICE_QUERY_ADDR".into(), api.to_string()));
    env.push(("SLUICE_REPLICA_REFRESH_MS".into(), "100".into()));
    let handler_env = |addr: SocketAddr| {
        let mut env = env.clone();
        env.push(("SLUICE_QUERY_HANDLER_ADDR".into(), addr.to_string()));
        env
    };
    let mut handler_processes = [
        Sluice::spawn(
            &["query-handler"],
            &handler_env(handlers[0]),
            dir.path(),
            "h0",
        ),
        Sluice::spawn(
            &["query-handler"],
            &handler_env(handlers[1]),
            dir.path(),
            "h1",
        ),
    ];
    let mut api_env = env.clone();
    api_env.push((
        "SLUICE_QUERY_HANDLER_ADDR".into(),
        format!("{},{}", handlers[0], handlers[1]),
    ));
    let api_process = Sluice::spawn(&["query-api"], &api_env, dir.path(), "query-api");
    for (addr, process) in handlers.iter().zip(&handler_processes) {
        wait_for_port(*addr, process).await;
    }
    wait_for_port(api, &api_process).await;

    let client = crate::support::client();
    let sql =
        "SELECT platform, count(*) AS n FROM notifications GROUP BY platform ORDER BY platform";
    let ask = |body: Value| crate::analyst::query(&client, api, body);
    // Until both handlers have loaded the replica, one may answer 503; then every answer is
    // the same.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = loop {
        let (status, answer) = ask(serde_json::json!({ "sql": sql })).await;
        if status == 200 {
            break answer["rows"].clone();
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "{status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!expected.as_array().unwrap().is_empty());
    // Each query differs (its LIMIT), so that no answer comes from a handler's cache.
    let nth = |round: usize| format!("{sql} LIMIT {}", 1_000 + round);
    for round in 0..20 {
        let (status, answer) = ask(serde_json::json!({ "sql": nth(round) })).await;
        assert_eq!(
            (status.as_u16(), &answer["rows"]),
            (200, &expected),
            "round {round}"
        );
        // A detached query, asked back by id: the query API asks every handler.
        let (status, detached) = ask(
            serde_json::json!({ "sql": format!("{sql} LIMIT {}", 100 + round), "async": true }),
        )
        .await;
        assert!(status == 202 || status == 200, "{status} {detached}");
        let id = detached["query_id"].as_str().unwrap().to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = crate::support::get_json(&format!("http://{api}/v1/queries/{id}")).await;
            if state["state"] == "orange" {
                assert_eq!(state["rows"], expected);
                break;
            }
            assert!(
                state["state"] == "yellow" && Instant::now() < deadline,
                "{state}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A query API that finds its handler by name (`dns://`, as over a headless Kubernetes
    // Service) runs a detached query and finds its state.
    let named_api = free_addr();
    let mut named_env = env.clone();
    named_env.push(("SLUICE_QUERY_ADDR".into(), named_api.to_string()));
    named_env.push((
        "SLUICE_QUERY_HANDLER_ADDR".into(),
        format!("dns://localhost:{}", handlers[1].port()),
    ));
    let named = Sluice::spawn(&["query-api"], &named_env, dir.path(), "query-api-dns");
    wait_for_port(named_api, &named).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, detached) = crate::analyst::query(
            &client,
            named_api,
            serde_json::json!({ "sql": format!("{sql} LIMIT 77"), "async": true }),
        )
        .await;
        if status == 202 || status == 200 {
            let id = detached["query_id"].as_str().unwrap();
            let state = loop {
                let state =
                    crate::support::get_json(&format!("http://{named_api}/v1/queries/{id}")).await;
                if state["state"] != "yellow" {
                    break state;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(state["rows"], expected, "{state}");
            break;
        }
        // Until the name is resolved, there is no handler to ask.
        assert!(Instant::now() < deadline, "{status} {detached}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // kill -9 of one handler: every query is still answered, by the other.
    handler_processes[0].kill9();
    for round in 20..40 {
        let (status, answer) = ask(serde_json::json!({ "sql": nth(round) })).await;
        assert_eq!(
            (status.as_u16(), &answer["rows"]),
            (200, &expected),
            "round {round} after the kill:\n{}",
            api_process.log_text()
        );
    }
    drop(handler_processes);
}
