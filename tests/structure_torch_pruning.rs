//! shears' dependency groups and compaction against Torch-Pruning (DepGraph) on the fixtures of
//! tests/fixtures/structure/make_torch_pruning_fixture.py: conv → BN → ReLU → conv, and a
//! residual pair. For each, the same layers are coupled on the same side with the same
//! channels, the pruned tensors have the same shapes, and the compacted network computes
//! Torch-Pruning's pruned model's output. A third case runs Torch-Pruning's MetaPruner through a
//! grouped convolution.

#[allow(dead_code)]
mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::read_f32_tensors;
use ndarray::ArrayD;
use shears::graph::{Conv2d, Network};
use shears::structure::{ChannelRemoval, DependencyGroups, GroupCriterion, Importance, SliceRole};
use shears::{NetworkBuilder, Params};

fn fixture(case: &str) -> (serde_json::Value, Params, ArrayD<f32>, ArrayD<f32>) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/structure");
    let json = std::fs::read_to_string(dir.join(format!("{case}.json"))).expect("fixture json");
    let meta: serde_json::Value = serde_json::from_str(&json).expect("valid json");
    let mut params = Params::new();
    let (mut input, mut output) = (None, None);
    for (name, t) in read_f32_tensors(&dir.join(format!("{case}.safetensors"))) {
        match name.as_str() {
            common::INPUT => input = Some(t),
            common::OUTPUT => output = Some(t),
            _ => {
                params.insert(name, t);
            }
        }
    }
    (meta, params, input.unwrap(), output.unwrap())
}

fn conv(cin: usize, cout: usize, k: usize) -> Conv2d {
    Conv2d::new(cin, cout, k).padding(k / 2)
}

fn check(case: &str, builder: NetworkBuilder) {
    let (meta, params, input, output) = fixture(case);
    let net = builder.build(params).unwrap();
    let root = meta["root"].as_str().unwrap();
    let pruned = indices(&meta["pruned"]);

    // The same layers coupled, on the same side, with the same channels.
    let groups = DependencyGroups::of(&net).unwrap();
    let group = groups
        .groups()
        .iter()
        .find(|g| g.producers().iter().any(|p| p == root))
        .unwrap();
    let ours: BTreeSet<(String, &str)> = group
        .slices()
        .iter()
        .map(|s| {
            let side = if s.role == SliceRole::Consumer {
                "in"
            } else {
                "out"
            };
            (s.node.clone(), side)
        })
        .collect();
    let theirs: BTreeSet<(String, &str)> = meta["coupled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let idxs = indices(&d["idxs"]);
            assert_eq!(
                idxs, pruned,
                "{case}: Torch-Pruning maps channels one to one"
            );
            let side = if d["side"] == "in" { "in" } else { "out" };
            (d["layer"].as_str().unwrap().to_string(), side)
        })
        .collect();
    assert_eq!(ours, theirs, "{case}: coupled layers");

    // The same shapes after pruning.
    let removal = [ChannelRemoval {
        group: group.name().to_string(),
        channels: pruned,
    }];
    let small = groups.compact(&net, &removal).unwrap();
    assert_same_model(case, &meta, &small, &input, &output);
}

/// The pruned tensors have Torch-Pruning's shapes, and the network computes its pruned model's
/// output.
fn assert_same_model(
    case: &str,
    meta: &serde_json::Value,
    small: &Network,
    input: &ArrayD<f32>,
    output: &ArrayD<f32>,
) {
    let shapes = meta["shapes"].as_object().unwrap();
    assert_eq!(shapes.len(), small.params().len(), "{case}: tensors");
    for (name, shape) in shapes {
        assert_eq!(
            small.params().get(name).unwrap().shape(),
            indices(shape).as_slice(),
            "{case}: {name}"
        );
    }
    let got = small.forward(input.view()).unwrap();
    assert_eq!(got.shape(), output.shape());
    let scale = output.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (a, b) in got.iter().zip(output) {
        assert!((a - b).abs() <= 1e-5 * scale.max(1.0), "{case}: {a} vs {b}");
    }
}

/// A JSON array of non-negative integers.
fn indices(v: &serde_json::Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

#[test]
fn conv_bn_relu_conv_matches_torch_pruning() {
    check(
        "conv_bn_relu_conv",
        Network::builder(&[3, 6, 6])
            .conv2d("conv1", conv(3, 8, 3))
            .batch_norm2d("bn1", 8)
            .relu("relu1")
            .conv2d("conv2", conv(8, 4, 3)),
    );
}

#[test]
fn residual_pair_matches_torch_pruning() {
    check(
        "residual_pair",
        Network::builder(&[3, 6, 6])
            .conv2d("conv_a", conv(3, 8, 3))
            .batch_norm2d("bn_a", 8)
            .relu("relu_a")
            .conv2d("conv_b", conv(8, 8, 3))
            .batch_norm2d("bn_b", 8)
            .add("sum", &["relu_a", "bn_b"])
            .relu("relu")
            .conv2d("conv_c", conv(8, 4, 1)),
    );
}

/// Torch-Pruning's MetaPruner on a network with a grouped convolution (4 groups): it removes the
/// same channels of every group, as shears' units do; it picks the same units by L2 magnitude
/// (averaged over the groups); and the compacted network has its shapes and computes its output.
#[test]
fn grouped_convolution_matches_torch_pruning() {
    let (meta, params, input, output) = fixture("grouped");
    let net = Network::builder(&[3, 6, 6])
        .conv2d("conv1", conv(3, 8, 3))
        .batch_norm2d("bn1", 8)
        .relu("relu1")
        .conv2d("gconv", conv(8, 12, 3).groups(4))
        .batch_norm2d("bn2", 12)
        .relu("relu2")
        .conv2d("conv3", conv(12, 4, 1))
        .build(params)
        .unwrap();
    let importance = Importance::new(GroupCriterion::L2);

    // Torch-Pruning prunes one group after the other, each scored on the network as pruned so
    // far; so does this test.
    let mut current = net.clone();
    let mut removals = Vec::new();
    for step in meta["steps"].as_array().unwrap() {
        let root = step["root"].as_str().unwrap();
        let theirs: BTreeSet<usize> = indices(&step["removed"]).into_iter().collect();
        let groups = DependencyGroups::of(&current).unwrap();
        let group = groups.get(root).unwrap();
        let units = group.channels();
        let channels = current
            .params()
            .get(&format!("{root}.weight"))
            .unwrap()
            .shape()[0];
        let removed: BTreeSet<usize> = theirs.iter().map(|c| c % units).collect();
        // Whole units: every channel of a removed unit, and nothing else.
        let expanded: BTreeSet<usize> = (0..channels)
            .filter(|c| removed.contains(&(c % units)))
            .collect();
        assert_eq!(
            expanded, theirs,
            "{root}: Torch-Pruning removes whole units"
        );
        // The same units rank lowest.
        let scores = importance.scores(&current, group).unwrap().unwrap();
        let mut order: Vec<usize> = (0..units).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let lowest: BTreeSet<usize> = order[..removed.len()].iter().copied().collect();
        assert_eq!(
            lowest, removed,
            "{root}: the lowest units by L2 ({scores:?})"
        );

        let removal = ChannelRemoval {
            group: root.to_string(),
            channels: removed.into_iter().collect(),
        };
        current = groups
            .compact(&current, std::slice::from_ref(&removal))
            .unwrap();
        removals.push(removal);
    }

    assert_same_model("grouped", &meta, &current, &input, &output);

    // Both removals at once, on the original network, give the same network.
    let at_once = DependencyGroups::of(&net)
        .unwrap()
        .compact(&net, &removals)
        .unwrap();
    assert_eq!(at_once.params(), current.params());
}
