//! The exact `k`-th key over many sources, without sorting and without copying the scores.
//!
//! Small inputs copy `(key, position)` pairs and call `select_nth_unstable`. Large inputs narrow a
//! key range with counting passes (rust-notes §9.3): each pass counts the candidates below the
//! range and histograms those inside it into at most 2^16 bins, which pins the bin holding rank
//! `k` and narrows the range to that bin, until the range is a single key. Started from the whole
//! `u32` range this is the two-pass 16-bit radix select. A deterministic sample first brackets the
//! answer (the idea of Floyd & Rivest, "Expected time bounds for selection", CACM 18(3), 1975), so
//! that the first pass scatters only the one or two percent of keys inside the bracket; a bracket
//! that misses costs one more pass, never a wrong answer.

use super::Cut;
use super::keys::{NON_FINITE_BITS, Src, non_finite_error, random_key};
use super::par;
use crate::error::{Error, Result};

/// Inputs up to this many elements are selected on a copy of their keys.
pub(crate) const SMALL: usize = 1 << 14;

/// Bits of the range histogram: 2^16 `u32` bins (256 KB) per part.
const BIN_BITS: u32 = 16;

/// Elements below which splitting a pass over threads does not pay (tiny in unit tests, so
/// that they split small inputs too).
const PART_MIN: usize = if cfg!(test) { 1 << 8 } else { 1 << 18 };

/// Upper bound on the sample that brackets the answer.
const SAMPLE_MAX: usize = 1 << 16;

/// Fixed state of the hash that places samples inside their strata.
const SAMPLE_STATE: u64 = 0x5EED_5A4D_1E5E_1EC7;

/// Which algorithm [`select`] uses; everything but `Auto` is for tests that pin a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Path {
    /// By size: copy below [`SMALL`], bracketed histogram above.
    Auto,
    /// Copy the keys and `select_nth_unstable`.
    Copy,
    /// Counting passes over the whole key range (plain two-pass radix select).
    #[cfg(test)]
    Radix,
    /// Counting passes inside a key range bracketed by a sample.
    Bracketed,
    /// Counting passes inside a given (possibly wrong) bracket.
    #[cfg(test)]
    Forced(u32, u32),
}

/// The cut that prunes exactly `k` candidates of `srcs` in (key, source, flat index) order, or
/// `None` for `k = 0`. `scope` names the comparison group in [`Error::CountTooLarge`]. Every score
/// is checked for finiteness, candidate or not.
pub(crate) fn select(
    srcs: &[Src<'_>],
    k: usize,
    scope: &dyn Fn() -> String,
    scratch: &mut Vec<u64>,
    path: Path,
) -> Result<Option<Cut>> {
    let total: usize = srcs.iter().map(Src::len).sum();
    let random = srcs.first().is_some_and(Src::is_random);
    let too_large = |available: usize| Error::CountTooLarge {
        requested: k,
        available,
        scope: scope(),
    };
    if k == 0 {
        return if max_abs(srcs) >= NON_FINITE_BITS {
            Err(non_finite_error(srcs))
        } else {
            Ok(None)
        };
    }
    let path = match path {
        Path::Auto if total <= SMALL => Path::Copy,
        Path::Auto => Path::Bracketed,
        p => p,
    };
    let (lo, hi) = match path {
        Path::Copy => return copy_select(srcs, k, scratch, random).map_err(|e| e.or(too_large)),
        #[cfg(test)]
        Path::Radix => (0, u32::MAX),
        Path::Auto | Path::Bracketed => bracket(srcs, total, k).unwrap_or((0, u32::MAX)),
        #[cfg(test)]
        Path::Forced(lo, hi) => (lo, hi),
    };
    narrow(srcs, total, k, lo, hi, random).map_err(|e| e.or(too_large))
}

/// A failure of a selection: an error, or too few candidates (the caller knows the scope).
enum Fail {
    Error(Error),
    TooFew(usize),
}

impl Fail {
    fn or(self, too_large: impl FnOnce(usize) -> Error) -> Error {
        match self {
            Fail::Error(e) => e,
            Fail::TooFew(n) => too_large(n),
        }
    }
}

/// Small inputs: `(key << 32 | position)` of every candidate, selected in place. Positions are
/// unique, so the pair order is the full tie order.
fn copy_select(
    srcs: &[Src<'_>],
    k: usize,
    pairs: &mut Vec<u64>,
    random: bool,
) -> Result<Option<Cut>, Fail> {
    pairs.clear();
    let mut pos = 0u64;
    for s in srcs {
        let max = s.blocks(0..s.len(), |start, keys, kept| {
            for (j, &key) in keys.iter().enumerate() {
                if kept.is_none_or(|f| f[j]) {
                    pairs.push((key as u64) << 32 | (pos + (start + j) as u64));
                }
            }
        });
        if max >= NON_FINITE_BITS {
            return Err(Fail::Error(non_finite_error(srcs)));
        }
        pos += s.len() as u64;
    }
    debug_assert!(pos <= u32::MAX as u64, "copy_select is for small inputs");
    if k > pairs.len() {
        return Err(Fail::TooFew(pairs.len()));
    }
    let (smaller, &mut cut, _) = pairs.select_nth_unstable(k - 1);
    let key = (cut >> 32) as u32;
    let below = smaller
        .iter()
        .filter(|&&p| ((p >> 32) as u32) < key)
        .count();
    let ties = pairs.iter().filter(|&&p| (p >> 32) as u32 == key).count();
    Ok(Some(Cut {
        key,
        below,
        ties,
        ties_pruned: k - below,
        random,
    }))
}

/// Counts of one part of a pass.
struct Counts {
    candidates: u64,
    below: u64,
    max_abs: u32,
    hist: Vec<u32>,
}

/// Narrows `[lo, hi]` by counting passes until it holds only the key of rank `k - 1`.
fn narrow(
    srcs: &[Src<'_>],
    total: usize,
    k: usize,
    mut lo: u32,
    mut hi: u32,
    random: bool,
) -> Result<Option<Cut>, Fail> {
    let rank = (k - 1) as u64;
    let mut checked = false;
    let mut passes = 0;
    loop {
        // A missed bracket, then at most 16 + 16 bits of narrowing.
        passes += 1;
        debug_assert!(passes < 5, "narrowing [{lo:#x}, {hi:#x}] does not converge");
        let span = hi - lo;
        let shift = (u32::BITS - span.leading_zeros()).saturating_sub(BIN_BITS);
        let bins = (span >> shift) as usize + 1;
        let parts = over_parts(
            srcs,
            total,
            || Counts {
                candidates: 0,
                below: 0,
                max_abs: 0,
                hist: vec![0; bins],
            },
            |c, s, r| count_range(c, s, r, lo, span, shift),
        );
        if !checked {
            if parts.iter().any(|c| c.max_abs >= NON_FINITE_BITS) {
                return Err(Fail::Error(non_finite_error(srcs)));
            }
            let candidates: u64 = parts.iter().map(|c| c.candidates).sum();
            if k as u64 > candidates {
                return Err(Fail::TooFew(candidates as usize));
            }
            checked = true;
        }
        let below: u64 = parts.iter().map(|c| c.below).sum();
        if rank < below {
            // The bracket was too high: everything below it is the new range.
            (lo, hi) = (0, lo - 1);
            continue;
        }
        let mut cum = below;
        let mut found = None;
        for b in 0..bins {
            let n: u64 = parts.iter().map(|c| c.hist[b] as u64).sum();
            if rank < cum + n {
                found = Some((b as u32, n));
                break;
            }
            cum += n;
        }
        let Some((bin, n)) = found else {
            // The bracket was too low.
            (lo, hi) = (hi + 1, u32::MAX);
            continue;
        };
        let start = lo + (bin << shift);
        if shift == 0 {
            return Ok(Some(Cut {
                key: start,
                below: cum as usize,
                ties: n as usize,
                ties_pruned: k - cum as usize,
                random,
            }));
        }
        (lo, hi) = (start, start.saturating_add((1 << shift) - 1).min(hi));
    }
}

/// Adds the candidates of `s[r]` to `c`: how many there are, how many have keys below `lo`,
/// and a histogram of `(key - lo) >> shift` for keys in `[lo, lo + span]`.
#[inline(never)]
fn count_range(
    c: &mut Counts,
    s: &Src<'_>,
    r: std::ops::Range<usize>,
    lo: u32,
    span: u32,
    shift: u32,
) {
    let hist = &mut c.hist[..];
    let one_bin = hist.len() == 1;
    let mut below = 0u64;
    let mut candidates = 0u64;
    // Blocks of 16: the counts vectorise; the scatter runs only where a key is in range.
    let mut group = |keys: &[u32], kept: Option<&[bool]>| {
        let (mut b, mut inside, mut n) = (0u32, 0u32, 0u32);
        match kept {
            None => {
                for &key in keys {
                    b += (key < lo) as u32;
                    inside += (key.wrapping_sub(lo) <= span) as u32;
                }
                n = keys.len() as u32;
            }
            Some(f) => {
                for (&key, &f) in keys.iter().zip(f) {
                    let f = f as u32;
                    b += f & (key < lo) as u32;
                    inside += f & (key.wrapping_sub(lo) <= span) as u32;
                    n += f;
                }
            }
        }
        below += b as u64;
        candidates += n as u64;
        if inside == 0 {
        } else if one_bin {
            hist[0] += inside;
        } else {
            for (j, &key) in keys.iter().enumerate() {
                let d = key.wrapping_sub(lo);
                if d <= span && kept.is_none_or(|f| f[j]) {
                    hist[(d >> shift) as usize] += 1;
                }
            }
        }
    };
    let max = s.blocks(r, |_, keys, kept| {
        let mut ks = keys.chunks_exact(16);
        let mut j = 0;
        for g in ks.by_ref() {
            group(g, kept.map(|f| &f[j..j + 16]));
            j += 16;
        }
        let rest = ks.remainder();
        if !rest.is_empty() {
            group(rest, kept.map(|f| &f[j..]));
        }
    });
    c.below += below;
    c.candidates += candidates;
    c.max_abs = c.max_abs.max(max);
}

/// Splits the concatenation of `srcs` into contiguous parts, one or two per thread, and folds
/// every part with `f(acc, source, range)` into its own accumulator. Parts hold fewer than 2^32
/// elements, so that `u32` counters cannot overflow.
fn over_parts<A: Send>(
    srcs: &[Src<'_>],
    total: usize,
    init: impl Fn() -> A + Sync + Send,
    f: impl Fn(&mut A, &Src<'_>, std::ops::Range<usize>) + Sync + Send,
) -> Vec<A> {
    let threads = par::threads();
    let by_threads = if threads == 1 { 1 } else { 2 * threads };
    let parts = by_threads
        .min(total / PART_MIN)
        .max(total.div_ceil(u32::MAX as usize))
        .max(1);
    par::map_parts(parts, |p| {
        let (from, to) = (p * total / parts, (p + 1) * total / parts);
        let mut acc = init();
        let mut base = 0;
        for s in srcs {
            let end = base + s.len();
            let (a, b) = (from.max(base), to.min(end));
            if a < b {
                f(&mut acc, s, a - base..b - base);
            }
            base = end;
            if base >= to {
                break;
            }
        }
        acc
    })
}

/// Number of sampled positions for `total` elements.
fn sample_size(total: usize) -> usize {
    (total / 16).clamp(1024.min(total), SAMPLE_MAX)
}

/// A key range that holds the key of rank `k - 1` with high probability, from a stratified
/// sample: one position drawn in each of `m` equal strata of the concatenation. `None` when the
/// sample holds no candidate.
fn bracket(srcs: &[Src<'_>], total: usize, k: usize) -> Option<(u32, u32)> {
    let m = sample_size(total);
    let mut keys = Vec::with_capacity(m);
    let (mut si, mut base) = (0, 0);
    for j in 0..m {
        let (a, b) = (j * total / m, (j + 1) * total / m);
        if a == b {
            continue;
        }
        let pos = a + random_key(SAMPLE_STATE, j as u64) as usize % (b - a);
        while pos >= base + srcs[si].len() {
            base += srcs[si].len();
            si += 1;
        }
        let (s, i) = (&srcs[si], pos - base);
        if s.is_candidate(i) {
            keys.push(s.keys.at(i));
        }
    }
    let n = keys.len();
    if n == 0 {
        return None;
    }
    // Rank of the answer among sampled candidates, and a margin of four binomial deviations.
    let est = (k - 1) as f64 * m as f64 / total as f64;
    let p = (est / n as f64).clamp(0.0, 1.0);
    let margin = 4.0 * (n as f64 * p * (1.0 - p)).sqrt() + 8.0;
    let (low, high) = (est - margin, est + margin);
    let (mut lower, mut hi) = (&mut keys[..], u32::MAX);
    if high < (n - 1) as f64 {
        let (l, &mut h, _) = lower.select_nth_unstable(high as usize);
        (lower, hi) = (l, h);
    }
    // More candidates than sampled may sit below the estimate: then the bracket starts at the
    // largest sampled key below it.
    let lo = if low < 0.0 {
        0
    } else {
        *lower
            .select_nth_unstable((low as usize).min(lower.len() - 1))
            .1
    };
    Some((lo, hi))
}

/// The largest `|x|` bit pattern over `srcs`, in parallel (a finiteness check).
pub(crate) fn max_abs(srcs: &[Src<'_>]) -> u32 {
    let total = srcs.iter().map(Src::len).sum();
    over_parts(
        srcs,
        total,
        || 0u32,
        |m, s, r| *m = (*m).max(s.blocks(r, |_, _, _| ())),
    )
    .into_iter()
    .max()
    .unwrap_or(0)
}
