//! The pruning loop: plan → apply → evaluate → fine-tune → evaluate, step by step.

use std::fmt;
use std::time::Instant;

use super::Schedule;
use crate::data::Dataset;
use crate::error::Result;
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::strategy::{Context, Plan, PruneStrategy};
use crate::train::{Event, History, Optimizer, Sgd, Trainer};

/// Where a pruning run is.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Step {
    /// The step, counted from 1.
    pub index: usize,
    /// Number of steps in the run.
    pub steps: usize,
    /// The sparsity the schedule asks for after this step (absolute).
    pub target: f64,
    /// Epochs of fine-tuning after this step.
    pub epochs: usize,
}

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StepReport {
    /// The step.
    pub step: Step,
    /// The strategy's plan, as it decided it.
    pub plan: Plan,
    /// Fraction of the masked tensors' weights pruned after the step, earlier steps included.
    pub sparsity: f64,
    /// The metric right after pruning, before fine-tuning (when an evaluation was given).
    pub metric_pruned: Option<f64>,
    /// The metric after fine-tuning (when an evaluation was given and the step fine-tuned).
    pub metric_finetuned: Option<f64>,
    /// The fine-tuning epochs (empty without fine-tuning).
    pub history: History,
    /// Wall-clock seconds of the step: strategy (and its calibration), planning, fine-tuning and
    /// evaluation.
    pub seconds: f64,
}

impl StepReport {
    /// The metric at the end of the step: after fine-tuning if it ran, else right after pruning.
    pub fn metric(&self) -> Option<f64> {
        self.metric_finetuned.or(self.metric_pruned)
    }
}

/// Hears about a pruning run as it goes: to drive a progress bar, log, or stop looking early.
/// Every method does nothing by default.
///
/// Any `FnMut(&StepReport)` closure is an observer of finished steps.
pub trait PruneObserver {
    /// A step starts (before its strategy is asked for).
    fn step_started(&mut self, step: &Step) {
        let _ = step;
    }

    /// A fine-tuning batch or epoch of `step` ended.
    fn training(&mut self, step: &Step, event: &Event<'_>) {
        let _ = (step, event);
    }

    /// A step ended.
    fn step_finished(&mut self, report: &StepReport) {
        let _ = report;
    }
}

impl<F: FnMut(&StepReport)> PruneObserver for F {
    fn step_finished(&mut self, report: &StepReport) {
        self(report)
    }
}

/// The outcome of [`Pruner::run`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PruneRun {
    /// One report per step, in order.
    pub steps: Vec<StepReport>,
    /// Every mask at the end: what the network's zeros are.
    pub masks: MaskSet,
}

impl PruneRun {
    /// The last step's report.
    pub fn last(&self) -> Option<&StepReport> {
        self.steps.last()
    }
}

type Metric<'a> = Box<dyn FnMut(&Network) -> Result<f64> + 'a>;

/// Runs a [`Schedule`]: at each step, a strategy is asked for (given the step and the network as
/// it now is, so it can calibrate on it), its plan is applied on top of every earlier mask, the
/// network is evaluated, fine-tuned with all masks held, and evaluated again.
///
/// The fine-tuning epochs are spread over the steps: with `E` epochs over `n` steps each step
/// gets `⌊E/n⌋` and the last `E mod n` steps one more, so a gradual schedule costs no more
/// training than a one-shot one. The trainer (and its optimizer state) carries over from step
/// to step.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::data::{Dataset, Targets};
/// use shears::graph::Network;
/// use shears::schedule::{Pruner, Schedule};
/// use shears::strategy::{PruneStrategy, Scope, WeightPruning};
/// use shears::train::{Adam, Loss, Trainer, evaluate};
/// use shears::Amount;
///
/// let x = ArrayD::from_shape_fn(IxDyn(&[32, 4]), |i| ((i[0] * 5 + i[1] * 3) % 7) as f32 - 3.0);
/// let data = Dataset::new(x, Targets::Classes((0..32).map(|i| i % 2).collect()))?;
/// let mut net = Network::builder(&[4]).linear("fc1", 4, 16).relu("r").linear("fc2", 16, 2)
///     .build_init(0)?;
/// let mut steps = Vec::new();
/// let run = Pruner::new(Schedule::agp(0.75, 3))
///     .fine_tune(Trainer::new(Loss::CrossEntropy, Adam::new(1e-2)).batch_size(8), &data, 3)
///     .evaluate(|n| Ok(evaluate(n, &data, Loss::CrossEntropy, 32)?.accuracy.unwrap()))
///     .observe(|r: &shears::schedule::StepReport| steps.push(r.sparsity))
///     .run(&mut net, |step, _| {
///         Ok(Box::new(WeightPruning::new(Amount::Target(step.target)).scope(Scope::Global)))
///     })?;
/// assert_eq!(run.steps.len(), 3);
/// assert_eq!(run.masks.sparsity(), 0.75); // 60 of 80 weights, exactly
/// assert_eq!(steps.len(), 3);
/// # Ok::<(), shears::Error>(())
/// ```
pub struct Pruner<'a, O: Optimizer = Sgd> {
    schedule: Schedule,
    trainer: Option<(Trainer<O>, &'a Dataset, usize)>,
    metric: Option<Metric<'a>>,
    observers: Vec<Box<dyn PruneObserver + 'a>>,
    masks: MaskSet,
}

impl<O: Optimizer> fmt::Debug for Pruner<'_, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pruner")
            .field("schedule", &self.schedule)
            .field(
                "fine_tune",
                &self.trainer.as_ref().map(|(t, d, e)| (t, d.len(), e)),
            )
            .field("evaluates", &self.metric.is_some())
            .field("observers", &self.observers.len())
            .field("masks", &self.masks.len())
            .finish()
    }
}

impl<'a> Pruner<'a> {
    /// A pruner that follows `schedule`, without fine-tuning or evaluation until they are set.
    pub fn new(schedule: Schedule) -> Self {
        Pruner {
            schedule,
            trainer: None,
            metric: None,
            observers: Vec::new(),
            masks: MaskSet::new(),
        }
    }
}

impl<'a, O: Optimizer> Pruner<'a, O> {
    /// Fine-tunes on `data` with `trainer` (its masks are replaced by the run's) for `epochs`
    /// epochs in all, spread over the steps.
    pub fn fine_tune<P: Optimizer>(
        self,
        trainer: Trainer<P>,
        data: &'a Dataset,
        epochs: usize,
    ) -> Pruner<'a, P> {
        Pruner {
            schedule: self.schedule,
            trainer: Some((trainer, data, epochs)),
            metric: self.metric,
            observers: self.observers,
            masks: self.masks,
        }
    }

    /// Evaluates the network after pruning and after fine-tuning, with a metric of the user's
    /// choice (validation accuracy, say).
    pub fn evaluate(mut self, metric: impl FnMut(&Network) -> Result<f64> + 'a) -> Self {
        self.metric = Some(Box::new(metric));
        self
    }

    /// Adds an observer.
    pub fn observe(mut self, observer: impl PruneObserver + 'a) -> Self {
        self.observers.push(Box::new(observer));
        self
    }

    /// Starts from earlier masks: what they prune stays pruned.
    pub fn masks(mut self, masks: MaskSet) -> Self {
        self.masks = masks;
        self
    }

    /// The epochs of fine-tuning after step `index` (from 1) of `steps`.
    fn epochs_at(&self, index: usize, steps: usize) -> usize {
        let total = self.trainer.as_ref().map_or(0, |t| t.2);
        total / steps + usize::from(index > steps - total % steps)
    }

    /// Runs the schedule on `net`, asking `strategy_at` for each step's strategy.
    ///
    /// # Errors
    /// The schedule's ([`Schedule::validate`]), the strategy factory's, planning's, masking's,
    /// the trainer's ([`Trainer::fit_with`]) and the metric's errors. The network keeps what the
    /// steps before the error did.
    pub fn run<F>(mut self, net: &mut Network, mut strategy_at: F) -> Result<PruneRun>
    where
        F: FnMut(&Step, &Network) -> Result<Box<dyn PruneStrategy>>,
    {
        let targets = self.schedule.targets()?;
        let steps = targets.len();
        let mut reports = Vec::with_capacity(steps);
        for (i, &target) in targets.iter().enumerate() {
            let start = Instant::now();
            let step = Step {
                index: i + 1,
                steps,
                target,
                epochs: self.epochs_at(i + 1, steps),
            };
            self.observers
                .iter_mut()
                .for_each(|o| o.step_started(&step));
            let strategy = strategy_at(&step, net)?;
            let plan = strategy.plan(&Context::for_network(net).with_masks(&self.masks))?;
            self.masks = self.masks.and(&plan.masks)?;
            net.apply_masks(&self.masks)?;
            let metric_pruned = self.metric.as_mut().map(|m| m(net)).transpose()?;
            let mut history = History::default();
            let mut metric_finetuned = None;
            if step.epochs > 0
                && let Some((trainer, data, total)) = self.trainer.take()
            {
                let mut trainer = trainer.masks(self.masks.clone()).epochs(step.epochs);
                let observers = &mut self.observers;
                let fitted = trainer.fit_with(net, data, None, |event| {
                    observers.iter_mut().for_each(|o| o.training(&step, &event));
                });
                self.trainer = Some((trainer, data, total));
                history = fitted?;
                metric_finetuned = self.metric.as_mut().map(|m| m(net)).transpose()?;
            }
            let report = StepReport {
                step,
                sparsity: self.masks.sparsity(),
                plan,
                metric_pruned,
                metric_finetuned,
                history,
                seconds: start.elapsed().as_secs_f64(),
            };
            self.observers
                .iter_mut()
                .for_each(|o| o.step_finished(&report));
            reports.push(report);
        }
        Ok(PruneRun {
            steps: reports,
            masks: self.masks,
        })
    }
}
