//! What an operator watches, through the real `sluice` binary on S3: every service's
//! `/metrics` under a known load, each counter moving exactly as the load says; readiness; the
//! access log as JSON lines; and a gRPC service's own metrics port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::analyst::query;
use crate::support::{
    All, BUCKET, S3Server, Sluice, client, free_addr, notification, post_all, start_all,
    wait_for_port,
};

/// The Prometheus text of one `/metrics`.
async fn scrape(addr: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let wanted = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().unwrap())
        })
        .sum()
}

fn has_series(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        l.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_shows_its_metrics_and_the_counters_move_as_the_load_says() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let All {
        sluice,
        ingest,
        api,
    } = start_all(
        s3.env(),
        &[
            ("SLUICE_LOG_FORMAT", "json".to_string()),
            ("SLUICE_RATE_LIMIT_PER_KEY", "20".to_string()),
        ],
        dir.path(),
        "all",
    )
    .await;

    // Before any load: the gauges read from state are there, the counters at zero.
    let before = scrape(ingest).await;
    assert!(before.contains("# HELP sluice_memory_entries"), "{before}");
    assert_eq!(sample(&before, "sluice_batches_total", &[]), 0.0);

    // The load: 1,000 notifications in 20 requests of 50, then a request with 2 duplicates and
    // 3 bad items, one without a key, and one of another content type.
    let progress = Arc::new(AtomicUsize::new(0));
    post_all(ingest, (0..1000).collect(), 50, 4, progress).await;
    let mixed = [
        notification(1000),
        notification(0),
        notification(1),
        json!({"platform": "x"}),
        json!({"platform": "x", "id": "1", "type": "t", "occurred_at": "yesterday"}),
        json!(17),
    ];
    let answer = client()
        .post(format!("http://{ingest}/v1/notifications"))
        .json(&mixed)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["accepted"], 1, "{answer}");
    let unauthenticated = reqwest::Client::new()
        .post(format!("http://{ingest}/v1/notifications"))
        .json(&notification(1))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    let wrong_type = client()
        .post(format!("http://{ingest}/v1/notifications"))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Everything reaches the replica: the consumer's counters say so, in the same process.
    let deadline = Instant::now() + Duration::from_secs(60);
    let during = loop {
        let text = scrape(ingest).await;
        if sample(&text, "sluice_replicated_rows_total", &[]) >= 1001.0
            && sample(&text, "sluice_memory_entries", &[("color", "green")]) >= 1001.0
        {
            break text;
        }
        assert!(Instant::now() < deadline, "not replicated:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(during.contains("# HELP sluice_http_requests_total"));
    let value = |name: &str, labels: &[(&str, &str)]| sample(&during, name, labels);
    assert_eq!(
        value(
            "sluice_ingest_notifications_total",
            &[("outcome", "accepted")]
        ),
        1001.0
    );
    assert_eq!(
        value(
            "sluice_ingest_notifications_total",
            &[("outcome", "duplicate")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "sluice_ingest_notifications_total",
            &[("outcome", "rejected")]
        ),
        3.0
    );
    assert_eq!(
        value("sluice_ingest_request_notifications_count", &[]),
        21.0
    );
    assert_eq!(
        value("sluice_ingest_request_notifications_sum", &[]),
        1006.0
    );
    assert_eq!(
        value("sluice_ingest_ack_seconds_count", &[("ack", "durable")]),
        21.0
    );
    let batches = value("sluice_batches_total", &[]);
    assert!((1.0..=21.0).contains(&batches), "{batches} batches");
    assert_eq!(value("sluice_batch_rows_sum", &[]), 1001.0);
    assert_eq!(value("sluice_append_seconds_count", &[]), batches);
    assert_eq!(
        value("sluice_segments_written_total", &[("result", "created")]),
        batches
    );
    assert_eq!(value("sluice_replicated_rows_total", &[]), 1001.0);
    assert_eq!(value("sluice_replicated_segments_total", &[]), batches);
    assert_eq!(value("sluice_replica_duplicates_dropped_total", &[]), 0.0);
    assert!(value("sluice_replica_commit_seconds_count", &[]) >= 1.0);
    assert_eq!(value("sluice_durable_to_green_seconds_count", &[]), batches);
    assert_eq!(value("sluice_memory_entries", &[("color", "gray")]), 0.0);
    assert_eq!(value("sluice_memory_entries", &[("color", "blue")]), 0.0);
    assert!(value("sluice_memory_used_bytes", &[]) > 0.0);
    assert_eq!(value("sluice_consumer_lease_held", &[]), 1.0);
    assert!(value("sluice_replica_version", &[]) >= 2.0);
    assert_eq!(value("sluice_dead_letters_total", &[]), 0.0);
    // Every segment is one put of the master store; the start-up probe of put-if-absent is
    // one refused.
    assert!(
        value(
            "sluice_object_store_requests_total",
            &[("op", "put"), ("outcome", "ok")]
        ) >= batches
    );
    assert!(
        value(
            "sluice_object_store_requests_total",
            &[("op", "put"), ("outcome", "already_exists")]
        ) >= 1.0
    );
    assert!(
        value(
            "sluice_object_store_request_seconds_count",
            &[("op", "list")]
        ) >= 1.0
    );
    assert!(has_series(&during, "sluice_replication_lag_seconds"));
    assert!(has_series(&during, "sluice_batch_in_flight_seconds"));
    let posts = [("service", "ingest-api"), ("route", "/v1/notifications")];
    assert_eq!(
        value(
            "sluice_http_requests_total",
            &[posts[0], posts[1], ("status", "200")]
        ),
        21.0
    );
    assert_eq!(
        value(
            "sluice_http_rejected_total",
            &[("service", "ingest-api"), ("reason", "unauthenticated")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "sluice_http_rejected_total",
            &[
                ("service", "ingest-api"),
                ("reason", "unsupported_media_type")
            ]
        ),
        1.0
    );

    // The read side: the same query until the cache answers it (a commit between two runs
    // makes the second a miss too); the counters say what the answers said.
    let sql =
        "SELECT platform, count(*) AS n FROM notifications GROUP BY platform ORDER BY platform";
    let (mut runs, mut cached) = (0, 0);
    while cached == 0 {
        let (status, answer) = query(&client(), api, json!({"sql": sql})).await;
        assert_eq!(status, 200, "{answer}");
        runs += 1;
        if answer["cached"] == true {
            cached += 1;
        }
        assert!(runs < 20, "never answered from the cache");
    }
    let read = scrape(api).await;
    let value = |name: &str, labels: &[(&str, &str)]| sample(&read, name, labels);
    let misses = (runs - cached) as f64;
    assert_eq!(
        value("sluice_query_cache_total", &[("result", "miss")]),
        misses
    );
    assert_eq!(value("sluice_query_cache_total", &[("result", "hit")]), 1.0);
    assert_eq!(
        value("sluice_query_seconds_count", &[("outcome", "ok")]),
        misses
    );
    assert_eq!(value("sluice_queries_running", &[]), 0.0);
    assert_eq!(value("sluice_queries_waiting", &[]), 0.0);
    // The handler's reads of the replica's Parquet files are object store requests too.
    assert!(
        value(
            "sluice_object_store_requests_total",
            &[("data", "replica"), ("outcome", "ok")]
        ) >= 1.0,
        "{read}"
    );
    // Its value may already be 0 again: a commit after the queries retires their answers.
    assert!(has_series(&read, "sluice_query_cache_bytes"));
    assert_eq!(
        value(
            "sluice_http_requests_total",
            &[
                ("service", "query-api"),
                ("route", "/v1/query"),
                ("status", "200")
            ]
        ),
        runs as f64
    );
    // A route template, never a caller's path.
    let (status, _) = query(&client(), api, json!({"sql": "SELEC nonsense"})).await;
    assert_eq!(status, 400);
    reqwest::get(format!("http://{api}/v1/no/such/path/secret-ish"))
        .await
        .unwrap();
    let read = scrape(api).await;
    assert!(!read.contains("secret-ish"));
    assert_eq!(
        sample(
            &read,
            "sluice_http_rejected_total",
            &[("service", "query-api"), ("reason", "not_found")]
        ),
        1.0
    );

    // A key past its rate (20 a second, bursts of 40) is told when to come back, and counted.
    let stats = client();
    let answers = futures::future::join_all(
        (0..100).map(|_| stats.get(format!("http://{ingest}/v1/stats")).send()),
    )
    .await;
    let mut limited = 0;
    for response in answers {
        let response = response.unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            limited += 1;
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value = response.json().await.unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(error.contains("more than 20 requests a second"), "{error}");
        } else {
            assert_eq!(response.status(), 200);
        }
    }
    assert!(
        limited >= 20,
        "only {limited} of 100 requests at once were limited"
    );
    let text = scrape(ingest).await;
    assert_eq!(
        sample(
            &text,
            "sluice_http_rejected_total",
            &[("service", "ingest-api"), ("reason", "rate_limited")]
        ),
        limited as f64
    );

    // Ready, and the access log is JSON lines that name the route.
    let ready = reqwest::get(format!("http://{ingest}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let log = sluice.log_text();
    let access: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|entry| entry["fields"]["message"] == "request")
        .collect();
    assert!(
        access
            .iter()
            .any(|entry| entry["fields"]["route"] == "/v1/notifications"
                && entry["fields"]["status"] == 200
                && entry["level"] == "INFO"),
        "no access log line for the POSTs in:\n{log}"
    );
    let not_json = log
        .lines()
        .filter(|line| serde_json::from_str::<Value>(line).is_err())
        .count();
    assert_eq!(not_json, 0, "every log line is JSON:\n{log}");

    // A gRPC service alone serves its metrics on --metrics-addr.
    let metrics_addr = free_addr();
    let mut publisher_env = s3.env();
    publisher_env.push(("SLUICE_PUBLISHER_ADDR".to_string(), free_addr().to_string()));
    publisher_env.push(("SLUICE_METRICS_ADDR".to_string(), metrics_addr.to_string()));
    let publisher = Sluice::spawn(&["publisher"], &publisher_env, dir.path(), "publisher");
    wait_for_port(metrics_addr, &publisher).await;
    // Its series appear once it has opened the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = scrape(metrics_addr).await;
        if text.contains("# HELP sluice_segments_written_total") {
            break text;
        }
        assert!(Instant::now() < deadline, "no publisher series in:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(
            &text,
            "sluice_segments_written_total",
            &[("result", "created")]
        ),
        0.0
    );
}
