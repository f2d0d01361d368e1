//! What the integration tests share: an S3 server, `sluice` processes, and a load generator.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use serde_json::{Value, json};
use sluice_core::master::MasterStore;
use tokio::net::TcpListener;

pub(crate) const ACCESS_KEY: &str = "sluice-test";
pub(crate) const SECRET_KEY: &str = "sluice-test-secret";
pub(crate) const BUCKET: &str = "sluice";

/// The API key every test client sends ([`client`]): it may write every platform, read and
/// administer. Processes learn its hash from [`keys_env`].
pub(crate) const TEST_KEY: &str =
    "sk_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The cluster secret of the tests' services ([`join_cluster`] makes this process send it).
pub(crate) const CLUSTER_SECRET: &str = "sluice-tests-cluster-secret";

/// `SLUICE_KEYS` holding [`TEST_KEY`]'s line, so that a service whose auth is on accepts it,
/// and the cluster secret its gRPC services require.
pub(crate) fn auth_env() -> [(String, String); 2] {
    let line = sluice_auth::key_line("tests", "write:*,read,admin", TEST_KEY).unwrap();
    [
        ("SLUICE_KEYS".to_string(), line),
        (
            "SLUICE_CLUSTER_SECRET".to_string(),
            CLUSTER_SECRET.to_string(),
        ),
    ]
}

/// Makes this test process's gRPC clients send [`CLUSTER_SECRET`], as the services do.
#[allow(
    dead_code,
    reason = "the benchmarks include this file and call no service directly"
)]
pub(crate) fn join_cluster() {
    static JOINED: std::sync::Once = std::sync::Once::new();
    JOINED.call_once(|| sluice_proto::cluster::set_secret(CLUSTER_SECRET).unwrap());
}

/// An HTTP client that sends [`TEST_KEY`] with every request.
pub(crate) fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {TEST_KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

/// A real S3 server (`s3s-fs`) on loopback, serving a temporary directory, with signature
/// checks on. It stops when dropped.
pub(crate) struct S3Server {
    pub(crate) endpoint: String,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl S3Server {
    pub(crate) async fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let fs = s3s_fs::FileSystem::new(dir.path()).unwrap();
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        // s3s-fs checks `If-None-Match: *` and `If-Match` before it writes, not atomically with
        // the write: two conditional writes of one key at once can both pass (seen: two
        // consumers both creating lease epoch 1). S3 and MinIO decide them atomically; here they
        // take turns.
        let conditional = Arc::new(tokio::sync::Mutex::new(()));
        let service = hyper::service::service_fn(
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let (service, conditional) = (service.clone(), Arc::clone(&conditional));
                async move {
                    let headers = request.headers();
                    let _turn = if headers.contains_key(axum::http::header::IF_NONE_MATCH)
                        || headers.contains_key(axum::http::header::IF_MATCH)
                    {
                        Some(conditional.lock_owned().await)
                    } else {
                        None
                    };
                    hyper::service::Service::call(&service, request).await
                }
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let connection = http
                    .serve_connection(TokioIo::new(socket), service.clone())
                    .into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
        });
        S3Server {
            endpoint,
            dir,
            task,
        }
    }

    /// The environment a `sluice` process needs to use this server.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("SLUICE_STORAGE", &format!("s3://{BUCKET}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(auth_env())
        .collect()
    }

    /// An object store client of our own, configured explicitly (no process environment).
    pub(crate) fn store(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.endpoint)
                .with_allow_http(true)
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .build()
                .unwrap(),
        )
    }

    /// The directory behind a bucket: `s3s-fs` keeps each bucket as a directory under its root.
    #[allow(
        dead_code,
        reason = "the replication benchmark measures the store with it"
    )]
    pub(crate) fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join(bucket)
    }

    /// Creates a bucket: `s3s-fs` keeps each bucket as a directory under its root.
    pub(crate) fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir(self.dir.path().join(bucket)).unwrap();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `sluice` binary the tests run: this build's, or the one `SLUICE_TEST_BIN` names (a
/// release build, to measure what a test reports at production speed).
pub(crate) fn sluice_bin() -> PathBuf {
    std::env::var_os("SLUICE_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sluice")))
}

/// `sluice <subcommand> --help`, which names every setting's environment variable.
pub(crate) fn help(subcommand: &str) -> String {
    let help = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(
        help.status.success(),
        "sluice {subcommand} is not a command"
    );
    String::from_utf8(help.stdout).unwrap()
}

/// Whether a `--help` text has the setting `key` (`[env: KEY=…]`, or `[env: KEY]` for a
/// setting whose value is never shown).
pub(crate) fn has_setting(help: &str, key: &str) -> bool {
    help.contains(&format!("[env: {key}=")) || help.contains(&format!("[env: {key}]"))
}

/// A free port on loopback, for a process to listen on. It is taken below Linux's ephemeral
/// range (32768–60999): a port that `bind(0)` handed out and that was closed again can be taken
/// by any outgoing connection before the process binds it (one test failed with "Address
/// already in use" that way). Ports are handed out in turn from a base that depends on the
/// process id, so the tests of one run never get the same one.
pub(crate) fn free_addr() -> SocketAddr {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % u32::from(HIGH - LOW)) as u16;
    for _ in LOW..HIGH {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % (HIGH - LOW);
        let addr = SocketAddr::from(([127, 0, 0, 1], LOW + offset));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port on loopback between {LOW} and {HIGH}");
}

/// A running `sluice` process, killed when dropped.
pub(crate) struct Sluice {
    child: Option<Child>,
    pub(crate) log: PathBuf,
}

impl Sluice {
    pub(crate) fn spawn(
        args: &[&str],
        env: &[(String, String)],
        cwd: &Path,
        log_name: &str,
    ) -> Sluice {
        let log = cwd.join(format!("{log_name}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(sluice_bin());
        // The tests' notifications carry fixed dates, as a load of history does: no bound on
        // their age unless a test sets one.
        if !env.iter().any(|(k, _)| k == "SLUICE_MAX_EVENT_AGE_DAYS") {
            command.env("SLUICE_MAX_EVENT_AGE_DAYS", "0");
        }
        let child = command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("SLUICE_LOG", "info")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Sluice {
            child: Some(child),
            log,
        }
    }

    pub(crate) fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Whether the process has exited by itself (or was killed).
    pub(crate) fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) to the process.
    pub(crate) fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("process is running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Sends SIGTERM and waits for the exit code.
    pub(crate) fn terminate(&mut self) -> i32 {
        let mut child = self.child.take().expect("process is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself and returns its exit code.
    pub(crate) fn wait(&mut self) -> i32 {
        let mut child = self.child.take().expect("process is running");
        child.wait().unwrap().code().unwrap_or(-1)
    }

    /// CPU seconds (user + system) the process has used so far; 0 once it has exited.
    #[allow(dead_code, reason = "the scaling benchmark measures it")]
    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.child
            .as_ref()
            .map_or(0.0, |child| cpu_seconds_of(&child.id().to_string()))
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// CPU seconds (user + system) used by process `pid` (`self` for this one), from
/// `/proc/<pid>/stat` in clock ticks of 1/100 s (Linux's USER_HZ).
#[allow(dead_code, reason = "the scaling benchmark measures it")]
pub(crate) fn cpu_seconds_of(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after it are space-separated.
    let Some((_, fields)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = fields.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// Waits until something accepts TCP connections at `addr`.
pub(crate) async fn wait_for_port(addr: SocketAddr, what: &Sluice) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on {addr}; log:\n{}",
            what.log_text()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// GETs `url` and parses the answer as JSON.
pub(crate) async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The environment of a `sluice` on the embedded default (`./data` in its working directory),
/// with the tests' key and cluster secret.
pub(crate) fn local_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = auth_env().into();
    env.push(("SLUICE_STORAGE".into(), "file://./data".into()));
    env
}

/// A `sluice all` of a test's own, answering on its two REST ports.
pub(crate) struct All {
    pub(crate) sluice: Sluice,
    pub(crate) ingest: SocketAddr,
    pub(crate) api: SocketAddr,
}

/// Starts `sluice all` in `dir` with `env` (an S3 server's, say), every service on a free port
/// of its own, quick replication, and then `settings` (which win over all of those).
pub(crate) async fn start_all(
    env: Vec<(String, String)>,
    settings: &[(&str, String)],
    dir: &Path,
    log_name: &str,
) -> All {
    let (ingest, api) = (free_addr(), free_addr());
    let mut env = env;
    for (key, value) in [
        ("SLUICE_INGEST_ADDR", ingest.to_string()),
        ("SLUICE_QUERY_ADDR", api.to_string()),
        ("SLUICE_PUBLISHER_ADDR", free_addr().to_string()),
        ("SLUICE_CONSUMER_ADDR", free_addr().to_string()),
        ("SLUICE_QUERY_HANDLER_ADDR", free_addr().to_string()),
        ("SLUICE_REPLICATE_MAX_AGE_MS", "100".to_string()),
        ("SLUICE_REPLICA_REFRESH_MS", "100".to_string()),
    ]
    .into_iter()
    .chain(settings.iter().cloned())
    {
        env.push((key.to_string(), value));
    }
    let sluice = Sluice::spawn(&["all"], &env, dir, log_name);
    wait_for_port(ingest, &sluice).await;
    wait_for_port(api, &sluice).await;
    All {
        sluice,
        ingest,
        api,
    }
}

/// How many notifications an ingest API holds as green or has evicted (red): all of them are
/// in the replica.
pub(crate) async fn replicated_count(ingest: SocketAddr) -> (u64, Value) {
    let stats = get_json(&format!("http://{ingest}/v1/stats")).await;
    let memory = &stats["memory"];
    (
        memory["green"].as_u64().unwrap() + memory["evicted"].as_u64().unwrap(),
        stats,
    )
}

pub(crate) fn notification(i: usize) -> Value {
    let platforms = ["mastodon", "bsky", "threads"];
    let types = [
        "post.created",
        "post.edited",
        "post.liked",
        "post.shared",
        "post.deleted",
    ];
    json!({
        "platform": platforms[i % platforms.len()],
        "id": format!("n{i}"),
        "type": types[i % types.len()],
        "occurred_at": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
        "post_id": format!("p{}", i % 5000),
        "author_id": format!("a{}", i % 700),
        "text": format!("notification number {i}"),
        "tags": ["rust", format!("t{}", i % 50)],
        "metrics": {"likes": i % 100},
    })
}

/// What a load run saw.
pub(crate) struct LoadReport {
    pub(crate) retries: usize,
}

/// Posts `items` (indexes into [`notification`]) in requests of `per_request`, from
/// `concurrency` clients at once, each retrying on a 5xx or a broken connection as a careful
/// platform would. Panics on any other answer than 200. `progress` counts finished requests.
pub(crate) async fn post_all(
    ingest: SocketAddr,
    items: Vec<usize>,
    per_request: usize,
    concurrency: usize,
    progress: Arc<AtomicUsize>,
) -> LoadReport {
    let client = client();
    let url = format!("http://{ingest}/v1/notifications?ack=durable");
    let bodies: Vec<String> = items
        .chunks(per_request)
        .map(|chunk| {
            chunk
                .iter()
                .map(|&i| notification(i).to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let retries = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, queue, retries, progress) = (
            client.clone(),
            url.clone(),
            queue.clone(),
            retries.clone(),
            progress.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    return;
                };
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 100, "a request failed 100 times");
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone())
                        .timeout(Duration::from_secs(60))
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status() == 200 => {
                            let answer: Value = response.json().await.unwrap();
                            assert_eq!(answer["rejected"], json!([]), "{answer}");
                            break;
                        }
                        Ok(response) if response.status().is_server_error() => {}
                        Ok(response) => panic!(
                            "unexpected {}: {}",
                            response.status(),
                            response.text().await.unwrap_or_default()
                        ),
                        Err(_) => {}
                    }
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                progress.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    LoadReport {
        retries: retries.load(Ordering::Relaxed),
    }
}

/// Every (platform, id) stored in the master segments, with how often, read back from the store.
pub(crate) async fn count_master(
    master: &MasterStore,
) -> std::collections::HashMap<(String, String), usize> {
    let mut counts = std::collections::HashMap::new();
    for segment in master.list_segments().await.unwrap() {
        let segment = master.read_segment(&segment.path).await.unwrap();
        for record in segment.records {
            *counts.entry((record.platform, record.id)).or_insert(0) += 1;
        }
    }
    counts
}

impl S3Server {
    /// The Delta URL and storage options of a table in this server's Sluice bucket, given
    /// explicitly (never from the process environment).
    pub(crate) fn table(
        &self,
        path: &str,
    ) -> (url::Url, std::collections::HashMap<String, String>) {
        let url = url::Url::parse(&format!("s3://{BUCKET}/{path}")).unwrap();
        let options = [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        (url, options)
    }
}

/// A Python with `tests/requirements.txt` installed, in a venv under the target directory,
/// made the first time a test asks for it.
pub(crate) fn python() -> PathBuf {
    static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pyenv");
            let python = venv.join("bin/python");
            let ready = || {
                python.exists()
                    && Command::new(&python)
                        .args([
                            "-c",
                            "import deltalake, pyarrow, duckdb, kubernetes_validate, schemathesis, adbc_driver_flightsql",
                        ])
                        .status()
                        .is_ok_and(|s| s.success())
            };
            if !ready() {
                let made = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .status()
                    .expect("python3 runs");
                assert!(made.success(), "python3 -m venv failed");
                let requirements = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/requirements.txt");
                let installed = Command::new(&python)
                    .args(["-m", "pip", "install", "--quiet", "-r", requirements])
                    .status()
                    .expect("pip runs");
                assert!(installed.success(), "pip install -r {requirements} failed");
            }
            python
        })
        .clone()
}

/// Runs the tests' Python with `args` and returns what it printed; panics with its stderr when
/// it fails.
pub(crate) fn run_python<I, S>(args: I) -> Vec<u8>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = Command::new(python()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A TCP proxy on loopback in front of a server, that can make it slow or take it away: what an
/// S3 outage and a slow S3 look like to the processes that use it.
pub(crate) struct FaultProxy {
    pub(crate) addr: SocketAddr,
    faults: Arc<ProxyFaults>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ProxyFaults {
    down: std::sync::atomic::AtomicBool,
    delay_ms: std::sync::atomic::AtomicU64,
    /// Bumped to cut every open connection.
    cut: tokio::sync::watch::Sender<u64>,
}

impl FaultProxy {
    pub(crate) async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let faults = Arc::new(ProxyFaults::default());
        let shared = faults.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if shared.down.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let faults = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let mut cut = faults.cut.subscribe();
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        _ = futures::future::join(
                            pump(client_read, server_write, faults.clone()),
                            pump(server_read, client_write, faults.clone()),
                        ) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        FaultProxy { addr, faults, task }
    }

    /// Takes the server away: open connections are cut, new ones closed at once.
    pub(crate) fn go_down(&self) {
        self.faults.down.store(true, Ordering::Release);
        self.faults.cut.send_modify(|generation| *generation += 1);
    }

    pub(crate) fn come_back(&self) {
        self.faults.down.store(false, Ordering::Release);
    }

    /// Holds every chunk of bytes, either way, for `delay` before passing it on.
    pub(crate) fn slow_down(&self, delay: Duration) {
        self.faults
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Release);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.go_down();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: Arc<ProxyFaults>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        let delay = faults.delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

impl S3Server {
    /// The environment a `sluice` process needs to use this server through `proxy`.
    pub(crate) fn env_through(&self, proxy: &FaultProxy) -> Vec<(String, String)> {
        let mut env = self.env();
        for (key, value) in &mut env {
            if key == "AWS_ENDPOINT_URL" {
                *value = format!("http://{}", proxy.addr);
            }
        }
        env
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.endpoint.trim_start_matches("http://").parse().unwrap()
    }
}
