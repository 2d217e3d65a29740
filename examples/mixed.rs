//! Mixing modes in one program: `cargo run --example mixed`.
//!
//! Graph mode preprocesses (a `Session` scales and normalizes raw bytes), eager mode trains
//! (PyTorch style), the trained model is traced into a graph, evaluated and trained further
//! by a `Session`, its weights go back to eager mode as a state dict, and the traced graph is
//! written as ONNX. Data: two synthetic classes of 16-byte "images" (bright left or right half).
//! For MNIST, see `cargo run --release --example mnist -- --mode mixed`.

use tandem::eager::nn::functional as F;
use tandem::eager::nn::{Linear, Module};
use tandem::eager::optim::{Adam, AdamConfig, Optimizer};
use tandem::eager::{manual_seed, DType, Result, Tensor};
use tandem::graph::{EmitExt, Functional, GradientDescent, Graph, Optimizer as _, Session};
use tandem::interop::{export_onnx, from_fetch, graph_state_dict, run_eager, trace_module};

struct Net {
    fc1: Linear,
    fc2: Linear,
}

impl Module for Net {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

/// `n` raw samples: class 1 has its right half bright, class 0 its left half.
fn raw_batch(n: usize, seed: u64) -> Result<(tandem::tensor::Tensor, Tensor)> {
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let (mut pixels, mut labels) = (Vec::with_capacity(n * 16), Vec::with_capacity(n));
    for _ in 0..n {
        let class = (next() % 2) as i64;
        for j in 0..16 {
            let bright = (j >= 8) == (class == 1);
            let base = if bright { 160 } else { 20 };
            pixels.push((base + next() % 80) as u8);
        }
        labels.push(class);
    }
    Ok((
        tandem::tensor::Tensor::from_vec(pixels, &[n, 16])?,
        Tensor::from_vec(labels, &[n])?,
    ))
}

fn main() -> Result<()> {
    manual_seed(0);
    // 1. Graph-mode preprocessing: u8 -> f32 / 255 -> normalized.
    let pre = Graph::new();
    let raw = pre.placeholder("raw", DType::U8, &[None, Some(16)])?;
    let scaled = pre.mul_scalar(&pre.cast(&raw, DType::F32)?, 1.0 / 255.0)?;
    let normalized = pre.mul_scalar(&pre.add_scalar(&scaled, -0.5)?, 1.0 / 0.25)?;
    let pre_sess = Session::new(&pre)?;

    // 2. Eager training on the Session's output (no copy between the modes).
    let net = Net {
        fc1: Linear::new(16, 8, true)?,
        fc2: Linear::new(8, 2, true)?,
    };
    let mut opt = Adam::new(
        net.parameters(),
        AdamConfig {
            lr: 1e-2,
            ..AdamConfig::default()
        },
    );
    for step in 0..100u64 {
        let (bytes, y) = raw_batch(32, step + 1)?;
        let x = from_fetch(pre_sess.run(&[&normalized], &[(&raw, &bytes)])?.remove(0));
        opt.zero_grad();
        let loss = F::cross_entropy(&net.forward(&x)?, &y)?;
        loss.backward()?;
        opt.step()?;
        if step % 25 == 0 {
            println!("eager step {step}: loss {:.4}", loss.item()?);
        }
    }

    // 3. Trace the trained model into a graph and evaluate it with a Session.
    let (bytes, y) = raw_batch(500, 999)?;
    let x = from_fetch(pre_sess.run(&[&normalized], &[(&raw, &bytes)])?.remove(0));
    let traced = trace_module(&net, &x)?;
    // The training ops of step 4 (built before the Session so their variables start with it).
    let labels = traced.graph.placeholder("labels", DType::I64, &[None])?;
    let loss = traced
        .graph
        .cross_entropy(&traced.outputs[0], &labels, Default::default())?;
    let train = GradientDescent::new(0.1).minimize(&loss)?;
    let sess = Session::new(&traced.graph)?;
    let logits = run_eager(&sess, &[&traced.outputs[0]], &[(&traced.inputs[0], &x)])?;
    let acc = |logits: &Tensor| -> Result<f64> {
        let hits = logits
            .argmax(1, false)?
            .eq(&y)?
            .to_dtype(DType::I64)?
            .sum_all()?;
        Ok(hits.item()? / 500.0)
    };
    println!("traced graph accuracy: {:.3}", acc(&logits[0])?);

    // 4. Train the traced graph further (TF1 style), then bring the weights back to eager.
    for step in 0..20u64 {
        let (bytes, yb) = raw_batch(32, 5000 + step)?;
        let xb = pre_sess.run(&[&normalized], &[(&raw, &bytes)])?.remove(0);
        sess.run(
            &[&train],
            &[(&traced.inputs[0], &xb), (&labels, &yb.value())],
        )?;
    }
    net.load_state_dict(&graph_state_dict(&sess)?, false)?;
    println!(
        "eager accuracy after graph fine-tuning: {:.3}",
        acc(&net.forward(&x)?)?
    );

    // 5. Export the traced graph (with the fine-tuned weights) as ONNX.
    let path = std::env::temp_dir().join("tandem_mixed.onnx");
    export_onnx(
        &traced.graph,
        Some(&sess),
        &[("input", &traced.inputs[0])],
        &[("logits", &traced.outputs[0])],
        17,
        &path,
    )?;
    println!("wrote {}", path.display());
    Ok(())
}
