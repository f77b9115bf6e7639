//! Trains the reference wearable model, a small 1-D CNN, on the HAPT activity windows with
//! shears alone, and saves it for the pruning examples.
//!
//! ```text
//! cargo run --release --example train_hapt [-- EPOCHS [SEED]]
//! ```
//!
//! Data: `data/hapt-activities.safetensors`, windows of 128 samples (2.56 s) with stride 64,
//! standardised per channel, split by subject (7,415 training and 2,996 test windows). Model:
//! conv1d(6→32, k5, p2) → ReLU → max pool 2 → conv1d(32→64, k5, p2) → ReLU → max pool 2 →
//! conv1d(64→64, k5, p2) → ReLU → global average pool → linear(64→64) → ReLU → linear(64→6),
//! 36,160 weights. Schedule: Adam (lr 2e-3), batches of 64, 15 epochs, seed 7. The same model and
//! schedule in PyTorch, for timing side by side: `python3 benches/train_hapt_pytorch.py`.
//!
//! Prints the loss and accuracy of every epoch (training and test) and its time, then writes
//! `data/hapt-cnn.safetensors` (the parameters; the metadata entry `training` holds a JSON object
//! with the test accuracy, the schedule, the labels and the input standardisation) and
//! `data/hapt-cnn.json` (the architecture). Fails if the test accuracy is below 91 %. Training is
//! deterministic: the same seed writes the same files, whatever the number of threads.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use shears::data::hapt::{HaptConfig, reference_cnn};
use shears::io::save_network;
use shears::train::{Adam, Event, Loss, Trainer, evaluate};

/// Accuracy the saved model must reach on the test subjects.
const REQUIRED_ACCURACY: f64 = 0.91;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let epochs: usize = args.next().map_or(Ok(15), |a| a.parse())?;
    let seed: u64 = args.next().map_or(Ok(7), |a| a.parse())?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));

    let start = Instant::now();
    let hapt = HaptConfig::new().load(root.join("data/hapt-activities.safetensors"))?;
    println!(
        "HAPT: {} training and {} test windows of {:?}, loaded in {:.2} s",
        hapt.train.len(),
        hapt.test.len(),
        hapt.train.sample_shape(),
        start.elapsed().as_secs_f64()
    );

    let mut net = reference_cnn().build_init(seed)?;
    let weights: usize = net
        .params()
        .iter()
        .filter(|(_, p)| p.ndim() > 1)
        .map(|(_, p)| p.len())
        .sum();
    println!(
        "model: {weights} weights, {} parameters, {:.2} MFLOPs per window",
        net.num_params(),
        net.flops() as f64 / 1e6
    );

    let mut trainer = Trainer::new(Loss::CrossEntropy, Adam::new(2e-3))
        .epochs(epochs)
        .batch_size(64)
        .seed(seed);
    println!("epoch  train loss  train acc  test loss  test acc  seconds");
    let mut training_seconds = 0.0;
    let terminal = std::io::stdout().is_terminal();
    let history = trainer.fit_with(&mut net, &hapt.train, Some(&hapt.test), |event| {
        match event {
            // A one-line progress indicator, overwritten by the epoch's summary.
            Event::Batch(b) if terminal && (b.batch % 10 == 0 || b.batch == b.batches) => {
                print!("\r{:>5}  batch {:>3}/{}", b.epoch, b.batch, b.batches);
                let _ = std::io::stdout().flush();
            }
            Event::Epoch(e) => {
                training_seconds += e.seconds;
                let test = e.validation.expect("a validation set was given");
                println!(
                    "{}{:>5}  {:>10.4}  {:>8.2}%  {:>9.4}  {:>7.2}%  {:>7.2}",
                    if terminal { "\r" } else { "" },
                    e.epoch,
                    e.loss,
                    100.0 * e.accuracy.unwrap_or(0.0),
                    test.loss,
                    100.0 * test.accuracy.unwrap_or(0.0),
                    e.seconds
                );
            }
            _ => {}
        }
    })?;
    let test = evaluate(&net, &hapt.test, Loss::CrossEntropy, 256)?;
    let accuracy = test.accuracy.unwrap_or(0.0);
    println!(
        "training: {:.1} s for {} epochs ({:.2} s per epoch); test accuracy {:.2}%",
        training_seconds,
        history.epochs.len(),
        training_seconds / history.epochs.len() as f64,
        100.0 * accuracy
    );
    if accuracy < REQUIRED_ACCURACY {
        return Err(format!(
            "test accuracy {:.2}% is below the required {:.0}%: not saved",
            100.0 * accuracy,
            100.0 * REQUIRED_ACCURACY
        )
        .into());
    }

    let model = root.join("data/hapt-cnn.safetensors");
    let spec = root.join("data/hapt-cnn.json");
    // One metadata entry holding a JSON object (keys sorted): the safetensors writer orders
    // several entries arbitrarily, and a rerun should write the same bytes.
    let training = serde_json::json!({
        "description": "1-D CNN for HAPT activity windows [6, 128], trained by examples/train_hapt.rs",
        "labels": hapt.labels,
        "test_accuracy": (accuracy * 1e4).round() / 1e4,
        "epochs": history.epochs.len(),
        "seed": seed,
        "schedule": "adam lr=2e-3, batch 64, cross-entropy",
        "standardization": {
            "mean": hapt.standardization.mean,
            "std": hapt.standardization.std,
        },
    });
    let metadata = HashMap::from([("training".to_string(), training.to_string())]);
    save_network(&net, &spec, &model, Some(metadata))?;
    println!("saved {} and {}", model.display(), spec.display());
    Ok(())
}
