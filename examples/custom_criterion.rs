//! A custom pruning criterion in a few lines, benchmarked against built-in ones with the same
//! pruner on the HAPT activity model.
//!
//! ```text
//! cargo run --release --example custom_criterion
//! ```
//!
//! The criterion, *row-normalised magnitude*, scores each weight by `|w_ij| / mean_k |w_ik|`:
//! its magnitude relative to the other weights of the same output unit (neuron or filter). Ranked
//! globally, it prunes every unit in proportion instead of emptying the units whose weights are
//! small overall. Every candidate runs through the same [`Pruner`]: one-shot 90 % and 95 %, and
//! AGP to 95 % in 3 steps, each with 3 epochs of Adam fine-tuning in all, then prints test
//! accuracy and time.
//!
//! The candidates are a list: adding one is one more entry in `candidates()`. Wanda is there as
//! the data-aware reference: each step calibrates on the network as pruned so far and prunes
//! each output row to the step's target.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ndarray::{ArrayD, ArrayViewD, Axis};
use shears::data::Dataset;
use shears::data::hapt::HaptConfig;
use shears::io::load_network;
use shears::schedule::{Pruner, Schedule, Step};
use shears::strategy::{
    Context, Criterion, ElementScore, PruneStrategy, Scope, Wanda, WeightPruning,
};
use shears::train::{Adam, Loss, Trainer, evaluate};
use shears::{Amount, Network};

/// The new criterion: `|w_ij| / mean_k |w_ik|`, each output row against its own scale.
#[derive(Debug)]
struct RowNormalised;

impl ElementScore for RowNormalised {
    fn name(&self) -> &str {
        "row-normalised magnitude"
    }

    fn score(
        &self,
        _: &str,
        w: ArrayViewD<'_, f32>,
        _: &Context<'_>,
    ) -> shears::Result<ArrayD<f32>> {
        let mut s = w.mapv(f32::abs);
        for mut row in s.axis_iter_mut(Axis(0)) {
            let mean = row.mean().unwrap_or(0.0).max(f32::MIN_POSITIVE);
            row.mapv_inplace(|v| v / mean);
        }
        Ok(s)
    }
}

/// Makes a step's strategy, given the step (its absolute target) and the network as it is.
type Factory = Box<dyn Fn(&Step, &Network) -> shears::Result<Box<dyn PruneStrategy>>>;

/// Global pruning to the step's target by `criterion`.
fn global(criterion: Criterion) -> Factory {
    Box::new(move |step, _| {
        Ok(Box::new(
            WeightPruning::new(Amount::Target(step.target))
                .scope(Scope::Global)
                .criterion(criterion.clone()),
        ))
    })
}

/// Wanda per output row to the step's target, calibrated on 1,024 windows through the network
/// as pruned so far.
fn wanda(calibration: Arc<Dataset>) -> Factory {
    Box::new(move |step, net| {
        let stats = Wanda::calibration()
            .max_samples(1024)
            .run(net, &calibration)?;
        Ok(Box::new(
            Wanda::new(Amount::Target(step.target)).with_stats(stats),
        ))
    })
}

/// The candidates, benchmarked in this order.
fn candidates(calibration: Arc<Dataset>) -> Vec<(&'static str, Factory)> {
    vec![
        ("magnitude", global(Criterion::Magnitude)),
        ("Wanda (per row)", wanda(calibration)),
        (
            "row-normalised (custom)",
            global(Criterion::custom(RowNormalised)),
        ),
        ("random", global(Criterion::Random { seed: 5 })),
    ]
}

const FINE_TUNE_EPOCHS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dense = load_network(
        root.join("data/hapt-cnn.json"),
        root.join("data/hapt-cnn.safetensors"),
    )?;
    let hapt = HaptConfig::new().load(root.join("data/hapt-activities.safetensors"))?;
    let accuracy = |n: &Network| -> shears::Result<f64> {
        Ok(evaluate(n, &hapt.test, Loss::CrossEntropy, 512)?
            .accuracy
            .unwrap_or(0.0))
    };
    println!("dense: test accuracy {:.2}%", 100.0 * accuracy(&dense)?);
    let schedules = [
        ("one-shot 90%", Schedule::one_shot(0.9)),
        ("one-shot 95%", Schedule::one_shot(0.95)),
        ("AGP 95%, 3 steps", Schedule::agp(0.95, 3)),
    ];
    println!(
        "\n| criterion | schedule | sparsity | pruned (last step, before its fine-tuning) | fine-tuned | plan ms | run s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (name, factory) in candidates(Arc::new(hapt.train.clone())) {
        for (label, schedule) in schedules {
            // The time to score and select, on the dense model at the final target.
            let final_step = Step {
                index: 1,
                steps: 1,
                target: schedule.target(),
                epochs: 0,
            };
            let start = Instant::now();
            factory(&final_step, &dense)?.plan(&Context::for_network(&dense))?;
            let plan_ms = 1e3 * start.elapsed().as_secs_f64();

            let mut net = dense.clone();
            let start = Instant::now();
            let trainer = Trainer::new(Loss::CrossEntropy, Adam::new(2e-3))
                .batch_size(64)
                .seed(11);
            let run = Pruner::new(schedule)
                .fine_tune(trainer, &hapt.train, FINE_TUNE_EPOCHS)
                .evaluate(accuracy)
                .run(&mut net, &factory)?;
            let seconds = start.elapsed().as_secs_f64();
            let last = run.last().expect("one step at least");
            println!(
                "| {name} | {label} | {:.2}% | {:.2}% | {:.2}% | {plan_ms:.2} | {seconds:.1} |",
                100.0 * run.masks.sparsity(),
                100.0 * last.metric_pruned.unwrap_or(f64::NAN),
                100.0 * last.metric().unwrap_or(f64::NAN),
            );
        }
    }
    Ok(())
}
