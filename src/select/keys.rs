//! Order-preserving keys for every kind of score, and the sources they come from.
//!
//! All selection kernels compare keys, never floats: ascending key order is the pruning order.
//! Keys are `i32` whose *signed* order is the score order, because x86 SIMD compares signed
//! integers in one instruction and unsigned ones in three. A float `x` gets its IEEE total-order
//! key (rust-notes §9.2, shifted by 2^31 into the signed range): the bits of `x` with the
//! magnitude bits flipped when `x` is negative. A magnitude gets the key of the signed score
//! `|x|`, which is just the bits of `|x|`, so magnitude and signed sources rank together. Random
//! keys are SplitMix64 outputs (Steele, Lea & Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014) drawn at the element's flat index: a counter-based generator, so a
//! key never depends on how the work was split.

use std::ops::Range;

use super::{Scores, Source};
use crate::error::{Error, Result};

/// Bits of `|x|` above this are infinities and NaNs.
const MAX_FINITE_BITS: u32 = 0x7F7F_FFFF;

/// The key of `x` in `f32::total_cmp` order.
#[inline(always)]
pub(crate) fn signed_key(x: f32) -> i32 {
    let b = x.to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

/// The key of `|x|`, equal to `signed_key(x.abs())`.
#[inline(always)]
pub(crate) fn magnitude_key(x: f32) -> i32 {
    (x.to_bits() & 0x7FFF_FFFF) as i32
}

/// The score a float key stands for (the inverse of [`signed_key`]).
pub(crate) fn key_to_score(key: i32) -> f32 {
    f32::from_bits((key ^ (((key >> 31) as u32) >> 1) as i32) as u32)
}

/// The key as the public API shows it: an unsigned `u32` in the same order.
pub(crate) fn public_key(key: i32) -> u32 {
    key as u32 ^ 0x8000_0000
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (Stafford's "Mix13" variant of the MurmurHash3 finaliser).
#[inline(always)]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The SplitMix64 starting state of a `(seed, stream)` pair.
fn random_state(seed: u64, stream: u64) -> u64 {
    mix64(seed ^ mix64(stream.wrapping_add(GOLDEN_GAMMA)))
}

/// The key of element `index`: the upper half of the `index`-th SplitMix64 output.
#[inline(always)]
fn random_key(state: u64, index: u64) -> i32 {
    (mix64(state.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA))) >> 32) as i32
}

/// Key access for the kernels, monomorphised per kind of score (see [`with_keys!`]).
pub(crate) trait KeyGen: Copy + Send + Sync {
    /// Whether the scores are floats, which may be non-finite.
    const FLOAT: bool;
    /// The key of element `i`.
    fn key(&self, i: usize) -> i32;
    /// Whether element `i` is a NaN or an infinity.
    fn non_finite(&self, i: usize) -> bool;
    /// The keys of elements `i0..i0 + 16`, and whether one of them is non-finite: one bounds
    /// check per group, so that kernels vectorise.
    fn keys16(&self, i0: usize) -> ([i32; 16], bool);
}

/// Keys of sixteen floats under `key`, and whether one of the floats is non-finite.
#[inline(always)]
fn float_keys16(s: &[f32], i0: usize, key: impl Fn(f32) -> i32) -> ([i32; 16], bool) {
    let x: &[f32; 16] = s[i0..i0 + 16].try_into().expect("16 elements");
    let bad = x.iter().fold(false, |b, x| {
        b | (x.to_bits() & 0x7FFF_FFFF > MAX_FINITE_BITS)
    });
    (x.map(key), bad)
}

/// Magnitude keys: the bits of `|x|`.
#[derive(Clone, Copy)]
pub(crate) struct MagnitudeKeys<'a>(pub(crate) &'a [f32]);

/// Signed keys: IEEE total order.
#[derive(Clone, Copy)]
pub(crate) struct SignedKeys<'a>(pub(crate) &'a [f32]);

/// Random keys of flat indices `start..`.
#[derive(Clone, Copy)]
pub(crate) struct RandomKeys {
    pub(crate) state: u64,
    pub(crate) start: u64,
}

impl KeyGen for MagnitudeKeys<'_> {
    const FLOAT: bool = true;
    #[inline(always)]
    fn key(&self, i: usize) -> i32 {
        magnitude_key(self.0[i])
    }
    #[inline(always)]
    fn non_finite(&self, i: usize) -> bool {
        self.0[i].to_bits() & 0x7FFF_FFFF > MAX_FINITE_BITS
    }
    #[inline(always)]
    fn keys16(&self, i0: usize) -> ([i32; 16], bool) {
        float_keys16(self.0, i0, magnitude_key)
    }
}

impl KeyGen for SignedKeys<'_> {
    const FLOAT: bool = true;
    #[inline(always)]
    fn key(&self, i: usize) -> i32 {
        signed_key(self.0[i])
    }
    #[inline(always)]
    fn non_finite(&self, i: usize) -> bool {
        self.0[i].to_bits() & 0x7FFF_FFFF > MAX_FINITE_BITS
    }
    #[inline(always)]
    fn keys16(&self, i0: usize) -> ([i32; 16], bool) {
        float_keys16(self.0, i0, signed_key)
    }
}

impl KeyGen for RandomKeys {
    const FLOAT: bool = false;
    #[inline(always)]
    fn key(&self, i: usize) -> i32 {
        random_key(self.state, self.start + i as u64)
    }
    #[inline(always)]
    fn non_finite(&self, _: usize) -> bool {
        false
    }
    #[inline(always)]
    fn keys16(&self, i0: usize) -> ([i32; 16], bool) {
        (std::array::from_fn(|j| self.key(i0 + j)), false)
    }
}

/// Runs `$body` with `$k` bound to the [`KeyGen`] of `$src` (a [`Src`]), so that the body is
/// compiled once per kind of score.
macro_rules! with_keys {
    ($src:expr, $k:ident => $body:expr) => {
        match $src.keys {
            $crate::select::keys::Keys::Magnitude(s) => {
                let $k = $crate::select::keys::MagnitudeKeys(s);
                $body
            }
            $crate::select::keys::Keys::Signed(s) => {
                let $k = $crate::select::keys::SignedKeys(s);
                $body
            }
            $crate::select::keys::Keys::Random { state, start, .. } => {
                let $k = $crate::select::keys::RandomKeys { state, start };
                $body
            }
        }
    };
}
pub(crate) use with_keys;

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
        let src = Src {
            name: s.name,
            keys,
            kept: s.kept,
            offset: 0,
        };
        if let Some(k) = s.kept
            && k.len() != src.len()
        {
            return Err(Error::ShapeMismatch {
                name: format!("{} (keep-flags)", s.name),
                expected: vec![src.len()],
                got: vec![k.len()],
            });
        }
        Ok(src)
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
        match self.keys {
            Keys::Magnitude(s) | Keys::Signed(s) => s.len(),
            Keys::Random { len, .. } => len,
        }
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

/// Whether elements `r` of `s` hold a NaN or an infinity: a read-only pass for the cases that
/// make no other.
pub(crate) fn any_non_finite(s: &Src<'_>, r: Range<usize>) -> bool {
    fn scan<K: KeyGen>(k: K, r: Range<usize>) -> bool {
        let mut bad = false;
        if K::FLOAT {
            for i in r {
                bad |= k.non_finite(i);
            }
        }
        bad
    }
    with_keys!(s, k => scan(k, r))
}

/// Number of `true` flags, counted a byte lane at a time so that it vectorises.
pub(crate) fn count_true(flags: &[bool]) -> usize {
    flags
        .chunks(255)
        .map(|c| c.iter().map(|&b| b as u8).sum::<u8>() as usize)
        .sum()
}
