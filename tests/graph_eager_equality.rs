//! Graph mode and eager mode compute the same training: the MNIST-shaped MLP (784 -> 128 ->
//! ReLU -> 10, mean cross-entropy, Adam lr 1e-3) started from the same parameters and fed the
//! same 20 batches gives the same losses and the same parameters in both modes (the graph's
//! optimized plan, with its fused kernels and buffer reuse, rounds like the eager kernels).

use tandem::eager::nn::functional as F;
use tandem::eager::nn::{Linear, Module};
use tandem::eager::optim::{Adam, AdamConfig, Optimizer};
use tandem::eager::{manual_seed, Tensor};
use tandem::graph::{
    Adam as GraphAdam, EmitExt, Functional, Graph, Optimizer as GraphOptimizer, Output, Session,
};
use tandem::ir::CrossEntropyOptions;
use tandem::tensor::{DType, Tensor as Value};

const BATCH: usize = 32;
const STEPS: usize = 20;

/// Batch `i`: pixels in [0, 1) from a fixed integer generator and labels 0..10.
fn batch(i: usize) -> (Value, Value) {
    let mut s = 0x2545_F491_4F6C_DD1Du64 ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    let x: Vec<f32> = (0..BATCH * 784).map(|_| next()).collect();
    let y: Vec<i64> = (0..BATCH).map(|_| (next() * 10.0) as i64 % 10).collect();
    (
        Value::from_vec(x, &[BATCH, 784]).unwrap(),
        Value::from_vec(y, &[BATCH]).unwrap(),
    )
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> tandem::tensor::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let tol = 1e-6 * x.abs().max(y.abs()).max(1e-3);
        assert!((x - y).abs() <= tol, "{what}[{i}]: eager {x} graph {y}");
    }
}

#[test]
fn mlp_adam_20_steps_match_between_eager_and_graph() {
    manual_seed(7);
    let m = Mlp {
        fc1: Linear::new(784, 128, true).unwrap(),
        fc2: Linear::new(128, 10, true).unwrap(),
    };
    let layers = [&m.fc1, &m.fc2];
    let init: Vec<Value> = layers
        .iter()
        .flat_map(|l| [l.weight.value(), l.bias.as_ref().unwrap().value()])
        .map(|v| v.copy().unwrap())
        .collect();

    // Graph mode: the same network, its variables set to the eager initial values.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(784)]).unwrap();
    let y = g.placeholder("y", DType::I64, &[None]).unwrap();
    let mut vars: Vec<Output> = Vec::new();
    let mut h = x.clone();
    for (k, name) in ["fc1", "fc2"].into_iter().enumerate() {
        let _s = g.scope(name);
        let w = g.variable("weight", init[2 * k].clone()).unwrap();
        let b = g.variable("bias", init[2 * k + 1].clone()).unwrap();
        h = g.linear(&h, &w, Some(&b)).unwrap();
        if k == 0 {
            h = g.relu(&h).unwrap();
        }
        vars.extend([w, b]);
    }
    let loss = g
        .cross_entropy(&h, &y, CrossEntropyOptions::default())
        .unwrap();
    let train = GraphAdam::new(1e-3).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let step = s.callable(&[&loss, &train], &[&x, &y]).unwrap();

    let mut opt = Adam::new(m.parameters(), AdamConfig::default());
    for i in 0..STEPS {
        let (xs, ys) = batch(i);
        opt.zero_grad();
        let el = F::cross_entropy(
            &m.forward(&Tensor::from_value(xs.clone())).unwrap(),
            &Tensor::from_value(ys.clone()),
        )
        .unwrap();
        el.backward().unwrap();
        opt.step().unwrap();
        let gl = step.run(&[xs, ys]).unwrap()[0].item().unwrap() as f32;
        let el = el.item().unwrap() as f32;
        close(&[el], &[gl], &format!("loss of step {i}"));
    }
    let eager_params: Vec<Value> = layers
        .iter()
        .flat_map(|l| [l.weight.value(), l.bias.as_ref().unwrap().value()])
        .collect();
    for (k, (e, v)) in eager_params.iter().zip(&vars).enumerate() {
        let gv = s.variable_value(v).unwrap();
        close(
            &e.to_vec::<f32>().unwrap(),
            &gv.to_vec::<f32>().unwrap(),
            &format!("parameter {k} ({})", v.name()),
        );
        // The parameters moved (the comparison is not between two untouched copies).
        assert_ne!(
            gv.to_vec::<f32>().unwrap(),
            init[k].to_vec::<f32>().unwrap()
        );
    }
}
