//! The CloudEvents HTTP binding end to end, on a real `sluice all` with auth on: the same
//! notification sent natively and as a CloudEvent in each mode (structured, batched, binary)
//! is stored the same, field for field, in shared memory and in the replica; a retried event
//! is a duplicate and stored once; and a key without write scope for the event's source is
//! refused.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::analyst::query;
use crate::support::{TEST_KEY, client, get_json, local_env, start_all};

const PLATFORM: &str = "cetest";
/// A key that may write only `bsky`'s notifications.
const BSKY_KEY: &str = "sk_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// The extensions every event carries, as the notification keeps them.
fn kept() -> Value {
    json!({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
           "comment": "café 100%"})
}

fn native(id: &str) -> Value {
    json!({
        "platform": PLATFORM, "id": id, "type": "post.created",
        "occurred_at": "2026-11-30T10:00:00.25Z", "post_id": "p1",
        "author_id": "a1", "actor_id": "b2", "text": "héllo wörld", "lang": "pt-BR",
        "tags": ["rust", "ce"], "metrics": {"likes": 3, "shares": 1},
        "attributes": {"k": [1, {"v": null}], "s": "x"},
    })
}

/// The native notification's fields that a CloudEvent carries as `data`.
fn data() -> Value {
    let mut data = native("");
    for field in ["platform", "id", "type", "occurred_at", "post_id"] {
        data.as_object_mut().unwrap().remove(field);
    }
    data
}

fn event(source: &str, id: &str) -> Value {
    let mut event = json!({
        "specversion": "1.0", "id": id, "source": source, "type": "post.created",
        "time": "2026-11-30T10:00:00.25Z", "subject": "p1", "data": data(),
    });
    for (name, value) in kept().as_object().unwrap() {
        event[name] = value.clone();
    }
    event
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Structured,
    Batched,
    Binary,
}

/// POSTs `ids` (one, or several for a batch) from `source` as CloudEvents in `mode`, with
/// `key`; returns the status and the answer.
async fn send(
    ingest: SocketAddr,
    mode: Mode,
    source: &str,
    ids: &[&str],
    key: &str,
) -> (StatusCode, Value) {
    let request = reqwest::Client::new()
        .post(format!("http://{ingest}/v1/notifications?ack=replicated"))
        .bearer_auth(key);
    let request = match mode {
        Mode::Structured => {
            assert_eq!(ids.len(), 1);
            request
                .header("content-type", "application/cloudevents+json")
                .body(event(source, ids[0]).to_string())
        }
        Mode::Batched => {
            let events: Vec<Value> = ids.iter().map(|id| event(source, id)).collect();
            request
                .header("content-type", "application/cloudevents-batch+json")
                .body(Value::from(events).to_string())
        }
        Mode::Binary => {
            assert_eq!(ids.len(), 1);
            request
                .header("content-type", "application/json")
                .header("ce-specversion", "1.0")
                .header("ce-id", ids[0])
                .header("ce-source", source)
                .header("ce-type", "post.created")
                .header("ce-time", "2026-11-30T10:00:00.25Z")
                .header("ce-subject", "p1")
                .header("ce-traceparent", kept()["traceparent"].as_str().unwrap())
                // Header values are percent-encoded beyond printable ASCII, and '%' itself.
                .header("ce-comment", "caf%C3%A9 100%25")
                .body(data().to_string())
        }
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A stored notification without what may differ between two copies of one notification
/// (its id, when it was received) and with its extensions taken out of `attributes`: the
/// rest, and the extensions.
fn comparable(mut notification: Value) -> (Value, Value) {
    let object = notification.as_object_mut().unwrap();
    object.remove("id");
    object.remove("received_at");
    // The replica keeps attributes as JSON text; the API answers an object.
    let mut attributes = match object.remove("attributes") {
        Some(Value::String(text)) => serde_json::from_str(&text).unwrap(),
        Some(other) => other,
        None => Value::Null,
    };
    let extensions = attributes
        .as_object_mut()
        .and_then(|a| a.remove("cloudevents"))
        .unwrap_or(Value::Null);
    object.insert("attributes".into(), attributes);
    (notification, extensions)
}

/// The replica's rows of [`PLATFORM`], each an object by column, ordered by id.
async fn replica_rows(api: SocketAddr) -> Vec<Value> {
    let sql = format!(
        "SELECT id, platform, type, occurred_at, post_id, author_id, actor_id, text, lang, tags, \
         metrics, attributes FROM notifications WHERE platform = '{PLATFORM}' ORDER BY id"
    );
    let (status, answer) = query(&client(), api, json!({"sql": sql})).await;
    assert_eq!(status, 200, "{answer}");
    let columns: Vec<String> = answer["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| match row {
            Value::Array(values) => Value::Object(
                columns
                    .iter()
                    .cloned()
                    .zip(values.iter().cloned())
                    .collect(),
            ),
            object => object.clone(),
        })
        .collect()
}

/// Waits until the replica answers `expected` rows of [`PLATFORM`] (the query handler sees a
/// new replica version within its refresh interval).
async fn replica_rows_when(api: SocketAddr, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = replica_rows(api).await;
        if rows.len() >= expected || Instant::now() > deadline {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cloudevents_mode_stores_the_native_notification_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = local_env();
    let keys = env.iter_mut().find(|(k, _)| k == "SLUICE_KEYS").unwrap();
    keys.1.push('\n');
    keys.1
        .push_str(&sluice_auth::key_line("bsky-writer", "write:bsky", BSKY_KEY).unwrap());
    let all = start_all(env, &[], dir.path(), "cloudevents").await;
    let (ingest, api) = (all.ingest, all.api);

    let answer = client()
        .post(format!("http://{ingest}/v1/notifications?ack=replicated"))
        .json(&native("native"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());

    let modes: [(Mode, &[&str]); 3] = [
        (Mode::Structured, &["ce-structured"]),
        (Mode::Batched, &["ce-batched-1", "ce-batched-2"]),
        (Mode::Binary, &["ce-binary"]),
    ];
    for (mode, ids) in modes {
        let (status, answer) = send(ingest, mode, PLATFORM, ids, TEST_KEY).await;
        assert_eq!(status, 200, "{mode:?}: {answer}");
        assert_eq!(answer["accepted"], ids.len(), "{mode:?}: {answer}");
        assert_eq!(answer["ack"], "replicated", "{mode:?}: {answer}");
        assert_eq!(answer["rejected"], json!([]), "{mode:?}: {answer}");
    }

    // Read back from the ingest API: the native notification, apart from id and extensions.
    let read = |id: &str| {
        let url = format!("http://{ingest}/v1/notifications/{PLATFORM}/{id}");
        async move { get_json(&url).await }
    };
    let (native_stored, none) = comparable(read("native").await["notification"].clone());
    assert_eq!(
        none,
        Value::Null,
        "the native notification has no extensions"
    );
    assert_eq!(
        native_stored["attributes"],
        native("")["attributes"],
        "{native_stored}"
    );
    let ce_ids = ["ce-batched-1", "ce-batched-2", "ce-binary", "ce-structured"];
    for id in ce_ids {
        let answer = read(id).await;
        assert_eq!(answer["notification"]["id"], id, "{answer}");
        let (stored, extensions) = comparable(answer["notification"].clone());
        assert_eq!(stored, native_stored, "{id}");
        assert_eq!(extensions, kept(), "{id}");
    }

    // A retry in each mode is a duplicate.
    for (mode, ids) in modes {
        let (status, answer) = send(ingest, mode, PLATFORM, ids, TEST_KEY).await;
        assert_eq!(status, 200, "{mode:?} retried: {answer}");
        assert_eq!(answer["accepted"], 0, "{mode:?} retried: {answer}");
        let duplicates: Vec<&str> = answer["duplicates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(duplicates, ids, "{mode:?} retried: {answer}");
    }

    // With auth on, a key that may not write the event's source is refused, in every mode,
    // and nothing of the request is stored; the same key may send its own platform's events.
    for (mode, id) in [
        (Mode::Structured, "refused-structured"),
        (Mode::Batched, "refused-batched"),
        (Mode::Binary, "refused-binary"),
    ] {
        let (status, answer) = send(ingest, mode, PLATFORM, &[id], BSKY_KEY).await;
        assert_eq!(status, 403, "{mode:?}: {answer}");
        assert!(
            answer.to_string().contains("write:cetest"),
            "{mode:?}: {answer}"
        );
        let (status, answer) = send(ingest, mode, "bsky", &[id], BSKY_KEY).await;
        assert_eq!(status, 200, "{mode:?} on bsky: {answer}");
        assert_eq!(answer["accepted"], 1, "{mode:?} on bsky: {answer}");
    }

    // A refused event is answered as the native format answers a refused item.
    let mut no_time = event(PLATFORM, "no-time");
    no_time.as_object_mut().unwrap().remove("time");
    let answer = client()
        .post(format!("http://{ingest}/v1/notifications"))
        .header("content-type", "application/cloudevents+json")
        .body(no_time.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["accepted"], 0, "{answer}");
    let reason = answer["rejected"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("no `time`"), "{answer}");

    // The replica, after one more notification that is replicated only after every retry
    // was answered: each notification once, and each CloudEvent the native one.
    let answer = client()
        .post(format!("http://{ingest}/v1/notifications?ack=replicated"))
        .json(&native("zz-last"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    let rows = replica_rows_when(api, 6).await;
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "ce-batched-1",
            "ce-batched-2",
            "ce-binary",
            "ce-structured",
            "native",
            "zz-last"
        ]
    );
    let (native_row, none) = comparable(rows[4].clone());
    assert_eq!(none, Value::Null);
    assert_eq!(native_row["text"], "héllo wörld", "{native_row}");
    assert_eq!(native_row["attributes"], native("")["attributes"]);
    for row in &rows[..4] {
        let (row_fields, extensions) = comparable(row.clone());
        assert_eq!(row_fields, native_row, "{row}");
        assert_eq!(extensions, kept(), "{row}");
    }
}
