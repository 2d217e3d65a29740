//! `--mode graph`: TensorFlow 1.x style training with tandem's graph mode.
//!
//! The network is built once as a graph (placeholders for images and labels, variables with
//! PyTorch's default initialization and PyTorch's names), the graph Adam adds the training
//! op, and two [`Callable`]s run the training step and the evaluation step without any graph
//! work in the loop.

use crate::{Args, ModelKind};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use std::time::Instant;
use tandem::graph::{Adam, Callable, Graph, Initializer, Optimizer, Output, Saver, Session};
use tandem::ir::{CrossEntropyOptions, EmitExt, Functional};
use tandem::onnx::graph_bridge::save_onnx;
use tandem::tensor::{Conv2dParams, DType, Pool2dParams, Result, Tensor};
use tandem_data::{mnist, DataLoader, Dataset};

/// A weight or bias with PyTorch's default initialization: uniform on
/// `[-1/sqrt(fan_in), 1/sqrt(fan_in)]` (what kaiming_uniform with `a = sqrt(5)` gives).
fn param(g: &Graph, name: &str, shape: &[usize], fan_in: usize) -> Result<Output> {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    let init = Initializer::Uniform {
        low: -b,
        high: b,
        seed: None,
    };
    g.variable_with(name, shape, DType::F32, init, true)
}

/// `name/weight` `[out, in]` and `name/bias` `[out]`, and `x W^T + b`.
fn linear(g: &Graph, name: &str, x: &Output, inp: usize, out: usize) -> Result<Output> {
    let _s = g.scope(name);
    let w = param(g, "weight", &[out, inp], inp)?;
    let b = param(g, "bias", &[out], inp)?;
    g.linear(x, &w, Some(&b))
}

/// `name/weight` `[out, in, k, k]` and `name/bias` `[out]`, and the convolution.
fn conv(
    g: &Graph,
    name: &str,
    x: &Output,
    cin: usize,
    cout: usize,
    k: usize,
    pad: usize,
) -> Result<Output> {
    let _s = g.scope(name);
    let fan_in = cin * k * k;
    let w = param(g, "weight", &[cout, cin, k, k], fan_in)?;
    let b = param(g, "bias", &[cout], fan_in)?;
    let p = Conv2dParams {
        padding: [pad, pad],
        ..Conv2dParams::default()
    };
    g.conv2d(x, &w, Some(&b), p)
}

/// The logits of the chosen network for the images `x`.
fn network(g: &Graph, model: ModelKind, x: &Output) -> Result<Output> {
    match model {
        ModelKind::Mlp => {
            let h = g.relu(&linear(g, "fc1", x, 784, 128)?)?;
            linear(g, "fc2", &h, 128, 10)
        }
        ModelKind::Cnn => {
            let pool = Pool2dParams::square(2, 2, 0);
            let h = g.max_pool2d(&g.relu(&conv(g, "conv1", x, 1, 6, 5, 2)?)?, pool)?;
            let h = g.max_pool2d(&g.relu(&conv(g, "conv2", &h, 6, 16, 5, 0)?)?, pool)?;
            let h = g.flatten(&h, 1, -1)?;
            let h = g.relu(&linear(g, "fc1", &h, 400, 120)?)?;
            let h = g.relu(&linear(g, "fc2", &h, 120, 84)?)?;
            linear(g, "fc3", &h, 84, 10)
        }
    }
}

/// The graph of a classifier: placeholders, logits, loss, number of correct predictions and
/// the Adam training op.
pub struct Classifier {
    /// The graph everything lives in.
    pub graph: Graph,
    /// Images placeholder `input` (`[None, 784]` pixels in [0, 1]; the CNN reshapes them to
    /// `[N, 1, 28, 28]` inside the graph, so the exported model takes the same input).
    pub x: Output,
    /// Labels placeholder (`[None]`, int64).
    pub y: Output,
    /// The network's output `[N, 10]`.
    pub logits: Output,
    /// Mean cross-entropy of the batch.
    pub loss: Output,
    /// Number of correct predictions of the batch (int64 scalar).
    pub correct: Output,
    /// One Adam step.
    pub train_op: Output,
    /// The model's parameters (not the optimizer's slots), PyTorch-named with `/`.
    pub params: Vec<Output>,
}

impl Classifier {
    /// Builds the graph of `model` trained by Adam with learning rate `lr`.
    pub fn build(model: ModelKind, lr: f64, seed: u64) -> Result<Classifier> {
        let g = Graph::new();
        g.set_seed(seed)?;
        let x = g.placeholder("input", DType::F32, &[None, Some(784)])?;
        let y = g.placeholder("y", DType::I64, &[None])?;
        let images = match model {
            ModelKind::Mlp => x.clone(),
            ModelKind::Cnn => g.reshape(&x, &[-1, 1, 28, 28])?,
        };
        let logits = network(&g, model, &images)?;
        let params = g.trainable_variables()?;
        let loss = g.cross_entropy(&logits, &y, CrossEntropyOptions::default())?;
        let hits = g.eq(&g.argmax(&logits, 1, false)?, &y)?;
        let correct = g.sum(&g.cast(&hits, DType::I64)?, &[], false)?;
        let train_op = Adam::new(lr).minimize(&loss)?;
        Ok(Classifier {
            graph: g,
            x,
            y,
            logits,
            loss,
            correct,
            train_op,
            params,
        })
    }
}

/// Accuracy of the evaluation callable (fetches `correct`, feeds images and labels).
pub fn evaluate(eval: &Callable, data: Arc<dyn Dataset>) -> Result<f64> {
    let n = data.len();
    let mut hits = 0i64;
    for batch in DataLoader::new(data, 1000).epoch(0) {
        let b = batch?;
        let out = eval.run(&b[..2])?;
        hits += first(&out)?.item()? as i64;
    }
    Ok(hits as f64 / n.max(1) as f64)
}

fn first(out: &[Tensor]) -> Result<&Tensor> {
    out.first()
        .ok_or_else(|| tandem::tensor::Error::Graph("a run returned no value".into()))
}

/// Trains as the flags say and prints per-epoch results and the summary line.
pub fn run(args: &Args) -> Result<()> {
    let data = mnist::Mnist::load(args.data_dir.as_deref())?;
    // Both networks take flat pixels; the CNN's reshape is part of the graph.
    let transform = mnist::Transform::Flat;
    let train: Arc<dyn Dataset> = Arc::new(mnist::train(&data, transform));
    let test: Arc<dyn Dataset> = Arc::new(mnist::test(&data, transform));
    let c = Classifier::build(args.model, args.lr, args.seed)?;
    // Variables live on the device; batches reach it on the loader's thread.
    let session = Session::new_on(&c.graph, args.device)?;
    let step = session.callable(&[&c.train_op, &c.loss, &c.correct], &[&c.x, &c.y])?;
    let eval = session.callable(&[&c.correct], &[&c.x, &c.y])?;
    let loader = DataLoader::new(train.clone(), args.batch_size)
        .shuffle(args.seed)
        .device(args.device);
    let mut total_seconds = 0.0;
    let mut test_acc = 0.0;
    for epoch in 0..args.epochs {
        let start = Instant::now();
        let bar = ProgressBar::new(loader.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, args.epochs));
        let (mut loss_sum, mut hits, mut seen, mut steps) = (0.0f64, 0i64, 0usize, 0usize);
        for batch in loader.epoch(epoch) {
            let b = batch?;
            let out = step.run(&b[..2])?;
            let (loss, correct) = match out.as_slice() {
                [_, loss, correct] => (loss.item()?, correct.item()? as i64),
                _ => {
                    return Err(tandem::tensor::Error::Graph(
                        "the training step returned the wrong number of values".into(),
                    ))
                }
            };
            loss_sum += loss;
            hits += correct;
            seen += b[1].numel();
            steps += 1;
            if steps % 50 == 0 {
                bar.set_message(format!("loss {:.4}", loss_sum / steps as f64));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        total_seconds += seconds;
        test_acc = evaluate(&eval, test.clone())?;
        println!(
            "epoch {}/{}: loss {:.4}  train accuracy {:.4}  test accuracy {:.4}  {:.1}s",
            epoch + 1,
            args.epochs,
            loss_sum / steps.max(1) as f64,
            hits as f64 / seen.max(1) as f64,
            test_acc,
            seconds
        );
    }
    if let Some(path) = &args.save {
        let refs: Vec<&Output> = c.params.iter().collect();
        Saver::with_variables(&refs)
            .pytorch_names(true)
            .save_to(&session, path)?;
        println!("saved {}", path.display());
    }
    if let Some(path) = &args.export_onnx {
        // The inference subgraph `input -> logits` with the trained variable values.
        save_onnx(&session, &[&c.x], &[("logits", &c.logits)], 17, path)?;
        println!("exported {}", path.display());
    }
    println!(
        "mode=graph model={} epochs={} test_accuracy={:.4} seconds={:.1}",
        args.model.name(),
        args.epochs,
        test_acc,
        total_seconds
    );
    Ok(())
}
