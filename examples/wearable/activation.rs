//! Activation rows: weights by Wanda (layer-sequential, on 1,024 training windows), neurons and
//! filters by APoZ (removed with their dependencies, compacted); and 2:4 rows, by magnitude and by
//! Wanda's score.

use shears::calibrate::Calibration;
use shears::report::{ModelSize, ReportRow};
use shears::strategy::{
    Context, PruneStrategy, StructureTarget, Wanda, WeightPruning, channels_by_activation,
};
use shears::{Amount, MaskSet, Network};

use crate::{Result, Setup};

/// Calibration windows: enough for stable norms, a fraction of a second per pass.
const CALIBRATION_SAMPLES: usize = 1024;

fn calibration() -> Calibration {
    Calibration::new()
        .batch_size(256)
        .max_samples(CALIBRATION_SAMPLES)
}

/// The network with `masks` applied, and its row.
fn masked_row(setup: &Setup, strategy: &str, setting: &str, masks: &MaskSet) -> Result<ReportRow> {
    let mut pruned: Network = setup.net.clone();
    pruned.apply_masks(masks)?;
    setup.row(strategy, setting, masks.sparsity(), pruned, Some(masks))
}

/// Wanda at 50 % and 90 % of every row; APoZ removing a quarter of the filters and neurons.
pub fn rows(setup: &Setup) -> Result<Vec<ReportRow>> {
    let sparsities: &[f64] = if setup.quick { &[0.9] } else { &[0.5, 0.9] };
    let mut rows = Vec::new();
    for &s in sparsities {
        let plan = Wanda::new(Amount::Sparsity(s)).plan_sequential(
            &setup.net,
            &setup.hapt.train,
            &calibration(),
        )?;
        let setting = format!("Wanda {:.0}% per row, sequential", 100.0 * s);
        rows.push(masked_row(setup, "activation", &setting, &plan.masks)?);
    }
    if !setup.quick {
        let stats = calibration()
            .activations(true)
            .run(&setup.net, &setup.hapt.train)?;
        let plan = channels_by_activation(stats, true, StructureTarget::Channels(0.25))
            .plan(&Context::for_network(&setup.net))?;
        let small = plan.compact(&setup.net)?;
        let compact_bytes = ModelSize::of(&small, None)?.bytes_dense;
        let removed = 1.0 - small.num_params() as f64 / setup.net.num_params() as f64;
        setup.say(format!(
            "activation: APoZ removes {} filters and neurons ({:.1}% of the parameters)",
            plan.removals
                .iter()
                .map(|r| r.channels.len())
                .sum::<usize>(),
            100.0 * removed
        ));
        let mut row = setup.row(
            "activation",
            "APoZ, 25% of filters and neurons",
            0.25,
            small,
            None,
        )?;
        row.bytes_compact = Some(compact_bytes);
        rows.push(row);
    }
    Ok(rows)
}

/// 2:4 (2 of every 4 consecutive input weights kept) by magnitude and by Wanda's score.
pub fn rows_2_4(setup: &Setup) -> Result<Vec<ReportRow>> {
    let mut rows = Vec::new();
    let magnitude = WeightPruning::n_m(2, 4).plan(&Context::new(setup.net.params()))?;
    rows.push(masked_row(setup, "2:4", "magnitude 2:4", &magnitude.masks)?);
    if !setup.quick {
        let wanda =
            Wanda::n_m(2, 4).plan_sequential(&setup.net, &setup.hapt.train, &calibration())?;
        rows.push(masked_row(
            setup,
            "2:4",
            "Wanda 2:4, sequential",
            &wanda.masks,
        )?);
    }
    Ok(rows)
}
