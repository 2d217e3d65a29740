//! Autograd semantics: higher-order gradients, accumulation, retain_graph, no_grad, detach,
//! anomaly mode, and errors.

use tandem_eager::autograd::{self, BackwardOptions};
use tandem_eager::{detect_anomaly, no_grad, tensor, DType, Error, Tensor};

fn t64(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape).unwrap()
}

fn leaf(v: &[f64], shape: &[usize]) -> Tensor {
    t64(v, shape).requires_grad_(true)
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

#[test]
fn hello_world_adds_scalars() {
    let s = (tensor(3.0) + tensor(4.0)).unwrap();
    assert_eq!(s.item().unwrap(), 7.0);
    assert_eq!(s.dtype(), DType::F32);
}

#[test]
fn operators_with_scalars_on_either_side_and_results_on_the_right() {
    let a = t64(&[1.0, 2.0], &[2]);
    let b = t64(&[3.0, 5.0], &[2]);
    let r = (&a + (&b * 2.0)).unwrap();
    assert_eq!(r.to_vec::<f64>().unwrap(), vec![7.0, 12.0]);
    assert_eq!(
        (1.0 - &a).unwrap().to_vec::<f64>().unwrap(),
        vec![0.0, -1.0]
    );
    assert_eq!((6.0 / &a).unwrap().to_vec::<f64>().unwrap(), vec![6.0, 3.0]);
    assert_eq!((-&a).unwrap().to_vec::<f64>().unwrap(), vec![-1.0, -2.0]);
    assert_eq!(
        (a.clone() / b.clone()).unwrap().to_vec::<f64>().unwrap()[0],
        1.0 / 3.0
    );
    let bad = t64(&[1.0, 2.0, 3.0], &[3]);
    let e = (&a + &bad).unwrap_err();
    assert!(
        e.to_string().contains("[2]") && e.to_string().contains("[3]"),
        "{e}"
    );
}

#[test]
fn second_derivative_of_tanh() {
    let xs = [-1.5, -0.3, 0.0, 0.7, 2.0];
    let x = leaf(&xs, &[5]);
    let y = x.tanh().unwrap().sum_all().unwrap();
    let g = autograd::grad(&[y], std::slice::from_ref(&x), true)
        .unwrap()
        .remove(0)
        .unwrap();
    let s = g.sum_all().unwrap();
    let h = autograd::grad(&[s], &[x], false)
        .unwrap()
        .remove(0)
        .unwrap();
    let want: Vec<f64> = xs
        .iter()
        .map(|&v: &f64| -2.0 * v.tanh() * (1.0 - v.tanh() * v.tanh()))
        .collect();
    close(&h.to_vec::<f64>().unwrap(), &want, 1e-12);
}

#[test]
fn second_and_third_derivative_of_cube_via_backward() {
    let x = leaf(&[2.0, -1.0], &[2]);
    let y = x.pow(3.0).unwrap().sum_all().unwrap();
    y.backward_opts(
        None,
        BackwardOptions {
            retain_graph: true,
            create_graph: true,
        },
    )
    .unwrap();
    let g = x.grad().unwrap(); // 3x^2, differentiable
    assert!(g.requires_grad());
    close(&g.to_vec::<f64>().unwrap(), &[12.0, 3.0], 0.0);
    let d2 = autograd::grad(&[g.sum_all().unwrap()], std::slice::from_ref(&x), true)
        .unwrap()
        .remove(0)
        .unwrap();
    close(&d2.to_vec::<f64>().unwrap(), &[12.0, -6.0], 0.0); // 6x
    let d3 = autograd::grad(&[d2.sum_all().unwrap()], &[x], false)
        .unwrap()
        .remove(0)
        .unwrap();
    close(&d3.to_vec::<f64>().unwrap(), &[6.0, 6.0], 0.0);
}

fn mlp_loss(w1: &Tensor, w2: &Tensor, x: &Tensor) -> Tensor {
    let h = x.matmul(w1).unwrap().tanh().unwrap();
    let o = h.matmul(w2).unwrap();
    o.square().unwrap().mean_all().unwrap()
}

#[test]
fn hessian_vector_product_of_a_small_mlp_matches_finite_differences() {
    let x = t64(&[0.5, -1.0, 2.0, 0.1, 0.3, -0.7], &[2, 3]);
    let w1v = [
        0.2, -0.4, 0.1, 0.5, -0.3, 0.8, 0.05, -0.6, 0.7, 0.2, -0.1, 0.4,
    ];
    let w2 = t64(&[0.3, -0.2, 0.5, 0.9], &[4, 1]);
    let v = [
        1.0, -0.5, 0.25, 0.0, 0.3, 0.1, -0.2, 0.6, -1.0, 0.4, 0.2, -0.3,
    ];
    let grad_at = |w: &[f64], create: bool| -> (Tensor, Tensor) {
        let w1 = leaf(w, &[3, 4]);
        let l = mlp_loss(&w1, &w2, &x);
        let g = autograd::grad(&[l], std::slice::from_ref(&w1), create)
            .unwrap()
            .remove(0)
            .unwrap();
        (w1, g)
    };
    let (w1, g) = grad_at(&w1v, true);
    let gv = (&g * &t64(&v, &[3, 4])).unwrap().sum_all().unwrap();
    let hvp = autograd::grad(&[gv], &[w1], false)
        .unwrap()
        .remove(0)
        .unwrap();
    let h = 1e-5;
    let shift = |s: f64| -> Vec<f64> { w1v.iter().zip(&v).map(|(a, b)| a + s * b).collect() };
    let gp = grad_at(&shift(h), false).1.to_vec::<f64>().unwrap();
    let gm = grad_at(&shift(-h), false).1.to_vec::<f64>().unwrap();
    let fd: Vec<f64> = gp
        .iter()
        .zip(&gm)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect();
    close(&hvp.to_vec::<f64>().unwrap(), &fd, 1e-6);
}

#[test]
fn gradients_accumulate_until_cleared() {
    let x = leaf(&[1.0, 2.0], &[2]);
    for _ in 0..3 {
        (&x * 2.0).unwrap().sum_all().unwrap().backward().unwrap();
    }
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![6.0, 6.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
    (&x * &x).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![2.0, 4.0]);
    x.set_grad(None).unwrap();
    assert!(x.grad().is_none());
}

#[test]
fn a_used_twice_input_gets_both_contributions() {
    let x = leaf(&[3.0], &[]);
    let y = (&(&x * &x).unwrap() + &x).unwrap(); // x^2 + x
    y.backward().unwrap();
    assert_eq!(x.grad().unwrap().item().unwrap(), 7.0);
}

#[test]
fn second_backward_without_retain_graph_is_an_error_naming_the_op() {
    let x = leaf(&[1.0, 2.0], &[2]);
    let y = x.exp().unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let e = y.backward().unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Autograd(_)), "{msg}");
    assert!(msg.contains("sum") && msg.contains("retain_graph"), "{msg}");

    let y = x.exp().unwrap().sum_all().unwrap();
    let keep = BackwardOptions {
        retain_graph: true,
        create_graph: false,
    };
    y.backward_opts(None, keep).unwrap();
    y.backward().unwrap();
}

#[test]
fn backward_on_a_non_scalar_is_an_error_naming_the_shape() {
    let x = leaf(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let y = (&x * 3.0).unwrap();
    let msg = y.backward().unwrap_err().to_string();
    assert!(msg.contains("[2, 2]") && msg.contains("scalar"), "{msg}");
    y.backward_with(&Tensor::ones(&[2, 2], DType::F64)).unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![3.0; 4]);
    let wrong = y.backward_with(&Tensor::ones(&[4], DType::F64));
    assert!(wrong.is_err());
}

#[test]
fn no_grad_and_detach_cut_the_graph() {
    let x = leaf(&[1.0, 2.0], &[2]);
    {
        let _g = no_grad();
        let y = (&x * 2.0).unwrap();
        assert!(!y.requires_grad() && y.is_leaf());
        let _e = tandem_eager::enable_grad();
        assert!((&x * 2.0).unwrap().requires_grad());
    }
    assert!(tandem_eager::is_grad_enabled());
    let y = (&x * 2.0).unwrap();
    assert!(y.requires_grad() && !y.is_leaf());
    assert_eq!(y.grad_fn(), Some("mul_scalar"));
    let d = y.detach();
    assert!(!d.requires_grad() && d.is_leaf());
    let z = (&d * &x).unwrap().sum_all().unwrap();
    z.backward().unwrap();
    // Only the direct path through x: d/dx (d * x) with d constant = d = 2x.
    assert_eq!(x.grad().unwrap().to_vec::<f64>().unwrap(), vec![2.0, 4.0]);
    // A result computed without recording can become a trainable leaf.
    let w = {
        let _g = no_grad();
        (&x * 0.5).unwrap()
    }
    .requires_grad_(true);
    (&w * &w).unwrap().sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().to_vec::<f64>().unwrap(), vec![1.0, 2.0]);
}

#[test]
fn anomaly_mode_names_the_first_op_that_produced_nan() {
    let x = leaf(&[1.0, -1.0], &[2]);
    {
        let _a = detect_anomaly();
        let e = x.log().unwrap_err();
        assert!(
            matches!(&e, Error::Anomaly { op, what } if op == "log" && *what == "NaN"),
            "{e}"
        );
        // Backward: sqrt at 0 is fine forward but its gradient is infinite.
        let z = leaf(&[0.0, 4.0], &[2]);
        let s = z.sqrt().unwrap().sum_all().unwrap();
        let e = s.backward().unwrap_err();
        match &e {
            Error::Anomaly { op, what } => {
                assert!(op.contains("backward of sqrt"), "{op}");
                assert_eq!(*what, "Inf");
            }
            other => panic!("expected an anomaly, got {other}"),
        }
    }
    // Off again: NaN flows silently.
    assert!(x.log().unwrap().to_vec::<f64>().unwrap()[1].is_nan());
}

#[test]
fn methods_cover_views_reductions_and_indexing() {
    let x = leaf(&[1.0, 5.0, 3.0, 4.0, 2.0, 6.0], &[2, 3]);
    assert_eq!(x.t().unwrap().dims(), vec![3, 2]);
    assert_eq!(x.sum(&[1], true).unwrap().dims(), vec![2, 1]);
    assert_eq!(
        x.argmax(1, false).unwrap().to_vec::<i64>().unwrap(),
        vec![1, 2]
    );
    assert_eq!(x.max(&[], false).unwrap().item().unwrap(), 6.0);
    assert_eq!(x.min(&[], false).unwrap().item().unwrap(), 1.0);
    let v = x.var(&[1], true, false).unwrap().to_vec::<f64>().unwrap();
    close(&v, &[4.0, 4.0], 1e-12);
    let idx = Tensor::from_vec(vec![2i64, 0], &[2]).unwrap();
    let s = x.index_select(1, &idx).unwrap();
    assert_eq!(s.to_vec::<f64>().unwrap(), vec![3.0, 1.0, 6.0, 4.0]);
    let c = Tensor::cat(&[&x, &x], 0).unwrap();
    assert_eq!(c.dims(), vec![4, 3]);
    let st = Tensor::stack(&[&x, &x], 0).unwrap();
    assert_eq!(st.dims(), vec![2, 2, 3]);
    let loss = (&s.sum_all().unwrap() + &c.mean_all().unwrap()).unwrap();
    loss.backward().unwrap();
    let g = x.grad().unwrap().to_vec::<f64>().unwrap();
    let m = 2.0 / 12.0;
    close(&g, &[1.0 + m, m, 1.0 + m, 1.0 + m, m, 1.0 + m], 1e-12);
    let mask = x.gt_scalar(3.0).unwrap();
    let f = x.masked_fill(&mask, 0.0).unwrap();
    assert_eq!(
        f.to_vec::<f64>().unwrap(),
        vec![1.0, 0.0, 3.0, 0.0, 2.0, 0.0]
    );
    assert_eq!(
        x.select(0, -1).unwrap().to_vec::<f64>().unwrap(),
        vec![4.0, 2.0, 6.0]
    );
    assert!(x.select(0, 2).is_err());
    assert_eq!(
        x.clamp(Some(2.0), Some(4.0))
            .unwrap()
            .to_vec::<f64>()
            .unwrap(),
        vec![2.0, 4.0, 3.0, 4.0, 2.0, 4.0]
    );
}

#[test]
fn relu_gradient_in_one_pass_and_on_a_tape() {
    // A plain backward runs relu's gradient as one pass; with create_graph it is recorded as
    // comparison, cast and product, so it can be differentiated again.
    let xs = [1.5, -2.0, 0.0, 3.0, -0.5, 4.0];
    let ws = [2.0, 3.0, 5.0, 7.0, 11.0, 13.0];
    let mask = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0];
    let want: Vec<f64> = ws.iter().zip(&mask).map(|(w, m)| w * m).collect();
    for create_graph in [false, true] {
        let x = leaf(&xs, &[2, 3]);
        let w = leaf(&ws, &[2, 3]);
        let y = x.relu().unwrap().mul(&w).unwrap().sum_all().unwrap();
        let gx = autograd::grad(&[y], &[x.clone(), w.clone()], create_graph)
            .unwrap()
            .remove(0)
            .unwrap();
        close(&gx.to_vec::<f64>().unwrap(), &want, 0.0);
        assert_eq!(gx.requires_grad(), create_graph);
        if create_graph {
            let gw = autograd::grad(&[gx.sum_all().unwrap()], &[w], false)
                .unwrap()
                .remove(0)
                .unwrap();
            close(&gw.to_vec::<f64>().unwrap(), &mask, 0.0);
        }
    }
    // A transposed input takes the ops, with the same values.
    let x = leaf(&xs, &[3, 2]);
    let y = x.t().unwrap().relu().unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let got = x.grad().unwrap().to_vec::<f64>().unwrap();
    close(&got, &[1.0, 0.0, 0.0, 1.0, 0.0, 1.0], 0.0);
}

#[test]
fn weight_used_transposed_gets_a_row_major_gradient() {
    // y = x @ w.t() (a linear layer, w [out, in]): w's gradient is computed transposed, so it
    // arrives row-major like w itself instead of as a transposed view.
    let w = leaf(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let x = t64(
        &[
            1.0, 0.5, -1.0, 2.0, 3.0, 0.25, -2.0, 1.0, 4.0, 0.0, 1.0, 1.0,
        ],
        &[4, 3],
    );
    let o = t64(&[1.0, -1.0, 2.0, 0.5, 3.0, 1.0, -2.0, 1.0], &[4, 2]);
    let y = x
        .matmul(&w.t().unwrap())
        .unwrap()
        .mul(&o)
        .unwrap()
        .sum_all()
        .unwrap();
    y.backward().unwrap();
    let g = w.grad().unwrap();
    assert!(g.value().is_contiguous());
    // dL/dw[j, i] = sum_b o[b, j] x[b, i]
    let (xv, ov) = (x.to_vec::<f64>().unwrap(), o.to_vec::<f64>().unwrap());
    let want: Vec<f64> = (0..6)
        .map(|p| (0..4).map(|b| ov[b * 2 + p / 3] * xv[b * 3 + p % 3]).sum())
        .collect();
    close(&g.to_vec::<f64>().unwrap(), &want, 1e-15);
    // A weight used as it is keeps the plain rule.
    let v = leaf(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    let y = x.matmul(&v).unwrap().mul(&o).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let gv = v.grad().unwrap();
    assert!(gv.value().is_contiguous());
    let want_v: Vec<f64> = (0..6)
        .map(|p| (0..4).map(|b| ov[b * 2 + p % 2] * xv[b * 3 + p / 2]).sum())
        .collect();
    close(&gv.to_vec::<f64>().unwrap(), &want_v, 1e-15);
}
