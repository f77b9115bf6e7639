//! N:M semi-structured selection: keep `n` of every `m` consecutive weights along the input
//! channels (axis 1) of a PyTorch-layout weight, at every output channel and kernel position
//! (pruning-semantics.md §5.3; the grouping of TF-MOT and SparseML for convolutions).

use super::keys::{KeyGen, Src, any_non_finite, non_finite_error, with_keys};
use super::{Source, par};
use crate::error::{Error, Result};

/// See [`super::prune_n_m`].
pub(crate) fn prune_n_m(
    source: &Source<'_>,
    shape: &[usize],
    n: usize,
    m: usize,
) -> Result<Vec<bool>> {
    if n == 0 || n > m {
        return Err(Error::InvalidNm { n, m });
    }
    let src = Src::new(source)?;
    if shape.len() < 2 {
        return Err(Error::invalid(
            "shape",
            format!(
                "N:M needs a weight of 2 or more dimensions, `{}` has shape {shape:?}",
                src.name
            ),
        ));
    }
    let len = src.len();
    if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(len) {
        return Err(Error::ShapeMismatch {
            name: src.name.to_string(),
            expected: shape.to_vec(),
            got: vec![len],
        });
    }
    let mut out = vec![false; len];
    if len == 0 {
        return Ok(out);
    }
    let (cin, inner) = (shape[1], shape[2..].iter().product::<usize>());
    let row = cin * inner;
    par::groups(&mut out, row, |scratch, o, out| {
        keep_n_of_m(
            &src.slice(o * row..(o + 1) * row),
            out,
            cin,
            inner,
            n,
            m,
            scratch,
        )
    })?;
    Ok(out)
}

/// One output channel `s` of `[cin, inner]` elements: `out` starts as the candidates, then in
/// every group all but the `n` highest candidates (by key, then index) are pruned.
fn keep_n_of_m(
    s: &Src<'_>,
    out: &mut [bool],
    cin: usize,
    inner: usize,
    n: usize,
    m: usize,
    pairs: &mut Vec<u64>,
) -> Result<()> {
    match s.kept {
        Some(f) => out.copy_from_slice(f),
        None => out.fill(true),
    }
    if any_non_finite(s, 0..s.len()) {
        return Err(non_finite_error(&[*s]));
    }
    with_keys!(s, k => prune_groups(k, out, cin, inner, n, m, pairs));
    Ok(())
}

/// Prunes all but the `n` best candidates (those still set in `out`) of every group.
fn prune_groups<K: KeyGen>(
    keys: K,
    out: &mut [bool],
    cin: usize,
    inner: usize,
    n: usize,
    m: usize,
    pairs: &mut Vec<u64>,
) {
    for g0 in (0..cin).step_by(m) {
        let len = m.min(cin - g0);
        if len <= n {
            continue;
        }
        for p in 0..inner {
            let at = |i: usize| (g0 + i) * inner + p;
            // (key, index) pairs, biased so that unsigned order is key order, then index order.
            pairs.clear();
            pairs.extend(
                (0..len)
                    .filter(|&i| out[at(i)])
                    .map(|i| ((keys.key(at(i)) as u32 ^ 0x8000_0000) as u64) << 32 | i as u64),
            );
            let prune = pairs.len().saturating_sub(n);
            if prune > 0 {
                pairs.select_nth_unstable(prune - 1);
                for &pair in &pairs[..prune] {
                    out[at(pair as u32 as usize)] = false;
                }
            }
        }
    }
}
