//! Per-element gradient statistics accumulated over batches: what gradient-based pruning
//! criteria rank by (first-order Taylor, SNIP, Fisher).

use ndarray::{ArrayD, Zip};

use super::batches::Batches;
use super::eval::check_dataset;
use super::loss::Loss;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::graph::{Mode, Network};
use crate::params::Params;

/// Sums over batches of per-element gradient statistics, each a [`Params`] keyed by parameter
/// name (shapes as the parameters), ready for a strategy to rank.
///
/// Gradients are those of the batch's mean loss. With a batch size of 1 they are per-sample
/// gradients, and `grad_sq` is then the diagonal of the empirical Fisher information; with larger
/// batches it is the usual cheaper approximation from batch gradients.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GradientScores {
    /// `Σ |w ⊙ g|`: the first-order Taylor estimate of the loss change from removing each weight
    /// (Molchanov et al. 2017), with the weights as they were at each batch.
    pub taylor: Params,
    /// `Σ g`: the summed gradient; see [`GradientScores::snip`].
    pub grad_sum: Params,
    /// `Σ |g|`.
    pub grad_abs: Params,
    /// `Σ g²`: Fisher-style saliency (multiply by `w²` for the squared Taylor criterion of
    /// Molchanov et al. 2019).
    pub grad_sq: Params,
    /// Number of batches summed.
    pub batches: usize,
    /// Number of samples in those batches.
    pub samples: usize,
}

impl GradientScores {
    /// SNIP's connection sensitivity (Lee et al. 2019), `|w ⊙ ḡ|` with `ḡ` the mean gradient over
    /// the batches, for the tensors of `params` that have scores.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when a tensor of `params` has another shape than its scores.
    pub fn snip(&self, params: &Params) -> Result<Params> {
        let n = self.batches.max(1) as f32;
        let mut out = Params::new();
        for (name, sum) in self.grad_sum.iter() {
            let Some(w) = params.get(name) else { continue };
            Error::check_shape(name, sum.shape(), w.shape())?;
            out.insert(
                name,
                Zip::from(w)
                    .and(sum)
                    .map_collect(|&w, &g| (w * g / n).abs()),
            );
        }
        Ok(out)
    }
}

/// Accumulates [`GradientScores`] from gradients handed in batch by batch, from shears' own
/// backward pass or from any other framework's.
///
/// ```
/// use ndarray::array;
/// use shears::Params;
/// use shears::train::ScoreAccumulator;
///
/// let params: Params = [("w", array![2.0_f32, -1.0].into_dyn())].into_iter().collect();
/// let mut acc = ScoreAccumulator::new();
/// for g in [[0.5_f32, 1.0], [-0.5, 3.0]] {
///     let grads: Params = [("w", array![g[0], g[1]].into_dyn())].into_iter().collect();
///     acc.add(&params, &grads, 8)?;
/// }
/// let s = acc.finish();
/// assert_eq!(s.taylor.slice("w").unwrap(), &[2.0, 4.0]);
/// assert_eq!(s.grad_sum.slice("w").unwrap(), &[0.0, 4.0]);
/// assert_eq!(s.grad_sq.slice("w").unwrap(), &[0.5, 10.0]);
/// assert_eq!((s.batches, s.samples), (2, 16));
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ScoreAccumulator {
    scores: GradientScores,
}

impl ScoreAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one batch of `samples` samples: `grads` are the gradients of the batch's loss, named
    /// as the tensors of `params` they belong to (the weights at that batch, for the Taylor
    /// term). Every batch must bring gradients for the same tensors.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownTensor`] for a gradient that names no tensor of `params`;
    /// [`Error::ShapeMismatch`] for one of another shape; [`Error::InvalidParameter`] when the
    /// tensors differ from the first batch's; [`Error::NonFinite`] for a NaN or infinite gradient.
    /// Nothing is added on error.
    pub fn add(&mut self, params: &Params, grads: &Params, samples: usize) -> Result<()> {
        for (name, g) in grads.iter() {
            let w = params.get(name).ok_or_else(|| Error::UnknownTensor {
                name: name.to_string(),
            })?;
            Error::check_shape(name, w.shape(), g.shape())?;
            if let Some((index, &value)) = g.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(Error::NonFinite {
                    tensor: format!("gradient of {name}"),
                    index,
                    value,
                });
            }
        }
        let s = &mut self.scores;
        if s.batches > 0
            && (grads.len() != s.taylor.len() || grads.names().any(|n| !s.taylor.contains(n)))
        {
            return Err(Error::invalid(
                "gradients",
                "every batch must bring gradients for the same tensors",
            ));
        }
        for (name, g) in grads.iter() {
            let w = params.get(name).expect("checked above");
            for (stat, f) in [
                (
                    &mut s.taylor,
                    (|w: f32, g: f32| (w * g).abs()) as fn(f32, f32) -> f32,
                ),
                (&mut s.grad_sum, |_, g| g),
                (&mut s.grad_abs, |_, g| g.abs()),
                (&mut s.grad_sq, |_, g| g * g),
            ] {
                if !stat.contains(name) {
                    stat.insert(name, ArrayD::zeros(g.raw_dim()));
                }
                let mut acc = stat.get_mut(name).expect("inserted above");
                Zip::from(&mut acc)
                    .and(w)
                    .and(g)
                    .for_each(|a, &w, &g| *a += f(w, g));
            }
        }
        s.batches += 1;
        s.samples += samples;
        Ok(())
    }

    /// Number of batches added so far.
    pub fn batches(&self) -> usize {
        self.scores.batches
    }

    /// The sums.
    pub fn finish(self) -> GradientScores {
        self.scores
    }
}

/// Settings of [`accumulate_scores`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreOptions {
    loss: Loss,
    batch_size: usize,
    max_batches: Option<usize>,
    mode: Mode,
    shuffle: Option<u64>,
}

impl ScoreOptions {
    /// Gradients of `loss`, over the whole dataset in order, 64 samples per batch, in inference
    /// mode (BatchNorm on running statistics, no dropout, nothing changed in the network).
    pub fn new(loss: Loss) -> Self {
        ScoreOptions {
            loss,
            batch_size: 64,
            max_batches: None,
            mode: Mode::Eval,
            shuffle: None,
        }
    }

    /// Sets the samples per batch (1 gives per-sample gradients).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Stops after `batches` batches.
    pub fn max_batches(mut self, batches: usize) -> Self {
        self.max_batches = Some(batches);
        self
    }

    /// Sets the mode of the forward passes; in [`Mode::Train`] BatchNorm uses batch statistics
    /// (the running statistics are not updated) and dropout is active.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Visits the samples in the random order drawn from `seed` (useful with
    /// [`max_batches`](Self::max_batches)).
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }
}

/// Runs batches of `data` through `net` and accumulates [`GradientScores`] for every trainable
/// parameter. The network is not changed.
///
/// # Errors
///
/// [`Error::InvalidParameter`] for an empty dataset, a zero batch size or `max_batches`, or
/// targets the loss does not take; [`Error::ShapeMismatch`] for samples that are not the
/// network's input shape; [`Error::NonFiniteLoss`] (epoch 1) for a batch whose loss is NaN or
/// infinite.
pub fn accumulate_scores(
    net: &Network,
    data: &Dataset,
    options: ScoreOptions,
) -> Result<GradientScores> {
    check_dataset(net, data, options.loss, "dataset")?;
    if options.max_batches == Some(0) {
        return Err(Error::invalid("max batches", "must be at least 1"));
    }
    let mut batches = Batches::new(data, options.batch_size)?;
    if let Some(seed) = options.shuffle {
        batches = batches.shuffle(seed);
    }
    let mut acc = ScoreAccumulator::new();
    for (k, batch) in batches
        .take(options.max_batches.unwrap_or(usize::MAX))
        .enumerate()
    {
        let mode = match options.mode {
            Mode::Train { seed } => Mode::Train {
                seed: seed.wrapping_add(k as u64),
            },
            Mode::Eval => Mode::Eval,
        };
        let tape = net.forward_tape(batch.inputs.view(), mode)?;
        let (loss, grad) = options.loss.forward(tape.output(), &batch.targets)?;
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                epoch: 1,
                batch: k + 1,
                value: loss,
            });
        }
        let grads = net.backward_params(&tape, grad.view())?;
        acc.add(net.params(), &grads, batch.len())?;
    }
    Ok(acc.finish())
}
