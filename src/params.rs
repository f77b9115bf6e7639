//! Named `f32` tensors in a fixed order: what a checkpoint holds and what strategies rank.
//!
//! Order matters: global pruning breaks ties by position in the concatenation of the tensors, in
//! the order they were inserted (PyTorch's `parameters()` order for a network). Every tensor is kept
//! in standard (row-major, contiguous) layout, so that kernels can work on flat slices; arrays
//! inserted in another layout are copied into it.

use std::collections::HashMap;

use ndarray::{ArrayD, ArrayRef, ArrayViewD, ArrayViewMutD, IxDyn};

use crate::error::{Error, Result};

/// An ordered map from names (PyTorch's dotted names, such as `features.0.weight`) to `f32` tensors.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::Params;
///
/// let mut params = Params::new();
/// params.insert("fc.weight", ArrayD::zeros(IxDyn(&[4, 3])));
/// params.insert("fc.bias", ArrayD::zeros(IxDyn(&[4])));
/// assert_eq!(params.names().collect::<Vec<_>>(), ["fc.weight", "fc.bias"]);
/// assert_eq!(params.num_elements(), 16);
/// assert_eq!(params.get("fc.weight").unwrap().shape(), &[4, 3]);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    entries: Vec<(String, ArrayD<f32>)>,
    index: HashMap<String, usize>,
}

impl Params {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a tensor, returning the one it replaces. A replacement keeps the old position, so
    /// the order (and with it global tie-breaking) does not change when weights are updated.
    pub fn insert(&mut self, name: impl Into<String>, tensor: ArrayD<f32>) -> Option<ArrayD<f32>> {
        let name = name.into();
        let tensor = standard(tensor);
        match self.index.get(&name) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i].1, tensor)),
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, tensor));
                None
            }
        }
    }

    /// Removes a tensor, keeping the order of the others.
    pub fn remove(&mut self, name: &str) -> Option<ArrayD<f32>> {
        let i = self.index.remove(name)?;
        let (_, tensor) = self.entries.remove(i);
        for j in self.index.values_mut() {
            if *j > i {
                *j -= 1;
            }
        }
        Some(tensor)
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&ArrayD<f32>> {
        self.index.get(name).map(|&i| &self.entries[i].1)
    }

    /// A mutable view of the tensor called `name`. A view, not the array, so that its shape and
    /// layout cannot change behind the set's back.
    pub fn get_mut(&mut self, name: &str) -> Option<ArrayViewMutD<'_, f32>> {
        let i = *self.index.get(name)?;
        Some(self.entries[i].1.view_mut())
    }

    /// The tensor's elements in row-major order.
    pub fn slice(&self, name: &str) -> Option<&[f32]> {
        self.get(name).map(|a| {
            a.as_slice()
                .expect("Params keeps every tensor in standard layout")
        })
    }

    /// Whether a tensor of that name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Position of `name` in the order.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Names in order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, tensor)` pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &ArrayD<f32>)> + '_ {
        self.entries.iter().map(|(n, a)| (n.as_str(), a))
    }

    /// `(name, view)` pairs in order, for read-only kernels.
    pub fn views(&self) -> impl ExactSizeIterator<Item = (&str, ArrayViewD<'_, f32>)> + '_ {
        self.entries.iter().map(|(n, a)| (n.as_str(), a.view()))
    }

    /// `(name, mutable view)` pairs in order.
    pub fn iter_mut(
        &mut self,
    ) -> impl ExactSizeIterator<Item = (&str, ArrayViewMutD<'_, f32>)> + '_ {
        self.entries
            .iter_mut()
            .map(|(n, a)| (n.as_str(), a.view_mut()))
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total number of elements over all tensors.
    pub fn num_elements(&self) -> usize {
        self.entries.iter().map(|(_, a)| a.len()).sum()
    }
}

/// Checks that every value of `values` is finite, so that a NaN or infinity read from a file is
/// reported where it is, before it spreads through scores and sums.
///
/// `values` may be in any layout; the index reported is the row-major (logical) flat index.
///
/// ```
/// use ndarray::array;
/// use shears::check_finite;
///
/// check_finite("fc.weight", &array![[1.0_f32, 2.0], [3.0, 4.0]].into_dyn())?;
/// let bad = array![[1.0_f32, 2.0], [f32::NAN, 4.0]].into_dyn();
/// let err = check_finite("fc.weight", &bad).unwrap_err();
/// assert_eq!(err.to_string(), "non-finite value NaN in `fc.weight` at flat index 2");
/// # Ok::<(), shears::Error>(())
/// ```
///
/// # Errors
/// [`Error::NonFinite`] for the first NaN or infinite value.
pub fn check_finite(tensor: &str, values: &ArrayRef<f32, IxDyn>) -> Result<()> {
    match values.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        None => Ok(()),
        Some((index, &value)) => Err(Error::NonFinite {
            tensor: tensor.to_string(),
            index,
            value,
        }),
    }
}

fn standard(a: ArrayD<f32>) -> ArrayD<f32> {
    if a.is_standard_layout() {
        a
    } else {
        a.as_standard_layout().into_owned()
    }
}

impl<S: Into<String>> FromIterator<(S, ArrayD<f32>)> for Params {
    fn from_iter<I: IntoIterator<Item = (S, ArrayD<f32>)>>(iter: I) -> Self {
        let mut p = Params::new();
        p.extend(iter);
        p
    }
}

impl<S: Into<String>> Extend<(S, ArrayD<f32>)> for Params {
    fn extend<I: IntoIterator<Item = (S, ArrayD<f32>)>>(&mut self, iter: I) {
        for (name, tensor) in iter {
            self.insert(name, tensor);
        }
    }
}

impl IntoIterator for Params {
    type Item = (String, ArrayD<f32>);
    type IntoIter = std::vec::IntoIter<(String, ArrayD<f32>)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn check_finite_reports_the_first_logical_index() {
        let mut a = Array2::<f32>::zeros((2, 3));
        a[[1, 0]] = f32::INFINITY;
        a[[0, 2]] = f32::NAN;
        // Transposed: logical [3, 2]; row-major order visits (0,0),(0,1),(1,0),(1,1),(2,0)...
        let t = a.t().into_dyn();
        let err = check_finite("w", &t).unwrap_err();
        assert!(
            matches!(err, Error::NonFinite { index: 1, value, .. } if value == f32::INFINITY),
            "{err:?}"
        );
        let err = check_finite("w", &a.into_dyn()).unwrap_err();
        assert!(matches!(err, Error::NonFinite { index: 2, value, .. } if value.is_nan()));
    }

    #[test]
    fn keeps_insertion_order_through_replace_and_remove() {
        let mut p = Params::new();
        for name in ["c", "a", "b"] {
            p.insert(name, ArrayD::zeros(IxDyn(&[2])));
        }
        assert!(p.insert("a", ArrayD::ones(IxDyn(&[3]))).is_some());
        assert_eq!(p.names().collect::<Vec<_>>(), ["c", "a", "b"]);
        assert_eq!(p.get("a").unwrap().len(), 3);
        p.remove("c");
        assert_eq!(p.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.position("b"), Some(1));
        assert_eq!(p.slice("b").unwrap(), &[0.0, 0.0]);
    }

    #[test]
    fn non_standard_layouts_are_stored_row_major() {
        let a = Array2::from_shape_vec((2, 3), (0..6).map(|x| x as f32).collect()).unwrap();
        let t = a.t().to_owned().into_dyn();
        assert!(!t.is_standard_layout());
        let p: Params = [("t", t)].into_iter().collect();
        assert_eq!(p.slice("t").unwrap(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }
}
