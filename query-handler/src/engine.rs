//! Running one analyst query: parse, check it is a single read-only query, plan it against a
//! replica snapshot, execute it with DataFusion under a memory limit, and encode the result as
//! an Arrow IPC stream.
//!
//! Queries run on their own Tokio runtime with one worker per core (`target_partitions` =
//! cores), so a heavy query keeps every core busy without starving the gRPC server, which
//! stays responsive on the process's main runtime.

use std::sync::Arc;

use arrow::ipc::writer::StreamWriter;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use futures::StreamExt;

use crate::error::QueryError;
use crate::replica::Snapshot;
use crate::{codes, counts, dense, kernels, nulls, percentiles, pushdown, regroup, scan, unnest};

/// The name analysts query.
pub const TABLE: &str = "notifications";

/// Limits and settings of one query.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory DataFusion may reserve for the query's operators (sorts, joins, aggregates).
    pub memory_bytes: usize,
    pub max_result_rows: u64,
    pub max_result_bytes: usize,
    /// DataFusion's settings for every query.
    pub session: SessionConfig,
    /// Columns with few distinct values, which aggregates group by first ([`regroup`]).
    pub low_cardinality: Arc<[String]>,
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
}

impl Answer {
    pub fn size_bytes(&self) -> usize {
        self.ipc.len() + std::mem::size_of::<Self>()
    }

    #[cfg(test)]
    pub(crate) fn for_tests(ipc: Vec<u8>) -> Self {
        Answer {
            ipc,
            rows: 0,
            replica_version: 0,
            cacheable: true,
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
    let normalized = statement.to_string();
    Ok(Parsed {
        statement,
        normalized,
    })
}

/// Plans and runs `statement` against `snapshot`, and encodes the result.
pub async fn execute(
    statement: Statement,
    snapshot: Arc<Snapshot>,
    limits: Limits,
) -> Result<Answer, QueryError> {
    let ctx = session(&snapshot, &limits)?;
    let (physical, cacheable) = plan(&ctx, statement, &snapshot, &limits).await?;
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
    })
}

/// The physical plan of `statement` in `ctx` (a [`session`] of `snapshot`), with the handler's
/// rewrites applied; and whether its answer may be cached (it calls no changing function).
pub async fn plan(
    ctx: &SessionContext,
    statement: Statement,
    snapshot: &Snapshot,
    limits: &Limits,
) -> Result<(Arc<dyn ExecutionPlan>, bool), QueryError> {
    let plan = ctx.state().statement_to_plan(statement).await?;
    read_only()
        .verify_plan(&plan)
        .map_err(|e| QueryError::NotReadOnly(format!("only a read-only query is allowed: {e}")))?;
    let cacheable = !calls_changing_functions(&plan)?;
    let state = ctx.state();
    let plan = nulls::use_null_counts(state.optimize(&plan)?, snapshot)?;
    let plan = counts::answer_from_log(plan, snapshot)?;
    let plan = regroup::regroup(plan, &limits.low_cardinality)?;
    let plan = codes::group_by_codes(plan, &limits.low_cardinality, snapshot)?;
    let plan = scan::group_by_views(plan)?;
    let plan = kernels::use_faster_kernels(plan)?;
    let plan = percentiles::share_digests(plan)?;
    let physical = state
        .query_planner()
        .create_physical_plan(&plan, &state)
        .await?;
    let physical = pushdown::without_repeated_conditions(physical)?;
    let physical = dense::aggregate_by_codes(physical)?;
    let physical = unnest::unnest_by_slices(physical)?;
    let physical = scan::without_dictionaries(physical)?;
    Ok((physical, cacheable))
}

/// A session of its own for one query: the query's memory pool, every core, and the replica
/// snapshot registered as `notifications`.
pub fn session(snapshot: &Snapshot, limits: &Limits) -> Result<SessionContext, QueryError> {
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(GreedyMemoryPool::new(limits.memory_bytes)))
        .build_arc()?;
    let config = limits.session.clone();
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_table(TABLE, snapshot.provider.clone())?;
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
        ] {
            let error = parse(sql).err().unwrap_or_else(|| panic!("{sql} passed"));
            assert!(
                error.to_string().contains(says),
                "{sql}: {error} does not say {says}"
            );
        }
    }
}
