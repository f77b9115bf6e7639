//! Structured pruning for real: dependency groups and physical compaction.
//!
//! Masking a channel's weights leaves the model as large and as slow as before. Removing it
//! means cutting every slice that depends on it: the producer's weight rows and bias, a
//! following BatchNorm's four vectors, the input columns of every layer that reads it (several
//! columns per channel after a `Flatten`), the matching channels of every branch a residual
//! `Add` sums it with, and the filters a depthwise convolution applies to it. A grouped
//! convolution keeps its groups equal by removing the corresponding channel of every group.
//!
//! - [`DependencyGroups`] derives those groups from a [`Network`](crate::Network) (the rules are
//!   listed there) and says which groups cannot be pruned and why.
//! - [`DependencyGroups::compact`] applies [`ChannelRemoval`]s and returns a smaller dense
//!   network with its spec updated, ready for [`save_network`](crate::io::save_network);
//!   [`DependencyGroups::masks`] returns the masked equivalent. On the same inputs both compute
//!   the same outputs, and the compacted network has exactly the parameters the masks keep
//!   (property-tested over random MLPs, CNNs with BatchNorm, residual blocks and grouped
//!   convolutions).
//! - [`Importance`] scores the units of a group: L1, L2, FPGM, BatchNorm `|γ|`, Taylor, APoZ,
//!   mean activation or a [`GroupScore`] of your own, combined over the group's slices
//!   ([`Reduction`]) and normalised per group ([`Normalizer`], LAMP included) so that groups can
//!   be ranked together. Deciding what goes is the
//!   [`StructureSensitivity`](crate::strategy::StructureSensitivity) strategy's business.
//!
//! The approach is Torch-Pruning's DepGraph (Fang et al., "DepGraph: Towards Any Structural
//! Pruning", CVPR 2023), restricted to the layers of [`crate::graph`]; a test reproduces its
//! coupling and shapes on conv → BN → ReLU → conv and on a residual pair.

mod compact;
mod groups;
mod importance;
#[cfg(test)]
pub(crate) mod tests;

pub use compact::ChannelRemoval;
pub use groups::{DependencyGroups, Group, ParamSlice, SliceRole};
pub use importance::{GroupCriterion, GroupScore, Importance, Normalizer, Reduction};
