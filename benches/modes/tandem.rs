//! Tandem's side of the workload benchmarks: the same models and steps in eager mode
//! (autograd tensors, `nn` modules, `optim::Adam`) and in graph mode (a graph built once, the
//! graph `Adam`, one `Callable` per workload so that no graph work happens in the loop).
//!
//! Benchmarks may panic on failure, so these helpers `expect` instead of returning errors.
//! Written against the member crates (not the `tandem` facade) so that the benchmarks of
//! `tandem-graph` can include this file too.

use tandem_eager::nn::functional as F;
use tandem_eager::nn::{Conv2d, Linear, MaxPool2d, Module};
use tandem_eager::optim::{Adam as EagerAdam, AdamConfig, Optimizer as _};
use tandem_eager::{manual_seed, no_grad, Result, Tensor as ETensor};
use tandem_graph::{Adam, Callable, Graph, Initializer, Optimizer as _, Output, Session};
use tandem_ir::{CrossEntropyOptions, EmitExt, Functional};
use tandem_tensor::{Conv2dParams, DType, Pool2dParams, Tensor};

/// Images `[shape]` and int64 labels as Tandem tensors.
pub fn batch(xs: &[f32], ys: &[u32], shape: &[usize]) -> (Tensor, Tensor) {
    let x = Tensor::from_slice(xs, shape).expect("images");
    let labels: Vec<i64> = ys.iter().map(|&y| i64::from(y)).collect();
    let n = labels.len();
    let y = Tensor::from_vec(labels, &[n]).expect("labels");
    (x, y)
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &ETensor) -> Result<ETensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    pool: MaxPool2d,
}

impl Module for LeNet {
    fn forward(&self, x: &ETensor) -> Result<ETensor> {
        let h = self.pool.forward(&self.conv1.forward(x)?.relu()?)?;
        let h = self.pool.forward(&self.conv2.forward(&h)?.relu()?)?;
        let h = self.fc1.forward(&h.flatten(1, -1)?)?.relu()?;
        self.fc3.forward(&self.fc2.forward(&h)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("conv1".into(), &self.conv1),
            ("conv2".into(), &self.conv2),
            ("fc1".into(), &self.fc1),
            ("fc2".into(), &self.fc2),
            ("fc3".into(), &self.fc3),
        ]
    }
}

/// W1's MLP (784 -> Linear 128 -> ReLU -> Linear 10) with PyTorch's default initialization
/// from the global seed.
pub fn mlp_model() -> Box<dyn Module> {
    Box::new(Mlp {
        fc1: Linear::new(784, 128, true).expect("fc1"),
        fc2: Linear::new(128, 10, true).expect("fc2"),
    })
}

/// W3's LeNet-5 (input `[N, 1, 28, 28]`).
pub fn lenet_model() -> Box<dyn Module> {
    Box::new(LeNet {
        conv1: Conv2d::new(1, 6, 5).expect("conv1").padding(2),
        conv2: Conv2d::new(6, 16, 5).expect("conv2"),
        fc1: Linear::new(400, 120, true).expect("fc1"),
        fc2: Linear::new(120, 84, true).expect("fc2"),
        fc3: Linear::new(84, 10, true).expect("fc3"),
        pool: MaxPool2d::new(2),
    })
}

/// An eager model with its Adam (lr 1e-3).
pub struct EagerStep {
    model: Box<dyn Module>,
    opt: EagerAdam,
}

impl EagerStep {
    fn with(model: Box<dyn Module>) -> EagerStep {
        let opt = EagerAdam::new(model.parameters(), AdamConfig::default());
        EagerStep { model, opt }
    }

    /// W1's MLP: 784 -> Linear 128 -> ReLU -> Linear 10.
    pub fn mlp() -> EagerStep {
        manual_seed(0);
        EagerStep::with(mlp_model())
    }

    /// W3's LeNet-5.
    pub fn lenet() -> EagerStep {
        manual_seed(0);
        EagerStep::with(lenet_model())
    }

    /// One training step: forward, mean cross-entropy, backward, Adam update.
    pub fn step(&mut self, x: &Tensor, y: &Tensor) {
        let (x, y) = (
            ETensor::from_value(x.clone()),
            ETensor::from_value(y.clone()),
        );
        self.opt.zero_grad();
        let logits = self.model.forward(&x).expect("eager forward");
        let loss = F::cross_entropy(&logits, &y).expect("eager loss");
        loss.backward().expect("eager backward");
        self.opt.step().expect("eager Adam");
    }

    /// The forward pass without autograd (inference).
    pub fn infer(&self, x: &Tensor) -> Tensor {
        let _g = no_grad();
        self.model
            .forward(&ETensor::from_value(x.clone()))
            .expect("eager forward")
            .value()
    }
}

/// PyTorch's default initialization of a weight or bias: uniform on
/// `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`.
fn param(g: &Graph, name: &str, shape: &[usize], fan_in: usize) -> Output {
    let b = 1.0 / (fan_in as f64).sqrt();
    let init = Initializer::Uniform {
        low: -b,
        high: b,
        seed: None,
    };
    g.variable_with(name, shape, DType::F32, init, true)
        .expect("graph variable")
}

fn linear(g: &Graph, name: &str, x: &Output, inp: usize, out: usize) -> Output {
    let _s = g.scope(name);
    let w = param(g, "weight", &[out, inp], inp);
    let b = param(g, "bias", &[out], inp);
    g.linear(x, &w, Some(&b)).expect("graph linear")
}

fn conv(g: &Graph, name: &str, x: &Output, cin: usize, cout: usize, pad: usize) -> Output {
    let _s = g.scope(name);
    let fan_in = cin * 25;
    let w = param(g, "weight", &[cout, cin, 5, 5], fan_in);
    let b = param(g, "bias", &[cout], fan_in);
    let p = Conv2dParams {
        padding: [pad, pad],
        ..Conv2dParams::default()
    };
    g.conv2d(x, &w, Some(&b), p).expect("graph conv2d")
}

/// A graph-mode model: the training step and the inference as callables.
pub struct GraphStep {
    train: Callable,
    infer: Callable,
}

impl GraphStep {
    fn build(image: &[Option<usize>], net: impl Fn(&Graph, &Output) -> Output) -> GraphStep {
        let g = Graph::new();
        g.set_seed(0).expect("seed");
        let x = g.placeholder("x", DType::F32, image).expect("x");
        let y = g.placeholder("y", DType::I64, &[None]).expect("y");
        let logits = net(&g, &x);
        let loss = g
            .cross_entropy(&logits, &y, CrossEntropyOptions::default())
            .expect("graph loss");
        let train_op = Adam::new(1e-3).minimize(&loss).expect("graph Adam");
        let s = Session::new(&g).expect("session");
        GraphStep {
            train: s.callable(&[&train_op], &[&x, &y]).expect("train callable"),
            infer: s.callable(&[&logits], &[&x]).expect("infer callable"),
        }
    }

    /// W1's MLP.
    pub fn mlp() -> GraphStep {
        GraphStep::build(&[None, Some(784)], |g, x| {
            let h = g.relu(&linear(g, "fc1", x, 784, 128)).expect("relu");
            linear(g, "fc2", &h, 128, 10)
        })
    }

    /// W3's LeNet-5.
    pub fn lenet() -> GraphStep {
        GraphStep::build(&[None, Some(1), Some(28), Some(28)], |g, x| {
            let pool = Pool2dParams::square(2, 2, 0);
            let relu_pool =
                |h: &Output| g.max_pool2d(&g.relu(h).expect("relu"), pool).expect("pool");
            let h = relu_pool(&conv(g, "conv1", x, 1, 6, 2));
            let h = relu_pool(&conv(g, "conv2", &h, 6, 16, 0));
            let h = g.flatten(&h, 1, -1).expect("flatten");
            let h = g.relu(&linear(g, "fc1", &h, 400, 120)).expect("relu");
            let h = g.relu(&linear(g, "fc2", &h, 120, 84)).expect("relu");
            linear(g, "fc3", &h, 84, 10)
        })
    }

    /// One training step (the `train_op` fetch runs forward, backward and Adam).
    pub fn step(&self, x: &Tensor, y: &Tensor) {
        self.train.run(&[x.clone(), y.clone()]).expect("graph step");
    }

    /// Where the time of `runs` training steps goes, step by step (used by
    /// `examples/profile_step.rs`, not by the benchmarks).
    #[allow(dead_code)]
    pub fn profile(&self, x: &Tensor, y: &Tensor, runs: usize) -> tandem_graph::Profile {
        self.train
            .profile(&[x.clone(), y.clone()], runs)
            .expect("graph profile")
    }

    /// The compiled training step, one line per plan step (used by `examples/profile_step.rs`).
    #[allow(dead_code)]
    pub fn explain(&self) -> String {
        self.train.plan().explain()
    }

    /// Where the time of `runs` forward passes (inference) on `x` goes (used by
    /// `examples/profile_step.rs`, not by the benchmarks).
    #[allow(dead_code)]
    pub fn profile_infer(&self, x: &Tensor, runs: usize) -> tandem_graph::Profile {
        self.infer
            .profile(std::slice::from_ref(x), runs)
            .expect("graph profile")
    }

    /// The logits of `x`.
    pub fn infer(&self, x: &Tensor) -> Tensor {
        let mut out = self
            .infer
            .run(std::slice::from_ref(x))
            .expect("graph infer");
        out.pop().expect("one fetch")
    }
}

/// W4 in eager mode: `len` sequential `y = y + x`.
pub fn eager_add_chain(x: &ETensor, len: usize) -> ETensor {
    let mut y = x.clone();
    for _ in 0..len {
        y = (&y + x).expect("eager add");
    }
    y
}

/// W4 in graph mode: the chain of adds built once as a graph (which the fusion pass may
/// turn into one loop) and run by a callable.
pub struct GraphChain {
    run: Callable,
}

impl GraphChain {
    /// The chain of `len` adds on vectors of `n` elements.
    pub fn new(n: usize, len: usize) -> GraphChain {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F32, &[Some(n)]).expect("x");
        let mut y = x.clone();
        for _ in 0..len {
            y = g.add(&y, &x).expect("graph add");
        }
        let s = Session::new(&g).expect("session");
        GraphChain {
            run: s.callable(&[&y], &[&x]).expect("chain callable"),
        }
    }

    /// The chain's result for `x`.
    pub fn run(&self, x: &Tensor) -> Tensor {
        let mut out = self.run.run(std::slice::from_ref(x)).expect("graph chain");
        out.pop().expect("one fetch")
    }
}

/// W5 in graph mode: `a @ b` with both operands fed.
pub struct GraphMatmul {
    run: Callable,
}

impl GraphMatmul {
    /// A square `n x n` matmul.
    pub fn new(n: usize) -> GraphMatmul {
        let g = Graph::new();
        let a = g
            .placeholder("a", DType::F32, &[Some(n), Some(n)])
            .expect("a");
        let b = g
            .placeholder("b", DType::F32, &[Some(n), Some(n)])
            .expect("b");
        let c = g.matmul(&a, &b).expect("graph matmul");
        let s = Session::new(&g).expect("session");
        GraphMatmul {
            run: s.callable(&[&c], &[&a, &b]).expect("matmul callable"),
        }
    }

    /// `a @ b`.
    pub fn run(&self, a: &Tensor, b: &Tensor) -> Tensor {
        let mut out = self.run.run(&[a.clone(), b.clone()]).expect("graph matmul");
        out.pop().expect("one fetch")
    }
}

/// The two modes' training steps behind one interface, for drivers that run both alike
/// (`examples/bench_epoch.rs`; the criterion benches call the steps directly).
#[allow(dead_code)]
pub trait ModeStep {
    /// One training step on images `x` and labels `y`.
    fn train(&mut self, x: &Tensor, y: &Tensor);
    /// The logits of `x`.
    fn logits(&self, x: &Tensor) -> Tensor;
}

impl ModeStep for EagerStep {
    fn train(&mut self, x: &Tensor, y: &Tensor) {
        self.step(x, y)
    }
    fn logits(&self, x: &Tensor) -> Tensor {
        self.infer(x)
    }
}

impl ModeStep for GraphStep {
    fn train(&mut self, x: &Tensor, y: &Tensor) {
        self.step(x, y)
    }
    fn logits(&self, x: &Tensor) -> Tensor {
        self.infer(x)
    }
}
