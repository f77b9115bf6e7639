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
    let mut out = vec![0.0f32; dim];
    // Channels per task: each task owns whole channels, so every channel is summed in the same
    // order whatever the number of threads.
    let width = (TASK / (outer * inner).max(1)).clamp(1, dim.max(1));
    let max = par::chunks_max(&mut out, width, |j0, out| {
        let mut acc = vec![0.0f64; out.len()];
        let mut max = 0u32;
        for a in 0..outer {
            let start = (a * dim + j0) * inner;
            let range = start..start + out.len() * inner;
            let xs = &values[range.clone()];
            let ks = kept.map(|k| &k[range]);
            max = max.max(max_abs_bits(xs));
            if inner == 1 {
                // One element per channel: accumulate across channels, which vectorises.
                for (j, (acc, &x)) in acc.iter_mut().zip(xs).enumerate() {
                    let x = if ks.is_none_or(|k| k[j]) { x } else { 0.0 };
                    *acc = norm.step(*acc, x as f64);
                }
            } else {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let sub = j * inner..(j + 1) * inner;
                    let part = norm.reduce(&xs[sub.clone()], ks.map(|k| &k[sub]));
                    *acc = norm.combine(*acc, part);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = norm.finish(a) as f32;
        }
        max
    });
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

/// The largest `|x|` bit pattern of `xs`.
fn max_abs_bits(xs: &[f32]) -> u32 {
    xs.iter().fold(0, |m, x| m.max(x.to_bits() & 0x7FFF_FFFF))
}

impl Norm {
    /// Adds one element to an accumulator.
    #[inline(always)]
    fn step(self, acc: f64, x: f64) -> f64 {
        match self {
            Norm::L1 => acc + x.abs(),
            Norm::L2 => acc + x * x,
            Norm::Inf => {
                let a = x.abs();
                if a > acc { a } else { acc }
            }
        }
    }

    /// Merges two accumulators.
    #[inline(always)]
    fn combine(self, a: f64, b: f64) -> f64 {
        match self {
            Norm::L1 | Norm::L2 => a + b,
            Norm::Inf => a.max(b),
        }
    }

    /// The accumulator of a slice, over eight lanes in a fixed order (so that it vectorises and
    /// still gives the same bits every time).
    fn reduce(self, xs: &[f32], kept: Option<&[bool]>) -> f64 {
        let mut lanes = [0.0f64; 8];
        let value = |i: usize| if kept.is_none_or(|k| k[i]) { xs[i] } else { 0.0 } as f64;
        let whole = xs.len() / 8 * 8;
        for c in (0..whole).step_by(8) {
            for (l, lane) in lanes.iter_mut().enumerate() {
                *lane = self.step(*lane, value(c + l));
            }
        }
        for (l, i) in (whole..xs.len()).enumerate() {
            lanes[l] = self.step(lanes[l], value(i));
        }
        lanes.into_iter().fold(0.0, |a, b| self.combine(a, b))
    }

    /// The norm from its accumulator.
    #[inline(always)]
    fn finish(self, acc: f64) -> f64 {
        match self {
            Norm::L2 => acc.sqrt(),
            Norm::L1 | Norm::Inf => acc,
        }
    }
}
