//! The read path end to end: the real `sluice query-handler` and `sluice query-api` processes
//! over a replica on a real S3 server, checked against DuckDB on the same Parquet files; the
//! orange cache; bad, huge and runaway queries; and posts' state and audit trails read from
//! shared memory and the replica while the pipeline runs (`sluice all`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use deltalake::arrow::ipc::reader::StreamReader;
use serde_json::{Value, json};
use sluice_consumer::replica::Replica;

use crate::analyst::{assert_suite_matches, duckdb_suite, live_files, load, query, run_suite};
use crate::support::{
    All, BUCKET, S3Server, Sluice, free_addr, get_json, start_all, wait_for_port,
};

/// Query handlers and a query API, as separate processes, over the S3 server's replica.
pub(crate) struct ReadSide {
    pub(crate) handlers: Vec<Sluice>,
    _api: Sluice,
    pub(crate) api: SocketAddr,
    /// The first query handler's gRPC port, which also serves Flight SQL; the query API asks
    /// it alone.
    pub(crate) handler_addr: SocketAddr,
    /// Every query handler's gRPC port, in the order of `handlers`.
    pub(crate) handler_addrs: Vec<SocketAddr>,
    /// Every query handler's `/metrics` port, in the order of `handlers`.
    pub(crate) handler_metrics: Vec<SocketAddr>,
}

/// One query handler and a query API.
pub(crate) async fn start_read_side(
    s3: &S3Server,
    dir: &Path,
    settings: &[(&str, &str)],
) -> ReadSide {
    start_read_side_on(s3, dir, settings, 1).await
}

/// `handlers` query handlers and a query API that asks the first. With more than one, they
/// run big queries together (`SLUICE_QUERY_WORKERS`), the first coordinating.
pub(crate) async fn start_read_side_on(
    s3: &S3Server,
    dir: &Path,
    settings: &[(&str, &str)],
    handlers: usize,
) -> ReadSide {
    let handler_addrs: Vec<SocketAddr> = (0..handlers).map(|_| free_addr()).collect();
    let api = free_addr();
    let mut env = s3.env();
    env.push(("SLUICE_QUERY_ADDR".into(), api.to_string()));
    env.push(("SLUICE_REPLICA_REFRESH_MS".into(), "100".into()));
    if handlers > 1 {
        let workers: Vec<String> = handler_addrs.iter().map(ToString::to_string).collect();
        env.push(("SLUICE_QUERY_WORKERS".into(), workers.join(",")));
    }
    env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let handler_metrics: Vec<SocketAddr> = (0..handlers).map(|_| free_addr()).collect();
    let handler_env = |addr: SocketAddr| {
        let mut env = env.clone();
        env.push(("SLUICE_QUERY_HANDLER_ADDR".into(), addr.to_string()));
        env
    };
    let mut processes = Vec::new();
    for (i, (addr, metrics)) in handler_addrs.iter().zip(&handler_metrics).enumerate() {
        let name = if i == 0 {
            "query-handler".to_string()
        } else {
            format!("query-handler-{i}")
        };
        let mut env = handler_env(*addr);
        env.push(("SLUICE_METRICS_ADDR".into(), metrics.to_string()));
        processes.push(Sluice::spawn(&["query-handler"], &env, dir, &name));
    }
    let api_process = Sluice::spawn(
        &["query-api"],
        &handler_env(handler_addrs[0]),
        dir,
        "query-api",
    );
    for ((addr, metrics), process) in handler_addrs.iter().zip(&handler_metrics).zip(&processes) {
        wait_for_port(*addr, process).await;
        wait_for_port(*metrics, process).await;
    }
    wait_for_port(api, &api_process).await;
    // The handler answers 503 until it has loaded the replica.
    let client = crate::support::client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = query(&client, api, json!({"sql": "SELECT 1 AS one"})).await;
        if status.is_success() {
            break;
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "{status} {body}\n{}",
            processes[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ReadSide {
        handlers: processes,
        _api: api_process,
        api,
        handler_addr: handler_addrs[0],
        handler_addrs,
        handler_metrics,
    }
}

async fn replica_on(s3: &S3Server) -> Replica {
    let (url, options) = s3.table("replica");
    Replica::open_or_create(url, options).await.unwrap()
}

fn count_of(answer: &Value) -> u64 {
    answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[1].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_analyst_suite_over_a_million_notifications_matches_duckdb_and_repeats_from_the_cache()
{
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let mut replica = replica_on(&s3).await;
    let started = Instant::now();
    load(&mut replica, "generated", 1..101, 10).await;
    eprintln!(
        "1,000,000 notifications in the replica after {:?}",
        started.elapsed()
    );

    let dir = tempfile::tempdir().unwrap();
    let read = start_read_side(&s3, dir.path(), &[("SLUICE_QUERY_TIMEOUT_MS", "300000")]).await;
    let started = Instant::now();
    let (sluice, _) = run_suite(read.api).await;
    eprintln!("suite through Sluice in {:?}", started.elapsed());

    // DuckDB reads the very Parquet files of the table's current version, from the bucket's
    // directory on disk.
    let files = live_files(&replica, &s3.bucket_dir(BUCKET), BUCKET);
    let expected = duckdb_suite(dir.path(), &files);
    assert_suite_matches(dir.path(), "sluice", &expected, &sluice);

    // A repeat is answered from the cache, without DataFusion. (How fast a hit is, is for the
    // benchmarks; here it only has to skip the work the first answer did.)
    let client = crate::support::client();
    let sql =
        "SELECT platform, count(*) AS n FROM notifications GROUP BY platform ORDER BY platform";
    let (_, first) = query(&client, read.api, json!({"sql": sql})).await;
    assert_eq!(count_of(&first), 1_000_000, "{first}");
    let spaced = sql.replace(' ', "  ").replace("SELECT", "select");
    let (_, again) = query(&client, read.api, json!({"sql": spaced})).await;
    assert_eq!(
        again["cached"], true,
        "normalized SQL hits the cache: {again}"
    );
    assert_eq!(again["rows"], first["rows"]);
    assert_eq!(again["replica_version"], first["replica_version"]);
    let (hit, ran) = (
        again["elapsed_ms"].as_f64().unwrap(),
        first["elapsed_ms"].as_f64().unwrap(),
    );
    assert!(hit < ran, "a cache hit took {hit} ms, the query {ran} ms");
    let state = get_json(&format!(
        "http://{}/v1/queries/{}",
        read.api,
        again["query_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(state["state"], "orange");
    assert_eq!(state["rows"], first["rows"]);

    // CSV and Arrow carry the same answer.
    let csv = client
        .post(format!("http://{}/v1/query", read.api))
        .json(&json!({"sql": sql, "format": "csv"}))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers()["x-sluice-cached"], "true");
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("platform,n\n"), "{csv}");
    assert_eq!(
        csv.lines().count(),
        1 + first["rows"].as_array().unwrap().len()
    );
    let arrow = client
        .post(format!("http://{}/v1/query", read.api))
        .json(&json!({"sql": sql, "format": "arrow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        arrow.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = arrow.bytes().await.unwrap();
    let rows: usize = StreamReader::try_new(&bytes[..], None)
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, first["rows"].as_array().unwrap().len());

    // More data lands: the same query gets the new answer, never the cached old one.
    let before = first["replica_version"].as_u64().unwrap();
    load(&mut replica, "generated", 101..103, 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let fresh = loop {
        let (_, answer) = query(&client, read.api, json!({"sql": sql})).await;
        if answer["replica_version"].as_u64().unwrap() > before {
            break answer;
        }
        assert_eq!(count_of(&answer), 1_000_000, "an old version's answer");
        assert!(
            Instant::now() < deadline,
            "the handler never saw the new version"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(fresh["cached"], false);
    assert_eq!(count_of(&fresh), 1_020_000);

    // A detached query is yellow, then orange, with the same rows.
    // (Not the cached query: a cache hit is answered at once, detached or not.)
    let renamed = sql.replace("AS n", "AS total");
    let (status, detached) = query(&client, read.api, json!({"sql": renamed, "async": true})).await;
    assert_eq!(status, 202, "{detached}");
    let id = detached["query_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let state = get_json(&format!("http://{}/v1/queries/{id}", read.api)).await;
        if state["state"] != "yellow" {
            break state;
        }
        assert!(Instant::now() < deadline, "still yellow: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done["state"], "orange", "{done}");
    assert_eq!(done["rows"], fresh["rows"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_huge_and_runaway_queries_get_clear_answers_and_the_handler_keeps_serving() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let mut replica = replica_on(&s3).await;
    load(&mut replica, "generated", 1..6, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let read = start_read_side(
        &s3,
        dir.path(),
        &[
            ("SLUICE_QUERY_TIMEOUT_MS", "2000"),
            ("SLUICE_QUERY_MAX_RESULT_ROWS", "10000"),
        ],
    )
    .await;
    let client = crate::support::client();
    for (sql, status, says) in [
        ("SELEC platform FROM notifications", 400, "Expected"),
        ("SELECT nope FROM notifications", 400, "nope"),
        ("SELECT * FROM missing_table", 400, "missing_table"),
        ("SELECT sum(platform) FROM notifications", 400, "sum"),
        ("SELECT 1 / 0 AS x", 400, "Divide by zero"),
        ("DELETE FROM notifications", 400, "read-only"),
        (
            "INSERT INTO notifications SELECT * FROM notifications",
            400,
            "read-only",
        ),
        ("DROP TABLE notifications", 400, "read-only"),
        (
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/tmp'",
            400,
            "read-only",
        ),
        ("COPY (SELECT 1) TO '/tmp/x.csv'", 400, "read-only"),
        (
            "SET datafusion.execution.target_partitions = 1",
            400,
            "read-only",
        ),
        ("SELECT 1; SELECT 2", 400, "exactly one"),
        ("SELECT * FROM notifications", 422, "more than 10000 rows"),
        (
            // 2.5 billion pairs, each concatenated: no statistic answers this one.
            "SELECT max(length(a.id || b.id)) AS longest FROM notifications a CROSS JOIN notifications b",
            504,
            "did not finish within 2000 ms",
        ),
    ] {
        let started = Instant::now();
        let (got, body) = query(&client, read.api, json!({"sql": sql})).await;
        assert_eq!(got.as_u16(), status, "{sql}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(says),
            "{sql}: {error:?} does not say {says:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{sql} took {:?}",
            started.elapsed()
        );
    }
    for (body, says) in [
        (json!("SELECT 1"), "JSON object"),
        (
            json!({"sql": "SELECT 1", "format": "xml"}),
            "unknown format",
        ),
        (json!({"query": "SELECT 1"}), "sql"),
        (json!({"sql": "  "}), "empty"),
    ] {
        let (got, answer) = query(&client, read.api, body.clone()).await;
        assert_eq!(got, 400, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(says), "{answer}");
    }
    // A detached runaway: yellow (202) while it runs, then failed with the timeout's status.
    let runaway =
        "SELECT max(length(a.id || b.id)) AS l FROM notifications a CROSS JOIN notifications b";
    let (status, detached) = query(&client, read.api, json!({"sql": runaway, "async": true})).await;
    assert_eq!(status, 202, "{detached}");
    let url = format!(
        "http://{}/v1/queries/{}",
        read.api,
        detached["query_id"].as_str().unwrap()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, failed) = loop {
        let response = crate::support::client().get(&url).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        if status != 202 {
            break (status, body);
        }
        assert!(Instant::now() < deadline, "still yellow: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status, 504, "{failed}");
    assert_eq!(failed["state"], "failed");
    assert!(failed["error"].as_str().unwrap().contains("did not finish"));

    let missing = crate::support::client()
        .get(format!("http://{}/v1/queries/nope", read.api))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Still serving, and still right.
    let (status, answer) = query(
        &client,
        read.api,
        json!({"sql": "SELECT 'all' AS scope, count(*) AS n FROM notifications"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(count_of(&answer), 50_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_posts_state_and_trail_include_fresh_notifications_and_red_ones_come_from_the_replica() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let All {
        sluice: _sluice,
        ingest,
        api,
    } = start_all(
        s3.env(),
        &[("SLUICE_GREEN_TTL_SECS", "1".to_string())],
        dir.path(),
        "all",
    )
    .await;
    let client = crate::support::client();
    let post = |ack: &'static str, body: Value| {
        let client = client.clone();
        async move {
            let response = client
                .post(format!("http://{ingest}/v1/notifications?ack={ack}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(
                response.status().is_success(),
                "{}",
                response.text().await.unwrap()
            );
        }
    };
    let note = |id: &str, kind: &str, time: &str, extra: Value| {
        let mut n = json!({"platform": "bsky", "id": id, "type": kind, "occurred_at": time,
                           "post_id": "P1", "author_id": "u7"});
        n.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        n
    };

    // The post is created, replicated, and evicted from memory (red).
    post(
        "replicated",
        note(
            "c1",
            "post.created",
            "2026-11-20T10:00:00Z",
            json!({"text": "first", "metrics": {"likes": 0}}),
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let red = loop {
        let answer = get_json(&format!("http://{ingest}/v1/notifications/bsky/c1")).await;
        if answer["color"] == "red" {
            break answer;
        }
        assert!(Instant::now() < deadline, "c1 never turned red: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        red["notification"]["text"], "first",
        "read back from the replica"
    );
    let stats = get_json(&format!("http://{ingest}/v1/stats")).await;
    assert_eq!(stats["memory"]["evicted"], 1, "{stats}");

    // Two more arrive a moment before the reads: one staged (gray or just blue), one durable.
    post(
        "staged",
        note(
            "e1",
            "post.edited",
            "2026-11-20T11:00:00Z",
            json!({"text": "second"}),
        ),
    )
    .await;
    post(
        "durable",
        note(
            "l1",
            "post.liked",
            "2026-11-20T12:00:00Z",
            json!({"actor_id": "u9", "metrics": {"likes": 3}}),
        ),
    )
    .await;
    let state = get_json(&format!("http://{api}/v1/posts/bsky/P1")).await;
    assert_eq!(state["state"]["text"], "second", "{state}");
    assert_eq!(state["state"]["metric_totals"]["likes"], 3);
    assert_eq!(state["state"]["notification_count"], 3);
    assert_eq!(state["state"]["deleted"], false);
    assert_eq!(state["state"]["last_event_at"], "2026-11-20T12:00:00Z");

    let trail = get_json(&format!("http://{api}/v1/posts/bsky/P1/events")).await;
    let events: Vec<(&str, &str)> = trail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["notification"]["id"].as_str().unwrap(),
                e["color"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(events.len(), 3, "{trail}");
    assert_eq!(events[0], ("c1", "red"));
    assert_eq!(events[1].0, "e1");
    assert_eq!(events[2].0, "l1");
    assert!(
        ["gray", "blue", "green"].contains(&events[1].1),
        "e1 comes from memory: {trail}"
    );

    // The state at a past moment.
    let past = get_json(&format!(
        "http://{api}/v1/posts/bsky/P1?as_of=2026-11-20T10:30:00Z"
    ))
    .await;
    assert_eq!(past["state"]["text"], "first", "{past}");
    assert_eq!(past["state"]["notification_count"], 1);

    // Deleted, then asked about.
    post(
        "durable",
        note("d1", "post.deleted", "2026-11-20T13:00:00Z", json!({})),
    )
    .await;
    let state = get_json(&format!("http://{api}/v1/posts/bsky/P1")).await;
    assert_eq!(state["state"]["deleted"], true, "{state}");
    assert_eq!(state["state"]["deleted_at"], "2026-11-20T13:00:00Z");

    let unknown = crate::support::client()
        .get(format!("http://{api}/v1/posts/bsky/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let bad = crate::support::client()
        .get(format!("http://{api}/v1/posts/bsky/P1?as_of=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("RFC 3339"));
}
