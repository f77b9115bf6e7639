//! The crate's one error type.
//!
//! Every variant names what is at fault (a tensor, a node, a shape, a value or a file) so that a
//! message read in a log, far from the call, still says where to look.

use std::path::PathBuf;

/// Everything that can go wrong in shears.
///
/// Messages are lowercase without trailing punctuation, in the style of the Rust API guidelines.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A fraction to prune that is not a finite number in `[0, 1]`.
    #[error("sparsity must be in [0, 1], got {value}")]
    InvalidSparsity {
        /// The offending fraction.
        value: f64,
    },

    /// An absolute count larger than the number of units that remain.
    #[error("cannot prune {requested} units of {scope}: only {available} remain")]
    CountTooLarge {
        /// Units asked for.
        requested: usize,
        /// Units still unpruned.
        available: usize,
        /// The comparison group: a tensor name, or `global` for several tensors at once.
        scope: String,
    },

    /// A threshold that is not a finite number.
    #[error("threshold must be a finite number, got {value}")]
    InvalidThreshold {
        /// The offending threshold.
        value: f32,
    },

    /// An N:M pattern with `N` outside `1..=M`.
    #[error("invalid N:M pattern {n}:{m}: need 1 <= N <= M")]
    InvalidNm {
        /// Weights kept per group.
        n: usize,
        /// Group length.
        m: usize,
    },

    /// A NaN or infinite weight or score.
    #[error("non-finite value {value} in `{tensor}` at flat index {index}")]
    NonFinite {
        /// Tensor (or score map) holding the value.
        tensor: String,
        /// Row-major flat index of the first non-finite value.
        index: usize,
        /// The value itself (NaN or ±inf).
        value: f32,
    },

    /// Two things that must have the same shape do not.
    #[error("`{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor, mask or score map at fault.
        name: String,
        /// The shape required.
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },

    /// A tensor name that is not there.
    #[error("unknown tensor `{name}`")]
    UnknownTensor {
        /// The name looked up.
        name: String,
    },

    /// A selection of parameters that matched nothing.
    #[error("no tensor selected: {reason}")]
    NothingSelected {
        /// Why nothing was left (which pattern, which filter).
        reason: String,
    },

    /// A node of the layer graph that cannot be built or run as asked.
    #[error("node `{node}`: {reason}")]
    Graph {
        /// The node's name.
        node: String,
        /// What does not fit, with the shapes involved.
        reason: String,
    },

    /// A setting that is out of its valid range or inconsistent with another one.
    #[error("invalid {what}: {reason}")]
    InvalidParameter {
        /// The setting (`granularity`, `group size`, ...).
        what: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A tensor whose element type shears does not handle there.
    #[error("tensor `{tensor}` has dtype {dtype}, which shears cannot use here")]
    UnsupportedDtype {
        /// The tensor's name.
        tensor: String,
        /// The dtype, as safetensors spells it.
        dtype: String,
    },

    /// A file that is not a valid safetensors (or JSON spec) file: corrupt, truncated, inconsistent.
    #[error("`{path}`: {reason}")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A loss that became NaN or infinite during training: the run diverged (learning rate too
    /// high, bad inputs) and its weights are no longer meaningful.
    #[error("loss is {value} at epoch {epoch}, batch {batch}: training diverged")]
    NonFiniteLoss {
        /// Epoch, counted from 1 (0 for a step taken outside an epoch).
        epoch: usize,
        /// Batch within the epoch, counted from 1 (0 for a step taken outside an epoch).
        batch: usize,
        /// The loss (NaN or ±inf).
        value: f64,
    },

    /// An operating-system error while reading or writing a file.
    #[error("`{path}`: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`] as its default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Graph`].
    pub(crate) fn graph(node: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Graph {
            node: node.into(),
            reason: reason.into(),
        }
    }

    /// [`Error::ShapeMismatch`] naming `name` unless `got` is `expected`.
    pub(crate) fn check_shape(name: &str, expected: &[usize], got: &[usize]) -> Result<()> {
        if expected == got {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: got.to_vec(),
            })
        }
    }

    /// Shorthand for [`Error::Io`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_traits<T: Send + Sync + 'static + std::error::Error>() {}
        assert_traits::<Error>();
    }

    #[test]
    fn messages_name_the_culprit() {
        let e = Error::NonFinite {
            tensor: "fc1.weight".into(),
            index: 17,
            value: f32::NAN,
        };
        assert_eq!(
            e.to_string(),
            "non-finite value NaN in `fc1.weight` at flat index 17"
        );
        let e = Error::CountTooLarge {
            requested: 9,
            available: 4,
            scope: "conv.weight".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot prune 9 units of conv.weight: only 4 remain"
        );
        let e = Error::NonFiniteLoss {
            epoch: 3,
            batch: 17,
            value: f64::NAN,
        };
        assert_eq!(
            e.to_string(),
            "loss is NaN at epoch 3, batch 17: training diverged"
        );
    }
}
