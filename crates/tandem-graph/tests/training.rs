//! Tiny training problems converge with each optimizer; schedules follow their formulas.

use tandem_graph::optim::schedules::{cosine_decay, exponential_decay, piecewise_constant};
use tandem_graph::{
    Adam, AdamW, Emit, EmitExt, Functional, GradientDescent, Graph, Initializer, Momentum,
    Optimizer, RmsProp, Session,
};
use tandem_ir::{Op, Reduction};
use tandem_tensor::{DType, Tensor};

/// XOR with a 2-8-1 tanh MLP and MSE loss.
fn xor_loss_after(opt: &dyn Optimizer, steps: usize) -> (f64, f64) {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[None, Some(2)]).unwrap();
    let y = g.placeholder("y", DType::F32, &[None, Some(1)]).unwrap();
    let h = {
        let _s = g.scope("fc1");
        let w = g
            .variable_with(
                "weight",
                &[8, 2],
                DType::F32,
                Initializer::XavierUniform { seed: Some(1) },
                true,
            )
            .unwrap();
        let b = g
            .variable_with("bias", &[8], DType::F32, Initializer::Zeros, true)
            .unwrap();
        g.tanh(&g.linear(&x, &w, Some(&b)).unwrap()).unwrap()
    };
    let out = {
        let _s = g.scope("fc2");
        let w = g
            .variable_with(
                "weight",
                &[1, 8],
                DType::F32,
                Initializer::XavierUniform { seed: Some(2) },
                true,
            )
            .unwrap();
        let b = g
            .variable_with("bias", &[1], DType::F32, Initializer::Zeros, true)
            .unwrap();
        g.linear(&h, &w, Some(&b)).unwrap()
    };
    let loss = g.mse_loss(&out, &y, Reduction::Mean).unwrap();
    let train = opt.minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let xs = Tensor::from_vec(vec![0.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[4, 2]).unwrap();
    let ys = Tensor::from_vec(vec![0.0f32, 1.0, 1.0, 0.0], &[4, 1]).unwrap();
    let step = s.callable(&[&loss, &train], &[&x, &y]).unwrap();
    let first = step.run(&[xs.clone(), ys.clone()]).unwrap()[0]
        .item()
        .unwrap();
    for _ in 0..steps {
        step.run(&[xs.clone(), ys.clone()]).unwrap();
    }
    let last = s.run(&[&loss], &[(&x, &xs), (&y, &ys)]).unwrap()[0]
        .item()
        .unwrap();
    let gs = s.run(&[&g.global_step().unwrap()], &[]).unwrap()[0]
        .item()
        .unwrap();
    assert_eq!(gs as usize, steps + 1);
    (first, last)
}

#[test]
fn xor_converges_with_every_optimizer() {
    let opts: Vec<(Box<dyn Optimizer>, usize)> = vec![
        (Box::new(GradientDescent::new(0.2)), 2000),
        (Box::new(Momentum::new(0.1, 0.9)), 400),
        (
            Box::new({
                let mut m = Momentum::new(0.1, 0.9);
                m.nesterov = true;
                m
            }),
            400,
        ),
        (Box::new(Adam::new(0.05)), 400),
        (Box::new(AdamW::new(0.05)), 400),
        (Box::new(RmsProp::new(0.01)), 400),
    ];
    for (opt, steps) in opts {
        let (first, last) = xor_loss_after(opt.as_ref(), steps);
        assert!(
            last < 0.02 && last < first / 10.0,
            "{}: {first} -> {last}",
            opt.name()
        );
    }
}

#[test]
fn linear_regression_with_a_scheduled_learning_rate() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F64, &[None, Some(1)]).unwrap();
    let w = g
        .variable_with("w", &[1, 1], DType::F64, Initializer::Zeros, true)
        .unwrap();
    let b = g
        .variable_with("b", &[1], DType::F64, Initializer::Zeros, true)
        .unwrap();
    let pred = g.add(&g.emit(Op::MatMul, &[&x, &w]).unwrap(), &b).unwrap();
    // y = 3x - 1
    let target = g.add_scalar(&g.mul_scalar(&x, 3.0).unwrap(), -1.0).unwrap();
    let loss = g.mse_loss(&pred, &target, Reduction::Mean).unwrap();
    let lr = exponential_decay(0.5, &g.global_step().unwrap(), 100, 0.5, false).unwrap();
    let train = GradientDescent::new(&lr).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let xs = Tensor::from_vec(
        (0..16).map(|i| i as f64 / 8.0 - 1.0).collect::<Vec<_>>(),
        &[16, 1],
    )
    .unwrap();
    for _ in 0..300 {
        s.run(&[&train], &[(&x, &xs)]).unwrap();
    }
    let wv = s.variable_value(&w).unwrap().item().unwrap();
    let bv = s.variable_value(&b).unwrap().item().unwrap();
    assert!(
        (wv - 3.0).abs() < 1e-3 && (bv + 1.0).abs() < 1e-3,
        "w {wv} b {bv}"
    );
    let lr_now = s.run(&[&lr], &[]).unwrap()[0].item().unwrap();
    assert!((lr_now - 0.5 * 0.5f64.powf(3.0)).abs() < 1e-12, "{lr_now}");
}

#[test]
fn schedules_follow_their_formulas() {
    let g = Graph::new();
    let step = g.placeholder("step", DType::I64, &[]).unwrap();
    let stair = exponential_decay(1.0, &step, 10, 0.5, true).unwrap();
    let cos = cosine_decay(2.0, &step, 100, 0.1).unwrap();
    let pw = piecewise_constant(&step, &[10, 20], &[1.0, 0.5, 0.1]).unwrap();
    let s = Session::new(&g).unwrap();
    for k in [0i64, 5, 10, 15, 25, 150] {
        let t = Tensor::scalar(k);
        let out = s.run(&[&stair, &cos, &pw], &[(&step, &t)]).unwrap();
        let kf = k as f64;
        assert!((out[0].item().unwrap() - 0.5f64.powf((kf / 10.0).floor())).abs() < 1e-12);
        let c = 0.5 * (1.0 + (std::f64::consts::PI * kf.min(100.0) / 100.0).cos());
        assert!((out[1].item().unwrap() - 2.0 * (0.1 + 0.9 * c)).abs() < 1e-12);
        let want = if k <= 10 {
            1.0
        } else if k <= 20 {
            0.5
        } else {
            0.1
        };
        assert!((out[2].item().unwrap() - want).abs() < 1e-12, "{k}");
    }
    assert!(piecewise_constant(&step, &[10], &[1.0]).is_err());
}

#[test]
fn an_update_the_kernels_cannot_run_fails_before_any_variable_changes() {
    // The optimizer kernels take f32 and f64 parameters. A float16 parameter's update is
    // refused when the run validates it, not at commit after other parameters were updated.
    let g = Graph::new();
    let a = g
        .variable("a", Tensor::from_slice(&[1.0f32, 2.0], &[2]).unwrap())
        .unwrap();
    let h16 = Tensor::from_slice(&[1.0f32, -1.0], &[2])
        .unwrap()
        .cast(DType::F16)
        .unwrap();
    let h = g.variable("h", h16.clone()).unwrap();
    let hf = g.cast(&h, DType::F32).unwrap();
    let la = g.sum(&g.square(&a).unwrap(), &[0], false).unwrap();
    let lh = g.sum(&g.square(&hf).unwrap(), &[0], false).unwrap();
    let loss = g.add(&la, &lh).unwrap();
    let train = Adam::new(0.1).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let err = s.run(&[&train], &[]).unwrap_err().to_string();
    assert!(err.contains("float16"), "{err}");
    assert_eq!(
        s.variable_value(&a).unwrap().to_vec::<f32>().unwrap(),
        [1.0, 2.0]
    );
    assert_eq!(
        s.variable_value(&h).unwrap().to_f64_vec().unwrap(),
        h16.to_f64_vec().unwrap()
    );
}
