//! Eager models on a GPU: the same model trained from the same initial values on the CPU and
//! on CUDA gives the same losses; `Module::to_device` keeps parameters leaves; `to_device` is
//! recorded by autograd; state dicts of GPU modules save and load.
//!
//! Needs the `cuda` feature (`cargo test -p tandem-eager --features cuda --test cuda`); every
//! test prints "no CUDA driver, skipped" and passes where no GPU is usable.
#![cfg(feature = "cuda")]

use tandem_eager::nn::functional as F;
use tandem_eager::nn::{BatchNorm, Conv2d, Flatten, Linear, MaxPool2d, Module, ReLU, Sequential};
use tandem_eager::optim::{Adam, AdamConfig, Optimizer, RmsProp, RmsPropConfig, Sgd, SgdConfig};
use tandem_eager::{manual_seed, DType, Device, Tensor};
use tandem_tensor::Conv2dParams;

const GPU: Device = Device::Cuda(0);

fn gpu() -> bool {
    if !tandem_tensor::cuda::is_available() {
        eprintln!("no CUDA driver, skipped");
        return false;
    }
    true
}

fn mlp() -> Sequential {
    Sequential::new()
        .add(Linear::new(20, 32, true).unwrap())
        .add(ReLU)
        .add(Linear::new(32, 5, true).unwrap())
}

fn cnn() -> Sequential {
    Sequential::new()
        // No conv bias before BatchNorm (as in PyTorch models): its true gradient is zero, so
        // Adam would turn each device's rounding noise into full-size, diverging steps.
        .add(
            Conv2d::with_params(
                1,
                4,
                [3, 3],
                Conv2dParams {
                    padding: [1, 1],
                    ..Conv2dParams::default()
                },
                false,
            )
            .unwrap(),
        )
        .add(BatchNorm::new_2d(4))
        .add(ReLU)
        .add(MaxPool2d::new(2))
        .add(Flatten::default())
        .add(Linear::new(4 * 4 * 4, 3, true).unwrap())
}

/// A copy of `src`'s parameters and buffers in `dst` (same architecture).
fn copy_state(src: &dyn Module, dst: &dyn Module) {
    dst.load_state_dict(&src.state_dict(), true).unwrap();
}

fn optimizer(kind: &str, params: Vec<Tensor>) -> Box<dyn Optimizer> {
    match kind {
        "adam" => Box::new(Adam::new(
            params,
            AdamConfig {
                lr: 1e-2,
                ..AdamConfig::default()
            },
        )),
        "sgd" => Box::new(Sgd::new(
            params,
            SgdConfig {
                lr: 0.05,
                momentum: 0.9,
                ..SgdConfig::default()
            },
        )),
        _ => Box::new(RmsProp::new(
            params,
            RmsPropConfig {
                lr: 1e-3,
                ..RmsPropConfig::default()
            },
        )),
    }
}

/// Losses of `steps` training steps of `model` on `device` (cross-entropy plus a small MSE
/// term on the logits, so that both loss families and `mean`'s gradient run).
fn train(model: &mut dyn Module, opt: &str, x: &Tensor, y: &Tensor, device: Device) -> Vec<f64> {
    model.to_device(device).unwrap();
    let mut o = optimizer(opt, model.parameters());
    let (x, y) = (x.to_device(device).unwrap(), y.to_device(device).unwrap());
    let mut losses = Vec::new();
    for _ in 0..20 {
        o.zero_grad();
        let logits = model.forward(&x).unwrap();
        let ce = F::cross_entropy(&logits, &y).unwrap();
        let zeros = Tensor::zeros_on(&logits.dims(), DType::F32, device).unwrap();
        let mse = F::mse_loss(&logits, &zeros, F::Reduction::Mean).unwrap();
        let loss = (&ce + &(&mse * 0.01).unwrap()).unwrap();
        assert_eq!(loss.device(), device, "the loss is computed on {device}");
        loss.backward().unwrap();
        for p in model.parameters() {
            let g = p.grad().expect("every parameter gets a gradient");
            assert_eq!(
                g.device(),
                device,
                "gradients live on the parameter's device"
            );
        }
        o.step().unwrap();
        losses.push(loss.item().unwrap());
    }
    losses
}

fn assert_same_losses(what: &str, cpu: &[f64], gpu: &[f64]) {
    for (i, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        let rel = (c - g).abs() / c.abs().max(1e-6);
        assert!(
            rel <= 1e-4,
            "{what}: step {i}: CPU loss {c} vs CUDA loss {g} (relative difference {rel:.2e}); \
             CPU losses {cpu:?}, CUDA losses {gpu:?}"
        );
    }
    assert!(
        cpu.last() < cpu.first(),
        "{what}: the loss should go down: {cpu:?}"
    );
}

fn data(shape: &[usize], classes: i64) -> (Tensor, Tensor) {
    manual_seed(7);
    let x = Tensor::randn(shape, DType::F32).unwrap();
    let y = Tensor::randint(&[shape[0]], 0, classes, DType::I64).unwrap();
    (x, y)
}

#[test]
fn mlp_trains_the_same_on_cpu_and_cuda() {
    if !gpu() {
        return;
    }
    let (x, y) = data(&[16, 20], 5);
    for opt in ["adam", "sgd", "rmsprop"] {
        manual_seed(0);
        let mut a = mlp();
        let mut b = mlp();
        copy_state(&a, &b);
        let cpu = train(&mut a, opt, &x, &y, Device::Cpu);
        let gpu = train(&mut b, opt, &x, &y, GPU);
        assert_same_losses(&format!("MLP with {opt}"), &cpu, &gpu);
    }
}

#[test]
fn cnn_with_batch_norm_trains_the_same_on_cpu_and_cuda() {
    if !gpu() {
        return;
    }
    let (x, y) = data(&[8, 1, 8, 8], 3);
    manual_seed(0);
    let mut a = cnn();
    let mut b = cnn();
    copy_state(&a, &b);
    let cpu = train(&mut a, "adam", &x, &y, Device::Cpu);
    let gpu = train(&mut b, "adam", &x, &y, GPU);
    assert_same_losses("CNN with Adam", &cpu, &gpu);
    // Running statistics and the batch counter were updated on the GPU like on the CPU.
    b.to_device(Device::Cpu).unwrap();
    for ((n, va), (_, vb)) in a.state_dict().iter().zip(b.state_dict().iter()) {
        let (ca, cb) = (va.to_f64_vec().unwrap(), vb.to_f64_vec().unwrap());
        for (p, q) in ca.iter().zip(&cb) {
            assert!(
                (p - q).abs() <= 1e-3 * p.abs().max(1.0),
                "`{n}` after training: CPU {ca:?} vs CUDA {cb:?}"
            );
        }
    }
}

#[test]
fn module_to_device_round_trip_keeps_leaves_names_and_values() {
    if !gpu() {
        return;
    }
    manual_seed(1);
    let mut m = cnn();
    let before: Vec<(String, Vec<f64>)> = m
        .state_dict()
        .into_iter()
        .map(|(n, v)| (n, v.to_f64_vec().unwrap()))
        .collect();
    let params_before = m.parameters();
    m.to_device(GPU).unwrap();
    assert_eq!(m.device(), Some(GPU));
    for (n, p) in m.named_parameters() {
        assert_eq!(p.device(), GPU, "`{n}` moved");
        assert!(
            p.is_leaf() && p.requires_grad(),
            "`{n}` is still a trainable leaf"
        );
    }
    for (n, b) in m.named_buffers() {
        assert_eq!(b.device(), GPU, "buffer `{n}` moved");
    }
    // Same tensors: an optimizer built before the move updates the moved parameters.
    for (p, q) in params_before.iter().zip(m.parameters()) {
        assert!(p.same(&q));
    }
    m.to_device(Device::Cpu).unwrap();
    let after: Vec<(String, Vec<f64>)> = m
        .state_dict()
        .into_iter()
        .map(|(n, v)| (n, v.to_f64_vec().unwrap()))
        .collect();
    assert_eq!(before, after, "values survive CPU -> CUDA -> CPU exactly");
}

#[test]
fn state_dict_of_a_gpu_module_saves_and_loads() {
    if !gpu() {
        return;
    }
    manual_seed(2);
    let mut m = mlp();
    m.to_device(GPU).unwrap();
    let dir = std::env::temp_dir().join(format!("tandem-eager-cuda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mlp.safetensors");
    m.save_safetensors(&path).unwrap();
    let cpu = mlp();
    cpu.load_safetensors(&path).unwrap();
    let mut gpu_copy = mlp();
    gpu_copy.to_device(GPU).unwrap();
    gpu_copy.load_safetensors(&path).unwrap();
    assert_eq!(
        gpu_copy.device(),
        Some(GPU),
        "loading keeps the model on its device"
    );
    for (((n, a), (_, b)), (_, c)) in m
        .state_dict()
        .iter()
        .zip(cpu.state_dict().iter())
        .zip(gpu_copy.state_dict().iter())
    {
        assert_eq!(a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap(), "`{n}`");
        assert_eq!(a.to_f64_vec().unwrap(), c.to_f64_vec().unwrap(), "`{n}`");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn to_device_is_recorded_and_gradients_come_back_to_the_source_device() {
    if !gpu() {
        return;
    }
    let x = Tensor::from_vec(vec![1.0f32, -2.0, 3.0], &[3])
        .unwrap()
        .requires_grad_(true);
    let g = x.cuda().unwrap();
    assert_eq!(g.grad_fn(), Some("to_device"));
    let y = (&g * &g).unwrap().sum_all().unwrap();
    y.backward().unwrap();
    let grad = x.grad().unwrap();
    assert_eq!(grad.device(), Device::Cpu);
    assert_eq!(grad.to_vec::<f32>().unwrap(), vec![2.0, -4.0, 6.0]);

    // And the other way: a GPU leaf used on the CPU.
    let w = Tensor::from_vec(vec![0.5f32, 1.5], &[2])
        .unwrap()
        .cuda()
        .unwrap()
        .requires_grad_(true);
    let loss = (w.cpu().unwrap() * 3.0).unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let gw = w.grad().unwrap();
    assert_eq!(gw.device(), GPU);
    assert_eq!(gw.to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
}

#[test]
fn mixing_devices_is_an_error_naming_both() {
    if !gpu() {
        return;
    }
    let a = Tensor::ones(&[2, 2], DType::F32);
    let b = Tensor::ones_on(&[2, 2], DType::F32, GPU).unwrap();
    let e = (&a + &b).unwrap_err().to_string();
    assert!(
        e.contains("cpu") && e.contains("cuda"),
        "the error names both devices: {e}"
    );
    // A 0-d CPU tensor combines with a GPU tensor as a scalar (PyTorch's rule).
    let s = Tensor::scalar(2.0f32);
    let r = (&b * &s).unwrap();
    assert_eq!(r.device(), GPU);
    assert_eq!(r.to_vec::<f32>().unwrap(), vec![2.0; 4]);
}
