//! How much to prune: fractions, counts, thresholds and targets, and the rule that turns a fraction
//! into a count.
//!
//! The default follows PyTorch's `torch.nn.utils.prune` exactly: a fraction `s` of the `n` units
//! that *remain* becomes `k = round_half_even(s · n)`, computed in `f64`. The other libraries' rules
//! are available as [`CountRule`] variants so that their results can be reproduced.

use crate::error::{Error, Result};

/// How much of a comparison group to prune.
///
/// A *unit* is what is ranked: an element, a channel, a block. Fractions and counts are relative to
/// the units that remain unpruned, so a second pruning acts on what the first one left (PyTorch's
/// `PruningContainer` rule). [`Amount::Target`] is the absolute alternative that schedules use.
///
/// ```
/// use shears::{Amount, CountRule};
/// // 0.5 of 5 remaining prunes 2 (2.5 rounds half to even), 0.5 of 9 prunes 4.
/// assert_eq!(Amount::Sparsity(0.5).units_to_prune(5, 5, CountRule::TiesEven, "t")?, Some(2));
/// assert_eq!(Amount::Sparsity(0.5).units_to_prune(9, 9, CountRule::TiesEven, "t")?, Some(4));
/// // A target counts units pruned before: 60 % of 10 with 4 already gone prunes 2 more.
/// assert_eq!(Amount::Target(0.6).units_to_prune(6, 10, CountRule::TiesEven, "t")?, Some(2));
/// // A threshold has no count: every unit scoring at or below it goes.
/// assert_eq!(Amount::Threshold(0.1).units_to_prune(6, 10, CountRule::TiesEven, "t")?, None);
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum Amount {
    /// Prune this fraction (in `[0, 1]`) of the units that remain (PyTorch's float `amount`).
    Sparsity(f64),
    /// Prune exactly this many of the units that remain (PyTorch's int `amount`); more than remain
    /// is an error.
    Count(usize),
    /// Prune every remaining unit whose score is at or below this value; keep those above.
    Threshold(f32),
    /// Prune until this fraction of *all* units, those pruned before included, is pruned. Nothing
    /// is pruned if the group is already sparser.
    Target(f64),
}

/// The rule that turns a fraction `s` of `n` units into the count `k` to prune.
///
/// All products are taken in `f64`: with an `f32` fraction, `0.7 × 5` would be `3.4999998` and
/// round the other way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[non_exhaustive]
pub enum CountRule {
    /// `k = round_half_even(s · n)`: PyTorch and SparseML.
    #[default]
    TiesEven,
    /// `k = floor(s · n)`: NNI, Distiller, Wanda, llm-compressor.
    Floor,
    /// `k = n − floor(n · (1 − s))`: Torch-Pruning (the kept count rounds down).
    KeepFloor,
    /// `keep = max(round_half_even(n · (1 − s)), 1)`: TF Model Optimization, which never prunes a
    /// whole group.
    KeepTiesEvenMin1,
}

impl CountRule {
    /// The number of units to prune when a fraction `s` of `n` is asked for.
    ///
    /// `s` must already be validated to lie in `[0, 1]`.
    pub fn count(self, s: f64, n: usize) -> usize {
        let nf = n as f64;
        let k = match self {
            CountRule::TiesEven => (s * nf).round_ties_even(),
            CountRule::Floor => (s * nf).floor(),
            CountRule::KeepFloor => nf - (nf * (1.0 - s)).floor(),
            CountRule::KeepTiesEvenMin1 => {
                if n == 0 {
                    0.0
                } else {
                    nf - (nf * (1.0 - s)).round_ties_even().max(1.0)
                }
            }
        };
        // The products are exact enough that `k` never leaves `[0, n]`; clamp against rounding
        // of `1 − s` all the same.
        (k.max(0.0) as usize).min(n)
    }
}

impl Amount {
    /// Checks that the amount is usable: fractions finite and in `[0, 1]`, thresholds finite.
    ///
    /// # Errors
    /// [`Error::InvalidSparsity`] or [`Error::InvalidThreshold`].
    pub fn validate(&self) -> Result<()> {
        match *self {
            Amount::Sparsity(s) | Amount::Target(s) if !(0.0..=1.0).contains(&s) => {
                Err(Error::InvalidSparsity { value: s })
            }
            Amount::Threshold(t) if !t.is_finite() => Err(Error::InvalidThreshold { value: t }),
            _ => Ok(()),
        }
    }

    /// The number of units to prune in a comparison group where `remaining` of `total` units are
    /// still unpruned, or `None` for a threshold, which decides unit by unit.
    ///
    /// `scope` names the group in errors (a tensor name, or `global`).
    ///
    /// # Errors
    /// The amount is invalid (see [`Amount::validate`]) or a [`Amount::Count`] exceeds `remaining`
    /// ([`Error::CountTooLarge`]).
    pub fn units_to_prune(
        &self,
        remaining: usize,
        total: usize,
        rule: CountRule,
        scope: &str,
    ) -> Result<Option<usize>> {
        self.validate()?;
        debug_assert!(remaining <= total, "remaining {remaining} > total {total}");
        Ok(match *self {
            Amount::Sparsity(s) => Some(rule.count(s, remaining)),
            Amount::Count(k) if k > remaining => {
                return Err(Error::CountTooLarge {
                    requested: k,
                    available: remaining,
                    scope: scope.to_string(),
                });
            }
            Amount::Count(k) => Some(k),
            Amount::Target(s) => {
                let already = total - remaining;
                Some(rule.count(s, total).saturating_sub(already).min(remaining))
            }
            Amount::Threshold(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: f64, n: usize) -> usize {
        Amount::Sparsity(s)
            .units_to_prune(n, n, CountRule::TiesEven, "t")
            .unwrap()
            .unwrap()
    }

    #[test]
    fn pytorch_rounding_table() {
        // pruning-semantics.md §2.2, checked against Python's round().
        assert_eq!(k(0.5, 5), 2);
        assert_eq!(k(0.5, 7), 4);
        assert_eq!(k(0.5, 9), 4);
        assert_eq!(k(0.25, 10), 2);
        assert_eq!(k(0.3, 5), 2);
        assert_eq!(k(0.125, 4), 0);
        assert_eq!(k(0.4, 17), 7);
        assert_eq!(k(1.0, 15), 15);
        assert_eq!(k(0.7, 5), 4, "0.7 × 5 is 3.5 in f64, so 4");
        assert_eq!(k(0.1, 5), 0, "0.1 × 5 is 0.5 in f64, so 0");
        assert_eq!(k(0.0, 5), 0);
    }

    #[test]
    fn counts_are_absolute_and_bounded() {
        let c =
            |k: usize, n: usize| Amount::Count(k).units_to_prune(n, n, CountRule::TiesEven, "w");
        assert_eq!(c(10, 15).unwrap(), Some(10));
        assert_eq!(c(1, 15).unwrap(), Some(1));
        assert_eq!(c(0, 0).unwrap(), Some(0));
        let err = c(16, 15).unwrap_err();
        assert!(matches!(
            err,
            Error::CountTooLarge {
                requested: 16,
                available: 15,
                ..
            }
        ));
        assert!(err.to_string().contains("`w`") || err.to_string().contains("w:"));
    }

    #[test]
    fn library_rules_for_half_of_5_7_9() {
        // pruning-semantics.md §4: number pruned for s = 0.5.
        let table = [
            (CountRule::TiesEven, [2, 4, 4]),
            (CountRule::KeepFloor, [3, 4, 5]),
            (CountRule::Floor, [2, 3, 4]),
            (CountRule::KeepTiesEvenMin1, [3, 3, 5]),
        ];
        for (rule, expected) in table {
            let got = [5, 7, 9].map(|n| rule.count(0.5, n));
            assert_eq!(got, expected, "{rule:?}");
        }
        assert_eq!(
            CountRule::KeepTiesEvenMin1.count(1.0, 4),
            3,
            "never prunes all"
        );
        assert_eq!(CountRule::KeepTiesEvenMin1.count(1.0, 0), 0);
    }

    #[test]
    fn targets_count_what_is_already_pruned() {
        let t = |s: f64, remaining: usize, total: usize| {
            Amount::Target(s)
                .units_to_prune(remaining, total, CountRule::TiesEven, "t")
                .unwrap()
                .unwrap()
        };
        assert_eq!(t(0.6, 6, 10), 2);
        assert_eq!(t(0.3, 6, 10), 0, "already sparser than the target");
        assert_eq!(t(1.0, 6, 10), 6);
    }

    #[test]
    fn invalid_amounts_are_errors() {
        for s in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                Amount::Sparsity(s).validate(),
                Err(Error::InvalidSparsity { .. })
            ));
            assert!(Amount::Target(s).validate().is_err());
        }
        assert!(matches!(
            Amount::Threshold(f32::NAN).validate(),
            Err(Error::InvalidThreshold { .. })
        ));
        assert!(Amount::Threshold(-1.0).validate().is_ok());
    }
}
