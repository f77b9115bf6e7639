//! Mini-batches over a [`Dataset`], in order or shuffled from a seed.

use ndarray::{ArrayD, Axis, IxDyn};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::data::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::pool;

/// One mini-batch: inputs `[n, ...sample shape]` and their targets, copied out of the dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// The samples, stacked along axis 0.
    pub inputs: ArrayD<f32>,
    /// Their targets, in the same order.
    pub targets: Targets,
}

impl Batch {
    /// Hands the batch's input buffer back for reuse by the next batch.
    pub(crate) fn recycle(self) {
        pool::recycle_array(self.inputs);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the batch is empty (never the case for batches from [`Batches`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The samples at `indices` (any order, repeats allowed) with their targets.
pub(crate) fn gather(data: &Dataset, indices: &[usize]) -> Batch {
    let targets = match data.targets() {
        Targets::Classes(c) => Targets::Classes(indices.iter().map(|&i| c[i]).collect()),
        Targets::Values(v) => Targets::Values(v.select(Axis(0), indices)),
    };
    let all = data.inputs();
    let all = all
        .as_slice()
        .expect("Dataset keeps its inputs in standard layout");
    let sample = data.sample_shape().iter().product::<usize>();
    let mut inputs = pool::reused(indices.len() * sample);
    for (dst, &i) in inputs.chunks_exact_mut(sample.max(1)).zip(indices) {
        dst.copy_from_slice(&all[i * sample..(i + 1) * sample]);
    }
    let mut shape = vec![indices.len()];
    shape.extend_from_slice(data.sample_shape());
    Batch {
        inputs: ArrayD::from_shape_vec(IxDyn(&shape), inputs).expect("length from the shape"),
        targets,
    }
}

/// An iterator over the mini-batches of one pass (epoch) through a dataset.
///
/// Without shuffling the samples come in dataset order; with a seed they come in a uniformly
/// random order (Fisher–Yates over xoshiro256++), the same for the same seed on every machine.
/// The last batch is shorter when the batch size does not divide the dataset, unless it is
/// dropped.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::data::{Dataset, Targets};
/// use shears::train::Batches;
///
/// let x = ArrayD::from_shape_fn(IxDyn(&[5, 2]), |i| i[0] as f32);
/// let data = Dataset::new(x, Targets::Classes(vec![0, 1, 2, 3, 4]))?;
/// let sizes: Vec<usize> = Batches::new(&data, 2)?.map(|b| b.len()).collect();
/// assert_eq!(sizes, [2, 2, 1]);
/// let mut seen: Vec<f32> = Batches::new(&data, 2)?
///     .shuffle(7)
///     .drop_last(true)
///     .flat_map(|b| b.inputs.iter().step_by(2).copied().collect::<Vec<_>>())
///     .collect();
/// assert_eq!(seen.len(), 4);
/// seen.sort_by(f32::total_cmp);
/// seen.dedup();
/// assert_eq!(seen.len(), 4, "no sample twice");
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    data: &'a Dataset,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
    drop_last: bool,
}

impl<'a> Batches<'a> {
    /// Batches of `batch_size` samples in dataset order.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] for a batch size of zero.
    pub fn new(data: &'a Dataset, batch_size: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid("batch size", "must be at least 1"));
        }
        Ok(Batches {
            data,
            order: (0..data.len()).collect(),
            batch_size,
            next: 0,
            drop_last: false,
        })
    }

    /// Visits the samples in the random order drawn from `seed`.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.order
            .shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
        self
    }

    /// Leaves out a last batch shorter than the batch size.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }

    fn remaining(&self) -> usize {
        let left = self.order.len() - self.next;
        if self.drop_last {
            left / self.batch_size
        } else {
            left.div_ceil(self.batch_size)
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining() == 0 {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let batch = gather(self.data, &self.order[self.next..end]);
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::IxDyn;

    fn data(n: usize) -> Dataset {
        let x = ArrayD::from_shape_fn(IxDyn(&[n, 3]), |i| (i[0] * 10 + i[1]) as f32);
        let t = ArrayD::from_shape_fn(IxDyn(&[n, 1]), |i| -(i[0] as f32));
        Dataset::new(x, Targets::Values(t)).unwrap()
    }

    #[test]
    fn shuffled_batches_are_a_seeded_permutation_with_targets_aligned() {
        let d = data(10);
        let firsts = |seed| -> Vec<f32> {
            Batches::new(&d, 3)
                .unwrap()
                .shuffle(seed)
                .flat_map(|b| {
                    let Targets::Values(t) = &b.targets else {
                        unreachable!()
                    };
                    // Targets follow their samples: t = -(x[0] / 10).
                    for (row, t) in b.inputs.outer_iter().zip(t.iter()) {
                        assert_eq!(row[0] / 10.0, -t);
                        assert_eq!(row[2], row[0] + 2.0);
                    }
                    b.inputs.iter().step_by(3).copied().collect::<Vec<_>>()
                })
                .collect()
        };
        let a = firsts(1);
        assert_eq!(a, firsts(1), "same seed, same order");
        assert_ne!(a, firsts(2));
        let mut sorted = a.clone();
        sorted.sort_by(f32::total_cmp);
        assert_eq!(sorted, (0..10).map(|i| (i * 10) as f32).collect::<Vec<_>>());
        let b = Batches::new(&d, 3).unwrap();
        assert_eq!(b.len(), 4);
        assert_eq!(b.drop_last(true).len(), 3);
        assert!(Batches::new(&d, 0).is_err());
    }
}
