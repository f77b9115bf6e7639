//! Evaluation: loss and accuracy of a network over a dataset, batched, in inference mode.

use ndarray::{ArrayViewD, Axis};

use super::loss::Loss;
use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::graph::Network;

/// Loss and accuracy of a network over a dataset.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Evaluation {
    /// Mean loss per sample (for mean squared error, per element, as over one big batch).
    pub loss: f64,
    /// Fraction of samples whose largest output is their class; `None` for value targets.
    pub accuracy: Option<f64>,
    /// Number of samples evaluated.
    pub samples: usize,
}

/// Runs `data` through `net` in inference mode ([`Mode::Eval`](crate::graph::Mode)), `batch_size`
/// samples at a time, and returns the mean loss and, for class targets, the accuracy.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::data::{Dataset, Targets};
/// use shears::graph::{Linear, Network};
/// use shears::train::{Loss, evaluate};
///
/// let mut net = Network::builder(&[2]).layer("fc", Linear::new(2, 2)).build_init(0)?;
/// // Logits (x0, x1): the class is the larger coordinate.
/// let mut w = net.params_mut();
/// w.get_mut("fc.weight").unwrap().assign(&ndarray::array![[1.0, 0.0], [0.0, 1.0]].into_dyn());
/// w.get_mut("fc.bias").unwrap().fill(0.0);
/// let x = ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![2.0, 1.0, 0.0, 3.0, 1.0, 0.0])?;
/// let data = Dataset::new(x, Targets::Classes(vec![0, 1, 1]))?;
/// let e = evaluate(&net, &data, Loss::CrossEntropy, 2)?;
/// assert_eq!((e.accuracy, e.samples), (Some(2.0 / 3.0), 3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::InvalidParameter`] for an empty dataset, a zero batch size or targets the loss does
/// not take; [`Error::ShapeMismatch`] for samples that are not the network's input shape; as
/// [`Loss::forward`].
pub fn evaluate(
    net: &Network,
    data: &Dataset,
    loss: Loss,
    batch_size: usize,
) -> Result<Evaluation> {
    check_dataset(net, data, loss, "dataset")?;
    if batch_size == 0 {
        return Err(Error::invalid("batch size", "must be at least 1"));
    }
    let (mut total, mut correct) = (0.0, 0usize);
    for start in (0..data.len()).step_by(batch_size) {
        let end = (start + batch_size).min(data.len());
        let output = net.forward(data.batch_inputs(start, end))?;
        let targets = slice_targets(data.targets(), start, end);
        let (value, _) = loss.forward(output.view(), &targets)?;
        total += value * (end - start) as f64;
        if let Targets::Classes(classes) = &targets {
            correct += count_correct(output.view(), classes);
        }
    }
    let n = data.len() as f64;
    Ok(Evaluation {
        loss: total / n,
        accuracy: matches!(data.targets(), Targets::Classes(_)).then(|| correct as f64 / n),
        samples: data.len(),
    })
}

/// Checks that `data` can be fed to `net` and scored by `loss`; `what` names the dataset in
/// errors.
pub(crate) fn check_dataset(net: &Network, data: &Dataset, loss: Loss, what: &str) -> Result<()> {
    if data.is_empty() {
        return Err(Error::invalid(what, "it has no samples"));
    }
    Error::check_shape(
        &format!("{what} samples"),
        net.input_shape(),
        data.sample_shape(),
    )?;
    loss.check_targets(data.targets())?;
    let output = &net.output_shapes()[net.output_index()];
    match data.targets() {
        Targets::Classes(classes) => {
            let &[n] = output.as_slice() else {
                return Err(Error::invalid(
                    "output",
                    format!(
                        "cross-entropy needs logits [batch, classes], got samples of shape {output:?}"
                    ),
                ));
            };
            match classes.iter().enumerate().find(|&(_, &c)| c >= n) {
                Some((i, c)) => Err(Error::invalid(
                    what,
                    format!("class {c} of sample {i} is out of range for {n} classes"),
                )),
                None => Ok(()),
            }
        }
        Targets::Values(v) => {
            Error::check_shape(&format!("{what} targets"), output, &v.shape()[1..])
        }
    }
}

/// Targets of samples `start..end`.
fn slice_targets(targets: &Targets, start: usize, end: usize) -> Targets {
    match targets {
        Targets::Classes(c) => Targets::Classes(c[start..end].to_vec()),
        Targets::Values(v) => {
            Targets::Values(v.slice_axis(Axis(0), (start..end).into()).to_owned())
        }
    }
}

/// Number of rows of `output` `[batch, classes]` whose largest value (the first on ties) is at
/// the sample's class. NaN rows count as wrong.
pub(crate) fn count_correct(output: ArrayViewD<'_, f32>, classes: &[usize]) -> usize {
    if output.ndim() != 2 {
        return 0;
    }
    output
        .outer_iter()
        .zip(classes)
        .filter(|&(ref row, &c)| {
            let best = row.iter().enumerate().fold(
                (usize::MAX, f32::NEG_INFINITY),
                |(bi, bv), (i, &v)| {
                    if v > bv || bi == usize::MAX && !v.is_nan() {
                        (i, v)
                    } else {
                        (bi, bv)
                    }
                },
            );
            best.0 == c
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn argmax_takes_the_first_maximum_and_never_a_nan() {
        let out = array![
            [1.0f32, 3.0, 3.0],
            [f32::NAN, 0.0, -1.0],
            [f32::NAN, f32::NAN, f32::NAN]
        ]
        .into_dyn();
        assert_eq!(count_correct(out.view(), &[1, 1, 0]), 2);
        assert_eq!(count_correct(out.view(), &[2, 0, 0]), 0);
    }
}
