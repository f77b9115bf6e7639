//! Pruned weights as CSR matrices (feature `sparse`): what a sparse runtime would store.

use sprs::CsMatI;

use super::size::{count_nonzero, prunable_weight};
use crate::error::{Error, Result};
use crate::graph::Network;
use crate::mask::MaskSet;

/// The weight of every Linear and Conv node as a CSR matrix of its `[out, fan_in]` reshape
/// (PyTorch layout, row-major, so rows are output channels), with `u32` indices. Pruned
/// elements (by `masks`, when given) and zeros are left out. In node order, by parameter name.
///
/// ```
/// use shears::graph::Network;
/// use shears::report::{csr_bytes, csr_weights};
///
/// let mut net = Network::builder(&[3]).linear("fc", 3, 2).build_init(0)?;
/// net.params_mut().get_mut("fc.weight").unwrap()[[0, 1]] = 0.0;
/// let csr = csr_weights(&net, None)?;
/// let (name, w) = &csr[0];
/// assert_eq!((name.as_str(), w.shape(), w.nnz()), ("fc.weight", (2, 3), 5));
/// assert_eq!(w.indices()[..2], [0, 2]);
/// // 3 row pointers, 5 column indices and 5 values, 4 bytes each.
/// assert_eq!(csr_bytes(w), 4 * (3 + 5 + 5));
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
/// [`Error::UnknownTensor`] or [`Error::ShapeMismatch`] for a mask that fits no parameter;
/// [`Error::InvalidParameter`] for a weight whose row length or non-zero count does not fit
/// `u32` indices.
pub fn csr_weights(
    net: &Network,
    masks: Option<&MaskSet>,
) -> Result<Vec<(String, CsMatI<f32, u32>)>> {
    if let Some(masks) = masks {
        masks.check(net.params())?;
    }
    let too_large = |name: &str, what: &str| {
        Error::invalid(
            "csr weights",
            format!("`{name}` has more {what} than u32 indices can address"),
        )
    };
    (0..net.nodes().len())
        .filter_map(|i| prunable_weight(net, i))
        .map(|name| {
            let w = net
                .params()
                .get(&name)
                .ok_or_else(|| Error::UnknownTensor { name: name.clone() })?;
            let values = net.params().slice(&name).unwrap_or_default();
            let mask = masks.and_then(|m| m.get(&name)).map(|m| m.as_slice());
            let rows = w.shape()[0];
            let cols = values.len() / rows.max(1);
            if u32::try_from(cols).is_err() {
                return Err(too_large(&name, "columns"));
            }
            let nnz = count_nonzero(values, masks.and_then(|m| m.get(&name)));
            if u32::try_from(nnz).is_err() {
                return Err(too_large(&name, "non-zeros"));
            }
            let mut indptr = Vec::with_capacity(rows + 1);
            let (mut indices, mut data) = (Vec::with_capacity(nnz), Vec::with_capacity(nnz));
            indptr.push(0u32);
            for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    let kept = mask.is_none_or(|m| m[r * cols + c]);
                    if kept && v != 0.0 {
                        indices.push(c as u32);
                        data.push(v);
                    }
                }
                indptr.push(data.len() as u32);
            }
            let m = CsMatI::try_new((rows, cols), indptr, indices, data)
                .map_err(|(_, _, _, e)| Error::invalid("csr weights", format!("`{name}`: {e}")))?;
            Ok((name, m))
        })
        .collect()
}

/// Bytes a CSR matrix with `u32` indices and `f32` values stores: row pointers, column
/// indices and values.
pub fn csr_bytes(m: &CsMatI<f32, u32>) -> usize {
    4 * (m.indptr().raw_storage().len() + m.indices().len() + m.data().len())
}
