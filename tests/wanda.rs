//! Wanda's scores and masks against an independent numpy reference
//! (`tests/fixtures/make_wanda.py`, fixture `tests/fixtures/wanda/wanda.json`): calibration of the
//! input norms, the per-row comparison group (at 50 %, and at 30 % with Wanda's own `int(s·n)`
//! count), and the N:M form.

use ndarray::{ArrayD, IxDyn};
use serde_json::Value;
use shears::amount::{Amount, CountRule};
use shears::data::{Dataset, Targets};
use shears::graph::{Conv1d, Network};
use shears::strategy::{Context, PruneStrategy, Wanda};

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/wanda/wanda.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn keep(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| x == 1).collect()
}

/// The case's single layer with the fixture's weight, and its calibration data.
fn layer(case: &Value, conv: bool) -> (Network, Dataset) {
    let w_shape = shape(&case["weight_shape"]);
    let x_shape = shape(&case["x_shape"]);
    let builder = Network::builder(&x_shape[1..]);
    let mut net = if conv {
        builder.conv1d(
            "layer",
            Conv1d::new(w_shape[1], w_shape[0], w_shape[2]).padding(1),
        )
    } else {
        builder.linear("layer", w_shape[1], w_shape[0])
    }
    .build_init(0)
    .unwrap();
    let weight = ArrayD::from_shape_vec(IxDyn(&w_shape), floats(&case["weight"])).unwrap();
    let bias = ArrayD::zeros(IxDyn(&[w_shape[0]]));
    net.set_params(
        [("layer.weight", weight), ("layer.bias", bias)]
            .into_iter()
            .collect(),
    )
    .unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&x_shape), floats(&case["x"])).unwrap();
    let data = Dataset::new(x, Targets::Classes(vec![0; x_shape[0]])).unwrap();
    (net, data)
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1e-6),
            "{what}[{i}]: {g} vs numpy's {w}"
        );
    }
}

fn check(name: &str, conv: bool) {
    let fixture = fixture();
    let case = &fixture[name];
    let (net, data) = layer(case, conv);
    let stats = Wanda::calibration().batch_size(7).run(&net, &data).unwrap();
    close(
        &stats.input_norms("layer").unwrap().norms,
        &floats(&case["norms"]),
        "norms",
    );
    let scores = Wanda::new(Amount::Sparsity(0.5))
        .scores(&net, &stats)
        .unwrap();
    close(
        scores.slice("layer.weight").unwrap(),
        &floats(&case["scores"]),
        "scores",
    );
    let ctx = Context::for_network(&net);
    let masks = |wanda: Wanda| {
        wanda
            .with_stats(stats.clone())
            .plan(&ctx)
            .unwrap()
            .masks
            .get("layer.weight")
            .unwrap()
            .as_slice()
            .to_vec()
    };
    assert_eq!(
        masks(Wanda::new(Amount::Sparsity(0.5))),
        keep(&case["keep_50"])
    );
    assert_eq!(
        masks(Wanda::new(Amount::Sparsity(0.3)).count_rule(CountRule::Floor)),
        keep(&case["keep_30_floor"])
    );
    // Wanda's "2:4" prunes 2 of 4: shears keeps 2 of 4.
    assert_eq!(masks(Wanda::n_m(2, 4)), keep(&case["keep_2_4"]));
}

#[test]
fn linear_scores_and_masks_equal_the_reference() {
    check("linear", false);
}

#[test]
fn conv1d_scores_and_masks_equal_the_reference() {
    check("conv1d", true);
}

#[test]
fn the_default_count_differs_from_wandas_where_rounding_does() {
    // 0.3 of 12 inputs: Wanda prunes int(3.6) = 3 per row, PyTorch's rule round(3.6) = 4.
    let fixture = fixture();
    let case = &fixture["linear"];
    let (net, data) = layer(case, false);
    let stats = Wanda::calibration().run(&net, &data).unwrap();
    let plan = Wanda::new(Amount::Sparsity(0.3))
        .with_stats(stats)
        .plan(&Context::for_network(&net))
        .unwrap();
    assert_eq!(plan.masks.get("layer.weight").unwrap().pruned(), 8 * 4);
    let wanda: usize = keep(&case["keep_30_floor"]).iter().filter(|k| !**k).count();
    assert_eq!(wanda, 8 * 3);
}
