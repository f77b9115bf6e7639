//! Forward pass of the 1-D CNN that the HAR examples train: a batch of 64 windows `[6, 128]`.
//!
//! `cargo bench --bench graph_forward` (add `--no-default-features` for the single-threaded path).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};
use shears::data::hapt::reference_cnn;
use shears::graph::Network;

fn har_cnn() -> Network {
    reference_cnn().build_init(0).expect("a valid network")
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
