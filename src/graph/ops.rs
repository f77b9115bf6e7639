//! Forward kernels over row-major slices.
//!
//! Each kernel takes its input as a flat slice plus the geometry it needs, and returns its output
//! as a flat vector; the caller owns shapes. Keeping the math in plain functions of (input,
//! parameters) is what lets a backward pass mirror each kernel one to one. Convolutions are
//! im2col followed by one matrix product per group (`ndarray::linalg::general_mat_mul`); work is
//! spread over the batch (or over channel planes) with rayon under the `rayon` feature.

use std::ops::Range;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use super::layer::{ConvGeom, PoolGeom};
use crate::pool::{Scratch, copied, reused};

/// Estimated operations below which a parallel task is not worth its scheduling.
#[cfg(feature = "rayon")]
const PAR_WORK: usize = 1 << 15;

/// Rows of a linear layer's input handled by one task.
pub(crate) const LINEAR_ROWS: usize = 64;

/// Elements of an element-wise map handled by one task.
pub(crate) const MAP_CHUNK: usize = 1 << 14;

pub(crate) fn view2(s: &[f32], rows: usize, cols: usize) -> ArrayView2<'_, f32> {
    ArrayView2::from_shape((rows, cols), s).expect("slice length fixed by shape inference")
}

pub(crate) fn view2_mut(s: &mut [f32], rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    ArrayViewMut2::from_shape((rows, cols), s).expect("slice length fixed by shape inference")
}

/// Calls `f(index, scratch, out_chunk, in_chunk)` for matching chunks of `out` and `inp`, in
/// parallel under the `rayon` feature. `scratch` is a per-task buffer of `scratch_len` floats;
/// `work` estimates the operations per chunk, so that cheap chunks are grouped into larger tasks.
pub(crate) fn for_each_chunk<T, F>(
    out: &mut [T],
    out_len: usize,
    inp: &[f32],
    in_len: usize,
    scratch_len: usize,
    work: usize,
    f: F,
) where
    T: Send,
    F: Fn(usize, &mut [f32], &mut [T], &[f32]) + Send + Sync,
{
    if out_len == 0 || in_len == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(out_len)
            .zip(inp.par_chunks(in_len))
            .enumerate()
            .with_min_len(min_len(work))
            .for_each_init(
                || Scratch::new(scratch_len),
                |scratch, (i, (o, x))| f(i, scratch, o, x),
            );
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = work;
        let mut scratch = Scratch::new(scratch_len);
        for (i, (o, x)) in out.chunks_mut(out_len).zip(inp.chunks(in_len)).enumerate() {
            f(i, &mut scratch, o, x);
        }
    }
}

/// Smallest number of items of `work` operations each worth one parallel task.
#[cfg(feature = "rayon")]
pub(crate) fn min_len(work: usize) -> usize {
    (PAR_WORK / work.max(1)).max(1)
}

/// `f(0), f(1), ..., f(n - 1)`, in parallel under the `rayon` feature; `work` estimates the
/// operations of one call.
pub(crate) fn map_indices<T, F>(n: usize, work: usize, f: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> T + Send + Sync,
{
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..n)
            .into_par_iter()
            .with_min_len(min_len(work))
            .map(f)
            .collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = work;
        (0..n).map(f).collect()
    }
}

/// Applies `f` to every element, in parallel for large inputs under the `rayon` feature.
pub(crate) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Send + Sync) -> Vec<f32> {
    let mut out = reused(x.len());
    for_each_chunk(
        &mut out,
        MAP_CHUNK,
        x,
        MAP_CHUNK,
        0,
        MAP_CHUNK,
        |_, _, o, x| {
            for (o, &v) in o.iter_mut().zip(x) {
                *o = f(v);
            }
        },
    );
    out
}

/// `y = x Wᵀ + b` for `x` `[rows, in_f]` and `W` `[out_f, in_f]`.
pub(crate) fn linear(
    x: &[f32],
    in_f: usize,
    w: &[f32],
    out_f: usize,
    b: Option<&[f32]>,
) -> Vec<f32> {
    let rows = x.len() / in_f;
    let mut y = reused(rows * out_f);
    let wt = view2(w, out_f, in_f).reversed_axes();
    let work = LINEAR_ROWS * 2 * in_f * out_f;
    for_each_chunk(
        &mut y,
        LINEAR_ROWS * out_f,
        x,
        LINEAR_ROWS * in_f,
        0,
        work,
        |_, _, y, x| {
            let rows = y.len() / out_f;
            let beta = fill_bias(y, b);
            general_mat_mul(
                1.0,
                &view2(x, rows, in_f),
                &wt,
                beta,
                &mut view2_mut(y, rows, out_f),
            );
        },
    );
    y
}

/// Pre-fills each row of `y` with the bias; returns the `beta` a following `general_mat_mul`
/// must use: 1 to accumulate onto the bias, 0 without one.
fn fill_bias(y: &mut [f32], b: Option<&[f32]>) -> f32 {
    match b {
        Some(b) => {
            for row in y.chunks_exact_mut(b.len()) {
                row.copy_from_slice(b);
            }
            1.0
        }
        None => 0.0,
    }
}

/// Output positions `o` in `0..n_out` whose input position `o · s + off` lies in `0..n_in`, as a
/// half-open range.
pub(crate) fn valid_range(n_out: usize, s: usize, off: isize, n_in: usize) -> (usize, usize) {
    let lo = if off >= 0 {
        0
    } else {
        off.unsigned_abs().div_ceil(s)
    };
    let end = n_in as isize - off;
    let hi = if end <= 0 {
        0
    } else {
        (end as usize).div_ceil(s).min(n_out)
    };
    (lo.min(hi), hi)
}

/// Where a sliding window's taps fall, per axis `[height, width]`: kernel size, stride, padding
/// and dilation. Convolutions (through [`Unfold`]) and pooling, forward and backward, all walk
/// windows through [`Window::tap_rows`], so that a backward touches exactly the taps its forward
/// read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
}

/// One kernel tap's pass over one output row: the outputs `outs` of a plane `[oh, ow]` read the
/// input positions `start, start + stride_w, ...` of a plane `[h, w]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TapRow {
    /// The kernel tap, `i · kw + j`.
    pub tap: usize,
    /// Output positions in the plane.
    pub outs: Range<usize>,
    /// Input position of the first of them.
    pub start: usize,
}

impl Window {
    /// Every tap row, taps in window order and rows in order within a tap; taps that fall in the
    /// padding are left out. The same for every plane: kernels compute it once per call, not
    /// once per channel (it takes integer divisions).
    pub fn tap_rows(&self, [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<TapRow> {
        let [sh, sw] = self.stride;
        let mut rows = Vec::new();
        for i in 0..self.k[0] {
            let off_h = (i * self.dil[0]) as isize - self.pad[0] as isize;
            let (h_lo, h_hi) = valid_range(oh, sh, off_h, h);
            for j in 0..self.k[1] {
                let off_w = (j * self.dil[1]) as isize - self.pad[1] as isize;
                let (w_lo, w_hi) = valid_range(ow, sw, off_w, w);
                if w_lo == w_hi {
                    continue;
                }
                let start = ((w_lo * sw) as isize + off_w) as usize;
                for o_h in h_lo..h_hi {
                    let ih = ((o_h * sh) as isize + off_h) as usize;
                    rows.push(TapRow {
                        tap: i * self.k[1] + j,
                        outs: o_h * ow + w_lo..o_h * ow + w_hi,
                        start: ih * w + start,
                    });
                }
            }
        }
        rows
    }
}

/// The im2col unfolding of one convolution's samples and its adjoint, with the tap rows computed
/// once.
#[derive(Debug)]
pub(crate) struct Unfold {
    plane: usize,
    taps: usize,
    stride_w: usize,
    rows: Vec<TapRow>,
    /// Output positions of each tap that read the padding, as `(tap, positions)`: im2col writes
    /// zeros there and copies everywhere else, so its matrix needs no clearing beforehand.
    gaps: Vec<(usize, Range<usize>)>,
}

impl Unfold {
    /// The unfolding of `[cin, h, w]` samples for convolution `g` with output `[oh, ow]`.
    pub fn new(g: &ConvGeom, hw: [usize; 2], out_hw: [usize; 2]) -> Self {
        let rows = g.window().tap_rows(hw, out_hw);
        let howo = out_hw[0] * out_hw[1];
        let mut gaps = Vec::new();
        for tap in 0..g.k[0] * g.k[1] {
            // Rows of one tap come in increasing, disjoint position order.
            let mut next = 0;
            for r in rows.iter().filter(|r| r.tap == tap) {
                if r.outs.start > next {
                    gaps.push((tap, next..r.outs.start));
                }
                next = r.outs.end;
            }
            if next < howo {
                gaps.push((tap, next..howo));
            }
        }
        Unfold {
            plane: hw[0] * hw[1],
            taps: g.k[0] * g.k[1],
            stride_w: g.stride[1],
            rows,
            gaps,
        }
    }

    /// Unfolds one sample `[cin, h, w]` into the first `oh · ow` columns of `cols`, a matrix
    /// `[cin · kh · kw, ld]` (row stride `ld`): row `(c · kh + i) · kw + j` holds the input under
    /// kernel tap `(i, j)` of channel `c` for every output position (zero where the tap falls
    /// into the padding). Rows are ordered as the weight's `[cin/groups, kh, kw]` axes, so group
    /// `g` owns a contiguous block of rows. Several samples side by side (`cols` offset by
    /// `s · oh · ow`, `ld = samples · oh · ow`) make one wide matrix, so that one matrix product
    /// serves them all.
    pub fn im2col(&self, x: &[f32], cols: &mut [f32], ld: usize) {
        let sw = self.stride_w;
        for (c, x) in x.chunks_exact(self.plane).enumerate() {
            let rows = &mut cols[c * self.taps * ld..];
            for (tap, gap) in &self.gaps {
                rows[tap * ld..][gap.clone()].fill(0.0);
            }
            for r in &self.rows {
                let dst = &mut rows[r.tap * ld..][r.outs.clone()];
                if sw == 1 {
                    dst.copy_from_slice(&x[r.start..r.start + dst.len()]);
                } else {
                    for (t, d) in dst.iter_mut().enumerate() {
                        *d = x[r.start + t * sw];
                    }
                }
            }
        }
    }

    /// The adjoint of [`im2col`](Self::im2col): adds every entry of the first `oh · ow` columns
    /// of `cols` (row stride `ld`) onto the input position of `x` `[cin, h, w]` it was read from
    /// (entries in the padding are dropped).
    pub fn col2im(&self, cols: &[f32], ld: usize, x: &mut [f32]) {
        let sw = self.stride_w;
        for (c, x) in x.chunks_exact_mut(self.plane).enumerate() {
            let rows = &cols[c * self.taps * ld..];
            for r in &self.rows {
                let src = &rows[r.tap * ld..][r.outs.clone()];
                if sw == 1 {
                    for (d, &v) in x[r.start..r.start + src.len()].iter_mut().zip(src) {
                        *d += v;
                    }
                } else {
                    for (t, &v) in src.iter().enumerate() {
                        x[r.start + t * sw] += v;
                    }
                }
            }
        }
    }
}

/// Whether a convolution reads its input as is (1×1 kernel, stride 1, no padding): then one
/// sample's input already is its own im2col matrix.
pub(crate) fn is_pointwise(g: &ConvGeom) -> bool {
    g.k == [1, 1] && g.stride == [1, 1] && g.pad == [0, 0]
}

/// Output columns one matrix product of a convolution should cover.
const CONV_COLUMNS: usize = 512;

/// Samples whose im2col matrices are laid side by side for one matrix product: about
/// [`CONV_COLUMNS`] columns, at most an eighth of the batch so that tasks remain for the threads.
/// From the shapes alone, so that results never depend on the number of threads.
pub(crate) fn conv_block(batch: usize, howo: usize) -> usize {
    (CONV_COLUMNS / howo.max(1)).clamp(1, batch.div_ceil(8).max(1))
}

/// Convolution of `x` `[batch, cin, h, w]` with `w` `[cout, cin/groups, kh, kw]` into
/// `[batch, cout, oh, ow]`: blocks of [`conv_block`] samples are unfolded side by side and
/// multiplied by each group's weights at once.
pub(crate) fn conv(
    g: &ConvGeom,
    x: &[f32],
    hw: [usize; 2],
    out_hw: [usize; 2],
    w: &[f32],
    b: Option<&[f32]>,
) -> Vec<f32> {
    let howo = out_hw[0] * out_hw[1];
    let kk = g.fan_in();
    let cout_g = g.cout / g.groups;
    let (in_len, out_len) = (g.cin * hw[0] * hw[1], g.cout * howo);
    let batch = x.len() / in_len;
    let block = conv_block(batch, howo);
    let cols_len = g.groups * kk * block * howo;
    let unfold = Unfold::new(g, hw, out_hw);
    let mut out = reused(batch * out_len);
    for_each_chunk(
        &mut out,
        block * out_len,
        x,
        block * in_len,
        cols_len + out_len * block,
        2 * g.cout * kk * howo * block,
        |_, scratch, y, xs| {
            let n = y.len() / out_len;
            let ld = n * howo;
            let (cols, yc) = scratch.split_at_mut(cols_len);
            let cols: &[f32] = if n == 1 && is_pointwise(g) {
                xs
            } else {
                for (s, xs) in xs.chunks_exact(in_len).enumerate() {
                    unfold.im2col(xs, &mut cols[s * howo..], ld);
                }
                cols
            };
            for gi in 0..g.groups {
                let wg = &w[gi * cout_g * kk..(gi + 1) * cout_g * kk];
                general_mat_mul(
                    1.0,
                    &view2(wg, cout_g, kk),
                    &view2(&cols[gi * kk * ld..(gi + 1) * kk * ld], kk, ld),
                    0.0,
                    &mut view2_mut(
                        &mut yc[gi * cout_g * ld..(gi + 1) * cout_g * ld],
                        cout_g,
                        ld,
                    ),
                );
            }
            // Columns back to samples: row c of `yc` holds channel c of every sample.
            for (s, ys) in y.chunks_exact_mut(out_len).enumerate() {
                for (c, run) in ys.chunks_exact_mut(howo).enumerate() {
                    let src = &yc[c * ld + s * howo..c * ld + (s + 1) * howo];
                    match b {
                        Some(b) => {
                            for (o, &v) in run.iter_mut().zip(src) {
                                *o = v + b[c];
                            }
                        }
                        None => run.copy_from_slice(src),
                    }
                }
            }
        },
    );
    out
}

/// Per-channel `y = x · scale + shift` over `[batch, channels, spatial]`.
pub(crate) fn channel_affine(x: &[f32], spatial: usize, scale: &[f32], shift: &[f32]) -> Vec<f32> {
    let channels = scale.len();
    let mut out = reused(x.len());
    for_each_chunk(
        &mut out,
        spatial,
        x,
        spatial,
        0,
        2 * spatial,
        |i, _, y, x| {
            let (a, b) = (scale[i % channels], shift[i % channels]);
            for (y, &v) in y.iter_mut().zip(x) {
                *y = v * a + b;
            }
        },
    );
    out
}

/// BatchNorm at inference as a per-channel affine map: `scale = γ / √(var + eps)`,
/// `shift = β - mean · scale` (computed in `f64`).
pub(crate) fn batch_norm_affine(
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
) -> (Vec<f32>, Vec<f32>) {
    gamma
        .iter()
        .zip(beta)
        .zip(mean.iter().zip(var))
        .map(|((&g, &b), (&m, &v))| {
            let scale = f64::from(g) / (f64::from(v) + eps).sqrt();
            (scale as f32, (f64::from(b) - f64::from(m) * scale) as f32)
        })
        .unzip()
}

/// Mean and `1 / √(var + eps)` of one row (biased variance), in `f64`.
pub(crate) fn row_stats(x: &[f32], eps: f64) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Layer normalisation over the last `d` elements of each row; statistics in `f64`.
pub(crate) fn layer_norm(
    x: &[f32],
    d: usize,
    eps: f64,
    affine: Option<(&[f32], &[f32])>,
) -> Vec<f32> {
    let mut out = reused(x.len());
    for_each_chunk(&mut out, d, x, d, 0, 7 * d, |_, _, y, x| {
        let (mean, inv) = row_stats(x, eps);
        for (k, (y, &v)) in y.iter_mut().zip(x).enumerate() {
            let z = ((f64::from(v) - mean) * inv) as f32;
            *y = match affine {
                Some((w, b)) => z * w[k] + b[k],
                None => z,
            };
        }
    });
    out
}

/// Per-channel mean and biased variance of `x` `[batch, channels, spatial]` over the batch and
/// spatial axes, in `f64` (two passes, so that a large mean does not swamp the variance).
pub(crate) fn channel_stats(x: &[f32], channels: usize, spatial: usize) -> Vec<(f64, f64)> {
    let count = (x.len() / channels) as f64;
    let runs = |c: usize| {
        x.chunks_exact(spatial)
            .skip(c)
            .step_by(channels)
            .flat_map(|run| run.iter().map(|&v| f64::from(v)))
    };
    map_indices(channels, 3 * x.len() / channels, |c| {
        let mean = runs(c).sum::<f64>() / count;
        let var = runs(c).map(|v| (v - mean).powi(2)).sum::<f64>() / count;
        (mean, var)
    })
}

/// Inverted dropout's multipliers for `len` elements: `0` with probability `p`, else `1 / (1 -
/// p)`, drawn from a xoshiro256++ stream seeded with `seed`.
pub(crate) fn dropout_mask(len: usize, p: f64, seed: u64) -> Vec<f32> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let scale = (1.0 / (1.0 - p)) as f32;
    (0..len)
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
        .collect()
}

/// Element-wise product of equally long slices.
pub(crate) fn mul(a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut out = reused(a.len());
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a * b;
    }
    out
}

/// Softmax along the middle axis of `x` seen as `[outer, len, inner]`.
pub(crate) fn softmax(x: &[f32], len: usize, inner: usize) -> Vec<f32> {
    let mut out = reused(x.len());
    let block = len * inner;
    for_each_chunk(&mut out, block, x, block, 0, 4 * block, |_, _, y, x| {
        for j in 0..inner {
            let lane = || (0..len).map(|k| k * inner + j);
            let max = lane().map(|k| x[k]).fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for k in lane() {
                let e = (x[k] - max).exp();
                y[k] = e;
                sum += e;
            }
            for k in lane() {
                y[k] /= sum;
            }
        }
    });
    out
}

/// Sentinel of an argmax that no tap has set yet.
const NO_TAP: u32 = u32::MAX;

/// Max or average pooling of `x` `[batch · channels, h, w]` planes into `[.., oh, ow]`.
pub(crate) fn pool(g: &PoolGeom, x: &[f32], hw: [usize; 2], out_hw: [usize; 2]) -> Vec<f32> {
    let Some(count_include_pad) = g.avg else {
        // NaN wins, as in PyTorch: once the maximum is NaN no comparison replaces it.
        // Non-short-circuit `|` so that the choice is a select, not a mispredicted branch.
        return fold_windows(g, x, hw, out_hw, f32::NEG_INFINITY, |m, v| {
            if (v > m) | v.is_nan() { v } else { m }
        });
    };
    let mut sums = fold_windows(g, x, hw, out_hw, 0.0, |s, v| s + v);
    let divisors = avg_divisors(g, hw, out_hw, count_include_pad);
    for plane in sums.chunks_exact_mut(divisors.len()) {
        for (s, &d) in plane.iter_mut().zip(&divisors) {
            *s /= d;
        }
    }
    sums
}

/// Max pooling that also returns, for every output, the in-plane index `ih · w + iw` of the tap
/// it took (where the backward pass sends its gradient): the first maximum in window order,
/// as PyTorch's CPU kernel picks it, or the first NaN of a window holding one. Planes must have
/// fewer than `u32::MAX` elements.
pub(crate) fn max_pool_argmax(
    g: &PoolGeom,
    x: &[f32],
    hw: [usize; 2],
    out_hw: [usize; 2],
) -> (Vec<f32>, Vec<u32>) {
    let y = pool(g, x, hw, out_hw);
    let (plane, out_plane) = (hw[0] * hw[1], out_hw[0] * out_hw[1]);
    let sw = g.stride[1];
    let mut argmax = reused(y.len());
    argmax.fill(NO_TAP);
    let work = out_plane * g.k[0] * g.k[1];
    let rows = g.window().tap_rows(hw, out_hw);
    for_each_chunk(&mut argmax, out_plane, x, plane, 0, work, |i, _, arg, x| {
        let y = &y[i * out_plane..(i + 1) * out_plane];
        for r in &rows {
            let (arg, y) = (&mut arg[r.outs.clone()], &y[r.outs.clone()]);
            for (t, (a, &m)) in arg.iter_mut().zip(y).enumerate() {
                let tap = r.start + t * sw;
                let v = x[tap];
                // Non-short-circuit operators and a select: which tap wins is data-dependent,
                // and branching on it mispredicts half the time.
                let hit = (*a == NO_TAP) & ((v == m) | (v.is_nan() & m.is_nan()));
                *a = if hit { tap as u32 } else { *a };
            }
        }
    });
    (y, argmax)
}

/// The divisor of each output position of an average-pooling plane `[oh, ow]`: the kernel size
/// when padded zeros count (without ceil mode and with padding at most half the kernel, every
/// window lies inside the padded input, so that is PyTorch's divisor), else the number of taps
/// that fall inside the input.
pub(crate) fn avg_divisors(
    g: &PoolGeom,
    hw: [usize; 2],
    out_hw: [usize; 2],
    count_include_pad: bool,
) -> Vec<f32> {
    if count_include_pad {
        return vec![(g.k[0] * g.k[1]) as f32; out_hw[0] * out_hw[1]];
    }
    let counts = |a: usize| -> Vec<f32> {
        (0..out_hw[a])
            .map(|o| {
                let start = (o * g.stride[a]) as isize - g.pad[a] as isize;
                let end = (start + g.k[a] as isize).min(hw[a] as isize);
                (end - start.max(0)) as f32
            })
            .collect()
    };
    let (rows, cols) = (counts(0), counts(1));
    rows.iter()
        .flat_map(|&r| cols.iter().map(move |&c| r * c))
        .collect()
}

/// Folds every pooling window of `x` `[planes, h, w]` with `step`, starting from `init`; taps in
/// the padding are skipped. Loops run tap by tap over whole output rows (as im2col does), so
/// that the inner loop is a plain strided pass the compiler can vectorise.
fn fold_windows(
    g: &PoolGeom,
    x: &[f32],
    [h, w]: [usize; 2],
    [oh, ow]: [usize; 2],
    init: f32,
    step: impl Fn(f32, f32) -> f32 + Send + Sync,
) -> Vec<f32> {
    let mut out = reused(x.len() / (h * w) * oh * ow);
    out.fill(init);
    let sw = g.stride[1];
    let work = oh * ow * g.k[0] * g.k[1];
    let rows = g.window().tap_rows([h, w], [oh, ow]);
    for_each_chunk(&mut out, oh * ow, x, h * w, 0, work, |_, _, y, x| {
        for r in &rows {
            for (t, acc) in y[r.outs.clone()].iter_mut().enumerate() {
                *acc = step(*acc, x[r.start + t * sw]);
            }
        }
    });
    out
}

/// Mean of each run of `spatial` elements.
pub(crate) fn mean_runs(x: &[f32], spatial: usize) -> Vec<f32> {
    let mut out = reused(x.len() / spatial);
    for_each_chunk(&mut out, 1, x, spatial, 0, spatial, |_, _, y, x| {
        y[0] = x.iter().sum::<f32>() / spatial as f32;
    });
    out
}

/// Element-wise sum of equally long slices.
pub(crate) fn add(xs: &[&[f32]]) -> Vec<f32> {
    let mut out = copied(xs[0]);
    for x in &xs[1..] {
        for (o, &v) in out.iter_mut().zip(*x) {
            *o += v;
        }
    }
    out
}

/// Exact GELU `x · Φ(x)`, written as `x/2 · erfc(-x/√2)` so that large negative inputs keep their
/// relative accuracy (`1 + erf` would cancel).
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * libm::erfcf(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// Logistic function.
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::layer::window_count;
    use proptest::prelude::*;

    /// Deterministic values in [-1, 1) from a seed (a 64-bit LCG), for property tests.
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Convolution straight from its definition, one output at a time.
    fn direct_conv(
        g: &ConvGeom,
        x: &[f32],
        [h, w]: [usize; 2],
        [oh, ow]: [usize; 2],
        wt: &[f32],
        b: Option<&[f32]>,
    ) -> Vec<f32> {
        let (cin_g, cout_g) = (g.cin / g.groups, g.cout / g.groups);
        let [kh, kw] = g.k;
        let batch = x.len() / (g.cin * h * w);
        let mut y = Vec::new();
        for n in 0..batch {
            for co in 0..g.cout {
                for o_h in 0..oh {
                    for o_w in 0..ow {
                        let mut acc = b.map_or(0.0, |b| f64::from(b[co]));
                        for ci in 0..cin_g {
                            let c = co / cout_g * cin_g + ci;
                            for i in 0..kh {
                                for j in 0..kw {
                                    let ih = (o_h * g.stride[0] + i * g.dil[0]) as isize
                                        - g.pad[0] as isize;
                                    let iw = (o_w * g.stride[1] + j * g.dil[1]) as isize
                                        - g.pad[1] as isize;
                                    if ih < 0 || iw < 0 || ih >= h as isize || iw >= w as isize {
                                        continue;
                                    }
                                    let xv =
                                        x[((n * g.cin + c) * h + ih as usize) * w + iw as usize];
                                    let wv = wt[((co * cin_g + ci) * kh + i) * kw + j];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        y.push(acc as f32);
                    }
                }
            }
        }
        y
    }

    /// Pooling straight from PyTorch's definition.
    fn direct_pool(g: &PoolGeom, x: &[f32], [h, w]: [usize; 2], [oh, ow]: [usize; 2]) -> Vec<f32> {
        let mut y = Vec::new();
        for plane in x.chunks(h * w) {
            for o_h in 0..oh {
                for o_w in 0..ow {
                    let (mut max, mut sum, mut taps, mut padded) = (f32::NEG_INFINITY, 0.0, 0, 0);
                    for i in 0..g.k[0] {
                        for j in 0..g.k[1] {
                            let ih = (o_h * g.stride[0] + i) as isize - g.pad[0] as isize;
                            let iw = (o_w * g.stride[1] + j) as isize - g.pad[1] as isize;
                            let in_padded =
                                ih < (h + g.pad[0]) as isize && iw < (w + g.pad[1]) as isize;
                            padded += usize::from(in_padded);
                            if ih >= 0 && iw >= 0 && ih < h as isize && iw < w as isize {
                                let v = plane[ih as usize * w + iw as usize];
                                max = max.max(v);
                                sum += v;
                                taps += 1;
                            }
                        }
                    }
                    y.push(match g.avg {
                        None => max,
                        Some(true) => sum / padded as f32,
                        Some(false) => sum / taps as f32,
                    });
                }
            }
        }
        y
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn conv_matches_its_definition(
            cin_g in 1usize..4, cout_g in 1usize..4, groups in 1usize..4,
            k in (1usize..4, 1usize..5), stride in (1usize..3, 1usize..4),
            pad in (0usize..3, 0usize..4), dil in (1usize..3, 1usize..3),
            hw in (1usize..7, 1usize..12), batch in 0usize..3, bias: bool, seed: u64,
        ) {
            let g = ConvGeom {
                cin: cin_g * groups, cout: cout_g * groups, groups,
                k: [k.0, k.1], stride: [stride.0, stride.1], pad: [pad.0, pad.1],
                dil: [dil.0, dil.1], bias,
            };
            let Ok(out_hw) = g.out_hw([hw.0, hw.1]) else { return Ok(()) };
            let x = values(seed, batch * g.cin * hw.0 * hw.1);
            let w = values(seed ^ 1, g.cout * g.fan_in());
            let b = values(seed ^ 2, g.cout);
            let b = bias.then_some(b.as_slice());
            let got = conv(&g, &x, [hw.0, hw.1], out_hw, &w, b);
            let want = direct_conv(&g, &x, [hw.0, hw.1], out_hw, &w, b);
            prop_assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                prop_assert!((a - b).abs() <= 1e-5, "{} vs {}", a, b);
            }
        }

        #[test]
        fn im2col_writes_every_entry_and_col2im_is_its_adjoint(
            cin in 1usize..3, k in (1usize..4, 1usize..4), stride in (1usize..3, 1usize..3),
            pad in (0usize..3, 0usize..3), dil in (1usize..3, 1usize..3),
            hw in (1usize..6, 1usize..7), seed: u64,
        ) {
            let g = ConvGeom {
                cin, cout: 1, groups: 1, k: [k.0, k.1], stride: [stride.0, stride.1],
                pad: [pad.0, pad.1], dil: [dil.0, dil.1], bias: false,
            };
            let Ok(out_hw) = g.out_hw([hw.0, hw.1]) else { return Ok(()) };
            let howo = out_hw[0] * out_hw[1];
            let (rows, ld) = (cin * k.0 * k.1, howo + 3);
            let x = values(seed, cin * hw.0 * hw.1);
            let unfold = Unfold::new(&g, [hw.0, hw.1], out_hw);
            // A dirty buffer: every entry of the sample's columns must be written.
            let mut cols = vec![f32::NAN; rows * ld];
            unfold.im2col(&x, &mut cols, ld);
            for r in 0..rows {
                let (c, i, j) = (r / (k.0 * k.1), (r / k.1) % k.0, r % k.1);
                for o in 0..howo {
                    let ih = ((o / out_hw[1]) * stride.0 + i * dil.0) as isize - pad.0 as isize;
                    let iw = ((o % out_hw[1]) * stride.1 + j * dil.1) as isize - pad.1 as isize;
                    let inside = ih >= 0 && iw >= 0 && ih < hw.0 as isize && iw < hw.1 as isize;
                    let want = if inside {
                        x[(c * hw.0 + ih as usize) * hw.1 + iw as usize]
                    } else {
                        0.0
                    };
                    prop_assert_eq!(cols[r * ld + o], want);
                }
                prop_assert!(cols[r * ld + howo..(r + 1) * ld].iter().all(|v| v.is_nan()));
            }
            // Adjoint: <im2col(x), c> = <x, col2im(c)> for any c.
            let c = values(seed ^ 5, rows * ld);
            let mut back = vec![0.0; x.len()];
            unfold.col2im(&c, ld, &mut back);
            let lhs: f64 = (0..rows)
                .flat_map(|r| (0..howo).map(move |o| r * ld + o))
                .map(|i| f64::from(cols[i]) * f64::from(c[i]))
                .sum();
            let rhs: f64 = x.iter().zip(&back).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            prop_assert!((lhs - rhs).abs() <= 1e-4 * (1.0 + lhs.abs()), "{} vs {}", lhs, rhs);
        }

        #[test]
        fn pool_matches_its_definition(
            k in (1usize..4, 1usize..5), stride in (1usize..3, 1usize..4),
            pad in (0usize..3, 0usize..3), hw in (1usize..7, 1usize..12),
            planes in 1usize..4, avg in proptest::option::of(any::<bool>()), seed: u64,
        ) {
            let g = PoolGeom { k: [k.0, k.1], stride: [stride.0, stride.1], pad: [pad.0, pad.1], avg };
            prop_assume!(pad.0 <= k.0 / 2 && pad.1 <= k.1 / 2);
            let (Some(oh), Some(ow)) = (
                window_count(hw.0, k.0, stride.0, pad.0, 1),
                window_count(hw.1, k.1, stride.1, pad.1, 1),
            ) else { return Ok(()) };
            let x = values(seed, planes * hw.0 * hw.1);
            let got = pool(&g, &x, [hw.0, hw.1], [oh, ow]);
            let want = direct_pool(&g, &x, [hw.0, hw.1], [oh, ow]);
            prop_assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                prop_assert!((a - b).abs() <= 1e-6, "{} vs {}", a, b);
            }
        }
    }

    #[test]
    fn valid_range_matches_brute_force() {
        for n_out in 0..6 {
            for s in 1..4 {
                for off in -5isize..6 {
                    for n_in in 0..7 {
                        let want: Vec<usize> = (0..n_out)
                            .filter(|&o| {
                                let p = (o * s) as isize + off;
                                p >= 0 && p < n_in as isize
                            })
                            .collect();
                        let (lo, hi) = valid_range(n_out, s, off, n_in);
                        assert_eq!(
                            (lo..hi).collect::<Vec<_>>(),
                            want,
                            "{n_out} {s} {off} {n_in}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn im2col_by_hand() {
        // One channel of length 4, kernel 2, padding 1, stride 2: windows start at -1, 1, 3.
        let g = ConvGeom {
            cin: 1,
            cout: 1,
            groups: 1,
            k: [1, 2],
            stride: [1, 2],
            pad: [0, 1],
            dil: [1, 1],
            bias: false,
        };
        let mut cols = vec![f32::NAN; 6];
        Unfold::new(&g, [1, 4], [1, 3]).im2col(&[1.0, 2.0, 3.0, 4.0], &mut cols, 3);
        assert_eq!(cols, [0.0, 2.0, 4.0, 1.0, 3.0, 0.0]);
    }

    #[test]
    fn conv_by_hand() {
        // Two samples, one channel, kernel [1, -1] with bias 0.5: differences plus 0.5.
        let g = ConvGeom {
            cin: 1,
            cout: 1,
            groups: 1,
            k: [1, 2],
            stride: [1, 1],
            pad: [0, 0],
            dil: [1, 1],
            bias: true,
        };
        let x = [1.0, 4.0, 9.0, 0.0, 1.0, 3.0];
        let y = conv(&g, &x, [1, 3], [1, 2], &[1.0, -1.0], Some(&[0.5]));
        assert_eq!(y, [-2.5, -4.5, -0.5, -1.5]);
    }

    #[test]
    fn pools_by_hand() {
        let avg = |include| PoolGeom {
            k: [1, 3],
            stride: [1, 2],
            pad: [0, 1],
            avg: Some(include),
        };
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        // Windows over positions [-1, 1], [1, 3], [3, 5]: the first and last hold one pad.
        assert_eq!(pool(&avg(true), &x, [1, 5], [1, 3]), [1.0, 3.0, 3.0]);
        assert_eq!(pool(&avg(false), &x, [1, 5], [1, 3]), [1.5, 3.0, 4.5]);
        let max = PoolGeom {
            avg: None,
            ..avg(true)
        };
        let x = [-1.0, -2.0, f32::NAN, -4.0, -5.0];
        let y = pool(&max, &x, [1, 5], [1, 3]);
        assert_eq!(y[0], -1.0);
        assert!(y[1].is_nan());
        assert_eq!(y[2], -4.0);
    }

    #[test]
    fn softmax_lanes_sum_to_one() {
        // [outer 1, len 2, inner 3]: softmax over pairs (x[j], x[3 + j]).
        let y = softmax(&[0.0, 1.0, 1000.0, 0.0, 3.0, 1000.0], 2, 3);
        assert_eq!(y[0], 0.5);
        assert_eq!(y[2], 0.5);
        assert!((y[1] - 1.0 / (1.0 + 2f32.exp())).abs() < 1e-7);
    }

    #[test]
    fn gelu_keeps_relative_accuracy_in_the_tail() {
        // x Φ(x) at x = -6: Φ(-6) = 9.865876450377e-10.
        let want = -6.0 * 9.865_876_450_377e-10;
        assert!(((gelu(-6.0) as f64 - want) / want).abs() < 1e-5);
        assert_eq!(gelu(0.0), 0.0);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
    }

    #[test]
    fn linear_splits_rows_consistently() {
        // 130 rows spill over two full row blocks into a third, shorter one.
        let rows = 2 * LINEAR_ROWS + 2;
        let x: Vec<f32> = (0..rows * 3).map(|v| v as f32).collect();
        let w = [1.0, 0.0, 0.0, 0.0, 1.0, -1.0];
        let y = linear(&x, 3, &w, 2, Some(&[10.0, 20.0]));
        for r in 0..rows {
            assert_eq!(y[2 * r], x[3 * r] + 10.0);
            assert_eq!(y[2 * r + 1], x[3 * r + 1] - x[3 * r + 2] + 20.0);
        }
    }
}
