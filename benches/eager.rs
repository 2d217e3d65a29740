//! Eager-mode speed: a full training step (forward, backward, Adam) of the MNIST MLP at batch
//! 64 and 1024 and of LeNet-5 at batch 64, and the per-op dispatch overhead (1,000 sequential
//! `y = y + x` on 16 elements, with and without autograd).
//!
//! `cargo bench --bench eager`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use tandem::eager::nn::functional as F;
use tandem::eager::nn::{Conv2d, Linear, MaxPool2d, Module};
use tandem::eager::optim::{Adam, AdamConfig, Optimizer};
use tandem::eager::{manual_seed, no_grad, DType, Result, Tensor};

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

struct LeNet {
    c1: Conv2d,
    c2: Conv2d,
    f1: Linear,
    f2: Linear,
    f3: Linear,
    pool: MaxPool2d,
}

impl Module for LeNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.pool.forward(&self.c1.forward(x)?.relu()?)?;
        let h = self.pool.forward(&self.c2.forward(&h)?.relu()?)?;
        let h = self.f1.forward(&h.flatten(1, -1)?)?.relu()?;
        self.f3.forward(&self.f2.forward(&h)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("conv1".into(), &self.c1),
            ("conv2".into(), &self.c2),
            ("fc1".into(), &self.f1),
            ("fc2".into(), &self.f2),
            ("fc3".into(), &self.f3),
        ]
    }
}

fn step(model: &dyn Module, opt: &mut Adam, x: &Tensor, y: &Tensor) {
    opt.zero_grad();
    let loss = F::cross_entropy(&model.forward(x).unwrap(), y).unwrap();
    loss.backward().unwrap();
    opt.step().unwrap();
}

fn training_steps(c: &mut Criterion) {
    manual_seed(0);
    let mut g = c.benchmark_group("eager_train_step");
    for batch in [64usize, 1024] {
        let m = Mlp {
            fc1: Linear::new(784, 128, true).unwrap(),
            fc2: Linear::new(128, 10, true).unwrap(),
        };
        let mut opt = Adam::new(m.parameters(), AdamConfig::default());
        let x = Tensor::rand(&[batch, 784], DType::F32).unwrap();
        let y = Tensor::randint(&[batch], 0, 10, DType::I64).unwrap();
        g.bench_with_input(BenchmarkId::new("mlp", batch), &batch, |b, _| {
            b.iter(|| step(&m, &mut opt, &x, &y))
        });
    }
    let m = LeNet {
        c1: Conv2d::new(1, 6, 5).unwrap().padding(2),
        c2: Conv2d::new(6, 16, 5).unwrap(),
        f1: Linear::new(400, 120, true).unwrap(),
        f2: Linear::new(120, 84, true).unwrap(),
        f3: Linear::new(84, 10, true).unwrap(),
        pool: MaxPool2d::new(2),
    };
    let mut opt = Adam::new(m.parameters(), AdamConfig::default());
    let x = Tensor::rand(&[64, 1, 28, 28], DType::F32).unwrap();
    let y = Tensor::randint(&[64], 0, 10, DType::I64).unwrap();
    g.bench_function(BenchmarkId::new("lenet", 64), |b| {
        b.iter(|| step(&m, &mut opt, &x, &y))
    });
    g.finish();
}

fn dispatch_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("eager_dispatch_1000_adds_16_elems");
    g.throughput(Throughput::Elements(1000));
    let run = |x: &Tensor| {
        let mut y = x.clone();
        for _ in 0..1000 {
            y = (&y + x).unwrap();
        }
        black_box(y)
    };
    let x = Tensor::ones(&[16], DType::F32);
    g.bench_function("no_grad", |b| {
        let _g = no_grad();
        b.iter(|| run(&x))
    });
    let xg = Tensor::ones(&[16], DType::F32).requires_grad_(true);
    g.bench_function("with_grad", |b| b.iter(|| run(&xg)));
    g.finish();
}

criterion_group!(benches, training_steps, dispatch_overhead);
criterion_main!(benches);
