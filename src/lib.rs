//! shears: pruning neural networks in Rust.
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
pub mod report;
pub mod select;
pub mod strategy;

pub use amount::{Amount, CountRule};
pub use error::{Error, Result};
pub use graph::{Layer, Network, NetworkBuilder, NetworkSpec, Node};
pub use io::{Checkpoint, SafetensorsFile};
pub use mask::{Mask, MaskSet, TensorSparsity};
pub use ndarray;
pub use params::Params;
pub use safetensors;
#[cfg(feature = "sparse")]
pub use sprs;
