//! The weight pruning strategy: element, channel and N:M pruning by magnitude, by random keys, by
//! user-supplied importance scores or by any [`ElementScore`].

use std::fmt::Debug;
use std::sync::Arc;

use ndarray::{ArrayD, ArrayViewD};

use super::{Context, ParamFilter, Plan, PruneStrategy};
use crate::amount::{Amount, CountRule};
use crate::error::{Error, Result};
use crate::mask::{Mask, MaskSet};
use crate::params::{Params, check_finite};
use crate::select::{self, Norm, Scores, Source};

/// A per-element importance score: the one thing a custom criterion has to provide.
///
/// Higher scores are more important; the lowest go first. The selection engine then gives the
/// criterion every granularity and scope of [`WeightPruning`].
///
/// ```
/// use ndarray::{ArrayD, ArrayViewD};
/// use shears::strategy::{Context, Criterion, ElementScore, PruneStrategy, WeightPruning};
/// use shears::{Amount, Params};
///
/// /// Prefers positive weights: a toy criterion.
/// #[derive(Debug)]
/// struct Positive;
///
/// impl ElementScore for Positive {
///     fn name(&self) -> &str {
///         "positive"
///     }
///     fn score(&self, _: &str, w: ArrayViewD<'_, f32>, _: &Context<'_>) -> shears::Result<ArrayD<f32>> {
///         Ok(w.to_owned())
///     }
/// }
///
/// let params: Params = [("w", ndarray::array![[3.0_f32, -1.0], [-2.0, 0.5]].into_dyn())]
///     .into_iter()
///     .collect();
/// let plan = WeightPruning::new(Amount::Count(2))
///     .criterion(Criterion::custom(Positive))
///     .plan(&Context::new(&params))?;
/// assert_eq!(plan.masks.get("w").unwrap().as_slice(), &[true, false, false, true]);
/// # Ok::<(), shears::Error>(())
/// ```
pub trait ElementScore: Send + Sync + Debug {
    /// A short name for reports.
    fn name(&self) -> &str;

    /// Scores every element of the tensor `name`, whose current values are `weight`. The result
    /// must have the weight's shape and finite values.
    ///
    /// # Errors
    /// Whatever prevents scoring (missing statistics, say).
    fn score(
        &self,
        name: &str,
        weight: ArrayViewD<'_, f32>,
        ctx: &Context<'_>,
    ) -> Result<ArrayD<f32>>;
}

/// What ranks the units.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Criterion {
    /// `|w|`: magnitude pruning (Han et al. 2015; PyTorch `l1_unstructured`, `ln_structured`).
    Magnitude,
    /// Seeded uniform random scores: the baseline every criterion should beat. The same seed
    /// gives the same masks whatever the thread count.
    Random {
        /// The seed.
        seed: u64,
    },
    /// User-supplied scores, one tensor per pruned parameter with the same name and shape,
    /// ranked by absolute value: PyTorch's `importance_scores`.
    Importance(Arc<Params>),
    /// Any [`ElementScore`], ranked by signed value.
    Custom(Arc<dyn ElementScore>),
}

impl Criterion {
    /// Wraps a custom score.
    pub fn custom(score: impl ElementScore + 'static) -> Self {
        Criterion::Custom(Arc::new(score))
    }

    /// A short name for reports.
    pub fn name(&self) -> &str {
        match self {
            Criterion::Magnitude => "magnitude",
            Criterion::Random { .. } => "random",
            Criterion::Importance(_) => "importance",
            Criterion::Custom(s) => s.name(),
        }
    }
}

/// Which channel axis of a PyTorch-layout weight is pruned whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ChannelAxis {
    /// Dimension 0: output channels, neurons, filters.
    Out,
    /// Dimension 1: input channels.
    In,
}

impl ChannelAxis {
    fn index(self) -> usize {
        match self {
            ChannelAxis::Out => 0,
            ChannelAxis::In => 1,
        }
    }
}

/// The unit that is ranked and removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Granularity {
    /// Single weights.
    Element,
    /// Whole slices along a channel axis, ranked by the `norm` of their scores (PyTorch
    /// `ln_structured`). Channels with nothing left no longer count as remaining.
    Channels {
        /// The axis.
        axis: ChannelAxis,
        /// The norm that scores a channel.
        norm: Norm,
    },
    /// Keep `n` of every `m` consecutive weights along the input-channel axis (NVIDIA's 2:4 is
    /// `n = 2, m = 4`); the amount is implied.
    NM {
        /// Weights kept per group.
        n: usize,
        /// Group length.
        m: usize,
    },
}

/// Which units are ranked against each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Scope {
    /// Each tensor on its own, with its own amount.
    #[default]
    Layer,
    /// All selected tensors together, as if concatenated in order (ties go to the earlier
    /// tensor); without copying them.
    Global,
    /// Each output row (slice along dimension 0) on its own: Wanda's comparison group.
    Row,
}

/// Magnitude, random, importance or custom-score pruning of weights, by element, channel or N:M,
/// per layer, per row or globally.
///
/// ```
/// use ndarray::array;
/// use shears::strategy::{Context, PruneStrategy, Scope, WeightPruning};
/// use shears::{Amount, Params};
///
/// let mut params: Params = [
///     ("a.weight", array![[1.0_f32, 2.0, 3.0, 4.0], [-4.0, -3.0, -2.0, -1.0]].into_dyn()),
///     ("b.weight", array![[0.0_f32, 0.1, -2.0]].into_dyn()),
/// ]
/// .into_iter()
/// .collect();
/// // PyTorch's global_unstructured test: the 4 smallest |w| of both tensors together.
/// let plan = WeightPruning::new(Amount::Count(4))
///     .scope(Scope::Global)
///     .plan(&Context::new(&params))?;
/// plan.apply(&mut params)?;
/// assert_eq!(params.slice("a.weight").unwrap(), &[0.0, 2.0, 3.0, 4.0, -4.0, -3.0, -2.0, 0.0]);
/// assert_eq!(params.slice("b.weight").unwrap(), &[0.0, 0.0, -2.0]);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct WeightPruning {
    criterion: Criterion,
    granularity: Granularity,
    scope: Scope,
    amount: Option<Amount>,
    rule: CountRule,
    filter: ParamFilter,
}

impl WeightPruning {
    /// Element-wise magnitude pruning of `amount` per layer; change any setting with the builder
    /// methods.
    pub fn new(amount: Amount) -> Self {
        WeightPruning {
            criterion: Criterion::Magnitude,
            granularity: Granularity::Element,
            scope: Scope::Layer,
            amount: Some(amount),
            rule: CountRule::default(),
            filter: ParamFilter::default(),
        }
    }

    /// N:M pruning by magnitude: keep `n` of every `m` consecutive weights along axis 1.
    pub fn n_m(n: usize, m: usize) -> Self {
        WeightPruning {
            granularity: Granularity::NM { n, m },
            amount: None,
            ..WeightPruning::new(Amount::Count(0))
        }
    }

    /// Sets what ranks the units (default: magnitude).
    pub fn criterion(mut self, criterion: Criterion) -> Self {
        self.criterion = criterion;
        self
    }

    /// Sets the unit (default: elements).
    pub fn granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// Sets the comparison group (default: per layer).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Sets the rule that turns fractions into counts (default: PyTorch's round half to even).
    pub fn count_rule(mut self, rule: CountRule) -> Self {
        self.rule = rule;
        self
    }

    /// Sets which tensors are pruned (default: every tensor with two or more dimensions).
    pub fn filter(mut self, filter: ParamFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Checks that the settings fit together, before any weight is looked at.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`], [`Error::InvalidNm`], or an invalid amount.
    pub fn validate(&self) -> Result<()> {
        match (self.granularity, self.amount) {
            (Granularity::NM { n, m }, None) => {
                if n == 0 || n > m {
                    return Err(Error::InvalidNm { n, m });
                }
                if self.scope != Scope::Layer {
                    return Err(Error::invalid(
                        "scope",
                        "N:M groups are their own comparison groups; use the layer scope",
                    ));
                }
                Ok(())
            }
            (Granularity::NM { .. }, Some(_)) => Err(Error::invalid(
                "amount",
                "N:M sets its own amount; do not give a sparsity, count or threshold with it",
            )),
            (_, None) => Err(Error::invalid("amount", "no amount given")),
            (Granularity::Channels { .. }, Some(_)) if self.scope == Scope::Row => Err(
                Error::invalid("scope", "the row scope ranks elements, not channels"),
            ),
            (_, Some(Amount::Threshold(_)))
                if matches!(self.criterion, Criterion::Random { .. }) =>
            {
                Err(Error::invalid(
                    "amount",
                    "a threshold is meaningless for random scores",
                ))
            }
            (_, Some(amount)) => amount.validate(),
        }
    }

    /// Scores of every selected tensor, owned where the criterion computes them.
    fn scores<'p>(&self, ctx: &Context<'p>, names: &[&'p str]) -> Result<Vec<TensorScores<'p>>> {
        names
            .iter()
            .map(|&name| {
                let params = ctx.params();
                let w = params.get(name).expect("selected from these params");
                let values = params.slice(name).expect("selected from these params");
                let position = params.position(name).expect("selected") as u64;
                let owned = match &self.criterion {
                    Criterion::Magnitude => Owned::None(values, Rank::Magnitude),
                    Criterion::Random { seed } => {
                        check_finite(name, w)?;
                        Owned::Random {
                            seed: *seed,
                            stream: position,
                        }
                    }
                    Criterion::Importance(scores) => {
                        check_finite(name, w)?;
                        let s = scores.get(name).ok_or_else(|| Error::UnknownTensor {
                            name: format!("{name} (importance scores)"),
                        })?;
                        Error::check_shape(name, w.shape(), s.shape())?;
                        Owned::Some(s.clone(), Rank::Magnitude)
                    }
                    Criterion::Custom(score) => {
                        check_finite(name, w)?;
                        let s = score.score(name, w.view(), ctx)?;
                        Error::check_shape(name, w.shape(), s.shape())?;
                        let s = s.as_standard_layout().into_owned();
                        Owned::Some(s, Rank::Signed)
                    }
                };
                let prior = ctx.mask(name);
                if let Some(m) = prior {
                    Error::check_shape(name, w.shape(), m.shape())?;
                }
                Ok(TensorScores {
                    name,
                    shape: w.shape().to_vec(),
                    scores: owned,
                    prior,
                })
            })
            .collect()
    }

    fn plan_elements(
        &self,
        amount: Amount,
        tensors: &[TensorScores<'_>],
    ) -> Result<Vec<Vec<bool>>> {
        let sources: Vec<Source<'_>> = tensors.iter().map(TensorScores::source).collect();
        match (self.scope, amount) {
            (_, Amount::Threshold(t)) => select::prune_at_or_below(&sources, t),
            (Scope::Global, amount) => {
                let k = self.count(amount, &sources, "global")?;
                select::prune_k(&sources, k)
            }
            (Scope::Layer, amount) => sources
                .iter()
                .map(|s| {
                    let k = self.count(amount, std::slice::from_ref(s), s.name)?;
                    Ok(select::prune_k(std::slice::from_ref(s), k)?.remove(0))
                })
                .collect(),
            (Scope::Row, amount) => tensors
                .iter()
                .zip(&sources)
                .map(|(t, s)| {
                    let row_len = t.shape[1..].iter().product::<usize>();
                    let count = |remaining: usize| {
                        Ok(amount
                            .units_to_prune(remaining, row_len, self.rule, t.name)?
                            .expect("thresholds handled above"))
                    };
                    select::prune_k_per_group(s, row_len, &count)
                })
                .collect(),
        }
    }

    fn plan_channels(
        &self,
        amount: Amount,
        axis: ChannelAxis,
        norm: Norm,
        tensors: &[TensorScores<'_>],
    ) -> Result<Vec<Vec<bool>>> {
        let a = axis.index();
        // Channel scores and which channels still have something kept.
        let mut channel_scores = Vec::with_capacity(tensors.len());
        let mut live = Vec::with_capacity(tensors.len());
        for t in tensors {
            if t.shape.len() < 2 {
                return Err(Error::invalid(
                    "granularity",
                    format!(
                        "channel pruning needs two or more dimensions; `{}` has shape {:?}",
                        t.name, t.shape
                    ),
                ));
            }
            channel_scores.push(match t.scores {
                Owned::Random { seed, stream } => ChannelScores::Random {
                    seed,
                    stream,
                    len: t.shape[a],
                },
                // PyTorch ranks the current, masked weight, so pruned weights count as zero;
                // importance and custom scores are ranked as given.
                Owned::None(..) | Owned::Some(..) => {
                    let masked = match t.scores {
                        Owned::None(..) => t.kept(),
                        _ => None,
                    };
                    let norms =
                        select::channel_norms(t.name, t.values(), &t.shape, a, norm, masked)?;
                    ChannelScores::Norms(norms)
                }
            });
            live.push(match t.prior {
                Some(mask) => mask.live_along(a)?,
                None => vec![true; t.shape[a]],
            });
        }
        let sources: Vec<Source<'_>> = tensors
            .iter()
            .zip(&channel_scores)
            .zip(&live)
            .map(|((t, c), l)| Source {
                name: t.name,
                scores: c.scores(),
                kept: Some(l),
            })
            .collect();
        let keep_channels = match (self.scope, amount) {
            (_, Amount::Threshold(th)) => select::prune_at_or_below(&sources, th)?,
            (Scope::Global, amount) => {
                let k = self.count(amount, &sources, "global")?;
                select::prune_k(&sources, k)?
            }
            (_, amount) => sources
                .iter()
                .map(|s| {
                    let k = self.count(amount, std::slice::from_ref(s), s.name)?;
                    Ok(select::prune_k(std::slice::from_ref(s), k)?.remove(0))
                })
                .collect::<Result<_>>()?,
        };
        Ok(tensors
            .iter()
            .zip(keep_channels)
            .map(|(t, channels)| expand_channels(t, a, &channels))
            .collect())
    }

    /// Units to prune over `sources`, relative to their candidates.
    fn count(&self, amount: Amount, sources: &[Source<'_>], scope: &str) -> Result<usize> {
        let total: usize = sources.iter().map(|s| s.scores.len()).sum();
        let remaining = select::count_candidates(sources);
        Ok(amount
            .units_to_prune(remaining, total, self.rule, scope)?
            .expect("thresholds are handled by the caller"))
    }
}

impl PruneStrategy for WeightPruning {
    fn name(&self) -> &str {
        "weight"
    }

    fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        self.validate()?;
        let names = self.filter.select(ctx.params())?;
        let tensors = self.scores(ctx, &names)?;
        let keeps = match (self.granularity, self.amount) {
            (Granularity::NM { n, m }, _) => tensors
                .iter()
                .map(|t| select::prune_n_m(&t.source(), &t.shape, n, m))
                .collect::<Result<Vec<_>>>()?,
            (Granularity::Element, Some(amount)) => self.plan_elements(amount, &tensors)?,
            (Granularity::Channels { axis, norm }, Some(amount)) => {
                self.plan_channels(amount, axis, norm, &tensors)?
            }
            (_, None) => unreachable!("validate() requires an amount"),
        };
        let mut masks = MaskSet::new();
        for (t, keep) in tensors.iter().zip(keeps) {
            masks.insert(t.name, Mask::from_vec(&t.shape, keep)?);
        }
        Ok(Plan::new(self.name(), masks))
    }
}

/// How the scores of a tensor are ordered.
#[derive(Clone, Copy, Debug)]
enum Rank {
    Magnitude,
    Signed,
}

/// Scores of one tensor: borrowed weights, an owned score array, or random keys.
#[derive(Debug)]
enum Owned<'p> {
    None(&'p [f32], Rank),
    Some(ArrayD<f32>, Rank),
    Random { seed: u64, stream: u64 },
}

#[derive(Debug)]
struct TensorScores<'p> {
    name: &'p str,
    shape: Vec<usize>,
    scores: Owned<'p>,
    prior: Option<&'p Mask>,
}

impl TensorScores<'_> {
    fn kept(&self) -> Option<&[bool]> {
        self.prior.map(Mask::as_slice)
    }

    fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// The score values (not for random scores, which have none).
    fn values(&self) -> &[f32] {
        match &self.scores {
            Owned::None(v, _) => v,
            Owned::Some(a, _) => a.as_slice().expect("standard layout"),
            Owned::Random { .. } => &[],
        }
    }

    fn source(&self) -> Source<'_> {
        let scores = match (&self.scores, self.values()) {
            (Owned::Random { seed, stream }, _) => Scores::Random {
                seed: *seed,
                stream: *stream,
                len: self.len(),
            },
            (Owned::None(_, Rank::Magnitude) | Owned::Some(_, Rank::Magnitude), v) => {
                Scores::Magnitude(v)
            }
            (Owned::None(_, Rank::Signed) | Owned::Some(_, Rank::Signed), v) => Scores::Signed(v),
        };
        Source {
            name: self.name,
            scores,
            kept: self.kept(),
        }
    }
}

#[derive(Debug)]
enum ChannelScores {
    Norms(Vec<f32>),
    Random { seed: u64, stream: u64, len: usize },
}

impl ChannelScores {
    fn scores(&self) -> Scores<'_> {
        match self {
            ChannelScores::Norms(v) => Scores::Magnitude(v),
            &ChannelScores::Random { seed, stream, len } => Scores::Random { seed, stream, len },
        }
    }
}

/// Element keep-flags from channel keep-flags, intersected with the prior mask.
fn expand_channels(t: &TensorScores<'_>, axis: usize, channels: &[bool]) -> Vec<bool> {
    let (outer, inner): (usize, usize) = (
        t.shape[..axis].iter().product(),
        t.shape[axis + 1..].iter().product(),
    );
    let mut keep = Vec::with_capacity(t.len());
    for _ in 0..outer {
        for &c in channels {
            keep.extend(std::iter::repeat_n(c, inner));
        }
    }
    if let Some(prior) = t.kept() {
        keep.iter_mut().zip(prior).for_each(|(k, &p)| *k &= p);
    }
    keep
}
