//! The ingest API's HTTP contract, driven through its router without a socket, against a real
//! publisher on loopback gRPC that writes to a real directory.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sluice_core::master::MasterStore;
use sluice_core::storage::{Storage, StorageUrl};
use sluice_ingest_api::{AppState, Config, Peers};
use sluice_publisher::PublisherService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Harness {
    router: Router,
    state: AppState,
    master: MasterStore,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_publisher(listener: TcpListener, storage: &Storage, stop: CancellationToken) {
    let service = PublisherService::open(storage).await.unwrap();
    tokio::spawn(sluice_publisher::serve(
        listener,
        service,
        stop.cancelled_owned(),
    ));
}

async fn harness(config: Config) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageUrl::Local(dir.path().to_path_buf()))
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    start_publisher(listener, &storage, stop.clone()).await;
    // No consumer in these tests: nothing turns green here (the workspace tests cover it). A
    // query handler reads the (empty) replica, where misses of shared memory are looked up.
    sluice_consumer::open_replica(&storage, "replica")
        .await
        .unwrap();
    let handler = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handler_addr = handler.local_addr().unwrap().to_string();
    tokio::spawn({
        let (storage, stop) = (storage.clone(), stop.clone());
        async move {
            let config = sluice_query_handler::Config::for_tests();
            sluice_query_handler::serve(handler, &storage, "replica", config, None, stop).await
        }
    });
    let peers = Peers {
        publisher: addr,
        consumer: closed_addr(),
        query_handler: handler_addr,
    };
    let (state, workers) = sluice_ingest_api::build(
        config,
        &peers,
        std::sync::Arc::new(sluice_auth::Keys::open()),
    )
    .unwrap();
    tokio::spawn(workers.batcher.run(stop.clone()));
    tokio::spawn(workers.green.run(stop.clone()));
    Harness {
        router: sluice_ingest_api::router(state.clone()),
        state,
        master: MasterStore::new(storage.store.clone()),
        _dir: dir,
        stop,
    }
}

/// An address nothing listens on.
fn closed_addr() -> String {
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    reserved.local_addr().unwrap().to_string()
}

fn note(id: &str) -> Value {
    json!({"platform": "mastodon", "id": id, "type": "post.created",
           "occurred_at": "2026-11-23T07:00:00Z", "post_id": "p1", "text": "hello"})
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, retry_after, body)
}

async fn post(
    router: &Router,
    query: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let body: Body = body.into();
    let mut request = Request::post(format!("/v1/notifications{query}"))
        .header(header::CONTENT_TYPE, content_type);
    // As a client (hyper) sends it, when the body's size is known.
    if let Some(length) = axum::body::HttpBody::size_hint(&body).exact() {
        request = request.header(header::CONTENT_LENGTH, length);
    }
    let request = request.body(body).unwrap();
    let (status, _, body) = send(router, request).await;
    (status, body)
}

async fn get(router: &Router, path: &str) -> (StatusCode, Value) {
    let (status, _, body) = send(router, Request::get(path).body(Body::empty()).unwrap()).await;
    (status, body)
}

async fn stored_ids(master: &MasterStore) -> Vec<String> {
    let mut ids = Vec::new();
    for segment in master.list_segments().await.unwrap() {
        let segment = master.read_segment(&segment.path).await.unwrap();
        ids.extend(segment.records.into_iter().map(|r| r.id));
    }
    ids.sort();
    ids
}

#[tokio::test]
async fn a_durable_post_is_blue_and_in_the_master_store_when_answered() {
    let h = harness(Config::for_tests()).await;
    let (status, body) = post(&h.router, "", "application/json", note("n1").to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"ack": "durable", "accepted": 1, "duplicates": [], "rejected": []})
    );
    // Durable means stored before the answer: no waiting here.
    assert_eq!(stored_ids(&h.master).await, vec!["n1"]);

    let (status, body) = get(&h.router, "/v1/notifications/mastodon/n1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["color"], "blue");
    assert_eq!(body["notification"]["text"], "hello");
    assert_eq!(body["notification"]["occurred_at"], "2026-11-23T07:00:00Z");

    // The replica is read once the query handler has loaded it; until then the miss is a 503.
    let (status, body) = loop {
        let (status, body) = get(&h.router, "/v1/notifications/mastodon/nope").await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("mastodon/nope") && error.contains("nor in the replica"),
        "{error}"
    );

    let (status, body) = get(&h.router, "/v1/memory/posts/mastodon/p1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["notifications"][0]["color"], "blue");
    assert_eq!(body["notifications"][0]["notification"]["id"], "n1");
    let (_, body) = get(&h.router, "/v1/memory/posts/mastodon/other").await;
    assert_eq!(body["notifications"], json!([]));
}

#[tokio::test]
async fn a_batch_reports_duplicates_and_rejects_and_stores_the_rest_once() {
    let h = harness(Config::for_tests()).await;
    post(&h.router, "", "application/json", note("a").to_string()).await;
    let mut bad = note("bad");
    bad["occurred_at"] = json!("last tuesday");
    let batch = json!([note("a"), note("b"), bad, note("b"), note("c")]);
    let (status, body) = post(&h.router, "", "application/json", batch.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(
        body["duplicates"],
        json!([
            {"index": 0, "platform": "mastodon", "id": "a", "color": "blue"},
            {"index": 3, "platform": "mastodon", "id": "b", "color": "blue"},
        ])
    );
    assert_eq!(body["rejected"][0]["index"], 2);
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("occurred_at")
    );
    assert_eq!(stored_ids(&h.master).await, vec!["a", "b", "c"]);
}

#[tokio::test]
async fn an_occurred_at_outside_the_window_around_now_is_refused_naming_the_bound() {
    let h = harness(Config {
        max_event_age_days: 30,
        max_event_lead_secs: 3_600,
        ..Config::for_tests()
    })
    .await;
    let at = |offset: chrono::Duration| {
        let mut n = note(&format!("at{}", offset.num_seconds()));
        n["occurred_at"] = json!((chrono::Utc::now() + offset).to_rfc3339());
        n
    };
    let batch = json!([
        at(chrono::Duration::days(-29)),
        at(chrono::Duration::days(-31)),
        at(chrono::Duration::minutes(50)),
        at(chrono::Duration::minutes(70)),
        at(chrono::Duration::days(-20_000)),
        at(chrono::Duration::zero()),
    ]);
    let (status, body) = post(&h.router, "", "application/json", batch.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 3, "{body}");
    let refused: Vec<(u64, String)> = body["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(refused.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3, 4]);
    assert!(
        refused[0].1.contains("more than 30 days in the past")
            && refused[0].1.contains("--max-event-age-days"),
        "{refused:?}"
    );
    assert!(
        refused[1]
            .1
            .contains("more than 3600 seconds in the future")
            && refused[1].1.contains("--max-event-lead-secs"),
        "{refused:?}"
    );
    assert!(refused[2].1.contains("--max-event-age-days"), "{refused:?}");
    // A request of only such notifications is a 400, and nothing of it is stored.
    let (status, body) = post(
        &h.router,
        "",
        "application/json",
        at(chrono::Duration::days(-400)).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let mut stored = stored_ids(&h.master).await;
    stored.sort();
    let mut expected = vec!["at-2505600".to_string(), "at0".into(), "at3000".into()];
    expected.sort();
    assert_eq!(stored, expected);
}

#[tokio::test]
async fn a_request_body_counts_against_the_memory_budget_while_it_is_served() {
    let h = harness(Config {
        memory_bytes: 100_000,
        max_body_bytes: 1 << 20,
        ..Config::for_tests()
    })
    .await;
    // 150 kB of notifications (ids padded) cannot be read into a 100 kB budget.
    let big: Vec<Value> = (0..300)
        .map(|i| {
            let mut n = note(&format!("big{i}"));
            n["text"] = json!("x".repeat(400));
            n
        })
        .collect();
    let body = serde_json::to_vec(&big).unwrap();
    assert!(body.len() > 100_000);
    let (status, answer) = post(&h.router, "", "application/json", body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("shared memory is full"),
        "{answer}"
    );
    // A body without a length is held at the largest accepted, 1 MB: also refused here.
    let chunked = Body::from_stream(futures::stream::iter([Ok::<_, std::io::Error>(
        note("chunked").to_string(),
    )]));
    let (status, answer) = post(&h.router, "", "application/json", chunked).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    // A small one passes, and what was held for it is given back: only its entry stays.
    let (status, answer) = post(&h.router, "", "application/json", note("small").to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, stats) = get(&h.router, "/v1/stats").await;
    let one = sluice_core::Notification::from_json(&note("small").to_string(), 0)
        .unwrap()
        .approx_size();
    assert_eq!(stats["memory"]["used_bytes"], one, "{stats}");
}

#[tokio::test]
async fn ndjson_is_accepted_line_by_line() {
    let h = harness(Config::for_tests()).await;
    let body = format!("{}\n{{broken\n\n{}\n", note("x"), note("y"));
    let (status, body) = post(&h.router, "", "application/x-ndjson", body).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["line"], 2);
    assert_eq!(stored_ids(&h.master).await, vec!["x", "y"]);
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_accepted_data_is_unaffected() {
    let mut config = Config::for_tests();
    config.max_body_bytes = 64 * 1024;
    config.max_items = 100;
    let h = harness(config).await;
    let (status, _) = post(&h.router, "", "application/json", note("kept").to_string()).await;
    assert_eq!(status, StatusCode::OK);

    let with = |field: &str, value: Value| {
        let mut n = note("x");
        n[field] = value;
        n.to_string()
    };
    let without = |field: &str| {
        let mut n = note("x");
        n.as_object_mut().unwrap().remove(field);
        n.to_string()
    };
    let nested: Value =
        serde_json::from_str(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap();
    let deep = with("attributes", json!({"a": nested})).replace(
        "[1]",
        &format!("{}1{}", "[".repeat(20_000), "]".repeat(20_000)),
    );
    let many = json!(vec![note("m"); 101]).to_string();
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "",
            "application/json",
            b"{\"platform\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "not valid JSON",
        ),
        (
            "",
            "application/json",
            without("occurred_at").into_bytes(),
            StatusCode::BAD_REQUEST,
            "missing field `occurred_at`",
        ),
        (
            "",
            "application/json",
            with("id", json!(42)).into_bytes(),
            StatusCode::BAD_REQUEST,
            "`id`: invalid type: integer `42`",
        ),
        (
            "",
            "application/json",
            with("tags", json!("x")).into_bytes(),
            StatusCode::BAD_REQUEST,
            "`tags`: invalid type",
        ),
        (
            "",
            "application/json",
            with("metrics", json!({"likes": "3"})).into_bytes(),
            StatusCode::BAD_REQUEST,
            "`metrics.likes`",
        ),
        (
            "",
            "application/json",
            with("occurred_at", json!("2026-13-45T00:00:00Z")).into_bytes(),
            StatusCode::BAD_REQUEST,
            "not an RFC 3339 timestamp",
        ),
        (
            "",
            "application/json",
            with("text", json!("é".repeat(20_000))).into_bytes(),
            StatusCode::BAD_REQUEST,
            "`text` is 40000 bytes; the limit is 32768",
        ),
        (
            "",
            "application/json",
            with("platform", json!("")).into_bytes(),
            StatusCode::BAD_REQUEST,
            "`platform` must not be empty",
        ),
        (
            "",
            "application/json",
            with("attributes", json!([1])).into_bytes(),
            StatusCode::BAD_REQUEST,
            "`attributes` must be a JSON object",
        ),
        (
            "",
            "application/json",
            vec![b'{'; 70 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than this server accepts",
        ),
        (
            "",
            "application/json",
            b"{\"platform\": \"\xff\xfe\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "not valid UTF-8",
        ),
        (
            "",
            "application/json",
            deep.into_bytes(),
            StatusCode::BAD_REQUEST,
            "recursion limit",
        ),
        (
            "",
            "application/json",
            many.into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "the limit is 100",
        ),
        (
            "",
            "application/json",
            b"".to_vec(),
            StatusCode::BAD_REQUEST,
            "no notifications",
        ),
        (
            "",
            "text/plain",
            note("y").to_string().into_bytes(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/x-ndjson",
        ),
        (
            "?ack=eventually",
            "application/json",
            note("y").to_string().into_bytes(),
            StatusCode::BAD_REQUEST,
            "unknown ack level",
        ),
    ];
    for (query, content_type, body, expected, reason) in cases {
        let (status, answer) = post(&h.router, query, content_type, body).await;
        assert_eq!(status, expected, "{reason}: {answer}");
        let text = answer.to_string();
        assert!(text.contains(reason), "expected {reason:?} in {text}");
    }

    let (status, body) = get(&h.router, "/v1/notifications/mastodon/kept").await;
    assert_eq!(
        (status, body["color"].as_str()),
        (StatusCode::OK, Some("blue"))
    );
    assert_eq!(
        h.state.memory.stats().entries,
        1,
        "no bad input was admitted"
    );
    assert_eq!(stored_ids(&h.master).await, vec!["kept"]);
    let (status, _) = get(&h.router, "/v2/unknown").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn staged_answers_at_once_and_turns_blue_later() {
    let h = harness(Config::for_tests()).await;
    let (status, body) = post(
        &h.router,
        "?ack=staged",
        "application/json",
        note("s").to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["ack"], "staged");
    wait_for_color(&h.router, "s", "blue").await;
    assert_eq!(stored_ids(&h.master).await, vec!["s"]);
}

#[tokio::test]
async fn a_full_memory_answers_503_with_retry_after_and_keeps_what_it_holds() {
    let mut config = Config::for_tests();
    let one = sluice_core::Notification::from_json(&note("x").to_string(), 0)
        .unwrap()
        .approx_size();
    config.memory_bytes = one * 3;
    let h = harness(config).await;
    let (status, _) = post(
        &h.router,
        "",
        "application/json",
        json!([note("1"), note("2")]).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let two = json!([note("3"), note("4")]).to_string();
    let request = Request::post("/v1/notifications")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, two.len())
        .body(Body::from(two))
        .unwrap();
    let (status, retry_after, body) = send(&h.router, request).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("shared memory is full")
    );
    assert_eq!(stored_ids(&h.master).await, vec!["1", "2"]);
    assert_eq!(h.state.memory.stats().entries, 2);

    // Full of notifications nothing can evict: not ready, and /readyz says why.
    let (status, _) = get(&h.router, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = post(&h.router, "", "application/json", note("3").to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get(&h.router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("shared memory is full"),
        "{body}"
    );
}

#[tokio::test]
async fn a_node_whose_durable_batches_wait_too_long_for_the_replica_is_not_ready() {
    let mut config = Config::for_tests();
    config.ready_max_lag_secs = 1;
    let h = harness(config).await;
    let (status, body) = get(&h.router, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replication_lag_ms"], 0);
    let (status, _) = post(&h.router, "", "application/json", note("1").to_string()).await;
    assert_eq!(status, StatusCode::OK);
    // No consumer in this harness: the batch stays blue, and its wait grows past the bound.
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let (status, body) = get(&h.router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("waited 1 s for the replica (bound: --ready-max-lag-secs 1)"),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_publisher_delays_durability_and_a_retry_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageUrl::Local(dir.path().to_path_buf()))
        .await
        .unwrap();
    // Reserve a port, then leave it closed until the publisher starts there.
    let reserved = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let mut config = Config::for_tests();
    config.ack_timeout_secs = 1;
    let peers = Peers {
        publisher: addr.to_string(),
        consumer: closed_addr(),
        query_handler: closed_addr(),
    };
    let (state, workers) = sluice_ingest_api::build(
        config,
        &peers,
        std::sync::Arc::new(sluice_auth::Keys::open()),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    tokio::spawn(workers.batcher.run(stop.clone()));
    let router = sluice_ingest_api::router(state);

    let (status, body) = post(&router, "", "application/json", note("late").to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("retrying this request is safe")
    );
    let (_, body) = get(&router, "/v1/notifications/mastodon/late").await;
    assert_eq!(body["color"], "gray");
    let (status, body) = get(&router, "/v1/notifications/mastodon/unknown").await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no query handler to ask"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("replica cannot be consulted")
    );
    let (status, _) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    start_publisher(
        TcpListener::bind(addr).await.unwrap(),
        &storage,
        stop.clone(),
    )
    .await;
    // The client's retry is a duplicate that waits for the original to be stored.
    let (status, body) = post(&router, "", "application/json", note("late").to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicates"][0]["color"], "blue");
    let master = MasterStore::new(storage.store.clone());
    assert_eq!(stored_ids(&master).await, vec!["late"]);
    let (status, body) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["publisher"]["put_if_absent_enforced"], true);

    // Without a consumer nothing becomes green: ack=replicated times out, durably stored.
    let (status, body) = post(
        &router,
        "?ack=replicated",
        "application/json",
        note("r").to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not replicated after 1s (is the consumer reachable?)")
    );
    let (_, body) = get(&router, "/v1/notifications/mastodon/r").await;
    assert_eq!(body["color"], "blue");
}

async fn wait_for_color(router: &Router, id: &str, color: &str) {
    for _ in 0..200 {
        let (_, body) = get(router, &format!("/v1/notifications/mastodon/{id}")).await;
        if body["color"] == color {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never turned {color}");
}
