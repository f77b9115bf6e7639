//! Optimizers with PyTorch's update rules: [`Sgd`] (momentum, dampening, Nesterov, weight decay)
//! and [`Adam`] (bias-corrected, L2 or decoupled weight decay).
//!
//! An optimizer updates one named tensor at a time ([`Optimizer::update`]) and keeps its state
//! (momentum buffers, moment estimates, step counts) per name, as PyTorch keeps it per parameter.
//! That keeps the trait object-safe and independent of where the tensors live; [`step`] applies
//! it to every parameter of a network, with or without masks.

use std::collections::HashMap;
use std::fmt;

use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::params::Params;

/// A first-order optimizer over named `f32` tensors.
///
/// Implementations keep whatever state they need under each tensor's name and expose it through
/// [`state`](Optimizer::state) and [`state_mut`](Optimizer::state_mut), so that mask-preserving
/// training can clear the state of pruned weights (nothing then pushes them back) and tests can
/// inspect it.
///
/// ```
/// use shears::train::{Optimizer, Sgd};
///
/// let mut sgd = Sgd::new(0.1).momentum(0.9);
/// let mut w = [1.0_f32, -2.0];
/// sgd.update("w", &mut w, &[0.5, 0.5])?;
/// assert_eq!(w, [0.95, -2.05]);
/// assert_eq!(sgd.state("w"), [("momentum_buffer", &[0.5_f32, 0.5][..])]);
/// # Ok::<(), shears::Error>(())
/// ```
pub trait Optimizer: fmt::Debug + Send {
    /// A short name for reports (`"sgd"`, `"adam"`).
    fn name(&self) -> &str;

    /// The learning rate.
    fn lr(&self) -> f64;

    /// Sets the learning rate (for schedules).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a negative or non-finite rate.
    fn set_lr(&mut self, lr: f64) -> Result<()>;

    /// Checks the settings; [`update`](Optimizer::update) and the trainer call it first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] naming the setting at fault.
    fn validate(&self) -> Result<()>;

    /// One update of the tensor `name` in place from its gradient.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when `grad` (or the state kept for `name`) does not have the
    /// parameter's length; as [`validate`](Optimizer::validate).
    fn update(&mut self, name: &str, param: &mut [f32], grad: &[f32]) -> Result<()>;

    /// The state kept for `name`, each buffer under PyTorch's state key (`momentum_buffer`,
    /// `exp_avg`, `exp_avg_sq`); empty before the first update.
    fn state(&self, name: &str) -> Vec<(&'static str, &[f32])>;

    /// The state buffers kept for `name`, mutably, in the order of [`state`](Optimizer::state).
    fn state_mut(&mut self, name: &str) -> Vec<&mut [f32]>;

    /// Forgets all state, as a freshly built optimizer.
    fn reset(&mut self);
}

impl<O: Optimizer + ?Sized> Optimizer for Box<O> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn lr(&self) -> f64 {
        (**self).lr()
    }
    fn set_lr(&mut self, lr: f64) -> Result<()> {
        (**self).set_lr(lr)
    }
    fn validate(&self) -> Result<()> {
        (**self).validate()
    }
    fn update(&mut self, name: &str, param: &mut [f32], grad: &[f32]) -> Result<()> {
        (**self).update(name, param, grad)
    }
    fn state(&self, name: &str) -> Vec<(&'static str, &[f32])> {
        (**self).state(name)
    }
    fn state_mut(&mut self, name: &str) -> Vec<&mut [f32]> {
        (**self).state_mut(name)
    }
    fn reset(&mut self) {
        (**self).reset()
    }
}

/// One optimizer step over a network: every tensor of `grads` (named as the network's
/// parameters) is updated by `optimizer`. With `masks`, every pruned element stays exactly zero:
/// its gradient is zeroed before the update, its optimizer state after it, and the weight itself
/// is set back to zero, so neither momentum nor weight decay can revive it.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::graph::{Linear, Mode, Network};
/// use shears::train::{Adam, Optimizer, step};
/// use shears::{Mask, MaskSet};
///
/// let mut net = Network::builder(&[2]).layer("fc", Linear::new(2, 2)).build_init(0)?;
/// let mut masks = MaskSet::new();
/// masks.insert("fc.weight", Mask::from_vec(&[2, 2], vec![true, false, false, true])?);
/// net.apply_masks(&masks)?;
/// let x = ArrayD::from_elem(IxDyn(&[3, 2]), 1.0f32);
/// let tape = net.forward_tape(x.view(), Mode::Eval)?;
/// let grads = net.backward_params(&tape, ArrayD::ones(IxDyn(&[3, 2])).view())?;
/// let mut adam = Adam::new(0.1);
/// step(&mut net, &mut adam, &grads, Some(&masks))?;
/// let w = net.params().slice("fc.weight").unwrap();
/// assert_eq!((w[1], w[2]), (0.0, 0.0));
/// assert_eq!(adam.state("fc.weight")[0].1[1], 0.0);
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
///
/// [`Error::UnknownTensor`] for a gradient or mask that names no parameter;
/// [`Error::ShapeMismatch`] for one of another shape; as [`Optimizer::update`]. Masks are
/// checked before anything changes.
pub fn step(
    net: &mut Network,
    optimizer: &mut dyn Optimizer,
    grads: &Params,
    masks: Option<&MaskSet>,
) -> Result<()> {
    if let Some(masks) = masks {
        masks.check(net.params())?;
    }
    for (name, _) in grads.iter() {
        let p = net.params().get(name).ok_or_else(|| Error::UnknownTensor {
            name: name.to_string(),
        })?;
        Error::check_shape(name, p.shape(), grads.get(name).expect("listed").shape())?;
    }
    let mut params = net.params_mut();
    let mut masked = Vec::new();
    for (name, g) in grads.iter() {
        let mut p = params.get_mut(name).expect("checked above");
        let p = p
            .as_slice_mut()
            .expect("Params keeps every tensor in standard layout");
        let g = g
            .as_slice()
            .expect("Params keeps every tensor in standard layout");
        match masks.and_then(|m| m.get(name)) {
            None => optimizer.update(name, p, g)?,
            Some(mask) => {
                let keep = mask.as_slice();
                masked.clear();
                masked.extend(g.iter().zip(keep).map(|(&g, &k)| if k { g } else { 0.0 }));
                optimizer.update(name, p, &masked)?;
                for buffer in optimizer.state_mut(name) {
                    zero_pruned(buffer, keep);
                }
                zero_pruned(p, keep);
            }
        }
    }
    Ok(())
}

fn zero_pruned(values: &mut [f32], keep: &[bool]) {
    for (v, &k) in values.iter_mut().zip(keep) {
        if !k {
            *v = 0.0;
        }
    }
}

fn check_setting(what: &str, value: f64, ok: bool, range: &str) -> Result<()> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            format!("must be a finite number {range}, got {value}"),
        ))
    }
}

fn check_lengths(name: &str, param: &[f32], grad: &[f32]) -> Result<()> {
    Error::check_shape(name, &[param.len()], &[grad.len()])
}

/// Stochastic gradient descent, PyTorch's `torch.optim.SGD`:
///
/// ```text
/// g = grad + weight_decay · p
/// b = g                                         (first step)
/// b = momentum · b + (1 − dampening) · g        (later steps)
/// d = g + momentum · b  (Nesterov)  or  b  (otherwise; g without momentum)
/// p = p − lr · d
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Sgd {
    lr: f64,
    momentum: f64,
    dampening: f64,
    nesterov: bool,
    weight_decay: f64,
    buffers: HashMap<String, Vec<f32>>,
}

impl Sgd {
    /// Plain gradient descent with learning rate `lr` (settings are checked on first use, see
    /// [`Optimizer::validate`]).
    pub fn new(lr: f64) -> Self {
        Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            buffers: HashMap::new(),
        }
    }

    /// Sets the momentum factor (default 0: none).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets the dampening of the momentum (default 0).
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }

    /// Uses Nesterov momentum (needs momentum and no dampening).
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// Sets the L2 penalty added to the gradient (default 0).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
}

impl Optimizer for Sgd {
    fn name(&self) -> &str {
        "sgd"
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_setting("learning rate", lr, lr >= 0.0, ">= 0")?;
        self.lr = lr;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        check_setting("learning rate", self.lr, self.lr >= 0.0, ">= 0")?;
        check_setting("momentum", self.momentum, self.momentum >= 0.0, ">= 0")?;
        check_setting("dampening", self.dampening, true, "")?;
        check_setting(
            "weight decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            ">= 0",
        )?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid(
                "nesterov",
                "Nesterov momentum needs a positive momentum and zero dampening",
            ));
        }
        Ok(())
    }

    fn update(&mut self, name: &str, param: &mut [f32], grad: &[f32]) -> Result<()> {
        self.validate()?;
        check_lengths(name, param, grad)?;
        let (lr, wd) = (self.lr as f32, self.weight_decay as f32);
        let (m, damp) = (self.momentum as f32, 1.0 - self.dampening as f32);
        let decayed = |p: f32, g: f32| if wd != 0.0 { g + wd * p } else { g };
        if self.momentum == 0.0 {
            for (p, &g) in param.iter_mut().zip(grad) {
                *p -= lr * decayed(*p, g);
            }
            return Ok(());
        }
        let first = !self.buffers.contains_key(name);
        let buf = self
            .buffers
            .entry(name.to_string())
            .or_insert_with(|| vec![0.0; param.len()]);
        check_lengths(name, param, buf)?;
        for ((p, &g), b) in param.iter_mut().zip(grad).zip(buf.iter_mut()) {
            let g = decayed(*p, g);
            *b = if first { g } else { m * *b + damp * g };
            let d = if self.nesterov { g + m * *b } else { *b };
            *p -= lr * d;
        }
        Ok(())
    }

    fn state(&self, name: &str) -> Vec<(&'static str, &[f32])> {
        self.buffers
            .get(name)
            .map(|b| ("momentum_buffer", b.as_slice()))
            .into_iter()
            .collect()
    }

    fn state_mut(&mut self, name: &str) -> Vec<&mut [f32]> {
        self.buffers
            .get_mut(name)
            .map(Vec::as_mut_slice)
            .into_iter()
            .collect()
    }

    fn reset(&mut self) {
        self.buffers.clear();
    }
}

/// Adam, PyTorch's `torch.optim.Adam` (and `AdamW` with
/// [`decoupled_weight_decay`](Adam::decoupled_weight_decay)), per tensor with step count `t`:
///
/// ```text
/// g = grad + weight_decay · p          (L2; decoupled: p = p · (1 − lr · weight_decay) instead)
/// m = m + (1 − β₁) · (g − m)
/// v = β₂ · v + (1 − β₂) · g²
/// p = p − lr / (1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + eps)
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    lr: f64,
    betas: (f64, f64),
    eps: f64,
    weight_decay: f64,
    decoupled: bool,
    state: HashMap<String, AdamState>,
}

#[derive(Clone, Debug, PartialEq)]
struct AdamState {
    step: i32,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

impl Adam {
    /// Adam with learning rate `lr` and PyTorch's defaults: betas `(0.9, 0.999)`, eps `1e-8`, no
    /// weight decay.
    pub fn new(lr: f64) -> Self {
        Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            state: HashMap::new(),
        }
    }

    /// Sets the decay rates of the first and second moment estimates, each in `[0, 1)`.
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }

    /// Sets the term added to the denominator (default `1e-8`).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the weight decay (default 0).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Decays weights directly (`p · (1 − lr · weight_decay)`, AdamW, Loshchilov & Hutter 2019)
    /// instead of adding an L2 term to the gradient.
    pub fn decoupled_weight_decay(mut self, decoupled: bool) -> Self {
        self.decoupled = decoupled;
        self
    }

    /// Number of updates applied to `name` so far.
    pub fn steps(&self, name: &str) -> usize {
        self.state.get(name).map_or(0, |s| s.step as usize)
    }
}

impl Optimizer for Adam {
    fn name(&self) -> &str {
        if self.decoupled { "adamw" } else { "adam" }
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) -> Result<()> {
        check_setting("learning rate", lr, lr >= 0.0, ">= 0")?;
        self.lr = lr;
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        check_setting("learning rate", self.lr, self.lr >= 0.0, ">= 0")?;
        let (b1, b2) = self.betas;
        check_setting("beta1", b1, (0.0..1.0).contains(&b1), "in [0, 1)")?;
        check_setting("beta2", b2, (0.0..1.0).contains(&b2), "in [0, 1)")?;
        check_setting("eps", self.eps, self.eps >= 0.0, ">= 0")?;
        check_setting(
            "weight decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            ">= 0",
        )
    }

    fn update(&mut self, name: &str, param: &mut [f32], grad: &[f32]) -> Result<()> {
        self.validate()?;
        check_lengths(name, param, grad)?;
        let s = self
            .state
            .entry(name.to_string())
            .or_insert_with(|| AdamState {
                step: 0,
                exp_avg: vec![0.0; param.len()],
                exp_avg_sq: vec![0.0; param.len()],
            });
        check_lengths(name, param, &s.exp_avg)?;
        s.step = s.step.saturating_add(1);
        let (b1, b2) = self.betas;
        let step_size = (self.lr / (1.0 - b1.powi(s.step))) as f32;
        let bc2_sqrt = (1.0 - b2.powi(s.step)).sqrt() as f32;
        let (lr, wd, eps) = (self.lr as f32, self.weight_decay as f32, self.eps as f32);
        let (one_minus_b1, b2, one_minus_b2) = ((1.0 - b1) as f32, b2 as f32, (1.0 - b2) as f32);
        let decay = if self.decoupled { 1.0 - lr * wd } else { 1.0 };
        let l2 = if self.decoupled { 0.0 } else { wd };
        for (((p, &g), m), v) in param
            .iter_mut()
            .zip(grad)
            .zip(s.exp_avg.iter_mut())
            .zip(s.exp_avg_sq.iter_mut())
        {
            let g = if l2 != 0.0 { g + l2 * *p } else { g };
            if decay != 1.0 {
                *p *= decay;
            }
            *m += one_minus_b1 * (g - *m);
            *v = b2 * *v + one_minus_b2 * g * g;
            *p -= step_size * *m / (v.sqrt() / bc2_sqrt + eps);
        }
        Ok(())
    }

    fn state(&self, name: &str) -> Vec<(&'static str, &[f32])> {
        match self.state.get(name) {
            Some(s) => vec![
                ("exp_avg", s.exp_avg.as_slice()),
                ("exp_avg_sq", s.exp_avg_sq.as_slice()),
            ],
            None => Vec::new(),
        }
    }

    fn state_mut(&mut self, name: &str) -> Vec<&mut [f32]> {
        match self.state.get_mut(name) {
            Some(s) => vec![s.exp_avg.as_mut_slice(), s.exp_avg_sq.as_mut_slice()],
            None => Vec::new(),
        }
    }

    fn reset(&mut self) {
        self.state.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgd_by_hand() {
        // Momentum 0.5, dampening 0.5, weight decay 0.1 on p = 1, g = 1: g' = 1.1;
        // step 1: b = 1.1, p = 1 - 0.1 · 1.1 = 0.89;
        // step 2: g' = 1 + 0.089 = 1.089, b = 0.55 + 0.5445 = 1.0945, p = 0.89 - 0.10945.
        let mut sgd = Sgd::new(0.1).momentum(0.5).dampening(0.5).weight_decay(0.1);
        let mut p = [1.0f32];
        sgd.update("p", &mut p, &[1.0]).unwrap();
        assert!((p[0] - 0.89).abs() < 1e-7);
        sgd.update("p", &mut p, &[1.0]).unwrap();
        assert!((p[0] - (0.89 - 0.10945)).abs() < 1e-6, "{}", p[0]);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // With bias correction the first step is lr · g / (|g| + eps') = lr · sign(g).
        let mut adam = Adam::new(0.01);
        let mut p = [0.0f32, 0.0];
        adam.update("p", &mut p, &[3.0, -0.5]).unwrap();
        assert!(
            (p[0] + 0.01).abs() < 1e-7 && (p[1] - 0.01).abs() < 1e-7,
            "{p:?}"
        );
        assert_eq!(adam.steps("p"), 1);
        adam.reset();
        assert_eq!(adam.steps("p"), 0);
        assert!(adam.state("p").is_empty());
    }

    #[test]
    fn invalid_settings_are_errors() {
        let mut p = [0.0f32];
        let bad: [Box<dyn Optimizer>; 5] = [
            Box::new(Sgd::new(-1.0)),
            Box::new(Sgd::new(0.1).nesterov(true)),
            Box::new(Sgd::new(0.1).momentum(0.9).dampening(0.1).nesterov(true)),
            Box::new(Adam::new(0.1).betas(0.9, 1.0)),
            Box::new(Adam::new(f64::NAN)),
        ];
        for mut opt in bad {
            let e = opt.update("p", &mut p, &[1.0]).unwrap_err();
            assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
        }
        assert_eq!(p, [0.0]);
        let mut adam = Adam::new(0.1);
        assert!(adam.set_lr(-0.5).is_err());
        assert!(matches!(
            adam.update("p", &mut p, &[1.0, 2.0]),
            Err(Error::ShapeMismatch { .. })
        ));
        adam.update("p", &mut p, &[1.0]).unwrap();
        let mut longer = [0.0f32; 2];
        assert!(matches!(
            adam.update("p", &mut longer, &[1.0, 1.0]),
            Err(Error::ShapeMismatch { .. })
        ));
    }
}
