//! Dependency groups: which slices of which parameters go when one channel goes.

use crate::error::{Error, Result};
use crate::graph::{Layer, Network, ParamRole, Source};

/// What a [`ParamSlice`] is to the channel it follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SliceRole {
    /// The output rows (weight axis 0) and bias of the Linear or Conv layer that produces the
    /// channel, or of a depthwise convolution that carries it through.
    Producer,
    /// A normalisation layer's per-channel vectors (BatchNorm's four).
    Norm,
    /// The input columns (weight axis 1) of a layer that reads the channel.
    Consumer,
}

/// One parameter slice of a group: along `axis` of `tensor`, index `i` belongs to unit
/// `(i / per) % units` of the group (`units` being [`Group::channels`]).
///
/// `per` is 1 except where one channel feeds several inputs: after a `Flatten` of `[C, L]`, one
/// channel is `L` consecutive inputs of the next Linear; a depthwise convolution with channel
/// multiplier `m` turns one channel into `m`. The pattern repeats `len / (units · per)` times
/// when a grouped convolution ties the corresponding channels of its groups into one unit;
/// otherwise `len = units · per` and unit `u` owns the indices `u · per .. (u + 1) · per`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ParamSlice {
    /// The parameter's name (`conv2.weight`).
    pub tensor: String,
    /// The node the parameter belongs to.
    pub node: String,
    /// Which parameter of the node it is.
    pub param: ParamRole,
    /// What the slice is to the channel.
    pub role: SliceRole,
    /// The tensor axis the units run along.
    pub axis: usize,
    /// Consecutive indices along `axis` per unit.
    pub per: usize,
    /// The tensor's length along `axis`: a multiple of `units · per`.
    pub len: usize,
}

impl ParamSlice {
    /// The unit that index `i` along [`axis`](ParamSlice::axis) belongs to, in a group of
    /// `units` units.
    pub fn unit_of(&self, i: usize, units: usize) -> usize {
        unit_index(i, self.per, units)
    }

    /// How many times each unit's pattern repeats along the axis (the number of convolution
    /// groups a grouped convolution ties together, 1 otherwise).
    pub fn repeats(&self, units: usize) -> usize {
        self.len / (units * self.per)
    }
}

/// Channels that can only be removed together, with every parameter slice that follows them.
///
/// A group starts at a Linear or Conv layer's output channels (its *producer*) and follows them
/// through element-wise layers, pooling, BatchNorm, `Flatten` and depthwise convolutions to the
/// layers that read them. A residual `Add` merges the groups of its inputs: channel `c` of every
/// branch is one unit, removed from all producers at once (DepGraph, Fang et al. 2023).
///
/// A grouped convolution (`1 < groups < in_channels`) needs every group to keep the same width,
/// so the corresponding channels of its groups form one unit: with `groups = g` over `C`
/// channels, unit `u` is the channels `u, u + C/g, u + 2C/g, ...`, removed from every group at
/// once (Torch-Pruning 1.6's MetaPruner does the same: it averages importance over the groups
/// and repeats the pruning indices in each).
/// Such a group has fewer units than its producer has channels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    name: String,
    channels: usize,
    producers: Vec<String>,
    slices: Vec<ParamSlice>,
    activations: Vec<(String, usize)>,
    blocked: Option<String>,
}

impl Group {
    /// The group's name: its first producer in node order.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of units (channels or neurons) in the group: what a [`ChannelRemoval`] indexes
    /// and what channel targets count. A unit is one channel of every producer, or, where a
    /// grouped convolution ties channels, one channel of every convolution group (see
    /// [`ParamSlice::unit_of`]).
    ///
    /// [`ChannelRemoval`]: super::ChannelRemoval
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The Linear and Conv layers whose outputs are the group's channels (several when a
    /// residual `Add` ties them).
    pub fn producers(&self) -> &[String] {
        &self.producers
    }

    /// Every parameter slice that follows a unit of the group.
    pub fn slices(&self) -> &[ParamSlice] {
        &self.slices
    }

    /// The activation nodes (ReLU, GELU, Sigmoid, Tanh) whose output channels are the group's
    /// units, each with its `per` (channel `c` of the node is unit `(c / per) % units`): where
    /// calibration's APoZ and mean activation of the group are found.
    pub fn activations(&self) -> &[(String, usize)] {
        &self.activations
    }

    /// Whether channels of this group may be removed.
    pub fn is_prunable(&self) -> bool {
        self.blocked.is_none()
    }

    /// Why the group cannot be pruned, if it cannot: it reaches the network output, it is
    /// protected, or a layer reads it in a way removal would change (a LayerNorm or Softmax
    /// over the channel axis, a grouped convolution whose groups split a unit, ...).
    pub fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }
}

/// Where a node's channel axis comes from: unit `i / per` of `origin`, along `axis` of the
/// per-sample value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Space {
    origin: usize,
    per: usize,
    axis: usize,
}

/// A producer's channels before residual merges (a union-find node).
#[derive(Debug)]
struct Origin {
    name: String,
    /// Units: the producer's channels, fewer once grouped convolutions tie some (kept up to
    /// date on the union-find root only).
    channels: usize,
    parent: usize,
    slices: Vec<ParamSlice>,
    activations: Vec<(String, usize)>,
    blocked: Option<String>,
}

struct Analysis<'n> {
    net: &'n Network,
    origins: Vec<Origin>,
}

impl Analysis<'_> {
    fn find(&mut self, mut o: usize) -> usize {
        while self.origins[o].parent != o {
            let up = self.origins[o].parent;
            self.origins[o].parent = self.origins[up].parent;
            o = up;
        }
        o
    }

    fn union(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        let (root, child) = (a.min(b), a.max(b));
        self.origins[child].parent = root;
        self.tie(root, self.origins[child].channels);
    }

    /// Ties channel `c` of `s`'s origin to channel `c + period` (and so on) in one unit, as a
    /// grouped convolution whose groups read `period` of those channels each needs.
    fn fold(&mut self, s: Space, period: usize) {
        let root = self.find(s.origin);
        self.tie(root, period);
    }

    /// Makes the units of union-find root `root` repeat with `period` as well: channels
    /// `c` and `c + units` are one unit, so the units must divide both.
    fn tie(&mut self, root: usize, period: usize) {
        self.origins[root].channels = gcd(self.origins[root].channels, period);
    }

    fn block(&mut self, space: Option<Space>, reason: impl FnOnce() -> String) {
        if let Some(s) = space {
            let o = &mut self.origins[s.origin];
            if o.blocked.is_none() {
                o.blocked = Some(reason());
            }
        }
    }

    fn slice(&mut self, s: Space, node: usize, param: ParamRole, role: SliceRole, axis: usize) {
        let name = &self.net.nodes()[node].name;
        let tensor = format!("{name}.{}", param.suffix());
        let len = self
            .net
            .params()
            .get(&tensor)
            .map_or(0, |t| t.shape()[axis]);
        self.origins[s.origin].slices.push(ParamSlice {
            tensor,
            node: name.clone(),
            param,
            role,
            axis,
            per: s.per,
            len,
        });
    }

    /// A new group for the output channels of the Linear or Conv node `node`.
    fn produce(&mut self, node: usize, channels: usize, bias: bool, axis: usize) -> Space {
        let space = Space {
            origin: self.origins.len(),
            per: 1,
            axis,
        };
        self.origins.push(Origin {
            name: self.net.nodes()[node].name.clone(),
            channels,
            parent: space.origin,
            slices: Vec::new(),
            activations: Vec::new(),
            blocked: None,
        });
        self.producer_slices(space, node, bias);
        space
    }

    fn producer_slices(&mut self, s: Space, node: usize, bias: bool) {
        self.slice(s, node, ParamRole::Weight, SliceRole::Producer, 0);
        if bias {
            self.slice(s, node, ParamRole::Bias, SliceRole::Producer, 0);
        }
    }

    /// The channel space of node `i`'s output, recording its slices.
    fn visit(&mut self, i: usize, inputs: &[Option<Space>], shapes: &[&[usize]]) -> Option<Space> {
        let net = self.net;
        let node = &net.nodes()[i];
        let name = node.name.as_str();
        let x = inputs[0];
        let rank = shapes[0].len();
        let on_channels = x.filter(|s| s.axis == 0);
        let misplaced = |what: &str| {
            let what = what.to_string();
            let name = name.to_string();
            move || format!("`{name}` ({what}) does not act on the channel axis")
        };
        match &node.layer {
            Layer::Linear(l) => {
                match x {
                    Some(s) if s.axis == rank - 1 => {
                        self.slice(s, i, ParamRole::Weight, SliceRole::Consumer, 1);
                    }
                    _ => self.block(x, || {
                        format!("`{name}` (linear) reads the channels along another axis")
                    }),
                }
                Some(self.produce(i, l.out_features, l.bias, rank - 1))
            }
            layer @ (Layer::Conv1d(_) | Layer::Conv2d(_)) => {
                let g = layer.conv_geom().expect("a convolution");
                if x.is_some() && on_channels.is_none() {
                    self.block(x, misplaced("convolution"));
                }
                if g.groups == 1 {
                    if let Some(s) = on_channels {
                        self.slice(s, i, ParamRole::Weight, SliceRole::Consumer, 1);
                    }
                    Some(self.produce(i, g.cout, g.bias, 0))
                } else if g.groups == g.cin {
                    // Depthwise: output channel o reads input channel o / m alone, so it is
                    // removed with it; the convolution carries the channel through.
                    let s = on_channels?;
                    let out = Space {
                        per: s.per * (g.cout / g.cin),
                        ..s
                    };
                    self.producer_slices(out, i, g.bias);
                    Some(out)
                } else {
                    // Grouped: each group reads `width` consecutive input channels and writes
                    // `cout / groups` outputs. Channel `c` of every group is one unit on both
                    // sides, so that all groups lose the same channels.
                    let width = g.cin / g.groups;
                    if let Some(s) = on_channels {
                        if width.is_multiple_of(s.per) {
                            self.fold(s, width / s.per);
                            self.slice(s, i, ParamRole::Weight, SliceRole::Consumer, 1);
                        } else {
                            self.block(x, || {
                                format!(
                                    "`{name}` is a grouped convolution whose groups of {width} \
                                     channels split the {} channels that one unit feeds",
                                    s.per
                                )
                            });
                        }
                    }
                    let out = self.produce(i, g.cout, g.bias, 0);
                    self.fold(out, g.cout / g.groups);
                    Some(out)
                }
            }
            Layer::BatchNorm1d(_) | Layer::BatchNorm2d(_) => {
                let Some(s) = on_channels else {
                    self.block(x, misplaced("batch norm"));
                    return None;
                };
                for p in [
                    ParamRole::Weight,
                    ParamRole::Bias,
                    ParamRole::RunningMean,
                    ParamRole::RunningVar,
                ] {
                    self.slice(s, i, p, SliceRole::Norm, 0);
                }
                Some(s)
            }
            Layer::LayerNorm(l) => {
                if let Some(s) = x
                    && s.axis + l.normalized_shape.len() >= rank
                {
                    self.block(x, || {
                        format!("`{name}` (layer norm) normalises over the channel axis")
                    });
                }
                x
            }
            Layer::Softmax { .. } => {
                self.block(x, || {
                    format!("`{name}` (softmax) may normalise over the channels")
                });
                x
            }
            Layer::Relu | Layer::Gelu | Layer::Sigmoid | Layer::Tanh => {
                if let Some(s) = on_channels {
                    self.origins[s.origin]
                        .activations
                        .push((name.to_string(), s.per));
                }
                x
            }
            Layer::Dropout { .. } | Layer::Identity => x,
            Layer::MaxPool1d(_)
            | Layer::MaxPool2d(_)
            | Layer::AvgPool1d(_)
            | Layer::AvgPool2d(_)
            | Layer::GlobalAvgPool => {
                if on_channels.is_none() {
                    self.block(x, misplaced("pooling"));
                }
                on_channels
            }
            Layer::Flatten => {
                if on_channels.is_none() {
                    self.block(x, misplaced("flatten"));
                }
                let inner: usize = shapes[0][1..].iter().product();
                on_channels.map(|s| Space {
                    per: s.per * inner,
                    ..s
                })
            }
            Layer::Add => {
                let first = inputs.iter().flatten().next().copied();
                let aligned = inputs.iter().all(|s| {
                    s.is_some_and(|s| first.is_some_and(|f| (s.per, s.axis) == (f.per, f.axis)))
                });
                if !aligned {
                    for &s in inputs {
                        self.block(s, || {
                            format!(
                                "`{name}` (add) sums it with channels that cannot be removed \
                                 with it"
                            )
                        });
                    }
                    return None;
                }
                let f = first.expect("aligned inputs");
                for s in inputs.iter().flatten() {
                    self.union(f.origin, s.origin);
                }
                Some(f)
            }
        }
    }
}

/// The dependency groups of a network: every set of channels that must be removed together,
/// and the parameter slices that follow them.
///
/// Rules (the same as Torch-Pruning's DepGraph for these layers):
///
/// - a Linear or Conv layer (one group) *produces* a group: its weight rows and bias;
/// - BatchNorm after it follows: `weight`, `bias`, `running_mean`, `running_var`;
/// - ReLU, GELU, Sigmoid, Tanh, Dropout, Identity, pooling and global average pooling pass the
///   channels through; `Flatten` of `[C, ...]` turns channel `c` into the `per = L` (or `H · W`)
///   consecutive inputs `c · per .. (c + 1) · per` of the next Linear;
/// - the next Linear or Conv *consumes* it: weight columns (axis 1);
/// - a depthwise convolution (`groups == in_channels`, multiplier `m`) carries channel `c` to its
///   outputs `c · m .. (c + 1) · m`: its weight rows and bias follow, and its `groups` shrink;
/// - a grouped convolution (`1 < groups < in_channels`) consumes its input channels like any
///   convolution and produces a group of its own, but on both sides it ties the corresponding
///   channels of its groups into one unit, so that every group keeps the same width;
/// - an `Add` ties the channels of all its inputs into one group;
/// - a group cannot be pruned (see [`Group::blocked`]) when it reaches the network output (the
///   classifier's classes stay), when it is protected, when a grouped convolution's groups would
///   split the inputs one unit feeds (after a `Flatten` or a depthwise multiplier), when
///   LayerNorm or Softmax act over its axis, or when a layer reads it along another axis than
///   its channel axis.
///
/// ```
/// use shears::graph::{Conv1d, Network};
/// use shears::structure::DependencyGroups;
///
/// let net = Network::builder(&[2, 8])
///     .conv1d("conv1", Conv1d::new(2, 4, 3).padding(1))
///     .batch_norm1d("bn1", 4)
///     .relu("relu1")
///     .conv1d("conv2", Conv1d::new(4, 4, 3).padding(1))
///     .flatten("flat")
///     .linear("fc", 32, 3)
///     .build_init(0)?;
/// let groups = DependencyGroups::of(&net)?;
/// let g = groups.get("conv1").unwrap();
/// let tensors: Vec<_> = g.slices().iter().map(|s| (s.tensor.as_str(), s.axis, s.per)).collect();
/// assert_eq!(tensors, [
///     ("conv1.weight", 0, 1), ("conv1.bias", 0, 1),
///     ("bn1.weight", 0, 1), ("bn1.bias", 0, 1), ("bn1.running_mean", 0, 1), ("bn1.running_var", 0, 1),
///     ("conv2.weight", 1, 1),
/// ]);
/// // conv2's channels reach fc through Flatten: one channel is 8 inputs of fc.
/// assert!(groups.get("conv2").unwrap().slices().iter().any(|s| s.tensor == "fc.weight" && s.per == 8));
/// // fc's outputs are the network's output.
/// assert!(!groups.get("fc").unwrap().is_prunable());
/// # Ok::<(), shears::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DependencyGroups {
    groups: Vec<Group>,
}

impl DependencyGroups {
    /// The groups of `net`, with only the output protected.
    ///
    /// # Errors
    /// None today; kept fallible for layers a future analysis may reject.
    pub fn of(net: &Network) -> Result<Self> {
        Self::with_protected(net, &[])
    }

    /// The groups of `net`, with the output channels of the nodes named in `protected` kept
    /// whole as well as the network output.
    ///
    /// # Errors
    /// [`Error::Graph`] when a protected name is not a node.
    pub fn with_protected(net: &Network, protected: &[&str]) -> Result<Self> {
        let mut a = Analysis {
            net,
            origins: Vec::new(),
        };
        let mut spaces: Vec<Option<Space>> = Vec::with_capacity(net.nodes().len());
        for i in 0..net.nodes().len() {
            let sources = net.sources(i).expect("a node index");
            let inputs: Vec<Option<Space>> = sources
                .iter()
                .map(|s| match *s {
                    Source::Input => None,
                    Source::Node(j) => spaces[j],
                })
                .collect();
            let shapes: Vec<&[usize]> = sources
                .iter()
                .map(|s| match *s {
                    Source::Input => net.input_shape(),
                    Source::Node(j) => net.output_shapes()[j].as_slice(),
                })
                .collect();
            let space = a.visit(i, &inputs, &shapes);
            spaces.push(space);
        }
        let out = &net.nodes()[net.output_index()].name;
        a.block(spaces[net.output_index()], || {
            format!("its channels are the network output (`{out}`)")
        });
        for &name in protected {
            let i = net
                .node_index(name)
                .ok_or_else(|| Error::graph(name, "cannot protect an unknown node"))?;
            a.block(spaces[i], || format!("`{name}` is protected"));
        }
        Ok(Self::gather(a))
    }

    fn gather(mut a: Analysis<'_>) -> Self {
        let mut groups: Vec<Group> = Vec::new();
        let mut index = vec![usize::MAX; a.origins.len()];
        for o in 0..a.origins.len() {
            let root = a.find(o);
            if index[root] == usize::MAX {
                index[root] = groups.len();
                groups.push(Group {
                    name: a.origins[root].name.clone(),
                    channels: a.origins[root].channels,
                    producers: Vec::new(),
                    slices: Vec::new(),
                    activations: Vec::new(),
                    blocked: None,
                });
            }
            let origin = &mut a.origins[o];
            let g = &mut groups[index[root]];
            g.producers.push(origin.name.clone());
            g.slices.append(&mut origin.slices);
            g.activations.append(&mut origin.activations);
            if g.blocked.is_none() {
                g.blocked = origin.blocked.take();
            }
        }
        DependencyGroups { groups }
    }

    /// All groups, in the order of their first producer.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The group called `name` (its first producer's name).
    pub fn get(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The groups that may be pruned.
    pub fn prunable(&self) -> impl Iterator<Item = &Group> + '_ {
        self.groups.iter().filter(|g| g.is_prunable())
    }
}

/// Greatest common divisor (Euclid).
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The unit of index `i` of an axis where each unit holds `per` consecutive indices and the
/// pattern of `units` units repeats (see [`ParamSlice`]).
pub(crate) fn unit_index(i: usize, per: usize, units: usize) -> usize {
    (i / per) % units
}
