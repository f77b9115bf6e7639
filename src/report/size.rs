//! What a network costs to store and to run: parameters, non-zeros, bytes and FLOPs, with or
//! without masks.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::graph::{Layer, Network};
use crate::mask::{Mask, MaskSet};

/// Size and cost of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct NodeSize {
    /// The node's name.
    pub node: String,
    /// Trainable parameters (weights and biases).
    pub params: usize,
    /// Trainable parameters that are kept by the masks and not zero.
    pub nonzero: usize,
    /// FLOPs per sample of the dense node ([`Network::node_flops`]).
    pub flops_dense: u64,
    /// FLOPs per sample with pruned weights skipped (see [`ModelSize`]).
    pub flops: u64,
}

/// What a network costs to store and to run, as a pruning report needs it.
///
/// - `params`: trainable parameters (PyTorch's `sum(p.numel() for p in parameters())`);
///   `buffers`: the other stored values (BatchNorm's running statistics).
/// - `nonzero`: trainable parameters that are kept by the masks (when given) and not zero.
/// - `bytes_dense`: `4 · (params + buffers)`, every stored value as `f32`: what an `f32`
///   checkpoint's tensor data takes. Applied to a compacted (physically smaller) network it is
///   the compact size.
/// - `bytes_csr` (feature `sparse`, else `None`): the weights of Linear and Conv nodes stored as
///   CSR matrices of their `[out, fan_in]` reshape with `u32` indices (`4 · (out + 1)` bytes of
///   row pointers, `4 · nnz` of column indices, `4 · nnz` of values; see
///   `csr_weights`, feature `sparse`), every other tensor dense as above.
/// - `flops_dense`, `flops`: FLOPs per sample (the [graph convention](crate::graph): a
///   multiply-accumulate counts 2). In `flops`, a pruned or zero weight's multiply-accumulates
///   are skipped: a Linear or Conv node costs `2 · nnz(weight) · positions`, plus one addition
///   per output for a bias, where `positions` is the number of output values per output channel
///   (1 for a Linear on `[F]` inputs). This is the dense count with its multiply-accumulate part
///   scaled by the weight's density; other nodes cost what they cost dense.
///
/// ```
/// use shears::graph::Network;
/// use shears::report::ModelSize;
/// use shears::{Mask, MaskSet};
///
/// let net = Network::builder(&[4]).linear("fc", 4, 2).build_init(0)?;
/// let dense = ModelSize::of(&net, None)?;
/// assert_eq!((dense.params, dense.bytes_dense), (10, 40));
/// assert_eq!(dense.flops, 2 * (2 * 4 + 1));
///
/// // Prune 6 of the 8 weights: 2 MACs and 2 bias additions remain.
/// let keep = [true, false, false, false, false, false, false, true];
/// let masks: MaskSet = [("fc.weight", Mask::from_vec(&[2, 4], keep.to_vec())?)].into_iter().collect();
/// let pruned = ModelSize::of(&net, Some(&masks))?;
/// assert_eq!((pruned.nonzero, pruned.flops), (4, 2 * 2 + 2));
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ModelSize {
    /// Trainable parameters.
    pub params: usize,
    /// Stored non-trainable values (BatchNorm running statistics).
    pub buffers: usize,
    /// Trainable parameters kept and non-zero.
    pub nonzero: usize,
    /// Bytes of every stored value as `f32`.
    pub bytes_dense: usize,
    /// Bytes with Linear and Conv weights as `u32`-indexed CSR (feature `sparse`).
    pub bytes_csr: Option<usize>,
    /// FLOPs per sample, dense.
    pub flops_dense: u64,
    /// FLOPs per sample with pruned weights skipped.
    pub flops: u64,
    /// Per node, in node order.
    pub nodes: Vec<NodeSize>,
}

impl ModelSize {
    /// Measures `net`, with `masks` (if any) marking pruned weights that the parameters may
    /// still hold.
    ///
    /// # Errors
    /// [`crate::Error::UnknownTensor`] or [`crate::Error::ShapeMismatch`] for a mask that fits
    /// no parameter; [`crate::Error::InvalidParameter`] (feature `sparse`) for a weight too large
    /// for `u32` CSR indices.
    pub fn of(net: &Network, masks: Option<&MaskSet>) -> Result<Self> {
        if let Some(masks) = masks {
            masks.check(net.params())?;
        }
        let mask = |name: &str| masks.and_then(|m| m.get(name));
        let mut size = ModelSize {
            params: 0,
            buffers: 0,
            nonzero: 0,
            bytes_dense: 0,
            bytes_csr: None,
            flops_dense: net.flops(),
            flops: 0,
            nodes: Vec::with_capacity(net.nodes().len()),
        };
        for (i, node) in net.nodes().iter().enumerate() {
            let mut entry = NodeSize {
                node: node.name.clone(),
                params: 0,
                nonzero: 0,
                flops_dense: net.node_flops()[i],
                flops: net.node_flops()[i],
            };
            for spec in node.layer.param_specs() {
                let name = format!("{}.{}", node.name, spec.role.suffix());
                let values = net.params().slice(&name).unwrap_or_default();
                if spec.role.is_trainable() {
                    entry.params += values.len();
                    entry.nonzero += count_nonzero(values, mask(&name));
                } else {
                    size.buffers += values.len();
                }
            }
            if let Some(weight) = prunable_weight(net, i) {
                let values = net.params().slice(&weight).unwrap_or_default();
                let nnz = count_nonzero(values, mask(&weight)) as u64;
                let out = net.params().get(&weight).map_or(1, |w| w.shape()[0]);
                let outputs: u64 = net.output_shapes()[i].iter().map(|&d| d as u64).product();
                let positions = outputs / out.max(1) as u64;
                let bias = if has_bias(&node.layer) { outputs } else { 0 };
                entry.flops = nnz
                    .saturating_mul(2)
                    .saturating_mul(positions)
                    .saturating_add(bias);
            }
            size.params += entry.params;
            size.nonzero += entry.nonzero;
            size.flops = size.flops.saturating_add(entry.flops);
            size.nodes.push(entry);
        }
        size.bytes_dense = 4 * (size.params + size.buffers);
        #[cfg(feature = "sparse")]
        {
            let csr = super::csr_weights(net, masks)?;
            let mut bytes = size.bytes_dense;
            for (name, m) in &csr {
                let dense = net.params().get(name).map_or(0, |w| w.len());
                bytes = bytes - 4 * dense + super::csr_bytes(m);
            }
            size.bytes_csr = Some(bytes);
        }
        Ok(size)
    }

    /// Fraction of the trainable parameters that are pruned or zero.
    pub fn sparsity(&self) -> f64 {
        if self.params == 0 {
            0.0
        } else {
            1.0 - self.nonzero as f64 / self.params as f64
        }
    }
}

/// `{node}.weight` of a Linear or Conv node: the weights whose pruning skips work.
pub(super) fn prunable_weight(net: &Network, index: usize) -> Option<String> {
    let node = &net.nodes()[index];
    matches!(
        node.layer,
        Layer::Linear(_) | Layer::Conv1d(_) | Layer::Conv2d(_)
    )
    .then(|| format!("{}.weight", node.name))
}

fn has_bias(layer: &Layer) -> bool {
    match layer {
        Layer::Linear(l) => l.bias,
        Layer::Conv1d(c) => c.bias,
        Layer::Conv2d(c) => c.bias,
        _ => false,
    }
}

/// Values that are kept (by `mask`, when given) and not zero.
pub(super) fn count_nonzero(values: &[f32], mask: Option<&Mask>) -> usize {
    match mask {
        None => values.iter().filter(|&&v| v != 0.0).count(),
        Some(m) => values
            .iter()
            .zip(m.as_slice())
            .filter(|&(&v, &keep)| keep && v != 0.0)
            .count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Conv1d, Linear};
    use crate::params::Params;
    use ndarray::array;

    /// conv (2 -> 3 channels, kernel 2, no bias) on [2, 5] samples, BatchNorm, ReLU, global pool,
    /// Linear 3 -> 2 with bias.
    fn tiny() -> Network {
        Network::builder(&[2, 5])
            .conv1d("conv", Conv1d::new(2, 3, 2).bias(false))
            .batch_norm1d("bn", 3)
            .relu("relu")
            .global_avg_pool("gap")
            .layer("fc", Linear::new(3, 2))
            .build_init(0)
            .unwrap()
    }

    #[test]
    fn dense_counts_by_hand() {
        let size = ModelSize::of(&tiny(), None).unwrap();
        // conv 3·2·2 = 12, bn weight + bias 6 (+ 6 buffers), fc 3·2 + 2 = 8.
        assert_eq!((size.params, size.buffers), (26, 6));
        assert_eq!(size.bytes_dense, 4 * 32);
        assert_eq!(size.nonzero, 26 - 3, "BatchNorm starts with β = 0");
        // conv: 3 channels x 4 positions x (2 · 4 MACs); bn 2 · 12; relu 12; gap 12;
        // fc 2 x (2 · 3 + 1).
        let flops = [3 * 4 * 8, 24, 12, 12, 14];
        assert_eq!(
            size.nodes.iter().map(|n| n.flops).collect::<Vec<_>>(),
            flops
        );
        assert_eq!(size.flops, flops.iter().sum::<u64>());
        assert_eq!(size.flops, size.flops_dense);
    }

    #[test]
    fn masks_and_zeros_reduce_nonzeros_and_flops() {
        let mut net = tiny();
        // One conv weight already zero in the parameters...
        net.params_mut().get_mut("conv.weight").unwrap()[[0, 0, 0]] = 0.0;
        // ... and a mask pruning output channel 2 (4 weights) and one fc weight.
        let mut conv = vec![true; 12];
        conv[8..].fill(false);
        let mut fc = vec![true; 6];
        fc[0] = false;
        let masks: MaskSet = [
            ("conv.weight", Mask::from_vec(&[3, 2, 2], conv).unwrap()),
            ("fc.weight", Mask::from_vec(&[2, 3], fc).unwrap()),
        ]
        .into_iter()
        .collect();
        let size = ModelSize::of(&net, Some(&masks)).unwrap();
        // BatchNorm's β starts at zero: 3 zeros there too.
        assert_eq!(size.nonzero, 26 - 1 - 4 - 1 - 3);
        assert_eq!(size.nodes[0].nonzero, 7);
        assert_eq!(size.nodes[0].flops, 2 * 7 * 4);
        assert_eq!(size.nodes[4].flops, 2 * 5 + 2);
        assert_eq!(
            size.bytes_dense,
            4 * 32,
            "masks do not shrink dense storage"
        );
        assert!((size.sparsity() - 9.0 / 26.0).abs() < 1e-12);

        let stray: MaskSet = [("nope", Mask::ones(&[1]))].into_iter().collect();
        assert!(ModelSize::of(&net, Some(&stray)).is_err());
    }

    #[test]
    fn linear_over_tokens_counts_positions() {
        let mut params = Params::new();
        params.insert("fc.weight", array![[1.0_f32, 0.0], [2.0, 3.0]].into_dyn());
        let net = Network::builder(&[5, 2])
            .layer("fc", Linear::new(2, 2).bias(false))
            .build(params)
            .unwrap();
        let size = ModelSize::of(&net, None).unwrap();
        // 5 tokens x 3 non-zero weights x 2.
        assert_eq!((size.flops, size.flops_dense), (30, 40));
    }

    #[cfg(feature = "sparse")]
    #[test]
    fn csr_bytes_by_hand() {
        let mut net = tiny();
        let masks: MaskSet = [(
            "conv.weight",
            Mask::from_vec(&[3, 2, 2], (0..12).map(|i| i % 3 == 0).collect()).unwrap(),
        )]
        .into_iter()
        .collect();
        net.params_mut().get_mut("fc.weight").unwrap()[[1, 2]] = 0.0;
        let size = ModelSize::of(&net, Some(&masks)).unwrap();
        // conv: 4 kept of 12 -> (3 + 1) row pointers + 4 indices + 4 values = 12 words;
        // fc: 5 non-zeros of 6 -> 3 + 5 + 5 = 13 words; the rest dense: bn 12, fc bias 2.
        assert_eq!(size.bytes_csr, Some(4 * (12 + 13 + 12 + 2)));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::graph::Conv1d;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Masks never add cost: non-zeros and FLOPs fall as more is pruned, storage as dense
        /// stays, and all-kept masks change nothing.
        #[test]
        fn pruning_only_removes_cost(keep in proptest::collection::vec(any::<bool>(), 4 * 3 * 3 + 4 * 2)) {
            let net = Network::builder(&[3, 8])
                .conv1d("conv", Conv1d::new(3, 4, 3))
                .global_avg_pool("gap")
                .linear("fc", 4, 2)
                .build_init(5)
                .unwrap();
            let dense = ModelSize::of(&net, None).unwrap();
            let all: MaskSet = [("conv.weight", Mask::ones(&[4, 3, 3])), ("fc.weight", Mask::ones(&[2, 4]))]
                .into_iter()
                .collect();
            prop_assert_eq!(&ModelSize::of(&net, Some(&all)).unwrap(), &dense);
            let masks: MaskSet = [
                ("conv.weight", Mask::from_vec(&[4, 3, 3], keep[..36].to_vec()).unwrap()),
                ("fc.weight", Mask::from_vec(&[2, 4], keep[36..].to_vec()).unwrap()),
            ]
            .into_iter()
            .collect();
            let pruned = ModelSize::of(&net, Some(&masks)).unwrap();
            let kept = keep.iter().filter(|&&k| k).count();
            prop_assert_eq!(pruned.nonzero, kept + 4 + 2, "biases stay");
            prop_assert!(pruned.flops <= dense.flops);
            prop_assert_eq!(pruned.bytes_dense, dense.bytes_dense);
            prop_assert_eq!(pruned.flops_dense, dense.flops_dense);
            // conv: 6 positions, fc: 1.
            let conv_kept = keep[..36].iter().filter(|&&k| k).count() as u64;
            prop_assert_eq!(pruned.nodes[0].flops, 2 * conv_kept * 6 + 4 * 6);
            if let (Some(csr), Some(dense_csr)) = (pruned.bytes_csr, dense.bytes_csr) {
                prop_assert!(csr <= dense_csr);
            }
        }
    }
}
