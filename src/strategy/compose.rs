//! Composition: several strategies acting as one.

use super::{Context, Plan, PruneStrategy};
use crate::error::{Error, Result};
use crate::mask::MaskSet;

/// How the plans of a [`Composition`] combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Combine {
    /// One after the other, each acting on what the ones before left (PyTorch's
    /// `PruningContainer`): a `Sparsity(0.5)` after another `Sparsity(0.5)` prunes half of the
    /// remaining half.
    Sequence,
    /// Each on the same starting state; a weight is kept only if every strategy keeps it (the
    /// intersection of the keep-masks: pruned by any is pruned).
    Intersect,
    /// Each on the same starting state; a weight is kept if any strategy keeps it (the union of
    /// the keep-masks: pruned only when all prune it). Weights pruned before stay pruned.
    Union,
}

/// Strategies run as one [`PruneStrategy`], in sequence or with their masks intersected or
/// united. Weights pruned before (the context's masks) are never revived.
///
/// The plan holds the complete keep-mask of every tensor any of the strategies considered.
///
/// ```
/// use ndarray::array;
/// use shears::strategy::{Composition, Context, PruneStrategy, WeightPruning};
/// use shears::{Amount, Params};
///
/// let params: Params = [("w", array![[1.0_f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]].into_dyn())]
///     .into_iter()
///     .collect();
/// // Half, then half of what remains: 6 of 8 pruned.
/// let both = Composition::sequence(vec![
///     Box::new(WeightPruning::new(Amount::Sparsity(0.5))),
///     Box::new(WeightPruning::new(Amount::Sparsity(0.5))),
/// ]);
/// let plan = both.plan(&Context::new(&params))?;
/// assert_eq!(plan.masks.get("w").unwrap().pruned(), 6);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Debug)]
pub struct Composition {
    combine: Combine,
    strategies: Vec<Box<dyn PruneStrategy>>,
    name: String,
}

impl Composition {
    /// The strategies combined by `combine`; its name joins theirs.
    pub fn new(combine: Combine, strategies: Vec<Box<dyn PruneStrategy>>) -> Self {
        let sep = match combine {
            Combine::Sequence => " then ",
            Combine::Intersect => " and ",
            Combine::Union => " or ",
        };
        let name = strategies
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(sep);
        Composition {
            combine,
            strategies,
            name,
        }
    }

    /// The strategies one after the other.
    pub fn sequence(strategies: Vec<Box<dyn PruneStrategy>>) -> Self {
        Self::new(Combine::Sequence, strategies)
    }

    /// Pruned by any of the strategies.
    pub fn intersect(strategies: Vec<Box<dyn PruneStrategy>>) -> Self {
        Self::new(Combine::Intersect, strategies)
    }

    /// Pruned by all of the strategies.
    pub fn union(strategies: Vec<Box<dyn PruneStrategy>>) -> Self {
        Self::new(Combine::Union, strategies)
    }

    /// How the plans combine.
    pub fn combine(&self) -> Combine {
        self.combine
    }

    /// The strategies, in order.
    pub fn strategies(&self) -> &[Box<dyn PruneStrategy>] {
        &self.strategies
    }
}

impl PruneStrategy for Composition {
    fn name(&self) -> &str {
        &self.name
    }

    fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        if self.strategies.is_empty() {
            return Err(Error::invalid("composition", "no strategies to combine"));
        }
        let prior = ctx.masks().cloned().unwrap_or_default();
        let plans: Vec<MaskSet> = match self.combine {
            Combine::Sequence => {
                let mut so_far = prior.clone();
                let mut considered = Vec::new();
                for s in &self.strategies {
                    let plan = s.plan(&ctx.with_masks(&so_far))?;
                    so_far = so_far.and(&plan.masks)?;
                    considered.extend(plan.masks.names().map(str::to_string));
                }
                let masks = considered
                    .into_iter()
                    .map(|n| {
                        let m = so_far.get(&n).expect("merged above").clone();
                        (n, m)
                    })
                    .collect();
                return Ok(Plan::new(self.name(), masks));
            }
            _ => self
                .strategies
                .iter()
                .map(|s| Ok(s.plan(ctx)?.masks))
                .collect::<Result<_>>()?,
        };
        let mut names: Vec<&str> = plans.iter().flat_map(MaskSet::names).collect();
        names.sort_unstable();
        names.dedup();
        let mut masks = MaskSet::new();
        for name in names {
            // A strategy that did not consider a tensor keeps what was kept before.
            let of = |p: &MaskSet| p.get(name).or_else(|| prior.get(name)).cloned();
            let mut merged = None;
            for p in &plans {
                let Some(m) = of(p) else {
                    // Kept whole by this strategy: the union keeps everything not pruned before.
                    if self.combine == Combine::Union {
                        merged = None;
                        break;
                    }
                    continue;
                };
                merged = Some(match (merged, self.combine) {
                    (None, _) => m,
                    (Some(a), Combine::Union) => m.or(&a, name)?,
                    (Some(a), _) => m.and(&a, name)?,
                });
            }
            let shape = ctx
                .params()
                .get(name)
                .ok_or_else(|| Error::UnknownTensor {
                    name: name.to_string(),
                })?
                .shape()
                .to_vec();
            let mut mask = merged.unwrap_or_else(|| crate::Mask::ones(&shape));
            if let Some(p) = prior.get(name) {
                mask = mask.and(p, name)?;
            }
            masks.insert(name, mask);
        }
        Ok(Plan::new(self.name(), masks))
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{ArrayD, IxDyn, array};
    use proptest::prelude::*;

    use super::*;
    use crate::amount::Amount;
    use crate::mask::Mask;
    use crate::params::Params;
    use crate::strategy::{Criterion, Scope, WeightPruning};

    fn params(values: Vec<f32>) -> Params {
        let n = values.len();
        [("w", ArrayD::from_shape_vec(IxDyn(&[1, n]), values).unwrap())]
            .into_iter()
            .collect()
    }

    fn boxed(s: impl PruneStrategy + 'static) -> Box<dyn PruneStrategy> {
        Box::new(s)
    }

    #[test]
    fn intersect_prunes_what_any_prunes_and_union_what_all_prune() {
        let p = params(vec![1.0, 2.0, 3.0, 4.0, -1.5, -2.5]);
        // Magnitude prunes the two smallest |w| (1.0, -1.5); positive scores prune the two most
        // negative (-2.5, -1.5).
        let make = || {
            vec![
                boxed(WeightPruning::new(Amount::Count(2))),
                boxed(WeightPruning::new(Amount::Count(2)).criterion(Criterion::custom(Positive))),
            ]
        };
        let ctx = Context::new(&p);
        let any = Composition::intersect(make()).plan(&ctx).unwrap();
        assert_eq!(
            any.masks.get("w").unwrap().as_slice(),
            &[false, true, true, true, false, false]
        );
        let all = Composition::union(make()).plan(&ctx).unwrap();
        assert_eq!(
            all.masks.get("w").unwrap().as_slice(),
            &[true, true, true, true, false, true]
        );
        assert_eq!(all.strategy, "weight or weight");
        assert!(Composition::union(vec![]).plan(&ctx).is_err());
    }

    #[test]
    fn a_strategy_that_skips_a_tensor_keeps_it_in_a_union() {
        let p: Params = [
            ("a", array![[1.0_f32, 2.0]].into_dyn()),
            ("b", array![[3.0_f32, 4.0]].into_dyn()),
        ]
        .into_iter()
        .collect();
        let only_a = WeightPruning::new(Amount::Count(1))
            .filter(crate::strategy::ParamFilter::new().include("a"));
        let both = WeightPruning::new(Amount::Count(1)).scope(Scope::Global);
        let ctx = Context::new(&p);
        let u = Composition::union(vec![boxed(only_a.clone()), boxed(both.clone())])
            .plan(&ctx)
            .unwrap();
        assert_eq!(u.masks.get("a").unwrap().as_slice(), &[false, true]);
        assert_eq!(u.masks.get("b").unwrap().as_slice(), &[true, true]);
        let i = Composition::intersect(vec![boxed(only_a), boxed(both)])
            .plan(&ctx)
            .unwrap();
        assert_eq!(i.masks.get("a").unwrap().as_slice(), &[false, true]);
        assert_eq!(i.masks.get("b").unwrap().as_slice(), &[true, true]);
    }

    #[derive(Debug)]
    struct Positive;

    impl crate::strategy::ElementScore for Positive {
        fn name(&self) -> &str {
            "positive"
        }
        fn score(
            &self,
            _: &str,
            w: ndarray::ArrayViewD<'_, f32>,
            _: &Context<'_>,
        ) -> Result<ArrayD<f32>> {
            Ok(w.to_owned())
        }
    }

    fn prior_of(keep: &[bool]) -> MaskSet {
        [(
            "w",
            Mask::from_vec(&[1, keep.len()], keep.to_vec()).unwrap(),
        )]
        .into_iter()
        .collect()
    }

    proptest! {
        #[test]
        fn sequences_prune_exact_counts_and_nothing_revives(
            values in prop::collection::vec(-10.0f32..10.0, 1..60),
            fractions in prop::collection::vec(0.0f64..=1.0, 1..4),
            prior_bits in prop::collection::vec(any::<bool>(), 60),
        ) {
            let n = values.len();
            let p = params(values);
            let prior = prior_of(&prior_bits[..n]);
            let strategies: Vec<Box<dyn PruneStrategy>> = fractions
                .iter()
                .map(|&f| boxed(WeightPruning::new(Amount::Sparsity(f))))
                .collect();
            let plan = Composition::sequence(strategies)
                .plan(&Context::new(&p).with_masks(&prior))
                .unwrap();
            let mask = plan.masks.get("w").unwrap();
            // Each step prunes round_half_even(f · remaining) of what is left.
            let mut remaining = prior.get("w").unwrap().kept();
            for &f in &fractions {
                remaining -= (f * remaining as f64).round_ties_even() as usize;
            }
            prop_assert_eq!(mask.kept(), remaining);
            let before = prior.get("w").unwrap().as_slice();
            for (&now, &then) in mask.as_slice().iter().zip(before) {
                prop_assert!(then || !now, "a pruned weight came back");
            }
        }

        #[test]
        fn intersections_and_unions_never_revive(
            values in prop::collection::vec(-10.0f32..10.0, 1..60),
            counts in prop::collection::vec(0usize..60, 1..4),
            prior_bits in prop::collection::vec(any::<bool>(), 60),
            union in any::<bool>(),
        ) {
            let n = values.len();
            let p = params(values);
            let prior = prior_of(&prior_bits[..n]);
            let kept = prior.get("w").unwrap().kept();
            let strategies: Vec<Box<dyn PruneStrategy>> = counts
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    let s = WeightPruning::new(Amount::Count(k.min(kept)));
                    if i % 2 == 0 { boxed(s) } else { boxed(s.criterion(Criterion::custom(Positive))) }
                })
                .collect();
            let combine = if union { Combine::Union } else { Combine::Intersect };
            let plan = Composition::new(combine, strategies)
                .plan(&Context::new(&p).with_masks(&prior))
                .unwrap();
            let mask = plan.masks.get("w").unwrap();
            let before = prior.get("w").unwrap().as_slice();
            for (&now, &then) in mask.as_slice().iter().zip(before) {
                prop_assert!(then || !now, "a pruned weight came back");
            }
            let most = counts.iter().map(|&k| k.min(kept)).max().unwrap();
            let least = counts.iter().map(|&k| k.min(kept)).min().unwrap();
            let pruned_now = kept - mask.kept();
            if union {
                prop_assert!(pruned_now <= least);
            } else {
                prop_assert!(pruned_now >= most);
            }
        }
    }
}
