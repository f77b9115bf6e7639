//! The trainer's contract: errors instead of panics, progress events, reproducibility, and the
//! gradient statistics for pruning criteria.

use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;
use shears::data::{Dataset, Targets};
use shears::graph::{Conv1d, Mode, Network};
use shears::train::{
    Adam, Event, Loss, ScoreAccumulator, ScoreOptions, Sgd, Trainer, accumulate_scores, evaluate,
};
use shears::{Error, Mask, MaskSet};

fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2862933555777941757) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn small_cnn() -> Network {
    Network::builder(&[2, 8])
        .conv1d("conv", Conv1d::new(2, 4, 3).padding(1).bias(false))
        .batch_norm1d("bn", 4)
        .relu("act")
        .layer("drop", shears::graph::Layer::Dropout { p: 0.2 })
        .global_avg_pool("gap")
        .linear("fc", 4, 3)
        .build_init(1)
        .unwrap()
}

fn data(n: usize, seed: u64) -> Dataset {
    let x = ArrayD::from_shape_vec(IxDyn(&[n, 2, 8]), values(seed, n * 16)).unwrap();
    Dataset::new(x, Targets::Classes((0..n).map(|i| i % 3).collect())).unwrap()
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut net = small_cnn();
    let good = data(10, 1);
    fn fit<O: shears::train::Optimizer>(
        t: &mut Trainer<O>,
        net: &mut Network,
        d: &Dataset,
    ) -> Error {
        t.fit(net, d).unwrap_err()
    }
    let mut t = Trainer::new(Loss::CrossEntropy, Adam::new(1e-2));

    let values = Dataset::new(
        ArrayD::zeros(IxDyn(&[4, 2, 8])),
        Targets::Values(ArrayD::zeros(IxDyn(&[4, 3]))),
    )
    .unwrap();
    assert!(
        fit(&mut t, &mut net, &values)
            .to_string()
            .contains("class indices")
    );
    let mut mse = Trainer::new(Loss::MeanSquaredError, Adam::new(1e-2));
    assert!(
        fit(&mut mse, &mut net, &good)
            .to_string()
            .contains("value targets")
    );

    let empty = Dataset::new(ArrayD::zeros(IxDyn(&[0, 2, 8])), Targets::Classes(vec![])).unwrap();
    assert_eq!(
        fit(&mut t, &mut net, &empty).to_string(),
        "invalid training set: it has no samples"
    );
    let wrong = Dataset::new(
        ArrayD::zeros(IxDyn(&[3, 2, 7])),
        Targets::Classes(vec![0; 3]),
    )
    .unwrap();
    assert!(matches!(
        fit(&mut t, &mut net, &wrong),
        Error::ShapeMismatch { .. }
    ));
    let far = Dataset::new(
        ArrayD::zeros(IxDyn(&[3, 2, 8])),
        Targets::Classes(vec![0, 5, 1]),
    )
    .unwrap();
    assert_eq!(
        fit(&mut t, &mut net, &far).to_string(),
        "invalid training set: class 5 of sample 1 is out of range for 3 classes"
    );

    let mut zero = Trainer::new(Loss::CrossEntropy, Adam::new(1e-2)).epochs(0);
    assert!(
        fit(&mut zero, &mut net, &good)
            .to_string()
            .contains("epochs")
    );
    let mut zero = Trainer::new(Loss::CrossEntropy, Adam::new(1e-2)).batch_size(0);
    assert!(
        fit(&mut zero, &mut net, &good)
            .to_string()
            .contains("batch size")
    );
    let mut bad_lr = Trainer::new(Loss::CrossEntropy, Sgd::new(-0.1));
    assert!(
        fit(&mut bad_lr, &mut net, &good)
            .to_string()
            .contains("learning rate")
    );
    let mut too_big = Trainer::new(Loss::CrossEntropy, Adam::new(1e-2))
        .batch_size(64)
        .drop_last(true);
    assert!(
        fit(&mut too_big, &mut net, &good)
            .to_string()
            .contains("no full batch")
    );

    let stray: MaskSet = [("nope.weight", Mask::ones(&[1]))].into_iter().collect();
    let mut masked = Trainer::new(Loss::CrossEntropy, Adam::new(1e-2)).masks(stray);
    assert!(matches!(
        fit(&mut masked, &mut net, &good),
        Error::UnknownTensor { .. }
    ));

    // Nothing above changed the network.
    assert_eq!(net.params(), small_cnn().params());
    assert!(evaluate(&net, &good, Loss::CrossEntropy, 0).is_err());
    assert!(evaluate(&net, &values, Loss::CrossEntropy, 4).is_err());
}

#[test]
fn a_diverging_run_names_the_epoch_and_batch() {
    // A NaN in sample 5 reaches the loss in the second batch of 4 (no shuffling).
    let mut d = data(12, 2).inputs().to_owned();
    d[[5, 1, 3]] = f32::NAN;
    let d = Dataset::new(d, Targets::Classes((0..12).map(|i| i % 3).collect())).unwrap();
    let mut net = small_cnn();
    let before = net.params().clone();
    let mut t = Trainer::new(Loss::CrossEntropy, Sgd::new(0.1))
        .batch_size(4)
        .shuffle(false);
    match t.fit(&mut net, &d).unwrap_err() {
        Error::NonFiniteLoss {
            epoch,
            batch,
            value,
        } => {
            assert_eq!((epoch, batch), (1, 2));
            assert!(value.is_nan());
        }
        other => panic!("{other}"),
    }
    assert_eq!(t.steps(), 1, "the diverging batch took no step");
    assert_ne!(net.params(), &before);
    assert!(
        net.params()
            .iter()
            .all(|(_, p)| p.iter().all(|v| v.is_finite()))
    );
}

#[test]
fn observer_sees_every_batch_and_epoch_and_validation() {
    let mut net = small_cnn();
    let train = data(10, 3);
    let test = data(6, 4);
    let mut t = Trainer::new(Loss::CrossEntropy, Adam::new(1e-2))
        .epochs(3)
        .batch_size(4);
    let mut events = Vec::new();
    let history = t
        .fit_with(&mut net, &train, Some(&test), |e| match e {
            Event::Batch(b) => events.push((b.epoch, b.batch, b.batches, b.step.samples)),
            Event::Epoch(r) => events.push((r.epoch, 0, 0, r.validation.unwrap().samples)),
            _ => unreachable!(),
        })
        .unwrap();
    let epoch = |e| vec![(e, 1, 3, 4), (e, 2, 3, 4), (e, 3, 3, 2), (e, 0, 0, 6)];
    assert_eq!(events, [epoch(1), epoch(2), epoch(3)].concat());
    assert_eq!(history.epochs.len(), 3);
    assert_eq!(t.steps(), 9);
    let last = history.last().unwrap();
    assert!(last.accuracy.is_some() && last.loss.is_finite() && last.seconds >= 0.0);
    assert_eq!(
        last.validation.unwrap(),
        evaluate(&net, &test, Loss::CrossEntropy, 4).unwrap()
    );
}

#[test]
fn runs_are_reproducible_from_their_seed() {
    let train = data(20, 5);
    let run = |seed| {
        let mut net = small_cnn();
        let mut t = Trainer::new(Loss::CrossEntropy, Adam::new(1e-2))
            .epochs(2)
            .batch_size(6)
            .seed(seed);
        t.fit(&mut net, &train).unwrap();
        net.into_params()
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_ne!(a, run(2));
    // Training moved the running statistics away from their initial 0 and 1.
    assert!(
        a.slice("bn.running_mean")
            .unwrap()
            .iter()
            .all(|&m| m != 0.0)
    );
}

#[test]
fn running_statistics_follow_pytorch_momentum_and_unbiased_variance() {
    // One BatchNorm over [batch 2, 1 channel, 2 positions]: values 1, 2, 3, 6 have mean 3 and
    // unbiased variance 14/3; with momentum 0.1 from 0 and 1: 0.3 and 0.9 + 14/30.
    let mut net = Network::builder(&[1, 2])
        .batch_norm1d("bn", 1)
        .build_init(0)
        .unwrap();
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 1, 2]), vec![1.0, 2.0, 3.0, 6.0]).unwrap();
    let tape = net.forward_tape(x.view(), Mode::Train { seed: 0 }).unwrap();
    // The batch is normalised with its biased variance 3.5.
    let y = tape.output();
    assert!((y[[0, 0, 0]] - (1.0 - 3.0) / (3.5f32 + 1e-5).sqrt()).abs() < 1e-6);
    net.update_running_stats(&tape).unwrap();
    assert!((net.params().slice("bn.running_mean").unwrap()[0] - 0.3).abs() < 1e-7);
    let var = net.params().slice("bn.running_var").unwrap()[0];
    assert!((f64::from(var) - (0.9 + 14.0 / 30.0)).abs() < 1e-6, "{var}");
    // An inference tape leaves them alone; a single value per channel cannot train.
    let before = net.params().clone();
    let eval = net.forward_tape(x.view(), Mode::Eval).unwrap();
    net.update_running_stats(&eval).unwrap();
    assert_eq!(net.params(), &before);
    let one = ArrayD::zeros(IxDyn(&[1, 1, 1]));
    let single = Network::builder(&[1, 1])
        .batch_norm1d("bn", 1)
        .build_init(0)
        .unwrap();
    let e = single
        .forward_tape(one.view(), Mode::Train { seed: 0 })
        .unwrap_err();
    assert!(
        e.to_string().contains("more than one value per channel"),
        "{e}"
    );
}

#[test]
fn backward_rejects_mismatched_tapes_and_gradients() {
    let net = small_cnn();
    let x = ArrayD::from_shape_vec(IxDyn(&[3, 2, 8]), values(1, 48)).unwrap();
    let tape = net.forward_tape(x.view(), Mode::Eval).unwrap();
    let wrong = ArrayD::<f32>::zeros(IxDyn(&[3, 4]));
    assert!(matches!(
        net.backward(&tape, wrong.view()),
        Err(Error::ShapeMismatch { .. })
    ));
    let other = Network::builder(&[2, 8])
        .global_avg_pool("gap")
        .build_init(0)
        .unwrap();
    let g = ArrayD::<f32>::zeros(IxDyn(&[3, 3]));
    assert!(
        other
            .backward(&tape, g.view())
            .unwrap_err()
            .to_string()
            .contains("tape")
    );
}

#[test]
fn gradient_scores_are_the_sums_they_promise() {
    let net = small_cnn();
    let d = data(10, 6);
    let opts = ScoreOptions::new(Loss::CrossEntropy).batch_size(4);
    let scores = accumulate_scores(&net, &d, opts).unwrap();
    assert_eq!((scores.batches, scores.samples), (3, 10));
    // By hand: the same three batches, in order, in inference mode.
    let mut acc = ScoreAccumulator::new();
    let mut taylor = ArrayD::<f32>::zeros(IxDyn(&[4, 2, 3]));
    for start in (0..10).step_by(4) {
        let end = (start + 4).min(10);
        let tape = net
            .forward_tape(d.batch_inputs(start, end), Mode::Eval)
            .unwrap();
        let t = Targets::Classes((start..end).map(|i| i % 3).collect());
        let (_, g) = Loss::CrossEntropy.forward(tape.output(), &t).unwrap();
        let grads = net.backward_params(&tape, g.view()).unwrap();
        let w = net.params().get("conv.weight").unwrap();
        taylor = taylor + (w * grads.get("conv.weight").unwrap()).mapv(f32::abs);
        acc.add(net.params(), &grads, end - start).unwrap();
    }
    assert_eq!(acc.finish(), scores);
    assert_eq!(scores.taylor.get("conv.weight").unwrap(), &taylor);
    assert_eq!(
        scores.taylor.len(),
        net.params().len() - 2,
        "no running statistics"
    );
    // SNIP from the mean gradient.
    let snip = scores.snip(net.params()).unwrap();
    let want = (net.params().get("fc.weight").unwrap() * scores.grad_sum.get("fc.weight").unwrap()
        / 3.0)
        .mapv(f32::abs);
    assert_eq!(snip.get("fc.weight").unwrap(), &want);
    // A cap on batches, and a training-mode pass that leaves the network alone.
    let one = accumulate_scores(
        &net,
        &d,
        ScoreOptions::new(Loss::CrossEntropy)
            .batch_size(4)
            .max_batches(1)
            .mode(Mode::Train { seed: 3 })
            .shuffle(9),
    )
    .unwrap();
    assert_eq!((one.batches, one.samples), (1, 4));
    assert_eq!(net.params(), small_cnn().params());
}

#[test]
fn score_accumulator_rejects_inconsistent_gradients() {
    let net = small_cnn();
    let mut acc = ScoreAccumulator::new();
    let mut grads = net.params().clone();
    grads.remove("bn.running_mean");
    grads.remove("bn.running_var");
    acc.add(net.params(), &grads, 1).unwrap();
    let mut fewer = grads.clone();
    fewer.remove("fc.bias");
    assert!(acc.add(net.params(), &fewer, 1).is_err());
    let mut nan = grads.clone();
    nan.get_mut("fc.bias").unwrap()[1] = f32::NAN;
    let e = acc.add(net.params(), &nan, 1).unwrap_err();
    assert!(
        e.to_string().contains("fc.bias") && e.to_string().contains("index 1"),
        "{e}"
    );
    assert_eq!(acc.batches(), 1, "nothing added on error");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Both losses' gradients against central differences in f64 of their f64 values.
    #[test]
    fn loss_gradients_match_finite_differences(batch in 1usize..5, classes in 1usize..6,
                                               mse: bool, seed: u64) {
        let n = batch * classes;
        let y = ArrayD::from_shape_vec(IxDyn(&[batch, classes]),
            values(seed, n).into_iter().map(|v| 3.0 * v).collect()).unwrap();
        let (loss, targets) = if mse {
            let t = ArrayD::from_shape_vec(IxDyn(&[batch, classes]), values(seed ^ 1, n)).unwrap();
            (Loss::MeanSquaredError, Targets::Values(t))
        } else {
            let t = (0..batch).map(|i| (i * 7 + seed as usize) % classes).collect();
            (Loss::CrossEntropy, Targets::Classes(t))
        };
        let (_, grad) = loss.forward(y.view(), &targets).unwrap();
        let h = 1e-3f32;
        for k in 0..n {
            let mut yp = y.clone();
            yp.as_slice_mut().unwrap()[k] += h;
            let up = loss.forward(yp.view(), &targets).unwrap().0;
            yp.as_slice_mut().unwrap()[k] -= 2.0 * h;
            let down = loss.forward(yp.view(), &targets).unwrap().0;
            // The perturbed values are f32: divide by the step actually taken.
            let step = f64::from(y.as_slice().unwrap()[k] + h) - f64::from(y.as_slice().unwrap()[k] - h);
            let fd = (up - down) / step;
            let g = f64::from(grad.as_slice().unwrap()[k]);
            prop_assert!((fd - g).abs() <= 1e-4 + 1e-3 * g.abs(), "[{}]: {} vs {}", k, fd, g);
        }
    }
}
