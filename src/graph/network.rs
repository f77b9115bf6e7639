//! The network: a validated spec, its parameters, and the batched forward pass.

use std::collections::HashMap;
use std::ops::Deref;

use ndarray::{ArrayD, ArrayViewD, ArrayViewMutD, IxDyn};
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::backward::{Mode, Pass, Saved};
use super::builder::NetworkBuilder;
use super::layer::{Layer, ParamRole, softmax_axis};
use super::ops;
use crate::error::{Error, Result};
use crate::mask::MaskSet;
use crate::params::{Params, check_finite};
use crate::pool::{copied, recycle_array};

/// Each node's value, where kept.
type Values = Vec<Option<ArrayD<f32>>>;

/// Name by which nodes refer to the network's input.
pub const INPUT: &str = "input";

/// One node of the graph: a named layer and the nodes it reads.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Node {
    /// Unique name; its parameters are called `{name}.weight`, `{name}.bias`, ... Dots are
    /// allowed (`features.0`), `input` is reserved.
    pub name: String,
    /// The operation.
    pub layer: Layer,
    /// Names of earlier nodes (or `input`) this node reads, in order. Empty means the previous
    /// node (or the network input for the first node).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub inputs: Vec<String>,
}

impl Node {
    /// A node reading the previous node.
    pub fn new(name: impl Into<String>, layer: impl Into<Layer>) -> Self {
        Node {
            name: name.into(),
            layer: layer.into(),
            inputs: Vec::new(),
        }
    }

    /// Sets the nodes this node reads.
    pub fn inputs<S: Into<String>>(mut self, inputs: impl IntoIterator<Item = S>) -> Self {
        self.inputs = inputs.into_iter().map(Into::into).collect();
        self
    }
}

/// The architecture of a network: per-sample input shape, nodes in topological order, and which
/// node is the output. Together with a checkpoint of its parameters it fully defines a model.
///
/// In JSON (feature `serde`):
///
/// ```json
/// {
///   "input_shape": [6, 128],
///   "nodes": [
///     {"name": "conv", "layer": {"type": "conv1d", "in_channels": 6, "out_channels": 8, "kernel_size": 3}},
///     {"name": "act", "layer": {"type": "relu"}},
///     {"name": "gap", "layer": {"type": "global_avg_pool"}},
///     {"name": "fc", "layer": {"type": "linear", "in_features": 8, "out_features": 6}}
///   ]
/// }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(deny_unknown_fields)
)]
pub struct NetworkSpec {
    /// Shape of one sample, without the batch axis (`[6, 128]` for 6 channels of 128 steps).
    pub input_shape: Vec<usize>,
    /// Nodes in topological order: every node reads only earlier nodes or the input.
    pub nodes: Vec<Node>,
    /// The node whose value the forward pass returns; the last node when absent.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub output: Option<String>,
}

impl NetworkSpec {
    /// An empty spec for samples of `input_shape`.
    pub fn new(input_shape: &[usize]) -> Self {
        NetworkSpec {
            input_shape: input_shape.to_vec(),
            nodes: Vec::new(),
            output: None,
        }
    }

    /// Parses a JSON spec.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] with serde's message (which names the line and column) when
    /// the text is not a spec. The spec's content is checked later, by [`Network::new`].
    #[cfg(feature = "serde")]
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::invalid("network spec", e.to_string()))
    }

    /// The spec as pretty-printed JSON.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] if serialisation fails, which it does only for settings JSON
    /// cannot hold (a non-finite `eps`).
    #[cfg(feature = "serde")]
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::invalid("network spec", e.to_string()))
    }
}

/// Where a node's input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// The network input.
    Input,
    /// The output of the node at this index.
    Node(usize),
}

/// What a forward visitor sees for each node, in topological order: the node, the values it read
/// and the value it produced, all batched (`[batch, ...]`). The views live only for the call, so a
/// visitor that keeps statistics streams them without holding activations.
#[derive(Debug)]
pub struct Visit<'a> {
    /// Position of the node in [`Network::nodes`].
    pub index: usize,
    /// The node.
    pub node: &'a Node,
    /// Its inputs, in the node's order.
    pub inputs: &'a [ArrayViewD<'a, f32>],
    /// Its output.
    pub output: ArrayViewD<'a, f32>,
}

/// A layer graph with its parameters, validated: node names are unique, inputs refer to earlier
/// nodes, shapes fit, and every parameter is present with its PyTorch shape.
///
/// ```
/// use ndarray::ArrayD;
/// use shears::graph::{Conv1d, Network};
///
/// let net = Network::builder(&[6, 128])
///     .conv1d("conv1", Conv1d::new(6, 32, 5).padding(2))
///     .relu("relu1")
///     .max_pool1d("pool1", 2)
///     .global_avg_pool("gap")
///     .linear("fc", 32, 6)
///     .build_init(7)?;
/// assert_eq!(net.output_shape("pool1"), Some(&[32, 64][..]));
/// assert_eq!(net.params().get("conv1.weight").unwrap().shape(), &[32, 6, 5]);
/// assert_eq!(net.num_params(), 32 * 6 * 5 + 32 + 32 * 6 + 6);
///
/// let x = ArrayD::<f32>::zeros(ndarray::IxDyn(&[4, 6, 128]));
/// let y = net.forward(x.view())?;
/// assert_eq!(y.shape(), &[4, 6]);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Network {
    pub(super) spec: NetworkSpec,
    pub(super) params: Params,
    /// Output shape of each node, per sample.
    pub(super) shapes: Vec<Vec<usize>>,
    /// Resolved inputs of each node.
    pub(super) sources: Vec<Vec<Source>>,
    /// Parameter names of each node, in the order of `Layer::param_specs`.
    pub(super) param_names: Vec<Vec<(ParamRole, String)>>,
    /// FLOPs of each node for one sample.
    pub(super) flops: Vec<u64>,
    /// Index of the last node reading each node's output, if any.
    pub(super) last_use: Vec<Option<usize>>,
    /// Index of the output node.
    pub(super) output: usize,
}

/// Largest number of elements a tensor (per sample) may have: beyond it, byte counts and index
/// arithmetic would overflow.
const MAX_ELEMENTS: usize = isize::MAX as usize / 8;

/// Rejects shapes whose element count overflows, so that later arithmetic on them cannot.
fn check_size(node: &str, what: &str, shape: &[usize]) -> Result<()> {
    match shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Error::graph(
            node,
            format!("{what} shape {shape:?} has too many elements"),
        )),
    }
}

/// What shape inference learns about a spec.
struct Analysis {
    shapes: Vec<Vec<usize>>,
    sources: Vec<Vec<Source>>,
    param_names: Vec<Vec<(ParamRole, String)>>,
    flops: Vec<u64>,
    last_use: Vec<Option<usize>>,
    output: usize,
}

impl Analysis {
    fn of(spec: &NetworkSpec) -> Result<Self> {
        check_size(INPUT, "input", &spec.input_shape)?;
        if spec.input_shape.is_empty() || spec.input_shape.contains(&0) {
            return Err(Error::graph(
                INPUT,
                format!(
                    "input_shape must be non-empty with positive sizes, got {:?}",
                    spec.input_shape
                ),
            ));
        }
        if spec.nodes.is_empty() {
            return Err(Error::invalid("network spec", "it has no nodes"));
        }
        let n = spec.nodes.len();
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
        let mut a = Analysis {
            shapes: Vec::with_capacity(n),
            sources: Vec::with_capacity(n),
            param_names: Vec::with_capacity(n),
            flops: Vec::with_capacity(n),
            last_use: vec![None; n],
            output: n - 1,
        };
        for (i, node) in spec.nodes.iter().enumerate() {
            let name = node.name.as_str();
            if name.is_empty() || name == INPUT {
                return Err(Error::graph(
                    name,
                    format!("node names must be non-empty and not `{INPUT}`"),
                ));
            }
            let sources: Vec<Source> = if node.inputs.is_empty() {
                vec![if i == 0 {
                    Source::Input
                } else {
                    Source::Node(i - 1)
                }]
            } else {
                node.inputs
                    .iter()
                    .map(|input| match index.get(input.as_str()) {
                        _ if input == INPUT => Ok(Source::Input),
                        Some(&j) => Ok(Source::Node(j)),
                        None if spec.nodes[i..].iter().any(|m| m.name == *input) => {
                            Err(Error::graph(
                                name,
                                format!("input `{input}` is not an earlier node (nodes must be in topological order)"),
                            ))
                        }
                        None => Err(Error::graph(name, format!("unknown input `{input}`"))),
                    })
                    .collect::<Result<_>>()?
            };
            if index.insert(name, i).is_some() {
                return Err(Error::graph(name, "duplicate node name"));
            }
            let in_shapes: Vec<&[usize]> = sources
                .iter()
                .map(|s| match *s {
                    Source::Input => spec.input_shape.as_slice(),
                    Source::Node(j) => a.shapes[j].as_slice(),
                })
                .collect();
            let shape = node
                .layer
                .output_shape(&in_shapes)
                .map_err(|reason| Error::graph(name, reason))?;
            check_size(name, "output", &shape)?;
            let specs = node.layer.param_specs();
            for p in &specs {
                check_size(name, p.role.suffix(), &p.shape)?;
            }
            a.flops.push(node.layer.flops(&in_shapes, &shape));
            for s in &sources {
                if let Source::Node(j) = *s {
                    a.last_use[j] = Some(i);
                }
            }
            a.param_names.push(
                specs
                    .into_iter()
                    .map(|p| (p.role, format!("{name}.{}", p.role.suffix())))
                    .collect(),
            );
            a.shapes.push(shape);
            a.sources.push(sources);
        }
        if let Some(out) = &spec.output {
            a.output = *index.get(out.as_str()).ok_or_else(|| {
                Error::invalid("network spec", format!("output `{out}` is not a node"))
            })?;
        }
        Ok(a)
    }
}

impl Network {
    /// Validates `spec` and `params` and builds the network. Parameters are reordered into node
    /// order (`weight`, `bias`, `running_mean`, `running_var` per node, as PyTorch's
    /// `state_dict`). BatchNorm's `num_batches_tracked` counters, which PyTorch checkpoints carry
    /// but inference does not use, are dropped.
    ///
    /// # Errors
    ///
    /// - [`Error::Graph`] naming the node for a duplicate or reserved name, an input that is not
    ///   an earlier node, a wrong number of inputs, invalid settings, shapes that do not fit (with
    ///   the shapes involved) or a missing parameter;
    /// - [`Error::ShapeMismatch`] for a parameter of the wrong shape;
    /// - [`Error::NonFinite`] for a NaN or infinite parameter;
    /// - [`Error::InvalidParameter`] for an empty spec, an unknown output, or parameters that
    ///   belong to no node (all of them are listed).
    pub fn new(spec: NetworkSpec, params: Params) -> Result<Self> {
        let a = Analysis::of(&spec)?;
        let params = order_params(&spec, &a.param_names, params)?;
        Ok(Self::assemble(spec, a, params))
    }

    /// Builds the network with PyTorch's default initialisation, reproducibly from `seed`:
    /// Linear and Conv weights and biases uniform in `±1/√fan_in` (what `kaiming_uniform_(a=√5)`
    /// amounts to; `fan_in = in_features` or `in_channels / groups · kernel size`), normalisation
    /// weights 1 and biases 0, running means 0 and variances 1. Tensors are drawn in parameter
    /// order from one xoshiro256++ stream.
    ///
    /// # Errors
    ///
    /// As [`Network::new`], for the spec.
    pub fn init(spec: NetworkSpec, seed: u64) -> Result<Self> {
        let a = Analysis::of(&spec)?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut params = Params::new();
        for (node, names) in spec.nodes.iter().zip(&a.param_names) {
            let fan_in = match &node.layer {
                Layer::Linear(l) => Some(l.in_features),
                layer => layer.conv_geom().map(|g| g.fan_in()),
            };
            for (p, (_, name)) in node.layer.param_specs().into_iter().zip(names) {
                let shape = IxDyn(&p.shape);
                let tensor = match (fan_in, p.role) {
                    (Some(fan_in), _) => {
                        let bound = 1.0 / (fan_in as f32).sqrt();
                        ArrayD::from_shape_simple_fn(shape, || rng.random_range(-bound..bound))
                    }
                    (None, ParamRole::Weight | ParamRole::RunningVar) => ArrayD::ones(shape),
                    (None, ParamRole::Bias | ParamRole::RunningMean) => ArrayD::zeros(shape),
                };
                params.insert(name.clone(), tensor);
            }
        }
        Ok(Self::assemble(spec, a, params))
    }

    fn assemble(spec: NetworkSpec, a: Analysis, params: Params) -> Self {
        Network {
            spec,
            params,
            shapes: a.shapes,
            sources: a.sources,
            param_names: a.param_names,
            flops: a.flops,
            last_use: a.last_use,
            output: a.output,
        }
    }

    /// A builder for a network reading samples of `input_shape` (no batch axis).
    pub fn builder(input_shape: &[usize]) -> NetworkBuilder {
        NetworkBuilder::new(input_shape)
    }

    /// The architecture.
    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// Shape of one input sample.
    pub fn input_shape(&self) -> &[usize] {
        &self.spec.input_shape
    }

    /// Nodes in topological order.
    pub fn nodes(&self) -> &[Node] {
        &self.spec.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.spec.nodes.iter().find(|n| n.name == name)
    }

    /// Position of the node called `name` in [`Network::nodes`].
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.spec.nodes.iter().position(|n| n.name == name)
    }

    /// The resolved inputs of the node at `index`.
    pub fn sources(&self, index: usize) -> Option<&[Source]> {
        self.sources.get(index).map(Vec::as_slice)
    }

    /// The output node's index.
    pub fn output_index(&self) -> usize {
        self.output
    }

    /// Output shape (per sample) of the node called `name`.
    pub fn output_shape(&self, name: &str) -> Option<&[usize]> {
        self.node_index(name).map(|i| self.shapes[i].as_slice())
    }

    /// Output shape (per sample) of every node, in node order.
    pub fn output_shapes(&self) -> &[Vec<usize>] {
        &self.shapes
    }

    /// The parameters, in node order.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Mutable access to parameter values (not shapes, which the architecture fixes).
    pub fn params_mut(&mut self) -> ParamsMut<'_> {
        ParamsMut(&mut self.params)
    }

    /// Names of the node's parameters (`{node}.weight`, ...), in `state_dict` order.
    pub fn param_names(&self, index: usize) -> impl Iterator<Item = &str> + '_ {
        self.param_names
            .get(index)
            .into_iter()
            .flatten()
            .map(|(_, n)| n.as_str())
    }

    /// Replaces all parameters, with the checks of [`Network::new`].
    ///
    /// # Errors
    ///
    /// As [`Network::new`] for parameters; the network is left unchanged on error.
    pub fn set_params(&mut self, params: Params) -> Result<()> {
        self.params = order_params(&self.spec, &self.param_names, params)?;
        Ok(())
    }

    /// Zeroes every pruned parameter element: the masks, named as the parameters, become the
    /// network's weights. Nothing changes unless every mask fits its tensor.
    ///
    /// # Errors
    ///
    /// As [`MaskSet::apply`]: [`Error::UnknownTensor`] or [`Error::ShapeMismatch`].
    pub fn apply_masks(&mut self, masks: &MaskSet) -> Result<()> {
        masks.apply(&mut self.params)
    }

    /// The parameters, giving the network up.
    pub fn into_params(self) -> Params {
        self.params
    }

    /// The spec and the parameters, giving the network up.
    pub fn into_parts(self) -> (NetworkSpec, Params) {
        (self.spec, self.params)
    }

    /// Number of trainable parameters (PyTorch's `sum(p.numel() for p in parameters())`):
    /// BatchNorm's running statistics are buffers and not counted.
    pub fn num_params(&self) -> usize {
        self.param_names
            .iter()
            .flatten()
            .filter(|(role, _)| role.is_trainable())
            .filter_map(|(_, name)| self.params.get(name))
            .map(|t| t.len())
            .sum()
    }

    /// FLOPs of each node for one sample, in node order (see the [module docs](super) for the
    /// convention: a multiply-accumulate counts 2).
    pub fn node_flops(&self) -> &[u64] {
        &self.flops
    }

    /// Total FLOPs for one sample.
    pub fn flops(&self) -> u64 {
        self.flops.iter().sum()
    }

    /// Runs a batch `[batch, ...input_shape]` through the network and returns the output node's
    /// value, `[batch, ...]`. Intermediate values are dropped as soon as no later node needs them.
    ///
    /// # Errors
    ///
    /// [`Error::Graph`] (node `input`) when the input's shape is not `[batch, ...input_shape]`.
    pub fn forward(&self, input: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>> {
        self.forward_visit(input, |_| Ok(()))
    }

    /// As [`Network::forward`], calling `visit` after each node with the node's inputs and output,
    /// so that statistics (calibration, activation norms) stream without keeping activations.
    /// An error from `visit` stops the pass and is returned.
    ///
    /// ```
    /// use shears::graph::{Linear, Network};
    ///
    /// let net = Network::builder(&[3]).layer("fc", Linear::new(3, 2)).relu("act").build_init(1)?;
    /// let x = ndarray::ArrayD::<f32>::ones(ndarray::IxDyn(&[5, 3]));
    /// let mut zeros = Vec::new();
    /// net.forward_visit(x.view(), |v| {
    ///     zeros.push((v.node.name.clone(), v.output.iter().filter(|&&a| a == 0.0).count()));
    ///     Ok(())
    /// })?;
    /// assert_eq!(zeros.len(), 2);
    /// # Ok::<(), shears::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Network::forward`], and whatever `visit` returns.
    pub fn forward_visit<F>(&self, input: ArrayViewD<'_, f32>, visit: F) -> Result<ArrayD<f32>>
    where
        F: FnMut(Visit<'_>) -> Result<()>,
    {
        let (mut values, _) = self.run(input, Pass::INFERENCE, false, visit)?;
        values[self.output]
            .take()
            .ok_or_else(|| Error::graph(self.nodes()[self.output].name.as_str(), "output lost"))
    }

    /// Runs a batch and keeps every node's output, in node order (what a backward pass needs).
    ///
    /// # Errors
    ///
    /// As [`Network::forward`].
    pub fn forward_all(&self, input: ArrayViewD<'_, f32>) -> Result<Vec<ArrayD<f32>>> {
        self.run(input, Pass::INFERENCE, true, |_| Ok(()))?
            .0
            .into_iter()
            .zip(&self.spec.nodes)
            .map(|(v, node)| v.ok_or_else(|| Error::graph(node.name.as_str(), "value lost")))
            .collect()
    }

    /// Runs a batch in `pass`'s mode, returning the values kept (all of them with `keep_all`,
    /// else only the output) and what each node saved for a backward pass.
    pub(super) fn run<F>(
        &self,
        input: ArrayViewD<'_, f32>,
        pass: Pass,
        keep_all: bool,
        mut visit: F,
    ) -> Result<(Values, Vec<Saved>)>
    where
        F: FnMut(Visit<'_>) -> Result<()>,
    {
        let shape = self.input_shape();
        if input.ndim() != shape.len() + 1 || &input.shape()[1..] != shape {
            return Err(Error::graph(
                INPUT,
                format!(
                    "expected a batch of shape [batch, {}], got {:?}",
                    shape
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    input.shape()
                ),
            ));
        }
        let x = input.as_standard_layout();
        let mut values: Vec<Option<ArrayD<f32>>> = vec![None; self.spec.nodes.len()];
        let mut saved = Vec::with_capacity(if pass.record { values.len() } else { 0 });
        for (i, node) in self.spec.nodes.iter().enumerate() {
            let out = {
                let inputs = self.sources[i]
                    .iter()
                    .map(|s| match *s {
                        Source::Input => Ok(x.view()),
                        Source::Node(j) => values[j]
                            .as_ref()
                            .map(|a| a.view())
                            .ok_or_else(|| Error::graph(node.name.as_str(), "input value lost")),
                    })
                    .collect::<Result<Vec<_>>>()?;
                let (out, keep) = self.eval(i, &inputs, pass)?;
                if pass.record {
                    saved.push(keep);
                }
                visit(Visit {
                    index: i,
                    node,
                    inputs: &inputs,
                    output: out.view(),
                })?;
                out
            };
            if !keep_all {
                for s in &self.sources[i] {
                    if let Source::Node(j) = *s
                        && self.last_use[j] == Some(i)
                        && j != self.output
                        && let Some(v) = values[j].take()
                    {
                        recycle_array(v);
                    }
                }
                if self.last_use[i].is_none() && i != self.output {
                    recycle_array(out);
                    continue;
                }
            }
            values[i] = Some(out);
        }
        Ok((values, saved))
    }

    /// The parameter of node `i` with `role`, as a flat slice.
    pub(super) fn param(&self, i: usize, role: ParamRole) -> Result<&[f32]> {
        self.param_names[i]
            .iter()
            .find(|(r, _)| *r == role)
            .and_then(|(_, name)| self.params.slice(name))
            .ok_or_else(|| {
                Error::graph(
                    self.spec.nodes[i].name.as_str(),
                    format!("missing {} parameter", role.suffix()),
                )
            })
    }

    /// Optional bias of node `i`.
    fn bias(&self, i: usize) -> Option<&[f32]> {
        self.param(i, ParamRole::Bias).ok()
    }

    /// Computes node `i` from its batched inputs in `pass`'s mode, with what its backward needs
    /// when the pass records.
    fn eval(
        &self,
        i: usize,
        inputs: &[ArrayViewD<'_, f32>],
        pass: Pass,
    ) -> Result<(ArrayD<f32>, Saved)> {
        let node = &self.spec.nodes[i];
        let fail = |reason: &str| Error::graph(node.name.as_str(), reason);
        let slices = inputs
            .iter()
            .map(|v| v.as_slice().ok_or_else(|| fail("input is not contiguous")))
            .collect::<Result<Vec<&[f32]>>>()?;
        let x = slices[0];
        let in_shape = &inputs[0].shape()[1..];
        let batch = inputs[0].shape()[0];
        let mut out_shape = Vec::with_capacity(self.shapes[i].len() + 1);
        out_shape.push(batch);
        out_shape.extend_from_slice(&self.shapes[i]);
        let mut keep = Saved::Nothing;
        let data = match &node.layer {
            Layer::Linear(l) => ops::linear(
                x,
                l.in_features,
                self.param(i, ParamRole::Weight)?,
                l.out_features,
                self.bias(i),
            ),
            layer @ (Layer::Conv1d(_) | Layer::Conv2d(_)) => {
                let g = layer.conv_geom().ok_or_else(|| fail("not a convolution"))?;
                ops::conv(
                    &g,
                    x,
                    hw(in_shape),
                    hw(&self.shapes[i]),
                    self.param(i, ParamRole::Weight)?,
                    self.bias(i),
                )
            }
            Layer::BatchNorm1d(b) | Layer::BatchNorm2d(b) => {
                let spatial = in_shape[1..].iter().product();
                let gamma = self.param(i, ParamRole::Weight)?;
                let beta = self.param(i, ParamRole::Bias)?;
                let (scale, shift) = match pass.mode {
                    Mode::Eval => ops::batch_norm_affine(
                        gamma,
                        beta,
                        self.param(i, ParamRole::RunningMean)?,
                        self.param(i, ParamRole::RunningVar)?,
                        b.eps,
                    ),
                    Mode::Train { .. } => {
                        if batch * spatial < 2 {
                            return Err(fail(&format!(
                                "training needs more than one value per channel, got input shape {:?}",
                                inputs[0].shape()
                            )));
                        }
                        let stats = ops::channel_stats(x, b.num_features, spatial);
                        let (mean, var): (Vec<f32>, Vec<f32>) =
                            stats.iter().map(|&(m, v)| (m as f32, v as f32)).unzip();
                        keep = Saved::BatchStats {
                            stats,
                            count: batch * spatial,
                        };
                        ops::batch_norm_affine(gamma, beta, &mean, &var, b.eps)
                    }
                };
                ops::channel_affine(x, spatial, &scale, &shift)
            }
            Layer::LayerNorm(l) => {
                let affine = if l.elementwise_affine {
                    Some((
                        self.param(i, ParamRole::Weight)?,
                        self.param(i, ParamRole::Bias)?,
                    ))
                } else {
                    None
                };
                ops::layer_norm(x, l.normalized_shape.iter().product(), l.eps, affine)
            }
            // Not `v.max(0.0)`, which turns NaN into 0: PyTorch's ReLU passes NaN on.
            Layer::Relu => ops::map(x, |v| if v < 0.0 { 0.0 } else { v }),
            Layer::Gelu => ops::map(x, ops::gelu),
            Layer::Sigmoid => ops::map(x, ops::sigmoid),
            Layer::Tanh => ops::map(x, f32::tanh),
            Layer::Softmax { dim } => {
                let axis = softmax_axis(*dim, in_shape.len()).map_err(|r| fail(&r))?;
                let full = inputs[0].shape();
                ops::softmax(x, full[axis], full[axis + 1..].iter().product())
            }
            layer @ (Layer::MaxPool1d(_)
            | Layer::MaxPool2d(_)
            | Layer::AvgPool1d(_)
            | Layer::AvgPool2d(_)) => {
                let g = layer
                    .pool_geom()
                    .ok_or_else(|| fail("not a pooling layer"))?;
                let (hw, out_hw) = (hw(in_shape), hw(&self.shapes[i]));
                if pass.record && g.avg.is_none() {
                    if hw[0] * hw[1] >= u32::MAX as usize {
                        return Err(fail("planes of 2^32 elements or more cannot be recorded"));
                    }
                    let (y, argmax) = ops::max_pool_argmax(&g, x, hw, out_hw);
                    keep = Saved::Argmax(argmax);
                    y
                } else {
                    ops::pool(&g, x, hw, out_hw)
                }
            }
            Layer::GlobalAvgPool => ops::mean_runs(x, in_shape[1..].iter().product()),
            Layer::Dropout { p } if *p > 0.0 && matches!(pass.mode, Mode::Train { .. }) => {
                let Mode::Train { seed } = pass.mode else {
                    unreachable!("matched above")
                };
                let mask = ops::dropout_mask(x.len(), *p, node_seed(seed, i));
                let y = ops::mul(x, &mask);
                keep = Saved::DropMask(mask);
                y
            }
            Layer::Flatten | Layer::Dropout { .. } | Layer::Identity => copied(x),
            Layer::Add => ops::add(&slices),
        };
        let out =
            ArrayD::from_shape_vec(IxDyn(&out_shape), data).map_err(|e| fail(&e.to_string()))?;
        Ok((out, keep))
    }
}

/// Spatial extent of `[C, ...]` samples as `[h, w]`, with `h = 1` for 1-D samples.
pub(super) fn hw(s: &[usize]) -> [usize; 2] {
    match s.len() {
        2 => [1, s[1]],
        3 => [s[1], s[2]],
        _ => [1, 1],
    }
}

/// The seed of node `i`'s dropout mask within a pass seeded with `seed`.
fn node_seed(seed: u64, i: usize) -> u64 {
    seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Checks `params` against the spec and returns them in node order.
fn order_params(
    spec: &NetworkSpec,
    param_names: &[Vec<(ParamRole, String)>],
    params: Params,
) -> Result<Params> {
    let mut by_name: HashMap<String, ArrayD<f32>> = params.into_iter().collect();
    let mut ordered = Params::new();
    for (node, names) in spec.nodes.iter().zip(param_names) {
        for (p, (_, name)) in node.layer.param_specs().into_iter().zip(names) {
            let tensor = by_name.remove(name).ok_or_else(|| {
                Error::graph(
                    node.name.as_str(),
                    format!("missing parameter `{name}` of shape {:?}", p.shape),
                )
            })?;
            if tensor.shape() != p.shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    name: name.clone(),
                    expected: p.shape,
                    got: tensor.shape().to_vec(),
                });
            }
            check_finite(name, &tensor)?;
            ordered.insert(name.clone(), tensor);
        }
        if matches!(node.layer, Layer::BatchNorm1d(_) | Layer::BatchNorm2d(_)) {
            by_name.remove(&format!("{}.num_batches_tracked", node.name));
        }
    }
    if !by_name.is_empty() {
        let mut stray: Vec<String> = by_name.into_keys().collect();
        stray.sort_unstable();
        return Err(Error::invalid(
            "parameters",
            format!(
                "{} tensor(s) belong to no node: {}",
                stray.len(),
                stray.join(", ")
            ),
        ));
    }
    Ok(ordered)
}

/// Mutable access to a network's parameter values. Tensors can be read and written in place but
/// not replaced, so the architecture's shapes always hold; use [`Network::set_params`] to swap
/// them all with checks. Reading goes through `Deref` to [`Params`].
#[derive(Debug)]
pub struct ParamsMut<'a>(&'a mut Params);

impl ParamsMut<'_> {
    /// A mutable view of the tensor called `name`.
    pub fn get_mut(&mut self, name: &str) -> Option<ArrayViewMutD<'_, f32>> {
        self.0.get_mut(name)
    }

    /// `(name, mutable view)` pairs in order.
    pub fn iter_mut(
        &mut self,
    ) -> impl ExactSizeIterator<Item = (&str, ArrayViewMutD<'_, f32>)> + '_ {
        self.0.iter_mut()
    }
}

impl Deref for ParamsMut<'_> {
    type Target = Params;
    fn deref(&self) -> &Params {
        self.0
    }
}
