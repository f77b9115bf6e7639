//! The HAPT loader on the repository's data file, against tests/fixtures/make_hapt_fixture.py
//! (an independent numpy implementation of the same windowing, split and standardisation).

use std::collections::HashSet;
use std::sync::OnceLock;

use serde_json::Value;
use shears::data::Targets;
use shears::data::hapt::{Hapt, HaptConfig};

fn hapt() -> &'static Hapt {
    static HAPT: OnceLock<Hapt> = OnceLock::new();
    HAPT.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/hapt-activities.safetensors"
        );
        HaptConfig::new()
            .load(path)
            .expect("the repository's HAPT file loads")
    })
}

fn expected() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hapt/expected.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn classes(t: &Targets) -> &[usize] {
    match t {
        Targets::Classes(c) => c,
        other => panic!("expected classes, got {other:?}"),
    }
}

#[test]
fn counts_and_classes_match_the_reference() {
    let (h, e) = (hapt(), expected());
    for (split, data) in [("train", &h.train), ("test", &h.test)] {
        let e = &e[split];
        assert_eq!(data.len() as u64, e["count"].as_u64().unwrap(), "{split}");
        let mut counts = [0u64; 6];
        for &c in classes(data.targets()) {
            counts[c] += 1;
        }
        let want: Vec<u64> = e["class_counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(counts.to_vec(), want, "{split}");
    }
    assert_eq!((h.train.len(), h.test.len()), (7415, 2996));
    assert_eq!(h.train.sample_shape(), &[6, 128]);
    assert_eq!(h.test_subjects, [2, 4, 9, 10, 12, 13, 18, 20, 24]);
    assert_eq!(h.labels.len(), 6);
    assert_eq!(h.channels[3], "gyro_x_rad_s");
}

#[test]
fn windows_never_cross_segments_and_subjects_never_cross_splits() {
    let (h, e) = (hapt(), expected());
    // Re-read the segments independently of the loader.
    let file = shears::io::SafetensorsFile::open(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/hapt-activities.safetensors"
    ))
    .unwrap();
    let bytes = file.read_bytes("segments").unwrap();
    let seg: Vec<[usize; 4]> = bytes
        .chunks_exact(16)
        .map(|r| {
            std::array::from_fn(|j| {
                i32::from_le_bytes(r[4 * j..4 * j + 4].try_into().unwrap()) as usize
            })
        })
        .collect();
    for (sources, data) in [(&h.train_sources, &h.train), (&h.test_sources, &h.test)] {
        assert_eq!(sources.len(), data.len());
        for (w, &label) in sources.iter().zip(classes(data.targets())) {
            let [offset, length, seg_label, subject] = seg[w.segment];
            assert!(
                w.start >= offset && w.start + 128 <= offset + length,
                "{w:?}"
            );
            assert_eq!((label, w.subject as usize), (seg_label, subject));
        }
    }
    let train: HashSet<u32> = h.train_sources.iter().map(|w| w.subject).collect();
    let test: HashSet<u32> = h.test_sources.iter().map(|w| w.subject).collect();
    assert!(train.is_disjoint(&test));
    assert_eq!(test.len(), 9);
    assert_eq!(train.len(), 21);
    for (split, sources) in [("train", &h.train_sources), ("test", &h.test_sources)] {
        let first = &e[split]["first_source"];
        let last = &e[split]["last_source"];
        let as_triple = |w: &shears::data::hapt::WindowSource| {
            serde_json::json!([w.segment, w.start, w.subject])
        };
        assert_eq!(&as_triple(&sources[0]), first, "{split}");
        assert_eq!(&as_triple(sources.last().unwrap()), last, "{split}");
    }
}

#[test]
fn standardisation_is_fitted_on_training_subjects_only() {
    let (h, e) = (hapt(), expected());
    let s = &h.standardization;
    for (c, (&m, &sd)) in f64s(&e["mean"]).iter().zip(&f64s(&e["std"])).enumerate() {
        assert!(
            (f64::from(s.mean[c]) - m).abs() < 1e-6,
            "mean {c}: {} vs {m}",
            s.mean[c]
        );
        assert!(
            (f64::from(s.std[c]) - sd).abs() < 1e-6,
            "std {c}: {} vs {sd}",
            s.std[c]
        );
    }
    // The standardised training windows: mean ≈ 0 and std ≈ 1 per channel (not exactly: windows
    // overlap and segment tails are left out), and equal to numpy's figures.
    for (split, data) in [("train", &h.train), ("test", &h.test)] {
        let x = data.inputs();
        let want_mean = f64s(&e[split]["channel_mean"]);
        let want_std = f64s(&e[split]["channel_std"]);
        for c in 0..6 {
            let ch = x.index_axis(ndarray::Axis(1), c);
            let n = ch.len() as f64;
            let mean = ch.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = ch
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            assert!(
                (mean - want_mean[c]).abs() < 1e-5,
                "{split} channel {c}: mean {mean}"
            );
            assert!(
                (var.sqrt() - want_std[c]).abs() < 1e-5,
                "{split} channel {c}: std"
            );
            if split == "train" {
                assert!(mean.abs() < 0.05, "channel {c}: mean {mean}");
                assert!(
                    (var.sqrt() - 1.0).abs() < 0.05,
                    "channel {c}: std {}",
                    var.sqrt()
                );
            }
        }
    }
}

#[test]
fn values_match_numpy() {
    let (h, e) = (hapt(), expected());
    for (split, data) in [("train", &h.train), ("test", &h.test)] {
        let x = data.inputs();
        for v in e[split]["values"].as_array().unwrap() {
            let v = f64s(v);
            let (n, c, t) = (v[0] as usize, v[1] as usize, v[2] as usize);
            // Both compute (x - mean) / std in f32 from the same f16 input and f32 statistics.
            assert_eq!(x[[n, c, t]], v[3] as f32, "{split} [{n}, {c}, {t}]");
        }
    }
}
