//! The selection engine: exact-k and threshold selection over one or many tensors, per group,
//! and N:M, without sorting and without concatenating tensors.
//!
//! STUB: the public signatures below are the contract; bodies are being written.

use crate::error::Result;

/// Scores of one tensor's elements, in row-major order, and how they are ordered.
/// Ascending order is pruned first; ties go by (source position, flat index).
#[derive(Clone, Copy, Debug)]
pub enum Scores<'a> {
    /// Rank by `|x|` (magnitude pruning, PyTorch's `L1Unstructured`).
    Magnitude(&'a [f32]),
    /// Rank by `x` itself (custom criteria: higher is more important).
    Signed(&'a [f32]),
    /// Rank by seeded uniform random keys: a baseline, reproducible whatever the thread count.
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

/// Checks that every value is finite.
///
/// # Errors
/// [`crate::Error::NonFinite`] naming `name` and the first bad index.
pub fn check_finite(name: &str, values: &[f32]) -> Result<()> {
    let _ = (name, values);
    todo!()
}

/// Number of candidate (still kept) elements over all sources.
pub fn count_candidates(sources: &[Source<'_>]) -> usize {
    let _ = sources;
    todo!()
}

/// Prunes exactly `k` candidates across all sources: the `k` smallest in (score, source
/// position, flat index) order. Returns new keep-flags per source (prior-pruned stay `false`).
pub fn prune_k(sources: &[Source<'_>], k: usize) -> Result<Vec<Vec<bool>>> {
    let _ = (sources, k);
    todo!()
}

/// Prunes every candidate whose score is at or below `threshold` (`|x| <= t` for magnitude).
pub fn prune_at_or_below(sources: &[Source<'_>], threshold: f32) -> Result<Vec<Vec<bool>>> {
    let _ = (sources, threshold);
    todo!()
}

/// Treats consecutive runs of `group_len` elements (rows of a row-major `[rows, group_len]`
/// tensor) as separate comparison groups; `count(remaining)` gives how many to prune in a group
/// with `remaining` candidates.
pub fn prune_k_per_group(
    source: &Source<'_>,
    group_len: usize,
    count: &(dyn Fn(usize) -> Result<usize> + Sync),
) -> Result<Vec<bool>> {
    let _ = (source, group_len, count);
    todo!()
}

/// N:M: keeps the `n` highest-scoring candidates of every `m` consecutive elements along axis 1
/// of `shape` (at each fixed output index and kernel position); a short tail keeps `min(n, len)`.
pub fn prune_n_m(source: &Source<'_>, shape: &[usize], n: usize, m: usize) -> Result<Vec<bool>> {
    let _ = (source, shape, n, m);
    todo!()
}

/// The `norm` of every slice along `axis` of a row-major tensor of `shape`, counting pruned
/// elements (where `kept` is `false`) as zero.
pub fn channel_norms(
    name: &str,
    values: &[f32],
    shape: &[usize],
    axis: usize,
    norm: Norm,
    kept: Option<&[bool]>,
) -> Result<Vec<f32>> {
    let _ = (name, values, shape, axis, norm, kept);
    todo!()
}
