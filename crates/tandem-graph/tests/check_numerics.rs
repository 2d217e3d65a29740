//! `Session::set_check_numerics`: the first node whose output holds a NaN or an infinity is
//! named in the error, and the failed run changes no variable.

use tandem_graph::{GradientDescent, Graph, Optimizer, Session, SessionOptions};
use tandem_ir::EmitExt;
use tandem_tensor::{DType, Tensor};

#[test]
fn names_the_first_node_that_makes_a_nan() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(3)]).unwrap();
    let sq = {
        let _s = g.scope("layer");
        g.sqrt(&x).unwrap()
    };
    let y = g.mul_scalar(&sq, 2.0).unwrap();
    let bad = Tensor::from_vec(vec![1.0f32, -4.0, 9.0], &[3]).unwrap();
    let s = Session::with_options(&g, SessionOptions { optimize: false }).unwrap();
    // Off by default: the NaN comes back.
    assert!(!s.check_numerics());
    let out = s.run(&[&y], &[(&x, &bad)]).unwrap();
    assert!(out[0].to_vec::<f32>().unwrap()[1].is_nan());
    s.set_check_numerics(true);
    let err = s.run(&[&y], &[(&x, &bad)]).unwrap_err().to_string();
    assert!(err.contains(sq.name()) && err.contains("sqrt"), "{err}");
    assert!(err.contains("NaN"), "{err}");
    // Finite values pass.
    let good = Tensor::from_vec(vec![1.0f32, 4.0, 9.0], &[3]).unwrap();
    let out = s.run(&[&y], &[(&x, &good)]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
}

#[test]
fn applies_to_callables_and_infinities_and_leaves_variables_untouched() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(2)]).unwrap();
    let w = g
        .variable("w", Tensor::from_vec(vec![1.0f32, 1.0], &[2]).unwrap())
        .unwrap();
    let q = g.div(&w, &x).unwrap();
    let loss = g.sum(&q, &[], false).unwrap();
    let train = GradientDescent::new(0.1).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let step = s.callable(&[&loss, &train], &[&x]).unwrap();
    s.set_check_numerics(true);
    let zero = Tensor::from_vec(vec![2.0f32, 0.0], &[2]).unwrap();
    let err = step.run(&[zero]).unwrap_err().to_string();
    assert!(
        err.contains("check_numerics") && err.contains("inf"),
        "{err}"
    );
    assert_eq!(
        s.variable_value(&w).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 1.0]
    );
    let ok = Tensor::from_vec(vec![2.0f32, 4.0], &[2]).unwrap();
    step.run(&[ok]).unwrap();
    assert_ne!(
        s.variable_value(&w).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 1.0]
    );
}
