//! Faster kernels for three per-row operations that DataFusion 55 evaluates slowly on the
//! replica's columns, swapped into the optimized plan under the same names and types, each by
//! a rule with its own switch:
//!
//! - [`maps`]: `metrics['likes']`, one key looked up in a map column;
//! - [`like`]: `attributes LIKE '%…%'` on a column that holds few distinct strings, evaluated
//!   once per distinct value of each batch instead of once per row;
//! - [`trunc`]: `date_trunc('hour', occurred_at)` of a UTC timestamp, by arithmetic.
//!
//! Each gives exactly what DataFusion's own kernels give; each falls back to them for input it
//! does not speed up. Table scans keep their pushed-down filters as they are, since the Delta
//! scan reads those for file skipping.

mod like;
mod maps;
mod trunc;

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::functions::core::getfield::GetFieldFunc;
use datafusion::functions::datetime::date_trunc::DateTruncFunc;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Expr, LogicalPlan, ScalarUDF};

use crate::rules::Rewrite;

/// `metrics['likes']` by [`maps::MapLookup`], switched by `sluice.map_lookup`.
#[derive(Debug)]
pub struct MapLookupKernel;

impl Rewrite for MapLookupKernel {
    fn name(&self) -> &'static str {
        "map_lookup"
    }

    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        let lookup = Arc::new(ScalarUDF::new_from_impl(maps::MapLookup::default()));
        swap_outside_scans(plan, |expr| match expr {
            Expr::ScalarFunction(call) if call.func.inner().is::<GetFieldFunc>() => {
                Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::clone(&lookup),
                    call.args,
                )))
            }
            other => Transformed::no(other),
        })
    }
}

/// `LIKE` by [`like::OncePerValue`], switched by `sluice.like_once_per_value`.
#[derive(Debug)]
pub struct LikeKernel;

impl Rewrite for LikeKernel {
    fn name(&self) -> &'static str {
        "like_once_per_value"
    }

    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        swap_outside_scans(plan, |expr| match expr {
            Expr::Like(like) => match like::OncePerValue::replacing(&like) {
                Some(udf) => Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::new(ScalarUDF::new_from_impl(udf)),
                    vec![*like.expr, *like.pattern],
                ))),
                None => Transformed::no(Expr::Like(like)),
            },
            other => Transformed::no(other),
        })
    }
}

/// `date_trunc` by [`trunc::UtcDateTrunc`], switched by `sluice.utc_date_trunc`.
#[derive(Debug)]
pub struct UtcDateTruncKernel;

impl Rewrite for UtcDateTruncKernel {
    fn name(&self) -> &'static str {
        "utc_date_trunc"
    }

    fn rewrite(&self, plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
        let date_trunc = Arc::new(ScalarUDF::new_from_impl(trunc::UtcDateTrunc::default()));
        swap_outside_scans(plan, |expr| match expr {
            Expr::ScalarFunction(call) if call.func.inner().is::<DateTruncFunc>() => {
                Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                    Arc::clone(&date_trunc),
                    call.args,
                )))
            }
            other => Transformed::no(other),
        })
    }
}

/// Applies `swap` to every expression of `plan` and its subqueries outside table scans: a
/// scan's filters keep DataFusion's functions, since pruning reads them.
fn swap_outside_scans(
    plan: LogicalPlan,
    swap: impl Fn(Expr) -> Transformed<Expr>,
) -> Result<Transformed<LogicalPlan>> {
    plan.transform_up_with_subqueries(|node| {
        if matches!(node, LogicalPlan::TableScan(_)) {
            return Ok(Transformed::no(node));
        }
        // An aggregate's or projection's columns are named by their expressions: the swapped
        // ones keep their names, so the nodes above still find them.
        let names = NamePreserver::new(&node);
        node.map_expressions(|expr| {
            let name = names.save(&expr);
            let swapped = expr.transform_up(|expr| Ok(swap(expr)))?;
            Ok(swapped.update_data(|expr| name.restore(expr)))
        })
    })
}

/// The distinct string views of one batch, each with a number: open addressing, at most half
/// full. Equal views are equal strings (see [`like`]). It starts small, since a column of few
/// values has a handful of views per batch, and a table sized for hundreds of views would cost
/// more to clear than the batch costs to look up.
pub(crate) struct SeenViews {
    views: Vec<u128>,
    pub(crate) numbers: Vec<u32>,
    pub(crate) distinct: usize,
}

impl Default for SeenViews {
    fn default() -> Self {
        SeenViews {
            views: vec![0; 64],
            numbers: vec![Self::EMPTY; 64],
            distinct: 0,
        }
    }
}

impl SeenViews {
    pub(crate) const EMPTY: u32 = u32::MAX;
    /// Below this many slots, a collision grows the table.
    const SMALL: usize = 4096;

    /// The slot that holds `view`, or the empty slot where it goes.
    pub(crate) fn slot(&self, view: u128) -> usize {
        let mask = self.views.len() - 1;
        let mut at = self.home(view);
        while self.numbers[at] != Self::EMPTY && self.views[at] != view {
            at = (at + 1) & mask;
        }
        at
    }

    /// The slot `view` hashes to.
    fn home(&self, view: u128) -> usize {
        let mixed = ((view as u64) ^ ((view >> 64) as u64)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (mixed >> (64 - self.views.len().trailing_zeros())) as usize
    }

    /// Puts `view` in the empty `slot`. Grows four times once half full, and also when `view`
    /// landed past its home slot while the table is small: every row of such a view would take
    /// a second probe, a branch the CPU cannot predict when the views come in random order.
    pub(crate) fn insert(&mut self, slot: usize, view: u128, number: u32) {
        self.views[slot] = view;
        self.numbers[slot] = number;
        self.distinct += 1;
        let collided = slot != self.home(view) && self.views.len() < Self::SMALL;
        if self.distinct * 2 > self.views.len() || collided {
            let old = std::mem::replace(
                self,
                SeenViews {
                    views: vec![0; self.views.len() * 4],
                    numbers: vec![Self::EMPTY; self.views.len() * 4],
                    distinct: self.distinct,
                },
            );
            for (view, number) in old.views.into_iter().zip(old.numbers) {
                if number != Self::EMPTY {
                    let slot = self.slot(view);
                    self.views[slot] = view;
                    self.numbers[slot] = number;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_that_lands_past_its_home_slot_grows_a_small_table() {
        let mut seen = SeenViews::default();
        let first = 1u128;
        let home = seen.home(first);
        let second = (2..u128::MAX)
            .find(|&view| seen.home(view) == home)
            .unwrap();
        let slot = seen.slot(first);
        seen.insert(slot, first, 10);
        let slot = seen.slot(second);
        assert_ne!(slot, home);
        seen.insert(slot, second, 20);
        assert_eq!(seen.views.len(), 256);
        for (view, number) in [(first, 10), (second, 20)] {
            assert_eq!(seen.numbers[seen.slot(view)], number);
        }
        assert_eq!(seen.numbers[seen.slot(3)], SeenViews::EMPTY);
    }
}
