//! Datasets: batched inputs with their targets, for calibration, training and evaluation.
//!
//! [`hapt`] loads the wearable activity data the examples and several tests use.

pub mod hapt;

use ndarray::{ArrayD, ArrayViewD, Axis};

use crate::error::{Error, Result};

/// What a dataset's samples should produce.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Targets {
    /// One class index per sample (classification, cross-entropy).
    Classes(Vec<usize>),
    /// One value array per sample, stacked along axis 0 (regression, mean squared error).
    Values(ArrayD<f32>),
}

impl Targets {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Values(v) => v.shape().first().copied().unwrap_or(0),
        }
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Samples stacked along axis 0 (`[n, ...sample shape]`) and their targets.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::data::{Dataset, Targets};
///
/// let x = ArrayD::zeros(IxDyn(&[3, 6, 128]));
/// let data = Dataset::new(x, Targets::Classes(vec![0, 2, 1]))?;
/// assert_eq!((data.len(), data.sample_shape()), (3, &[6, 128][..]));
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    inputs: ArrayD<f32>,
    targets: Targets,
}

impl Dataset {
    /// Pairs `inputs` (`[n, ...]`, stored in standard layout) with `targets` for the same `n`
    /// samples.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when the sample counts differ or the inputs have no batch axis.
    pub fn new(inputs: ArrayD<f32>, targets: Targets) -> Result<Self> {
        let n = inputs.shape().first().copied();
        if n != Some(targets.len()) {
            return Err(Error::ShapeMismatch {
                name: "dataset targets".into(),
                expected: vec![n.unwrap_or(0)],
                got: vec![targets.len()],
            });
        }
        let inputs = if inputs.is_standard_layout() {
            inputs
        } else {
            inputs.as_standard_layout().into_owned()
        };
        Ok(Dataset { inputs, targets })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Shape of one sample.
    pub fn sample_shape(&self) -> &[usize] {
        &self.inputs.shape()[1..]
    }

    /// All inputs, `[n, ...]`.
    pub fn inputs(&self) -> ArrayViewD<'_, f32> {
        self.inputs.view()
    }

    /// All targets.
    pub fn targets(&self) -> &Targets {
        &self.targets
    }

    /// The samples at `indices`, in that order (repeats allowed), copied: a validation split,
    /// say.
    ///
    /// ```
    /// use ndarray::{ArrayD, IxDyn};
    /// use shears::data::{Dataset, Targets};
    ///
    /// let x = ArrayD::from_shape_fn(IxDyn(&[4, 2]), |i| i[0] as f32);
    /// let data = Dataset::new(x, Targets::Classes(vec![0, 1, 2, 3]))?;
    /// let every_other = data.select(&[0, 2])?;
    /// assert_eq!(every_other.targets(), &Targets::Classes(vec![0, 2]));
    /// assert_eq!(every_other.inputs().as_slice().unwrap(), &[0.0, 0.0, 2.0, 2.0]);
    /// assert!(data.select(&[4]).is_err());
    /// # Ok::<(), shears::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an index out of range.
    pub fn select(&self, indices: &[usize]) -> Result<Dataset> {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::invalid(
                "indices",
                format!("sample {i} is out of range for {} samples", self.len()),
            ));
        }
        let targets = match &self.targets {
            Targets::Classes(c) => Targets::Classes(indices.iter().map(|&i| c[i]).collect()),
            Targets::Values(v) => Targets::Values(v.select(Axis(0), indices)),
        };
        Dataset::new(self.inputs.select(Axis(0), indices), targets)
    }

    /// Inputs of samples `start..end` (clamped to the dataset), a view without copying.
    pub fn batch_inputs(&self, start: usize, end: usize) -> ArrayViewD<'_, f32> {
        let end = end.min(self.len());
        self.inputs
            .slice_axis(Axis(0), (start.min(end)..end).into())
    }
}
