//! The wearable benchmark's report: the dense model, then one row per strategy and setting.

use std::fmt;

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

/// The report as a plain-text table, one line per row after the dense model: what the wearable
/// demo prints.
impl fmt::Display for WearableReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = |x: f64| format!("{:.2}", 100.0 * x);
        let bytes = |b: Option<usize>| b.map_or_else(|| "-".to_owned(), kib);
        writeln!(
            f,
            "{:<22} {:<34} {:>8} {:>8} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8}",
            "strategy",
            "setting",
            "sparsity",
            "params",
            "dense",
            "compact",
            "CSR",
            "MFLOPs",
            "one-shot",
            "tuned",
            "µs"
        )?;
        let d = &self.dense;
        writeln!(
            f,
            "{:<22} {:<34} {:>7}% {:>8} {:>9} {:>9} {:>9} {:>8.3} {:>7}% {:>7}% {:>8.1}",
            "dense",
            "",
            percent(0.0),
            d.params,
            kib(d.bytes),
            "-",
            "-",
            d.flops as f64 / 1e6,
            percent(d.accuracy),
            percent(d.accuracy),
            d.latency_us
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<22} {:<34} {:>7}% {:>8} {:>9} {:>9} {:>9} {:>8.3} {:>7}% {:>7}% {:>8.1}",
                r.strategy,
                r.setting,
                percent(r.sparsity),
                r.params_kept,
                kib(r.bytes_dense),
                bytes(r.bytes_compact),
                bytes(r.bytes_csr),
                r.flops as f64 / 1e6,
                percent(r.accuracy_oneshot),
                r.accuracy_finetuned.map_or_else(|| "-".to_owned(), percent),
                r.latency_us
            )?;
        }
        write!(
            f,
            "(bytes in KiB: dense f32 with zeros, compacted, weights as CSR; accuracy in % of the \
             test windows; µs = median latency per window)"
        )
    }
}

/// Bytes as KiB with one decimal.
fn kib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / 1024.0)
}

#[cfg(feature = "plot")]
impl WearableReport {
    /// Test accuracy (after fine-tuning where measured, else one-shot) against the fraction of
    /// the dense model's parameters removed (`1 − params_kept / params`), one line per strategy
    /// in the order strategies first appear, the dense model as a point at 0. The horizontal
    /// axis is the same quantity for every strategy, unlike each row's `sparsity` (a fraction of
    /// the weights, filters or parameters its strategy targets).
    pub fn accuracy_chart(&self) -> super::LineChart {
        let mut chart = super::LineChart::new("HAPT test accuracy against parameters removed")
            .axes(
                "parameters removed (fraction of the dense model's)",
                "test accuracy (%)",
            )
            .series("dense", vec![(0.0, 100.0 * self.dense.accuracy)]);
        let dense = self.dense.params.max(1) as f64;
        for row in &self.rows {
            let point = (
                1.0 - row.params_kept as f64 / dense,
                100.0 * row.accuracy_finetuned.unwrap_or(row.accuracy_oneshot),
            );
            match chart.series.iter_mut().find(|s| s.name == row.strategy) {
                Some(series) => series.points.push(point),
                None => chart = chart.series(row.strategy.clone(), vec![point]),
            }
        }
        for series in &mut chart.series {
            series.points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        chart
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

    fn report() -> WearableReport {
        let mut report = WearableReport::new(DenseBaseline::new(&size(), 0.93, &latency(12.5)));
        for (strategy, sparsity, kept, tuned) in
            [("weight", 0.9, 10, 0.91), ("weight", 0.5, 50, 0.92)]
        {
            let mut row = ReportRow::new(strategy, "s", sparsity, &size(), 0.8, &latency(11.0));
            row.params_kept = kept;
            row.accuracy_finetuned = Some(tuned);
            report.rows.push(row);
        }
        report.rows.push(ReportRow::new(
            "2:4",
            "n:m",
            0.5,
            &size(),
            0.85,
            &latency(9.0),
        ));
        report
    }

    #[test]
    fn table_has_a_line_per_row_and_marks_what_was_not_measured() {
        let table = report().to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 1 + 1 + 3 + 1, "{table}");
        assert!(lines[1].starts_with("dense") && lines[1].contains("93.00%"));
        // 2:4 was not fine-tuned and not compacted: dashes, not zeros.
        let last = lines[4];
        assert!(last.starts_with("2:4") && last.contains("85.00%"), "{last}");
        assert!(last.contains(" - ") && last.ends_with("9.0"), "{last}");
        // CSR bytes of 300 are 0.3 KiB.
        assert!(lines[2].contains("0.3"), "{}", lines[2]);
    }

    #[cfg(feature = "plot")]
    #[test]
    fn chart_has_a_sorted_line_per_strategy_after_the_dense_point() {
        let chart = report().accuracy_chart();
        let names: Vec<&str> = chart.series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["dense", "weight", "2:4"]);
        // x: parameters removed out of the dense model's 100.
        assert_eq!(chart.series[1].points, [(0.5, 92.0), (0.9, 91.0)]);
        // Not fine-tuned: the one-shot accuracy is drawn; 40 of 100 parameters kept.
        assert_eq!(chart.series[2].points, [(0.6, 85.0)]);
        assert!(chart.to_svg().unwrap().contains("test accuracy (%)"));
    }
}
