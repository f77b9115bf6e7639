//! Layer kinds, their settings, their parameters, shape rules and FLOP counts.
//!
//! Settings follow PyTorch's constructors field for field, with PyTorch's defaults, so that a spec
//! reads like the `nn.Module` it mirrors and a checkpoint's tensors line up by name and shape.

#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use super::ops::Window;

/// Something that can be read as a `[height, width]` pair: a single `usize` (used for both) or a
/// pair, as PyTorch's `int or tuple` arguments.
pub trait IntoPair {
    /// The `[height, width]` pair.
    fn into_pair(self) -> [usize; 2];
}

impl IntoPair for usize {
    fn into_pair(self) -> [usize; 2] {
        [self, self]
    }
}

impl IntoPair for [usize; 2] {
    fn into_pair(self) -> [usize; 2] {
        self
    }
}

impl IntoPair for (usize, usize) {
    fn into_pair(self) -> [usize; 2] {
        [self.0, self.1]
    }
}

#[cfg(feature = "serde")]
fn one() -> usize {
    1
}

#[cfg(feature = "serde")]
fn ones() -> [usize; 2] {
    [1, 1]
}

#[cfg(feature = "serde")]
fn yes() -> bool {
    true
}

#[cfg(feature = "serde")]
fn default_eps() -> f64 {
    1e-5
}

#[cfg(feature = "serde")]
fn default_momentum() -> f64 {
    0.1
}

/// JSON helpers: `int or [h, w]` pairs and PyTorch's "stride defaults to the kernel size" rule.
#[cfg(feature = "serde")]
mod json {
    use serde::{Deserialize, Deserializer};

    /// A `[h, w]` pair written as one integer or as a two-element array.
    #[derive(Clone, Copy, Deserialize)]
    #[serde(from = "PairJson")]
    pub(super) struct Pair(pub(super) [usize; 2]);

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum PairJson {
        One(usize),
        Two([usize; 2]),
    }

    impl From<PairJson> for Pair {
        fn from(p: PairJson) -> Self {
            match p {
                PairJson::One(v) => Pair([v, v]),
                PairJson::Two(p) => Pair(p),
            }
        }
    }

    pub(super) fn pair<'de, D: Deserializer<'de>>(d: D) -> Result<[usize; 2], D::Error> {
        Pair::deserialize(d).map(|p| p.0)
    }

    /// Pool settings as written: `stride` may be left out (then it is the kernel size, as in
    /// PyTorch), `count_include_pad` only makes sense for average pooling.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct PoolJson<S> {
        pub(super) kernel_size: S,
        pub(super) stride: Option<S>,
        pub(super) padding: Option<S>,
        pub(super) count_include_pad: Option<bool>,
    }
}

/// `nn.Linear(in_features, out_features, bias)`: `y = x Wᵀ + b` over the last axis.
///
/// Parameters: `weight` `[out_features, in_features]`, `bias` `[out_features]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Linear {
    /// Size of the input's last axis.
    pub in_features: usize,
    /// Size of the output's last axis.
    pub out_features: usize,
    /// Whether a bias is added (PyTorch default `true`).
    #[cfg_attr(feature = "serde", serde(default = "yes"))]
    pub bias: bool,
}

impl Linear {
    /// A linear layer with bias.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Linear {
            in_features,
            out_features,
            bias: true,
        }
    }

    /// Sets whether a bias is added.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

/// `nn.Conv1d`: a 1-D convolution over `[C, L]` samples.
///
/// Parameters: `weight` `[out_channels, in_channels / groups, kernel_size]`, `bias` `[out_channels]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Conv1d {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Kernel length.
    pub kernel_size: usize,
    /// Step between windows (default 1).
    #[cfg_attr(feature = "serde", serde(default = "one"))]
    pub stride: usize,
    /// Zeros added at both ends (default 0).
    #[cfg_attr(feature = "serde", serde(default))]
    pub padding: usize,
    /// Spacing between kernel taps (default 1).
    #[cfg_attr(feature = "serde", serde(default = "one"))]
    pub dilation: usize,
    /// Channel groups; `groups == in_channels` is a depthwise convolution (default 1).
    #[cfg_attr(feature = "serde", serde(default = "one"))]
    pub groups: usize,
    /// Whether a bias is added (default `true`).
    #[cfg_attr(feature = "serde", serde(default = "yes"))]
    pub bias: bool,
}

impl Conv1d {
    /// A convolution with PyTorch's defaults: stride 1, no padding, dilation 1, one group, bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Conv1d {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
            bias: true,
        }
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    /// Sets the zero padding at both ends.
    pub fn padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: usize) -> Self {
        self.dilation = dilation;
        self
    }

    /// Sets the number of channel groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets whether a bias is added.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

/// `nn.Conv2d`: a 2-D convolution over `[C, H, W]` samples. Pairs are `[height, width]`; in JSON
/// a single integer stands for both, as in PyTorch.
///
/// Parameters: `weight` `[out_channels, in_channels / groups, kh, kw]`, `bias` `[out_channels]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(deny_unknown_fields)
)]
pub struct Conv2d {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Kernel size `[kh, kw]`.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "json::pair"))]
    pub kernel_size: [usize; 2],
    /// Step between windows (default `[1, 1]`).
    #[cfg_attr(
        feature = "serde",
        serde(default = "ones", deserialize_with = "json::pair")
    )]
    pub stride: [usize; 2],
    /// Zeros added on both sides of each axis (default `[0, 0]`).
    #[cfg_attr(feature = "serde", serde(default, deserialize_with = "json::pair"))]
    pub padding: [usize; 2],
    /// Spacing between kernel taps (default `[1, 1]`).
    #[cfg_attr(
        feature = "serde",
        serde(default = "ones", deserialize_with = "json::pair")
    )]
    pub dilation: [usize; 2],
    /// Channel groups; `groups == in_channels` is a depthwise convolution (default 1).
    #[cfg_attr(feature = "serde", serde(default = "one"))]
    pub groups: usize,
    /// Whether a bias is added (default `true`).
    #[cfg_attr(feature = "serde", serde(default = "yes"))]
    pub bias: bool,
}

impl Conv2d {
    /// A convolution with PyTorch's defaults: stride 1, no padding, dilation 1, one group, bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: impl IntoPair) -> Self {
        Conv2d {
            in_channels,
            out_channels,
            kernel_size: kernel_size.into_pair(),
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            bias: true,
        }
    }

    /// Sets the stride.
    pub fn stride(mut self, stride: impl IntoPair) -> Self {
        self.stride = stride.into_pair();
        self
    }

    /// Sets the zero padding.
    pub fn padding(mut self, padding: impl IntoPair) -> Self {
        self.padding = padding.into_pair();
        self
    }

    /// Sets the dilation.
    pub fn dilation(mut self, dilation: impl IntoPair) -> Self {
        self.dilation = dilation.into_pair();
        self
    }

    /// Sets the number of channel groups.
    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// Sets whether a bias is added.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
}

/// `nn.BatchNorm1d` / `nn.BatchNorm2d`: per channel (axis 1), `y = (x - mean) / sqrt(var + eps) *
/// weight + bias`. At inference `mean` and `var` are the running statistics; in training (see
/// [`Mode`](super::Mode)) they are the batch's own (biased variance), and the running statistics
/// move towards them by `momentum`, with the unbiased variance, as in PyTorch.
///
/// Parameters: `weight`, `bias` (trainable) and the buffers `running_mean`, `running_var`, all
/// `[num_features]`.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(deny_unknown_fields)
)]
pub struct BatchNorm {
    /// Number of channels.
    pub num_features: usize,
    /// Added to the variance for stability (PyTorch default `1e-5`).
    #[cfg_attr(feature = "serde", serde(default = "default_eps"))]
    pub eps: f64,
    /// Weight of a training batch in the running statistics: `running = (1 - momentum) ·
    /// running + momentum · batch` (PyTorch default `0.1`), in `[0, 1]`.
    #[cfg_attr(feature = "serde", serde(default = "default_momentum"))]
    pub momentum: f64,
}

impl BatchNorm {
    /// Batch normalisation with PyTorch's defaults `eps = 1e-5`, `momentum = 0.1`.
    pub fn new(num_features: usize) -> Self {
        BatchNorm {
            num_features,
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    /// Sets `eps`.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the running statistics' `momentum`.
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
}

/// `nn.LayerNorm`: normalises over the trailing axes given by `normalized_shape`, each sample on
/// its own (biased variance, as PyTorch).
///
/// Parameters (with `elementwise_affine`): `weight`, `bias`, both of shape `normalized_shape`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(deny_unknown_fields)
)]
pub struct LayerNorm {
    /// The trailing axes normalised over; must equal the input's last axes.
    pub normalized_shape: Vec<usize>,
    /// Added to the variance for stability (default `1e-5`).
    #[cfg_attr(feature = "serde", serde(default = "default_eps"))]
    pub eps: f64,
    /// Whether a learned per-element scale and shift follow (default `true`).
    #[cfg_attr(feature = "serde", serde(default = "yes"))]
    pub elementwise_affine: bool,
}

impl LayerNorm {
    /// Layer normalisation over the trailing axes `normalized_shape`, with PyTorch's defaults.
    pub fn new(normalized_shape: &[usize]) -> Self {
        LayerNorm {
            normalized_shape: normalized_shape.to_vec(),
            eps: 1e-5,
            elementwise_affine: true,
        }
    }

    /// Sets `eps`.
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }

    /// Sets whether a learned scale and shift follow.
    pub fn elementwise_affine(mut self, affine: bool) -> Self {
        self.elementwise_affine = affine;
        self
    }
}

macro_rules! pool_setters {
    ($t:ty, $arg:ty, $conv:expr) => {
        impl $t {
            /// Sets the stride (by default the kernel size).
            pub fn stride(mut self, stride: $arg) -> Self {
                self.stride = $conv(stride);
                self
            }

            /// Sets the implicit padding at both ends (at most half the kernel size, as in
            /// PyTorch).
            pub fn padding(mut self, padding: $arg) -> Self {
                self.padding = $conv(padding);
                self
            }
        }
    };
}

/// `nn.MaxPool1d` over `[C, L]` samples; padded positions never win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "json::PoolJson<usize>"))]
pub struct MaxPool1d {
    /// Window length.
    pub kernel_size: usize,
    /// Step between windows (PyTorch's default: the kernel size).
    pub stride: usize,
    /// Implicit padding at both ends (default 0).
    pub padding: usize,
}

impl MaxPool1d {
    /// Non-overlapping max pooling: stride equal to the kernel size, no padding.
    pub fn new(kernel_size: usize) -> Self {
        MaxPool1d {
            kernel_size,
            stride: kernel_size,
            padding: 0,
        }
    }
}
pool_setters!(MaxPool1d, usize, |v| v);

/// `nn.MaxPool2d` over `[C, H, W]` samples; padded positions never win.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "json::PoolJson<json::Pair>"))]
pub struct MaxPool2d {
    /// Window size `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Step between windows (default: the kernel size).
    pub stride: [usize; 2],
    /// Implicit padding (default `[0, 0]`).
    pub padding: [usize; 2],
}

impl MaxPool2d {
    /// Non-overlapping max pooling: stride equal to the kernel size, no padding.
    pub fn new(kernel_size: impl IntoPair) -> Self {
        let k = kernel_size.into_pair();
        MaxPool2d {
            kernel_size: k,
            stride: k,
            padding: [0, 0],
        }
    }
}
pool_setters!(MaxPool2d, impl IntoPair, IntoPair::into_pair);

/// `nn.AvgPool1d` over `[C, L]` samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "json::PoolJson<usize>"))]
pub struct AvgPool1d {
    /// Window length.
    pub kernel_size: usize,
    /// Step between windows (default: the kernel size).
    pub stride: usize,
    /// Zero padding at both ends (default 0).
    pub padding: usize,
    /// Whether padded zeros count in the divisor (PyTorch default `true`).
    pub count_include_pad: bool,
}

impl AvgPool1d {
    /// Non-overlapping average pooling: stride equal to the kernel size, no padding.
    pub fn new(kernel_size: usize) -> Self {
        AvgPool1d {
            kernel_size,
            stride: kernel_size,
            padding: 0,
            count_include_pad: true,
        }
    }

    /// Sets whether padded zeros count in the divisor.
    pub fn count_include_pad(mut self, include: bool) -> Self {
        self.count_include_pad = include;
        self
    }
}
pool_setters!(AvgPool1d, usize, |v| v);

/// `nn.AvgPool2d` over `[C, H, W]` samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "json::PoolJson<json::Pair>"))]
pub struct AvgPool2d {
    /// Window size `[kh, kw]`.
    pub kernel_size: [usize; 2],
    /// Step between windows (default: the kernel size).
    pub stride: [usize; 2],
    /// Zero padding (default `[0, 0]`).
    pub padding: [usize; 2],
    /// Whether padded zeros count in the divisor (default `true`).
    pub count_include_pad: bool,
}

impl AvgPool2d {
    /// Non-overlapping average pooling: stride equal to the kernel size, no padding.
    pub fn new(kernel_size: impl IntoPair) -> Self {
        let k = kernel_size.into_pair();
        AvgPool2d {
            kernel_size: k,
            stride: k,
            padding: [0, 0],
            count_include_pad: true,
        }
    }

    /// Sets whether padded zeros count in the divisor.
    pub fn count_include_pad(mut self, include: bool) -> Self {
        self.count_include_pad = include;
        self
    }
}
pool_setters!(AvgPool2d, impl IntoPair, IntoPair::into_pair);

#[cfg(feature = "serde")]
mod pool_json {
    use super::json::{Pair, PoolJson};
    use super::*;

    const NOT_FOR_MAX: &str = "`count_include_pad` applies to average pooling only";

    impl TryFrom<PoolJson<usize>> for MaxPool1d {
        type Error = &'static str;
        fn try_from(p: PoolJson<usize>) -> Result<Self, Self::Error> {
            if p.count_include_pad.is_some() {
                return Err(NOT_FOR_MAX);
            }
            Ok(MaxPool1d {
                kernel_size: p.kernel_size,
                stride: p.stride.unwrap_or(p.kernel_size),
                padding: p.padding.unwrap_or(0),
            })
        }
    }

    impl TryFrom<PoolJson<Pair>> for MaxPool2d {
        type Error = &'static str;
        fn try_from(p: PoolJson<Pair>) -> Result<Self, Self::Error> {
            if p.count_include_pad.is_some() {
                return Err(NOT_FOR_MAX);
            }
            Ok(MaxPool2d {
                kernel_size: p.kernel_size.0,
                stride: p.stride.unwrap_or(p.kernel_size).0,
                padding: p.padding.map_or([0, 0], |p| p.0),
            })
        }
    }

    impl TryFrom<PoolJson<usize>> for AvgPool1d {
        type Error = &'static str;
        fn try_from(p: PoolJson<usize>) -> Result<Self, Self::Error> {
            Ok(AvgPool1d {
                kernel_size: p.kernel_size,
                stride: p.stride.unwrap_or(p.kernel_size),
                padding: p.padding.unwrap_or(0),
                count_include_pad: p.count_include_pad.unwrap_or(true),
            })
        }
    }

    impl TryFrom<PoolJson<Pair>> for AvgPool2d {
        type Error = &'static str;
        fn try_from(p: PoolJson<Pair>) -> Result<Self, Self::Error> {
            Ok(AvgPool2d {
                kernel_size: p.kernel_size.0,
                stride: p.stride.unwrap_or(p.kernel_size).0,
                padding: p.padding.map_or([0, 0], |p| p.0),
                count_include_pad: p.count_include_pad.unwrap_or(true),
            })
        }
    }
}

/// One operation of the graph. In JSON a layer is an object tagged by `"type"` (snake case:
/// `"conv1d"`, `"batch_norm2d"`, `"global_avg_pool"`, ...) with its settings beside the tag, for
/// example `{"type": "conv1d", "in_channels": 6, "out_channels": 32, "kernel_size": 5, "padding": 2}`.
/// Settings left out take PyTorch's defaults.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(
    feature = "serde",
    derive(Serialize, Deserialize),
    serde(tag = "type", rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Layer {
    /// Fully connected layer over the last axis.
    Linear(Linear),
    /// 1-D convolution, `[C, L]` samples.
    Conv1d(Conv1d),
    /// 2-D convolution, `[C, H, W]` samples.
    Conv2d(Conv2d),
    /// Batch normalisation (running statistics) of `[C]` or `[C, L]` samples.
    BatchNorm1d(BatchNorm),
    /// Batch normalisation (running statistics) of `[C, H, W]` samples.
    BatchNorm2d(BatchNorm),
    /// Layer normalisation over trailing axes.
    LayerNorm(LayerNorm),
    /// `max(x, 0)`.
    Relu,
    /// Exact GELU, `x · Φ(x) = x / 2 · erfc(-x / √2)` (PyTorch's default, not the tanh form).
    Gelu,
    /// Logistic function `1 / (1 + e^-x)`.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax along one axis.
    Softmax {
        /// The axis in PyTorch's convention for the batched tensor: 0 is the batch axis, 1 the
        /// first per-sample axis; negative values count from the end.
        dim: isize,
    },
    /// 1-D max pooling.
    MaxPool1d(MaxPool1d),
    /// 2-D max pooling.
    MaxPool2d(MaxPool2d),
    /// 1-D average pooling.
    AvgPool1d(AvgPool1d),
    /// 2-D average pooling.
    AvgPool2d(AvgPool2d),
    /// Mean over all spatial axes: `[C, L]` or `[C, H, W]` becomes `[C]` (PyTorch's
    /// `AdaptiveAvgPool(1)` followed by `flatten(1)`).
    GlobalAvgPool,
    /// Flattens each sample to one axis (PyTorch's `nn.Flatten()`, `start_dim = 1`).
    Flatten,
    /// Dropout; the identity at inference.
    Dropout {
        /// Probability of zeroing an element during training, in `[0, 1)`.
        p: f64,
    },
    /// Element-wise sum of two or more inputs of equal shape (residual connections).
    Add,
    /// Passes its input through unchanged (a removed block, a placeholder).
    Identity,
}

/// `From<T> for Layer` for every layer whose variant is named after its parameter type.
macro_rules! layer_from {
    ($($t:ident),* $(,)?) => {
        $(impl From<$t> for Layer {
            fn from(l: $t) -> Self {
                Layer::$t(l)
            }
        })*
    };
}

layer_from!(
    Linear, Conv1d, Conv2d, LayerNorm, MaxPool1d, MaxPool2d, AvgPool1d, AvgPool2d
);

/// What a parameter tensor of a layer is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamRole {
    /// Weights (Linear, Conv), or the scale γ of a normalisation.
    Weight,
    /// Bias, or the shift β of a normalisation.
    Bias,
    /// BatchNorm's running mean: a buffer, not trained.
    RunningMean,
    /// BatchNorm's running variance: a buffer, not trained.
    RunningVar,
}

impl ParamRole {
    /// The name suffix PyTorch uses (`weight`, `bias`, `running_mean`, `running_var`).
    pub fn suffix(self) -> &'static str {
        match self {
            ParamRole::Weight => "weight",
            ParamRole::Bias => "bias",
            ParamRole::RunningMean => "running_mean",
            ParamRole::RunningVar => "running_var",
        }
    }

    /// Whether the tensor is learned (PyTorch's `parameters()`), not a buffer of statistics.
    pub fn is_trainable(self) -> bool {
        matches!(self, ParamRole::Weight | ParamRole::Bias)
    }
}

/// A parameter a layer needs: its role (hence its name suffix) and its shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParamSpec {
    /// What the tensor is for; `role.suffix()` completes the name `{node}.{suffix}`.
    pub role: ParamRole,
    /// The tensor's shape, in PyTorch layout.
    pub shape: Vec<usize>,
}

/// Geometry of a convolution, 1-D layers seen as 2-D with height 1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvGeom {
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dil: [usize; 2],
    pub bias: bool,
}

impl ConvGeom {
    /// Where the kernel's taps fall.
    pub fn window(&self) -> Window {
        Window {
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            dil: self.dil,
        }
    }

    /// Weights per filter: `in_channels / groups · kh · kw`.
    pub fn fan_in(&self) -> usize {
        self.cin / self.groups * self.k[0] * self.k[1]
    }

    /// Output spatial size for an input of `[h, w]`, or why there is none.
    pub fn out_hw(&self, hw: [usize; 2]) -> Result<[usize; 2], String> {
        let mut out = [0; 2];
        for a in 0..2 {
            out[a] = window_count(hw[a], self.k[a], self.stride[a], self.pad[a], self.dil[a])
                .ok_or_else(|| {
                    format!(
                        "input size {} plus padding 2 x {} is shorter than the dilated kernel {} \
                         (kernel {}, dilation {})",
                        hw[a],
                        self.pad[a],
                        self.dil[a].saturating_mul(self.k[a] - 1).saturating_add(1),
                        self.k[a],
                        self.dil[a]
                    )
                })?;
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), String> {
        let positive = [
            ("in_channels", self.cin),
            ("out_channels", self.cout),
            ("groups", self.groups),
            ("kernel_size", self.k[0].min(self.k[1])),
            ("stride", self.stride[0].min(self.stride[1])),
            ("dilation", self.dil[0].min(self.dil[1])),
        ];
        for (what, v) in positive {
            if v == 0 {
                return Err(format!("{what} must be positive"));
            }
        }
        if !self.cin.is_multiple_of(self.groups) || !self.cout.is_multiple_of(self.groups) {
            return Err(format!(
                "groups {} must divide in_channels {} and out_channels {}",
                self.groups, self.cin, self.cout
            ));
        }
        Ok(())
    }
}

/// Number of windows of `k` taps with dilation `d` and stride `s` over `n + 2p` positions.
pub(crate) fn window_count(n: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    let span = d.checked_mul(k - 1)?.checked_add(1)?;
    let padded = p.checked_mul(2)?.checked_add(n)?;
    (padded >= span).then(|| (padded - span) / s + 1)
}

/// Geometry of a pooling layer, 1-D layers seen as 2-D with height 1.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PoolGeom {
    pub k: [usize; 2],
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    /// `None` for max pooling, `Some(count_include_pad)` for average pooling.
    pub avg: Option<bool>,
}

impl PoolGeom {
    /// Where the window's taps fall (no dilation).
    pub fn window(&self) -> Window {
        Window {
            k: self.k,
            stride: self.stride,
            pad: self.pad,
            dil: [1, 1],
        }
    }

    fn check(&self) -> Result<(), String> {
        if self.k.contains(&0) || self.stride.contains(&0) {
            return Err("kernel_size and stride must be positive".into());
        }
        if (0..2).any(|a| self.pad[a] > self.k[a] / 2) {
            return Err(format!(
                "padding {:?} must be at most half the kernel size {:?}",
                self.pad, self.k
            ));
        }
        Ok(())
    }

    pub fn out_hw(&self, hw: [usize; 2]) -> Result<[usize; 2], String> {
        let mut out = [0; 2];
        for a in 0..2 {
            out[a] = window_count(hw[a], self.k[a], self.stride[a], self.pad[a], 1).ok_or_else(
                || {
                    format!(
                        "input size {} plus padding 2 x {} is shorter than the kernel {}",
                        hw[a], self.pad[a], self.k[a]
                    )
                },
            )?;
        }
        Ok(out)
    }
}

impl Layer {
    /// Every layer kind the graph supports, as [`Layer::kind`] names them.
    pub const KINDS: [&'static str; 20] = [
        "linear",
        "conv1d",
        "conv2d",
        "batch_norm1d",
        "batch_norm2d",
        "layer_norm",
        "relu",
        "gelu",
        "sigmoid",
        "tanh",
        "softmax",
        "max_pool1d",
        "max_pool2d",
        "avg_pool1d",
        "avg_pool2d",
        "global_avg_pool",
        "flatten",
        "dropout",
        "add",
        "identity",
    ];

    /// The serde tag of this layer kind (`"conv1d"`, `"relu"`, ...), for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "linear",
            Layer::Conv1d(_) => "conv1d",
            Layer::Conv2d(_) => "conv2d",
            Layer::BatchNorm1d(_) => "batch_norm1d",
            Layer::BatchNorm2d(_) => "batch_norm2d",
            Layer::LayerNorm(_) => "layer_norm",
            Layer::Relu => "relu",
            Layer::Gelu => "gelu",
            Layer::Sigmoid => "sigmoid",
            Layer::Tanh => "tanh",
            Layer::Softmax { .. } => "softmax",
            Layer::MaxPool1d(_) => "max_pool1d",
            Layer::MaxPool2d(_) => "max_pool2d",
            Layer::AvgPool1d(_) => "avg_pool1d",
            Layer::AvgPool2d(_) => "avg_pool2d",
            Layer::GlobalAvgPool => "global_avg_pool",
            Layer::Flatten => "flatten",
            Layer::Dropout { .. } => "dropout",
            Layer::Add => "add",
            Layer::Identity => "identity",
        }
    }

    /// The parameters this layer needs, in PyTorch's `state_dict` order.
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let spec = |role, shape: Vec<usize>| ParamSpec { role, shape };
        let weight_bias = |w: Vec<usize>, out: usize, bias: bool| {
            let mut v = vec![spec(ParamRole::Weight, w)];
            if bias {
                v.push(spec(ParamRole::Bias, vec![out]));
            }
            v
        };
        match self {
            Layer::Linear(l) => {
                weight_bias(vec![l.out_features, l.in_features], l.out_features, l.bias)
            }
            Layer::Conv1d(_) | Layer::Conv2d(_) => {
                let Some(g) = self.conv_geom() else {
                    return Vec::new();
                };
                let mut w = vec![g.cout, g.cin / g.groups.max(1)];
                match self {
                    Layer::Conv1d(c) => w.push(c.kernel_size),
                    _ => w.extend(g.k),
                }
                weight_bias(w, g.cout, g.bias)
            }
            Layer::BatchNorm1d(b) | Layer::BatchNorm2d(b) => [
                ParamRole::Weight,
                ParamRole::Bias,
                ParamRole::RunningMean,
                ParamRole::RunningVar,
            ]
            .into_iter()
            .map(|r| spec(r, vec![b.num_features]))
            .collect(),
            Layer::LayerNorm(l) if l.elementwise_affine => [ParamRole::Weight, ParamRole::Bias]
                .into_iter()
                .map(|r| spec(r, l.normalized_shape.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Convolution geometry, 1-D as 2-D with height 1.
    pub(crate) fn conv_geom(&self) -> Option<ConvGeom> {
        match *self {
            Layer::Conv1d(c) => Some(ConvGeom {
                cin: c.in_channels,
                cout: c.out_channels,
                groups: c.groups,
                k: [1, c.kernel_size],
                stride: [1, c.stride],
                pad: [0, c.padding],
                dil: [1, c.dilation],
                bias: c.bias,
            }),
            Layer::Conv2d(c) => Some(ConvGeom {
                cin: c.in_channels,
                cout: c.out_channels,
                groups: c.groups,
                k: c.kernel_size,
                stride: c.stride,
                pad: c.padding,
                dil: c.dilation,
                bias: c.bias,
            }),
            _ => None,
        }
    }

    /// Pooling geometry, 1-D as 2-D with height 1.
    pub(crate) fn pool_geom(&self) -> Option<PoolGeom> {
        match *self {
            Layer::MaxPool1d(p) => Some(PoolGeom {
                k: [1, p.kernel_size],
                stride: [1, p.stride],
                pad: [0, p.padding],
                avg: None,
            }),
            Layer::MaxPool2d(p) => Some(PoolGeom {
                k: p.kernel_size,
                stride: p.stride,
                pad: p.padding,
                avg: None,
            }),
            Layer::AvgPool1d(p) => Some(PoolGeom {
                k: [1, p.kernel_size],
                stride: [1, p.stride],
                pad: [0, p.padding],
                avg: Some(p.count_include_pad),
            }),
            Layer::AvgPool2d(p) => Some(PoolGeom {
                k: p.kernel_size,
                stride: p.stride,
                pad: p.padding,
                avg: Some(p.count_include_pad),
            }),
            _ => None,
        }
    }

    /// How many inputs the layer takes: `(min, max)`.
    fn arity(&self) -> (usize, usize) {
        match self {
            Layer::Add => (2, usize::MAX),
            _ => (1, 1),
        }
    }

    /// Checks the settings and the input shapes (per sample, no batch axis) and returns the
    /// output shape per sample, or what does not fit.
    pub(crate) fn output_shape(&self, inputs: &[&[usize]]) -> Result<Vec<usize>, String> {
        let (lo, hi) = self.arity();
        if inputs.len() < lo || inputs.len() > hi {
            let want = if hi == usize::MAX {
                format!("at least {lo}")
            } else {
                format!("exactly {lo}")
            };
            return Err(format!(
                "{} takes {want} input(s), got {}",
                self.kind(),
                inputs.len()
            ));
        }
        let x = inputs[0];
        let rank = |want: &[usize], what: &str| -> Result<(), String> {
            if want.contains(&x.len()) {
                Ok(())
            } else {
                Err(format!(
                    "{} expects {what} samples, got shape {x:?}",
                    self.kind()
                ))
            }
        };
        let eps_ok = |eps: f64| -> Result<(), String> {
            if eps.is_finite() && eps >= 0.0 {
                Ok(())
            } else {
                Err(format!("eps must be finite and non-negative, got {eps}"))
            }
        };
        match self {
            Layer::Linear(l) => {
                if l.in_features == 0 || l.out_features == 0 {
                    return Err("in_features and out_features must be positive".into());
                }
                match x.last() {
                    Some(&f) if f == l.in_features => {
                        let mut out = x.to_vec();
                        *out.last_mut().expect("non-empty") = l.out_features;
                        Ok(out)
                    }
                    _ => Err(format!(
                        "linear expects input [..., {}], got shape {x:?}",
                        l.in_features
                    )),
                }
            }
            Layer::Conv1d(_) | Layer::Conv2d(_) => {
                let g = self.conv_geom().expect("a convolution");
                g.check()?;
                let hw = if matches!(self, Layer::Conv1d(_)) {
                    rank(&[2], "[C, L]")?;
                    [1, x[1]]
                } else {
                    rank(&[3], "[C, H, W]")?;
                    [x[1], x[2]]
                };
                if x[0] != g.cin {
                    return Err(format!(
                        "{} expects {} input channels, got shape {x:?}",
                        self.kind(),
                        g.cin
                    ));
                }
                let [oh, ow] = g.out_hw(hw)?;
                Ok(if matches!(self, Layer::Conv1d(_)) {
                    vec![g.cout, ow]
                } else {
                    vec![g.cout, oh, ow]
                })
            }
            Layer::BatchNorm1d(b) | Layer::BatchNorm2d(b) => {
                eps_ok(b.eps)?;
                if !(0.0..=1.0).contains(&b.momentum) {
                    return Err(format!("momentum must be in [0, 1], got {}", b.momentum));
                }
                if matches!(self, Layer::BatchNorm1d(_)) {
                    rank(&[1, 2], "[C] or [C, L]")?;
                } else {
                    rank(&[3], "[C, H, W]")?;
                }
                if x[0] != b.num_features {
                    return Err(format!(
                        "{} expects {} channels, got shape {x:?}",
                        self.kind(),
                        b.num_features
                    ));
                }
                Ok(x.to_vec())
            }
            Layer::LayerNorm(l) => {
                eps_ok(l.eps)?;
                let n = l.normalized_shape.len();
                if n == 0 || l.normalized_shape.contains(&0) {
                    return Err(format!(
                        "normalized_shape must be non-empty and positive, got {:?}",
                        l.normalized_shape
                    ));
                }
                if x.len() < n || x[x.len() - n..] != l.normalized_shape[..] {
                    return Err(format!(
                        "layer_norm over {:?} needs input ending in those axes, got shape {x:?}",
                        l.normalized_shape
                    ));
                }
                Ok(x.to_vec())
            }
            Layer::Softmax { dim } => {
                softmax_axis(*dim, x.len())?;
                Ok(x.to_vec())
            }
            Layer::MaxPool1d(_)
            | Layer::MaxPool2d(_)
            | Layer::AvgPool1d(_)
            | Layer::AvgPool2d(_) => {
                let g = self.pool_geom().expect("a pooling layer");
                g.check()?;
                let one_d = matches!(self, Layer::MaxPool1d(_) | Layer::AvgPool1d(_));
                let hw = if one_d {
                    rank(&[2], "[C, L]")?;
                    [1, x[1]]
                } else {
                    rank(&[3], "[C, H, W]")?;
                    [x[1], x[2]]
                };
                let [oh, ow] = g.out_hw(hw)?;
                Ok(if one_d {
                    vec![x[0], ow]
                } else {
                    vec![x[0], oh, ow]
                })
            }
            Layer::GlobalAvgPool => {
                rank(&[2, 3], "[C, L] or [C, H, W]")?;
                Ok(vec![x[0]])
            }
            Layer::Flatten => Ok(vec![x.iter().product()]),
            Layer::Dropout { p } => {
                if (0.0..1.0).contains(p) {
                    Ok(x.to_vec())
                } else {
                    Err(format!("dropout probability must be in [0, 1), got {p}"))
                }
            }
            Layer::Add => {
                if let Some(other) = inputs.iter().find(|s| **s != x) {
                    return Err(format!(
                        "add needs inputs of equal shape, got {x:?} and {other:?}"
                    ));
                }
                Ok(x.to_vec())
            }
            Layer::Relu | Layer::Gelu | Layer::Sigmoid | Layer::Tanh | Layer::Identity => {
                Ok(x.to_vec())
            }
        }
    }

    /// FLOPs for one sample, given validated input and output shapes (see the module docs for
    /// the convention).
    pub(crate) fn flops(&self, inputs: &[&[usize]], output: &[usize]) -> u64 {
        // Saturating: absurd settings give u64::MAX rather than a wrapped count.
        let numel = |s: &[usize]| s.iter().fold(1u64, |n, &d| n.saturating_mul(d as u64));
        let x = inputs.first().map_or(0, |s| numel(s));
        let y = numel(output);
        let per_output =
            |macs: u64, bias: bool| y.saturating_mul(macs.saturating_mul(2) + u64::from(bias));
        match self {
            Layer::Linear(l) => per_output(l.in_features as u64, l.bias),
            Layer::Conv1d(_) | Layer::Conv2d(_) => {
                let g = self.conv_geom().expect("a convolution");
                let fan_in = [g.k[0], g.k[1]]
                    .iter()
                    .fold((g.cin / g.groups) as u64, |n, &k| {
                        n.saturating_mul(k as u64)
                    });
                per_output(fan_in, g.bias)
            }
            Layer::BatchNorm1d(_) | Layer::BatchNorm2d(_) => y.saturating_mul(2),
            Layer::LayerNorm(l) => y.saturating_mul(5 + 2 * u64::from(l.elementwise_affine)),
            Layer::Relu | Layer::Gelu | Layer::Sigmoid | Layer::Tanh => y,
            Layer::Softmax { .. } => y.saturating_mul(3),
            Layer::MaxPool1d(_)
            | Layer::MaxPool2d(_)
            | Layer::AvgPool1d(_)
            | Layer::AvgPool2d(_) => {
                let g = self.pool_geom().expect("a pooling layer");
                y.saturating_mul(g.k[0] as u64)
                    .saturating_mul(g.k[1] as u64)
            }
            Layer::GlobalAvgPool => x,
            Layer::Add => y.saturating_mul(inputs.len() as u64 - 1),
            Layer::Flatten | Layer::Dropout { .. } | Layer::Identity => 0,
        }
    }
}

/// The axis of the batched tensor (per-sample rank `rank` plus the batch axis) that PyTorch's
/// `dim` names.
pub(crate) fn softmax_axis(dim: isize, rank: usize) -> Result<usize, String> {
    let full = rank as isize + 1;
    if dim < -full || dim >= full {
        return Err(format!(
            "softmax dim {dim} is out of range [{}, {}] for batched inputs of rank {full}",
            -full,
            full - 1
        ));
    }
    Ok(if dim < 0 { dim + full } else { dim } as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(layer: impl Into<Layer>, x: &[usize]) -> Result<Vec<usize>, String> {
        layer.into().output_shape(&[x])
    }

    #[test]
    fn conv_output_lengths_follow_pytorch() {
        // floor((L + 2p - d(k-1) - 1) / s) + 1
        assert_eq!(
            out(Conv1d::new(6, 32, 5).padding(2), &[6, 128]),
            Ok(vec![32, 128])
        );
        assert_eq!(
            out(
                Conv1d::new(4, 6, 5).stride(2).padding(3).dilation(2),
                &[4, 20]
            ),
            Ok(vec![6, 9])
        );
        assert_eq!(
            out(
                Conv2d::new(3, 8, [3, 2])
                    .stride([2, 1])
                    .padding([1, 2])
                    .dilation([1, 2]),
                &[3, 9, 7]
            ),
            Ok(vec![8, 5, 9])
        );
        let e = out(Conv1d::new(4, 6, 5).dilation(2), &[4, 8]).unwrap_err();
        assert!(e.contains("shorter than the dilated kernel 9"), "{e}");
        let e = out(Conv1d::new(4, 6, 3), &[5, 8]).unwrap_err();
        assert!(
            e.contains("4 input channels") && e.contains("[5, 8]"),
            "{e}"
        );
        let e = out(Conv1d::new(4, 6, 3).groups(4), &[4, 8]).unwrap_err();
        assert!(e.contains("groups 4 must divide"), "{e}");
        let e = out(Conv2d::new(4, 6, 3), &[4, 8]).unwrap_err();
        assert!(e.contains("[C, H, W]"), "{e}");
        assert!(out(Conv1d::new(4, 6, 3).stride(0), &[4, 8]).is_err());
    }

    #[test]
    fn pool_shapes_and_padding_rule() {
        assert_eq!(out(MaxPool1d::new(2), &[32, 128]), Ok(vec![32, 64]));
        assert_eq!(
            out(MaxPool1d::new(3).stride(2).padding(1), &[2, 10]),
            Ok(vec![2, 5])
        );
        assert_eq!(
            out(
                AvgPool2d::new([3, 2]).stride([2, 1]).padding([1, 1]),
                &[2, 7, 5]
            ),
            Ok(vec![2, 4, 6])
        );
        let e = out(MaxPool1d::new(2).padding(2), &[2, 10]).unwrap_err();
        assert!(e.contains("at most half"), "{e}");
        assert!(out(AvgPool1d::new(5), &[2, 4]).is_err());
    }

    #[test]
    fn other_layers() {
        assert_eq!(out(Linear::new(5, 3), &[7, 5]), Ok(vec![7, 3]));
        assert!(
            out(Linear::new(5, 3), &[7, 4])
                .unwrap_err()
                .contains("[7, 4]")
        );
        let bn = Layer::BatchNorm1d(BatchNorm::new(4));
        assert_eq!(bn.output_shape(&[&[4]]), Ok(vec![4]));
        assert_eq!(bn.output_shape(&[&[4, 9]]), Ok(vec![4, 9]));
        assert!(bn.output_shape(&[&[3, 9]]).is_err());
        assert!(bn.output_shape(&[&[4, 9, 2]]).is_err());
        let bad = Layer::BatchNorm1d(BatchNorm::new(4).momentum(1.5));
        assert!(
            bad.output_shape(&[&[4]])
                .unwrap_err()
                .contains("momentum must be in [0, 1], got 1.5")
        );
        assert_eq!(out(LayerNorm::new(&[3, 4]), &[2, 3, 4]), Ok(vec![2, 3, 4]));
        assert!(out(LayerNorm::new(&[3]), &[3, 4]).is_err());
        assert_eq!(
            Layer::GlobalAvgPool.output_shape(&[&[8, 3, 3]]),
            Ok(vec![8])
        );
        assert_eq!(Layer::Flatten.output_shape(&[&[8, 3, 3]]), Ok(vec![72]));
        assert!(Layer::Dropout { p: 1.0 }.output_shape(&[&[3]]).is_err());
        assert!(Layer::Add.output_shape(&[&[3]]).is_err());
        assert!(
            Layer::Add
                .output_shape(&[&[3], &[4]])
                .unwrap_err()
                .contains("[3] and [4]")
        );
        assert_eq!(Layer::Add.output_shape(&[&[3], &[3], &[3]]), Ok(vec![3]));
        assert!(Layer::Relu.output_shape(&[&[3], &[3]]).is_err());
        assert_eq!(softmax_axis(-1, 2), Ok(2));
        assert_eq!(softmax_axis(0, 2), Ok(0));
        assert_eq!(softmax_axis(-3, 2), Ok(0));
        assert!(softmax_axis(3, 2).is_err());
        assert!(softmax_axis(-4, 2).is_err());
    }

    #[test]
    fn param_specs_use_pytorch_layout() {
        let shapes = |l: Layer| -> Vec<(&str, Vec<usize>)> {
            l.param_specs()
                .into_iter()
                .map(|p| (p.role.suffix(), p.shape))
                .collect()
        };
        assert_eq!(
            shapes(Linear::new(5, 3).into()),
            [("weight", vec![3, 5]), ("bias", vec![3])]
        );
        assert_eq!(
            shapes(Conv1d::new(6, 12, 3).groups(3).bias(false).into()),
            [("weight", vec![12, 2, 3])]
        );
        assert_eq!(
            shapes(Conv2d::new(4, 8, [3, 2]).groups(2).into()),
            [("weight", vec![8, 2, 3, 2]), ("bias", vec![8])]
        );
        assert_eq!(shapes(Layer::BatchNorm2d(BatchNorm::new(4))).len(), 4);
        assert!(shapes(LayerNorm::new(&[4]).elementwise_affine(false).into()).is_empty());
        assert!(!ParamRole::RunningVar.is_trainable());
    }

    #[test]
    fn flops_count_macs_twice() {
        let conv: Layer = Conv1d::new(6, 32, 5).padding(2).into();
        // 32 x 128 outputs, each 30 MACs plus one bias add.
        assert_eq!(conv.flops(&[&[6, 128]], &[32, 128]), 32 * 128 * 61);
        let fc: Layer = Linear::new(64, 6).bias(false).into();
        assert_eq!(fc.flops(&[&[64]], &[6]), 6 * 128);
        assert_eq!(Layer::Add.flops(&[&[4], &[4], &[4]], &[4]), 8);
        let pool: Layer = MaxPool2d::new(2).into();
        assert_eq!(pool.flops(&[&[3, 4, 4]], &[3, 2, 2]), 48);
    }
}
