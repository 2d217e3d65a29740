//! Graph mode next to eager mode, in one run (issue 4's speed targets):
//!
//! - `W1_mlp_step/{b64,b1024}/{eager,graph}`: 784 -> Linear 128 -> ReLU -> Linear 10, mean
//!   cross-entropy on int64 labels, one Adam step (lr 1e-3). The graph step runs a
//!   [`Callable`] fetching the loss and the training op.
//! - `W3_lenet_step/b64/{eager,graph}`: LeNet-5 (conv 1->6 5x5 pad 2, relu, maxpool 2,
//!   conv 6->16 5x5, relu, maxpool 2, 400 -> 120 -> 84 -> 10 with relus), mean cross-entropy,
//!   one Adam step (lr 1e-3), on 64 random 1x28x28 images.
//! - `W4_add_chain/{n16,n1M}/{eager,graph,graph_unfused}`: 1,000 sequential `y = y + x`
//!   (time per chain; divide by 1,000 for the time per node). `graph` is the default
//!   optimized plan (the chain fuses into one kernel), `graph_unfused` runs the same graph
//!   without passes, one step per node (the interpreter's per-node cost).
//!
//! `RAYON_NUM_THREADS=2 cargo bench -p tandem-graph --bench graph_vs_eager`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;
use tandem_eager::nn::functional as F;
use tandem_eager::nn::{Conv2d, Linear, MaxPool2d, Module};
use tandem_eager::optim::{Adam as EagerAdam, AdamConfig, Optimizer as _};
use tandem_graph::{
    Adam, Callable, Graph, Initializer, Optimizer, Output, Session, SessionOptions,
};
use tandem_ir::{CrossEntropyOptions, EmitExt, Functional};
use tandem_tensor::{BinaryOp, Conv2dParams, DType, Pool2dParams, Result, Tensor};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn labels(n: usize) -> Vec<i64> {
    (0..n as i64).map(|i| (i * 7 + 3) % 10).collect()
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &tandem_eager::Tensor) -> Result<tandem_eager::Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

fn linear(g: &Graph, name: &str, x: &Output, inp: usize, out: usize) -> Result<Output> {
    let _s = g.scope(name);
    let b = 1.0 / (inp as f64).sqrt();
    let init = Initializer::Uniform {
        low: -b,
        high: b,
        seed: None,
    };
    let w = g.variable_with("weight", &[out, inp], DType::F32, init.clone(), true)?;
    let bias = g.variable_with("bias", &[out], DType::F32, init, true)?;
    g.linear(x, &w, Some(&bias))
}

/// The graph MLP training step: a callable fetching `[loss, train_op]`, feeding `[x, y]`.
fn graph_mlp() -> Result<Callable> {
    let g = Graph::new();
    g.set_seed(0)?;
    let x = g.placeholder("x", DType::F32, &[None, Some(784)])?;
    let y = g.placeholder("y", DType::I64, &[None])?;
    let h = g.relu(&linear(&g, "fc1", &x, 784, 128)?)?;
    let logits = linear(&g, "fc2", &h, 128, 10)?;
    let loss = g.cross_entropy(&logits, &y, CrossEntropyOptions::default())?;
    let train = Adam::new(1e-3).minimize(&loss)?;
    let s = Session::new(&g)?;
    s.callable(&[&loss, &train], &[&x, &y])
}

fn w1_mlp_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W1_mlp_step");
    group.measurement_time(Duration::from_secs(4));
    for batch in [64usize, 1024] {
        let xv = values(batch * 784, 11);
        let yv = labels(batch);
        tandem_eager::manual_seed(0);
        let m = Mlp {
            fc1: Linear::new(784, 128, true).expect("fc1"),
            fc2: Linear::new(128, 10, true).expect("fc2"),
        };
        let mut opt = EagerAdam::new(m.parameters(), AdamConfig::default());
        let ex = tandem_eager::Tensor::from_vec(xv.clone(), &[batch, 784]).expect("x");
        let ey = tandem_eager::Tensor::from_vec(yv.clone(), &[batch]).expect("y");
        group.bench_function(format!("b{batch}/eager"), |b| {
            b.iter(|| {
                opt.zero_grad();
                let loss = F::cross_entropy(&m.forward(&ex).expect("fwd"), &ey).expect("loss");
                loss.backward().expect("backward");
                opt.step().expect("step");
                black_box(loss)
            })
        });
        let step = graph_mlp().expect("graph MLP");
        let feeds = [
            Tensor::from_vec(xv, &[batch, 784]).expect("x"),
            Tensor::from_vec(yv, &[batch]).expect("y"),
        ];
        group.bench_function(format!("b{batch}/graph"), |b| {
            b.iter(|| black_box(step.run(&feeds).expect("graph step")))
        });
    }
    group.finish();
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
    fn forward(&self, x: &tandem_eager::Tensor) -> Result<tandem_eager::Tensor> {
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

fn conv(g: &Graph, name: &str, x: &Output, cin: usize, cout: usize, pad: usize) -> Result<Output> {
    let _s = g.scope(name);
    let b = 1.0 / ((cin * 25) as f64).sqrt();
    let init = Initializer::Uniform {
        low: -b,
        high: b,
        seed: None,
    };
    let w = g.variable_with("weight", &[cout, cin, 5, 5], DType::F32, init.clone(), true)?;
    let bias = g.variable_with("bias", &[cout], DType::F32, init, true)?;
    let p = Conv2dParams {
        padding: [pad, pad],
        ..Conv2dParams::default()
    };
    g.conv2d(x, &w, Some(&bias), p)
}

/// The graph LeNet-5 training step: a callable fetching `[loss, train_op]`, feeding `[x, y]`.
fn graph_lenet() -> Result<Callable> {
    let g = Graph::new();
    g.set_seed(0)?;
    let x = g.placeholder("x", DType::F32, &[None, Some(1), Some(28), Some(28)])?;
    let y = g.placeholder("y", DType::I64, &[None])?;
    let pool = Pool2dParams::square(2, 2, 0);
    let h = g.max_pool2d(&g.relu(&conv(&g, "conv1", &x, 1, 6, 2)?)?, pool)?;
    let h = g.max_pool2d(&g.relu(&conv(&g, "conv2", &h, 6, 16, 0)?)?, pool)?;
    let h = g.flatten(&h, 1, -1)?;
    let h = g.relu(&linear(&g, "fc1", &h, 400, 120)?)?;
    let h = g.relu(&linear(&g, "fc2", &h, 120, 84)?)?;
    let logits = linear(&g, "fc3", &h, 84, 10)?;
    let loss = g.cross_entropy(&logits, &y, CrossEntropyOptions::default())?;
    let train = Adam::new(1e-3).minimize(&loss)?;
    let s = Session::new(&g)?;
    s.callable(&[&loss, &train], &[&x, &y])
}

fn w3_lenet_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W3_lenet_step");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    let batch = 64;
    let xv: Vec<f32> = values(batch * 784, 17).iter().map(|v| v.abs()).collect();
    let yv = labels(batch);
    tandem_eager::manual_seed(0);
    let m = LeNet {
        conv1: Conv2d::new(1, 6, 5).expect("conv1").padding(2),
        conv2: Conv2d::new(6, 16, 5).expect("conv2"),
        fc1: Linear::new(400, 120, true).expect("fc1"),
        fc2: Linear::new(120, 84, true).expect("fc2"),
        fc3: Linear::new(84, 10, true).expect("fc3"),
        pool: MaxPool2d::new(2),
    };
    let mut opt = EagerAdam::new(m.parameters(), AdamConfig::default());
    let shape = [batch, 1, 28, 28];
    let ex = tandem_eager::Tensor::from_vec(xv.clone(), &shape).expect("x");
    let ey = tandem_eager::Tensor::from_vec(yv.clone(), &[batch]).expect("y");
    group.bench_function("b64/eager", |b| {
        b.iter(|| {
            opt.zero_grad();
            let loss = F::cross_entropy(&m.forward(&ex).expect("fwd"), &ey).expect("loss");
            loss.backward().expect("backward");
            opt.step().expect("step");
            black_box(loss)
        })
    });
    let step = graph_lenet().expect("graph LeNet");
    let feeds = [
        Tensor::from_vec(xv, &shape).expect("x"),
        Tensor::from_vec(yv, &[batch]).expect("y"),
    ];
    group.bench_function("b64/graph", |b| {
        b.iter(|| black_box(step.run(&feeds).expect("graph step")))
    });
    group.finish();
}

/// Number of adds in one W4 chain.
const CHAIN: usize = 1000;

fn chain(optimize: bool) -> Result<Callable> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None])?;
    let mut y = x.clone();
    for _ in 0..CHAIN {
        y = g.add(&y, &x)?;
    }
    let opts = SessionOptions { optimize };
    Session::with_options(&g, opts)?.callable(&[&y], &[&x])
}

fn w4_add_chain(c: &mut Criterion) {
    let mut group = c.benchmark_group("W4_add_chain");
    group.measurement_time(Duration::from_secs(3));
    for (case, n) in [("n16", 16usize), ("n1M", 1_000_000)] {
        group.sample_size(if n > 16 { 10 } else { 50 });
        let x = tandem_eager::Tensor::from_vec(values(n, 13), &[n]).expect("x");
        group.bench_function(format!("{case}/eager"), |b| {
            let _g = tandem_eager::no_grad();
            b.iter(|| {
                let mut y = x.clone();
                for _ in 0..CHAIN {
                    y = (&y + &x).expect("eager add");
                }
                black_box(y)
            })
        });
        let feeds = [Tensor::from_vec(values(n, 13), &[n]).expect("x")];
        for (name, optimize) in [("graph", true), ("graph_unfused", false)] {
            let run = chain(optimize).expect("chain");
            group.bench_function(format!("{case}/{name}"), |b| {
                b.iter(|| black_box(run.run(&feeds).expect("chain run")))
            });
        }
        let tx = Tensor::from_vec(values(n, 13), &[n]).expect("x");
        group.bench_function(format!("{case}/tensor"), |b| {
            b.iter(|| {
                let mut y = tx.clone();
                for _ in 0..CHAIN {
                    y = y.binary(BinaryOp::Add, &tx).expect("tensor add");
                }
                black_box(y)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, w1_mlp_step, w3_lenet_step, w4_add_chain);
criterion_main!(benches);
