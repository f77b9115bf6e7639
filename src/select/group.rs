//! Per-group exact-k selection: consecutive runs of a tensor ranked separately (rows of a
//! `[rows, group_len]` matrix, as Wanda ranks each output row).

use super::keys::Src;
use super::radix::Path;
use super::{Source, par, prune_into};
use crate::error::{Error, Result};

/// See [`super::prune_k_per_group`].
pub(crate) fn prune_k_per_group(
    source: &Source<'_>,
    group_len: usize,
    count: &(dyn Fn(usize) -> Result<usize> + Sync),
) -> Result<Vec<bool>> {
    let src = Src::new(source)?;
    let len = src.len();
    if group_len == 0 || len % group_len != 0 {
        return Err(Error::invalid(
            "group length",
            format!(
                "{group_len} does not divide the {len} elements of `{}`",
                src.name
            ),
        ));
    }
    let mut out = vec![false; len];
    par::groups(&mut out, group_len, |scratch, g, out| {
        let group = [src.slice(g * group_len..(g + 1) * group_len)];
        let k = count(group[0].candidates())?;
        let scope = || format!("{}[{g}]", src.name);
        prune_into(&group, k, &scope, scratch, Path::Auto, &mut [out])
    })?;
    Ok(out)
}
