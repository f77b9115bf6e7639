//! The exact `k`-th key over many sources, without sorting and without copying the scores.
//!
//! Small inputs copy `(key, position)` pairs and call `select_nth_unstable`. Large inputs narrow a
//! key range with counting passes (rust-notes §9.3): each pass counts the candidates below the
//! range and histograms those inside it into at most 2^18 bins, which pins the bin holding rank
//! `k` and narrows the range to that bin, until the range is a single key. Started from the whole
//! key range this is a radix select (18 + 14 bits in two passes). A sample first brackets the
//! answer, the idea of Floyd & Rivest ("Expected time bounds for selection", CACM 18(3), 1975),
//! so that the first pass scatters only the keys inside the bracket, and usually resolves the
//! exact key at once. A bracket that misses costs a pass, never a wrong answer.

use super::Cut;
use super::keys::{KeyGen, Src, any_non_finite, count_true, mix64, non_finite_error, with_keys};
use super::par;
use crate::error::{Error, Result};

/// Inputs up to this many elements are selected on a copy of their keys.
pub(crate) const SMALL: usize = 1 << 14;

/// Bits of the range histogram: at most 2^18 `u32` bins (1 MB) per part.
const BIN_BITS: u32 = 18;

/// Elements below which splitting a pass over threads does not pay (tiny in unit tests, so
/// that they split small inputs too).
const PART_MIN: usize = if cfg!(test) { 1 << 8 } else { 1 << 18 };

/// The sample reads runs of this many consecutive elements (a cache line of `f32`).
const RUN: usize = 16;

/// At most this many runs are sampled (2^18 keys, 1 MB).
const MAX_RUNS: usize = 1 << 14;

/// Keys in range buffered before they are added to the histogram.
const FLUSH_AT: usize = 256;

/// Half-width of the bracket, in standard deviations of the sampled rank.
const MARGIN_SIGMAS: f64 = 3.0;

/// Which algorithm [`select`] uses; everything but `Auto` is for tests that pin a path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Path {
    /// By size: copy up to [`SMALL`] elements, sample-bracketed counting passes above.
    Auto,
    /// Copy the keys and `select_nth_unstable`.
    #[cfg(test)]
    Copy,
    /// Counting passes from the whole key range (plain radix select).
    #[cfg(test)]
    Radix,
    /// Counting passes inside a bracket from a sample.
    #[cfg(test)]
    Bracketed,
    /// Counting passes inside a given (possibly wrong) bracket.
    #[cfg(test)]
    Forced(i32, i32),
    /// Counting passes inside a bracket from a sample whose estimate is scaled by this factor,
    /// so that brackets miss and widen.
    #[cfg(test)]
    Skewed(f64),
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
        let bad = over_parts(srcs, total, || false, |b, s, r| *b |= any_non_finite(s, r));
        return if bad.into_iter().any(|b| b) {
            Err(non_finite_error(srcs))
        } else {
            Ok(None)
        };
    }
    let found = match path {
        Path::Auto if total <= SMALL => copy_select(srcs, k, scratch),
        #[cfg(test)]
        Path::Copy => copy_select(srcs, k, scratch),
        Path::Auto => narrow(srcs, total, k, Sample::new(srcs, total, k)),
        #[cfg(test)]
        Path::Bracketed => narrow(srcs, total, k, Sample::new(srcs, total, k)),
        #[cfg(test)]
        Path::Radix => narrow(srcs, total, k, None),
        #[cfg(test)]
        Path::Forced(lo, hi) => narrow_from(srcs, total, k, (lo, hi), None),
        #[cfg(test)]
        Path::Skewed(factor) => {
            let mut sample = Sample::new(srcs, total, k);
            if let Some(s) = &mut sample {
                s.estimate *= factor;
            }
            narrow(srcs, total, k, sample)
        }
    };
    match found {
        Ok(mut cut) => {
            cut.random = random;
            Ok(Some(cut))
        }
        Err(Fail::Error(e)) => Err(e),
        Err(Fail::TooFew(n)) => Err(too_large(n)),
    }
}

/// A failure of a selection: an error, or too few candidates (the caller knows the scope).
enum Fail {
    Error(Error),
    TooFew(usize),
}

/// The cut at rank `k - 1`, with `below` candidates under its key and `ties` at it.
fn cut(key: i32, below: usize, ties: usize, k: usize) -> Cut {
    Cut {
        key,
        below,
        ties,
        ties_pruned: k - below,
        random: false,
    }
}

/// Small inputs: `(key << 32 | position)` of every candidate, selected in place. Positions are
/// unique, so the pair order is the full tie order.
fn copy_select(srcs: &[Src<'_>], k: usize, pairs: &mut Vec<u64>) -> Result<Cut, Fail> {
    fn push<K: KeyGen>(k: K, s: &Src<'_>, pos: u64, pairs: &mut Vec<u64>) -> bool {
        let mut bad = false;
        for i in 0..s.len() {
            bad |= k.non_finite(i);
            if s.is_candidate(i) {
                // The bias makes the signed key order the unsigned pair order.
                let key = (k.key(i) as u32 ^ 0x8000_0000) as u64;
                pairs.push(key << 32 | (pos + i as u64));
            }
        }
        bad
    }
    pairs.clear();
    let mut pos = 0u64;
    for s in srcs {
        if with_keys!(s, k => push(k, s, pos, pairs)) {
            return Err(Fail::Error(non_finite_error(srcs)));
        }
        pos += s.len() as u64;
    }
    debug_assert!(pos <= u32::MAX as u64, "copy_select is for small inputs");
    if k > pairs.len() {
        return Err(Fail::TooFew(pairs.len()));
    }
    let (smaller, &mut at, _) = pairs.select_nth_unstable(k - 1);
    let key_of = |p: u64| ((p >> 32) as u32 ^ 0x8000_0000) as i32;
    let key = key_of(at);
    let below = smaller.iter().filter(|&&p| key_of(p) < key).count();
    let ties = pairs.iter().filter(|&&p| key_of(p) == key).count();
    Ok(cut(key, below, ties, k))
}

/// Counts of one part of a pass.
struct Counts {
    candidates: u64,
    below: u64,
    non_finite: bool,
    /// One bin per `2^shift` keys of the range.
    hist: Vec<u32>,
}

/// Selects with a bracket from `sample` (or the whole key range without one).
fn narrow(srcs: &[Src<'_>], total: usize, k: usize, sample: Option<Sample>) -> Result<Cut, Fail> {
    let mut sample = sample;
    let first = match &mut sample {
        Some(s) => s.bracket(1.0),
        None => (i32::MIN, i32::MAX),
    };
    narrow_from(srcs, total, k, first, sample)
}

/// Narrows the key range `[lo, hi]` by counting passes until it holds only the key of rank
/// `k - 1`. When the answer turns out to lie outside, the range moves to that side: to a wider
/// bracket from the sample the first time, to everything on that side after.
fn narrow_from(
    srcs: &[Src<'_>],
    total: usize,
    k: usize,
    (mut lo, mut hi): (i32, i32),
    mut sample: Option<Sample>,
) -> Result<Cut, Fail> {
    let rank = (k - 1) as u64;
    let mut first = true;
    let mut passes = 0;
    loop {
        // A bracket, a wider one, everything on one side, then 18 + 14 bits of narrowing.
        passes += 1;
        debug_assert!(passes <= 5, "narrowing [{lo}, {hi}] does not converge");
        let span = hi.wrapping_sub(lo) as u32;
        let shift = (u32::BITS - span.leading_zeros()).saturating_sub(BIN_BITS);
        let bins = (span >> shift) as usize + 1;
        let check = first;
        let parts = over_parts(
            srcs,
            total,
            || Counts {
                candidates: 0,
                below: 0,
                non_finite: false,
                hist: vec![0; bins],
            },
            |c, s, r| {
                with_keys!(s, keys => if check {
                    count_range::<_, true>(keys, s.kept, r, lo, hi, shift, c)
                } else {
                    count_range::<_, false>(keys, s.kept, r, lo, hi, shift, c)
                })
            },
        );
        if first {
            if parts.iter().any(|c| c.non_finite) {
                return Err(Fail::Error(non_finite_error(srcs)));
            }
            let candidates: u64 = parts.iter().map(|c| c.candidates).sum();
            if k as u64 > candidates {
                return Err(Fail::TooFew(candidates as usize));
            }
            first = false;
        }
        let below: u64 = parts.iter().map(|c| c.below).sum();
        if rank < below {
            // Too high: some candidate is below `lo`, so `lo - 1` does not underflow.
            let wider = sample.take().map_or(i32::MIN, |mut s| s.bracket(4.0).0);
            (lo, hi) = (if wider < lo { wider } else { i32::MIN }, lo - 1);
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
            // Too low: some candidate is above `hi`, so `hi + 1` does not overflow.
            let wider = sample.take().map_or(i32::MAX, |mut s| s.bracket(4.0).1);
            (lo, hi) = (hi + 1, if wider > hi { wider } else { i32::MAX });
            continue;
        };
        let start = lo.wrapping_add((bin << shift) as i32);
        if shift == 0 {
            return Ok(cut(start, cum as usize, n as usize, k));
        }
        let last = (start as i64 + (1i64 << shift) - 1).min(hi as i64) as i32;
        (lo, hi) = (start, last);
    }
}

/// Adds the candidates of elements `r` to `c`: how many there are, how many have keys below
/// `lo`, and a histogram of `(key - lo) >> shift` for keys in `[lo, hi]`; with `CHECK`, also
/// whether a score is non-finite.
fn count_range<K: KeyGen, const CHECK: bool>(
    keys: K,
    kept: Option<&[bool]>,
    r: std::ops::Range<usize>,
    lo: i32,
    hi: i32,
    shift: u32,
    c: &mut Counts,
) {
    // One loop per case, so that the unmasked one does not carry the flags.
    let (below, bad) = match kept {
        None => count_loop::<K, CHECK, false>(keys, &[], r.clone(), lo, hi, shift, &mut c.hist),
        Some(f) => count_loop::<K, CHECK, true>(keys, f, r.clone(), lo, hi, shift, &mut c.hist),
    };
    c.below += below;
    c.candidates += match kept {
        None => r.len() as u64,
        Some(f) => count_true(&f[r]) as u64,
    };
    c.non_finite |= bad;
}

/// The loop of [`count_range`], compiled for AVX2 as well where the processor has it: the
/// counting pass is bound by arithmetic, not memory, on one core.
#[inline(never)]
fn count_loop<K: KeyGen, const CHECK: bool, const MASKED: bool>(
    keys: K,
    kept: &[bool],
    r: std::ops::Range<usize>,
    lo: i32,
    hi: i32,
    shift: u32,
    hist: &mut [u32],
) -> (u64, bool) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2<K: KeyGen, const CHECK: bool, const MASKED: bool>(
            keys: K,
            kept: &[bool],
            r: std::ops::Range<usize>,
            lo: i32,
            hi: i32,
            shift: u32,
            hist: &mut [u32],
        ) -> (u64, bool) {
            count_body::<K, CHECK, MASKED>(keys, kept, r, lo, hi, shift, hist)
        }
        // SAFETY: the processor was just found to support AVX2.
        return unsafe { avx2::<K, CHECK, MASKED>(keys, kept, r, lo, hi, shift, hist) };
    }
    count_body::<K, CHECK, MASKED>(keys, kept, r, lo, hi, shift, hist)
}

/// The body of [`count_loop`]; `kept` is read only when `MASKED`. Returns the count below
/// `lo` and whether a non-finite score was seen.
#[inline(always)]
fn count_body<K: KeyGen, const CHECK: bool, const MASKED: bool>(
    keys: K,
    kept: &[bool],
    r: std::ops::Range<usize>,
    lo: i32,
    hi: i32,
    shift: u32,
    hist: &mut [u32],
) -> (u64, bool) {
    // Groups of 16: per-lane counters and an in-range flag vectorise. In the rare group with a
    // key in range, bins go to a small buffer without a branch per key (every key is written,
    // only those in range advance), and the buffer is added to the histogram in batches: the
    // histogram is too large to stay in cache beside the streamed scores, and a batch lets its
    // cache misses overlap. Parts hold fewer than 2^32 elements, so lane counters cannot
    // overflow.
    let candidate = |i: usize| !MASKED || kept[i];
    let bin = |key: i32| (key as u32).wrapping_sub(lo as u32) >> shift;
    let mut lanes = [0u32; 16];
    let mut bad = false;
    let mut pending = [0u32; FLUSH_AT + 16];
    let mut n = 0;
    let whole = r.start + (r.len() / 16) * 16;
    let mut i0 = r.start;
    while i0 < whole {
        let (ks, nf) = keys.keys16(i0);
        if CHECK {
            bad |= nf;
        }
        let flags: &[bool; 16] = if MASKED {
            kept[i0..i0 + 16].try_into().expect("16 flags")
        } else {
            &[true; 16]
        };
        let mut any = false;
        for ((lane, &key), &f) in lanes.iter_mut().zip(&ks).zip(flags) {
            let (lt, gt) = (key < lo, key > hi);
            *lane += (f & lt) as u32;
            any |= f & !(lt | gt);
        }
        if any {
            // Keys are read again from the scores: reading lanes of `ks` back from memory would
            // wait on the vector stores that just wrote them.
            for (j, &f) in flags.iter().enumerate() {
                let key = keys.key(i0 + j);
                pending[n] = bin(key);
                n += (f & (lo <= key) & (key <= hi)) as usize;
            }
        }
        if n >= FLUSH_AT {
            for &b in &pending[..n] {
                hist[b as usize] += 1;
            }
            n = 0;
        }
        i0 += 16;
    }
    for &b in &pending[..n] {
        hist[b as usize] += 1;
    }
    let mut below = lanes.iter().map(|&l| l as u64).sum::<u64>();
    for i in whole..r.end {
        if CHECK && K::FLOAT {
            bad |= keys.non_finite(i);
        }
        if candidate(i) {
            let key = keys.key(i);
            below += (key < lo) as u64;
            if lo <= key && key <= hi {
                hist[bin(key) as usize] += 1;
            }
        }
    }
    (below, bad)
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

/// Keys sampled to bracket the answer: runs of [`RUN`] consecutive elements, one at a random
/// offset in each of equal strata of the concatenation (a cache line per run, so that a large
/// sample costs few memory accesses).
struct Sample {
    keys: Vec<i32>,
    /// Estimated rank of the answer among the sampled candidates.
    estimate: f64,
    /// One standard deviation of that estimate, in sampled ranks.
    sigma: f64,
}

/// Appends the keys of the candidates among elements `r` of `s`.
fn push_run<K: KeyGen>(k: K, s: &Src<'_>, r: std::ops::Range<usize>, keys: &mut Vec<i32>) {
    for i in r {
        if s.is_candidate(i) {
            keys.push(k.key(i));
        }
    }
}

impl Sample {
    /// `None` when the sample holds no candidate.
    fn new(srcs: &[Src<'_>], total: usize, k: usize) -> Option<Sample> {
        let runs = (total / (RUN * 64)).clamp(1, MAX_RUNS);
        let mut keys = Vec::with_capacity(runs * RUN);
        let mut sampled = 0;
        let (mut si, mut base) = (0, 0);
        for j in 0..runs {
            let (a, b) = (j * total / runs, (j + 1) * total / runs);
            let room = (b - a).saturating_sub(RUN - 1) as u64;
            let mut pos = a + (((mix64(j as u64) >> 32) * room) >> 32) as usize;
            let end = (pos + RUN).min(b);
            while pos < end {
                while pos >= base + srcs[si].len() {
                    base += srcs[si].len();
                    si += 1;
                }
                let s = &srcs[si];
                let stop = end.min(base + s.len());
                with_keys!(s, k => push_run(k, s, pos - base..stop - base, &mut keys));
                sampled += stop - pos;
                pos = stop;
            }
        }
        let n = keys.len();
        if n == 0 {
            return None;
        }
        // Candidates are assumed spread evenly, so the answer's share of the sampled elements
        // is its share of all elements.
        let estimate = (k - 1) as f64 * sampled as f64 / total as f64;
        let p = (estimate / n as f64).clamp(0.0, 1.0);
        let sigma = (n as f64 * p * (1.0 - p)).sqrt() + 1.0;
        Some(Sample {
            keys,
            estimate,
            sigma,
        })
    }

    /// Keys at the estimated rank minus and plus `widen` margins (the extremes of the key range
    /// where that runs past the sample).
    fn bracket(&mut self, widen: f64) -> (i32, i32) {
        let margin = widen * (MARGIN_SIGMAS * self.sigma + 8.0);
        let n = self.keys.len();
        let (low, high) = (self.estimate - margin, self.estimate + margin);
        let (mut lower, mut hi) = (&mut self.keys[..], i32::MAX);
        if high < (n - 1) as f64 {
            let (l, &mut h, _) = lower.select_nth_unstable(high as usize);
            (lower, hi) = (l, h);
        }
        // More candidates than sampled may sit below the estimate: then the bracket starts at
        // the largest sampled key below it.
        let lo = if low < 0.0 {
            i32::MIN
        } else {
            *lower
                .select_nth_unstable((low as usize).min(lower.len() - 1))
                .1
        };
        (lo, hi)
    }
}
