//! Sensitivity rows: per-layer sparsities allocated from a sensitivity analysis against uniform
//! per-layer magnitude pruning, Distiller's s·σ threshold, and gradient saliency (Taylor, SNIP).

use std::time::Instant;

use shears::Amount;
use shears::data::Dataset;
use shears::report::ReportRow;
use shears::strategy::{
    Budget, Context, Criterion, PruneStrategy, Scope, SensitivityAnalysis, SigmaThreshold,
    WeightPruning,
};
use shears::train::{Loss, ScoreOptions, accumulate_scores, evaluate};

use crate::{Result, Setup};

/// The sensitivity grid: 10 levels, dense where the allocation decides (80–99 %).
const GRID: [f64; 10] = [0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99];

/// Every other training window: the data the analysis measures on, so that the test set only
/// reports.
fn validation(setup: &Setup) -> Result<Dataset> {
    let rows: Vec<usize> = (0..setup.hapt.train.len()).step_by(2).collect();
    Ok(setup.hapt.train.select(&rows)?)
}

/// Sensitivity-allocated 90 % vs uniform per-layer 90 % magnitude; s·σ; Taylor and SNIP at 90 %.
pub fn rows(setup: &Setup) -> Result<Vec<ReportRow>> {
    let target = 0.9;
    let mut rows = Vec::new();

    let val = validation(setup)?;
    let mut net = setup.net.clone();
    let start = Instant::now();
    let sensitivity = SensitivityAnalysis::new(GRID).run(&mut net, |n| {
        Ok(evaluate(n, &val, Loss::CrossEntropy, 512)?
            .accuracy
            .unwrap_or(0.0))
    })?;
    setup.say(format!(
        "sensitivity analysis: {} layers x {} levels on {} windows in {:.1} s",
        sensitivity.curves.len(),
        GRID.len(),
        val.len(),
        start.elapsed().as_secs_f64()
    ));
    let allocation = sensitivity.allocate(target, Budget::Params)?;
    setup.say(format!(
        "allocation at {:.0}%: {}",
        100.0 * target,
        allocation
            .sparsities
            .iter()
            .map(|(n, s)| format!("{n} {:.1}%", 100.0 * s))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let allocated = allocation.strategy();
    let uniform = WeightPruning::new(Amount::Sparsity(target));
    let sigma = SigmaThreshold::new(1.6);
    let mut strategies: Vec<(String, Box<dyn PruneStrategy>)> = vec![
        (
            format!("sensitivity-allocated {:.0}%", 100.0 * target),
            Box::new(allocated),
        ),
        (
            format!("uniform per-layer magnitude {:.0}%", 100.0 * target),
            Box::new(uniform),
        ),
    ];
    if !setup.quick {
        let scores = accumulate_scores(
            &setup.net,
            &setup.hapt.train,
            ScoreOptions::new(Loss::CrossEntropy).batch_size(64),
        )?;
        strategies.push(("s·σ threshold, s = 1.6".into(), Box::new(sigma)));
        strategies.push((
            format!("global Taylor {:.0}%", 100.0 * target),
            Box::new(
                WeightPruning::new(Amount::Sparsity(target))
                    .scope(Scope::Global)
                    .criterion(Criterion::taylor(&scores)),
            ),
        ));
        strategies.push((
            format!("global SNIP {:.0}%", 100.0 * target),
            Box::new(
                WeightPruning::new(Amount::Sparsity(target))
                    .scope(Scope::Global)
                    .criterion(Criterion::snip(&scores, setup.net.params())?),
            ),
        ));
    }
    for (setting, strategy) in strategies {
        let plan = strategy.plan(&Context::for_network(&setup.net))?;
        let mut pruned = setup.net.clone();
        pruned.apply_masks(&plan.masks)?;
        rows.push(setup.row(
            "sensitivity",
            setting,
            plan.sparsity(),
            pruned,
            Some(&plan.masks),
        )?);
    }
    Ok(rows)
}
