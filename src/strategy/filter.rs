//! Which parameters a strategy may prune.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::params::Params;

type Predicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Clone)]
struct Rule {
    include: bool,
    label: String,
    matches: Predicate,
}

/// Chooses the tensors a strategy prunes, by rank and by name.
///
/// The default selects every tensor with two or more dimensions: weights of linear and
/// convolution layers, not biases or normalisation vectors. Each `include` then keeps only the
/// names it matches and each `exclude` drops the names it matches, applied in the order given.
/// Patterns are globs (`*` any run of characters, `?` one character) or any predicate.
///
/// A pattern that matches nothing is an error rather than a silent no-op: a typo in an exclude
/// pattern would otherwise prune the layer it was meant to protect.
///
/// ```
/// use ndarray::{ArrayD, IxDyn};
/// use shears::Params;
/// use shears::strategy::ParamFilter;
///
/// let params: Params = ["fc1.weight", "fc1.bias", "fc2.weight", "out.weight"]
///     .into_iter()
///     .map(|n| {
///         let shape: &[usize] = if n.ends_with("bias") { &[4] } else { &[4, 4] };
///         (n, ArrayD::zeros(IxDyn(shape)))
///     })
///     .collect();
/// let all = ParamFilter::new().select(&params)?;
/// assert_eq!(all, ["fc1.weight", "fc2.weight", "out.weight"]);
/// let some = ParamFilter::new().include("fc*").exclude("fc2.*").select(&params)?;
/// assert_eq!(some, ["fc1.weight"]);
/// assert!(ParamFilter::new().include("conv*").select(&params).is_err());
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone)]
pub struct ParamFilter {
    min_ndim: usize,
    rules: Vec<Rule>,
}

impl Default for ParamFilter {
    fn default() -> Self {
        ParamFilter {
            min_ndim: 2,
            rules: Vec::new(),
        }
    }
}

impl fmt::Debug for ParamFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    if r.include { "include" } else { "exclude" },
                    r.label
                )
            })
            .collect();
        f.debug_struct("ParamFilter")
            .field("min_ndim", &self.min_ndim)
            .field("rules", &rules)
            .finish()
    }
}

impl ParamFilter {
    /// Every tensor with two or more dimensions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Considers only tensors with at least `ndim` dimensions (default 2).
    pub fn min_ndim(mut self, ndim: usize) -> Self {
        self.min_ndim = ndim;
        self
    }

    /// Keeps only the names matching the glob `pattern`.
    pub fn include(self, pattern: &str) -> Self {
        let glob = pattern.to_string();
        self.include_if(pattern, move |name| glob_match(&glob, name))
    }

    /// Drops the names matching the glob `pattern`.
    pub fn exclude(self, pattern: &str) -> Self {
        let glob = pattern.to_string();
        self.exclude_if(pattern, move |name| glob_match(&glob, name))
    }

    /// Keeps only the names for which `matches` holds; `label` names the rule in errors.
    pub fn include_if(
        self,
        label: impl Into<String>,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rule(true, label.into(), Arc::new(matches))
    }

    /// Drops the names for which `matches` holds; `label` names the rule in errors.
    pub fn exclude_if(
        self,
        label: impl Into<String>,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.rule(false, label.into(), Arc::new(matches))
    }

    fn rule(mut self, include: bool, label: String, matches: Predicate) -> Self {
        self.rules.push(Rule {
            include,
            label,
            matches,
        });
        self
    }

    /// The selected names, in the order of `params`.
    ///
    /// # Errors
    /// As [`ParamFilter::select_from`].
    pub fn select<'p>(&self, params: &'p Params) -> Result<Vec<&'p str>> {
        self.select_from(params.iter().map(|(name, a)| (name, a.ndim())))
    }

    /// The selected names among `tensors`, given as `(name, number of dimensions)` in order:
    /// for choosing from a file's header before loading anything.
    ///
    /// # Errors
    /// [`Error::NothingSelected`] when an include pattern keeps nothing of what is left, an
    /// exclude pattern matches no tensor at all, or nothing is selected in the end.
    pub fn select_from<'n>(
        &self,
        tensors: impl IntoIterator<Item = (&'n str, usize)>,
    ) -> Result<Vec<&'n str>> {
        let tensors: Vec<(&str, usize)> = tensors.into_iter().collect();
        let mut selected: Vec<&str> = tensors
            .iter()
            .filter(|&&(_, ndim)| ndim >= self.min_ndim)
            .map(|&(name, _)| name)
            .collect();
        for rule in &self.rules {
            if rule.include {
                selected.retain(|n| (rule.matches)(n));
                if selected.is_empty() {
                    return Err(Error::NothingSelected {
                        reason: format!(
                            "include pattern `{}` matches no candidate tensor",
                            rule.label
                        ),
                    });
                }
            } else {
                if !tensors.iter().any(|&(n, _)| (rule.matches)(n)) {
                    return Err(Error::NothingSelected {
                        reason: format!("exclude pattern `{}` matches no tensor", rule.label),
                    });
                }
                selected.retain(|n| !(rule.matches)(n));
            }
        }
        if selected.is_empty() {
            return Err(Error::NothingSelected {
                reason: format!(
                    "no tensor with at least {} dimensions is left to prune",
                    self.min_ndim
                ),
            });
        }
        Ok(selected)
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters and `?` one.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Greedy matching with backtracking to the last star: linear in practice, never exponential.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{ArrayD, IxDyn};

    #[test]
    fn globs() {
        for (p, n, m) in [
            ("*", "", true),
            ("*", "a.b", true),
            ("fc*", "fc1.weight", true),
            ("fc*", "xfc1", false),
            ("*.weight", "layers.0.weight", true),
            ("*.weight", "layers.0.bias", false),
            ("layers.?.weight", "layers.3.weight", true),
            ("layers.?.weight", "layers.12.weight", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_match(p, n), m, "{p} vs {n}");
        }
    }

    fn params() -> Params {
        [
            ("a.weight", 2),
            ("a.bias", 1),
            ("b.weight", 4),
            ("c.weight", 2),
        ]
        .into_iter()
        .map(|(n, d)| (n, ArrayD::zeros(IxDyn(&vec![2; d]))))
        .collect()
    }

    #[test]
    fn default_is_two_or_more_dims_in_order() {
        let p = params();
        assert_eq!(
            ParamFilter::new().select(&p).unwrap(),
            ["a.weight", "b.weight", "c.weight"]
        );
        assert_eq!(ParamFilter::new().min_ndim(1).select(&p).unwrap().len(), 4);
    }

    #[test]
    fn rules_narrow_in_order_and_name_the_failing_pattern() {
        let p = params();
        let f = ParamFilter::new().include("*.weight").exclude("b.*");
        assert_eq!(f.select(&p).unwrap(), ["a.weight", "c.weight"]);
        let f = ParamFilter::new().include_if("starts with c", |n| n.starts_with('c'));
        assert_eq!(f.select(&p).unwrap(), ["c.weight"]);
        let err = ParamFilter::new().include("z*").select(&p).unwrap_err();
        assert!(err.to_string().contains("`z*`"), "{err}");
        let err = ParamFilter::new().exclude("zz").select(&p).unwrap_err();
        assert!(err.to_string().contains("`zz`"), "{err}");
        // Excluding a 1-D tensor that the default never selects is fine: it names a tensor.
        assert!(ParamFilter::new().exclude("a.bias").select(&p).is_ok());
        let err = ParamFilter::new()
            .exclude("*.weight")
            .select(&p)
            .unwrap_err();
        assert!(matches!(err, Error::NothingSelected { .. }));
    }
}
