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
use tandem_graph::{Callable, Graph, Session, SessionOptions};
use tandem_ir::EmitExt;
use tandem_tensor::{BinaryOp, DType, Result, Tensor};

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

/// The models and steps of `benches/modes.rs`, shared so both benchmarks measure the same
/// workload definitions.
#[allow(dead_code)]
#[path = "../../../benches/modes/tandem.rs"]
mod models;

use models::{EagerStep, GraphStep, ModeStep};

/// Times one training step of each mode on the same images and labels.
fn steps(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    case: &str,
    shape: &[usize],
    modes: [Box<dyn ModeStep>; 2],
) {
    let n: usize = shape.iter().product();
    let x = Tensor::from_vec(
        values(n, 11).iter().map(|v| v.abs()).collect::<Vec<_>>(),
        shape,
    )
    .expect("x");
    let y = Tensor::from_vec(labels(shape[0]), &[shape[0]]).expect("y");
    for (name, mut step) in ["eager", "graph"].into_iter().zip(modes) {
        group.bench_function(format!("{case}/{name}"), |b| {
            b.iter(|| {
                step.train(&x, &y);
                black_box(&step);
            })
        });
    }
}

fn w1_mlp_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W1_mlp_step");
    group.measurement_time(Duration::from_secs(4));
    for batch in [64usize, 1024] {
        let modes: [Box<dyn ModeStep>; 2] =
            [Box::new(EagerStep::mlp()), Box::new(GraphStep::mlp())];
        steps(&mut group, &format!("b{batch}"), &[batch, 784], modes);
    }
    group.finish();
}

fn w3_lenet_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("W3_lenet_step");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    let modes: [Box<dyn ModeStep>; 2] =
        [Box::new(EagerStep::lenet()), Box::new(GraphStep::lenet())];
    steps(&mut group, "b64", &[64, 1, 28, 28], modes);
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
