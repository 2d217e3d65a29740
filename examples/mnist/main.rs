//! Trains a classifier on MNIST: `cargo run --release --example mnist`.
//!
//! Flags: `--epochs N` (5), `--batch-size N` (64), `--lr X` (1e-3), `--model mlp|cnn` (mlp),
//! `--data-dir PATH` (else `$MNIST_DIR`, else `data/mnist`), `--seed N` (0), `--save PATH`
//! (safetensors with PyTorch's names), `--mode eager|graph|mixed` (eager), `--export-onnx PATH`
//! (the trained model as ONNX: input `input` `[N, 784]` pixels in [0, 1], output `logits`),
//! `--augment` (mixed mode: random shifts of up to 2 pixels in the preprocessing graph),
//! `--device cpu|cuda|cuda:N` (cpu; `cuda` needs a build with `--features cuda` and an NVIDIA
//! driver: the model, the optimizer state and every batch then live on the GPU).
//!
//! The last line printed is a summary that scripts can read, e.g.
//! `mode=eager model=mlp epochs=5 test_accuracy=0.9801 seconds=41.2`.

mod eager;
mod export;
mod graph;
mod mixed;

use std::path::PathBuf;
use std::process::ExitCode;

/// The model to train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// 784 -> Linear 128 -> ReLU -> Linear 10 (the seed's SimpleNet).
    Mlp,
    /// LeNet-5.
    Cnn,
}

impl ModelKind {
    /// The name used on the command line and in the summary.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Mlp => "mlp",
            ModelKind::Cnn => "cnn",
        }
    }
}

/// Command-line options.
#[derive(Clone, Debug)]
pub struct Args {
    /// Passes over the training set.
    pub epochs: usize,
    /// Samples per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Which network.
    pub model: ModelKind,
    /// Where the IDX files are.
    pub data_dir: Option<PathBuf>,
    /// Seed of the initialization and of the shuffling.
    pub seed: u64,
    /// Where to save the trained weights.
    pub save: Option<PathBuf>,
    /// Execution mode.
    pub mode: String,
    /// Where to write the trained model as ONNX.
    pub export_onnx: Option<PathBuf>,
    /// Where the model trains.
    pub device: tandem::tensor::Device,
    /// Random shifts as augmentation (mixed mode).
    pub augment: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        epochs: 5,
        batch_size: 64,
        lr: 1e-3,
        model: ModelKind::Mlp,
        data_dir: None,
        seed: 0,
        save: None,
        mode: "eager".into(),
        device: tandem::tensor::Device::Cpu,
        export_onnx: None,
        augment: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (flag.clone(), None),
        };
        if name == "--help" || name == "-h" {
            return Err(
                "usage: mnist [--epochs N] [--batch-size N] [--lr X] [--model mlp|cnn] \
                        [--data-dir PATH] [--seed N] [--save PATH] [--mode eager|graph|mixed] \
                        [--export-onnx PATH] [--augment] [--device cpu|cuda|cuda:N]"
                    .into(),
            );
        }
        if name == "--augment" {
            a.augment = true;
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or(format!("{name} needs a value"))?,
        };
        let bad = |what: &str| format!("{name}: `{value}` is not {what}");
        match name.as_str() {
            "--epochs" => a.epochs = value.parse().map_err(|_| bad("a count"))?,
            "--batch-size" => {
                a.batch_size = value.parse().map_err(|_| bad("a count"))?;
                if a.batch_size == 0 {
                    return Err(bad("a positive count"));
                }
            }
            "--lr" => a.lr = value.parse().map_err(|_| bad("a number"))?,
            "--seed" => a.seed = value.parse().map_err(|_| bad("an integer"))?,
            "--model" => {
                a.model = match value.as_str() {
                    "mlp" => ModelKind::Mlp,
                    "cnn" => ModelKind::Cnn,
                    _ => return Err(bad("mlp or cnn")),
                }
            }
            "--data-dir" => a.data_dir = Some(PathBuf::from(value)),
            "--save" => a.save = Some(PathBuf::from(value)),
            "--mode" => a.mode = value,
            "--device" => a.device = parse_device(&value)?,
            "--export-onnx" => a.export_onnx = Some(PathBuf::from(value)),
            _ => return Err(format!("unknown flag {name} (try --help)")),
        }
    }
    Ok(a)
}

fn parse_device(s: &str) -> Result<tandem::tensor::Device, String> {
    use tandem::tensor::Device;
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("--device expects cpu, cuda or cuda:N, got `{s}`")),
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.device != tandem::tensor::Device::Cpu {
        // Without the `cuda` feature or without a driver this says which, before any work.
        let probe = tandem::tensor::Tensor::zeros_on(&[], tandem::tensor::DType::F32, args.device);
        if let Err(e) = probe {
            eprintln!("error: --device {}: {e}", args.device);
            return ExitCode::FAILURE;
        }
    }
    let result = match args.mode.as_str() {
        "eager" => eager::run(&args),
        "graph" => graph::run(&args),
        "mixed" => mixed::run(&args),
        other => {
            eprintln!("error: unknown --mode {other} (eager, graph or mixed)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
