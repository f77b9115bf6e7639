//! Reports: what a checkpoint holds and what pruning did to it, and what a network costs to
//! store and run. Reports read; they never change anything.
//!
//! - [`CheckpointSummary`], [`PruneSummary`]: tensors, zeros and sparsity of files and runs.
//! - [`ModelSize`]: parameters, non-zeros, bytes (dense and, with the `sparse` feature, CSR) and
//!   FLOPs of a [`Network`](crate::Network), with or without masks; `csr_weights` (feature `sparse`) exports the
//!   pruned weights as `sprs` CSR matrices.
//! - [`Latency`]: median single-sample inference time.
//! - [`StructureReport`]: parameters, FLOPs and bytes before and after compaction, per node.
//! - [`WearableReport`]: the wearable benchmark's JSON report.
//! - `LineChart` (feature `plot`): line charts with labelled axes and a legend, as SVG.

#[cfg(feature = "plot")]
mod chart;
mod latency;
mod size;
#[cfg(feature = "sparse")]
mod sparse;
mod structure;
mod wearable;

use std::fmt;

use safetensors::Dtype;

use crate::error::Result;
use crate::io::{SafetensorsFile, TensorEntry};
use crate::mask::TensorSparsity;

#[cfg(feature = "plot")]
pub use chart::{LineChart, Series};
pub use latency::Latency;
pub use size::{ModelSize, NodeSize};
#[cfg(feature = "sparse")]
pub use sparse::{csr_bytes, csr_weights};
pub use structure::{Change, NodeChange, StructureReport};
pub use wearable::{DenseBaseline, ReportRow, WearableReport};

/// One tensor of a checkpoint: its size and how many of its elements are zero.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TensorSummary {
    /// The tensor's name.
    pub name: String,
    /// Its dtype, as safetensors spells it (`F32`, `BF16`, `I64`...).
    pub dtype: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Number of elements.
    pub params: usize,
    /// Elements equal to zero (`-0.0` included); `None` for sub-byte dtypes, which are not
    /// counted.
    pub zeros: Option<usize>,
}

impl TensorSummary {
    /// Fraction of elements that are zero, when counted.
    pub fn sparsity(&self) -> Option<f64> {
        self.zeros.map(|z| fraction(z, self.params))
    }
}

/// Every tensor of a checkpoint, in file order, with totals.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CheckpointSummary {
    /// The tensors.
    pub tensors: Vec<TensorSummary>,
    /// Elements over all tensors.
    pub params: usize,
    /// Zero elements over all counted tensors.
    pub zeros: usize,
    /// `zeros / params` over the counted tensors.
    pub sparsity: f64,
}

impl CheckpointSummary {
    /// Reads every tensor of `file`, one at a time, and counts its zeros. `progress` is called
    /// after each tensor with its name.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when a tensor cannot be read.
    pub fn of_file(file: &SafetensorsFile, mut progress: impl FnMut(&str)) -> Result<Self> {
        let mut tensors = Vec::with_capacity(file.tensors().len());
        for entry in file.tensors() {
            let zeros = count_zeros(entry, &file.read_bytes(entry.name())?);
            tensors.push(TensorSummary {
                name: entry.name().to_string(),
                dtype: entry.dtype().to_string(),
                shape: entry.shape().to_vec(),
                params: entry.len(),
                zeros,
            });
            progress(entry.name());
        }
        let counted = tensors.iter().filter(|t| t.zeros.is_some());
        let counted_params: usize = counted.clone().map(|t| t.params).sum();
        let zeros: usize = counted.filter_map(|t| t.zeros).sum();
        Ok(CheckpointSummary {
            params: tensors.iter().map(|t| t.params).sum(),
            zeros,
            sparsity: fraction(zeros, counted_params),
            tensors,
        })
    }
}

impl fmt::Display for CheckpointSummary {
    /// A table: name, dtype, shape, parameters, zeros, sparsity, and a total line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 6]> = self
            .tensors
            .iter()
            .map(|t| {
                [
                    t.name.clone(),
                    t.dtype.clone(),
                    format!("{:?}", t.shape),
                    t.params.to_string(),
                    t.zeros.map_or("-".into(), |z| z.to_string()),
                    t.sparsity().map_or("-".into(), percent),
                ]
            })
            .collect();
        let total = [
            format!("total ({} tensors)", self.tensors.len()),
            String::new(),
            String::new(),
            self.params.to_string(),
            self.zeros.to_string(),
            percent(self.sparsity),
        ];
        let header = ["name", "dtype", "shape", "params", "zeros", "sparsity"].map(String::from);
        write_table(f, &header, &rows, &total)
    }
}

/// What a pruning run did: per-tensor and total sparsity of the pruned tensors.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PruneSummary {
    /// The pruned tensors.
    pub tensors: Vec<TensorSparsity>,
    /// Elements of the pruned tensors.
    pub total: usize,
    /// Elements kept.
    pub kept: usize,
    /// Fraction pruned over the pruned tensors.
    pub sparsity: f64,
    /// Wall-clock time of the run, in seconds.
    pub seconds: f64,
}

impl PruneSummary {
    /// Totals over `tensors`.
    pub fn new(tensors: Vec<TensorSparsity>, seconds: f64) -> Self {
        let total = tensors.iter().map(|t| t.total).sum();
        let kept = tensors.iter().map(|t| t.kept).sum();
        PruneSummary {
            tensors,
            total,
            kept,
            sparsity: fraction(total - kept, total),
            seconds,
        }
    }
}

impl fmt::Display for PruneSummary {
    /// A table: name, parameters, kept, sparsity, a total line and the time taken.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<[String; 4]> = self
            .tensors
            .iter()
            .map(|t| {
                [
                    t.name.clone(),
                    t.total.to_string(),
                    t.kept.to_string(),
                    percent(t.sparsity),
                ]
            })
            .collect();
        let total = [
            format!("total ({} tensors)", self.tensors.len()),
            self.total.to_string(),
            self.kept.to_string(),
            percent(self.sparsity),
        ];
        let header = ["name", "params", "kept", "sparsity"].map(String::from);
        write_table(f, &header, &rows, &total)?;
        writeln!(f, "time: {:.3} s", self.seconds)
    }
}

/// Elements equal to zero, ignoring the sign bit of floats; `None` for sub-byte dtypes.
fn count_zeros(entry: &TensorEntry, bytes: &[u8]) -> Option<usize> {
    let bits = entry.dtype().bitsize();
    if !bits.is_multiple_of(8) || bits == 0 {
        return None;
    }
    let width = bits / 8;
    let is_float = matches!(
        entry.dtype(),
        Dtype::F16
            | Dtype::BF16
            | Dtype::F32
            | Dtype::F64
            | Dtype::F8_E4M3
            | Dtype::F8_E5M2
            | Dtype::F8_E4M3FNUZ
            | Dtype::F8_E5M2FNUZ
    );
    Some(
        bytes
            .chunks_exact(width)
            .filter(|b| {
                // Little-endian: the sign bit is the top bit of the last byte.
                let (last, rest) = b.split_last().expect("width >= 1");
                let last = if is_float { last & 0x7f } else { *last };
                last == 0 && rest.iter().all(|&x| x == 0)
            })
            .count(),
    )
}

fn fraction(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn percent(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// Left-aligned first column, right-aligned others, a rule under the header and above the total.
fn write_table<const N: usize>(
    f: &mut fmt::Formatter<'_>,
    header: &[String; N],
    rows: &[[String; N]],
    total: &[String; N],
) -> fmt::Result {
    let mut widths = [0; N];
    for row in std::iter::once(header)
        .chain(rows)
        .chain(std::iter::once(total))
    {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |f: &mut fmt::Formatter<'_>, row: &[String; N]| {
        for (i, (cell, &w)) in row.iter().zip(&widths).enumerate() {
            if i == 0 {
                write!(f, "{cell:<w$}")?;
            } else {
                write!(f, "  {cell:>w$}")?;
            }
        }
        writeln!(f)
    };
    let rule = "-".repeat(widths.iter().sum::<usize>() + 2 * (N - 1));
    line(f, header)?;
    writeln!(f, "{rule}")?;
    for row in rows {
        line(f, row)?;
    }
    writeln!(f, "{rule}")?;
    line(f, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::save_tensors;
    use ndarray::array;

    #[test]
    fn counts_zeros_of_every_dtype_including_negative_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let w = array![[0.0_f32, -0.0, 1.0], [2.0, 0.0, -3.0]].into_dyn();
        save_tensors(
            &path,
            [
                ("a", w.view(), Dtype::F32),
                ("b", w.view(), Dtype::F16),
                ("c", w.view(), Dtype::BF16),
                ("d", w.view(), Dtype::F64),
            ],
            None,
        )
        .unwrap();
        let file = SafetensorsFile::open(&path).unwrap();
        let mut seen = Vec::new();
        let summary = CheckpointSummary::of_file(&file, |n| seen.push(n.to_string())).unwrap();
        assert_eq!(seen.len(), 4);
        for t in &summary.tensors {
            assert_eq!((t.params, t.zeros), (6, Some(3)), "{}", t.name);
        }
        assert_eq!((summary.params, summary.zeros), (24, 12));
        assert_eq!(summary.sparsity, 0.5);
        let table = summary.to_string();
        assert!(table.contains("total (4 tensors)"), "{table}");
        assert!(table.contains("50.00%"), "{table}");
    }

    #[test]
    fn prune_summary_totals() {
        let t = |name: &str, total, kept| TensorSparsity {
            name: name.into(),
            total,
            kept,
            sparsity: fraction(total - kept, total),
        };
        let s = PruneSummary::new(vec![t("a", 10, 5), t("b", 30, 5)], 0.25);
        assert_eq!((s.total, s.kept), (40, 10));
        assert_eq!(s.sparsity, 0.75);
        assert!(s.to_string().contains("time: 0.250 s"));
    }
}
