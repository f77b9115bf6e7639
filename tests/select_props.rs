//! Properties of the selection engine, checked through the public API against naive references
//! that sort everything (the engine never sorts).

use proptest::prelude::*;
use shears::Error;
use shears::select::{
    Scores, Source, count_candidates, prune_at_or_below, prune_k, prune_k_per_group, prune_n_m,
    select_cut,
};

/// Owned test data for one source.
#[derive(Clone, Debug)]
struct Data {
    values: Vec<f32>,
    kept: Option<Vec<bool>>,
    signed: bool,
}

impl Data {
    fn source(&self) -> Source<'_> {
        Source {
            name: "t",
            scores: if self.signed {
                Scores::Signed(&self.values)
            } else {
                Scores::Magnitude(&self.values)
            },
            kept: self.kept.as_deref(),
        }
    }

    fn candidate(&self, i: usize) -> bool {
        self.kept.as_ref().is_none_or(|k| k[i])
    }

    /// The score as ranked: `|x|` for magnitudes.
    fn score(&self, i: usize) -> f32 {
        if self.signed {
            self.values[i]
        } else {
            self.values[i].abs()
        }
    }
}

fn sources(data: &[Data]) -> Vec<Source<'_>> {
    data.iter().map(Data::source).collect()
}

/// Sort all `(score, source, index)` of candidates and prune the first `k`.
fn naive_prune_k(data: &[Data], k: usize) -> Vec<Vec<bool>> {
    let mut all: Vec<(f32, usize, usize)> = data
        .iter()
        .enumerate()
        .flat_map(|(s, d)| {
            (0..d.values.len())
                .filter(|&i| d.candidate(i))
                .map(move |i| (d.score(i), s, i))
        })
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut out: Vec<Vec<bool>> = data
        .iter()
        .map(|d| (0..d.values.len()).map(|i| d.candidate(i)).collect())
        .collect();
    for &(_, s, i) in &all[..k] {
        out[s][i] = false;
    }
    out
}

/// Values from a tiny set (heavy ties, signed zeros) or from a wide range.
fn values(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec(
            prop::sample::select(vec![-1.0f32, -0.0, 0.0, 0.25, 1.0]),
            0..max_len
        ),
        prop::collection::vec(prop::num::f32::NORMAL | prop::num::f32::ZERO, 0..max_len),
    ]
}

fn data(max_len: usize) -> impl Strategy<Value = Data> {
    values(max_len).prop_flat_map(|v| {
        let n = v.len();
        (
            Just(v),
            prop::option::of(prop::collection::vec(prop::bool::weighted(0.7), n)),
            any::<bool>(),
        )
            .prop_map(|(values, kept, signed)| Data {
                values,
                kept,
                signed,
            })
    })
}

/// Large inputs, built from a seed (proptest would spend its time generating them otherwise):
/// past the copy path, and with ties when `distinct` is small.
#[cfg(feature = "rayon")]
fn big_data() -> impl Strategy<Value = Vec<Data>> {
    prop::collection::vec(
        (
            any::<u64>(),
            0usize..120_000,
            1u32..1_000_000,
            any::<bool>(),
            any::<bool>(),
        ),
        1..4,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .map(|(seed, len, distinct, masked, signed)| {
                let mut s = seed;
                let mut next = move || {
                    s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                    let mut z = s;
                    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                    z ^ (z >> 31)
                };
                let values = (0..len)
                    .map(|_| (next() % distinct as u64) as f32 / distinct as f32 - 0.5)
                    .collect();
                let kept = masked.then(|| (0..len).map(|_| next() % 4 != 0).collect());
                Data {
                    values,
                    kept,
                    signed,
                }
            })
            .collect()
    })
}

#[cfg(feature = "rayon")]
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// Output keeps only what input kept.
fn never_revives(data: &Data, out: &[bool]) -> bool {
    out.iter()
        .enumerate()
        .all(|(i, &k)| !k || data.candidate(i))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prune_k_matches_sorting_everything(data in prop::collection::vec(data(300), 0..5), frac in 0.0f64..=1.0) {
        let src = sources(&data);
        let n = count_candidates(&src);
        let k = (n as f64 * frac) as usize;
        let got = prune_k(&src, k).unwrap();
        let pruned = got.iter().zip(&data)
            .map(|(o, d)| (0..o.len()).filter(|&i| d.candidate(i) && !o[i]).count())
            .sum::<usize>();
        prop_assert_eq!(pruned, k);
        for (o, d) in got.iter().zip(&data) {
            prop_assert!(never_revives(d, o));
        }
        prop_assert_eq!(&got, &naive_prune_k(&data, k));
        let cut = select_cut(&src, k).unwrap();
        prop_assert_eq!(cut.map_or(0, |c| c.pruned()), k);
        let too_many = prune_k(&src, n + 1).unwrap_err();
        prop_assert!(matches!(too_many, Error::CountTooLarge { .. }), "{:?}", too_many);
    }

    #[test]
    fn threshold_matches_comparing_each_score(data in data(300), t in -1.5f32..1.5) {
        let got = prune_at_or_below(&[data.source()], t).unwrap();
        for (i, &keep) in got[0].iter().enumerate() {
            prop_assert_eq!(keep, data.candidate(i) && data.score(i) > t);
        }
    }

    #[test]
    fn per_group_is_prune_k_of_each_row(data in data(300), cols in 1usize..20, frac in 0.0f64..=1.0) {
        let rows = data.values.len() / cols;
        let d = Data {
            values: data.values[..rows * cols].to_vec(),
            kept: data.kept.map(|k| k[..rows * cols].to_vec()),
            signed: data.signed,
        };
        let count = |n: usize| Ok((n as f64 * frac).round_ties_even() as usize);
        let got = prune_k_per_group(&d.source(), cols, &count).unwrap();
        prop_assert!(never_revives(&d, &got));
        for r in 0..rows {
            let row = Data {
                values: d.values[r * cols..(r + 1) * cols].to_vec(),
                kept: d.kept.as_ref().map(|k| k[r * cols..(r + 1) * cols].to_vec()),
                signed: d.signed,
            };
            let k = count(count_candidates(&[row.source()])).unwrap();
            prop_assert_eq!(&got[r * cols..(r + 1) * cols], &naive_prune_k(&[row], k)[0][..]);
        }
    }

    #[test]
    fn n_m_keeps_the_n_best_candidates_of_each_group(
        data in data(500),
        shape in (1usize..5, 1usize..40, 1usize..4),
        nm in (1usize..25).prop_flat_map(|m| (1..=m, Just(m))),
    ) {
        let (out_ch, cin, taps) = shape;
        let (n, m) = nm;
        let len = out_ch * cin * taps;
        prop_assume!(data.values.len() >= len);
        let d = Data {
            values: data.values[..len].to_vec(),
            kept: data.kept.map(|k| k[..len].to_vec()),
            signed: data.signed,
        };
        let dims = if taps == 1 { vec![out_ch, cin] } else { vec![out_ch, cin, taps] };
        let got = prune_n_m(&d.source(), &dims, n, m).unwrap();
        prop_assert!(never_revives(&d, &got));
        for o in 0..out_ch {
            for p in 0..taps {
                for g in (0..cin).step_by(m) {
                    let idx: Vec<usize> = (g..(g + m).min(cin)).map(|i| (o * cin + i) * taps + p).collect();
                    let mut cands: Vec<usize> = idx.iter().copied().filter(|&i| d.candidate(i)).collect();
                    let kept: Vec<usize> = idx.iter().copied().filter(|&i| got[i]).collect();
                    prop_assert_eq!(kept.len(), n.min(cands.len()));
                    // The kept ones are the last n by (score, index).
                    cands.sort_by(|&a, &b| d.score(a).total_cmp(&d.score(b)).then(a.cmp(&b)));
                    let mut best = cands[cands.len() - kept.len()..].to_vec();
                    best.sort();
                    prop_assert_eq!(kept, best);
                }
            }
        }
    }
}

#[cfg(feature = "rayon")]
proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn large_inputs_match_sorting_and_do_not_depend_on_threads(data in big_data(), frac in 0.0f64..=1.0) {
        let src = sources(&data);
        let k = (count_candidates(&src) as f64 * frac) as usize;
        let one = pool(1).install(|| prune_k(&src, k).unwrap());
        let two = pool(2).install(|| prune_k(&src, k).unwrap());
        prop_assert_eq!(&one, &two);
        prop_assert_eq!(&one, &naive_prune_k(&data, k));
    }

    #[test]
    fn grouped_kernels_do_not_depend_on_threads(data in big_data(), frac in 0.0f64..=1.0) {
        let d = &data[0];
        let cols = 64;
        let rows = d.values.len() / cols;
        let d = Data {
            values: d.values[..rows * cols].to_vec(),
            kept: d.kept.as_ref().map(|k| k[..rows * cols].to_vec()),
            signed: d.signed,
        };
        let s = d.source();
        let count = |n: usize| Ok((n as f64 * frac) as usize);
        let run = || {
            (
                prune_k_per_group(&s, cols, &count).unwrap(),
                prune_n_m(&s, &[rows, cols], 2, 4).unwrap(),
                prune_n_m(&s, &[rows / 2, 2, cols / 2], 1, 2).ok(),
                prune_at_or_below(&[s], 0.1).unwrap(),
            )
        };
        prop_assert_eq!(pool(1).install(run), pool(2).install(run));
    }
}

#[cfg(feature = "rayon")]
#[test]
fn a_million_weights_over_two_threads() {
    // Large enough to split every pass into parts on two threads.
    let data: Vec<Data> = (0..3)
        .map(|t| Data {
            values: (0..600_000u32)
                .map(|i| {
                    ((i.wrapping_mul(2_654_435_761).rotate_left(t) >> 8) % 50_000) as f32 - 25_000.0
                })
                .collect(),
            kept: (t == 1).then(|| (0..600_000).map(|i| i % 3 != 0).collect()),
            signed: t == 2,
        })
        .collect();
    let src = sources(&data);
    let n = count_candidates(&src);
    for k in [1, n / 3, n - 1] {
        let two = pool(2).install(|| prune_k(&src, k).unwrap());
        assert_eq!(two, pool(1).install(|| prune_k(&src, k).unwrap()));
        assert_eq!(two, naive_prune_k(&data, k), "k = {k}");
    }
}

#[cfg(feature = "rayon")]
#[test]
fn random_keys_do_not_depend_on_threads() {
    let r = |stream, len| Source {
        name: "r",
        scores: Scores::Random {
            seed: 42,
            stream,
            len,
        },
        kept: None,
    };
    let src = [r(0, 700_000), r(1, 30_000)];
    let one = pool(1).install(|| prune_k(&src, 365_000).unwrap());
    assert_eq!(one, pool(2).install(|| prune_k(&src, 365_000).unwrap()));
    let pruned = one.iter().flatten().filter(|&&k| !k).count();
    assert_eq!(pruned, 365_000);
    // Uniform keys: each stream loses about half.
    let second = one[1].iter().filter(|&&k| !k).count();
    assert!((13_500..16_500).contains(&second), "{second}");
}
