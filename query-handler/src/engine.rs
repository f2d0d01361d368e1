//! Running one analyst query: parse, check it is a single read-only query, plan it against a
//! replica snapshot, execute it with DataFusion under a memory limit, and encode the result as
//! an Arrow IPC stream.
//!
//! Queries run on their own Tokio runtime with one worker per core (`target_partitions` =
//! cores), so a heavy query keeps every core busy without starving the gRPC server, which
//! stays responsive on the process's main runtime.

use std::ops::ControlFlow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use arrow::ipc::writer::StreamWriter;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::DiskManager;
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, Statement as SqlStatement, visit_expressions,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::{FutureExt, StreamExt};

use crate::error::QueryError;
use crate::rules::{self, FiredRules, RuleContext, RuleSwitches, RulesThenPlanner};
use crate::snapshot::Snapshot;
use sluice_telemetry::names;

/// The name analysts query.
pub const TABLE: &str = "notifications";

/// Limits and settings of one query.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory DataFusion may reserve for the query's operators (sorts, joins, aggregates).
    pub memory_bytes: usize,
    /// Where the query's operators spill beyond `memory_bytes`, shared by every query of the
    /// handler so that its bound is theirs together; None: DataFusion's own (the system's temp
    /// dir, 100 GB).
    pub spill: Option<Arc<DiskManager>>,
    /// The most rows one `generate_series` or `range` may produce ([`crate::series`]).
    pub max_series_rows: u64,
    pub max_result_rows: u64,
    pub max_result_bytes: usize,
    /// DataFusion's settings for every query.
    pub session: SessionConfig,
    /// Columns with few distinct values, which aggregates group by first
    /// ([`rules::regroup`]) and number ([`rules::number_groups`]).
    pub low_cardinality: Arc<[String]>,
    /// The most distinct strings a query numbers before it runs again without numbering.
    pub max_numbered_strings: usize,
    /// When the query's answer is due, if it has a deadline: a rerun without the rules
    /// ([`execute`]) must fit before it.
    pub deadline: Option<tokio::time::Instant>,
    /// The query handlers a big query may run across ([`crate::distributed`]); None: this one
    /// alone.
    pub cluster: Option<crate::distributed::Cluster>,
}

/// A query's answer.
#[derive(Debug)]
pub struct Answer {
    /// The result as an Arrow IPC stream.
    pub ipc: Vec<u8>,
    pub rows: u64,
    pub replica_version: u64,
    /// False when the plan calls a function whose value changes between runs (`now()`,
    /// `random()`): such answers are never served from the cache.
    pub cacheable: bool,
    /// The handler's rules that rewrote the query, in the order they did.
    pub rules: Vec<String>,
    /// Why the query was answered without the handler's rules, if it was.
    pub fallback: String,
    /// For a query that ran across query handlers: its stages, and the handlers (worker URLs)
    /// that ran the tasks of its stages of more than one task. Empty when it ran here alone.
    pub stages: usize,
    pub workers: Vec<String>,
}

impl Answer {
    pub fn size_bytes(&self) -> usize {
        self.ipc.len()
            + std::mem::size_of::<Self>()
            + self.rules.iter().map(String::len).sum::<usize>()
            + self.fallback.len()
            + self.workers.iter().map(String::len).sum::<usize>()
    }

    #[cfg(test)]
    pub(crate) fn for_tests(ipc: Vec<u8>) -> Self {
        Answer {
            ipc,
            rows: 0,
            replica_version: 0,
            cacheable: true,
            rules: Vec::new(),
            fallback: String::new(),
            stages: 0,
            workers: Vec::new(),
        }
    }
}

/// One parsed statement and its normalized text, the cache key's SQL part.
pub struct Parsed {
    pub statement: Statement,
    pub normalized: String,
}

/// Parses `sql` as exactly one read-only query. Writes, DDL, `COPY`, `SET`, `EXPLAIN` and
/// anything else that is not a query are refused here, before planning; the planner's own
/// read-only options check the plan once more.
pub fn parse(sql: &str) -> Result<Parsed, QueryError> {
    let mut statements = DFParserBuilder::new(sql)
        .with_dialect(&GenericDialect {})
        .build()?
        .parse_statements()?;
    if statements.len() != 1 {
        return Err(QueryError::NotReadOnly(format!(
            "send exactly one SQL statement; got {}",
            statements.len()
        )));
    }
    let statement = statements.pop_front().expect("one statement");
    match &statement {
        Statement::Statement(inner) if matches!(**inner, SqlStatement::Query(_)) => {}
        other => {
            let text = other.to_string();
            let verb: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            return Err(QueryError::NotReadOnly(format!(
                "only a read-only query (SELECT, WITH … SELECT, VALUES) is allowed; got `{verb} …`"
            )));
        }
    }
    if let Some(comparison) = unparenthesized_distinct_from(&statement) {
        return Err(QueryError::InvalidSql(format!(
            "put parentheses around the IS [NOT] DISTINCT FROM comparison in `{comparison}`, \
             e.g. `(a IS DISTINCT FROM b) AND c`: without them, this version of the SQL parser \
             reads `a IS DISTINCT FROM b AND c` as `a IS DISTINCT FROM (b AND c)`"
        )));
    }
    let normalized = statement.to_string();
    Ok(Parsed {
        statement,
        normalized,
    })
}

/// An `IS [NOT] DISTINCT FROM` whose right operand took in an operator that binds more loosely
/// than `IS` (`AND`, `OR`, another `IS …`) without the user's parentheses, as written.
///
/// sqlparser 0.62 (DataFusion 55's) parses that operand with the lowest precedence, so
/// `a IS DISTINCT FROM 'x' AND b` becomes `a IS DISTINCT FROM ('x' AND b)`: an error when `a`
/// is not a boolean, a wrong answer when it is. Fixed in sqlparser 0.63
/// (apache/datafusion-sqlparser-rs#2436); until DataFusion moves to it, such a query is refused
/// and the client told to add parentheses. Rewriting the tree instead would be wrong inside
/// larger expressions (`c AND a IS DISTINCT FROM x OR b`). Parentheses the user wrote are an
/// `Expr::Nested`, which is not looked into.
fn unparenthesized_distinct_from(statement: &Statement) -> Option<String> {
    fn reads_past_is(right: &SqlExpr) -> bool {
        match right {
            SqlExpr::BinaryOp {
                op: BinaryOperator::And | BinaryOperator::Or,
                ..
            }
            | SqlExpr::IsNull(_)
            | SqlExpr::IsNotNull(_)
            | SqlExpr::IsTrue(_)
            | SqlExpr::IsNotTrue(_)
            | SqlExpr::IsFalse(_)
            | SqlExpr::IsNotFalse(_)
            | SqlExpr::IsUnknown(_)
            | SqlExpr::IsNotUnknown(_)
            | SqlExpr::IsDistinctFrom(..)
            | SqlExpr::IsNotDistinctFrom(..)
            | SqlExpr::IsNormalized { .. } => true,
            SqlExpr::BinaryOp { left, right, .. } => reads_past_is(left) || reads_past_is(right),
            _ => false,
        }
    }
    let Statement::Statement(inner) = statement else {
        return None;
    };
    match visit_expressions(inner.as_ref(), |expr| match expr {
        SqlExpr::IsDistinctFrom(_, right) | SqlExpr::IsNotDistinctFrom(_, right)
            if reads_past_is(right) =>
        {
            ControlFlow::Break(expr.to_string())
        }
        _ => ControlFlow::Continue(()),
    }) {
        ControlFlow::Break(comparison) => Some(comparison),
        ControlFlow::Continue(()) => None,
    }
}

/// Plans and runs `statement` against `snapshot`, and encodes the result.
///
/// Two fallbacks keep a failing rule from costing a client an answer that DataFusion alone
/// gives:
/// - a query whose numbering of strings gave up
///   ([`rules::number_groups::NumberingGaveUp`]) runs once more without it;
/// - a query that fails, panics or runs out of memory in a plan that the handler's rules
///   rewrote (or read with the handler's scan) runs once more with every rule off, which is
///   DataFusion's own plan on delta-rs's provider, if the query's deadline leaves time. The
///   handler's dictionaries meet DataFusion's type coercion where DataFusion alone never goes
///   (`string_agg(DISTINCT lang ORDER BY lang)` of a dictionary column fails when the aggregate
///   starts), and the handler's aggregate does not spill. When both runs fail, the client gets
///   DataFusion's own error; a query that fails on its data (a division by zero) in a rewritten
///   plan therefore runs twice. The answer names the rules of the run that failed.
///
/// A query over enough of the replica, with other query handlers live, runs across them first
/// ([`crate::distributed`]), without the rules that keep to one process. When a handler it ran
/// on is lost, the query fails with [`QueryError::WorkerLost`]; when it fails otherwise (a
/// plan the engine cannot send), it runs again here, as every other query.
pub async fn execute(
    statement: Statement,
    snapshot: Arc<Snapshot>,
    limits: Limits,
) -> Result<Answer, QueryError> {
    let mut limits = limits;
    if let Some(cluster) = limits.cluster.take()
        && snapshot
            .bytes()
            .is_some_and(|bytes| cluster.worth_it(bytes))
    {
        let mut distributed = limits.clone();
        let local_only = crate::distributed::LOCAL_ONLY_RULES.map(String::from);
        rules::turn_off(distributed.session.options_mut(), &local_only)?;
        let attempt =
            execute_once(statement.clone(), &snapshot, &distributed, Some(&cluster)).await;
        let outcome = match &attempt.outcome {
            Ok(_) => "ok",
            Err(QueryError::StaysLocal) => "local",
            Err(_) => "error",
        };
        metrics::counter!(names::QUERIES_DISTRIBUTED, "outcome" => outcome).increment(1);
        match attempt.outcome {
            Ok(answer) => return Ok(answer),
            Err(QueryError::StaysLocal) => {}
            Err(error @ QueryError::WorkerLost(_)) => {
                tracing::warn!(%error, "a query handler was lost during a distributed query");
                cluster.check_members().await;
                return Err(error);
            }
            Err(
                error @ (QueryError::NotReadOnly(_)
                | QueryError::ResultTooLarge(_)
                | QueryError::Timeout(_)
                | QueryError::Unavailable(_)),
            ) => return Err(error),
            // A plan the engine cannot send (an operator of the handler's own, such as a
            // series, in a stage that runs elsewhere), or a query that fails anyway: here, it
            // gets the answer or the error it would get without the cluster.
            // A worker lost in a way only another worker saw (its error crossed the wire as
            // text) is still a lost worker.
            Err(error) => {
                cluster.check_members().await;
                if let Some(lost) = cluster.lost(&attempt.workers) {
                    tracing::warn!(%error, lost, "a query handler was lost during a distributed query");
                    return Err(QueryError::WorkerLost(format!(
                        "{lost} left the cluster while it ran tasks of the query"
                    )));
                }
                tracing::info!(%error, "the distributed run failed; running the query here");
            }
        }
    }
    let mut attempt = execute_once(statement.clone(), &snapshot, &limits, None).await;
    if let Err(QueryError::GaveUp(reason)) = &attempt.outcome {
        tracing::info!(
            reason,
            "running the query again without numbering its groups"
        );
        rules::turn_off(limits.session.options_mut(), &["number_groups".to_string()])?;
        attempt = execute_once(statement.clone(), &snapshot, &limits, None).await;
    }
    let (error, failed_rules) = match attempt {
        Attempt {
            outcome:
                Err(
                    error @ (QueryError::InvalidSql(_)
                    | QueryError::Execution(_)
                    | QueryError::Internal(_)
                    | QueryError::MemoryLimit(_)),
                ),
            rules,
            ..
        } if !rules.is_empty() => (error, rules),
        Attempt { outcome, .. } => return outcome,
    };
    // The rerun gets what is left of the deadline, less a margin for the answer to travel; a
    // rerun that would not finish in it would only swap the error for a timeout.
    let remaining = limits
        .deadline
        .map(|deadline| deadline.saturating_duration_since(tokio::time::Instant::now()));
    if remaining.is_some_and(|left| left < RERUN_MARGIN) {
        return Err(error);
    }
    let mut plainly = limits.clone();
    rules::turn_off(plainly.session.options_mut(), &RuleSwitches::names())?;
    let rerun = execute_once(statement, &snapshot, &plainly, None);
    let rerun = match remaining {
        Some(left) => match tokio::time::timeout(left - RERUN_MARGIN, rerun).await {
            Ok(attempt) => attempt,
            Err(_) => return Err(error),
        },
        None => rerun.await,
    };
    let mut answer = rerun.outcome?;
    let failed = failed_rules.join(", ");
    tracing::warn!(%error, rules = failed, "the query failed with the handler's rules and was answered without them");
    answer.fallback = format!(
        "answered without the handler's rules, which failed ({failed}): {}",
        error.public_message()
    );
    Ok(answer)
}

/// What a rerun without the rules must leave of the deadline.
const RERUN_MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// One run of a query: how it ended, and the rules that rewrote its plan (on failure too).
struct Attempt {
    outcome: Result<Answer, QueryError>,
    rules: Vec<String>,
    /// The workers a distributed run sent tasks to.
    workers: Vec<String>,
}

async fn execute_once(
    statement: Statement,
    snapshot: &Arc<Snapshot>,
    limits: &Limits,
    cluster: Option<&crate::distributed::Cluster>,
) -> Attempt {
    let ctx = match session_on(snapshot, limits, cluster) {
        Ok(ctx) => ctx,
        Err(error) => {
            return Attempt {
                outcome: Err(error),
                rules: Vec::new(),
                workers: Vec::new(),
            };
        }
    };
    // A panic in a rule or in one of the handler's operators fails the query, not the task,
    // so that the query can run again without them.
    let run = AssertUnwindSafe(run_once(
        &ctx,
        statement,
        snapshot,
        limits,
        cluster.is_some(),
    ))
    .catch_unwind();
    let routed = ctx
        .state()
        .config()
        .get_extension::<crate::distributed::Routed>();
    let lost = async {
        match (cluster, &routed) {
            (Some(cluster), Some(routed)) => cluster.until_lost(routed).await,
            _ => std::future::pending().await,
        }
    };
    let run = async {
        tokio::select! {
            outcome = run => outcome,
            worker = lost => Ok(Err(QueryError::WorkerLost(format!(
                "{worker} left the cluster while it ran tasks of the query"
            )))),
        }
    };
    let outcome = match run.await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            Err(QueryError::Internal(format!(
                "the query panicked: {message}"
            )))
        }
    };
    let rules = fired_rules(&ctx);
    if !rules.is_empty() {
        tracing::debug!(?rules, "the handler's rules rewrote the query");
    }
    // Where it ran: the stages, and the handlers that ran the tasks of those of more than one.
    let (stages, workers) = routed
        .map(|routed| routed.stages_and_workers())
        .unwrap_or_default();
    Attempt {
        outcome: outcome.map(|answer| Answer {
            rules: rules.clone(),
            stages: if workers.is_empty() { 0 } else { stages },
            workers: workers.clone(),
            ..answer
        }),
        rules,
        workers,
    }
}

async fn run_once(
    ctx: &SessionContext,
    statement: Statement,
    snapshot: &Arc<Snapshot>,
    limits: &Limits,
    distributed: bool,
) -> Result<Answer, QueryError> {
    let (physical, cacheable) = plan(ctx, statement).await?;
    // A plan the distributed planner left on one handler (no scan big enough), or one that holds
    // an operator of the handler's own (a series), runs here with every rule instead.
    if distributed
        && (!physical.is::<datafusion_distributed::DistributedExec>()
            || physical.exists(|node| Ok(node.name() == crate::series::BOUNDED_EXEC))?)
    {
        return Err(QueryError::StaysLocal);
    }
    let mut stream = execute_stream(cooperative_everywhere(physical)?, ctx.task_ctx())?;

    let schema = stream.schema();
    let mut writer = StreamWriter::try_new(Vec::new(), &schema)?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        if rows > limits.max_result_rows {
            return Err(QueryError::ResultTooLarge(format!(
                "the result has more than {} rows; aggregate, filter or add a LIMIT",
                limits.max_result_rows
            )));
        }
        writer.write(&batch)?;
        if writer.get_ref().len() > limits.max_result_bytes {
            return Err(QueryError::ResultTooLarge(format!(
                "the result is larger than {} bytes; aggregate, filter, select fewer columns or add a LIMIT",
                limits.max_result_bytes
            )));
        }
    }
    writer.finish()?;
    Ok(Answer {
        ipc: writer.into_inner()?,
        rows,
        replica_version: snapshot.version,
        cacheable,
        rules: Vec::new(),
        fallback: String::new(),
        stages: 0,
        workers: Vec::new(),
    })
}

/// The handler's rules that rewrote the plans of `ctx` (a [`session`]), in the order they did.
pub fn fired_rules(ctx: &SessionContext) -> Vec<String> {
    ctx.state()
        .config()
        .get_extension::<FiredRules>()
        .map(|fired| fired.names())
        .unwrap_or_default()
}

/// The physical plan of `statement` in `ctx` (a [`session`]), with the handler's rules
/// applied; and whether its answer may be cached (it calls no changing function).
pub async fn plan(
    ctx: &SessionContext,
    statement: Statement,
) -> Result<(Arc<dyn ExecutionPlan>, bool), QueryError> {
    let state = ctx.state();
    let plan = state.statement_to_plan(statement).await?;
    read_only()
        .verify_plan(&plan)
        .map_err(|e| QueryError::NotReadOnly(format!("only a read-only query is allowed: {e}")))?;
    let cacheable = !calls_changing_functions(&plan)?;
    // The handler's scan gives the table its dictionary types from planning on, even when no
    // scan runs (a filter no day passes plans an empty relation): a failure may be its doing,
    // and the query must be able to run again without it.
    if RuleSwitches::of(state.config_options()).dictionary_scan
        && plan.exists(|node| {
            Ok(matches!(node, LogicalPlan::TableScan(scan) if scan.table_name.table() == TABLE))
        })?
        && let Some(fired) = state.config().get_extension::<FiredRules>()
    {
        fired.record("dictionary_scan");
    }
    let optimized = match state.optimize(&plan) {
        Err(DataFusionError::Context(rule, _)) if LEAF_PUSHDOWN_RULES.contains(&rule.as_str()) => {
            // DataFusion 55 can lose a map look-up's column when an outer join's side turns out
            // empty (docs/read-path.md); without moving the look-ups the plan is right.
            tracing::info!(rule, "optimizing again without leaf expression pushdown");
            let mut state = state.clone();
            state
                .config_mut()
                .options_mut()
                .optimizer
                .enable_leaf_expression_pushdown = false;
            state.optimize(&plan)?
        }
        optimized => optimized?,
    };
    let physical = state
        .query_planner()
        .create_physical_plan(&optimized, &state)
        .await?;
    Ok((physical, cacheable))
}

/// How DataFusion's optimizer names a failure of its rules that move map and struct look-ups.
const LEAF_PUSHDOWN_RULES: [&str; 2] = [
    "Optimizer rule 'push_down_leaf_projections' failed",
    "Optimizer rule 'extract_leaf_expressions' failed",
];

/// A session of its own for one query: the query's memory pool, every core, the handler's
/// rules ([`rules`]) as the session's switches say, and the replica snapshot registered as
/// `notifications`, read by the handler's own scan unless `sluice.dictionary_scan` is off.
pub fn session(snapshot: &Arc<Snapshot>, limits: &Limits) -> Result<SessionContext, QueryError> {
    session_on(snapshot, limits, None)
}

/// [`session`], planned across `cluster` when one is given.
fn session_on(
    snapshot: &Arc<Snapshot>,
    limits: &Limits,
    cluster: Option<&crate::distributed::Cluster>,
) -> Result<SessionContext, QueryError> {
    let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(limits.memory_bytes));
    let mut runtime = RuntimeEnvBuilder::new().with_memory_pool(Arc::clone(&pool));
    runtime.disk_manager = limits.spill.clone();
    let runtime = runtime.build_arc()?;
    let mut config = limits.session.clone();
    if config.options().extensions.get::<RuleSwitches>().is_none() {
        config = config.with_option_extension(RuleSwitches::default());
    }
    let switches = RuleSwitches::of(config.options());
    let context = RuleContext {
        snapshot: Arc::clone(snapshot),
        low_cardinality: Arc::clone(&limits.low_cardinality),
        pool,
        max_numbered_strings: limits.max_numbered_strings,
        fired: Arc::default(),
    };
    let mut config = config.with_extension(Arc::clone(&context.fired));
    let routed = Arc::new(crate::distributed::Routed::default());
    if cluster.is_some() {
        config = config.with_extension(Arc::clone(&routed));
    }
    // Each physical rule follows DataFusion's own (`with_physical_optimizer_rules` would
    // replace those).
    let state = rules::physical(&context).into_iter().fold(
        SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_query_planner(Arc::new(RulesThenPlanner::new(rules::logical(&context)))),
        |builder, rule| builder.with_physical_optimizer_rule(rule),
    );
    let state = match cluster {
        Some(cluster) => cluster.distribute(state, routed)?,
        None => state,
    }
    .build();
    let ctx = SessionContext::new_with_state(state);
    for (name, function) in crate::series::bounded(limits.max_series_rows) {
        ctx.register_udtf(name, function);
    }
    let table = if switches.dictionary_scan {
        Arc::clone(&snapshot.provider)
    } else {
        Arc::clone(&snapshot.delta)
    };
    ctx.register_table(TABLE, table)?;
    Ok(ctx)
}

/// Wraps every operator of the plan so that each batch it hands on spends Tokio's cooperative
/// budget. DataFusion already does this at scans and exchanges; but a join or cross product can
/// produce millions of batches from one input batch without reaching either, and a task that
/// never yields cannot be cancelled. With this, a timed-out query stops within a few batches.
fn cooperative_everywhere(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>, QueryError> {
    Ok(plan
        .transform_up(|node| {
            Ok(if node.is::<CooperativeExec>() {
                Transformed::no(node)
            } else {
                Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>)
            })
        })?
        .data)
}

fn read_only() -> datafusion::execution::context::SQLOptions {
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Whether the plan calls a function that is not immutable (`now()`, `random()`, …), in any
/// node or subquery.
fn calls_changing_functions(plan: &LogicalPlan) -> Result<bool, QueryError> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            found |= expr.exists(|e| {
                Ok(matches!(e, Expr::ScalarFunction(f)
                    if f.func.signature().volatility != Volatility::Immutable))
            })?;
            Ok(if found {
                TreeNodeRecursion::Stop
            } else {
                TreeNodeRecursion::Continue
            })
        })
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_read_only_query_passes() {
        let parsed = parse("select   count(*)\nFROM notifications  where platform='x'").unwrap();
        assert_eq!(
            parsed.normalized,
            "SELECT count(*) FROM notifications WHERE platform = 'x'"
        );
        for (sql, says) in [
            ("DELETE FROM notifications", "read-only"),
            ("INSERT INTO notifications VALUES (1)", "read-only"),
            ("DROP TABLE notifications", "read-only"),
            ("CREATE TABLE t AS SELECT 1", "read-only"),
            (
                "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
                "read-only",
            ),
            ("COPY notifications TO '/tmp/x.csv'", "read-only"),
            ("SET datafusion.execution.batch_size = 1", "read-only"),
            ("EXPLAIN SELECT 1", "read-only"),
            ("SELECT 1; SELECT 2", "exactly one"),
            ("SELEC 1", "Expected"),
            ("", "exactly one"),
            ("SELECT a IS DISTINCT FROM 'x' AND b FROM t", "parentheses"),
            (
                "SELECT 1 FROM t WHERE a IS NOT DISTINCT FROM b OR c",
                "parentheses",
            ),
            (
                "SELECT 1 FROM t WHERE NOT a IS DISTINCT FROM b AND c",
                "parentheses",
            ),
            ("SELECT a IS DISTINCT FROM b IS NULL FROM t", "parentheses"),
            (
                "SELECT 1 FROM t a JOIN t b ON a.p IS NOT DISTINCT FROM b.p AND a.i IS NOT DISTINCT FROM b.i",
                "parentheses",
            ),
            (
                "SELECT 1 FROM t WHERE x IN (SELECT y FROM u WHERE y IS DISTINCT FROM 1 OR z)",
                "parentheses",
            ),
        ] {
            let error = parse(sql).err().unwrap_or_else(|| panic!("{sql} passed"));
            assert!(
                error.to_string().contains(says),
                "{sql}: {error} does not say {says}"
            );
        }
        // Parentheses the user wrote, and operators that bind tighter than IS, pass.
        for sql in [
            "SELECT (a IS DISTINCT FROM 'x') AND b FROM t",
            "SELECT a IS DISTINCT FROM ('x' AND b) FROM t",
            "SELECT a IS DISTINCT FROM b + 1 FROM t",
            "SELECT a IS NOT DISTINCT FROM b BETWEEN 1 AND 2 FROM t",
            "SELECT 1 FROM t a JOIN t b ON (a.p IS NOT DISTINCT FROM b.p) AND a.i = b.i",
        ] {
            parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}
