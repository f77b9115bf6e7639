//! Training-mode forward passes that record a [`Tape`], and the backward pass that turns a tape
//! and the gradient of a scalar loss with respect to the network's output into [`Gradients`].

use ndarray::{ArrayD, ArrayViewD};

use super::grad;
use super::layer::{Layer, ParamRole, softmax_axis};
use super::network::{INPUT, Network, Source, hw};
use crate::error::{Error, Result};
use crate::params::Params;
use crate::pool;

/// How a forward pass treats the layers that behave differently in training.
///
/// | layer | `Eval` | `Train { seed }` |
/// |---|---|---|
/// | BatchNorm | running statistics | the batch's statistics (biased variance); the running statistics can then move towards them ([`Network::update_running_stats`]) |
/// | Dropout | identity | zeroes each element with probability `p` and scales the rest by `1 / (1 - p)` (inverted dropout), with a mask drawn from `seed` and the node's position |
///
/// Every other layer computes the same thing in both modes. The same seed gives the same dropout
/// masks, whatever the number of threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Inference, as PyTorch's `model.eval()`.
    #[default]
    Eval,
    /// Training, as PyTorch's `model.train()`.
    Train {
        /// Seed of the dropout masks of this pass.
        seed: u64,
    },
}

/// How one forward pass runs: its mode, and whether it keeps what a backward pass needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pass {
    pub mode: Mode,
    pub record: bool,
}

impl Pass {
    /// Plain inference: nothing recorded.
    pub const INFERENCE: Pass = Pass {
        mode: Mode::Eval,
        record: false,
    };
}

/// What one node's forward pass keeps for its backward, beyond the values of the graph.
#[derive(Clone, Debug)]
pub(crate) enum Saved {
    /// Nothing beyond the node's inputs and output.
    Nothing,
    /// Max pooling: the in-plane index of the input each output took.
    Argmax(Vec<u32>),
    /// BatchNorm in training: per-channel batch mean and biased variance, and how many values
    /// each channel had.
    BatchStats {
        stats: Vec<(f64, f64)>,
        count: usize,
    },
    /// Dropout in training: each element's multiplier (0 or `1 / (1 - p)`).
    DropMask(Vec<f32>),
}

/// A recorded forward pass: the input, every node's output, and what the backward pass needs
/// beyond them (max-pooling positions, batch statistics, dropout masks). Made by
/// [`Network::forward_tape`], consumed (by reference) by [`Network::backward`].
///
/// A tape belongs to the network that recorded it and to its parameters at that moment: change
/// the weights in between and the gradients are those of neither.
#[derive(Clone, Debug)]
pub struct Tape {
    mode: Mode,
    input: ArrayD<f32>,
    values: Vec<ArrayD<f32>>,
    saved: Vec<Saved>,
    output: usize,
}

impl Drop for Tape {
    /// Hands the recorded buffers back for reuse by the next pass on this thread.
    fn drop(&mut self) {
        for v in std::mem::take(&mut self.values) {
            pool::recycle_array(v);
        }
        pool::recycle_array(std::mem::take(&mut self.input));
        for saved in std::mem::take(&mut self.saved) {
            match saved {
                Saved::Argmax(a) => pool::recycle(a),
                Saved::DropMask(m) => pool::recycle(m),
                Saved::Nothing | Saved::BatchStats { .. } => {}
            }
        }
    }
}

impl Tape {
    /// The network's output for the recorded batch, `[batch, ...]`.
    pub fn output(&self) -> ArrayViewD<'_, f32> {
        self.values[self.output].view()
    }

    /// The output of the node at `index` (as in [`Network::nodes`]).
    pub fn value(&self, index: usize) -> Option<ArrayViewD<'_, f32>> {
        self.values.get(index).map(|v| v.view())
    }

    /// The recorded input batch.
    pub fn input(&self) -> ArrayViewD<'_, f32> {
        self.input.view()
    }

    /// The mode the pass ran in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Number of samples in the batch.
    pub fn batch_size(&self) -> usize {
        self.input.shape()[0]
    }
}

/// Gradients of a scalar loss with respect to every trainable parameter (named as the
/// parameters: `conv1.weight`, `bn.bias`, ...; BatchNorm's running statistics are buffers and
/// have none) and with respect to the input batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    params: Params,
    input: ArrayD<f32>,
}

impl Gradients {
    /// Gradients of the trainable parameters, in the network's parameter order. Parameters the
    /// output does not depend on get zeros.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Gradient with respect to the input batch, `[batch, ...input_shape]`.
    pub fn input(&self) -> &ArrayD<f32> {
        &self.input
    }

    /// The parameter gradients and the input gradient, by value.
    pub fn into_parts(self) -> (Params, ArrayD<f32>) {
        (self.params, self.input)
    }
}

/// One node's gradients: per parameter role, and per input (`None` where not needed).
type NodeGrads = (Vec<(ParamRole, Vec<f32>)>, Vec<Option<Vec<f32>>>);

impl Network {
    /// Runs a batch `[batch, ...input_shape]` in `mode` and records what [`Network::backward`]
    /// needs. In [`Mode::Train`] BatchNorm uses the batch's statistics and dropout draws its masks
    /// from the seed; the network itself is not changed (see
    /// [`Network::update_running_stats`]).
    ///
    /// ```
    /// use ndarray::{ArrayD, IxDyn};
    /// use shears::graph::{Linear, Mode, Network};
    ///
    /// let net = Network::builder(&[3]).layer("fc", Linear::new(3, 2)).build_init(0)?;
    /// let x = ArrayD::from_elem(IxDyn(&[4, 3]), 1.0f32);
    /// let tape = net.forward_tape(x.view(), Mode::Train { seed: 1 })?;
    /// // The loss sum(y) has gradient one for every output.
    /// let grads = net.backward(&tape, ArrayD::ones(IxDyn(&[4, 2])).view())?;
    /// // d sum(y) / d W[o, i] = sum over the batch of x[i] = 4.
    /// assert!(grads.params().slice("fc.weight").unwrap().iter().all(|&g| g == 4.0));
    /// assert_eq!(grads.params().slice("fc.bias").unwrap(), &[4.0, 4.0]);
    /// assert_eq!(grads.input().shape(), &[4, 3]);
    /// # Ok::<(), shears::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Network::forward`]; also [`Error::Graph`] naming a BatchNorm node that would see a
    /// single value per channel in training (its variance is undefined, as PyTorch refuses too).
    pub fn forward_tape(&self, input: ArrayViewD<'_, f32>, mode: Mode) -> Result<Tape> {
        let pass = Pass { mode, record: true };
        let (values, saved) = self.run(input.view(), pass, true, |_| Ok(()))?;
        let values = values
            .into_iter()
            .zip(self.nodes())
            .map(|(v, node)| v.ok_or_else(|| Error::graph(node.name.as_str(), "value lost")))
            .collect::<Result<_>>()?;
        let input = input.as_standard_layout();
        let copy = pool::copied(input.as_slice().expect("standard layout"));
        let input = ArrayD::from_shape_vec(input.raw_dim(), copy)
            .map_err(|e| Error::graph(INPUT, e.to_string()))?;
        Ok(Tape {
            mode,
            input,
            values,
            saved,
            output: self.output,
        })
    }

    /// Gradients of a scalar loss with respect to every trainable parameter and the input, given
    /// the loss's gradient with respect to the network's output (`grad_output`, shaped as
    /// [`Tape::output`]). Layers differentiate as in the tape's mode: BatchNorm through the batch
    /// statistics in training, through the fixed running statistics at inference.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when `grad_output` is not shaped as the output;
    /// [`Error::InvalidParameter`] when the tape was recorded by a network of another shape.
    pub fn backward(&self, tape: &Tape, grad_output: ArrayViewD<'_, f32>) -> Result<Gradients> {
        let (params, input) = self.backward_impl(tape, grad_output, true)?;
        let input = input.unwrap_or_else(|| ArrayD::zeros(tape.input.raw_dim()));
        Ok(Gradients { params, input })
    }

    /// As [`Network::backward`], for the parameters only: the input gradient, which training
    /// does not need, is not computed.
    ///
    /// # Errors
    ///
    /// As [`Network::backward`].
    pub fn backward_params(&self, tape: &Tape, grad_output: ArrayViewD<'_, f32>) -> Result<Params> {
        Ok(self.backward_impl(tape, grad_output, false)?.0)
    }

    /// Moves every BatchNorm's running statistics towards the batch statistics a
    /// [`Mode::Train`] tape recorded, as PyTorch does in a training forward pass:
    /// `running_mean = (1 - momentum) · running_mean + momentum · mean` and the same for the
    /// variance, with the batch's unbiased variance. An [`Mode::Eval`] tape changes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidParameter`] when the tape was recorded by a network of another shape.
    pub fn update_running_stats(&mut self, tape: &Tape) -> Result<()> {
        self.check_tape(tape)?;
        for (i, saved) in tape.saved.iter().enumerate() {
            let Saved::BatchStats { stats, count } = saved else {
                continue;
            };
            let momentum = match &self.spec.nodes[i].layer {
                Layer::BatchNorm1d(b) | Layer::BatchNorm2d(b) => b.momentum,
                _ => return Err(tape_mismatch()),
            };
            let unbias = *count as f64 / (*count as f64 - 1.0);
            let name = &self.spec.nodes[i].name;
            for (role, pick) in [
                (ParamRole::RunningMean, 0usize),
                (ParamRole::RunningVar, 1usize),
            ] {
                let key = format!("{name}.{}", role.suffix());
                let mut running = self
                    .params
                    .get_mut(&key)
                    .ok_or_else(|| Error::graph(name.as_str(), format!("missing `{key}`")))?;
                for (r, &(mean, var)) in running.iter_mut().zip(stats) {
                    let batch = if pick == 0 { mean } else { var * unbias };
                    *r = ((1.0 - momentum) * f64::from(*r) + momentum * batch) as f32;
                }
            }
        }
        Ok(())
    }

    fn check_tape(&self, tape: &Tape) -> Result<()> {
        let batch = tape.batch_size();
        let fits = tape.values.len() == self.shapes.len()
            && tape.saved.len() == self.shapes.len()
            && tape.output == self.output
            && &tape.input.shape()[1..] == self.input_shape()
            && tape
                .values
                .iter()
                .zip(&self.shapes)
                .all(|(v, s)| v.shape()[0] == batch && &v.shape()[1..] == s.as_slice());
        if fits { Ok(()) } else { Err(tape_mismatch()) }
    }

    fn backward_impl(
        &self,
        tape: &Tape,
        grad_output: ArrayViewD<'_, f32>,
        need_input: bool,
    ) -> Result<(Params, Option<ArrayD<f32>>)> {
        self.check_tape(tape)?;
        Error::check_shape(
            "grad_output",
            tape.values[self.output].shape(),
            grad_output.shape(),
        )?;
        let n = self.spec.nodes.len();
        // Whether a gradient with respect to node i's output is of any use: it is when the node
        // or anything it reads, directly or not, has trainable parameters (or is the input and
        // the input gradient is wanted).
        let mut needs = vec![false; n];
        for i in 0..n {
            needs[i] = self.has_trainable(i)
                || self.sources[i].iter().any(|s| match *s {
                    Source::Input => need_input,
                    Source::Node(j) => needs[j],
                });
        }
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; n];
        grads[self.output] = Some(grad_output.iter().copied().collect());
        let mut input_grad: Option<Vec<f32>> = None;
        let mut param_grads: Vec<(String, Vec<f32>)> = Vec::new();
        for i in (0..=self.output).rev() {
            let Some(dy) = grads[i].take() else {
                continue;
            };
            if !needs[i] {
                continue;
            }
            let want: Vec<bool> = self.sources[i]
                .iter()
                .map(|s| match *s {
                    Source::Input => need_input,
                    Source::Node(j) => needs[j],
                })
                .collect();
            let (params, inputs) = self.node_backward(i, tape, &dy, &want)?;
            pool::recycle(dy);
            let name = &self.spec.nodes[i].name;
            for (role, g) in params {
                param_grads.push((format!("{name}.{}", role.suffix()), g));
            }
            for (source, dx) in self.sources[i].iter().zip(inputs) {
                let Some(dx) = dx else { continue };
                let slot = match *source {
                    Source::Input => &mut input_grad,
                    Source::Node(j) => &mut grads[j],
                };
                match slot {
                    Some(acc) => {
                        acc.iter_mut().zip(&dx).for_each(|(a, d)| *a += d);
                        pool::recycle(dx);
                    }
                    None => *slot = Some(dx),
                }
            }
        }
        let mut out = Params::new();
        for names in &self.param_names {
            for (_, name) in names.iter().filter(|(r, _)| r.is_trainable()) {
                let shape = self.params.get(name).expect("validated").raw_dim();
                let g = match param_grads.iter().position(|(p, _)| p == name) {
                    Some(k) => ArrayD::from_shape_vec(shape, param_grads.swap_remove(k).1)
                        .map_err(|e| Error::graph(name.as_str(), e.to_string()))?,
                    None => ArrayD::zeros(shape),
                };
                out.insert(name.clone(), g);
            }
        }
        let input = match input_grad {
            Some(g) if need_input => Some(
                ArrayD::from_shape_vec(tape.input.raw_dim(), g)
                    .map_err(|e| Error::graph(INPUT, e.to_string()))?,
            ),
            _ => None,
        };
        Ok((out, input))
    }

    /// Whether node `i` has trainable parameters.
    fn has_trainable(&self, i: usize) -> bool {
        self.param_names[i].iter().any(|(r, _)| r.is_trainable())
    }

    /// Gradients of node `i` from its output gradient `dy`: for its parameters, and for each
    /// input where `want` says so.
    fn node_backward(&self, i: usize, tape: &Tape, dy: &[f32], want: &[bool]) -> Result<NodeGrads> {
        let node = &self.spec.nodes[i];
        let fail = |reason: &str| Error::graph(node.name.as_str(), reason);
        let input = |k: usize| -> &ArrayD<f32> {
            match self.sources[i][k] {
                Source::Input => &tape.input,
                Source::Node(j) => &tape.values[j],
            }
        };
        let x0 = input(0);
        let x = x0
            .as_slice()
            .ok_or_else(|| fail("input is not contiguous"))?;
        let y = tape.values[i]
            .as_slice()
            .ok_or_else(|| fail("output is not contiguous"))?;
        let in_shape = &x0.shape()[1..];
        let need = want[0];
        let one = |dx: Option<Vec<f32>>| -> NodeGrads { (Vec::new(), vec![dx]) };
        let weighted = |g: grad::WeightGrads| -> NodeGrads {
            let mut params = vec![(ParamRole::Weight, g.weight)];
            params.extend(g.bias.map(|b| (ParamRole::Bias, b)));
            (params, vec![g.input])
        };
        let saved = &tape.saved[i];
        Ok(match &node.layer {
            Layer::Linear(l) => weighted(grad::linear(
                x,
                l.in_features,
                self.param(i, ParamRole::Weight)?,
                l.out_features,
                dy,
                l.bias,
                need,
            )),
            layer @ (Layer::Conv1d(_) | Layer::Conv2d(_)) => {
                let g = layer.conv_geom().ok_or_else(|| fail("not a convolution"))?;
                weighted(grad::conv(
                    &g,
                    x,
                    hw(in_shape),
                    hw(&self.shapes[i]),
                    self.param(i, ParamRole::Weight)?,
                    dy,
                    need,
                ))
            }
            Layer::BatchNorm1d(b) | Layer::BatchNorm2d(b) => {
                let spatial = in_shape[1..].iter().product();
                let gamma = self.param(i, ParamRole::Weight)?;
                let (stats, batch_stats) = match saved {
                    Saved::BatchStats { stats, .. } => (
                        stats
                            .iter()
                            .map(|&(m, v)| (m, 1.0 / (v + b.eps).sqrt()))
                            .collect(),
                        true,
                    ),
                    _ => (
                        self.param(i, ParamRole::RunningMean)?
                            .iter()
                            .zip(self.param(i, ParamRole::RunningVar)?)
                            .map(|(&m, &v)| (f64::from(m), 1.0 / (f64::from(v) + b.eps).sqrt()))
                            .collect::<Vec<_>>(),
                        false,
                    ),
                };
                let (dg, db, dx) =
                    grad::batch_norm(x, spatial, gamma, &stats, batch_stats, dy, need);
                (
                    vec![(ParamRole::Weight, dg), (ParamRole::Bias, db)],
                    vec![dx],
                )
            }
            Layer::LayerNorm(l) => {
                let weight = if l.elementwise_affine {
                    Some(self.param(i, ParamRole::Weight)?)
                } else {
                    None
                };
                let d = l.normalized_shape.iter().product();
                let (params, dx) = grad::layer_norm(x, d, l.eps, weight, dy, need);
                let params = params
                    .map(|(w, b)| vec![(ParamRole::Weight, w), (ParamRole::Bias, b)])
                    .unwrap_or_default();
                (params, vec![dx])
            }
            Layer::Relu => one(Some(grad::zip_map(
                y,
                dy,
                |y, d| if y > 0.0 { d } else { 0.0 },
            ))),
            Layer::Gelu => one(Some(grad::zip_map(x, dy, |x, d| {
                d * grad::gelu_derivative(x)
            }))),
            Layer::Sigmoid => one(Some(grad::zip_map(y, dy, |y, d| d * y * (1.0 - y)))),
            Layer::Tanh => one(Some(grad::zip_map(y, dy, |y, d| d * (1.0 - y * y)))),
            Layer::Softmax { dim } => {
                let axis = softmax_axis(*dim, in_shape.len()).map_err(|r| fail(&r))?;
                let full = x0.shape();
                one(Some(grad::softmax(
                    y,
                    dy,
                    full[axis],
                    full[axis + 1..].iter().product(),
                )))
            }
            layer @ (Layer::MaxPool1d(_)
            | Layer::MaxPool2d(_)
            | Layer::AvgPool1d(_)
            | Layer::AvgPool2d(_)) => {
                let g = layer
                    .pool_geom()
                    .ok_or_else(|| fail("not a pooling layer"))?;
                let (hw, out_hw) = (hw(in_shape), hw(&self.shapes[i]));
                let dx = match (g.avg, saved) {
                    (Some(include), _) => grad::avg_pool(&g, include, dy, hw, out_hw),
                    (None, Saved::Argmax(argmax)) => grad::max_pool(argmax, dy, hw, out_hw),
                    (None, _) => return Err(fail("the tape lacks the pooling positions")),
                };
                one(Some(dx))
            }
            Layer::GlobalAvgPool => one(Some(grad::mean_runs(dy, in_shape[1..].iter().product()))),
            Layer::Dropout { .. } => match saved {
                Saved::DropMask(mask) => one(Some(grad::zip_map(mask, dy, |m, d| m * d))),
                _ => one(Some(pool::copied(dy))),
            },
            Layer::Flatten | Layer::Identity => one(Some(pool::copied(dy))),
            Layer::Add => (
                Vec::new(),
                want.iter().map(|&w| w.then(|| pool::copied(dy))).collect(),
            ),
        })
        .map(|(params, mut dxs)| {
            // Kernels that cannot skip the input gradient computed it anyway; drop it unused.
            for (dx, &w) in dxs.iter_mut().zip(want) {
                if !w {
                    *dx = None;
                }
            }
            (params, dxs)
        })
    }
}

fn tape_mismatch() -> Error {
    Error::invalid("tape", "it was recorded by a network of another shape")
}
