//! The weight strategy against PyTorch's `torch.nn.utils.prune` test vectors (transcribed in
//! `pruning-semantics.md` §2.5–2.6 from PyTorch's own test suite) and the invariants that any
//! amount, shape and scope must keep.

use std::sync::Arc;

use ndarray::{ArrayD, IxDyn, array};
use proptest::prelude::*;
use shears::select::Norm;
use shears::strategy::{
    ChannelAxis, Context, Criterion, Granularity, ParamFilter, PruneStrategy, Scope, WeightPruning,
};
use shears::{Amount, CountRule, Error, Mask, MaskSet, Params};

fn params(entries: &[(&str, ArrayD<f32>)]) -> Params {
    entries.iter().cloned().collect()
}

fn flags(m: &Mask) -> Vec<u8> {
    m.as_slice().iter().map(|&k| k as u8).collect()
}

fn mask(shape: &[usize], f: &[u8]) -> Mask {
    Mask::from_vec(shape, f.iter().map(|&x| x == 1).collect()).unwrap()
}

#[test]
fn global_unstructured_vectors() {
    let m = array![[1.0_f32, 2.0, 3.0, 4.0], [-4.0, -3.0, -2.0, -1.0]].into_dyn();
    let n = array![[0.0_f32, 0.1, -2.0]].into_dyn();
    let p = params(&[("m.weight", m.clone()), ("n.weight", n.clone())]);
    let global = WeightPruning::new(Amount::Count(4)).scope(Scope::Global);
    let plan = global.plan(&Context::new(&p)).unwrap();
    assert_eq!(
        flags(plan.masks.get("m.weight").unwrap()),
        [0, 1, 1, 1, 1, 1, 1, 0]
    );
    assert_eq!(flags(plan.masks.get("n.weight").unwrap()), [0, 0, 1]);

    // Second vector: importance scores replace the weights for ranking, by absolute value.
    let scores = params(&[
        (
            "m.weight",
            array![[4.0_f32, 2.0, 1.0, 3.0], [-3.0, -1.0, -2.0, -4.0]].into_dyn(),
        ),
        ("n.weight", array![[0.0_f32, 10.0, -0.2]].into_dyn()),
    ]);
    let plan = global
        .criterion(Criterion::Importance(Arc::new(scores)))
        .plan(&Context::new(&p))
        .unwrap();
    let mut pruned = p.clone();
    plan.apply(&mut pruned).unwrap();
    assert_eq!(
        pruned.get("m.weight").unwrap(),
        &array![[1.0_f32, 2.0, 0.0, 4.0], [-4.0, 0.0, -2.0, -1.0]].into_dyn()
    );
    assert_eq!(
        pruned.get("n.weight").unwrap(),
        &array![[0.0_f32, 0.1, 0.0]].into_dyn()
    );
}

#[test]
fn container_vectors() {
    let t = array![[1.0_f32, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]].into_dyn();
    let p = params(&[("t", t.clone())]);
    let default: MaskSet = [("t", mask(&[2, 4], &[1, 1, 1, 0, 1, 1, 0, 1]))]
        .into_iter()
        .collect();
    let ctx = Context::new(&p).with_masks(&default);

    let l1 = WeightPruning::new(Amount::Count(2)).plan(&ctx).unwrap();
    assert_eq!(flags(l1.masks.get("t").unwrap()), [0, 0, 1, 0, 1, 1, 0, 1]);

    // PyTorch's container test ranks the raw tensor, not the masked one: importance scores.
    let raw = Criterion::Importance(Arc::new(p.clone()));
    let rows = Granularity::Channels {
        axis: ChannelAxis::Out,
        norm: Norm::L2,
    };
    let after_l1 = l1.masks.clone();
    let dim0 = WeightPruning::new(Amount::Count(1))
        .granularity(rows)
        .criterion(raw.clone())
        .plan(&Context::new(&p).with_masks(&after_l1))
        .unwrap();
    assert_eq!(
        flags(dim0.masks.get("t").unwrap()),
        [0, 0, 0, 0, 1, 1, 0, 1]
    );

    let dim1 = WeightPruning::new(Amount::Count(1))
        .granularity(Granularity::Channels {
            axis: ChannelAxis::In,
            norm: Norm::L2,
        })
        .criterion(raw)
        .plan(&ctx)
        .unwrap();
    assert_eq!(
        flags(dim1.masks.get("t").unwrap()),
        [0, 1, 1, 0, 0, 1, 0, 1]
    );
}

#[test]
fn repeated_l1_prunes_a_fraction_of_what_remains() {
    let mut p = params(&[(
        "w",
        array![[1.0_f32, 2.0, 3.0, 4.0], [-4.0, -3.0, -2.0, -1.0]].into_dyn(),
    )]);
    let l1 = WeightPruning::new(Amount::Count(2));
    let first = l1.plan(&Context::new(&p)).unwrap();
    first.apply(&mut p).unwrap();
    assert_eq!(p.slice("w").unwrap(), &[0., 2., 3., 4., -4., -3., -2., 0.]);
    let second = l1.plan(&Context::new(&p).with_masks(&first.masks)).unwrap();
    second.apply(&mut p).unwrap();
    assert_eq!(p.slice("w").unwrap(), &[0., 0., 3., 4., -4., -3., 0., 0.]);
}

#[test]
fn masked_weights_count_as_zero_in_magnitude_channel_norms() {
    // With magnitude, PyTorch ranks module.weight, which is already masked: column 2 keeps
    // only 3 and so has the smallest norm.
    let p = params(&[(
        "t",
        array![[1.0_f32, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]].into_dyn(),
    )]);
    let default: MaskSet = [("t", mask(&[2, 4], &[1, 1, 1, 0, 1, 1, 0, 1]))]
        .into_iter()
        .collect();
    let plan = WeightPruning::new(Amount::Count(1))
        .granularity(Granularity::Channels {
            axis: ChannelAxis::In,
            norm: Norm::L2,
        })
        .plan(&Context::new(&p).with_masks(&default))
        .unwrap();
    assert_eq!(
        flags(plan.masks.get("t").unwrap()),
        [1, 1, 0, 0, 1, 1, 0, 1]
    );
}

#[test]
fn conv_channel_vectors() {
    // ln_structured on a (1, 3, 2, 2) weight with n = 2, dim = 1 prunes the channel with the
    // smallest L2 norm (pruning-semantics.md §2.6).
    let w = ArrayD::from_shape_vec(
        IxDyn(&[1, 3, 2, 2]),
        vec![1., 1., 1., 1., 0.1, 0.1, 0.1, 0.1, 2., 2., 2., 2.],
    )
    .unwrap();
    let p = params(&[("conv.weight", w)]);
    let plan = WeightPruning::new(Amount::Count(1))
        .granularity(Granularity::Channels {
            axis: ChannelAxis::In,
            norm: Norm::L2,
        })
        .plan(&Context::new(&p))
        .unwrap();
    assert_eq!(
        flags(plan.masks.get("conv.weight").unwrap()),
        [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1]
    );
}

#[test]
fn norms_rank_channels_differently() {
    // Row 0 = [3, 0, 0]: L1 3, L2 3, Linf 3. Row 1 = [1.2, 1.2, 1.2]: L1 3.6, L2 2.08, Linf 1.2.
    let p = params(&[("w", array![[3.0_f32, 0.0, 0.0], [1.2, 1.2, 1.2]].into_dyn())]);
    let pruned_row = |norm| {
        let plan = WeightPruning::new(Amount::Count(1))
            .granularity(Granularity::Channels {
                axis: ChannelAxis::Out,
                norm,
            })
            .plan(&Context::new(&p))
            .unwrap();
        plan.masks.get("w").unwrap().live_along(0).unwrap()
    };
    assert_eq!(pruned_row(Norm::L1), [false, true]);
    assert_eq!(pruned_row(Norm::L2), [true, false]);
    assert_eq!(pruned_row(Norm::Inf), [true, false]);
}

#[test]
fn rounding_cases_through_the_strategy() {
    for (s, n, k) in [
        (0.5, 5, 2),
        (0.5, 9, 4),
        (0.125, 4, 0),
        (0.5, 7, 4),
        (0.4, 17, 7),
    ] {
        let w =
            ArrayD::from_shape_vec(IxDyn(&[1, n]), (1..=n).map(|x| x as f32).collect()).unwrap();
        let p = params(&[("w", w)]);
        let plan = WeightPruning::new(Amount::Sparsity(s))
            .plan(&Context::new(&p))
            .unwrap();
        let m = plan.masks.get("w").unwrap();
        assert_eq!(m.pruned(), k, "{s} of {n}");
        // The smallest magnitudes go: the first k.
        assert!(m.as_slice()[..k].iter().all(|&kept| !kept));
    }
}

#[test]
fn ties_prune_the_lowest_index_first_in_every_scope() {
    let p = params(&[
        ("a", ArrayD::from_elem(IxDyn(&[2, 3]), 1.0)),
        ("b", ArrayD::from_elem(IxDyn(&[2, 2]), 1.0)),
    ]);
    let layer = WeightPruning::new(Amount::Count(2))
        .plan(&Context::new(&p))
        .unwrap();
    assert_eq!(flags(layer.masks.get("a").unwrap()), [0, 0, 1, 1, 1, 1]);
    assert_eq!(flags(layer.masks.get("b").unwrap()), [0, 0, 1, 1]);
    let global = WeightPruning::new(Amount::Count(7))
        .scope(Scope::Global)
        .plan(&Context::new(&p))
        .unwrap();
    assert_eq!(flags(global.masks.get("a").unwrap()), [0, 0, 0, 0, 0, 0]);
    assert_eq!(flags(global.masks.get("b").unwrap()), [0, 1, 1, 1]);
    let rows = WeightPruning::new(Amount::Count(1))
        .scope(Scope::Row)
        .plan(&Context::new(&p))
        .unwrap();
    assert_eq!(flags(rows.masks.get("a").unwrap()), [0, 1, 1, 0, 1, 1]);
}

#[test]
fn row_scope_prunes_each_row_alone() {
    // Wanda's comparison group: each output row loses the same number of weights even when one
    // row holds all the small values.
    let p = params(&[(
        "w",
        array![[0.1_f32, 0.2, 0.3, 0.4], [10.0, 20.0, 30.0, 40.0]].into_dyn(),
    )]);
    let plan = WeightPruning::new(Amount::Sparsity(0.5))
        .scope(Scope::Row)
        .plan(&Context::new(&p))
        .unwrap();
    assert_eq!(
        flags(plan.masks.get("w").unwrap()),
        [0, 0, 1, 1, 0, 0, 1, 1]
    );
}

#[test]
fn threshold_prunes_at_or_below() {
    let p = params(&[("w", array![[0.5_f32, -0.5, 0.6, -0.4]].into_dyn())]);
    let plan = WeightPruning::new(Amount::Threshold(0.5))
        .plan(&Context::new(&p))
        .unwrap();
    assert_eq!(flags(plan.masks.get("w").unwrap()), [0, 0, 1, 0]);
}

#[test]
fn n_m_keeps_n_per_group_with_short_tail() {
    let w = array![[1.0_f32, 4.0, 2.0, 3.0, 0.5, 0.25]].into_dyn();
    let p = params(&[("w", w)]);
    let plan = WeightPruning::n_m(2, 4).plan(&Context::new(&p)).unwrap();
    assert_eq!(flags(plan.masks.get("w").unwrap()), [0, 1, 0, 1, 1, 1]);
    let err = WeightPruning::n_m(2, 4)
        .scope(Scope::Global)
        .plan(&Context::new(&p))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
    assert!(matches!(
        WeightPruning::n_m(5, 4).plan(&Context::new(&p)),
        Err(Error::InvalidNm { n: 5, m: 4 })
    ));
}

#[test]
fn random_is_seeded_and_exact() {
    let p = params(&[("w", ArrayD::from_elem(IxDyn(&[10, 10]), 1.0))]);
    let random = |seed| {
        WeightPruning::new(Amount::Sparsity(0.3))
            .criterion(Criterion::Random { seed })
            .plan(&Context::new(&p))
            .unwrap()
            .masks
    };
    assert_eq!(random(7), random(7));
    assert_ne!(random(7), random(8));
    assert_eq!(random(7).get("w").unwrap().pruned(), 30);
    let channels = WeightPruning::new(Amount::Count(3))
        .criterion(Criterion::Random { seed: 1 })
        .granularity(Granularity::Channels {
            axis: ChannelAxis::Out,
            norm: Norm::L2,
        })
        .plan(&Context::new(&p))
        .unwrap();
    let rows = channels.masks.get("w").unwrap().live_along(0).unwrap();
    assert_eq!(rows.iter().filter(|&&r| !r).count(), 3);
}

#[test]
fn bad_input_is_an_error_naming_the_culprit() {
    let mut w = ArrayD::from_elem(IxDyn(&[2, 2]), 1.0_f32);
    w[[1, 0]] = f32::NAN;
    let p = params(&[("fc.weight", w)]);
    let err = WeightPruning::new(Amount::Sparsity(0.5))
        .plan(&Context::new(&p))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonFinite { tensor, index: 2, .. } if tensor == "fc.weight"),
        "{err}"
    );
    let err = WeightPruning::new(Amount::Sparsity(0.5))
        .criterion(Criterion::Random { seed: 0 })
        .plan(&Context::new(&p))
        .unwrap_err();
    assert!(matches!(err, Error::NonFinite { index: 2, .. }), "{err}");

    let p = params(&[("w", ArrayD::from_elem(IxDyn(&[2, 2]), 1.0))]);
    assert!(matches!(
        WeightPruning::new(Amount::Sparsity(1.5)).plan(&Context::new(&p)),
        Err(Error::InvalidSparsity { .. })
    ));
    assert!(matches!(
        WeightPruning::new(Amount::Count(5)).plan(&Context::new(&p)),
        Err(Error::CountTooLarge {
            requested: 5,
            available: 4,
            ..
        })
    ));
    let wrong: MaskSet = [("w", Mask::ones(&[4]))].into_iter().collect();
    assert!(matches!(
        WeightPruning::new(Amount::Count(1)).plan(&Context::new(&p).with_masks(&wrong)),
        Err(Error::ShapeMismatch { .. })
    ));
    let scores = Arc::new(params(&[("other", ArrayD::zeros(IxDyn(&[2, 2])))]));
    assert!(matches!(
        WeightPruning::new(Amount::Count(1))
            .criterion(Criterion::Importance(scores))
            .plan(&Context::new(&p)),
        Err(Error::UnknownTensor { .. })
    ));
    assert!(matches!(
        WeightPruning::new(Amount::Count(1))
            .filter(ParamFilter::new().include("conv*"))
            .plan(&Context::new(&p)),
        Err(Error::NothingSelected { .. })
    ));
}

/// Tensors of random shapes (one or two dims of 1..12, plus conv-like 4-D) with values from a
/// small set so that ties are common.
fn tensors() -> impl Strategy<Value = Params> {
    let shape = prop_oneof![
        (1usize..12, 1usize..12).prop_map(|(a, b)| vec![a, b]),
        (1usize..5, 1usize..5, 1usize..3, 1usize..3).prop_map(|(a, b, c, d)| vec![a, b, c, d]),
    ];
    prop::collection::vec(
        shape.prop_flat_map(|s| {
            let n = s.iter().product::<usize>();
            (Just(s), prop::collection::vec(-4i8..=4, n))
        }),
        1..5,
    )
    .prop_map(|ts| {
        ts.into_iter()
            .enumerate()
            .map(|(i, (s, v))| {
                let a = ArrayD::from_shape_vec(IxDyn(&s), v.into_iter().map(f32::from).collect());
                (format!("t{i}.weight"), a.unwrap())
            })
            .collect()
    })
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![Just(Scope::Layer), Just(Scope::Global), Just(Scope::Row)]
}

proptest! {
    #[test]
    fn exactly_k_and_never_revive(p in tensors(), s1 in 0.0..=1.0f64, s2 in 0.0..=1.0f64, scope in scope()) {
        let first = WeightPruning::new(Amount::Sparsity(s1)).scope(scope);
        let plan1 = first.plan(&Context::new(&p)).unwrap();
        // Exact counts: per tensor, per row, or over everything.
        match scope {
            Scope::Layer => for (name, m) in plan1.masks.iter() {
                prop_assert_eq!(m.pruned(), CountRule::TiesEven.count(s1, p.get(name).unwrap().len()));
            },
            Scope::Global => {
                prop_assert_eq!(plan1.masks.pruned(), CountRule::TiesEven.count(s1, p.num_elements()));
            }
            Scope::Row => for (name, m) in plan1.masks.iter() {
                let rows = p.get(name).unwrap().shape()[0];
                let per_row = m.len() / rows;
                for row in m.as_slice().chunks(per_row) {
                    let pruned = row.iter().filter(|&&k| !k).count();
                    prop_assert_eq!(pruned, CountRule::TiesEven.count(s1, per_row));
                }
            },
            _ => unreachable!(),
        }
        // A second pruning acts on what remains, and pruned stays pruned.
        let plan2 = WeightPruning::new(Amount::Sparsity(s2))
            .scope(scope)
            .plan(&Context::new(&p).with_masks(&plan1.masks))
            .unwrap();
        for (name, m2) in plan2.masks.iter() {
            let m1 = plan1.masks.get(name).unwrap();
            for (&k2, &k1) in m2.as_slice().iter().zip(m1.as_slice()) {
                prop_assert!(!k2 || k1, "{} revived", name);
            }
            if scope == Scope::Layer {
                let remaining = m1.kept();
                prop_assert_eq!(m1.kept() - m2.kept(), CountRule::TiesEven.count(s2, remaining));
            }
        }
        if scope == Scope::Global {
            let remaining = plan1.masks.kept();
            prop_assert_eq!(plan1.masks.kept() - plan2.masks.kept(), CountRule::TiesEven.count(s2, remaining));
        }
    }

    #[test]
    fn global_equals_ranking_the_concatenation(p in tensors(), s in 0.0..=1.0f64) {
        let plan = WeightPruning::new(Amount::Sparsity(s))
            .scope(Scope::Global)
            .plan(&Context::new(&p))
            .unwrap();
        let mut all: Vec<(f32, usize)> = p.iter().flat_map(|(_, a)| a.iter().map(|x| x.abs())).enumerate().map(|(i, x)| (x, i)).collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let k = CountRule::TiesEven.count(s, all.len());
        let mut expected = vec![true; all.len()];
        for &(_, i) in &all[..k] {
            expected[i] = false;
        }
        let got: Vec<bool> = p.names().flat_map(|n| plan.masks.get(n).unwrap().as_slice().to_vec()).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn channel_pruning_removes_whole_channels(p in tensors(), k in 0usize..4, out in any::<bool>()) {
        let axis = if out { ChannelAxis::Out } else { ChannelAxis::In };
        let a = if out { 0 } else { 1 };
        let strategy = WeightPruning::new(Amount::Count(k)).granularity(Granularity::Channels { axis, norm: Norm::L1 });
        match strategy.plan(&Context::new(&p)) {
            Ok(plan) => for (name, m) in plan.masks.iter() {
                let live = m.live_along(a).unwrap();
                prop_assert_eq!(live.iter().filter(|&&l| !l).count(), k);
                // Whole channels: kept elements are exactly those of live channels.
                let expected = live.iter().filter(|&&l| l).count() * (m.len() / live.len());
                prop_assert_eq!(m.kept(), expected, "{}", name);
            },
            Err(Error::CountTooLarge { requested, available, .. }) => {
                prop_assert_eq!(requested, k);
                prop_assert!(available < k);
            }
            Err(e) => return Err(TestCaseError::fail(e.to_string())),
        }
    }
}
