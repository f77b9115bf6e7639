use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::*;
use crate::Error;
use crate::graph::{Conv1d, Conv2d, Network};

fn tensors(g: &Group) -> Vec<(&str, usize, usize)> {
    g.slices()
        .iter()
        .map(|s| (s.tensor.as_str(), s.axis, s.per))
        .collect()
}

fn residual() -> Network {
    Network::builder(&[3, 6, 6])
        .conv2d("stem", Conv2d::new(3, 4, 3).padding(1))
        .relu("act0")
        .conv2d("a", Conv2d::new(4, 4, 3).padding(1))
        .batch_norm2d("bn_a", 4)
        .add("sum", &["act0", "bn_a"])
        .relu("act1")
        .global_avg_pool("gap")
        .linear("fc", 4, 2)
        .build_init(1)
        .unwrap()
}

#[test]
fn residual_add_ties_both_producers() {
    let net = residual();
    let groups = DependencyGroups::of(&net).unwrap();
    let g = groups.get("stem").unwrap();
    assert_eq!(g.producers(), ["stem", "a"]);
    assert!(groups.get("a").is_none(), "merged into stem's group");
    let t = tensors(g);
    for want in [
        ("stem.weight", 0, 1),
        ("a.weight", 1, 1),
        ("a.weight", 0, 1),
        ("bn_a.running_var", 0, 1),
        ("fc.weight", 1, 1),
    ] {
        assert!(t.contains(&want), "{want:?} missing from {t:?}");
    }
    assert!(g.is_prunable());
}

#[test]
fn residual_with_the_input_cannot_be_pruned() {
    let net = Network::builder(&[4])
        .linear("fc1", 4, 4)
        .add("sum", &["input", "fc1"])
        .linear("fc2", 4, 2)
        .build_init(0)
        .unwrap();
    let groups = DependencyGroups::of(&net).unwrap();
    assert!(
        groups
            .get("fc1")
            .unwrap()
            .blocked()
            .unwrap()
            .contains("sum")
    );
}

#[test]
fn depthwise_carries_channels_with_its_multiplier() {
    let net = Network::builder(&[2, 8])
        .conv1d("pw", Conv1d::new(2, 3, 1))
        .conv1d("dw", Conv1d::new(3, 6, 3).groups(3).padding(1))
        .relu("act")
        .conv1d("out", Conv1d::new(6, 2, 1))
        .build_init(0)
        .unwrap();
    let groups = DependencyGroups::of(&net).unwrap();
    let t = tensors(groups.get("pw").unwrap());
    assert_eq!(
        t,
        [
            ("pw.weight", 0, 1),
            ("pw.bias", 0, 1),
            ("dw.weight", 0, 2),
            ("dw.bias", 0, 2),
            ("out.weight", 1, 2)
        ]
    );
    let removal = [ChannelRemoval {
        group: "pw".into(),
        channels: vec![1],
    }];
    let small = groups.compact(&net, &removal).unwrap();
    let Layer::Conv1d(dw) = &small.node("dw").unwrap().layer else {
        unreachable!()
    };
    assert_eq!((dw.in_channels, dw.out_channels, dw.groups), (2, 4, 2));
}

use crate::graph::Layer;

/// a (4 channels) -> g (grouped, 2 groups: inputs 0-1 and 2-3, outputs 0-2 and 3-5) -> b.
fn grouped() -> Network {
    Network::builder(&[4, 8])
        .conv1d("a", Conv1d::new(4, 4, 1))
        .relu("ra")
        .conv1d("g", Conv1d::new(4, 6, 3).groups(2).padding(1))
        .relu("rg")
        .conv1d("b", Conv1d::new(6, 3, 1))
        .build_init(0)
        .unwrap()
}

#[test]
fn grouped_convolution_ties_corresponding_channels_of_its_groups() {
    let net = grouped();
    let groups = DependencyGroups::of(&net).unwrap();
    // a's channels c and c + 2 feed input c of g's two groups: one unit.
    let a = groups.get("a").unwrap();
    assert_eq!(a.channels(), 2);
    assert_eq!(
        tensors(a),
        [("a.weight", 0, 1), ("a.bias", 0, 1), ("g.weight", 1, 1)]
    );
    // g's outputs o and o + 3 are output o of each group: one unit.
    let g = groups.get("g").unwrap();
    assert_eq!(g.channels(), 3);
    assert_eq!(
        tensors(g),
        [("g.weight", 0, 1), ("g.bias", 0, 1), ("b.weight", 1, 1)]
    );
    let removals = [
        ChannelRemoval {
            group: "a".into(),
            channels: vec![1],
        },
        ChannelRemoval {
            group: "g".into(),
            channels: vec![0],
        },
    ];
    let small = groups.compact(&net, &removals).unwrap();
    let Layer::Conv1d(c) = &small.node("g").unwrap().layer else {
        unreachable!()
    };
    assert_eq!((c.in_channels, c.out_channels, c.groups), (2, 4, 2));
    let p = |n: &Network, t: &str| n.params().get(t).unwrap().clone();
    let pick = |t: &ArrayD<f32>, axis: usize, idx: &[usize]| t.select(ndarray::Axis(axis), idx);
    // a keeps channels 0 and 2 (unit 0); g keeps input 0 of each group and outputs 1, 2, 4, 5.
    assert_eq!(
        p(&small, "a.weight"),
        pick(&p(&net, "a.weight"), 0, &[0, 2])
    );
    let g_w = pick(&pick(&p(&net, "g.weight"), 0, &[1, 2, 4, 5]), 1, &[0]);
    assert_eq!(p(&small, "g.weight"), g_w);
    assert_eq!(
        p(&small, "b.weight"),
        pick(&p(&net, "b.weight"), 1, &[1, 2, 4, 5])
    );

    let mut masked = net.clone();
    masked
        .apply_masks(&groups.masks(&net, &removals).unwrap())
        .unwrap();
    let x = ArrayD::from_shape_fn(IxDyn(&[3, 4, 8]), |i| {
        ((i[0] * 32 + i[1] * 8 + i[2]) as f32 * 0.37).sin()
    });
    let (y, z) = (
        small.forward(x.view()).unwrap(),
        masked.forward(x.view()).unwrap(),
    );
    assert!(y.iter().zip(&z).all(|(y, z)| (y - z).abs() <= 1e-5));
}

#[test]
fn a_tied_unit_scores_as_the_mean_over_its_groups() {
    let net = grouped();
    let groups = DependencyGroups::of(&net).unwrap();
    let imp = Importance::new(GroupCriterion::L1)
        .reduction(Reduction::Sum)
        .normalizer(Normalizer::None);
    let scores = imp.scores(&net, groups.get("a").unwrap()).unwrap().unwrap();
    let l1 = |t: &str, axis: usize, i: usize| -> f32 {
        let w = net.params().get(t).unwrap();
        w.index_axis(ndarray::Axis(axis), i)
            .iter()
            .map(|v| v.abs())
            .sum()
    };
    for (u, &score) in scores.iter().enumerate() {
        // a's rows u and u + 2 averaged over the two groups, plus g's input column u (L1 reads
        // weights only).
        let want = (l1("a.weight", 0, u) + l1("a.weight", 0, u + 2)) / 2.0 + l1("g.weight", 1, u);
        assert!(
            (score - want).abs() <= 1e-5 * want,
            "unit {u}: {score} vs {want}"
        );
    }
}

#[test]
fn grouped_convolution_splitting_a_unit_blocks() {
    // dw turns each of pw's 3 channels into 2; groups of 3 inputs would split one of them.
    let net = Network::builder(&[1, 8])
        .conv1d("pw", Conv1d::new(1, 3, 1))
        .conv1d("dw", Conv1d::new(3, 6, 3).groups(3).padding(1))
        .conv1d("g", Conv1d::new(6, 4, 1).groups(2))
        .conv1d("out", Conv1d::new(4, 2, 1))
        .build_init(0)
        .unwrap();
    let groups = DependencyGroups::of(&net).unwrap();
    let why = groups.get("pw").unwrap().blocked().unwrap();
    assert!(why.contains("grouped convolution"), "{why}");
    assert!(groups.get("g").unwrap().is_prunable());
}

#[test]
fn a_residual_add_and_a_grouped_convolution_tie_their_units_together() {
    // stem's channels are summed with b's, then read by a grouped convolution of 4 groups.
    let net = Network::builder(&[2, 8])
        .conv1d("stem", Conv1d::new(2, 8, 1))
        .conv1d("b", Conv1d::new(8, 8, 3).padding(1))
        .add("sum", &["stem", "b"])
        .conv1d("g", Conv1d::new(8, 8, 1).groups(4))
        .conv1d("out", Conv1d::new(8, 2, 1))
        .build_init(0)
        .unwrap();
    let groups = DependencyGroups::of(&net).unwrap();
    let stem = groups.get("stem").unwrap();
    // 8 channels in groups of 2: channels c, c + 2, c + 4, c + 6 are one unit.
    assert_eq!(stem.channels(), 2);
    assert_eq!(stem.producers(), ["stem", "b"]);
    let removals = [ChannelRemoval {
        group: "stem".into(),
        channels: vec![0],
    }];
    let small = groups.compact(&net, &removals).unwrap();
    assert_eq!(
        small.params().get("stem.weight").unwrap().shape(),
        &[4, 2, 1]
    );
    // b both reads and writes the tied channels.
    assert_eq!(small.params().get("b.weight").unwrap().shape(), &[4, 4, 3]);
    assert_eq!(small.params().get("g.weight").unwrap().shape(), &[8, 1, 1]);
}

#[test]
fn layer_norm_and_softmax_over_channels_block() {
    let net = Network::builder(&[4])
        .linear("fc1", 4, 6)
        .layer_norm("ln", &[6])
        .linear("fc2", 6, 5)
        .softmax("sm", 1)
        .linear("fc3", 5, 2)
        .build_init(0)
        .unwrap();
    let groups = DependencyGroups::of(&net).unwrap();
    assert!(groups.get("fc1").unwrap().blocked().unwrap().contains("ln"));
    assert!(groups.get("fc2").unwrap().blocked().unwrap().contains("sm"));
}

#[test]
fn protected_nodes_and_the_output_are_kept() {
    let net = residual();
    let groups = DependencyGroups::with_protected(&net, &["act1"]).unwrap();
    assert_eq!(
        groups.get("stem").unwrap().blocked(),
        Some("`act1` is protected")
    );
    assert!(
        groups
            .get("fc")
            .unwrap()
            .blocked()
            .unwrap()
            .contains("network output")
    );
    assert!(matches!(
        DependencyGroups::with_protected(&net, &["nope"]),
        Err(Error::Graph { .. })
    ));
}

#[test]
fn removals_are_checked() {
    let net = residual();
    let groups = DependencyGroups::of(&net).unwrap();
    let remove = |group: &str, channels: Vec<usize>| {
        groups
            .compact(
                &net,
                &[ChannelRemoval {
                    group: group.into(),
                    channels,
                }],
            )
            .unwrap_err()
            .to_string()
    };
    let all = remove("stem", vec![0, 1, 2, 3]);
    assert!(
        all.contains("zero channels") && all.contains("`stem`, `a`"),
        "{all}"
    );
    assert!(remove("stem", vec![4]).contains("out of range"));
    assert!(remove("fc", vec![0]).contains("network output"));
    assert!(remove("nope", vec![0]).contains("no dependency group"));
    let other = Network::builder(&[3, 6, 6])
        .conv2d("stem", Conv2d::new(3, 5, 3))
        .build_init(0)
        .unwrap();
    let err = DependencyGroups::of(&residual())
        .unwrap()
        .masks(
            &other,
            &[ChannelRemoval {
                group: "stem".into(),
                channels: vec![0],
            }],
        )
        .unwrap_err();
    assert!(err.to_string().contains("another network"), "{err}");
}

#[test]
fn flatten_maps_a_channel_to_consecutive_inputs() {
    let net = Network::builder(&[2, 6])
        .conv1d("conv", Conv1d::new(2, 3, 3))
        .max_pool1d("pool", 2)
        .flatten("flat")
        .linear("fc", 6, 2)
        .build_init(0)
        .unwrap();
    let groups = DependencyGroups::of(&net).unwrap();
    let removal = [ChannelRemoval {
        group: "conv".into(),
        channels: vec![1],
    }];
    let masks = groups.masks(&net, &removal).unwrap();
    let fc = masks.get("fc.weight").unwrap().as_slice().to_vec();
    let row = [true, true, false, false, true, true];
    assert_eq!(fc, [row, row].concat());
    let small = groups.compact(&net, &removal).unwrap();
    assert_eq!(small.params().get("fc.weight").unwrap().shape(), &[2, 4]);
}

/// A small random network of one of four kinds: MLP, CNN with BatchNorm, residual blocks,
/// grouped and depthwise convolutions.
pub(crate) fn random_net(kind: u8, seed: u64) -> Network {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut w = |lo: usize, hi: usize| rng.random_range(lo..=hi);
    let b = match kind {
        0 => {
            let (d, h1, h2) = (w(2, 5), w(2, 7), w(2, 6));
            let b = Network::builder(&[d])
                .linear("fc1", d, h1)
                .relu("a1")
                .batch_norm1d("bn1", h1)
                .linear("fc2", h1, h2)
                .tanh("a2");
            if w(0, 1) == 0 {
                b.linear("fc3", h2, 3)
            } else {
                b.sigmoid("a3").dropout("drop", 0.2).linear("fc3", h2, 3)
            }
        }
        1 => {
            let (c0, c1, c2, h) = (w(1, 3), w(2, 6), w(2, 5), w(2, 5));
            Network::builder(&[c0, 8])
                .conv1d("conv1", Conv1d::new(c0, c1, 3).padding(1))
                .batch_norm1d("bn1", c1)
                .relu("r1")
                .max_pool1d("pool", 2)
                .conv1d("conv2", Conv1d::new(c1, c2, 3))
                .batch_norm1d("bn2", c2)
                .gelu("r2")
                .flatten("flat")
                .linear("fc1", c2 * 2, h)
                .relu("r3")
                .linear("fc2", h, 2)
        }
        2 => {
            let (c0, c) = (w(1, 3), w(2, 5));
            Network::builder(&[c0, 5, 5])
                .conv2d("stem", Conv2d::new(c0, c, 3).padding(1))
                .batch_norm2d("bn0", c)
                .relu("r0")
                .conv2d("b1c1", Conv2d::new(c, w(2, 5), 3).padding(1))
                .batch_norm2d_auto("b1bn1")
                .relu("b1r1")
                .conv2d_auto("b1c2", c)
                .batch_norm2d("b1bn2", c)
                .add("sum1", &["r0", "b1bn2"])
                .relu("r1")
                .layer_from("proj", "r1", Conv2d::new(c, c, 1))
                .layer_from("b2c", "r1", Conv2d::new(c, c, 3).padding(1))
                .add("sum2", &["proj", "b2c"])
                .avg_pool2d("pool", 2)
                .global_avg_pool("gap")
                .linear("fc", c, 3)
        }
        _ => {
            // pw's channels pass the depthwise convolution (multiplier m) to conv; the grouped
            // convolution (g groups) ties corresponding channels of its groups, on conv's
            // outputs and on its own.
            let (c0, c1, m, c3, c4, g) = (w(1, 3), w(2, 4), w(1, 2), w(1, 3), w(1, 3), w(2, 3));
            Network::builder(&[c0, 8])
                .conv1d("pw", Conv1d::new(c0, c1, 1))
                .relu("r0")
                .conv1d("dw", Conv1d::new(c1, c1 * m, 3).groups(c1).padding(1))
                .batch_norm1d("bn", c1 * m)
                .relu("r1")
                .conv1d("conv", Conv1d::new(c1 * m, g * c3, 3))
                .relu("r2")
                .conv1d("grp", Conv1d::new(g * c3, g * c4, 3).groups(g))
                .batch_norm1d("bn2", g * c4)
                .relu("r3")
                .global_avg_pool("gap")
                .linear("fc", g * c4, 2)
        }
    };
    let mut net = b.build_init(seed).unwrap();
    // Random BatchNorm statistics and affine parameters, so that they matter.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0x5eed);
    let names: Vec<String> = net
        .params()
        .names()
        .filter(|n| n.contains("bn"))
        .map(String::from)
        .collect();
    let mut params = net.params().clone();
    for name in names {
        let t = params.get(&name).unwrap();
        let lo = if name.ends_with("running_var") {
            0.5
        } else {
            -1.0
        };
        let fresh = ArrayD::from_shape_simple_fn(t.raw_dim(), || rng.random_range(lo..1.5f32));
        params.insert(name, fresh);
    }
    net.set_params(params).unwrap();
    net
}

/// The builder helpers the generator needs where a width is only known from the last node.
trait AutoWidth {
    fn batch_norm2d_auto(self, name: &str) -> Self;
    fn conv2d_auto(self, name: &str, out: usize) -> Self;
}

impl AutoWidth for crate::graph::NetworkBuilder {
    fn batch_norm2d_auto(self, name: &str) -> Self {
        let c = last_conv2d(&self).out_channels;
        self.batch_norm2d(name, c)
    }
    fn conv2d_auto(self, name: &str, out: usize) -> Self {
        let c = last_conv2d(&self).out_channels;
        self.conv2d(name, Conv2d::new(c, out, 3).padding(1))
    }
}

fn last_conv2d(b: &crate::graph::NetworkBuilder) -> Conv2d {
    b.spec()
        .nodes
        .iter()
        .rev()
        .find_map(|n| match n.layer {
            Layer::Conv2d(c) => Some(c),
            _ => None,
        })
        .expect("a conv2d before")
}

fn random_removals(groups: &DependencyGroups, seed: u64) -> Vec<ChannelRemoval> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    groups
        .prunable()
        .filter_map(|g| {
            if rng.random_range(0..10) >= 8 {
                return None;
            }
            let n = g.channels();
            let k = rng.random_range(0..n);
            let mut channels: Vec<usize> = (0..n).collect();
            for i in 0..k {
                let j = rng.random_range(i..n);
                channels.swap(i, j);
            }
            channels.truncate(k);
            channels.sort_unstable();
            Some(ChannelRemoval {
                group: g.name().to_string(),
                channels,
            })
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The compacted network computes what the masked network computes, and has exactly the
    /// parameters the masks keep.
    #[test]
    fn compacted_equals_masked(kind in 0u8..4, seed in any::<u64>()) {
        let net = random_net(kind, seed);
        let groups = DependencyGroups::of(&net).unwrap();
        prop_assert!(groups.prunable().count() > 0);
        let removals = random_removals(&groups, seed.wrapping_add(1));
        let small = groups.compact(&net, &removals).unwrap();
        let masks = groups.masks(&net, &removals).unwrap();
        let mut masked = net.clone();
        masked.apply_masks(&masks).unwrap();

        prop_assert_eq!(small.num_params(), net.num_params() - masks.pruned());
        let removed: usize = removals.iter().map(|r| r.channels.len()).sum();
        prop_assert_eq!(small.num_params() < net.num_params(), removed > 0);

        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_add(2));
        let mut shape = vec![4];
        shape.extend_from_slice(net.input_shape());
        let x = ArrayD::from_shape_simple_fn(IxDyn(&shape), || rng.random_range(-2.0..2.0f32));
        let (a, b) = (small.forward(x.view()).unwrap(), masked.forward(x.view()).unwrap());
        prop_assert_eq!(a.shape(), b.shape());
        for (a, b) in a.iter().zip(&b) {
            prop_assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{} vs {}", a, b);
        }
    }
}

#[test]
fn a_linear_over_another_axis_blocks() {
    // fc reads the last axis (L) of conv's [C, L] output, not its channels.
    let net = Network::builder(&[2, 6])
        .conv1d("conv", Conv1d::new(2, 3, 1))
        .linear("fc", 6, 4)
        .flatten("flat")
        .linear("out", 12, 2)
        .build_init(0)
        .unwrap();
    let groups = DependencyGroups::of(&net).unwrap();
    assert!(
        groups
            .get("conv")
            .unwrap()
            .blocked()
            .unwrap()
            .contains("another axis")
    );
    // fc's own outputs run along the last axis, which Flatten interleaves with the channels.
    assert!(
        groups
            .get("fc")
            .unwrap()
            .blocked()
            .unwrap()
            .contains("flatten")
    );
}

#[test]
fn autotraits() {
    fn has_autotraits<T: Send + Sync + Sized + Unpin + Clone + std::fmt::Debug>() {}
    has_autotraits::<DependencyGroups>();
    has_autotraits::<Group>();
    has_autotraits::<ParamSlice>();
    has_autotraits::<ChannelRemoval>();
    has_autotraits::<Importance>();
    has_autotraits::<crate::strategy::StructureSensitivity>();
}
