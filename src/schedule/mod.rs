//! Pruning schedules and the pruning loop.
//!
//! A [`Schedule`] says how sparse the model is after each step: all at once, in `n` steps that
//! each remove the same fraction of what remains, or along Zhu and Gupta's cubic curve (AGP).
//! Its targets are absolute (fractions of the whole), so the last step lands exactly on the
//! final target whatever was pruned before; strategies take them as [`Amount::Target`].
//!
//! A [`Pruner`] runs the loop: for each step it asks for a strategy (calibrating if the
//! strategy needs statistics of the network as it now is), plans, applies the masks, evaluates,
//! fine-tunes holding every mask so far, and evaluates again; [`PruneObserver`]s hear about
//! every step and every training batch, and each step's plan is kept in its [`StepReport`].
//!
//! [`Amount::Target`]: crate::Amount::Target

mod pruner;

pub use pruner::{PruneObserver, PruneRun, Pruner, Step, StepReport};

use crate::amount::Amount;
use crate::error::{Error, Result};

/// How sparse the model is after each step of a pruning run.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Schedule {
    /// One step straight to `target`.
    OneShot {
        /// Final sparsity.
        target: f64,
    },
    /// `steps` steps, each pruning the same fraction `p = 1 − (1 − target)^(1/steps)` of the
    /// weights that remain: after step `t` the sparsity is `1 − (1 − target)^(t/steps)`, and
    /// exactly `target` after the last (Han et al. 2015's iterative pruning).
    Iterative {
        /// Final sparsity.
        target: f64,
        /// Number of steps, at least 1.
        steps: usize,
    },
    /// Automated gradual pruning (Zhu and Gupta 2017, "To prune, or not to prune"): after step
    /// `t` of `n` the sparsity is `s_t = s_f + (s_i − s_f)(1 − t/n)³`, fast at first when the
    /// network has redundant weights to spare, slow at the end.
    Agp {
        /// Sparsity `s_i` before the first step (usually 0).
        initial: f64,
        /// Final sparsity `s_f`.
        target: f64,
        /// Number of steps `n`, at least 1.
        steps: usize,
    },
}

impl Schedule {
    /// One step to `target`.
    pub fn one_shot(target: f64) -> Self {
        Schedule::OneShot { target }
    }

    /// `steps` geometric steps to `target`.
    pub fn iterative(target: f64, steps: usize) -> Self {
        Schedule::Iterative { target, steps }
    }

    /// AGP from 0 to `target` in `steps` steps.
    pub fn agp(target: f64, steps: usize) -> Self {
        Schedule::Agp {
            initial: 0.0,
            target,
            steps,
        }
    }

    /// Number of steps.
    pub fn steps(&self) -> usize {
        match *self {
            Schedule::OneShot { .. } => 1,
            Schedule::Iterative { steps, .. } | Schedule::Agp { steps, .. } => steps,
        }
    }

    /// The final sparsity.
    pub fn target(&self) -> f64 {
        match *self {
            Schedule::OneShot { target }
            | Schedule::Iterative { target, .. }
            | Schedule::Agp { target, .. } => target,
        }
    }

    /// Checks the fractions and the number of steps.
    ///
    /// # Errors
    /// [`Error::InvalidSparsity`] for a fraction outside `[0, 1]`; [`Error::InvalidParameter`]
    /// for zero steps or an AGP whose initial sparsity exceeds its target.
    pub fn validate(&self) -> Result<()> {
        Amount::Sparsity(self.target()).validate()?;
        if self.steps() == 0 {
            return Err(Error::invalid("steps", "a schedule needs at least 1 step"));
        }
        if let Schedule::Agp {
            initial, target, ..
        } = *self
        {
            Amount::Sparsity(initial).validate()?;
            if initial > target {
                return Err(Error::invalid(
                    "initial",
                    format!("AGP's initial sparsity {initial} exceeds its target {target}"),
                ));
            }
        }
        Ok(())
    }

    /// The sparsity after each step, in order; the last is the target exactly.
    ///
    /// ```
    /// use shears::schedule::Schedule;
    ///
    /// let t = Schedule::iterative(0.75, 2).targets()?;
    /// assert_eq!(t, [0.5, 0.75]);
    /// let t = Schedule::agp(0.9, 3).targets()?;
    /// // 0.9 (1 − (2/3)³), 0.9 (1 − (1/3)³), 0.9
    /// assert!((t[0] - 0.9 * (1.0 - 8.0 / 27.0)).abs() < 1e-12);
    /// assert!((t[1] - 0.9 * (1.0 - 1.0 / 27.0)).abs() < 1e-12);
    /// assert_eq!(t[2], 0.9);
    /// # Ok::<(), shears::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`Schedule::validate`].
    pub fn targets(&self) -> Result<Vec<f64>> {
        self.validate()?;
        let n = self.steps();
        Ok((1..=n)
            .map(|t| {
                if t == n {
                    return self.target();
                }
                let frac = t as f64 / n as f64;
                match *self {
                    Schedule::OneShot { target } => target,
                    Schedule::Iterative { target, .. } => 1.0 - (1.0 - target).powf(frac),
                    Schedule::Agp {
                        initial, target, ..
                    } => target + (initial - target) * (1.0 - frac).powi(3),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests;
