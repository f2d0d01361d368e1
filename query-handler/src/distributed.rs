//! Query handlers as workers of one distributed engine, `datafusion-distributed`
//! ([docs/distributed.md](../../docs/distributed.md)).
//!
//! Every handler serves the engine's `WorkerService` beside its own, behind the cluster secret,
//! and coordinates the queries it is given. A query over enough of the replica (by the bytes of
//! its files, from the Delta log) is planned with the engine's planner, which cuts the physical
//! plan into stages at its exchanges and runs the stages' tasks on the live handlers; a smaller
//! one runs on this handler alone, with every rule of the handler.
//!
//! What crosses the wire is DataFusion's own: the handler's scan is a `DataSourceExec` over the
//! replica's Parquet files, which the engine's codec carries with each file's read schema. The
//! handler's rules that put operators or functions of its own into a plan
//! ([`LOCAL_ONLY_RULES`]) are off in distributed runs: numbering strings per query cannot be
//! shared by several processes, and the others would need codecs that no distributed plan needs
//! to be right.
//!
//! Membership is `--query-workers`: `host:port` entries and `dns://name:port` names (a
//! headless Kubernetes Service resolves to its ready pods), resolved every
//! [`MEMBERSHIP_EVERY`] and kept to the addresses that accept a connection. A worker that dies
//! mid-query fails that query (the engine does not retry a task); the query's error says so,
//! the membership is checked again at once, and the next query is planned without it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::common::Result;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion_distributed::{
    ChannelResolver, DesiredTaskCountEvent, DesiredTaskCountEventResponse, DesiredTaskCountHandler,
    DistributedExt, RouteTasksEvent, RouteTasksEventResponse, SessionStateBuilderExt, Worker,
    WorkerChannel, WorkerQueryContext, WorkerResolver,
};
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::HeaderValue;
use url::Url;

use crate::replica::ReplicaView;

/// The handler's rules that are off in distributed runs (see the module's comment).
pub const LOCAL_ONLY_RULES: [&str; 8] = [
    "number_groups",
    "group_as_views",
    "dense_aggregate",
    "shared_digest",
    "unnest_by_slices",
    "map_lookup",
    "like_once_per_value",
    "utc_date_trunc",
];

/// How often the membership is resolved and checked.
pub const MEMBERSHIP_EVERY: Duration = Duration::from_secs(2);

/// How often a distributed query checks that the workers running its tasks are still members.
const LOSS_CHECK_EVERY: Duration = Duration::from_millis(250);

/// How long resolving one entry of the membership may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a worker has to accept a connection to count as live. A connection is accepted by
/// the kernel, not the process, so a busy worker passes; one whose process is gone is refused
/// at once.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The distributed engine's settings.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "distributed_config")]
pub struct DistributedConfig {
    /// The query handlers that run distributed queries together (this one included):
    /// comma-separated `host:port` of their gRPC ports, or `dns://name:port` (every address the
    /// name resolves to, e.g. a headless Kubernetes Service). Empty: every query runs on the
    /// handler that is given it.
    #[arg(long, env = "SLUICE_QUERY_WORKERS", value_delimiter = ',')]
    pub query_workers: Vec<String>,
    /// This handler's own `host:port` as the others reach it (one of `--query-workers`), so
    /// that its share of a query runs in process. By default its listening address.
    #[arg(long, env = "SLUICE_QUERY_ADVERTISE_ADDR")]
    pub query_advertise_addr: Option<String>,
    /// A query is distributed when the replica's files it could read hold at least this many
    /// bytes (after partition pruning, by the Delta log's sizes).
    #[arg(
        long,
        env = "SLUICE_DISTRIBUTE_MIN_BYTES",
        default_value_t = 256 << 20
    )]
    pub distribute_min_bytes: u64,
    /// Bytes of the replica's files per task of a distributed scan.
    #[arg(
        long,
        env = "SLUICE_DISTRIBUTE_BYTES_PER_TASK",
        default_value_t = 128 << 20
    )]
    pub distribute_bytes_per_task: u64,
}

impl DistributedConfig {
    pub fn is_on(&self) -> bool {
        self.query_workers.iter().any(|w| !w.trim().is_empty())
    }
}

/// This handler's part in the distributed engine: the worker it serves, the live members, and
/// the channels to them.
#[derive(Clone)]
pub struct Cluster {
    members: Arc<Members>,
    channels: Channels,
    worker: Worker,
    self_url: Url,
    min_bytes: u64,
    bytes_per_task: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("self_url", &self.self_url.as_str())
            .field("members", &self.members.urls())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster of `config`, with this handler's worker reading `replica` and running its
    /// tasks in `runtime` (its memory pool and spill directory). `listening` is this handler's
    /// own address. The membership is followed until `shutdown`.
    pub fn start(
        config: &DistributedConfig,
        listening: SocketAddr,
        replica: Arc<ReplicaView>,
        runtime: Arc<RuntimeEnv>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Cluster> {
        let advertised = config
            .query_advertise_addr
            .clone()
            .unwrap_or_else(|| listening.to_string());
        let self_url = worker_url(&advertised)?;
        let channels = Channels::default();
        let worker = {
            let channels = channels.clone();
            let tasks_runtime = Arc::clone(&runtime);
            Worker::from_session_builder(move |ctx: WorkerQueryContext| {
                let (channels, runtime, replica) = (
                    channels.clone(),
                    Arc::clone(&tasks_runtime),
                    Arc::clone(&replica),
                );
                async move {
                    // A task's plan names the replica's files under the store of the table,
                    // which the session's runtime must hold before the plan is decoded.
                    if let Some(snapshot) = replica.current() {
                        snapshot.register_store(&runtime);
                    }
                    Ok(ctx
                        .builder
                        .with_distributed_channel_resolver(channels)
                        .build())
                }
            })
            .with_runtime_env(runtime)
            .with_version(env!("CARGO_PKG_VERSION"))
        };
        let members = Arc::new(Members::new(config.query_workers.clone(), channels.clone()));
        tokio::spawn(Arc::clone(&members).follow(shutdown));
        Ok(Cluster {
            members,
            channels,
            worker,
            self_url,
            min_bytes: config.distribute_min_bytes,
            bytes_per_task: config.distribute_bytes_per_task.max(1),
        })
    }

    /// The worker service this handler serves.
    pub fn worker(&self) -> &Worker {
        &self.worker
    }

    /// Whether a query over `bytes` of the replica is worth distributing now.
    pub fn worth_it(&self, bytes: u64) -> bool {
        bytes >= self.min_bytes && self.members.urls().len() >= 2
    }

    /// The first of `workers` (URLs a query sent tasks to) that is no longer a live member.
    pub fn lost(&self, workers: &[String]) -> Option<String> {
        let live = self.members.urls();
        workers
            .iter()
            .find(|worker| !live.iter().any(|url| url.as_str() == worker.as_str()))
            .cloned()
    }

    /// Waits until a worker that the query recorded in `routed` sent tasks to leaves the
    /// membership, and names it. A query waits for every task's stream, and a stage that reads a
    /// dead worker's stream late would see it fail only then: this ends the query within a
    /// membership check of the loss instead.
    pub async fn until_lost(&self, routed: &Routed) -> String {
        loop {
            tokio::time::sleep(LOSS_CHECK_EVERY).await;
            if let Some(lost) = self.lost(&routed.stages_and_workers().1) {
                return lost;
            }
        }
    }

    /// Checks the membership again now (after a query lost a worker).
    pub async fn check_members(&self) {
        self.members.refresh().await;
    }

    /// `builder` (a query's session, with the handler's planner set) with the distributed
    /// planner over this cluster, recording where it sends tasks in `routed`.
    pub fn distribute(
        &self,
        builder: SessionStateBuilder,
        routed: Arc<Routed>,
    ) -> Result<SessionStateBuilder> {
        let members = Arc::clone(&self.members);
        let route = move |event: RouteTasksEvent<'_>| route(&members, &routed, event);
        builder
            .with_distributed_planner()
            .with_distributed_worker_resolver(Resolver(Arc::clone(&self.members)))
            .with_distributed_channel_resolver(self.channels.clone())
            .with_distributed_local_worker_context(
                self.worker.to_local_worker_context(self.self_url.clone()),
            )
            .with_distributed_desired_task_count_handler(BigEnough {
                min_bytes: self.min_bytes,
                bytes_per_task: self.bytes_per_task,
            })
            .with_distributed_route_tasks_handler(route)
            .with_distributed_file_scan_config_bytes_per_partition(
                usize::try_from(self.bytes_per_task).unwrap_or(usize::MAX),
            )
    }
}

/// The URL the engine names the worker at `addr` (`host:port`) by.
fn worker_url(addr: &str) -> anyhow::Result<Url> {
    let addr = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    Ok(Url::parse(&format!(
        "{}://{}",
        sluice_proto::tls::scheme(),
        addr.trim_end_matches('/')
    ))?)
}

/// Where one query's tasks ran: the stages of its plan and the workers of its stages of more
/// than one task.
#[derive(Debug, Default)]
pub struct Routed(Mutex<(usize, BTreeSet<String>)>);

impl Routed {
    /// How many stages ran, and on which workers (empty when the query ran on one handler).
    pub fn stages_and_workers(&self) -> (usize, Vec<String>) {
        let routed = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (routed.0, routed.1.iter().cloned().collect())
    }
}

/// Sends a stage's tasks round the live members from a place that moves on with every stage,
/// so that the tasks of a query spread over every member; a one-task stage is left to the
/// engine, which runs it on this handler.
fn route(
    members: &Members,
    routed: &Routed,
    event: RouteTasksEvent<'_>,
) -> Option<Result<RouteTasksEventResponse>> {
    let mut record = routed.0.lock().unwrap_or_else(|e| e.into_inner());
    record.0 += 1;
    if event.task_count <= 1 {
        return None;
    }
    let urls = members.urls();
    if urls.is_empty() {
        return None;
    }
    let start = members.next_offset();
    let chosen: Vec<Url> = (0..event.task_count)
        .map(|task| urls[(start + task) % urls.len()].clone())
        .collect();
    record.1.extend(chosen.iter().map(Url::to_string));
    Some(Ok(RouteTasksEventResponse::new(chosen)))
}

/// A scan's task count by the bytes of the files it reads: one task (so no distribution)
/// below the minimum, else one per `bytes_per_task`. Other leaves are left to the engine's own
/// handlers.
struct BigEnough {
    min_bytes: u64,
    bytes_per_task: u64,
}

#[async_trait]
impl DesiredTaskCountHandler for BigEnough {
    async fn handle(
        &self,
        event: DesiredTaskCountEvent<'_>,
    ) -> Option<Result<DesiredTaskCountEventResponse>> {
        let scan = event
            .plan
            .downcast_ref::<DataSourceExec>()?
            .data_source()
            .downcast_ref::<FileScanConfig>()?;
        let bytes: u64 = scan
            .file_groups
            .iter()
            .flat_map(|group| group.files())
            .map(|file| file.effective_size())
            .sum();
        Some(Ok(if bytes < self.min_bytes {
            DesiredTaskCountEventResponse::maximum(1)
        } else {
            DesiredTaskCountEventResponse::desired(
                usize::try_from(bytes.div_ceil(self.bytes_per_task)).unwrap_or(usize::MAX),
            )
        }))
    }
}

/// The live members: the configured entries, resolved, that accepted a connection at the last
/// check.
struct Members {
    entries: Vec<String>,
    /// The addresses each entry resolved to last: an entry that does not resolve for a while
    /// (a DNS hiccup) keeps them, as the handlers' other channels do.
    resolved: Mutex<std::collections::HashMap<String, BTreeSet<SocketAddr>>>,
    live: RwLock<Vec<Url>>,
    offset: std::sync::atomic::AtomicUsize,
    /// The channels to the members, of which those to addresses no longer live are dropped.
    channels: Channels,
}

impl Members {
    fn new(entries: Vec<String>, channels: Channels) -> Members {
        Members {
            entries: entries
                .into_iter()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect(),
            resolved: Mutex::default(),
            live: RwLock::default(),
            offset: Default::default(),
            channels,
        }
    }

    fn urls(&self) -> Vec<Url> {
        self.live.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn next_offset(&self) -> usize {
        self.offset
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.refresh().await;
            tokio::select! {
                () = tokio::time::sleep(MEMBERSHIP_EVERY) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// Resolves every entry and keeps the addresses that accept a TCP connection.
    async fn refresh(&self) {
        let mut addrs = BTreeSet::new();
        for entry in &self.entries {
            let name = entry.strip_prefix("dns://").unwrap_or(entry);
            let name = name.split_once("://").map_or(name, |(_, rest)| rest);
            let lookup = tokio::net::lookup_host(name.trim_end_matches('/'));
            let found = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(found)) => Some(found.collect::<BTreeSet<SocketAddr>>()),
                Ok(Err(error)) => {
                    tracing::warn!(%error, entry, "cannot resolve a query worker");
                    None
                }
                Err(_) => {
                    tracing::warn!(entry, "resolving a query worker timed out");
                    None
                }
            };
            let mut resolved = self.resolved.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(found) = found {
                resolved.insert(entry.clone(), found);
            }
            addrs.extend(resolved.get(entry).into_iter().flatten().copied());
        }
        let probes = addrs.into_iter().map(|addr| async move {
            let live = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            live.then_some(addr)
        });
        let live: Vec<Url> = futures::future::join_all(probes)
            .await
            .into_iter()
            .flatten()
            .filter_map(|addr| worker_url(&addr.to_string()).ok())
            .collect();
        let mut known = self.live.write().unwrap_or_else(|e| e.into_inner());
        if *known != live {
            tracing::info!(
                workers = ?live.iter().map(Url::as_str).collect::<Vec<_>>(),
                "query workers changed"
            );
            metrics::gauge!(sluice_telemetry::names::QUERY_WORKERS).set(live.len() as f64);
            self.channels.cache.retain(|url, _| live.contains(url));
            *known = live;
        }
    }
}

/// The engine's view of the live members.
struct Resolver(Arc<Members>);

impl WorkerResolver for Resolver {
    fn get_urls(&self) -> Result<Vec<Url>, DataFusionError> {
        Ok(self.0.urls())
    }
}

/// Channels to the workers: the endpoint every Sluice client uses (TLS when set, connect
/// timeout, keep-alive) and the cluster secret on every call, one channel per worker.
#[derive(Clone, Default)]
struct Channels {
    cache: Arc<dashmap::DashMap<Url, datafusion_distributed::grpc::BoxCloneSyncChannel>>,
}

#[async_trait]
impl ChannelResolver for Channels {
    async fn get_worker_client_for_url(
        &self,
        url: &Url,
    ) -> Result<Box<dyn WorkerChannel>, DataFusionError> {
        if let Some(channel) = self.cache.get(url) {
            return Ok(datafusion_distributed::grpc::create_worker_client(
                channel.clone(),
            ));
        }
        let endpoint = sluice_proto::endpoint(url.as_str())
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let secret = sluice_proto::cluster::secret()
            .and_then(|secret| HeaderValue::from_bytes(secret.as_encoded_bytes()).ok());
        let channel = tower::ServiceBuilder::new()
            .map_request(
                move |mut request: tonic::codegen::http::Request<tonic::body::Body>| {
                    if let Some(secret) = &secret {
                        request
                            .headers_mut()
                            .insert(sluice_proto::cluster::HEADER, secret.clone());
                    }
                    request
                },
            )
            .service(endpoint.connect_lazy());
        let channel = datafusion_distributed::grpc::BoxCloneSyncChannel::new(channel);
        self.cache.insert(url.clone(), channel.clone());
        Ok(datafusion_distributed::grpc::create_worker_client(channel))
    }
}

/// A service whose calls, and the streams of their answers, run on `runtime`: the worker
/// service on the handler's query runtime, so that other handlers' tasks use the cores queries
/// use and leave the gRPC runtime (health, Flight SQL, the feed) responsive, as the handler's
/// own queries do.
#[derive(Clone)]
pub struct OnRuntime<S> {
    inner: S,
    runtime: tokio::runtime::Handle,
}

impl<S> OnRuntime<S> {
    pub fn new(inner: S, runtime: tokio::runtime::Handle) -> Self {
        OnRuntime { inner, runtime }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for OnRuntime<S> {
    const NAME: &'static str = S::NAME;
}

type HttpRequest = tonic::codegen::http::Request<tonic::body::Body>;
type HttpResponse = tonic::codegen::http::Response<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for OnRuntime<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<HttpResponse, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // The clone each call takes is made ready in the call.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        use http_body_util::BodyExt;
        use tower::ServiceExt;

        let (inner, runtime) = (self.inner.clone(), self.runtime.clone());
        Box::pin(async move {
            let answered = runtime.spawn(async move { inner.oneshot(request).await });
            let Ok(Ok(response)) = answered.await else {
                return Ok(tonic::Status::internal("a worker call ended abruptly").into_http());
            };
            let (parts, mut body) = response.into_parts();
            let (frames, received) = tokio::sync::mpsc::channel(2);
            // Ends, dropping the worker's stream (which stops its task), as soon as the caller
            // drops the answer, not at the next frame, which a task that reads all its input
            // first (an aggregate, a sort, a join's build) would send only at its end.
            let streaming = Streaming::start();
            runtime.spawn(async move {
                let _streaming = streaming;
                loop {
                    let frame = tokio::select! {
                        biased;
                        () = frames.closed() => return,
                        frame = body.frame() => frame,
                    };
                    let Some(frame) = frame else { return };
                    if frames.send(frame).await.is_err() {
                        return;
                    }
                }
            });
            let stream = futures::stream::unfold(received, |mut received| async move {
                received.recv().await.map(|frame| (frame, received))
            });
            let body = tonic::body::Body::new(http_body_util::StreamBody::new(stream));
            Ok(HttpResponse::from_parts(parts, body))
        })
    }
}

/// One answer to another handler, counted in [`sluice_telemetry::names::QUERY_WORKER_STREAMS`]
/// while its body is sent.
struct Streaming;

impl Streaming {
    fn start() -> Self {
        metrics::gauge!(sluice_telemetry::names::QUERY_WORKER_STREAMS).increment(1.0);
        Streaming
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        metrics::gauge!(sluice_telemetry::names::QUERY_WORKER_STREAMS).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_urls_name_the_address_with_the_clusters_scheme() {
        assert_eq!(
            worker_url("127.0.0.1:7000").unwrap().as_str(),
            "http://127.0.0.1:7000/"
        );
        assert_eq!(
            worker_url("http://handler-0.handlers:7000/")
                .unwrap()
                .as_str(),
            "http://handler-0.handlers:7000/"
        );
    }

    #[test]
    fn tasks_go_round_the_members_and_one_task_stages_stay_with_the_engine() {
        let members = Members::new(vec![], Channels::default());
        *members.live.write().unwrap() = vec![
            worker_url("127.0.0.1:1").unwrap(),
            worker_url("127.0.0.1:2").unwrap(),
            worker_url("127.0.0.1:3").unwrap(),
        ];
        let routed = Routed::default();
        let plan: Arc<dyn datafusion::physical_plan::ExecutionPlan> =
            Arc::new(datafusion::physical_plan::empty::EmptyExec::new(Arc::new(
                arrow::datatypes::Schema::empty(),
            )));
        let task_ctx = Arc::new(datafusion::execution::TaskContext::default());
        let event = |task_count| RouteTasksEvent {
            task_ctx: Arc::clone(&task_ctx),
            plan: &plan,
            task_count,
        };
        assert!(route(&members, &routed, event(1)).is_none());
        let urls = route(&members, &routed, event(4)).unwrap().unwrap().urls;
        assert_eq!(urls.len(), 4);
        assert_eq!(urls[0], urls[3], "round the three members");
        assert_eq!(
            urls.iter().map(Url::as_str).collect::<BTreeSet<_>>().len(),
            3
        );
        let (stages, workers) = routed.stages_and_workers();
        assert_eq!((stages, workers.len()), (2, 3));
    }
}
