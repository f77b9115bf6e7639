//! shears: pruning neural networks in Rust.
//!
//! shears decides which weights, channels or blocks of a model can go, removes them, and reports
//! what was gained. It works on plain [`ndarray`] tensors and safetensors checkpoints, whatever
//! framework trained the model.
//!
//! The data flow, one module per step, every arrow a plain value you can inspect and save:
//!
//! ```text
//! checkpoint + JSON spec ─► Network (graph) ─► calibrate (activations) / train (gradients)
//!   ─► PruneStrategy::plan(&Context) (strategy) ─► Plan: masks, channel removals, blocks
//!   ─► apply (mask) or compact (structure) ─► fine-tune holding the masks (train)
//!   ─► evaluate, report ─► save (io)          schedule::Pruner repeats it step by step
//! ```
//!
//! # Concepts, in brief (the full guide is `docs/guide.md`)
//!
//! - **Units and scope.** What is removed (a weight, a channel, an N:M group member, a filter
//!   with every coupled slice, a whole block) and what it is ranked against (its tensor, its
//!   output row, or every selected tensor at once).
//! - **Amounts.** [`Amount::Sparsity`] prunes a fraction of what *remains*, rounded half to even
//!   as PyTorch does; `Count`, `Threshold` and `Target` are exact too. Ties go by flat index.
//! - **Masks and compaction.** Masks compose without ever reviving a weight and hold through
//!   fine-tuning; but only removing whole structures ([`structure`], layer difference) makes a
//!   dense model smaller and faster, and [`report`] measures both.
//! - **Data.** [`calibrate`] streams batches to collect what data-aware criteria need;
//!   [`train`] trains, fine-tunes and accumulates gradient scores.
//!
//! # Modules
//!
//! - [`strategy`]: the [`PruneStrategy`](strategy::PruneStrategy) trait and the five strategies:
//!   weight ([`WeightPruning`](strategy::WeightPruning): magnitude, random, importance or custom
//!   scores, by element, channel or N:M, per layer, per row or globally), sensitivity
//!   ([`SensitivityAnalysis`](strategy::SensitivityAnalysis), allocation, s·σ, Taylor, SNIP),
//!   activation ([`Wanda`](strategy::Wanda), APoZ, mean activation), structure sensitivity ([`StructureSensitivity`](strategy::StructureSensitivity)) and layer
//!   difference
//!   ([`LayerDifference`](strategy::LayerDifference)); and their [`Composition`](strategy::Composition).
//! - [`schedule`]: one-shot, iterative and AGP schedules, and the [`Pruner`](schedule::Pruner)
//!   loop that plans, applies, fine-tunes and evaluates step by step, with observers.
//! - [`select`]: exact-k and threshold selection over many tensors at once, O(n), no sorting.
//! - [`structure`]: dependency groups of channels and neurons, their importance, and compaction
//!   into a smaller dense network ([`StructureSensitivity`](strategy::StructureSensitivity) plans it).
//! - [`mask`]: keep-masks that compose without ever reviving a pruned weight.
//! - [`graph`]: the layer graph, PyTorch layouts and names, batched forward and backward passes.
//! - [`calibrate`]: activation statistics (input norms, APoZ, block similarity), streaming.
//! - [`train`]: losses, SGD and Adam, training and mask-preserving fine-tuning, evaluation, and
//!   the gradient statistics (Taylor, SNIP, Fisher) that gradient-based criteria rank by.
//! - [`report`]: parameters, bytes (dense, compacted, CSR), FLOPs, latency, tables and charts.
//! - [`io`]: safetensors in and out, original dtypes and metadata kept, atomic writes.
//! - [`data`]: datasets, and the bundled HAPT activity windows.
//! - [`amount`]: fractions, counts, thresholds and targets, with PyTorch's rounding.
//!
//! Features: `rayon` and `serde` (default), `sparse` (CSR sizes and export through sprs), `plot`
//! (SVG charts through plotters), `cli` (the `shears` command).
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
pub mod schedule;
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

/// The guide's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
pub struct GuideDoctests;
