//! Tests of the network as a whole: validation, shape errors, JSON, builder, init, parameters.
//! Numerical agreement with PyTorch is in tests/graph_pytorch.rs.

use ndarray::{ArrayD, IxDyn};

use super::*;
use crate::{Error, Params};

fn har_builder() -> NetworkBuilder {
    crate::data::hapt::reference_cnn()
}

fn graph_error(r: Result<Network, Error>) -> (String, String) {
    match r {
        Err(Error::Graph { node, reason }) => (node, reason),
        other => panic!("expected a graph error, got {other:?}"),
    }
}

fn zeros(shape: &[usize]) -> ArrayD<f32> {
    ArrayD::zeros(IxDyn(shape))
}

#[test]
fn shapes_are_inferred_per_node() {
    let net = har_builder().build_init(0).unwrap();
    let shapes: Vec<&[usize]> = net.output_shapes().iter().map(Vec::as_slice).collect();
    assert_eq!(
        shapes,
        [
            &[32, 128][..],
            &[32, 128],
            &[32, 64],
            &[64, 64],
            &[64, 64],
            &[64, 32],
            &[64, 32],
            &[64, 32],
            &[64],
            &[64],
            &[64],
            &[6]
        ]
    );
    assert_eq!(net.output_shape("pool2"), Some(&[64, 32][..]));
    assert_eq!(net.output_shape("nope"), None);
    assert_eq!(net.node_index("gap"), Some(8));
    assert_eq!(
        net.node("fc1").unwrap().layer,
        Layer::Linear(Linear::new(64, 64))
    );
    assert_eq!(net.sources(0), Some(&[Source::Input][..]));
    assert_eq!(net.sources(3), Some(&[Source::Node(2)][..]));
    assert_eq!(net.input_shape(), &[6, 128]);
}

#[test]
fn shape_errors_name_the_node_and_the_shapes() {
    // conv2 expects 16 channels but pool1 gives 32.
    let (node, reason) = graph_error(
        Network::builder(&[6, 128])
            .conv1d("conv1", Conv1d::new(6, 32, 5))
            .max_pool1d("pool1", 2)
            .conv1d("conv2", Conv1d::new(16, 8, 3))
            .build_init(0),
    );
    assert_eq!(node, "conv2");
    assert!(
        reason.contains("16 input channels") && reason.contains("[32, 62]"),
        "{reason}"
    );

    // A linear layer fed [C, L] samples instead of flat features.
    let (node, reason) = graph_error(
        Network::builder(&[6, 128])
            .conv1d("conv", Conv1d::new(6, 8, 3))
            .linear("fc", 8, 6)
            .build_init(0),
    );
    assert_eq!(node, "fc");
    assert!(
        reason.contains("[..., 8]") && reason.contains("[8, 126]"),
        "{reason}"
    );

    // A kernel longer than the (padded) input.
    let (node, reason) = graph_error(
        Network::builder(&[2, 4])
            .conv1d("c", Conv1d::new(2, 2, 7).padding(1))
            .build_init(0),
    );
    assert_eq!(node, "c");
    assert!(reason.contains("input size 4"), "{reason}");

    // A residual add of different shapes.
    let (node, reason) = graph_error(
        Network::builder(&[4, 10])
            .conv1d("a", Conv1d::new(4, 4, 3))
            .add("res", &["a", "input"])
            .build_init(0),
    );
    assert_eq!(node, "res");
    assert!(reason.contains("[4, 8] and [4, 10]"), "{reason}");

    // Softmax over an axis that does not exist.
    let (node, reason) = graph_error(Network::builder(&[4]).softmax("sm", 2).build_init(0));
    assert_eq!(node, "sm");
    assert!(reason.contains("out of range"), "{reason}");

    // An input shape with a zero.
    let (node, _) = graph_error(Network::builder(&[4, 0]).relu("r").build_init(0));
    assert_eq!(node, INPUT);
}

#[test]
fn structural_errors_name_the_node() {
    let (node, reason) = graph_error(Network::builder(&[3]).relu("a").relu("a").build_init(0));
    assert_eq!(
        (node.as_str(), reason.as_str()),
        ("a", "duplicate node name")
    );

    let (node, reason) = graph_error(
        Network::builder(&[3])
            .add("sum", &["input", "later"])
            .relu("later")
            .build_init(0),
    );
    assert_eq!(node, "sum");
    assert!(reason.contains("not an earlier node"), "{reason}");

    let (node, reason) = graph_error(
        Network::builder(&[3])
            .layer_from("r", "ghost", Layer::Relu)
            .build_init(0),
    );
    assert_eq!(node, "r");
    assert!(reason.contains("unknown input `ghost`"), "{reason}");

    let (node, _) = graph_error(Network::builder(&[3]).relu("input").build_init(0));
    assert_eq!(node, "input");

    let (node, reason) = graph_error(Network::builder(&[3]).add("sum", &["input"]).build_init(0));
    assert_eq!(node, "sum");
    assert!(reason.contains("at least 2"), "{reason}");

    let (node, reason) = graph_error(
        Network::builder(&[3])
            .node(Node::new("r", Layer::Relu).inputs(["input", "input"]))
            .build_init(0),
    );
    assert_eq!(node, "r");
    assert!(reason.contains("exactly 1"), "{reason}");

    assert!(matches!(
        Network::builder(&[3]).build_init(0),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        Network::builder(&[3])
            .relu("r")
            .output("nope")
            .build_init(0),
        Err(Error::InvalidParameter { .. })
    ));
    let (node, reason) = graph_error(Network::builder(&[3]).dropout("d", 1.5).build_init(0));
    assert_eq!(node, "d");
    assert!(reason.contains("[0, 1)"), "{reason}");
}

#[test]
fn parameters_are_checked_and_reordered() {
    let spec = Network::builder(&[4])
        .linear("fc", 4, 3)
        .batch_norm1d("bn", 3)
        .into_spec();
    let good = || -> Params {
        // Deliberately not in node order, with PyTorch's BN counter along.
        [
            ("bn.running_var", ArrayD::ones(IxDyn(&[3]))),
            ("bn.num_batches_tracked", zeros(&[])),
            ("fc.bias", zeros(&[3])),
            ("bn.weight", zeros(&[3])),
            ("fc.weight", zeros(&[3, 4])),
            ("bn.bias", zeros(&[3])),
            ("bn.running_mean", zeros(&[3])),
        ]
        .into_iter()
        .collect()
    };
    let net = Network::new(spec.clone(), good()).unwrap();
    assert_eq!(
        net.params().names().collect::<Vec<_>>(),
        [
            "fc.weight",
            "fc.bias",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var"
        ]
    );
    assert_eq!(net.param_names(1).collect::<Vec<_>>().len(), 4);
    // Running statistics are buffers, not parameters.
    assert_eq!(net.num_params(), 12 + 3 + 3 + 3);

    let mut missing = good();
    missing.remove("fc.bias");
    let (node, reason) = graph_error(Network::new(spec.clone(), missing));
    assert_eq!(node, "fc");
    assert!(
        reason.contains("`fc.bias`") && reason.contains("[3]"),
        "{reason}"
    );

    let mut wrong = good();
    wrong.insert("fc.weight", zeros(&[4, 3]));
    match Network::new(spec.clone(), wrong) {
        Err(Error::ShapeMismatch {
            name,
            expected,
            got,
        }) => assert_eq!(
            (name.as_str(), expected, got),
            ("fc.weight", vec![3, 4], vec![4, 3])
        ),
        other => panic!("{other:?}"),
    }

    let mut stray = good();
    stray.insert("fc.scale", zeros(&[3]));
    stray.insert("extra", zeros(&[1]));
    match Network::new(spec.clone(), stray) {
        Err(e @ Error::InvalidParameter { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("2 tensor(s)") && msg.contains("extra, fc.scale"),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }

    let mut nan = good();
    nan.get_mut("fc.weight").unwrap()[[1, 2]] = f32::NAN;
    match Network::new(spec, nan) {
        Err(Error::NonFinite { tensor, index, .. }) => {
            assert_eq!((tensor.as_str(), index), ("fc.weight", 6));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn params_mut_changes_values_not_shapes() {
    let mut net = Network::builder(&[2])
        .linear("fc", 2, 1)
        .build_init(0)
        .unwrap();
    net.params_mut().get_mut("fc.weight").unwrap().fill(1.0);
    net.params_mut().get_mut("fc.bias").unwrap().fill(0.5);
    for (_, mut view) in net.params_mut().iter_mut() {
        view.mapv_inplace(|v| 2.0 * v);
    }
    assert_eq!(net.params_mut().len(), 2);
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 2]), vec![1.0, 2.0]).unwrap();
    assert_eq!(
        net.forward(x.view()).unwrap().into_raw_vec_and_offset().0,
        [7.0]
    );

    // Replacing everything goes through the same checks as `new`.
    let bad: Params = [("fc.weight", zeros(&[2, 2]))].into_iter().collect();
    assert!(net.set_params(bad).is_err());
    assert_eq!(net.params().get("fc.bias").unwrap()[[0]], 1.0);
    let (spec, params) = net.clone().into_parts();
    assert_eq!(spec, *net.spec());
    net.set_params(params.clone()).unwrap();
    assert_eq!(net.into_params(), params);
}

#[test]
fn bad_inputs_are_errors() {
    let net = har_builder().build_init(0).unwrap();
    for shape in [&[6, 128][..], &[2, 128, 6], &[2, 6, 127], &[2, 6, 128, 1]] {
        let (node, reason) = match net.forward(zeros(shape).view()) {
            Err(Error::Graph { node, reason }) => (node, reason),
            other => panic!("{shape:?}: {other:?}"),
        };
        assert_eq!(node, INPUT);
        assert!(reason.contains("[batch, 6, 128]"), "{reason}");
    }
    // An empty batch is a valid batch.
    assert_eq!(
        net.forward(zeros(&[0, 6, 128]).view()).unwrap().shape(),
        &[0, 6]
    );
}

#[test]
fn visitor_errors_stop_the_pass() {
    let net = har_builder().build_init(0).unwrap();
    let mut visited = 0;
    let r = net.forward_visit(zeros(&[1, 6, 128]).view(), |v| {
        visited += 1;
        if v.node.name == "pool1" {
            Err(Error::invalid("test", "stop here"))
        } else {
            Ok(())
        }
    });
    assert!(matches!(r, Err(Error::InvalidParameter { .. })));
    assert_eq!(visited, 3);
}

#[test]
fn output_can_be_an_inner_node() {
    let net = Network::builder(&[3])
        .linear("logits", 3, 4)
        .softmax("probs", -1)
        .output("logits")
        .build_init(3)
        .unwrap();
    let x = ArrayD::from_elem(IxDyn(&[2, 3]), 1.0f32);
    let all = net.forward_all(x.view()).unwrap();
    assert_eq!(net.output_index(), 0);
    assert_eq!(net.forward(x.view()).unwrap(), all[0]);
    let sums = all[1].sum_axis(ndarray::Axis(1));
    assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-6));
}

#[test]
fn init_is_deterministic_with_pytorch_bounds() {
    let a = har_builder().build_init(7).unwrap();
    let b = har_builder().build_init(7).unwrap();
    let c = har_builder().build_init(8).unwrap();
    assert_eq!(a.params(), b.params());
    assert_ne!(a.params(), c.params());
    let spec = Network::builder(&[4, 9])
        .conv1d("conv", Conv1d::new(4, 6, 3).groups(2))
        .batch_norm1d("bn", 6)
        .layer_norm("ln", &[6, 7])
        .flatten("flat")
        .linear("fc", 42, 5)
        .into_spec();
    let net = Network::init(spec, 1).unwrap();
    let p = net.params();
    for (name, fan_in) in [("conv", 2 * 3), ("fc", 42)] {
        let bound = 1.0 / (fan_in as f32).sqrt();
        for suffix in ["weight", "bias"] {
            let t = p.get(&format!("{name}.{suffix}")).unwrap();
            let max = t.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(max < bound, "{name}.{suffix}: {max} >= {bound}");
            // Uniform over the whole interval, not a narrower one.
            assert!(max > 0.5 * bound, "{name}.{suffix}: {max}");
        }
    }
    let all = |name: &str, v: f32| p.get(name).unwrap().iter().all(|&x| x == v);
    assert!(all("bn.weight", 1.0) && all("bn.bias", 0.0));
    assert!(all("bn.running_mean", 0.0) && all("bn.running_var", 1.0));
    assert!(all("ln.weight", 1.0) && all("ln.bias", 0.0));
    assert_eq!(p.get("ln.weight").unwrap().shape(), &[6, 7]);
}

#[test]
fn flops_follow_the_convention() {
    let net = har_builder().build_init(0).unwrap();
    let f = net.node_flops();
    assert_eq!(f[0], 32 * 128 * (2 * 30 + 1));
    assert_eq!(f[1], 32 * 128);
    assert_eq!(f[2], 32 * 64 * 2);
    assert_eq!(f[8], 64 * 32);
    assert_eq!(f[11], 6 * (2 * 64 + 1));
    assert_eq!(net.flops(), f.iter().sum::<u64>());
}

#[test]
fn residual_builder_reads_well() {
    let net = Network::builder(&[8, 16])
        .conv1d("stem", Conv1d::new(8, 16, 3).padding(1))
        .relu("stem.act")
        .conv1d("block.conv", Conv1d::new(16, 32, 3).stride(2).padding(1))
        .layer_from(
            "block.proj",
            "stem.act",
            Conv1d::new(16, 32, 1).stride(2).bias(false),
        )
        .add("block.add", &["block.conv", "block.proj"])
        .global_avg_pool("gap")
        .linear("head", 32, 3)
        .build_init(5)
        .unwrap();
    assert_eq!(net.output_shape("block.add"), Some(&[32, 8][..]));
    assert_eq!(
        net.sources(4),
        Some(&[Source::Node(2), Source::Node(3)][..])
    );
    assert_eq!(net.sources(3), Some(&[Source::Node(1)][..]));
    assert_eq!(net.sources(5), Some(&[Source::Node(4)][..]));
    assert!(net.params().contains("block.proj.weight"));
    assert!(!net.params().contains("block.proj.bias"));
    let y = net.forward(zeros(&[2, 8, 16]).view()).unwrap();
    assert_eq!(y.shape(), &[2, 3]);
}

#[test]
fn public_types_are_send_sync_debug_clone() {
    fn check<T: Send + Sync + std::fmt::Debug + Clone>() {}
    check::<Network>();
    check::<NetworkSpec>();
    check::<Node>();
    check::<Layer>();
    check::<NetworkBuilder>();
    check::<ParamSpec>();
}

#[cfg(feature = "serde")]
mod json {
    use super::*;

    #[test]
    fn spec_round_trips_through_json() {
        let spec = Network::builder(&[3, 12, 10])
            .conv2d(
                "features.0",
                Conv2d::new(3, 8, [3, 2])
                    .stride(2)
                    .padding((1, 0))
                    .groups(1),
            )
            .batch_norm2d("features.1", 8)
            .gelu("features.2")
            .layer("features.3", AvgPool2d::new(2).count_include_pad(false))
            .layer("features.4", MaxPool2d::new([1, 2]).stride(1))
            .flatten("flat")
            .dropout("drop", 0.25)
            .layer_norm("norm", &[8])
            .identity("id")
            .sigmoid("sig")
            .tanh("tanh")
            .add("sum", &["sig", "tanh"])
            .softmax("sm", -1)
            .output("sum")
            .into_spec();
        let json = spec.to_json().unwrap();
        assert_eq!(NetworkSpec::from_json(&json).unwrap(), spec);
        assert!(json.contains(r#""type": "batch_norm2d""#), "{json}");
    }

    #[test]
    fn omitted_settings_take_pytorch_defaults() {
        let spec = NetworkSpec::from_json(
            r#"{
                "input_shape": [3, 8, 8],
                "nodes": [
                    {"name": "c", "layer": {"type": "conv2d", "in_channels": 3,
                                            "out_channels": 4, "kernel_size": 3, "padding": [1, 0]}},
                    {"name": "p", "layer": {"type": "max_pool2d", "kernel_size": 2}},
                    {"name": "a", "layer": {"type": "avg_pool2d", "kernel_size": [2, 1], "padding": 1}},
                    {"name": "q", "layer": {"type": "max_pool1d", "kernel_size": 3}, "inputs": ["x"]},
                    {"name": "b", "layer": {"type": "batch_norm1d", "num_features": 4}},
                    {"name": "l", "layer": {"type": "layer_norm", "normalized_shape": [5]}},
                    {"name": "f", "layer": {"type": "linear", "in_features": 5, "out_features": 2}}
                ]
            }"#,
        )
        .unwrap();
        let layers: Vec<&Layer> = spec.nodes.iter().map(|n| &n.layer).collect();
        assert_eq!(
            *layers[0],
            Layer::Conv2d(Conv2d::new(3, 4, 3).padding([1, 0]))
        );
        assert_eq!(*layers[1], Layer::MaxPool2d(MaxPool2d::new(2)));
        assert_eq!(
            *layers[2],
            Layer::AvgPool2d(AvgPool2d::new([2, 1]).padding(1))
        );
        assert_eq!(*layers[3], Layer::MaxPool1d(MaxPool1d::new(3)));
        assert_eq!(spec.nodes[3].inputs, ["x"]);
        assert_eq!(*layers[4], Layer::BatchNorm1d(BatchNorm::new(4)));
        assert_eq!(*layers[5], Layer::LayerNorm(LayerNorm::new(&[5])));
        assert_eq!(*layers[6], Layer::Linear(Linear::new(5, 2)));
        assert_eq!(spec.output, None);
    }

    #[test]
    fn malformed_specs_are_errors() {
        for (text, needle) in [
            (
                r#"{"input_shape": [3], "nodes": [{"name": "r", "layer": {"type": "relu6"}}]}"#,
                "relu6",
            ),
            (
                r#"{"input_shape": [3], "nodes": [{"name": "f", "layer": {"type": "linear", "in_features": 3, "out_feature": 2}}]}"#,
                "out_feature",
            ),
            (
                r#"{"input_shape": [3, 4], "nodes": [{"name": "p", "layer": {"type": "max_pool1d", "kernel_size": 2, "count_include_pad": false}}]}"#,
                "average pooling only",
            ),
            (r#"{"input_shape": [3], "nodes": [], "extra": 1}"#, "extra"),
            (r#"{"input_shape": [3], "nodes": [{"name": "r"}]}"#, "layer"),
            ("not json", "expected"),
        ] {
            match NetworkSpec::from_json(text) {
                Err(e @ Error::InvalidParameter { .. }) => {
                    assert!(e.to_string().contains(needle), "{needle}: {e}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}

#[test]
fn absurd_sizes_are_errors_not_overflows() {
    let big = usize::MAX / 2;
    let (node, reason) = graph_error(Network::builder(&[big, 4]).relu("r").build_init(0));
    assert_eq!(node, INPUT);
    assert!(reason.contains("too many elements"), "{reason}");
    let (node, reason) = graph_error(Network::builder(&[4]).linear("fc", 4, big).build_init(0));
    assert_eq!(node, "fc");
    assert!(reason.contains("too many elements"), "{reason}");
    let (node, _) = graph_error(
        Network::builder(&[2, 8])
            .conv1d("c", Conv1d::new(2, 2, big).dilation(big).padding(big))
            .build_init(0),
    );
    assert_eq!(node, "c");
    let (node, _) = graph_error(
        Network::builder(&[2, 8])
            .layer("p", MaxPool1d::new(4).padding(big))
            .build_init(0),
    );
    assert_eq!(node, "p");
}

#[test]
fn relu_passes_nan_on_as_pytorch_does() {
    let net = Network::builder(&[3]).relu("act").build_init(0).unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 3]), vec![f32::NAN, -1.0, 2.0]).unwrap();
    let y = net.forward(x.view()).unwrap();
    assert!(y[[0, 0]].is_nan());
    assert_eq!((y[[0, 1]], y[[0, 2]]), (0.0, 2.0));
}
