//! The only place that knows whether rayon is there: small parallel skeletons that the kernels
//! share, each with a sequential twin for `--no-default-features`.
//!
//! Every skeleton combines results in a fixed order (or with an order-free operation such as an
//! integer sum or a maximum), so results never depend on the number of threads.

use crate::error::{Error, Result};

#[cfg(feature = "rayon")]
use rayon::prelude::*;

/// Number of threads the kernels may use.
pub(crate) fn threads() -> usize {
    #[cfg(feature = "rayon")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "rayon"))]
    {
        1
    }
}

/// `f(0), …, f(n - 1)`, computed in parallel, in order.
pub(crate) fn map_parts<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    #[cfg(feature = "rayon")]
    {
        (0..n).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        (0..n).map(f).collect()
    }
}

/// Runs `f(i, &mut items[i])` for every item, in parallel, and returns the largest result.
pub(crate) fn each_max<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) -> u32 + Sync) -> u32 {
    #[cfg(feature = "rayon")]
    {
        items
            .par_iter_mut()
            .enumerate()
            .map(|(i, t)| f(i, t))
            .max()
            .unwrap_or(0)
    }
    #[cfg(not(feature = "rayon"))]
    {
        items
            .iter_mut()
            .enumerate()
            .map(|(i, t)| f(i, t))
            .max()
            .unwrap_or(0)
    }
}

/// Runs `f(start, chunk)` over consecutive chunks of `chunk` elements of `out`, in parallel, and
/// returns the largest result.
pub(crate) fn chunks_max<T: Send>(
    out: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) -> u32 + Sync + Send,
) -> u32 {
    #[cfg(feature = "rayon")]
    {
        out.par_chunks_mut(chunk)
            .enumerate()
            .map(|(c, o)| f(c * chunk, o))
            .max()
            .unwrap_or(0)
    }
    #[cfg(not(feature = "rayon"))]
    {
        out.chunks_mut(chunk)
            .enumerate()
            .map(|(c, o)| f(c * chunk, o))
            .max()
            .unwrap_or(0)
    }
}

/// Runs `f(scratch, g, group)` over consecutive groups of `group_len` elements of `out`, in
/// parallel, with a scratch vector per worker. Returns the error of the first failing group in
/// group order, so that errors do not depend on scheduling.
pub(crate) fn groups<T: Send>(
    out: &mut [T],
    group_len: usize,
    f: impl Fn(&mut Vec<u64>, usize, &mut [T]) -> Result<()> + Sync + Send,
) -> Result<()> {
    let first: Option<(usize, Error)>;
    #[cfg(feature = "rayon")]
    {
        first = out
            .par_chunks_mut(group_len)
            .enumerate()
            .map_init(Vec::new, |scratch, (g, o)| {
                f(scratch, g, o).err().map(|e| (g, e))
            })
            .flatten()
            .min_by_key(|(g, _)| *g);
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = Vec::new();
        first = out
            .chunks_mut(group_len)
            .enumerate()
            .find_map(|(g, o)| f(&mut scratch, g, o).err().map(|e| (g, e)));
    }
    first.map_or(Ok(()), |(_, e)| Err(e))
}
