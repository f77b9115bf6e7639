//! shears' forward pass against PyTorch, on the fixtures of tests/fixtures/make_graph_fixtures.py.
//!
//! Tolerance: `|a - b| <= 1e-5 · max(|b|, 0.01 · max|B|)`, where `b` is PyTorch's value (computed
//! in float64 from the stored f32 parameters and input) and `max|B|` the largest magnitude in that
//! output tensor. The floor exists because an f32 sum carries an absolute error proportional to the
//! magnitude of its terms, not of its result: a convolution output that cancels to 1e-3 while its
//! terms are of order 1 cannot be accurate to 1e-5 relative in any f32 implementation (PyTorch's
//! f32 path included). Values below 1% of the tensor's scale are therefore held to 1e-7 of that
//! scale instead.

#![cfg(feature = "serde")]

mod common;

use std::collections::BTreeSet;

use common::{graph_cases, load_graph_fixture};
use ndarray::{ArrayD, ArrayViewD, Axis};
use shears::{Layer, Network};

const RTOL: f64 = 1e-5;
const FLOOR: f64 = 0.01;

/// The worst `|a - b| / max(|b|, FLOOR · max|B|)` over the tensor.
fn worst_error(got: ArrayViewD<'_, f32>, want: ArrayViewD<'_, f32>) -> f64 {
    let scale = want.iter().fold(0f64, |m, &b| m.max(f64::from(b).abs()));
    let floor = (FLOOR * scale).max(f64::MIN_POSITIVE);
    got.iter()
        .zip(want.iter())
        .map(|(&a, &b)| {
            let (a, b) = (f64::from(a), f64::from(b));
            if a.is_nan() || b.is_nan() {
                return f64::INFINITY;
            }
            (a - b).abs() / b.abs().max(floor)
        })
        .fold(0.0, f64::max)
}

fn network(case: &str) -> (Network, ArrayD<f32>, ArrayD<f32>) {
    let f = load_graph_fixture(case);
    let net = Network::new(f.spec, f.params).unwrap_or_else(|e| panic!("{case}: {e}"));
    (net, f.input, f.output)
}

#[test]
fn every_case_matches_pytorch() {
    let cases = graph_cases();
    assert!(cases.len() >= 38, "fixtures missing: {cases:?}");
    let mut failures = Vec::new();
    for case in &cases {
        let (net, x, want) = network(case);
        let got = net
            .forward(x.view())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(got.shape(), want.shape(), "{case}");
        let err = worst_error(got.view(), want.view());
        if err > RTOL {
            failures.push(format!("{case}: worst relative error {err:.3e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_tolerance_catches_a_small_error() {
    // A test that cannot fail proves nothing: perturb one output by 3e-5 relative.
    let (net, x, want) = network("resnet1d");
    let mut got = net.forward(x.view()).unwrap();
    let (i, _) = want
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap();
    let v = &mut got.as_slice_mut().unwrap()[i];
    *v *= 1.0 + 3e-5;
    assert!(worst_error(got.view(), want.view()) > RTOL);
}

#[test]
fn fixtures_cover_every_layer_kind() {
    let mut kinds = BTreeSet::new();
    for case in graph_cases() {
        for node in load_graph_fixture(&case).spec.nodes {
            kinds.insert(node.layer.kind());
        }
    }
    let missing: Vec<_> = Layer::KINDS
        .iter()
        .filter(|k| !kinds.contains(*k))
        .collect();
    assert!(missing.is_empty(), "no fixture for {missing:?}");
}

#[test]
fn forward_all_and_visit_agree_with_forward() {
    for case in ["resnet1d", "cnn2d", "add3"] {
        let (net, x, _) = network(case);
        let y = net.forward(x.view()).unwrap();
        let all = net.forward_all(x.view()).unwrap();
        assert_eq!(all.len(), net.nodes().len());
        assert_eq!(all[net.output_index()], y, "{case}");
        for (value, shape) in all.iter().zip(net.output_shapes()) {
            assert_eq!(&value.shape()[1..], shape.as_slice(), "{case}");
        }
        let mut seen = Vec::new();
        let y2 = net
            .forward_visit(x.view(), |v| {
                assert_eq!(v.output, all[v.index].view());
                let sources = net.sources(v.index).unwrap();
                assert_eq!(v.inputs.len(), sources.len());
                for (input, source) in v.inputs.iter().zip(sources) {
                    match *source {
                        shears::graph::Source::Input => assert_eq!(*input, x.view()),
                        shears::graph::Source::Node(j) => assert_eq!(*input, all[j].view()),
                    }
                }
                seen.push(v.index);
                Ok(())
            })
            .unwrap();
        assert_eq!(y2, y);
        assert_eq!(seen, (0..net.nodes().len()).collect::<Vec<_>>());
    }
}

#[test]
fn samples_are_independent_of_their_batch() {
    // Each sample alone gives the same values as within the batch (no layer here mixes samples;
    // softmax over dim 0 is the one that does, by definition).
    for case in ["har_cnn", "resnet1d", "cnn2d", "batch_norm1d_flat"] {
        let (net, x, _) = network(case);
        let y = net.forward(x.view()).unwrap();
        for i in 0..x.shape()[0] {
            let xi = x.index_axis(Axis(0), i).insert_axis(Axis(0));
            let yi = net.forward(xi).unwrap();
            assert_eq!(
                yi.index_axis(Axis(0), 0),
                y.index_axis(Axis(0), i),
                "{case}"
            );
        }
    }
}

#[test]
fn non_standard_input_layouts_give_the_same_result() {
    let (net, x, _) = network("conv2d");
    let want = net.forward(x.view()).unwrap();
    // The same values, stored with reversed axes and viewed back: strides are not row-major.
    let stored = x.view().reversed_axes().as_standard_layout().into_owned();
    let strided = stored.view().reversed_axes();
    assert!(!strided.is_standard_layout());
    assert_eq!(net.forward(strided).unwrap(), want);
}

#[test]
fn fixture_specs_round_trip_through_json() {
    for case in graph_cases() {
        let spec = load_graph_fixture(&case).spec;
        let json = spec.to_json().unwrap();
        assert_eq!(
            shears::NetworkSpec::from_json(&json).unwrap(),
            spec,
            "{case}"
        );
    }
}
