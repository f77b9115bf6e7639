//! Single-sample inference latency: what a wearable feels, one window at a time.

use std::time::Instant;

use ndarray::{ArrayViewD, Axis};
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::graph::Network;

/// Wall-clock time of [`Network::forward`] on a batch of one sample, in microseconds.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
pub struct Latency {
    /// Median over the timed repetitions (the mean of the two middle ones for an even count):
    /// robust to the odd preemption on a shared machine.
    pub median_us: f64,
    /// Fastest repetition.
    pub min_us: f64,
    /// Slowest repetition.
    pub max_us: f64,
    /// Number of timed repetitions.
    pub repetitions: usize,
}

impl Latency {
    /// Times `net` on `sample` (one sample, shaped as [`Network::input_shape`], without a batch
    /// axis): `warmup` untimed runs (caches, allocator, thread pool), then `repetitions` timed
    /// ones, each a full [`Network::forward`] of a batch of one, allocation of intermediate
    /// values included. Under the `rayon` feature the pass may use the global pool.
    ///
    /// ```
    /// use ndarray::ArrayD;
    /// use shears::graph::Network;
    /// use shears::report::Latency;
    ///
    /// let net = Network::builder(&[16]).linear("fc", 16, 4).build_init(0)?;
    /// let sample = ArrayD::zeros(ndarray::IxDyn(&[16]));
    /// let latency = Latency::measure(&net, sample.view(), 5, 21)?;
    /// assert!(latency.min_us <= latency.median_us && latency.median_us <= latency.max_us);
    /// assert_eq!(latency.repetitions, 21);
    /// # Ok::<(), shears::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for zero repetitions; [`Error::Graph`] when `sample` does not
    /// have the network's input shape.
    pub fn measure(
        net: &Network,
        sample: ArrayViewD<'_, f32>,
        warmup: usize,
        repetitions: usize,
    ) -> Result<Self> {
        if repetitions == 0 {
            return Err(Error::invalid("latency repetitions", "must be positive"));
        }
        let batch = sample.insert_axis(Axis(0));
        for _ in 0..warmup {
            std::hint::black_box(net.forward(batch.view())?);
        }
        let mut times = Vec::with_capacity(repetitions);
        for _ in 0..repetitions {
            let start = Instant::now();
            std::hint::black_box(net.forward(std::hint::black_box(batch.view()))?);
            times.push(start.elapsed().as_secs_f64() * 1e6);
        }
        let (min_us, max_us) = times.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), &t| {
            (lo.min(t), hi.max(t))
        });
        Ok(Latency {
            median_us: median(&mut times),
            min_us,
            max_us,
            repetitions,
        })
    }
}

/// Median of a non-empty slice, by selection (the slice is reordered).
fn median(values: &mut [f64]) -> f64 {
    let (len, mid) = (values.len(), values.len() / 2);
    let (below, &mut upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    if len % 2 == 1 {
        upper
    } else {
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [5.0, 1.0, 3.0]), 3.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut [7.0]), 7.0);
        assert_eq!(median(&mut [9.0, 1.0, 100.0, 2.0, 3.0]), 3.0);
    }

    #[test]
    fn rejects_bad_input() {
        let net = Network::builder(&[3])
            .relu("r")
            .build(crate::Params::new())
            .unwrap();
        let ok = ndarray::ArrayD::zeros(ndarray::IxDyn(&[3]));
        assert!(Latency::measure(&net, ok.view(), 0, 0).is_err());
        let wrong = ndarray::ArrayD::zeros(ndarray::IxDyn(&[1, 3]));
        assert!(matches!(
            Latency::measure(&net, wrong.view(), 0, 3),
            Err(Error::Graph { .. })
        ));
    }
}
