//! The `shears` command, run as a built binary on real files: every option, every error case,
//! and parity with `torch.nn.utils.prune` on fixtures made by `tests/fixtures/make_cli_parity.py`.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ndarray::{ArrayD, IxDyn};
use serde_json::Value;
use shears::io::{Dtype, SafetensorsFile, load_masks, save_masks, save_tensors};
use shears::{Mask, MaskSet};

fn shears(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shears"))
        .args(args)
        .output()
        .expect("the shears binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Deterministic distinct values in (-1, 1): no ties anywhere.
fn weights(shape: &[usize], salt: u64) -> ArrayD<f32> {
    let n: usize = shape.iter().product();
    let values = (0..n)
        .map(|i| {
            let x = ((i as u64 * 2_654_435_761 + salt * 97) % 1_000_003) as f32 / 1_000_003.0;
            if i % 2 == 0 { x } else { -x }
        })
        .collect();
    ArrayD::from_shape_vec(IxDyn(shape), values).unwrap()
}

/// A small model: two linear layers, a conv, biases, and an integer buffer.
struct Model {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl Model {
    fn new(dtype: Dtype) -> Model {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let tensors = [
            ("fc1.weight", weights(&[8, 12], 1)),
            ("fc1.bias", weights(&[8], 2)),
            ("conv.weight", weights(&[6, 4, 3], 3)),
            ("fc2.weight", weights(&[4, 8], 4)),
        ];
        let mut metadata = std::collections::HashMap::new();
        metadata.insert("author".to_string(), "tests".to_string());
        save_tensors(
            &path,
            tensors.iter().map(|(n, a)| (*n, a.view(), dtype)),
            Some(metadata),
        )
        .unwrap();
        Model { dir, path }
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }
}

fn zeros(file: &SafetensorsFile, name: &str) -> usize {
    file.read_f32(name)
        .unwrap()
        .iter()
        .filter(|&&x| x == 0.0)
        .count()
}

#[test]
fn inspect_prints_a_table_and_json() {
    let m = Model::new(Dtype::F32);
    let o = shears(&["inspect", s(&m.path)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8(o.stdout).unwrap();
    for needle in [
        "name",
        "dtype",
        "shape",
        "params",
        "zeros",
        "sparsity",
        "fc1.weight",
        "[6, 4, 3]",
        "total (4 tensors)",
    ] {
        assert!(table.contains(needle), "missing {needle}:\n{table}");
    }
    let o = shears(&["inspect", s(&m.path), "--json"]);
    let v = json(&o);
    assert_eq!(v["params"], 8 * 12 + 8 + 72 + 32);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 4);
    assert_eq!(v["zeros"], 0);
}

#[test]
fn prune_layer_sparsity_with_summary_and_masks() {
    let m = Model::new(Dtype::F32);
    let before = m.bytes();
    let (out, masks) = (m.out("out.safetensors"), m.out("masks.safetensors"));
    let o = shears(&[
        "prune",
        s(&m.path),
        "--out",
        s(&out),
        "--sparsity",
        "0.5",
        "--masks",
        s(&masks),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = stderr(&o);
    assert!(
        summary.contains("fc1.weight") && summary.contains("time:"),
        "{summary}"
    );
    assert_eq!(m.bytes(), before, "the input is never modified");

    let pruned = SafetensorsFile::open(&out).unwrap();
    assert_eq!(zeros(&pruned, "fc1.weight"), 48);
    assert_eq!(zeros(&pruned, "conv.weight"), 36);
    assert_eq!(zeros(&pruned, "fc2.weight"), 16);
    let src = SafetensorsFile::open(&m.path).unwrap();
    assert_eq!(
        pruned.read_bytes("fc1.bias").unwrap(),
        src.read_bytes("fc1.bias").unwrap()
    );
    assert_eq!(pruned.metadata(), src.metadata(), "metadata kept");

    let masks = load_masks(&masks).unwrap();
    assert_eq!(
        masks.names().collect::<Vec<_>>(),
        ["conv.weight", "fc1.weight", "fc2.weight"]
    );
    // The masks say exactly which weights are zero.
    for (name, mask) in masks.iter() {
        let w = pruned.read_f32(name).unwrap();
        for (&k, &x) in mask.as_slice().iter().zip(w.iter()) {
            assert_eq!(k, x != 0.0, "{name}");
        }
    }
}

#[test]
fn prune_json_summary_on_stdout() {
    let m = Model::new(Dtype::F32);
    let out = m.out("out.safetensors");
    let o = shears(&[
        "prune",
        s(&m.path),
        "--out",
        s(&out),
        "--count",
        "10",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    assert_eq!(v["total"], 96 + 72 + 32);
    assert_eq!(v["kept"], 96 + 72 + 32 - 30);
    assert!(v["seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["tensors"].as_array().unwrap().len(), 3);
}

#[test]
fn prune_global_threshold_include_exclude() {
    let m = Model::new(Dtype::F32);
    let out = m.out("g.safetensors");
    let o = shears(&[
        "prune",
        s(&m.path),
        "--out",
        s(&out),
        "--scope",
        "global",
        "--sparsity",
        "0.25",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["kept"], 200 - 50);

    let out = m.out("t.safetensors");
    let o = shears(&[
        "prune",
        s(&m.path),
        "--out",
        s(&out),
        "--threshold",
        "0.5",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let pruned = SafetensorsFile::open(&out).unwrap();
    let w = pruned.read_f32("fc1.weight").unwrap();
    assert!(w.iter().all(|&x| x == 0.0 || x.abs() > 0.5));
    let src = SafetensorsFile::open(&m.path)
        .unwrap()
        .read_f32("fc1.weight")
        .unwrap();
    assert_eq!(
        w.iter().filter(|&&x| x == 0.0).count(),
        src.iter().filter(|&&x| x.abs() <= 0.5).count()
    );

    let out = m.out("i.safetensors");
    let o = shears(&[
        "prune",
        s(&m.path),
        "--out",
        s(&out),
        "--sparsity",
        "0.5",
        "--include",
        "^fc",
        "--exclude",
        "fc2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = json(&o)["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["fc1.weight"]);
    let pruned = SafetensorsFile::open(&out).unwrap();
    let src = SafetensorsFile::open(&m.path).unwrap();
    for untouched in ["fc2.weight", "conv.weight", "fc1.bias"] {
        assert_eq!(
            pruned.read_bytes(untouched).unwrap(),
            src.read_bytes(untouched).unwrap()
        );
    }
}

#[test]
fn prune_channels_with_each_norm() {
    let m = Model::new(Dtype::F32);
    for (structure, axis, norm) in [
        ("out-channels", 0, "1"),
        ("in-channels", 1, "inf"),
        ("out-channels", 0, "2"),
    ] {
        let out = m.out(&format!("{structure}-{norm}.safetensors"));
        let masks = m.out(&format!("{structure}-{norm}.masks"));
        let o = shears(&[
            "prune",
            s(&m.path),
            "--out",
            s(&out),
            "--masks",
            s(&masks),
            "--structure",
            structure,
            "--norm",
            norm,
            "--sparsity",
            "0.5",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        for (name, mask) in load_masks(&masks).unwrap().iter() {
            let live = mask.live_along(axis).unwrap();
            let dead = live.iter().filter(|&&l| !l).count();
            assert_eq!(
                dead,
                (live.len() as f64 * 0.5).round_ties_even() as usize,
                "{name}"
            );
            assert_eq!(
                mask.kept(),
                (live.len() - dead) * mask.len() / live.len(),
                "whole channels"
            );
        }
    }
}

#[test]
fn prune_n_m_and_random() {
    let m = Model::new(Dtype::F32);
    let (out, masks) = (m.out("nm.safetensors"), m.out("nm.masks"));
    let o = shears(&[
        "prune",
        s(&m.path),
        "--out",
        s(&out),
        "--masks",
        s(&masks),
        "--nm",
        "2:4",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let masks = load_masks(&masks).unwrap();
    // fc1 [8, 12]: three full groups per row keep 2 of 4 each.
    let fc1 = masks.get("fc1.weight").unwrap();
    for group in fc1.as_slice().chunks(4) {
        assert_eq!(group.iter().filter(|&&k| k).count(), 2);
    }
    // conv [6, 4, 3]: groups run along the 4 input channels at each tap.
    let conv = masks.get("conv.weight").unwrap().as_array().clone();
    for o in 0..6 {
        for tap in 0..3 {
            let kept = (0..4).filter(|&i| conv[[o, i, tap]]).count();
            assert_eq!(kept, 2);
        }
    }

    let run = |seed: &str, name: &str| {
        let masks = m.out(name);
        let out = m.out(&format!("{name}.out"));
        let o = shears(&[
            "prune",
            s(&m.path),
            "--out",
            s(&out),
            "--masks",
            s(&masks),
            "--method",
            "random",
            "--seed",
            seed,
            "--sparsity",
            "0.5",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        load_masks(&masks).unwrap()
    };
    let (a, b, c) = (run("7", "r1"), run("7", "r2"), run("8", "r3"));
    assert_eq!(a, b, "same seed, same masks");
    assert_ne!(a, c, "another seed, other masks");
    assert_eq!(a.get("fc1.weight").unwrap().pruned(), 48);
}

#[test]
fn half_precision_inputs_keep_their_dtype() {
    for dtype in [Dtype::F16, Dtype::BF16] {
        let m = Model::new(dtype);
        let out = m.out("out.safetensors");
        let o = shears(&["prune", s(&m.path), "--out", s(&out), "--sparsity", "0.5"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let pruned = SafetensorsFile::open(&out).unwrap();
        let src = SafetensorsFile::open(&m.path).unwrap();
        for t in pruned.tensors() {
            assert_eq!(t.dtype(), dtype, "{}", t.name());
        }
        assert_eq!(zeros(&pruned, "fc1.weight"), 48);
        // Kept weights are bit-exact.
        let (p, o) = (
            pruned.read_f32("fc1.weight").unwrap(),
            src.read_f32("fc1.weight").unwrap(),
        );
        for (&a, &b) in p.iter().zip(o.iter()) {
            assert!(a == 0.0 || a.to_bits() == b.to_bits());
        }
    }
}

#[test]
fn masks_round_trip_through_masks_in() {
    let m = Model::new(Dtype::F32);
    let (out1, masks1) = (m.out("1.safetensors"), m.out("1.masks"));
    let o = shears(&[
        "prune",
        s(&m.path),
        "--out",
        s(&out1),
        "--masks",
        s(&masks1),
        "--sparsity",
        "0.5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A second run on the ORIGINAL file with the first masks: 0.5 of what remains.
    let (out2, masks2) = (m.out("2.safetensors"), m.out("2.masks"));
    let o = shears(&[
        "prune",
        s(&m.path),
        "--out",
        s(&out2),
        "--masks-in",
        s(&masks1),
        "--masks",
        s(&masks2),
        "--sparsity",
        "0.5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (first, second) = (load_masks(&masks1).unwrap(), load_masks(&masks2).unwrap());
    for (name, m2) in second.iter() {
        let m1 = first.get(name).unwrap();
        assert!(
            m2.as_slice()
                .iter()
                .zip(m1.as_slice())
                .all(|(&b, &a)| !b || a),
            "{name} revived"
        );
        assert_eq!(
            m2.kept(),
            m1.kept() - (m1.kept() as f64 * 0.5).round_ties_even() as usize
        );
    }
    let pruned = SafetensorsFile::open(&out2).unwrap();
    assert_eq!(zeros(&pruned, "fc1.weight"), 96 - 24);
}

/// Runs a failing command and checks exit status 2, the message, and that nothing was written.
fn fails(m: &Model, args: &[&str], message: &str) {
    let before = m.bytes();
    let o = shears(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(message),
        "{args:?}: expected `{message}` in: {err}"
    );
    assert_eq!(err.lines().count(), 1, "{args:?}: one line, got: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    for leftover in ["bad.safetensors", "bad.masks"] {
        assert!(!m.out(leftover).exists(), "{args:?} left {leftover} behind");
    }
    let entries: Vec<_> = std::fs::read_dir(m.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries
            .iter()
            .all(|e| !e.to_string_lossy().starts_with('.')),
        "temporary files left: {entries:?}"
    );
    assert_eq!(m.bytes(), before, "the input is never modified");
}

#[test]
fn errors_exit_2_with_one_clear_line_and_no_output() {
    let m = Model::new(Dtype::F32);
    let model = s(&m.path).to_string();
    let out = m.out("bad.safetensors");
    let out = s(&out).to_string();
    let masks = m.out("bad.masks");
    let masks = s(&masks).to_string();
    let base = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["prune", &model, "--out", &out, "--masks", &masks]
            .iter()
            .map(|x| x.to_string())
            .collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let run = |extra: &[&str], message: &str| {
        let args = base(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails(&m, &args, message);
    };
    run(&["--sparsity", "0.5", "--frobnicate"], "--frobnicate");
    run(
        &["--sparsity", "1.5"],
        "sparsity must be in [0, 1], got 1.5",
    );
    run(&["--sparsity", "-0.1"], "sparsity must be in [0, 1]");
    run(&["--count", "1000"], "cannot prune 1000 units");
    run(&["--threshold", "nan"], "threshold must be a finite number");
    run(&[], "say how much to prune");
    run(
        &["--sparsity", "0.5", "--count", "3"],
        "cannot be used with",
    );
    run(
        &["--nm", "2:4", "--sparsity", "0.5"],
        "--nm sets its own amount",
    );
    run(&["--nm", "5:4"], "invalid N:M pattern 5:4");
    run(&["--nm", "two:four"], "expected N:M");
    run(&["--nm", "2:4", "--scope", "global"], "scope");
    run(
        &["--sparsity", "0.5", "--include", "fc("],
        "invalid regular expression `fc(`",
    );
    run(
        &["--sparsity", "0.5", "--include", "^nothing"],
        "include pattern `^nothing` matches no candidate tensor",
    );
    run(
        &["--sparsity", "0.5", "--exclude", "^nothing"],
        "exclude pattern `^nothing` matches no tensor",
    );
    run(&["--sparsity", "0.5", "--method", "psychic"], "psychic");
    run(&["--sparsity", "0.5", "--norm", "3"], "--norm");

    // --out equal to the input, directly or through another spelling of the path.
    fails(
        &m,
        &["prune", &model, "--out", &model, "--sparsity", "0.5"],
        "is the input file",
    );
    let dotted = m.dir.path().join(".").join("model.safetensors");
    fails(
        &m,
        &["prune", &model, "--out", s(&dotted), "--sparsity", "0.5"],
        "is the input file",
    );

    // Masks whose names or shapes do not match.
    let wrong_name = m.out("wrong-name.masks");
    let mut set = MaskSet::new();
    set.insert("nope.weight", Mask::ones(&[8, 12]));
    save_masks(&wrong_name, &set, None).unwrap();
    run(
        &["--sparsity", "0.5", "--masks-in", s(&wrong_name)],
        "nope.weight",
    );
    let wrong_shape = m.out("wrong-shape.masks");
    let mut set = MaskSet::new();
    set.insert("fc1.weight", Mask::ones(&[12, 8]));
    save_masks(&wrong_shape, &set, None).unwrap();
    run(
        &["--sparsity", "0.5", "--masks-in", s(&wrong_shape)],
        "fc1.weight",
    );
    run(&["--sparsity", "0.5", "--masks-in", &model], "F32");
}

#[test]
fn corrupt_truncated_and_non_finite_files_exit_2() {
    let m = Model::new(Dtype::F32);
    let out = m.out("bad.safetensors");
    let bytes = m.bytes();
    let truncated = m.out("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 7]).unwrap();
    let o = shears(&[
        "prune",
        s(&truncated),
        "--out",
        s(&out),
        "--sparsity",
        "0.5",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("truncated.safetensors"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());

    let garbage = m.out("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\0\0\0\0\0\0\0{not json at all").unwrap();
    for cmd in [
        &["inspect", s(&garbage)][..],
        &["prune", s(&garbage), "--out", s(&out), "--sparsity", "0.5"],
    ] {
        let o = shears(cmd);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).starts_with("error: "), "{}", stderr(&o));
        assert!(!out.exists());
    }

    let missing = m.out("missing.safetensors");
    let o = shears(&["prune", s(&missing), "--out", s(&out), "--sparsity", "0.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("missing.safetensors"));

    let nan = m.out("nan.safetensors");
    let mut w = weights(&[4, 4], 9);
    w[[2, 1]] = f32::NAN;
    save_tensors(&nan, [("layer.weight", w.view(), Dtype::F32)], None).unwrap();
    let o = shears(&["prune", s(&nan), "--out", s(&out), "--sparsity", "0.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("layer.weight") && err.contains("index 9"),
        "{err}"
    );
    assert!(!out.exists());
}

/// `shears prune` masks equal `torch.nn.utils.prune` masks on tie-free tensors.
#[test]
fn parity_with_pytorch_prune() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model = fixtures.join("cli_parity_model.safetensors");
    let expected = load_masks(fixtures.join("cli_parity_expected.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |case: &str, args: &[&str], masks_in: Option<&Path>| -> MaskSet {
        let out = dir.path().join(format!("{case}.safetensors"));
        let masks = dir.path().join(format!("{case}.masks"));
        let mut all = vec!["prune", s(&model), "--out", s(&out), "--masks", s(&masks)];
        all.extend_from_slice(args);
        if let Some(p) = masks_in {
            all.extend(["--masks-in", s(p)]);
        }
        let o = shears(&all);
        assert!(o.status.success(), "{case}: {}", stderr(&o));
        let got = load_masks(&masks).unwrap();
        for name in ["lin.weight", "conv.weight"] {
            let want = expected.get(&format!("{case}/{name}")).unwrap();
            assert_eq!(
                got.get(name).unwrap(),
                want,
                "{case}: {name} differs from PyTorch"
            );
        }
        got
    };
    run("l1_0.3", &["--sparsity", "0.3"], None);
    run("l1_count100", &["--count", "100"], None);
    run(
        "global_0.6",
        &["--scope", "global", "--sparsity", "0.6"],
        None,
    );
    run(
        "ln1_dim0_0.5",
        &[
            "--structure",
            "out-channels",
            "--norm",
            "1",
            "--sparsity",
            "0.5",
        ],
        None,
    );
    run(
        "ln2_dim0_0.25",
        &[
            "--structure",
            "out-channels",
            "--norm",
            "2",
            "--sparsity",
            "0.25",
        ],
        None,
    );
    run(
        "ln2_dim0_0.5",
        &["--structure", "out-channels", "--sparsity", "0.5"],
        None,
    );
    run("step1_l1_0.4", &["--sparsity", "0.4"], None);
    let step1 = dir.path().join("step1_l1_0.4.masks");
    run(
        "step2_ln2_dim0_0.5",
        &["--structure", "out-channels", "--sparsity", "0.5"],
        Some(&step1),
    );
    let half = dir.path().join("half.masks");
    let out = dir.path().join("half.safetensors");
    let o = shears(&[
        "prune",
        s(&model),
        "--out",
        s(&out),
        "--masks",
        s(&half),
        "--sparsity",
        "0.5",
    ]);
    assert!(o.status.success());
    run("l1_0.5_twice", &["--sparsity", "0.5"], Some(&half));
}
