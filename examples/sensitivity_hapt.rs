//! Sensitivity analysis of the HAPT activity model, and what its allocation buys.
//!
//! ```text
//! cargo run --release --example sensitivity_hapt
//! ```
//!
//! 1. Times the analysis over all 5 weight tensors at 10 sparsity levels, evaluating test
//!    accuracy (2,996 windows, batches of 512) at each point, and writes the curves to
//!    `target/sensitivity/curves.{csv,json,svg}`.
//! 2. Allocates 90 % of the weights from an analysis on a validation split (every other training
//!    window, so that the test set only reports) and compares it with uniform per-layer 90 %
//!    magnitude pruning, each fine-tuned 3 epochs with Adam (as the wearable report) from 5
//!    seeds.

use std::path::PathBuf;
use std::time::Instant;

use shears::data::hapt::HaptConfig;
use shears::io::load_network;
use shears::strategy::{Budget, Context, PruneStrategy, SensitivityAnalysis, WeightPruning};
use shears::train::{Adam, Loss, Trainer, evaluate};
use shears::{Amount, Network};

const GRID: [f64; 10] = [0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99];
const SEEDS: [u64; 5] = [11, 1, 2, 3, 4];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dense = load_network(
        root.join("data/hapt-cnn.json"),
        root.join("data/hapt-cnn.safetensors"),
    )?;
    let hapt = HaptConfig::new().load(root.join("data/hapt-activities.safetensors"))?;
    let accuracy = |n: &Network, data| -> shears::Result<f64> {
        Ok(evaluate(n, data, Loss::CrossEntropy, 512)?
            .accuracy
            .unwrap_or(0.0))
    };

    let mut net = dense.clone();
    let start = Instant::now();
    let curves = SensitivityAnalysis::new(GRID).run(&mut net, |n| accuracy(n, &hapt.test))?;
    println!(
        "analysis: {} layers x {} levels, test accuracy on {} windows at each point: {:.2} s",
        curves.curves.len(),
        GRID.len(),
        hapt.test.len(),
        start.elapsed().as_secs_f64()
    );
    let out = root.join("target/sensitivity");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("curves.csv"), curves.to_csv())?;
    std::fs::write(
        out.join("curves.json"),
        serde_json::to_string_pretty(&curves)?,
    )?;
    curves
        .chart("test accuracy")
        .save_svg(out.join("curves.svg"))?;
    println!("curves: {}", out.join("curves.csv").display());

    let rows: Vec<usize> = (0..hapt.train.len()).step_by(2).collect();
    let validation = hapt.train.select(&rows)?;
    let start = Instant::now();
    let sensitivity = SensitivityAnalysis::new(GRID).run(&mut net, |n| accuracy(n, &validation))?;
    let allocation = sensitivity.allocate(0.9, Budget::Params)?;
    println!(
        "allocation from {} validation windows ({:.2} s): {}",
        validation.len(),
        start.elapsed().as_secs_f64(),
        allocation
            .sparsities
            .iter()
            .map(|(n, s)| format!("{n} {:.1}%", 100.0 * s))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let candidates: [(&str, Box<dyn PruneStrategy>); 2] = [
        ("sensitivity-allocated 90%", Box::new(allocation.strategy())),
        (
            "uniform per-layer 90%",
            Box::new(WeightPruning::new(Amount::Sparsity(0.9))),
        ),
    ];
    println!("\n| pruning | one-shot | fine-tuned, seeds {SEEDS:?} | mean |");
    println!("|---|---|---|---|");
    for (name, strategy) in candidates {
        let plan = strategy.plan(&Context::for_network(&dense))?;
        let mut pruned = dense.clone();
        pruned.apply_masks(&plan.masks)?;
        let oneshot = accuracy(&pruned, &hapt.test)?;
        let mut finetuned = Vec::new();
        for seed in SEEDS {
            let mut n = pruned.clone();
            Trainer::new(Loss::CrossEntropy, Adam::new(2e-3))
                .epochs(3)
                .batch_size(64)
                .seed(seed)
                .masks(plan.masks.clone())
                .fit(&mut n, &hapt.train)?;
            finetuned.push(accuracy(&n, &hapt.test)?);
        }
        let mean = finetuned.iter().sum::<f64>() / finetuned.len() as f64;
        println!(
            "| {name} ({:.2}% sparse) | {:.2}% | {} | {:.2}% |",
            100.0 * plan.sparsity(),
            100.0 * oneshot,
            finetuned
                .iter()
                .map(|a| format!("{:.2}%", 100.0 * a))
                .collect::<Vec<_>>()
                .join(", "),
            100.0 * mean
        );
    }
    Ok(())
}
