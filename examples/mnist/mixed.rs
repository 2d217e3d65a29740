//! `--mode mixed`: graph-mode preprocessing, eager training, graph-mode evaluation.
//!
//! - A preprocessing graph (cast, scale by 1/255, normalize with MNIST's mean and std, reshape
//!   to the model's input, and with `--augment` a random shift of up to 2 pixels) runs in a
//!   `Session` on every raw `uint8` batch;
//! - its output crosses to eager mode without a copy and the eager model trains on it;
//! - the trained model is traced into a graph (normalization and reshape inside, input
//!   `[N, 784]` pixels in [0, 1]) and the test set is evaluated by a `Session` on that graph.

use crate::eager::{LeNet, SimpleNet};
use crate::export::{trace_deployed, write_traced, MEAN, STD};
use crate::{Args, ModelKind};
use std::sync::Arc;
use std::time::Instant;
use tandem::eager::nn::functional as F;
use tandem::eager::nn::Module;
use tandem::eager::optim::{Adam, AdamConfig, Optimizer};
use tandem::eager::{manual_seed, DType, Result, Tensor};
use tandem::graph::{Emit, EmitExt, Graph, Output, Session};
use tandem::interop::{from_fetch, run_eager};
use tandem::ir::Op;
use tandem_data::{mnist, DataLoader, Dataset};

/// The preprocessing graph: raw `uint8 [N, 28, 28]` in, model inputs out.
struct Preprocess {
    session: Session,
    raw: Output,
    /// `[N, 784]` pixels in [0, 1] (what the deployed model takes).
    pixels: Output,
    /// Normalized and shaped for the model, one per shift (index 0: no shift).
    model_inputs: Vec<Output>,
}

impl Preprocess {
    fn new(kind: ModelKind, augment: bool, device: tandem::eager::Device) -> Result<Preprocess> {
        let g = Graph::new();
        let raw = g.placeholder("raw", DType::U8, &[None, Some(28), Some(28)])?;
        let scaled = g.mul_scalar(&g.cast(&raw, DType::F32)?, 1.0 / 255.0)?;
        let pixels = g.reshape(&scaled, &[-1, 784])?;
        let shape: &[isize] = match kind {
            ModelKind::Mlp => &[-1, 784],
            ModelKind::Cnn => &[-1, 1, 28, 28],
        };
        let normalize = |x: &Output| -> Result<Output> {
            let n = g.mul_scalar(&g.add_scalar(x, -MEAN)?, 1.0 / STD)?;
            g.reshape(&n, shape)
        };
        let mut model_inputs = vec![normalize(&scaled)?];
        if augment {
            // Shifts of up to 2 pixels: pad with 0 (black) by 2, then crop 28x28 at an offset.
            let padded = g.emit(
                Op::Pad {
                    pads: vec![(0, 0), (2, 2), (2, 2)],
                    value: 0.0,
                },
                &[&scaled],
            )?;
            for dy in 0..5usize {
                for dx in 0..5usize {
                    if dy == 2 && dx == 2 {
                        continue;
                    }
                    let rows = g.narrow(&padded, 1, dy, 28)?;
                    let crop = g.narrow(&rows, 2, dx, 28)?;
                    model_inputs.push(normalize(&crop)?);
                }
            }
        }
        let session = Session::new_on(&g, device)?;
        Ok(Preprocess {
            session,
            raw,
            pixels,
            model_inputs,
        })
    }
}

/// Accuracy of a traced model (a `Session` on its graph) on raw test batches.
fn evaluate_traced(
    pre: &Preprocess,
    session: &Session,
    input: &Output,
    logits: &Output,
    data: Arc<dyn Dataset>,
) -> Result<f64> {
    let mut hits = 0usize;
    for batch in DataLoader::new(data.clone(), 1000).epoch(0) {
        let b = batch?;
        let raw = Tensor::from_value(b[0].clone());
        let x = run_eager(&pre.session, &[&pre.pixels], &[(&pre.raw, &raw)])?;
        let out = run_eager(session, &[logits], &[(input, &x[0])])?;
        let y = Tensor::from_value(b[1].to_device(session.device())?);
        let pred = out[0].argmax(1, false)?;
        hits += pred.eq(&y)?.to_dtype(DType::I64)?.sum_all()?.item()? as usize;
    }
    Ok(hits as f64 / data.len().max(1) as f64)
}

/// Trains as the flags say and prints per-epoch results and the summary line.
pub fn run(args: &Args) -> Result<()> {
    manual_seed(args.seed);
    let data = mnist::Mnist::load(args.data_dir.as_deref())?;
    let train: Arc<dyn Dataset> = Arc::new(mnist::train(&data, mnist::Transform::Raw));
    let test: Arc<dyn Dataset> = Arc::new(mnist::test(&data, mnist::Transform::Raw));
    let mut model: Box<dyn Module> = match args.model {
        ModelKind::Mlp => Box::new(SimpleNet::new()?),
        ModelKind::Cnn => Box::new(LeNet::new()?),
    };
    model.to_device(args.device)?;
    let pre = Preprocess::new(args.model, args.augment, args.device)?;
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: args.lr,
            ..AdamConfig::default()
        },
    );
    let loader = DataLoader::new(train, args.batch_size).shuffle(args.seed);
    let mut total_seconds = 0.0;
    let mut test_acc = 0.0;
    let mut shift_rng = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for epoch in 0..args.epochs {
        let start = Instant::now();
        let (mut loss_sum, mut steps) = (0.0f64, 0usize);
        for batch in loader.epoch(epoch) {
            let b = batch?;
            // xorshift: which shift this batch gets (0 = none) when augmenting.
            shift_rng ^= shift_rng << 13;
            shift_rng ^= shift_rng >> 7;
            shift_rng ^= shift_rng << 17;
            let k = (shift_rng % pre.model_inputs.len() as u64) as usize;
            let fetch = &pre.model_inputs[k];
            let x = pre.session.run(&[fetch], &[(&pre.raw, &b[0])])?;
            let x = from_fetch(x.into_iter().next().ok_or_else(|| {
                tandem::eager::Error::invalid("mixed", "preprocessing fetched nothing")
            })?);
            let y = Tensor::from_value(b[1].to_device(args.device)?);
            opt.zero_grad();
            let loss = F::cross_entropy(&model.forward(&x)?, &y)?;
            loss.backward()?;
            opt.step()?;
            loss_sum += loss.item()?;
            steps += 1;
        }
        let seconds = start.elapsed().as_secs_f64();
        total_seconds += seconds;
        let traced = trace_deployed(model.as_ref(), args.model, true)?;
        let session = Session::new_on(&traced.graph, args.device)?;
        test_acc = evaluate_traced(
            &pre,
            &session,
            &traced.inputs[0],
            &traced.outputs[0],
            test.clone(),
        )?;
        println!(
            "epoch {}/{}: loss {:.4}  test accuracy (traced graph) {:.4}  {:.1}s",
            epoch + 1,
            args.epochs,
            loss_sum / steps.max(1) as f64,
            test_acc,
            seconds
        );
        if epoch + 1 == args.epochs {
            if let Some(path) = &args.export_onnx {
                write_traced(&traced, path)?;
            }
        }
    }
    if let Some(path) = &args.save {
        model.save_safetensors(path)?;
        println!("saved {}", path.display());
    }
    println!(
        "mode=mixed model={} epochs={} test_accuracy={:.4} seconds={:.1}",
        args.model.name(),
        args.epochs,
        test_acc,
        total_seconds
    );
    Ok(())
}
