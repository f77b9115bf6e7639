//! The layer graph: a [`Network`] of named layers in topological order, parameters in PyTorch's
//! layout and names, shape inference, FLOP counts, and batched forward and backward passes.
//!
//! A network is defined by a [`NetworkSpec`] (built in Rust with [`Network::builder`] or read from
//! JSON) and a [`Params`](crate::Params) checkpoint whose tensors are named `{node}.weight`,
//! `{node}.bias`, and for BatchNorm also `{node}.running_mean` and `{node}.running_var`, exactly
//! as PyTorch's `state_dict` of the equivalent `nn.Module` names them. Layouts are PyTorch's:
//! Linear `[out, in]`, Conv1d `[out, in/groups, k]`, Conv2d `[out, in/groups, kh, kw]`.
//!
//! Shapes are per sample (no batch axis) everywhere in the spec and the accessors; forward
//! passes take and return batched arrays `[batch, ...]`.
//!
//! # Forward
//!
//! [`Network::forward`] returns the output node's value; [`Network::forward_visit`] also calls a
//! closure with every node's inputs and output as they are computed (statistics stream, nothing
//! is kept); [`Network::forward_all`] keeps every node's output. Convolutions run as im2col plus
//! one matrix product per group, and the batch is spread over rayon's pool under the `rayon`
//! feature.
//!
//! # Training mode and backward pass
//!
//! [`Network::forward_tape`] runs a batch in a [`Mode`] and records a [`Tape`]: in
//! [`Mode::Train`] BatchNorm normalises with the batch's statistics and dropout draws seeded
//! masks (inverted dropout). [`Network::backward`] turns the tape and the gradient of a scalar
//! loss with respect to the output into [`Gradients`] for every trainable parameter, named as the
//! parameters, and for the input; [`Network::update_running_stats`] then moves BatchNorm's running
//! statistics as PyTorch does (momentum 0.1 by default, unbiased variance). Every layer kind has
//! its backward, checked against finite differences and against PyTorch. Convolutions run as
//! im2col plus one matrix product per group and block of samples, forward and backward;
//! parameter gradients are summed over fixed chunks of the batch in a fixed order, so results
//! are the same whatever the number of threads. Large buffers are recycled between passes on
//! the same thread.
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use shears::graph::{Conv1d, Mode, Network};
//!
//! let net = Network::builder(&[2, 16])
//!     .conv1d("conv", Conv1d::new(2, 4, 3).padding(1))
//!     .batch_norm1d("bn", 4)
//!     .relu("act")
//!     .global_avg_pool("gap")
//!     .linear("fc", 4, 3)
//!     .build_init(0)?;
//! let x = ArrayD::from_elem(IxDyn(&[8, 2, 16]), 0.5f32);
//! let tape = net.forward_tape(x.view(), Mode::Train { seed: 1 })?;
//! let grads = net.backward(&tape, ArrayD::ones(IxDyn(&[8, 3])).view())?;
//! assert_eq!(grads.params().get("conv.weight").unwrap().shape(), &[4, 2, 3]);
//! assert!(grads.params().get("bn.running_mean").is_none(), "buffers have no gradient");
//! # Ok::<(), shears::Error>(())
//! ```
//!
//! # FLOP convention
//!
//! Counts are per sample. A multiply-accumulate counts 2 FLOPs; any other arithmetic operation,
//! comparison or elementary function counts 1:
//!
//! | layer | FLOPs |
//! |---|---|
//! | Linear, Conv | `2 · fan_in` per output element, `+1` with bias |
//! | BatchNorm | 2 per element (folded scale and shift) |
//! | LayerNorm | 5 per element, 7 with the affine step |
//! | ReLU, GELU, Sigmoid, Tanh | 1 per element |
//! | Softmax | 3 per element (exponential, sum, division) |
//! | MaxPool, AvgPool | `kh · kw` per output element |
//! | global average pool | 1 per input element |
//! | Add | `inputs - 1` per element |
//! | Flatten, Dropout, Identity | 0 |
//!
//! # Example
//!
//! ```
//! use ndarray::{ArrayD, IxDyn};
//! use shears::graph::{Conv1d, Network};
//!
//! let net = Network::builder(&[6, 128])
//!     .conv1d("conv1", Conv1d::new(6, 32, 5).padding(2))
//!     .relu("relu1")
//!     .max_pool1d("pool1", 2)
//!     .conv1d("conv2", Conv1d::new(32, 64, 5).padding(2))
//!     .relu("relu2")
//!     .global_avg_pool("gap")
//!     .linear("fc", 64, 6)
//!     .build_init(0)?;
//! let batch = ArrayD::from_elem(IxDyn(&[8, 6, 128]), 0.5f32);
//! let logits = net.forward(batch.view())?;
//! assert_eq!(logits.shape(), &[8, 6]);
//! // conv2: 64 filters x 64 positions x (2 x 160 + 1)
//! assert_eq!(net.node_flops()[3], 64 * 64 * 321);
//! # Ok::<(), shears::Error>(())
//! ```

mod backward;
mod builder;
mod grad;
mod layer;
mod network;
mod ops;
#[cfg(test)]
mod tests;

pub use backward::{Gradients, Mode, Tape};
pub use builder::NetworkBuilder;
pub use layer::{
    AvgPool1d, AvgPool2d, BatchNorm, Conv1d, Conv2d, IntoPair, Layer, LayerNorm, Linear, MaxPool1d,
    MaxPool2d, ParamRole, ParamSpec,
};
pub use network::{INPUT, Network, NetworkSpec, Node, ParamsMut, Source, Visit};
