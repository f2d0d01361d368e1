//! The query handler: analysts' SQL over the replica, with DataFusion on every core.
//!
//! - [`snapshot`]: one version of the replica, ready to query, with its log's statistics.
//! - [`replica`]: a read-only view of the Delta table that follows its latest version; each
//!   query reads one snapshot.
//! - [`scan`]: the handler's own scan of a snapshot's Parquet files, which reads
//!   low-cardinality columns as dictionary keys.
//! - [`rules`]: the handler's rewrites of DataFusion's plans, each with a switch.
//! - [`engine`]: parses one statement, refuses anything but a read-only query, plans and runs
//!   it under a memory limit on the handler's own query runtime, and encodes the result as an
//!   Arrow IPC stream.
//! - [`cache`]: the orange cache, answers keyed by normalized SQL and replica version.
//! - [`queries`]: the states of recent queries (yellow while queued or running, then orange,
//!   done or failed), for `GetQuery`.
//! - [`series`]: `generate_series` and `range`, bounded.
//! - [`lookup`]: point reads of the replica for the other services (a post's notifications, a
//!   red notification).
//! - [`error`]: the one mapping from errors to gRPC codes.
//! - [`feed`]: the newsfeed, the replicated order of notifications as Delta's log gives it: the
//!   history up to a position, then every commit after it as it lands.
//! - [`flight`]: Arrow Flight SQL on the same port, for ADBC, JDBC and generic SQL clients,
//!   over the same path as `Execute`, with the analysts' API keys.
//!
//! A semaphore bounds how many queries run at once (each already uses every core); a query
//! that waits for a slot or runs past its timeout is cancelled and answered DEADLINE_EXCEEDED.

pub mod cache;
pub mod distributed;
pub mod engine;
pub mod error;
pub mod feed;
pub mod flight;
pub mod lookup;
pub mod queries;
pub mod replica;
pub mod rules;
pub mod scan;
pub mod series;
pub mod snapshot;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow_flight::flight_service_server::FlightServiceServer;
use datafusion::execution::disk_manager::{DiskManager, DiskManagerBuilder, DiskManagerMode};
use sluice_core::storage::{Storage, StorageUrl};
use sluice_proto::v1::query_handler_server::{QueryHandler, QueryHandlerServer};
use sluice_proto::v1::{
    ExecuteRequest, FeedBatch, FeedHistoryReply, FeedHistoryRequest, FollowRequest,
    GetNotificationRequest, GetQueryRequest, HandlerStats, HandlerStatsRequest, NotificationLookup,
    Notifications, PostEventsRequest, QueryReply,
};
use sluice_telemetry::names;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::cache::{CacheKey, ResultCache};
use crate::engine::{Answer, Limits};
use crate::error::QueryError;
use crate::queries::{QueryLog, QueryState};
use crate::replica::ReplicaView;
use crate::snapshot::Snapshot;

/// The query handler's settings.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "query_handler_config")]
pub struct Config {
    /// Threads that run queries (0: one per core). Every query uses all of them.
    #[arg(long, env = "SLUICE_QUERY_THREADS", default_value_t = 0)]
    pub query_threads: usize,
    /// Queries that run at once; more wait for a slot (they are yellow meanwhile).
    #[arg(long, env = "SLUICE_QUERY_CONCURRENCY", default_value_t = 4)]
    pub query_concurrency: usize,
    /// A query that has not finished this long after it arrived (waiting included) is
    /// cancelled and answered with a timeout.
    #[arg(long, env = "SLUICE_QUERY_TIMEOUT_MS", default_value_t = 30_000)]
    pub query_timeout_ms: u64,
    /// Memory one query's operators may reserve; beyond it, they spill to disk or fail.
    #[arg(long, env = "SLUICE_QUERY_MEMORY_BYTES", default_value_t = 2 << 30)]
    pub query_memory_bytes: usize,
    /// Where queries spill what outgrows their memory (sorts, joins, aggregates): a directory
    /// of this process's own is made inside it and removed at exit. By default `spill/` under
    /// the data directory when the storage is one (`file://`), else the system's temp dir.
    #[arg(long, env = "SLUICE_SPILL_DIR")]
    pub spill_dir: Option<std::path::PathBuf>,
    /// The most bytes all of this handler's queries may spill together; a query that would
    /// spill more fails, saying so (0: queries never spill and fail at their memory limit).
    #[arg(long, env = "SLUICE_SPILL_MAX_BYTES", default_value_t = 16 << 30)]
    pub spill_max_bytes: u64,
    /// The most rows one `generate_series` or `range` in a query may produce.
    #[arg(
        long,
        env = "SLUICE_QUERY_MAX_SERIES_ROWS",
        default_value_t = 10_000_000
    )]
    pub query_max_series_rows: u64,
    /// The most rows a result may have.
    #[arg(long, env = "SLUICE_QUERY_MAX_RESULT_ROWS", default_value_t = 100_000)]
    pub query_max_result_rows: u64,
    /// The most bytes a result may have (as an Arrow IPC stream).
    #[arg(long, env = "SLUICE_QUERY_MAX_RESULT_BYTES", default_value_t = 32 << 20)]
    pub query_max_result_bytes: usize,
    /// Bytes of answers the orange cache keeps (0: no cache).
    #[arg(long, env = "SLUICE_CACHE_BYTES", default_value_t = 256 << 20)]
    pub cache_bytes: usize,
    /// How long a cached answer may be served, even if the replica has not moved on.
    #[arg(long, env = "SLUICE_CACHE_TTL_SECS", default_value_t = 300)]
    pub cache_ttl_secs: u64,
    /// How often to look for a new replica version.
    #[arg(long, env = "SLUICE_REPLICA_REFRESH_MS", default_value_t = 1_000)]
    pub replica_refresh_ms: u64,
    /// String columns with few distinct values. They are read as Parquet dictionary keys
    /// ([`scan`]). An aggregate that compares them per row (a pivot such as
    /// `sum(CASE WHEN type = … THEN 1 ELSE 0 END)`) first groups the rows by them, and an
    /// aggregate grouped by one or two of them alone uses a number per string, also for their
    /// distinct counts. `producer_id` holds one value per ingest node's run. Answers are the
    /// same either way; empty turns all three off.
    #[arg(
        long,
        env = "SLUICE_LOW_CARDINALITY_COLUMNS",
        value_delimiter = ',',
        default_value = "platform,type,lang,producer_id"
    )]
    pub low_cardinality_columns: Vec<String>,
    /// The handler's query rules to turn off (comma-separated names, e.g. `regroup`), should
    /// one misbehave; see the query handler's `rules` module for the list. Answers are the
    /// same either way.
    #[arg(long, env = "SLUICE_QUERY_RULES_OFF", value_delimiter = ',')]
    pub query_rules_off: Vec<String>,
    /// How often the newsfeed looks for the replica's next commit while anyone follows it (one
    /// small GET each time): the most it adds to a notification's way to the feed.
    #[arg(long, env = "SLUICE_FEED_POLL_MS", default_value_t = 100)]
    pub feed_poll_ms: u64,
    #[command(flatten)]
    pub distributed: distributed::DistributedConfig,
}

impl Config {
    pub fn for_tests() -> Self {
        Config {
            query_threads: 0,
            query_concurrency: 2,
            query_timeout_ms: 10_000,
            query_memory_bytes: 512 << 20,
            spill_dir: None,
            spill_max_bytes: 1 << 30,
            query_max_series_rows: 1_000_000,
            query_max_result_rows: 10_000,
            query_max_result_bytes: 8 << 20,
            cache_bytes: 64 << 20,
            cache_ttl_secs: 300,
            replica_refresh_ms: 100,
            low_cardinality_columns: ["platform", "type", "lang", "producer_id"]
                .map(String::from)
                .to_vec(),
            query_rules_off: Vec::new(),
            feed_poll_ms: 50,
            distributed: distributed::DistributedConfig {
                query_workers: Vec::new(),
                query_advertise_addr: None,
                distribute_min_bytes: 256 << 20,
                distribute_bytes_per_task: 128 << 20,
            },
        }
    }

    /// Fails when a setting (including a `DATAFUSION_*` variable) cannot be used, and warns
    /// when the queries' memory and the cache together could outgrow the machine.
    pub fn check(&self) -> anyhow::Result<()> {
        self.limits()?;
        // A worker of distributed queries runs other handlers' tasks in one query's memory more.
        let shares = self.query_concurrency.max(1) + usize::from(self.distributed.is_on());
        let wanted = self
            .query_memory_bytes
            .saturating_mul(shares)
            .saturating_add(self.cache_bytes);
        if let Some(available) = machine_memory()
            && wanted > available
        {
            tracing::warn!(
                wanted,
                available,
                "--query-memory-bytes × --query-concurrency (+ 1 with --query-workers) + \
                 --cache-bytes is more than this machine (or container) has: queries that all use their share would be killed \
                 for memory instead of spilling or failing cleanly; lower one of them"
            );
        }
        Ok(())
    }

    fn threads(&self) -> usize {
        match self.query_threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        }
    }

    /// The limits of every query. DataFusion's own settings come from its `DATAFUSION_*`
    /// environment variables (e.g. `DATAFUSION_EXECUTION_PARQUET_PUSHDOWN_FILTERS=true`), read
    /// once here so that a bad value stops the start instead of failing every query; the
    /// partitions always follow the query threads.
    pub fn limits(&self) -> anyhow::Result<Limits> {
        let mut session = datafusion::prelude::SessionConfig::from_env()
            .map_err(|e| anyhow::anyhow!("a DATAFUSION_* setting is invalid: {e}"))?
            .with_target_partitions(self.threads())
            .with_information_schema(false)
            .with_option_extension(rules::RuleSwitches::default());
        rules::turn_off(session.options_mut(), &self.query_rules_off)
            .map_err(|e| anyhow::anyhow!("--query-rules-off: {e}"))?;
        // Joins of the replica with itself (created with deleted posts, authors with their
        // posts) build on keys spread over the whole table, so the filter a hash join pushes
        // into its probe side's scan prunes nothing and costs a lookup per row: 5–15% of those
        // queries (bench/README.md). Its variable turns it back on.
        if std::env::var_os(JOIN_DYNAMIC_FILTER).is_none() {
            session
                .options_mut()
                .optimizer
                .enable_join_dynamic_filter_pushdown = false;
        }
        Ok(Limits {
            memory_bytes: self.query_memory_bytes,
            spill: Some(self.spill()?),
            max_series_rows: self.query_max_series_rows,
            max_result_rows: self.query_max_result_rows,
            max_result_bytes: self.query_max_result_bytes,
            session,
            low_cardinality: self.low_cardinality_columns.clone().into(),
            max_numbered_strings: rules::number_groups::MAX_NUMBERED,
            deadline: None,
            cluster: None,
        })
    }
}

impl Config {
    /// The one spill space of every query of this handler, in `--spill-dir` and within
    /// `--spill-max-bytes`.
    fn spill(&self) -> anyhow::Result<Arc<DiskManager>> {
        let mode = match (&self.spill_dir, self.spill_max_bytes) {
            (_, 0) => DiskManagerMode::Disabled,
            (None, _) => DiskManagerMode::OsTmpDirectory,
            (Some(dir), _) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot make the spill directory {}", dir.display())
                })?;
                DiskManagerMode::Directories(vec![dir.clone()])
            }
        };
        let mut builder = DiskManagerBuilder::default().with_mode(mode);
        if self.spill_max_bytes > 0 {
            builder = builder.with_max_temp_directory_size(self.spill_max_bytes);
        }
        Ok(Arc::new(builder.build()?))
    }
}

/// Where queries spill unless `--spill-dir` says: under the data directory when there is one.
fn default_spill_dir(storage: &Storage) -> std::path::PathBuf {
    match &storage.url {
        StorageUrl::Local(root) => root.join("spill"),
        _ => std::env::temp_dir().join("sluice-spill"),
    }
}

/// DataFusion's variable for the dynamic filter of hash joins, off unless it is set.
const JOIN_DYNAMIC_FILTER: &str = "DATAFUSION_OPTIMIZER_ENABLE_JOIN_DYNAMIC_FILTER_PUSHDOWN";

/// The runtime queries run on, apart from the one serving gRPC.
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl QueryRuntime {
    fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("sluice-query")
            .enable_all()
            .build()?;
        Ok(QueryRuntime(Some(runtime)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .expect("runtime until drop")
            .handle()
            .clone()
    }

    /// Runs `work` on the query runtime; dropping the handle cancels it.
    fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> AbortOnDropHandle<T> {
        AbortOnDropHandle::new(self.0.as_ref().expect("runtime until drop").spawn(work))
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's worker would panic; let it wind down aside.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

struct Inner {
    replica: Arc<ReplicaView>,
    cache: ResultCache,
    log: QueryLog,
    slots: Arc<Semaphore>,
    limits: Limits,
    timeout: Duration,
    runtime: QueryRuntime,
    feed: Arc<feed::Feed>,
    /// This handler's own counts for `Stats` (the gauges are the process's, shared by every
    /// handler in `sluice all`).
    counts: QueryCounts,
    /// The query handlers big queries run across, once [`serve`] has joined them.
    cluster: std::sync::OnceLock<distributed::Cluster>,
}

#[derive(Default)]
struct QueryCounts {
    waiting: AtomicU64,
    running: AtomicU64,
    answered: AtomicU64,
    failed: AtomicU64,
}

/// A query's answer, as the handler gave it.
pub(crate) struct Answered {
    pub(crate) id: String,
    /// The query's normalized SQL: with the replica version, its cache key.
    pub(crate) sql: String,
    pub(crate) answer: Arc<Answer>,
    /// Whether the cache keeps it (orange).
    pub(crate) kept: bool,
    /// Whether it came from the cache.
    pub(crate) cached: bool,
    pub(crate) elapsed: Duration,
}

/// A query that [`QueryHandlerService::start`] answered from the cache, or started.
enum Started {
    Cached(Answered),
    Running {
        id: String,
        sql: String,
        run: std::pin::Pin<Box<dyn Future<Output = Result<Answered, Status>> + Send>>,
    },
}

#[derive(Clone)]
pub struct QueryHandlerService {
    inner: Arc<Inner>,
}

impl QueryHandlerService {
    pub fn new(replica: Arc<ReplicaView>, config: &Config) -> anyhow::Result<Self> {
        let service = QueryHandlerService {
            inner: Arc::new(Inner {
                replica: Arc::clone(&replica),
                cache: ResultCache::new(
                    config.cache_bytes,
                    Duration::from_secs(config.cache_ttl_secs),
                ),
                log: QueryLog::default(),
                slots: Arc::new(Semaphore::new(config.query_concurrency.max(1))),
                limits: config.limits()?,
                timeout: Duration::from_millis(config.query_timeout_ms),
                runtime: QueryRuntime::new(config.threads())?,
                feed: feed::Feed::new(
                    Arc::clone(&replica),
                    Duration::from_millis(config.feed_poll_ms.max(10)),
                ),
                counts: QueryCounts::default(),
                cluster: std::sync::OnceLock::new(),
            }),
        };
        let inner = Arc::downgrade(&service.inner);
        sluice_telemetry::on_scrape(move || {
            if let Some(inner) = inner.upgrade() {
                metrics::gauge!(names::QUERY_CACHE_BYTES).set(inner.cache.used_bytes() as f64);
            }
        });
        Ok(service)
    }

    /// Runs big queries across `cluster` from now on (once; a second cluster is ignored).
    pub fn join(&self, cluster: distributed::Cluster) {
        let _ = self.inner.cluster.set(cluster);
    }

    /// The runtime a worker of the distributed engine runs tasks in (other handlers', and
    /// this one's own share of the queries it coordinates): one query's memory more, which
    /// `Config::check` counts, and this handler's spill space.
    fn worker_runtime(
        &self,
    ) -> anyhow::Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
        let limits = &self.inner.limits;
        let pool = datafusion::execution::memory_pool::GreedyMemoryPool::new(limits.memory_bytes);
        let mut runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool));
        runtime.disk_manager = limits.spill.clone();
        Ok(runtime.build_arc()?)
    }

    /// Called when the replica moves on: answers of older versions can never be served again.
    pub fn replica_moved_on(&self, version: u64) {
        self.inner.cache.retire_before(version);
        self.inner.feed.saw(version);
    }

    fn snapshot(&self) -> Result<Arc<Snapshot>, QueryError> {
        self.inner.replica.current().ok_or_else(|| {
            QueryError::Unavailable("the replica table does not exist yet or was not loaded".into())
        })
    }

    /// Parses `sql` and answers it from the orange cache, or starts it: the query is yellow
    /// from here until the returned run ends (dropping the run cancels it). What both the gRPC
    /// `Execute` and Flight SQL go through, so that they share the cache, limits and log.
    fn start(&self, sql: &str) -> Result<Started, Status> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let parsed = engine::parse(sql)?;
        let snapshot = self.snapshot()?;
        let key: CacheKey = (parsed.normalized.clone(), snapshot.version);
        let cached = self.inner.cache.get(&key);
        metrics::counter!(names::QUERY_CACHE, "result" => if cached.is_some() { "hit" } else { "miss" })
            .increment(1);
        let id = self.inner.log.start(&key.0);
        if let Some(answer) = cached {
            self.inner
                .counts
                .answered
                .fetch_add(1, AtomicOrdering::Relaxed);
            let elapsed = started.elapsed();
            self.inner.log.set(
                &id,
                QueryState::Answered {
                    key: key.clone(),
                    rows: answer.rows,
                    elapsed_micros: elapsed.as_micros() as u64,
                    cached: true,
                    kept: true,
                },
            );
            return Ok(Started::Cached(Answered {
                id,
                sql: key.0,
                answer,
                kept: true,
                cached: true,
                elapsed,
            }));
        }
        let run = self
            .clone()
            .run(id.clone(), parsed, snapshot, deadline, started);
        Ok(Started::Running {
            id,
            sql: key.0,
            run: Box::pin(run),
        })
    }

    /// Answers `sql`: from the cache, or by running it in a slot within the timeout.
    pub(crate) async fn answer(&self, sql: &str) -> Result<Answered, Status> {
        match self.start(sql)? {
            Started::Cached(answered) => Ok(answered),
            Started::Running { run, .. } => run.await,
        }
    }

    /// A session over the current replica snapshot for planning without running: DataFusion's
    /// own, without the handler's rules, so that the types it plans are the table's, which
    /// every answer shows.
    pub(crate) fn plain_session(&self) -> Result<datafusion::prelude::SessionContext, QueryError> {
        let mut limits = self.inner.limits.clone();
        rules::turn_off(limits.session.options_mut(), &rules::RuleSwitches::names())?;
        engine::session(&self.snapshot()?, &limits)
    }

    /// The catalog and schema that hold the table, as DataFusion names them.
    pub(crate) fn catalog(&self) -> (String, String) {
        let catalog = &self.inner.limits.session.options().catalog;
        (
            catalog.default_catalog.clone(),
            catalog.default_schema.clone(),
        )
    }

    /// The table's columns, as delta-rs reads them.
    pub(crate) fn table_schema(&self) -> Result<arrow::datatypes::Schema, Status> {
        Ok(self.snapshot()?.delta.schema().as_ref().clone())
    }

    /// The answer of an earlier query, if the cache still holds it.
    pub(crate) fn cached(&self, key: &CacheKey) -> Option<Arc<Answer>> {
        self.inner.cache.get(key)
    }

    /// Runs a planned query in a slot, within the deadline, and records how it ended. Returns
    /// the answer and whether the cache kept it, or the status the client gets (built once, so
    /// an internal error is logged once).
    async fn run(
        self,
        id: String,
        parsed: engine::Parsed,
        snapshot: Arc<Snapshot>,
        deadline: tokio::time::Instant,
        started: Instant,
    ) -> Result<Answered, Status> {
        let inner = &self.inner;
        let key: CacheKey = (parsed.normalized, snapshot.version);
        let outcome = async {
            let waiting = Counted::new(names::QUERIES_WAITING, &inner.counts.waiting);
            let _slot = tokio::time::timeout_at(deadline, inner.slots.clone().acquire_owned())
                .await
                .map_err(|_| QueryError::Timeout(inner.timeout.as_millis() as u64))?
                .map_err(|_| QueryError::Unavailable("the query handler is stopping".into()))?;
            drop(waiting);
            let _running = Counted::new(names::QUERIES_RUNNING, &inner.counts.running);
            let limits = engine::Limits {
                deadline: Some(deadline),
                cluster: inner.cluster.get().cloned(),
                ..inner.limits.clone()
            };
            let work = inner
                .runtime
                .spawn(engine::execute(parsed.statement, snapshot, limits));
            match tokio::time::timeout_at(deadline, work).await {
                Err(_) => Err(QueryError::Timeout(inner.timeout.as_millis() as u64)),
                Ok(Err(join)) => Err(QueryError::Internal(format!(
                    "the query task ended: {join}"
                ))),
                Ok(Ok(result)) => result.map(Arc::new),
            }
        }
        .await;
        let ended = match &outcome {
            Ok(_) => "ok",
            Err(QueryError::Timeout(_)) => {
                metrics::counter!(names::QUERY_TIMEOUTS).increment(1);
                "timeout"
            }
            Err(_) => "error",
        };
        metrics::histogram!(names::QUERY_SECONDS, "outcome" => ended)
            .record(started.elapsed().as_secs_f64());
        let ended = if outcome.is_ok() {
            &inner.counts.answered
        } else {
            &inner.counts.failed
        };
        ended.fetch_add(1, AtomicOrdering::Relaxed);
        match outcome {
            Ok(answer) => {
                let kept = answer.cacheable && inner.cache.insert(key.clone(), answer.clone());
                let elapsed = started.elapsed();
                inner.log.set(
                    &id,
                    QueryState::Answered {
                        key: key.clone(),
                        rows: answer.rows,
                        elapsed_micros: elapsed.as_micros() as u64,
                        cached: false,
                        kept,
                    },
                );
                Ok(Answered {
                    id,
                    sql: key.0,
                    answer,
                    kept,
                    cached: false,
                    elapsed,
                })
            }
            Err(error) => {
                let status = Status::from(error);
                inner.log.set(
                    &id,
                    QueryState::Failed {
                        code: status.code(),
                        message: status.message().to_string(),
                    },
                );
                Err(status)
            }
        }
    }

    /// Runs a point read on the query runtime, in a query slot and within the query timeout:
    /// each one scans the table, so a flood of them must queue like queries do.
    async fn lookup<T: Send + 'static>(
        &self,
        read: impl Future<Output = Result<T, QueryError>> + Send + 'static,
    ) -> Result<T, QueryError> {
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let timed_out = || QueryError::Timeout(self.inner.timeout.as_millis() as u64);
        let _slot = tokio::time::timeout_at(deadline, self.inner.slots.clone().acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| QueryError::Unavailable("the query handler is stopping".into()))?;
        let work = self.inner.runtime.spawn(read);
        match tokio::time::timeout_at(deadline, work).await {
            Err(_) => Err(timed_out()),
            Ok(Err(join)) => Err(QueryError::Internal(format!(
                "the lookup task ended: {join}"
            ))),
            Ok(Ok(result)) => result,
        }
    }
}

/// The reply for an answer: orange when the cache keeps it, else done.
fn reply(answered: &Answered) -> QueryReply {
    let answer = &answered.answer;
    QueryReply {
        query_id: answered.id.clone(),
        state: if answered.kept { "orange" } else { "done" }.to_string(),
        replica_version: answer.replica_version,
        elapsed_micros: answered.elapsed.as_micros() as u64,
        cached: answered.cached,
        rows: answer.rows,
        arrow_ipc: answer.ipc.clone(),
        sql: answered.sql.clone(),
        rules: answer.rules.clone(),
        fallback: answer.fallback.clone(),
        workers: answer.workers.clone(),
        stages: answer.stages as u32,
        ..QueryReply::default()
    }
}

/// One more in a gauge and in this handler's count while it lives: a query waiting for a
/// slot, or running. Dropped on every path out, a cancelled query's included.
struct Counted<'a>(&'static str, &'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(gauge: &'static str, count: &'a AtomicU64) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        count.fetch_add(1, AtomicOrdering::Relaxed);
        Counted(gauge, count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
        self.1.fetch_sub(1, AtomicOrdering::Relaxed);
    }
}

#[tonic::async_trait]
impl QueryHandler for QueryHandlerService {
    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<QueryReply>, Status> {
        let request = request.into_inner();
        let answered = match self.start(&request.sql)? {
            Started::Cached(answered) => answered,
            Started::Running { id, sql, run } if request.detach => {
                tokio::spawn(run);
                return Ok(Response::new(QueryReply {
                    query_id: id,
                    state: "yellow".into(),
                    sql,
                    ..QueryReply::default()
                }));
            }
            Started::Running { run, .. } => run.await?,
        };
        Ok(Response::new(reply(&answered)))
    }

    async fn get_query(
        &self,
        request: Request<GetQueryRequest>,
    ) -> Result<Response<QueryReply>, Status> {
        let id = request.into_inner().query_id;
        let record = self
            .inner
            .log
            .get(&id)
            .ok_or_else(|| Status::not_found(format!("no query {id} is remembered here")))?;
        let mut out = QueryReply {
            query_id: id,
            sql: record.sql,
            ..QueryReply::default()
        };
        match record.state {
            QueryState::Yellow => {
                out.state = "yellow".into();
                out.elapsed_micros = record.started.elapsed().as_micros() as u64;
            }
            QueryState::Failed { code, message } => {
                out.state = "failed".into();
                out.error_code = code as i32;
                out.error = message;
            }
            QueryState::Answered {
                key,
                rows,
                elapsed_micros,
                cached,
                kept,
            } => {
                out.replica_version = key.1;
                out.rows = rows;
                out.elapsed_micros = elapsed_micros;
                out.cached = cached;
                match self.inner.cache.get(&key) {
                    Some(answer) => {
                        out.state = "orange".into();
                        out.arrow_ipc = answer.ipc.clone();
                        out.rules = answer.rules.clone();
                        out.fallback = answer.fallback.clone();
                    }
                    None if kept => out.state = "expired".into(),
                    None => out.state = "done".into(),
                }
            }
        }
        Ok(Response::new(out))
    }

    async fn post_events(
        &self,
        request: Request<PostEventsRequest>,
    ) -> Result<Response<Notifications>, Status> {
        let request = request.into_inner();
        let snapshot = self.snapshot()?;
        let limits = self.inner.limits.clone();
        let version = snapshot.version;
        let notifications = self
            .lookup(async move {
                lookup::post_events(
                    &snapshot,
                    &limits,
                    &request.platform,
                    &request.post_id,
                    request.as_of_micros,
                )
                .await
            })
            .await?;
        Ok(Response::new(Notifications {
            notifications,
            replica_version: version,
        }))
    }

    async fn get_notification(
        &self,
        request: Request<GetNotificationRequest>,
    ) -> Result<Response<NotificationLookup>, Status> {
        let request = request.into_inner();
        let snapshot = self.snapshot()?;
        let limits = self.inner.limits.clone();
        let version = snapshot.version;
        let notification = self
            .lookup(async move {
                lookup::find_notification(&snapshot, &limits, &request.platform, &request.id).await
            })
            .await?;
        Ok(Response::new(NotificationLookup {
            notification,
            replica_version: version,
        }))
    }

    async fn stats(
        &self,
        _request: Request<HandlerStatsRequest>,
    ) -> Result<Response<HandlerStats>, Status> {
        let inner = &self.inner;
        let count = |c: &AtomicU64| c.load(AtomicOrdering::Relaxed);
        Ok(Response::new(HandlerStats {
            queries_waiting: count(&inner.counts.waiting),
            queries_running: count(&inner.counts.running),
            cached_answers: inner.cache.len() as u64,
            cache_bytes: inner.cache.used_bytes() as u64,
            replica_version: inner.replica.current().map(|s| s.version),
            queries_answered: count(&inner.counts.answered),
            queries_failed: count(&inner.counts.failed),
        }))
    }

    async fn feed_history(
        &self,
        request: Request<FeedHistoryRequest>,
    ) -> Result<Response<FeedHistoryReply>, Status> {
        let request = request.into_inner();
        let filter = feed::Filter::of(request.filter)?;
        if !(1..=MAX_FEED_HISTORY).contains(&request.limit) {
            return Err(Status::invalid_argument(format!(
                "limit must be 1 to {MAX_FEED_HISTORY}"
            )));
        }
        let snapshot = self.snapshot()?;
        let limits = self.inner.limits.clone();
        let version = snapshot.version;
        let (notifications, truncated) = self
            .lookup(async move {
                lookup::feed_history(&snapshot, &limits, &filter, request.limit as usize).await
            })
            .await?;
        Ok(Response::new(FeedHistoryReply {
            version,
            notifications,
            truncated,
        }))
    }

    type FollowStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<FeedBatch, Status>> + Send>>;

    async fn follow(
        &self,
        request: Request<FollowRequest>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let request = request.into_inner();
        let filter = feed::Filter::of(request.filter)?;
        let after: feed::Position = request.after.parse().map_err(Status::invalid_argument)?;
        let mut batches = self.inner.feed.follow(filter, after).await?;
        let stream = futures::stream::poll_fn(move |cx| batches.poll_recv(cx));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The most notifications a feed's history answers.
const MAX_FEED_HISTORY: u32 = 10_000;

/// The memory this process may use: the machine's, or its container's limit when lower
/// (cgroup v2 `memory.max`). None when neither can be read.
fn machine_memory() -> Option<usize> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<usize>()
        .ok()?
        * 1024;
    let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|max| max.trim().parse::<usize>().ok());
    Some(limit.map_or(total, |limit| limit.min(total)))
}

/// Serves the query handler on `listener` until `shutdown` fires, reading the replica at
/// `replica_path` inside `storage`. `keys`, the analysts' API keys, open Flight SQL on the same port (without them, it is not
/// served).
pub async fn serve(
    listener: TcpListener,
    storage: &Storage,
    replica_path: &str,
    config: Config,
    keys: Option<Arc<sluice_auth::Keys>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut config = config;
    if config.spill_dir.is_none() {
        config.spill_dir = Some(default_spill_dir(storage));
    }
    let (url, options) = storage.url.table_location(replica_path)?;
    let replica = Arc::new(ReplicaView::new(
        url,
        options,
        &config.low_cardinality_columns,
    ));
    let service = QueryHandlerService::new(replica.clone(), &config)?;
    let worker = if config.distributed.is_on() {
        anyhow::ensure!(
            sluice_proto::cluster::is_set(),
            "--query-workers needs the cluster secret (SLUICE_CLUSTER_SECRET): the other query \
             handlers send this one plans to run, and without the secret anyone who reaches its \
             port could"
        );
        let cluster = distributed::Cluster::start(
            &config.distributed,
            listener.local_addr()?,
            Arc::clone(&replica),
            service.worker_runtime()?,
            shutdown.clone(),
        )?;
        let worker = distributed::OnRuntime::new(
            cluster.worker().clone().into_worker_server(),
            service.inner.runtime.handle(),
        );
        service.join(cluster);
        Some(sluice_proto::cluster::guarded(worker))
    } else {
        None
    };
    let following = tokio::spawn(replica.follow(
        Duration::from_millis(config.replica_refresh_ms.max(10)),
        shutdown.clone(),
        {
            let service = service.clone();
            move |version| service.replica_moved_on(version)
        },
    ));
    tracing::info!(addr = ?listener.local_addr().ok(), storage = %storage.url, replica = replica_path, "query handler listening");
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    // The standard gRPC health service ("" is SERVING while the server runs): what a
    // Kubernetes gRPC probe asks.
    let (_, health) = tonic_health::server::health_reporter();
    // Flight SQL is not behind the cluster secret: analysts' clients present their API keys.
    let flight = match keys {
        Some(keys) => Some(
            FlightServiceServer::new(flight::FlightSql::new(service.clone(), keys)?)
                .max_encoding_message_size(sluice_proto::MAX_MESSAGE_BYTES)
                .max_decoding_message_size(sluice_proto::MAX_MESSAGE_BYTES),
        ),
        None => {
            tracing::info!("no API keys are given: Flight SQL is not served");
            None
        }
    };
    sluice_proto::tls::server()?
        .add_service(health)
        .add_service(sluice_proto::cluster::guarded(
            QueryHandlerServer::new(service)
                .max_encoding_message_size(sluice_proto::MAX_MESSAGE_BYTES)
                .max_decoding_message_size(sluice_proto::MAX_MESSAGE_BYTES),
        ))
        .add_optional_service(flight)
        .add_optional_service(worker)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    following.await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_joins_push_no_dynamic_filter_unless_asked() {
        let limits = Config::for_tests().limits().unwrap();
        let optimizer = &limits.session.options().optimizer;
        // The variable is not set in tests; with it, DataFusion's own reading applies.
        assert!(std::env::var_os(JOIN_DYNAMIC_FILTER).is_none());
        assert!(!optimizer.enable_join_dynamic_filter_pushdown);
        assert!(optimizer.enable_dynamic_filter_pushdown);
    }
}
