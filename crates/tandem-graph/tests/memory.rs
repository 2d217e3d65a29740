//! Memory planning: dead buffers written again by later kernels (same values as unplanned
//! runs), run statistics, and the planned peak of an MLP training step.

use tandem_graph::{Adam, Graph, Initializer, Optimizer, Output, Session, SessionOptions};
use tandem_ir::{CrossEntropyOptions, EmitExt, Functional};
use tandem_tensor::{DType, Tensor};

/// `k1 = exp(2x)` (fused), `m = softmax(k1)`, `k2 = tanh(m + 1)` (fused): `k1` is dead when
/// `k2` runs, so `k2` writes into `k1`'s buffer.
fn two_kernels(g: &Graph, x: &Output) -> Output {
    let k1 = g.exp(&g.mul_scalar(x, 2.0).unwrap()).unwrap();
    let m = g.softmax(&k1, 0).unwrap();
    g.tanh(&g.add_scalar(&m, 1.0).unwrap()).unwrap()
}

fn input(n: usize) -> Tensor {
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    Tensor::from_vec(v, &[n]).unwrap()
}

#[test]
fn a_kernel_writes_into_a_dead_buffer_and_values_are_unchanged() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(1000)]).unwrap();
    let y = two_kernels(&g, &x);
    let s = Session::new(&g).unwrap();
    let plan = s.explain(&[&y], &[&x]).unwrap();
    assert!(plan.contains("reuses %"), "{plan}");
    let plain = Session::with_options(&g, SessionOptions { optimize: false }).unwrap();
    let want = plain.run(&[&y], &[(&x, &input(1000))]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    let run = s.callable(&[&y], &[&x]).unwrap();
    for _ in 0..3 {
        let (out, stats) = run.run_with_stats(&[input(1000)]).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), want);
        assert_eq!(stats.reused_bytes, 4000, "{stats:?}");
        // k1, m and k2 are 4000 bytes each; k2 reuses k1's buffer, so at most two live.
        assert_eq!(stats.total_bytes, 12000, "{stats:?}");
        assert_eq!(stats.peak_bytes, 8000, "{stats:?}");
    }
}

#[test]
fn a_buffer_still_held_by_the_caller_is_not_overwritten() {
    // `k1` is fetched: the plan must not give its buffer to `k2`.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(64)]).unwrap();
    let k1 = g.exp(&g.mul_scalar(&x, 2.0).unwrap()).unwrap();
    let m = g.softmax(&k1, 0).unwrap();
    let k2 = g.tanh(&g.add_scalar(&m, 1.0).unwrap()).unwrap();
    let s = Session::new(&g).unwrap();
    let out = s.run(&[&k1, &k2], &[(&x, &input(64))]).unwrap();
    let plain = Session::with_options(&g, SessionOptions { optimize: false }).unwrap();
    let want = plain.run(&[&k1, &k2], &[(&x, &input(64))]).unwrap();
    assert_eq!(
        out[0].to_vec::<f32>().unwrap(),
        want[0].to_vec::<f32>().unwrap()
    );
    assert_eq!(
        out[1].to_vec::<f32>().unwrap(),
        want[1].to_vec::<f32>().unwrap()
    );
}

fn linear(g: &Graph, name: &str, x: &Output, inp: usize, out: usize) -> Output {
    let _s = g.scope(name);
    let init = Initializer::Uniform {
        low: -0.05,
        high: 0.05,
        seed: None,
    };
    let w = g
        .variable_with("weight", &[out, inp], DType::F32, init.clone(), true)
        .unwrap();
    let b = g
        .variable_with("bias", &[out], DType::F32, init, true)
        .unwrap();
    g.linear(x, &w, Some(&b)).unwrap()
}

#[test]
fn mlp_training_step_peak_is_below_the_sum_of_its_values() {
    let batch = 64;
    let g = Graph::new();
    g.set_seed(1).unwrap();
    let x = g.placeholder("x", DType::F32, &[None, Some(784)]).unwrap();
    let y = g.placeholder("y", DType::I64, &[None]).unwrap();
    let h = g.relu(&linear(&g, "fc1", &x, 784, 128)).unwrap();
    let logits = linear(&g, "fc2", &h, 128, 10);
    let loss = g
        .cross_entropy(&logits, &y, CrossEntropyOptions::default())
        .unwrap();
    let train = Adam::new(1e-3).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let step = s.callable(&[&loss, &train], &[&x, &y]).unwrap();
    let xs = input(batch * 784).reshape(&[batch as isize, 784]).unwrap();
    let ys = Tensor::from_vec((0..batch as i64).map(|i| i % 10).collect(), &[batch]).unwrap();
    let (_, stats) = step.run_with_stats(&[xs, ys]).unwrap();
    assert!(stats.peak_bytes < stats.total_bytes, "{stats:?}");
    // Hand-computed bound: the largest values of the step are the weight gradient of fc1
    // (784 x 128 floats) and the transposed input it is computed from (64 x 784); with the
    // activations (64 x 128 twice, 64 x 10 a few times) and small vectors, a step that drops
    // values at their last use never holds more than both large values plus 64 KiB.
    let bound = (784 * 128 + batch * 784) * 4 + 64 * 1024;
    assert!(stats.peak_bytes <= bound, "{stats:?} > {bound}");
}
