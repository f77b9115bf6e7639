//! Structure-sensitivity pruning: whole channels and neurons, with their dependencies.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::{Context, Plan, PruneStrategy, Scope};
use crate::amount::CountRule;
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::select::{Scores, Source, prune_k};
use crate::structure::{ChannelRemoval, DependencyGroups, Group, GroupCriterion, Importance};

/// How much a structural plan removes.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum StructureTarget {
    /// This fraction of the channels of the ranked groups: `round_half_even(f · n)` of them,
    /// globally or in every group (as PyTorch's count rule). `n` counts units
    /// ([`Group::channels`](crate::structure::Group::channels)): where a grouped convolution
    /// ties the corresponding channels of its groups, one unit is one channel per group.
    Channels(f64),
    /// At least this fraction of the network's trainable parameters, removed by the fewest
    /// channels in ranking order.
    Params(f64),
    /// At least this fraction of the network's FLOPs per sample, likewise.
    Flops(f64),
}

impl StructureTarget {
    fn fraction(self) -> f64 {
        match self {
            StructureTarget::Channels(f)
            | StructureTarget::Params(f)
            | StructureTarget::Flops(f) => f,
        }
    }
}

/// Steps of the uniform fraction searched for a parameter or FLOP target in per-layer scope.
const LAYER_STEPS: usize = 1 << 12;

/// Structure-sensitivity pruning: removes whole neurons, filters and channels, every coupled
/// slice with them ([`DependencyGroups`]), so that the compacted network ([`Plan::compact`]) is
/// smaller and faster, not only sparser.
///
/// Each prunable group's units are scored by an [`Importance`] (by default Torch-Pruning's:
/// `Σ w²` over the group's weight slices, mean over slices, each group divided by its mean).
/// In [`Scope::Global`] (the default) all units of all groups are ranked together by their
/// normalised scores; in [`Scope::Layer`] each group loses the same fraction. Ties go to the
/// lower (group, channel), as the selection engine orders them. Every group keeps at least
/// `max(1, min_channels, ⌈min_fraction · n⌉)` channels.
///
/// The plan lists the removals and carries their masked equivalent, so it can be applied as
/// masks ([`Plan::apply`]) or performed ([`Plan::compact`]). Masks of earlier prunings in the
/// context are not considered. Groups the criterion cannot score (no BatchNorm for
/// [`GroupCriterion::BatchNormScale`], say) are kept whole.
///
/// Grounded in Li et al. 2017 (L1 filters), He et al. 2019 (FPGM), Liu et al. 2017 (BatchNorm
/// scale), Molchanov et al. 2019 (Taylor) and Fang et al. 2023 (DepGraph groups).
///
/// ```
/// use shears::graph::{Conv1d, Network};
/// use shears::strategy::{Context, PruneStrategy, StructureSensitivity, StructureTarget};
///
/// let net = Network::builder(&[2, 16])
///     .conv1d("conv1", Conv1d::new(2, 8, 3).padding(1))
///     .relu("relu1")
///     .conv1d("conv2", Conv1d::new(8, 8, 3).padding(1))
///     .relu("relu2")
///     .global_avg_pool("gap")
///     .linear("fc", 8, 3)
///     .build_init(0)?;
/// let plan = StructureSensitivity::new(StructureTarget::Channels(0.5)).plan(&Context::for_network(&net))?;
/// let removed: usize = plan.removals.iter().map(|r| r.channels.len()).sum();
/// assert_eq!(removed, 8);
/// let small = plan.compact(&net)?;
/// assert!(small.flops() < net.flops() / 2);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct StructureSensitivity {
    target: StructureTarget,
    importance: Importance,
    scope: Scope,
    min_channels: usize,
    min_fraction: f64,
    protected: Vec<String>,
}

/// The selection source of a scored group.
fn source<'a>(r: &'a Ranked<'_>, kept: Option<&'a [bool]>) -> Source<'a> {
    Source {
        name: r.group.name(),
        scores: Scores::Signed(&r.scores),
        kept,
    }
}

/// A scored group and how many of its units may go.
struct Ranked<'g> {
    group: &'g Group,
    scores: Vec<f32>,
    cap: usize,
}

impl StructureSensitivity {
    /// Prunes to `target` with L2 group importance, globally.
    pub fn new(target: StructureTarget) -> Self {
        StructureSensitivity {
            target,
            importance: Importance::new(GroupCriterion::L2),
            scope: Scope::Global,
            min_channels: 1,
            min_fraction: 0.0,
            protected: Vec::new(),
        }
    }

    /// Sets how units are scored.
    pub fn importance(mut self, importance: Importance) -> Self {
        self.importance = importance;
        self
    }

    /// Sets whether groups are ranked together ([`Scope::Global`]) or each loses the same
    /// fraction ([`Scope::Layer`]).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// Every group keeps at least `n` channels (at least 1 whatever `n`).
    pub fn min_channels(mut self, n: usize) -> Self {
        self.min_channels = n;
        self
    }

    /// Every group keeps at least `⌈f · n⌉` of its `n` channels.
    pub fn min_fraction(mut self, f: f64) -> Self {
        self.min_fraction = f;
        self
    }

    /// Keeps the output channels of these nodes whole (the network output always is).
    pub fn protect<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.protected.extend(nodes.into_iter().map(Into::into));
        self
    }

    fn validate(&self) -> Result<()> {
        let f = self.target.fraction();
        if !(0.0..=1.0).contains(&f) {
            return Err(Error::InvalidSparsity { value: f });
        }
        if !(0.0..=1.0).contains(&self.min_fraction) {
            return Err(Error::invalid(
                "min_fraction",
                format!("must be in [0, 1], got {}", self.min_fraction),
            ));
        }
        if !matches!(self.scope, Scope::Global | Scope::Layer) {
            return Err(Error::invalid(
                "scope",
                format!(
                    "{:?} does not apply to channels; use global or layer",
                    self.scope
                ),
            ));
        }
        Ok(())
    }

    fn ranked<'g>(&self, net: &Network, groups: &'g DependencyGroups) -> Result<Vec<Ranked<'g>>> {
        let mut out = Vec::new();
        for group in groups.prunable() {
            let Some(scores) = self.importance.scores(net, group)? else {
                continue;
            };
            let n = group.channels();
            let floor = (self.min_fraction * n as f64).ceil() as usize;
            let keep = floor.max(self.min_channels).max(1).min(n);
            out.push(Ranked {
                group,
                scores,
                cap: n - keep,
            });
        }
        if out.is_empty() {
            return Err(Error::NothingSelected {
                reason: "no dependency group can be pruned and scored".into(),
            });
        }
        Ok(out)
    }

    /// The removals at `level`: `level` units globally, or the fraction `level / LAYER_STEPS`
    /// of every group (floors clamp).
    fn removals_at(&self, ranked: &[Ranked<'_>], level: usize) -> Result<Vec<ChannelRemoval>> {
        let removed: Vec<Vec<bool>> = match self.scope {
            Scope::Global => {
                // A group's units can only go in its own order, and at most `cap` of them: its
                // candidates are its `cap` lowest.
                let candidates: Vec<Vec<bool>> = ranked
                    .iter()
                    .map(|r| {
                        let keep = prune_k(&[source(r, None)], r.cap)?;
                        Ok(keep[0].iter().map(|&k| !k).collect())
                    })
                    .collect::<Result<_>>()?;
                let sources: Vec<Source<'_>> = ranked
                    .iter()
                    .zip(&candidates)
                    .map(|(r, c)| source(r, Some(c)))
                    .collect();
                prune_k(&sources, level)?
                    .into_iter()
                    .zip(&candidates)
                    .map(|(keep, cand)| cand.iter().zip(keep).map(|(&c, k)| c && !k).collect())
                    .collect()
            }
            _ => ranked
                .iter()
                .map(|r| {
                    let s = level as f64 / LAYER_STEPS as f64;
                    let k = CountRule::TiesEven.count(s, r.group.channels()).min(r.cap);
                    let keep = prune_k(&[source(r, None)], k)?;
                    Ok(keep[0].iter().map(|&k| !k).collect())
                })
                .collect::<Result<_>>()?,
        };
        Ok(ranked
            .iter()
            .zip(removed)
            .map(|(r, removed)| ChannelRemoval {
                group: r.group.name().to_string(),
                channels: (0..removed.len()).filter(|&i| removed[i]).collect(),
            })
            .filter(|r| !r.channels.is_empty())
            .collect())
    }

    /// The level that meets a channel target, refusing one the floors forbid.
    fn channel_level(&self, ranked: &[Ranked<'_>], f: f64) -> Result<usize> {
        match self.scope {
            Scope::Global => {
                let n = ranked.iter().map(|r| r.group.channels()).sum();
                let k = CountRule::TiesEven.count(f, n);
                let available = ranked.iter().map(|r| r.cap).sum();
                if k > available {
                    return Err(Error::CountTooLarge {
                        requested: k,
                        available,
                        scope: "global channels (after the per-layer floors)".into(),
                    });
                }
                Ok(k)
            }
            _ => {
                for r in ranked {
                    let k = CountRule::TiesEven.count(f, r.group.channels());
                    if k > r.cap {
                        return Err(Error::CountTooLarge {
                            requested: k,
                            available: r.cap,
                            scope: format!(
                                "channels of group `{}` (after its floor)",
                                r.group.name()
                            ),
                        });
                    }
                }
                // The exact fraction: `removals_at` recomputes `count(level / STEPS, n)`, so
                // search the smallest level giving the same counts.
                Ok((0..=LAYER_STEPS)
                    .find(|&l| {
                        ranked.iter().all(|r| {
                            let n = r.group.channels();
                            CountRule::TiesEven.count(l as f64 / LAYER_STEPS as f64, n)
                                >= CountRule::TiesEven.count(f, n)
                        })
                    })
                    .unwrap_or(LAYER_STEPS))
            }
        }
    }

    /// The smallest level whose compacted network saves at least the fraction `f` of the
    /// parameters or FLOPs.
    fn cost_level(
        &self,
        net: &Network,
        groups: &DependencyGroups,
        ranked: &[Ranked<'_>],
        f: f64,
    ) -> Result<usize> {
        let flops = matches!(self.target, StructureTarget::Flops(_));
        let cost = |n: &Network| {
            if flops {
                n.flops() as f64
            } else {
                n.num_params() as f64
            }
        };
        let dense = cost(net);
        let saved = |level: usize| -> Result<f64> {
            let small = groups.compact(net, &self.removals_at(ranked, level)?)?;
            Ok(1.0 - cost(&small) / dense)
        };
        let mut hi = match self.scope {
            Scope::Global => ranked.iter().map(|r| r.cap).sum(),
            _ => LAYER_STEPS,
        };
        let most = saved(hi)?;
        if most < f {
            return Err(Error::invalid(
                "structure target",
                format!(
                    "{:?} is out of reach: removing every channel the floors allow saves {:.4}",
                    self.target, most
                ),
            ));
        }
        let mut lo = 0;
        while lo < hi {
            let mid = (lo + hi) / 2;
            if saved(mid)? >= f {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }
}

impl PruneStrategy for StructureSensitivity {
    fn name(&self) -> &str {
        "structure-sensitivity"
    }

    /// # Errors
    /// [`Error::InvalidParameter`] without a network in the context (use
    /// [`Context::for_network`]), for a scope other than global or layer, or for a parameter or
    /// FLOP target the floors make unreachable; [`Error::InvalidSparsity`] for a fraction
    /// outside `[0, 1]`; [`Error::CountTooLarge`] for a channel target the floors forbid;
    /// [`Error::NothingSelected`] when no group can be pruned; criterion errors.
    fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        self.validate()?;
        let net = ctx.network().ok_or_else(|| {
            Error::invalid(
                "context",
                "structure-sensitivity pruning needs the network: use Context::for_network",
            )
        })?;
        let protected: Vec<&str> = self.protected.iter().map(String::as_str).collect();
        let groups = DependencyGroups::with_protected(net, &protected)?;
        let ranked = self.ranked(net, &groups)?;
        let level = match self.target {
            StructureTarget::Channels(f) => self.channel_level(&ranked, f)?,
            StructureTarget::Params(f) | StructureTarget::Flops(f) => {
                self.cost_level(net, &groups, &ranked, f)?
            }
        };
        let removals = self.removals_at(&ranked, level)?;
        let masks = groups.masks(net, &removals)?;
        Ok(Plan::structural(self.name(), masks, removals))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Conv1d;
    use crate::structure::Normalizer;
    use ndarray::{ArrayD, IxDyn};

    /// conv1 (4 filters) → conv2 (6 filters) → gap → fc, with filter norms set so that the
    /// ranking is known: conv1 filter i has weights 0.1 · (i + 1), conv2 filter i 0.05 · (i + 1).
    fn net() -> Network {
        let mut net = Network::builder(&[1, 8])
            .conv1d("conv1", Conv1d::new(1, 4, 1).bias(false))
            .relu("r1")
            .conv1d("conv2", Conv1d::new(4, 6, 1).bias(false))
            .relu("r2")
            .global_avg_pool("gap")
            .linear("fc", 6, 2)
            .build_init(0)
            .unwrap();
        let mut p = net.params().clone();
        p.insert(
            "conv1.weight",
            ArrayD::from_shape_fn(IxDyn(&[4, 1, 1]), |i| 0.1 * (i[0] + 1) as f32),
        );
        p.insert(
            "conv2.weight",
            ArrayD::from_shape_fn(IxDyn(&[6, 4, 1]), |i| 0.05 * (i[0] + 1) as f32),
        );
        net.set_params(p).unwrap();
        net
    }

    fn plan(s: StructureSensitivity, net: &Network) -> Result<Plan> {
        s.plan(&Context::for_network(net))
    }

    fn removed(p: &Plan, group: &str) -> Vec<usize> {
        p.removals
            .iter()
            .find(|r| r.group == group)
            .map(|r| r.channels.clone())
            .unwrap_or_default()
    }

    #[test]
    fn global_channels_follow_the_ranking_and_the_floor() {
        let net = net();
        let prod_only = Importance::new(GroupCriterion::Fpgm).normalizer(Normalizer::None);
        // FPGM on 1-D filters on a line: the middle filters are nearest the median.
        let p = plan(
            StructureSensitivity::new(StructureTarget::Channels(0.4)).importance(prod_only.clone()),
            &net,
        )
        .unwrap();
        let total: usize = p.removals.iter().map(|r| r.channels.len()).sum();
        assert_eq!(total, 4, "round(0.4 · 10)");
        let p = plan(
            StructureSensitivity::new(StructureTarget::Channels(0.6))
                .importance(prod_only)
                .min_channels(2),
            &net,
        )
        .unwrap();
        assert_eq!(removed(&p, "conv1").len(), 2);
        assert_eq!(removed(&p, "conv2").len(), 4);
        let err = plan(
            StructureSensitivity::new(StructureTarget::Channels(0.9)).min_channels(2),
            &net,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::CountTooLarge {
                    requested: 9,
                    available: 6,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn layer_scope_removes_the_same_fraction_of_each_group() {
        let net = net();
        let p = plan(
            StructureSensitivity::new(StructureTarget::Channels(0.5))
                .scope(Scope::Layer)
                .importance(Importance::new(GroupCriterion::L1).normalizer(Normalizer::None)),
            &net,
        )
        .unwrap();
        // conv1's filters grow with the index, but its consumer columns (conv2's) do not vary
        // with the input channel: the two smallest go.
        assert_eq!(removed(&p, "conv1"), [0, 1]);
        assert_eq!(removed(&p, "conv2").len(), 3);
    }

    #[test]
    fn parameter_and_flop_targets_are_met_with_the_fewest_channels() {
        let net = net();
        for target in [StructureTarget::Params(0.3), StructureTarget::Flops(0.3)] {
            for scope in [Scope::Global, Scope::Layer] {
                let s = StructureSensitivity::new(target).scope(scope);
                let p = plan(s, &net).unwrap();
                let small = p.compact(&net).unwrap();
                let saved = |a: f64, b: f64| 1.0 - a / b;
                let got = match target {
                    StructureTarget::Params(_) => {
                        saved(small.num_params() as f64, net.num_params() as f64)
                    }
                    _ => saved(small.flops() as f64, net.flops() as f64),
                };
                assert!(got >= 0.3, "{target:?} {scope:?}: saved {got}");
                assert!(got < 0.6, "{target:?} {scope:?}: saved {got}, too many");
            }
        }
        let err = plan(
            StructureSensitivity::new(StructureTarget::Params(0.99)),
            &net,
        )
        .unwrap_err();
        assert!(err.to_string().contains("out of reach"), "{err}");
    }

    #[test]
    fn the_plan_masks_what_compaction_removes() {
        let net = net();
        let p = plan(
            StructureSensitivity::new(StructureTarget::Channels(0.5)),
            &net,
        )
        .unwrap();
        let small = p.compact(&net).unwrap();
        assert_eq!(small.num_params(), net.num_params() - p.masks.pruned());
        let mut params = net.params().clone();
        p.apply(&mut params).unwrap();
        assert_eq!(
            params
                .iter()
                .map(|(_, t)| t.iter().filter(|&&v| v == 0.0).count())
                .sum::<usize>(),
            p.masks.pruned()
        );
    }

    #[test]
    fn protected_and_invalid_settings() {
        let net = net();
        let p = plan(
            StructureSensitivity::new(StructureTarget::Channels(0.5)).protect(["conv2"]),
            &net,
        )
        .unwrap();
        assert!(removed(&p, "conv2").is_empty());
        assert_eq!(removed(&p, "conv1").len(), 2);
        let s = StructureSensitivity::new(StructureTarget::Channels(1.5));
        assert!(matches!(plan(s, &net), Err(Error::InvalidSparsity { .. })));
        let s = StructureSensitivity::new(StructureTarget::Channels(0.5));
        let err = s.plan(&Context::new(net.params())).unwrap_err();
        assert!(err.to_string().contains("for_network"), "{err}");
        let s = StructureSensitivity::new(StructureTarget::Channels(0.5)).scope(Scope::Row);
        assert!(matches!(plan(s, &net), Err(Error::InvalidParameter { .. })));
    }

    #[cfg(feature = "serde")]
    #[test]
    fn plans_round_trip_through_json() {
        let net = net();
        let p = plan(
            StructureSensitivity::new(StructureTarget::Channels(0.5)),
            &net,
        )
        .unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains("\"removals\""));
        let back: Plan = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;
    use crate::structure::tests::random_net;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A global channel target removes exactly `round_half_even(f · n)` channels of the
        /// prunable groups, never below a floor, and its masks are what compaction removes.
        #[test]
        fn global_channel_targets_are_exact(
            kind in 0u8..4,
            seed in any::<u64>(),
            f in 0.0f64..0.9,
            floor in 1usize..3,
        ) {
            let net = random_net(kind, seed);
            let groups = DependencyGroups::of(&net).unwrap();
            let n: usize = groups.prunable().map(|g| g.channels()).sum();
            let cap: usize = groups.prunable().map(|g| g.channels().saturating_sub(floor)).sum();
            let k = CountRule::TiesEven.count(f, n);
            let result = StructureSensitivity::new(StructureTarget::Channels(f))
                .min_channels(floor)
                .plan(&Context::for_network(&net));
            if k > cap {
                let refused = matches!(result, Err(Error::CountTooLarge { .. }));
                prop_assert!(refused);
                return Ok(());
            }
            let plan = result.unwrap();
            let removed: usize = plan.removals.iter().map(|r| r.channels.len()).sum();
            prop_assert_eq!(removed, k);
            for r in &plan.removals {
                let g = groups.get(&r.group).unwrap();
                prop_assert!(g.channels() - r.channels.len() >= floor.min(g.channels()));
            }
            let small = plan.compact(&net).unwrap();
            prop_assert_eq!(small.num_params(), net.num_params() - plan.masks.pruned());
        }
    }
}
