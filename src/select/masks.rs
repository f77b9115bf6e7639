//! Keep-flags from a cut: one parallel pass that compares keys, then, only when tied keys
//! straddle the cut, a walk over the ties in (source, flat index) order.

use super::keys::{KeyGen, Src, non_finite_error, with_keys};
use super::par;
use crate::error::{Error, Result};

/// Output elements written by one parallel task (few in unit tests, so that they split).
const CHUNK: usize = if cfg!(test) { 100 } else { 1 << 16 };

/// Checks that there is one output per source, of its length.
pub(crate) fn check_outputs<O: AsMut<[bool]>>(srcs: &[Src<'_>], outs: &mut [O]) -> Result<()> {
    if outs.len() != srcs.len() {
        return Err(Error::ShapeMismatch {
            name: "masks".into(),
            expected: vec![srcs.len()],
            got: vec![outs.len()],
        });
    }
    for (s, o) in srcs.iter().zip(outs.iter_mut()) {
        let len = o.as_mut().len();
        if len != s.len() {
            return Err(Error::ShapeMismatch {
                name: format!("{} (mask)", s.name),
                expected: vec![s.len()],
                got: vec![len],
            });
        }
    }
    Ok(())
}

/// Writes keep-flags: a candidate is kept when `keep_above` is `None` or its key is above it;
/// a non-candidate is never kept. Fails on a non-finite score anywhere.
pub(crate) fn mask_pass<O: AsMut<[bool]> + Send>(
    srcs: &[Src<'_>],
    outs: &mut [O],
    keep_above: Option<i32>,
) -> Result<()> {
    let bad = par::each_max(outs, |i, out| {
        let s = &srcs[i];
        par::chunks_max(out.as_mut(), CHUNK, |from, out| {
            let kept = s.kept.map(|k| &k[from..from + out.len()]);
            with_keys!(s, k => write_flags(k, from, kept, keep_above, out)) as u32
        })
    });
    if bad != 0 {
        Err(non_finite_error(srcs))
    } else {
        Ok(())
    }
}

/// The flags of elements `from..from + out.len()`; whether a score among them is non-finite.
/// Compiled for AVX2 as well where the processor has it.
fn write_flags<K: KeyGen>(
    keys: K,
    from: usize,
    kept: Option<&[bool]>,
    keep_above: Option<i32>,
    out: &mut [bool],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        #[target_feature(enable = "avx2")]
        fn avx2<K: KeyGen>(
            keys: K,
            from: usize,
            kept: Option<&[bool]>,
            keep_above: Option<i32>,
            out: &mut [bool],
        ) -> bool {
            flags_body(keys, from, kept, keep_above, out)
        }
        // SAFETY: the processor was just found to support AVX2.
        return unsafe { avx2(keys, from, kept, keep_above, out) };
    }
    flags_body(keys, from, kept, keep_above, out)
}

#[inline(always)]
fn flags_body<K: KeyGen>(
    keys: K,
    from: usize,
    kept: Option<&[bool]>,
    keep_above: Option<i32>,
    out: &mut [bool],
) -> bool {
    let mut bad = false;
    let n = out.len();
    let whole = n / 16 * 16;
    for j0 in (0..whole).step_by(16) {
        let (ks, nf) = keys.keys16(from + j0);
        bad |= nf;
        let o: &mut [bool; 16] = (&mut out[j0..j0 + 16]).try_into().expect("16 flags");
        match (kept, keep_above) {
            (None, None) => *o = [true; 16],
            (Some(f), None) => o.copy_from_slice(&f[j0..j0 + 16]),
            (None, Some(t)) => *o = ks.map(|k| k > t),
            (Some(f), Some(t)) => {
                for ((o, &k), &f) in o.iter_mut().zip(&ks).zip(&f[j0..j0 + 16]) {
                    *o = f & (k > t);
                }
            }
        }
    }
    for j in whole..n {
        let i = from + j;
        bad |= keys.non_finite(i);
        out[j] = kept.is_none_or(|f| f[j]) && keep_above.is_none_or(|t| keys.key(i) > t);
    }
    bad
}

/// Sets the flag of `count` candidates whose key is `key` to `keep`: the first ones in
/// (source, flat index) order, or the last ones when `backward`.
pub(crate) fn walk_ties<O: AsMut<[bool]>>(
    srcs: &[Src<'_>],
    outs: &mut [O],
    key: i32,
    count: usize,
    keep: bool,
    backward: bool,
) {
    fn walk<K: KeyGen>(
        keys: K,
        s: &Src<'_>,
        out: &mut [bool],
        key: i32,
        count: &mut usize,
        keep: bool,
        backward: bool,
    ) {
        let n = s.len();
        for t in 0..n {
            let i = if backward { n - 1 - t } else { t };
            if keys.key(i) == key && s.is_candidate(i) {
                out[i] = keep;
                *count -= 1;
                if *count == 0 {
                    return;
                }
            }
        }
    }
    let mut count = count;
    for t in 0..srcs.len() {
        if count == 0 {
            return;
        }
        let i = if backward { srcs.len() - 1 - t } else { t };
        let s = &srcs[i];
        with_keys!(s, k => walk(k, s, outs[i].as_mut(), key, &mut count, keep, backward));
    }
    // Fewer ties than counted only happens with other sources than the cut was selected from
    // (see `Cut::write_masks`): the flags written are then the cut applied to those sources.
}
