//! Blocks (runs of nodes whose input and output shapes match) and the feature axis of a value.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::{Layer, Network, Source};

/// A run of consecutive nodes `first..=last` of a [`Network`], seen as one function from the
/// value entering `first` (its only input) to the value leaving `last`, of the same shape: a
/// residual block from its first layer to its `Add`, or a single shape-preserving node. Layer
/// removal replaces such a block with the identity.
///
/// ```
/// use shears::calibrate::Block;
///
/// let res = Block::new("conv2", "add");
/// assert_eq!((res.first.as_str(), res.last.as_str()), ("conv2", "add"));
/// assert_eq!(Block::node("relu3"), Block::new("relu3", "relu3"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Block {
    /// The first node; its single input is the block's input.
    pub first: String,
    /// The last node; its output is the block's output.
    pub last: String,
}

impl Block {
    /// The block from `first`'s input to `last`'s output.
    pub fn new(first: impl Into<String>, last: impl Into<String>) -> Self {
        Block {
            first: first.into(),
            last: last.into(),
        }
    }

    /// The block made of the single node `name`.
    pub fn node(name: impl Into<String>) -> Self {
        let name = name.into();
        Block::new(name.clone(), name)
    }

    /// The node indices `(first, last)` in `net`, checked: both exist, `first` comes no later
    /// than `last` and has exactly one input, and that input's shape is `last`'s output shape.
    pub(crate) fn resolve(&self, net: &Network) -> Result<(usize, usize)> {
        let index = |name: &str| {
            net.node_index(name).ok_or_else(|| {
                Error::invalid("block", format!("`{name}` is not a node of the network"))
            })
        };
        let (first, last) = (index(&self.first)?, index(&self.last)?);
        let fail =
            |reason: String| Error::invalid(format!("block {}..{}", self.first, self.last), reason);
        if first > last {
            return Err(fail(format!(
                "`{}` comes after `{}`",
                self.first, self.last
            )));
        }
        let sources = net.sources(first).unwrap_or_default();
        let [source] = sources else {
            return Err(fail(format!(
                "`{}` reads {} inputs; a block starts at a node with one input",
                self.first,
                sources.len()
            )));
        };
        let (input, output) = (shape_of(net, *source), &net.output_shapes()[last]);
        if input != output.as_slice() {
            return Err(fail(format!(
                "its input has shape {input:?} but its output has shape {output:?}"
            )));
        }
        Ok((first, last))
    }
}

impl std::fmt::Display for Block {
    /// `first..last`, or the node's name for a one-node block.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            f.write_str(&self.first)
        } else {
            write!(f, "{}..{}", self.first, self.last)
        }
    }
}

/// Every block of `net` that could be replaced by the identity, in order of (first, last) node:
/// runs of consecutive nodes `first..=last` such that
///
/// - `first` reads exactly one value, the block input, whose shape is `last`'s output shape;
/// - every node of the run reads only the block input or earlier nodes of the run;
/// - no node after the run, and not the network output, uses a value computed inside the run
///   other than `last`'s.
///
/// Single shape-preserving nodes (activations, normalisations, same-width linear layers) are
/// blocks too; overlapping and nested blocks are all listed, for a strategy to choose among.
///
/// ```
/// use shears::calibrate::{Block, candidate_blocks};
/// use shears::graph::{Conv1d, Network};
///
/// let net = Network::builder(&[4, 16])
///     .conv1d("conv1", Conv1d::new(4, 8, 3).padding(1))
///     .relu("relu1")
///     .conv1d("conv2", Conv1d::new(8, 8, 3).padding(1))
///     .add("res", &["conv2", "relu1"])
///     .global_avg_pool("gap")
///     .build_init(0)?;
/// let blocks = candidate_blocks(&net);
/// assert_eq!(blocks, [
///     Block::node("relu1"),
///     Block::new("relu1", "res"),
///     Block::node("conv2"),
///     Block::new("conv2", "res"), // the residual block
/// ]);
/// # Ok::<(), shears::Error>(())
/// ```
pub fn candidate_blocks(net: &Network) -> Vec<Block> {
    let n = net.nodes().len();
    let mut last_reader = vec![0usize; n];
    for i in 0..n {
        for s in net.sources(i).unwrap_or_default() {
            if let Source::Node(j) = *s {
                last_reader[j] = last_reader[j].max(i);
            }
        }
    }
    let output = net.output_index();
    let mut blocks = Vec::new();
    for first in 0..n {
        let &[input] = net.sources(first).unwrap_or_default() else {
            continue;
        };
        let input_shape = shape_of(net, input);
        // Largest index of a node reading a value computed inside first..last.
        let mut escape = 0;
        for last in first..n {
            let reads_inside =
                net.sources(last).unwrap_or_default().iter().all(|&s| {
                    s == input || matches!(s, Source::Node(j) if (first..last).contains(&j))
                });
            if !reads_inside || (first..last).contains(&output) {
                break;
            }
            if last > first {
                escape = escape.max(last_reader[last - 1]);
            }
            if escape <= last && net.output_shapes()[last] == input_shape {
                let name = |i: usize| net.nodes()[i].name.clone();
                blocks.push(Block::new(name(first), name(last)));
            }
        }
    }
    blocks
}

/// Per-sample shape of a value.
pub(crate) fn shape_of(net: &Network, source: Source) -> &[usize] {
    match source {
        Source::Input => net.input_shape(),
        Source::Node(i) => &net.output_shapes()[i],
    }
}

/// The feature axis of a value, as an axis of its per-sample shape: the last axis for what a
/// Linear or LayerNorm produced (features last, as PyTorch's `[..., features]`), axis 0
/// (channels first, as PyTorch's `[C, L]` and `[C, H, W]`) for everything else, the network input
/// included. Element-wise nodes (activations, Softmax, Dropout, Identity, Add) pass on their
/// (first) input's axis.
pub(crate) fn feature_axis(net: &Network, mut source: Source) -> usize {
    loop {
        let Source::Node(i) = source else {
            return 0;
        };
        match net.nodes()[i].layer {
            Layer::Linear(_) | Layer::LayerNorm(_) => {
                return net.output_shapes()[i].len().saturating_sub(1);
            }
            Layer::Relu
            | Layer::Gelu
            | Layer::Sigmoid
            | Layer::Tanh
            | Layer::Softmax { .. }
            | Layer::Dropout { .. }
            | Layer::Identity
            | Layer::Add => match net.sources(i).and_then(|s| s.first()) {
                Some(&s) => source = s,
                None => return 0,
            },
            _ => return 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{Conv1d, Linear};

    #[test]
    fn candidates_respect_escapes_and_the_output() {
        // A skip from inside the block (`a` read by `sum` after `b`) makes a..b non-removable,
        // but a..sum is fine.
        let net = Network::builder(&[4])
            .linear("a", 4, 4)
            .relu("b")
            .add("sum", &["b", "a"])
            .linear("head", 4, 2)
            .build_init(0)
            .unwrap();
        let blocks = candidate_blocks(&net);
        assert_eq!(
            blocks,
            [
                Block::node("a"),
                Block::new("a", "sum"),
                Block::node("b"),
                Block::new("b", "sum"),
            ]
        );
        // An output inside a run stops it.
        let net = Network::builder(&[4])
            .linear("a", 4, 4)
            .relu("b")
            .output("a")
            .build_init(0)
            .unwrap();
        assert_eq!(candidate_blocks(&net), [Block::node("a"), Block::node("b")]);
    }

    #[test]
    fn resolve_checks_the_block() {
        let net = Network::builder(&[4, 8])
            .conv1d("c", Conv1d::new(4, 4, 3).padding(1))
            .layer("l", Linear::new(8, 5))
            .relu("r")
            .add("sum", &["r", "r"])
            .build_init(0)
            .unwrap();
        assert_eq!(Block::node("c").resolve(&net).unwrap(), (0, 0));
        let msg = |b: Block| b.resolve(&net).unwrap_err().to_string();
        assert!(msg(Block::node("l")).contains("[4, 8]"));
        assert!(msg(Block::new("r", "c")).contains("comes after"));
        assert!(msg(Block::node("zzz")).contains("not a node"));
        assert!(msg(Block::node("sum")).contains("2 inputs"));
        assert_eq!(feature_axis(&net, Source::Node(0)), 0);
        assert_eq!(feature_axis(&net, Source::Node(2)), 1, "relu after linear");
        assert_eq!(feature_axis(&net, Source::Node(3)), 1, "add passes it on");
        assert_eq!(feature_axis(&net, Source::Input), 0);
    }
}
