//! Fusion passes: what they rewrite, and that fused plans compute what unfused plans do
//! (bit for bit: the fused kernels round every step in the tensor's dtype like the unfused
//! kernels), including broadcasting, non-contiguous inputs and sizes around the block size.

use proptest::prelude::*;
use tandem_graph::fusion::{ElementwiseFusion, MatMulBiasFusion};
use tandem_graph::passes::{Pass, Prune};
use tandem_graph::plan::{PlanGraph, PlanOp};
use tandem_graph::{Graph, Output, Session, SessionOptions};
use tandem_ir::{EmitExt, Functional};
use tandem_tensor::{DType, Tensor};

fn kernels(pg: &PlanGraph) -> Vec<String> {
    pg.live()
        .into_iter()
        .filter_map(|i| pg.node(i))
        .filter_map(|n| match &n.op {
            PlanOp::Kernel(k) => Some(k.name().to_string()),
            _ => None,
        })
        .collect()
}

fn ops_of(pg: &PlanGraph) -> Vec<String> {
    pg.live()
        .into_iter()
        .filter_map(|i| pg.node(i).map(|n| n.op.name()))
        .collect()
}

fn run_both(
    g: &Graph,
    fetch: &[&Output],
    feeds: &[(&Output, &Tensor)],
) -> (Vec<Tensor>, Vec<Tensor>) {
    let fast = Session::new(g).unwrap().run(fetch, feeds).unwrap();
    let plain = Session::with_options(g, SessionOptions { optimize: false })
        .unwrap()
        .run(fetch, feeds)
        .unwrap();
    (fast, plain)
}

fn same(a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape());
    assert_eq!(a.dtype(), b.dtype());
    let (x, y) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
    for (p, q) in x.iter().zip(&y) {
        assert!(p == q || (p.is_nan() && q.is_nan()), "{p} != {q}");
    }
}

#[test]
fn elementwise_chain_becomes_one_kernel() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(3)]).unwrap();
    let b = g.placeholder("b", DType::F32, &[Some(3)]).unwrap();
    let y = g.add(&x, &b).unwrap();
    let y = g.tanh(&g.mul_scalar(&y, 2.0).unwrap()).unwrap();
    let y = g.relu(&g.sub(&y, &x).unwrap()).unwrap();
    // `e` is fetched too: it stays a separate value, the rest fuses.
    let e = g.exp(&x).unwrap();
    let z = g.mul(&y, &e).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&z, &e], &[&x, &b]).unwrap();
    assert!(ElementwiseFusion.run(&mut pg).unwrap());
    Prune.run(&mut pg).unwrap();
    let ops = ops_of(&pg);
    assert_eq!(kernels(&pg).len(), 1, "{ops:?}");
    assert!(ops.iter().any(|o| o == "exp"), "{ops:?}");
    assert!(!ops.iter().any(|o| o == "tanh" || o == "relu"), "{ops:?}");
    // The fused kernel reads x, b and e, and is what z resolves to.
    let root = pg.node(pg.outputs[0]).unwrap();
    assert!(matches!(root.op, PlanOp::Kernel(_)));
    assert_eq!(root.inputs.len(), 3);
    assert!(!ElementwiseFusion.run(&mut pg).unwrap());

    let xt = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 0.25, 3.0, -0.75], &[2, 3]).unwrap();
    let bt = Tensor::from_vec(vec![0.1f32, -0.2, 0.3], &[3]).unwrap();
    let (fast, plain) = run_both(&g, &[&z, &e], &[(&x, &xt), (&b, &bt)]);
    same(&fast[0], &plain[0]);
    same(&fast[1], &plain[1]);
}

#[test]
fn chain_of_adds_is_one_kernel() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, &[Some(17)]).unwrap();
    let one = g.constant(Tensor::ones(&[17], DType::F64)).unwrap();
    let mut v = x.clone();
    for _ in 0..300 {
        v = g.add(&v, &one).unwrap();
    }
    let s = Session::new(&g).unwrap();
    let text = s.explain(&[&v], &[&x]).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains("fused(addx300)"), "{text}");
    let t = Tensor::full(&[17], 0.5, DType::F64);
    let out = s.run(&[&v], &[(&x, &t)]).unwrap();
    assert_eq!(out[0].to_vec::<f64>().unwrap(), vec![300.5; 17]);
}

#[test]
fn values_used_outside_are_not_swallowed() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(4)]).unwrap();
    let a = g.exp(&x).unwrap();
    let b = g.tanh(&a).unwrap();
    // `a` also feeds a reduction: it must stay materialized.
    let s_ = g.sum(&a, &[0], false).unwrap();
    let c = g.add_scalar(&b, 1.0).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&c, &s_], &[&x]).unwrap();
    assert!(ElementwiseFusion.run(&mut pg).unwrap());
    Prune.run(&mut pg).unwrap();
    let ops = ops_of(&pg);
    assert!(ops.iter().any(|o| o == "exp"), "{ops:?}");
    assert_eq!(kernels(&pg).len(), 1, "{ops:?}");
    assert!(!ops.iter().any(|o| o == "tanh"), "{ops:?}");
}

#[test]
fn other_dtypes_are_not_fused() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::I64, &[Some(4)]).unwrap();
    let y = g.relu(&g.add(&x, &x).unwrap()).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&y], &[&x]).unwrap();
    assert!(!ElementwiseFusion.run(&mut pg).unwrap());
}

#[test]
fn matmul_bias_relu_becomes_one_kernel() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(5)]).unwrap();
    let w = g
        .variable(
            "w",
            Tensor::from_vec((0..15).map(|i| (i as f32 - 7.0) / 4.0).collect(), &[3, 5]).unwrap(),
        )
        .unwrap();
    let b = g
        .variable(
            "b",
            Tensor::from_vec(vec![0.5f32, -0.25, 0.0], &[3]).unwrap(),
        )
        .unwrap();
    let h = g.relu(&g.linear(&x, &w, Some(&b)).unwrap()).unwrap();
    let o = g.linear(&x, &w, Some(&b)).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&h], &[&x]).unwrap();
    assert!(MatMulBiasFusion.run(&mut pg).unwrap());
    Prune.run(&mut pg).unwrap();
    assert_eq!(kernels(&pg), vec!["matmul_bias_relu".to_string()]);
    let ops = ops_of(&pg);
    assert!(
        !ops.iter()
            .any(|o| o == "matmul" || o == "add" || o == "relu"),
        "{ops:?}"
    );
    let mut pg = s.plan_graph(&[&o], &[&x]).unwrap();
    assert!(MatMulBiasFusion.run(&mut pg).unwrap());
    Prune.run(&mut pg).unwrap();
    assert_eq!(kernels(&pg), vec!["matmul_bias".to_string()]);

    for rows in [1usize, 3, 17] {
        let xt = Tensor::from_vec(
            (0..rows * 5)
                .map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0)
                .collect(),
            &[rows, 5],
        )
        .unwrap();
        let (fast, plain) = run_both(&g, &[&h, &o], &[(&x, &xt)]);
        same(&fast[0], &plain[0]);
        same(&fast[1], &plain[1]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Random elementwise trees on broadcast, permuted and sliced inputs of odd sizes: the
    /// fused plan equals the unfused one exactly.
    #[test]
    fn fused_equals_unfused(
        rows in prop_oneof![Just(1usize), Just(3), Just(17), Just(70)],
        cols in prop_oneof![Just(1usize), Just(5), Just(16), Just(33)],
        ops in proptest::collection::vec(0u8..9, 2..12),
        f64_ in any::<bool>(),
    ) {
        let dt = if f64_ { DType::F64 } else { DType::F32 };
        let g = Graph::new();
        let a = g.placeholder("a", dt, &[None, Some(cols)]).unwrap();
        let bias = g.placeholder("bias", dt, &[Some(cols)]).unwrap();
        let c = g.placeholder("c", dt, &[Some(cols), None]).unwrap();
        let ct = g.transpose(&c, 0, 1).unwrap();
        let mut v = g.add(&a, &bias).unwrap();
        for (k, op) in ops.iter().enumerate() {
            v = match op {
                0 => g.tanh(&v).unwrap(),
                1 => g.mul(&v, &ct).unwrap(),
                2 => g.sub(&bias, &v).unwrap(),
                3 => g.relu(&v).unwrap(),
                4 => g.mul_scalar(&v, 0.5 + k as f64).unwrap(),
                5 => g.sigmoid(&v).unwrap(),
                6 => g.exp(&g.mul_scalar(&v, -0.1).unwrap()).unwrap(),
                7 => g.add(&v, &v).unwrap(),
                _ => g.unary(tandem_tensor::UnaryOp::Square, &v).unwrap(),
            };
        }
        let n = rows * cols;
        let at = Tensor::from_vec((0..n).map(|i| ((i * 13 % 29) as f64 - 14.0) / 7.0).collect::<Vec<_>>(), &[rows, cols]).unwrap().cast(dt).unwrap();
        let bt = Tensor::from_vec((0..cols).map(|i| i as f64 / 5.0).collect::<Vec<_>>(), &[cols]).unwrap().cast(dt).unwrap();
        // A sliced, permuted view: columns 1.. of a wider tensor, transposed.
        let wide = Tensor::from_vec((0..cols * (rows + 1)).map(|i| (i % 7) as f64 / 3.0 - 1.0).collect::<Vec<_>>(), &[cols, rows + 1]).unwrap().cast(dt).unwrap();
        let cview = wide.narrow(1, 1, rows).unwrap();
        let (fast, plain) = run_both(&g, &[&v], &[(&a, &at), (&bias, &bt), (&c, &cview)]);
        let (x, y) = (fast[0].to_f64_vec().unwrap(), plain[0].to_f64_vec().unwrap());
        prop_assert_eq!(fast[0].shape(), plain[0].shape());
        for (p, q) in x.iter().zip(&y) {
            prop_assert!(p == q || (p.is_nan() && q.is_nan()), "{} != {}", p, q);
        }
    }
}
