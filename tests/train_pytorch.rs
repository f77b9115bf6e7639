//! Backward pass, losses, BatchNorm's running statistics, optimizers and a short training run
//! against PyTorch, on the fixtures of tests/fixtures/make_grad_fixtures.py (float64 references).
//!
//! Tolerance for tensors: `|a − b| ≤ RTOL · max(|b|, 0.01 · max|B|)` with `b` PyTorch's value and
//! `max|B|` the largest magnitude in that tensor, as in tests/graph_pytorch.rs: an f32 sum has an
//! absolute error proportional to its terms, so values that cancel to far below the tensor's
//! scale are held to that scale instead. Gradients run through longer chains of f32 sums than
//! forward values and get `RTOL = 1e-4`. A gradient that is zero in exact arithmetic (a bias
//! just before BatchNorm in training, whose shift the normalisation removes) has no scale of its
//! own: it must be below `ZERO_TOL` times the largest parameter gradient of its case.

#![cfg(feature = "serde")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use shears::data::Targets;
use shears::graph::{Layer, Mode, Network, NetworkSpec};
use shears::train::{Adam, Loss, Optimizer, Sgd, Trainer};
use shears::{Params, ndarray};

const RTOL: f64 = 1e-4;
const FLOOR: f64 = 0.01;
const ZERO_TOL: f64 = 1e-5;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/grad")
}

/// A fixture file: f32 tensors (f64 and i64 ones converted), and the metadata.
struct File {
    tensors: BTreeMap<String, ArrayD<f32>>,
    classes: BTreeMap<String, Vec<usize>>,
    loss: Option<f64>,
    meta: BTreeMap<String, String>,
}

fn read(path: &Path) -> File {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut file = File {
        tensors: BTreeMap::new(),
        classes: BTreeMap::new(),
        loss: None,
        meta,
    };
    for (name, view) in st.tensors() {
        let data = view.data();
        match view.dtype() {
            Dtype::F32 => {
                let v = data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect();
                let a = ArrayD::from_shape_vec(IxDyn(view.shape()), v).unwrap();
                file.tensors.insert(name, a);
            }
            Dtype::I64 => {
                let v = data
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
                    .collect();
                file.classes.insert(name, v);
            }
            Dtype::F64 => {
                assert_eq!(name, "__loss__");
                file.loss = Some(f64::from_le_bytes(data[..8].try_into().unwrap()));
            }
            other => panic!("{name}: unexpected dtype {other:?}"),
        }
    }
    file
}

/// The worst `|a − b| / max(|b|, FLOOR · max|B|)` over the tensor.
fn worst_error(got: ArrayViewD<'_, f32>, want: ArrayViewD<'_, f32>) -> f64 {
    assert_eq!(got.shape(), want.shape());
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

fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let stem = path.file_stem()?.to_str()?.to_string();
            (path.extension()? == "json" && stem != "train_adam").then_some(stem)
        })
        .collect();
    cases.sort();
    cases
}

fn network(case: &str, file: &File, prefix: &str) -> Network {
    let json = std::fs::read_to_string(dir().join(format!("{case}.json"))).unwrap();
    let spec = NetworkSpec::from_json(&json).unwrap();
    let params: Params = file
        .tensors
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(prefix)?;
            let result = ["__", "grad.", "running."]
                .iter()
                .any(|r| name.starts_with(r));
            (!result).then(|| (name.to_string(), v.clone()))
        })
        .collect();
    Network::new(spec, params).unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// Runs one case; returns the failures.
fn check_case(case: &str) -> Vec<String> {
    let file = read(&dir().join(format!("{case}.safetensors")));
    let mut net = network(case, &file, "");
    let mode = match file.meta["mode"].as_str() {
        "train" => Mode::Train { seed: 0 },
        _ => Mode::Eval,
    };
    let (loss, targets) = match file.meta["loss"].as_str() {
        "cross_entropy" => (
            Loss::CrossEntropy,
            Targets::Classes(file.classes["__target__"].clone()),
        ),
        _ => (
            Loss::MeanSquaredError,
            Targets::Values(file.tensors["__target__"].clone()),
        ),
    };
    let x = &file.tensors["__input__"];
    let tape = net.forward_tape(x.view(), mode).unwrap();
    let (value, grad_output) = loss.forward(tape.output(), &targets).unwrap();
    let mut failures = Vec::new();
    let want_loss = file.loss.expect("a loss");
    if ((value - want_loss) / want_loss).abs() > 1e-5 {
        failures.push(format!("{case}: loss {value} vs PyTorch {want_loss}"));
    }
    let compare =
        |failures: &mut Vec<String>, what: &str, got: ArrayViewD<'_, f32>, want: &ArrayD<f32>| {
            let err = worst_error(got, want.view());
            if err > RTOL {
                failures.push(format!("{case}: {what}: worst relative error {err:.3e}"));
            }
        };
    compare(
        &mut failures,
        "gradient of the loss",
        grad_output.view(),
        &file.tensors["__grad_output__"],
    );
    let grads = net.backward(&tape, grad_output.view()).unwrap();
    compare(
        &mut failures,
        "input gradient",
        grads.input().view(),
        &file.tensors["__grad_input__"],
    );
    let largest = file
        .tensors
        .iter()
        .filter(|(name, _)| name.starts_with("grad."))
        .flat_map(|(_, g)| g.iter())
        .fold(0f64, |m, &g| m.max(f64::from(g).abs()));
    let mut names = 0;
    for (name, want) in file.tensors.iter() {
        if let Some(param) = name.strip_prefix("grad.") {
            let got = grads
                .params()
                .get(param)
                .unwrap_or_else(|| panic!("{param}"));
            if want.iter().all(|&b| f64::from(b).abs() <= 1e-12 * largest) {
                let worst = got.iter().fold(0f64, |m, &a| m.max(f64::from(a).abs()));
                if worst > ZERO_TOL * largest {
                    failures.push(format!(
                        "{case}: {name} should be zero, got up to {worst:.3e}"
                    ));
                }
            } else {
                compare(&mut failures, name, got.view(), want);
            }
            names += 1;
        }
    }
    assert_eq!(
        names,
        grads.params().len(),
        "{case}: every gradient has a reference"
    );
    net.update_running_stats(&tape).unwrap();
    for (name, want) in file.tensors.iter() {
        if let Some(buffer) = name.strip_prefix("running.") {
            compare(
                &mut failures,
                name,
                net.params().get(buffer).unwrap().view(),
                want,
            );
        }
    }
    failures
}

#[test]
fn gradients_losses_and_running_statistics_match_pytorch() {
    let cases = cases();
    assert!(cases.len() >= 5, "fixtures missing: {cases:?}");
    let failures: Vec<String> = cases.iter().flat_map(|c| check_case(c)).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fixtures_cover_every_layer_kind_in_backward() {
    let mut kinds = std::collections::BTreeSet::new();
    for case in cases() {
        let json = std::fs::read_to_string(dir().join(format!("{case}.json"))).unwrap();
        for node in NetworkSpec::from_json(&json).unwrap().nodes {
            kinds.insert(node.layer.kind());
        }
    }
    // Dropout's training masks are random, so PyTorch cannot be matched on them: its training
    // gradient is checked by finite differences (tests/grad_check.rs), its inference pass here.
    // Identity has no gradient of its own to compare.
    for kind in Layer::KINDS.into_iter().filter(|&k| k != "identity") {
        assert!(kinds.contains(kind), "no gradient fixture with {kind}");
    }
}

#[test]
fn the_tolerance_catches_a_small_gradient_error() {
    // A test that cannot fail proves nothing: a 3e-4 relative error in one gradient is caught.
    let file = read(&dir().join("har_cnn_ce.safetensors"));
    let want = &file.tensors["grad.conv2.weight"];
    let mut got = want.clone();
    let (i, _) = want
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .unwrap();
    got.as_slice_mut().unwrap()[i] *= 1.0 + 3e-4;
    assert!(worst_error(got.view(), want.view()) > RTOL);
}

/// An optimizer from a fixture configuration.
fn optimizer(config: &serde_json::Value) -> Box<dyn Optimizer> {
    let f = |k: &str| config.get(k).and_then(serde_json::Value::as_f64);
    let lr = f("lr").unwrap();
    match config["kind"].as_str().unwrap() {
        "sgd" => Box::new(
            Sgd::new(lr)
                .momentum(f("momentum").unwrap_or(0.0))
                .dampening(f("dampening").unwrap_or(0.0))
                .nesterov(config.get("nesterov").and_then(|v| v.as_bool()) == Some(true))
                .weight_decay(f("weight_decay").unwrap_or(0.0)),
        ),
        kind => {
            let mut adam = Adam::new(lr)
                .weight_decay(f("weight_decay").unwrap_or(0.0))
                .decoupled_weight_decay(kind == "adamw");
            if let Some(b) = config.get("betas") {
                adam = adam.betas(b[0].as_f64().unwrap(), b[1].as_f64().unwrap());
            }
            if let Some(eps) = f("eps") {
                adam = adam.eps(eps);
            }
            Box::new(adam)
        }
    }
}

#[test]
fn optimizer_steps_match_pytorch() {
    let file = read(&dir().join("optim.safetensors"));
    let configs: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&file.meta["configs"]).unwrap();
    assert_eq!(configs.len(), 7);
    for (name, config) in &configs {
        let mut opt = optimizer(config);
        let mut params: BTreeMap<&str, ArrayD<f32>> = ["a", "b"]
            .into_iter()
            .map(|k| (k, file.tensors[&format!("p0.{k}")].clone()))
            .collect();
        for t in 1..=5 {
            for (k, p) in params.iter_mut() {
                let g = &file.tensors[&format!("g{t}.{k}")];
                opt.update(k, p.as_slice_mut().unwrap(), g.as_slice().unwrap())
                    .unwrap();
                let want = &file.tensors[&format!("{name}.step{t}.{k}")];
                for (&a, &b) in p.iter().zip(want.iter()) {
                    assert!(
                        (a - b).abs() <= 2e-6 * b.abs().max(1.0),
                        "{name} step {t} `{k}`: {a} vs PyTorch {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn three_adam_steps_match_pytorch() {
    let file = read(&dir().join("train_adam.safetensors"));
    let mut net = network("train_adam", &file, "p0.");
    let mut trainer = Trainer::new(Loss::CrossEntropy, Adam::new(0.01));
    for t in 1..=3 {
        let targets = Targets::Classes(file.classes[&format!("y{t}")].clone());
        trainer
            .train_step(&mut net, file.tensors[&format!("x{t}")].view(), &targets)
            .unwrap();
    }
    assert_eq!(trainer.steps(), 3);
    for (name, got) in net.params().iter() {
        let want = &file.tensors[&format!("p3.{name}")];
        // Adam divides by √v: where a gradient is near zero its step can differ by a few ulp of
        // lr, so the bound is absolute, a small fraction of the 3 · lr the weights could move.
        for (&a, &b) in got.iter().zip(want.iter()) {
            assert!((a - b).abs() <= 2e-5, "{name}: {a} vs PyTorch {b}");
        }
    }
}
