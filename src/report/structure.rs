//! What physical compaction gained: parameters, FLOPs and bytes before and after, per node.

use std::fmt;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::Network;

/// A quantity before and after compaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Change {
    /// In the original network.
    pub before: u64,
    /// In the compacted network.
    pub after: u64,
}

impl Change {
    /// `after / before` (1 when `before` is 0).
    pub fn ratio(&self) -> f64 {
        if self.before == 0 {
            1.0
        } else {
            self.after as f64 / self.before as f64
        }
    }

    fn add(&mut self, other: Change) {
        self.before += other.before;
        self.after += other.after;
    }
}

/// One node of a [`StructureReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct NodeChange {
    /// The node's name.
    pub node: String,
    /// Trainable parameters.
    pub params: Change,
    /// FLOPs per sample ([graph convention](crate::graph)).
    pub flops: Change,
    /// Bytes of every stored value (parameters and buffers) as `f32`.
    pub bytes: Change,
}

/// Parameters, FLOPs and bytes of a network before and after compaction
/// ([`DependencyGroups::compact`](crate::structure::DependencyGroups::compact)), per node and in
/// total. Bytes are `4 ·` stored values, what an `f32` checkpoint's tensor data takes.
///
/// ```
/// use shears::graph::Network;
/// use shears::report::StructureReport;
/// use shears::structure::{ChannelRemoval, DependencyGroups};
///
/// let net = Network::builder(&[4]).linear("fc1", 4, 8).relu("act").linear("fc2", 8, 2).build_init(0)?;
/// let removals = [ChannelRemoval { group: "fc1".into(), channels: vec![0, 1, 2, 3] }];
/// let small = DependencyGroups::of(&net)?.compact(&net, &removals)?;
/// let report = StructureReport::new(&net, &small)?;
/// assert_eq!((report.params.before, report.params.after), (58, 30));
/// assert_eq!(report.bytes.after, 4 * 30);
/// assert_eq!(report.nodes[0].flops.after, 4 * (2 * 4 + 1));
/// println!("{report}");
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct StructureReport {
    /// Per node, in node order.
    pub nodes: Vec<NodeChange>,
    /// Total trainable parameters.
    pub params: Change,
    /// Total FLOPs per sample.
    pub flops: Change,
    /// Total bytes as `f32`.
    pub bytes: Change,
}

impl StructureReport {
    /// Compares `before` with its compacted form `after`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when the two networks do not have the same nodes.
    pub fn new(before: &Network, after: &Network) -> Result<Self> {
        let names = |n: &Network| n.nodes().iter().map(|n| n.name.clone()).collect::<Vec<_>>();
        if names(before) != names(after) {
            return Err(Error::invalid(
                "structure report",
                "the networks do not have the same nodes: compare a network with its compacted form",
            ));
        }
        let mut report = StructureReport {
            nodes: Vec::with_capacity(before.nodes().len()),
            params: Change::default(),
            flops: Change::default(),
            bytes: Change::default(),
        };
        for (i, node) in before.nodes().iter().enumerate() {
            let (pb, sb) = node_values(before, i);
            let (pa, sa) = node_values(after, i);
            let entry = NodeChange {
                node: node.name.clone(),
                params: Change {
                    before: pb,
                    after: pa,
                },
                flops: Change {
                    before: before.node_flops()[i],
                    after: after.node_flops()[i],
                },
                bytes: Change {
                    before: 4 * sb,
                    after: 4 * sa,
                },
            };
            report.params.add(entry.params);
            report.flops.add(entry.flops);
            report.bytes.add(entry.bytes);
            report.nodes.push(entry);
        }
        Ok(report)
    }
}

/// Trainable and stored values of node `i`.
fn node_values(net: &Network, i: usize) -> (u64, u64) {
    let mut trainable = 0;
    let mut stored = 0;
    for name in net.param_names(i) {
        let n = net.params().get(name).map_or(0, |t| t.len()) as u64;
        stored += n;
        if name.ends_with(".weight") || name.ends_with(".bias") {
            trainable += n;
        }
    }
    (trainable, stored)
}

impl fmt::Display for StructureReport {
    /// A table: one line per node with parameters, FLOPs and bytes before → after, then the
    /// totals with the fraction kept.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .nodes
            .iter()
            .map(|n| n.node.len())
            .max()
            .unwrap_or(4)
            .max(5);
        writeln!(
            f,
            "{:<width$}  {:>21}  {:>25}  {:>21}",
            "node", "params", "FLOPs", "bytes"
        )?;
        let cell = |c: Change| format!("{} → {}", c.before, c.after);
        for n in &self.nodes {
            writeln!(
                f,
                "{:<width$}  {:>21}  {:>25}  {:>21}",
                n.node,
                cell(n.params),
                cell(n.flops),
                cell(n.bytes)
            )?;
        }
        write!(
            f,
            "{:<width$}  {:>21}  {:>25}  {:>21}\n{:<width$}  {:>20.1}%  {:>24.1}%  {:>20.1}%",
            "total",
            cell(self.params),
            cell(self.flops),
            cell(self.bytes),
            "kept",
            100.0 * self.params.ratio(),
            100.0 * self.flops.ratio(),
            100.0 * self.bytes.ratio()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Conv1d;
    use crate::structure::{ChannelRemoval, DependencyGroups};

    #[test]
    fn counts_buffers_in_bytes_and_refuses_other_networks() {
        let net = Network::builder(&[2, 8])
            .conv1d("conv", Conv1d::new(2, 4, 3))
            .batch_norm1d("bn", 4)
            .global_avg_pool("gap")
            .linear("fc", 4, 2)
            .build_init(0)
            .unwrap();
        let removals = [ChannelRemoval {
            group: "conv".into(),
            channels: vec![1],
        }];
        let small = DependencyGroups::of(&net)
            .unwrap()
            .compact(&net, &removals)
            .unwrap();
        let r = StructureReport::new(&net, &small).unwrap();
        let bn = &r.nodes[1];
        assert_eq!((bn.params.before, bn.params.after), (8, 6));
        assert_eq!((bn.bytes.before, bn.bytes.after), (4 * 16, 4 * 12));
        assert_eq!(r.params.after as usize, small.num_params());
        assert_eq!(r.flops.after, small.flops());
        let table = r.to_string();
        assert!(
            table.contains("total") && table.contains("76.1%"),
            "{table}"
        );
        let other = Network::builder(&[2, 8])
            .conv1d("c", Conv1d::new(2, 4, 3))
            .build_init(0)
            .unwrap();
        assert!(StructureReport::new(&net, &other).is_err());
    }
}
