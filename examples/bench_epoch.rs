//! Workload W2 of the benchmarks (issue 6): one shuffled MNIST epoch at batch 64 with W1's
//! MLP (784 -> 128 -> ReLU -> 10, mean cross-entropy, Adam lr 1e-3), then the test accuracy,
//! for Tandem's eager mode, Tandem's graph mode and candle 0.11. A whole epoch does not fit
//! criterion, so this example times it directly and writes
//! `target/bench_epoch/w2.json`, which `cargo run --release --example bench_report` reads.
//!
//! ```text
//! MNIST_DIR=path/to/mnist RAYON_NUM_THREADS=2 cargo run --release --example bench_epoch
//! ```
//!
//! Options: `--runs N` (1; with more, a fresh model per run and the median time),
//! `--systems eager,graph,candle`, `--out FILE`. Every system trains on the same batches in
//! the same shuffled order, gathered from the raw bytes by the same code inside the timed
//! loop; the accuracy (batches of 1,000, not timed) is that of the last run.

#[allow(dead_code)]
#[path = "../benches/modes/tandem.rs"]
mod tandem_models;

use candle_core::{DType as CDType, Device, Module as _, Tensor as CTensor};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW, VarBuilder, VarMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use tandem::tensor::Tensor;
use tandem_models::{batch, EagerStep, GraphStep, ModeStep};

const BATCH: usize = 64;

/// MNIST as flat bytes.
struct Data {
    train_x: Vec<u8>,
    train_y: Vec<u32>,
    test_x: Vec<u8>,
    test_y: Vec<u32>,
}

fn load() -> Result<Data, String> {
    let dir = std::env::var_os("MNIST_DIR").map(PathBuf::from);
    let m = tandem::data::mnist::Mnist::load(dir.as_deref()).map_err(|e| e.to_string())?;
    let bytes = |t: &Tensor| t.to_vec::<u8>().map_err(|e| e.to_string());
    let labels = |t: &Tensor| -> Result<Vec<u32>, String> {
        Ok(t.to_vec::<i64>()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|l| l as u32)
            .collect())
    };
    Ok(Data {
        train_x: bytes(&m.train_images)?,
        train_y: labels(&m.train_labels)?,
        test_x: bytes(&m.test_images)?,
        test_y: labels(&m.test_labels)?,
    })
}

/// A shuffled order of `n` indices (xorshift, Fisher-Yates).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        p.swap(i, (s % (i as u64 + 1)) as usize);
    }
    p
}

/// Pixels in [0, 1] and labels of the samples `idx`.
fn gather(x: &[u8], y: &[u32], idx: &[usize]) -> (Vec<f32>, Vec<u32>) {
    let mut px = Vec::with_capacity(idx.len() * 784);
    let mut ls = Vec::with_capacity(idx.len());
    for &i in idx {
        px.extend(x[i * 784..(i + 1) * 784].iter().map(|&p| p as f32 / 255.0));
        ls.push(y[i]);
    }
    (px, ls)
}

/// One system under test: a training step and the predicted classes of a batch.
trait System {
    fn step(&mut self, x: Vec<f32>, y: Vec<u32>) -> Result<(), String>;
    fn predict(&self, x: Vec<f32>) -> Result<Vec<u32>, String>;
}

fn argmax_rows(logits: &[f32]) -> Vec<u32> {
    logits
        .chunks(10)
        .map(|r| {
            let mut best = 0;
            for (k, v) in r.iter().enumerate() {
                if *v > r[best] {
                    best = k;
                }
            }
            best as u32
        })
        .collect()
}

/// Tandem in either mode.
struct Tandem<S: ModeStep>(S);
impl<S: ModeStep> System for Tandem<S> {
    fn step(&mut self, x: Vec<f32>, y: Vec<u32>) -> Result<(), String> {
        let n = y.len();
        let (x, y) = batch(&x, &y, &[n, 784]);
        self.0.train(&x, &y);
        Ok(())
    }
    fn predict(&self, x: Vec<f32>) -> Result<Vec<u32>, String> {
        let n = x.len() / 784;
        let (x, _) = batch(&x, &[], &[n, 784]);
        let l = self
            .0
            .logits(&x)
            .to_vec::<f32>()
            .map_err(|e| e.to_string())?;
        Ok(argmax_rows(&l))
    }
}

struct Candle {
    fc1: candle_nn::Linear,
    fc2: candle_nn::Linear,
    opt: AdamW,
}

impl Candle {
    fn new() -> candle_core::Result<Candle> {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, CDType::F32, &Device::Cpu);
        let fc1 = candle_nn::linear(784, 128, vb.pp("fc1"))?;
        let fc2 = candle_nn::linear(128, 10, vb.pp("fc2"))?;
        let params = ParamsAdamW {
            lr: 1e-3,
            weight_decay: 0.0,
            ..ParamsAdamW::default()
        };
        let opt = AdamW::new(varmap.all_vars(), params)?;
        Ok(Candle { fc1, fc2, opt })
    }

    fn forward(&self, x: Vec<f32>) -> candle_core::Result<CTensor> {
        let n = x.len() / 784;
        let x = CTensor::from_vec(x, (n, 784), &Device::Cpu)?;
        self.fc2.forward(&self.fc1.forward(&x)?.relu()?)
    }
}

impl System for Candle {
    fn step(&mut self, x: Vec<f32>, y: Vec<u32>) -> Result<(), String> {
        let run = || -> candle_core::Result<()> {
            let n = y.len();
            let logits = self.forward(x)?;
            let y = CTensor::from_vec(y, n, &Device::Cpu)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            self.opt.backward_step(&loss)
        };
        run().map_err(|e| e.to_string())
    }
    fn predict(&self, x: Vec<f32>) -> Result<Vec<u32>, String> {
        let l = self
            .forward(x)
            .and_then(|l| l.flatten_all()?.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        Ok(argmax_rows(&l))
    }
}

fn make(name: &str) -> Result<Box<dyn System>, String> {
    Ok(match name {
        "eager" => Box::new(Tandem(EagerStep::mlp())),
        "graph" => Box::new(Tandem(GraphStep::mlp())),
        "candle" => Box::new(Candle::new().map_err(|e| e.to_string())?),
        other => return Err(format!("unknown system `{other}` (eager, graph, candle)")),
    })
}

/// Seconds for one epoch, and the test accuracy after it.
fn epoch(sys: &mut dyn System, d: &Data, seed: u64) -> Result<(f64, f64), String> {
    let order = permutation(d.train_y.len(), seed);
    let start = Instant::now();
    for idx in order.chunks(BATCH) {
        let (x, y) = gather(&d.train_x, &d.train_y, idx);
        sys.step(x, y)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let all: Vec<usize> = (0..d.test_y.len()).collect();
    let mut hits = 0usize;
    for idx in all.chunks(1000) {
        let (x, y) = gather(&d.test_x, &d.test_y, idx);
        let pred = sys.predict(x)?;
        hits += pred.iter().zip(&y).filter(|(p, t)| p == t).count();
    }
    Ok((seconds, hits as f64 / d.test_y.len().max(1) as f64))
}

struct Args {
    runs: usize,
    systems: Vec<String>,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let mut a = Args {
        runs: 1,
        systems: vec!["eager".into(), "graph".into(), "candle".into()],
        out: target.join("bench_epoch").join("w2.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => {
                a.runs = value
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--runs: `{value}` is not a positive count"))?
            }
            "--systems" => a.systems = value.split(',').map(str::to_string).collect(),
            "--out" => a.out = PathBuf::from(value),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    Ok(a)
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let data = load()?;
    let mut results = Vec::new();
    for name in &args.systems {
        let mut times = Vec::with_capacity(args.runs);
        let mut accuracy = 0.0;
        for r in 0..args.runs {
            let mut sys = make(name)?;
            let (s, a) = epoch(sys.as_mut(), &data, r as u64)?;
            println!("W2 {name} run {}: {s:.2} s, test accuracy {a:.4}", r + 1);
            times.push(s);
            accuracy = a;
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let (min, max) = (times[0], times[times.len() - 1]);
        results.push(format!(
            "    {{\"group\": \"W2_mnist_epoch\", \"case\": \"b{BATCH}\", \"system\": \"{name}\", \
             \"median_ns\": {:.0}, \"min_ns\": {:.0}, \"max_ns\": {:.0}, \"accuracy\": {accuracy:.4}}}",
            median * 1e9,
            min * 1e9,
            max * 1e9
        ));
    }
    let json = format!("{{\"results\": [\n{}\n]}}\n", results.join(",\n"));
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&args.out, json).map_err(|e| format!("{}: {e}", args.out.display()))?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_epoch: {e}");
            ExitCode::FAILURE
        }
    }
}
