//! The handler's own rewrites of DataFusion's plans: every one lives in this folder, is
//! registered in [`logical`] or [`physical`] below, and has a switch. (One more physical rule,
//! [`without_dictionaries`], belongs to the handler's scan and follows its switch.)
//!
//! Each rewrite is exact: a query's answer is the one DataFusion alone gives on delta-rs's
//! provider, whatever the data holds; only the speed depends on the data. Each can be turned off
//! on its own, for one session with its option (`sluice.<name>`, in [`RuleSwitches`]) and for
//! a whole handler with `--query-rules-off <name>,…`, so that an operator can stop one that
//! misbehaves and a test can compare every rule on and off.
//!
//! | switch | kind | what it does |
//! |---|---|---|
//! | `dictionary_scan` | table provider | the handler's own scan ([`crate::scan`]), low-cardinality columns as dictionary keys |
//! | `null_counts` | logical | `count(c)` of a column the log says has no null is `count(*)`; its `IS NOT NULL` goes |
//! | `counts_from_log` | logical | `count(*)` grouped by partition columns, answered from the Delta log |
//! | `regroup` | logical | aggregates over low-cardinality columns grouped by them first |
//! | `number_groups` | logical | one or two low-cardinality groups grouped by a number per string |
//! | `group_as_views` | logical | a dictionary group grouped as string views |
//! | `map_lookup` | logical | `metrics['likes']` by the handler's kernel |
//! | `like_once_per_value` | logical | `LIKE` matched once per distinct value of a batch |
//! | `utc_date_trunc` | logical | `date_trunc('hour' / 'day', …)` of UTC timestamps by arithmetic |
//! | `shared_digest` | logical | several `approx_percentile_cont` of the same values share one digest |
//! | `scan_conditions_once` | physical | a Parquet scan checks each condition once |
//! | `dense_aggregate` | physical | numbered groups found by indexing a table, without hashing |
//! | `unnest_by_slices` | physical | `unnest` of one list column by slices |
//!
//! The logical rules run once, in the order of [`logical`], on the plan DataFusion's optimizer
//! left ([`RulesThenPlanner`]), not inside that optimizer's passes: they are written for an
//! optimized plan (projections and filters pushed into the scan), and DataFusion's passes
//! re-run over their output would undo part of it (`PushDownFilter` would push the kernels into
//! the scan's filters, where pruning cannot read them). The physical rules follow DataFusion's
//! own, in the order of [`physical`].

pub mod counts_from_log;
pub mod dense_aggregate;
pub mod group_as_views;
pub mod kernels;
pub mod null_counts;
pub mod number_groups;
pub mod regroup;
pub mod scan_conditions;
pub mod shared_digest;
pub mod unnest_by_slices;
pub mod without_dictionaries;

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigExtension;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Result, extensions_options};
use datafusion::config::ConfigOptions;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::MemoryPool;
use datafusion::logical_expr::{LogicalPlan, assert_expected_schema};
use datafusion::optimizer::{OptimizerConfig, OptimizerContext, OptimizerRule};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::snapshot::Snapshot;

extensions_options! {
    /// The switches of the handler's rules, `sluice.<name>`, each on by default (see the
    /// module's table).
    pub struct RuleSwitches {
        /// Read the replica with the handler's own scan, low-cardinality columns as dictionaries.
        pub dictionary_scan: bool, default = true
        /// Count rows for `count(c)` of a column without nulls; drop its `IS NOT NULL`.
        pub null_counts: bool, default = true
        /// Answer `count(*)` grouped by partition columns from the Delta log.
        pub counts_from_log: bool, default = true
        /// Group aggregates over low-cardinality columns by those columns first.
        pub regroup: bool, default = true
        /// Group by a number per string for one or two low-cardinality groups.
        pub number_groups: bool, default = true
        /// Group a dictionary column as string views.
        pub group_as_views: bool, default = true
        /// Look up map keys with the handler's kernel.
        pub map_lookup: bool, default = true
        /// Match LIKE once per distinct value of a batch.
        pub like_once_per_value: bool, default = true
        /// Truncate UTC timestamps to hours and days by arithmetic.
        pub utc_date_trunc: bool, default = true
        /// Share one t-digest between percentiles of the same values.
        pub shared_digest: bool, default = true
        /// Check each condition of a Parquet scan once.
        pub scan_conditions_once: bool, default = true
        /// Group numbered groups by indexing a table.
        pub dense_aggregate: bool, default = true
        /// Unnest one list column by slices.
        pub unnest_by_slices: bool, default = true
    }
}

impl ConfigExtension for RuleSwitches {
    const PREFIX: &'static str = "sluice";
}

impl RuleSwitches {
    /// The switches of a session's options; all on when the session has none.
    pub fn of(options: &ConfigOptions) -> RuleSwitches {
        options
            .extensions
            .get::<RuleSwitches>()
            .cloned()
            .unwrap_or_default()
    }

    /// Whether the rule `name` is on. Every rule's name is a switch's (a test checks); an
    /// unknown name is on.
    pub fn is_on(&self, name: &str) -> bool {
        use datafusion::config::ExtensionOptions;
        self.entries()
            .into_iter()
            .find(|entry| entry.key == name)
            .is_none_or(|entry| entry.value.as_deref() != Some("false"))
    }

    /// Whether every rule is off.
    pub fn all_off(&self) -> bool {
        RuleSwitches::names().iter().all(|name| !self.is_on(name))
    }

    /// The name of every switch.
    pub fn names() -> Vec<String> {
        use datafusion::config::ExtensionOptions;
        RuleSwitches::default()
            .entries()
            .into_iter()
            .map(|entry| entry.key)
            .collect()
    }
}

/// Turns off the rules named in `names` in `options`; an unknown name is an error that lists
/// the known ones.
pub fn turn_off(options: &mut ConfigOptions, names: &[String]) -> Result<()> {
    if options.extensions.get::<RuleSwitches>().is_none() {
        options.extensions.insert(RuleSwitches::default());
    }
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        if !RuleSwitches::names().iter().any(|known| known == name) {
            return datafusion::common::config_err!(
                "no query rule is called {name:?}; the rules are {}",
                RuleSwitches::names().join(", ")
            );
        }
        options.set(&format!("{}.{name}", RuleSwitches::PREFIX), "false")?;
    }
    Ok(())
}

/// What the rules of one query read: its snapshot, the columns with few values, and its memory
/// pool; and where they record that they fired.
#[derive(Clone)]
pub struct RuleContext {
    pub snapshot: Arc<Snapshot>,
    pub low_cardinality: Arc<[String]>,
    pub pool: Arc<dyn MemoryPool>,
    /// The most distinct strings [`number_groups`] numbers in one query.
    pub max_numbered_strings: usize,
    pub fired: Arc<FiredRules>,
}

/// One of the handler's logical rewrites. Its name is its switch's, `sluice.<name>`.
pub trait Rewrite: std::fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;

    /// `plan` rewritten; `plan` is optimized by DataFusion already.
    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>>;
}

/// One of the handler's physical rewrites. Its name is its switch's, `sluice.<name>`.
pub trait PhysicalRewrite: std::fmt::Debug + Send + Sync {
    fn name(&self) -> &'static str;

    /// `plan` rewritten, keeping its schema (DataFusion checks); the very same `plan` when
    /// nothing changed.
    fn rewrite(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>>;
}

/// The rules that rewrote a session's plans, in the order they did: a query's answer names
/// them, so that a rule that misbehaves can be found and switched off.
#[derive(Debug, Default)]
pub struct FiredRules(Mutex<Vec<&'static str>>);

impl FiredRules {
    pub(crate) fn record(&self, name: &'static str) {
        let mut fired = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if !fired.contains(&name) {
            fired.push(name);
        }
    }

    pub fn names(&self) -> Vec<String> {
        let fired = self.0.lock().unwrap_or_else(|e| e.into_inner());
        fired.iter().map(|name| name.to_string()).collect()
    }
}

/// A rewrite as a DataFusion rule that does nothing while its switch is off, and records when
/// it changed a plan.
#[derive(Debug)]
pub struct Switched<R> {
    rule: R,
    fired: Arc<FiredRules>,
}

impl<R> Switched<R> {
    fn new(rule: R, context: &RuleContext) -> Self {
        Switched {
            rule,
            fired: Arc::clone(&context.fired),
        }
    }
}

impl<R: Rewrite> OptimizerRule for Switched<R> {
    fn name(&self) -> &str {
        self.rule.name()
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !RuleSwitches::of(config.options().as_ref()).is_on(self.rule.name()) {
            return Ok(Transformed::no(plan));
        }
        let rewritten = self.rule.rewrite(plan)?;
        if rewritten.transformed {
            self.fired.record(self.rule.name());
        }
        Ok(rewritten)
    }
}

impl<R: PhysicalRewrite + 'static> PhysicalOptimizerRule for Switched<R> {
    fn name(&self) -> &str {
        self.rule.name()
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !RuleSwitches::of(config).is_on(self.rule.name()) {
            return Ok(plan);
        }
        let rewritten = self.rule.rewrite(Arc::clone(&plan))?;
        // A rewrite that changes nothing hands back the very plan it was given.
        if !Arc::ptr_eq(&rewritten, &plan) {
            self.fired.record(self.rule.name());
        }
        Ok(rewritten)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The logical rules, in the order they run.
pub fn logical(context: &RuleContext) -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let snapshot = &context.snapshot;
    let low_cardinality = &context.low_cardinality;
    vec![
        Arc::new(Switched::new(
            null_counts::NullCounts::new(Arc::clone(snapshot)),
            context,
        )),
        Arc::new(Switched::new(
            counts_from_log::CountsFromLog::new(Arc::clone(snapshot)),
            context,
        )),
        Arc::new(Switched::new(
            regroup::Regroup::new(Arc::clone(low_cardinality)),
            context,
        )),
        Arc::new(Switched::new(
            number_groups::NumberGroups::new(
                Arc::clone(low_cardinality),
                Arc::clone(snapshot),
                Arc::clone(&context.pool),
                context.max_numbered_strings,
            ),
            context,
        )),
        Arc::new(Switched::new(group_as_views::GroupAsViews, context)),
        Arc::new(Switched::new(kernels::MapLookupKernel, context)),
        Arc::new(Switched::new(kernels::LikeKernel, context)),
        Arc::new(Switched::new(kernels::UtcDateTruncKernel, context)),
        Arc::new(Switched::new(shared_digest::SharedDigest, context)),
    ]
}

/// The physical rules, in the order they run after DataFusion's own.
pub fn physical(context: &RuleContext) -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    vec![
        Arc::new(Switched::new(scan_conditions::ScanConditionsOnce, context)),
        Arc::new(Switched::new(dense_aggregate::DenseAggregate, context)),
        Arc::new(Switched::new(unnest_by_slices::UnnestBySlices, context)),
        Arc::new(without_dictionaries::WithoutDictionaries),
    ]
}

/// DataFusion's physical planner, after the handler's logical rules (see the module's comment
/// for why they are not in DataFusion's optimizer passes).
#[derive(Debug)]
pub struct RulesThenPlanner {
    rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>,
}

impl RulesThenPlanner {
    pub fn new(rules: Vec<Arc<dyn OptimizerRule + Send + Sync>>) -> Self {
        RulesThenPlanner { rules }
    }

    /// `plan` after every rule, each checked to keep the plan's schema, under `options`.
    pub fn rewrite(&self, plan: LogicalPlan, options: &ConfigOptions) -> Result<LogicalPlan> {
        let config = OptimizerContext::new_with_config_options(Arc::new(options.clone()));
        let mut plan = plan;
        for rule in &self.rules {
            let schema = Arc::clone(plan.schema());
            let rewritten = rule.rewrite(plan, &config)?;
            if rewritten.transformed {
                assert_expected_schema(&schema, &rewritten.data).map_err(|e| {
                    e.context(format!(
                        "the rule {} changed the plan's schema",
                        rule.name()
                    ))
                })?;
            }
            plan = rewritten.data;
        }
        Ok(plan)
    }
}

#[async_trait]
impl QueryPlanner for RulesThenPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.rewrite(logical_plan.clone(), session.config_options())?;
        DefaultPhysicalPlanner::default()
            .create_physical_plan(&plan, session)
            .await
    }
}
