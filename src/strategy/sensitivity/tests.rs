use std::cell::Cell;

use ndarray::{ArrayD, IxDyn, array};

use super::*;
use crate::graph::Network;
use crate::mask::Mask;
use crate::strategy::{ChannelAxis, Scope};
use crate::train::ScoreAccumulator;

fn net() -> Network {
    Network::builder(&[3])
        .linear("fc1", 3, 4)
        .relu("act")
        .linear("fc2", 4, 2)
        .build_init(7)
        .unwrap()
}

/// The network's output on a fixed batch, flattened: a metric that sees every weight.
fn outputs(n: &Network) -> Vec<f32> {
    let x = ArrayD::from_shape_fn(IxDyn(&[5, 3]), |i| (i[0] * 3 + i[1]) as f32 / 7.0 - 1.0);
    n.forward(x.view()).unwrap().iter().copied().collect()
}

fn metric(n: &Network) -> Result<f64> {
    Ok(outputs(n).iter().map(|&v| f64::from(v)).sum())
}

/// Zeroes the `k` smallest |w| of one tensor, by sorting: independent of the selection engine.
fn prune_by_sorting(n: &mut Network, name: &str, k: usize) {
    let mut p = n.params_mut();
    let mut w = p.get_mut(name).unwrap();
    let mut order: Vec<usize> = (0..w.len()).collect();
    let flat: Vec<f32> = w.iter().copied().collect();
    order.sort_by(|&a, &b| flat[a].abs().total_cmp(&flat[b].abs()).then(a.cmp(&b)));
    let slice = w.as_slice_mut().unwrap();
    for &i in &order[..k] {
        slice[i] = 0.0;
    }
}

#[test]
fn analysis_points_equal_pruning_each_layer_alone_and_weights_come_back() {
    let mut n = net();
    let before = n.params().clone();
    let calls = Cell::new(0);
    let grid = [0.25, 0.5, 1.0];
    let s = SensitivityAnalysis::new(grid.to_vec())
        .run(&mut n, |n| {
            calls.set(calls.get() + 1);
            metric(n)
        })
        .unwrap();
    assert_eq!(n.params(), &before);
    assert_eq!(calls.get(), 1 + 2 * grid.len());
    assert_eq!(s.baseline, metric(&n).unwrap());
    let names: Vec<&str> = s.curves.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["fc1.weight", "fc2.weight"]);
    assert_eq!((s.curves[0].params, s.curves[1].params), (12, 8));
    // FLOPs of the multiply-accumulates: 2 per weight on [F] inputs.
    assert_eq!((s.curves[0].flops, s.curves[1].flops), (24, 16));
    for c in &s.curves {
        for p in &c.points {
            let mut m = n.clone();
            let k = (p.sparsity * c.params as f64).round_ties_even() as usize;
            prune_by_sorting(&mut m, &c.name, k);
            assert_eq!(
                p.metric,
                metric(&m).unwrap(),
                "{} at {}",
                c.name,
                p.sparsity
            );
        }
    }
}

#[test]
fn analysis_by_channels_prunes_whole_rows() {
    let mut n = net();
    let s = SensitivityAnalysis::new(vec![0.5])
        .granularity(Granularity::Channels {
            axis: ChannelAxis::Out,
            norm: crate::select::Norm::L2,
        })
        .filter(ParamFilter::new().include("fc1.*"))
        .run(&mut n, |n| {
            let w = n.params().get("fc1.weight").unwrap();
            // Count the all-zero rows while pruned.
            Ok(w.outer_iter()
                .filter(|r| r.iter().all(|&v| v == 0.0))
                .count() as f64)
        })
        .unwrap();
    assert_eq!(s.curves.len(), 1);
    assert_eq!(s.curves[0].points[0].metric, 2.0);
}

#[test]
fn analysis_errors_restore_the_weights() {
    let mut n = net();
    let before = n.params().clone();
    let calls = Cell::new(0);
    let err = SensitivityAnalysis::new(vec![0.5, 0.9])
        .run(&mut n, |_| {
            calls.set(calls.get() + 1);
            if calls.get() == 3 {
                Err(Error::invalid("metric", "boom"))
            } else {
                Ok(1.0)
            }
        })
        .unwrap_err();
    assert!(err.to_string().contains("boom"));
    assert_eq!(n.params(), &before);
    let nan = SensitivityAnalysis::new(vec![0.5])
        .run(&mut n, |_| Ok(f64::NAN))
        .unwrap_err();
    assert!(matches!(nan, Error::NonFinite { .. }), "{nan}");
    for bad in [vec![], vec![1.5], vec![f64::NAN]] {
        assert!(SensitivityAnalysis::new(bad).run(&mut n, metric).is_err());
    }
    assert!(
        SensitivityAnalysis::new(vec![0.5])
            .granularity(Granularity::NM { n: 2, m: 4 })
            .run(&mut n, metric)
            .is_err()
    );
}

fn curve(name: &str, params: usize, flops: u64, points: &[(f64, f64)]) -> LayerCurve {
    LayerCurve {
        name: name.into(),
        params,
        flops,
        points: points
            .iter()
            .map(|&(sparsity, metric)| CurvePoint { sparsity, metric })
            .collect(),
    }
}

fn hand_made() -> Sensitivity {
    Sensitivity {
        baseline: 0.9,
        curves: vec![
            // Loses 0.01 per 10 % up to 50 %, then falls off.
            curve("a", 100, 1000, &[(0.5, 0.85), (0.8, 0.6), (0.9, 0.3)]),
            // Free up to 80 %, then 0.05.
            curve("b", 300, 300, &[(0.5, 0.9), (0.8, 0.9), (0.9, 0.85)]),
            // Noisy: a bump at 50 % that the rule must jump over.
            curve("c", 100, 100, &[(0.5, 0.7), (0.8, 0.91), (0.9, 0.6)]),
        ],
    }
}

#[test]
fn allocation_takes_the_cheapest_drops_first_and_meets_the_target_exactly() {
    let s = hand_made();
    // Free moves first, the smaller of equal prices first: c jumps over its bump straight to
    // 80 % (80 weights), then b to 50 % (150). 40 % of 500 weights = 200: b is shortened to 40 %.
    let a = s.allocate(0.4, Budget::Params).unwrap();
    assert_eq!((a.sparsities["a"], a.sparsities["c"]), (0.0, 0.8));
    assert!((a.sparsities["b"] - 0.4).abs() < 1e-12, "{a:?}");
    assert_eq!(a.predicted_drop, 0.0);
    // 56 % = 280: c 80 + b 150, then b 50 → 80 % (90 more) is shortened to 50 of them.
    let a = s.allocate(0.56, Budget::Params).unwrap();
    assert_eq!((a.sparsities["a"], a.sparsities["c"]), (0.0, 0.8));
    assert!(
        (a.sparsities["b"] - (0.5 + 50.0 / 300.0)).abs() < 1e-12,
        "{a:?}"
    );
    // 70 % = 350: b 240 + c 80 = 320; next cheapest per weight: a 0→50 % costs 0.05/50 = 1e-3,
    // b 80→90 % costs 0.05/30 = 1.7e-3, c 80→90 % costs 0.31/10: a takes the last 30.
    let a = s.allocate(0.7, Budget::Params).unwrap();
    assert_eq!((a.sparsities["b"], a.sparsities["c"]), (0.8, 0.8));
    assert!((a.sparsities["a"] - 0.3).abs() < 1e-12, "{a:?}");
    assert!((a.predicted_drop - 0.03).abs() < 1e-12, "{a:?}");
    let removed: f64 = s
        .curves
        .iter()
        .map(|c| c.params as f64 * a.sparsities[&c.name])
        .sum();
    assert!((removed - 350.0).abs() < 1e-9);
}

#[test]
fn allocation_by_flops_weighs_layers_by_their_flops() {
    let s = hand_made();
    // 1400 FLOPs in all; 20 % = 280. b's free 80 % is only 240 FLOPs, c's 80 FLOPs: 320.
    let a = s.allocate(0.2, Budget::Flops).unwrap();
    assert_eq!(a.sparsities["a"], 0.0);
    let removed: f64 = s
        .curves
        .iter()
        .map(|c| c.flops as f64 * a.sparsities[&c.name])
        .sum();
    assert!((removed - 280.0).abs() < 1e-9, "{a:?}");
    assert_eq!(a.predicted_drop, 0.0);
}

#[test]
fn allocation_refuses_what_the_grid_cannot_reach() {
    let s = hand_made();
    let err = s.allocate(0.95, Budget::Params).unwrap_err();
    assert!(err.to_string().contains("out of reach"), "{err}");
    assert!(s.allocate(1.5, Budget::Params).is_err());
    let a = s.allocate(0.9, Budget::Params).unwrap();
    assert!(
        a.sparsities.values().all(|&v| (v - 0.9).abs() < 1e-12),
        "{a:?}"
    );
    let empty = Sensitivity {
        baseline: 0.0,
        curves: vec![],
    };
    assert!(empty.allocate(0.5, Budget::Params).is_err());
}

#[test]
fn drops_interpolate_between_points() {
    let c = &hand_made().curves[0];
    assert_eq!(c.drop_at(0.9, 0.0), Some(0.0));
    assert!((c.drop_at(0.9, 0.25).unwrap() - 0.025).abs() < 1e-12);
    assert!((c.drop_at(0.9, 0.65).unwrap() - 0.175).abs() < 1e-12);
    assert_eq!(c.drop_at(0.9, 0.95), None);
}

#[test]
fn csv_has_one_line_per_point() {
    let csv = hand_made().to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "layer,params,flops,sparsity,metric,drop");
    assert_eq!(lines.len(), 1 + 9);
    assert!(
        lines[1].starts_with("a,100,1000,0.5,0.85,0.05"),
        "{}",
        lines[1]
    );
}

#[cfg(feature = "serde")]
#[test]
fn sensitivity_round_trips_through_json() {
    let s = hand_made();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<Sensitivity>(&json).unwrap(), s);
}

#[test]
fn allocated_sparsities_are_absolute_targets() {
    let params: Params = [(
        "w",
        array![[1.0_f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]].into_dyn(),
    )]
    .into_iter()
    .collect();
    let strategy = LayerSparsities::new([("w".to_string(), 0.75)].into());
    // Two already pruned: the target of 6 needs 4 more, not 75 % of the 6 left.
    let mut prior = MaskSet::new();
    prior.insert(
        "w",
        Mask::from_vec(
            &[1, 8],
            vec![true, true, true, true, true, true, false, false],
        )
        .unwrap(),
    );
    let plan = strategy
        .plan(&Context::new(&params).with_masks(&prior))
        .unwrap();
    assert_eq!(
        plan.masks.get("w").unwrap().as_slice(),
        &[false, false, false, false, true, true, false, false]
    );
}

#[test]
fn sigma_is_unbiased() {
    // σ(n − 1) of [1, -2, 3, -4] = sqrt(29 / 3) = 3.109; σ(n) would be 2.693.
    // s = 0.7: 2.176 (prunes |w| = 2) unbiased, 1.885 (keeps it) biased.
    let params: Params = [("w", array![[1.0_f32, -2.0], [3.0, -4.0]].into_dyn())]
        .into_iter()
        .collect();
    let t = SigmaThreshold::new(0.7)
        .threshold("w", &[1.0, -2.0, 3.0, -4.0])
        .unwrap();
    assert!((t - 0.7 * (29.0f32 / 3.0).sqrt()).abs() < 1e-6, "{t}");
    let plan = SigmaThreshold::new(0.7)
        .plan(&Context::new(&params))
        .unwrap();
    assert_eq!(
        plan.masks.get("w").unwrap().as_slice(),
        &[false, false, true, true]
    );
    let bad: Params = [("w", array![[1.0_f32, f32::NAN]].into_dyn())]
        .into_iter()
        .collect();
    assert!(matches!(
        SigmaThreshold::new(1.0).plan(&Context::new(&bad)),
        Err(Error::NonFinite { index: 1, .. })
    ));
    assert!(
        SigmaThreshold::new(-1.0)
            .plan(&Context::new(&params))
            .is_err()
    );
}

#[test]
fn sigma_prunes_about_68_percent_of_normal_weights_at_one() {
    // Deterministic near-normal values: sums of 12 uniforms.
    let mut state = 1u64;
    let mut uniform = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let w: Vec<f32> = (0..20_000)
        .map(|_| (0..12).map(|_| uniform()).sum::<f32>() - 6.0)
        .collect();
    let params: Params = [("w", ArrayD::from_shape_vec(IxDyn(&[100, 200]), w).unwrap())]
        .into_iter()
        .collect();
    let plan = SigmaThreshold::new(1.0)
        .plan(&Context::new(&params))
        .unwrap();
    assert!(
        (plan.sparsity() - 0.6827).abs() < 0.01,
        "{}",
        plan.sparsity()
    );
}

fn gradient_scores() -> (Params, GradientScores) {
    let params: Params = [("w", array![[2.0_f32, -1.0, 0.5, 4.0]].into_dyn())]
        .into_iter()
        .collect();
    let mut acc = ScoreAccumulator::new();
    for g in [[0.1_f32, 1.0, -2.0, 0.0], [0.1, -1.0, -2.0, 0.1]] {
        let grads: Params = [("w", array![[g[0], g[1], g[2], g[3]]].into_dyn())]
            .into_iter()
            .collect();
        acc.add(&params, &grads, 4).unwrap();
    }
    (params, acc.finish())
}

#[test]
fn taylor_ranks_by_summed_saliency() {
    let (params, scores) = gradient_scores();
    // Σ|w·g| = [0.4, 2.0, 2.0, 0.4]: the first and last go (ties by index: first, then last).
    let plan = WeightPruning::new(Amount::Count(2))
        .criterion(Criterion::taylor(&scores))
        .plan(&Context::new(&params))
        .unwrap();
    assert_eq!(
        plan.masks.get("w").unwrap().as_slice(),
        &[false, true, true, false]
    );
}

#[test]
fn snip_is_normalised_and_uses_the_mean_gradient() {
    let (params, scores) = gradient_scores();
    // ḡ = [0.1, 0, -2, 0.05]; |ḡ·w| = [0.2, 0, 1, 0.2], sum 1.4.
    let Criterion::Importance(snip) = Criterion::snip(&scores, &params).unwrap() else {
        panic!("importance scores expected");
    };
    let s = snip.slice("w").unwrap();
    let expected = [0.2 / 1.4, 0.0, 1.0 / 1.4, 0.2 / 1.4];
    for (a, b) in s.iter().zip(expected) {
        assert!((a - b).abs() < 1e-6, "{s:?}");
    }
    let plan = WeightPruning::new(Amount::Count(1))
        .criterion(Criterion::Importance(snip.clone()))
        .scope(Scope::Global)
        .plan(&Context::new(&params))
        .unwrap();
    assert_eq!(
        plan.masks.get("w").unwrap().as_slice(),
        &[true, false, true, true]
    );
    let zero = GradientScores {
        grad_sum: [("w", ArrayD::zeros(IxDyn(&[1, 4])))].into_iter().collect(),
        batches: 1,
        ..GradientScores::default()
    };
    assert!(Criterion::snip(&zero, &params).is_err());
}

#[cfg(feature = "plot")]
#[test]
fn the_chart_has_one_line_per_layer_from_the_baseline() {
    let mut s = hand_made();
    s.curves[0].name = "a<&>".into();
    let chart = s.chart("accuracy");
    assert_eq!(chart.series.len(), s.curves.len());
    for (series, curve) in chart.series.iter().zip(&s.curves) {
        assert_eq!(series.name, curve.name);
        assert_eq!(series.points[0], (0.0, s.baseline));
        assert_eq!(series.points.len(), curve.points.len() + 1);
    }
    let svg = chart.to_svg().unwrap();
    assert!(svg.contains("a&lt;&amp;&gt;"), "names are escaped");
    assert!(svg.contains("sparsity of the layer") && svg.contains("accuracy"));
}
