//! Backward kernels: for each forward kernel of [`ops`](super::ops), the gradient with respect
//! to its input and its parameters, given the gradient with respect to its output (`dy`).
//!
//! Same conventions as the forward kernels: flat row-major slices in, flat vectors out, shapes
//! owned by the caller. Convolutions go through im2col, one matrix product per group for the
//! weight gradient (`dY · colsᵀ`) and one for the input gradient (`Wᵀ · dY`, folded back by
//! col2im). Parameter gradients are sums over the batch: each task sums its own chunk of samples
//! into a partial, and the partials are added in chunk order. Chunk sizes depend on the shapes
//! alone, never on the number of threads, so gradients are bit-identical with and without rayon
//! and from run to run.

use std::ops::Range;

use ndarray::linalg::general_mat_mul;

use super::layer::{ConvGeom, PoolGeom};
use super::ops::{
    LINEAR_ROWS, MAP_CHUNK, Unfold, avg_divisors, conv_block, for_each_chunk, map_indices, view2,
    view2_mut,
};
use crate::pool::{Scratch, recycle, reused, zeroed};

/// Operations a chunk of a reduction should hold at least.
const CHUNK_WORK: usize = 1 << 15;

/// At most this many partial sums of one parameter gradient exist at once.
const MAX_PARTIALS: usize = 16;

/// Length of the chunks `items` are split into for a reduction, from the shapes alone: enough
/// items for [`CHUNK_WORK`] operations, at least `min_len`, and few enough chunks to bound the
/// partials' memory by [`MAX_PARTIALS`] copies of the gradient.
fn chunk_len(items: usize, work_per_item: usize, min_len: usize) -> usize {
    CHUNK_WORK
        .div_ceil(work_per_item.max(1))
        .max(items.div_ceil(MAX_PARTIALS))
        .max(min_len)
        .max(1)
}

/// Runs `f(items, out_chunk, partial)` over consecutive chunks of `len` items, in parallel under
/// the `rayon` feature. Each call gets a zeroed `partial` of `partial_len` floats and its part of
/// `out` (`out_per_item` floats per item, or an empty slice when `out` is empty); the partials are
/// summed in chunk order and returned. All buffers are taken on the calling thread, so that they
/// return to its pool.
fn sum_partials<F>(
    items: usize,
    len: usize,
    out: &mut [f32],
    out_per_item: usize,
    partial_len: usize,
    f: F,
) -> Vec<f32>
where
    F: Fn(Range<usize>, &mut [f32], &mut [f32]) + Send + Sync,
{
    let len = len.max(1);
    let chunks = items.div_ceil(len);
    if chunks == 0 {
        return zeroed(partial_len);
    }
    let ranges = (0..chunks).map(|c| c * len..((c + 1) * len).min(items));
    let empty = |_| -> &mut [f32] { &mut [] };
    let outs: Vec<&mut [f32]> = if out.is_empty() {
        (0..chunks).map(empty).collect()
    } else {
        out.chunks_mut(len * out_per_item).collect()
    };
    let mut partials = zeroed(chunks * partial_len);
    let parts: Vec<&mut [f32]> = if partial_len == 0 {
        (0..chunks).map(empty).collect()
    } else {
        partials.chunks_mut(partial_len).collect()
    };
    let run = |((r, o), p): ((Range<usize>, &mut [f32]), &mut [f32])| f(r, o, p);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        let tasks: Vec<_> = ranges.zip(outs).zip(parts).collect();
        tasks.into_par_iter().for_each(run);
    }
    #[cfg(not(feature = "rayon"))]
    ranges.zip(outs).zip(parts).for_each(run);
    let mut total = reused(partial_len);
    total.copy_from_slice(&partials[..partial_len]);
    for p in partials.chunks_exact(partial_len.max(1)).skip(1) {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    recycle(partials);
    total
}

/// Gradients of a layer with a weight and an optional bias.
#[derive(Debug)]
pub(crate) struct WeightGrads {
    /// Gradient of the weight, in its layout.
    pub weight: Vec<f32>,
    /// Gradient of the bias, when the layer has one.
    pub bias: Option<Vec<f32>>,
    /// Gradient of the input, when asked for.
    pub input: Option<Vec<f32>>,
}

/// Splits a partial of `weight_len + bias_len` floats back into weight and bias.
fn split_bias(mut both: Vec<f32>, weight_len: usize, bias: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let b = bias.then(|| both.split_off(weight_len));
    (both, b)
}

/// Adds each run of `spatial` elements of `dy` (channels cycling through `db`) onto `db`.
fn add_runs(db: &mut [f32], dy: &[f32], spatial: usize) {
    let channels = db.len();
    for (i, run) in dy.chunks_exact(spatial).enumerate() {
        db[i % channels] += run.iter().sum::<f32>();
    }
}

/// Backward of [`ops::linear`](super::ops::linear): `dW = dYᵀ X`, `db = Σ dY`, `dX = dY W`.
pub(crate) fn linear(
    x: &[f32],
    in_f: usize,
    w: &[f32],
    out_f: usize,
    dy: &[f32],
    bias: bool,
    need_dx: bool,
) -> WeightGrads {
    let rows = dy.len() / out_f;
    let w_len = out_f * in_f;
    let partial_len = w_len + if bias { out_f } else { 0 };
    let len = chunk_len(rows, 2 * w_len, LINEAR_ROWS);
    let both = sum_partials(rows, len, &mut [], 0, partial_len, |r, _, p| {
        let (pw, pb) = p.split_at_mut(w_len);
        let n = r.len();
        let dy = &dy[r.start * out_f..r.end * out_f];
        let x = &x[r.start * in_f..r.end * in_f];
        general_mat_mul(
            1.0,
            &view2(dy, n, out_f).t(),
            &view2(x, n, in_f),
            0.0,
            &mut view2_mut(pw, out_f, in_f),
        );
        if bias {
            add_runs(pb, dy, 1);
        }
    });
    let (weight, bias) = split_bias(both, w_len, bias);
    let input = need_dx.then(|| {
        let mut dx = reused(rows * in_f);
        let w = view2(w, out_f, in_f);
        let work = LINEAR_ROWS * 2 * w_len;
        for_each_chunk(
            &mut dx,
            LINEAR_ROWS * in_f,
            dy,
            LINEAR_ROWS * out_f,
            0,
            work,
            |_, _, dx, dy| {
                let n = dx.len() / in_f;
                general_mat_mul(
                    1.0,
                    &view2(dy, n, out_f),
                    &w,
                    0.0,
                    &mut view2_mut(dx, n, in_f),
                );
            },
        );
        dx
    });
    WeightGrads {
        weight,
        bias,
        input,
    }
}

/// Backward of [`ops::conv`](super::ops::conv) for `x` `[batch, cin, h, w]`, `w` `[cout,
/// cin/groups, kh, kw]` and `dy` `[batch, cout, oh, ow]`. Blocks of samples are unfolded side by
/// side as in the forward pass; per block and group `dW_g += dY_g · cols_gᵀ` and
/// `dX = col2im(W_gᵀ · dY_g)`.
pub(crate) fn conv(
    g: &ConvGeom,
    x: &[f32],
    hw: [usize; 2],
    out_hw: [usize; 2],
    w: &[f32],
    dy: &[f32],
    need_dx: bool,
) -> WeightGrads {
    let howo = out_hw[0] * out_hw[1];
    let kk = g.fan_in();
    let cout_g = g.cout / g.groups;
    let (in_len, out_len) = (g.cin * hw[0] * hw[1], g.cout * howo);
    let batch = dy.len() / out_len;
    let w_len = g.cout * kk;
    let partial_len = w_len + if g.bias { g.cout } else { 0 };
    let mut dx = if need_dx {
        zeroed(batch * in_len)
    } else {
        Vec::new()
    };
    let len = conv_block(batch, howo).max(batch.div_ceil(MAX_PARTIALS));
    let unfold = Unfold::new(g, hw, out_hw);
    let both = sum_partials(batch, len, &mut dx, in_len, partial_len, |r, dxs, p| {
        let (pw, pb) = p.split_at_mut(w_len);
        let ld = r.len() * howo;
        // The block's im2col matrix and its output gradient as one matrix [cout, ld].
        let mut cols = Scratch::new(g.groups * kk * ld);
        let mut dyc = Scratch::new(g.cout * ld);
        for (s, sample) in r.clone().enumerate() {
            unfold.im2col(
                &x[sample * in_len..(sample + 1) * in_len],
                &mut cols[s * howo..],
                ld,
            );
            let dys = &dy[sample * out_len..(sample + 1) * out_len];
            for (c, run) in dys.chunks_exact(howo).enumerate() {
                dyc[c * ld + s * howo..c * ld + (s + 1) * howo].copy_from_slice(run);
            }
        }
        let mut dcols = Scratch::new(if need_dx { cols.len() } else { 0 });
        for gi in 0..g.groups {
            let dyg = view2(&dyc[gi * cout_g * ld..(gi + 1) * cout_g * ld], cout_g, ld);
            let cg = view2(&cols[gi * kk * ld..(gi + 1) * kk * ld], kk, ld);
            let pwg = &mut pw[gi * cout_g * kk..(gi + 1) * cout_g * kk];
            general_mat_mul(1.0, &dyg, &cg.t(), 1.0, &mut view2_mut(pwg, cout_g, kk));
            if need_dx {
                let wg = view2(&w[gi * cout_g * kk..(gi + 1) * cout_g * kk], cout_g, kk);
                let tg = &mut dcols[gi * kk * ld..(gi + 1) * kk * ld];
                general_mat_mul(1.0, &wg.t(), &dyg, 0.0, &mut view2_mut(tg, kk, ld));
            }
        }
        if g.bias {
            for (b, row) in pb.iter_mut().zip(dyc.chunks_exact(ld)) {
                *b += row.iter().sum::<f32>();
            }
        }
        if need_dx {
            for (s, dxs) in dxs.chunks_exact_mut(in_len).enumerate() {
                unfold.col2im(&dcols[s * howo..], ld, dxs);
            }
        }
    });
    let (weight, bias) = split_bias(both, w_len, g.bias);
    WeightGrads {
        weight,
        bias,
        input: need_dx.then_some(dx),
    }
}

/// Backward of batch normalisation over `x` `[batch, channels, spatial]` normalised with the
/// per-channel `stats` `(mean, 1 / √(var + eps))`. With `batch_stats` the statistics were the
/// batch's own (training), so the input gradient also flows through them:
/// `dx = γ·inv/N · (N·dy − Σdy − x̂·Σ(dy·x̂))`; otherwise (running statistics) `dx = γ·inv·dy`.
/// Returns `(dγ, dβ, dx)`.
pub(crate) fn batch_norm(
    x: &[f32],
    spatial: usize,
    gamma: &[f32],
    stats: &[(f64, f64)],
    batch_stats: bool,
    dy: &[f32],
    need_dx: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let channels = gamma.len();
    fn runs(v: &[f32], spatial: usize, channels: usize, c: usize) -> impl Iterator<Item = &[f32]> {
        v.chunks_exact(spatial).skip(c).step_by(channels)
    }
    // Per channel: Σ dy and Σ dy·x̂, in f64.
    let sums: Vec<(f64, f64)> = map_indices(channels, 3 * x.len() / channels, |c| {
        let (mean, inv) = stats[c];
        runs(dy, spatial, channels, c)
            .zip(runs(x, spatial, channels, c))
            .flat_map(|(d, x)| d.iter().zip(x))
            .fold((0.0, 0.0), |(s, sx), (&d, &x)| {
                let d = f64::from(d);
                (s + d, sx + d * (f64::from(x) - mean) * inv)
            })
    });
    let dgamma = sums.iter().map(|&(_, sx)| sx as f32).collect();
    let dbeta = sums.iter().map(|&(s, _)| s as f32).collect();
    let dx = need_dx.then(|| {
        let n = (x.len() / channels) as f64;
        let mut dx = reused(x.len());
        for_each_chunk(
            &mut dx,
            spatial,
            dy,
            spatial,
            0,
            4 * spatial,
            |i, _, dx, dy| {
                let c = i % channels;
                let (mean, inv) = stats[c];
                let a = f64::from(gamma[c]) * inv;
                let x = &x[i * spatial..(i + 1) * spatial];
                if batch_stats {
                    let (s, sx) = (sums[c].0 / n, sums[c].1 / n);
                    for ((dx, &d), &v) in dx.iter_mut().zip(dy).zip(x) {
                        let xhat = (f64::from(v) - mean) * inv;
                        *dx = (a * (f64::from(d) - s - xhat * sx)) as f32;
                    }
                } else {
                    for (dx, &d) in dx.iter_mut().zip(dy) {
                        *dx = (a * f64::from(d)) as f32;
                    }
                }
            },
        );
        dx
    });
    (dgamma, dbeta, dx)
}

/// Gradients of an optional per-element scale and shift: `(d weight, d bias)`.
pub(crate) type AffineGrads = Option<(Vec<f32>, Vec<f32>)>;

/// Backward of [`ops::layer_norm`](super::ops::layer_norm) over rows of `d` elements, with the
/// affine weight when there is one. Returns `(dw, db)` (with the affine step) and `dx`.
pub(crate) fn layer_norm(
    x: &[f32],
    d: usize,
    eps: f64,
    weight: Option<&[f32]>,
    dy: &[f32],
    need_dx: bool,
) -> (AffineGrads, Option<Vec<f32>>) {
    let rows = x.len() / d;
    let partial_len = if weight.is_some() { 2 * d } else { 0 };
    let mut dx = if need_dx { reused(x.len()) } else { Vec::new() };
    let len = chunk_len(rows, 10 * d, 1);
    let both = sum_partials(rows, len, &mut dx, d, partial_len, |r, dxs, p| {
        let mut xhat = vec![0.0f64; d];
        for (k, row) in r.enumerate() {
            let x = &x[row * d..(row + 1) * d];
            let dy = &dy[row * d..(row + 1) * d];
            let (mean, inv) = super::ops::row_stats(x, eps);
            for (h, &v) in xhat.iter_mut().zip(x) {
                *h = (f64::from(v) - mean) * inv;
            }
            if weight.is_some() {
                let (pw, pb) = p.split_at_mut(d);
                for (((pw, pb), &g), &h) in pw.iter_mut().zip(pb).zip(dy).zip(&xhat) {
                    *pw += (f64::from(g) * h) as f32;
                    *pb += g;
                }
            }
            if need_dx {
                let dxhat = |j: usize| f64::from(dy[j]) * weight.map_or(1.0, |w| f64::from(w[j]));
                let (s, sx) = (0..d).fold((0.0, 0.0), |(s, sx), j| {
                    let g = dxhat(j);
                    (s + g, sx + g * xhat[j])
                });
                let n = d as f64;
                for (j, dx) in dxs[k * d..(k + 1) * d].iter_mut().enumerate() {
                    *dx = (inv * (dxhat(j) - s / n - xhat[j] * sx / n)) as f32;
                }
            }
        }
    });
    let params = weight.map(|_| {
        let (w, b) = both.split_at(d);
        (w.to_vec(), b.to_vec())
    });
    (params, need_dx.then_some(dx))
}

/// `f(a[i], b[i])` for equally long slices, in parallel for large inputs.
pub(crate) fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Send + Sync) -> Vec<f32> {
    let mut out = reused(a.len());
    for_each_chunk(
        &mut out,
        MAP_CHUNK,
        a,
        MAP_CHUNK,
        0,
        MAP_CHUNK,
        |i, _, o, a| {
            let b = &b[i * MAP_CHUNK..];
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        },
    );
    out
}

/// Derivative of the exact GELU: `Φ(x) + x · φ(x)`.
pub(crate) fn gelu_derivative(x: f32) -> f32 {
    let cdf = 0.5 * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2);
    let pdf = (-0.5 * x * x).exp()
        * (0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2);
    cdf + x * pdf
}

/// Backward of [`ops::softmax`](super::ops::softmax) from its output `y` `[outer, len, inner]`:
/// `dx = y ⊙ (dy − Σ_lane dy ⊙ y)`.
pub(crate) fn softmax(y: &[f32], dy: &[f32], len: usize, inner: usize) -> Vec<f32> {
    let block = len * inner;
    let mut dx = reused(y.len());
    for_each_chunk(&mut dx, block, dy, block, 0, 4 * block, |i, _, dx, dy| {
        let y = &y[i * block..(i + 1) * block];
        for j in 0..inner {
            let lane = || (0..len).map(|k| k * inner + j);
            let dot: f32 = lane().map(|k| dy[k] * y[k]).sum();
            for k in lane() {
                dx[k] = y[k] * (dy[k] - dot);
            }
        }
    });
    dx
}

/// Backward of max pooling: each output's gradient goes to the input position it took
/// (`argmax`, in-plane indices from [`ops::max_pool_argmax`](super::ops::max_pool_argmax)).
pub(crate) fn max_pool(argmax: &[u32], dy: &[f32], hw: [usize; 2], out_hw: [usize; 2]) -> Vec<f32> {
    let (plane, out_plane) = (hw[0] * hw[1], out_hw[0] * out_hw[1]);
    let mut dx = zeroed(dy.len() / out_plane * plane);
    for_each_chunk(
        &mut dx,
        plane,
        dy,
        out_plane,
        0,
        out_plane,
        |i, _, dx, dy| {
            let taps = &argmax[i * out_plane..(i + 1) * out_plane];
            for (&t, &g) in taps.iter().zip(dy) {
                dx[t as usize] += g;
            }
        },
    );
    dx
}

/// Backward of average pooling: each output's gradient, divided by its divisor, goes to every
/// tap of its window that lies inside the input.
pub(crate) fn avg_pool(
    g: &PoolGeom,
    count_include_pad: bool,
    dy: &[f32],
    hw: [usize; 2],
    out_hw: [usize; 2],
) -> Vec<f32> {
    let (plane, out_plane) = (hw[0] * hw[1], out_hw[0] * out_hw[1]);
    let divisors = avg_divisors(g, hw, out_hw, count_include_pad);
    let sw = g.stride[1];
    let mut dx = zeroed(dy.len() / out_plane * plane);
    let work = out_plane * g.k[0] * g.k[1];
    let rows = g.window().tap_rows(hw, out_hw);
    for_each_chunk(
        &mut dx,
        plane,
        dy,
        out_plane,
        out_plane,
        work,
        |_, scaled, dx, dy| {
            for ((s, &d), &q) in scaled.iter_mut().zip(dy).zip(&divisors) {
                *s = d / q;
            }
            for r in &rows {
                for (t, &v) in scaled[r.outs.clone()].iter().enumerate() {
                    dx[r.start + t * sw] += v;
                }
            }
        },
    );
    dx
}

/// Backward of [`ops::mean_runs`](super::ops::mean_runs): every element of a run gets its mean's
/// gradient divided by the run length.
pub(crate) fn mean_runs(dy: &[f32], spatial: usize) -> Vec<f32> {
    let n = spatial as f32;
    let mut dx = reused(dy.len() * spatial);
    for (run, &g) in dx.chunks_exact_mut(spatial).zip(dy) {
        run.fill(g / n);
    }
    dx
}
