//! API keys with scopes, through the real `sluice` binary on S3 (where auth is on by default):
//! every refusal with its status, every authorized call, a squatting attempt, keys made by
//! `sluice key`, and services that refuse to start open where they must not.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{All, BUCKET, S3Server, Sluice, free_addr, start_all, wait_for_port};

/// A key made by `sluice key`, and its line for the keys file.
fn make_key(name: &str, scopes: &str) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["key", "--name", name, "--scope", scopes])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let field = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {stdout}"))
            .trim()
            .to_string()
    };
    let (key, line) = (field("key:"), field("line:"));
    assert!(key.starts_with("sk_") && key.len() == 67, "{key}");
    assert!(
        !line.contains(&key),
        "the line must hold the hash, not the key"
    );
    (key, line)
}

struct Answer {
    status: StatusCode,
    body: Value,
    challenge: Option<String>,
}

async fn call(
    method: reqwest::Method,
    url: String,
    authorization: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        body,
        challenge,
    }
}

fn note(platform: &str, id: &str, text: &str) -> Value {
    json!({"platform": platform, "id": id, "type": "post.created",
           "occurred_at": "2026-11-30T10:00:00Z", "post_id": "p1", "text": text})
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Asserts the refusal's status, and that its message names `needle`.
fn refused(answer: &Answer, status: StatusCode, needle: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    let error = answer.body["error"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "{needle:?} not in {error:?}");
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            answer
                .challenge
                .as_deref()
                .is_some_and(|c| c.starts_with("Bearer")),
            "a 401 says how to authenticate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_are_scoped_to_platforms_reads_and_administration() {
    let (acme, acme_line) = make_key("acme", "write:x");
    let (insta, insta_line) = make_key("insta", "write:instagram,write:threads");
    let (analyst, analyst_line) = make_key("analyst", "read");
    let (ops, ops_line) = make_key("ops", "admin");

    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let keys_file = dir.path().join("keys");
    std::fs::write(
        &keys_file,
        format!("# the test's keys\n{acme_line}\n{insta_line}\n{analyst_line}\n"),
    )
    .unwrap();
    let env: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .filter(|(k, _)| k != "SLUICE_KEYS")
        .collect();
    let All {
        sluice,
        ingest,
        api,
    } = start_all(
        env,
        &[
            // Keys from the file and from the environment add up.
            ("SLUICE_KEYS_FILE", keys_file.display().to_string()),
            ("SLUICE_KEYS", ops_line.clone()),
        ],
        dir.path(),
        "all",
    )
    .await;
    let write_url = format!("http://{ingest}/v1/notifications?ack=durable");
    let post = |key: Option<String>, body: Value| {
        let url = write_url.clone();
        async move { call(reqwest::Method::POST, url, key.as_deref(), Some(body)).await }
    };
    let get = |url: String, key: Option<String>| async move {
        call(reqwest::Method::GET, url, key.as_deref(), None).await
    };

    // Writes: each refusal with its status and what it lacks.
    let x1 = note("x", "x-1", "from acme");
    refused(
        &post(None, x1.clone()).await,
        StatusCode::UNAUTHORIZED,
        "Authorization: Bearer",
    );
    refused(
        &post(Some(bearer(&format!("{acme}0"))), x1.clone()).await,
        StatusCode::UNAUTHORIZED,
        "not one this server knows",
    );
    refused(
        &post(Some(format!("Basic {acme}")), x1.clone()).await,
        StatusCode::UNAUTHORIZED,
        "must be `Bearer <key>`",
    );
    refused(
        &post(Some(bearer(&analyst)), x1.clone()).await,
        StatusCode::FORBIDDEN,
        "write:x",
    );
    refused(
        &post(Some(bearer(&ops)), x1.clone()).await,
        StatusCode::FORBIDDEN,
        "write:x",
    );
    refused(
        &post(Some(bearer(&insta)), x1.clone()).await,
        StatusCode::FORBIDDEN,
        "write:x",
    );
    let accepted = post(Some(bearer(&acme)), x1.clone()).await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    assert_eq!(accepted.body["accepted"], 1);

    // A request that names another platform is refused whole: nothing of it is stored.
    let mixed = json!([note("x", "x-2", "mixed"), note("instagram", "i-0", "mixed")]);
    refused(
        &post(Some(bearer(&acme)), mixed).await,
        StatusCode::FORBIDDEN,
        "write:instagram",
    );

    // Squatting: acme cannot take instagram's id, so instagram's own write is stored, not
    // answered as a duplicate of acme's.
    let squat = note("instagram", "i-1", "squatted by acme");
    refused(
        &post(Some(bearer(&acme)), squat).await,
        StatusCode::FORBIDDEN,
        "write:instagram",
    );
    let real = post(
        Some(bearer(&insta)),
        note("instagram", "i-1", "the real one"),
    )
    .await;
    assert_eq!(real.status, StatusCode::OK, "{}", real.body);
    assert_eq!(real.body["accepted"], 1, "{}", real.body);
    assert_eq!(real.body["duplicates"], json!([]), "{}", real.body);
    let threads = post(
        Some(bearer(&insta)),
        note("threads", "t-1", "a second platform"),
    )
    .await;
    assert_eq!(threads.body["accepted"], 1, "{}", threads.body);

    // Reading a notification back: a reader, or that platform's writer.
    let by_id =
        |platform: &str, id: &str| format!("http://{ingest}/v1/notifications/{platform}/{id}");
    let read = get(by_id("instagram", "i-1"), Some(bearer(&insta))).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["notification"]["text"], "the real one");
    let read = get(by_id("instagram", "i-1"), Some(bearer(&analyst))).await;
    assert_eq!(read.body["notification"]["text"], "the real one");
    let read = get(by_id("x", "x-1"), Some(bearer(&acme))).await;
    assert_eq!(read.body["notification"]["text"], "from acme");
    refused(
        &get(by_id("instagram", "i-1"), Some(bearer(&acme))).await,
        StatusCode::FORBIDDEN,
        "write:instagram",
    );
    refused(
        &get(by_id("instagram", "i-1"), None).await,
        StatusCode::UNAUTHORIZED,
        "API key",
    );
    let missing = get(by_id("x", "x-2"), Some(bearer(&acme))).await;
    assert_eq!(
        missing.status,
        StatusCode::NOT_FOUND,
        "the refused mixed request stored nothing: {}",
        missing.body
    );

    // Stats need a key, any key; the probes need none and show no producer id.
    refused(
        &get(format!("http://{ingest}/v1/stats"), None).await,
        StatusCode::UNAUTHORIZED,
        "API key",
    );
    let stats = get(format!("http://{ingest}/v1/stats"), Some(bearer(&ops))).await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.body);
    assert!(stats.body["producer_id"].is_string());
    assert_eq!(
        get(format!("http://{ingest}/healthz"), None).await.status,
        StatusCode::OK
    );
    let ready = get(format!("http://{ingest}/readyz"), None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    assert!(ready.body.get("producer_id").is_none(), "{}", ready.body);

    // The query API: only `read`.
    let query_url = format!("http://{api}/v1/query");
    let sql = json!({"sql": "SELECT platform, count(*) AS n FROM notifications GROUP BY platform ORDER BY platform"});
    let query = |key: Option<String>| {
        let (url, sql) = (query_url.clone(), sql.clone());
        async move { call(reqwest::Method::POST, url, key.as_deref(), Some(sql)).await }
    };
    refused(
        &query(None).await,
        StatusCode::UNAUTHORIZED,
        "Authorization: Bearer",
    );
    refused(
        &query(Some(bearer("sk_nope"))).await,
        StatusCode::UNAUTHORIZED,
        "not one this server knows",
    );
    refused(
        &query(Some(bearer(&acme))).await,
        StatusCode::FORBIDDEN,
        "read",
    );
    refused(
        &query(Some(bearer(&ops))).await,
        StatusCode::FORBIDDEN,
        "read",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let rows = loop {
        let answer = query(Some(bearer(&analyst))).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        if answer.body["rows"].as_array().is_some_and(|r| r.len() == 3) {
            break answer.body["rows"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not replicated: {}",
            answer.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(rows, json!([["instagram", 1], ["threads", 1], ["x", 1]]));

    let detached = call(
        reqwest::Method::POST,
        query_url.clone(),
        Some(&bearer(&analyst)),
        Some(json!({"sql": "SELECT 1 AS one", "async": true})),
    )
    .await;
    let query_id = detached.body["query_id"].as_str().unwrap().to_string();
    let state_url = format!("http://{api}/v1/queries/{query_id}");
    refused(
        &get(state_url.clone(), Some(bearer(&acme))).await,
        StatusCode::FORBIDDEN,
        "read",
    );
    let state = get(state_url, Some(bearer(&analyst))).await;
    assert!(
        state.status == StatusCode::OK || state.status == StatusCode::ACCEPTED,
        "{}",
        state.body
    );

    // A post's trail: the query API passes the reader's key on to the ingest node, whose
    // memory then counts (a refused memory read would show as a warning).
    let post_url = format!("http://{api}/v1/posts/x/p1/events");
    refused(
        &get(post_url.clone(), Some(bearer(&acme))).await,
        StatusCode::FORBIDDEN,
        "read",
    );
    refused(
        &get(post_url.clone(), None).await,
        StatusCode::UNAUTHORIZED,
        "API key",
    );
    let trail = get(post_url, Some(bearer(&analyst))).await;
    assert_eq!(trail.status, StatusCode::OK, "{}", trail.body);
    assert_eq!(
        trail.body["sources"]["warnings"],
        json!([]),
        "{}",
        trail.body
    );
    assert_eq!(
        trail.body["events"].as_array().unwrap().len(),
        1,
        "{}",
        trail.body
    );
    assert_eq!(
        get(format!("http://{api}/healthz"), None).await.status,
        StatusCode::OK
    );

    // Neither a key nor its hash reaches the log; key names do.
    let log = sluice.log_text();
    for (key, line) in [
        (&acme, &acme_line),
        (&insta, &insta_line),
        (&analyst, &analyst_line),
        (&ops, &ops_line),
    ] {
        assert!(!log.contains(key.as_str()), "a key is in the log");
        let hash = line.rsplit("sha256:").next().unwrap();
        assert!(!log.contains(hash), "a key's hash is in the log");
    }
    assert!(log.contains("auth is on"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_refuse_to_run_open_unless_told_and_the_embedded_default_says_it_is_open() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let without_keys: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .filter(|(k, _)| k != "SLUICE_KEYS")
        .chain([
            ("SLUICE_INGEST_ADDR".to_string(), free_addr().to_string()),
            ("SLUICE_QUERY_ADDR".to_string(), free_addr().to_string()),
        ])
        .collect();
    for (command, name) in [
        ("ingest-api", "ingest"),
        ("query-api", "query"),
        ("all", "all-s3"),
    ] {
        let mut process = Sluice::spawn(&[command], &without_keys, dir.path(), name);
        assert_ne!(process.wait(), 0, "{command} started open");
        let log = process.log_text();
        assert!(log.contains("no API keys are given"), "{command}: {log}");
        assert!(log.contains("--auth off"), "{command}: {log}");
    }

    // Told to run open, it runs and says so; anyone may then write.
    let ingest = free_addr();
    let mut open_env = without_keys.clone();
    open_env.push(("SLUICE_AUTH".into(), "off".into()));
    // No publisher runs: do not wait for one to recover keys from.
    open_env.push(("SLUICE_RECOVER_WINDOW_SECS".into(), "0".into()));
    open_env.push(("SLUICE_INGEST_ADDR".into(), ingest.to_string()));
    let process = Sluice::spawn(&["ingest-api"], &open_env, dir.path(), "ingest-open");
    wait_for_port(ingest, &process).await;
    assert!(process.log_text().contains("auth is off"));
    let stats = call(
        reqwest::Method::GET,
        format!("http://{ingest}/v1/stats"),
        None,
        None,
    )
    .await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.body);

    // `sluice all` on a local directory with no keys runs open and says so.
    let (ingest, api) = (free_addr(), free_addr());
    let local_env: Vec<(String, String)> = [
        ("SLUICE_STORAGE", "file://./data".to_string()),
        ("SLUICE_INGEST_ADDR", ingest.to_string()),
        ("SLUICE_QUERY_ADDR", api.to_string()),
        ("SLUICE_PUBLISHER_ADDR", free_addr().to_string()),
        ("SLUICE_CONSUMER_ADDR", free_addr().to_string()),
        ("SLUICE_QUERY_HANDLER_ADDR", free_addr().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let local = Sluice::spawn(&["all"], &local_env, dir.path(), "all-local");
    wait_for_port(ingest, &local).await;
    assert!(
        local.log_text().contains("running open"),
        "{}",
        local.log_text()
    );
    let written = call(
        reqwest::Method::POST,
        format!("http://{ingest}/v1/notifications?ack=staged"),
        None,
        Some(note("x", "open-1", "no key needed here")),
    )
    .await;
    assert_eq!(written.status, StatusCode::ACCEPTED, "{}", written.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_needs_the_cluster_secret_and_an_append_needs_its_producers_proof() {
    use sluice_proto::v1::publisher_client::PublisherClient;
    use sluice_proto::v1::{AppendRequest, StatusRequest};
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let (publisher_addr, ingest) = (free_addr(), free_addr());
    let mut env = s3.env();
    for (key, value) in [
        ("SLUICE_PUBLISHER_ADDR", publisher_addr.to_string()),
        ("SLUICE_INGEST_ADDR", ingest.to_string()),
        ("SLUICE_CONSUMER_ADDR", free_addr().to_string()),
        ("SLUICE_QUERY_HANDLER_ADDR", free_addr().to_string()),
    ] {
        env.push((key.to_string(), value));
    }
    let publisher = Sluice::spawn(&["publisher"], &env, dir.path(), "publisher");
    let node = Sluice::spawn(&["ingest-api"], &env, dir.path(), "ingest");
    wait_for_port(publisher_addr, &publisher).await;
    wait_for_port(ingest, &node).await;

    // Without the secret: refused before any handler runs; only the health service answers.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{publisher_addr}"))
        .unwrap()
        .connect_lazy();
    let refused = PublisherClient::new(plain.clone())
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("cluster"),
        "{}",
        refused.message()
    );
    let health = HealthClient::new(plain)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    // A stored batch makes the node's producer id known; with the secret but not the
    // producer's proof, a forged batch under that id is refused at every sequence it could take.
    let client = crate::support::client();
    let post = |id: String| {
        let client = client.clone();
        async move {
            client
                .post(format!("http://{ingest}/v1/notifications?ack=durable"))
                .json(&note("x", &id, "real"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post("before".into()).await, StatusCode::OK);
    let stats = crate::support::get_json(&format!("http://{ingest}/v1/stats")).await;
    let producer_id = stats["producer_id"].as_str().unwrap().to_string();
    crate::support::join_cluster();
    let mut with_secret =
        PublisherClient::new(sluice_proto::lazy_channel(&publisher_addr.to_string()).unwrap());
    with_secret
        .status(StatusRequest {})
        .await
        .expect("the secret opens the door");
    let forged = sluice_proto::v1::Notification::from(
        &sluice_core::Notification::from_json(&note("x", "forged", "forged").to_string(), 0)
            .unwrap(),
    );
    for (sequence, proof) in [
        (1, String::new()),
        (2, "0".repeat(64)),
        (3, producer_id.clone()),
    ] {
        let refused = with_secret
            .append(AppendRequest {
                producer_id: producer_id.clone(),
                sequence,
                notifications: vec![forged.clone()],
                producer_proof: proof,
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    }

    // The node goes on storing its own batches at the sequences the forger aimed at.
    for i in 0..5 {
        assert_eq!(post(format!("after-{i}")).await, StatusCode::OK);
    }
    let master = sluice_core::master::MasterStore::new(s3.store(BUCKET));
    let stored = crate::support::count_master(&master).await;
    assert_eq!(stored.len(), 6, "{stored:?}");
    assert!(!stored.contains_key(&("x".to_string(), "forged".to_string())));
    assert!(stored.values().all(|n| *n == 1));
}
