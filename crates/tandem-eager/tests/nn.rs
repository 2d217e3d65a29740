//! Modules: names, state dicts (safetensors round trip, failed loads change nothing), layer
//! errors, batch norm running statistics, a tiny training problem, and memory stability.

use tandem_eager::nn::functional as F;
use tandem_eager::nn::{
    BatchNorm, Conv2d, Dropout, Flatten, LayerNorm, Linear, MaxPool2d, Module, ReLU, Sequential,
};
use tandem_eager::optim::{Adam, AdamConfig, Optimizer, Sgd, SgdConfig};
use tandem_eager::{manual_seed, DType, Result, Tensor, Value};

struct SimpleNet {
    fc1: Linear,
    fc2: Linear,
}

impl SimpleNet {
    fn new(i: usize, h: usize, o: usize) -> SimpleNet {
        SimpleNet {
            fc1: Linear::new(i, h, true).unwrap().with_name("fc1"),
            fc2: Linear::new(h, o, true).unwrap().with_name("fc2"),
        }
    }
}

impl Module for SimpleNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tandem-eager-nn-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn names_and_layouts_follow_pytorch() {
    let net = SimpleNet::new(784, 128, 10);
    let sd = net.state_dict();
    let names: Vec<(&str, Vec<usize>)> = sd
        .iter()
        .map(|(n, v)| (n.as_str(), v.shape().to_vec()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("fc1.weight", vec![128, 784]),
            ("fc1.bias", vec![128]),
            ("fc2.weight", vec![10, 128]),
            ("fc2.bias", vec![10]),
        ]
    );
    let seq = Sequential::new()
        .add(Conv2d::new(1, 6, 5).unwrap())
        .add(BatchNorm::new_2d(6))
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::default());
    let names: Vec<String> = seq.state_dict().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "0.weight",
            "0.bias",
            "1.weight",
            "1.bias",
            "1.running_mean",
            "1.running_var",
            "1.num_batches_tracked"
        ]
    );
    let w = &seq.state_dict()[0].1;
    assert_eq!(w.shape(), &[6, 1, 5, 5]);
    let nbt = &seq.state_dict()[6].1;
    assert_eq!((nbt.dtype(), nbt.rank()), (DType::I64, 0));
    // Default init: kaiming_uniform(a = sqrt 5) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    let bound = 1.0 / 25f64.sqrt();
    assert!(w.to_f64_vec().unwrap().iter().all(|v| v.abs() <= bound));
}

#[test]
fn state_dict_round_trips_through_safetensors() {
    manual_seed(1);
    let a = SimpleNet::new(6, 5, 3);
    let b = SimpleNet::new(6, 5, 3);
    let d = tmp("rt");
    let path = d.join("m.safetensors");
    a.save_safetensors(&path).unwrap();
    let names: Vec<String> = tandem_tensor::io::safetensors::load(&path)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]);
    b.load_safetensors(&path).unwrap();
    for ((_, x), (_, y)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        assert_eq!(x.to_f64_vec().unwrap(), y.to_f64_vec().unwrap());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn failed_loads_name_the_parameter_and_change_nothing() {
    let net = SimpleNet::new(4, 3, 2);
    let before: Vec<Vec<f64>> = net
        .state_dict()
        .iter()
        .map(|(_, v)| v.to_f64_vec().unwrap())
        .collect();
    let mut sd = net.state_dict();
    // Good first entries, a bad last one: nothing may be assigned.
    for (_, v) in sd.iter_mut() {
        *v = Value::full(v.shape(), 9.0, v.dtype());
    }
    sd[3].1 = Value::zeros(&[5], DType::F32);
    let e = net.load_state_dict(&sd, true).unwrap_err().to_string();
    assert!(
        e.contains("fc2.bias") && e.contains("[5]") && e.contains("[2]"),
        "{e}"
    );
    sd.remove(3);
    let e = net.load_state_dict(&sd, true).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("fc2.bias"), "{e}");
    let mut extra = net.state_dict();
    extra.push(("fc3.weight".into(), Value::zeros(&[1], DType::F32)));
    let e = net.load_state_dict(&extra, true).unwrap_err().to_string();
    assert!(e.contains("unexpected") && e.contains("fc3.weight"), "{e}");
    net.load_state_dict(&extra, false).unwrap();
    let after: Vec<Vec<f64>> = net
        .state_dict()
        .iter()
        .map(|(_, v)| v.to_f64_vec().unwrap())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn linear_shape_mismatch_names_the_layer_and_both_shapes() {
    let net = SimpleNet::new(784, 128, 10);
    let x = Tensor::zeros(&[64, 100], DType::F32);
    let e = net.forward(&x).unwrap_err().to_string();
    assert!(
        e.contains("fc1") && e.contains("[64, 100]") && e.contains("[128, 784]"),
        "{e}"
    );
}

#[test]
fn cross_entropy_rejects_float_targets() {
    let logits = Tensor::zeros(&[2, 3], DType::F32);
    let t = Tensor::zeros(&[2], DType::F32);
    let e = F::cross_entropy(&logits, &t).unwrap_err().to_string();
    assert!(
        e.contains("cross_entropy") && e.contains("int64") && e.contains("float32"),
        "{e}"
    );
}

#[test]
fn batch_norm_tracks_running_stats_in_training_and_uses_them_in_eval() {
    let bn = BatchNorm::new_1d(2);
    let x = Tensor::from_vec(vec![1.0f32, 10.0, 3.0, 20.0], &[2, 2]).unwrap();
    let y = bn.forward(&x).unwrap();
    let yv = y.to_vec::<f32>().unwrap();
    assert!(
        (yv[0] + 1.0).abs() < 1e-3 && (yv[1] + 1.0).abs() < 1e-3,
        "{yv:?}"
    );
    // running = 0.9 * init + 0.1 * batch (unbiased var: 2 and 50)
    let rm = bn.running_mean.to_vec::<f32>().unwrap();
    let rv = bn.running_var.to_vec::<f32>().unwrap();
    assert!(
        (rm[0] - 0.2).abs() < 1e-6 && (rm[1] - 1.5).abs() < 1e-6,
        "{rm:?}"
    );
    assert!(
        (rv[0] - 1.1).abs() < 1e-5 && (rv[1] - 5.9).abs() < 1e-5,
        "{rv:?}"
    );
    assert_eq!(bn.num_batches_tracked.item().unwrap(), 1.0);
    bn.eval();
    let y = bn.forward(&x).unwrap().to_vec::<f32>().unwrap();
    let want0 = (1.0 - 0.2) / (1.1f32 + 1e-5).sqrt();
    assert!((y[0] - want0).abs() < 1e-5);
    assert_eq!(bn.num_batches_tracked.item().unwrap(), 1.0);
}

#[test]
fn dropout_and_layer_norm_follow_train_and_eval() {
    let d = Dropout::new(0.5);
    let x = Tensor::ones(&[1000], DType::F32);
    let y = d.forward(&x).unwrap().to_vec::<f32>().unwrap();
    assert!(y.iter().all(|&v| v == 0.0 || v == 2.0));
    let zeros = y.iter().filter(|&&v| v == 0.0).count();
    assert!((350..650).contains(&zeros), "{zeros}");
    d.eval();
    assert_eq!(
        d.forward(&x).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0; 1000]
    );
    let ln = LayerNorm::new(&[4]);
    let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[1, 4]).unwrap();
    let y = ln.forward(&x).unwrap().to_vec::<f32>().unwrap();
    assert!((y.iter().sum::<f32>()).abs() < 1e-5);
    assert!(ln.forward(&Tensor::zeros(&[1, 3], DType::F32)).is_err());
}

#[test]
fn tiny_synthetic_regression_converges_and_accumulated_grads_match_a_full_batch() {
    manual_seed(7);
    // y = 2 x0 - 3 x1 + 1
    let x = Tensor::randn(&[64, 2], DType::F32).unwrap();
    let xs = x.to_vec::<f32>().unwrap();
    let ys: Vec<f32> = xs
        .chunks(2)
        .map(|r| 2.0 * r[0] - 3.0 * r[1] + 1.0)
        .collect();
    let y = Tensor::from_vec(ys, &[64, 1]).unwrap();
    let model = Linear::new(2, 1, true).unwrap();
    let mut opt = Sgd::new(
        model.parameters(),
        SgdConfig {
            lr: 0.1,
            ..SgdConfig::default()
        },
    );
    let mut loss_v = f64::MAX;
    for _ in 0..200 {
        opt.zero_grad();
        let loss = F::mse_loss(&model.forward(&x).unwrap(), &y, F::Reduction::Mean).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
        loss_v = loss.item().unwrap();
    }
    assert!(loss_v < 1e-6, "loss {loss_v}");
    let w = model.weight.to_vec::<f32>().unwrap();
    assert!(
        (w[0] - 2.0).abs() < 1e-3 && (w[1] + 3.0).abs() < 1e-3,
        "{w:?}"
    );

    // Gradient accumulation: two half batches with sum-loss equal one full batch.
    let full = Linear::new(2, 1, true).unwrap();
    let sum_loss = |m: &Linear, xb: &Tensor, yb: &Tensor| {
        F::mse_loss(&m.forward(xb).unwrap(), yb, F::Reduction::Sum).unwrap()
    };
    sum_loss(&full, &x, &y).backward().unwrap();
    let g_full = full.weight.grad().unwrap().to_vec::<f32>().unwrap();
    full.weight.zero_grad();
    for h in 0..2 {
        let xb = x.narrow(0, h * 32, 32).unwrap();
        let yb = y.narrow(0, h * 32, 32).unwrap();
        sum_loss(&full, &xb, &yb).backward().unwrap();
    }
    let g_acc = full.weight.grad().unwrap().to_vec::<f32>().unwrap();
    for (a, b) in g_full.iter().zip(&g_acc) {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + a.abs()),
            "{g_full:?} vs {g_acc:?}"
        );
    }
}

fn resident_kb() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4
}

#[test]
fn resident_memory_does_not_grow_over_training_steps() {
    manual_seed(3);
    let net = SimpleNet::new(64, 64, 10);
    let mut opt = Adam::new(net.parameters(), AdamConfig::default());
    let x = Tensor::randn(&[32, 64], DType::F32).unwrap();
    let t = Tensor::randint(&[32], 0, 10, DType::I64).unwrap();
    let mut step = || {
        opt.zero_grad();
        let loss = F::cross_entropy(&net.forward(&x).unwrap(), &t).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
    };
    for _ in 0..100 {
        step();
    }
    let at_100 = resident_kb();
    for _ in 0..900 {
        step();
    }
    let at_1000 = resident_kb();
    assert!(at_100 > 0);
    assert!(
        at_1000 <= at_100 + 2048,
        "resident memory grew from {at_100} kB to {at_1000} kB"
    );
}

/// The values of a float tensor as bit patterns (exact comparison, NaN included).
fn bits(t: &Tensor) -> Vec<u64> {
    t.value()
        .to_f64_vec()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn linear_without_a_tape_runs_one_kernel_with_the_numbers_of_the_ops() {
    manual_seed(7);
    let layer = Linear::new(20, 6, true).unwrap();
    let b = layer.bias.clone().unwrap();
    for shape in [vec![1usize, 20], vec![5, 20], vec![2, 3, 20]] {
        let x = Tensor::randn(&shape, DType::F32).unwrap();
        let recorded = layer.forward(&x).unwrap();
        assert!(recorded.requires_grad());
        let _g = tandem_eager::no_grad();
        let fused = layer.forward(&x).unwrap();
        assert!(!fused.requires_grad());
        let ops = (&x.matmul(&layer.weight.t().unwrap()).unwrap() + &b).unwrap();
        assert_eq!(fused.dims(), ops.dims());
        assert_eq!(bits(&fused), bits(&ops), "{shape:?}");
        assert_eq!(bits(&recorded), bits(&ops), "{shape:?}");
    }
    // Errors are the ops' errors, with the layer's name.
    let _g = tandem_eager::no_grad();
    let x = Tensor::zeros(&[3, 20], DType::F32);
    let short_bias = Tensor::zeros(&[4], DType::F32);
    let e = F::linear(&x, &layer.weight, Some(&short_bias))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 6]") && e.contains("[4]"), "{e}");
    let e = layer
        .forward(&Tensor::zeros(&[3, 7], DType::F32))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 7]") && e.contains("[6, 20]"), "{e}");
    let e = F::linear(&x.to_dtype(DType::F64).unwrap(), &layer.weight, Some(&b))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("float64") && e.contains("float32") && e.contains("linear"),
        "{e}"
    );
}

#[test]
fn an_optimizer_step_that_fails_leaves_every_parameter_as_it_was() {
    // The update kernels take f32 and f64 parameters; a float16 one, listed after an f32 one,
    // fails the step before the f32 parameter is updated.
    let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2])
        .unwrap()
        .requires_grad_(true);
    let h = Tensor::from_vec(vec![1.0f32, -1.0], &[2])
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
        .requires_grad_(true);
    let la = (&a * &a).unwrap().sum_all().unwrap();
    let hf = h.to_dtype(DType::F32).unwrap();
    let lh = (&hf * &hf).unwrap().sum_all().unwrap();
    (&la + &lh).unwrap().backward().unwrap();
    assert!(h.grad().is_some());
    let before_h = h.value().to_f64_vec().unwrap();
    let mut opt = Adam::new(vec![a.clone(), h.clone()], AdamConfig::default());
    let e = opt.step().unwrap_err().to_string();
    assert!(e.contains("float16"), "{e}");
    assert_eq!(a.to_vec::<f32>().unwrap(), [1.0, 2.0]);
    assert_eq!(h.value().to_f64_vec().unwrap(), before_h);
    // Without the float16 parameter the step runs.
    let mut opt = Adam::new(vec![a.clone()], AdamConfig::default());
    opt.step().unwrap();
    assert_ne!(a.to_vec::<f32>().unwrap(), [1.0, 2.0]);
}
