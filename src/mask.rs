//! Keep-masks: which elements of each parameter survive.
//!
//! A [`Mask`] holds one `bool` per element, `true` = kept. Masks compose by intersection: once an
//! element is pruned it stays pruned, whatever comes after (PyTorch's `PruningContainer` writes the
//! new partial mask only into the slots that were still kept, which is the same thing). The count
//! of a second pruning is taken relative to what remains; that is the selection engine's business,
//! the mask only records the outcome.

use std::collections::BTreeMap;

use ndarray::{ArrayD, ArrayRef, IxDyn, Zip};

use crate::error::{Error, Result};
use crate::params::Params;

/// The keep-mask of one tensor, always in standard layout.
///
/// ```
/// use ndarray::{array, IxDyn};
/// use shears::Mask;
///
/// let first = Mask::from_vec(&[2, 2], vec![true, false, true, true])?;
/// let second = Mask::from_vec(&[2, 2], vec![true, true, false, true])?;
/// let both = first.and(&second, "w")?;
/// assert_eq!(both.as_slice(), &[true, false, false, true]);
/// assert_eq!((both.kept(), both.pruned()), (2, 2));
///
/// let mut w = array![[1.0_f32, 2.0], [3.0, 4.0]].into_dyn();
/// both.apply(&mut w, "w")?;
/// assert_eq!(w, array![[1.0_f32, 0.0], [0.0, 4.0]].into_dyn());
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Mask {
    keep: ArrayD<bool>,
}

impl Mask {
    /// A mask that keeps everything.
    pub fn ones(shape: &[usize]) -> Self {
        Mask {
            keep: ArrayD::from_elem(IxDyn(shape), true),
        }
    }

    /// A mask from an array of `true` = kept, copied into standard layout if needed.
    pub fn from_array(keep: ArrayD<bool>) -> Self {
        let keep = if keep.is_standard_layout() {
            keep
        } else {
            keep.as_standard_layout().into_owned()
        };
        Mask { keep }
    }

    /// A mask from row-major flags.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when `keep.len()` is not the product of `shape`.
    pub fn from_vec(shape: &[usize], keep: Vec<bool>) -> Result<Self> {
        let len = keep.len();
        let keep =
            ArrayD::from_shape_vec(IxDyn(shape), keep).map_err(|_| Error::ShapeMismatch {
                name: "mask".into(),
                expected: shape.to_vec(),
                got: vec![len],
            })?;
        Ok(Mask { keep })
    }

    /// The mask that keeps exactly the non-zero elements of `w`: what a pruned checkpoint
    /// implies when no masks file came with it.
    pub fn nonzero(w: &ArrayRef<f32, IxDyn>) -> Self {
        Mask::from_array(w.mapv(|x| x != 0.0))
    }

    /// The tensor shape the mask applies to.
    pub fn shape(&self) -> &[usize] {
        self.keep.shape()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.keep.len()
    }

    /// Whether the mask covers no elements at all.
    pub fn is_empty(&self) -> bool {
        self.keep.is_empty()
    }

    /// Number of kept elements.
    pub fn kept(&self) -> usize {
        self.as_slice().iter().filter(|&&k| k).count()
    }

    /// Number of pruned elements.
    pub fn pruned(&self) -> usize {
        self.len() - self.kept()
    }

    /// Fraction of elements pruned (0 for an empty mask).
    pub fn sparsity(&self) -> f64 {
        ratio(self.pruned(), self.len())
    }

    /// The flags as an array.
    pub fn as_array(&self) -> &ArrayD<bool> {
        &self.keep
    }

    /// The flags in row-major order.
    pub fn as_slice(&self) -> &[bool] {
        self.keep
            .as_slice()
            .expect("Mask keeps its flags in standard layout")
    }

    /// The flags in row-major order, for kernels that write a mask in place.
    pub fn as_slice_mut(&mut self) -> &mut [bool] {
        self.keep
            .as_slice_mut()
            .expect("Mask keeps its flags in standard layout")
    }

    /// The flags, by value.
    pub fn into_array(self) -> ArrayD<bool> {
        self.keep
    }

    /// Kept by both: the composition of two prunings (pruned by either stays pruned).
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming `name` when the shapes differ.
    pub fn and(&self, other: &Mask, name: &str) -> Result<Mask> {
        self.combine(other, name, |a, b| a && b)
    }

    /// Kept by either: the union of what two strategies keep.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming `name` when the shapes differ.
    pub fn or(&self, other: &Mask, name: &str) -> Result<Mask> {
        self.combine(other, name, |a, b| a || b)
    }

    fn combine(&self, other: &Mask, name: &str, f: impl Fn(bool, bool) -> bool) -> Result<Mask> {
        Error::check_shape(name, self.shape(), other.shape())?;
        let keep = self
            .as_slice()
            .iter()
            .zip(other.as_slice())
            .map(|(&a, &b)| f(a, b))
            .collect();
        Mask::from_vec(self.shape(), keep)
    }

    /// Sets every pruned element of `w` to exactly zero. `w` may be in any layout.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming `name` when the shapes differ.
    pub fn apply(&self, w: &mut ArrayRef<f32, IxDyn>, name: &str) -> Result<()> {
        Error::check_shape(name, self.shape(), w.shape())?;
        // Branch-free on contiguous weights, so that the loop vectorises; any layout otherwise.
        let zero = |x: &mut f32, &keep: &bool| *x = if keep { *x } else { 0.0 };
        match w.as_slice_mut() {
            Some(ws) => {
                let ks = self.as_slice();
                let run = |(ws, ks): (&mut [f32], &[bool])| {
                    ws.iter_mut().zip(ks).for_each(|(x, k)| zero(x, k));
                };
                const CHUNK: usize = 1 << 16;
                #[cfg(feature = "rayon")]
                {
                    use rayon::prelude::*;
                    ws.par_chunks_mut(CHUNK)
                        .zip(ks.par_chunks(CHUNK))
                        .for_each(run);
                }
                #[cfg(not(feature = "rayon"))]
                ws.chunks_mut(CHUNK).zip(ks.chunks(CHUNK)).for_each(run);
            }
            None => Zip::from(w).and(&self.keep).for_each(zero),
        }
        Ok(())
    }

    /// For each index along `axis`, whether any element of that slice is kept. A channel with
    /// nothing kept no longer counts as remaining for structured pruning (PyTorch's rule).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] when `axis` is out of range.
    pub fn live_along(&self, axis: usize) -> Result<Vec<bool>> {
        if axis >= self.keep.ndim() {
            return Err(Error::invalid(
                "axis",
                format!("axis {axis} out of range for shape {:?}", self.shape()),
            ));
        }
        Ok(self
            .keep
            .axis_iter(ndarray::Axis(axis))
            .map(|slice| slice.iter().any(|&k| k))
            .collect())
    }
}

fn ratio(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Keep-masks for several tensors, by name.
///
/// Tensors without a mask are fully kept. Iteration is in name order.
///
/// ```
/// use ndarray::array;
/// use shears::{Mask, MaskSet, Params};
///
/// let mut params = Params::new();
/// params.insert("a", array![1.0_f32, 2.0, 3.0, 4.0].into_dyn());
/// let mut masks = MaskSet::new();
/// masks.insert("a", Mask::from_vec(&[4], vec![true, false, false, true])?);
/// masks.apply(&mut params)?;
/// assert_eq!(params.slice("a").unwrap(), &[1.0, 0.0, 0.0, 4.0]);
/// assert_eq!(masks.sparsity(), 0.5);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct MaskSet {
    masks: BTreeMap<String, Mask>,
}

/// Counts for one tensor of a [`MaskSet`].
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TensorSparsity {
    /// The tensor.
    pub name: String,
    /// Number of elements.
    pub total: usize,
    /// Elements kept.
    pub kept: usize,
    /// Fraction pruned.
    pub sparsity: f64,
}

impl MaskSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Masks that keep exactly the non-zero elements of every tensor in `params`.
    pub fn nonzero(params: &Params) -> Self {
        params
            .iter()
            .map(|(name, w)| (name.to_string(), Mask::nonzero(w)))
            .collect()
    }

    /// Inserts (or replaces) the mask of `name`.
    pub fn insert(&mut self, name: impl Into<String>, mask: Mask) -> Option<Mask> {
        self.masks.insert(name.into(), mask)
    }

    /// The mask of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&Mask> {
        self.masks.get(name)
    }

    /// The mask of `name`, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Mask> {
        self.masks.get_mut(name)
    }

    /// Removes the mask of `name`.
    pub fn remove(&mut self, name: &str) -> Option<Mask> {
        self.masks.remove(name)
    }

    /// `(name, mask)` pairs in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Mask)> + '_ {
        self.masks.iter().map(|(n, m)| (n.as_str(), m))
    }

    /// Names in order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.masks.keys().map(String::as_str)
    }

    /// Number of masks.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether there are no masks.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }

    /// Elements covered by the masks.
    pub fn total(&self) -> usize {
        self.masks.values().map(Mask::len).sum()
    }

    /// Elements kept.
    pub fn kept(&self) -> usize {
        self.masks.values().map(Mask::kept).sum()
    }

    /// Elements pruned.
    pub fn pruned(&self) -> usize {
        self.total() - self.kept()
    }

    /// Fraction of the covered elements that is pruned.
    pub fn sparsity(&self) -> f64 {
        ratio(self.pruned(), self.total())
    }

    /// Per-tensor counts, in name order.
    pub fn per_tensor(&self) -> Vec<TensorSparsity> {
        self.iter()
            .map(|(name, m)| {
                let kept = m.kept();
                TensorSparsity {
                    name: name.to_string(),
                    total: m.len(),
                    kept,
                    sparsity: ratio(m.len() - kept, m.len()),
                }
            })
            .collect()
    }

    /// Checks that every mask names a tensor of `params` with the same shape.
    ///
    /// # Errors
    /// [`Error::UnknownTensor`] or [`Error::ShapeMismatch`] for the first mask at fault.
    pub fn check(&self, params: &Params) -> Result<()> {
        for (name, mask) in self.iter() {
            let w = params.get(name).ok_or_else(|| Error::UnknownTensor {
                name: name.to_string(),
            })?;
            Error::check_shape(name, w.shape(), mask.shape())?;
        }
        Ok(())
    }

    /// Zeroes every pruned element of every masked tensor. Nothing is changed unless every mask
    /// fits its tensor.
    ///
    /// # Errors
    /// As [`MaskSet::check`].
    pub fn apply(&self, params: &mut Params) -> Result<()> {
        self.check(params)?;
        for (name, mask) in self.iter() {
            let mut w = params.get_mut(name).expect("checked above");
            mask.apply(&mut w, name)?;
        }
        Ok(())
    }

    /// Composition: a tensor is kept only where every set that masks it keeps it. A tensor masked
    /// in one set only takes that mask.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when both sets mask a tensor with different shapes.
    pub fn and(&self, other: &MaskSet) -> Result<MaskSet> {
        self.merge(other, Mask::and)
    }

    /// Union of what is kept: a tensor masked in both sets keeps what either keeps; a tensor masked
    /// in only one set is unmasked by the other and so stays fully kept.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] when both sets mask a tensor with different shapes.
    pub fn or(&self, other: &MaskSet) -> Result<MaskSet> {
        let mut out = MaskSet::new();
        for (name, a) in self.iter() {
            if let Some(b) = other.get(name) {
                out.insert(name, a.or(b, name)?);
            }
        }
        Ok(out)
    }

    fn merge(
        &self,
        other: &MaskSet,
        f: impl Fn(&Mask, &Mask, &str) -> Result<Mask>,
    ) -> Result<MaskSet> {
        let mut out = self.clone();
        for (name, b) in other.iter() {
            let merged = match self.get(name) {
                Some(a) => f(a, b, name)?,
                None => b.clone(),
            };
            out.insert(name, merged);
        }
        Ok(out)
    }
}

impl<S: Into<String>> FromIterator<(S, Mask)> for MaskSet {
    fn from_iter<I: IntoIterator<Item = (S, Mask)>>(iter: I) -> Self {
        MaskSet {
            masks: iter.into_iter().map(|(n, m)| (n.into(), m)).collect(),
        }
    }
}

impl<S: Into<String>> Extend<(S, Mask)> for MaskSet {
    fn extend<I: IntoIterator<Item = (S, Mask)>>(&mut self, iter: I) {
        self.masks
            .extend(iter.into_iter().map(|(n, m)| (n.into(), m)));
    }
}

impl IntoIterator for MaskSet {
    type Item = (String, Mask);
    type IntoIter = std::collections::btree_map::IntoIter<String, Mask>;
    fn into_iter(self) -> Self::IntoIter {
        self.masks.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};

    fn mask(shape: &[usize], flags: &[u8]) -> Mask {
        Mask::from_vec(shape, flags.iter().map(|&f| f == 1).collect()).unwrap()
    }

    #[test]
    fn counts_and_sparsity() {
        let m = mask(&[2, 3], &[1, 0, 1, 0, 0, 1]);
        assert_eq!((m.len(), m.kept(), m.pruned()), (6, 3, 3));
        assert_eq!(m.sparsity(), 0.5);
        assert_eq!(Mask::ones(&[0]).sparsity(), 0.0);
    }

    #[test]
    fn and_never_revives_or_unites() {
        let a = mask(&[4], &[1, 1, 0, 0]);
        let b = mask(&[4], &[1, 0, 1, 0]);
        assert_eq!(a.and(&b, "w").unwrap(), mask(&[4], &[1, 0, 0, 0]));
        assert_eq!(a.or(&b, "w").unwrap(), mask(&[4], &[1, 1, 1, 0]));
        let err = a
            .and(&mask(&[2, 2], &[1, 1, 1, 1]), "fc.weight")
            .unwrap_err();
        assert!(err.to_string().contains("fc.weight"), "{err}");
    }

    #[test]
    fn apply_zeroes_pruned_in_any_layout() {
        let base = Array2::from_shape_vec((2, 3), (1..=6).map(|x| x as f32).collect()).unwrap();
        // A transposed view: logical [3, 2], memory column-major.
        let mut t = base.t().to_owned().into_dyn();
        let m = mask(&[3, 2], &[1, 0, 0, 1, 1, 1]);
        m.apply(&mut t, "t").unwrap();
        assert_eq!(t, array![[1.0, 0.0], [0.0, 5.0], [3.0, 6.0]].into_dyn());
    }

    #[test]
    fn live_along_marks_channels_with_any_kept_element() {
        let m = mask(&[2, 4], &[1, 1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(m.live_along(0).unwrap(), [true, false]);
        assert_eq!(m.live_along(1).unwrap(), [true, true, true, false]);
        assert!(m.live_along(2).is_err());
    }

    #[test]
    fn mask_set_compose_apply_and_check() {
        let mut params = Params::new();
        params.insert("a", array![[1.0_f32, 2.0], [3.0, 4.0]].into_dyn());
        params.insert("b", array![5.0_f32, 6.0].into_dyn());
        let first: MaskSet = [("a", mask(&[2, 2], &[1, 1, 0, 1]))].into_iter().collect();
        let second: MaskSet = [
            ("a", mask(&[2, 2], &[0, 1, 1, 1])),
            ("b", mask(&[2], &[1, 0])),
        ]
        .into_iter()
        .collect();
        let both = first.and(&second).unwrap();
        assert_eq!(both.get("a").unwrap(), &mask(&[2, 2], &[0, 1, 0, 1]));
        assert_eq!(both.get("b").unwrap(), &mask(&[2], &[1, 0]));
        assert_eq!((both.total(), both.kept()), (6, 3));
        both.apply(&mut params).unwrap();
        assert_eq!(params.slice("a").unwrap(), &[0.0, 2.0, 0.0, 4.0]);
        assert_eq!(params.slice("b").unwrap(), &[5.0, 0.0]);

        let either = first.or(&second).unwrap();
        assert_eq!(either.get("a").unwrap(), &mask(&[2, 2], &[1, 1, 1, 1]));
        assert!(either.get("b").is_none(), "b is unmasked in `first`");

        let stray: MaskSet = [("c", Mask::ones(&[1]))].into_iter().collect();
        assert!(matches!(
            stray.check(&params),
            Err(Error::UnknownTensor { .. })
        ));
        let wrong: MaskSet = [("b", Mask::ones(&[3]))].into_iter().collect();
        let before = params.clone();
        assert!(matches!(
            wrong.apply(&mut params),
            Err(Error::ShapeMismatch { .. })
        ));
        assert_eq!(params, before, "a failed apply changes nothing");
    }
}
