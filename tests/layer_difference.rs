//! The layer-difference strategy's must-shows: Block Influence and angular distance equal an
//! independent numpy reference (tests/fixtures/make_block_influence.py) on random activations,
//! and a residual block that is nearly the identity is the first removed, the compacted network
//! computing nearly what the original did.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use serde_json::Value;
use shears::calibrate::Block;
use shears::data::{Dataset, Targets};
use shears::graph::{Conv1d, Layer};
use shears::strategy::{
    BlockMetric, Context, LayerDifference, PruneStrategy, Removal, layer_blocks,
};
use shears::{Network, Params};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/layer_difference/block_influence.json"
);

fn tensor(v: &Value) -> ArrayD<f32> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_f64().unwrap() as f32)
        .collect();
    ArrayD::from_shape_vec(IxDyn(&shape), data).unwrap()
}

fn data(x: ArrayD<f32>) -> Dataset {
    let n = x.shape()[0];
    Dataset::new(x, Targets::Classes(vec![0; n])).unwrap()
}

#[test]
fn block_influence_and_angular_distance_match_the_numpy_reference() {
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    let params: Params = fixture["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, v)| (name.as_str(), tensor(v)))
        .collect();
    let net = Network::builder(&[5, 7])
        .conv1d("mix", Conv1d::new(5, 5, 1))
        .global_avg_pool("gap")
        .linear("fc", 5, 5)
        .build(params)
        .unwrap();
    let x = tensor(&fixture["input"]);
    // The network computes the activations PyTorch computed.
    let values = net.forward_all(x.view()).unwrap();
    for (node, name) in [(0, "mix"), (2, "fc")] {
        let torch = tensor(&fixture["outputs"][name]);
        let diff = (&values[node] - &torch).mapv(f32::abs);
        assert!(diff.iter().all(|&d| d < 1e-5), "{name}: {diff:?}");
    }
    let data = data(x);
    assert_eq!(
        layer_blocks(&net),
        [Block::node("mix"), Block::node("fc")],
        "two single-node blocks: [batch, C, L] and [batch, F]"
    );

    for (metric, key) in [
        (BlockMetric::BlockInfluence, "block_influence"),
        (BlockMetric::AngularDistance, "angular_distance"),
    ] {
        let strategy = LayerDifference::new(metric, Removal::Lowest(1));
        // Batches of 3 over 8 samples: sums must carry across batches.
        let stats = strategy
            .calibration(&net)
            .unwrap()
            .batch_size(3)
            .run(&net, &data)
            .unwrap();
        let plan = strategy.with_stats(stats).decide(&net).unwrap();
        let mut expected = Vec::new();
        for (score, name) in plan.scores.iter().zip(["mix", "fc"]) {
            assert_eq!(score.block, Block::node(name));
            let reference = fixture["expected"][name][key].as_f64().unwrap();
            assert!(
                (score.score - reference).abs() < 1e-6,
                "{key} of {name}: {} against numpy's {reference}",
                score.score
            );
            expected.push(reference);
        }
        // fc changes its input less than mix does, by either measure.
        assert!(expected[1] < expected[0]);
        assert_eq!(plan.removed, [Block::node("fc")]);
    }
}

/// `stem -> [res1: conv, relu, conv, + skip] -> [res2: same] -> gap -> head`, with res1's branch
/// scaled down to `scale` (res1 computes `x + O(scale)`).
fn residual_net(scale: f32) -> Network {
    let mut net = Network::builder(&[4, 16])
        .conv1d("stem", Conv1d::new(4, 8, 3).padding(1))
        .relu("stem_relu")
        .conv1d("res1.conv_a", Conv1d::new(8, 8, 3).padding(1))
        .relu("res1.relu")
        .conv1d("res1.conv_b", Conv1d::new(8, 8, 3).padding(1))
        .add("res1.add", &["res1.conv_b", "stem_relu"])
        .conv1d("res2.conv_a", Conv1d::new(8, 8, 3).padding(1))
        .relu("res2.relu")
        .conv1d("res2.conv_b", Conv1d::new(8, 8, 3).padding(1))
        .add("res2.add", &["res2.conv_b", "res1.add"])
        .global_avg_pool("gap")
        .linear("head", 8, 3)
        .build_init(7)
        .unwrap();
    for name in ["res1.conv_b.weight", "res1.conv_b.bias"] {
        net.params_mut()
            .get_mut(name)
            .unwrap()
            .mapv_inplace(|w| w * scale);
    }
    net
}

#[test]
fn a_nearly_identity_residual_block_is_removed_first() {
    let net = residual_net(1e-3);
    let x = ArrayD::from_shape_fn(IxDyn(&[24, 4, 16]), |i| {
        (((i[0] * 7 + i[1] * 3 + i[2] * 5) % 11) as f32 - 5.0) / 3.0
    });
    let data = data(x.clone());
    let (res1, res2) = (
        Block::new("res1.conv_a", "res1.add"),
        Block::new("res2.conv_a", "res2.add"),
    );
    assert_eq!(layer_blocks(&net), [res1.clone(), res2.clone()]);

    for metric in [BlockMetric::BlockInfluence, BlockMetric::AngularDistance] {
        let strategy = LayerDifference::new(metric, Removal::Lowest(1));
        let stats = strategy
            .calibration(&net)
            .unwrap()
            .run(&net, &data)
            .unwrap();
        let strategy = strategy.with_stats(stats);
        let plan = strategy.decide(&net).unwrap();
        assert_eq!(
            plan.removed.as_slice(),
            std::slice::from_ref(&res1),
            "{metric:?}: {:?}",
            plan.scores
        );
        assert!(
            plan.scores[0].score * 20.0 < plan.scores[1].score,
            "{metric:?}: {:?}",
            plan.scores
        );

        // Physically: res1's nodes and parameters are gone, res1.add is the identity.
        let smaller = plan.apply(&net).unwrap();
        assert_eq!(smaller.nodes().len(), net.nodes().len() - 3);
        assert_eq!(smaller.node("res1.add").unwrap().layer, Layer::Identity);
        assert_eq!(smaller.node("res1.add").unwrap().inputs, ["stem_relu"]);
        assert_eq!(smaller.num_params(), net.num_params() - 2 * (8 * 8 * 3 + 8));
        assert!(smaller.flops() < net.flops());
        assert!(
            smaller
                .params()
                .names()
                .all(|name| !name.starts_with("res1."))
        );

        // It computes nearly what the original does: res1 only added O(1e-3).
        let (before, after) = (
            net.forward(x.view()).unwrap(),
            smaller.forward(x.view()).unwrap(),
        );
        let scale = before.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let gap = (&before - &after)
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(gap < 1e-2 * scale, "{gap} against outputs up to {scale}");

        // Removing the other block instead would change the output far more.
        let wrong = shears::strategy::remove_blocks(&net, std::slice::from_ref(&res2)).unwrap();
        let off = (&before - &wrong.forward(x.view()).unwrap())
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(off > 10.0 * gap, "{off} vs {gap}");

        // For a residual block, the plan's masks (the block's parameters all zero) compute
        // exactly what the physical removal does.
        let masks = strategy.plan(&Context::for_network(&net)).unwrap().masks;
        let mut masked = net.clone();
        masked.apply_masks(&masks).unwrap();
        assert_eq!(masked.forward(x.view()).unwrap(), after);
    }
}

#[cfg(feature = "serde")]
#[test]
fn plans_serialise() {
    let net = residual_net(1.0);
    let plan = LayerDifference::new(BlockMetric::WeightDistance, Removal::Lowest(1))
        .decide(&net)
        .unwrap();
    assert_eq!(plan.removed, [Block::new("res2.conv_a", "res2.add")]);
    let json = serde_json::to_string(&plan).unwrap();
    let back: shears::strategy::LayerPlan = serde_json::from_str(&json).unwrap();
    assert_eq!(back, plan);
}

/// A chain of `4 -> 4` Linear layers, each followed by a ReLU where `relu[i]`, then a `4 -> 2`
/// head.
fn chain(relu: &[bool], seed: u64) -> Network {
    let mut builder = Network::builder(&[4]);
    for (i, &r) in relu.iter().enumerate() {
        builder = builder.linear(format!("fc{i}"), 4, 4);
        if r {
            builder = builder.relu(format!("act{i}"));
        }
    }
    builder.linear("head", 4, 2).build_init(seed).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Removing any set of the default blocks keeps the output shape, drops exactly their
    /// parameters, leaves every other parameter untouched, and gives the same network whether the
    /// blocks go at once or one after the other.
    #[test]
    fn removal_drops_exactly_the_blocks(
        relu in prop::collection::vec(any::<bool>(), 1..6),
        pick in prop::collection::vec(any::<bool>(), 6),
        seed in 0u64..1000,
    ) {
        let net = chain(&relu, seed);
        let units = layer_blocks(&net);
        prop_assert_eq!(units.len(), relu.len());
        let chosen: Vec<Block> = units
            .iter()
            .zip(&pick)
            .filter(|&(_, &p)| p)
            .map(|(b, _)| b.clone())
            .collect();
        let at_once = shears::strategy::remove_blocks(&net, &chosen).unwrap();
        let mut one_by_one = net.clone();
        for block in &chosen {
            one_by_one = shears::strategy::remove_blocks(&one_by_one, std::slice::from_ref(block))
                .unwrap();
        }
        prop_assert_eq!(at_once.spec(), one_by_one.spec());
        prop_assert_eq!(at_once.params(), one_by_one.params());
        prop_assert_eq!(at_once.num_params(), net.num_params() - 20 * chosen.len());
        for (name, w) in at_once.params().iter() {
            prop_assert_eq!(Some(w), net.params().get(name));
        }
        let x = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] + i[1]) as f32 - 2.0);
        let head = at_once.forward(x.view()).unwrap();
        prop_assert_eq!(head.shape(), &[3, 2]);
        // With every block removed (each ReLU goes with its layer), only the head is left.
        if chosen.len() == units.len() {
            let w = net.params().get("head.weight").unwrap();
            let b = net.params().get("head.bias").unwrap();
            for r in 0..3 {
                for o in 0..2 {
                    let y: f32 = (0..4).map(|j| w[[o, j]] * x[[r, j]]).sum::<f32>() + b[[o]];
                    prop_assert!((head[[r, o]] - y).abs() < 1e-5);
                }
            }
        }
    }
}
