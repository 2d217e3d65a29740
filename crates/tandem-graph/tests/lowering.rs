//! Lowering and buffers kept between runs: the matmul and relu-mask kernels compute exactly
//! what the ops they replace compute (odd sizes, transposed and sliced operands, with and
//! without an output buffer), whole graphs give the same numbers lowered or not, and a
//! kept buffer is written again on the next run but never while the caller holds it.

use proptest::prelude::*;
use tandem_graph::lower::{MaskMul, MatMulKernel};
use tandem_graph::plan::Kernel;
use tandem_graph::{Graph, Session, SessionOptions};
use tandem_ir::{eval, EmitExt, Functional, Op};
use tandem_tensor::{BinaryOp, DType, Tensor};

fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(7);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64, dt: DType) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape)
        .unwrap()
        .cast(dt)
        .unwrap()
}

/// `g * cast(x > c)` through the three ops, in either operand order.
fn mask_mul_reference(g: &Tensor, x: &Tensor, c: f64, mask_first: bool) -> Tensor {
    let gt = eval(
        &Op::Scalar {
            op: BinaryOp::Gt,
            value: c,
            scalar_on_left: false,
        },
        &[x],
    )
    .unwrap();
    let m = eval(&Op::Cast(g.dtype()), &[&gt]).unwrap();
    let ins = if mask_first { [&m, g] } else { [g, &m] };
    eval(&Op::Binary(BinaryOp::Mul), &ins).unwrap()
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// The fused mask product equals the three ops bit for bit, on contiguous, transposed
    /// and broadcast inputs, with and without a buffer to write into.
    #[test]
    fn mask_mul_equals_the_ops(
        rows in prop_oneof![Just(1usize), Just(3), Just(17), Just(300)],
        cols in prop_oneof![Just(1usize), Just(5), Just(33), Just(130)],
        c in prop_oneof![Just(0.0f64), Just(0.25)],
        layout in 0u8..3,
        mask_first in any::<bool>(),
        f64_ in any::<bool>(),
    ) {
        let dt = if f64_ { DType::F64 } else { DType::F32 };
        let g = tensor(&[rows, cols], 1, dt);
        let x = match layout {
            0 => tensor(&[rows, cols], 2, dt),
            1 => tensor(&[cols, rows], 3, dt).permute(&[1, 0]).unwrap(),
            _ => tensor(&[cols], 4, dt).expand(&[rows, cols]).unwrap(),
        };
        let want = mask_mul_reference(&g, &x, c, mask_first);
        let k = MaskMul::new(c, mask_first);
        let got = k.run(&[&g, &x], None).unwrap();
        prop_assert_eq!(got.shape(), want.shape());
        prop_assert_eq!(bits(&got), bits(&want));
        let buf = Tensor::full(&[rows, cols], 9.0, dt);
        let got = k.run(&[&g, &x], Some(buf)).unwrap();
        prop_assert_eq!(bits(&got), bits(&want));
    }

    /// The matmul kernel equals `Tensor::matmul` bit for bit, with transposed and sliced
    /// operands and with a (right or wrong shaped) buffer.
    #[test]
    fn matmul_kernel_equals_tensor_matmul(
        m in prop_oneof![Just(1usize), Just(3), Just(17), Just(64)],
        k in prop_oneof![Just(1usize), Just(7), Just(64), Just(300)],
        n in prop_oneof![Just(1usize), Just(5), Just(33), Just(128)],
        lhs_t in any::<bool>(),
        rhs_slice in any::<bool>(),
        f64_ in any::<bool>(),
    ) {
        let dt = if f64_ { DType::F64 } else { DType::F32 };
        let a = if lhs_t {
            tensor(&[k, m], 5, dt).permute(&[1, 0]).unwrap()
        } else {
            tensor(&[m, k], 5, dt)
        };
        let b = if rhs_slice {
            tensor(&[k, n + 3], 6, dt).slice(1, 2, (n + 2) as isize, 1).unwrap()
        } else {
            tensor(&[k, n], 6, dt)
        };
        let want = a.matmul(&b).unwrap();
        let got = MatMulKernel.run(&[&a, &b], None).unwrap();
        prop_assert_eq!(got.shape(), want.shape());
        prop_assert_eq!(bits(&got), bits(&want));
        let got = MatMulKernel.run(&[&a, &b], Some(Tensor::full(&[m, n], 3.0, dt))).unwrap();
        prop_assert_eq!(bits(&got), bits(&want));
        let wrong = Tensor::zeros(&[m + 1, n], dt);
        let got = MatMulKernel.run(&[&a, &b], Some(wrong)).unwrap();
        prop_assert_eq!(bits(&got), bits(&want));
    }
}

/// A small MLP with a relu: forward and the gradients of its weights.
fn mlp() -> (Graph, tandem_graph::Output, Vec<tandem_graph::Output>) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(7)]).unwrap();
    let w1 = g.variable("w1", tensor(&[5, 7], 11, DType::F32)).unwrap();
    let b1 = g.variable("b1", tensor(&[5], 12, DType::F32)).unwrap();
    let w2 = g.variable("w2", tensor(&[3, 5], 13, DType::F32)).unwrap();
    let h = g.relu(&g.linear(&x, &w1, Some(&b1)).unwrap()).unwrap();
    let y = g.linear(&h, &w2, None).unwrap();
    let loss = g.sum(&g.square(&y).unwrap(), &[0, 1], false).unwrap();
    let grads: Vec<_> = g
        .gradients(&[&loss], &[&w1, &b1, &w2], None)
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    (g, x, grads)
}

/// Runs the optimized plan of `fetches` (fed `x`) and the unoptimized one on each of
/// `inputs` and asserts that every fetched value has the same shape and agrees within 1e-5
/// relative.
fn assert_optimized_agrees(
    g: &Graph,
    fetches: &[&tandem_graph::Output],
    x: &tandem_graph::Output,
    inputs: &[Tensor],
) {
    let plain = Session::with_options(g, SessionOptions { optimize: false }).unwrap();
    let run = Session::new(g).unwrap().callable(fetches, &[x]).unwrap();
    for xs in inputs {
        let want = plain.run(fetches, &[(x, xs)]).unwrap();
        let got = run.run(std::slice::from_ref(xs)).unwrap();
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(&want) {
            assert_eq!(a.shape(), b.shape());
            let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
            for (p, q) in a.iter().zip(&b) {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "{a:?} vs {b:?}");
            }
        }
    }
}

#[test]
fn lowered_plans_compute_what_unoptimized_plans_compute() {
    let (g, x, grads) = mlp();
    let fetches: Vec<&tandem_graph::Output> = grads.iter().collect();
    let s = Session::new(&g).unwrap();
    let plan = s.explain(&fetches, &[&x]).unwrap();
    assert!(plan.contains("matmul_into"), "{plan}");
    assert!(plan.contains("mask_mul"), "{plan}");
    assert!(plan.contains("matmul_bias_relu"), "{plan}");
    let inputs: Vec<Tensor> = [4usize, 4, 9, 1]
        .into_iter()
        .enumerate()
        .map(|(i, batch)| tensor(&[batch, 7], 20 + i as u64, DType::F32))
        .collect();
    assert_optimized_agrees(&g, &fetches, &x, &inputs);
}

#[test]
fn kept_buffers_are_written_again_but_never_while_the_caller_holds_them() {
    let g = Graph::new();
    let x = g
        .placeholder("x", DType::F32, &[Some(40), Some(30)])
        .unwrap();
    let w = g
        .placeholder("w", DType::F32, &[Some(30), Some(20)])
        .unwrap();
    // `p` is a kernel output that dies inside the run (kept), `q` is fetched.
    let p = g.matmul(&x, &w).unwrap();
    let q = g.tanh(&g.add_scalar(&p, 1.0).unwrap()).unwrap();
    let s = Session::new(&g).unwrap();
    let run = s.callable(&[&q], &[&x, &w]).unwrap();
    let feeds = |seed: u64| {
        [
            tensor(&[40, 30], seed, DType::F32),
            tensor(&[30, 20], seed + 1, DType::F32),
        ]
    };
    let plain = Session::with_options(&g, SessionOptions { optimize: false }).unwrap();
    let want = |seed: u64| {
        let f = feeds(seed);
        plain.run(&[&q], &[(&x, &f[0]), (&w, &f[1])]).unwrap()[0]
            .to_vec::<f32>()
            .unwrap()
    };
    let (first, stats) = run.run_with_stats(&feeds(1)).unwrap();
    assert_eq!(stats.kept_bytes, 0, "{stats:?}");
    assert!(run.plan().arena.bytes() > 0);
    let held = first[0].clone();
    let (second, stats) = run.run_with_stats(&feeds(3)).unwrap();
    assert!(stats.kept_bytes >= 40 * 20 * 4, "{stats:?}");
    assert_eq!(second[0].to_vec::<f32>().unwrap(), want(3));
    // The first result, still held, was not overwritten by the second run (nor the third).
    let (third, _) = run.run_with_stats(&feeds(5)).unwrap();
    assert_eq!(held.to_vec::<f32>().unwrap(), want(1));
    assert_eq!(third[0].to_vec::<f32>().unwrap(), want(5));
    assert_eq!(second[0].to_vec::<f32>().unwrap(), want(3));
}

/// A small CNN (two conv + relu + max-pool blocks, the second without a bias and with an
/// overlapping pooling) and the gradients of its parameters.
fn cnn(fetch_conv: bool) -> (Graph, tandem_graph::Output, Vec<tandem_graph::Output>) {
    use tandem_tensor::{Conv2dParams, Pool2dParams};
    let g = Graph::new();
    let x = g
        .placeholder("x", DType::F32, &[None, Some(2), Some(9), Some(9)])
        .unwrap();
    let w1 = g
        .variable("w1", tensor(&[3, 2, 3, 3], 31, DType::F32))
        .unwrap();
    let b1 = g.variable("b1", tensor(&[3], 32, DType::F32)).unwrap();
    let w2 = g
        .variable("w2", tensor(&[4, 3, 2, 2], 33, DType::F32))
        .unwrap();
    let w3 = g.variable("w3", tensor(&[2, 16], 34, DType::F32)).unwrap();
    let pad = Conv2dParams {
        padding: [1, 1],
        ..Default::default()
    };
    let c1 = g.conv2d(&x, &w1, Some(&b1), pad).unwrap();
    let h = g
        .max_pool2d(&g.relu(&c1).unwrap(), Pool2dParams::square(2, 2, 0))
        .unwrap();
    let c2 = g.conv2d(&h, &w2, None, Conv2dParams::default()).unwrap();
    let h = g
        .max_pool2d(&g.relu(&c2).unwrap(), Pool2dParams::square(2, 1, 0))
        .unwrap();
    let y = g.linear(&g.flatten(&h, 1, -1).unwrap(), &w3, None).unwrap();
    let mut loss = g.sum(&g.square(&y).unwrap(), &[0, 1], false).unwrap();
    if fetch_conv {
        // The first convolution is read by something else than its relu.
        let extra = g.sum(&c1, &[0, 1, 2, 3], false).unwrap();
        loss = g.add(&loss, &extra).unwrap();
    }
    let mut grads: Vec<_> = g
        .gradients(&[&loss], &[&w1, &b1, &w2, &w3], None)
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    grads.push(loss);
    (g, x, grads)
}

#[test]
fn conv_relu_and_pool_mask_kernels_compute_what_the_ops_compute() {
    for fetch_conv in [false, true] {
        let (g, x, outs) = cnn(fetch_conv);
        let fetches: Vec<&tandem_graph::Output> = outs.iter().collect();
        let s = Session::new(&g).unwrap();
        let plan = s.explain(&fetches, &[&x]).unwrap();
        let count = |what: &str| plan.matches(&format!("[{what}]")).count();
        // The relu masks join their pooling gradients; the shape-only sums between the
        // gradient ops are gone (one stays after the product, whose batch size is not known
        // to be the flattened input's). A convolution read only by its relu becomes one
        // kernel. When the loss also reads the first convolution, that one stays, and its
        // gradient (the masked pooling gradient plus the extra term) is one elementwise
        // kernel after the pooling gradient instead.
        let fused = if fetch_conv { 1 } else { 2 };
        assert_eq!(count("max_pool2d_backward_mask"), fused, "{plan}");
        assert_eq!(count("max_pool2d_backward"), 2 - fused, "{plan}");
        assert_eq!(count("mask_mul"), 0, "{plan}");
        let sums: Vec<&str> = plan
            .lines()
            .filter(|l| l.contains("[sum_to_like]"))
            .collect();
        assert!(sums.iter().all(|l| l.ends_with("[?, 16]")), "{plan}");
        assert_eq!(count("conv2d_relu"), fused, "{plan}");
        assert_eq!(count("conv2d"), 2 - fused, "{plan}");
        // The first convolution's weight and bias gradients (both fetched) come from one
        // kernel, read through two slices; the second convolution has no bias.
        assert_eq!(count("conv2d_weight_bias_grad"), 1, "{plan}");
        assert_eq!(count("conv2d_weight_grad"), 1, "{plan}");
        assert_eq!(plan.matches("[slice(").count(), 2, "{plan}");
        assert!(!plan.contains("sum(axes=[0, 2, 3]"), "{plan}");
        let inputs: Vec<Tensor> = [3usize, 3, 5, 1]
            .into_iter()
            .enumerate()
            .map(|(i, batch)| tensor(&[batch, 2, 9, 9], 40 + i as u64, DType::F32))
            .collect();
        assert_optimized_agrees(&g, &fetches, &x, &inputs);
    }
}

/// A bias gradient written by hand as `sum(g, [0, 2, 3], keepdim)` over the gradient that a
/// convolution's weight gradient reads joins that weight gradient's kernel too (a reshape to
/// `[1, O, 1, 1]` of a slice when `keepdim`); a sum over other axes does not. The fetched
/// values are the unoptimized plan's.
#[test]
fn hand_written_bias_gradients_join_the_weight_gradient() {
    use tandem_tensor::Conv2dParams;
    for (axes, keepdim, fused) in [
        (vec![0, 2, 3], true, true),
        (vec![0, 2, 3], false, true),
        (vec![0, 2], false, false),
    ] {
        let g = Graph::new();
        let x = g
            .placeholder("x", DType::F32, &[None, Some(2), Some(7), Some(6)])
            .unwrap();
        let w = g
            .variable("w", tensor(&[3, 2, 3, 3], 51, DType::F32))
            .unwrap();
        let pad = Conv2dParams {
            padding: [1, 0],
            ..Default::default()
        };
        let c = g.conv2d(&x, &w, None, pad).unwrap();
        let loss = g.sum(&g.square(&c).unwrap(), &[0, 1, 2, 3], false).unwrap();
        let grads: Vec<_> = g
            .gradients(&[&loss], &[&w, &c], None)
            .unwrap()
            .into_iter()
            .map(Option::unwrap)
            .collect();
        let db = g.sum(&grads[1], &axes, keepdim).unwrap();
        let fetches = [&grads[0], &db];
        let s = Session::new(&g).unwrap();
        let plan = s.explain(&fetches, &[&x]).unwrap();
        assert_eq!(
            plan.matches("[conv2d_weight_bias_grad]").count(),
            usize::from(fused),
            "{plan}"
        );
        assert_eq!(
            plan.contains("[reshape([1, 3, 1, 1])]"),
            fused && keepdim,
            "{plan}"
        );
        let inputs: Vec<Tensor> = [4usize, 1, 3]
            .into_iter()
            .enumerate()
            .map(|(i, batch)| tensor(&[batch, 2, 7, 6], 60 + i as u64, DType::F32))
            .collect();
        assert_optimized_agrees(&g, &fetches, &x, &inputs);
    }
}

/// A 300 -> 128 -> relu -> 10 MLP with a squared-error loss, trained by `opt`; returns the
/// graph, the input and the parameters.
fn wide_mlp() -> (Graph, tandem_graph::Output, Vec<tandem_graph::Output>) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(300)]).unwrap();
    let w1 = g
        .variable("w1", tensor(&[128, 300], 31, DType::F32))
        .unwrap();
    let b1 = g.variable("b1", tensor(&[128], 32, DType::F32)).unwrap();
    let w2 = g
        .variable("w2", tensor(&[10, 128], 33, DType::F32))
        .unwrap();
    (g, x, vec![w1, b1, w2])
}

fn wide_mlp_loss(
    g: &Graph,
    x: &tandem_graph::Output,
    p: &[tandem_graph::Output],
) -> tandem_graph::Output {
    let h = g.relu(&g.linear(x, &p[0], Some(&p[1])).unwrap()).unwrap();
    let y = g.linear(&h, &p[2], None).unwrap();
    g.mean(&g.square(&y).unwrap(), &[0, 1], false).unwrap()
}

#[test]
fn adam_computes_weight_gradients_inside_its_update_with_the_same_numbers() {
    use tandem_graph::{Adam, GradientDescent, Optimizer};
    let (g, x, params) = wide_mlp();
    let loss = wide_mlp_loss(&g, &x, &params);
    let train = Adam::new(1e-2).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let plan = s.explain(&[&train], &[&x]).unwrap();
    // Both weights' updates take their gradient's factors; the bias keeps its gradient.
    assert_eq!(plan.matches("apply_adam(matmul)").count(), 2, "{plan}");
    assert_eq!(plan.matches("[apply_adam,").count(), 1, "{plan}");
    let plain = Session::with_options(&g, SessionOptions { optimize: false }).unwrap();
    // Batches of 64 (128 x 64 x 300: the update splits over the pool), 17 and 1.
    for (i, batch) in [64usize, 17, 64, 1].into_iter().enumerate() {
        let xs = tensor(&[batch, 300], 40 + i as u64, DType::F32);
        s.run(&[&train], &[(&x, &xs)]).unwrap();
        plain.run(&[&train], &[(&x, &xs)]).unwrap();
    }
    for p in &params {
        let a = s.variable_value(p).unwrap().to_vec::<f32>().unwrap();
        let b = plain.variable_value(p).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }
    // The parameters moved (four steps of lr 1e-2).
    let w1 = s
        .variable_value(&params[0])
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    let w1_start = tensor(&[128, 300], 31, DType::F32).to_vec::<f32>().unwrap();
    let moved = w1
        .iter()
        .zip(&w1_start)
        .filter(|(a, b)| (*a - *b).abs() > 1e-3)
        .count();
    assert!(
        moved > w1.len() / 2,
        "{moved} of {} weights moved",
        w1.len()
    );

    // A gradient that is fetched too stays a value of the run (and the update reads it);
    // other update rules keep their gradient.
    let (g, x, params) = wide_mlp();
    let loss = wide_mlp_loss(&g, &x, &params);
    let p: Vec<&tandem_graph::Output> = params.iter().collect();
    let grads: Vec<_> = g
        .gradients(&[&loss], &p, None)
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let pairs: Vec<_> = grads.iter().zip(p.iter().copied()).collect();
    let train = Adam::new(1e-2).apply_gradients(&pairs).unwrap();
    let s = Session::new(&g).unwrap();
    let plan = s.explain(&[&train], &[&x]).unwrap();
    assert_eq!(plan.matches("apply_adam(matmul)").count(), 2, "{plan}");
    let plan = s.explain(&[&train, &grads[0]], &[&x]).unwrap();
    assert_eq!(plan.matches("apply_adam(matmul)").count(), 1, "{plan}");
    let xs = tensor(&[64, 300], 60, DType::F32);
    let out = s.run(&[&train, &grads[0]], &[(&x, &xs)]).unwrap();
    assert_eq!(out[1].shape(), &[128, 300]);
    let (g, x, params) = wide_mlp();
    let loss = wide_mlp_loss(&g, &x, &params);
    let train = GradientDescent::new(1e-2).minimize(&loss).unwrap();
    let plan = Session::new(&g).unwrap().explain(&[&train], &[&x]).unwrap();
    assert!(!plan.contains("(matmul)"), "{plan}");
}

#[test]
fn a_failed_run_with_product_gradients_changes_no_variable() {
    use tandem_graph::{Adam, Optimizer};
    // Targets of the wrong batch size fail the run in the loss; nothing is applied. Targets
    // that fit train.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(30)]).unwrap();
    let t = g.placeholder("t", DType::F32, &[None, Some(40)]).unwrap();
    let w = g.variable("w", tensor(&[40, 30], 51, DType::F32)).unwrap();
    let y = g.linear(&x, &w, None).unwrap();
    let d = g.sub(&y, &t).unwrap();
    let loss = g.mean(&g.square(&d).unwrap(), &[0, 1], false).unwrap();
    let train = Adam::new(1e-2).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let plan = s.explain(&[&train], &[&x, &t]).unwrap();
    assert!(plan.contains("apply_adam(matmul)"), "{plan}");
    let before = s.variable_value(&w).unwrap().to_vec::<f32>().unwrap();
    let xs = tensor(&[8, 30], 52, DType::F32);
    let short = tensor(&[7, 40], 53, DType::F32);
    assert!(s.run(&[&train], &[(&x, &xs), (&t, &short)]).is_err());
    assert_eq!(
        s.variable_value(&w).unwrap().to_vec::<f32>().unwrap(),
        before
    );
    let ts = tensor(&[8, 40], 54, DType::F32);
    s.run(&[&train], &[(&x, &xs), (&t, &ts)]).unwrap();
    assert_ne!(
        s.variable_value(&w).unwrap().to_vec::<f32>().unwrap(),
        before
    );
}
