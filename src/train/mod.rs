//! Training with shears alone: losses, optimizers, seeded mini-batches, evaluation,
//! mask-preserving fine-tuning and gradient statistics for pruning criteria.
//!
//! The pieces stand on their own, so a loop can be written by hand ([`Network::forward_tape`],
//! [`Loss::forward`], [`Network::backward_params`], [`step`]); the [`Trainer`] strings them
//! together: for each epoch it shuffles the dataset from its seed, and for each mini-batch runs a
//! training-mode forward pass (batch statistics, dropout), the loss, the backward pass, the
//! BatchNorm running-statistics update and one optimizer step. Given a [`MaskSet`], every pruned
//! weight stays exactly zero throughout: gradients, optimizer state and the weights themselves
//! are masked at every step.
//!
//! Users with their own framework need none of this: they hand their gradients to a
//! [`ScoreAccumulator`] to get the statistics gradient-based criteria rank by.
//!
//! # Example
//!
//! Two Gaussian blobs, a small MLP, Adam:
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use shears::data::{Dataset, Targets};
//! use shears::graph::Network;
//! use shears::train::{Adam, Loss, Trainer, evaluate};
//!
//! // 64 points: class 0 around (-1, -1), class 1 around (1, 1).
//! let x = ArrayD::from_shape_fn(IxDyn(&[64, 2]), |i| {
//!     let sign = if i[0] % 2 == 0 { -1.0 } else { 1.0 };
//!     sign + 0.3 * (((i[0] * 7 + i[1] * 3) % 11) as f32 / 11.0 - 0.5)
//! });
//! let classes = (0..64).map(|i| i % 2).collect();
//! let data = Dataset::new(x, Targets::Classes(classes))?;
//!
//! let mut net = Network::builder(&[2])
//!     .linear("fc1", 2, 8)
//!     .relu("act")
//!     .linear("fc2", 8, 2)
//!     .build_init(0)?;
//! let mut trainer = Trainer::new(Loss::CrossEntropy, Adam::new(0.05))
//!     .epochs(20)
//!     .batch_size(16)
//!     .seed(1);
//! let history = trainer.fit(&mut net, &data)?;
//! assert!(history.last().unwrap().loss < history.epochs[0].loss);
//! assert_eq!(evaluate(&net, &data, Loss::CrossEntropy, 64)?.accuracy, Some(1.0));
//! # Ok::<(), shears::Error>(())
//! ```

mod batches;
mod eval;
mod loss;
mod optim;
mod scores;

use std::time::Instant;

use ndarray::ArrayViewD;

pub use batches::{Batch, Batches};
pub use eval::{Evaluation, evaluate};
pub use loss::Loss;
pub use optim::{Adam, Optimizer, Sgd, step};
pub use scores::{GradientScores, ScoreAccumulator, ScoreOptions, accumulate_scores};

use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::graph::{Mode, Network};
use crate::mask::MaskSet;

/// What one training step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutcome {
    /// The batch's mean loss, before the update.
    pub loss: f64,
    /// Samples in the batch.
    pub samples: usize,
    /// Samples whose largest output was their class (class targets only).
    pub correct: Option<usize>,
}

/// Progress of one batch, as passed to an observer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchRecord {
    /// Epoch, counted from 1.
    pub epoch: usize,
    /// Batch within the epoch, counted from 1.
    pub batch: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// What the step reported.
    pub step: StepOutcome,
}

/// Summary of one epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct EpochRecord {
    /// Epoch, counted from 1.
    pub epoch: usize,
    /// Mean training loss per sample over the epoch (each batch's loss before its update, in
    /// training mode).
    pub loss: f64,
    /// Training accuracy over the epoch, in training mode (class targets only).
    pub accuracy: Option<f64>,
    /// Evaluation on the validation set after the epoch, when one was given.
    pub validation: Option<Evaluation>,
    /// Wall-clock seconds of the epoch's training steps (validation not included).
    pub seconds: f64,
}

/// What an observer of [`Trainer::fit_with`] is told.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A batch was trained on.
    Batch(&'a BatchRecord),
    /// An epoch ended (and the validation set, if any, was evaluated).
    Epoch(&'a EpochRecord),
}

/// The epochs of one [`Trainer::fit`] run.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct History {
    /// One record per epoch, in order.
    pub epochs: Vec<EpochRecord>,
}

impl History {
    /// The last epoch's record.
    pub fn last(&self) -> Option<&EpochRecord> {
        self.epochs.last()
    }
}

/// Trains a [`Network`] on a [`Dataset`]: seeded shuffling, mini-batches, training-mode forward
/// and backward passes, an [`Optimizer`], and optionally masks that keep pruned weights at zero.
///
/// Settings are plain builder calls and are checked when training starts
/// ([`Trainer::validate`]). Defaults: 1 epoch, 32 samples per batch, shuffled, last short batch
/// kept, seed 0, no masks. The optimizer's state carries over from one `fit` to the next; dropout
/// masks and shuffling follow from the seed and the number of steps taken, so a run is
/// reproducible from its settings.
///
/// Mask-preserving fine-tuning, after pruning:
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::data::{Dataset, Targets};
/// use shears::graph::Network;
/// use shears::train::{Loss, Optimizer, Sgd, Trainer};
/// use shears::MaskSet;
///
/// let mut net = Network::builder(&[4]).linear("fc", 4, 3).build_init(0)?;
/// // Prune the weights with |w| < 0.3 by masking them.
/// let mut masks = MaskSet::new();
/// let w = net.params().get("fc.weight").unwrap();
/// masks.insert("fc.weight", shears::Mask::from_array(w.mapv(|w| w.abs() >= 0.3)));
///
/// let x = ArrayD::from_shape_fn(IxDyn(&[12, 4]), |i| (i[0] * 4 + i[1]) as f32 / 48.0);
/// let data = Dataset::new(x, Targets::Classes((0..12).map(|i| i % 3).collect()))?;
/// let mut trainer = Trainer::new(Loss::CrossEntropy, Sgd::new(0.5).momentum(0.9).weight_decay(0.01))
///     .epochs(3)
///     .batch_size(4)
///     .masks(masks.clone());
/// trainer.fit(&mut net, &data)?;
/// let keep = masks.get("fc.weight").unwrap().as_slice();
/// let w = net.params().slice("fc.weight").unwrap();
/// let momentum = trainer.optimizer().state("fc.weight")[0].1;
/// for i in (0..12).filter(|&i| !keep[i]) {
///     assert_eq!((w[i], momentum[i]), (0.0, 0.0));
/// }
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Debug)]
pub struct Trainer<O: Optimizer> {
    loss: Loss,
    optimizer: O,
    epochs: usize,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    masks: Option<MaskSet>,
    steps: u64,
}

impl<O: Optimizer> Trainer<O> {
    /// A trainer minimising `loss` with `optimizer`, with the defaults above.
    pub fn new(loss: Loss, optimizer: O) -> Self {
        Trainer {
            loss,
            optimizer,
            epochs: 1,
            batch_size: 32,
            shuffle: true,
            drop_last: false,
            seed: 0,
            masks: None,
            steps: 0,
        }
    }

    /// Sets the number of passes over the dataset per [`fit`](Self::fit).
    pub fn epochs(mut self, epochs: usize) -> Self {
        self.epochs = epochs;
        self
    }

    /// Sets the samples per mini-batch.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Sets whether each epoch visits the samples in a fresh random order (default) or in
    /// dataset order.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Sets whether a last batch shorter than the batch size is left out of each epoch.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets the seed of shuffling and dropout.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Keeps every weight these masks prune at exactly zero (mask-preserving fine-tuning). The
    /// masks are named as the network's parameters; pruned weights are zeroed when training
    /// starts.
    pub fn masks(mut self, masks: MaskSet) -> Self {
        self.masks = Some(masks);
        self
    }

    /// The loss.
    pub fn loss(&self) -> Loss {
        self.loss
    }

    /// The optimizer, with its state.
    pub fn optimizer(&self) -> &O {
        &self.optimizer
    }

    /// The optimizer, mutably (to change its learning rate between runs, say).
    pub fn optimizer_mut(&mut self) -> &mut O {
        &mut self.optimizer
    }

    /// The masks kept, if any.
    pub fn mask_set(&self) -> Option<&MaskSet> {
        self.masks.as_ref()
    }

    /// Optimizer steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Checks the settings and the optimizer's.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for zero epochs, a zero batch size, or an invalid optimizer
    /// setting.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(Error::invalid("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size", "must be at least 1"));
        }
        self.optimizer.validate()
    }

    /// Trains `net` on `train` for the configured number of epochs.
    ///
    /// # Errors
    ///
    /// As [`fit_with`](Self::fit_with).
    pub fn fit(&mut self, net: &mut Network, train: &Dataset) -> Result<History> {
        self.fit_with(net, train, None, |_| {})
    }

    /// Trains `net` on `train`, evaluating it on `validation` (if given) after every epoch and
    /// telling `observer` about every batch and epoch (to drive a progress bar, log, plot).
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidParameter`] for invalid settings, an empty dataset, a dataset too small
    ///   for one batch with `drop_last`, or targets the loss does not take;
    /// - [`Error::ShapeMismatch`] for samples that are not the network's input shape, or masks
    ///   that do not fit the parameters ([`Error::UnknownTensor`] for masks naming none);
    /// - [`Error::NonFiniteLoss`] naming the epoch and batch where the loss became NaN or
    ///   infinite (the network keeps the weights of the step before);
    /// - as [`Loss::forward`] and [`Network::forward_tape`].
    pub fn fit_with<F>(
        &mut self,
        net: &mut Network,
        train: &Dataset,
        validation: Option<&Dataset>,
        mut observer: F,
    ) -> Result<History>
    where
        F: FnMut(Event<'_>),
    {
        self.validate()?;
        eval::check_dataset(net, train, self.loss, "training set")?;
        if let Some(v) = validation {
            eval::check_dataset(net, v, self.loss, "validation set")?;
        }
        if self.drop_last && train.len() < self.batch_size {
            return Err(Error::invalid(
                "training set",
                format!(
                    "{} samples make no full batch of {} (drop_last is on)",
                    train.len(),
                    self.batch_size
                ),
            ));
        }
        if let Some(masks) = &self.masks {
            net.apply_masks(masks)?;
        }
        let mut history = History::default();
        for epoch in 1..=self.epochs {
            let mut batches = Batches::new(train, self.batch_size)?.drop_last(self.drop_last);
            if self.shuffle {
                batches = batches.shuffle(mix(self.seed, self.steps));
            }
            let n_batches = batches.len();
            let start = Instant::now();
            let (mut loss, mut samples, mut correct) = (0.0, 0usize, 0usize);
            for (b, batch) in batches.enumerate() {
                let outcome = self
                    .train_step(net, batch.inputs.view(), &batch.targets)
                    .map_err(|e| match e {
                        Error::NonFiniteLoss { value, .. } => Error::NonFiniteLoss {
                            epoch,
                            batch: b + 1,
                            value,
                        },
                        e => e,
                    })?;
                batch.recycle();
                loss += outcome.loss * outcome.samples as f64;
                samples += outcome.samples;
                correct += outcome.correct.unwrap_or(0);
                observer(Event::Batch(&BatchRecord {
                    epoch,
                    batch: b + 1,
                    batches: n_batches,
                    step: outcome,
                }));
            }
            let seconds = start.elapsed().as_secs_f64();
            let validation = validation
                .map(|v| evaluate(net, v, self.loss, self.batch_size))
                .transpose()?;
            let record = EpochRecord {
                epoch,
                loss: loss / samples as f64,
                accuracy: matches!(train.targets(), Targets::Classes(_))
                    .then(|| correct as f64 / samples as f64),
                validation,
                seconds,
            };
            observer(Event::Epoch(&record));
            history.epochs.push(record);
        }
        Ok(history)
    }

    /// One training step on a batch: a [`Mode::Train`] forward pass (dropout seeded from the
    /// trainer's seed and step count), the loss, the backward pass, the BatchNorm running
    /// statistics update and one (masked) optimizer step. What [`fit`](Self::fit) does for every
    /// batch; public for hand-written loops and benchmarks.
    ///
    /// # Errors
    ///
    /// [`Error::NonFiniteLoss`] (epoch and batch 0, as the step knows neither) when the loss is
    /// NaN or infinite, in which case nothing was changed; as [`Loss::forward`],
    /// [`Network::forward_tape`] and [`step`].
    pub fn train_step(
        &mut self,
        net: &mut Network,
        inputs: ArrayViewD<'_, f32>,
        targets: &Targets,
    ) -> Result<StepOutcome> {
        let mode = Mode::Train {
            seed: mix(self.seed ^ 0x5EED, self.steps),
        };
        let tape = net.forward_tape(inputs, mode)?;
        let (loss, grad) = self.loss.forward(tape.output(), targets)?;
        if !loss.is_finite() {
            return Err(Error::NonFiniteLoss {
                epoch: 0,
                batch: 0,
                value: loss,
            });
        }
        let correct = match targets {
            Targets::Classes(c) => Some(eval::count_correct(tape.output(), c)),
            _ => None,
        };
        let grads = net.backward_params(&tape, grad.view())?;
        net.update_running_stats(&tape)?;
        step(net, &mut self.optimizer, &grads, self.masks.as_ref())?;
        self.steps += 1;
        Ok(StepOutcome {
            loss,
            samples: targets.len(),
            correct,
        })
    }
}

/// A seed for step `n` of a run seeded with `seed` (SplitMix64's finaliser, so that nearby
/// inputs give unrelated seeds).
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
