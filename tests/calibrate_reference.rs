//! Calibration statistics against tests/fixtures/make_calibrate_fixture.py: PyTorch's float64
//! forward pass of a small residual CNN, with every statistic computed by numpy from its
//! definition.
#![cfg(feature = "serde")]

use std::collections::HashMap;

use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use shears::calibrate::{Block, Calibration, Stats, candidate_blocks};
use shears::data::{Dataset, Targets};
use shears::{Network, NetworkSpec, Params};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/calibrate");

struct Reference {
    net: Network,
    input: ArrayD<f32>,
    blocks: Vec<Block>,
    expected: HashMap<String, Vec<f64>>,
}

fn reference() -> Reference {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/reference.json")).unwrap())
            .unwrap();
    let spec: NetworkSpec = serde_json::from_value(json["spec"].clone()).unwrap();
    let blocks = json["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| Block::new(b[0].as_str().unwrap(), b[1].as_str().unwrap()))
        .collect();
    let bytes = std::fs::read(format!("{DIR}/reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (mut params, mut input, mut expected) = (Params::new(), None, HashMap::new());
    for (name, view) in st.tensors() {
        let d = view.data();
        match view.dtype() {
            Dtype::F64 => {
                let values = d
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                expected.insert(name.trim_start_matches("expected.").to_string(), values);
            }
            Dtype::F32 => {
                let values = d
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                let array = ArrayD::from_shape_vec(IxDyn(view.shape()), values).unwrap();
                if name == "__input__" {
                    input = Some(array);
                } else {
                    params.insert(name, array);
                }
            }
            other => panic!("{name}: unexpected dtype {other:?}"),
        }
    }
    Reference {
        net: Network::new(spec, params).unwrap(),
        input: input.unwrap(),
        blocks,
        expected,
    }
}

fn close(got: f64, want: f64, tol: f64, what: &str) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{what}: got {got}, numpy {want}"
    );
}

fn check(stats: &Stats, r: &Reference) {
    assert_eq!(stats.samples(), 32);
    for node in ["conv1", "conv2", "conv3", "fc1", "fc2"] {
        let want = &r.expected[&format!("norms.{node}")];
        let got = &stats.input_norms(node).unwrap().norms;
        assert_eq!(got.len(), want.len(), "{node}");
        for (j, (&g, &w)) in got.iter().zip(want).enumerate() {
            close(g.into(), w, 1e-5, &format!("norm {node}[{j}]"));
        }
    }
    for node in ["relu1", "relu2", "relu3", "relu4", "tanh"] {
        let a = stats.activation(node).unwrap();
        for (j, (&g, &w)) in a
            .apoz
            .iter()
            .zip(&r.expected[&format!("apoz.{node}")])
            .enumerate()
        {
            close(g.into(), w, 1e-7, &format!("apoz {node}[{j}]"));
        }
        for (j, (&g, &w)) in a
            .mean
            .iter()
            .zip(&r.expected[&format!("mean.{node}")])
            .enumerate()
        {
            close(g.into(), w, 1e-5, &format!("mean {node}[{j}]"));
        }
    }
    assert_eq!(stats.all_activations().len(), 5);
    let (cos, ang) = (&r.expected["blocks.cosine"], &r.expected["blocks.angular"]);
    for (i, block) in r.blocks.iter().enumerate() {
        let b = stats.block(block).unwrap();
        close(b.cosine, cos[i], 1e-5, &format!("cosine {block}"));
        close(
            b.angular_distance,
            ang[i],
            1e-5,
            &format!("angular {block}"),
        );
    }
}

#[test]
fn statistics_match_numpy_in_one_batch_and_in_four() {
    let r = reference();
    let data = Dataset::new(r.input.clone(), Targets::Classes(vec![0; 32])).unwrap();
    let calibration = Calibration::new()
        .input_norms(true)
        .activations(true)
        .blocks(r.blocks.clone());
    check(
        &calibration
            .clone()
            .batch_size(32)
            .run(&r.net, &data)
            .unwrap(),
        &r,
    );
    check(
        &calibration
            .clone()
            .batch_size(8)
            .run(&r.net, &data)
            .unwrap(),
        &r,
    );
    check(&calibration.batch_size(5).run(&r.net, &data).unwrap(), &r);
}

#[test]
fn the_fixture_blocks_are_candidates_except_one_with_an_escaping_value() {
    let r = reference();
    let candidates = candidate_blocks(&r.net);
    for block in &r.blocks[..5] {
        assert!(
            candidates.contains(block),
            "{block} missing from {candidates:?}"
        );
    }
    // relu1 also feeds `add`, outside relu1..relu2: that block's similarity is defined, but it
    // cannot be replaced by the identity.
    assert!(!candidates.contains(&r.blocks[5]));
    assert_eq!(r.blocks[5], Block::new("relu1", "relu2"));
    assert!(candidates.contains(&Block::new("conv2", "relu2")));
}
