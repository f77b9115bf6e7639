//! Losses: a scalar from a batch of outputs and targets, and its gradient with respect to the
//! outputs (what [`Network::backward`](crate::Network::backward) takes).

use ndarray::{ArrayD, ArrayViewD, Axis};

use crate::data::Targets;
use crate::error::{Error, Result};

/// A training objective, averaged over the batch as PyTorch's default `reduction="mean"`.
///
/// ```
/// use ndarray::array;
/// use shears::data::Targets;
/// use shears::train::Loss;
///
/// let logits = array![[2.0_f32, 0.0], [0.0, 0.0]].into_dyn();
/// let (loss, grad) = Loss::CrossEntropy.forward(logits.view(), &Targets::Classes(vec![0, 1]))?;
/// // Sample 0: -ln(e² / (e² + 1)); sample 1: ln 2; the mean of both.
/// let want = ((1.0 + (-2.0f64).exp()).ln() + 2f64.ln()) / 2.0;
/// assert!((loss - want).abs() < 1e-7);
/// // Gradient: (softmax - one-hot) / batch.
/// assert!((grad[[1, 1]] - (0.5 - 1.0) / 2.0).abs() < 1e-7);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Loss {
    /// Cross-entropy from logits `[batch, classes]` and class indices, PyTorch's
    /// `F.cross_entropy`: `mean_b(logsumexp(z_b) − z_b[t_b])`.
    CrossEntropy,
    /// Mean squared error over every element, PyTorch's `F.mse_loss`: outputs and value targets
    /// of the same shape.
    MeanSquaredError,
}

impl Loss {
    /// The loss of a batch of `output`s against their `targets`, and its gradient with respect
    /// to `output` (same shape). The loss is computed in `f64`; a NaN or infinite output gives a
    /// non-finite loss, which the caller decides about (the trainer stops with
    /// [`Error::NonFiniteLoss`]).
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidParameter`] for targets of the wrong kind (values for cross-entropy,
    ///   classes for mean squared error), a class index out of range, or cross-entropy on an
    ///   output that is not `[batch, classes]`;
    /// - [`Error::ShapeMismatch`] when the targets do not match the output's batch (or, for mean
    ///   squared error, its shape).
    pub fn forward(
        &self,
        output: ArrayViewD<'_, f32>,
        targets: &Targets,
    ) -> Result<(f64, ArrayD<f32>)> {
        match self {
            Loss::CrossEntropy => cross_entropy(output, self.classes(targets)?),
            Loss::MeanSquaredError => mse(output, self.values(targets)?),
        }
    }

    /// Checks that `targets` are of the kind this loss takes.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the kind needed and the kind given.
    pub fn check_targets(&self, targets: &Targets) -> Result<()> {
        match self {
            Loss::CrossEntropy => self.classes(targets).map(|_| ()),
            Loss::MeanSquaredError => self.values(targets).map(|_| ()),
        }
    }

    fn classes<'t>(&self, targets: &'t Targets) -> Result<&'t [usize]> {
        match targets {
            Targets::Classes(c) => Ok(c),
            _ => Err(Error::invalid(
                "targets",
                "cross-entropy needs class indices, got value targets",
            )),
        }
    }

    fn values<'t>(&self, targets: &'t Targets) -> Result<&'t ArrayD<f32>> {
        match targets {
            Targets::Values(v) => Ok(v),
            _ => Err(Error::invalid(
                "targets",
                "mean squared error needs value targets, got class indices",
            )),
        }
    }
}

/// Cross-entropy of logits `[batch, classes]`: per row `logsumexp(z) − z[t]` (shifted by the
/// row's maximum), averaged; gradient `(softmax(z) − onehot(t)) / batch`.
fn cross_entropy(logits: ArrayViewD<'_, f32>, classes: &[usize]) -> Result<(f64, ArrayD<f32>)> {
    if logits.ndim() != 2 {
        return Err(Error::invalid(
            "output",
            format!(
                "cross-entropy needs logits [batch, classes], got shape {:?}",
                logits.shape()
            ),
        ));
    }
    let (batch, n_classes) = (logits.shape()[0], logits.shape()[1]);
    Error::check_shape("targets", &[batch], &[classes.len()])?;
    if let Some((i, &c)) = classes.iter().enumerate().find(|&(_, &c)| c >= n_classes) {
        return Err(Error::invalid(
            "targets",
            format!("class {c} of sample {i} is out of range for {n_classes} classes"),
        ));
    }
    let mut grad = logits.as_standard_layout().into_owned();
    let scale = 1.0 / batch as f64;
    let mut total = 0.0;
    for (mut row, &t) in grad.axis_iter_mut(Axis(0)).zip(classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let max = f64::from(max);
        let sum: f64 = row.iter().map(|&z| (f64::from(z) - max).exp()).sum();
        let log_sum = sum.ln();
        total += log_sum + max - f64::from(row[t]);
        for (k, z) in row.iter_mut().enumerate() {
            let p = (f64::from(*z) - max - log_sum).exp();
            let onehot = if k == t { 1.0 } else { 0.0 };
            *z = ((p - onehot) * scale) as f32;
        }
    }
    Ok((total * scale, grad))
}

/// Mean squared error over all elements; gradient `2 (y − t) / n`.
fn mse(output: ArrayViewD<'_, f32>, targets: &ArrayD<f32>) -> Result<(f64, ArrayD<f32>)> {
    Error::check_shape("targets", output.shape(), targets.shape())?;
    let n = output.len().max(1) as f64;
    let mut total = 0.0;
    let mut grad = ArrayD::zeros(output.raw_dim());
    ndarray::Zip::from(&mut grad)
        .and(&output)
        .and(targets)
        .for_each(|g, &y, &t| {
            let d = f64::from(y) - f64::from(t);
            total += d * d;
            *g = (2.0 * d / n) as f32;
        });
    Ok((total / n, grad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{IxDyn, array};

    #[test]
    fn cross_entropy_by_hand_and_stable_for_large_logits() {
        let logits = array![[1000.0_f32, 0.0, 1000.0]].into_dyn();
        let (loss, grad) = Loss::CrossEntropy
            .forward(logits.view(), &Targets::Classes(vec![1]))
            .unwrap();
        // logsumexp = 1000 + ln 2; minus z[1] = 0.
        assert!((loss - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(grad.as_slice().unwrap(), &[0.5, -1.0, 0.5]);
    }

    #[test]
    fn mse_by_hand() {
        let y = array![[1.0_f32, 2.0], [3.0, 5.0]].into_dyn();
        let t = array![[1.0_f32, 0.0], [3.0, 4.0]].into_dyn();
        let (loss, grad) = Loss::MeanSquaredError
            .forward(y.view(), &Targets::Values(t))
            .unwrap();
        assert_eq!(loss, (4.0 + 1.0) / 4.0);
        assert_eq!(grad.as_slice().unwrap(), &[0.0, 1.0, 0.0, 0.5]);
    }

    #[test]
    fn wrong_targets_are_errors() {
        let y = ArrayD::<f32>::zeros(IxDyn(&[2, 3]));
        let classes = Targets::Classes(vec![0, 1]);
        let values = Targets::Values(ArrayD::zeros(IxDyn(&[2, 3])));
        let msg = |r: Result<(f64, ArrayD<f32>)>| r.unwrap_err().to_string();
        assert!(msg(Loss::CrossEntropy.forward(y.view(), &values)).contains("class indices"));
        assert!(msg(Loss::MeanSquaredError.forward(y.view(), &classes)).contains("value targets"));
        let far = Targets::Classes(vec![0, 3]);
        assert_eq!(
            msg(Loss::CrossEntropy.forward(y.view(), &far)),
            "invalid targets: class 3 of sample 1 is out of range for 3 classes"
        );
        let short = Targets::Classes(vec![0]);
        assert!(matches!(
            Loss::CrossEntropy.forward(y.view(), &short),
            Err(Error::ShapeMismatch { .. })
        ));
        let flat = ArrayD::<f32>::zeros(IxDyn(&[2]));
        assert!(
            msg(Loss::CrossEntropy.forward(flat.view(), &classes)).contains("[batch, classes]")
        );
        let other = Targets::Values(ArrayD::zeros(IxDyn(&[2, 2])));
        assert!(matches!(
            Loss::MeanSquaredError.forward(y.view(), &other),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
