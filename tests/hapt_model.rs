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
