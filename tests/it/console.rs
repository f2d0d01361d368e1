//! The web console in a real browser: Debian's headless `chromium`, driven by `playwright-core`
//! from npm (`tests/browser/console.mjs`), against a real `sluice all`. The page must draw the
//! board from live data while notifications flow and keep redrawing it by itself, show in its
//! table what `POST /v1/query` answers for the same SQL, export that as CSV, show a bad query's
//! error, and, with auth on, ask for a key and refuse one that may not read.
//!
//! Needs `node`/`npm` (the tests run `npm ci` in `tests/browser/` themselves) and `chromium`
//! (`SLUICE_CHROMIUM` names another): `tests/browser/install.sh` installs whichever is missing
//! from Debian's packages, run by `.ci/run` and by these tests.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use crate::support::{
    All, auth_env, client, get_json, local_env, notification, replicated_count, start_all,
};

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const SQL: &str = "SELECT type, count(*) AS n FROM notifications GROUP BY type ORDER BY n DESC";

/// A key that may only read, and one that may only write: the console needs the first.
const READ_KEY: &str = "sk_reader0123456789abcdef0123456789abcdef0123456789abcdef01234567";
const WRITE_KEY: &str = "sk_writer0123456789abcdef0123456789abcdef0123456789abcdef01234567";

/// Installs what the test needs from Debian (chromium, node, npm) if any is missing, once.
fn browser_tools() {
    static READY: std::sync::Once = std::sync::Once::new();
    READY.call_once(|| {
        let status = std::process::Command::new("bash")
            .arg(Path::new(BROWSER_DIR).join("install.sh"))
            .status()
            .expect("bash runs");
        assert!(
            status.success(),
            "tests/browser/install.sh could not install chromium, node and npm"
        );
    });
}

/// The browser: `SLUICE_CHROMIUM`, else Debian's.
fn chromium() -> PathBuf {
    browser_tools();
    let path = PathBuf::from(
        std::env::var("SLUICE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    assert!(
        path.exists(),
        "{} is missing: `apt-get install -y chromium` (tests/browser/install.sh does), or set \
         SLUICE_CHROMIUM",
        path.display()
    );
    path
}

/// `tests/browser/node_modules`, installed from the committed lock file the first time.
fn node_modules() {
    browser_tools();
    static READY: std::sync::Once = std::sync::Once::new();
    READY.call_once(|| {
        let installed = Path::new(BROWSER_DIR).join("node_modules/playwright-core/package.json");
        if !installed.exists() {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(BROWSER_DIR)
                .status()
                .expect("npm runs");
            assert!(status.success(), "npm ci in {BROWSER_DIR} failed");
        }
    });
}

/// Posts notifications (a batch of 25 every 50 ms, NDJSON, durable) until `stop`; counts them.
fn keep_posting(
    ingest: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
    posted: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = client();
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            let body: Vec<String> = (next..next + 25)
                .map(|i| notification(i).to_string())
                .collect();
            let answer = client
                .post(format!("http://{ingest}/v1/notifications"))
                .header("content-type", "application/x-ndjson")
                .body(body.join("\n"))
                .send()
                .await
                .unwrap();
            assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
            next += 25;
            posted.store(next, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// The browser script, running, and its reports.
struct Browser {
    child: tokio::process::Child,
    reports: Lines<BufReader<ChildStdout>>,
}

impl Browser {
    fn start(url: &str, keys_to_try: &[&str], screenshot: Option<&Path>) -> Browser {
        node_modules();
        let mut command = Command::new("node");
        command
            .arg("console.mjs")
            .current_dir(BROWSER_DIR)
            .env("SLUICE_CONSOLE_URL", url)
            .env("SLUICE_CHROMIUM", chromium())
            .env("SLUICE_SQL", SQL)
            .env("SLUICE_KEYS_TO_TRY", keys_to_try.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(path) = screenshot {
            command.env("SLUICE_SCREENSHOT", path);
        }
        let mut child = command.spawn().expect("node runs");
        let reports = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser { child, reports }
    }

    /// The next report, which must be `step`.
    async fn report(&mut self, step: &str) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(120), self.reports.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {step} report from the browser in 120 s"))
            .unwrap();
        let Some(line) = line else {
            let status = self.child.wait().await.unwrap();
            panic!(
                "the browser script ended ({status}) before its {step} report; see its stderr above"
            );
        };
        let report: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(report["step"], step, "{report}");
        eprintln!("browser {step}: {report}");
        report
    }

    async fn tell(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        stdin.flush().await.unwrap();
    }

    async fn finish(mut self) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the browser script ends")
            .unwrap();
        assert!(status.success(), "the browser script failed: {status}");
    }
}

/// Waits until the replica holds every notification posted and the query API's answer counts
/// them all (the handler sees a new version at its next look, every second), so that SQL
/// answers stop moving.
async fn settle(all: &All, posted: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (replicated, stats) = replicated_count(all.ingest).await;
        if replicated as usize >= posted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{replicated} of {posted} replicated: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let answer: Value = query(all, SQL, "json").await.json().await.unwrap();
        let counted: u64 = answer["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row[1].as_u64().unwrap())
            .sum();
        if counted as usize >= posted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the handler answers {counted} of {posted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `POST /v1/query` answers for `sql` (in `format`), with the tests' key.
async fn query(all: &All, sql: &str, format: &str) -> reqwest::Response {
    let answer = client()
        .post(format!("http://{}/v1/query", all.api))
        .json(&json!({"sql": sql, "format": format}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    answer
}

/// A cell as the page's table shows it.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn number(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer}: {report}"))
}

/// The board's charts drew live data, and drew it again, changed, by themselves.
fn assert_board_is_live(board: &Value) {
    let (first, second) = (&board["first"]["charts"], &board["second"]["charts"]);
    assert!(number(first, "/ingest-rate/latest/peak") > 0.0, "{board}");
    assert!(
        number(first, "/ingest-rate/latest/accepted") > 0.0,
        "{board}"
    );
    assert!(number(first, "/ingest-rate/paths") >= 2.0, "{board}");
    let in_memory = |charts: &Value| {
        ["gray", "blue", "green"]
            .iter()
            .map(|c| number(charts, &format!("/colors/latest/{c}")))
            .sum::<f64>()
    };
    assert!(in_memory(first) > 0.0, "{board}");
    // One ingest node in `sluice all`: one row of bars, green at least (it is replicated).
    let nodes = first["nodes"]["latest"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{board}");
    assert!(first["nodes"]["bars"].as_u64().unwrap() >= 1, "{board}");
    assert!(number(first, "/freshness/latest/measured") > 0.0, "{board}");
    assert!(
        number(first, "/freshness/latest/durable_to_green/1") > 0.0,
        "p99 durable → green: {board}"
    );
    // Refreshed by itself: more renders, and the cumulative count moved on with the load.
    for chart in [
        "ingest-rate",
        "colors",
        "nodes",
        "lag",
        "freshness",
        "queries",
    ] {
        let renders = |charts: &Value| number(charts, &format!("/{chart}/renders"));
        assert!(
            renders(second) >= renders(first) + 2.0,
            "{chart} was not redrawn: {board}"
        );
    }
    assert!(
        number(second, "/ingest-rate/latest/accepted")
            > number(first, "/ingest-rate/latest/accepted"),
        "{board}"
    );
    assert!(in_memory(second) > in_memory(first), "{board}");
    assert_eq!(board["problems"], json!([]), "{board}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_draws_the_live_board_and_answers_sql_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    // Auth off: `sluice all` on a local directory with no keys runs open, as on a laptop.
    let env = vec![("SLUICE_STORAGE".to_string(), "file://./data".to_string())];
    let all = start_all(env, &[], dir.path(), "all").await;
    let url = format!("http://{}/console/", all.api);

    // The front page leads to the console.
    let front = reqwest::get(format!("http://{}/", all.api)).await.unwrap();
    assert_eq!(front.url().path(), "/console/");
    assert_eq!(front.status(), 200);

    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicUsize::new(0));
    let load = keep_posting(all.ingest, stop.clone(), posted.clone());

    let screenshot = dir.path().join("console.png");
    let mut browser = Browser::start(&url, &[], Some(&screenshot));
    let board = browser.report("board").await;
    assert!(!board["first"]["keyPrompt"].as_bool().unwrap(), "{board}");
    assert_board_is_live(&board);

    // Stop the load and let the replica catch up: from here on the table's answer is fixed.
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let posted = posted.load(Ordering::Relaxed);
    settle(&all, posted).await;
    browser.tell("sql").await;

    let sql = browser.report("sql").await;
    let expected: Value = query(&all, SQL, "json").await.json().await.unwrap();
    let columns: Vec<String> = expected["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sql["columns"], json!(columns), "{sql}");
    let rows: Vec<Vec<String>> = expected["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(cell).collect())
        .collect();
    assert_eq!(rows.len(), 5, "five types were posted: {expected}");
    assert_eq!(sql["rows"], json!(rows), "{sql}");
    let total: u64 = expected["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[1].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, posted, "{expected}");
    assert!(
        ["orange", "done"].contains(&sql["state"].as_str().unwrap()),
        "{sql}"
    );
    assert!(sql["meta"].as_str().unwrap().contains("5 rows"), "{sql}");
    assert_eq!(sql["chartBars"], 5, "{sql}");
    // The exported CSV is the query API's own CSV of the same answer.
    let csv = query(&all, SQL, "csv").await.text().await.unwrap();
    assert_eq!(sql["csv"], csv, "{sql}");
    assert!(sql["filename"].as_str().unwrap().ends_with(".csv"), "{sql}");

    let bad = browser.report("bad-sql").await;
    assert_eq!(bad["state"], "failed", "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("no_such_column"),
        "{bad}"
    );
    assert_eq!(bad["exportDisabled"], true, "{bad}");

    let done = browser.report("done").await;
    assert_eq!(done["problems"], json!([]), "{done}");
    browser.finish().await;

    // The screenshot with data; SLUICE_CONSOLE_SCREENSHOT keeps it (docs/console.png is one).
    let png = std::fs::read(&screenshot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 50_000,
        "{}",
        png.len()
    );
    if let Ok(keep) = std::env::var("SLUICE_CONSOLE_SCREENSHOT") {
        std::fs::write(&keep, &png).unwrap();
    }
    let log = all.sluice.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_auth_on_the_console_asks_for_a_key_that_may_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = local_env();
    // The tests' key, and one that may only read and one that may only write.
    let [keys, secret] = auth_env();
    let reader = sluice_auth::key_line("reader", "read", READ_KEY).unwrap();
    let writer = sluice_auth::key_line("writer", "write:*", WRITE_KEY).unwrap();
    env.retain(|(k, _)| k != &keys.0 && k != &secret.0);
    env.push((keys.0, format!("{}\n{reader}\n{writer}", keys.1)));
    env.push(secret);
    let all = start_all(env, &[], dir.path(), "all").await;

    // The page is public; the board's data is not.
    let page = reqwest::get(format!("http://{}/console/", all.api))
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let board_url = format!("http://{}/v1/board", all.api);
    let anonymous = reqwest::get(&board_url).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let writer_only = reqwest::Client::new()
        .get(&board_url)
        .bearer_auth(WRITE_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(writer_only.status(), 403);
    let board: Value = reqwest::Client::new()
        .get(&board_url)
        .bearer_auth(READ_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The read key was passed on to the ingest node, which answered.
    assert_eq!(board["ingest"][0]["ok"], true, "{board}");
    assert_eq!(board["handlers"][0]["ok"], true, "{board}");
    assert_eq!(get_json(&board_url).await["totals"]["ingest_nodes_up"], 1);

    let stop = Arc::new(AtomicBool::new(false));
    let posted = Arc::new(AtomicUsize::new(0));
    let load = keep_posting(all.ingest, stop.clone(), posted.clone());
    // A wrong key, then one that may not read, then the reader's.
    let wrong = format!("sk_{}", "0".repeat(64));
    let mut browser = Browser::start(
        &format!("http://{}/console/", all.api),
        &[&wrong, WRITE_KEY, READ_KEY],
        None,
    );
    let board = browser.report("board").await;
    let prompts = board["prompts"].as_array().unwrap();
    assert_eq!(prompts[0], "", "first asked with no complaint: {board}");
    assert!(
        prompts[1].as_str().unwrap().contains("not accepted"),
        "{board}"
    );
    assert!(
        prompts[2].as_str().unwrap().contains("read scope"),
        "{board}"
    );
    assert!(!board["second"]["keyPrompt"].as_bool().unwrap(), "{board}");
    assert_board_is_live(&board);

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    settle(&all, posted.load(Ordering::Relaxed)).await;
    browser.tell("sql").await;
    let sql = browser.report("sql").await;
    assert_eq!(sql["rows"].as_array().unwrap().len(), 5, "{sql}");
    browser.report("bad-sql").await;
    browser.report("done").await;
    browser.finish().await;
}
