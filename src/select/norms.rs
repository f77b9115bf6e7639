//! Channel norms: the L1, L2 or L-inf norm of every slice along one axis of a row-major tensor,
//! with pruned elements counting as zero (PyTorch's `ln_structured` scores the masked weight,
//! pruning-semantics.md §2.3).

use super::{Norm, par};
use crate::error::{Error, Result};

/// Elements one parallel task reads, about (few in unit tests, so that they split).
const TASK: usize = if cfg!(test) { 16 } else { 1 << 15 };

/// See [`super::channel_norms`].
pub(crate) fn channel_norms(
    name: &str,
    values: &[f32],
    shape: &[usize],
    axis: usize,
    norm: Norm,
    kept: Option<&[bool]>,
) -> Result<Vec<f32>> {
    if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(values.len()) {
        return Err(Error::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            got: vec![values.len()],
        });
    }
    if let Some(k) = kept
        && k.len() != values.len()
    {
        return Err(Error::ShapeMismatch {
            name: format!("{name} (keep-flags)"),
            expected: shape.to_vec(),
            got: vec![k.len()],
        });
    }
    if axis >= shape.len() {
        return Err(Error::invalid(
            "axis",
            format!("axis {axis} is out of range for `{name}` of shape {shape:?}"),
        ));
    }
    let outer: usize = shape[..axis].iter().product();
    let dim = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let geometry = Geometry { outer, dim, inner };
    let mut out = vec![0.0f32; dim];
    let max = match (norm, kept) {
        (Norm::L1, None) => geometry.run::<L1, false>(values, &[], &mut out),
        (Norm::L1, Some(k)) => geometry.run::<L1, true>(values, k, &mut out),
        (Norm::L2, None) => geometry.run::<L2, false>(values, &[], &mut out),
        (Norm::L2, Some(k)) => geometry.run::<L2, true>(values, k, &mut out),
        (Norm::Inf, None) => geometry.run::<Inf, false>(values, &[], &mut out),
        (Norm::Inf, Some(k)) => geometry.run::<Inf, true>(values, k, &mut out),
    };
    if max > 0x7F7F_FFFF {
        let index = values
            .iter()
            .position(|x| !x.is_finite())
            .expect("seen above");
        return Err(Error::NonFinite {
            tensor: name.to_string(),
            index,
            value: values[index],
        });
    }
    Ok(out)
}

/// A row-major tensor seen as `[outer, dim, inner]`, with channels along `dim`.
struct Geometry {
    outer: usize,
    dim: usize,
    inner: usize,
}

impl Geometry {
    /// Writes the norm of every channel into `out` and returns the largest `|x|` bit pattern.
    /// `kept` is read only when `MASKED`.
    fn run<N: Accumulate, const MASKED: bool>(
        &self,
        values: &[f32],
        kept: &[bool],
        out: &mut [f32],
    ) -> u32 {
        let Geometry { outer, dim, inner } = *self;
        // Channels per task: whole channels, so that every channel is summed in the same order
        // whatever the number of threads; at least 256 when a channel is one element per row,
        // so that tasks read long contiguous runs.
        let per_channel = (outer * inner).max(1);
        let least = match inner {
            1 if cfg!(test) => 2,
            1 => 256,
            _ => 1,
        };
        let width = (TASK / per_channel).max(least).clamp(1, dim.max(1));
        par::chunks_max(out, width, |j0, out| {
            let mut acc = vec![0.0f64; out.len()];
            let mut max = 0u32;
            for a in 0..outer {
                let start = (a * dim + j0) * inner;
                let range = start..start + out.len() * inner;
                let xs = &values[range.clone()];
                max = max.max(max_abs_bits(xs));
                let ks = if MASKED { &kept[range] } else { &[][..] };
                let value = |i: usize| if !MASKED || ks[i] { xs[i] as f64 } else { 0.0 };
                if inner == 1 {
                    // One element per channel and row: accumulate across channels.
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = N::step(*acc, value(j));
                    }
                } else {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        *acc = N::combine(*acc, N::reduce(|i| value(j * inner + i), inner));
                    }
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = N::finish(a) as f32;
            }
            max
        })
    }
}

/// The largest `|x|` bit pattern of `xs`.
fn max_abs_bits(xs: &[f32]) -> u32 {
    xs.iter().fold(0, |m, x| m.max(x.to_bits() & 0x7FFF_FFFF))
}

/// How one norm accumulates, in `f64`.
trait Accumulate {
    /// Adds one element to an accumulator.
    fn step(acc: f64, x: f64) -> f64;
    /// Merges two accumulators.
    fn combine(a: f64, b: f64) -> f64;
    /// The norm from its accumulator.
    fn finish(acc: f64) -> f64;

    /// The accumulator of `len` values, over eight lanes in a fixed order (so that it
    /// vectorises and still gives the same bits every time).
    #[inline(always)]
    fn reduce(value: impl Fn(usize) -> f64, len: usize) -> f64 {
        let mut lanes = [0.0f64; 8];
        let whole = len / 8 * 8;
        for c in (0..whole).step_by(8) {
            for (l, lane) in lanes.iter_mut().enumerate() {
                *lane = Self::step(*lane, value(c + l));
            }
        }
        for (l, i) in (whole..len).enumerate() {
            lanes[l] = Self::step(lanes[l], value(i));
        }
        lanes.into_iter().fold(0.0, Self::combine)
    }
}

/// Sum of absolute values.
struct L1;
/// Square root of the sum of squares.
struct L2;
/// Largest absolute value.
struct Inf;

impl Accumulate for L1 {
    #[inline(always)]
    fn step(acc: f64, x: f64) -> f64 {
        acc + x.abs()
    }
    #[inline(always)]
    fn combine(a: f64, b: f64) -> f64 {
        a + b
    }
    fn finish(acc: f64) -> f64 {
        acc
    }
}

impl Accumulate for L2 {
    #[inline(always)]
    fn step(acc: f64, x: f64) -> f64 {
        acc + x * x
    }
    #[inline(always)]
    fn combine(a: f64, b: f64) -> f64 {
        a + b
    }
    fn finish(acc: f64) -> f64 {
        acc.sqrt()
    }
}

impl Accumulate for Inf {
    #[inline(always)]
    fn step(acc: f64, x: f64) -> f64 {
        let a = x.abs();
        if a > acc { a } else { acc }
    }
    #[inline(always)]
    fn combine(a: f64, b: f64) -> f64 {
        if b > a { b } else { a }
    }
    fn finish(acc: f64) -> f64 {
        acc
    }
}
