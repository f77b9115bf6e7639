//! The activation strategy: weights ranked by what flows through them (Wanda), neurons and
//! channels by how they fire (APoZ, mean activation).

use std::collections::HashSet;
use std::sync::Arc;

use ndarray::{ArrayD, Axis};

use super::{
    Context, Criterion, ParamFilter, Plan, PruneStrategy, Scope, StructureSensitivity,
    StructureTarget, WeightPruning,
};
use crate::amount::{Amount, CountRule};
use crate::calibrate::{Calibration, Stats};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::graph::{Layer, Network};
use crate::mask::MaskSet;
use crate::params::Params;
use crate::structure::{GroupCriterion, Importance, Normalizer};

/// Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models",
/// arXiv:2306.11695): each weight scored by `S_ij = |W_ij| · ‖X_j‖₂`, its magnitude times the
/// L2 norm of the input feature it multiplies over all calibration samples and positions, and
/// compared **within its output row** (Wanda's comparison group, [`Scope::Row`]), or within N:M
/// groups along the input axis.
///
/// - Linear `[out, in]`: `j` is the input column.
/// - Conv `[out, in/groups, *k]`: `j` is the input channel the weight reads, whatever its kernel
///   tap (`‖X_c‖₂` over every position of channel `c`, as [`crate::calibrate`] collects it); with
///   `groups > 1`, output `o` reads channels `(o / (out/groups)) · (in/groups) + c`. The row of
///   output `o` is its whole filter (`in/groups · k` weights), as Wanda's `flatten(1)` does.
/// - Counts: the default is shears' (round half to even of `s · n` per row); Wanda's own
///   `int(s · n)` is [`CountRule::Floor`]. Ties go by ascending index, as Wanda's stable sort.
/// - N:M keeps the `n` highest scores of every `m` consecutive weights along the input axis
///   (Wanda writes `2:4` too; its `N` counts pruned weights, so shears' `n_m(1, 4)` is Wanda's
///   `3:4`).
///
/// [`Wanda::plan`](PruneStrategy::plan) ranks with the statistics given by
/// [`Wanda::with_stats`] (one calibration of the dense network). [`Wanda::plan_sequential`] is
/// Wanda's own procedure: the layers are pruned one after the other, each calibrated on the
/// network with the layers before it already pruned, at the cost of one calibration pass per
/// layer.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::data::{Dataset, Targets};
/// use shears::graph::Network;
/// use shears::strategy::{Context, PruneStrategy, Wanda};
/// use shears::Amount;
///
/// let net = Network::builder(&[4]).linear("fc1", 4, 8).relu("r").linear("fc2", 8, 2)
///     .build_init(0)?;
/// // Feature 0 is large in every sample, feature 3 always zero.
/// let x = ArrayD::from_shape_fn(IxDyn(&[16, 4]), |i| [10.0, 1.0, 1.0, 0.0][i[1]] * (1 + i[0] % 3) as f32);
/// let data = Dataset::new(x, Targets::Classes(vec![0; 16]))?;
///
/// let stats = Wanda::calibration().run(&net, &data)?;
/// let plan = Wanda::new(Amount::Sparsity(0.25)).with_stats(stats).plan(&Context::for_network(&net))?;
/// let fc1 = plan.masks.get("fc1.weight").unwrap().as_slice().to_vec();
/// // One weight of every row of fc1 goes: the one reading the silent feature 3.
/// for row in fc1.chunks(4) {
///     assert_eq!(row, [true, true, true, false]);
/// }
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Wanda {
    pruning: WeightPruning,
    filter: ParamFilter,
    stats: Option<Arc<Stats>>,
}

impl Wanda {
    /// Prunes `amount` of every output row of every Linear and Conv weight.
    pub fn new(amount: Amount) -> Self {
        Wanda {
            pruning: WeightPruning::new(amount).scope(Scope::Row),
            filter: ParamFilter::default(),
            stats: None,
        }
    }

    /// Keeps the `n` highest-scoring of every `m` consecutive weights along the input axis.
    pub fn n_m(n: usize, m: usize) -> Self {
        Wanda {
            pruning: WeightPruning::n_m(n, m),
            filter: ParamFilter::default(),
            stats: None,
        }
    }

    /// Sets the rule that turns a fraction into a count per row ([`CountRule::Floor`] is
    /// Wanda's `int(s · n)`).
    pub fn count_rule(mut self, rule: CountRule) -> Self {
        self.pruning = self.pruning.count_rule(rule);
        self
    }

    /// Narrows which weights are pruned (default: the weight of every Linear and Conv node).
    pub fn filter(mut self, filter: ParamFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The calibration statistics to rank with: input norms of every Linear and Conv node.
    pub fn with_stats(mut self, stats: Stats) -> Self {
        self.stats = Some(Arc::new(stats));
        self
    }

    /// What Wanda needs collected: input feature norms, in batches of 64.
    pub fn calibration() -> Calibration {
        Calibration::new().input_norms(true).batch_size(64)
    }

    /// The weights Wanda prunes in `net`, in node order: those of Linear and Conv nodes that the
    /// filter selects.
    ///
    /// # Errors
    /// As [`ParamFilter::select`].
    pub fn weights(&self, net: &Network) -> Result<Vec<String>> {
        let selected: HashSet<&str> = self.filter.select(net.params())?.into_iter().collect();
        let weights: Vec<String> = net
            .nodes()
            .iter()
            .filter(|n| {
                matches!(
                    n.layer,
                    Layer::Linear(_) | Layer::Conv1d(_) | Layer::Conv2d(_)
                )
            })
            .map(|n| format!("{}.weight", n.name))
            .filter(|w| selected.contains(w.as_str()))
            .collect();
        if weights.is_empty() {
            return Err(Error::NothingSelected {
                reason: "Wanda prunes Linear and Conv weights, and the filter selects none".into(),
            });
        }
        Ok(weights)
    }

    /// Wanda's scores `|W_ij| · ‖X_j‖₂` of every weight it prunes in `net`, from `stats`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the node whose input norms are missing or do not fit
    /// its weight; the errors of [`Wanda::weights`].
    pub fn scores(&self, net: &Network, stats: &Stats) -> Result<Params> {
        self.weights(net)?
            .into_iter()
            .map(|name| {
                let scores = wanda_scores(net, stats, &name)?;
                Ok((name, scores))
            })
            .collect()
    }

    /// Wanda's layer-sequential procedure: in node order, each weight is pruned with input norms
    /// calibrated (by `calibration`, input norms added) on `data` through the network as pruned
    /// so far, so that every layer sees the inputs it will see once the layers before it are
    /// pruned. Costs one calibration pass per pruned layer. The network itself is not changed.
    ///
    /// # Errors
    /// The errors of calibration and of [`PruneStrategy::plan`].
    pub fn plan_sequential(
        &self,
        net: &Network,
        data: &Dataset,
        calibration: &Calibration,
    ) -> Result<Plan> {
        let calibration = calibration.clone().input_norms(true);
        let mut pruned = net.clone();
        let mut masks = MaskSet::new();
        for name in self.weights(net)? {
            let stats = calibration.run(&pruned, data)?;
            let only = name.clone();
            let step = Wanda {
                pruning: self.pruning.clone(),
                filter: ParamFilter::new().include_if(name.clone(), move |n| n == only),
                stats: Some(Arc::new(stats)),
            };
            let plan = step.plan(&Context::for_network(&pruned))?;
            pruned.apply_masks(&plan.masks)?;
            masks.extend(plan.masks);
        }
        Ok(Plan::new("wanda (layer-sequential)", masks))
    }
}

impl PruneStrategy for Wanda {
    fn name(&self) -> &str {
        "wanda"
    }

    fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        let net = ctx.network().ok_or_else(|| {
            Error::invalid(
                "context",
                "Wanda needs the network: use Context::for_network",
            )
        })?;
        let stats = self.stats.as_deref().ok_or_else(|| {
            Error::invalid(
                "wanda",
                "no calibration statistics: give them with Wanda::with_stats",
            )
        })?;
        let scores = self.scores(net, stats)?;
        let names: HashSet<String> = scores.iter().map(|(n, _)| n.to_string()).collect();
        let pruning = self
            .pruning
            .clone()
            .criterion(Criterion::Importance(Arc::new(scores)))
            .filter(
                ParamFilter::new()
                    .include_if("Linear and Conv weights", move |n| names.contains(n)),
            );
        let plan = pruning.plan(ctx)?;
        Ok(Plan::new(self.name(), plan.masks))
    }
}

/// `|W| · ‖X_j‖₂` for the weight `name` of a Linear or Conv node.
fn wanda_scores(net: &Network, stats: &Stats, name: &str) -> Result<ArrayD<f32>> {
    let node = name.strip_suffix(".weight").unwrap_or(name);
    let groups = match &net.node(node).map(|n| &n.layer) {
        Some(Layer::Linear(_)) => 1,
        Some(Layer::Conv1d(c)) => c.groups,
        Some(Layer::Conv2d(c)) => c.groups,
        _ => {
            return Err(Error::invalid(
                "wanda",
                format!("`{name}` is not the weight of a Linear or Conv node"),
            ));
        }
    };
    let norms = &stats
        .input_norms(node)
        .ok_or_else(|| {
            Error::invalid(
                "wanda",
                format!("no input norms for node `{node}`: calibrate with input_norms(true)"),
            )
        })?
        .norms;
    let w = net
        .params()
        .get(name)
        .ok_or_else(|| Error::UnknownTensor { name: name.into() })?;
    let (out, per_group) = (w.shape()[0], w.shape()[1]);
    if norms.len() != per_group * groups {
        return Err(Error::invalid(
            "wanda",
            format!(
                "node `{node}` has {} input norms for a weight reading {} inputs",
                norms.len(),
                per_group * groups
            ),
        ));
    }
    let outs_per_group = out / groups;
    let mut scores = w.mapv(f32::abs);
    for (o, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
        let first = (o / outs_per_group) * per_group;
        for (c, mut slice) in row.axis_iter_mut(Axis(0)).enumerate() {
            let norm = norms[first + c];
            slice.mapv_inplace(|v| v * norm);
        }
    }
    Ok(scores)
}

/// Neurons and channels ranked by how they fire on calibration data (Hu et al. 2016, "Network
/// Trimming", arXiv:1607.03250, for APoZ): the structure-sensitivity strategy with an activation
/// criterion, so that a removed neuron or filter takes every coupled slice with it and the plan
/// can be applied as masks ([`Plan::apply`]) or compacted ([`Plan::compact`]).
///
/// `apoz = true` ranks by `1 − APoZ` (the fraction of non-zero outputs after the activation: a
/// unit that is almost always zero goes first); `false` by the mean activation. Scores are not
/// normalised per layer, so units of all layers compete on the same scale.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::data::{Dataset, Targets};
/// use shears::graph::Network;
/// use shears::strategy::{Context, PruneStrategy, StructureTarget, channels_by_activation};
/// use shears::calibrate::Calibration;
///
/// let net = Network::builder(&[3]).linear("fc1", 3, 8).relu("r").linear("fc2", 8, 2)
///     .build_init(1)?;
/// let x = ArrayD::from_shape_fn(IxDyn(&[32, 3]), |i| ((i[0] * 7 + i[1] * 3) % 5) as f32 - 2.0);
/// let data = Dataset::new(x, Targets::Classes(vec![0; 32]))?;
/// let stats = Calibration::new().activations(true).run(&net, &data)?;
/// let plan = channels_by_activation(stats, true, StructureTarget::Channels(0.25))
///     .plan(&Context::for_network(&net))?;
/// assert_eq!(plan.compact(&net)?.params().get("fc1.weight").unwrap().shape(), &[6, 3]);
/// # Ok::<(), shears::Error>(())
/// ```
pub fn channels_by_activation(
    stats: Stats,
    apoz: bool,
    target: StructureTarget,
) -> StructureSensitivity {
    let criterion = if apoz {
        GroupCriterion::Apoz(stats)
    } else {
        GroupCriterion::MeanActivation(stats)
    };
    StructureSensitivity::new(target)
        .importance(Importance::new(criterion).normalizer(Normalizer::None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Conv1d;
    use ndarray::IxDyn;

    fn stats_with(node: &str, norms: Vec<f32>) -> Stats {
        let mut stats = Stats::new(1);
        stats.insert_input_norms(node, crate::calibrate::InputNorms { norms, rows: 1 });
        stats
    }

    #[test]
    fn conv_scores_use_the_input_channel_of_each_group() {
        // groups = 2: outputs 0..2 read channels 0, 1; outputs 2..4 read channels 2, 3.
        let mut net = Network::builder(&[4, 5])
            .conv1d("c", Conv1d::new(4, 4, 3).padding(1).groups(2))
            .build_init(0)
            .unwrap();
        let ones = ArrayD::ones(IxDyn(&[4, 2, 3]));
        net.set_params(
            [("c.weight", ones), ("c.bias", ArrayD::zeros(IxDyn(&[4])))]
                .into_iter()
                .collect(),
        )
        .unwrap();
        let s = wanda_scores(&net, &stats_with("c", vec![1.0, 2.0, 3.0, 4.0]), "c.weight").unwrap();
        assert_eq!(
            s.index_axis(Axis(0), 1).as_slice().unwrap(),
            &[1., 1., 1., 2., 2., 2.]
        );
        assert_eq!(
            s.index_axis(Axis(0), 3).as_slice().unwrap(),
            &[3., 3., 3., 4., 4., 4.]
        );
    }

    #[test]
    fn missing_or_misfit_statistics_name_the_node() {
        let net = Network::builder(&[3])
            .linear("fc", 3, 2)
            .build_init(0)
            .unwrap();
        let ctx = Context::for_network(&net);
        let err = Wanda::new(Amount::Sparsity(0.5))
            .with_stats(Stats::new(1))
            .plan(&ctx)
            .unwrap_err();
        assert!(err.to_string().contains("`fc`"), "{err}");
        let err = Wanda::new(Amount::Sparsity(0.5))
            .with_stats(stats_with("fc", vec![1.0; 4]))
            .plan(&ctx)
            .unwrap_err();
        assert!(err.to_string().contains("4 input norms"), "{err}");
        let err = Wanda::new(Amount::Sparsity(0.5)).plan(&ctx).unwrap_err();
        assert!(err.to_string().contains("with_stats"), "{err}");
        let err = Wanda::new(Amount::Sparsity(0.5))
            .with_stats(stats_with("fc", vec![1.0; 3]))
            .plan(&Context::new(net.params()))
            .unwrap_err();
        assert!(err.to_string().contains("for_network"), "{err}");
    }

    #[test]
    fn rows_are_the_comparison_group() {
        let mut net = Network::builder(&[2])
            .linear("fc", 2, 2)
            .build_init(0)
            .unwrap();
        // Row 0 large, row 1 small: per row, each loses its weaker weight.
        net.set_params(
            [
                (
                    "fc.weight",
                    ndarray::array![[10.0_f32, 20.0], [0.2, 0.1]].into_dyn(),
                ),
                ("fc.bias", ArrayD::zeros(IxDyn(&[2]))),
            ]
            .into_iter()
            .collect(),
        )
        .unwrap();
        let plan = Wanda::new(Amount::Count(1))
            .with_stats(stats_with("fc", vec![1.0, 1.0]))
            .plan(&Context::for_network(&net))
            .unwrap();
        assert_eq!(
            plan.masks.get("fc.weight").unwrap().as_slice(),
            &[false, true, true, false]
        );
    }

    #[test]
    fn sequential_calibrates_each_layer_on_the_layers_before_it_pruned() {
        use crate::data::Targets;
        let net = Network::builder(&[6])
            .linear("fc1", 6, 16)
            .relu("r")
            .linear("fc2", 16, 4)
            .build_init(3)
            .unwrap();
        let x = ArrayD::from_shape_fn(IxDyn(&[40, 6]), |i| {
            ((i[0] * 5 + i[1] * 7) % 11) as f32 - 5.0
        });
        let data = Dataset::new(x, Targets::Classes(vec![0; 40])).unwrap();
        let wanda = Wanda::new(Amount::Sparsity(0.5));
        let seq = wanda
            .plan_sequential(&net, &data, &Calibration::new())
            .unwrap();

        // By hand: fc1 from the dense network, then fc2 from the network with fc1 pruned.
        let dense = Wanda::calibration().run(&net, &data).unwrap();
        let fc1 = wanda
            .clone()
            .with_stats(dense.clone())
            .plan(&Context::for_network(&net))
            .unwrap();
        let mut pruned = net.clone();
        let fc1_only: MaskSet = [("fc1.weight", fc1.masks.get("fc1.weight").unwrap().clone())]
            .into_iter()
            .collect();
        pruned.apply_masks(&fc1_only).unwrap();
        let after = Wanda::calibration().run(&pruned, &data).unwrap();
        let fc2 = wanda
            .clone()
            .with_stats(after)
            .plan(&Context::for_network(&pruned))
            .unwrap();
        assert_eq!(seq.masks.get("fc1.weight"), fc1.masks.get("fc1.weight"));
        assert_eq!(seq.masks.get("fc2.weight"), fc2.masks.get("fc2.weight"));
        // And that differs from ranking fc2 with the dense network's statistics.
        let one_shot = wanda
            .with_stats(dense)
            .plan(&Context::for_network(&net))
            .unwrap();
        assert_ne!(
            seq.masks.get("fc2.weight"),
            one_shot.masks.get("fc2.weight")
        );
    }
}
