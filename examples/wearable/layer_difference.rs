//! Layer-difference rows: whole blocks of the HAPT CNN (conv3 + relu3, fc1 + relu4, the two whose
//! input and output shapes match) ranked by Block Influence on the training windows and replaced
//! by the identity, physically; the compacted network is then fine-tuned. A row's sparsity is
//! the fraction of the dense model's parameters removed.

use shears::report::ReportRow;
use shears::strategy::{BlockMetric, LayerDifference, Removal};

use crate::{Result, Setup};

/// The `k` lowest-Block-Influence blocks removed, for `k` = 1 (and 2 in the full run).
pub fn rows(setup: &Setup) -> Result<Vec<ReportRow>> {
    let counts: &[usize] = if setup.quick { &[1] } else { &[1, 2] };
    let dense = setup.net.num_params() as f64;
    let mut rows = Vec::new();
    for &k in counts {
        let strategy = LayerDifference::new(BlockMetric::BlockInfluence, Removal::Lowest(k));
        let stats = strategy
            .calibration(&setup.net)?
            .batch_size(256)
            .run(&setup.net, &setup.hapt.train)?;
        let plan = strategy.with_stats(stats).decide(&setup.net)?;
        setup.say(format!(
            "layer difference: Block Influence {}; removing {}",
            plan.scores
                .iter()
                .map(|s| format!("{} {:.4}", s.block, s.score))
                .collect::<Vec<_>>()
                .join(", "),
            plan.removed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let smaller = plan.apply(&setup.net)?;
        // The row's sparsity: the fraction of the dense model's parameters removed.
        let sparsity = 1.0 - smaller.num_params() as f64 / dense;
        let setting = format!("{k} of {} blocks, lowest BI", plan.scores.len());
        let compact_bytes = shears::report::ModelSize::of(&smaller, None)?.bytes_dense;
        // Compacted: nothing left to mask.
        let mut row = setup.row("layer-difference", setting, sparsity, smaller, None)?;
        row.bytes_compact = Some(compact_bytes);
        rows.push(row);
    }
    Ok(rows)
}
