//! Faults that must lose nothing: every service as its own process, two of each where the
//! service scales, on a real S3 server reached through a proxy that can take it away or slow it
//! down. A platform behind a load balancer sends batches with `ack=durable`, retrying a batch on
//! the other ingest node when the first does not answer, and re-sends 1% of its notifications
//! later. Meanwhile a seeded chaos loop kills (SIGKILL) a random process of every kind and
//! starts it again, S3 goes away for 20 s, and S3 turns slow (every chunk of bytes held 150 ms)
//! for 10 s. The run ends by reading the master and the replica back: every acknowledged
//! notification found, none lost, none twice.
//!
//! CI runs `faults_lose_nothing` (bounded: 20,000 notifications, a kill every 1.5 s); the soak
//! is `faults_soak`, figures in bench/README.md:
//!
//! ```sh
//! SLUICE_FAULTS_TOTAL=200000 SLUICE_FAULTS_SEED=7 cargo test --test it faults_soak -- --ignored --nocapture
//! ```

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sluice_core::master::MasterStore;

use crate::scale_out::{BalancedLoad, assert_master_holds_all, wait_until_replicated};
use crate::support::{
    BUCKET, FaultProxy, S3Server, Sluice, count_master, free_addr, wait_for_port,
};

/// One service process: how to start it again after a kill.
struct Slot {
    name: String,
    kind: &'static str,
    args: Vec<&'static str>,
    env: Vec<(String, String)>,
    addr: SocketAddr,
    process: Sluice,
    starts: usize,
}

impl Slot {
    fn start(
        name: &str,
        args: &[&'static str],
        env: Vec<(String, String)>,
        addr: SocketAddr,
        dir: &Path,
    ) -> Slot {
        let process = Sluice::spawn(args, &env, dir, name);
        Slot {
            name: name.to_string(),
            kind: args[0],
            args: args.to_vec(),
            env,
            addr,
            process,
            starts: 1,
        }
    }

    fn restart(&mut self, dir: &Path) {
        self.process.kill9();
        self.starts += 1;
        let log = format!("{}-{}", self.name, self.starts);
        self.process = Sluice::spawn(&self.args, &self.env, dir, &log);
    }
}

/// What a supervisor (Kubernetes, systemd) does: starts again a process that exited by itself,
/// e.g. one that could not reach S3 at start. Counts the exits by kind and last log line.
fn supervise(slots: &mut [Slot], dir: &Path, exits: &mut BTreeMap<String, usize>) {
    for slot in slots {
        if slot.process.exited() {
            let log = slot.process.log_text();
            let last_words = log.lines().last().unwrap_or_default();
            let last_words: String = last_words.chars().skip(28).take(160).collect();
            *exits
                .entry(format!("{}: {last_words}", slot.kind))
                .or_default() += 1;
            slot.restart(dir);
        }
    }
}

/// What a fault run saw.
struct FaultReport {
    acknowledged: usize,
    resent: usize,
    retries: usize,
    kills: BTreeMap<String, usize>,
    /// Processes that exited by themselves and were started again, by kind and last log line.
    exits: BTreeMap<String, usize>,
    master_copies: usize,
    replica_rows: i64,
    lost: usize,
    duplicated: i64,
    seconds: f64,
}

async fn run_faults(total: usize, kill_every: Duration, seed: u64) -> FaultReport {
    let started = Instant::now();
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let proxy = FaultProxy::start(s3.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let publishers = [free_addr(), free_addr()];
    let consumers = [free_addr(), free_addr()];
    let handlers = [free_addr(), free_addr()];
    let nodes = [free_addr(), free_addr()];
    let query_api = free_addr();
    let list = |addrs: &[SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut base = s3.env_through(&proxy);
    base.extend([
        ("SLUICE_PUBLISHER_ADDR".to_string(), list(&publishers)),
        ("SLUICE_CONSUMER_ADDR".to_string(), list(&consumers)),
        ("SLUICE_QUERY_HANDLER_ADDR".to_string(), list(&handlers)),
        ("SLUICE_REPLICATE_MAX_AGE_MS".to_string(), "300".to_string()),
        ("SLUICE_LIST_INTERVAL_SECS".to_string(), "2".to_string()),
        ("SLUICE_LEASE_TTL_MS".to_string(), "2000".to_string()),
        ("SLUICE_REPLICA_REFRESH_MS".to_string(), "500".to_string()),
        (
            "SLUICE_INGEST_URLS".to_string(),
            format!("http://{},http://{}", nodes[0], nodes[1]),
        ),
    ]);
    let with = |extra: &[(&str, String)]| {
        let mut env = base.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let mut slots = Vec::new();
    for (i, addr) in publishers.iter().enumerate() {
        let env = with(&[("SLUICE_PUBLISHER_ADDR", addr.to_string())]);
        slots.push(Slot::start(
            &format!("publisher-{i}"),
            &["publisher"],
            env,
            *addr,
            dir.path(),
        ));
    }
    for (i, addr) in consumers.iter().enumerate() {
        let env = with(&[("SLUICE_CONSUMER_ADDR", addr.to_string())]);
        slots.push(Slot::start(
            &format!("consumer-{i}"),
            &["consumer"],
            env,
            *addr,
            dir.path(),
        ));
    }
    for (i, addr) in handlers.iter().enumerate() {
        let env = with(&[("SLUICE_QUERY_HANDLER_ADDR", addr.to_string())]);
        slots.push(Slot::start(
            &format!("query-handler-{i}"),
            &["query-handler"],
            env,
            *addr,
            dir.path(),
        ));
    }
    for (name, addr) in ["a", "b"].iter().zip(nodes) {
        let env = with(&[
            ("SLUICE_NODE_ID", name.to_string()),
            ("SLUICE_INGEST_ADDR", addr.to_string()),
        ]);
        slots.push(Slot::start(
            &format!("ingest-{name}"),
            &["ingest-api"],
            env,
            addr,
            dir.path(),
        ));
    }
    let env = with(&[("SLUICE_QUERY_ADDR", query_api.to_string())]);
    slots.push(Slot::start(
        "query-api",
        &["query-api"],
        env,
        query_api,
        dir.path(),
    ));
    for slot in &slots {
        wait_for_port(slot.addr, &slot.process).await;
    }

    let load = BalancedLoad::new(total, 500, seed);
    let (resent, batches) = (load.resent, load.batches());
    let (done, retries) = (load.done.clone(), load.retries.clone());
    let sending = load.send(nodes.to_vec(), 4);

    // S3 away for 20 s once a quarter of the batches are in, slow for 10 s once half are.
    let proxy = Arc::new(proxy);
    let s3_faults = {
        let (proxy, done) = (proxy.clone(), done.clone());
        tokio::spawn(async move {
            while done.load(Ordering::Relaxed) < batches / 4 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            proxy.go_down();
            tokio::time::sleep(Duration::from_secs(20)).await;
            proxy.come_back();
            while done.load(Ordering::Relaxed) < batches / 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            proxy.slow_down(Duration::from_millis(150));
            tokio::time::sleep(Duration::from_secs(10)).await;
            proxy.slow_down(Duration::ZERO);
        })
    };

    // Meanwhile, a kill every `kill_every`: every kind of service in turn, in a random order
    // each round, a random copy of it; the killed process starts again 0.2-1.5 s later. Until
    // every batch is acknowledged, both S3 faults are over, and every kind was killed.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kinds: Vec<&'static str> = slots.iter().map(|s| s.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut round: Vec<&'static str> = Vec::new();
    let mut kills = BTreeMap::<String, usize>::new();
    let mut exits = BTreeMap::<String, usize>::new();
    let mut next_kill = Instant::now() + kill_every;
    while !(sending.is_finished() && s3_faults.is_finished() && kills.len() == kinds.len()) {
        if Instant::now() >= next_kill {
            if round.is_empty() {
                round = kinds.clone();
                round.shuffle(&mut rng);
            }
            let kind = round.pop().unwrap();
            let copies: Vec<usize> = (0..slots.len())
                .filter(|&i| slots[i].kind == kind)
                .collect();
            let slot = &mut slots[copies[rng.random_range(0..copies.len())]];
            slot.process.kill9();
            tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_500))).await;
            slot.restart(dir.path());
            *kills.entry(kind.to_string()).or_default() += 1;
            next_kill = Instant::now() + kill_every;
        }
        // A supervisor (Kubernetes, systemd) starts again a process that exited by itself, e.g.
        // one that could not reach S3 at start.
        for slot in &mut slots {
            if slot.process.exited() {
                let last_words = slot.process.log_text();
                let last_words = last_words.lines().last().unwrap_or_default().to_string();
                slot.restart(dir.path());
                *exits
                    .entry(format!("{}: {last_words}", slot.kind))
                    .or_default() += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sending.await.unwrap();
    s3_faults.await.unwrap();
    supervise(&mut slots, dir.path(), &mut exits);
    let acknowledged_batches = done.load(Ordering::Relaxed);
    assert_eq!(acknowledged_batches, batches);

    // Read back: the master holds every notification (some more than once: the raw log), the
    // replica each exactly once.
    let consumer_slot = slots.iter().find(|s| s.name == "consumer-0").unwrap();
    let replica = wait_until_replicated(&s3, &consumer_slot.process).await;
    let master = count_master(&MasterStore::new(s3.store(BUCKET))).await;
    let expected = assert_master_holds_all(&master, total);
    let master_copies = master.values().map(|n| n - 1).sum();

    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    ctx.register_table(
        "notifications",
        replica.table().table_provider().await.unwrap(),
    )
    .unwrap();
    let keys = ctx
        .sql("SELECT platform, id, count(*) AS copies FROM notifications GROUP BY platform, id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut in_replica = HashSet::new();
    let (mut rows, mut duplicated) = (0i64, 0i64);
    for batch in &keys {
        use deltalake::arrow::array::AsArray;
        let platform = deltalake::arrow::compute::cast(
            batch.column(0),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let id = deltalake::arrow::compute::cast(
            batch.column(1),
            &deltalake::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let copies = batch
            .column(2)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        for row in 0..batch.num_rows() {
            in_replica.insert((
                platform.as_string::<i32>().value(row).to_string(),
                id.as_string::<i32>().value(row).to_string(),
            ));
            rows += copies.value(row);
            duplicated += copies.value(row) - 1;
        }
    }
    let lost = expected.difference(&in_replica).count();

    // The read side came through too: the query API answers the count over the replica.
    let client = crate::support::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = crate::analyst::query(
            &client,
            query_api,
            json!({"sql": "SELECT count(*) AS n FROM notifications"}),
        )
        .await;
        if status == 200 && answer["rows"] == json!([[rows]]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query API answers {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    FaultReport {
        acknowledged: total,
        resent,
        retries: retries.load(Ordering::Relaxed),
        kills,
        exits,
        master_copies,
        replica_rows: rows,
        lost,
        duplicated,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn print(report: &FaultReport) {
    println!(
        "faults: {} acknowledged ({} re-sent on purpose), {} client retries, kills {:?}, \
         exits restarted {:?}, S3 away 20 s and slow 10 s; master copies {}, replica rows {}, \
         lost {}, duplicated {}; {:.0} s",
        report.acknowledged,
        report.resent,
        report.retries,
        report.kills,
        report.exits,
        report.master_copies,
        report.replica_rows,
        report.lost,
        report.duplicated,
        report.seconds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing() {
    let report = run_faults(20_000, Duration::from_millis(1_500), 1).await;
    print(&report);
    assert_eq!((report.lost, report.duplicated), (0, 0));
    assert_eq!(report.replica_rows, 20_000);
    assert!(
        report.kills.values().sum::<usize>() >= 3,
        "{:?}",
        report.kills
    );
}

/// The long run: `SLUICE_FAULTS_TOTAL` notifications (200,000 by default), a kill every
/// second, seed `SLUICE_FAULTS_SEED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a soak of many kills; see bench/README.md"]
async fn faults_soak() {
    let total = std::env::var("SLUICE_FAULTS_TOTAL")
        .ok()
        .map_or(200_000, |n| n.parse().unwrap());
    let seed = std::env::var("SLUICE_FAULTS_SEED")
        .ok()
        .map_or(7, |n| n.parse().unwrap());
    let report = run_faults(total, Duration::from_secs(1), seed).await;
    print(&report);
    assert_eq!((report.lost, report.duplicated), (0, 0));
    assert_eq!(report.replica_rows, total as i64);
}
