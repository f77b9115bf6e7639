//! Structure-sensitivity rows: half of the convolution filters removed for real (planned globally
//! over conv1–conv3, fc1 protected), the compacted network fine-tuned without masks and timed.

use std::path::Path;

use shears::io::save_network;
use shears::report::{ModelSize, ReportRow, StructureReport};
use shears::strategy::{Context, PruneStrategy, StructureSensitivity, StructureTarget};
use shears::structure::{GroupCriterion, Importance};
use shears::train::{Loss, ScoreOptions, accumulate_scores};

use crate::{Result, Setup};

/// Fraction of the convolution filters removed.
const FILTERS_REMOVED: f64 = 0.5;

/// One row per group criterion; `--quick` keeps Torch-Pruning's default (L2) only.
pub fn rows(setup: &Setup) -> Result<Vec<ReportRow>> {
    let mut criteria = vec![("L2", GroupCriterion::L2)];
    if !setup.quick {
        let taylor = accumulate_scores(
            &setup.net,
            &setup.hapt.train,
            ScoreOptions::new(Loss::CrossEntropy).max_batches(32),
        )?
        .taylor;
        criteria.extend([
            ("L1", GroupCriterion::L1),
            ("FPGM", GroupCriterion::Fpgm),
            ("Taylor", GroupCriterion::Taylor(taylor)),
        ]);
    }
    let dense_latency = setup.latency(&setup.net)?.median_us;
    criteria
        .into_iter()
        .map(|(label, criterion)| {
            let plan = StructureSensitivity::new(StructureTarget::Channels(FILTERS_REMOVED))
                .importance(Importance::new(criterion))
                .protect(["fc1"])
                .plan(&Context::for_network(&setup.net))?;
            let small = plan.compact(&setup.net)?;
            let report = StructureReport::new(&setup.net, &small)?;
            let compact_bytes = ModelSize::of(&small, None)?.bytes_dense;
            if label == "L2" {
                let root = Path::new(env!("CARGO_MANIFEST_DIR"));
                let out = root.join("target/wearable");
                std::fs::create_dir_all(&out)?;
                let file = out.join("structure-l2.safetensors");
                save_network(&small, out.join("structure-l2.json"), &file, None)?;
                let dense = root.join("data/hapt-cnn.safetensors");
                setup.say(format!(
                    "structure L2 checkpoint: {} bytes, dense {} bytes",
                    std::fs::metadata(&file)?.len(),
                    std::fs::metadata(&dense)?.len()
                ));
            }
            let mut row = setup.row(
                "structure-sensitivity",
                format!("global {label}, {:.0}% of filters", 100.0 * FILTERS_REMOVED),
                FILTERS_REMOVED,
                small,
                None,
            )?;
            row.bytes_compact = Some(compact_bytes);
            setup.say(format!(
                "structure {label}: {} → {} parameters, {} → {} bytes, {} → {} FLOPs; \
                 {:.1} µs vs {:.1} µs dense in this run ({:.2}× faster)",
                report.params.before,
                report.params.after,
                report.bytes.before,
                report.bytes.after,
                report.flops.before,
                report.flops.after,
                row.latency_us,
                dense_latency,
                dense_latency / row.latency_us
            ));
            if label == "L2" {
                setup.say(&report);
            }
            Ok(row)
        })
        .collect()
}
