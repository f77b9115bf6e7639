//! One training step of the reference 1-D CNN (HAPT windows `[6, 128]`, 36,160 weights) on a
//! batch of 64: training-mode forward pass, cross-entropy, backward pass, Adam (lr 2e-3) update.
//! The same step in PyTorch: `python3 benches/train_step_pytorch.py`.
//!
//! `cargo bench --bench train_step` (add `--no-default-features` for the single-threaded path).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ndarray::{ArrayD, IxDyn};
use shears::data::Targets;
use shears::data::hapt::reference_cnn;
use shears::graph::{Mode, Network};
use shears::train::{Adam, Loss, Trainer};

fn har_cnn() -> Network {
    reference_cnn().build_init(0).expect("a valid network")
}

fn batch() -> (ArrayD<f32>, Targets) {
    let n = 64 * 6 * 128;
    let x = ArrayD::from_shape_vec(
        IxDyn(&[64, 6, 128]),
        (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect(),
    )
    .expect("matching length");
    (x, Targets::Classes((0..64).map(|i| i % 6).collect()))
}

fn train_step(c: &mut Criterion) {
    let mut net = har_cnn();
    let (x, targets) = batch();
    let mut g = c.benchmark_group("train_step");
    g.measurement_time(Duration::from_secs(4));
    g.warm_up_time(Duration::from_secs(1));
    let mut trainer = Trainer::new(Loss::CrossEntropy, Adam::new(2e-3));
    g.bench_function("har_cnn_adam_batch64", |b| {
        b.iter(|| {
            trainer
                .train_step(&mut net, black_box(x.view()), &targets)
                .expect("step")
        })
    });
    // The parts: forward with tape, and backward from it.
    let tape = net
        .forward_tape(x.view(), Mode::Train { seed: 0 })
        .expect("forward");
    let (_, grad) = Loss::CrossEntropy
        .forward(tape.output(), &targets)
        .expect("loss");
    g.bench_function("har_cnn_forward_tape_batch64", |b| {
        b.iter(|| net.forward_tape(black_box(x.view()), Mode::Train { seed: 0 }))
    });
    g.bench_function("har_cnn_backward_batch64", |b| {
        b.iter(|| net.backward_params(black_box(&tape), grad.view()))
    });
    g.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
