//! Group importance: one score per unit of a dependency group, higher meaning more important.

use std::fmt;
use std::sync::Arc;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::groups::{Group, ParamSlice, SliceRole, unit_index};
use crate::calibrate::Stats;
use crate::error::{Error, Result};
use crate::graph::{Network, ParamRole};
use crate::params::{Params, check_finite};
use crate::select::{Norm, channel_norms};

/// A user criterion: one score per unit of a group (higher is more important), or `None` to
/// leave the group out of the ranking (it is then kept whole).
///
/// ```
/// use shears::graph::Network;
/// use shears::structure::{Group, GroupScore};
///
/// /// Prefers later channels: a toy criterion.
/// #[derive(Debug)]
/// struct ByIndex;
///
/// impl GroupScore for ByIndex {
///     fn score(&self, _net: &Network, group: &Group) -> shears::Result<Option<Vec<f32>>> {
///         Ok(Some((0..group.channels()).map(|c| c as f32).collect()))
///     }
/// }
/// ```
pub trait GroupScore: Send + Sync + fmt::Debug {
    /// Scores the units of `group` of `net`.
    ///
    /// # Errors
    /// Whatever makes the score impossible; a vector of the wrong length is reported by the
    /// caller.
    fn score(&self, net: &Network, group: &Group) -> Result<Option<Vec<f32>>>;
}

/// What a unit of a group is scored by.
///
/// Magnitude criteria follow Torch-Pruning's `GroupMagnitudeImportance`: per slice, the sum of
/// `|w|^p` over the unit's elements, **without** the p-th root (p = 2 gives the squared L2
/// norm), over every weight slice of the group (producer rows, normalisation `γ`, consumer
/// columns); biases and running statistics are left out.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum GroupCriterion {
    /// `Σ |w|` (Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017).
    L1,
    /// `Σ w²` (Torch-Pruning's default magnitude, p = 2).
    L2,
    /// FPGM (He et al., "Filter Pruning via Geometric Median", CVPR 2019): for each producer,
    /// `Σ_j ‖v_i − v_j‖₂` between unit `i`'s filter `v_i` and every other filter of the same
    /// layer; filters near the geometric median are redundant and score low.
    Fpgm,
    /// `|γ|` of the normalisation layers following the units (Network Slimming, Liu et al.,
    /// ICCV 2017). Groups without one are not ranked.
    BatchNormScale,
    /// First-order Taylor, `Σ |w · ∂L/∂w|` over every trainable slice (weights and biases) of the
    /// unit (Molchanov et al., CVPR 2019), from accumulated scores:
    /// [`GradientScores::taylor`](crate::train::GradientScores::taylor).
    Taylor(Params),
    /// `1 − APoZ` of the activations of the group's channels (Hu et al. 2016), from
    /// [`Calibration`](crate::calibrate::Calibration) with activations collected. Groups whose
    /// channels pass no activation are not ranked.
    Apoz(Stats),
    /// Mean activation of the group's channels, from calibration (as [`GroupCriterion::Apoz`]).
    MeanActivation(Stats),
    /// A user criterion.
    Custom(Arc<dyn GroupScore>),
}

/// How the scores of a group's slices (or activations, or producers) are combined per unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Reduction {
    /// Sum over slices.
    Sum,
    /// Mean over slices (Torch-Pruning's default).
    #[default]
    Mean,
    /// Largest over slices.
    Max,
}

/// How a group's score vector `x` is rescaled before groups are ranked against each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Normalizer {
    /// `x` as is.
    None,
    /// `x / mean(x)` (Torch-Pruning's default).
    #[default]
    Mean,
    /// `x / max(x)`.
    Max,
    /// `x / Σx`.
    Sum,
    /// LAMP (Lee et al., "Layer-adaptive sparsity for the magnitude-based pruning", ICLR 2021):
    /// with `x` sorted ascending, `x_i / Σ_{j ≥ i} x_j`. Ranked globally it gives each layer an
    /// adaptive share of the removals.
    Lamp,
}

/// A group importance: a criterion, how its slices combine, and how each group's scores are
/// normalised.
///
/// ```
/// use shears::graph::Network;
/// use shears::structure::{GroupCriterion, DependencyGroups, Importance, Normalizer, Reduction};
///
/// let net = Network::builder(&[3]).linear("fc1", 3, 4).relu("act").linear("fc2", 4, 2).build_init(0)?;
/// let groups = DependencyGroups::of(&net)?;
/// let imp = Importance::new(GroupCriterion::L1).reduction(Reduction::Sum).normalizer(Normalizer::None);
/// let scores = imp.scores(&net, groups.get("fc1").unwrap())?.unwrap();
/// // Unit 0: |fc1 row 0| + |fc2 column 0|.
/// use ndarray::Axis;
/// let w1 = net.params().get("fc1.weight").unwrap();
/// let w2 = net.params().get("fc2.weight").unwrap();
/// let (row, column) = (w1.index_axis(Axis(0), 0), w2.index_axis(Axis(1), 0));
/// let want: f32 = row.iter().chain(column.iter()).map(|w| w.abs()).sum();
/// assert!((scores[0] - want).abs() < 1e-6);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Importance {
    criterion: GroupCriterion,
    reduction: Reduction,
    normalizer: Normalizer,
}

impl Importance {
    /// `criterion` with Torch-Pruning's defaults: mean over slices, mean normalisation.
    pub fn new(criterion: GroupCriterion) -> Self {
        Importance {
            criterion,
            reduction: Reduction::default(),
            normalizer: Normalizer::default(),
        }
    }

    /// Sets how slice scores combine.
    pub fn reduction(mut self, reduction: Reduction) -> Self {
        self.reduction = reduction;
        self
    }

    /// Sets how each group's scores are normalised.
    pub fn normalizer(mut self, normalizer: Normalizer) -> Self {
        self.normalizer = normalizer;
        self
    }

    /// The criterion.
    pub fn criterion(&self) -> &GroupCriterion {
        &self.criterion
    }

    /// One normalised score per unit of `group`, or `None` when the criterion has nothing to
    /// score it by (no normalisation layer for [`GroupCriterion::BatchNormScale`], no activation for
    /// the activation criteria, a custom criterion's choice).
    ///
    /// # Errors
    /// [`Error::UnknownTensor`] for a parameter or Taylor score the group needs that is
    /// missing, [`Error::ShapeMismatch`] for scores of the wrong shape or length,
    /// [`Error::NonFinite`] for a NaN or infinite score.
    pub fn scores(&self, net: &Network, group: &Group) -> Result<Option<Vec<f32>>> {
        let weights = |role: &dyn Fn(&ParamSlice) -> bool| {
            group
                .slices()
                .iter()
                .filter(|s| role(s))
                .collect::<Vec<_>>()
        };
        let parts: Vec<Vec<f32>> = match &self.criterion {
            GroupCriterion::L1 | GroupCriterion::L2 => {
                let p2 = matches!(self.criterion, GroupCriterion::L2);
                weights(&|s| s.param == ParamRole::Weight)
                    .into_iter()
                    .map(|s| slice_sums(net.params(), s, group.channels(), p2))
                    .collect::<Result<_>>()?
            }
            GroupCriterion::BatchNormScale => {
                weights(&|s| s.role == SliceRole::Norm && s.param == ParamRole::Weight)
                    .into_iter()
                    .map(|s| slice_sums(net.params(), s, group.channels(), false))
                    .collect::<Result<_>>()?
            }
            GroupCriterion::Taylor(taylor) => weights(&|s| s.param.is_trainable())
                .into_iter()
                .map(|s| slice_sums(taylor, s, group.channels(), false))
                .collect::<Result<_>>()?,
            GroupCriterion::Fpgm => {
                weights(&|s| s.role == SliceRole::Producer && s.param == ParamRole::Weight)
                    .into_iter()
                    .map(|s| fpgm(net.params(), s, group.channels()))
                    .collect::<Result<_>>()?
            }
            GroupCriterion::Apoz(stats) | GroupCriterion::MeanActivation(stats) => {
                let apoz = matches!(self.criterion, GroupCriterion::Apoz(_));
                group
                    .activations()
                    .iter()
                    .filter_map(|(node, per)| {
                        let a = stats.activation(node)?;
                        let v = if apoz { &a.apoz } else { &a.mean };
                        Some(activation_scores(node, v, *per, group.channels(), apoz))
                    })
                    .collect::<Result<_>>()?
            }
            GroupCriterion::Custom(c) => match c.score(net, group)? {
                Some(v) => vec![v],
                None => Vec::new(),
            },
        };
        if parts.is_empty() {
            return Ok(None);
        }
        let mut x = self.reduce(&parts, group)?;
        check_finite(group.name(), &ndarray::aview1(&x).into_dyn())?;
        normalize(&mut x, self.normalizer);
        Ok(Some(x))
    }

    fn reduce(&self, parts: &[Vec<f32>], group: &Group) -> Result<Vec<f32>> {
        let n = group.channels();
        if let Some(bad) = parts.iter().find(|p| p.len() != n) {
            return Err(Error::ShapeMismatch {
                name: format!("scores of group `{}`", group.name()),
                expected: vec![n],
                got: vec![bad.len()],
            });
        }
        Ok((0..n)
            .map(|u| {
                let it = parts.iter().map(|p| p[u]);
                match self.reduction {
                    Reduction::Sum => it.sum(),
                    Reduction::Mean => it.sum::<f32>() / parts.len() as f32,
                    Reduction::Max => it.fold(f32::NEG_INFINITY, f32::max),
                }
            })
            .collect())
    }
}

/// Per unit: `Σ |x|` (or `Σ x²`) over the unit's elements of the slice, averaged over the
/// convolution groups a grouped convolution ties into the unit (as Torch-Pruning averages the
/// importance of corresponding channels across groups), so that a tied unit does not outrank
/// others just for holding more channels.
fn slice_sums(values: &Params, s: &ParamSlice, units: usize, squared: bool) -> Result<Vec<f32>> {
    let t = values.get(&s.tensor).ok_or_else(|| Error::UnknownTensor {
        name: s.tensor.clone(),
    })?;
    let norm = if squared { Norm::L2 } else { Norm::L1 };
    let per_index = channel_norms(
        &s.tensor,
        values.slice(&s.tensor).expect("present"),
        t.shape(),
        s.axis,
        norm,
        None,
    )?;
    check_len(&s.tensor, per_index.len(), s.len)?;
    let mut sums = vec![0.0f32; units];
    for (i, &v) in per_index.iter().enumerate() {
        sums[s.unit_of(i, units)] += if squared { v * v } else { v };
    }
    let repeats = s.repeats(units) as f32;
    Ok(sums.into_iter().map(|v| v / repeats).collect())
}

/// An error unless a slice's tensor has the length along its axis the group was made for.
fn check_len(name: &str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        return Ok(());
    }
    Err(Error::ShapeMismatch {
        name: name.to_string(),
        expected: vec![expected],
        got: vec![got],
    })
}

/// FPGM over the rows of a producer slice: unit `i` scores `Σ_j ‖v_i − v_j‖₂`, `v_i` being the
/// unit's rows (one, or one per convolution group where a grouped convolution ties them).
fn fpgm(values: &Params, s: &ParamSlice, units: usize) -> Result<Vec<f32>> {
    let w = values
        .slice(&s.tensor)
        .ok_or_else(|| Error::UnknownTensor {
            name: s.tensor.clone(),
        })?;
    let rows: usize = values.get(&s.tensor).expect("present").shape()[0];
    check_len(&s.tensor, rows, s.len)?;
    let d = w.len() / rows;
    // Each unit's rows, concatenated in index order.
    let mut vectors: Vec<Vec<f32>> = vec![Vec::with_capacity(w.len() / units); units];
    for (i, row) in w.chunks(d.max(1)).take(rows).enumerate() {
        vectors[s.unit_of(i, units)].extend_from_slice(row);
    }
    let mut dist = vec![0.0f64; units];
    for i in 0..units {
        for j in i + 1..units {
            let e = vectors[i]
                .iter()
                .zip(&vectors[j])
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            dist[i] += e;
            dist[j] += e;
        }
    }
    Ok(dist.into_iter().map(|x| x as f32).collect())
}

/// Per unit, the mean over its channels (`per` consecutive ones, in every convolution group
/// that ties it) of `1 − apoz` or of the mean activation.
fn activation_scores(
    node: &str,
    v: &[f32],
    per: usize,
    units: usize,
    apoz: bool,
) -> Result<Vec<f32>> {
    if v.is_empty() || !v.len().is_multiple_of(units * per) {
        return Err(Error::ShapeMismatch {
            name: format!("activation statistics of `{node}`"),
            expected: vec![units * per],
            got: vec![v.len()],
        });
    }
    let mut sums = vec![0.0f32; units];
    for (c, &a) in v.iter().enumerate() {
        sums[unit_index(c, per, units)] += if apoz { 1.0 - a } else { a };
    }
    let count = (v.len() / units) as f32;
    Ok(sums.into_iter().map(|s| s / count).collect())
}

/// Rescales `x` in place; a zero denominator leaves `x` unchanged.
fn normalize(x: &mut [f32], normalizer: Normalizer) {
    let scale = |x: &mut [f32], d: f32| {
        if d != 0.0 {
            x.iter_mut().for_each(|v| *v /= d);
        }
    };
    let sum: f32 = x.iter().sum();
    match normalizer {
        Normalizer::None => {}
        Normalizer::Mean => scale(x, sum / x.len() as f32),
        Normalizer::Max => scale(x, x.iter().copied().fold(f32::NEG_INFINITY, f32::max)),
        Normalizer::Sum => scale(x, sum),
        Normalizer::Lamp => {
            // A few hundred units per group: an index sort is cheap, and LAMP is defined on
            // the sorted order.
            let mut order: Vec<usize> = (0..x.len()).collect();
            order.sort_by(|&a, &b| x[a].total_cmp(&x[b]).then(a.cmp(&b)));
            let mut tail = 0.0f32;
            let mut out = vec![0.0f32; x.len()];
            for &i in order.iter().rev() {
                tail += x[i];
                out[i] = if tail > 0.0 { x[i] / tail } else { 0.0 };
            }
            x.copy_from_slice(&out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calibrate::ActivationStats;
    use crate::graph::Conv1d;
    use crate::structure::DependencyGroups;

    fn net() -> Network {
        Network::builder(&[2, 6])
            .conv1d("conv", Conv1d::new(2, 3, 3))
            .batch_norm1d("bn", 3)
            .relu("act")
            .flatten("flat")
            .linear("fc", 12, 2)
            .build_init(4)
            .unwrap()
    }

    fn group_scores(imp: Importance) -> Option<Vec<f32>> {
        let net = net();
        let groups = DependencyGroups::of(&net).unwrap();
        imp.scores(&net, groups.get("conv").unwrap()).unwrap()
    }

    #[test]
    fn l2_sums_squares_of_every_weight_slice() {
        let net = net();
        let p = net.params();
        let w = p.get("conv.weight").unwrap();
        let fc = p.get("fc.weight").unwrap();
        let got = group_scores(
            Importance::new(GroupCriterion::L2)
                .reduction(Reduction::Sum)
                .normalizer(Normalizer::None),
        )
        .unwrap();
        for (u, got) in got.iter().enumerate() {
            let conv: f32 = w
                .index_axis(ndarray::Axis(0), u)
                .iter()
                .map(|v| v * v)
                .sum();
            let cols: f32 = fc
                .columns()
                .into_iter()
                .skip(4 * u)
                .take(4)
                .flat_map(|c| c.to_vec())
                .map(|v| v * v)
                .sum();
            // BatchNorm's γ is 1 at initialisation.
            let want = conv + 1.0 + cols;
            assert!((got - want).abs() < 1e-5, "{u}: {got} vs {want}");
        }
    }

    #[test]
    fn batch_norm_scale_reads_gamma_only() {
        let mut n = net();
        let mut params = n.params().clone();
        params.insert("bn.weight", ndarray::array![0.5f32, -2.0, 1.0].into_dyn());
        n.set_params(params).unwrap();
        let groups = DependencyGroups::of(&n).unwrap();
        let imp = Importance::new(GroupCriterion::BatchNormScale).normalizer(Normalizer::None);
        assert_eq!(
            imp.scores(&n, groups.get("conv").unwrap())
                .unwrap()
                .unwrap(),
            [0.5, 2.0, 1.0]
        );
        // fc's group has no BatchNorm and is not ranked.
        assert_eq!(imp.scores(&n, groups.get("fc").unwrap()).unwrap(), None);
    }

    #[test]
    fn fpgm_sums_distances_between_filters() {
        let mut n = net();
        let mut params = n.params().clone();
        let mut w = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[3, 2, 3]));
        w[[1, 0, 0]] = 3.0;
        w[[2, 0, 0]] = 4.0;
        params.insert("conv.weight", w);
        n.set_params(params).unwrap();
        let groups = DependencyGroups::of(&n).unwrap();
        let got = Importance::new(GroupCriterion::Fpgm)
            .normalizer(Normalizer::None)
            .scores(&n, groups.get("conv").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(got, [3.0 + 4.0, 3.0 + 1.0, 4.0 + 1.0]);
    }

    #[test]
    fn activation_criteria_read_calibration() {
        let mut stats = Stats::new(10);
        stats.insert_activation(
            "act",
            ActivationStats {
                apoz: vec![0.25, 1.0, 0.5],
                mean: vec![0.3, 0.0, 0.1],
                count: 40,
            },
        );
        let apoz = group_scores(
            Importance::new(GroupCriterion::Apoz(stats.clone())).normalizer(Normalizer::None),
        );
        assert_eq!(apoz.unwrap(), [0.75, 0.0, 0.5]);
        let mean = group_scores(
            Importance::new(GroupCriterion::MeanActivation(stats)).normalizer(Normalizer::Max),
        );
        assert_eq!(mean.unwrap(), [1.0, 0.0, 0.1 / 0.3]);
    }

    #[test]
    fn taylor_sums_weights_and_biases() {
        let net = net();
        let mut taylor = Params::new();
        for (name, t) in net.params().iter() {
            taylor.insert(name, ndarray::ArrayD::ones(t.raw_dim()));
        }
        let got = group_scores(
            Importance::new(GroupCriterion::Taylor(taylor))
                .reduction(Reduction::Sum)
                .normalizer(Normalizer::None),
        )
        .unwrap();
        // conv row (6) + bias (1) + bn γ, β (2) + fc columns (2 × 4).
        assert_eq!(got, [17.0; 3]);
    }

    #[test]
    fn reductions_combine_slices_per_unit() {
        let net = net();
        let groups = DependencyGroups::of(&net).unwrap();
        let g = groups.get("conv").unwrap();
        let score = |r| {
            Importance::new(GroupCriterion::L1)
                .reduction(r)
                .normalizer(Normalizer::None)
                .scores(&net, g)
                .unwrap()
                .unwrap()
        };
        let (sum, mean, max) = (
            score(Reduction::Sum),
            score(Reduction::Mean),
            score(Reduction::Max),
        );
        // Three weight slices: conv rows, bn γ, fc columns.
        for u in 0..3 {
            assert!((mean[u] - sum[u] / 3.0).abs() < 1e-6);
            assert!(max[u] <= sum[u] && max[u] >= mean[u]);
        }
    }

    #[test]
    fn normalizers() {
        let norm = |n| {
            let mut x = vec![1.0f32, 3.0, 2.0, 2.0];
            normalize(&mut x, n);
            x
        };
        assert_eq!(norm(Normalizer::Mean), [0.5, 1.5, 1.0, 1.0]);
        assert_eq!(norm(Normalizer::Sum), [0.125, 0.375, 0.25, 0.25]);
        // LAMP: ascending 1, 2, 2, 3 → 1/8, 2/7, 2/5, 3/3.
        assert_eq!(
            norm(Normalizer::Lamp),
            [1.0 / 8.0, 1.0, 2.0 / 7.0, 2.0 / 5.0]
        );
    }

    #[test]
    fn custom_scores_must_fit_the_group() {
        #[derive(Debug)]
        struct Short;
        impl GroupScore for Short {
            fn score(&self, _: &Network, _: &Group) -> Result<Option<Vec<f32>>> {
                Ok(Some(vec![1.0]))
            }
        }
        let net = net();
        let groups = DependencyGroups::of(&net).unwrap();
        let err = Importance::new(GroupCriterion::Custom(Arc::new(Short)))
            .scores(&net, groups.get("conv").unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::ShapeMismatch { .. }), "{err}");
    }
}
