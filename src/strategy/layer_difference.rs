//! The layer-difference strategy: whole blocks replaced by the identity; see [`LayerDifference`].

use std::collections::HashSet;

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::{Context, Plan, PruneStrategy};
use crate::calibrate::{Block, Calibration, Stats, candidate_blocks};
use crate::error::{Error, Result};
use crate::graph::{INPUT, Layer, Network, Node, Source};
use crate::mask::{Mask, MaskSet};
use crate::params::Params;

/// How a block is scored; in every case, lower means more removable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[non_exhaustive]
pub enum BlockMetric {
    /// `1 − E[cos(x_in, x_out)]` on calibration data (Men et al. 2024).
    BlockInfluence,
    /// `E[arccos(cos(x_in, x_out)) / π]` on calibration data (Gromov et al. 2024).
    AngularDistance,
    /// `‖W_b − W_a‖_F / ‖W_a‖_F` against the nearest earlier same-shape layer; needs no data.
    WeightDistance,
}

impl BlockMetric {
    /// Whether the metric is measured on calibration data.
    pub fn needs_calibration(self) -> bool {
        !matches!(self, BlockMetric::WeightDistance)
    }
}

/// Which blocks go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub enum Removal {
    /// The `k` lowest-scoring non-overlapping blocks, anywhere (ShortGPT).
    Lowest(usize),
    /// The contiguous run of `n` blocks that changes its input least (Gromov et al.).
    Run(usize),
}

/// The score of one block (or, for [`Removal::Run`], of the block spanning a run).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct BlockScore {
    /// The block.
    pub block: Block,
    /// Its score under the plan's metric; lower is more removable.
    pub score: f64,
}

/// What a [`LayerDifference`] decided: data, to inspect, save and apply.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct LayerPlan {
    /// The metric of the scores.
    pub metric: BlockMetric,
    /// How the removed blocks were chosen.
    pub removal: Removal,
    /// Every scored block in network order; for [`Removal::Run`], the blocks spanning each
    /// possible run.
    pub scores: Vec<BlockScore>,
    /// The blocks to replace with the identity, in network order.
    pub removed: Vec<Block>,
}

impl LayerPlan {
    /// The network with the removed blocks replaced by the identity, physically (see
    /// [`remove_blocks`]).
    ///
    /// # Errors
    /// As [`remove_blocks`].
    pub fn apply(&self, net: &Network) -> Result<Network> {
        remove_blocks(net, &self.removed)
    }

    /// Keep-masks pruning every parameter of the removed blocks' nodes. Applying them equals the
    /// removal only for a residual block whose branch outputs zero without its parameters (then
    /// `x + 0 = x`); a plain block with zeroed weights outputs zero, not its input, so
    /// [`LayerPlan::apply`] is the removal proper.
    ///
    /// # Errors
    /// As [`remove_blocks`], for a block that is not removable from `net`.
    pub fn masks(&self, net: &Network) -> Result<MaskSet> {
        let mut masks = MaskSet::new();
        for (first, last) in resolve_disjoint(net, &self.removed)? {
            for i in first..=last {
                for name in net.param_names(i) {
                    let shape = net.params().get(name).map(|w| w.shape()).unwrap_or(&[]);
                    let n = shape.iter().product();
                    masks.insert(name, Mask::from_vec(shape, vec![false; n])?);
                }
            }
        }
        Ok(masks)
    }
}

/// Layer difference: remove whole blocks whose output barely differs from their input, replacing
/// them with the identity.
///
/// # Blocks
///
/// The units scored and removed are [`Block`]s, runs of nodes from one input to an output of the
/// same shape (see [`candidate_blocks`]). Unless given with [`LayerDifference::blocks`], they are
/// [`layer_blocks`]: every residual block, and every parametrised layer together with the
/// element-wise activations that follow it (`conv3` + `relu3`), wherever that run keeps its
/// input's shape.
///
/// # Scores ([`BlockMetric`])
///
/// - **Block Influence** (ShortGPT, Men et al. 2024, arXiv:2403.03853):
///   `BI = 1 − E[cos(x_in, x_out)]`, the expectation over every calibration token (a position's
///   channel vector, or a sample's feature vector for `[batch, F]` values), as
///   [`BlockSimilarity::block_influence`](crate::calibrate::BlockSimilarity::block_influence).
/// - **Angular distance** (Gromov et al. 2024, arXiv:2403.17887): `E[arccos(cos(x_in, x_out)) / π]`
///   over the same tokens (Gromov et al. take the last token of each sequence; here every token
///   counts, as for BI).
/// - **Weight distance** (data-free): for a block, `W_b` is the weight of its first Linear or Conv
///   node and `W_a` the weight of the nearest Linear or Conv node before it in the network whose
///   weight has the same shape; the score is `‖W_b − W_a‖_F / ‖W_a‖_F`. A low score means the
///   block's layer nearly repeats an earlier one. Blocks without such an earlier layer are not
///   scored (and never removed).
///
/// The two data metrics need calibration: [`LayerDifference::calibration`] says which blocks to
/// collect, [`LayerDifference::with_stats`] hands over the result.
///
/// # Removal ([`Removal`])
///
/// - `Lowest(k)`: the `k` lowest-scoring blocks, one shot, wherever they are (ShortGPT). Blocks
///   are taken in ascending score (ties: earlier block first), skipping any that overlaps one
///   already taken.
/// - `Run(n)`: the `n` consecutive blocks (each reading the previous one's output) whose run
///   changes its input least (Gromov et al.): `ℓ* = argmin_ℓ d(x^ℓ, x^{ℓ+n})`, with `x^ℓ` the input
///   of block `ℓ` (the paper's definition) and `d` the metric measured over the block spanning
///   blocks `ℓ..ℓ+n−1`; ties go to the earliest run. Needs a data metric.
///
/// [`LayerPlan::apply`] (or [`remove_blocks`]) then builds a smaller [`Network`]: the last node of
/// each removed block becomes an [`Identity`](Layer::Identity) reading the block's input, the
/// other nodes and all parameters of the block are dropped, and the spec says so.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::calibrate::Block;
/// use shears::data::{Dataset, Targets};
/// use shears::graph::{Conv1d, Layer, Network};
/// use shears::strategy::{BlockMetric, LayerDifference, Removal};
///
/// let net = Network::builder(&[4, 16])
///     .conv1d("conv1", Conv1d::new(4, 8, 3).padding(1))
///     .relu("relu1")
///     .conv1d("conv2", Conv1d::new(8, 8, 3).padding(1))
///     .relu("relu2")
///     .global_avg_pool("gap")
///     .linear("fc", 8, 3)
///     .build_init(0)?;
/// let x = ArrayD::from_shape_fn(IxDyn(&[10, 4, 16]), |i| ((i[0] + 2 * i[1] + i[2]) % 5) as f32 - 2.0);
/// let data = Dataset::new(x, Targets::Classes(vec![0; 10]))?;
///
/// let strategy = LayerDifference::new(BlockMetric::BlockInfluence, Removal::Lowest(1));
/// let stats = strategy.calibration(&net)?.run(&net, &data)?;
/// let plan = strategy.with_stats(stats).decide(&net)?;
/// assert_eq!(plan.removed, [Block::new("conv2", "relu2")]);
/// let smaller = plan.apply(&net)?;
/// assert_eq!(smaller.node("relu2").unwrap().layer, Layer::Identity);
/// assert!(smaller.node("conv2").is_none() && smaller.params().get("conv2.weight").is_none());
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct LayerDifference {
    metric: BlockMetric,
    removal: Removal,
    blocks: Option<Vec<Block>>,
    stats: Option<Stats>,
}

impl LayerDifference {
    /// Scores by `metric`, removes as `removal` says, among [`layer_blocks`].
    pub fn new(metric: BlockMetric, removal: Removal) -> Self {
        LayerDifference {
            metric,
            removal,
            blocks: None,
            stats: None,
        }
    }

    /// The blocks to choose among, in network order, instead of [`layer_blocks`]; for
    /// [`Removal::Run`], the chain whose contiguous runs are considered.
    pub fn blocks(mut self, blocks: impl IntoIterator<Item = Block>) -> Self {
        self.blocks = Some(blocks.into_iter().collect());
        self
    }

    /// The calibration statistics the data metrics read (from
    /// [`LayerDifference::calibration`]).
    pub fn with_stats(mut self, stats: Stats) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The blocks to choose among, checked removable from `net`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a block that is not one of [`candidate_blocks`].
    pub fn units(&self, net: &Network) -> Result<Vec<Block>> {
        let units = match &self.blocks {
            Some(blocks) => blocks.clone(),
            None => layer_blocks(net),
        };
        let removable = candidate_set(net);
        for b in &units {
            check_removable(net, &removable, b)?;
        }
        Ok(units)
    }

    /// What to calibrate for this strategy: the similarity of every block (and, for
    /// [`Removal::Run`], of every run's spanning block). Batch size and sample count can be set
    /// on the result before running it.
    ///
    /// # Errors
    /// As [`LayerDifference::units`]; [`Error::InvalidParameter`] for a run length no chain of
    /// blocks has.
    pub fn calibration(&self, net: &Network) -> Result<Calibration> {
        let mut blocks = self.units(net)?;
        if let Removal::Run(n) = self.removal {
            blocks.extend(runs(net, &blocks, n)?.into_iter().map(|(_, span)| span));
        }
        Ok(Calibration::new().blocks(blocks))
    }

    /// Scores, chooses and returns the plan; changes nothing.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for an unremovable block, a data metric without statistics
    /// for a block, [`Removal::Run`] with the data-free metric, a run length no chain has, or
    /// fewer non-overlapping blocks than asked for ([`Error::CountTooLarge`] when `k` exceeds
    /// the blocks scored); [`Error::NonFinite`] for a non-finite score.
    pub fn decide(&self, net: &Network) -> Result<LayerPlan> {
        let units = self.units(net)?;
        let (scores, removed) = match self.removal {
            Removal::Lowest(k) => {
                let scores = self.score(net, &units)?;
                let removed = lowest(net, &scores, k)?;
                (scores, removed)
            }
            Removal::Run(n) => {
                if !self.metric.needs_calibration() {
                    return Err(Error::invalid(
                        "layer-difference removal",
                        "a contiguous run is chosen by the distance between its input and output, \
                         which needs a data metric, not the weight distance",
                    ));
                }
                let runs = runs(net, &units, n)?;
                let spans: Vec<Block> = runs.iter().map(|(_, s)| s.clone()).collect();
                let scores = self.score(net, &spans)?;
                let best = (0..scores.len())
                    .min_by(|&a, &b| scores[a].score.total_cmp(&scores[b].score))
                    .expect("runs is not empty");
                let start = runs[best].0;
                (scores, units[start..start + n].to_vec())
            }
        };
        Ok(LayerPlan {
            metric: self.metric,
            removal: self.removal,
            scores,
            removed,
        })
    }

    /// Scores of `blocks` (those the metric can score), in their order.
    fn score(&self, net: &Network, blocks: &[Block]) -> Result<Vec<BlockScore>> {
        let mut scores = Vec::with_capacity(blocks.len());
        for block in blocks {
            let score = match self.metric {
                BlockMetric::WeightDistance => match weight_distance(net, block)? {
                    Some(d) => d,
                    None => continue,
                },
                metric => {
                    let sim = self
                        .stats
                        .as_ref()
                        .and_then(|s| s.block(block))
                        .ok_or_else(|| {
                            Error::invalid(
                                "layer-difference statistics",
                                format!(
                                    "no similarity for block {block}: run \
                                     LayerDifference::calibration and pass the result to \
                                     with_stats"
                                ),
                            )
                        })?;
                    if metric == BlockMetric::BlockInfluence {
                        sim.block_influence()
                    } else {
                        sim.angular_distance
                    }
                }
            };
            if !score.is_finite() {
                return Err(Error::NonFinite {
                    tensor: format!("score of block {block}"),
                    index: scores.len(),
                    value: score as f32,
                });
            }
            scores.push(BlockScore {
                block: block.clone(),
                score,
            });
        }
        Ok(scores)
    }
}

impl PruneStrategy for LayerDifference {
    fn name(&self) -> &str {
        "layer-difference"
    }

    /// Masks pruning every parameter of the removed blocks (see [`LayerPlan::masks`]); the
    /// physical removal is [`LayerDifference::decide`] then [`LayerPlan::apply`].
    fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        let net = ctx.network().ok_or_else(|| {
            Error::invalid(
                "context",
                "layer-difference needs the network: use Context::for_network",
            )
        })?;
        let masks = self.decide(net)?.masks(net)?;
        Ok(Plan::new(self.name(), masks))
    }
}

/// The default blocks of `net`, in network order: every residual block (a [`candidate`] block
/// ending at an `Add` that reads the block's input), and every node with parameters that is
/// not inside a residual block, extended over the element-wise parameter-free nodes (ReLU,
/// GELU, Sigmoid, Tanh, Dropout, Identity) that follow it in a chain, as far as the longest
/// such run that is a [`candidate`] block.
///
/// [`candidate`]: candidate_blocks
///
/// ```
/// use shears::calibrate::Block;
/// use shears::data::hapt::reference_cnn;
/// use shears::strategy::layer_blocks;
///
/// let net = reference_cnn().build_init(0)?;
/// assert_eq!(layer_blocks(&net), [Block::new("conv3", "relu3"), Block::new("fc1", "relu4")]);
/// # Ok::<(), shears::Error>(())
/// ```
pub fn layer_blocks(net: &Network) -> Vec<Block> {
    let removable = candidate_set(net);
    let layer = |i: usize| &net.nodes()[i].layer;
    let sources = |i: usize| net.sources(i).unwrap_or_default();
    let mut residual: Vec<(usize, usize)> = removable
        .iter()
        .copied()
        .filter(|&(first, last)| {
            matches!(layer(last), Layer::Add) && sources(last).contains(&sources(first)[0])
        })
        .collect();
    residual.sort_unstable();
    let inside_residual = |i: usize| residual.iter().any(|&(f, l)| (f..=l).contains(&i));
    let mut blocks = residual.clone();
    for p in 0..net.nodes().len() {
        if net.param_names(p).next().is_none() || inside_residual(p) {
            continue;
        }
        let (mut q, mut longest) = (p, None);
        loop {
            if removable.contains(&(p, q)) {
                longest = Some(q);
            }
            let next = q + 1;
            let element_wise = next < net.nodes().len()
                && matches!(
                    layer(next),
                    Layer::Relu
                        | Layer::Gelu
                        | Layer::Sigmoid
                        | Layer::Tanh
                        | Layer::Dropout { .. }
                        | Layer::Identity
                )
                && sources(next) == [Source::Node(q)];
            if !element_wise {
                break;
            }
            q = next;
        }
        blocks.extend(longest.map(|q| (p, q)));
    }
    blocks.sort_unstable();
    let name = |i: usize| net.nodes()[i].name.clone();
    blocks
        .into_iter()
        .map(|(f, l)| Block::new(name(f), name(l)))
        .collect()
}

/// A new network with each of `blocks` replaced by the identity: the block's last node becomes an
/// [`Identity`](Layer::Identity) node of the same name reading the block's input (so that later
/// nodes and the output still find it), its other nodes are dropped, and so are the parameters
/// of all its nodes. Parameter count and FLOPs shrink accordingly; the spec is the new one.
///
/// ```
/// use shears::calibrate::Block;
/// use shears::graph::{Layer, Network};
/// use shears::strategy::remove_blocks;
///
/// let net = Network::builder(&[8])
///     .linear("fc1", 8, 8)
///     .relu("act1")
///     .linear("head", 8, 2)
///     .build_init(0)?;
/// let smaller = remove_blocks(&net, &[Block::new("fc1", "act1")])?;
/// let names: Vec<&str> = smaller.nodes().iter().map(|n| n.name.as_str()).collect();
/// assert_eq!(names, ["act1", "head"]);
/// assert_eq!(smaller.node("act1").unwrap().layer, Layer::Identity);
/// assert_eq!(smaller.num_params(), 8 * 2 + 2);
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
/// [`Error::InvalidParameter`] naming the block when it is not one of [`candidate_blocks`]
/// (unknown nodes, shapes that differ, values used outside it) or when two blocks overlap.
pub fn remove_blocks(net: &Network, blocks: &[Block]) -> Result<Network> {
    let spans = resolve_disjoint(net, blocks)?;
    let covering = |i: usize| spans.iter().find(|&&(f, l)| (f..=l).contains(&i));
    let mut nodes = Vec::with_capacity(net.nodes().len());
    let mut params = Params::new();
    for (i, node) in net.nodes().iter().enumerate() {
        match covering(i) {
            Some(&(_, last)) if i < last => {}
            Some(&(first, _)) => {
                let input = match net.sources(first).unwrap_or_default()[0] {
                    Source::Input => INPUT.to_string(),
                    Source::Node(j) => net.nodes()[j].name.clone(),
                };
                nodes.push(Node::new(node.name.clone(), Layer::Identity).inputs([input]));
            }
            None => {
                nodes.push(node.clone());
                for name in net.param_names(i) {
                    if let Some(w) = net.params().get(name) {
                        params.insert(name, w.clone());
                    }
                }
            }
        }
    }
    let mut spec = net.spec().clone();
    spec.nodes = nodes;
    Network::new(spec, params)
}

/// Node index pairs `(first, last)` of every removable block of `net`.
fn candidate_set(net: &Network) -> HashSet<(usize, usize)> {
    candidate_blocks(net)
        .iter()
        .filter_map(|b| Some((net.node_index(&b.first)?, net.node_index(&b.last)?)))
        .collect()
}

/// `block`'s node indices, checked removable.
fn check_removable(
    net: &Network,
    removable: &HashSet<(usize, usize)>,
    block: &Block,
) -> Result<(usize, usize)> {
    let span = block.resolve(net)?;
    if !removable.contains(&span) {
        return Err(Error::invalid(
            format!("block {block}"),
            "it cannot be replaced by the identity: a value computed inside it is used after it \
             (or it reads a value from before its input)",
        ));
    }
    Ok(span)
}

/// The node index spans of `blocks`, sorted, each removable and none overlapping another.
fn resolve_disjoint(net: &Network, blocks: &[Block]) -> Result<Vec<(usize, usize)>> {
    let removable = candidate_set(net);
    let mut spans: Vec<((usize, usize), &Block)> = blocks
        .iter()
        .map(|b| Ok((check_removable(net, &removable, b)?, b)))
        .collect::<Result<_>>()?;
    spans.sort_unstable_by_key(|&(span, _)| span);
    for pair in spans.windows(2) {
        let ((_, last), a) = pair[0];
        let ((first, _), b) = pair[1];
        if first <= last {
            return Err(Error::invalid(
                format!("blocks {a} and {b}"),
                "they overlap; a node can be removed only once",
            ));
        }
    }
    Ok(spans.into_iter().map(|(span, _)| span).collect())
}

/// The `k` lowest-scoring non-overlapping blocks of `scores`, in network order.
fn lowest(net: &Network, scores: &[BlockScore], k: usize) -> Result<Vec<Block>> {
    if k > scores.len() {
        return Err(Error::CountTooLarge {
            requested: k,
            available: scores.len(),
            scope: "scored blocks".into(),
        });
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].score.total_cmp(&scores[b].score));
    let mut taken: Vec<((usize, usize), &Block)> = Vec::with_capacity(k);
    for i in order {
        if taken.len() == k {
            break;
        }
        let block = &scores[i].block;
        let (first, last) = block.resolve(net)?;
        if taken.iter().all(|&((f, l), _)| last < f || l < first) {
            taken.push(((first, last), block));
        }
    }
    if taken.len() < k {
        return Err(Error::invalid(
            "layer-difference removal",
            format!(
                "{k} blocks asked for, but only {} of the {} scored blocks do not overlap",
                taken.len(),
                scores.len()
            ),
        ));
    }
    taken.sort_unstable_by_key(|&(span, _)| span);
    Ok(taken.into_iter().map(|(_, b)| b.clone()).collect())
}

/// Every run of `n` consecutive `units` (each reading the previous one's last node) whose span is
/// removable: `(index of its first unit, the spanning block)`.
fn runs(net: &Network, units: &[Block], n: usize) -> Result<Vec<(usize, Block)>> {
    let fail = |reason: String| Error::invalid("layer-difference run", reason);
    if n == 0 || n > units.len() {
        return Err(fail(format!(
            "a run of {n} blocks, but there are {} blocks",
            units.len()
        )));
    }
    let removable = candidate_set(net);
    let spans: Vec<(usize, usize)> = units
        .iter()
        .map(|b| b.resolve(net))
        .collect::<Result<_>>()?;
    let linked =
        |i: usize| net.sources(spans[i + 1].0).unwrap_or_default() == [Source::Node(spans[i].1)];
    let runs: Vec<(usize, Block)> = (0..=units.len() - n)
        .filter(|&s| (s..s + n - 1).all(linked))
        .filter(|&s| removable.contains(&(spans[s].0, spans[s + n - 1].1)))
        .map(|s| (s, Block::new(&units[s].first, &units[s + n - 1].last)))
        .collect();
    if runs.is_empty() {
        return Err(fail(format!(
            "no {n} of the blocks follow one another (each reading the previous one's output)"
        )));
    }
    Ok(runs)
}

/// `‖W_b − W_a‖_F / ‖W_a‖_F` for `block` (see [`LayerDifference`]), or `None` when it has no
/// Linear or Conv node or no earlier node's weight has the shape of its first one.
fn weight_distance(net: &Network, block: &Block) -> Result<Option<f64>> {
    let (first, last) = block.resolve(net)?;
    let weight = |i: usize| {
        let node = &net.nodes()[i];
        matches!(
            node.layer,
            Layer::Linear(_) | Layer::Conv1d(_) | Layer::Conv2d(_)
        )
        .then(|| net.params().get(&format!("{}.weight", node.name)))
        .flatten()
        .map(|w| (node.name.as_str(), w))
    };
    let Some((_, wb)) = (first..=last).find_map(weight) else {
        return Ok(None);
    };
    let Some((a, wa)) = (0..first)
        .rev()
        .filter_map(weight)
        .find(|(_, w)| w.shape() == wb.shape())
    else {
        return Ok(None);
    };
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in wa.iter().zip(wb.iter()) {
        let (x, y) = (f64::from(x), f64::from(y));
        diff += (y - x) * (y - x);
        norm += x * x;
    }
    if norm == 0.0 {
        return Err(Error::invalid(
            format!("weight distance of block {block}"),
            format!("`{a}.weight`, the layer it is compared with, is all zeros"),
        ));
    }
    Ok(Some((diff / norm).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::hapt::reference_cnn;
    use crate::graph::{Conv1d, Linear};

    fn chain() -> Network {
        Network::builder(&[4])
            .linear("a", 4, 4)
            .relu("ra")
            .linear("b", 4, 4)
            .relu("rb")
            .linear("c", 4, 4)
            .linear("head", 4, 2)
            .build_init(3)
            .unwrap()
    }

    #[test]
    fn default_blocks_are_residual_blocks_and_layers_with_their_activations() {
        let net = Network::builder(&[4, 16])
            .conv1d("stem", Conv1d::new(4, 8, 3).padding(1))
            .conv1d("conv", Conv1d::new(8, 8, 3).padding(1))
            .relu("relu")
            .conv1d("conv_b", Conv1d::new(8, 8, 3).padding(1))
            .add("res", &["conv_b", "stem"])
            .global_avg_pool("gap")
            .layer("fc", Linear::new(8, 8))
            .dropout("drop", 0.1)
            .linear("head", 8, 3)
            .build_init(0)
            .unwrap();
        assert_eq!(
            layer_blocks(&net),
            [Block::new("conv", "res"), Block::new("fc", "drop")]
        );
        let net = reference_cnn().build_init(0).unwrap();
        assert_eq!(
            layer_blocks(&net),
            [Block::new("conv3", "relu3"), Block::new("fc1", "relu4")]
        );
    }

    #[test]
    fn removal_rewires_drops_parameters_and_refuses_bad_blocks() {
        let net = chain();
        let smaller = remove_blocks(&net, &[Block::new("b", "rb"), Block::node("a")]).unwrap();
        let names: Vec<&str> = smaller.nodes().iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["a", "ra", "rb", "c", "head"]);
        assert_eq!(smaller.node("a").unwrap().inputs, ["input"]);
        assert_eq!(smaller.node("rb").unwrap().inputs, ["ra"]);
        assert_eq!(smaller.num_params(), net.num_params() - 2 * 20);
        assert!(smaller.params().get("b.weight").is_none());
        // The rest computes as before: `c` reads relu(x) where it read relu(b(relu(a(x)))).
        let x = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[3, 4]), |i| i[1] as f32 - 1.5);
        let expected = Network::builder(&[4])
            .relu("ra")
            .linear("c", 4, 4)
            .linear("head", 4, 2)
            .build(
                ["c.weight", "c.bias", "head.weight", "head.bias"]
                    .into_iter()
                    .map(|n| (n, net.params().get(n).unwrap().clone()))
                    .collect(),
            )
            .unwrap();
        assert_eq!(
            smaller.forward(x.view()).unwrap(),
            expected.forward(x.view()).unwrap()
        );

        let msg = |blocks: &[Block]| remove_blocks(&net, blocks).unwrap_err().to_string();
        assert!(msg(&[Block::node("zzz")]).contains("not a node"));
        assert!(msg(&[Block::node("head")]).contains("shape"));
        assert!(msg(&[Block::new("a", "rb"), Block::node("b")]).contains("overlap"));
        let skip = Network::builder(&[4])
            .linear("a", 4, 4)
            .relu("b")
            .add("sum", &["b", "a"])
            .build_init(0)
            .unwrap();
        assert!(
            remove_blocks(&skip, &[Block::new("a", "b")])
                .unwrap_err()
                .to_string()
                .contains("used after it")
        );
    }

    fn stats(scores: &[(&Block, f64)]) -> Stats {
        let mut stats = Stats::new(1);
        for &(block, bi) in scores {
            stats.insert_block(crate::calibrate::BlockSimilarity {
                block: block.clone(),
                cosine: 1.0 - bi,
                angular_distance: bi / 2.0,
                tokens: 1,
            });
        }
        stats
    }

    #[test]
    fn lowest_skips_overlaps_and_refuses_too_many() {
        let net = chain();
        let (a, ab, b) = (
            Block::new("a", "ra"),
            Block::new("a", "rb"),
            Block::new("b", "rb"),
        );
        let c = Block::node("c");
        let s = stats(&[(&a, 0.3), (&ab, 0.1), (&b, 0.2), (&c, 0.2)]);
        let strategy = |k| {
            LayerDifference::new(BlockMetric::BlockInfluence, Removal::Lowest(k))
                .blocks([a.clone(), ab.clone(), b.clone(), c.clone()])
                .with_stats(s.clone())
        };
        // a..rb first; b..rb overlaps it; c ties with b and comes later but does not overlap.
        assert_eq!(
            strategy(2).decide(&net).unwrap().removed,
            [ab.clone(), c.clone()]
        );
        assert!(matches!(
            strategy(5).decide(&net),
            Err(Error::CountTooLarge {
                requested: 5,
                available: 4,
                ..
            })
        ));
        assert!(
            strategy(4)
                .decide(&net)
                .unwrap_err()
                .to_string()
                .contains("only 2 of the 4")
        );
        let no_stats = LayerDifference::new(BlockMetric::AngularDistance, Removal::Lowest(1));
        assert!(
            no_stats
                .decide(&net)
                .unwrap_err()
                .to_string()
                .contains("no similarity")
        );
        // The plan as masks: every parameter of a..rb pruned, nothing else considered.
        let masks = strategy(1).plan(&Context::for_network(&net)).unwrap().masks;
        let mut names: Vec<&str> = masks.names().collect();
        names.sort_unstable();
        assert_eq!(names, ["a.bias", "a.weight", "b.bias", "b.weight"]);
        assert_eq!((masks.kept(), masks.total()), (0, 40));
    }

    #[test]
    fn run_takes_the_span_with_the_least_distance() {
        let net = chain();
        let units = [
            Block::new("a", "ra"),
            Block::new("b", "rb"),
            Block::node("c"),
        ];
        let spans = [Block::new("a", "rb"), Block::new("b", "c")];
        let s = stats(&[
            (&units[0], 0.0),
            (&units[1], 0.0),
            (&spans[0], 0.5),
            (&spans[1], 0.4),
        ]);
        let strategy = LayerDifference::new(BlockMetric::AngularDistance, Removal::Run(2))
            .blocks(units.clone());
        let calibration = strategy.calibration(&net).unwrap();
        assert_eq!(
            calibration,
            Calibration::new().blocks(units.iter().chain(&spans).cloned())
        );
        let plan = strategy.clone().with_stats(s).decide(&net).unwrap();
        assert_eq!(plan.removed, units[1..]);
        assert_eq!(plan.scores.len(), 2);
        assert_eq!(plan.scores[1].score, 0.2);
        let err = |r| {
            LayerDifference::new(BlockMetric::WeightDistance, r)
                .blocks(units.clone())
                .decide(&net)
                .unwrap_err()
                .to_string()
        };
        assert!(err(Removal::Run(2)).contains("data metric"));
        let far = LayerDifference::new(BlockMetric::AngularDistance, Removal::Run(4)).blocks(units);
        assert!(
            far.calibration(&net)
                .unwrap_err()
                .to_string()
                .contains("3 blocks")
        );
    }

    #[test]
    fn weight_distance_compares_with_the_nearest_earlier_same_shape_weight() {
        let mut net = chain();
        let a = net.params().get("a.weight").unwrap().clone();
        let b = net.params().get("b.weight").unwrap().clone();
        let c = &b * 1.5;
        net.params_mut().get_mut("c.weight").unwrap().assign(&c);
        let strategy = LayerDifference::new(BlockMetric::WeightDistance, Removal::Lowest(1));
        let plan = strategy.decide(&net).unwrap();
        let norm = |w: &ndarray::ArrayD<f32>| w.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>();
        // `a` has no earlier 4x4 weight: not scored. `b` against `a`, `c` against `b`.
        assert_eq!(plan.scores.len(), 2);
        assert_eq!(plan.scores[0].block, Block::new("b", "rb"));
        let ab = (norm(&(&b - &a)) / norm(&a)).sqrt();
        assert!((plan.scores[0].score - ab).abs() < 1e-6);
        assert!((plan.scores[1].score - 0.5).abs() < 1e-6);
        assert_eq!(plan.removed, [Block::node("c")]);
    }
}
