//! GPU benchmark (issue 7's table): matrix products and training steps on CUDA device 0, in
//! eager and graph mode. Prints one line per measurement, `name<TAB>median_ms<TAB>extra`,
//! which `scripts/gpu-check.sh` puts next to `benches/python/gpu_torch.py`'s lines for the
//! same workloads.
//!
//! ```sh
//! cargo run --release --features cuda --example gpu_bench
//! ```
//!
//! Workloads: f32 and bf16 matmul 4096^3 (TFLOP/s in `extra`); the MNIST MLP (784-128-10) and
//! LeNet-5 training steps (cross-entropy, Adam lr 1e-3) at batch 64 and 1024, eager and graph.
//! Every timed region ends with a device synchronization.

use std::time::Instant;
use tandem::eager::nn::functional as F;
use tandem::eager::nn::Module;
use tandem::eager::optim::{Adam, AdamConfig, Optimizer};
use tandem::graph::{self as tg, Graph, Initializer, Optimizer as _, Output, Session};
use tandem::ir::{CrossEntropyOptions, EmitExt, Functional};
use tandem::tensor::random::Rng;
use tandem::tensor::{cuda, Conv2dParams, DType, Device, Pool2dParams, Result, Tensor};

// The benchmark models (W1's MLP, W3's LeNet-5), shared with the CPU benchmarks.
#[allow(dead_code)]
#[path = "../benches/modes/tandem.rs"]
mod tandem_models;

const GPU: Device = Device::Cuda(0);

/// Median milliseconds of `reps` runs of `f` (after `warm` untimed runs), each followed by a
/// device synchronization.
fn median_ms(warm: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warm {
        f()?;
    }
    cuda::synchronize(0)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        cuda::synchronize(0)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok(times[times.len() / 2])
}

fn report(name: &str, ms: f64, extra: &str) {
    println!("{name}\t{ms:.4}\t{extra}");
}

fn matmul(rng: &mut Rng, dtype: DType, label: &str) -> Result<()> {
    let n = 4096usize;
    let a = Tensor::randn(&[n, n], 0.0, 1.0, DType::F32, rng)?
        .cast(dtype)?
        .to_device(GPU)?;
    let b = Tensor::randn(&[n, n], 0.0, 1.0, DType::F32, rng)?
        .cast(dtype)?
        .to_device(GPU)?;
    let ms = median_ms(3, 10, || a.matmul(&b).map(drop))?;
    let tflops = 2.0 * (n as f64).powi(3) / (ms * 1e-3) / 1e12;
    report(
        &format!("matmul_{label}_4096"),
        ms,
        &format!("{tflops:.1} TFLOP/s"),
    );
    Ok(())
}

/// A batch on the GPU: images `[batch, 784]` (or `[batch, 1, 28, 28]`) and int64 labels.
fn batch(rng: &mut Rng, n: usize, image: bool) -> Result<(Tensor, Tensor)> {
    let shape: Vec<usize> = if image {
        vec![n, 1, 28, 28]
    } else {
        vec![n, 784]
    };
    let x = Tensor::rand_uniform(&shape, 0.0, 1.0, DType::F32, rng)?.to_device(GPU)?;
    let y = Tensor::from_vec((0..n as i64).map(|i| (i * 7 + 3) % 10).collect(), &[n])?
        .to_device(GPU)?;
    Ok((x, y))
}

fn eager_step(name: &str, mut model: Box<dyn Module>, x: Tensor, y: Tensor) -> Result<()> {
    model.to_device(GPU)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig::default());
    let (x, y) = (
        tandem::eager::Tensor::from_value(x),
        tandem::eager::Tensor::from_value(y),
    );
    let ms = median_ms(5, 30, || {
        opt.zero_grad();
        let loss = F::cross_entropy(&model.forward(&x)?, &y)?;
        loss.backward()?;
        opt.step()
    })?;
    report(&format!("{name}/eager"), ms, "");
    Ok(())
}

fn param(g: &Graph, name: &str, shape: &[usize], fan_in: usize) -> Result<Output> {
    let b = 1.0 / (fan_in as f64).sqrt();
    let init = Initializer::Uniform {
        low: -b,
        high: b,
        seed: None,
    };
    g.variable_with(name, shape, DType::F32, init, true)
}

fn dense(g: &Graph, name: &str, x: &Output, inp: usize, out: usize) -> Result<Output> {
    let _s = g.scope(name);
    let w = param(g, "weight", &[out, inp], inp)?;
    let b = param(g, "bias", &[out], inp)?;
    g.linear(x, &w, Some(&b))
}

fn conv(g: &Graph, name: &str, x: &Output, cin: usize, cout: usize, pad: usize) -> Result<Output> {
    let _s = g.scope(name);
    let w = param(g, "weight", &[cout, cin, 5, 5], cin * 25)?;
    let b = param(g, "bias", &[cout], cin * 25)?;
    let p = Conv2dParams {
        padding: [pad, pad],
        ..Conv2dParams::default()
    };
    g.conv2d(x, &w, Some(&b), p)
}

fn graph_step(name: &str, lenet: bool, x: Tensor, y: Tensor) -> Result<()> {
    let g = Graph::new();
    g.set_seed(0)?;
    let xs: Vec<Option<usize>> = std::iter::once(None)
        .chain(x.shape()[1..].iter().map(|&d| Some(d)))
        .collect();
    let xp = g.placeholder("x", DType::F32, &xs)?;
    let yp = g.placeholder("y", DType::I64, &[None])?;
    let logits = if lenet {
        let pool = Pool2dParams::square(2, 2, 0);
        let h = g.max_pool2d(&g.relu(&conv(&g, "conv1", &xp, 1, 6, 2)?)?, pool)?;
        let h = g.max_pool2d(&g.relu(&conv(&g, "conv2", &h, 6, 16, 0)?)?, pool)?;
        let h = g.flatten(&h, 1, -1)?;
        let h = g.relu(&dense(&g, "fc1", &h, 400, 120)?)?;
        let h = g.relu(&dense(&g, "fc2", &h, 120, 84)?)?;
        dense(&g, "fc3", &h, 84, 10)?
    } else {
        let h = g.relu(&dense(&g, "fc1", &xp, 784, 128)?)?;
        dense(&g, "fc2", &h, 128, 10)?
    };
    let loss = g.cross_entropy(&logits, &yp, CrossEntropyOptions::default())?;
    let train = tg::Adam::new(1e-3).minimize(&loss)?;
    let session = Session::new_on(&g, GPU)?;
    let step = session.callable(&[&train, &loss], &[&xp, &yp])?;
    let feeds = [x, y];
    let ms = median_ms(5, 30, || step.run(&feeds).map(drop))?;
    report(&format!("{name}/graph"), ms, "");
    Ok(())
}

fn main() -> Result<()> {
    if !cuda::is_available() {
        eprintln!("gpu_bench: no CUDA device is available");
        std::process::exit(2);
    }
    let mut rng = Rng::new(0);
    matmul(&mut rng, DType::F32, "f32")?;
    matmul(&mut rng, DType::BF16, "bf16")?;
    for n in [64usize, 1024] {
        tandem::eager::manual_seed(0);
        let (x, y) = batch(&mut rng, n, false)?;
        let name = format!("mlp_step_b{n}");
        eager_step(&name, tandem_models::mlp_model(), x.clone(), y.clone())?;
        graph_step(&name, false, x, y)?;
        let (x, y) = batch(&mut rng, n, true)?;
        let name = format!("lenet_step_b{n}");
        eager_step(&name, tandem_models::lenet_model(), x.clone(), y.clone())?;
        graph_step(&name, true, x, y)?;
    }
    Ok(())
}
