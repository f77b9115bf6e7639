use std::cell::RefCell;
use std::rc::Rc;

use ndarray::{ArrayD, IxDyn};

use super::*;
use crate::Amount;
use crate::data::{Dataset, Targets};
use crate::graph::Network;
use crate::strategy::{PruneStrategy, Scope, WeightPruning};
use crate::train::{Adam, Event, Loss, Trainer};

#[test]
fn one_shot_is_one_step() {
    assert_eq!(Schedule::one_shot(0.3).targets().unwrap(), [0.3]);
}

#[test]
fn iterative_steps_prune_the_same_fraction_of_what_remains() {
    let t = Schedule::iterative(0.9, 4).targets().unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t[3], 0.9);
    let p = 1.0 - 0.1f64.powf(0.25);
    let mut remaining = 1.0;
    for &s in &t {
        remaining *= 1.0 - p;
        assert!((1.0 - remaining - s).abs() < 1e-12, "{t:?}");
    }
}

#[test]
fn agp_follows_the_cubic() {
    let t = Schedule::Agp {
        initial: 0.2,
        target: 0.8,
        steps: 4,
    }
    .targets()
    .unwrap();
    let expected: Vec<f64> = (1..=4)
        .map(|i| 0.8 + (0.2 - 0.8) * (1.0 - i as f64 / 4.0).powi(3))
        .collect();
    assert_eq!(t, expected);
    // Increments shrink: fast first, slow last.
    let d: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(d.windows(2).all(|w| w[1] < w[0]), "{d:?}");
}

#[test]
fn invalid_schedules_are_errors() {
    assert!(Schedule::one_shot(1.5).targets().is_err());
    assert!(Schedule::iterative(0.5, 0).targets().is_err());
    assert!(
        Schedule::Agp {
            initial: 0.6,
            target: 0.5,
            steps: 2
        }
        .targets()
        .is_err()
    );
    assert!(Schedule::agp(f64::NAN, 2).targets().is_err());
}

fn data() -> Dataset {
    let x = ArrayD::from_shape_fn(IxDyn(&[40, 4]), |i| {
        let sign = if i[0] % 2 == 0 { -1.0 } else { 1.0 };
        sign + 0.2 * (((i[0] * 7 + i[1] * 3) % 11) as f32 / 11.0 - 0.5)
    });
    Dataset::new(x, Targets::Classes((0..40).map(|i| i % 2).collect())).unwrap()
}

fn net() -> Network {
    Network::builder(&[4])
        .linear("fc1", 4, 16)
        .relu("r")
        .linear("fc2", 16, 2)
        .build_init(3)
        .unwrap()
}

#[derive(Default)]
struct Log {
    started: Vec<usize>,
    epochs: Vec<(usize, usize)>,
    finished: Vec<(usize, f64)>,
}

struct Recorder(Rc<RefCell<Log>>);

impl PruneObserver for Recorder {
    fn step_started(&mut self, step: &Step) {
        self.0.borrow_mut().started.push(step.index);
    }
    fn training(&mut self, step: &Step, event: &Event<'_>) {
        if let Event::Epoch(e) = event {
            self.0.borrow_mut().epochs.push((step.index, e.epoch));
        }
    }
    fn step_finished(&mut self, report: &StepReport) {
        self.0
            .borrow_mut()
            .finished
            .push((report.step.index, report.sparsity));
    }
}

fn global(step: &Step, _: &Network) -> crate::Result<Box<dyn PruneStrategy>> {
    Ok(Box::new(
        WeightPruning::new(Amount::Target(step.target)).scope(Scope::Global),
    ))
}

#[test]
fn the_pruner_reaches_each_target_exactly_and_never_revives() {
    let d = data();
    let mut n = net();
    let log = Rc::new(RefCell::new(Log::default()));
    let evals = RefCell::new(0);
    let run = Pruner::new(Schedule::iterative(0.9, 3))
        .fine_tune(
            Trainer::new(Loss::CrossEntropy, Adam::new(1e-2)).batch_size(8),
            &d,
            4,
        )
        .evaluate(|_| {
            *evals.borrow_mut() += 1;
            Ok(0.5)
        })
        .observe(Recorder(log.clone()))
        .run(&mut n, global)
        .unwrap();
    // 96 weights: targets round(96 · s_t) pruned after each step.
    let targets = Schedule::iterative(0.9, 3).targets().unwrap();
    for (r, s) in run.steps.iter().zip(&targets) {
        let pruned = (r.sparsity * 96.0).round() as usize;
        assert_eq!(pruned, (s * 96.0).round_ties_even() as usize);
    }
    assert_eq!(run.masks.pruned(), 86);
    for w in run.steps.windows(2) {
        for (name, later) in w[1].plan.masks.iter() {
            let earlier = w[0].plan.masks.get(name).unwrap();
            assert!(
                earlier
                    .as_slice()
                    .iter()
                    .zip(later.as_slice())
                    .all(|(&e, &l)| e || !l),
                "revived in {name}"
            );
        }
    }
    // The network's pruned weights are exactly zero after the last fine-tuning.
    for (name, mask) in run.masks.iter() {
        let w = n.params().slice(name).unwrap();
        assert!(w.iter().zip(mask.as_slice()).all(|(&v, &k)| k || v == 0.0));
    }
    // 4 epochs over 3 steps: 1, 1, 2.
    let epochs: Vec<usize> = run.steps.iter().map(|r| r.step.epochs).collect();
    assert_eq!(epochs, [1, 1, 2]);
    assert_eq!(run.steps[2].history.epochs.len(), 2);
    let log = log.borrow();
    assert_eq!(log.started, [1, 2, 3]);
    assert_eq!(log.epochs, [(1, 1), (2, 1), (3, 1), (3, 2)]);
    assert_eq!(log.finished.len(), 3);
    assert_eq!(*evals.borrow(), 6);
    assert_eq!(run.last().unwrap().metric(), Some(0.5));
}

#[test]
fn steps_without_epochs_do_not_fine_tune() {
    let d = data();
    let mut n = net();
    let before = n.clone();
    let run = Pruner::new(Schedule::agp(0.5, 4))
        .fine_tune(
            Trainer::new(Loss::CrossEntropy, Adam::new(1e-2)).batch_size(8),
            &d,
            2,
        )
        .evaluate(|_| Ok(1.0))
        .run(&mut n, global)
        .unwrap();
    let epochs: Vec<usize> = run.steps.iter().map(|r| r.step.epochs).collect();
    assert_eq!(epochs, [0, 0, 1, 1]);
    assert_eq!(run.steps[0].metric_finetuned, None);
    assert_eq!(run.steps[0].metric_pruned, Some(1.0));
    // Without fine-tuning, only masking: the one-shot run changes nothing else.
    let mut m = before.clone();
    let run = Pruner::new(Schedule::one_shot(0.5))
        .run(&mut m, global)
        .unwrap();
    let mut expected = before;
    expected.apply_masks(&run.masks).unwrap();
    assert_eq!(m.params(), expected.params());
    assert!(run.steps[0].history.epochs.is_empty());
}

#[test]
fn earlier_masks_stay_pruned() {
    let mut n = net();
    let mut prior = crate::MaskSet::new();
    let mut keep = vec![true; 64];
    keep[..10].iter_mut().for_each(|k| *k = false);
    prior.insert("fc1.weight", crate::Mask::from_vec(&[16, 4], keep).unwrap());
    let run = Pruner::new(Schedule::one_shot(0.25))
        .masks(prior)
        .run(&mut n, |_, _| {
            Ok(Box::new(WeightPruning::new(Amount::Sparsity(0.5))))
        })
        .unwrap();
    let fc1 = run.masks.get("fc1.weight").unwrap();
    assert!(fc1.as_slice()[..10].iter().all(|&k| !k));
    assert_eq!(fc1.pruned(), 10 + 27);
}

#[test]
fn a_step_can_calibrate_on_the_network_as_pruned_so_far() {
    use crate::strategy::Criterion;
    use crate::train::{ScoreOptions, accumulate_scores};
    let d = data();
    let mut n = net();
    let calibrated = RefCell::new(Vec::new());
    let run = Pruner::new(Schedule::iterative(0.75, 2))
        .fine_tune(
            Trainer::new(Loss::CrossEntropy, Adam::new(1e-2)).batch_size(8),
            &d,
            2,
        )
        .run(&mut n, |step, net| {
            // Gradient saliency of the network as it now is: pruned weights score 0.
            let scores = accumulate_scores(net, &d, ScoreOptions::new(Loss::CrossEntropy))?;
            let zeros = net
                .params()
                .iter()
                .filter(|(_, w)| w.ndim() >= 2)
                .map(|(_, w)| w.iter().filter(|&&v| v == 0.0).count())
                .sum::<usize>();
            calibrated.borrow_mut().push(zeros);
            Ok(Box::new(
                WeightPruning::new(Amount::Target(step.target))
                    .scope(Scope::Global)
                    .criterion(Criterion::taylor(&scores)),
            ))
        })
        .unwrap();
    // The second calibration saw the first step's 48 zeros (of 96); 72 pruned in the end.
    assert_eq!(calibrated.borrow()[1], 48);
    assert_eq!(run.masks.pruned(), 72);
    let first = &run.steps[0].plan.masks;
    for (name, m) in run.masks.iter() {
        let f = first.get(name).unwrap().as_slice();
        assert!(f.iter().zip(m.as_slice()).all(|(&a, &b)| a || !b));
    }
}
