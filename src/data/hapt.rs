//! The HAPT activity data: real smartphone IMU recordings cut into windows for a small
//! activity classifier, the wearable workload shears was started for.
//!
//! The file (`data/hapt-activities.safetensors` in the repository, described in its
//! `data/README.md`) holds the activity segments of the UCI HAPT data set (Reyes-Ortiz, Oneto,
//! Samà, Parra, Anguita, *Transition-Aware Human Activity Recognition Using Smartphones*,
//! Neurocomputing 171 (2016) 754–767; CC BY 4.0): `signals` `[samples, 6]` at 50 Hz
//! (accelerometer x/y/z in g, gyroscope x/y/z in rad/s) and `segments` `I32` `[segments, 4]`
//! (`offset`, `length`, `label`, `subject`).
//!
//! [`HaptConfig::load`] turns it into training and test [`Dataset`]s:
//!
//! 1. **Windows.** Each segment of length `L` gives `⌊(L − window) / stride⌋ + 1` windows (none
//!    when `L < window`), starting at the segment's offset plus multiples of the stride: a window
//!    never crosses a segment, so it never mixes activities or subjects. A window is stored
//!    channel-first, `[6, window]`, and labelled with its segment's label.
//! 2. **Split by subject.** Windows of the test subjects go to the test set, all others to the
//!    training set. The subjects are the file's `test_subjects` metadata, or
//!    [`DEFAULT_TEST_SUBJECTS`] (the data set's standard split) when the file has none.
//! 3. **Standardisation.** Per channel, `x' = (x − mean) / std`, with `mean` and the population
//!    standard deviation (divisor `n`, as scikit-learn's `StandardScaler`) computed in `f64`
//!    over every sample of the training subjects' segments, each sample counted once (windows
//!    overlap; their samples are not counted twice). The same [`Standardization`] is applied to
//!    both splits, so nothing of the test subjects leaks into training.
//!
//! With the defaults (windows of 128, stride 64) the file gives 7,415 training and 2,996 test
//! windows.
//!
//! ```
//! use shears::data::{Targets, hapt::HaptConfig};
//!
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/hapt-activities.safetensors");
//! let hapt = HaptConfig::new().load(path)?;
//! assert_eq!((hapt.train.len(), hapt.test.len()), (7415, 2996));
//! assert_eq!(hapt.train.sample_shape(), &[6, 128]);
//! assert_eq!(hapt.labels[5], "laying");
//! let Targets::Classes(classes) = hapt.train.targets() else { unreachable!() };
//! assert!(classes.iter().all(|&c| c < 6));
//! # Ok::<(), shears::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use ndarray::{ArrayD, ArrayViewMutD, Axis, IxDyn};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::graph::{Conv1d, Network, NetworkBuilder};
use crate::io::{Dtype, SafetensorsFile};

/// The data set's standard test subjects, used when the file's metadata names none.
pub const DEFAULT_TEST_SUBJECTS: [u32; 9] = [2, 4, 9, 10, 12, 13, 18, 20, 24];

/// Activity names for labels 0..5, used when the file's metadata names none.
pub const DEFAULT_LABELS: [&str; 6] = [
    "walking",
    "walking_upstairs",
    "walking_downstairs",
    "sitting",
    "standing",
    "laying",
];

/// Channel names, used when the file's metadata names none.
pub const DEFAULT_CHANNELS: [&str; 6] = [
    "acc_x_g",
    "acc_y_g",
    "acc_z_g",
    "gyro_x_rad_s",
    "gyro_y_rad_s",
    "gyro_z_rad_s",
];

/// Number of signal channels.
pub const CHANNELS: usize = 6;

/// How to cut and split the file. The defaults are the usual HAR setting: windows of 128 samples
/// (2.56 s at 50 Hz) with 50 % overlap, test subjects from the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaptConfig {
    window: usize,
    stride: usize,
    test_subjects: Option<Vec<u32>>,
}

/// The reference activity model's architecture: a 1-D CNN for windows `[6, 128]` and the six
/// activities, 36,160 weights. `examples/train_hapt.rs` trains it into `data/hapt-cnn.*`.
///
/// conv1d(6→32, k5, p2) → ReLU → max pool 2 → conv1d(32→64, k5, p2) → ReLU → max pool 2 →
/// conv1d(64→64, k5, p2) → ReLU → global average pool → linear(64→64) → ReLU → linear(64→6).
///
/// ```
/// let net = shears::data::hapt::reference_cnn().build_init(0)?;
/// assert_eq!(net.output_shapes().last().unwrap(), &[6]);
/// # Ok::<(), shears::Error>(())
/// ```
pub fn reference_cnn() -> NetworkBuilder {
    Network::builder(&[CHANNELS, 128])
        .conv1d("conv1", Conv1d::new(6, 32, 5).padding(2))
        .relu("relu1")
        .max_pool1d("pool1", 2)
        .conv1d("conv2", Conv1d::new(32, 64, 5).padding(2))
        .relu("relu2")
        .max_pool1d("pool2", 2)
        .conv1d("conv3", Conv1d::new(64, 64, 5).padding(2))
        .relu("relu3")
        .global_avg_pool("gap")
        .linear("fc1", 64, 64)
        .relu("relu4")
        .linear("fc2", 64, 6)
}

impl Default for HaptConfig {
    fn default() -> Self {
        HaptConfig {
            window: 128,
            stride: 64,
            test_subjects: None,
        }
    }
}

/// Where a window came from, so that splits and windows can be checked and traced back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct WindowSource {
    /// Row of `segments` the window was cut from.
    pub segment: usize,
    /// Row of `signals` where the window starts.
    pub start: usize,
    /// The recorded subject (1..30 in HAPT).
    pub subject: u32,
}

/// Per-channel standardisation `x' = (x − mean) / std`, as fitted on the training subjects. Kept
/// so that new recordings can be fed to a trained model the same way.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Standardization {
    /// Mean of each channel.
    pub mean: Vec<f32>,
    /// Population standard deviation of each channel (positive).
    pub std: Vec<f32>,
}

impl Standardization {
    /// Standardises `x` in place along its channel axis, axis 1 of a batch `[n, channels, ...]`,
    /// computing `(x − mean) / std` in `f32`.
    ///
    /// ```
    /// use ndarray::array;
    /// use shears::data::hapt::Standardization;
    ///
    /// let s = Standardization { mean: vec![1.0, 0.0], std: vec![2.0, 0.5] };
    /// let mut x = array![[[3.0_f32, 1.0], [1.0, -1.0]]].into_dyn();
    /// s.apply(&mut x.view_mut())?;
    /// assert_eq!(x, array![[[1.0_f32, 0.0], [2.0, -2.0]]].into_dyn());
    /// # Ok::<(), shears::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `x` has no axis 1 of the standardisation's channel count.
    pub fn apply(&self, x: &mut ArrayViewMutD<'_, f32>) -> Result<()> {
        let channels = self.mean.len();
        if x.ndim() < 2 || x.shape()[1] != channels || self.std.len() != channels {
            return Err(Error::ShapeMismatch {
                name: "standardised batch".into(),
                expected: vec![x.shape().first().copied().unwrap_or(0), channels],
                got: x.shape().to_vec(),
            });
        }
        for mut sample in x.axis_iter_mut(Axis(0)) {
            for ((mut channel, &mean), &std) in
                sample.axis_iter_mut(Axis(0)).zip(&self.mean).zip(&self.std)
            {
                channel.mapv_inplace(|v| (v - mean) / std);
            }
        }
        Ok(())
    }
}

/// The windowed, split and standardised HAPT data.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Hapt {
    /// Training windows `[n, 6, window]` of the training subjects, with class labels.
    pub train: Dataset,
    /// Test windows `[n, 6, window]` of the test subjects, with class labels.
    pub test: Dataset,
    /// Where each training window came from, in dataset order.
    pub train_sources: Vec<WindowSource>,
    /// Where each test window came from, in dataset order.
    pub test_sources: Vec<WindowSource>,
    /// Activity name of each label.
    pub labels: Vec<String>,
    /// Name of each channel.
    pub channels: Vec<String>,
    /// The subjects whose windows form the test set.
    pub test_subjects: Vec<u32>,
    /// The standardisation applied to both splits.
    pub standardization: Standardization,
}

impl HaptConfig {
    /// The defaults: windows of 128 samples, stride 64, test subjects from the file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the window length in samples.
    pub fn window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// Sets the step between the starts of consecutive windows of a segment.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Uses these test subjects instead of the file's.
    pub fn test_subjects(mut self, subjects: impl IntoIterator<Item = u32>) -> Self {
        self.test_subjects = Some(subjects.into_iter().collect());
        self
    }

    /// Reads the file at `path` and returns the windowed, split, standardised data (see the
    /// [module docs](self) for each step).
    ///
    /// # Errors
    /// - [`Error::InvalidParameter`] for a zero window or stride;
    /// - [`Error::Io`] or [`Error::InvalidFile`] when the file cannot be read or is not a valid
    ///   safetensors file;
    /// - [`Error::InvalidFile`] when `signals` or `segments` is missing or has the wrong dtype or
    ///   shape, a segment lies outside `signals` or has a negative field or a label without a
    ///   name, the metadata lists are not JSON arrays of the right type, or no window of a
    ///   training subject remains;
    /// - [`Error::NonFinite`] for a NaN or infinite signal value, and [`Error::InvalidFile`] for
    ///   a channel that is constant over the training subjects (it cannot be standardised).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<Hapt> {
        if self.window == 0 || self.stride == 0 {
            return Err(Error::invalid(
                "hapt windows",
                format!(
                    "window and stride must be positive, got {} and {}",
                    self.window, self.stride
                ),
            ));
        }
        let file = SafetensorsFile::open(path.as_ref())?;
        let bad = |reason: String| Error::InvalidFile {
            path: file.path().to_path_buf(),
            reason,
        };
        let meta = Metadata::of(&file);
        let labels: Vec<String> = meta.list("labels", &DEFAULT_LABELS, string, &bad)?;
        let channels: Vec<String> = meta.list("channels", &DEFAULT_CHANNELS, string, &bad)?;
        if channels.len() != CHANNELS {
            return Err(bad(format!(
                "metadata `channels` names {} channels, expected {CHANNELS}",
                channels.len()
            )));
        }
        let test_subjects: Vec<u32> = match &self.test_subjects {
            Some(s) => s.clone(),
            None => meta.list("test_subjects", &DEFAULT_TEST_SUBJECTS, subject, &bad)?,
        };

        let signals = read_signals(&file, &bad)?;
        let rows = signals.len() / CHANNELS;
        let segments = read_segments(&file, rows, labels.len(), &bad)?;

        let standardization = fit(&signals, &segments, &test_subjects).map_err(&bad)?;
        let cut = |test: bool| {
            self.cut(
                &signals,
                &segments,
                |s| test_subjects.contains(&s) == test,
                &standardization,
            )
        };
        let (train, train_sources) = cut(false)?;
        let (test, test_sources) = cut(true)?;
        if train.is_empty() {
            return Err(bad(format!(
                "no window of {} samples in the training subjects' segments",
                self.window
            )));
        }
        Ok(Hapt {
            train,
            test,
            train_sources,
            test_sources,
            labels,
            channels,
            test_subjects,
            standardization,
        })
    }

    /// Windows of the segments whose subject `take` accepts, standardised, channel-first.
    fn cut(
        &self,
        signals: &[f32],
        segments: &[Segment],
        take: impl Fn(u32) -> bool,
        standardization: &Standardization,
    ) -> Result<(Dataset, Vec<WindowSource>)> {
        let (w, stride) = (self.window, self.stride);
        let sources: Vec<(WindowSource, usize)> = segments
            .iter()
            .enumerate()
            .filter(|(_, s)| take(s.subject))
            .flat_map(|(i, s)| {
                let count = if s.length >= w {
                    (s.length - w) / stride + 1
                } else {
                    0
                };
                (0..count).map(move |k| {
                    let source = WindowSource {
                        segment: i,
                        start: s.offset + k * stride,
                        subject: s.subject,
                    };
                    (source, s.label)
                })
            })
            .collect();
        let mut inputs = Vec::with_capacity(sources.len() * CHANNELS * w);
        for (source, _) in &sources {
            let rows = &signals[source.start * CHANNELS..(source.start + w) * CHANNELS];
            for c in 0..CHANNELS {
                let (mean, std) = (standardization.mean[c], standardization.std[c]);
                inputs.extend(
                    rows.iter()
                        .skip(c)
                        .step_by(CHANNELS)
                        .map(|&v| (v - mean) / std),
                );
            }
        }
        let inputs = ArrayD::from_shape_vec(IxDyn(&[sources.len(), CHANNELS, w]), inputs)
            .map_err(|e| Error::invalid("hapt windows", e.to_string()))?;
        let labels = sources.iter().map(|&(_, label)| label).collect();
        let dataset = Dataset::new(inputs, Targets::Classes(labels))?;
        Ok((dataset, sources.into_iter().map(|(s, _)| s).collect()))
    }
}

/// One row of `segments`, validated.
#[derive(Clone, Copy, Debug)]
struct Segment {
    offset: usize,
    length: usize,
    label: usize,
    subject: u32,
}

/// The file's `__metadata__` map, with JSON-list lookups.
struct Metadata<'a>(Option<&'a HashMap<String, String>>);

impl<'a> Metadata<'a> {
    fn of(file: &'a SafetensorsFile) -> Self {
        Metadata(file.metadata())
    }

    /// The JSON list under `key` with each element converted by `item`, or `default` when the
    /// key is absent.
    fn list<T, D: Clone + Into<T>>(
        &self,
        key: &str,
        default: &[D],
        item: impl Fn(&serde_json::Value) -> Option<T>,
        bad: &impl Fn(String) -> Error,
    ) -> Result<Vec<T>> {
        let Some(text) = self.0.and_then(|m| m.get(key)) else {
            return Ok(default.iter().cloned().map(Into::into).collect());
        };
        serde_json::from_str::<Vec<serde_json::Value>>(text)
            .ok()
            .and_then(|values| values.iter().map(item).collect::<Option<Vec<T>>>())
            .ok_or_else(|| {
                bad(format!(
                    "metadata `{key}` is not a JSON list of the expected type: {text}"
                ))
            })
    }
}

fn string(v: &serde_json::Value) -> Option<String> {
    v.as_str().map(String::from)
}

fn subject(v: &serde_json::Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// `signals` as row-major `f32` rows of [`CHANNELS`] values, all finite.
fn read_signals(file: &SafetensorsFile, bad: &impl Fn(String) -> Error) -> Result<Vec<f32>> {
    let entry = file
        .tensor("signals")
        .ok_or_else(|| bad("no `signals` tensor".into()))?;
    if !entry.is_float() || entry.shape().len() != 2 || entry.shape()[1] != CHANNELS {
        return Err(bad(format!(
            "`signals` must be a floating [samples, {CHANNELS}] tensor, got {} {:?}",
            entry.dtype(),
            entry.shape()
        )));
    }
    let signals = file.read_f32_checked("signals")?;
    Ok(signals.into_raw_vec_and_offset().0)
}

/// `segments` as validated rows: inside `signals`, non-negative, labels with a name.
fn read_segments(
    file: &SafetensorsFile,
    rows: usize,
    labels: usize,
    bad: &impl Fn(String) -> Error,
) -> Result<Vec<Segment>> {
    let entry = file
        .tensor("segments")
        .ok_or_else(|| bad("no `segments` tensor".into()))?;
    if entry.dtype() != Dtype::I32 || entry.shape().len() != 2 || entry.shape()[1] != 4 {
        return Err(bad(format!(
            "`segments` must be an I32 [segments, 4] tensor, got {} {:?}",
            entry.dtype(),
            entry.shape()
        )));
    }
    let bytes = file.read_bytes("segments")?;
    let values: Vec<i32> = bytes
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    values
        .chunks_exact(4)
        .enumerate()
        .map(|(i, row)| {
            let field = |j: usize, name: &str| {
                usize::try_from(row[j])
                    .map_err(|_| bad(format!("segment {i} has a negative {name} {}", row[j])))
            };
            let segment = Segment {
                offset: field(0, "offset")?,
                length: field(1, "length")?,
                label: field(2, "label")?,
                subject: u32::try_from(field(3, "subject")?).expect("from a non-negative i32"),
            };
            if segment.offset + segment.length > rows {
                return Err(bad(format!(
                    "segment {i} (offset {}, length {}) runs past the {rows} samples of `signals`",
                    segment.offset, segment.length
                )));
            }
            if segment.label >= labels {
                return Err(bad(format!(
                    "segment {i} has label {} but only {labels} labels are named",
                    segment.label
                )));
            }
            Ok(segment)
        })
        .collect()
}

/// Mean and population standard deviation of each channel over the samples of the segments
/// whose subject is not a test subject, each sample once, in `f64`.
fn fit(
    signals: &[f32],
    segments: &[Segment],
    test_subjects: &[u32],
) -> std::result::Result<Standardization, String> {
    let mut sum = [0.0f64; CHANNELS];
    let mut count = 0usize;
    let train = || {
        segments
            .iter()
            .filter(|s| !test_subjects.contains(&s.subject))
            .flat_map(|s| {
                signals[s.offset * CHANNELS..(s.offset + s.length) * CHANNELS]
                    .chunks_exact(CHANNELS)
            })
    };
    for row in train() {
        for (acc, &v) in sum.iter_mut().zip(row) {
            *acc += f64::from(v);
        }
        count += 1;
    }
    if count == 0 {
        return Err("the training subjects have no samples".into());
    }
    let mean = sum.map(|s| s / count as f64);
    // Second pass around the mean: no cancellation, unlike E[x²] − E[x]².
    let mut squares = [0.0f64; CHANNELS];
    for row in train() {
        for ((acc, &v), m) in squares.iter_mut().zip(row).zip(mean) {
            let d = f64::from(v) - m;
            *acc += d * d;
        }
    }
    let std = squares.map(|s| (s / count as f64).sqrt() as f32);
    if let Some(c) = std.iter().position(|&s| !(s > 0.0 && s.is_finite())) {
        return Err(format!(
            "channel {c} is constant over the training subjects and cannot be standardised"
        ));
    }
    Ok(Standardization {
        mean: mean.iter().map(|&m| m as f32).collect(),
        std: std.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    use crate::io::{Checkpoint, RawTensor};

    /// A tiny HAPT-shaped file: `rows` samples whose value encodes row and channel
    /// (`row + channel / 10`), and the given segments.
    fn tiny(dir: &Path, rows: usize, segments: &[[i32; 4]], metadata: &[(&str, &str)]) -> PathBuf {
        let path = dir.join("tiny.safetensors");
        let mut ckpt = Checkpoint::new();
        let signals: Vec<f32> = (0..rows * CHANNELS)
            .map(|i| (i / CHANNELS) as f32 + (i % CHANNELS) as f32 / 10.0)
            .collect();
        ckpt.params_mut().insert(
            "signals",
            ArrayD::from_shape_vec(IxDyn(&[rows, CHANNELS]), signals).unwrap(),
        );
        let bytes = segments.iter().flatten().flat_map(|v| v.to_le_bytes());
        ckpt.insert_raw(
            "segments",
            RawTensor::new(Dtype::I32, vec![segments.len(), 4], bytes.collect()).unwrap(),
        );
        if !metadata.is_empty() {
            *ckpt.metadata_mut() = Some(
                metadata
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        ckpt.save(&path).unwrap();
        path
    }

    #[test]
    fn windows_stay_inside_segments_and_split_by_subject() {
        let dir = tempfile::tempdir().unwrap();
        // Subject 1: lengths 10 (3 windows of 4, stride 3: starts 0, 3, 6) and 3 (none);
        // subject 2 (test): length 7 (2 windows: 13, 16).
        let path = tiny(
            dir.path(),
            20,
            &[[0, 10, 1, 1], [10, 3, 0, 1], [13, 7, 2, 2]],
            &[("test_subjects", "[2]")],
        );
        let hapt = HaptConfig::new().window(4).stride(3).load(&path).unwrap();
        let starts = |s: &[WindowSource]| s.iter().map(|w| w.start).collect::<Vec<_>>();
        assert_eq!(starts(&hapt.train_sources), [0, 3, 6]);
        assert_eq!(starts(&hapt.test_sources), [13, 16]);
        assert_eq!(hapt.train.targets(), &Targets::Classes(vec![1, 1, 1]));
        assert_eq!(hapt.test.targets(), &Targets::Classes(vec![2, 2]));
        assert_eq!(hapt.test_subjects, [2]);
        assert_eq!(hapt.labels, DEFAULT_LABELS);

        // Training samples are rows 0..13 of channel c: values r + c/10, mean 6 + c/10, and
        // the population variance of 0..13 is (13² − 1) / 12 = 14.
        let s = &hapt.standardization;
        for c in 0..CHANNELS {
            assert!((s.mean[c] - (6.0 + c as f32 / 10.0)).abs() < 1e-5);
            assert!((s.std[c] - 14f32.sqrt()).abs() < 1e-5);
        }
        // Test window 1 (start 16), channel 2, step 3: row 19, value 19.2.
        let x = hapt.test.inputs();
        let expected = (19.2 - s.mean[2]) / s.std[2];
        assert_eq!(x[[1, 2, 3]], expected);
        assert_eq!(x.shape(), &[2, CHANNELS, 4]);
    }

    #[test]
    fn explicit_test_subjects_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = tiny(
            dir.path(),
            12,
            &[[0, 6, 0, 5], [6, 6, 3, 2]],
            &[("test_subjects", "[2]")],
        );
        let hapt = HaptConfig::new()
            .window(6)
            .test_subjects([5])
            .load(&path)
            .unwrap();
        assert_eq!(hapt.train_sources[0].subject, 2);
        assert_eq!(hapt.test_sources[0].subject, 5);
    }

    #[test]
    fn malformed_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let load = |rows, segments: &[[i32; 4]], meta: &[(&str, &str)]| {
            let path = tiny(dir.path(), rows, segments, meta);
            HaptConfig::new().window(2).stride(1).load(&path)
        };
        let message = |r: Result<Hapt>| r.unwrap_err().to_string();
        assert!(message(load(4, &[[2, 3, 0, 1]], &[])).contains("runs past"));
        assert!(message(load(4, &[[0, -1, 0, 1]], &[])).contains("negative length"));
        assert!(message(load(4, &[[0, 4, 6, 1]], &[])).contains("label 6"));
        assert!(
            message(load(4, &[[0, 4, 0, 1]], &[("test_subjects", "2, 4")]))
                .contains("test_subjects")
        );
        assert!(
            message(load(4, &[[0, 4, 0, 1]], &[("test_subjects", "[1]")])).contains("no samples")
        );
        assert!(message(load(4, &[[0, 1, 0, 1]], &[])).contains("constant"));
        assert!(
            message(load(4, &[[0, 4, 0, 1]], &[("channels", "[\"a\"]")])).contains("1 channels")
        );
        assert!(matches!(
            HaptConfig::new()
                .stride(0)
                .load(dir.path().join("tiny.safetensors")),
            Err(Error::InvalidParameter { .. })
        ));

        // Wrong dtype and a missing tensor.
        let path = dir.path().join("bad.safetensors");
        let mut ckpt = Checkpoint::new();
        ckpt.params_mut()
            .insert("signals", ArrayD::zeros(IxDyn(&[4, CHANNELS])));
        ckpt.params_mut()
            .insert("segments", ArrayD::zeros(IxDyn(&[1, 4])));
        ckpt.save(&path).unwrap();
        assert!(message(HaptConfig::new().load(&path)).contains("I32"));
        ckpt.params_mut().remove("segments");
        ckpt.save(&path).unwrap();
        assert!(message(HaptConfig::new().load(&path)).contains("no `segments`"));

        // A non-finite signal.
        let mut ckpt = Checkpoint::load(tiny(dir.path(), 4, &[[0, 4, 0, 1]], &[])).unwrap();
        ckpt.params_mut().get_mut("signals").unwrap()[[1, 2]] = f32::NAN;
        ckpt.save(&path).unwrap();
        assert!(matches!(
            HaptConfig::new().window(2).load(&path),
            Err(Error::NonFinite { index: 8, .. })
        ));
        // Not a safetensors file at all.
        std::fs::write(&path, b"not a file").unwrap();
        assert!(matches!(
            HaptConfig::new().load(&path),
            Err(Error::InvalidFile { .. })
        ));
    }

    #[test]
    fn standardization_checks_the_channel_axis() {
        let s = Standardization {
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
        };
        let mut x = ArrayD::<f32>::zeros(IxDyn(&[2, 4, 5]));
        assert!(matches!(
            s.apply(&mut x.view_mut()),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
