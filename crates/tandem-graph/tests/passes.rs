//! One test per compiler pass showing what it rewrites, and a property test that optimized
//! and unoptimized plans compute the same values on random graphs.

use proptest::prelude::*;
use tandem_graph::passes::{
    AlgebraicSimplification, CommonSubexpressionElimination, ConstantFolding, Pass, Prune,
    TransposedProduct,
};
use tandem_graph::plan::{PlanGraph, PlanOp};
use tandem_graph::{Graph, Output, Session, SessionOptions};
use tandem_ir::{Emit, EmitExt, Op};
use tandem_tensor::{DType, Tensor, UnaryOp};

fn ops_of(pg: &PlanGraph) -> Vec<String> {
    pg.live()
        .into_iter()
        .filter_map(|i| pg.node(i).map(|n| n.op.name()))
        .collect()
}

#[test]
fn prune_removes_what_no_fetch_needs() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(2)]).unwrap();
    let y = g.exp(&x).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&y], &[&x]).unwrap();
    let dead = pg.node(1).unwrap().clone();
    pg.add(dead);
    assert_eq!(pg.len(), 3);
    assert!(Prune.run(&mut pg).unwrap());
    assert_eq!(pg.len(), 2);
    assert!(!Prune.run(&mut pg).unwrap());
}

#[test]
fn transposed_product_writes_the_product_in_the_wanted_layout() {
    // (x^T g)^T, the weight gradient of `linear`, becomes g^T x: no transposed copy, and the
    // double transpose of x folds away.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(3)]).unwrap();
    let d = g.placeholder("d", DType::F32, &[None, Some(2)]).unwrap();
    let xt = g.transpose(&x, 0, 1).unwrap();
    let w = g.transpose(&g.matmul2(&xt, &d).unwrap(), 0, 1).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&w], &[&x, &d]).unwrap();
    assert!(TransposedProduct.run(&mut pg).unwrap());
    while AlgebraicSimplification.run(&mut pg).unwrap() {}
    Prune.run(&mut pg).unwrap();
    let ops = ops_of(&pg);
    assert_eq!(
        ops.iter().filter(|o| o.contains("permute")).count(),
        1,
        "{ops:?}"
    );
    assert!(!TransposedProduct.run(&mut pg).unwrap());
    // Same values as the unoptimized plan, and a contiguous [2, 3] result.
    let xv = Tensor::from_vec(
        vec![1f32, 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.],
        &[4, 3],
    )
    .unwrap();
    let dv = Tensor::from_vec(vec![1f32, -1., 0.5, 2., -3., 1., 0., 4.], &[4, 2]).unwrap();
    let fast = s.run(&[&w], &[(&x, &xv), (&d, &dv)]).unwrap();
    let plain = Session::with_options(&g, SessionOptions { optimize: false })
        .unwrap()
        .run(&[&w], &[(&x, &xv), (&d, &dv)])
        .unwrap();
    assert_eq!(fast[0].shape(), &[2, 3]);
    assert_eq!(
        fast[0].to_vec::<f32>().unwrap(),
        plain[0].to_vec::<f32>().unwrap()
    );
}

#[test]
fn constant_folding_runs_constant_subgraphs_once() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None]).unwrap();
    let a = g.constant_scalar(2.0f32).unwrap();
    let b = g.constant_scalar(3.0f32).unwrap();
    let c = g.exp(&g.add(&a, &b).unwrap()).unwrap();
    let y = g.mul(&x, &c).unwrap();
    // Random ops are never folded.
    let r = g
        .random_like(
            &a,
            tandem_ir::Distribution::Uniform {
                low: 0.0,
                high: 1.0,
            },
        )
        .unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&y, &r], &[&x]).unwrap();
    assert!(ConstantFolding.run(&mut pg).unwrap());
    Prune.run(&mut pg).unwrap();
    let ops = ops_of(&pg);
    assert_eq!(
        ops.iter().filter(|o| o.starts_with("constant")).count(),
        2,
        "{ops:?}"
    );
    assert!(!ops.iter().any(|o| o == "exp" || o == "add"), "{ops:?}");
    assert!(ops.iter().any(|o| o == "random"), "{ops:?}");
    let folded = pg
        .live()
        .into_iter()
        .filter_map(|i| pg.node(i))
        .find_map(|n| match &n.op {
            PlanOp::Op(Op::Constant(t)) if n.name == c.name() => Some(t.item().unwrap()),
            _ => None,
        })
        .unwrap();
    assert!((folded - 5f64.exp()).abs() < 1e-3);
}

#[test]
fn cse_merges_identical_ops() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(3)]).unwrap();
    let a = g.exp(&x).unwrap();
    let b = g.exp(&x).unwrap();
    let y = g.add(&a, &b).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&y], &[&x]).unwrap();
    assert!(CommonSubexpressionElimination.run(&mut pg).unwrap());
    let ops = ops_of(&pg);
    assert_eq!(ops.iter().filter(|o| *o == "exp").count(), 1, "{ops:?}");
    let add = pg.node(pg.outputs[0]).unwrap();
    assert_eq!(add.inputs[0], add.inputs[1]);
}

#[test]
fn algebraic_simplification_removes_identities() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(3)]).unwrap();
    let one = g.constant(Tensor::ones(&[3], DType::F32)).unwrap();
    let v = g.mul_scalar(&x, 1.0).unwrap();
    let v = g.add_scalar(&v, 0.0).unwrap();
    let v = g.mul(&one, &v).unwrap();
    let v = g.transpose(&v, 0, 1).unwrap();
    let v = g.transpose(&v, 0, 1).unwrap();
    let v = g.cast(&v, DType::F32).unwrap();
    let v = g.emit(Op::StopGradient, &[&v]).unwrap();
    let v = g.identity(&v).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&v], &[&x]).unwrap();
    let mut rounds = 0;
    while AlgebraicSimplification.run(&mut pg).unwrap() {
        rounds += 1;
        assert!(rounds < 20);
    }
    Prune.run(&mut pg).unwrap();
    assert_eq!(ops_of(&pg), vec!["feed[0]".to_string()]);
    // Reshape chains collapse to one reshape of the source.
    let r = g.reshape(&x, &[3, -1]).unwrap();
    let r = g.flatten(&r, 0, 1).unwrap();
    let r = g.reshape(&r, &[-1, 1]).unwrap();
    let mut pg = s.plan_graph(&[&r], &[&x]).unwrap();
    while AlgebraicSimplification.run(&mut pg).unwrap() {}
    Prune.run(&mut pg).unwrap();
    assert_eq!(
        ops_of(&pg),
        vec!["feed[0]".to_string(), "reshape([-1, 1])".to_string()]
    );
}

#[test]
fn sum_to_like_of_a_value_of_the_same_shape_is_removed() {
    // Shapes with an unknown batch size: `sum_to_like(v, t)` is the identity when `v` is
    // computed with `t`'s shape (an elementwise function of it, a pooling gradient), and must
    // stay when the two only share a static shape.
    let g = Graph::new();
    let x = g
        .placeholder("x", DType::F32, &[None, Some(2), Some(4), Some(4)])
        .unwrap();
    let other = g
        .placeholder("o", DType::F32, &[None, Some(2), Some(4), Some(4)])
        .unwrap();
    let r = g.relu(&x).unwrap();
    let p = tandem_tensor::Pool2dParams::square(2, 2, 0);
    let gy = g
        .placeholder("gy", DType::F32, &[None, Some(2), Some(2), Some(2)])
        .unwrap();
    let d = g.emit(Op::MaxPool2dBackward(p), &[&gy, &r]).unwrap();
    let d = g.mul(&d, &g.tanh(&r).unwrap()).unwrap();
    let kept = g.sum_to_like(&d, &x).unwrap();
    let summed = g.sum_to_like(&other, &x).unwrap();
    let s = Session::new(&g).unwrap();
    let mut pg = s.plan_graph(&[&kept, &summed], &[&x, &other, &gy]).unwrap();
    while AlgebraicSimplification.run(&mut pg).unwrap() {}
    Prune.run(&mut pg).unwrap();
    let ops = ops_of(&pg);
    assert_eq!(
        ops.iter().filter(|o| *o == "sum_to_like").count(),
        1,
        "{ops:?}"
    );
    // The kept one sums a batch of 3 into a batch of 1 (feeds of different batch sizes).
    let xs = Tensor::ones(&[1, 2, 4, 4], DType::F32);
    let os = Tensor::ones(&[3, 2, 4, 4], DType::F32);
    let gys = Tensor::ones(&[1, 2, 2, 2], DType::F32);
    let out = s
        .run(&[&kept, &summed], &[(&x, &xs), (&other, &os), (&gy, &gys)])
        .unwrap();
    assert_eq!(out[0].shape(), &[1, 2, 4, 4]);
    assert_eq!(out[1].shape(), &[1, 2, 4, 4]);
    assert!(out[1].to_vec::<f32>().unwrap().iter().all(|&v| v == 3.0));
}

/// One random op applied to the values built so far.
#[derive(Clone, Debug)]
enum Step {
    Tanh(usize),
    AddScalar(usize, i8),
    MulScalar(usize, i8),
    Add(usize, usize),
    Mul(usize, usize),
    MatMulConst(usize),
    DoubleTranspose(usize),
    SumBroadcast(usize),
    Duplicate(usize),
    ConstChain(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        any::<usize>().prop_map(Step::Tanh),
        (any::<usize>(), -1i8..2).prop_map(|(a, b)| Step::AddScalar(a, b)),
        (any::<usize>(), -1i8..3).prop_map(|(a, b)| Step::MulScalar(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Step::Add(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Step::Mul(a, b)),
        any::<usize>().prop_map(Step::MatMulConst),
        any::<usize>().prop_map(Step::DoubleTranspose),
        any::<usize>().prop_map(Step::SumBroadcast),
        any::<usize>().prop_map(Step::Duplicate),
        any::<usize>().prop_map(Step::ConstChain),
    ]
}

fn build(g: &Graph, x: &Output, steps: &[Step]) -> Vec<Output> {
    let mut vals = vec![x.clone()];
    let m = Tensor::from_vec(
        (0..16).map(|i| (i as f64 - 7.5) / 8.0).collect::<Vec<_>>(),
        &[4, 4],
    )
    .unwrap();
    for s in steps {
        let pick = |i: &usize| vals[i % vals.len()].clone();
        let v = match s {
            Step::Tanh(a) => g.tanh(&pick(a)),
            Step::AddScalar(a, k) => g.add_scalar(&pick(a), *k as f64),
            Step::MulScalar(a, k) => g.mul_scalar(&pick(a), *k as f64),
            Step::Add(a, b) => g.add(&pick(a), &pick(b)),
            Step::Mul(a, b) => g.mul(&pick(a), &pick(b)),
            Step::MatMulConst(a) => {
                let c = g.constant(m.clone()).unwrap();
                g.emit(Op::MatMul, &[&pick(a), &c])
            }
            Step::DoubleTranspose(a) => {
                let t = g.transpose(&pick(a), 0, 1).unwrap();
                g.transpose(&t, 0, 1)
            }
            Step::SumBroadcast(a) => {
                let v = pick(a);
                let s = g.sum(&v, &[1], true).unwrap();
                g.add(&v, &s)
            }
            Step::Duplicate(a) => {
                let v = pick(a);
                let p = g.unary(UnaryOp::Sin, &v).unwrap();
                let q = g.unary(UnaryOp::Sin, &v).unwrap();
                g.sub(&p, &q)
            }
            Step::ConstChain(a) => {
                let c = g.constant(Tensor::full(&[4], 0.5, DType::F64)).unwrap();
                let c = g.exp(&g.mul_scalar(&c, 2.0).unwrap()).unwrap();
                g.mul(&pick(a), &c)
            }
        };
        vals.push(v.unwrap());
    }
    vals
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn optimized_plans_match_unoptimized(steps in proptest::collection::vec(step(), 1..14), batch in 1usize..5) {
        let g = Graph::new();
        let x = g.placeholder("x", DType::F64, &[None, Some(4)]).unwrap();
        let vals = build(&g, &x, &steps);
        let fetches: Vec<&Output> = vals.iter().skip(1).collect();
        let data: Vec<f64> = (0..batch * 4).map(|i| ((i * 37 % 11) as f64 - 5.0) / 7.0).collect();
        let t = Tensor::from_vec(data, &[batch, 4]).unwrap();
        let fast = Session::new(&g).unwrap().run(&fetches, &[(&x, &t)]).unwrap();
        let slow = Session::with_options(&g, SessionOptions { optimize: false })
            .unwrap()
            .run(&fetches, &[(&x, &t)])
            .unwrap();
        for (a, b) in fast.iter().zip(&slow) {
            prop_assert_eq!(a.shape(), b.shape());
            let (a, b) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
            for (p, q) in a.iter().zip(&b) {
                prop_assert!(p == q || (p - q).abs() <= 1e-12 * q.abs().max(1.0) || (p.is_nan() && q.is_nan()), "{} vs {}", p, q);
            }
        }
    }
}

/// A fused kernel put in place of `relu(a + b)` by a custom pass.
#[derive(Debug)]
struct AddRelu;

impl tandem_graph::plan::Kernel for AddRelu {
    fn name(&self) -> &str {
        "fused_add_relu"
    }
    fn run(&self, inputs: &[&Tensor], _out: Option<Tensor>) -> tandem_tensor::Result<Tensor> {
        inputs[0]
            .binary(tandem_tensor::BinaryOp::Add, inputs[1])?
            .unary(UnaryOp::Relu)
    }
}

struct FuseAddRelu;

impl Pass for FuseAddRelu {
    fn name(&self) -> &str {
        "fuse_add_relu"
    }
    fn run(&self, plan: &mut PlanGraph) -> tandem_tensor::Result<bool> {
        let mut changed = false;
        for id in plan.live() {
            let Some(n) = plan.node(id) else { continue };
            if !matches!(n.op, PlanOp::Op(Op::Unary(UnaryOp::Relu))) {
                continue;
            }
            let add = n.inputs[0];
            let Some(a) = plan.node(add) else { continue };
            if !matches!(a.op, PlanOp::Op(Op::Binary(tandem_tensor::BinaryOp::Add))) {
                continue;
            }
            let fused = tandem_graph::plan::PlanNode {
                name: format!("{}+{}", a.name, n.name),
                op: PlanOp::Kernel(std::sync::Arc::new(AddRelu)),
                inputs: a.inputs.clone(),
                control: vec![],
                info: n.info.clone(),
            };
            let new = plan.add(fused);
            plan.replace_uses(id, new);
            plan.remove(id);
            changed = true;
        }
        Ok(changed)
    }
}

#[test]
fn a_pass_can_replace_a_subgraph_by_a_kernel() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(4)]).unwrap();
    let b = g
        .constant(Tensor::from_vec(vec![-1.0f32, 0.0, 1.0, 2.0], &[4]).unwrap())
        .unwrap();
    let y = g.relu(&g.add(&x, &b).unwrap()).unwrap();
    let passes: Vec<Box<dyn Pass>> = vec![Box::new(FuseAddRelu), Box::new(Prune)];
    let s = Session::with_passes(&g, passes).unwrap();
    let text = s.explain(&[&y], &[&x]).unwrap();
    assert!(
        text.contains("fused_add_relu") && !text.contains("[add]"),
        "{text}"
    );
    let t = Tensor::from_vec(vec![0.5f32, -0.5, 0.0, 1.0], &[4]).unwrap();
    let out = s.run(&[&y], &[(&x, &t)]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![0.0, 0.0, 1.0, 3.0]);
}
