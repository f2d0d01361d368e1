//! `generate_series` and `range` with a bound on the rows they produce.
//!
//! DataFusion's table functions produce rows lazily, so `generate_series(1, 1e15)` costs no
//! memory, but a query over it keeps every core busy until its timeout. The handler registers
//! these two in their place: the same functions, whose scan fails with a clear error once it
//! has produced more than `--query-max-series-rows`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::functions_table::generate_series::{GenerateSeriesFunc, RangeFunc};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// The table functions to register in DataFusion's place, by name.
pub fn bounded(max_rows: u64) -> [(&'static str, Arc<dyn TableFunctionImpl>); 2] {
    [
        (
            "generate_series",
            Arc::new(Bounded {
                name: "generate_series",
                inner: Arc::new(GenerateSeriesFunc {}),
                max_rows,
            }),
        ),
        (
            "range",
            Arc::new(Bounded {
                name: "range",
                inner: Arc::new(RangeFunc {}),
                max_rows,
            }),
        ),
    ]
}

#[derive(Debug)]
struct Bounded {
    name: &'static str,
    inner: Arc<dyn TableFunctionImpl>,
    max_rows: u64,
}

impl TableFunctionImpl for Bounded {
    fn call_with_args(&self, args: TableFunctionArgs<'_, '_>) -> Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(BoundedTable {
            name: self.name,
            inner: self.inner.call_with_args(args)?,
            max_rows: self.max_rows,
        }))
    }
}

#[derive(Debug)]
struct BoundedTable {
    name: &'static str,
    inner: Arc<dyn TableProvider>,
    max_rows: u64,
}

#[async_trait]
impl TableProvider for BoundedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(BoundedExec {
            name: self.name,
            input,
            max_rows: self.max_rows,
            produced: Arc::default(),
        }))
    }
}

/// Hands on its input's batches until those of all its partitions add up to more than
/// `max_rows`, then fails. (The planner may spread a series over partitions below it.)
#[derive(Debug)]
struct BoundedExec {
    name: &'static str,
    input: Arc<dyn ExecutionPlan>,
    max_rows: u64,
    produced: Arc<AtomicU64>,
}

impl DisplayAs for BoundedExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BoundedExec: {} max_rows={}", self.name, self.max_rows)
    }
}

/// [`BoundedExec`]'s name in a plan.
pub const BOUNDED_EXEC: &str = "BoundedExec";

impl ExecutionPlan for BoundedExec {
    fn name(&self) -> &str {
        BOUNDED_EXEC
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(BoundedExec {
                name: self.name,
                input,
                max_rows: self.max_rows,
                produced: Arc::default(),
            })),
            _ => exec_err!("BoundedExec has one input"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let (name, max_rows) = (self.name, self.max_rows);
        let produced = Arc::clone(&self.produced);
        let output = input.map(move |batch| {
            let batch = batch?;
            let rows = produced.fetch_add(batch.num_rows() as u64, Ordering::Relaxed)
                + batch.num_rows() as u64;
            if rows > max_rows {
                return exec_err!(
                    "{name} produced more than {max_rows} rows, the most one series may have \
                     (--query-max-series-rows)"
                );
            }
            Ok(batch)
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.input.schema(),
            output,
        )))
    }
}
