//! One t-digest for several approximate percentiles of the same values.
//!
//! `approx_percentile_cont(lag, 0.5), approx_percentile_cont(lag, 0.9)` is how dashboards ask
//! for a p50 and a p90. DataFusion gives each call a t-digest of its own, and each digest sorts
//! every batch of the same values: sorting was 36% of `ingest_lag_approx_percentiles`, twice
//! over. The digest does not depend on the percentile asked for, so the handler replaces such
//! calls by one `approx_percentiles(lag)`, whose single digest answers every percentile:
//!
//! ```text
//! Aggregate: groupBy=[platform], aggr=[approx_percentile_cont(lag, 0.5), approx_percentile_cont(lag, 0.9)]
//! ```
//! becomes
//! ```text
//! Projection: platform, get_field(d, 'q0') AS …, get_field(d, 'q1') AS …
//!   Aggregate: groupBy=[platform], aggr=[approx_percentiles(lag) AS d]
//! ```
//!
//! The digest goes through exactly the steps DataFusion's would (the same sort, the same merges,
//! the same state between partial and final aggregates), so every answer is the one DataFusion
//! gives. Rewritten: two or more calls of `approx_percentile_cont` on the same `DOUBLE` values
//! with a literal percentile and nothing else (no centroid count, `WITHIN GROUP`, `DISTINCT` or
//! `FILTER`).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, StructArray};
use arrow::compute::{filter, is_not_null};
use arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result, ScalarValue, exec_err};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions_aggregate::approx_percentile_cont::ApproxPercentileCont;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Expr, ExprSchemable, LogicalPlan,
    LogicalPlanBuilder, Signature, Volatility,
};
use datafusion_functions_aggregate_common::tdigest::{DEFAULT_MAX_SIZE, TDigest};

use crate::rules::Rewrite;

/// The rule, switched by `sluice.shared_digest`.
#[derive(Debug)]
pub struct SharedDigest;

impl Rewrite for SharedDigest {
    fn name(&self) -> &'static str {
        "shared_digest"
    }

    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        share_digests(plan)
    }
}

/// Replaces, in every aggregate of `plan`, the percentiles of the same values by one digest
/// (see the module's comment).
fn share_digests(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    plan.transform_up(|node| {
        let LogicalPlan::Aggregate(aggregate) = &node else {
            return Ok(Transformed::no(node));
        };
        // The values of each digest, and for each aggregate its digest and place in it.
        let input = aggregate.input.schema();
        let mut values: Vec<Expr> = Vec::new();
        let mut percentiles: Vec<Vec<f64>> = Vec::new();
        let mut place = Vec::with_capacity(aggregate.aggr_expr.len());
        for expr in &aggregate.aggr_expr {
            place.push(match percentile_of(expr, input)? {
                Some((of, percentile)) => {
                    let digest = match values.iter().position(|v| *v == of) {
                        Some(digest) => digest,
                        None => {
                            values.push(of);
                            percentiles.push(Vec::new());
                            values.len() - 1
                        }
                    };
                    percentiles[digest].push(percentile);
                    Some((digest, percentiles[digest].len() - 1))
                }
                None => None,
            });
        }
        let shared = |digest: usize| percentiles[digest].len() > 1;
        if !(0..values.len()).any(shared) {
            return Ok(Transformed::no(node));
        }

        // The new aggregates: the others as they were, then one per shared digest. The
        // output's group columns include the grouping id of grouping sets.
        let groups = aggregate.group_expr_len()?;
        let mut aggregates = Vec::new();
        let mut column_of = Vec::with_capacity(place.len());
        for (expr, place) in aggregate.aggr_expr.iter().zip(&place) {
            match place {
                Some((digest, _)) if shared(*digest) => column_of.push(None),
                _ => {
                    column_of.push(Some(groups + aggregates.len()));
                    aggregates.push(expr.clone());
                }
            }
        }
        let mut digest_column = vec![0; values.len()];
        for digest in (0..values.len()).filter(|&d| shared(d)) {
            digest_column[digest] = groups + aggregates.len();
            let udaf =
                AggregateUDF::new_from_impl(ApproxPercentiles::new(percentiles[digest].clone()));
            aggregates.push(
                udaf.call(vec![values[digest].clone()])
                    .alias(format!("__sluice_digest_{digest}")),
            );
        }
        let digested = LogicalPlanBuilder::from(aggregate.input.as_ref().clone())
            .aggregate(aggregate.group_expr.clone(), aggregates)?
            .build()?;

        // Each column of the original aggregate, under its name.
        let original: &DFSchema = &aggregate.schema;
        let column = |i: usize| Expr::Column(Column::from(digested.schema().qualified_field(i)));
        let columns: Vec<Expr> = (0..original.fields().len())
            .map(|i| {
                let (qualifier, field) = original.qualified_field(i);
                let value = match i.checked_sub(groups) {
                    None => column(i),
                    Some(a) => match (column_of[a], place[a]) {
                        (Some(at), _) => column(at),
                        (None, Some((digest, q))) => {
                            get_field(column(digest_column[digest]), format!("q{q}"))
                        }
                        (None, None) => unreachable!("only percentiles are left out"),
                    },
                };
                value.alias_qualified(qualifier.cloned(), field.name())
            })
            .collect();
        Ok(Transformed::yes(
            LogicalPlanBuilder::from(digested)
                .project(columns)?
                .build()?,
        ))
    })
}

/// The values and percentile of `expr` when it is a call of `approx_percentile_cont` that can
/// share its digest (see the module's comment).
fn percentile_of(expr: &Expr, input: &DFSchema) -> Result<Option<(Expr, f64)>> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr.clone().unalias() else {
        return Ok(None);
    };
    if func.name() != "approx_percentile_cont"
        || params.distinct
        || params.filter.is_some()
        || !params.order_by.is_empty()
        || params.null_treatment.is_some()
    {
        return Ok(None);
    }
    let [
        values,
        Expr::Literal(ScalarValue::Float64(Some(percentile)), _),
    ] = params.args.as_slice()
    else {
        return Ok(None);
    };
    if !(0.0..=1.0).contains(percentile) || values.get_type(input)? != DataType::Float64 {
        return Ok(None);
    }
    Ok(Some((values.clone(), *percentile)))
}

/// `approx_percentiles(values)`: a struct of DataFusion's `approx_percentile_cont(values, p)`
/// for each of its percentiles, fields `q0`, `q1`, … in their order.
#[derive(Debug)]
struct ApproxPercentiles {
    percentiles: Vec<f64>,
    signature: Signature,
}

impl ApproxPercentiles {
    fn new(percentiles: Vec<f64>) -> Self {
        ApproxPercentiles {
            percentiles,
            signature: Signature::exact(vec![DataType::Float64], Volatility::Immutable),
        }
    }

    fn fields(&self) -> Fields {
        (0..self.percentiles.len())
            .map(|q| Field::new(format!("q{q}"), DataType::Float64, true))
            .collect()
    }
}

impl PartialEq for ApproxPercentiles {
    fn eq(&self, other: &Self) -> bool {
        self.percentiles
            .iter()
            .map(|p| p.to_bits())
            .eq(other.percentiles.iter().map(|p| p.to_bits()))
    }
}

impl Eq for ApproxPercentiles {}

impl Hash for ApproxPercentiles {
    fn hash<H: Hasher>(&self, state: &mut H) {
        for p in &self.percentiles {
            p.to_bits().hash(state);
        }
    }
}

impl AggregateUDFImpl for ApproxPercentiles {
    fn name(&self) -> &str {
        "approx_percentiles"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(self.fields()))
    }

    /// `approx_percentile_cont`'s state, the digest (`TDigest::to_scalar_state`), as
    /// DataFusion declares it.
    fn state_fields(&self, args: StateFieldsArgs<'_>) -> Result<Vec<FieldRef>> {
        ApproxPercentileCont::new().state_fields(args)
    }

    fn accumulator(&self, _: AccumulatorArgs<'_>) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Digest {
            digest: TDigest::new(DEFAULT_MAX_SIZE),
            percentiles: self.percentiles.clone(),
            fields: self.fields(),
        }))
    }
}

/// The accumulator of [`ApproxPercentiles`]: what DataFusion's `ApproxPercentileAccumulator`
/// does, with every percentile estimated from its one digest.
#[derive(Debug)]
struct Digest {
    digest: TDigest,
    percentiles: Vec<f64>,
    fields: Fields,
}

impl Accumulator for Digest {
    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(self.digest.to_scalar_state())
    }

    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let mut values = Arc::clone(&values[0]);
        if values.null_count() > 0 {
            values = filter(&values, &is_not_null(&values)?)?;
        }
        let sorted = arrow::compute::sort(&values, None)?;
        let Some(sorted) = sorted.as_any().downcast_ref::<Float64Array>() else {
            return exec_err!("approx_percentiles takes DOUBLE values");
        };
        self.digest = self.digest.merge_sorted_f64(sorted.values());
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        if states.is_empty() {
            return Ok(());
        }
        let digests = (0..states[0].len())
            .map(|row| {
                let state = states
                    .iter()
                    .map(|column| ScalarValue::try_from_array(column, row))
                    .collect::<Result<Vec<_>>>()?;
                Ok(TDigest::from_scalar_state(&state))
            })
            .collect::<Result<Vec<_>>>()?;
        self.digest = TDigest::merge_digests(digests.iter().chain(std::iter::once(&self.digest)));
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let estimates: Vec<ArrayRef> = self
            .percentiles
            .iter()
            .map(|&p| {
                let estimate =
                    (self.digest.count() != 0.0).then(|| self.digest.estimate_quantile(p));
                Arc::new(Float64Array::from(vec![estimate])) as ArrayRef
            })
            .collect();
        Ok(ScalarValue::Struct(Arc::new(StructArray::try_new(
            self.fields.clone(),
            estimates,
            None,
        )?)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + self.digest.size() - std::mem::size_of_val(&self.digest)
            + self.percentiles.capacity() * std::mem::size_of::<f64>()
    }
}
