//! A fixed number of eager MLP training steps (784 -> Linear 128 -> ReLU -> Linear 10, mean
//! cross-entropy, Adam 1e-3) and batch-1 forwards, for profilers (callgrind) and quick timing;
//! prints the time per step and of each phase of the step.
//!
//! `cargo run --release -p tandem-eager --example mlp_step_profile -- [batch] [steps] [infer]`

use std::time::Instant;
use tandem_eager::nn::functional as F;
use tandem_eager::nn::{Linear, Module};
use tandem_eager::optim::{Adam, AdamConfig, Optimizer};
use tandem_eager::{manual_seed, no_grad, DType, Result, Tensor};

fn main() -> Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batch = args.first().copied().unwrap_or(64);
    let steps = args.get(1).copied().unwrap_or(50);
    let infers = args.get(2).copied().unwrap_or(0);
    manual_seed(0);
    let fc1 = Linear::new(784, 128, true)?;
    let fc2 = Linear::new(128, 10, true)?;
    let mut params = fc1.parameters();
    params.extend(fc2.parameters());
    let mut opt = Adam::new(params, AdamConfig::default());
    let x = Tensor::rand(&[batch, 784], DType::F32)?;
    let y = Tensor::randint(&[batch], 0, 10, DType::I64)?;
    // Wall time of each phase of the step, summed over the steps.
    const PHASES: [&str; 5] = ["zero_grad", "forward", "loss", "backward", "optimizer step"];
    let mut phases = [0f64; 5];
    let start = Instant::now();
    for _ in 0..steps {
        let mut marks = [Instant::now(); 6];
        opt.zero_grad();
        marks[1] = Instant::now();
        let logits = fc2.forward(&fc1.forward(&x)?.relu()?)?;
        marks[2] = Instant::now();
        let loss = F::cross_entropy(&logits, &y)?;
        marks[3] = Instant::now();
        loss.backward()?;
        marks[4] = Instant::now();
        opt.step()?;
        marks[5] = Instant::now();
        for (p, w) in phases.iter_mut().zip(marks.windows(2)) {
            *p += (w[1] - w[0]).as_secs_f64();
        }
    }
    let train = start.elapsed();
    let x1 = Tensor::rand(&[1, 784], DType::F32)?;
    let start = Instant::now();
    {
        let _g = no_grad();
        for _ in 0..infers {
            std::hint::black_box(fc2.forward(&fc1.forward(&x1)?.relu()?)?);
        }
    }
    let infer = start.elapsed();
    println!(
        "batch {batch}: {steps} steps, {:.1} us/step; {infers} batch-1 forwards, {:.2} us each",
        train.as_secs_f64() * 1e6 / steps.max(1) as f64,
        infer.as_secs_f64() * 1e6 / infers.max(1) as f64
    );
    for (name, t) in PHASES.iter().zip(phases) {
        println!(
            "  {name:>14}: {:8.1} us/step",
            t * 1e6 / steps.max(1) as f64
        );
    }
    Ok(())
}
