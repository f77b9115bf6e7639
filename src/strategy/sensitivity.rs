//! The sensitivity strategy: how much each layer can lose, measured or estimated.
//!
//! - [`SensitivityAnalysis`] prunes each layer alone over a grid of sparsities and evaluates a
//!   metric of the user's choice at each point (Han et al. 2015, §3.3; Distiller's
//!   `sensitivity_analysis`), giving one [`LayerCurve`] per layer.
//! - [`Sensitivity::allocate`] turns those curves into per-layer sparsities that meet a global
//!   target (a fraction of the weights or of their FLOPs) with the least predicted metric drop,
//!   and [`LayerSparsities`] prunes by them.
//! - [`SigmaThreshold`] prunes `|w| ≤ s·σ(W)` per layer, σ the unbiased standard deviation of
//!   the tensor: Distiller's `SensitivityPruner` (Han et al. 2015).
//! - [`Criterion::taylor`] and [`Criterion::snip`] rank weights by gradient saliency, the
//!   first-order Taylor estimate `Σ|w·∂L/∂w|` (Molchanov et al. 2017) or SNIP's normalised
//!   connection sensitivity `|g·w| / Σ|g·w|` (Lee et al. 2019), from the
//!   [`GradientScores`] of [`crate::train::accumulate_scores`]; [`WeightPruning`] then selects by
//!   them at any granularity and scope.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::{Context, Criterion, Granularity, ParamFilter, Plan, PruneStrategy, WeightPruning};
use crate::amount::Amount;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;
use crate::params::Params;
use crate::train::GradientScores;

/// Prunes each selected layer alone over a grid of sparsities and evaluates a metric at each
/// point, restoring the layer's weights in place after each one.
///
/// The units are ranked by magnitude at the chosen granularity (elements, or channels by their
/// norm), as [`WeightPruning`] does; each point prunes the given fraction of the whole tensor.
/// The metric is any closure over the network whose value is *higher when better*, such as
/// validation accuracy (pass the negated loss for a loss). It runs `1 + layers × grid points`
/// times; only one tensor is copied at a time.
///
/// ```
/// use shears::graph::Network;
/// use shears::strategy::SensitivityAnalysis;
///
/// let mut net = Network::builder(&[4]).linear("fc1", 4, 8).relu("act").linear("fc2", 8, 2)
///     .build_init(0)?;
/// let before = net.params().clone();
/// // A toy metric: the (negated) mean |output| change would do; here, the sum of |weights|.
/// let s = SensitivityAnalysis::new(vec![0.5, 0.9])
///     .run(&mut net, |n| Ok(n.params().iter().map(|(_, w)| w.iter().map(|v| v.abs()).sum::<f32>() as f64).sum()))?;
/// assert_eq!(s.curves.len(), 2);
/// assert_eq!(s.curves[0].name, "fc1.weight");
/// assert!(s.curves[0].points[1].metric < s.curves[0].points[0].metric);
/// assert_eq!(net.params(), &before); // weights restored
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SensitivityAnalysis {
    sparsities: Vec<f64>,
    granularity: Granularity,
    filter: ParamFilter,
}

impl SensitivityAnalysis {
    /// An analysis over the grid `sparsities` (each in `[0, 1]`), by element magnitude, of every
    /// tensor with two or more dimensions.
    pub fn new(sparsities: impl Into<Vec<f64>>) -> Self {
        SensitivityAnalysis {
            sparsities: sparsities.into(),
            granularity: Granularity::Element,
            filter: ParamFilter::default(),
        }
    }

    /// Sets the unit pruned at each point: elements (default) or channels. N:M is rejected, as
    /// it has no sparsity grid.
    pub fn granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// Sets which tensors are analysed (default: every tensor with two or more dimensions).
    pub fn filter(mut self, filter: ParamFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The grid.
    pub fn sparsities(&self) -> &[f64] {
        &self.sparsities
    }

    /// Runs the analysis. `net` is changed while it runs and restored exactly, on error too.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an empty grid or an N:M granularity,
    /// [`Error::InvalidSparsity`] for a grid point outside `[0, 1]`, [`Error::NonFinite`] for a
    /// NaN metric, the filter's errors, and whatever the metric returns.
    pub fn run<F>(&self, net: &mut Network, mut metric: F) -> Result<Sensitivity>
    where
        F: FnMut(&Network) -> Result<f64>,
    {
        if self.sparsities.is_empty() {
            return Err(Error::invalid("sparsities", "the grid is empty"));
        }
        for &s in &self.sparsities {
            Amount::Sparsity(s).validate()?;
        }
        if matches!(self.granularity, Granularity::NM { .. }) {
            return Err(Error::invalid(
                "granularity",
                "N:M has no sparsity grid; analyse elements or channels",
            ));
        }
        let mut checked = |net: &Network, what: &str| -> Result<f64> {
            let m = metric(net)?;
            if m.is_nan() {
                return Err(Error::NonFinite {
                    tensor: format!("metric ({what})"),
                    index: 0,
                    value: f32::NAN,
                });
            }
            Ok(m)
        };
        let baseline = checked(net, "dense")?;
        let names: Vec<String> = self
            .filter
            .select(net.params())?
            .into_iter()
            .map(str::to_string)
            .collect();
        let flops = weight_flops(net);
        let mut curves = Vec::with_capacity(names.len());
        for name in names {
            let saved = net.params().get(&name).expect("selected").clone();
            let result = self.curve(net, &name, &saved, &mut checked);
            // Restore in place whatever happened.
            net.params_mut()
                .get_mut(&name)
                .expect("selected")
                .assign(&saved);
            let points = result?;
            curves.push(LayerCurve {
                flops: flops.get(&name).copied().unwrap_or(0),
                params: saved.len(),
                name,
                points,
            });
        }
        Ok(Sensitivity { baseline, curves })
    }

    /// The points of one tensor's curve; leaves the tensor pruned at the last point.
    fn curve<F>(
        &self,
        net: &mut Network,
        name: &str,
        saved: &ndarray::ArrayD<f32>,
        metric: &mut F,
    ) -> Result<Vec<CurvePoint>>
    where
        F: FnMut(&Network, &str) -> Result<f64>,
    {
        let mut points = Vec::with_capacity(self.sparsities.len());
        for (i, &s) in self.sparsities.iter().enumerate() {
            if i > 0 {
                net.params_mut()
                    .get_mut(name)
                    .expect("selected")
                    .assign(saved);
            }
            let plan = one_tensor(name, Amount::Sparsity(s))
                .granularity(self.granularity)
                .plan(&Context::new(net.params()))?;
            let mask = plan.masks.get(name).expect("the one tensor planned");
            let mut w = net.params_mut();
            mask.apply(&mut w.get_mut(name).expect("selected"), name)?;
            points.push(CurvePoint {
                sparsity: s,
                metric: metric(net, &format!("{name} at {s}"))?,
            });
        }
        Ok(points)
    }
}

/// FLOPs per sample of the multiply-accumulates of each Linear and Conv weight (`2 · weights ·
/// output positions`, the graph's convention), by weight name.
fn weight_flops(net: &Network) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (i, node) in net.nodes().iter().enumerate() {
        let name = format!("{}.weight", node.name);
        let Some(w) = net.params().get(&name) else {
            continue;
        };
        if w.ndim() < 2 {
            continue;
        }
        let outputs: u64 = net.output_shapes()[i].iter().map(|&d| d as u64).product();
        let positions = outputs / (w.shape()[0].max(1) as u64);
        out.insert(name, 2 * w.len() as u64 * positions);
    }
    out
}

/// The metric with one layer pruned to one sparsity.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CurvePoint {
    /// Fraction of the layer's units pruned.
    pub sparsity: f64,
    /// The metric's value.
    pub metric: f64,
}

/// How the metric responds to pruning one layer alone.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerCurve {
    /// The tensor.
    pub name: String,
    /// Its number of elements.
    pub params: usize,
    /// FLOPs per sample of its multiply-accumulates (0 when the tensor belongs to no Linear or
    /// Conv node).
    pub flops: u64,
    /// One point per grid sparsity, in grid order.
    pub points: Vec<CurvePoint>,
}

impl LayerCurve {
    /// Predicted metric drop (baseline minus metric, at least 0) at sparsity `s`, interpolated
    /// linearly between grid points, with no drop at sparsity 0. `None` beyond the last point.
    pub fn drop_at(&self, baseline: f64, s: f64) -> Option<f64> {
        let mut prev = (0.0, 0.0);
        for p in self.sorted() {
            let d = (baseline - p.metric).max(0.0);
            if s <= p.sparsity {
                let span = p.sparsity - prev.0;
                let t = if span > 0.0 { (s - prev.0) / span } else { 1.0 };
                return Some(prev.1 + t * (d - prev.1));
            }
            prev = (p.sparsity, d);
        }
        (s <= prev.0).then_some(prev.1)
    }

    fn sorted(&self) -> Vec<CurvePoint> {
        let mut points = self.points.clone();
        points.sort_by(|a, b| a.sparsity.total_cmp(&b.sparsity));
        points
    }
}

/// What a global target counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Budget {
    /// The fraction of the analysed weights pruned.
    #[default]
    Params,
    /// The fraction of the analysed weights' multiply-accumulate FLOPs removed.
    Flops,
}

/// The result of a [`SensitivityAnalysis`]: the metric of the intact network and one curve per
/// layer. Serialisable (feature `serde`) and exportable as CSV.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Sensitivity {
    /// The metric with nothing pruned.
    pub baseline: f64,
    /// One curve per analysed tensor, in parameter order.
    pub curves: Vec<LayerCurve>,
}

impl Sensitivity {
    /// The curves as CSV: `layer,params,flops,sparsity,metric,drop`, one line per point.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("layer,params,flops,sparsity,metric,drop\n");
        for c in &self.curves {
            for p in &c.points {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{}",
                    c.name,
                    c.params,
                    c.flops,
                    p.sparsity,
                    p.metric,
                    self.baseline - p.metric
                );
            }
        }
        out
    }

    /// The curves as a line chart (feature `plot`): sparsity across, the metric up, one line
    /// per layer starting from the baseline at sparsity 0. `metric` labels the vertical axis.
    #[cfg(feature = "plot")]
    pub fn chart(&self, metric: &str) -> crate::report::LineChart {
        self.curves.iter().fold(
            crate::report::LineChart::new("Sensitivity: each layer pruned alone")
                .axes("sparsity of the layer", metric),
            |chart, c| {
                let points = std::iter::once((0.0, self.baseline))
                    .chain(c.sorted().iter().map(|p| (p.sparsity, p.metric)))
                    .collect();
                chart.series(c.name.clone(), points)
            },
        )
    }

    /// Per-layer sparsities that prune the fraction `target` of the analysed weights (or of
    /// their FLOPs) with the least predicted metric drop.
    ///
    /// The rule, greedy on the marginal drop per unit removed: every layer starts at sparsity 0;
    /// at each step, every move of one layer from its current sparsity to a higher grid point is
    /// priced as (increase of its predicted drop) / (weights or FLOPs it removes), and the
    /// cheapest move is taken (ties: the smaller move, then the earlier layer). Looking at every
    /// higher point, not only the next, lets the rule jump over a bump of a noisy curve. The
    /// move that would pass the target is shortened, by linear interpolation, so the target is
    /// met exactly (up to rounding to whole weights). Predicted drops are `baseline − metric`
    /// (negative drops count as 0) and are assumed to add up across layers.
    ///
    /// ```
    /// use shears::strategy::{Budget, CurvePoint, LayerCurve, Sensitivity};
    ///
    /// let curve = |name: &str, params, drops: [f64; 2]| LayerCurve {
    ///     name: name.into(),
    ///     params,
    ///     flops: 0,
    ///     points: vec![
    ///         CurvePoint { sparsity: 0.5, metric: 1.0 - drops[0] },
    ///         CurvePoint { sparsity: 1.0, metric: 1.0 - drops[1] },
    ///     ],
    /// };
    /// // Pruning `robust` costs nothing up to 50 %; `fragile` loses accuracy at once.
    /// let s = Sensitivity {
    ///     baseline: 1.0,
    ///     curves: vec![curve("fragile", 100, [0.2, 0.9]), curve("robust", 100, [0.0, 0.5])],
    /// };
    /// let a = s.allocate(0.25, Budget::Params)?;
    /// assert_eq!(a.sparsities["robust"], 0.5);
    /// assert_eq!(a.sparsities["fragile"], 0.0);
    /// assert_eq!(a.predicted_drop, 0.0);
    /// # Ok::<(), shears::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSparsity`] for a target outside `[0, 1]`; [`Error::InvalidParameter`]
    /// when there are no curves, the budget is FLOPs and no curve has any, or the grid's largest
    /// points cannot reach the target.
    pub fn allocate(&self, target: f64, budget: Budget) -> Result<Allocation> {
        Amount::Sparsity(target).validate()?;
        if self.curves.is_empty() {
            return Err(Error::invalid("sensitivity", "no layer curves to allocate"));
        }
        let weight = |c: &LayerCurve| match budget {
            Budget::Params => c.params as f64,
            Budget::Flops => c.flops as f64,
        };
        let total: f64 = self.curves.iter().map(weight).sum();
        if total <= 0.0 {
            return Err(Error::invalid(
                "budget",
                "the analysed layers have no weights or FLOPs to count",
            ));
        }
        // Per layer: (sparsity, drop) from 0 up, grid order.
        let paths: Vec<Vec<(f64, f64)>> = self
            .curves
            .iter()
            .map(|c| {
                let mut path = vec![(0.0, 0.0)];
                path.extend(
                    c.sorted()
                        .into_iter()
                        .filter(|p| p.sparsity > 0.0)
                        .map(|p| (p.sparsity, (self.baseline - p.metric).max(0.0))),
                );
                path
            })
            .collect();
        let reachable: f64 = self
            .curves
            .iter()
            .zip(&paths)
            .map(|(c, p)| weight(c) * p.last().expect("starts at 0").0)
            .sum();
        let goal = target * total;
        if reachable < goal * (1.0 - 1e-12) {
            return Err(Error::invalid(
                "target",
                format!(
                    "{target} is out of reach: the grid's largest sparsities prune at most {:.6}",
                    reachable / total
                ),
            ));
        }
        let mut at = vec![0usize; paths.len()];
        let mut sparsity = vec![0.0f64; paths.len()];
        let mut removed = 0.0;
        while removed < goal * (1.0 - 1e-12) {
            // (price, size, layer, point)
            let mut best: Option<(f64, f64, usize, usize)> = None;
            for (l, path) in paths.iter().enumerate() {
                let w = weight(&self.curves[l]);
                if w <= 0.0 {
                    continue;
                }
                let (s0, d0) = path[at[l]];
                for (j, &(s, d)) in path.iter().enumerate().skip(at[l] + 1) {
                    let size = (s - s0) * w;
                    let price = (d - d0) / size;
                    let better = match best {
                        None => true,
                        Some((bp, bs, ..)) => price < bp || (price == bp && size < bs),
                    };
                    if better {
                        best = Some((price, size, l, j));
                    }
                }
            }
            let (_, size, l, j) = best.expect("the target is reachable");
            let (s0, _) = paths[l][at[l]];
            let (s1, _) = paths[l][j];
            if removed + size >= goal {
                let w = weight(&self.curves[l]);
                sparsity[l] = s0 + (goal - removed) / w;
                removed = goal;
            } else {
                sparsity[l] = s1;
                at[l] = j;
                removed += size;
            }
        }
        let mut predicted_drop = 0.0;
        let mut sparsities = BTreeMap::new();
        for (c, &s) in self.curves.iter().zip(&sparsity) {
            let s = s.clamp(0.0, 1.0);
            predicted_drop += c.drop_at(self.baseline, s).unwrap_or(0.0);
            sparsities.insert(c.name.clone(), s);
        }
        Ok(Allocation {
            target,
            budget,
            sparsities,
            predicted_drop,
        })
    }
}

/// Per-layer sparsities chosen by [`Sensitivity::allocate`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Allocation {
    /// The global target met.
    pub target: f64,
    /// What the target counts.
    pub budget: Budget,
    /// Sparsity of each analysed tensor.
    pub sparsities: BTreeMap<String, f64>,
    /// Sum of the layers' predicted drops at their sparsities.
    pub predicted_drop: f64,
}

impl Allocation {
    /// The strategy that prunes each tensor by magnitude to its allocated sparsity.
    pub fn strategy(&self) -> LayerSparsities {
        LayerSparsities::new(self.sparsities.clone())
    }
}

/// Prunes each named tensor to its own sparsity by magnitude (or any [`Criterion`]), as an
/// absolute target ([`Amount::Target`]): the fraction of the whole tensor pruned, earlier
/// prunings included, so that a schedule reaches it exactly.
///
/// ```
/// use ndarray::array;
/// use shears::strategy::{Context, LayerSparsities, PruneStrategy};
/// use shears::Params;
///
/// let params: Params = [
///     ("a", array![[1.0_f32, 2.0, 3.0, 4.0]].into_dyn()),
///     ("b", array![[1.0_f32, 2.0, 3.0, 4.0]].into_dyn()),
/// ]
/// .into_iter()
/// .collect();
/// let plan = LayerSparsities::new([("a".to_string(), 0.5), ("b".to_string(), 0.25)].into())
///     .plan(&Context::new(&params))?;
/// assert_eq!(plan.masks.get("a").unwrap().pruned(), 2);
/// assert_eq!(plan.masks.get("b").unwrap().pruned(), 1);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LayerSparsities {
    sparsities: BTreeMap<String, f64>,
    criterion: Criterion,
    granularity: Granularity,
}

impl LayerSparsities {
    /// Magnitude pruning of each tensor to its sparsity.
    pub fn new(sparsities: BTreeMap<String, f64>) -> Self {
        LayerSparsities {
            sparsities,
            criterion: Criterion::Magnitude,
            granularity: Granularity::Element,
        }
    }

    /// Sets what ranks the units (default: magnitude).
    pub fn criterion(mut self, criterion: Criterion) -> Self {
        self.criterion = criterion;
        self
    }

    /// Sets the unit (default: elements); N:M is rejected when planning.
    pub fn granularity(mut self, granularity: Granularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// The sparsity of each tensor.
    pub fn sparsities(&self) -> &BTreeMap<String, f64> {
        &self.sparsities
    }
}

impl PruneStrategy for LayerSparsities {
    fn name(&self) -> &str {
        "layer-sparsities"
    }

    fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        if matches!(self.granularity, Granularity::NM { .. }) {
            return Err(Error::invalid(
                "granularity",
                "N:M sets its own sparsity; use elements or channels",
            ));
        }
        let mut masks = MaskSet::new();
        for (name, &s) in &self.sparsities {
            let plan = one_tensor(name, Amount::Target(s))
                .criterion(self.criterion.clone())
                .granularity(self.granularity)
                .plan(ctx)?;
            masks.extend(plan.masks);
        }
        Ok(Plan::new(self.name(), masks))
    }
}

/// Weight pruning of the tensor `name` alone (whatever its rank).
fn one_tensor(name: &str, amount: Amount) -> WeightPruning {
    let only = name.to_string();
    WeightPruning::new(amount).filter(
        ParamFilter::new()
            .min_ndim(0)
            .include_if(name, move |n| n == only),
    )
}

/// Prunes `|w| ≤ s·σ(W)` in each tensor, σ the unbiased (`n − 1`) standard deviation of all its
/// current values, zeros included: Distiller's `SensitivityPruner` (Han et al. 2015, "the
/// quality parameter multiplied by the standard deviation of a layer's weights"). A single `s`
/// thus adapts to each layer's spread; for normally distributed weights `s = 1` prunes about
/// 68 % of them. Earlier prunings stay pruned.
///
/// ```
/// use ndarray::array;
/// use shears::strategy::{Context, PruneStrategy, SigmaThreshold};
/// use shears::Params;
///
/// // σ of [1, -2, 3, -4] (n − 1) is 3.109...; s = 0.5 prunes |w| ≤ 1.55.
/// let params: Params = [("w", array![[1.0_f32, -2.0], [3.0, -4.0]].into_dyn())].into_iter().collect();
/// let plan = SigmaThreshold::new(0.5).plan(&Context::new(&params))?;
/// assert_eq!(plan.masks.get("w").unwrap().as_slice(), &[false, true, true, true]);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct SigmaThreshold {
    s: f64,
    filter: ParamFilter,
}

impl SigmaThreshold {
    /// Prunes `|w| ≤ s·σ` in every tensor with two or more dimensions.
    pub fn new(s: f64) -> Self {
        SigmaThreshold {
            s,
            filter: ParamFilter::default(),
        }
    }

    /// Sets which tensors are pruned.
    pub fn filter(mut self, filter: ParamFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The threshold `s·σ` of `w`, σ unbiased.
    ///
    /// # Errors
    /// [`Error::NonFinite`] for a NaN or infinite weight, naming `name`.
    pub fn threshold(&self, name: &str, w: &[f32]) -> Result<f32> {
        if let Some((index, &value)) = w.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                tensor: name.to_string(),
                index,
                value,
            });
        }
        let n = w.len() as f64;
        if n < 2.0 {
            return Ok(0.0);
        }
        let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = w
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0);
        Ok((self.s * var.sqrt()) as f32)
    }
}

impl PruneStrategy for SigmaThreshold {
    fn name(&self) -> &str {
        "sigma-threshold"
    }

    fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        if !(self.s.is_finite() && self.s >= 0.0) {
            return Err(Error::invalid(
                "s",
                format!("must be a finite number >= 0, got {}", self.s),
            ));
        }
        let mut masks = MaskSet::new();
        for name in self.filter.select(ctx.params())? {
            let w = ctx.params().get(name).expect("selected");
            let values = w
                .as_slice()
                .map(std::borrow::Cow::Borrowed)
                .unwrap_or_else(|| w.iter().copied().collect::<Vec<_>>().into());
            let t = self.threshold(name, &values)?;
            masks.extend(one_tensor(name, Amount::Threshold(t)).plan(ctx)?.masks);
        }
        Ok(Plan::new(self.name(), masks))
    }
}

impl Criterion {
    /// First-order Taylor saliency `Σ_batches |w·∂L/∂w|` (Molchanov et al. 2017): the loss change
    /// removing each weight would cause, summed over the batches of `scores`. Tensors without
    /// scores cannot be planned.
    pub fn taylor(scores: &GradientScores) -> Criterion {
        Criterion::Importance(Arc::new(scores.taylor.clone()))
    }

    /// SNIP's connection sensitivity (Lee et al. 2019) `|ḡ·w| / Σ|ḡ·w|`, ḡ the mean gradient over
    /// the batches of `scores` and the sum over all scored tensors, so the scores of a network
    /// add up to 1. Meant for a single pass at initialisation; the normalisation does not change
    /// the ranking.
    ///
    /// # Errors
    /// As [`GradientScores::snip`]; [`Error::InvalidParameter`] when every score is zero.
    pub fn snip(scores: &GradientScores, params: &Params) -> Result<Criterion> {
        let mut snip = scores.snip(params)?;
        let total: f64 = snip
            .iter()
            .map(|(_, s)| s.iter().map(|&v| f64::from(v)).sum::<f64>())
            .sum();
        if total <= 0.0 {
            return Err(Error::invalid(
                "gradient scores",
                "every SNIP score is zero: no gradient reached the weights",
            ));
        }
        for (_, mut s) in snip.iter_mut() {
            s.mapv_inplace(|v| (f64::from(v) / total) as f32);
        }
        Ok(Criterion::Importance(Arc::new(snip)))
    }
}

#[cfg(test)]
mod tests;
