//! `--mode eager`: PyTorch-style training with tandem's eager mode.

use crate::{Args, ModelKind};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Arc;
use std::time::Instant;
use tandem::eager::nn::functional as F;
use tandem::eager::nn::{Conv2d, Linear, MaxPool2d, Module};
use tandem::eager::optim::{Adam, AdamConfig, Optimizer};
use tandem::eager::{manual_seed, no_grad, Result, Tensor};
use tandem_data::{mnist, DataLoader, Dataset};

/// The seed's SimpleNet: 784 -> 128 -> ReLU -> 10.
pub struct SimpleNet {
    fc1: Linear,
    fc2: Linear,
}

impl SimpleNet {
    /// A freshly initialized network.
    pub fn new() -> Result<SimpleNet> {
        Ok(SimpleNet {
            fc1: Linear::new(784, 128, true)?.with_name("fc1"),
            fc2: Linear::new(128, 10, true)?.with_name("fc2"),
        })
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

/// LeNet-5: conv 1->6 5x5 pad 2, relu, maxpool 2, conv 6->16 5x5, relu, maxpool 2, flatten,
/// linear 400-120-84-10.
pub struct LeNet {
    conv1: Conv2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    pool: MaxPool2d,
}

impl LeNet {
    /// A freshly initialized network.
    pub fn new() -> Result<LeNet> {
        Ok(LeNet {
            conv1: Conv2d::new(1, 6, 5)?.padding(2),
            conv2: Conv2d::new(6, 16, 5)?,
            fc1: Linear::new(400, 120, true)?.with_name("fc1"),
            fc2: Linear::new(120, 84, true)?.with_name("fc2"),
            fc3: Linear::new(84, 10, true)?.with_name("fc3"),
            pool: MaxPool2d::new(2),
        })
    }
}

impl Module for LeNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.pool.forward(&self.conv1.forward(x)?.relu()?)?;
        let h = self.pool.forward(&self.conv2.forward(&h)?.relu()?)?;
        let h = h.flatten(1, -1)?;
        let h = self.fc2.forward(&self.fc1.forward(&h)?.relu()?)?.relu()?;
        self.fc3.forward(&h)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![
            ("conv1".into(), &self.conv1),
            ("conv2".into(), &self.conv2),
            ("fc1".into(), &self.fc1),
            ("fc2".into(), &self.fc2),
            ("fc3".into(), &self.fc3),
        ]
    }
}

/// The number of correct predictions in a batch.
fn correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let pred = logits.argmax(1, false)?;
    let hits = pred.eq(labels)?.to_dtype(tandem::eager::DType::I64)?;
    Ok(hits.sum_all()?.item()? as usize)
}

/// Accuracy of `model` on a dataset, in eval mode without recording.
pub fn evaluate(
    model: &dyn Module,
    data: Arc<dyn Dataset>,
    device: tandem::eager::Device,
) -> Result<f64> {
    let _g = no_grad();
    model.eval();
    let n = data.len();
    let mut hits = 0usize;
    for batch in DataLoader::new(data, 1000).device(device).epoch(0) {
        let b = batch?;
        let (x, y) = (
            Tensor::from_value(b[0].clone()),
            Tensor::from_value(b[1].clone()),
        );
        hits += correct(&model.forward(&x)?, &y)?;
    }
    model.train();
    Ok(hits as f64 / n.max(1) as f64)
}

/// Trains as the flags say and prints per-epoch results and the summary line.
pub fn run(args: &Args) -> Result<()> {
    manual_seed(args.seed);
    let data = mnist::Mnist::load(args.data_dir.as_deref())?;
    let transform = match args.model {
        ModelKind::Mlp => mnist::Transform::Flat,
        ModelKind::Cnn => mnist::Transform::Image,
    };
    let train: Arc<dyn Dataset> = Arc::new(mnist::train(&data, transform));
    let test: Arc<dyn Dataset> = Arc::new(mnist::test(&data, transform));
    let mut model: Box<dyn Module> = match args.model {
        ModelKind::Mlp => Box::new(SimpleNet::new()?),
        ModelKind::Cnn => Box::new(LeNet::new()?),
    };
    model.to_device(args.device)?;
    let device = args.device;
    let mut opt = Adam::new(
        model.parameters(),
        AdamConfig {
            lr: args.lr,
            ..AdamConfig::default()
        },
    );
    // Batches reach the device on the loader's thread (pinned staging on a GPU).
    let loader = DataLoader::new(train.clone(), args.batch_size)
        .shuffle(args.seed)
        .device(device);
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
        let (mut loss_sum, mut hits, mut seen, mut steps) = (0.0f64, 0usize, 0usize, 0usize);
        for batch in loader.epoch(epoch) {
            let b = batch?;
            let (x, y) = (
                Tensor::from_value(b[0].clone()),
                Tensor::from_value(b[1].clone()),
            );
            opt.zero_grad();
            let logits = model.forward(&x)?;
            let loss = F::cross_entropy(&logits, &y)?;
            loss.backward()?;
            opt.step()?;
            loss_sum += loss.item()?;
            hits += correct(&logits.detach(), &y)?;
            seen += y.numel();
            steps += 1;
            if steps % 50 == 0 {
                bar.set_message(format!("loss {:.4}", loss_sum / steps as f64));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f64();
        total_seconds += seconds;
        test_acc = evaluate(model.as_ref(), test.clone(), args.device)?;
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
        model.save_safetensors(path)?;
        println!("saved {}", path.display());
    }
    if let Some(path) = &args.export_onnx {
        model.to_device(tandem::eager::Device::Cpu)?;
        crate::export::export_module(model.as_ref(), args.model, false, path)?;
    }
    println!(
        "mode=eager model={} epochs={} test_accuracy={:.4} seconds={:.1}",
        args.model.name(),
        args.epochs,
        test_acc,
        total_seconds
    );
    Ok(())
}
