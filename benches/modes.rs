//! Workload benchmarks of issue 6, with the same definitions for every system. Benchmark ids
//! are `WORKLOAD/CASE/SYSTEM` (`W1_mlp_step/b64/candle`, `.../eager`, `.../graph`), and the
//! report (`cargo run --release --example bench_report`) puts the systems of a case side by
//! side. Systems: `eager` (Tandem's eager mode: autograd tensors, `nn`, `optim`), `graph`
//! (Tandem's graph mode: one `Callable` per workload, built once), `candle` (candle 0.11),
//! and for W4/W5 `tensor` (Tandem's plain tensor, no mode) and `gemm_direct`.
//!
//! - W1 `W1_mlp_step/{b64,b1024}`: 784 -> Linear 128 -> ReLU -> Linear 10, mean cross-entropy
//!   on integer labels, one Adam step (candle-nn's AdamW with weight decay 0), lr 1e-3.
//! - W3 `W3_lenet_step/b64`: LeNet-5 (conv 1->6 5x5 pad 2, relu, maxpool 2, conv 6->16 5x5,
//!   relu, maxpool 2, linear 400-120-84-10 with relus), same loss and optimizer.
//! - W4 `W4_add_chain/{n16,n1M}`: 1,000 sequential `y = y + x` (time per chain; divide by
//!   1,000 for the time per op).
//! - W5 `W5_matmul/{512,1024,2048}`: f32 square matmul (Tandem, `gemm` called directly,
//!   candle); throughput in FLOP.
//! - W6 `W6_mlp_infer/b1`: W1's MLP forward on one input.
//!
//! Inputs of W1/W3/W6 are the first training images and labels of MNIST when `MNIST_DIR` is
//! set, deterministic random data of the same shapes otherwise. A W1/W3 model cycles through
//! the first 100 batches (58 at batch 1024) and is replaced by a fresh one (not timed) every
//! 1,000 steps, so that the measured steps are early training steps, like the Python peers'
//! (a model trained for tens of thousands of steps on a few batches memorizes them until its
//! gradients underflow into subnormal numbers). W2 (one epoch plus accuracy)
//! does not fit criterion and is `cargo run --release --example bench_epoch`. Run with
//! `RAYON_NUM_THREADS=2 cargo bench --bench modes` (candle's CPU matmul also uses rayon's
//! pool); the whole suite takes about 5-8 minutes on 2 cores.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

#[path = "modes/tandem.rs"]
mod modes_tandem;

use candle_core::{DType, Device, Module, Tensor as CTensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput,
};
use modes_tandem as td;
use std::hint::black_box;
use std::time::{Duration, Instant};
use tandem::tensor::{BinaryOp, Tensor};

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

fn labels(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 7 + 3) % 10).collect()
}

/// `batch` images (pixels in [0, 1], row-major `[batch, 784]`) and labels: the first ones of
/// MNIST's training set when `MNIST_DIR` is set, [`values`] / [`labels`] otherwise.
fn mnist_batch(batch: usize) -> (Vec<f32>, Vec<u32>) {
    mnist_batches(batch, 1).swap_remove(0)
}

/// Up to `count` consecutive batches of `batch` images and labels from the start of MNIST's
/// training set when `MNIST_DIR` is set (fewer when the set runs out), `count` batches of
/// [`values`] / [`labels`] otherwise.
fn mnist_batches(batch: usize, count: usize) -> Vec<(Vec<f32>, Vec<u32>)> {
    if let Some(dir) = std::env::var_os("MNIST_DIR") {
        let dir = std::path::PathBuf::from(dir);
        if let Ok(m) = tandem::data::mnist::Mnist::load(Some(&dir)) {
            let px = m.train_images.to_vec::<u8>().expect("MNIST images");
            let ys = m.train_labels.to_vec::<i64>().expect("MNIST labels");
            let n = (ys.len() / batch).min(px.len() / (batch * 784)).min(count);
            if n > 0 {
                return (0..n)
                    .map(|i| {
                        let px = &px[i * batch * 784..(i + 1) * batch * 784];
                        let x = px.iter().map(|&p| p as f32 / 255.0).collect();
                        let y = ys[i * batch..(i + 1) * batch]
                            .iter()
                            .map(|&l| l as u32)
                            .collect();
                        (x, y)
                    })
                    .collect();
            }
        }
        eprintln!("MNIST_DIR is set but MNIST could not be read: using random data");
    }
    (0..count)
        .map(|i| (values(batch * 784, 11 + i as u32), labels(batch)))
        .collect()
}

/// Training steps of W1 and W3 between two fresh models.
const RESTART: u64 = 1000;
/// Batches a W1 or W3 model cycles through (fewer at batch 1024: MNIST has 58 of them).
const BATCHES: usize = 100;

/// A model being trained by a W1 or W3 benchmark, and the steps it has taken.
struct Training<S> {
    state: Option<(S, u64)>,
}

impl<S> Training<S> {
    fn new() -> Self {
        Training { state: None }
    }

    /// The time of `iters` training steps, `step(model, i)` taking the model's `i`-th step.
    /// The model trains for [`RESTART`] steps, then a fresh one from `fresh` (not timed) takes
    /// over: every measured step is one of the first steps of a training run, as in the
    /// Python peers' scripts, and a model never trains on the same few batches until its
    /// gradients underflow (which would measure subnormal arithmetic, not a training step).
    fn time(
        &mut self,
        iters: u64,
        fresh: impl Fn() -> S,
        mut step: impl FnMut(&mut S, usize),
    ) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let (model, taken) = match &mut self.state {
                Some((model, taken)) if *taken < RESTART => (model, taken),
                state => {
                    let (model, taken) = state.insert((fresh(), 0));
                    (model, taken)
                }
            };
            let run = left.min(RESTART - *taken);
            let start = Instant::now();
            for _ in 0..run {
                step(model, *taken as usize);
                *taken += 1;
            }
            total += start.elapsed();
            left -= run;
        }
        total
    }
}

fn adam(vars: Vec<candle_core::Var>) -> AdamW {
    let params = ParamsAdamW {
        lr: 1e-3,
        weight_decay: 0.0,
        ..ParamsAdamW::default()
    };
    AdamW::new(vars, params).expect("candle AdamW")
}

struct CandleMlp {
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
}

impl CandleMlp {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(CandleMlp {
            fc1: candle_nn::linear(784, 128, vb.pp("fc1"))?,
            fc2: candle_nn::linear(128, 10, vb.pp("fc2"))?,
        })
    }
}

impl Module for CandleMlp {
    fn forward(&self, x: &CTensor) -> candle_core::Result<CTensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
}

struct CandleLenet {
    conv1: candle_nn::Conv2d,
    conv2: candle_nn::Conv2d,
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
    fc3: candle_nn::Linear,
}

impl CandleLenet {
    fn new(vb: VarBuilder) -> candle_core::Result<Self> {
        let pad2 = candle_nn::Conv2dConfig {
            padding: 2,
            ..Default::default()
        };
        Ok(CandleLenet {
            conv1: candle_nn::conv2d(1, 6, 5, pad2, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(6, 16, 5, Default::default(), vb.pp("conv2"))?,
            fc1: candle_nn::linear(400, 120, vb.pp("fc1"))?,
            fc2: candle_nn::linear(120, 84, vb.pp("fc2"))?,
            fc3: candle_nn::linear(84, 10, vb.pp("fc3"))?,
        })
    }
}

impl Module for CandleLenet {
    fn forward(&self, x: &CTensor) -> candle_core::Result<CTensor> {
        let x = self.conv1.forward(x)?.relu()?.max_pool2d(2)?;
        let x = self.conv2.forward(&x)?.relu()?.max_pool2d(2)?;
        let x = x.flatten_from(1)?;
        let x = self.fc1.forward(&x)?.relu()?;
        let x = self.fc2.forward(&x)?.relu()?;
        self.fc3.forward(&x)
    }
}

/// One training step: forward, mean cross-entropy, backward, Adam update.
fn candle_step(
    model: &impl Module,
    opt: &mut AdamW,
    x: &CTensor,
    y: &CTensor,
) -> candle_core::Result<()> {
    let loss = candle_nn::loss::cross_entropy(&model.forward(x)?, y)?;
    opt.backward_step(&loss)
}

/// How each system builds a fresh model of a training workload.
struct Systems<C> {
    candle: C,
    eager: fn() -> td::EagerStep,
    graph: fn() -> td::GraphStep,
}

/// Benchmarks `CASE/candle`, `CASE/eager` and `CASE/graph` training steps on batches of
/// `shape` (the first dimension is the batch), each system with a [`Training`] of its own.
fn bench_training<M: Module>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    case: &str,
    shape: &[usize],
    systems: Systems<impl Fn(VarBuilder) -> M>,
) {
    let dev = Device::Cpu;
    let data = mnist_batches(shape[0], BATCHES);
    let candle_data: Vec<_> = data
        .iter()
        .map(|(xs, ys)| {
            let x = CTensor::from_vec(xs.clone(), shape, &dev).expect("x");
            let y = CTensor::from_vec(ys.clone(), shape[0], &dev).expect("y");
            (x, y)
        })
        .collect();
    let mut candle = Training::new();
    group.bench_function(format!("{case}/candle"), |b| {
        b.iter_custom(|iters| {
            candle.time(
                iters,
                || {
                    let varmap = VarMap::new();
                    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
                    ((systems.candle)(vb), adam(varmap.all_vars()))
                },
                |(model, opt), i| {
                    let (x, y) = &candle_data[i % candle_data.len()];
                    candle_step(model, opt, x, y).expect("candle step")
                },
            )
        })
    });
    let tandem_data: Vec<_> = data
        .iter()
        .map(|(xs, ys)| td::batch(xs, ys, shape))
        .collect();
    let mut eager = Training::new();
    group.bench_function(format!("{case}/eager"), |b| {
        b.iter_custom(|iters| {
            eager.time(iters, systems.eager, |model, i| {
                let (x, y) = &tandem_data[i % tandem_data.len()];
                model.step(x, y)
            })
        })
    });
    let mut graph = Training::new();
    group.bench_function(format!("{case}/graph"), |b| {
        b.iter_custom(|iters| {
            graph.time(iters, systems.graph, |model, i| {
                let (x, y) = &tandem_data[i % tandem_data.len()];
                model.step(x, y)
            })
        })
    });
}

fn w1_mlp_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W1_mlp_step");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for batch in [64usize, 1024] {
        let shape = [batch, 784];
        let systems = Systems {
            candle: |vb: VarBuilder| CandleMlp::new(vb).expect("candle MLP"),
            eager: td::EagerStep::mlp,
            graph: td::GraphStep::mlp,
        };
        bench_training(&mut group, &format!("b{batch}"), &shape, systems);
    }
    group.finish();
}

fn w3_lenet_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W3_lenet_step");
    group.sample_size(20);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    let systems = Systems {
        candle: |vb: VarBuilder| CandleLenet::new(vb).expect("candle LeNet"),
        eager: td::EagerStep::lenet,
        graph: td::GraphStep::lenet,
    };
    bench_training(&mut group, "b64", &[64, 1, 28, 28], systems);
    group.finish();
}

/// Number of adds in one W4 chain.
const CHAIN: usize = 1000;

fn w4_add_chain(c: &mut Criterion) {
    let mut group = c.benchmark_group("W4_add_chain");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let dev = Device::Cpu;
    for (case, n) in [("n16", 16usize), ("n1M", 1_000_000)] {
        group.sample_size(if n > 16 { 10 } else { 50 });
        group.sampling_mode(if n > 16 {
            SamplingMode::Flat
        } else {
            SamplingMode::Auto
        });
        // Bytes moved by the chain: each add reads two vectors and writes one.
        group.throughput(Throughput::Bytes((CHAIN * 3 * n * 4) as u64));
        let x = CTensor::from_vec(values(n, 13), n, &dev).expect("x");
        group.bench_function(format!("{case}/candle"), |b| {
            b.iter(|| {
                let mut y = x.clone();
                for _ in 0..CHAIN {
                    y = (&y + &x).expect("candle add");
                }
                black_box(y)
            })
        });
        let tx = Tensor::from_vec(values(n, 13), &[n]).expect("x");
        group.bench_function(format!("{case}/tensor"), |b| {
            b.iter(|| {
                let mut y = tx.clone();
                for _ in 0..CHAIN {
                    y = y.binary(BinaryOp::Add, &tx).expect("tandem add");
                }
                black_box(y)
            })
        });
        let ex = tandem::eager::Tensor::from_value(tx.clone());
        group.bench_function(format!("{case}/eager"), |b| {
            b.iter(|| black_box(td::eager_add_chain(&ex, CHAIN)))
        });
        let chain = td::GraphChain::new(n, CHAIN);
        group.bench_function(format!("{case}/graph"), |b| {
            b.iter(|| black_box(chain.run(&tx)))
        });
    }
    group.finish();
}

/// `dst = lhs @ rhs` for row-major `n x n` matrices with the `gemm` crate on all threads.
fn gemm_direct(n: usize, lhs: &[f32], rhs: &[f32], dst: &mut [f32]) {
    assert!(lhs.len() >= n * n && rhs.len() >= n * n && dst.len() >= n * n);
    let s = n as isize;
    // SAFETY: the three buffers hold at least n*n elements in row-major order (checked above)
    // and `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            dst.as_mut_ptr(),
            1,
            s,
            false,
            lhs.as_ptr(),
            1,
            s,
            rhs.as_ptr(),
            1,
            s,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    };
}

fn w5_matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("W5_matmul");
    let dev = Device::Cpu;
    for n in [512usize, 1024, 2048] {
        group.sample_size(if n >= 2048 { 10 } else { 20 });
        group.sampling_mode(if n >= 2048 {
            SamplingMode::Flat
        } else {
            SamplingMode::Auto
        });
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(if n >= 2048 { 6 } else { 3 }));
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        let (a, b) = (values(n * n, 1), values(n * n, 2));
        let ta = Tensor::from_slice(&a, &[n, n]).expect("a");
        let tb = Tensor::from_slice(&b, &[n, n]).expect("b");
        group.bench_function(format!("{n}/tensor"), |bench| {
            bench.iter(|| black_box(ta.matmul(&tb).expect("tandem matmul")))
        });
        let (ea, eb) = (
            tandem::eager::Tensor::from_value(ta.clone()),
            tandem::eager::Tensor::from_value(tb.clone()),
        );
        group.bench_function(format!("{n}/eager"), |bench| {
            bench.iter(|| black_box(ea.matmul(&eb).expect("eager matmul")))
        });
        let gm = td::GraphMatmul::new(n);
        group.bench_function(format!("{n}/graph"), |bench| {
            bench.iter(|| black_box(gm.run(&ta, &tb)))
        });
        group.bench_function(format!("{n}/gemm_direct"), |bench| {
            bench.iter(|| {
                let mut dst = vec![0.0f32; n * n];
                gemm_direct(n, &a, &b, &mut dst);
                black_box(dst)
            })
        });
        let ca = CTensor::from_slice(&a, (n, n), &dev).expect("a");
        let cb = CTensor::from_slice(&b, (n, n), &dev).expect("b");
        group.bench_function(format!("{n}/candle"), |bench| {
            bench.iter(|| black_box(ca.matmul(&cb).expect("candle matmul")))
        });
    }
    group.finish();
}

fn w6_mlp_infer(c: &mut Criterion) {
    let mut group = c.benchmark_group("W6_mlp_infer");
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let model = CandleMlp::new(vb).expect("candle MLP");
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    let (xs, ys) = mnist_batch(1);
    let x = CTensor::from_vec(xs.clone(), (1, 784), &dev).expect("x");
    group.bench_function("b1/candle", |b| {
        b.iter(|| black_box(model.forward(&x).expect("candle forward")))
    });
    let (tx, _) = td::batch(&xs, &ys, &[1, 784]);
    let eager = td::EagerStep::mlp();
    group.bench_function("b1/eager", |b| b.iter(|| black_box(eager.infer(&tx))));
    let graph = td::GraphStep::mlp();
    group.bench_function("b1/graph", |b| b.iter(|| black_box(graph.infer(&tx))));
    group.finish();
}

criterion_group!(
    benches,
    w1_mlp_step,
    w3_lenet_step,
    w4_add_chain,
    w5_matmul,
    w6_mlp_infer
);
criterion_main!(benches);
