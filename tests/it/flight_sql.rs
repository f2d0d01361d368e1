//! Flight SQL on the query handler, through real clients: ADBC (`adbc-driver-flightsql`) and
//! `pyarrow.flight` in Python (tests/flight_sql.py), against a `sluice query-handler` process
//! over a replica on a real S3 server, with auth on.

use std::process::Command;

use serde_json::{Value, json};
use sluice_consumer::replica::Replica;

use crate::analyst::{SUITE, assert_suite_matches, load, query, run_suite};
use crate::read_path::start_read_side;
use crate::support::{BUCKET, S3Server, TEST_KEY, python};

const FLIGHT_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flight_sql.py");

/// A new key and its keys-file line.
fn key(name: &str, scopes: &str) -> (String, String) {
    let key = sluice_auth::new_key();
    let line = sluice_auth::key_line(name, scopes, &key).unwrap();
    (key, line)
}

fn flight(args: &[&str]) -> String {
    let ran = Command::new(python())
        .arg(FLIGHT_PY)
        .args(args)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    String::from_utf8(ran.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adbc_gets_the_rows_of_the_rest_read_path_and_binds_parameters_with_a_read_key() {
    let s3 = S3Server::start().await;
    s3.create_bucket(BUCKET);
    let (url, options) = s3.table("replica");
    let mut replica = Replica::open_or_create(url, options).await.unwrap();
    load(&mut replica, "generated", 1..21, 10).await;

    let (analyst, analyst_line) = key("analyst", "read");
    let (writer, writer_line) = key("writer", "write:*");
    let test_line = sluice_auth::key_line("tests", "write:*,read,admin", TEST_KEY).unwrap();
    let keys = format!("{test_line};{analyst_line};{writer_line}");
    let dir = tempfile::tempdir().unwrap();
    let read = start_read_side(&s3, dir.path(), &[("SLUICE_KEYS", keys.as_str())]).await;
    let uri = format!("grpc://{}", read.handler_addr);

    // The whole analyst suite through ADBC first (so the handler runs each query for it), then
    // through the REST read path, which the orange cache answers.
    let flight_json = dir.path().join("flight.json");
    let out = flight(&[
        "suite",
        "--uri",
        &uri,
        "--key",
        &analyst,
        "--suite",
        SUITE,
        "--out",
        flight_json.to_str().unwrap(),
    ]);
    eprintln!("{out}");
    let (rest, _) = run_suite(read.api).await;
    let flight_answers: Value =
        serde_json::from_str(&std::fs::read_to_string(&flight_json).unwrap()).unwrap();
    let rest_json = dir.path().join("rest.json");
    std::fs::write(&rest_json, rest.to_string()).unwrap();
    assert_suite_matches(dir.path(), "flight", &rest_json, &flight_answers);
    // The same SQL over REST is the answer Flight SQL's query left in the cache.
    let client = crate::support::client();
    let (_, first) = crate::analyst::suite().into_iter().next().unwrap();
    let (status, answer) = query(&client, read.api, json!({"sql": first})).await;
    assert!(status.is_success(), "{answer}");
    assert_eq!(answer["cached"], true, "{answer}");

    // A platform and its count by the REST path, for the prepared statement to match.
    let (status, answer) = query(
        &client,
        read.api,
        json!({"sql": "SELECT platform, count(*) AS n FROM notifications GROUP BY platform ORDER BY platform"}),
    )
    .await;
    assert!(status.is_success(), "{answer}");
    let by_platform = answer["rows"].as_array().unwrap().clone();
    assert!(by_platform.len() > 1, "{answer}");
    let platform = by_platform[0][0].as_str().unwrap().to_string();
    let count = by_platform[0][1].as_u64().unwrap();

    let out = flight(&[
        "checks",
        "--uri",
        &uri,
        "--key",
        &analyst,
        "--writer-key",
        &writer,
        "--platform",
        &platform,
    ]);
    let checks: Value = serde_json::from_str(out.trim()).unwrap();
    eprintln!("{checks:#}");

    // Prepared statements bind their parameters, `?` and `$n` alike.
    assert_eq!(checks["prepared_count"], count, "{checks:#}");
    assert_eq!(checks["literal_count"], count, "{checks:#}");
    assert_eq!(checks["prepared_count_other"], 0, "{checks:#}");
    assert_eq!(
        checks["prepared_parameters"],
        json!([["$1", "string_view"], ["$2", "timestamp[us, tz=UTC]"]]),
        "{checks:#}"
    );
    assert_eq!(
        checks["numbered"],
        json!([7, platform, count]),
        "{checks:#}"
    );
    // Errors name the problem.
    let message = |name: &str| checks[name]["message"].as_str().unwrap_or("").to_string();
    assert!(message("bad_sql").contains("no_such_column"), "{checks:#}");
    assert!(message("write").contains("read-only"), "{checks:#}");
    assert!(
        message("unbound").contains("was not provided a value"),
        "{checks:#}"
    );

    // The catalog calls show the table and its columns to a generic client.
    assert_eq!(checks["vendor_name"], "Sluice", "{checks:#}");
    let objects = &checks["objects"];
    assert_eq!(objects.as_array().unwrap().len(), 1, "{checks:#}");
    let table = &objects[0]["schemas"][0]["tables"][0];
    assert_eq!(table["table"], "notifications", "{checks:#}");
    assert_eq!(table["type"], "TABLE", "{checks:#}");
    let columns: Vec<&str> = table["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for column in ["platform", "id", "type", "occurred_at", "post_id", "day"] {
        assert!(columns.contains(&column), "{column} missing: {columns:?}");
    }
    assert_eq!(
        checks["table_schema"].as_array().unwrap().len(),
        columns.len()
    );
    assert_eq!(checks["table_types"], json!(["TABLE"]), "{checks:#}");

    // A key is required, and it must have the read scope.
    assert!(
        message("no_key").contains("not one this server knows"),
        "{checks:#}"
    );
    assert!(message("writer_key").contains("read"), "{checks:#}");
    assert_eq!(
        checks["pyarrow_no_key"]["type"],
        "FlightUnauthenticatedError"
    );
    assert_eq!(
        checks["pyarrow_writer_key"]["type"],
        "FlightUnauthorizedError"
    );
    assert_eq!(
        checks["pyarrow_basic_wrong"]["type"],
        "FlightUnauthenticatedError"
    );
    // pyarrow.flight, with the bearer header or after a Basic handshake, gets REST's rows.
    for name in ["pyarrow_bearer", "pyarrow_basic"] {
        assert_eq!(
            checks[name]["rows"],
            json!(by_platform),
            "{name}: {checks:#}"
        );
        assert_eq!(
            checks[name]["total_records"],
            by_platform.len(),
            "{checks:#}"
        );
    }
    drop(read);
}
