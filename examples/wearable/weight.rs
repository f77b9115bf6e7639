//! Weight pruning rows: global magnitude at several sparsities.

use shears::Amount;
use shears::report::ReportRow;
use shears::strategy::{Context, PruneStrategy, Scope, WeightPruning};

use crate::{Result, Setup};

/// Global magnitude pruning at 0.5, 0.8, 0.9 and 0.95 of all weights.
pub fn rows(setup: &Setup) -> Result<Vec<ReportRow>> {
    let sparsities: &[f64] = if setup.quick {
        &[0.9]
    } else {
        &[0.5, 0.8, 0.9, 0.95]
    };
    sparsities
        .iter()
        .map(|&s| {
            let plan = WeightPruning::new(Amount::Sparsity(s))
                .scope(Scope::Global)
                .plan(&Context::new(setup.net.params()))?;
            let mut pruned = setup.net.clone();
            pruned.apply_masks(&plan.masks)?;
            setup.row(
                "weight",
                format!("global magnitude {:.0}%", 100.0 * s),
                plan.sparsity(),
                pruned,
                Some(&plan.masks),
            )
        })
        .collect()
}
