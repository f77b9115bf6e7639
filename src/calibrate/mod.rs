//! Calibration: running data through a network to collect what data-aware pruning criteria need.
//!
//! A [`Calibration`] says what to collect; [`Calibration::run`] streams a [`Dataset`] through a
//! [`Network`] batch by batch (inference: Dropout is the identity and BatchNorm uses its running
//! statistics) and returns [`Stats`]. Each statistic is a running sum updated from the values
//! [`Network::forward_visit`] shows for one node at a time, so memory does not grow with the
//! number of batches and no activation outlives its batch. [`Calibrator`] is the same machinery
//! for callers that feed batches themselves.
//!
//! # Statistics
//!
//! Every value is treated as `[outer, features, inner]` around its **feature axis**: the last axis
//! of what a Linear or LayerNorm produced (`[..., features]`), axis 1 (channels, `[batch, C, ...]`)
//! for everything else, element-wise nodes passing on their input's axis. The network input is
//! taken as channel-first. `outer × inner` vectors of `features` values are then "tokens".
//!
//! - **Input feature norms** (Wanda, Sun et al. 2023, arXiv:2306.11695), for every Linear and
//!   Conv node: for each input feature `j` of the layer (the input's last axis for Linear, its
//!   channel for Conv), `‖X_j‖₂ = sqrt(Σ x_j²)`, the sum running over every sample and every
//!   position (each input position once, not once per kernel tap). Wanda keeps the running mean
//!   over samples of the squared norm, `‖X_j‖₂² / samples`: the same ranking; both are
//!   available from [`InputNorms`].
//! - **APoZ** (Hu et al. 2016, arXiv:1607.03250) and **mean activation**, for every ReLU, GELU,
//!   Sigmoid and Tanh node: per channel (or neuron), the fraction of output values exactly equal
//!   to zero, and their mean, over every sample and position.
//! - **Block similarity** for each requested [`Block`]: per token, `cos = ⟨x, y⟩ / (‖x‖ ‖y‖)`
//!   between the block's input `x` and output `y` at the same sample and position (a token is a
//!   position's channel vector, or a sample's feature vector for `[batch, F]` values), clamped to
//!   `[-1, 1]`, and `0` when either vector is zero (PyTorch's `cosine_similarity` gives the same).
//!   [`BlockSimilarity`] holds the mean over all tokens of `cos` (Block Influence is `1 − cos`,
//!   Men et al. 2024, arXiv:2403.03853) and of the angular distance `arccos(cos) / π` (Gromov et
//!   al. 2024, arXiv:2403.17887). [`candidate_blocks`] lists the blocks a network has.
//!
//! Sums are kept in `f64`, so splitting the same samples into other batches changes results only
//! by rounding.
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use shears::calibrate::{Block, Calibration};
//! use shears::data::{Dataset, Targets};
//! use shears::graph::{Conv1d, Network};
//!
//! let net = Network::builder(&[6, 32])
//!     .conv1d("conv", Conv1d::new(6, 8, 3).padding(1))
//!     .relu("relu")
//!     .global_avg_pool("gap")
//!     .linear("fc", 8, 6)
//!     .build_init(0)?;
//! let x = ArrayD::from_shape_fn(IxDyn(&[20, 6, 32]), |i| ((i[0] + 3 * i[1] + i[2]) % 7) as f32 - 3.0);
//! let data = Dataset::new(x, Targets::Classes(vec![0; 20]))?;
//!
//! let stats = Calibration::new()
//!     .input_norms(true)
//!     .activations(true)
//!     .blocks([Block::node("relu")])
//!     .batch_size(8)
//!     .run(&net, &data)?;
//! assert_eq!(stats.samples(), 20);
//! assert_eq!(stats.input_norms("conv").unwrap().norms.len(), 6);
//! assert_eq!(stats.input_norms("fc").unwrap().rows, 20);
//! let apoz = &stats.activation("relu").unwrap().apoz;
//! assert!(apoz.iter().all(|&z| (0.0..=1.0).contains(&z)));
//! let relu = stats.block(&Block::node("relu")).unwrap();
//! assert!(relu.cosine > 0.0 && relu.cosine <= 1.0);
//! # Ok::<(), shears::Error>(())
//! ```

mod blocks;

use std::collections::BTreeMap;
use std::f64::consts::PI;

use ndarray::{ArrayD, ArrayViewD};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

pub use blocks::{Block, candidate_blocks};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::graph::{Layer, Network, Source};

/// What to collect, and how to batch the data. Nothing is collected by default, so each statistic
/// is paid for only when asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Calibration {
    input_norms: bool,
    activations: bool,
    blocks: Vec<Block>,
    batch_size: usize,
    max_samples: Option<usize>,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration {
            input_norms: false,
            activations: false,
            blocks: Vec::new(),
            batch_size: 32,
            max_samples: None,
        }
    }
}

impl Calibration {
    /// Collects nothing yet; batches of 32; every sample.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to collect the input feature norms of Linear and Conv nodes (Wanda).
    pub fn input_norms(mut self, collect: bool) -> Self {
        self.input_norms = collect;
        self
    }

    /// Whether to collect APoZ and mean activation of activation nodes.
    pub fn activations(mut self, collect: bool) -> Self {
        self.activations = collect;
        self
    }

    /// Blocks whose input/output similarity to collect (replacing any set before).
    pub fn blocks(mut self, blocks: impl IntoIterator<Item = Block>) -> Self {
        self.blocks = blocks.into_iter().collect();
        self
    }

    /// Samples per forward pass in [`Calibration::run`] (default 32): memory grows with it,
    /// results do not depend on it beyond rounding.
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Uses only the first `n` samples of the dataset in [`Calibration::run`].
    pub fn max_samples(mut self, n: usize) -> Self {
        self.max_samples = Some(n);
        self
    }

    /// A calibrator for `net` that collects what this calibration asks for, fed batch by batch.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a block that is not a block of `net` (see
    /// [`Block`]).
    pub fn start<'n>(&self, net: &'n Network) -> Result<Calibrator<'n>> {
        Calibrator::new(net, self)
    }

    /// Runs the first [`max_samples`](Self::max_samples) samples of `data` (all by default)
    /// through `net` in batches of [`batch_size`](Self::batch_size) and returns the statistics.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a zero batch size, an invalid block or no samples to run;
    /// [`Error::Graph`] when the samples do not have the network's input shape.
    pub fn run(&self, net: &Network, data: &Dataset) -> Result<Stats> {
        if self.batch_size == 0 {
            return Err(Error::invalid("batch size", "must be positive"));
        }
        let mut calibrator = self.start(net)?;
        let n = self.max_samples.map_or(data.len(), |m| m.min(data.len()));
        for start in (0..n).step_by(self.batch_size) {
            calibrator.observe(data.batch_inputs(start, (start + self.batch_size).min(n)))?;
        }
        calibrator.finish()
    }
}

/// Running sums of a [`Calibration`] over the batches seen so far. Memory: the sums (a few
/// numbers per feature), plus during a batch one copy of each multi-node block's input.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::calibrate::Calibration;
/// use shears::graph::Network;
///
/// let net = Network::builder(&[3]).linear("fc", 3, 2).relu("act").build_init(0)?;
/// let mut calibrator = Calibration::new().input_norms(true).start(&net)?;
/// for _ in 0..4 {
///     calibrator.observe(ArrayD::from_elem(IxDyn(&[2, 3]), 1.0).view())?;
/// }
/// let stats = calibrator.finish()?;
/// // Eight samples of ones: every input feature has norm sqrt(8).
/// assert_eq!(stats.input_norms("fc").unwrap().norms, [8f32.sqrt(); 3]);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Debug)]
pub struct Calibrator<'n> {
    net: &'n Network,
    samples: usize,
    norms: Vec<FeatureSums>,
    activations: Vec<ActivationSums>,
    blocks: Vec<BlockSums>,
    /// Per node: the input-norm accumulator it feeds.
    norm_at: Vec<Option<usize>>,
    /// Per node: the activation accumulator it feeds.
    activation_at: Vec<Option<usize>>,
    /// Per node: the slot of `held` that keeps its input for blocks starting there.
    capture_at: Vec<Option<usize>>,
    /// Per node: the blocks ending there.
    ending_at: Vec<Vec<usize>>,
    /// Block inputs held during a batch, and the node after which each is no longer needed.
    held: Vec<(Option<ArrayD<f32>>, usize)>,
}

impl<'n> Calibrator<'n> {
    fn new(net: &'n Network, calibration: &Calibration) -> Result<Self> {
        let n = net.nodes().len();
        let mut c = Calibrator {
            net,
            samples: 0,
            norms: Vec::new(),
            activations: Vec::new(),
            blocks: Vec::new(),
            norm_at: vec![None; n],
            activation_at: vec![None; n],
            capture_at: vec![None; n],
            ending_at: vec![Vec::new(); n],
            held: Vec::new(),
        };
        for (i, node) in net.nodes().iter().enumerate() {
            let input = net.sources(i).and_then(|s| s.first()).copied();
            match (&node.layer, input) {
                (Layer::Linear(_) | Layer::Conv1d(_) | Layer::Conv2d(_), Some(input))
                    if calibration.input_norms =>
                {
                    let axis = match node.layer {
                        Layer::Linear(_) => blocks::shape_of(net, input).len() - 1,
                        _ => 0,
                    };
                    c.norm_at[i] = Some(c.norms.len());
                    c.norms
                        .push(FeatureSums::new(i, axis, blocks::shape_of(net, input)));
                }
                (Layer::Relu | Layer::Gelu | Layer::Sigmoid | Layer::Tanh, _)
                    if calibration.activations =>
                {
                    let axis = blocks::feature_axis(net, Source::Node(i));
                    c.activation_at[i] = Some(c.activations.len());
                    c.activations
                        .push(ActivationSums::new(i, axis, &net.output_shapes()[i]));
                }
                _ => {}
            }
        }
        for block in &calibration.blocks {
            let (first, last) = block.resolve(net)?;
            let slot = (first < last).then(|| {
                let slot = *c.capture_at[first].get_or_insert_with(|| {
                    c.held.push((None, last));
                    c.held.len() - 1
                });
                c.held[slot].1 = c.held[slot].1.max(last);
                slot
            });
            c.ending_at[last].push(c.blocks.len());
            let axis = blocks::feature_axis(net, Source::Node(last));
            c.blocks.push(BlockSums {
                block: block.clone(),
                slot,
                axis,
                cos: 0.0,
                angular: 0.0,
                tokens: 0,
            });
        }
        Ok(c)
    }

    /// Runs one batch `[batch, ...input_shape]` through the network and adds its statistics.
    ///
    /// # Errors
    /// [`Error::Graph`] when the batch does not have the network's input shape; nothing is added
    /// then.
    pub fn observe(&mut self, batch: ArrayViewD<'_, f32>) -> Result<()> {
        let net = self.net;
        let samples = batch.shape().first().copied().unwrap_or(0);
        net.forward_visit(batch, |v| {
            let i = v.index;
            if let Some(k) = self.norm_at[i] {
                self.norms[k].add(&v.inputs[0]);
            }
            if let Some(k) = self.activation_at[i] {
                self.activations[k].add(&v.output);
            }
            if let Some(slot) = self.capture_at[i] {
                self.held[slot].0 = Some(v.inputs[0].to_owned());
            }
            for &b in &self.ending_at[i] {
                let block = &mut self.blocks[b];
                let input = match block.slot {
                    Some(slot) => self.held[slot].0.as_ref().map(|a| a.view()),
                    None => Some(v.inputs[0].view()),
                };
                let input = input.ok_or_else(|| {
                    Error::graph(v.node.name.as_str(), "block input was not captured")
                })?;
                block.add(&input, &v.output);
            }
            for (value, release) in &mut self.held {
                if *release == i {
                    *value = None;
                }
            }
            Ok(())
        })?;
        self.samples += samples;
        Ok(())
    }

    /// Samples observed so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The statistics of every sample observed.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when no sample was observed (every mean would be undefined).
    pub fn finish(self) -> Result<Stats> {
        if self.samples == 0 {
            return Err(Error::invalid("calibration", "no samples were observed"));
        }
        let name = |i: usize| self.net.nodes()[i].name.clone();
        Ok(Stats {
            samples: self.samples,
            input_norms: self
                .norms
                .iter()
                .map(|s| {
                    let norms = s.sums.iter().map(|&q| q.sqrt() as f32).collect();
                    (
                        name(s.node),
                        InputNorms {
                            norms,
                            rows: s.rows,
                        },
                    )
                })
                .collect(),
            activations: self
                .activations
                .iter()
                .map(|s| {
                    let n = s.count as f64;
                    let stats = ActivationStats {
                        apoz: s.zeros.iter().map(|&z| (z as f64 / n) as f32).collect(),
                        mean: s.sums.iter().map(|&m| (m / n) as f32).collect(),
                        count: s.count,
                    };
                    (name(s.node), stats)
                })
                .collect(),
            blocks: self
                .blocks
                .into_iter()
                .map(|b| {
                    let n = b.tokens as f64;
                    BlockSimilarity {
                        block: b.block,
                        cosine: b.cos / n,
                        angular_distance: b.angular / n,
                        tokens: b.tokens,
                    }
                })
                .collect(),
        })
    }
}

/// `(outer, features, inner)` of a batched value `[batch, ...sample]` around per-sample `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let sample = &shape[1..];
    let outer = shape[0] * sample[..axis].iter().product::<usize>();
    (outer, sample[axis], sample[axis + 1..].iter().product())
}

/// `Σ f(x)` over `run` in `f64`, in four interleaved partial sums so that the additions do not
/// wait on each other (and vectorise); the order is fixed, so results are reproducible.
fn sum_f64(run: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0.0f64; 4];
    let chunks = run.chunks_exact(4);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(f64::from(v))).sum();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            *lane += f(f64::from(v));
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + tail
}

/// Per-feature sums of squares of a node's input.
#[derive(Debug)]
struct FeatureSums {
    node: usize,
    axis: usize,
    sums: Vec<f64>,
    rows: u64,
}

impl FeatureSums {
    fn new(node: usize, axis: usize, sample_shape: &[usize]) -> Self {
        FeatureSums {
            node,
            axis,
            sums: vec![0.0; sample_shape[axis]],
            rows: 0,
        }
    }

    fn add(&mut self, x: &ArrayViewD<'_, f32>) {
        let (outer, features, inner) = split(x.shape(), self.axis);
        let x = x.as_standard_layout();
        let data = x.as_slice().expect("standard layout");
        for group in data.chunks_exact(features * inner) {
            for (sum, run) in self.sums.iter_mut().zip(group.chunks_exact(inner)) {
                *sum += sum_f64(run, |v| v * v);
            }
        }
        self.rows += (outer * inner) as u64;
    }
}

/// Per-feature zero counts and sums of an activation's output.
#[derive(Debug)]
struct ActivationSums {
    node: usize,
    axis: usize,
    zeros: Vec<u64>,
    sums: Vec<f64>,
    count: u64,
}

impl ActivationSums {
    fn new(node: usize, axis: usize, sample_shape: &[usize]) -> Self {
        let features = sample_shape[axis];
        ActivationSums {
            node,
            axis,
            zeros: vec![0; features],
            sums: vec![0.0; features],
            count: 0,
        }
    }

    fn add(&mut self, y: &ArrayViewD<'_, f32>) {
        let (outer, features, inner) = split(y.shape(), self.axis);
        let y = y.as_standard_layout();
        let data = y.as_slice().expect("standard layout");
        for group in data.chunks_exact(features * inner) {
            for ((zeros, sum), run) in self
                .zeros
                .iter_mut()
                .zip(&mut self.sums)
                .zip(group.chunks_exact(inner))
            {
                *zeros += run.iter().filter(|&&v| v == 0.0).count() as u64;
                *sum += sum_f64(run, |v| v);
            }
        }
        self.count += (outer * inner) as u64;
    }
}

/// Sums of per-token cosine and angular distance between a block's input and output.
#[derive(Debug)]
struct BlockSums {
    block: Block,
    /// Slot of the captured input in `Calibrator::held`; `None` for a one-node block, whose
    /// input is at hand when its output is.
    slot: Option<usize>,
    axis: usize,
    cos: f64,
    angular: f64,
    tokens: u64,
}

impl BlockSums {
    fn add(&mut self, x: &ArrayViewD<'_, f32>, y: &ArrayViewD<'_, f32>) {
        let (outer, features, inner) = split(y.shape(), self.axis);
        // Forward values are in standard layout already: no copy.
        let (x, y) = (x.as_standard_layout(), y.as_standard_layout());
        let (x, y) = (
            x.as_slice().expect("standard layout"),
            y.as_slice().expect("standard layout"),
        );
        let group = features * inner;
        let mut scratch = vec![0.0; 3 * inner];
        for (gx, gy) in x.chunks_exact(group).zip(y.chunks_exact(group)) {
            let (cos, angular) = group_similarity(gx, gy, inner, &mut scratch);
            self.cos += cos;
            self.angular += angular;
        }
        self.tokens += (outer * inner) as u64;
    }
}

/// Sums over the `inner` tokens of one `[features, inner]` group of `cos(x, y)` and of
/// `arccos(cos) / π`; `scratch` holds `3 · inner` values.
fn group_similarity(x: &[f32], y: &[f32], inner: usize, scratch: &mut [f64]) -> (f64, f64) {
    let (dot, norms) = scratch.split_at_mut(inner);
    let (xx, yy) = norms.split_at_mut(inner);
    dot.fill(0.0);
    xx.fill(0.0);
    yy.fill(0.0);
    for (rx, ry) in x.chunks_exact(inner).zip(y.chunks_exact(inner)) {
        let acc = dot.iter_mut().zip(xx.iter_mut()).zip(yy.iter_mut());
        for (((d, p), q), (&a, &b)) in acc.zip(rx.iter().zip(ry)) {
            let (a, b) = (f64::from(a), f64::from(b));
            *d += a * b;
            *p += a * a;
            *q += b * b;
        }
    }
    let (mut cos_sum, mut angular_sum) = (0.0, 0.0);
    for ((&d, &p), &q) in dot.iter().zip(&*xx).zip(&*yy) {
        let cos = if p > 0.0 && q > 0.0 {
            (d / (p.sqrt() * q.sqrt())).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        cos_sum += cos;
        angular_sum += cos.acos() / PI;
    }
    (cos_sum, angular_sum)
}

/// Input feature norms of one Linear or Conv node (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct InputNorms {
    /// `‖X_j‖₂` for each input feature `j` (Linear: input column; Conv: input channel, all
    /// `in_channels` of them whatever the groups).
    pub norms: Vec<f32>,
    /// Number of vectors summed over: samples times positions per sample.
    pub rows: u64,
}

/// APoZ and mean activation of one activation node, per channel or neuron.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct ActivationStats {
    /// Fraction of values exactly zero, in `[0, 1]`.
    pub apoz: Vec<f32>,
    /// Mean value.
    pub mean: Vec<f32>,
    /// Values per channel averaged over: samples times positions per sample.
    pub count: u64,
}

/// Input/output similarity of one block (see the [module docs](self)).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct BlockSimilarity {
    /// The block.
    pub block: Block,
    /// Mean over tokens of `cos(x_in, x_out)`.
    pub cosine: f64,
    /// Mean over tokens of `arccos(cos(x_in, x_out)) / π`, in `[0, 1]`.
    pub angular_distance: f64,
    /// Number of tokens averaged over.
    pub tokens: u64,
}

impl BlockSimilarity {
    /// ShortGPT's Block Influence, `1 − E[cos]`: low means the block barely changes its input.
    pub fn block_influence(&self) -> f64 {
        1.0 - self.cosine
    }
}

/// What calibration collected, by node name (and by block). Serialisable, so that an expensive
/// calibration can be saved and reused, and buildable by hand (through the `insert_` methods) by
/// callers who compute statistics in their own framework.
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Stats {
    samples: usize,
    input_norms: BTreeMap<String, InputNorms>,
    activations: BTreeMap<String, ActivationStats>,
    blocks: Vec<BlockSimilarity>,
}

impl Stats {
    /// Empty statistics over `samples` samples, to fill with the `insert_` methods.
    pub fn new(samples: usize) -> Self {
        Stats {
            samples,
            ..Stats::default()
        }
    }

    /// Number of samples the statistics are over.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Input feature norms of the Linear or Conv node `node`.
    pub fn input_norms(&self, node: &str) -> Option<&InputNorms> {
        self.input_norms.get(node)
    }

    /// APoZ and mean activation of the activation node `node`.
    pub fn activation(&self, node: &str) -> Option<&ActivationStats> {
        self.activations.get(node)
    }

    /// Similarity of `block`.
    pub fn block(&self, block: &Block) -> Option<&BlockSimilarity> {
        self.blocks.iter().find(|b| b.block == *block)
    }

    /// Every node's input norms, in name order.
    pub fn all_input_norms(&self) -> impl ExactSizeIterator<Item = (&str, &InputNorms)> + '_ {
        self.input_norms.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Every activation node's statistics, in name order.
    pub fn all_activations(&self) -> impl ExactSizeIterator<Item = (&str, &ActivationStats)> + '_ {
        self.activations.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// Every block's similarity, in the order the blocks were asked for.
    pub fn blocks(&self) -> &[BlockSimilarity] {
        &self.blocks
    }

    /// Sets the input norms of `node`.
    pub fn insert_input_norms(&mut self, node: impl Into<String>, norms: InputNorms) {
        self.input_norms.insert(node.into(), norms);
    }

    /// Sets the activation statistics of `node`.
    pub fn insert_activation(&mut self, node: impl Into<String>, stats: ActivationStats) {
        self.activations.insert(node.into(), stats);
    }

    /// Sets the similarity of a block, replacing an earlier one of the same block.
    pub fn insert_block(&mut self, similarity: BlockSimilarity) {
        match self.blocks.iter_mut().find(|b| b.block == similarity.block) {
            Some(b) => *b = similarity,
            None => self.blocks.push(similarity),
        }
    }
}

#[cfg(test)]
mod tests;
