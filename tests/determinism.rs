//! Determinism on CPU: with a fixed seed and a fixed number of threads, two training runs of
//! the MNIST MLP (784 -> 128 -> ReLU -> 10, Adam, cross-entropy, shuffled batches) give
//! bit-identical losses, in eager mode and in graph mode.
//!
//! The data is a small synthetic MNIST-shaped set (so the test needs no download): 512
//! "images" of 784 pixels in [0, 1) from a fixed integer generator, labelled by a fixed
//! projection so that the problem is learnable.

use std::sync::Arc;
use tandem::data::{DataLoader, Dataset, TensorDataset};
use tandem::eager::nn::functional as F;
use tandem::eager::nn::{Linear, Module};
use tandem::eager::optim::{Adam, AdamConfig, Optimizer};
use tandem::eager::{manual_seed, Tensor};
use tandem::graph::{
    EmitExt, Functional, Graph, Initializer, Optimizer as GraphOptimizer, Session,
};
use tandem::tensor::{DType, Tensor as Value};

const SAMPLES: usize = 512;
const BATCH: usize = 64;
const EPOCHS: usize = 2;
const SEED: u64 = 1234;

/// The synthetic MNIST subset: `[SAMPLES, 784]` f32 pixels and `[SAMPLES]` i64 labels.
fn synthetic_mnist() -> Arc<dyn Dataset> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        // xorshift64*: a fixed stream independent of Tandem's own random numbers.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut pixels = Vec::with_capacity(SAMPLES * 784);
    let mut labels = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let row: Vec<f32> = (0..784)
            .map(|_| (next() >> 40) as f32 / (1u64 << 24) as f32)
            .collect();
        // Label: which tenth of the image is brightest.
        let mut best = (0usize, f32::MIN);
        for (c, chunk) in row.chunks(79).take(10).enumerate() {
            let s: f32 = chunk.iter().sum();
            if s > best.1 {
                best = (c, s);
            }
        }
        pixels.extend_from_slice(&row);
        labels.push(best.0 as i64);
    }
    let x = Value::from_vec(pixels, &[SAMPLES, 784]).unwrap();
    let y = Value::from_vec(labels, &[SAMPLES]).unwrap();
    Arc::new(TensorDataset::new(vec![x, y]).unwrap())
}

/// Runs `f` on a rayon pool of exactly `threads` threads (the kernels split work on the
/// current pool).
fn with_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

struct SimpleNet {
    fc1: Linear,
    fc2: Linear,
}

impl Module for SimpleNet {
    fn forward(&self, x: &Tensor) -> tandem::eager::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

/// Every loss of an eager training run, as bits.
fn eager_losses(data: Arc<dyn Dataset>) -> Vec<u64> {
    manual_seed(SEED);
    let model = SimpleNet {
        fc1: Linear::new(784, 128, true).unwrap(),
        fc2: Linear::new(128, 10, true).unwrap(),
    };
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: 1e-3,
            ..AdamConfig::default()
        },
    );
    let loader = DataLoader::new(data, BATCH).shuffle(SEED);
    let mut losses = Vec::new();
    for epoch in 0..EPOCHS {
        for batch in loader.epoch(epoch) {
            let b = batch.unwrap();
            let x = Tensor::from_value(b[0].clone());
            let y = Tensor::from_value(b[1].clone());
            opt.zero_grad();
            let loss = F::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
            loss.backward().unwrap();
            opt.step().unwrap();
            losses.push(loss.item().unwrap().to_bits());
        }
    }
    losses
}

/// Every loss of a graph-mode training run of the same network, as bits.
fn graph_losses(data: Arc<dyn Dataset>) -> Vec<u64> {
    let g = Graph::new();
    g.set_seed(SEED).unwrap();
    let x = g.placeholder("x", DType::F32, &[None, Some(784)]).unwrap();
    let y = g.placeholder("y", DType::I64, &[None]).unwrap();
    let layer = |name: &str, input, i: usize, o: usize| {
        let _s = g.scope(name);
        let init = Initializer::KaimingUniform { seed: None };
        let w = g
            .variable_with("weight", &[o, i], DType::F32, init, true)
            .unwrap();
        let b = g
            .variable_with(
                "bias",
                &[o],
                DType::F32,
                Initializer::Uniform {
                    low: -1.0 / (i as f64).sqrt(),
                    high: 1.0 / (i as f64).sqrt(),
                    seed: None,
                },
                true,
            )
            .unwrap();
        g.linear(input, &w, Some(&b)).unwrap()
    };
    let h = g.relu(&layer("fc1", &x, 784, 128)).unwrap();
    let logits = layer("fc2", &h, 128, 10);
    let loss = g.cross_entropy(&logits, &y, Default::default()).unwrap();
    let train = tandem::graph::Adam::new(1e-3).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let step = s.callable(&[&loss, &train], &[&x, &y]).unwrap();
    let loader = DataLoader::new(data, BATCH).shuffle(SEED);
    let mut losses = Vec::new();
    for epoch in 0..EPOCHS {
        for batch in loader.epoch(epoch) {
            let b = batch.unwrap();
            let out = step.run(&[b[0].clone(), b[1].clone()]).unwrap();
            losses.push(out[0].item().unwrap().to_bits());
        }
    }
    losses
}

fn assert_identical(a: &[u64], b: &[u64], what: &str) {
    assert_eq!(a.len(), SAMPLES.div_ceil(BATCH) * EPOCHS, "{what}: steps");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(
            x,
            y,
            "{what}: step {i} loss {} vs {}",
            f64::from_bits(*x),
            f64::from_bits(*y)
        );
    }
    // The runs trained: the loss went down.
    let first = f64::from_bits(a[0]);
    let last = f64::from_bits(a[a.len() - 1]);
    assert!(last < first, "{what}: loss {first} -> {last}");
}

#[test]
fn eager_training_is_bit_identical_across_runs() {
    let data = synthetic_mnist();
    let a = with_threads(2, || eager_losses(data.clone()));
    let b = with_threads(2, || eager_losses(data.clone()));
    assert_identical(&a, &b, "eager");
}

#[test]
fn graph_training_is_bit_identical_across_runs() {
    let data = synthetic_mnist();
    let a = with_threads(2, || graph_losses(data.clone()));
    let b = with_threads(2, || graph_losses(data.clone()));
    assert_identical(&a, &b, "graph");
}
