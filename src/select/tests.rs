//! Unit tests with hand-computed answers, and properties that pin the internal paths against each
//! other (the integration tests in `tests/select_props.rs` cannot reach them).

use super::*;
use proptest::prelude::*;

fn mag<'a>(name: &'a str, w: &'a [f32]) -> Source<'a> {
    Source {
        name,
        scores: Scores::Magnitude(w),
        kept: None,
    }
}

fn signed<'a>(name: &'a str, w: &'a [f32]) -> Source<'a> {
    Source {
        name,
        scores: Scores::Signed(w),
        kept: None,
    }
}

fn with_kept<'a>(s: Source<'a>, kept: &'a [bool]) -> Source<'a> {
    Source {
        kept: Some(kept),
        ..s
    }
}

/// `1` = kept, `0` = pruned, for readable expectations.
fn bits(v: &[bool]) -> String {
    v.iter().map(|&b| if b { '1' } else { '0' }).collect()
}

/// Every path, including brackets that miss on either side, must give the same masks.
fn all_paths(sources: &[Source<'_>], k: usize) -> Result<Vec<Vec<bool>>> {
    let reference = prune_k_along(sources, k, Path::Copy);
    for path in [
        Path::Auto,
        Path::Radix,
        Path::Bracketed,
        Path::Forced(0, 0),
        Path::Forced(i32::MIN, i32::MIN),
        Path::Forced(i32::MAX, i32::MAX),
        Path::Forced(-5, 5),
        Path::Forced(0, 0x3F80_0000),
        Path::Forced(0x3F80_0000, 0x4000_0000),
        Path::Skewed(0.0),
        Path::Skewed(0.5),
        Path::Skewed(2.0),
        Path::Skewed(1e9),
    ] {
        let got = prune_k_along(sources, k, path);
        match (&reference, &got) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{path:?}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{path:?}"),
            _ => panic!("{path:?}: {reference:?} vs {got:?}"),
        }
    }
    reference
}

#[test]
fn ties_go_by_flat_index() {
    let w = [2.0, 1.0, -1.0, 1.0, 0.5, -1.0];
    let s = [mag("w", &w)];
    assert_eq!(bits(&all_paths(&s, 1).unwrap()[0]), "111101");
    assert_eq!(bits(&all_paths(&s, 2).unwrap()[0]), "101101");
    assert_eq!(bits(&all_paths(&s, 3).unwrap()[0]), "100101");
    assert_eq!(bits(&all_paths(&s, 4).unwrap()[0]), "100001");
    assert_eq!(bits(&all_paths(&s, 5).unwrap()[0]), "100000");
    // Signed: -1.0 < 0.5 < 1.0, and -1.0 at 2 goes before -1.0 at 5.
    let s = [signed("w", &w)];
    assert_eq!(bits(&all_paths(&s, 1).unwrap()[0]), "110111");
    assert_eq!(bits(&all_paths(&s, 3).unwrap()[0]), "110100");
}

#[test]
fn global_ties_go_by_source_then_index() {
    let a = [1.0, 5.0, 1.0];
    let b = [1.0, 1.0, 0.0];
    let s = [mag("a", &a), mag("b", &b)];
    let expect = |k, ea: &str, eb: &str| {
        let m = all_paths(&s, k).unwrap();
        assert_eq!(
            (bits(&m[0]).as_str(), bits(&m[1]).as_str()),
            (ea, eb),
            "k = {k}"
        );
    };
    expect(1, "111", "110");
    expect(2, "011", "110");
    expect(3, "010", "110");
    expect(4, "010", "010");
    expect(5, "010", "000");
    expect(6, "000", "000");
}

#[test]
fn pruned_elements_never_come_back() {
    let w = [0.1, 0.2, 0.3, 0.4, 0.5];
    let kept = [false, true, false, true, true];
    let s = [with_kept(mag("w", &w), &kept)];
    assert_eq!(bits(&all_paths(&s, 0).unwrap()[0]), "01011");
    assert_eq!(bits(&all_paths(&s, 1).unwrap()[0]), "00011");
    assert_eq!(bits(&all_paths(&s, 3).unwrap()[0]), "00000");
    let e = all_paths(&s, 4).unwrap_err();
    assert!(
        matches!(&e, Error::CountTooLarge { requested: 4, available: 3, scope } if scope == "w"),
        "{e:?}"
    );
    let t = prune_at_or_below(&s, 0.35).unwrap();
    assert_eq!(bits(&t[0]), "00011");
    assert_eq!(bits(&prune_at_or_below(&s, -1.0).unwrap()[0]), "01011");
}

#[test]
fn k_zero_and_k_all() {
    let a = [3.0, -1.0];
    let b = [0.0, 2.0, 7.0];
    let s = [mag("a", &a), mag("b", &b)];
    let none = all_paths(&s, 0).unwrap();
    assert_eq!(
        (bits(&none[0]), bits(&none[1])),
        ("11".into(), "111".into())
    );
    assert_eq!(select_cut(&s, 0).unwrap(), None);
    let all = all_paths(&s, 5).unwrap();
    assert_eq!((bits(&all[0]), bits(&all[1])), ("00".into(), "000".into()));
    let cut = select_cut(&s, 5).unwrap().unwrap();
    assert_eq!((cut.score(), cut.pruned()), (Some(7.0), 5));
    let e = all_paths(&s, 6).unwrap_err();
    assert!(
        matches!(&e, Error::CountTooLarge { requested: 6, available: 5, scope } if scope == "global"),
        "{e:?}"
    );
}

#[test]
fn empty_sources() {
    let e: [f32; 0] = [];
    let w = [1.0, 2.0];
    assert_eq!(all_paths(&[], 0).unwrap(), Vec::<Vec<bool>>::new());
    assert!(matches!(
        all_paths(&[], 1),
        Err(Error::CountTooLarge {
            requested: 1,
            available: 0,
            ..
        })
    ));
    let s = [mag("e", &e), mag("w", &w), mag("f", &e)];
    let m = all_paths(&s, 1).unwrap();
    assert_eq!(m, [vec![], vec![false, true], vec![]]);
    assert_eq!(count_candidates(&s), 2);
    assert_eq!(
        prune_at_or_below(&s, 5.0).unwrap(),
        [vec![], vec![false, false], vec![]]
    );
}

#[test]
fn non_finite_scores_name_tensor_and_first_index() {
    let ok = [1.0, 2.0, 3.0];
    let bad = [1.0, f32::INFINITY, f32::NAN, 0.0];
    let kept = [true, false, false, true];
    for scores in [Scores::Magnitude(&bad), Scores::Signed(&bad)] {
        let s = [
            mag("ok", &ok),
            Source {
                name: "fc.weight",
                scores,
                // The non-finite values are not even candidates: still an error.
                kept: Some(&kept),
            },
        ];
        for k in [0, 1, 5] {
            let e = all_paths(&s, k).unwrap_err();
            assert!(
                matches!(&e, Error::NonFinite { tensor, index: 1, value } if tensor == "fc.weight" && value.is_infinite()),
                "k = {k}: {e:?}"
            );
        }
        assert!(matches!(
            select_cut(&s, 2),
            Err(Error::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            prune_at_or_below(&s, 1.0),
            Err(Error::NonFinite { index: 1, .. })
        ));
        let one = Source { kept: None, ..s[1] };
        assert!(matches!(
            prune_k_per_group(&one, 2, &|_| Ok(1)),
            Err(Error::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            prune_n_m(&one, &[2, 2], 1, 2),
            Err(Error::NonFinite { index: 1, .. })
        ));
    }
    let e = channel_norms("conv", &bad, &[2, 2], 1, Norm::L1, Some(&kept)).unwrap_err();
    assert!(matches!(&e, Error::NonFinite { tensor, index: 1, .. } if tensor == "conv"));
}

#[test]
fn threshold_prunes_at_or_below() {
    let w = [0.5, -0.25, 0.25, -0.0, 0.0, -1.0, 1.0];
    let m = |t| bits(&prune_at_or_below(&[mag("w", &w)], t).unwrap()[0]);
    assert_eq!(m(0.25), "1000011");
    assert_eq!(m(0.2), "1110011");
    assert_eq!(m(0.0), "1110011");
    assert_eq!(m(-0.0), "1110011", "|x| <= -0.0 holds for zeros");
    assert_eq!(m(-0.5), "1111111");
    assert_eq!(m(1.0), "0000000");
    let s = |t| bits(&prune_at_or_below(&[signed("w", &w)], t).unwrap()[0]);
    assert_eq!(s(-0.25), "1011101");
    assert_eq!(s(0.0), "1010001", "both zeros are <= 0.0");
    assert_eq!(s(-0.0), "1010001", "both zeros are <= -0.0");
    assert_eq!(s(-2.0), "1111111");
    assert!(matches!(
        prune_at_or_below(&[mag("w", &w)], f32::NAN),
        Err(Error::InvalidThreshold { .. })
    ));
    let r = Source {
        name: "r",
        scores: Scores::Random {
            seed: 1,
            stream: 0,
            len: 3,
        },
        kept: None,
    };
    assert!(matches!(
        prune_at_or_below(&[r], 0.5),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn pytorch_global_unstructured_vectors() {
    // pruning-semantics.md §2.5, amount = 4.
    let m = [1.0, 2.0, 3.0, 4.0, -4.0, -3.0, -2.0, -1.0];
    let n = [0.0, 0.1, -2.0];
    let masks = all_paths(&[mag("m.weight", &m), mag("n.weight", &n)], 4).unwrap();
    assert_eq!(bits(&masks[0]), "01111110");
    assert_eq!(bits(&masks[1]), "001");
    // Same weights, ranked by |importance scores|.
    let sm = [4.0, 2.0, 1.0, 3.0, -3.0, -1.0, -2.0, -4.0];
    let sn = [0.0, 10.0, -0.2];
    let masks = all_paths(&[mag("m.weight", &sm), mag("n.weight", &sn)], 4).unwrap();
    let apply = |w: &[f32], k: &[bool]| -> Vec<f32> {
        w.iter()
            .zip(k)
            .map(|(&w, &k)| if k { w } else { 0.0 })
            .collect()
    };
    assert_eq!(
        apply(&m, &masks[0]),
        [1.0, 2.0, 0.0, 4.0, -4.0, 0.0, -2.0, -1.0]
    );
    assert_eq!(apply(&n, &masks[1]), [0.0, 0.1, 0.0]);
}

#[test]
fn cut_reports_threshold_and_ties() {
    let w = [0.5, -1.0, 1.0, 2.0, 1.0, -3.0];
    let s = [mag("w", &w)];
    let cut = select_cut(&s, 3).unwrap().unwrap();
    assert_eq!(cut.score(), Some(1.0));
    assert_eq!(cut.key(), 1.0f32.to_bits() | 0x8000_0000);
    assert_eq!(
        (cut.below(), cut.ties(), cut.ties_pruned(), cut.pruned()),
        (1, 3, 2, 3)
    );
    let mut out = vec![vec![true; 6]];
    cut.write_masks(&s, &mut out).unwrap();
    assert_eq!(bits(&out[0]), "000111");
    assert!(matches!(
        cut.write_masks(&s, &mut [vec![true; 5]]),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        cut.write_masks(&s, &mut Vec::<Vec<bool>>::new()),
        Err(Error::ShapeMismatch { .. })
    ));
    // Other sources than the cut was selected from: no panic; keys off the cut key fall on
    // their side (how ties split is then only defined for the original sources).
    let other = [1.0f32, 5.0, 0.5];
    let mut out = vec![vec![false; 3]];
    cut.write_masks(&[mag("o", &other)], &mut out).unwrap();
    assert_eq!((out[0][1], out[0][2]), (true, false));
    let neg = [-0.5f32, 2.0];
    let cut = select_cut(&[signed("s", &neg)], 1).unwrap().unwrap();
    assert_eq!(cut.score(), Some(-0.5));
}

#[test]
fn random_keys_are_reproducible_and_seeded() {
    let r = |seed, stream, len| Source {
        name: "r",
        scores: Scores::Random { seed, stream, len },
        kept: None,
    };
    let a = all_paths(&[r(7, 0, 1000)], 300).unwrap();
    assert_eq!(a, all_paths(&[r(7, 0, 1000)], 300).unwrap());
    assert_eq!(a[0].iter().filter(|&&k| !k).count(), 300);
    assert_ne!(a, all_paths(&[r(8, 0, 1000)], 300).unwrap());
    assert_ne!(a, all_paths(&[r(7, 1, 1000)], 300).unwrap());
    assert_eq!(
        select_cut(&[r(7, 0, 1000)], 10).unwrap().unwrap().score(),
        None
    );
    // Two streams ranked together.
    let g = all_paths(&[r(7, 0, 500), r(7, 1, 500)], 400).unwrap();
    assert_eq!(g.iter().flatten().filter(|&&k| !k).count(), 400);
    let w = [1.0];
    assert!(matches!(
        prune_k(&[r(7, 0, 3), mag("w", &w)], 1),
        Err(Error::InvalidParameter { .. })
    ));
}

#[test]
fn keep_flags_must_match_scores() {
    let w = [1.0, 2.0];
    let kept = [true];
    let e = prune_k(&[with_kept(mag("fc", &w), &kept)], 1).unwrap_err();
    assert!(matches!(&e, Error::ShapeMismatch { name, .. } if name.contains("fc")));
}

#[test]
fn per_group_counts_each_row() {
    let w = [3.0, 1.0, 2.0, 0.5, 0.7, 0.6, 9.0, 9.0, 9.0];
    let kept = [true, true, true, true, false, true, true, true, true];
    let s = with_kept(mag("w", &w), &kept);
    let seen = std::sync::Mutex::new(Vec::new());
    let m = prune_k_per_group(&s, 3, &|n| {
        seen.lock().unwrap().push(n);
        Ok(n / 2)
    })
    .unwrap();
    assert_eq!(bits(&m), "101001011");
    let mut seen = seen.into_inner().unwrap();
    seen.sort();
    assert_eq!(seen, [2, 3, 3]);
    let e = prune_k_per_group(&s, 3, &|n| Ok(n)).map(|_| ());
    assert!(e.is_ok());
    let e = prune_k_per_group(&s, 3, &|n| Ok(n + 1)).unwrap_err();
    assert!(
        matches!(&e, Error::CountTooLarge { scope, available: 3, .. } if scope == "w[0]"),
        "{e:?}"
    );
    for bad in [0, 2, 4] {
        let e = prune_k_per_group(&s, bad, &|_| Ok(0)).unwrap_err();
        assert!(matches!(&e, Error::InvalidParameter { reason, .. } if reason.contains("`w`")));
    }
    let e: [f32; 0] = [];
    assert!(
        prune_k_per_group(&mag("e", &e), 4, &|_| Ok(0))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn n_m_linear_with_short_tail() {
    // 2:4 with in = 6: groups [0, 4) and [4, 6); the tail keeps both.
    let w = [
        0.1, -0.4, 0.3, 0.2, 0.05, 0.01, //
        1.0, 1.0, 1.0, 1.0, -2.0, 0.0,
    ];
    let m = prune_n_m(&mag("fc", &w), &[2, 6], 2, 4).unwrap();
    assert_eq!(bits(&m), "011011_001111".replace('_', ""));
    // Already-pruned elements neither count as kept nor come back.
    let kept = [
        true, false, true, true, false, true, true, true, true, true, true, true,
    ];
    let m = prune_n_m(&with_kept(mag("fc", &w), &kept), &[2, 6], 2, 4).unwrap();
    assert_eq!(bits(&m), "001101_001111".replace('_', ""));
    // 1:4 keeps the single largest; a tail of 2 keeps 1.
    let m = prune_n_m(&mag("fc", &w), &[2, 6], 1, 4).unwrap();
    assert_eq!(bits(&m), "010010_000110".replace('_', ""));
    // n = m keeps everything.
    let m = prune_n_m(&mag("fc", &w), &[2, 6], 4, 4).unwrap();
    assert_eq!(bits(&m), "111111111111");
}

#[test]
fn n_m_conv_groups_along_input_channels_at_each_tap() {
    // [out = 2, in = 6, k = 3]: element (o, i, p) is at (o * 6 + i) * 3 + p. Score it so that in
    // each (o, p) the groups along i are distinguishable: value = i for p = 0, -i for p = 1
    // (same magnitudes), 5 - i for p = 2.
    let mut w = vec![0.0f32; 36];
    for o in 0..2 {
        for i in 0..6 {
            for (p, v) in [i as f32, -(i as f32), 5.0 - i as f32]
                .into_iter()
                .enumerate()
            {
                w[(o * 6 + i) * 3 + p] = v;
            }
        }
    }
    let m = prune_n_m(&mag("conv", &w), &[2, 6, 3], 2, 4).unwrap();
    let kept = |o: usize, p: usize| -> String {
        (0..6)
            .map(|i| if m[(o * 6 + i) * 3 + p] { '1' } else { '0' })
            .collect()
    };
    for o in 0..2 {
        // Group [0, 4) keeps i = 2, 3 for |i|; i = 0, 1 for 5 - i; tails keep both.
        assert_eq!(kept(o, 0), "001111");
        assert_eq!(kept(o, 1), "001111");
        assert_eq!(kept(o, 2), "110011");
    }
    assert_eq!(m.iter().filter(|&&k| k).count(), 2 * 3 * 4);
}

#[test]
fn n_m_rejects_bad_patterns_and_shapes() {
    let w = [1.0; 8];
    let s = mag("fc", &w);
    assert!(matches!(
        prune_n_m(&s, &[2, 4], 0, 4),
        Err(Error::InvalidNm { n: 0, m: 4 })
    ));
    assert!(matches!(
        prune_n_m(&s, &[2, 4], 5, 4),
        Err(Error::InvalidNm { n: 5, m: 4 })
    ));
    assert!(matches!(
        prune_n_m(&s, &[8], 2, 4),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        prune_n_m(&s, &[3, 4], 2, 4),
        Err(Error::ShapeMismatch { name, .. }) if name == "fc"
    ));
    assert!(matches!(
        prune_n_m(&s, &[usize::MAX, 4], 2, 4),
        Err(Error::ShapeMismatch { .. })
    ));
    // Ties inside a group: the lower index goes first.
    assert_eq!(bits(&prune_n_m(&s, &[2, 4], 2, 4).unwrap()), "00110011");
}

#[test]
fn channel_norms_by_hand() {
    // w[o, i, p] with shape [2, 3, 2]:
    //   o = 0: [[1, -2], [0, 3], [4, 0]]
    //   o = 1: [[-1, 1], [2, -2], [0, 5]]
    let w = [
        1.0, -2.0, 0.0, 3.0, 4.0, 0.0, -1.0, 1.0, 2.0, -2.0, 0.0, 5.0,
    ];
    let shape = [2, 3, 2];
    let n = |axis, norm, kept| channel_norms("conv", &w, &shape, axis, norm, kept).unwrap();
    assert_eq!(n(0, Norm::L1, None), [10.0, 11.0]);
    assert_eq!(n(0, Norm::L2, None), [30.0f32.sqrt(), 35.0f32.sqrt()]);
    assert_eq!(n(0, Norm::Inf, None), [4.0, 5.0]);
    assert_eq!(n(1, Norm::L1, None), [5.0, 7.0, 9.0]);
    assert_eq!(
        n(1, Norm::L2, None),
        [7.0f32.sqrt(), 17.0f32.sqrt(), 41.0f32.sqrt()]
    );
    assert_eq!(n(1, Norm::Inf, None), [2.0, 3.0, 5.0]);
    assert_eq!(n(2, Norm::L1, None), [8.0, 13.0]);
    // Pruned elements count as zero: drop the 4 and the 5.
    let mut kept = [true; 12];
    kept[4] = false;
    kept[11] = false;
    assert_eq!(n(0, Norm::L1, Some(&kept)), [6.0, 6.0]);
    assert_eq!(n(1, Norm::Inf, Some(&kept)), [2.0, 3.0, 0.0]);
    // A linear [out, in] scored along the input axis.
    let fc = [3.0, 4.0, 0.0, -4.0, 3.0, 1.0];
    let l2 = channel_norms("fc", &fc, &[2, 3], 1, Norm::L2, None).unwrap();
    assert_eq!(l2, [5.0, 5.0, 1.0]);
    assert!(matches!(
        channel_norms("fc", &fc, &[2, 3], 2, Norm::L2, None),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        channel_norms("fc", &fc, &[2, 2], 0, Norm::L2, None),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        channel_norms("fc", &fc, &[2, 3], 0, Norm::L2, Some(&[true])),
        Err(Error::ShapeMismatch { .. })
    ));
    assert_eq!(
        channel_norms("e", &[], &[0, 3], 1, Norm::L2, None).unwrap(),
        [0.0; 3]
    );
}

#[test]
fn large_inputs_take_every_path_alike() {
    // Enough elements to split passes into parts and masks into chunks (test sizes are small),
    // with heavy ties at the cut.
    let a: Vec<f32> = (0..3000)
        .map(|i| ((i * 7919) % 13) as f32 * 0.25 - 1.5)
        .collect();
    let b: Vec<f32> = (0..2000)
        .map(|i| ((i * 104_729) % 1001) as f32 / 1000.0)
        .collect();
    let kept: Vec<bool> = (0..2000).map(|i| i % 7 != 3).collect();
    let s = [
        mag("a", &a),
        with_kept(mag("b", &b), &kept),
        signed("c", &a),
    ];
    let n = count_candidates(&s);
    for k in [1, 17, 1000, 2345, n / 2, n - 1, n] {
        let m = all_paths(&s, k).unwrap();
        let pruned = m.iter().flatten().filter(|&&k| !k).count();
        assert_eq!(pruned, k + 2000 - kept.iter().filter(|&&k| k).count());
    }
}

#[cfg(feature = "rayon")]
fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

/// Scores from a tiny set (heavy ties) or from a wide range.
fn score_vec(max_len: usize) -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        prop::collection::vec(
            prop::sample::select(vec![-2.0f32, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0]),
            0..max_len
        ),
        prop::collection::vec(-1e3f32..1e3, 0..max_len),
    ]
}

/// Scores, keep-flags, and whether the scores are signed.
type Spec = (Vec<f32>, Option<Vec<bool>>, bool);

fn sources_strategy() -> impl Strategy<Value = Vec<Spec>> {
    prop::collection::vec(
        score_vec(600).prop_flat_map(|v| {
            let n = v.len();
            (
                Just(v),
                prop::option::of(prop::collection::vec(prop::bool::weighted(0.8), n)),
                any::<bool>(),
            )
        }),
        0..5,
    )
}

fn as_sources(data: &[Spec]) -> Vec<Source<'_>> {
    data.iter()
        .map(|(v, k, is_signed)| Source {
            name: "t",
            scores: if *is_signed {
                Scores::Signed(v)
            } else {
                Scores::Magnitude(v)
            },
            kept: k.as_deref(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn paths_agree(data in sources_strategy(), frac in 0.0f64..=1.0) {
        let sources = as_sources(&data);
        let k = (count_candidates(&sources) as f64 * frac) as usize;
        all_paths(&sources, k).unwrap();
    }

    #[cfg(feature = "rayon")]
    #[test]
    fn paths_agree_on_two_threads(data in sources_strategy(), frac in 0.0f64..=1.0) {
        let sources = as_sources(&data);
        let k = (count_candidates(&sources) as f64 * frac) as usize;
        let one = in_pool(1, || all_paths(&sources, k).unwrap());
        let two = in_pool(2, || all_paths(&sources, k).unwrap());
        prop_assert_eq!(one, two);
    }

    #[cfg(feature = "rayon")]
    #[test]
    fn norms_do_not_depend_on_threads(
        w in prop::collection::vec(-10.0f32..10.0, 0..400),
        cols in 1usize..9,
    ) {
        let rows = w.len() / cols;
        let w = &w[..rows * cols];
        for axis in 0..2 {
            for norm in [Norm::L1, Norm::L2, Norm::Inf] {
                let f = || channel_norms("w", w, &[rows, cols], axis, norm, None).unwrap();
                let one = in_pool(1, f);
                prop_assert_eq!(&one, &in_pool(2, f));
                // Against a direct f64 computation.
                for (j, &got) in one.iter().enumerate() {
                    let slice: Vec<f64> = if axis == 0 {
                        w[j * cols..(j + 1) * cols].iter().map(|&x| x as f64).collect()
                    } else {
                        (0..rows).map(|r| w[r * cols + j] as f64).collect()
                    };
                    let want = match norm {
                        Norm::L1 => slice.iter().map(|x| x.abs()).sum::<f64>(),
                        Norm::L2 => slice.iter().map(|x| x * x).sum::<f64>().sqrt(),
                        Norm::Inf => slice.iter().fold(0.0f64, |m, x| m.max(x.abs())),
                    };
                    prop_assert!((got as f64 - want).abs() <= 1e-6 * want.max(1.0));
                }
            }
        }
    }
}

#[test]
fn dense_keys_at_bin_edges() {
    // Consecutive float bit patterns, shuffled: every key of a range is present, so a narrowing
    // step that loses the first or last key of a bin picks a wrong answer.
    let n = 140_000u32;
    let w: Vec<f32> = (0..n)
        .map(|i| f32::from_bits(0x3F80_0000 + (i.wrapping_mul(7_919) % n)))
        .collect();
    let s = [mag("w", &w)];
    for k in [
        1, 2, 65_535, 65_536, 65_537, 131_071, 131_072, 131_073, n as usize,
    ] {
        let masks = all_paths(&s, k).unwrap();
        let cut = f32::from_bits(0x3F80_0000 + k as u32 - 1);
        assert!(
            masks[0].iter().zip(&w).all(|(&keep, &x)| keep == (x > cut)),
            "k = {k}"
        );
    }
}

#[test]
fn brackets_hold_when_the_sample_sees_fewer_candidates() {
    // With half the elements kept at random, the sample holds more or fewer candidates than its
    // share; near k = n the estimated rank then falls past the sampled candidates.
    for seed in 0..20u64 {
        let w: Vec<f32> = (0..20_000u64)
            .map(|i| keys::mix64(seed << 32 | i) as f32)
            .collect();
        let kept: Vec<bool> = (0..20_000u64)
            .map(|i| keys::mix64((seed + 100) << 32 | i).is_multiple_of(2))
            .collect();
        let s = [with_kept(mag("w", &w), &kept)];
        let n = count_candidates(&s);
        for k in [1, 2, n / 2, n - 5, n - 1, n] {
            all_paths(&s, k).unwrap();
        }
    }
}
