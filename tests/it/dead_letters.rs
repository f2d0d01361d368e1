//! Poison pills, through the real `sluice` binary on S3: a batch the publisher refuses for good
//! and a master segment that cannot be decoded are both kept as dead letters with their
//! reasons, the node and every other producer keep going, and an operator lists the letters and
//! replays the refused batch into the table, once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sluice_core::Notification;
use sluice_core::master::MasterStore;
use sluice_core::producer::ProducerIdentity;
use sluice_proto::v1;
use sluice_proto::v1::publisher_client::PublisherClient;
use sluice_proto::v1::{AppendRequest, DeadLetterRequest};

use crate::analyst::query;
use crate::support::{All, BUCKET, S3Server, TEST_KEY, client, free_addr, get_json, start_all};

/// A key that may read but not administer.
const READ_KEY: &str = "sk_fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn note(id: &str) -> Value {
    json!({"platform": "dl", "id": id, "type": "post.created",
           "occurred_at": "2026-11-30T10:00:00Z", "text": format!("notification {id}")})
}

async fn post(ingest: SocketAddr, id: &str, ack: &str) -> (StatusCode, Value) {
    let response = client()
        .post(format!("http://{ingest}/v1/notifications?ack={ack}"))
        .json(&note(id))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

async fn call(method: reqwest::Method, url: String, key: Option<&str>) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `id → copies` of the `dl` platform's notifications in the replica.
async fn table(api: SocketAddr) -> Value {
    let sql =
        "SELECT id, count(*) AS n FROM notifications WHERE platform = 'dl' GROUP BY id ORDER BY id";
    let (status, answer) = query(&client(), api, json!({"sql": sql})).await;
    assert_eq!(status, 200, "{answer}");
    answer["rows"].clone()
}

async fn wait_for_table(api: SocketAddr, want: Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = table(api).await;
        if rows == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the table holds {rows}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_batch_and_an_undecodable_segment_become_dead_letters_and_nothing_waits_on_them()
{
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let publisher_addr = free_addr();
    let mut env = s3.env();
    let reader = sluice_auth::key_line("reader", "read", READ_KEY).unwrap();
    for (key, value) in env.iter_mut() {
        if key == "SLUICE_KEYS" {
            *value = format!("{value};{reader}");
        }
    }
    let All {
        sluice: _sluice,
        ingest,
        api,
    } = start_all(
        env,
        &[
            ("SLUICE_PUBLISHER_ADDR", publisher_addr.to_string()),
            ("SLUICE_LIST_INTERVAL_SECS", "1".to_string()),
        ],
        dir.path(),
        "all",
    )
    .await;

    // The node's first batch tells its producer id.
    let (status, answer) = post(ingest, "dl-1", "durable").await;
    assert_eq!(status, 200, "{answer}");
    let stats = get_json(&format!("http://{ingest}/v1/stats")).await;
    let producer = stats["producer_id"].as_str().unwrap().to_string();

    // Poison 1: a different batch already sits at the node's next key (what two processes
    // sharing a producer id, or a bug, would leave). Its Append is ALREADY_EXISTS for good.
    let store = s3.store(BUCKET);
    let master = MasterStore::new(store.clone());
    let intruder = Notification::from_json(&note("intruder").to_string(), 0).unwrap();
    master
        .write_segment(&producer, 2, Arc::from(vec![intruder]))
        .await
        .unwrap();
    let (status, answer) = post(ingest, "dl-2", "durable").await;
    assert_eq!(status, 500, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(
        error.contains("dead letter") && error.contains("sending them again"),
        "{error}"
    );
    assert!(
        !error.contains(&producer),
        "a 5xx shows no internals: {error}"
    );

    // Poison 2: a segment that is not Avro at all, the first of another producer, whose second
    // segment is fine.
    let ghost = "ghost-0123456789abcdef0123456789abcdef";
    store
        .put(
            &Path::from(format!("master/{ghost}/{:020}.avro", 1)),
            PutPayload::from_static(b"these bytes are not an Avro segment"),
        )
        .await
        .unwrap();
    let after_ghost = Notification::from_json(&note("ghost-2").to_string(), 0).unwrap();
    master
        .write_segment(ghost, 2, Arc::from(vec![after_ghost]))
        .await
        .unwrap();

    // The node goes on: its next batch reaches the replica, and so does everything that
    // follows a poisoned place in either sequence.
    let (status, answer) = post(ingest, "dl-3", "replicated").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_table(
        api,
        json!([["dl-1", 1], ["dl-3", 1], ["ghost-2", 1], ["intruder", 1]]),
    )
    .await;

    // A batch refused as invalid leaves its place empty: the dead letter fills it, so the
    // producer's next batch still replicates. Driven here through the publisher's own gRPC
    // calls, as an ingest node does, by a producer of the test's own.
    crate::support::join_cluster();
    let mut publisher =
        PublisherClient::new(sluice_proto::lazy_channel(&publisher_addr.to_string()).unwrap());
    let probe = ProducerIdentity::new("probe");
    let append = |sequence: u64, id: &str| AppendRequest {
        producer_id: probe.id.clone(),
        sequence,
        notifications: vec![v1::Notification::from(
            &Notification::from_json(&note(id).to_string(), 0).unwrap(),
        )],
        producer_proof: probe.proof.clone(),
    };
    publisher.append(append(1, "probe-1")).await.unwrap();
    let letter = |proof: &str| DeadLetterRequest {
        producer_id: probe.id.clone(),
        producer_proof: proof.to_string(),
        sequence: 2,
        reason: "InvalidArgument: notification 0: what a stricter publisher refused".to_string(),
        notifications_json: serde_json::to_vec(&json!([note("probe-2")])).unwrap(),
    };
    let forged = publisher.dead_letter(letter("")).await.unwrap_err();
    assert_eq!(forged.code(), tonic::Code::PermissionDenied, "{forged:?}");
    let kept = publisher.dead_letter(letter(&probe.proof)).await.unwrap();
    assert_eq!(
        kept.into_inner().letter_id,
        format!("refused/{}/2", probe.id)
    );
    let filler = master
        .read_segment(MasterStore::segment_path(&probe.id, 2).unwrap().as_ref())
        .await
        .unwrap();
    assert!(filler.records.is_empty());
    publisher.append(append(3, "probe-3")).await.unwrap();
    wait_for_table(
        api,
        json!([
            ["dl-1", 1],
            ["dl-3", 1],
            ["ghost-2", 1],
            ["intruder", 1],
            ["probe-1", 1],
            ["probe-3", 1]
        ]),
    )
    .await;

    // The letters, for an operator only.
    let letters_url = format!("http://{ingest}/v1/admin/dead-letters");
    let (status, _) = call(reqwest::Method::GET, letters_url.clone(), None).await;
    assert_eq!(status, 401);
    let (status, answer) = call(reqwest::Method::GET, letters_url.clone(), Some(READ_KEY)).await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("admin"),
        "{answer}"
    );
    let (status, listed) = call(reqwest::Method::GET, letters_url.clone(), Some(TEST_KEY)).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["total"], 3, "{listed}");
    let letters = listed["letters"].as_array().unwrap();
    let of = |producer: &str| {
        letters
            .iter()
            .find(|l| l["producer"] == producer)
            .unwrap_or_else(|| panic!("no letter of {producer} in {listed}"))
            .clone()
    };
    assert_eq!(of(&probe.id)["kind"], "refused");
    let refused = of(&producer);
    assert_eq!(refused["kind"], "refused");
    assert_eq!(
        (&refused["producer"], &refused["sequence"], &refused["rows"]),
        (&json!(producer), &json!(2), &json!(1))
    );
    let reason = refused["reason"].as_str().unwrap();
    assert!(
        reason.contains("AlreadyExists") && reason.contains("different batch"),
        "{reason}"
    );
    let quarantined = of(ghost);
    assert_eq!(quarantined["kind"], "quarantined");
    assert_eq!(
        (&quarantined["producer"], &quarantined["sequence"]),
        (&json!(ghost), &json!(1))
    );
    assert!(
        quarantined["reason"].as_str().unwrap().contains("invalid"),
        "{quarantined}"
    );

    // One letter holds its rows as a platform sent them.
    let refused_url = format!("{letters_url}/refused/{producer}/2");
    let (status, letter) = call(reqwest::Method::GET, refused_url.clone(), Some(TEST_KEY)).await;
    assert_eq!(status, 200, "{letter}");
    assert_eq!(letter["notifications"][0]["id"], "dl-2", "{letter}");
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{letters_url}/refused/{producer}/99"),
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(status, 404);
    let (status, answer) = call(
        reqwest::Method::GET,
        format!("{letters_url}/elsewhere/{producer}/2"),
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(status, 400, "{answer}");

    // A quarantined segment has nothing to replay; the refused batch is replayed, once.
    let (status, answer) = call(
        reqwest::Method::POST,
        format!("{letters_url}/quarantined/{ghost}/1/replay"),
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = call(
        reqwest::Method::POST,
        format!("{refused_url}/replay"),
        Some(READ_KEY),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    let (status, answer) = call(
        reqwest::Method::POST,
        format!("{refused_url}/replay"),
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["replayed"], &answer["accepted"]),
        (&json!(1), &json!(1))
    );
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{refused_url}/replay"),
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(status, 404, "a replayed letter is gone from the list");
    let (_, listed) = call(reqwest::Method::GET, letters_url.clone(), Some(TEST_KEY)).await;
    assert_eq!(listed["total"], 2, "{listed}");
    let (status, _) = call(
        reqwest::Method::GET,
        format!("{letters_url}/replayed/{producer}/2"),
        Some(TEST_KEY),
    )
    .await;
    assert_eq!(status, 200, "a replayed letter is kept under replayed/");

    wait_for_table(
        api,
        json!([
            ["dl-1", 1],
            ["dl-2", 1],
            ["dl-3", 1],
            ["ghost-2", 1],
            ["intruder", 1],
            ["probe-1", 1],
            ["probe-3", 1]
        ]),
    )
    .await;
    // And the node still takes writes.
    let (status, answer) = post(ingest, "dl-4", "replicated").await;
    assert_eq!(status, 200, "{answer}");
    wait_for_table(
        api,
        json!([
            ["dl-1", 1],
            ["dl-2", 1],
            ["dl-3", 1],
            ["dl-4", 1],
            ["ghost-2", 1],
            ["intruder", 1],
            ["probe-1", 1],
            ["probe-3", 1]
        ]),
    )
    .await;
}
