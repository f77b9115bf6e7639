//! Compaction: channel removals applied for real (a smaller dense network) or as masks.

use std::collections::BTreeMap;

use ndarray::{ArrayD, Axis};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::groups::{DependencyGroups, Group};
use crate::error::{Error, Result};
use crate::graph::{Layer, Network, ParamRole};
use crate::mask::{Mask, MaskSet};
use crate::params::Params;

/// Channels to remove from one dependency group: data, as a plan holds it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ChannelRemoval {
    /// The group's name ([`Group::name`]).
    pub group: String,
    /// The units removed, ascending.
    pub channels: Vec<usize>,
}

/// Per tensor, per axis: which indices survive.
type Keeps = BTreeMap<String, Vec<(usize, Vec<bool>)>>;

impl DependencyGroups {
    /// Checks `removals` against the groups and returns, per affected tensor and axis, the
    /// indices that survive.
    fn keeps(&self, net: &Network, removals: &[ChannelRemoval]) -> Result<Keeps> {
        let mut keeps = Keeps::new();
        let mut seen = Vec::with_capacity(removals.len());
        for r in removals {
            let g = self.get(&r.group).ok_or_else(|| {
                Error::invalid(
                    "channel removal",
                    format!("no dependency group `{}`", r.group),
                )
            })?;
            if seen.contains(&g.name()) {
                return Err(Error::invalid(
                    "channel removal",
                    format!("group `{}` is listed twice", g.name()),
                ));
            }
            seen.push(g.name());
            let removed = unit_flags(g, &r.channels)?;
            if removed.iter().all(|&x| !x) {
                continue;
            }
            for s in g.slices() {
                let tensor = net
                    .params()
                    .get(&s.tensor)
                    .ok_or_else(|| Error::UnknownTensor {
                        name: s.tensor.clone(),
                    })?;
                let len = s.len;
                if tensor.shape().get(s.axis) != Some(&len) {
                    return Err(Error::invalid(
                        "channel removal",
                        format!(
                            "`{}` has shape {:?}, but group `{}` needs {len} along axis {}: the \
                             groups were made for another network",
                            s.tensor,
                            tensor.shape(),
                            g.name(),
                            s.axis
                        ),
                    ));
                }
                let units = g.channels();
                let keep: Vec<bool> = (0..len).map(|i| !removed[s.unit_of(i, units)]).collect();
                keeps
                    .entry(s.tensor.clone())
                    .or_default()
                    .push((s.axis, keep));
            }
        }
        Ok(keeps)
    }

    /// The network with the channels of `removals` physically removed: every coupled slice is
    /// cut out, and the spec's `in_features`, `out_features`, `in_channels`, `out_channels`,
    /// `groups` (depthwise) and `num_features` are updated. On the kept channels it computes
    /// what the [masked equivalent](DependencyGroups::masks) computes.
    ///
    /// ```
    /// use ndarray::{ArrayD, IxDyn};
    /// use shears::graph::Network;
    /// use shears::structure::{ChannelRemoval, DependencyGroups};
    ///
    /// let net = Network::builder(&[4]).linear("fc1", 4, 8).relu("act").linear("fc2", 8, 2).build_init(3)?;
    /// let groups = DependencyGroups::of(&net)?;
    /// let removals = [ChannelRemoval { group: "fc1".into(), channels: vec![0, 5, 6] }];
    /// let small = groups.compact(&net, &removals)?;
    /// assert_eq!(small.params().get("fc2.weight").unwrap().shape(), &[2, 5]);
    ///
    /// let mut masked = net.clone();
    /// masked.apply_masks(&groups.masks(&net, &removals)?)?;
    /// let x = ArrayD::from_shape_fn(IxDyn(&[3, 4]), |i| (i[0] + i[1]) as f32 * 0.3 - 0.5);
    /// let (a, b) = (small.forward(x.view())?, masked.forward(x.view())?);
    /// assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-6));
    /// # Ok::<(), shears::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an unknown or blocked group, a channel out of range, a
    /// group listed twice, a removal of every channel of a group (naming the layer it would
    /// empty), or groups made for another network.
    pub fn compact(&self, net: &Network, removals: &[ChannelRemoval]) -> Result<Network> {
        let keeps = self.keeps(net, removals)?;
        let mut params = Params::new();
        for (name, tensor) in net.params().iter() {
            let mut t = tensor.clone();
            for (axis, keep) in keeps.get(name).into_iter().flatten() {
                let idx: Vec<usize> = (0..keep.len()).filter(|&i| keep[i]).collect();
                t = t.select(Axis(*axis), &idx);
            }
            params.insert(name, t);
        }
        let mut spec = net.spec().clone();
        for node in &mut spec.nodes {
            let shape = |role: ParamRole| {
                params
                    .get(&format!("{}.{}", node.name, role.suffix()))
                    .map(|t| t.shape().to_vec())
            };
            let (Some(w), layer) = (shape(ParamRole::Weight), &mut node.layer) else {
                continue;
            };
            match layer {
                Layer::Linear(l) => (l.out_features, l.in_features) = (w[0], w[1]),
                Layer::Conv1d(c) => {
                    (c.in_channels, c.groups) =
                        conv_inputs(c.in_channels, c.groups, c.out_channels, &w);
                    c.out_channels = w[0];
                }
                Layer::Conv2d(c) => {
                    (c.in_channels, c.groups) =
                        conv_inputs(c.in_channels, c.groups, c.out_channels, &w);
                    c.out_channels = w[0];
                }
                Layer::BatchNorm1d(b) | Layer::BatchNorm2d(b) => b.num_features = w[0],
                _ => {}
            }
        }
        Network::new(spec, params)
    }

    /// The masked equivalent of [`DependencyGroups::compact`]: keep-masks that zero every
    /// trainable slice of the removed channels (producer rows and biases, normalisation weights
    /// and biases, consumer columns), for comparison with the compacted network and for
    /// mask-preserving fine-tuning. BatchNorm's running statistics are buffers, not masked: with
    /// its weight and bias zeroed, a removed channel's BatchNorm output is zero anyway.
    ///
    /// The parameters it prunes are exactly those compaction removes.
    ///
    /// # Errors
    /// As [`DependencyGroups::compact`].
    pub fn masks(&self, net: &Network, removals: &[ChannelRemoval]) -> Result<MaskSet> {
        let keeps = self.keeps(net, removals)?;
        let trainable: BTreeMap<&str, bool> = self
            .groups()
            .iter()
            .flat_map(|g| g.slices())
            .map(|s| (s.tensor.as_str(), s.param.is_trainable()))
            .collect();
        let mut masks = MaskSet::new();
        for (name, axes) in &keeps {
            if !trainable.get(name.as_str()).copied().unwrap_or(false) {
                continue;
            }
            let shape = net.params().get(name).expect("checked by keeps").shape();
            let mut keep = ArrayD::from_elem(shape, true);
            for (axis, flags) in axes {
                for (i, _) in flags.iter().enumerate().filter(|(_, k)| !**k) {
                    keep.index_axis_mut(Axis(*axis), i).fill(false);
                }
            }
            masks.insert(name.clone(), Mask::from_array(keep));
        }
        Ok(masks)
    }
}

/// `(in_channels, groups)` of a convolution whose weight became `w`: a depthwise convolution
/// keeps one input channel per group, any other keeps its groups.
fn conv_inputs(cin: usize, groups: usize, cout: usize, w: &[usize]) -> (usize, usize) {
    if groups > 1 && groups == cin {
        let groups = w[0] / (cout / cin);
        (groups, groups)
    } else {
        (w[1] * groups, groups)
    }
}

/// The removed-unit flags of `g` for `channels`, refusing what cannot be done.
fn unit_flags(g: &Group, channels: &[usize]) -> Result<Vec<bool>> {
    if let Some(why) = g.blocked() {
        return Err(Error::invalid(
            "channel removal",
            format!("group `{}` cannot be pruned: {why}", g.name()),
        ));
    }
    let mut removed = vec![false; g.channels()];
    for &c in channels {
        if c >= g.channels() {
            return Err(Error::invalid(
                "channel removal",
                format!(
                    "channel {c} is out of range for group `{}` of {} channels",
                    g.name(),
                    g.channels()
                ),
            ));
        }
        removed[c] = true;
    }
    if removed.iter().all(|&r| r) {
        return Err(Error::invalid(
            "channel removal",
            format!(
                "removing all {} channels of group `{}` would leave layer `{}` with zero channels",
                g.channels(),
                g.name(),
                g.producers().join("`, `")
            ),
        ));
    }
    Ok(removed)
}
