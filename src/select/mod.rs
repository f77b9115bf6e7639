//! The selection engine: exact-`k` and threshold selection over one or many tensors, per group,
//! and N:M, without sorting and without concatenating tensors.
//!
//! # Semantics
//!
//! Every function ranks *candidates*, the elements whose prior keep-flag is `true` (all of them
//! when a [`Source`] has no flags), in ascending order, and prunes from the bottom:
//!
//! - [`Scores::Magnitude`] ranks `|x|`, [`Scores::Signed`] ranks `x` in IEEE total order, and
//!   [`Scores::Random`] ranks seeded pseudo-random keys.
//! - Exactly `k` candidates go, even when scores tie: among equal scores the lower
//!   (source position, flat index) goes first. Over several sources this is the ranking of their
//!   concatenation in the order given, as PyTorch's `global_unstructured` concatenates parameters
//!   (pruning-semantics.md §2.5, §3). PyTorch leaves the order of ties to `topk`, so results agree
//!   with it whenever no tie straddles the cut.
//! - Non-candidates are never kept: a mask only ever loses elements, as with PyTorch's
//!   `PruningContainer`, which writes a new partial mask only into the slots still kept.
//! - A NaN or infinite score, candidate or not, is an [`Error::NonFinite`] naming the tensor and
//!   the first flat index.
//!
//! # Algorithm
//!
//! Scores become `i32` keys whose order is the score order (rust-notes §9.2: IEEE total order for
//! signed scores, the bits of `|x|` for magnitudes, SplitMix64 outputs at the flat index for
//! random keys; signed rather than unsigned because SIMD compares signed integers in one
//! instruction). The `k`-th key is then found without moving data:
//!
//! 1. Up to 2^14 elements: copy `(key, position)` pairs and `select_nth_unstable` them.
//! 2. Above: a sample of up to 2^18 keys (runs of 16 consecutive elements, one cache line each,
//!    at random offsets in equal strata) brackets the answer, as in Floyd and Rivest's selection
//!    algorithm. One counting pass counts the candidates below the bracket and histograms those
//!    inside it into up to 2^18 bins, which usually pins the exact key at once; otherwise
//!    further passes narrow to the bin holding rank `k` until one key is left. Without the
//!    sample this is the radix select of rust-notes §9.3; with it, the pass scatters only the
//!    ~0.5 % of keys inside the bracket. A bracket that misses costs a pass (first to a wider
//!    bracket, then to everything on that side), never a wrong answer.
//! 3. One parallel pass writes the masks: keys below the cut key go, keys above stay. Tied keys
//!    at the cut are resolved by walking them in (source, flat index) order, which is needed only
//!    when ties straddle the cut.
//!
//! Besides the output masks, memory is bounded by constants: the sample (1 MB) and a histogram
//! (1 MB) per part of a pass, independent of the number of elements. The result never depends
//! on the number of threads: counts are exact integers and every key depends only on its
//! element. Passes run on rayon's pool under the `rayon` feature (on by default), split into
//! one or two contiguous parts per thread. Figures are in `docs/benchmarks.md`.
//!
//! # Example
//!
//! Two tensors pruned together by magnitude (PyTorch's `global_unstructured` with `amount=4`):
//!
//! ```
//! use shears::select::{Scores, Source, prune_k, select_cut};
//!
//! let m = [1.0_f32, 2.0, 3.0, 4.0, -4.0, -3.0, -2.0, -1.0];
//! let n = [0.0_f32, 0.1, -2.0];
//! let sources = [
//!     Source { name: "m.weight", scores: Scores::Magnitude(&m), kept: None },
//!     Source { name: "n.weight", scores: Scores::Magnitude(&n), kept: None },
//! ];
//! let masks = prune_k(&sources, 4)?;
//! assert_eq!(masks[0], [false, true, true, true, true, true, true, false]);
//! assert_eq!(masks[1], [false, false, true]);
//!
//! // The cut itself: the largest pruned |score|, and how the ties at it were split.
//! let cut = select_cut(&sources, 4)?.expect("k > 0");
//! assert_eq!(cut.score(), Some(1.0));
//! assert_eq!((cut.below(), cut.ties(), cut.ties_pruned()), (2, 2, 2));
//! # Ok::<(), shears::Error>(())
//! ```

mod group;
mod keys;
mod masks;
mod nm;
mod norms;
mod par;
mod radix;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use keys::Src;
use radix::Path;

/// Scores of one tensor's elements, in row-major order, and how they are ordered.
/// Ascending order is pruned first; ties go by (source position, flat index).
#[derive(Clone, Copy, Debug)]
pub enum Scores<'a> {
    /// Rank by `|x|` (magnitude pruning, PyTorch's `L1Unstructured`). Ranked together with
    /// signed scores, `|x|` counts as the signed score `|x|`.
    Magnitude(&'a [f32]),
    /// Rank by `x` itself (custom criteria: higher is more important).
    Signed(&'a [f32]),
    /// Rank by seeded uniform random keys: a baseline, reproducible whatever the thread count.
    /// Random sources can only be ranked with other random sources.
    Random {
        /// Seed of the run.
        seed: u64,
        /// Distinguishes tensors that share a seed (their position, say).
        stream: u64,
        /// Number of elements.
        len: usize,
    },
}

impl Scores<'_> {
    /// Number of scored elements.
    pub fn len(&self) -> usize {
        match self {
            Scores::Magnitude(s) | Scores::Signed(s) => s.len(),
            Scores::Random { len, .. } => *len,
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One comparison input: a named score vector and, optionally, which elements are still kept.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// Name used in errors (the tensor's name).
    pub name: &'a str,
    /// The scores.
    pub scores: Scores<'a>,
    /// Prior keep-flags (same length as the scores): only kept elements are candidates, and
    /// pruned ones stay pruned. `None` means all are candidates.
    pub kept: Option<&'a [bool]>,
}

/// Norm used to score a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Norm {
    /// Sum of absolute values.
    L1,
    /// Euclidean norm.
    #[default]
    L2,
    /// Largest absolute value.
    Inf,
}

/// Where an exact-`k` selection cuts: the key of the largest pruned score and how the candidates
/// tied at it are split. Returned by [`select_cut`] so that callers can report the threshold or
/// write masks into buffers they already own.
///
/// The candidates pruned are the [`below`](Cut::below) ones with a smaller key and the first
/// [`ties_pruned`](Cut::ties_pruned) of the [`ties`](Cut::ties) with this key, in (source, flat
/// index) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cut {
    key: i32,
    below: usize,
    ties: usize,
    ties_pruned: usize,
    random: bool,
}

impl Cut {
    /// The order-preserving key of the largest pruned score: for a float score `x`, the `u32`
    /// whose unsigned order is `f32::total_cmp`'s (`x.to_bits() | 0x8000_0000` for `x >= 0`);
    /// for a magnitude, the key of `|x|`.
    pub fn key(&self) -> u32 {
        keys::public_key(self.key)
    }

    /// The largest pruned score (`|x|` for magnitudes), or `None` for random keys, which stand
    /// for no score.
    pub fn score(&self) -> Option<f32> {
        (!self.random).then(|| keys::key_to_score(self.key))
    }

    /// Candidates strictly below the cut, all pruned.
    pub fn below(&self) -> usize {
        self.below
    }

    /// Candidates whose key equals the cut key.
    pub fn ties(&self) -> usize {
        self.ties
    }

    /// How many of the tied candidates are pruned (the first ones in order), at least one.
    pub fn ties_pruned(&self) -> usize {
        self.ties_pruned
    }

    /// Candidates pruned in all: the `k` the cut was selected for.
    pub fn pruned(&self) -> usize {
        self.below + self.ties_pruned
    }

    /// Writes the keep-flags this cut gives `sources` into `out` (one slice per source, of its
    /// length), overwriting them. With the sources the cut was selected from, exactly
    /// [`pruned`](Cut::pruned) candidates are pruned; non-candidates are never kept.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `out` does not match the sources, [`Error::InvalidParameter`]
    /// when random and float scores are mixed, [`Error::NonFinite`] for a NaN or infinite score.
    pub fn write_masks<O: AsMut<[bool]> + Send>(
        &self,
        sources: &[Source<'_>],
        out: &mut [O],
    ) -> Result<()> {
        let srcs = Src::all(sources)?;
        masks::check_outputs(&srcs, out)?;
        self.write(&srcs, out)
    }

    fn write<O: AsMut<[bool]> + Send>(&self, srcs: &[Src<'_>], out: &mut [O]) -> Result<()> {
        let rest = self.ties - self.ties_pruned;
        if rest == 0 {
            return masks::mask_pass(srcs, out, Some(self.key));
        }
        // Ties straddle the cut: write the cheaper default for them, then walk the fewer ties
        // that differ from it.
        if self.ties_pruned <= rest {
            masks::mask_pass(srcs, out, self.key.checked_sub(1))?;
            masks::walk_ties(srcs, out, self.key, self.ties_pruned, false, false);
        } else {
            masks::mask_pass(srcs, out, Some(self.key))?;
            masks::walk_ties(srcs, out, self.key, rest, true, true);
        }
        Ok(())
    }
}

/// The name of a comparison group in errors: the tensor, or `global` for several.
fn scope_of(srcs: &[Src<'_>]) -> String {
    match srcs {
        [one] => one.name.to_string(),
        _ => "global".to_string(),
    }
}

/// Prunes exactly `k` candidates of `srcs` into `out`, which holds one slice per source.
fn prune_into<O: AsMut<[bool]> + Send>(
    srcs: &[Src<'_>],
    k: usize,
    scope: &dyn Fn() -> String,
    scratch: &mut Vec<u64>,
    path: Path,
    out: &mut [O],
) -> Result<()> {
    match radix::select(srcs, k, scope, scratch, path)? {
        Some(cut) => cut.write(srcs, out),
        None => masks::mask_pass(srcs, out, None),
    }
}

/// Zeroed outputs, one per source.
fn outputs(srcs: &[Src<'_>]) -> Vec<Vec<bool>> {
    srcs.iter().map(|s| vec![false; s.len()]).collect()
}

/// Exact-`k` selection over `sources` along a given path (tests pin paths with it).
fn prune_k_along(sources: &[Source<'_>], k: usize, path: Path) -> Result<Vec<Vec<bool>>> {
    let srcs = Src::all(sources)?;
    let mut out = outputs(&srcs);
    prune_into(
        &srcs,
        k,
        &|| scope_of(&srcs),
        &mut Vec::new(),
        path,
        &mut out,
    )?;
    Ok(out)
}

/// Number of candidate (still kept) elements over all sources: the `n` that fractions of what
/// remains are taken of.
///
/// ```
/// use shears::select::{Scores, Source, count_candidates};
///
/// let kept = [true, false, true];
/// let w = [0.5_f32, 0.0, -1.0];
/// let s = Source { name: "w", scores: Scores::Magnitude(&w), kept: Some(&kept) };
/// assert_eq!(count_candidates(&[s, Source { kept: None, ..s }]), 5);
/// ```
pub fn count_candidates(sources: &[Source<'_>]) -> usize {
    sources
        .iter()
        .map(|s| match s.kept {
            Some(k) => keys::count_true(k),
            None => s.scores.len(),
        })
        .sum()
}

/// The cut that prunes exactly `k` candidates across all sources (see [`prune_k`]), or `None`
/// for `k = 0`. It exposes the threshold behind a selection; [`Cut::write_masks`] turns it into
/// masks.
///
/// # Errors
/// As [`prune_k`].
pub fn select_cut(sources: &[Source<'_>], k: usize) -> Result<Option<Cut>> {
    let srcs = Src::all(sources)?;
    radix::select(&srcs, k, &|| scope_of(&srcs), &mut Vec::new(), Path::Auto)
}

/// Prunes exactly `k` candidates across all sources: the `k` smallest in (score, source
/// position, flat index) order. Returns new keep-flags per source (prior-pruned stay `false`).
///
/// Per-layer pruning calls this once per tensor; global pruning once with all tensors, which are
/// ranked as if concatenated, without being copied.
///
/// ```
/// use shears::select::{Scores, Source, prune_k};
///
/// // Ties go by flat index: of the three 1.0s, the first two are pruned.
/// let w = [1.0_f32, 3.0, 1.0, 1.0];
/// let kept = prune_k(&[Source { name: "w", scores: Scores::Magnitude(&w), kept: None }], 2)?;
/// assert_eq!(kept[0], [false, true, false, true]);
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
/// [`Error::CountTooLarge`] when `k` exceeds the candidates (scope: the tensor's name, or
/// `global` for several sources), [`Error::NonFinite`] for a NaN or infinite score anywhere,
/// [`Error::ShapeMismatch`] when keep-flags and scores differ in length,
/// [`Error::InvalidParameter`] when random and float scores are mixed.
pub fn prune_k(sources: &[Source<'_>], k: usize) -> Result<Vec<Vec<bool>>> {
    prune_k_along(sources, k, Path::Auto)
}

/// Prunes every candidate whose score is at or below `threshold` (`|x| <= t` for magnitude,
/// `x <= t` for signed scores, compared as IEEE floats, so `-0.0` and `0.0` are equal).
///
/// ```
/// use shears::select::{Scores, Source, prune_at_or_below};
///
/// let w = [0.5_f32, -0.1, 0.1, -2.0];
/// let kept = prune_at_or_below(&[Source { name: "w", scores: Scores::Magnitude(&w), kept: None }], 0.1)?;
/// assert_eq!(kept[0], [true, false, false, true]);
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidThreshold`] for a non-finite threshold, [`Error::InvalidParameter`] for
/// random scores (they have no scale), and the errors of [`prune_k`] but the count.
pub fn prune_at_or_below(sources: &[Source<'_>], threshold: f32) -> Result<Vec<Vec<bool>>> {
    if !threshold.is_finite() {
        return Err(Error::InvalidThreshold { value: threshold });
    }
    let srcs = Src::all(sources)?;
    if srcs.iter().any(Src::is_random) {
        return Err(Error::invalid(
            "threshold",
            "random scores cannot be pruned by threshold",
        ));
    }
    // `x <= t` in IEEE order is `key(x) <= key(t)` once `-0.0` is read as `+0.0`; for magnitudes,
    // whose keys are those of `|x|`, a negative threshold then keeps everything.
    let t = if threshold == 0.0 { 0.0 } else { threshold };
    let mut out = outputs(&srcs);
    masks::mask_pass(&srcs, &mut out, Some(keys::signed_key(t)))?;
    Ok(out)
}

/// Treats consecutive runs of `group_len` elements (rows of a row-major `[rows, group_len]`
/// tensor) as separate comparison groups; `count(remaining)` gives how many to prune in a group
/// with `remaining` candidates.
///
/// ```
/// use shears::select::{Scores, Source, prune_k_per_group};
///
/// // Two rows of three; prune half (rounded down) of what remains in each row.
/// let w = [3.0_f32, 1.0, 2.0, 0.5, 0.7, 0.6];
/// let s = Source { name: "w", scores: Scores::Magnitude(&w), kept: None };
/// let kept = prune_k_per_group(&s, 3, &|remaining| Ok(remaining / 2))?;
/// assert_eq!(kept, [true, false, true, false, true, true]);
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] when `group_len` is zero or does not divide the length,
/// [`Error::CountTooLarge`] naming the group (`name[g]`), errors returned by `count`, and the
/// errors of [`prune_k`]. The error reported is that of the first failing group.
pub fn prune_k_per_group(
    source: &Source<'_>,
    group_len: usize,
    count: &(dyn Fn(usize) -> Result<usize> + Sync),
) -> Result<Vec<bool>> {
    group::prune_k_per_group(source, group_len, count)
}

/// N:M: keeps the `n` highest-scoring candidates of every `m` consecutive elements along axis 1
/// of `shape` (at each fixed output index and kernel position); a short tail keeps `min(n, len)`.
///
/// `shape` is PyTorch's weight layout, `[out, in]` or `[out, in, *kernel]`. Within a group, ties
/// go by flat index (the lower is pruned first), and elements pruned before neither count as kept
/// nor come back.
///
/// ```
/// use shears::select::{Scores, Source, prune_n_m};
///
/// // 2:4 on one row of 6: a group of 4 keeps its 2 largest, the tail of 2 keeps both.
/// let w = [0.1_f32, -0.4, 0.3, 0.2, 0.05, 0.01];
/// let s = Source { name: "fc.weight", scores: Scores::Magnitude(&w), kept: None };
/// assert_eq!(prune_n_m(&s, &[1, 6], 2, 4)?, [false, true, true, false, true, true]);
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidNm`] unless `1 <= n <= m`; [`Error::InvalidParameter`] for fewer than two
/// dimensions; [`Error::ShapeMismatch`] when `shape` does not hold the scores; and the errors of
/// [`prune_k`] but the count.
pub fn prune_n_m(source: &Source<'_>, shape: &[usize], n: usize, m: usize) -> Result<Vec<bool>> {
    nm::prune_n_m(source, shape, n, m)
}

/// The `norm` of every slice along `axis` of a row-major tensor of `shape`, counting pruned
/// elements (where `kept` is `false`) as zero. Axis 0 scores output channels, axis 1 input
/// channels. Sums are taken in `f64`, in an order that does not depend on the thread count.
///
/// ```
/// use shears::select::{Norm, channel_norms};
///
/// let w = [3.0_f32, -4.0, 1.0, 2.0]; // [[3, -4], [1, 2]]
/// assert_eq!(channel_norms("w", &w, &[2, 2], 0, Norm::L2, None)?, [5.0, 5.0_f32.sqrt()]);
/// assert_eq!(channel_norms("w", &w, &[2, 2], 1, Norm::L1, None)?, [4.0, 6.0]);
/// let kept = [true, false, true, true];
/// assert_eq!(channel_norms("w", &w, &[2, 2], 1, Norm::Inf, Some(&kept))?, [3.0, 2.0]);
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
/// [`Error::ShapeMismatch`] when `shape` or `kept` does not fit `values`,
/// [`Error::InvalidParameter`] when `axis` is out of range, [`Error::NonFinite`] for a NaN or
/// infinite value (pruned or not).
pub fn channel_norms(
    name: &str,
    values: &[f32],
    shape: &[usize],
    axis: usize,
    norm: Norm,
    kept: Option<&[bool]>,
) -> Result<Vec<f32>> {
    norms::channel_norms(name, values, shape, axis, norm, kept)
}
