//! Calibration memory does not grow with the number of batches: measured with a counting global
//! allocator, the peak for 20 batches is the peak for 2.
//!
//! The runs use a one-thread rayon pool: with several threads, how the workers' scratch buffers
//! overlap in time varies from run to run (by about 0.1 MB here), which would hide what is being
//! measured.
//!
//! One test function only: the counters are global to this test binary.

use ndarray::{ArrayD, IxDyn};
use shears::calibrate::{Calibration, candidate_blocks};
use shears::data::{Dataset, Targets};
use shears::graph::{Conv1d, Network};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::peak_of;

const BATCH: usize = 16;

#[test]
fn peak_memory_is_flat_in_the_number_of_batches() {
    // The wearable CNN shape: two residual stages over 6 x 128 IMU windows.
    let net = Network::builder(&[6, 128])
        .conv1d("conv1", Conv1d::new(6, 32, 5).padding(2))
        .relu("relu1")
        .conv1d("conv2", Conv1d::new(32, 32, 3).padding(1))
        .relu("relu2")
        .conv1d("conv3", Conv1d::new(32, 32, 3).padding(1))
        .add("res", &["conv3", "relu1"])
        .relu("relu3")
        .global_avg_pool("gap")
        .linear("fc1", 32, 32)
        .relu("relu4")
        .linear("fc2", 32, 6)
        .build_init(0)
        .unwrap();
    let n = 20 * BATCH;
    let x = ArrayD::from_shape_fn(IxDyn(&[n, 6, 128]), |i| {
        ((i[0] * 31 + i[1] * 7 + i[2]) % 23) as f32 / 11.0 - 1.0
    });
    let data = Dataset::new(x, Targets::Classes(vec![0; n])).unwrap();
    let calibration = Calibration::new()
        .input_norms(true)
        .activations(true)
        .blocks(candidate_blocks(&net))
        .batch_size(BATCH);
    let run = |batches: usize| {
        calibration
            .clone()
            .max_samples(batches * BATCH)
            .run(&net, &data)
            .unwrap()
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // Warm-up: the pool and any lazily allocated global state.
    pool.install(|| run(1));
    let (two, peak2) = peak_of(|| pool.install(|| run(2)));
    let (twenty, peak20) = peak_of(|| pool.install(|| run(20)));
    assert_eq!((two.samples(), twenty.samples()), (2 * BATCH, 20 * BATCH));
    let one_batch_input = BATCH * 6 * 128 * 4;
    eprintln!(
        "calibration peak: {peak2} bytes for 2 batches, {peak20} bytes for 20 batches \
         (batch of {BATCH}: input {one_batch_input} bytes, {} blocks)",
        twenty.blocks().len()
    );
    // Flat: growing by even a tenth of one batch's input would fail this.
    assert!(
        peak20 <= peak2 + one_batch_input / 10,
        "peak grew from {peak2} to {peak20} bytes"
    );
}
