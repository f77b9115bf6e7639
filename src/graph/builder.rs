//! A consuming builder that writes a [`NetworkSpec`] as a chain of layers.

use super::layer::{AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d};
use super::layer::{BatchNorm, Conv1d, Conv2d, Layer, LayerNorm, Linear};
use super::network::{Network, NetworkSpec, Node};
use crate::error::Result;
use crate::params::Params;

/// Builds a network node by node. Each method appends a node that reads the previous one (the
/// network input for the first), except [`layer_from`](Self::layer_from) and
/// [`add`](Self::add), which name their inputs. Nothing is checked until
/// [`build`](Self::build) or [`build_init`](Self::build_init), which report the first problem
/// with the node at fault.
///
/// ```
/// use shears::graph::{Conv1d, Network};
///
/// // A residual block: `res` adds the block's input (`relu1`) to its output (`bn2`).
/// let net = Network::builder(&[6, 128])
///     .conv1d("conv1", Conv1d::new(6, 16, 5).padding(2))
///     .relu("relu1")
///     .conv1d("conv2", Conv1d::new(16, 16, 3).padding(1).bias(false))
///     .batch_norm1d("bn2", 16)
///     .add("res", &["bn2", "relu1"])
///     .relu("relu2")
///     .global_avg_pool("gap")
///     .linear("fc", 16, 6)
///     .build_init(42)?;
/// assert_eq!(net.nodes().len(), 8);
/// assert_eq!(net.output_shape("res"), Some(&[16, 128][..]));
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct NetworkBuilder {
    spec: NetworkSpec,
}

impl NetworkBuilder {
    /// A builder for samples of `input_shape` (no batch axis).
    pub fn new(input_shape: &[usize]) -> Self {
        NetworkBuilder {
            spec: NetworkSpec::new(input_shape),
        }
    }

    /// Appends a node, as is.
    pub fn node(mut self, node: Node) -> Self {
        self.spec.nodes.push(node);
        self
    }

    /// Appends `layer` reading the previous node.
    pub fn layer(self, name: impl Into<String>, layer: impl Into<Layer>) -> Self {
        self.node(Node::new(name, layer))
    }

    /// Appends `layer` reading the node called `input` (or the network input, `"input"`): the
    /// start of a branch, such as a projection shortcut.
    pub fn layer_from(self, name: impl Into<String>, input: &str, layer: impl Into<Layer>) -> Self {
        self.node(Node::new(name, layer).inputs([input]))
    }

    /// Appends a residual sum of the named nodes (two or more, of equal shape).
    pub fn add(self, name: impl Into<String>, inputs: &[&str]) -> Self {
        self.node(Node::new(name, Layer::Add).inputs(inputs.iter().copied()))
    }

    /// Makes the node called `name` the network's output (by default the last node).
    pub fn output(mut self, name: impl Into<String>) -> Self {
        self.spec.output = Some(name.into());
        self
    }

    /// Appends a fully connected layer with bias, `nn.Linear(in_features, out_features)`.
    pub fn linear(self, name: impl Into<String>, in_features: usize, out_features: usize) -> Self {
        self.layer(name, Linear::new(in_features, out_features))
    }

    /// Appends a 1-D convolution.
    pub fn conv1d(self, name: impl Into<String>, conv: Conv1d) -> Self {
        self.layer(name, conv)
    }

    /// Appends a 2-D convolution.
    pub fn conv2d(self, name: impl Into<String>, conv: Conv2d) -> Self {
        self.layer(name, conv)
    }

    /// Appends `nn.BatchNorm1d(num_features)` (eps `1e-5`).
    pub fn batch_norm1d(self, name: impl Into<String>, num_features: usize) -> Self {
        self.layer(name, Layer::BatchNorm1d(BatchNorm::new(num_features)))
    }

    /// Appends `nn.BatchNorm2d(num_features)` (eps `1e-5`).
    pub fn batch_norm2d(self, name: impl Into<String>, num_features: usize) -> Self {
        self.layer(name, Layer::BatchNorm2d(BatchNorm::new(num_features)))
    }

    /// Appends `nn.LayerNorm(normalized_shape)` with a learned scale and shift.
    pub fn layer_norm(self, name: impl Into<String>, normalized_shape: &[usize]) -> Self {
        self.layer(name, LayerNorm::new(normalized_shape))
    }

    /// Appends a ReLU.
    pub fn relu(self, name: impl Into<String>) -> Self {
        self.layer(name, Layer::Relu)
    }

    /// Appends an exact GELU.
    pub fn gelu(self, name: impl Into<String>) -> Self {
        self.layer(name, Layer::Gelu)
    }

    /// Appends a sigmoid.
    pub fn sigmoid(self, name: impl Into<String>) -> Self {
        self.layer(name, Layer::Sigmoid)
    }

    /// Appends a tanh.
    pub fn tanh(self, name: impl Into<String>) -> Self {
        self.layer(name, Layer::Tanh)
    }

    /// Appends a softmax along `dim` (PyTorch's convention: 0 is the batch axis, -1 the last).
    pub fn softmax(self, name: impl Into<String>, dim: isize) -> Self {
        self.layer(name, Layer::Softmax { dim })
    }

    /// Appends `nn.MaxPool1d(kernel_size)`: stride equal to the kernel, no padding. Other
    /// settings: `.layer(name, MaxPool1d::new(k).stride(s).padding(p))`.
    pub fn max_pool1d(self, name: impl Into<String>, kernel_size: usize) -> Self {
        self.layer(name, MaxPool1d::new(kernel_size))
    }

    /// Appends `nn.MaxPool2d(kernel_size)`: stride equal to the kernel, no padding.
    pub fn max_pool2d(self, name: impl Into<String>, kernel_size: usize) -> Self {
        self.layer(name, MaxPool2d::new(kernel_size))
    }

    /// Appends `nn.AvgPool1d(kernel_size)`: stride equal to the kernel, no padding.
    pub fn avg_pool1d(self, name: impl Into<String>, kernel_size: usize) -> Self {
        self.layer(name, AvgPool1d::new(kernel_size))
    }

    /// Appends `nn.AvgPool2d(kernel_size)`: stride equal to the kernel, no padding.
    pub fn avg_pool2d(self, name: impl Into<String>, kernel_size: usize) -> Self {
        self.layer(name, AvgPool2d::new(kernel_size))
    }

    /// Appends a mean over all spatial axes, `[C, ...] -> [C]`.
    pub fn global_avg_pool(self, name: impl Into<String>) -> Self {
        self.layer(name, Layer::GlobalAvgPool)
    }

    /// Appends a flatten of each sample to one axis.
    pub fn flatten(self, name: impl Into<String>) -> Self {
        self.layer(name, Layer::Flatten)
    }

    /// Appends dropout with probability `p` (the identity at inference).
    pub fn dropout(self, name: impl Into<String>, p: f64) -> Self {
        self.layer(name, Layer::Dropout { p })
    }

    /// Appends an identity.
    pub fn identity(self, name: impl Into<String>) -> Self {
        self.layer(name, Layer::Identity)
    }

    /// The spec written so far.
    pub fn spec(&self) -> &NetworkSpec {
        &self.spec
    }

    /// The spec, giving the builder up.
    pub fn into_spec(self) -> NetworkSpec {
        self.spec
    }

    /// Validates the spec and builds the network with the given parameters.
    ///
    /// # Errors
    ///
    /// As [`Network::new`].
    pub fn build(self, params: Params) -> Result<Network> {
        Network::new(self.spec, params)
    }

    /// Validates the spec and builds the network with PyTorch-default parameters drawn from
    /// `seed` (see [`Network::init`]).
    ///
    /// # Errors
    ///
    /// As [`Network::init`].
    pub fn build_init(self, seed: u64) -> Result<Network> {
        Network::init(self.spec, seed)
    }
}
