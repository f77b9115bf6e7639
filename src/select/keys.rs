//! Order-preserving `u32` keys for every kind of score, generated block by block.
//!
//! All selection kernels compare keys, never floats: ascending key order is the pruning order.
//! Float scores are mapped so that `u32` order equals `f32::total_cmp` order (rust-notes §9.2), and
//! a magnitude `|x|` gets the key of the signed score `|x|`, so magnitude and signed sources can
//! be ranked together. Random scores are the upper 32 bits of SplitMix64 outputs (Steele, Lea &
//! Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014) drawn at the element's
//! flat index: a counter-based generator, so a key never depends on how the work was split.

use std::ops::Range;

use super::{Scores, Source};
use crate::error::{Error, Result};

/// Elements whose keys are generated at once into a stack buffer.
pub(crate) const BLOCK: usize = 256;

/// `|x|` bit patterns at or above this are infinities or NaNs.
pub(crate) const NON_FINITE_BITS: u32 = 0x7F80_0000;

/// The key of `x` in `f32::total_cmp` order: negative floats reversed below positive ones.
#[inline(always)]
pub(crate) fn signed_key(x: f32) -> u32 {
    let b = x.to_bits();
    let flip = ((b as i32) >> 31) as u32;
    b ^ (flip | 0x8000_0000)
}

/// The key of `|x|`, equal to `signed_key(x.abs())`: setting the sign bit of `|x|` and of `x`
/// gives the same pattern.
#[inline(always)]
pub(crate) fn magnitude_key(x: f32) -> u32 {
    x.to_bits() | 0x8000_0000
}

/// The score a float key stands for (the inverse of [`signed_key`]).
pub(crate) fn key_to_score(key: u32) -> f32 {
    if key & 0x8000_0000 != 0 {
        f32::from_bits(key & 0x7FFF_FFFF)
    } else {
        f32::from_bits(!key)
    }
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Stafford's "Mix13" variant of the MurmurHash3 finaliser).
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The SplitMix64 starting state of a `(seed, stream)` pair.
pub(crate) fn random_state(seed: u64, stream: u64) -> u64 {
    mix64(seed ^ mix64(stream.wrapping_add(GOLDEN_GAMMA)))
}

/// The key of element `index`: the upper half of the `index`-th SplitMix64 output.
#[inline(always)]
pub(crate) fn random_key(state: u64, index: u64) -> u32 {
    (mix64(state.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA))) >> 32) as u32
}

/// How the keys of one source are made.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keys<'a> {
    Magnitude(&'a [f32]),
    Signed(&'a [f32]),
    /// Keys of flat indices `start..start + len` of the stream `state`.
    Random {
        state: u64,
        start: u64,
        len: usize,
    },
}

impl Keys<'_> {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Keys::Magnitude(s) | Keys::Signed(s) => s.len(),
            Keys::Random { len, .. } => *len,
        }
    }

    /// Writes the keys of elements `start..start + out.len()` into `out` and returns the largest
    /// `|x|` bit pattern among them (0 for random keys): at least [`NON_FINITE_BITS`] means that a
    /// NaN or an infinity is there.
    #[inline(always)]
    pub(crate) fn fill(&self, start: usize, out: &mut [u32]) -> u32 {
        let end = start + out.len();
        match *self {
            Keys::Magnitude(s) => {
                let mut max = 0;
                for (o, &x) in out.iter_mut().zip(&s[start..end]) {
                    let abs = x.to_bits() & 0x7FFF_FFFF;
                    max = max.max(abs);
                    *o = abs | 0x8000_0000;
                }
                max
            }
            Keys::Signed(s) => {
                let mut max = 0;
                for (o, &x) in out.iter_mut().zip(&s[start..end]) {
                    max = max.max(x.to_bits() & 0x7FFF_FFFF);
                    *o = signed_key(x);
                }
                max
            }
            Keys::Random {
                state, start: s, ..
            } => {
                let base = s + start as u64;
                for (j, o) in out.iter_mut().enumerate() {
                    *o = random_key(state, base + j as u64);
                }
                0
            }
        }
    }

    /// The key of one element.
    #[inline(always)]
    pub(crate) fn at(&self, i: usize) -> u32 {
        match *self {
            Keys::Magnitude(s) => magnitude_key(s[i]),
            Keys::Signed(s) => signed_key(s[i]),
            Keys::Random { state, start, .. } => random_key(state, start + i as u64),
        }
    }
}

/// A validated source: keys, prior keep-flags, and where its elements sit in the named tensor.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Src<'a> {
    pub(crate) name: &'a str,
    pub(crate) keys: Keys<'a>,
    pub(crate) kept: Option<&'a [bool]>,
    /// Flat index in the tensor of element 0 (non-zero for a group of a larger tensor).
    pub(crate) offset: usize,
}

impl<'a> Src<'a> {
    /// Checks that the keep-flags cover the scores.
    pub(crate) fn new(s: &Source<'a>) -> Result<Self> {
        let keys = match s.scores {
            Scores::Magnitude(v) => Keys::Magnitude(v),
            Scores::Signed(v) => Keys::Signed(v),
            Scores::Random { seed, stream, len } => Keys::Random {
                state: random_state(seed, stream),
                start: 0,
                len,
            },
        };
        if let Some(k) = s.kept
            && k.len() != keys.len()
        {
            return Err(Error::ShapeMismatch {
                name: format!("{} (keep-flags)", s.name),
                expected: vec![keys.len()],
                got: vec![k.len()],
            });
        }
        Ok(Src {
            name: s.name,
            keys,
            kept: s.kept,
            offset: 0,
        })
    }

    /// Validates several sources that are ranked together: float and random keys do not mix.
    pub(crate) fn all(sources: &[Source<'a>]) -> Result<Vec<Self>> {
        let random = sources
            .iter()
            .filter(|s| matches!(s.scores, Scores::Random { .. }))
            .count();
        if random != 0 && random != sources.len() {
            return Err(Error::invalid(
                "scores",
                "random keys cannot be ranked together with float scores",
            ));
        }
        sources.iter().map(Src::new).collect()
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether keys are random (no non-finite check, no score behind a key).
    pub(crate) fn is_random(&self) -> bool {
        matches!(self.keys, Keys::Random { .. })
    }

    /// Elements `r` of this source as a source of their own (flat indices stay the tensor's).
    pub(crate) fn slice(&self, r: Range<usize>) -> Src<'a> {
        let keys = match self.keys {
            Keys::Magnitude(s) => Keys::Magnitude(&s[r.clone()]),
            Keys::Signed(s) => Keys::Signed(&s[r.clone()]),
            Keys::Random { state, start, .. } => Keys::Random {
                state,
                start: start + r.start as u64,
                len: r.len(),
            },
        };
        Src {
            name: self.name,
            keys,
            kept: self.kept.map(|k| &k[r.clone()]),
            offset: self.offset + r.start,
        }
    }

    /// Whether element `i` is a candidate.
    #[inline(always)]
    pub(crate) fn is_candidate(&self, i: usize) -> bool {
        self.kept.is_none_or(|k| k[i])
    }

    /// Number of candidates.
    pub(crate) fn candidates(&self) -> usize {
        match self.kept {
            None => self.len(),
            Some(k) => count_true(k),
        }
    }

    /// Calls `f(start, keys, kept)` for consecutive blocks of `range`, with the keys of the block
    /// in a stack buffer, and returns the largest `|x|` bit pattern seen (see [`Keys::fill`]).
    #[inline(always)]
    pub(crate) fn blocks(
        &self,
        range: Range<usize>,
        mut f: impl FnMut(usize, &[u32], Option<&[bool]>),
    ) -> u32 {
        let mut buf = [0u32; BLOCK];
        let mut max = 0;
        let mut start = range.start;
        while start < range.end {
            let len = BLOCK.min(range.end - start);
            let keys = &mut buf[..len];
            max = max.max(self.keys.fill(start, keys));
            f(start, keys, self.kept.map(|k| &k[start..start + len]));
            start += len;
        }
        max
    }

    /// The error for the first non-finite score of this source, if any.
    pub(crate) fn first_non_finite(&self) -> Option<Error> {
        let (Keys::Magnitude(s) | Keys::Signed(s)) = self.keys else {
            return None;
        };
        let i = s.iter().position(|x| !x.is_finite())?;
        Some(Error::NonFinite {
            tensor: self.name.to_string(),
            index: self.offset + i,
            value: s[i],
        })
    }
}

/// The error for the first non-finite score over `srcs` in order. Only called once a pass has
/// seen one, so it is the slow path of an error.
pub(crate) fn non_finite_error(srcs: &[Src<'_>]) -> Error {
    srcs.iter()
        .find_map(Src::first_non_finite)
        .expect("a non-finite score was seen")
}

/// Number of `true` flags, counted a byte lane at a time so that it vectorises.
pub(crate) fn count_true(flags: &[bool]) -> usize {
    flags
        .chunks(255)
        .map(|c| c.iter().map(|&b| b as u8).sum::<u8>() as usize)
        .sum()
}
