//! The committed reference model (data/hapt-cnn.*, written by examples/train_hapt.rs) loads and
//! classifies the HAPT test windows with the accuracy its metadata records.

#![cfg(feature = "serde")]

use shears::data::hapt::HaptConfig;
use shears::io::{SafetensorsFile, load_network};
use shears::train::{Loss, evaluate};

#[test]
fn the_saved_model_reaches_its_recorded_test_accuracy() {
    let root = env!("CARGO_MANIFEST_DIR");
    let file = SafetensorsFile::open(format!("{root}/data/hapt-cnn.safetensors")).unwrap();
    let training: serde_json::Value =
        serde_json::from_str(&file.metadata().unwrap()["training"]).unwrap();
    let net = load_network(format!("{root}/data/hapt-cnn.json"), file.path()).unwrap();
    let weights: usize = net
        .params()
        .iter()
        .filter(|(_, p)| p.ndim() > 1)
        .map(|(_, p)| p.len())
        .sum();
    assert_eq!(weights, 36_160);

    let hapt = HaptConfig::new()
        .load(format!("{root}/data/hapt-activities.safetensors"))
        .unwrap();
    assert_eq!(
        training["standardization"]["mean"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let accuracy = evaluate(&net, &hapt.test, Loss::CrossEntropy, 512)
        .unwrap()
        .accuracy
        .unwrap();
    let recorded = training["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.91, "{accuracy}");
    assert!(
        (accuracy - recorded).abs() < 5e-4,
        "{accuracy} vs {recorded}"
    );
}

/// Half of the reference model's convolution filters, planned globally and removed for real:
/// the compacted network is what the masks compute, and its checkpoint is smaller. (Accuracy
/// after fine-tuning and latency are measured by the wearable example, `docs/benchmarks.md`.)
#[test]
fn half_the_filters_removed_for_real() {
    use shears::io::save_network;
    use shears::report::StructureReport;
    use shears::strategy::{Context, PruneStrategy, StructureSensitivity, StructureTarget};

    let root = env!("CARGO_MANIFEST_DIR");
    let net = load_network(
        format!("{root}/data/hapt-cnn.json"),
        format!("{root}/data/hapt-cnn.safetensors"),
    )
    .unwrap();
    let plan = StructureSensitivity::new(StructureTarget::Channels(0.5))
        .protect(["fc1"])
        .plan(&Context::for_network(&net))
        .unwrap();
    let removed: usize = plan.removals.iter().map(|r| r.channels.len()).sum();
    assert_eq!(removed, 80, "half of 32 + 64 + 64 filters");
    let small = plan.compact(&net).unwrap();
    let filters: usize = ["conv1", "conv2", "conv3"]
        .iter()
        .map(|c| small.output_shape(c).unwrap()[0])
        .sum();
    assert_eq!(filters, 80);
    assert_eq!(small.num_params(), net.num_params() - plan.masks.pruned());

    let hapt = HaptConfig::new()
        .load(format!("{root}/data/hapt-activities.safetensors"))
        .unwrap();
    let x = hapt.test.batch_inputs(0, 256);
    let mut masked = net.clone();
    masked.apply_masks(&plan.masks).unwrap();
    let (a, b) = (
        small.forward(x.view()).unwrap(),
        masked.forward(x.view()).unwrap(),
    );
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
    assert_eq!(a.shape(), &[256, 6]);

    let report = StructureReport::new(&net, &small).unwrap();
    assert!(report.flops.ratio() < 0.3, "{report}");
    let dir = tempfile::tempdir().unwrap();
    let (spec, file) = (dir.path().join("s.json"), dir.path().join("s.safetensors"));
    save_network(&small, &spec, &file, None).unwrap();
    let dense = std::fs::metadata(format!("{root}/data/hapt-cnn.safetensors"))
        .unwrap()
        .len();
    assert!(std::fs::metadata(&file).unwrap().len() * 3 < dense);
    let reloaded = load_network(&spec, &file).unwrap();
    assert_eq!(reloaded.forward(x.view()).unwrap(), a);
}
