//! The optimizer cases of the parity manifest: PyTorch's SGD, Adam, AdamW and RMSprop run for
//! the recorded steps with the recorded gradients; parameters and state must match after
//! every step, in float32 and float64. Also: optimizer state dicts resume exactly.

use serde_json::Value as Json;
use tandem_conformance::{assert_close, parity_dir, Manifest, OptimizerCase};
use tandem_eager::optim::{Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig};
use tandem_eager::Tensor;

fn f(h: &Json, k: &str, d: f64) -> f64 {
    h.get(k).and_then(Json::as_f64).unwrap_or(d)
}

fn build(case: &OptimizerCase, params: Vec<Tensor>) -> (Box<dyn Optimizer>, Vec<&'static str>) {
    let h = &case.hyperparameters;
    match case.optimizer.as_str() {
        "SGD" => {
            let c = SgdConfig {
                lr: f(h, "lr", 0.01),
                momentum: f(h, "momentum", 0.0),
                dampening: f(h, "dampening", 0.0),
                nesterov: h.get("nesterov").and_then(Json::as_bool).unwrap_or(false),
                weight_decay: f(h, "weight_decay", 0.0),
            };
            let names = if c.momentum != 0.0 {
                vec!["momentum_buffer"]
            } else {
                vec![]
            };
            (Box::new(Sgd::new(params, c)), names)
        }
        "Adam" | "AdamW" => {
            let betas = h.get("betas").and_then(Json::as_array);
            let b = |i: usize, d: f64| {
                betas
                    .and_then(|a| a.get(i))
                    .and_then(Json::as_f64)
                    .unwrap_or(d)
            };
            let adamw = case.optimizer == "AdamW";
            let c = AdamConfig {
                lr: f(h, "lr", 1e-3),
                beta1: b(0, 0.9),
                beta2: b(1, 0.999),
                eps: f(h, "eps", 1e-8),
                weight_decay: f(h, "weight_decay", if adamw { 0.01 } else { 0.0 }),
                decoupled: adamw,
            };
            (
                Box::new(Adam::new(params, c)),
                vec!["exp_avg", "exp_avg_sq"],
            )
        }
        "RMSprop" => {
            let c = RmsPropConfig {
                lr: f(h, "lr", 1e-2),
                alpha: f(h, "alpha", 0.99),
                eps: f(h, "eps", 1e-8),
                weight_decay: f(h, "weight_decay", 0.0),
                momentum: f(h, "momentum", 0.0),
                centered: h.get("centered").and_then(Json::as_bool).unwrap_or(false),
            };
            (Box::new(RmsProp::new(params, c)), vec!["square_avg"])
        }
        other => panic!("unknown optimizer {other}"),
    }
}

fn run(m: &Manifest, case: &OptimizerCase, dtype: &str) -> Result<(), String> {
    let file = case.files.get(dtype).ok_or("no file")?;
    let t = m.tensors(file).map_err(|e| e.to_string())?;
    let get = |k: &str| t.get(k).cloned().ok_or(format!("missing {k}"));
    let tol = m.tolerance_for(dtype);
    let params: Vec<Tensor> = case
        .params
        .iter()
        .map(|p| {
            Ok(Tensor::from_value(get(p)?.copy().map_err(|e| e.to_string())?).requires_grad_(true))
        })
        .collect::<Result<_, String>>()?;
    let (mut opt, state_names) = build(case, params.clone());
    for k in 1..=case.steps {
        for (i, p) in params.iter().enumerate() {
            let g = get(&format!("grad{i}_step{k}"))?;
            p.set_grad(Some(Tensor::from_value(g)))
                .map_err(|e| e.to_string())?;
        }
        opt.step().map_err(|e| e.to_string())?;
        let sd = opt.state_dict();
        for (i, p) in params.iter().enumerate() {
            let name = format!("param{i}_step{k}");
            assert_close(&name, &p.value(), &get(&name)?, tol)?;
            for s in &state_names {
                let name = format!("param{i}_{s}_step{k}");
                let want = get(&name)?;
                let key = format!("state.{i}.{s}");
                let got = sd
                    .iter()
                    .find(|(n, _)| *n == key)
                    .map(|(_, v)| v.clone())
                    .ok_or(format!("no {key} in the optimizer state"))?;
                assert_close(&name, &got, &want, tol)?;
            }
        }
    }
    Ok(())
}

#[test]
fn optimizers_match_pytorch_step_by_step() {
    let m = Manifest::load(&parity_dir()).expect("manifest");
    assert!(m.optimizers.len() >= 9);
    let mut failures = Vec::new();
    for case in &m.optimizers {
        for dtype in ["float32", "float64"] {
            if let Err(e) = run(&m, case, dtype) {
                failures.push(format!("{} [{dtype}]: {e}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Two steps, save, two more; versus a fresh optimizer that loads the saved state after two
/// steps: identical parameters.
#[test]
fn optimizer_state_dict_resumes_exactly() {
    let run = |resume: bool| -> Vec<f32> {
        let p = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3])
            .unwrap()
            .requires_grad_(true);
        let cfg = AdamConfig::default();
        let mut opt = Adam::new(vec![p.clone()], cfg);
        let grad = |k: usize| Tensor::from_vec(vec![0.5f32 * k as f32, -1.0, 0.25], &[3]).unwrap();
        for k in 0..2 {
            p.set_grad(Some(grad(k))).unwrap();
            opt.step().unwrap();
        }
        if resume {
            let dir = std::env::temp_dir().join(format!("tandem-optim-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("opt.safetensors");
            opt.save_safetensors(&path).unwrap();
            let mut fresh = Adam::new(vec![p.clone()], cfg);
            fresh.load_safetensors(&path).unwrap();
            std::fs::remove_dir_all(&dir).unwrap();
            opt = fresh;
        }
        for k in 2..4 {
            p.set_grad(Some(grad(k))).unwrap();
            opt.step().unwrap();
        }
        p.to_vec::<f32>().unwrap()
    };
    assert_eq!(run(false), run(true));
}

#[test]
fn parameters_without_grad_are_skipped_and_groups_have_their_own_lr() {
    use tandem_eager::optim::ParamGroup;
    let a = Tensor::from_vec(vec![1.0f64], &[1])
        .unwrap()
        .requires_grad_(true);
    let b = Tensor::from_vec(vec![1.0f64], &[1])
        .unwrap()
        .requires_grad_(true);
    let c = Tensor::from_vec(vec![1.0f64], &[1])
        .unwrap()
        .requires_grad_(true);
    let mut opt = Sgd::with_groups(
        vec![
            ParamGroup::new(vec![a.clone(), c.clone()], 0.1, 0.0),
            ParamGroup::new(vec![b.clone()], 1.0, 0.0),
        ],
        SgdConfig::default(),
    );
    let one = || Tensor::from_vec(vec![1.0f64], &[1]).unwrap();
    a.set_grad(Some(one())).unwrap();
    b.set_grad(Some(one())).unwrap();
    opt.step().unwrap();
    assert_eq!(a.item().unwrap(), 0.9);
    assert_eq!(b.item().unwrap(), 0.0);
    assert_eq!(c.item().unwrap(), 1.0);
    opt.set_lr(0.5);
    assert!(opt.param_groups().iter().all(|g| g.lr == 0.5));
    opt.zero_grad();
    assert!(a.grad().is_none() && b.grad().is_none());
}

#[test]
fn schedulers_follow_pytorch_closed_forms() {
    use tandem_eager::optim::{CosineAnnealingLR, LinearWarmup, LrScheduler, StepLR};
    let p = Tensor::zeros(&[1], tandem_eager::DType::F32).requires_grad_(true);
    let mut opt = Sgd::new(
        vec![p],
        SgdConfig {
            lr: 1.0,
            ..SgdConfig::default()
        },
    );
    let mut s = StepLR::new(&opt, 2, 0.5);
    let lrs: Vec<f64> = (0..5)
        .map(|_| {
            s.step(&mut opt);
            opt.lr()
        })
        .collect();
    assert_eq!(lrs, vec![1.0, 0.5, 0.5, 0.25, 0.25]);
    opt.set_lr(1.0);
    let mut c = CosineAnnealingLR::new(&opt, 4, 0.0);
    c.step(&mut opt);
    assert!((opt.lr() - (1.0 + (std::f64::consts::PI / 4.0).cos()) / 2.0).abs() < 1e-12);
    for _ in 0..3 {
        c.step(&mut opt);
    }
    assert!(opt.lr().abs() < 1e-12);
    opt.set_lr(1.0);
    let mut w = LinearWarmup::new(&mut opt, 4, 0.2);
    assert!((opt.lr() - 0.2).abs() < 1e-12);
    w.step(&mut opt);
    assert!((opt.lr() - 0.4).abs() < 1e-12);
    for _ in 0..10 {
        w.step(&mut opt);
    }
    assert_eq!(opt.lr(), 1.0);
    assert_eq!(w.last_lr(), vec![1.0]);
}

#[test]
fn clip_grad_norm_scales_to_the_max_norm_and_returns_the_total() {
    use tandem_eager::optim::clip_grad_norm_;
    let a = Tensor::zeros(&[2], tandem_eager::DType::F64).requires_grad_(true);
    let b = Tensor::zeros(&[1], tandem_eager::DType::F64).requires_grad_(true);
    a.set_grad(Some(Tensor::from_vec(vec![3.0f64, 0.0], &[2]).unwrap()))
        .unwrap();
    b.set_grad(Some(Tensor::from_vec(vec![4.0f64], &[1]).unwrap()))
        .unwrap();
    let total = clip_grad_norm_(&[a.clone(), b.clone()], 1.0).unwrap();
    assert!((total - 5.0).abs() < 1e-12);
    let ga = a.grad().unwrap().to_vec::<f64>().unwrap();
    let gb = b.grad().unwrap().to_vec::<f64>().unwrap();
    let norm = (ga[0] * ga[0] + gb[0] * gb[0]).sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    // Below the bound nothing changes.
    let total = clip_grad_norm_(&[a.clone(), b], 10.0).unwrap();
    assert!((total - norm).abs() < 1e-12);
    assert_eq!(a.grad().unwrap().to_vec::<f64>().unwrap(), ga);
}
