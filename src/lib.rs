//! shears: pruning neural networks in Rust.
//!
//! shears decides which weights, channels or blocks of a model can go, removes them, and reports
//! what was gained. It works on plain [`ndarray`] tensors and safetensors checkpoints, whatever
//! framework trained the model.
//!
//! The data flow, one module per step, every arrow a plain value you can inspect and save:
//!
//! ```text
//! safetensors checkpoint + JSON spec ─► Network (graph)      ─► forward, shapes, FLOPs
//! Params + MaskSet ─► PruneStrategy::plan (strategy) ─► Plan ─► apply (mask) ─► save (io)
//!                     └── scores ranked by the selection engine (select)
//! ```
//!
//! - [`strategy`]: the [`PruneStrategy`](strategy::PruneStrategy) trait and
//!   [`WeightPruning`](strategy::WeightPruning): magnitude, random, importance or custom scores, by
//!   element, channel or N:M, per layer, per row or globally.
//! - [`select`]: exact-k and threshold selection over many tensors at once, O(n), no sorting.
//! - [`structure`]: dependency groups of channels and neurons, their importance, and compaction
//!   into a smaller dense network ([`StructureSensitivity`](strategy::StructureSensitivity) plans it).
//! - [`mask`]: keep-masks that compose without ever reviving a pruned weight.
//! - [`graph`]: the layer graph, PyTorch layouts and names, batched forward and backward passes.
//! - [`train`]: losses, SGD and Adam, training and mask-preserving fine-tuning, evaluation, and
//!   the gradient statistics (Taylor, SNIP, Fisher) that gradient-based criteria rank by.
//! - [`io`]: safetensors in and out, original dtypes and metadata kept, atomic writes.
//! - [`amount`]: fractions, counts, thresholds and targets, with PyTorch's rounding.
//!
//! Exact semantics are in `docs/semantics.md`; every one of them is pinned by a test.
//!
//! ```
//! use ndarray::array;
//! use shears::strategy::{Context, PruneStrategy, WeightPruning};
//! use shears::{Amount, Params};
//!
//! let mut params: Params = [("fc.weight", array![[0.5_f32, -0.1], [0.05, 0.9]].into_dyn())]
//!     .into_iter()
//!     .collect();
//! let plan = WeightPruning::new(Amount::Sparsity(0.5)).plan(&Context::new(&params))?;
//! plan.apply(&mut params)?;
//! assert_eq!(params.slice("fc.weight").unwrap(), &[0.5, 0.0, 0.0, 0.9]);
//! # Ok::<(), shears::Error>(())
//! ```
#![warn(missing_docs)]
#![deny(missing_debug_implementations)]

pub mod amount;
pub mod calibrate;
pub mod data;
pub mod error;
pub mod graph;
pub mod io;
pub mod mask;
pub mod params;
mod pool;
pub mod report;
pub mod select;
pub mod strategy;
pub mod structure;
pub mod train;

pub use amount::{Amount, CountRule};
pub use error::{Error, Result};
pub use graph::{Layer, Network, NetworkBuilder, NetworkSpec, Node};
pub use io::{Checkpoint, SafetensorsFile};
pub use mask::{Mask, MaskSet, TensorSparsity};
pub use ndarray;
pub use params::{Params, check_finite};
pub use safetensors;
#[cfg(feature = "sparse")]
pub use sprs;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
