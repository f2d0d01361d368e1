//! One committer, with failover: two consumer processes over one replica on a real S3 server.
//! One holds the replica's lease and commits; the other stands by, answers `Progress` with
//! UNAVAILABLE and reports NOT_SERVING on the gRPC health service, and takes over within
//! seconds of a kill -9 of the first. A committer paused past its lease (SIGSTOP) and resumed
//! does not commit again: the Delta log's committer epochs never go down. `sluice maintain`
//! refuses while a consumer holds the lease.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use deltalake::arrow::array::AsArray;
use serde_json::Value;
use sluice_proto::v1::ProgressRequest;
use sluice_proto::v1::consumer_client::ConsumerClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::scale_out::wait_until_replicated;
use crate::support::{BUCKET, S3Server, Sluice, free_addr, notification, wait_for_port};

const LEASE_TTL_MS: u64 = 2_000;

/// Whether the consumer at `addr` commits: it answers `Progress` (a standby answers
/// UNAVAILABLE) and the health service says SERVING (a standby: NOT_SERVING). The two are asked
/// one after the other, so a consumer that takes over or loses the lease in between disagrees
/// with itself once; they must agree within a second.
async fn is_committer(addr: SocketAddr) -> Option<bool> {
    crate::support::join_cluster();
    let channel = sluice_proto::lazy_channel(&addr.to_string()).ok()?;
    let mut disagreement = None;
    for _ in 0..20 {
        let progress = ConsumerClient::new(channel.clone())
            .progress(ProgressRequest {
                producer_id: "nobody".into(),
            })
            .await;
        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest {
                service: "sluice.v1.Consumer".into(),
            })
            .await
            .ok()?
            .into_inner()
            .status();
        match (progress, health) {
            (Ok(_), ServingStatus::Serving) => return Some(true),
            (Err(status), ServingStatus::NotServing)
                if status.code() == tonic::Code::Unavailable =>
            {
                return Some(false);
            }
            (Err(status), _) if status.code() != tonic::Code::Unavailable => return None,
            (progress, health) => disagreement = Some(format!("{progress:?} but {health:?}")),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "readiness and committing disagree for a second: {}",
        disagreement.unwrap_or_default()
    );
}

/// Waits until one of `consumers` commits and returns its index.
async fn committer(consumers: &[(SocketAddr, &Sluice)], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut found = Vec::new();
        for (i, (addr, _)) in consumers.iter().enumerate() {
            if is_committer(*addr).await == Some(true) {
                found.push(i);
            }
        }
        assert!(found.len() <= 1, "two consumers commit at once: {found:?}");
        if let [one] = found[..] {
            return one;
        }
        assert!(
            Instant::now() < deadline,
            "no consumer took the lease within {within:?}; logs:\n{}",
            consumers
                .iter()
                .map(|(_, c)| c.log_text())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn view(addrs: [SocketAddr; 2], consumers: &[Sluice; 2]) -> [(SocketAddr, &Sluice); 2] {
    [(addrs[0], &consumers[0]), (addrs[1], &consumers[1])]
}

/// Posts notifications `range` to `node` with `ack=durable`, retrying until acknowledged.
async fn post_durable(node: SocketAddr, range: std::ops::Range<usize>) {
    let body: Vec<String> = range.map(|i| notification(i).to_string()).collect();
    let client = crate::support::client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client
            .post(format!("http://{node}/v1/notifications?ack=durable"))
            .header("content-type", "application/x-ndjson")
            .body(body.join("\n"))
            .send()
            .await;
        if let Ok(answer) = answer
            && answer.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "a batch was never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The committer epoch each commit of the replica records, in commit order.
fn committer_epochs(s3: &S3Server) -> Vec<(u64, u64)> {
    let log = s3.bucket_dir(BUCKET).join("replica/_delta_log");
    let mut epochs = Vec::new();
    for entry in std::fs::read_dir(&log).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(version) = name
            .strip_suffix(".json")
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let action: Value = serde_json::from_str(line).unwrap();
            if action["txn"]["appId"] == "sluice:committer" {
                epochs.push((version, action["txn"]["version"].as_u64().unwrap()));
            }
        }
    }
    epochs.sort_unstable();
    epochs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_consumer_takes_over_and_a_paused_one_never_commits_again() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let (publisher_addr, node) = (free_addr(), free_addr());
    let consumer_addrs = [free_addr(), free_addr()];
    let consumer_list = format!("{},{}", consumer_addrs[0], consumer_addrs[1]);
    let mut env = s3.env();
    env.extend([
        ("SLUICE_PUBLISHER_ADDR".into(), publisher_addr.to_string()),
        ("SLUICE_CONSUMER_ADDR".into(), consumer_list),
        ("SLUICE_REPLICATE_MAX_AGE_MS".into(), "200".into()),
        ("SLUICE_LIST_INTERVAL_SECS".into(), "1".into()),
        ("SLUICE_LEASE_TTL_MS".into(), LEASE_TTL_MS.to_string()),
        ("SLUICE_INGEST_ADDR".into(), node.to_string()),
    ]);
    let consumer_env = |addr: SocketAddr| {
        let mut env = env.clone();
        env.push(("SLUICE_CONSUMER_ADDR".into(), addr.to_string()));
        env
    };
    let _publisher = Sluice::spawn(&["publisher"], &env, dir.path(), "publisher");
    let mut consumers = [
        Sluice::spawn(
            &["consumer"],
            &consumer_env(consumer_addrs[0]),
            dir.path(),
            "consumer-0",
        ),
        Sluice::spawn(
            &["consumer"],
            &consumer_env(consumer_addrs[1]),
            dir.path(),
            "consumer-1",
        ),
    ];
    let ingest = Sluice::spawn(&["ingest-api"], &env, dir.path(), "ingest");
    for (addr, process) in consumer_addrs.iter().zip(&consumers) {
        wait_for_port(*addr, process).await;
    }
    wait_for_port(node, &ingest).await;

    // One consumer commits, the other stands by; replication goes through the first.
    let first = committer(&view(consumer_addrs, &consumers), Duration::from_secs(20)).await;
    post_durable(node, 0..1_000).await;
    wait_until_replicated(&s3, &consumers[first]).await;

    // kill -9 of the committer: the standby takes over within seconds.
    consumers[first].kill9();
    let killed = Instant::now();
    let second = 1 - first;
    let took = committer(&view(consumer_addrs, &consumers), Duration::from_secs(20)).await;
    let takeover = killed.elapsed();
    assert_eq!(took, second);
    assert!(
        takeover < Duration::from_millis(3 * LEASE_TTL_MS),
        "the standby took over after {takeover:?}"
    );
    post_durable(node, 1_000..2_000).await;
    wait_until_replicated(&s3, &consumers[second]).await;

    // The killed one comes back as a standby. The committer is paused (SIGSTOP) past its lease:
    // the restarted one takes over and replicates; the paused one, resumed, stops committing.
    consumers[first] = Sluice::spawn(
        &["consumer"],
        &consumer_env(consumer_addrs[first]),
        dir.path(),
        "consumer-restarted",
    );
    wait_for_port(consumer_addrs[first], &consumers[first]).await;
    post_durable(node, 2_000..2_500).await;
    consumers[second].signal("STOP");
    let paused = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_committer(consumer_addrs[first]).await != Some(true) {
        assert!(
            Instant::now() < deadline,
            "no takeover from a paused committer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let paused_takeover = paused.elapsed();
    post_durable(node, 2_500..3_000).await;
    wait_until_replicated(&s3, &consumers[first]).await;
    consumers[second].signal("CONT");
    post_durable(node, 3_000..3_500).await;
    tokio::time::sleep(Duration::from_millis(2 * LEASE_TTL_MS)).await;
    let replica = wait_until_replicated(&s3, &consumers[first]).await;
    assert_eq!(
        committer(&view(consumer_addrs, &consumers), Duration::from_secs(5)).await,
        first,
        "the resumed consumer is a standby"
    );

    // Every commit carries its committer's epoch, and epochs never go down in commit order:
    // no commit from a holder that had lost the lease.
    let epochs = committer_epochs(&s3);
    assert!(
        epochs.windows(2).all(|w| w[0].1 <= w[1].1),
        "a stale committer committed: {epochs:?}"
    );
    let last_epoch = epochs.last().unwrap().1;
    assert!(
        last_epoch >= 3,
        "three terms at least: {epochs:?}\n{}",
        consumers
            .iter()
            .map(Sluice::log_text)
            .collect::<Vec<_>>()
            .join("\n----\n")
    );

    // Each notification once.
    let ctx = deltalake::datafusion::prelude::SessionContext::new();
    ctx.register_table(
        "notifications",
        replica.table().table_provider().await.unwrap(),
    )
    .unwrap();
    let counts = ctx
        .sql("SELECT count(*), count(DISTINCT id) FROM notifications")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let count = |i: usize| {
        counts[0]
            .column(i)
            .as_primitive::<deltalake::arrow::datatypes::Int64Type>()
            .value(0)
    };
    assert_eq!((count(0), count(1)), (3_500, 3_500));

    // `sluice maintain` beside a live committer refuses and names it.
    let mut maintain = Sluice::spawn(&["maintain"], &env, dir.path(), "maintain");
    let code = maintain.wait();
    let log = maintain.log_text();
    assert_ne!(code, 0, "maintain ran beside a live committer:\n{log}");
    assert!(log.contains("lease is held by"), "{log}");

    eprintln!(
        "committer failover: kill -9 takeover in {takeover:?}, SIGSTOP takeover in \
         {paused_takeover:?} (lease {LEASE_TTL_MS} ms); committer epochs {:?}",
        epochs
            .iter()
            .map(|e| e.1)
            .collect::<std::collections::BTreeSet<_>>()
    );
}
