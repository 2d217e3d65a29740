//! Session behaviour: feeds, errors, failed runs, plan caching, callables, explain, dot,
//! gradients of gradients, control dependencies, concurrency.

use tandem_graph::{is_op_marker, Graph, Initializer, Session};
use tandem_ir::{Emit, EmitExt, Functional, Op};
use tandem_tensor::{DType, Tensor};

fn t32(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

#[test]
fn hello_graph() {
    let g = Graph::new();
    let a = g.constant_scalar(3.0f32).unwrap();
    let b = g.constant_scalar(4.0f32).unwrap();
    let c = (&a + &b).unwrap();
    let s = Session::new(&g).unwrap();
    assert_eq!(s.run(&[&c], &[]).unwrap()[0].item().unwrap(), 7.0);
}

#[test]
fn names_scopes_and_build_errors() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(784)]).unwrap();
    {
        let _s = g.scope("fc1");
        let w = g
            .variable_with("weight", &[100, 10], DType::F32, Initializer::Zeros, true)
            .unwrap();
        assert_eq!(w.name(), "fc1/weight");
        let err = g.emit(Op::MatMul, &[&x, &w]).unwrap_err().to_string();
        assert!(err.starts_with("fc1/MatMul: matmul"), "{err}");
        assert!(
            err.contains("[?, 784]") && err.contains("[100, 10]"),
            "{err}"
        );
    }
    let a = g.add(&x, &x).unwrap();
    let b = g.add(&x, &x).unwrap();
    assert_eq!(a.name(), "Add");
    assert_eq!(b.name(), "Add_1");
    assert_eq!(g.get("fc1/weight").unwrap().shape(), &[Some(100), Some(10)]);
}

#[test]
fn bad_feeds_are_clear_errors() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(3)]).unwrap();
    let y = g.placeholder("y", DType::F32, &[Some(3)]).unwrap();
    let z = g.add(&x, &y).unwrap();
    let s = Session::new(&g).unwrap();
    let good_x = t32(&[1.0; 6], &[2, 3]);
    let good_y = t32(&[1.0; 3], &[3]);
    // Unknown batch dim accepts any size.
    let out = s.run(&[&z], &[(&x, &good_x), (&y, &good_y)]).unwrap();
    assert_eq!(out[0].shape(), &[2, 3]);
    let wrong_dtype = Tensor::zeros(&[2, 3], DType::F64);
    let e = s
        .run(&[&z], &[(&x, &wrong_dtype), (&y, &good_y)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("placeholder `x`") && e.contains("float64"),
        "{e}"
    );
    let wrong_shape = t32(&[1.0; 8], &[2, 4]);
    let e = s
        .run(&[&z], &[(&x, &wrong_shape), (&y, &good_y)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("placeholder `x`") && e.contains("[?, 3]"), "{e}");
    let e = s.run(&[&z], &[(&x, &good_x)]).unwrap_err().to_string();
    assert!(
        e.contains("placeholder `y`") && e.contains("must be fed"),
        "{e}"
    );
    let other = Graph::new();
    let foreign = other.constant_scalar(1.0f32).unwrap();
    let e = s
        .run(&[&z], &[(&foreign, &good_y)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a node of this session's graph"), "{e}");
    // Feeding a non-placeholder overrides it.
    let e = s
        .run(&[&z], &[(&z, &t32(&[5.0], &[1]))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("node `Add`"), "{e}");
    let out = s.run(&[&z], &[(&z, &t32(&[5.0; 6], &[2, 3]))]).unwrap();
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![5.0; 6]);
}

#[test]
fn failed_training_run_leaves_variables_unchanged() {
    let g = Graph::new();
    let w = g.variable("w", t32(&[1.0, 2.0], &[2])).unwrap();
    let x = g.placeholder("x", DType::F32, &[None]).unwrap();
    let upd = g
        .assign_add(&w, &g.full_like(&w, 1.0, None).unwrap())
        .unwrap();
    // A second op that fails at run time (shape mismatch known only when fed).
    let bad = g.add(&w, &x).unwrap();
    let train = g.group(&[&upd, &bad]).unwrap();
    let s = Session::new(&g).unwrap();
    let e = s.run(&[&train], &[(&x, &t32(&[1.0; 3], &[3]))]);
    assert!(e.is_err());
    assert_eq!(
        s.variable_value(&w).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 2.0]
    );
    let out = s.run(&[&train], &[(&x, &t32(&[1.0; 2], &[2]))]).unwrap();
    assert!(is_op_marker(&out[0]));
    assert_eq!(
        s.variable_value(&w).unwrap().to_vec::<f32>().unwrap(),
        vec![2.0, 3.0]
    );
}

#[test]
fn uninitialized_session_and_initializer_op() {
    let g = Graph::new();
    let w = g.variable("w", t32(&[4.0], &[1])).unwrap();
    let s = Session::new_uninitialized(&g).unwrap();
    let e = s.run(&[&w], &[]).unwrap_err().to_string();
    assert!(e.contains("`w` is not initialized"), "{e}");
    let init = g.global_variables_initializer().unwrap();
    assert!(is_op_marker(&s.run(&[&init], &[]).unwrap()[0]));
    assert_eq!(s.run(&[&w], &[]).unwrap()[0].item().unwrap(), 4.0);
}

#[test]
fn plans_are_cached_and_callables_skip_the_cache() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(2)]).unwrap();
    let y = g.mul_scalar(&x, 3.0).unwrap();
    let s = Session::new(&g).unwrap();
    let t = t32(&[1.0, 2.0], &[2]);
    s.run(&[&y], &[(&x, &t)]).unwrap();
    assert_eq!(s.compile_count(), 1);
    s.run(&[&y], &[(&x, &t)]).unwrap();
    assert_eq!(s.compile_count(), 1);
    s.run(&[&y, &x], &[(&x, &t)]).unwrap();
    assert_eq!(s.compile_count(), 2);
    let c = s.callable(&[&y], &[&x]).unwrap();
    assert_eq!(s.compile_count(), 2);
    for _ in 0..3 {
        let out = c.run(std::slice::from_ref(&t)).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![3.0, 6.0]);
    }
    assert_eq!(s.compile_count(), 2);
    assert!(c.run(&[]).is_err());
}

#[test]
fn explain_and_dot_show_the_plan() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(2)]).unwrap();
    let y = g.mul_scalar(&g.add_scalar(&x, 0.0).unwrap(), 2.0).unwrap();
    let s = Session::new(&g).unwrap();
    let text = s.explain(&[&y], &[&x]).unwrap();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.contains("MulScalar [mul(x, 2)](%0) : float32 [2]"),
        "{text}"
    );
    assert!(!text.contains("AddScalar"), "{text}");
    let dot = g.to_dot().unwrap();
    assert!(
        dot.starts_with("digraph") && dot.contains("n0 -> n1"),
        "{dot}"
    );
}

#[test]
fn gradients_of_gradients() {
    // d/dx (x^3) = 3x^2, d2/dx2 = 6x.
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, &[Some(3)]).unwrap();
    let y = g.sum(&g.pow_scalar(&x, 3.0).unwrap(), &[0], false).unwrap();
    let dx = g.gradients(&[&y], &[&x], None).unwrap().remove(0).unwrap();
    let s1 = g.sum(&dx, &[0], false).unwrap();
    let ddx = g.gradients(&[&s1], &[&x], None).unwrap().remove(0).unwrap();
    let s = Session::new(&g).unwrap();
    let t = Tensor::from_vec(vec![1.0f64, 2.0, -3.0], &[3]).unwrap();
    let out = s.run(&[&dx, &ddx], &[(&x, &t)]).unwrap();
    assert_eq!(out[0].to_vec::<f64>().unwrap(), vec![3.0, 12.0, 27.0]);
    assert_eq!(out[1].to_vec::<f64>().unwrap(), vec![6.0, 12.0, -18.0]);
    // No path: None.
    let z = g.placeholder("z", DType::F64, &[Some(3)]).unwrap();
    assert!(g.gradients(&[&y], &[&z], None).unwrap()[0].is_none());
}

#[test]
fn gradients_through_composites_with_unknown_batch() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(4)]).unwrap();
    let w = g
        .variable_with(
            "w",
            &[3, 4],
            DType::F32,
            Initializer::XavierUniform { seed: Some(1) },
            true,
        )
        .unwrap();
    let b = g
        .variable_with("b", &[3], DType::F32, Initializer::Zeros, true)
        .unwrap();
    let y = g.linear(&x, &w, Some(&b)).unwrap();
    let loss = g
        .mean(&g.square(&g.relu(&y).unwrap()).unwrap(), &[], false)
        .unwrap();
    let grads = g.gradients(&[&loss], &[&w, &b], None).unwrap();
    let gw = grads[0].clone().unwrap();
    let s = Session::new(&g).unwrap();
    for batch in [1, 5] {
        let t = Tensor::ones(&[batch, 4], DType::F32);
        let out = s.run(&[&gw, &loss], &[(&x, &t)]).unwrap();
        assert_eq!(out[0].shape(), &[3, 4]);
    }
}

#[test]
fn control_dependencies_order_assigns() {
    let g = Graph::new();
    let v = g.variable("v", t32(&[1.0], &[1])).unwrap();
    let two = g.constant(t32(&[2.0], &[1])).unwrap();
    let set = g.assign(&v, &two).unwrap();
    let read = {
        let _c = g.control_dependencies(&[&set]).unwrap();
        g.identity(&v).unwrap()
    };
    let s = Session::new(&g).unwrap();
    let out = s.run(&[&read], &[]).unwrap();
    // The read is the variable's node (one read per run); the assign ran first.
    assert_eq!(s.variable_value(&v).unwrap().item().unwrap(), 2.0);
    assert_eq!(out[0].shape(), &[1]);
}

#[test]
fn concurrent_runs_match_serial_runs() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(8)]).unwrap();
    let w = g
        .variable_with(
            "w",
            &[8, 8],
            DType::F32,
            Initializer::Normal {
                mean: 0.0,
                std: 1.0,
                seed: Some(7),
            },
            true,
        )
        .unwrap();
    let h = g.tanh(&g.emit(Op::MatMul, &[&x, &w]).unwrap()).unwrap();
    let y = g.softmax(&h, -1).unwrap();
    let s = Session::new(&g).unwrap();
    let inputs: Vec<Tensor> = (0..8)
        .map(|k| {
            let v: Vec<f32> = (0..32)
                .map(|i| ((i * 7 + k * 13) % 17) as f32 / 17.0)
                .collect();
            t32(&v, &[4, 8])
        })
        .collect();
    let serial: Vec<Vec<f32>> = inputs
        .iter()
        .map(|t| {
            s.run(&[&y], &[(&x, t)]).unwrap()[0]
                .to_vec::<f32>()
                .unwrap()
        })
        .collect();
    std::thread::scope(|sc| {
        for k in 0..8 {
            let (s, x, y, inputs, serial) = (&s, &x, &y, &inputs, &serial);
            sc.spawn(move || {
                for r in 0..500 {
                    let i = (k + r) % inputs.len();
                    let out = s.run(&[y], &[(x, &inputs[i])]).unwrap();
                    assert_eq!(out[0].to_vec::<f32>().unwrap(), serial[i]);
                }
            });
        }
    });
}

#[test]
fn random_ops_draw_new_values_each_run() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(64)]).unwrap();
    let d = g.dropout(&x, 0.5, true).unwrap();
    let s = Session::new(&g).unwrap();
    let t = Tensor::ones(&[64], DType::F32);
    let a = s.run(&[&d], &[(&x, &t)]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    let b = s.run(&[&d], &[(&x, &t)]).unwrap()[0]
        .to_vec::<f32>()
        .unwrap();
    assert_ne!(a, b);
    assert!(a.iter().all(|&v| v == 0.0 || v == 2.0));
}

#[test]
fn profile_times_every_step_and_runs_for_real() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(3)]).unwrap();
    let w = g
        .variable_with("w", &[3, 2], DType::F32, Initializer::Ones, true)
        .unwrap();
    let y = g.matmul(&x, &w).unwrap();
    let loss = g.mean(&g.square(&y).unwrap(), &[], false).unwrap();
    use tandem_graph::Optimizer as _;
    let train = tandem_graph::GradientDescent::new(0.1)
        .minimize(&loss)
        .unwrap();
    let s = Session::new(&g).unwrap();
    let step = s.callable(&[&loss, &train], &[&x]).unwrap();
    let feeds = [t32(&[1.0, 2.0, 3.0, -1.0, 0.5, 2.0], &[2, 3])];
    let before = s.variable_value(&w).unwrap().to_vec::<f32>().unwrap();
    let profile = step.profile(&feeds, 3).unwrap();
    assert_eq!(profile.runs, 3);
    // One entry per plan step, then the commit of the variable updates.
    assert_eq!(profile.steps.len(), step.plan().steps.len() + 1);
    assert_eq!(profile.steps.last().unwrap().name, "(commit)");
    assert!(profile
        .steps
        .iter()
        .any(|st| st.op == "matmul" || st.op.starts_with("matmul")));
    let summed: std::time::Duration = profile.steps.iter().map(|st| st.time).sum();
    assert!(summed <= profile.total, "{summed:?} > {:?}", profile.total);
    assert!(profile.slowest()[0].time >= profile.slowest().last().unwrap().time);
    let table = profile.to_string();
    assert!(table.starts_with("3 runs,"), "{table}");
    assert!(table.contains("(commit)"), "{table}");
    // The three profiled runs were real training steps.
    let after = s.variable_value(&w).unwrap().to_vec::<f32>().unwrap();
    assert_ne!(before, after);
    // Bad feeds fail like `run`.
    let err = step.profile(&[t32(&[1.0; 4], &[2, 2])], 1).unwrap_err();
    assert!(err.to_string().contains('x'), "{err}");
}
