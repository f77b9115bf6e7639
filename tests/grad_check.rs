//! The backward pass against central finite differences of the forward pass, layer by layer, over
//! random small shapes and settings, in both modes where they differ.
//!
//! The scalar is `L = Σ r ⊙ y` for a fixed random `r`, so `r` is the output gradient handed to
//! [`Network::backward`]. Every input element and every trainable parameter element is perturbed
//! by `±h` and `(L(+h) − L(−h)) / 2h` compared with the analytic gradient:
//! `|fd − g| ≤ ATOL + RTOL · |g|`. With `h = 1e-2` in f32 the rounding error of `L` divided by
//! `2h` stays around 1e-5 and the truncation error of smooth layers around 1e-5, far below the
//! tolerance. Layers with kinks (ReLU, max pooling) get inputs whose values keep more than `h`
//! away from every kink, so the differences never straddle one.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use shears::graph::{
    AvgPool1d, AvgPool2d, BatchNorm, Conv1d, Conv2d, Layer, LayerNorm, Linear, MaxPool1d,
    MaxPool2d, Mode, Network, NetworkSpec, Node,
};

const H: f32 = 1e-2;
const ATOL: f64 = 1e-3;
const RTOL: f64 = 1e-2;

/// Deterministic values in [-1, 1) (a 64-bit LCG).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2862933555777941757) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn array(shape: &[usize], data: Vec<f32>) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), data).unwrap()
}

/// A network from `nodes` with every parameter random: weights in [-1, 1), BatchNorm and
/// LayerNorm scales in [0.5, 1.5), running variances in [0.2, 2.2).
fn network(input_shape: &[usize], nodes: Vec<Node>, seed: u64) -> Result<Network, TestCaseError> {
    let spec = NetworkSpec {
        input_shape: input_shape.to_vec(),
        nodes,
        output: None,
    };
    let Ok(mut net) = Network::init(spec, 0) else {
        return Err(TestCaseError::reject("settings that do not fit"));
    };
    let mut params = net.params_mut();
    for (k, (name, mut p)) in params.iter_mut().enumerate() {
        let v = values(seed ^ ((k as u64 + 1) * 7919), p.len());
        let is_scale = name.ends_with(".weight") && p.ndim() == 1;
        for (p, v) in p.iter_mut().zip(v) {
            *p = if name.ends_with("running_var") {
                1.2 + v
            } else if is_scale {
                1.0 + 0.5 * v
            } else {
                v
            };
        }
    }
    Ok(net)
}

/// `Σ r ⊙ y` in f64.
fn objective(net: &Network, x: &ArrayD<f32>, mode: Mode, r: &[f32]) -> f64 {
    let tape = net.forward_tape(x.view(), mode).unwrap();
    tape.output()
        .iter()
        .zip(r)
        .map(|(&y, &r)| f64::from(y) * f64::from(r))
        .sum()
}

/// Worst violation `|fd − g| − (ATOL + RTOL·|g|)` (negative when everything passes), and where.
struct Worst {
    excess: f64,
    at: String,
}

impl Worst {
    fn new() -> Self {
        Worst {
            excess: f64::NEG_INFINITY,
            at: String::new(),
        }
    }

    fn add(&mut self, fd: f64, g: f32, at: impl FnOnce() -> String) {
        let g = f64::from(g);
        let excess = (fd - g).abs() - (ATOL + RTOL * g.abs());
        if excess > self.excess || excess.is_nan() {
            self.excess = excess;
            self.at = format!("{}: finite difference {fd}, backward {g}", at());
        }
    }
}

/// Compares the backward pass with finite differences for the input and every parameter;
/// `scale` multiplies the analytic gradients (1 for the real check; other values prove the
/// check can fail).
fn worst_error(net: &Network, x: &ArrayD<f32>, mode: Mode, scale: f32) -> Worst {
    let tape = net.forward_tape(x.view(), mode).unwrap();
    let r = values(99, tape.output().len());
    let r_arr = array(tape.output().shape(), r.clone());
    let grads = net.backward(&tape, r_arr.view()).unwrap();
    let params_only = net.backward_params(&tape, r_arr.view()).unwrap();
    assert_eq!(&params_only, grads.params(), "backward_params differs");
    let mut worst = Worst::new();
    let mut xp = x.clone();
    for k in 0..x.len() {
        let v = x.as_slice().unwrap()[k];
        xp.as_slice_mut().unwrap()[k] = v + H;
        let up = objective(net, &xp, mode, &r);
        xp.as_slice_mut().unwrap()[k] = v - H;
        let down = objective(net, &xp, mode, &r);
        xp.as_slice_mut().unwrap()[k] = v;
        let g = grads.input().as_slice().unwrap()[k] * scale;
        worst.add((up - down) / (2.0 * f64::from(H)), g, || {
            format!("input[{k}]")
        });
    }
    let mut probe = net.clone();
    for (name, g) in grads.params().iter() {
        for k in 0..g.len() {
            let v = net.params().slice(name).unwrap()[k];
            let mut at = |value: f32| {
                probe
                    .params_mut()
                    .get_mut(name)
                    .unwrap()
                    .as_slice_mut()
                    .unwrap()[k] = value;
                objective(&probe, x, mode, &r)
            };
            let (up, down) = (at(v + H), at(v - H));
            at(v);
            let g = g.as_slice().unwrap()[k] * scale;
            worst.add((up - down) / (2.0 * f64::from(H)), g, || {
                format!("{name}[{k}]")
            });
        }
    }
    worst
}

fn check(net: &Network, x: &ArrayD<f32>, mode: Mode) -> Result<(), TestCaseError> {
    let worst = worst_error(net, x, mode, 1.0);
    prop_assert!(worst.excess <= 0.0, "{:?}: {}", mode, worst.at);
    Ok(())
}

/// Both modes.
fn check_modes(net: &Network, x: &ArrayD<f32>) -> Result<(), TestCaseError> {
    check(net, x, Mode::Eval)?;
    check(net, x, Mode::Train { seed: 5 })
}

fn input(shape: &[usize], seed: u64, scale: f32) -> ArrayD<f32> {
    let n = shape.iter().product();
    array(
        shape,
        values(seed, n).into_iter().map(|v| v * scale).collect(),
    )
}

/// Values at least `4h` from zero and from each other within each plane of `plane` elements:
/// a random permutation of evenly spaced levels, none of them near zero.
fn kink_free(shape: &[usize], plane: usize, seed: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let keys = values(seed, n);
    let mut data = vec![0.0; n];
    for (p, chunk) in data.chunks_mut(plane).enumerate() {
        let mut order: Vec<usize> = (0..chunk.len()).collect();
        order.sort_by(|&a, &b| keys[p * plane + a].total_cmp(&keys[p * plane + b]));
        for (rank, &i) in order.iter().enumerate() {
            // Levels ±(0.1 + 0.05·m), alternating sign, so that neighbours in rank are apart.
            let m = rank / 2;
            let sign = if rank % 2 == 0 { 1.0 } else { -1.0 };
            chunk[i] = sign * (0.1 + 0.05 * m as f32);
        }
    }
    array(shape, data)
}

/// Inputs `[batch, channels, ...]` whose values within each channel are at least 0.3 apart (a
/// ramp over batch and spatial positions plus a little noise), so that batch statistics over a
/// few values vary slowly on the scale of `h`.
fn spread(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let (batch, c) = (shape[0], shape[1]);
    let spatial: usize = shape[2..].iter().product();
    let noise = values(seed, batch * c * spatial);
    let mut data = Vec::with_capacity(noise.len());
    for b in 0..batch {
        for _ in 0..c {
            for s in 0..spatial {
                let t = (b * spatial + s) as f32;
                data.push(0.7 * t - 1.0 + 0.2 * noise[data.len()]);
            }
        }
    }
    array(shape, data)
}

fn one(layer: impl Into<Layer>) -> Vec<Node> {
    vec![Node::new("layer", layer)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn linear(inf in 1usize..6, outf in 1usize..5, bias: bool, seq in 0usize..3,
              batch in 1usize..4, seed: u64) {
        let shape: Vec<usize> = if seq == 0 { vec![inf] } else { vec![seq, inf] };
        let net = network(&shape, one(Linear::new(inf, outf).bias(bias)), seed)?;
        let mut full = vec![batch];
        full.extend(&shape);
        check(&net, &input(&full, seed, 1.0), Mode::Eval)?;
    }

    #[test]
    fn conv1d(cin_g in 1usize..3, cout_g in 1usize..3, groups in 1usize..3, k in 1usize..4,
              stride in 1usize..3, pad in 0usize..3, dil in 1usize..3, len in 1usize..9,
              bias: bool, batch in 1usize..3, seed: u64) {
        let conv = Conv1d::new(cin_g * groups, cout_g * groups, k)
            .stride(stride).padding(pad).dilation(dil).groups(groups).bias(bias);
        let net = network(&[cin_g * groups, len], one(conv), seed)?;
        check(&net, &input(&[batch, cin_g * groups, len], seed, 1.0), Mode::Eval)?;
    }

    #[test]
    fn conv2d(cin_g in 1usize..3, cout_g in 1usize..3, groups in 1usize..3,
              k in (1usize..3, 1usize..4), stride in (1usize..3, 1usize..3),
              pad in (0usize..2, 0usize..3), dil in (1usize..3, 1usize..2),
              hw in (1usize..5, 1usize..6), bias: bool, seed: u64) {
        let conv = Conv2d::new(cin_g * groups, cout_g * groups, k)
            .stride(stride).padding(pad).dilation(dil).groups(groups).bias(bias);
        let shape = [cin_g * groups, hw.0, hw.1];
        let net = network(&shape, one(conv), seed)?;
        check(&net, &input(&[2, shape[0], shape[1], shape[2]], seed, 1.0), Mode::Eval)?;
    }

    #[test]
    fn batch_norm1d(c in 1usize..4, len in 0usize..4, batch in 2usize..5, seed: u64) {
        let shape: Vec<usize> = if len == 0 { vec![c] } else { vec![c, len] };
        let net = network(&shape, vec![Node::new("bn", Layer::BatchNorm1d(BatchNorm::new(c)))], seed)?;
        let mut full = vec![batch];
        full.extend(&shape);
        check_modes(&net, &spread(&full, seed))?;
    }

    #[test]
    fn batch_norm2d(c in 1usize..3, h in 1usize..3, w in 1usize..4, seed: u64) {
        let bn = Layer::BatchNorm2d(BatchNorm::new(c).eps(1e-3));
        let net = network(&[c, h, w], vec![Node::new("bn", bn)], seed)?;
        check_modes(&net, &spread(&[2, c, h, w], seed))?;
    }

    #[test]
    fn layer_norm(rows in 1usize..3, d in 2usize..6, two_axes: bool, affine: bool, seed: u64) {
        let normalized: Vec<usize> = if two_axes { vec![rows, d] } else { vec![d] };
        let ln = LayerNorm::new(&normalized).elementwise_affine(affine);
        let net = network(&[rows, d], vec![Node::new("ln", ln)], seed)?;
        // Spread along each sample, for the same reason as with BatchNorm: rows of two
        // nearly equal values normalise to ±1 with a curvature that finite steps cannot follow.
        let x = spread(&[2, 1, rows * d], seed).into_shape_with_order(IxDyn(&[2, rows, d])).unwrap();
        check(&net, &x, Mode::Eval)?;
    }

    #[test]
    fn smooth_activations(kind in 0usize..3, n in 1usize..12, seed: u64) {
        let layer = [Layer::Gelu, Layer::Sigmoid, Layer::Tanh][kind].clone();
        let net = network(&[n], one(layer), seed)?;
        check(&net, &input(&[3, n], seed, 3.0), Mode::Eval)?;
    }

    #[test]
    fn relu(n in 1usize..12, seed: u64) {
        let net = network(&[n], one(Layer::Relu), seed)?;
        check(&net, &kink_free(&[3, n], n, seed), Mode::Eval)?;
    }

    #[test]
    fn softmax(a in 1usize..4, b in 1usize..4, dim in -3isize..3, seed: u64) {
        let net = network(&[a, b], one(Layer::Softmax { dim }), seed)?;
        check(&net, &input(&[2, a, b], seed, 2.0), Mode::Eval)?;
    }

    #[test]
    fn max_pool1d(k in 1usize..4, stride in 1usize..3, pad in 0usize..2, c in 1usize..3,
                  len in 1usize..9, seed: u64) {
        let pad = pad.min(k / 2);
        let pool = MaxPool1d::new(k).stride(stride).padding(pad);
        let net = network(&[c, len], one(pool), seed)?;
        check(&net, &kink_free(&[2, c, len], len, seed), Mode::Eval)?;
    }

    #[test]
    fn max_pool2d(k in (1usize..3, 1usize..4), stride in (1usize..3, 1usize..3),
                  pad in (0usize..2, 0usize..2), hw in (1usize..5, 1usize..6), seed: u64) {
        let pad = (pad.0.min(k.0 / 2), pad.1.min(k.1 / 2));
        let pool = MaxPool2d::new(k).stride(stride).padding(pad);
        let net = network(&[2, hw.0, hw.1], one(pool), seed)?;
        check(&net, &kink_free(&[2, 2, hw.0, hw.1], hw.0 * hw.1, seed), Mode::Eval)?;
    }

    #[test]
    fn avg_pool1d(k in 1usize..4, stride in 1usize..3, pad in 0usize..2, include: bool,
                  len in 1usize..9, seed: u64) {
        let pad = pad.min(k / 2);
        let pool = AvgPool1d::new(k).stride(stride).padding(pad).count_include_pad(include);
        let net = network(&[2, len], one(pool), seed)?;
        check(&net, &input(&[2, 2, len], seed, 1.0), Mode::Eval)?;
    }

    #[test]
    fn avg_pool2d(k in (1usize..3, 1usize..4), stride in (1usize..3, 1usize..3),
                  pad in (0usize..2, 0usize..2), include: bool, hw in (1usize..5, 1usize..6),
                  seed: u64) {
        let pad = (pad.0.min(k.0 / 2), pad.1.min(k.1 / 2));
        let pool = AvgPool2d::new(k).stride(stride).padding(pad).count_include_pad(include);
        let net = network(&[2, hw.0, hw.1], one(pool), seed)?;
        check(&net, &input(&[2, 2, hw.0, hw.1], seed, 1.0), Mode::Eval)?;
    }

    #[test]
    fn reshaping_layers(kind in 0usize..3, two_d: bool, c in 1usize..3, h in 1usize..4,
                        w in 1usize..4, seed: u64) {
        let layer = [Layer::GlobalAvgPool, Layer::Flatten, Layer::Identity][kind].clone();
        let shape: Vec<usize> = if two_d { vec![c, h, w] } else { vec![c, w] };
        let net = network(&shape, one(layer), seed)?;
        let mut full = vec![2];
        full.extend(&shape);
        check(&net, &input(&full, seed, 1.0), Mode::Eval)?;
    }

    #[test]
    fn dropout(p in 0.0f64..0.9, n in 1usize..16, seed: u64) {
        let net = network(&[n], one(Layer::Dropout { p }), seed)?;
        check_modes(&net, &input(&[3, n], seed, 1.0))?;
    }

    #[test]
    fn add_with_shared_inputs(n in 1usize..5, three: bool, seed: u64) {
        // `sum` reads `a` twice when `three`, and the input directly: fan-in and fan-out.
        let inputs: Vec<&str> = if three { vec!["a", "b", "a", "input"] } else { vec!["a", "b"] };
        let nodes = vec![
            Node::new("a", Linear::new(n, n)).inputs(["input"]),
            Node::new("b", Linear::new(n, n)).inputs(["input"]),
            Node::new("sum", Layer::Add).inputs(inputs),
            Node::new("act", Layer::Tanh),
        ];
        let net = network(&[n], nodes, seed)?;
        check(&net, &input(&[2, n], seed, 1.0), Mode::Eval)?;
    }
}

/// A network mixing most layers, with a residual branch, BatchNorm and dropout in both modes.
fn mixed() -> Network {
    let nodes = vec![
        Node::new("conv", Conv1d::new(2, 4, 3).padding(1)),
        Node::new("bn", Layer::BatchNorm1d(BatchNorm::new(4))),
        Node::new("act", Layer::Tanh),
        Node::new("branch", Conv1d::new(4, 4, 1).bias(false)),
        Node::new("res", Layer::Add).inputs(["branch", "act"]),
        Node::new("pool", AvgPool1d::new(2)),
        Node::new("gelu", Layer::Gelu),
        Node::new("flat", Layer::Flatten),
        Node::new("ln", LayerNorm::new(&[12])),
        Node::new("drop", Layer::Dropout { p: 0.25 }),
        Node::new("fc", Linear::new(12, 3)),
        Node::new("sm", Layer::Softmax { dim: -1 }),
    ];
    network(&[2, 6], nodes, 17).unwrap()
}

#[test]
fn mixed_network_in_both_modes() {
    let net = mixed();
    let x = input(&[3, 2, 6], 3, 1.5);
    for mode in [Mode::Eval, Mode::Train { seed: 11 }] {
        let worst = worst_error(&net, &x, mode, 1.0);
        assert!(worst.excess <= 0.0, "{mode:?}: {}", worst.at);
    }
}

#[test]
fn the_check_catches_a_wrong_gradient() {
    // A test that cannot fail proves nothing: gradients off by 5 % must be caught.
    let net = mixed();
    let x = input(&[3, 2, 6], 3, 1.5);
    for mode in [Mode::Eval, Mode::Train { seed: 11 }] {
        assert!(worst_error(&net, &x, mode, 1.05).excess > 0.0, "{mode:?}");
    }
}
