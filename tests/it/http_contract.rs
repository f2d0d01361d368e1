//! The HTTP contract: both REST services of a real `sluice all` on the embedded default serve
//! an OpenAPI document of their routes, and schemathesis (from PyPI) sends each route the
//! cases it derives from that document, valid and broken, with the tests' key: no answer may
//! be a server error, and the process must not panic.

use std::net::SocketAddr;
use std::process::Command;

use serde_json::Value;

use crate::support::{
    All, Sluice, TEST_KEY, client, free_addr, get_json, local_env, notification, python, start_all,
    wait_for_port,
};

/// Cases per route in schemathesis's generated phase (its coverage phase adds its own).
fn examples() -> String {
    std::env::var("SLUICE_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into())
}

/// Runs schemathesis against the service at `addr`; returns its JSON report's case counts.
fn schemathesis(addr: SocketAddr, reports: &std::path::Path) -> Value {
    let python = python();
    let binary = python.parent().unwrap().join("schemathesis");
    let seed = std::env::var("SLUICE_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let output = Command::new(&binary)
        .arg("run")
        .arg(format!("http://{addr}/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {TEST_KEY}")])
        .args(["--checks", "not_a_server_error"])
        .args(["--max-examples", &examples()])
        .args(["--seed", &seed])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--workers", "2"])
        .args(["--report", "json"])
        .arg("--report-dir")
        .arg(reports)
        .arg("--no-color")
        // A feed stream that is asked right never ends, and a request/response fuzzer would
        // wait on it forever; its refusals of bad input are tested in tests/it/feed.rs.
        .args(["--exclude-path", "/v1/feed/stream"])
        // It keeps a cache of its findings in `.schemathesis/` under its working directory.
        .current_dir(reports.parent().unwrap())
        .output()
        .expect("schemathesis runs");
    let printed = String::from_utf8_lossy(&output.stdout);
    eprintln!("schemathesis against {addr} (seed {seed}):\n{printed}");
    assert!(
        output.status.success(),
        "schemathesis found failures against {addr}:\n{printed}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = std::fs::read_dir(reports)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "json"))
        .expect("a JSON report");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    report["test_cases"].clone()
}

/// The paths an OpenAPI document lists.
async fn documented(addr: SocketAddr) -> Vec<String> {
    let document = get_json(&format!("http://{addr}/openapi.json")).await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3."),
        "{document}"
    );
    let mut paths: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    paths.sort();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn both_rest_services_keep_to_their_openapi_documents_without_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let env = local_env();
    let All {
        sluice,
        ingest,
        api,
    } = start_all(env, &[], dir.path(), "all").await;

    // Every route is in its service's document.
    assert_eq!(
        documented(ingest).await,
        [
            "/healthz",
            "/openapi.json",
            "/readyz",
            "/v1/admin/dead-letters",
            "/v1/admin/dead-letters/{kind}/{producer}/{sequence}",
            "/v1/admin/dead-letters/{kind}/{producer}/{sequence}/replay",
            "/v1/memory/posts/{platform}/{post_id}",
            "/v1/notifications",
            "/v1/notifications/{platform}/{id}",
            "/v1/stats",
        ]
    );
    assert_eq!(
        documented(api).await,
        [
            "/healthz",
            "/openapi.json",
            "/readyz",
            "/v1/board",
            "/v1/feed",
            "/v1/feed/stream",
            "/v1/posts/{platform}/{post_id}",
            "/v1/posts/{platform}/{post_id}/events",
            "/v1/queries/{id}",
            "/v1/query",
        ]
    );

    // A keyed route documents the refusals of a key as well as its own answers.
    let document = get_json(&format!("http://{ingest}/openapi.json")).await;
    let responses = &document["paths"]["/v1/notifications"]["post"]["responses"];
    for status in [
        "200", "202", "400", "401", "403", "413", "415", "429", "503",
    ] {
        assert!(responses.get(status).is_some(), "{status}: {responses}");
    }

    // Some notifications in the replica, so that reads have a table to read.
    let answer = client()
        .post(format!("http://{ingest}/v1/notifications?ack=replicated"))
        .json(&(0..20).map(notification).collect::<Vec<_>>())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());

    let mut tried = 0;
    for (name, addr) in [("ingest", ingest), ("query", api)] {
        let reports = dir.path().join(format!("schemathesis-{name}"));
        let cases = tokio::task::spawn_blocking(move || schemathesis(addr, &reports))
            .await
            .unwrap();
        eprintln!("{name} API: {cases}");
        let generated = cases["generated"].as_u64().unwrap();
        assert!(generated >= 100, "{name}: only {generated} cases: {cases}");
        assert_eq!(cases["with_failures"], 0, "{name}: {cases}");
        assert_eq!(cases["errored"], 0, "{name}: {cases}");
        tried += generated;
    }
    eprintln!("schemathesis: {tried} cases, 0 server errors");

    let answer = reqwest::get(format!("http://{api}/readyz")).await.unwrap();
    assert_eq!(answer.status(), 200);
    let log = sluice.log_text();
    assert!(!log.contains("panicked"), "{log}");
    // The process is still whole: it answers, and what it acknowledged is still there.
    let stats = get_json(&format!("http://{ingest}/v1/stats")).await;
    assert!(
        stats["memory"]["entries"].as_u64().unwrap() >= 20,
        "{stats}"
    );
}

#[tokio::test]
async fn the_query_api_is_ready_only_while_a_query_handler_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (api, handler) = (free_addr(), free_addr());
    let mut env = local_env();
    env.push(("SLUICE_QUERY_ADDR".into(), api.to_string()));
    env.push(("SLUICE_QUERY_HANDLER_ADDR".into(), handler.to_string()));
    let api_process = Sluice::spawn(&["query-api"], &env, dir.path(), "query-api");
    wait_for_port(api, &api_process).await;
    let readyz = || async {
        let answer = reqwest::get(format!("http://{api}/readyz")).await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no query handler answers"), "{body}");

    // A handler on the embedded default with no table yet still answers: ready.
    let handler_process = Sluice::spawn(&["query-handler"], &env, dir.path(), "query-handler");
    wait_for_port(handler, &handler_process).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (status, body) = readyz().await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
