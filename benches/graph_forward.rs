//! Forward pass of the 1-D CNN that the HAR examples train: a batch of 64 windows `[6, 128]`.
//!
//! `cargo bench --bench graph_forward` (add `--no-default-features` for the single-threaded path).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};
use shears::graph::{Conv1d, Network};

fn har_cnn() -> Network {
    Network::builder(&[6, 128])
        .conv1d("conv1", Conv1d::new(6, 32, 5).padding(2))
        .relu("relu1")
        .max_pool1d("pool1", 2)
        .conv1d("conv2", Conv1d::new(32, 64, 5).padding(2))
        .relu("relu2")
        .max_pool1d("pool2", 2)
        .conv1d("conv3", Conv1d::new(64, 64, 5).padding(2))
        .relu("relu3")
        .global_avg_pool("gap")
        .linear("fc1", 64, 64)
        .relu("relu4")
        .linear("fc2", 64, 6)
        .build_init(0)
        .expect("a valid network")
}

fn forward(c: &mut Criterion) {
    let net = har_cnn();
    let n = 64 * 6 * 128;
    let x = ArrayD::from_shape_vec(
        IxDyn(&[64, 6, 128]),
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect(),
    )
    .expect("matching length");
    let mut g = c.benchmark_group("graph_forward");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.bench_function("har_cnn_batch64", |b| {
        b.iter(|| net.forward(black_box(x.view())).expect("forward"))
    });
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
