//! Graph sessions on a GPU: the same MLP graph trained on the CPU and on CUDA gives the same
//! losses; feeds may be host or device tensors; fetches come back on the device; fused
//! elementwise kernels run as generated CUDA kernels; the Saver writes GPU variables.
//!
//! Needs the `cuda` feature (`cargo test -p tandem-graph --features cuda --test cuda`); every
//! test prints "no CUDA driver, skipped" and passes where no GPU is usable.
#![cfg(feature = "cuda")]

use tandem_graph::{Adam, Graph, Initializer, Optimizer, Output, Saver, Session};
use tandem_ir::{CrossEntropyOptions, EmitExt, Functional};
use tandem_tensor::random::Rng;
use tandem_tensor::{DType, Device, Tensor};

const GPU: Device = Device::Cuda(0);

fn gpu() -> bool {
    if !tandem_tensor::cuda::is_available() {
        eprintln!("no CUDA driver, skipped");
        return false;
    }
    true
}

struct Mlp {
    graph: Graph,
    x: Output,
    y: Output,
    loss: Output,
    train: Output,
}

fn param(g: &Graph, name: &str, shape: &[usize], fan_in: usize) -> Output {
    let b = 1.0 / (fan_in as f64).sqrt();
    let init = Initializer::Uniform {
        low: -b,
        high: b,
        seed: None,
    };
    g.variable_with(name, shape, DType::F32, init, true)
        .unwrap()
}

/// 20 -> 32 -> relu -> 5, cross-entropy, Adam 1e-2.
fn mlp() -> Mlp {
    let g = Graph::new();
    g.set_seed(3).unwrap();
    let x = g.placeholder("x", DType::F32, &[None, Some(20)]).unwrap();
    let y = g.placeholder("y", DType::I64, &[None]).unwrap();
    let w1 = param(&g, "w1", &[32, 20], 20);
    let b1 = param(&g, "b1", &[32], 20);
    let w2 = param(&g, "w2", &[5, 32], 32);
    let b2 = param(&g, "b2", &[5], 32);
    let h = g.relu(&g.linear(&x, &w1, Some(&b1)).unwrap()).unwrap();
    let logits = g.linear(&h, &w2, Some(&b2)).unwrap();
    let loss = g
        .cross_entropy(&logits, &y, CrossEntropyOptions::default())
        .unwrap();
    let train = Adam::new(1e-2).minimize(&loss).unwrap();
    Mlp {
        graph: g,
        x,
        y,
        loss,
        train,
    }
}

fn data() -> (Tensor, Tensor) {
    let mut rng = Rng::new(11);
    let x = Tensor::randn(&[16, 20], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let y = Tensor::randint(&[16], 0, 5, DType::I64, &mut rng).unwrap();
    (x, y)
}

fn train(device: Device, feed_on: Device) -> Vec<f64> {
    let m = mlp();
    let s = Session::new_on(&m.graph, device).unwrap();
    assert_eq!(s.device(), device);
    let (x, y) = data();
    let (x, y) = (x.to_device(feed_on).unwrap(), y.to_device(feed_on).unwrap());
    let step = s.callable(&[&m.train, &m.loss], &[&m.x, &m.y]).unwrap();
    let mut losses = Vec::new();
    for i in 0..20 {
        let out = if i % 2 == 0 {
            step.run(&[x.clone(), y.clone()]).unwrap()
        } else {
            s.run(&[&m.train, &m.loss], &[(&m.x, &x), (&m.y, &y)])
                .unwrap()
        };
        assert_eq!(
            out[1].device(),
            device,
            "fetches come back on the session's device"
        );
        losses.push(out[1].item().unwrap());
    }
    losses
}

#[test]
fn mlp_graph_trains_the_same_on_cpu_and_cuda_with_feeds_on_either_device() {
    if !gpu() {
        return;
    }
    let cpu = train(Device::Cpu, Device::Cpu);
    for feed_on in [Device::Cpu, GPU] {
        let gpu = train(GPU, feed_on);
        for (i, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
            let rel = (c - g).abs() / c.abs().max(1e-6);
            assert!(
                rel <= 1e-4,
                "step {i} (feeds on {feed_on}): CPU loss {c} vs CUDA loss {g} (relative \
                 difference {rel:.2e}); CPU {cpu:?}, CUDA {gpu:?}"
            );
        }
    }
    assert!(cpu.last() < cpu.first(), "the loss goes down: {cpu:?}");
}

#[test]
fn fused_elementwise_chains_run_on_cuda() {
    if !gpu() {
        return;
    }
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, &[None, Some(17)]).unwrap();
    let b = g.placeholder("b", DType::F32, &[Some(17)]).unwrap();
    // relu(a * 2 + b) * sigmoid(a) - exp(-b): one fused kernel with a broadcast input.
    let t = g.add(&g.mul_scalar(&a, 2.0).unwrap(), &b).unwrap();
    let t = g
        .mul(&g.relu(&t).unwrap(), &g.sigmoid(&a).unwrap())
        .unwrap();
    let out = g.sub(&t, &g.exp(&g.neg(&b).unwrap()).unwrap()).unwrap();
    let mut rng = Rng::new(5);
    let av = Tensor::randn(&[33, 17], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let bv = Tensor::randn(&[17], 0.0, 1.0, DType::F32, &mut rng).unwrap();
    let run = |device| {
        let s = Session::new_on(&g, device).unwrap();
        let r = s.run(&[&out], &[(&a, &av), (&b, &bv)]).unwrap();
        (
            r[0].to_device(Device::Cpu).unwrap(),
            s.explain(&[&out], &[&a, &b]).unwrap(),
        )
    };
    let (cpu, plan) = run(Device::Cpu);
    let (gpu, _) = run(GPU);
    assert!(plan.contains("fused"), "the plan fuses the chain:\n{plan}");
    assert_eq!(cpu.shape(), gpu.shape());
    for (c, g) in cpu
        .to_f64_vec()
        .unwrap()
        .iter()
        .zip(gpu.to_f64_vec().unwrap())
    {
        assert!(
            (c - g).abs() <= 1e-5 * c.abs().max(1.0),
            "CPU {c} vs CUDA {g}"
        );
    }
}

#[test]
fn saver_writes_gpu_variables_and_restores_them_to_the_device() {
    if !gpu() {
        return;
    }
    let m = mlp();
    let s = Session::new_on(&m.graph, GPU).unwrap();
    let (x, y) = data();
    s.run(&[&m.train], &[(&m.x, &x), (&m.y, &y)]).unwrap();
    let dir = std::env::temp_dir().join(format!("tandem-graph-cuda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mlp.safetensors");
    let vars = m.graph.trainable_variables().unwrap();
    let refs: Vec<&Output> = vars.iter().collect();
    Saver::with_variables(&refs).save_to(&s, &path).unwrap();
    let s2 = Session::new_on(&m.graph, GPU).unwrap();
    Saver::with_variables(&refs).restore(&s2, &path).unwrap();
    for v in &vars {
        let (a, b) = (s.variable_value(v).unwrap(), s2.variable_value(v).unwrap());
        assert_eq!(b.device(), GPU, "`{}` restored onto the device", v.name());
        assert_eq!(
            a.to_f64_vec().unwrap(),
            b.to_f64_vec().unwrap(),
            "`{}`",
            v.name()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn keras_sequential_fits_on_the_gpu_like_on_the_cpu() {
    use tandem_graph::keras::{Dense, FitOptions, Sequential};
    if !gpu() {
        return;
    }
    let (x, y) = data();
    let run = |device: Device| {
        let mut m = Sequential::new(vec![
            Box::new(Dense::new(32).activation("relu")),
            Box::new(Dense::new(5)),
        ])
        .seed(4)
        .device(device);
        m.compile("adam", "sparse_categorical_crossentropy", &["accuracy"])
            .unwrap();
        let opts = FitOptions::new().epochs(5).batch_size(8).verbose(false);
        let h = m.fit(&x, &y, &opts).unwrap();
        assert_eq!(m.session().unwrap().device(), device);
        let p = m.predict(&x, 16).unwrap();
        assert_eq!(p.device(), Device::Cpu, "predict returns host tensors");
        (h.loss().to_vec(), p.to_vec::<f32>().unwrap())
    };
    let (cpu_loss, cpu_pred) = run(Device::Cpu);
    let (gpu_loss, gpu_pred) = run(GPU);
    for (a, b) in cpu_loss.iter().zip(&gpu_loss) {
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "loss {a} vs {b}");
    }
    for (a, b) in cpu_pred.iter().zip(&gpu_pred) {
        assert!(
            (a - b).abs() <= 1e-3 * a.abs().max(1.0),
            "prediction {a} vs {b}"
        );
    }
}
