//! The wearable benchmark's report: the dense model, then one row per strategy and setting.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::{Latency, ModelSize};

/// The dense (unpruned) model every row is compared with. JSON:
/// `{"accuracy", "params", "bytes", "flops", "latency_us"}`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct DenseBaseline {
    /// Test accuracy, in `[0, 1]`.
    pub accuracy: f64,
    /// Trainable parameters.
    pub params: usize,
    /// Stored bytes as `f32` ([`ModelSize::bytes_dense`]).
    pub bytes: usize,
    /// FLOPs per sample.
    pub flops: u64,
    /// Median single-sample latency, microseconds.
    pub latency_us: f64,
}

impl DenseBaseline {
    /// The baseline from the dense model's size, accuracy and latency.
    pub fn new(size: &ModelSize, accuracy: f64, latency: &Latency) -> Self {
        DenseBaseline {
            accuracy,
            params: size.params,
            bytes: size.bytes_dense,
            flops: size.flops_dense,
            latency_us: latency.median_us,
        }
    }
}

/// One pruned model. JSON: `{"strategy", "setting", "sparsity", "params_kept", "bytes_dense",
/// "bytes_compact", "bytes_csr", "flops", "accuracy_oneshot", "accuracy_finetuned",
/// "latency_us"}`, with `null` for what was not measured.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ReportRow {
    /// The strategy's name.
    pub strategy: String,
    /// Its setting, in words (`"global, 2:4"`, `"layer-wise 50%"`...).
    pub setting: String,
    /// Fraction of the targeted weights pruned.
    pub sparsity: f64,
    /// Trainable parameters kept and non-zero ([`ModelSize::nonzero`]).
    pub params_kept: usize,
    /// Stored bytes as dense `f32`, zeros included.
    pub bytes_dense: usize,
    /// Stored bytes after physically removing pruned channels and blocks, when done.
    pub bytes_compact: Option<usize>,
    /// Stored bytes with Linear and Conv weights as CSR, when measured.
    pub bytes_csr: Option<usize>,
    /// FLOPs per sample with pruned weights skipped ([`ModelSize::flops`]).
    pub flops: u64,
    /// Test accuracy right after pruning.
    pub accuracy_oneshot: f64,
    /// Test accuracy after fine-tuning, when fine-tuned.
    pub accuracy_finetuned: Option<f64>,
    /// Median single-sample latency, microseconds.
    pub latency_us: f64,
}

impl ReportRow {
    /// A row from the pruned model's size, its one-shot accuracy and its latency;
    /// `bytes_compact` and `accuracy_finetuned` start empty, to be set when measured.
    pub fn new(
        strategy: impl Into<String>,
        setting: impl Into<String>,
        sparsity: f64,
        size: &ModelSize,
        accuracy_oneshot: f64,
        latency: &Latency,
    ) -> Self {
        ReportRow {
            strategy: strategy.into(),
            setting: setting.into(),
            sparsity,
            params_kept: size.nonzero,
            bytes_dense: size.bytes_dense,
            bytes_compact: None,
            bytes_csr: size.bytes_csr,
            flops: size.flops,
            accuracy_oneshot,
            accuracy_finetuned: None,
            latency_us: latency.median_us,
        }
    }
}

/// The whole report: `{"dense": {...}, "rows": [...]}`.
///
/// ```
/// use shears::graph::Network;
/// use shears::report::{DenseBaseline, Latency, ModelSize, ReportRow, WearableReport};
///
/// let net = Network::builder(&[4]).linear("fc", 4, 2).build_init(0)?;
/// let size = ModelSize::of(&net, None)?;
/// let latency = Latency { median_us: 3.0, min_us: 2.5, max_us: 9.0, repetitions: 50 };
/// let mut report = WearableReport::new(DenseBaseline::new(&size, 0.91, &latency));
/// let mut row = ReportRow::new("weight", "global 50%", 0.5, &size, 0.90, &latency);
/// row.accuracy_finetuned = Some(0.905);
/// report.rows.push(row);
/// # #[cfg(feature = "serde")] {
/// let json = report.to_json()?;
/// assert!(json.contains("\"accuracy_finetuned\": 0.905"));
/// assert!(json.contains("\"bytes_compact\": null"));
/// # }
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct WearableReport {
    /// The dense model.
    pub dense: DenseBaseline,
    /// One row per strategy and setting.
    pub rows: Vec<ReportRow>,
}

impl WearableReport {
    /// A report with the dense baseline and no rows yet.
    pub fn new(dense: DenseBaseline) -> Self {
        WearableReport {
            dense,
            rows: Vec::new(),
        }
    }

    /// The report as pretty-printed JSON.
    ///
    /// # Errors
    /// [`crate::Error::InvalidParameter`] when a number cannot be written (JSON has no NaN or
    /// infinity).
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> crate::Result<String> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| crate::Error::invalid("wearable report", e.to_string()))?;
        // serde_json writes NaN and infinities as `null`, which would read back as a missing
        // value: refuse them instead.
        let finite = [self.dense.accuracy, self.dense.latency_us]
            .into_iter()
            .chain(self.rows.iter().flat_map(|r| {
                [r.sparsity, r.accuracy_oneshot, r.latency_us]
                    .into_iter()
                    .chain(r.accuracy_finetuned)
            }))
            .all(f64::is_finite);
        if finite {
            Ok(text)
        } else {
            Err(crate::Error::invalid(
                "wearable report",
                "a non-finite number cannot be written as JSON",
            ))
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    fn latency(us: f64) -> Latency {
        Latency {
            median_us: us,
            min_us: us,
            max_us: us,
            repetitions: 1,
        }
    }

    fn size() -> ModelSize {
        ModelSize {
            params: 100,
            buffers: 4,
            nonzero: 40,
            bytes_dense: 416,
            bytes_csr: Some(300),
            flops_dense: 1000,
            flops: 450,
            nodes: Vec::new(),
        }
    }

    #[test]
    fn json_has_the_issue_field_names_and_reads_back() {
        let mut report = WearableReport::new(DenseBaseline::new(&size(), 0.93, &latency(12.5)));
        report.rows.push(ReportRow::new(
            "activation",
            "wanda 60%",
            0.6,
            &size(),
            0.8,
            &latency(11.0),
        ));
        let json = report.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let keys = |v: &serde_json::Value| {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        assert_eq!(
            keys(&value["dense"]),
            ["accuracy", "bytes", "flops", "latency_us", "params"]
        );
        let mut want = [
            "strategy",
            "setting",
            "sparsity",
            "params_kept",
            "bytes_dense",
            "bytes_compact",
            "bytes_csr",
            "flops",
            "accuracy_oneshot",
            "accuracy_finetuned",
            "latency_us",
        ];
        want.sort();
        assert_eq!(keys(&value["rows"][0]), want);
        assert_eq!(value["dense"]["flops"], 1000);
        assert_eq!(value["rows"][0]["flops"], 450);
        assert_eq!(value["rows"][0]["params_kept"], 40);
        assert!(value["rows"][0]["accuracy_finetuned"].is_null());
        let back: WearableReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);

        report.rows[0].accuracy_finetuned = Some(f64::NAN);
        assert!(report.to_json().is_err());
    }
}
