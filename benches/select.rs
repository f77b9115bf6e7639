//! Selection engine throughput, each kernel beside a plain read pass over the same weights
//! (`sum |w|`, vectorised) as the memory-bandwidth reference, on 1 and 2 threads.
//!
//! `cargo bench --bench select -- global` runs the global magnitude selection only. Weights are
//! tensors of 256K to 4M deterministic pseudo-random `f32`, about normally distributed, 1M, 10M
//! and 50M (Mi) in all (the 50M case needs about 600 MB).

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main,
};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use shears::Mask;
use shears::select::{Norm, Scores, Source, channel_norms, prune_k, prune_n_m, select_cut};
use std::hint::black_box;
use std::time::Duration;

/// 1, 10 and 50 Mi parameters.
const SIZES: [usize; 3] = [1 << 20, 10 << 20, 50 << 20];
const TENSOR_LENS: [usize; 5] = [1 << 18, 1 << 20, 1 << 22, 1 << 19, 1 << 21];
/// Columns of every weight matrix (tensor lengths are multiples of it).
const COLS: usize = 1024;

/// SplitMix64 step.
fn next(s: &mut u64) -> u64 {
    *s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Tensors totalling `n` elements; values are sums of four uniforms (Irwin–Hall), centred.
fn weights(n: usize) -> Vec<ArrayD<f32>> {
    let mut out = Vec::new();
    let (mut total, mut state) = (0, 0x5EED);
    while total < n {
        let len = TENSOR_LENS[out.len() % TENSOR_LENS.len()].min(n - total);
        let data: Vec<f32> = (0..len)
            .map(|_| {
                let r = next(&mut state);
                let sum: u64 = (0..4).map(|q| (r >> (16 * q)) & 0xFFFF).sum();
                (sum as f32 / 65_536.0 - 2.0) * 0.05
            })
            .collect();
        out.push(ArrayD::from_shape_vec(IxDyn(&[len / COLS, COLS]), data).unwrap());
        total += len;
    }
    out
}

/// `sum |w|` with sixteen independent lanes, so that it runs at memory speed.
fn sum_abs(w: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let chunks = w.chunks_exact(16);
    let rest: f32 = chunks.remainder().iter().map(|x| x.abs()).sum();
    for c in chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += x.abs();
        }
    }
    lanes.iter().sum::<f32>() + rest
}

/// The reference: one parallel read of every weight.
fn read_pass(ws: &[&[f32]]) -> f32 {
    ws.par_iter()
        .map(|w| w.par_chunks(1 << 16).map(sum_abs).sum::<f32>())
        .sum()
}

/// A group of `n`-element benchmarks that opens with the read pass on `threads` threads.
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    n: usize,
    threads: usize,
    pool: &rayon::ThreadPool,
    slices: &[&[f32]],
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(n as u64))
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function(BenchmarkId::new(format!("read/{threads}t"), n), |b| {
        b.iter(|| pool.install(|| read_pass(black_box(slices))))
    });
    g
}

fn bench(c: &mut Criterion) {
    for n in SIZES {
        let mut tensors = weights(n);
        // Scores for selection; `tensors` (a copy) is what masks are applied to.
        let scores: Vec<Vec<f32>> = tensors
            .iter()
            .map(|w| w.as_slice().unwrap().to_vec())
            .collect();
        let slices: Vec<&[f32]> = scores.iter().map(Vec::as_slice).collect();
        let names: Vec<String> = (0..slices.len())
            .map(|i| format!("layers.{i}.weight"))
            .collect();
        let sources: Vec<Source<'_>> = slices
            .iter()
            .zip(&names)
            .map(|(w, name)| Source {
                name,
                scores: Scores::Magnitude(w),
                kept: None,
            })
            .collect();
        let masks: Vec<Mask> = prune_k(&sources, n / 2)
            .unwrap()
            .into_iter()
            .zip(&tensors)
            .map(|(m, w)| Mask::from_vec(w.shape(), m).unwrap())
            .collect();
        let mut buffers: Vec<Vec<bool>> = slices.iter().map(|w| vec![true; w.len()]).collect();

        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let id = |what: &str| BenchmarkId::new(format!("{what}/{threads}t"), n);

            let mut g = group(c, "global", n, threads, &pool, &slices);
            g.bench_function(id("prune_k"), |b| {
                b.iter(|| pool.install(|| prune_k(black_box(&sources), n / 2).unwrap()))
            });
            g.bench_function(id("select_cut"), |b| {
                b.iter(|| pool.install(|| select_cut(black_box(&sources), n / 2).unwrap()))
            });
            let cut = select_cut(&sources, n / 2).unwrap().unwrap();
            g.bench_function(id("write_masks"), |b| {
                b.iter(|| {
                    pool.install(|| cut.write_masks(black_box(&sources), &mut buffers).unwrap())
                })
            });
            g.finish();

            let mut g = group(c, "per_layer", n, threads, &pool, &slices);
            g.bench_function(id("prune_k"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        for s in &sources {
                            black_box(
                                prune_k(std::slice::from_ref(s), s.scores.len() / 2).unwrap(),
                            );
                        }
                    })
                })
            });
            g.finish();

            let applied: Vec<&[f32]> = tensors.iter().map(|w| w.as_slice().unwrap()).collect();
            let mut g = group(c, "apply", n, threads, &pool, &applied);
            drop(applied);
            g.bench_function(id("mask_apply"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        for (w, m) in tensors.iter_mut().zip(&masks) {
                            m.apply(w, "w").unwrap();
                        }
                    })
                })
            });
            g.finish();

            let mut g = group(c, "nm", n, threads, &pool, &slices);
            g.bench_function(id("n_m_2_4"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        for s in &sources {
                            let shape = [s.scores.len() / COLS, COLS];
                            black_box(prune_n_m(s, &shape, 2, 4).unwrap());
                        }
                    })
                })
            });
            g.finish();

            let mut g = group(c, "norms", n, threads, &pool, &slices);
            for axis in [0, 1] {
                g.bench_function(id(&format!("l2_axis{axis}")), |b| {
                    b.iter(|| {
                        pool.install(|| {
                            for w in &slices {
                                let shape = [w.len() / COLS, COLS];
                                black_box(
                                    channel_norms("w", w, &shape, axis, Norm::L2, None).unwrap(),
                                );
                            }
                        })
                    })
                });
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
