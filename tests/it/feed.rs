//! The newsfeed from a version (issue 17): read `GET /v1/feed` (a version and the history up to
//! it), then follow `GET /v1/feed/stream?from=<version>` while a platform keeps posting, and get
//! every new notification exactly once, in order, across cut-offs.
//!
//! Every service is its own `sluice` process on a real S3 server, and the query API has two
//! query handlers. The main stream is cut three times and resumes each time with
//! `Last-Event-ID`: by the client in the middle of a version's rows, by a kill -9 of the query
//! handler that serves it (the query API goes on with the other, which has its own cache and
//! reads the log itself), and by the client right after a checkpoint. The ingest node is killed
//! and restarted (a new producer) in between. A stream filtered to one post gets exactly that
//! post's new notifications. Freshness, from each notification's durable ack (its POST
//! answered) to its event at the stream client, is measured and reported, split into the
//! consumer's part (ack to commit) and the handler's (commit to event); with a release build
//! (`SLUICE_TEST_BIN`) its p99 is under a second (bench/README.md).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{BUCKET, S3Server, Sluice, client, free_addr, wait_for_port};

const PLATFORM: &str = "mastodon";
/// Every fifth notification is another platform's, which the feed of [`PLATFORM`] leaves out.
const OTHER_PLATFORM: &str = "bsky";
const TYPES: [&str; 4] = ["post.created", "post.edited", "post.liked", "post.shared"];
const POSTS: usize = 10;
/// The post the filtered stream follows.
const FOLLOWED_POST: &str = "p3";
/// Notifications loaded before the feed is read.
const HISTORY: usize = 500;
/// The writer: a request of [`PER_REQUEST`] every [`WRITE_EVERY`] for [`WRITE_FOR`].
const WRITE_FOR: Duration = Duration::from_secs(30);
const WRITE_EVERY: Duration = Duration::from_millis(50);
const PER_REQUEST: usize = 5;
/// What the p99 of freshness must stay under in this test (see its assertion).
const FRESHNESS_BOUND: Duration = Duration::from_secs(5);

/// Notification `id` (`h…` for the history, `w…` for the writer), number `i` of its kind.
fn feed_notification(prefix: &str, i: usize, occurred_at: &str) -> Value {
    let platform = if i % 5 == 4 { OTHER_PLATFORM } else { PLATFORM };
    json!({
        "platform": platform,
        "id": format!("{prefix}{i}"),
        "type": TYPES[i % TYPES.len()],
        "occurred_at": occurred_at,
        "post_id": format!("p{}", i % POSTS),
        "author_id": format!("a{}", i % 7),
        "text": format!("feed notification {prefix}{i}"),
    })
}

/// A position as a tuple that compares in the replicated order: `V.F.R` (row R of the F-th
/// added file of version V) is (V, F, R); `V` (all of version V) comes after every row of V.
fn position(id: &str) -> (u64, u64, u64) {
    let parts: Vec<u64> = id
        .split('.')
        .map(|part| {
            part.parse()
                .unwrap_or_else(|_| panic!("{id:?} is not a position"))
        })
        .collect();
    match parts[..] {
        [version] => (version, u64::MAX, u64::MAX),
        [version, file, row] => (version, file, row),
        _ => panic!("{id:?} is not a position"),
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default)]
struct SseEvent {
    event: String,
    id: Option<String>,
    data: String,
}

/// A Server-Sent Events parser: lines `field: value`, an event ends at a blank line, lines that
/// start with `:` are comments (keep-alives).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    current: SseEvent,
    has_fields: bool,
}

impl SseParser {
    /// The events that `chunk` completes.
    fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8(line).expect("SSE is UTF-8");
            let line = line.trim_end_matches('\n').trim_end_matches('\r');
            if line.is_empty() {
                if self.has_fields {
                    let mut event = std::mem::take(&mut self.current);
                    if event.event.is_empty() {
                        event.event = "message".into();
                    }
                    events.push(event);
                    self.has_fields = false;
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            self.has_fields = true;
            match field {
                "event" => self.current.event = value.to_string(),
                "id" => self.current.id = Some(value.to_string()),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => {}
            }
        }
        events
    }
}

#[test]
fn the_sse_parser_reads_events_across_chunks() {
    let mut parser = SseParser::default();
    let mut events = parser.push(b": keep-alive\n\nevent: notification\nid: 3.0.");
    assert!(events.is_empty());
    events.extend(
        parser.push(b"1\ndata: {\"a\":1}\n\nevent: checkpoint\r\nid: 3\r\ndata: x\r\n\r\n"),
    );
    let seen: Vec<(&str, Option<&str>, &str)> = events
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_deref(), e.data.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("notification", Some("3.0.1"), "{\"a\":1}"),
            ("checkpoint", Some("3"), "x")
        ]
    );
    assert!(position("3.0.1") < position("3") && position("3") < position("4.0.0"));
}

/// What a follower asks its stream to do next.
const GO_ON: u8 = 0;
const CUT_AFTER_NOTIFICATION: u8 = 1;
const CUT_AFTER_CHECKPOINT: u8 = 2;

/// One connection of a follower: the id it resumed after, and why it ended.
#[derive(Debug, Clone)]
struct Connection {
    resumed_after: Option<String>,
    ended: Option<String>,
    /// The last id received when the client cut it.
    cut_at: Option<String>,
}

#[derive(Default)]
struct Followed {
    /// Every event received (notification, checkpoint, error), with when it arrived and on
    /// which connection (an index into `connections`).
    events: Vec<(SseEvent, Instant, usize)>,
    connections: Vec<Connection>,
    failure: Option<String>,
}

/// A stream client that resumes with `Last-Event-ID` whenever its stream ends, and cuts its
/// own connection when told to.
struct Follower {
    name: &'static str,
    state: Arc<Mutex<Followed>>,
    cut: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    fn start(name: &'static str, api: SocketAddr, filter: String, from: String) -> Follower {
        let state = Arc::new(Mutex::new(Followed::default()));
        let cut = Arc::new(AtomicU8::new(GO_ON));
        let task = tokio::spawn(follow(api, filter, from, state.clone(), cut.clone()));
        Follower {
            name,
            state,
            cut,
            task,
        }
    }

    fn connections(&self) -> usize {
        lock(&self.state).connections.len()
    }

    fn notifications(&self) -> usize {
        lock(&self.state)
            .events
            .iter()
            .filter(|(e, _, _)| e.event == "notification")
            .count()
    }

    /// Panics with the servers' logs if the follower failed.
    fn check(&self, logs: &(dyn Fn() -> String + Sync)) {
        let failure = lock(&self.state).failure.clone();
        if let Some(failure) = failure {
            panic!("{}: {failure}\n{}", self.name, logs());
        }
    }

    /// Waits until the follower has opened `n` connections.
    async fn wait_for_connections(
        &self,
        n: usize,
        within: Duration,
        logs: &(dyn Fn() -> String + Sync),
    ) {
        let deadline = Instant::now() + within;
        while self.connections() < n {
            self.check(logs);
            assert!(
                Instant::now() < deadline,
                "{}: {} connections, not {n}, after {within:?}: {:?}\n{}",
                self.name,
                self.connections(),
                lock(&self.state).connections,
                logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cuts the connection after the next event of that kind and waits for the resumption.
    async fn cut_after(&self, what: u8, logs: &(dyn Fn() -> String + Sync)) {
        let before = self.connections();
        self.cut.store(what, Ordering::SeqCst);
        self.wait_for_connections(before + 1, Duration::from_secs(20), logs)
            .await;
    }
}

/// The follower's record, also after a panic elsewhere.
fn lock(state: &Mutex<Followed>) -> std::sync::MutexGuard<'_, Followed> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records an event the client has received, on its latest connection.
fn receive(state: &Mutex<Followed>, event: SseEvent, at: Instant, last_id: &mut Option<String>) {
    if let Some(id) = &event.id {
        *last_id = Some(id.clone());
    }
    let mut state = lock(state);
    let connection = state.connections.len() - 1;
    state.events.push((event, at, connection));
}

async fn follow(
    api: SocketAddr,
    filter: String,
    from: String,
    state: Arc<Mutex<Followed>>,
    cut: Arc<AtomicU8>,
) {
    let client = client();
    let url = format!("http://{api}/v1/feed/stream?from={from}&{filter}");
    let mut last_id: Option<String> = None;
    let mut failing_since: Option<Instant> = None;
    loop {
        let mut request = client.get(&url);
        if let Some(id) = &last_id {
            request = request.header("Last-Event-ID", id.as_str());
        }
        let refused = match request.send().await {
            Ok(response) if response.status() == 200 => Ok(response),
            Ok(response) if response.status() == 503 => {
                Err(format!("503 {}", response.text().await.unwrap_or_default()))
            }
            Ok(response) => {
                lock(&state).failure = Some(format!(
                    "resuming after {last_id:?}: {} {}",
                    response.status(),
                    response.text().await.unwrap_or_default()
                ));
                return;
            }
            Err(error) => Err(error.to_string()),
        };
        let mut response = match refused {
            Ok(response) => response,
            Err(why) => {
                // A handler that was just killed, or one still loading the replica.
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(30) {
                    lock(&state).failure =
                        Some(format!("cannot resume after {last_id:?} for 30 s: {why}"));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        failing_since = None;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if !content_type.starts_with("text/event-stream") {
            lock(&state).failure = Some(format!("content-type {content_type:?}"));
            return;
        }
        lock(&state).connections.push(Connection {
            resumed_after: last_id.clone(),
            ended: None,
            cut_at: None,
        });
        let mut parser = SseParser::default();
        let mut cut_at = None;
        // A notification held back, to see whether the next event is in its version.
        let mut held: Option<(SseEvent, Instant)> = None;
        let ended = 'connection: loop {
            let chunk = match tokio::time::timeout(Duration::from_secs(40), response.chunk()).await
            {
                Err(_) => break "silent for 40 s (keep-alives come every 15 s)".to_string(),
                Ok(Err(error)) => break format!("the connection broke: {error}"),
                Ok(Ok(None)) => break "the server ended the stream".to_string(),
                Ok(Ok(Some(chunk))) => chunk,
            };
            for event in parser.push(&chunk) {
                let at = Instant::now();
                let wanted = cut.load(Ordering::SeqCst);
                if wanted == CUT_AFTER_NOTIFICATION {
                    // A cut after a notification is made where the next event is another row
                    // of the same version: in the middle of a version's rows. The next one is
                    // dropped unread, as a client that goes away loses what was in flight.
                    if let Some((held, held_at)) = held.take() {
                        let same_version = event.event == "notification"
                            && position(held.id.as_deref().unwrap()).0
                                == position(event.id.as_deref().unwrap()).0;
                        receive(&state, held, held_at, &mut last_id);
                        if same_version {
                            cut.store(GO_ON, Ordering::SeqCst);
                            cut_at = last_id.clone();
                            break 'connection "the client cut it after a notification".to_string();
                        }
                    }
                    if event.event == "notification" {
                        held = Some((event, at));
                        continue;
                    }
                }
                let kind = event.event.clone();
                receive(&state, event, at, &mut last_id);
                if wanted == CUT_AFTER_CHECKPOINT && kind == "checkpoint" {
                    cut.store(GO_ON, Ordering::SeqCst);
                    cut_at = last_id.clone();
                    break 'connection format!("the client cut it after a {kind}");
                }
            }
        };
        drop(response);
        if let Some((event, at)) = held.take() {
            receive(&state, event, at, &mut last_id);
        }
        let mut state = lock(&state);
        let connection = state.connections.last_mut().unwrap();
        connection.ended = Some(ended);
        connection.cut_at = cut_at;
    }
}

/// When each posted notification was acknowledged as durable, and what it was.
#[derive(Default)]
struct Posted {
    acked: HashMap<String, Instant>,
    notifications: HashMap<String, Value>,
}

/// Posts `batch` with `ack=durable` until a node answers 200 (it retries across an ingest
/// node's restart), then records when.
async fn post_durable(
    client: &reqwest::Client,
    ingest: SocketAddr,
    batch: Vec<Value>,
    posted: &Mutex<Posted>,
) {
    let body: Vec<String> = batch.iter().map(Value::to_string).collect();
    let body = body.join("\n");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client
            .post(format!("http://{ingest}/v1/notifications?ack=durable"))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .timeout(Duration::from_secs(20))
            .send()
            .await;
        match answer {
            Ok(response) if response.status() == 200 => {
                let acked = Instant::now();
                let answer: Value = response.json().await.unwrap();
                assert_eq!(answer["rejected"], json!([]), "{answer}");
                let mut posted = posted.lock().unwrap();
                for n in batch {
                    let id = n["id"].as_str().unwrap().to_string();
                    posted.acked.insert(id.clone(), acked);
                    posted.notifications.insert(id, n);
                }
                return;
            }
            Ok(response) if response.status().is_client_error() => panic!(
                "{}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ),
            _ => {}
        }
        assert!(Instant::now() < deadline, "a batch was never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts [`PER_REQUEST`] notifications every [`WRITE_EVERY`] for [`WRITE_FOR`], each request
/// on its own task (a slow ack does not slow the rate); ends when every one is acknowledged.
fn writer(ingest: SocketAddr, posted: Arc<Mutex<Posted>>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let client = client();
        let mut ticks = tokio::time::interval(WRITE_EVERY);
        let start = Instant::now();
        let mut requests = Vec::new();
        let mut next = 0;
        while start.elapsed() < WRITE_FOR {
            ticks.tick().await;
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let batch: Vec<Value> = (next..next + PER_REQUEST)
                .map(|i| feed_notification("w", i, &now))
                .collect();
            next += PER_REQUEST;
            let (client, posted) = (client.clone(), posted.clone());
            requests.push(tokio::spawn(async move {
                post_durable(&client, ingest, batch, &posted).await;
            }));
        }
        for request in requests {
            request.await.unwrap();
        }
        next
    })
}

/// GETs `url` (with the tests' key) and answers the status and the body as JSON.
async fn get(url: &str) -> (u16, Value) {
    let response = client().get(url).send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn ids(notifications: &Value) -> Vec<String> {
    notifications
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

/// Percentile `p` (0 to 100) of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// When a notification was acknowledged, and when its event came, from which version.
struct Arrival {
    version: u64,
    acked: Instant,
    received: Instant,
}

impl Arrival {
    /// From the durable ack to the event.
    fn freshness(&self) -> Duration {
        self.received.saturating_duration_since(self.acked)
    }
}

/// p50, p99 and max of `durations`.
fn summary(mut durations: Vec<Duration>) -> (Duration, Duration, Duration) {
    durations.sort();
    (
        percentile(&durations, 50.0),
        percentile(&durations, 99.0),
        *durations.last().unwrap(),
    )
}

/// Checks one follower's whole record: ids strictly increasing (checkpoints included), every
/// notification of `expected` exactly once and nothing else, each as posted. Answers the
/// freshness of each (durable ack to event).
fn check_followed(
    follower: &Follower,
    expected: &HashSet<String>,
    history: &HashSet<String>,
    posted: &Posted,
) -> Vec<Arrival> {
    let name = follower.name;
    let state = lock(&follower.state);
    let mut previous: Option<(u64, u64, u64)> = None;
    let mut previous_id = String::new();
    let mut seen = HashSet::new();
    let mut freshness = Vec::new();
    for (event, at, _) in &state.events {
        match event.event.as_str() {
            "notification" | "checkpoint" => {}
            // A handler that fails mid-stream says so, and the stream ends: the client resumes.
            "error" => continue,
            other => panic!("{name}: an event {other:?}: {event:?}"),
        }
        let id = event
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: {event:?}"));
        let here = position(id);
        if let Some(previous) = previous {
            assert!(
                here > previous,
                "{name}: position {id} after {previous_id}: not in order (a repeat or a step back)"
            );
        }
        previous = Some(here);
        previous_id = id.to_string();
        if event.event == "checkpoint" {
            let data: Value = serde_json::from_str(&event.data).unwrap();
            assert_eq!(data, json!({"version": here.0}), "{name}: {event:?}");
            continue;
        }
        assert_ne!(
            here.1,
            u64::MAX,
            "{name}: a notification's id is `V.F.R`: {id}"
        );
        let n: Value = serde_json::from_str(&event.data).unwrap();
        let key = n["id"].as_str().unwrap().to_string();
        assert!(
            !history.contains(&key),
            "{name}: {key} (at {id}) is in the history, before the feed's version"
        );
        assert!(
            expected.contains(&key),
            "{name}: {key} (at {id}) does not belong to this stream: {n}"
        );
        assert!(seen.insert(key.clone()), "{name}: {key} twice (at {id})");
        let sent = &posted.notifications[&key];
        for field in ["platform", "id", "type", "post_id", "author_id", "text"] {
            assert_eq!(n[field], sent[field], "{name}: {field} of {key}: {n}");
        }
        freshness.push(Arrival {
            version: here.0,
            acked: posted.acked[&key],
            received: *at,
        });
    }
    let missing: Vec<&String> = expected.difference(&seen).take(10).collect();
    assert!(
        missing.is_empty(),
        "{name}: {} of {} new notifications never arrived, e.g. {missing:?}",
        expected.len() - seen.len(),
        expected.len()
    );
    freshness
}

/// Stops the S3 server's runtime when dropped.
struct S3Runtime(Option<std::sync::mpsc::Sender<()>>);

impl Drop for S3Runtime {
    fn drop(&mut self) {
        self.0.take();
    }
}

/// The S3 server on a runtime of its own: its requests (every process polls the replica's
/// log) do not delay the test's stream clients, whose clocks measure freshness.
fn s3_on_its_own_runtime() -> (S3Server, S3Runtime) {
    let (server_tx, server_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(S3Server::start());
        server_tx.send(server).unwrap();
        // Until the test ends (its sender is dropped).
        let _ = stop_rx.recv();
    });
    (server_rx.recv().unwrap(), S3Runtime(Some(stop_tx)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_from_the_feeds_version_gets_every_new_notification_once_in_order() {
    let started = Instant::now();
    let (s3, _s3_runtime) = s3_on_its_own_runtime();
    s3.create_bucket(BUCKET);
    let dir = tempfile::tempdir().unwrap();
    let (publisher_addr, consumer_addr, ingest) = (free_addr(), free_addr(), free_addr());
    let handlers = [free_addr(), free_addr()];
    let api = free_addr();
    let mut env = s3.env();
    env.extend(
        [
            ("SLUICE_PUBLISHER_ADDR", publisher_addr.to_string()),
            ("SLUICE_CONSUMER_ADDR", consumer_addr.to_string()),
            ("SLUICE_REPLICATE_MAX_AGE_MS", "100".to_string()),
            ("SLUICE_REPLICA_REFRESH_MS", "100".to_string()),
            // The default: a segment whose announcement were lost (the ingest node's kill
            // cancelling the publisher's call) would wait this long for the next listing.
            ("SLUICE_LIST_INTERVAL_SECS", "30".to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v)),
    );
    let with = |extra: &[(&str, String)]| {
        let mut env = env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        env
    };
    let ingest_env = with(&[
        ("SLUICE_NODE_ID", "a".to_string()),
        ("SLUICE_INGEST_ADDR", ingest.to_string()),
    ]);
    let handler_env = |addr: SocketAddr| with(&[("SLUICE_QUERY_HANDLER_ADDR", addr.to_string())]);
    let publisher = Sluice::spawn(&["publisher"], &env, dir.path(), "publisher");
    let consumer = Sluice::spawn(&["consumer"], &env, dir.path(), "consumer");
    let mut ingest_node = Sluice::spawn(&["ingest-api"], &ingest_env, dir.path(), "ingest");
    // Only the first handler runs at first: every stream starts on it, so that its kill -9
    // below cuts them. The second starts later, and the query API fails over to it.
    let mut first_handler = Sluice::spawn(
        &["query-handler"],
        &handler_env(handlers[0]),
        dir.path(),
        "h0",
    );
    let query_api = Sluice::spawn(
        &["query-api"],
        &with(&[
            ("SLUICE_QUERY_ADDR", api.to_string()),
            (
                "SLUICE_QUERY_HANDLER_ADDR",
                format!("{},{}", handlers[0], handlers[1]),
            ),
        ]),
        dir.path(),
        "query-api",
    );
    wait_for_port(publisher_addr, &publisher).await;
    wait_for_port(consumer_addr, &consumer).await;
    wait_for_port(ingest, &ingest_node).await;
    wait_for_port(handlers[0], &first_handler).await;
    wait_for_port(api, &query_api).await;
    let dir_path = dir.path().to_path_buf();
    let logs = move || {
        let mut text = String::new();
        for name in ["query-api", "h0", "h1", "consumer", "ingest", "ingest-2"] {
            let log =
                std::fs::read_to_string(dir_path.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            text += &format!("---- {name} (last lines)\n");
            for line in tail.into_iter().rev() {
                text += line;
                text.push('\n');
            }
        }
        text
    };

    // The history: notifications from an hour ago, posted and replicated before the feed is
    // read.
    let posted = Arc::new(Mutex::new(Posted::default()));
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let history_batches: Vec<Vec<Value>> = (0..HISTORY)
        .map(|i| {
            let at = (hour_ago + chrono::Duration::seconds(((i * 7) % HISTORY) as i64))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            feed_notification("h", i, &at)
        })
        .collect::<Vec<_>>()
        .chunks(50)
        .map(<[Value]>::to_vec)
        .collect();
    let history_client = client();
    for batch in history_batches {
        post_durable(&history_client, ingest, batch, &posted).await;
    }
    let history: HashSet<String> = posted
        .lock()
        .unwrap()
        .notifications
        .values()
        .filter(|n| n["platform"] == PLATFORM)
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();

    let feed_url = format!("http://{api}/v1/feed?platform={PLATFORM}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let feed = loop {
        let (status, feed) = get(&format!("{feed_url}&limit=10000")).await;
        if status == 200 && feed["notifications"].as_array().unwrap().len() == history.len() {
            break feed;
        }
        assert!(
            (status == 200 || status == 503) && Instant::now() < deadline,
            "the history is not replicated after 60 s: {status} {}\n{}",
            feed.to_string().chars().take(500).collect::<String>(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let version = feed["version"].as_str().unwrap().to_string();
    assert!(version.parse::<u64>().is_ok(), "{feed}");
    assert_eq!(feed["truncated"], json!(false));
    let history_ids = ids(&feed["notifications"]);
    assert_eq!(
        history_ids.iter().cloned().collect::<HashSet<_>>(),
        history,
        "the history holds every replicated notification of the platform"
    );
    // Oldest first: by occurred_at, received_at, id.
    let order_key = |n: &Value| {
        let time =
            |field: &str| chrono::DateTime::parse_from_rfc3339(n[field].as_str().unwrap()).unwrap();
        (
            time("occurred_at"),
            time("received_at"),
            n["id"].as_str().unwrap().to_string(),
        )
    };
    let keys: Vec<_> = feed["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(order_key)
        .collect();
    assert!(keys.is_sorted(), "the history is oldest first");
    // The limit keeps the newest; a filter keeps that post's, in the same order.
    let (status, newest) = get(&format!("{feed_url}&limit=10")).await;
    assert_eq!(status, 200, "{newest}");
    assert_eq!(newest["truncated"], json!(true));
    assert_eq!(
        ids(&newest["notifications"]),
        history_ids[history_ids.len() - 10..]
    );
    let (status, one_post) = get(&format!("{feed_url}&post_id={FOLLOWED_POST}&limit=10000")).await;
    assert_eq!(status, 200, "{one_post}");
    let post_of: HashMap<String, Value> = feed["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_string(), n["post_id"].clone()))
        .collect();
    let expected_post_history: Vec<String> = history_ids
        .iter()
        .filter(|id| post_of[*id] == FOLLOWED_POST)
        .cloned()
        .collect();
    assert!(!expected_post_history.is_empty());
    assert_eq!(ids(&one_post["notifications"]), expected_post_history);

    // What a stream refuses, before any event.
    let stream_url = format!("http://{api}/v1/feed/stream?platform={PLATFORM}");
    let no_key = reqwest::Client::new()
        .get(format!("{stream_url}&from={version}"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), 401, "{}", no_key.text().await.unwrap());
    for (from, says) in [
        ("from=yesterday", "is not a feed position"),
        ("from=1.2", "is not a feed position"),
        ("from=-1", "is not a feed position"),
        ("from=1000000", "not in the replica yet"),
        ("", "from"),
    ] {
        let (status, body) = get(&format!("{stream_url}&{from}")).await;
        assert_eq!(status, 400, "{from}: {body}");
        assert!(body.to_string().contains(says), "{from}: {body}");
    }

    // The streams, from the feed's version; then the writer.
    let main = Follower::start(
        "the platform's stream",
        api,
        format!("platform={PLATFORM}"),
        version.clone(),
    );
    let one_post = Follower::start(
        "the post's stream",
        api,
        format!("platform={PLATFORM}&post_id={FOLLOWED_POST}"),
        version.clone(),
    );
    main.wait_for_connections(1, Duration::from_secs(20), &logs)
        .await;
    one_post
        .wait_for_connections(1, Duration::from_secs(20), &logs)
        .await;
    let writing = writer(ingest, posted.clone());
    let write_start = Instant::now();

    // Cut 1: the client goes away right after a notification, in the middle of a version.
    while main.notifications() < 300 {
        main.check(&logs);
        assert!(
            write_start.elapsed() < Duration::from_secs(25),
            "no notifications on the stream:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    main.cut_after(CUT_AFTER_NOTIFICATION, &logs).await;
    let first_cut = lock(&main.state).connections[0].clone();
    eprintln!("feed: cut 1 by the client after {:?}", first_cut.cut_at);

    // Cut 2: the second handler starts, and the first, which serves both streams, is killed.
    let second_handler = Sluice::spawn(
        &["query-handler"],
        &handler_env(handlers[1]),
        dir.path(),
        "h1",
    );
    wait_for_port(handlers[1], &second_handler).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let received = main.notifications();
    first_handler.kill9();
    let killed_at = Instant::now();
    main.wait_for_connections(3, Duration::from_secs(30), &logs)
        .await;
    one_post
        .wait_for_connections(2, Duration::from_secs(30), &logs)
        .await;
    eprintln!(
        "feed: cut 2 by a kill -9 of the query handler after {received} notifications; \
         both streams resumed on the other within {:?}",
        killed_at.elapsed()
    );

    // The ingest node is killed and comes back: a new producer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ingest_node.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    ingest_node = Sluice::spawn(&["ingest-api"], &ingest_env, dir.path(), "ingest-2");
    wait_for_port(ingest, &ingest_node).await;
    eprintln!(
        "feed: the ingest node restarted at {:?} of writing",
        write_start.elapsed()
    );

    // Cut 3: the client goes away right after a checkpoint.
    tokio::time::sleep(Duration::from_secs(3)).await;
    main.cut_after(CUT_AFTER_CHECKPOINT, &logs).await;

    let written = writing.await.unwrap();
    eprintln!(
        "feed: {written} notifications written in {:?}",
        write_start.elapsed()
    );
    let posted = std::mem::take(&mut *posted.lock().unwrap());
    let new_of = |post: Option<&str>| -> HashSet<String> {
        posted
            .notifications
            .iter()
            .filter(|(id, n)| {
                id.starts_with('w')
                    && n["platform"] == PLATFORM
                    && post.is_none_or(|post| n["post_id"] == post)
            })
            .map(|(id, _)| id.clone())
            .collect()
    };
    let expected = new_of(None);
    let expected_for_post = new_of(Some(FOLLOWED_POST));
    assert_eq!(
        posted.acked.len(),
        HISTORY + written,
        "every request was acknowledged"
    );
    // Wait for every new notification; then for a checkpoint past the last one, so that a
    // repeat after it would be seen too.
    let settled = |follower: &Follower, expected: usize| {
        let state = lock(&follower.state);
        let notifications: Vec<&SseEvent> = state
            .events
            .iter()
            .map(|(e, _, _)| e)
            .filter(|e| e.event == "notification")
            .collect();
        let last_version = notifications
            .last()
            .map_or(0, |e| position(e.id.as_deref().unwrap()).0);
        notifications.len() >= expected
            && state.events.iter().any(|(e, _, _)| {
                e.event == "checkpoint" && position(e.id.as_deref().unwrap()).0 >= last_version
            })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(settled(&main, expected.len()) && settled(&one_post, expected_for_post.len())) {
        main.check(&logs);
        one_post.check(&logs);
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    main.task.abort();
    one_post.task.abort();
    main.check(&logs);
    one_post.check(&logs);

    let connections = lock(&main.state).connections.clone();
    for (i, c) in connections.iter().enumerate() {
        eprintln!("feed: main stream connection {i}: {c:?}");
    }
    assert!(connections.len() >= 4, "{connections:?}");
    let cut_at = first_cut.cut_at.as_deref().unwrap();
    assert_ne!(
        position(cut_at).1,
        u64::MAX,
        "the first cut was after a notification, inside a version: {cut_at}"
    );
    assert_eq!(connections[1].resumed_after.as_deref(), Some(cut_at));
    assert!(
        !connections[1]
            .ended
            .as_deref()
            .unwrap()
            .contains("the client cut"),
        "the handler's kill ended the second connection: {connections:?}"
    );
    let third_cut = connections[2].cut_at.as_deref().unwrap();
    assert_eq!(
        position(third_cut).1,
        u64::MAX,
        "the third cut was after a checkpoint: {third_cut}"
    );
    assert_eq!(connections[3].resumed_after.as_deref(), Some(third_cut));
    let post_connections = lock(&one_post.state).connections.clone();
    assert!(
        !post_connections[0]
            .ended
            .as_deref()
            .unwrap()
            .contains("the client cut"),
        "{post_connections:?}"
    );

    // The resumption after the first cut went on inside the version it was cut in.
    let first_after_cut = lock(&main.state)
        .events
        .iter()
        .find(|(_, _, connection)| *connection == 1)
        .map(|(e, _, _)| e.clone())
        .unwrap();
    assert_eq!(first_after_cut.event, "notification", "{first_after_cut:?}");
    let resumed_at = position(first_after_cut.id.as_deref().unwrap());
    assert_eq!(
        resumed_at.0,
        position(cut_at).0,
        "the first cut was in the middle of a version's rows: cut at {cut_at}, resumed at \
         {first_after_cut:?}"
    );

    let arrivals = check_followed(&main, &expected, &history, &posted);
    let post_arrivals = check_followed(&one_post, &expected_for_post, &history, &posted);
    let (p50, p99, max) = summary(arrivals.iter().map(Arrival::freshness).collect());
    let (_, post_p99, _) = summary(post_arrivals.iter().map(Arrival::freshness).collect());
    let versions: HashSet<u64> = arrivals.iter().map(|a| a.version).collect();
    eprintln!(
        "feed: {} new notifications of {PLATFORM} ({} of post {FOLLOWED_POST}) in {} versions, \
         each received once, in order, over {} connections; freshness from durable ack to \
         event: p50 {p50:?}, p99 {p99:?}, max {max:?} (the post's stream: p99 {post_p99:?}); \
         {:?} in all",
        expected.len(),
        expected_for_post.len(),
        versions.len(),
        connections.len(),
        started.elapsed()
    );
    // Where the time goes: from the ack to the commit in the replica's log (the consumer), and
    // from the commit to the event (the handler and the query API). The commit's time is its
    // log file's, which the S3 server wrote.
    let anchor = (Instant::now(), std::time::SystemTime::now());
    let wall = |at: Instant| anchor.1 - anchor.0.saturating_duration_since(at);
    let log = s3.bucket_dir(BUCKET).join("replica/_delta_log");
    let committed: HashMap<u64, std::time::SystemTime> = versions
        .iter()
        .filter_map(|v| {
            let meta = std::fs::metadata(log.join(format!("{v:020}.json"))).ok()?;
            Some((*v, meta.modified().ok()?))
        })
        .collect();
    if committed.len() == versions.len() {
        let to_commit = summary(
            arrivals
                .iter()
                .map(|a| {
                    committed[&a.version]
                        .duration_since(wall(a.acked))
                        .unwrap_or_default()
                })
                .collect(),
        );
        let to_event = summary(
            arrivals
                .iter()
                .map(|a| {
                    wall(a.received)
                        .duration_since(committed[&a.version])
                        .unwrap_or_default()
                })
                .collect(),
        );
        eprintln!(
            "feed: ack to commit p50/p99/max {to_commit:?}; commit to event p50/p99/max \
             {to_event:?}"
        );
    }
    for (name, process) in [
        ("publisher", &publisher),
        ("consumer", &consumer),
        ("ingest (after its restart)", &ingest_node),
        ("second handler", &second_handler),
        ("query API", &query_api),
    ] {
        eprintln!("feed: CPU of the {name}: {:.1} s", process.cpu_seconds());
    }
    eprintln!(
        "feed: CPU of the test (S3 server, clients): {:.1} s",
        crate::support::cpu_seconds_of("self")
    );
    // Under a second at p99 with a release build (bench/README.md, "Newsfeed freshness":
    // `SLUICE_TEST_BIN` runs this test on one); this build is a debug one, on a machine that
    // CI loads with other tests, so the bound here only catches a lost wake-up or a poll gone
    // slow.
    assert!(
        p99 < FRESHNESS_BOUND,
        "freshness p99 {p99:?} (p50 {p50:?}, max {max:?})"
    );
    drop((second_handler, ingest_node, query_api, consumer, publisher));
}
