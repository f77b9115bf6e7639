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
            match len {
                2 => prune_fixed_group::<K, 2>(keys, out, at, n),
                4 => prune_fixed_group::<K, 4>(keys, out, at, n),
                8 => prune_fixed_group::<K, 8>(keys, out, at, n),
                16 => prune_fixed_group::<K, 16>(keys, out, at, n),
                ..=SMALL_GROUP => prune_small_group(keys, out, at, len, n),
                _ => prune_group(keys, out, at, len, n, pairs),
            }
        }
    }
}

/// Groups up to this long are ranked by counting, without sorting or selecting.
const SMALL_GROUP: usize = 16;

/// `(key, index)` of element `i` of a group, biased so that unsigned order is key order, then
/// index order.
#[inline(always)]
fn pair(key: i32, i: usize) -> u64 {
    ((key as u32 ^ 0x8000_0000) as u64) << 32 | i as u64
}

/// A group of the common lengths, fully unrolled and without branches per element: a candidate
/// is pruned when fewer than `candidates - n` candidates come after it, that is when its rank
/// (candidates before it in (key, index) order) is below `candidates - n`.
#[inline(always)]
fn prune_fixed_group<K: KeyGen, const M: usize>(
    keys: K,
    out: &mut [bool],
    at: impl Fn(usize) -> usize,
    n: usize,
) {
    let key: [i32; M] = std::array::from_fn(|i| keys.key(at(i)));
    let cand: [bool; M] = std::array::from_fn(|i| out[at(i)]);
    let candidates = cand.iter().filter(|&&c| c).count();
    if candidates <= n {
        return;
    }
    let prune = candidates - n;
    for i in 0..M {
        let mut rank = 0;
        for l in 0..M {
            // Before `i` in (key, index) order: a smaller key, or an equal one at a lower index.
            let before = if l < i {
                key[l] <= key[i]
            } else {
                key[l] < key[i]
            };
            rank += (cand[l] & before) as usize;
        }
        out[at(i)] = cand[i] & (rank >= prune);
    }
}

/// Any other group of at most [`SMALL_GROUP`]: the rank of each candidate is the number of smaller
/// candidates, and the `candidates - n` lowest ranks are pruned.
#[inline(always)]
fn prune_small_group<K: KeyGen>(
    keys: K,
    out: &mut [bool],
    at: impl Fn(usize) -> usize,
    len: usize,
    n: usize,
) {
    // Non-candidates sort above everything, so they never lower a candidate's rank.
    let mut pairs = [u64::MAX; SMALL_GROUP];
    let mut candidates = 0usize;
    for (i, p) in pairs[..len].iter_mut().enumerate() {
        if out[at(i)] {
            *p = pair(keys.key(at(i)), i);
            candidates += 1;
        }
    }
    let Some(prune) = candidates.checked_sub(n).filter(|&p| p > 0) else {
        return;
    };
    for (i, &p) in pairs[..len].iter().enumerate() {
        let rank = pairs[..len].iter().filter(|&&q| q < p).count();
        if p != u64::MAX && rank < prune {
            out[at(i)] = false;
        }
    }
}

/// A longer group: select the `candidates - n` smallest pairs.
fn prune_group<K: KeyGen>(
    keys: K,
    out: &mut [bool],
    at: impl Fn(usize) -> usize,
    len: usize,
    n: usize,
    pairs: &mut Vec<u64>,
) {
    pairs.clear();
    pairs.extend(
        (0..len)
            .filter(|&i| out[at(i)])
            .map(|i| pair(keys.key(at(i)), i)),
    );
    let prune = pairs.len().saturating_sub(n);
    if prune > 0 {
        pairs.select_nth_unstable(prune - 1);
        for &p in &pairs[..prune] {
            out[at(p as u32 as usize)] = false;
        }
    }
}
