use approx::assert_relative_eq;
use ndarray::{ArrayD, IxDyn, array};

use super::*;
use crate::data::Targets;
use crate::graph::{Conv1d, Linear};
use crate::params::Params;

fn dataset(x: ArrayD<f32>) -> Dataset {
    let n = x.shape()[0];
    Dataset::new(x, Targets::Classes(vec![0; n])).unwrap()
}

/// `input -> relu`: the activation sees the input directly.
fn relu_only(shape: &[usize]) -> Network {
    Network::builder(shape)
        .relu("relu")
        .build(Params::new())
        .unwrap()
}

#[test]
fn linear_input_norms_by_hand() {
    let net = Network::builder(&[2])
        .layer("fc", Linear::new(2, 3))
        .build_init(0)
        .unwrap();
    let data = dataset(array![[1.0_f32, 2.0], [3.0, -4.0], [0.0, 2.0]].into_dyn());
    let stats = Calibration::new()
        .input_norms(true)
        .run(&net, &data)
        .unwrap();
    let fc = stats.input_norms("fc").unwrap();
    // Column 0: 1 + 9 + 0; column 1: 4 + 16 + 4.
    assert_eq!(fc.norms, [10f32.sqrt(), 24f32.sqrt()]);
    assert_eq!((fc.rows, stats.samples()), (3, 3));
    assert!(stats.activation("fc").is_none() && stats.blocks().is_empty());
}

#[test]
fn conv_input_norms_sum_over_positions_once() {
    // Channel 0 holds 1, 2, 3 and channel 1 holds -1, 0, 2 in both samples; padding and the
    // kernel size must not change the statistic.
    let net = Network::builder(&[2, 3])
        .conv1d("conv", Conv1d::new(2, 4, 3).padding(1))
        .build_init(0)
        .unwrap();
    let sample = [[1.0_f32, 2.0, 3.0], [-1.0, 0.0, 2.0]];
    let data = dataset(ArrayD::from_shape_fn(IxDyn(&[2, 2, 3]), |i| {
        sample[i[1]][i[2]]
    }));
    let stats = Calibration::new()
        .input_norms(true)
        .run(&net, &data)
        .unwrap();
    let conv = stats.input_norms("conv").unwrap();
    assert_eq!(conv.norms, [28f32.sqrt(), 10f32.sqrt()]);
    assert_eq!(conv.rows, 6);
}

#[test]
fn apoz_and_mean_by_hand() {
    // Channel-first [2 channels, 3 positions], two samples.
    let x = array![
        [[1.0_f32, -2.0, 0.0], [3.0, 4.0, 5.0]],
        [[-1.0, -1.0, 2.0], [0.5, -0.5, 0.0]]
    ]
    .into_dyn();
    let stats = Calibration::new()
        .activations(true)
        .run(&relu_only(&[2, 3]), &dataset(x))
        .unwrap();
    let relu = stats.activation("relu").unwrap();
    // Channel 0 after ReLU: 1, 0, 0, 0, 0, 2 -> 4 zeros of 6, mean 3/6.
    // Channel 1: 3, 4, 5, 0.5, 0, 0 -> 2 zeros, mean 12.5/6.
    assert_eq!(relu.apoz, [4.0 / 6.0, 2.0 / 6.0]);
    assert_eq!(relu.mean, [0.5, (12.5 / 6.0) as f32]);
    assert_eq!(relu.count, 6);
}

#[test]
fn activations_after_linear_are_per_neuron_on_the_last_axis() {
    // Linear over [2 tokens, 2 features] samples: the ReLU's neurons are the last axis.
    let mut params = Params::new();
    params.insert("fc.weight", array![[1.0_f32, 0.0], [0.0, 1.0]].into_dyn());
    params.insert("fc.bias", array![0.0_f32, 0.0].into_dyn());
    let net = Network::builder(&[2, 2])
        .layer("fc", Linear::new(2, 2))
        .relu("relu")
        .build(params)
        .unwrap();
    let x = array![[[1.0_f32, -1.0], [2.0, -3.0]]].into_dyn();
    let stats = Calibration::new()
        .activations(true)
        .input_norms(true)
        .run(&net, &dataset(x))
        .unwrap();
    let relu = stats.activation("relu").unwrap();
    assert_eq!((relu.apoz.as_slice(), relu.count), (&[0.0_f32, 1.0][..], 2));
    assert_eq!(relu.mean, [1.5, 0.0]);
    assert_eq!(
        stats.input_norms("fc").unwrap().norms,
        [5f32.sqrt(), 10f32.sqrt()]
    );
}

#[test]
fn block_similarity_by_hand() {
    // Tokens (per sample, features last): (1, -1) -> (1, 0): cos 1/sqrt(2), angle 1/4;
    // (-1, -1) -> (0, 0): cos 0 by convention, angle 1/2; (2, 3) -> (2, 3): cos 1, angle 0.
    let x = array![[1.0_f32, -1.0], [-1.0, -1.0], [2.0, 3.0]].into_dyn();
    let stats = Calibration::new()
        .blocks([Block::node("relu")])
        .batch_size(2)
        .run(&relu_only(&[2]), &dataset(x))
        .unwrap();
    let b = stats.block(&Block::node("relu")).unwrap();
    assert_eq!(b.tokens, 3);
    assert_relative_eq!(b.cosine, (0.5f64.sqrt() + 0.0 + 1.0) / 3.0, epsilon = 1e-12);
    assert_relative_eq!(
        b.angular_distance,
        (0.25 + 0.5 + 0.0) / 3.0,
        epsilon = 1e-12
    );
    assert_relative_eq!(b.block_influence(), 1.0 - b.cosine);
}

#[test]
fn multi_node_blocks_compare_the_first_input_with_the_last_output() {
    // input -> neg (Linear, -x) -> relu -> add(relu, input) over channel-first [2, 2] samples,
    // so tokens are positions: the block neg..add maps x to relu(-x) + x.
    let mut params = Params::new();
    params.insert(
        "neg.weight",
        array![[-1.0_f32, 0.0], [0.0, -1.0]].into_dyn(),
    );
    params.insert("neg.bias", array![0.0_f32, 0.0].into_dyn());
    let net = Network::builder(&[2, 2])
        .layer("id", Layer::Identity)
        .layer("neg", Linear::new(2, 2))
        .relu("relu")
        .add("add", &["relu", "id"])
        .build(params)
        .unwrap();
    let x = array![[[1.0_f32, -2.0], [3.0, 1.0]]].into_dyn();
    // A block's tokens follow its output's feature axis: `add` follows the Linear, so features
    // are the last axis and the tokens are the rows (1, -2) and (3, 1). Through the block:
    // (1, -2) -> relu(-1, 2) + (1, -2) = (1, 0), and (3, 1) -> (0, 0) + (3, 1) = (3, 1).
    let blocks = [
        Block::new("id", "add"),
        Block::new("id", "relu"),
        Block::node("id"),
    ];
    let stats = Calibration::new()
        .blocks(blocks.clone())
        .run(&net, &dataset(x))
        .unwrap();
    let cos = |a: [f64; 2], b: [f64; 2]| {
        (a[0] * b[0] + a[1] * b[1])
            / ((a[0] * a[0] + a[1] * a[1]).sqrt() * (b[0] * b[0] + b[1] * b[1]).sqrt())
    };
    let id_add = stats.block(&blocks[0]).unwrap();
    assert_eq!(id_add.tokens, 2);
    let want = (cos([1.0, -2.0], [1.0, 0.0]) + cos([3.0, 1.0], [3.0, 1.0])) / 2.0;
    assert_relative_eq!(id_add.cosine, want, epsilon = 1e-12);
    // id..relu: (1, -2) -> (0, 2); (3, 1) -> (0, 0), a zero vector: cos 0.
    let id_relu = stats.block(&blocks[1]).unwrap();
    assert_relative_eq!(
        id_relu.cosine,
        cos([1.0, -2.0], [0.0, 2.0]) / 2.0,
        epsilon = 1e-12
    );
    assert_relative_eq!(
        stats.block(&blocks[2]).unwrap().cosine,
        1.0,
        epsilon = 1e-12
    );
    assert_eq!(stats.blocks().len(), 3);
}

#[test]
fn one_batch_equals_four() {
    let net = Network::builder(&[3, 12])
        .conv1d("conv1", Conv1d::new(3, 6, 3).padding(1))
        .relu("relu1")
        .conv1d("conv2", Conv1d::new(6, 6, 3).padding(1))
        .relu("relu2")
        .add("res", &["relu2", "relu1"])
        .global_avg_pool("gap")
        .linear("fc", 6, 4)
        .gelu("gelu")
        .build_init(3)
        .unwrap();
    let x = ArrayD::from_shape_fn(IxDyn(&[32, 3, 12]), |i| {
        ((i[0] * 37 + i[1] * 11 + i[2] * 5) % 17) as f32 / 4.0 - 2.0
    });
    let data = dataset(x);
    let calibration = Calibration::new()
        .input_norms(true)
        .activations(true)
        .blocks(candidate_blocks(&net));
    let one = calibration.clone().batch_size(32).run(&net, &data).unwrap();
    let four = calibration.batch_size(8).run(&net, &data).unwrap();
    assert_eq!(one.samples(), four.samples());
    for ((name, a), (_, b)) in one.all_input_norms().zip(four.all_input_norms()) {
        assert_eq!(a.rows, b.rows);
        for (x, y) in a.norms.iter().zip(&b.norms) {
            assert_relative_eq!(x, y, max_relative = 1e-5);
        }
        assert!(a.norms.iter().all(|&v| v > 0.0), "{name}");
    }
    for ((_, a), (_, b)) in one.all_activations().zip(four.all_activations()) {
        assert_eq!(a.count, b.count);
        for (x, y) in a.apoz.iter().zip(&b.apoz) {
            assert_eq!(x, y);
        }
        for (x, y) in a.mean.iter().zip(&b.mean) {
            assert_relative_eq!(x, y, max_relative = 1e-5, epsilon = 1e-7);
        }
    }
    assert_eq!(one.all_activations().len(), 3);
    assert!(!one.blocks().is_empty());
    for (a, b) in one.blocks().iter().zip(four.blocks()) {
        assert_eq!((&a.block, a.tokens), (&b.block, b.tokens));
        assert_relative_eq!(a.cosine, b.cosine, max_relative = 1e-6);
        assert_relative_eq!(a.angular_distance, b.angular_distance, max_relative = 1e-6);
    }
}

#[test]
fn errors_and_limits() {
    let net = relu_only(&[2]);
    let data = dataset(ArrayD::ones(IxDyn(&[5, 2])));
    assert!(matches!(
        Calibration::new().batch_size(0).run(&net, &data),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        Calibration::new().max_samples(0).run(&net, &data),
        Err(Error::InvalidParameter { .. })
    ));
    let stats = Calibration::new()
        .activations(true)
        .max_samples(3)
        .batch_size(2)
        .run(&net, &data)
        .unwrap();
    assert_eq!(
        (stats.samples(), stats.activation("relu").unwrap().count),
        (3, 3)
    );
    assert!(
        Calibration::new()
            .blocks([Block::node("nope")])
            .start(&net)
            .is_err()
    );

    let mut calibrator = Calibration::new().activations(true).start(&net).unwrap();
    let wrong = ArrayD::<f32>::ones(IxDyn(&[4, 3]));
    assert!(matches!(
        calibrator.observe(wrong.view()),
        Err(Error::Graph { .. })
    ));
    assert_eq!(calibrator.samples(), 0);
}

#[cfg(feature = "serde")]
#[test]
fn stats_serialise_and_can_be_built_by_hand() {
    let mut stats = Stats::new(10);
    stats.insert_input_norms(
        "fc",
        InputNorms {
            norms: vec![1.0, 2.0],
            rows: 10,
        },
    );
    stats.insert_activation(
        "relu",
        ActivationStats {
            apoz: vec![0.5],
            mean: vec![0.25],
            count: 10,
        },
    );
    let block = BlockSimilarity {
        block: Block::new("a", "b"),
        cosine: 0.75,
        angular_distance: 0.2,
        tokens: 10,
    };
    stats.insert_block(block.clone());
    stats.insert_block(BlockSimilarity {
        cosine: 0.5,
        ..block
    });
    assert_eq!(stats.blocks().len(), 1);
    let json = serde_json::to_string(&stats).unwrap();
    assert!(json.contains("\"relu\""), "{json}");
    let back: Stats = serde_json::from_str(&json).unwrap();
    assert_eq!(back, stats);
    assert_eq!(back.block(&Block::new("a", "b")).unwrap().cosine, 0.5);
}

#[test]
fn public_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Calibration>();
    check::<Calibrator<'_>>();
    check::<Stats>();
    check::<Block>();
    check::<crate::data::hapt::Hapt>();
    check::<crate::report::ModelSize>();
    check::<crate::report::Latency>();
    check::<crate::report::WearableReport>();
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn net() -> Network {
        Network::builder(&[2, 6])
            .conv1d("conv", Conv1d::new(2, 3, 3).padding(1))
            .relu("relu")
            .conv1d("mix", Conv1d::new(3, 3, 1))
            .add("res", &["mix", "relu"])
            .global_avg_pool("gap")
            .linear("fc", 3, 3)
            .tanh("tanh")
            .build_init(11)
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Any batching gives the statistics of one batch (up to rounding), and every statistic
        /// stays in its range.
        #[test]
        fn batching_never_matters(
            values in proptest::collection::vec(-3.0f32..3.0, 12 * 13),
            batch in 1usize..14,
        ) {
            let net = net();
            let data = dataset(ArrayD::from_shape_vec(IxDyn(&[13, 2, 6]), values).unwrap());
            let calibration = Calibration::new()
                .input_norms(true)
                .activations(true)
                .blocks(candidate_blocks(&net));
            let whole = calibration.clone().batch_size(13).run(&net, &data).unwrap();
            let parts = calibration.batch_size(batch).run(&net, &data).unwrap();
            for ((_, a), (_, b)) in whole.all_input_norms().zip(parts.all_input_norms()) {
                for (x, y) in a.norms.iter().zip(&b.norms) {
                    prop_assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0));
                }
            }
            for ((_, a), (_, b)) in whole.all_activations().zip(parts.all_activations()) {
                prop_assert_eq!(&a.apoz, &b.apoz);
                prop_assert!(a.apoz.iter().all(|z| (0.0..=1.0).contains(z)));
                for (x, y) in a.mean.iter().zip(&b.mean) {
                    prop_assert!((x - y).abs() <= 1e-5);
                }
            }
            for (a, b) in whole.blocks().iter().zip(parts.blocks()) {
                prop_assert!((a.cosine - b.cosine).abs() <= 1e-6);
                prop_assert!((a.angular_distance - b.angular_distance).abs() <= 1e-6);
                prop_assert!((-1.0..=1.0).contains(&a.cosine));
                prop_assert!((0.0..=1.0).contains(&a.angular_distance));
            }
        }
    }
}
