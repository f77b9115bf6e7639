//! Strategies decide what to prune; they never change anything themselves.
//!
//! A [`PruneStrategy`] reads a [`Context`] (the weights, the masks so far) and returns a [`Plan`]:
//! plain data that can be inspected, saved, and applied. Keeping the decision pure makes
//! strategies composable and their plans reproducible.
//!
//! The five strategies (formulas, references and exact rules in `docs/strategies.md`):
//!
//! - **weight**: [`WeightPruning`], by magnitude, random keys, importance scores or any
//!   [`ElementScore`], per element, channel or N:M group, per layer, row or globally.
//! - **sensitivity**: [`SensitivityAnalysis`] measures how a metric responds to pruning each
//!   layer alone; [`Sensitivity::allocate`] turns the curves into per-layer sparsities for a
//!   global target, pruned by [`LayerSparsities`]; [`SigmaThreshold`] prunes `|w| ≤ s·σ` (Distiller);
//!   [`Criterion::taylor`] and [`Criterion::snip`] rank by gradient saliency.
//! - **activation**: [`Wanda`] ranks weights by `|W_ij|·‖X_j‖₂` within each output row (or N:M
//!   group); [`channels_by_activation`] removes neurons and channels by APoZ or mean activation.
//! - **structure sensitivity**: [`StructureSensitivity`] removes filters, channels and neurons
//!   with every coupled slice ([`crate::structure`]); [`Plan::compact`] builds the smaller network.
//! - **layer difference**: [`LayerDifference`] removes whole blocks by Block Influence, angular
//!   distance or weight distance, replacing them with the identity.
//!
//! [`Composition`] runs several as one; [`crate::schedule`] runs any of them step by step with
//! fine-tuning in between.

mod activation;
mod compose;
mod filter;
mod layer_difference;
mod sensitivity;
mod structure;
mod weight;

pub use activation::{Wanda, channels_by_activation};
pub use compose::{Combine, Composition};
pub use filter::ParamFilter;
pub use layer_difference::{
    BlockMetric, BlockScore, LayerDifference, LayerPlan, Removal, layer_blocks, remove_blocks,
};
pub use sensitivity::{
    Allocation, Budget, CurvePoint, LayerCurve, LayerSparsities, Sensitivity, SensitivityAnalysis,
    SigmaThreshold,
};
pub use structure::{StructureSensitivity, StructureTarget};
pub use weight::{ChannelAxis, Criterion, ElementScore, Granularity, Scope, WeightPruning};

use crate::error::Result;
use crate::graph::Network;
use crate::mask::{Mask, MaskSet};
use crate::params::Params;
use crate::structure::{ChannelRemoval, DependencyGroups};

/// A pruning method: given the state of a model, decide what to remove.
///
/// Implementations must be pure: `plan` reads the context and returns a [`Plan`], nothing else.
/// The trait is object-safe so that strategies can be held as `Box<dyn PruneStrategy>` and
/// composed.
///
/// A custom strategy that keeps only the first half of every tensor:
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::strategy::{Context, Plan, PruneStrategy};
/// use shears::{Mask, MaskSet, Params};
///
/// #[derive(Debug)]
/// struct FirstHalf;
///
/// impl PruneStrategy for FirstHalf {
///     fn name(&self) -> &str {
///         "first-half"
///     }
///     fn plan(&self, ctx: &Context<'_>) -> shears::Result<Plan> {
///         let mut masks = MaskSet::new();
///         for (name, w) in ctx.params().iter() {
///             let keep = (0..w.len()).map(|i| i < w.len() / 2).collect();
///             masks.insert(name, Mask::from_vec(w.shape(), keep)?);
///         }
///         Ok(Plan::new(self.name(), masks))
///     }
/// }
///
/// let mut params: Params = [("w", ArrayD::ones(IxDyn(&[2, 2])))].into_iter().collect();
/// let plan = FirstHalf.plan(&Context::new(&params))?;
/// plan.apply(&mut params)?;
/// assert_eq!(params.slice("w").unwrap(), &[1.0, 1.0, 0.0, 0.0]);
/// # Ok::<(), shears::Error>(())
/// ```
pub trait PruneStrategy: Send + Sync + std::fmt::Debug {
    /// A short name for reports.
    fn name(&self) -> &str;

    /// Decides what to remove. Reads the context; mutates nothing.
    ///
    /// # Errors
    /// Whatever makes the decision impossible: invalid settings, unknown tensors, shape
    /// mismatches, non-finite weights or scores.
    fn plan(&self, ctx: &Context<'_>) -> Result<Plan>;
}

/// What a strategy may look at: the parameters, the masks of earlier prunings and, for
/// strategies that need the layer structure, the network.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    params: &'a Params,
    masks: Option<&'a MaskSet>,
    network: Option<&'a Network>,
}

impl<'a> Context<'a> {
    /// A context over `params` with nothing pruned yet.
    pub fn new(params: &'a Params) -> Self {
        Context {
            params,
            masks: None,
            network: None,
        }
    }

    /// A context over the parameters of `network`, with its layer structure available to
    /// strategies that need it (channel dependencies, layer inputs).
    pub fn for_network(network: &'a Network) -> Self {
        Context {
            params: network.params(),
            masks: None,
            network: Some(network),
        }
    }

    /// Adds the masks of earlier prunings: what they pruned stays pruned and no longer counts as
    /// remaining.
    pub fn with_masks(mut self, masks: &'a MaskSet) -> Self {
        self.masks = Some(masks);
        self
    }

    /// The parameters.
    pub fn params(&self) -> &'a Params {
        self.params
    }

    /// The masks of earlier prunings, if any.
    pub fn masks(&self) -> Option<&'a MaskSet> {
        self.masks
    }

    /// The network, when the context was made by [`Context::for_network`].
    pub fn network(&self) -> Option<&'a Network> {
        self.network
    }

    /// The earlier mask of `name`, if it has one.
    pub fn mask(&self, name: &str) -> Option<&'a Mask> {
        self.masks.and_then(|m| m.get(name))
    }
}

/// The decision of a strategy: data, not action, serialisable (feature `serde`).
///
/// `masks` holds the complete keep-mask (earlier prunings included) of every tensor the strategy
/// considered; tensors it did not consider are absent. A structural plan also lists the
/// channels it removes, by [dependency group](crate::structure); its masks are then the masked
/// equivalent of that removal, and [`Plan::compact`] performs it.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub struct Plan {
    /// Name of the strategy that made the plan.
    pub strategy: String,
    /// Keep-masks of the tensors the strategy considered.
    pub masks: MaskSet,
    /// Channels removed per dependency group (structural plans only).
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Vec::is_empty")
    )]
    pub removals: Vec<ChannelRemoval>,
}

impl Plan {
    /// A plan made of element masks.
    pub fn new(strategy: impl Into<String>, masks: MaskSet) -> Self {
        Plan {
            strategy: strategy.into(),
            masks,
            removals: Vec::new(),
        }
    }

    /// A structural plan: channels removed per dependency group, with `masks` their masked
    /// equivalent ([`DependencyGroups::masks`]).
    pub fn structural(
        strategy: impl Into<String>,
        masks: MaskSet,
        removals: Vec<ChannelRemoval>,
    ) -> Self {
        Plan {
            strategy: strategy.into(),
            masks,
            removals,
        }
    }

    /// Performs the plan's channel removals on `net`: a smaller dense network with its spec
    /// updated ([`DependencyGroups::compact`]). A plan without removals returns `net` as is.
    ///
    /// # Errors
    /// As [`DependencyGroups::compact`], for a network the plan was not made for.
    pub fn compact(&self, net: &Network) -> Result<Network> {
        DependencyGroups::of(net)?.compact(net, &self.removals)
    }

    /// Zeroes every pruned weight of `params` (for a structural plan: every weight of the removed
    /// channels, without making anything smaller; see [`Plan::compact`]). Nothing changes unless
    /// every mask fits.
    ///
    /// # Errors
    /// [`crate::Error::UnknownTensor`] or [`crate::Error::ShapeMismatch`].
    pub fn apply(&self, params: &mut Params) -> Result<()> {
        self.masks.apply(params)
    }

    /// Fraction of the considered elements that the plan prunes.
    pub fn sparsity(&self) -> f64 {
        self.masks.sparsity()
    }
}
