//! The wearable demo: the bundled HAPT activity model pruned by each strategy of shears, fine-tuned,
//! and measured for size, FLOPs, accuracy and latency.
//!
//! ```text
//! cargo run --release --example wearable [-- --quick]
//! ```
//!
//! Loads `data/hapt-cnn.{json,safetensors}` (a 1-D CNN trained by `examples/train_hapt.rs`) and the
//! HAPT windows, evaluates the dense model, then runs every strategy family at representative
//! settings, fine-tunes each pruned model with its masks held, prints one table, and writes
//! `target/wearable/report.json` and the chart `target/wearable/accuracy.svg`. Everything is
//! seeded: two runs give the same accuracies (latencies are measured, so they vary).

mod activation;
mod layer_difference;
mod sensitivity;
mod structure;
mod weight;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use shears::data::hapt::{Hapt, HaptConfig};
use shears::io::{load_network, write_text};
use shears::report::{DenseBaseline, Latency, ModelSize, ReportRow, WearableReport};
use shears::train::{Adam, Loss, Trainer, evaluate};
use shears::{MaskSet, Network};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A strategy family: the report rows of its representative settings.
type Family = fn(&Setup) -> Result<Vec<ReportRow>>;

/// Fine-tuning after pruning: Adam at a tenth of the training rate, batches of 64.
const FINE_TUNE_EPOCHS: usize = 3;
const FINE_TUNE_LR: f64 = 2e-3;
/// Single-window latency: warm-up runs, then the median of this many. With 20 warm-ups the
/// first model measured (the dense one) often ran a third slower than the same shapes later.
const LATENCY_WARMUP: usize = 200;
const LATENCY_REPETITIONS: usize = 201;

/// What every strategy family starts from.
pub struct Setup {
    /// The dense reference model.
    pub net: Network,
    /// The HAPT windows.
    pub hapt: Hapt,
    /// Fewer settings and fewer epochs, for a one-minute run.
    pub quick: bool,
    /// The progress bar (drawn on a terminal only).
    pub progress: ProgressBar,
}

impl Setup {
    /// Test accuracy of `net`.
    pub fn accuracy(&self, net: &Network) -> Result<f64> {
        Ok(evaluate(net, &self.hapt.test, Loss::CrossEntropy, 512)?
            .accuracy
            .unwrap_or(0.0))
    }

    /// Median single-window latency of `net`.
    pub fn latency(&self, net: &Network) -> Result<Latency> {
        let window = self.hapt.test.batch_inputs(0, 1);
        let window = window.index_axis(ndarray::Axis(0), 0);
        Ok(Latency::measure(
            net,
            window,
            LATENCY_WARMUP,
            LATENCY_REPETITIONS,
        )?)
    }

    /// Fine-tunes `net` in place, holding `masks` (pruned weights stay exactly zero).
    pub fn fine_tune(
        &self,
        net: &mut Network,
        masks: Option<&MaskSet>,
        epochs: usize,
    ) -> Result<()> {
        let mut trainer = Trainer::new(Loss::CrossEntropy, Adam::new(FINE_TUNE_LR))
            .epochs(epochs)
            .batch_size(64)
            .seed(11);
        if let Some(masks) = masks {
            trainer = trainer.masks(masks.clone());
        }
        trainer.fit(net, &self.hapt.train)?;
        Ok(())
    }

    /// A report row for a pruned model: measures it one-shot, fine-tunes it for the standard
    /// number of epochs holding its masks, and measures it again.
    pub fn row(
        &self,
        strategy: &str,
        setting: impl Into<String>,
        sparsity: f64,
        mut pruned: Network,
        masks: Option<&MaskSet>,
    ) -> Result<ReportRow> {
        let oneshot = self.accuracy(&pruned)?;
        self.fine_tune(&mut pruned, masks, self.fine_tune_epochs())?;
        let size = ModelSize::of(&pruned, masks)?;
        let mut row = ReportRow::new(
            strategy,
            setting,
            sparsity,
            &size,
            oneshot,
            &self.latency(&pruned)?,
        );
        row.accuracy_finetuned = Some(self.accuracy(&pruned)?);
        Ok(row)
    }

    /// Prints a line of the families' own findings without tearing the progress bar.
    pub fn say(&self, line: impl std::fmt::Display) {
        self.progress.suspend(|| println!("{line}"));
    }

    /// Epochs of fine-tuning per row.
    pub fn fine_tune_epochs(&self) -> usize {
        if self.quick { 1 } else { FINE_TUNE_EPOCHS }
    }
}

/// The strategy families, in report order.
const FAMILIES: [(&str, Family); 6] = [
    ("weight", weight::rows),
    ("2:4", activation::rows_2_4),
    ("sensitivity", sensitivity::rows),
    ("activation", activation::rows),
    ("structure-sensitivity", structure::rows),
    ("layer-difference", layer_difference::rows),
];

fn main() -> Result<()> {
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    let started = Instant::now();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let setup = Setup {
        net: load_network(
            root.join("data/hapt-cnn.json"),
            root.join("data/hapt-cnn.safetensors"),
        )?,
        hapt: HaptConfig::new().load(root.join("data/hapt-activities.safetensors"))?,
        quick,
        // On a terminal only: indicatif hides the bar when stderr is not one.
        progress: ProgressBar::new(FAMILIES.len() as u64).with_style(ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        )?),
    };

    let dense_size = ModelSize::of(&setup.net, None)?;
    let dense = DenseBaseline::new(
        &dense_size,
        setup.accuracy(&setup.net)?,
        &setup.latency(&setup.net)?,
    );
    let mut report = WearableReport::new(dense);

    let progress = &setup.progress;
    progress.enable_steady_tick(Duration::from_millis(200));
    for (name, rows) in FAMILIES {
        progress.set_message(format!("{name}: pruning, fine-tuning, measuring"));
        report.rows.extend(rows(&setup)?);
        progress.inc(1);
    }
    progress.finish_and_clear();

    println!("{report}");
    let out = root.join("target/wearable");
    std::fs::create_dir_all(&out)?;
    let json = out.join("report.json");
    write_text(&json, &report.to_json()?)?;
    let chart = out.join("accuracy.svg");
    report.accuracy_chart().save_svg(&chart)?;
    println!("report: {}", json.display());
    println!("chart:  {}", chart.display());
    println!(
        "{} rows in {:.0} s{}",
        report.rows.len(),
        started.elapsed().as_secs_f64(),
        if quick { " (--quick)" } else { "" }
    );
    Ok(())
}
