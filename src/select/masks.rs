//! Keep-flags from a cut: one parallel pass that compares keys, then, only when tied keys
//! straddle the cut, a walk over the ties in (source, flat index) order.

use super::keys::{BLOCK, NON_FINITE_BITS, Src, non_finite_error};
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
    keep_above: Option<u32>,
) -> Result<()> {
    let max = par::each_max(outs, |i, out| {
        let s = &srcs[i];
        par::chunks_max(out.as_mut(), CHUNK, |from, out| {
            s.blocks(from..from + out.len(), |start, keys, kept| {
                let out = &mut out[start - from..start - from + keys.len()];
                match (kept, keep_above) {
                    (None, None) => out.fill(true),
                    (Some(f), None) => out.copy_from_slice(f),
                    (None, Some(t)) => {
                        for (o, &key) in out.iter_mut().zip(keys) {
                            *o = key > t;
                        }
                    }
                    (Some(f), Some(t)) => {
                        for ((o, &key), &f) in out.iter_mut().zip(keys).zip(f) {
                            *o = f & (key > t);
                        }
                    }
                }
            })
        })
    });
    if max >= NON_FINITE_BITS {
        Err(non_finite_error(srcs))
    } else {
        Ok(())
    }
}

/// Sets the flag of `count` candidates whose key is `key` to `keep`: the first ones in
/// (source, flat index) order, or the last ones when `backward`.
pub(crate) fn walk_ties<O: AsMut<[bool]>>(
    srcs: &[Src<'_>],
    outs: &mut [O],
    key: u32,
    mut count: usize,
    keep: bool,
    backward: bool,
) {
    if count == 0 {
        return;
    }
    // The `t`-th of `n` items in walking order.
    let nth = |n: usize, t: usize| if backward { n - 1 - t } else { t };
    let mut buf = [0u32; BLOCK];
    for t in 0..srcs.len() {
        let i = nth(srcs.len(), t);
        let (s, out) = (&srcs[i], outs[i].as_mut());
        let blocks = s.len().div_ceil(BLOCK);
        for tb in 0..blocks {
            let start = nth(blocks, tb) * BLOCK;
            let keys = &mut buf[..BLOCK.min(s.len() - start)];
            s.keys.fill(start, keys);
            if !keys.iter().fold(false, |any, &k| any | (k == key)) {
                continue;
            }
            for tj in 0..keys.len() {
                let j = nth(keys.len(), tj);
                if keys[j] == key && s.is_candidate(start + j) {
                    out[start + j] = keep;
                    count -= 1;
                    if count == 0 {
                        return;
                    }
                }
            }
        }
    }
    debug_assert_eq!(count, 0, "fewer ties than the cut counted");
}
