//! Rough timings of graph-mode hot paths (run with `--release`): 1,000 chained adds on a
//! 16-element tensor, and an MLP 784-128-10 Adam training step at batch 64 and 1024
//! (`graph_timing [all|chain|mlp64|mlp1024] [steps]`).

use std::time::Instant;
use tandem_graph::{Adam, EmitExt, Functional, Graph, Initializer, Optimizer, Session};
use tandem_ir::CrossEntropyOptions;
use tandem_tensor::{DType, Result, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn chain() -> Result<()> {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, &[Some(16)])?;
    let one = g.constant(Tensor::ones(&[16], DType::F32))?;
    let mut v = x.clone();
    for _ in 0..1000 {
        v = g.add(&v, &one)?;
    }
    let s = Session::new(&g)?;
    let c = s.callable(&[&v], &[&x])?;
    let t = Tensor::zeros(&[16], DType::F32);
    for _ in 0..50 {
        c.run(std::slice::from_ref(&t))?;
    }
    let mut times = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        for _ in 0..50 {
            c.run(std::slice::from_ref(&t))?;
        }
        times.push(start.elapsed().as_secs_f64() / 50.0);
    }
    println!(
        "1000 chained adds on 16 floats: {:.3} us/node",
        median(times) * 1e6 / 1000.0
    );
    Ok(())
}

fn mlp(batch: usize, steps: usize) -> Result<()> {
    let g = Graph::new();
    g.set_seed(1)?;
    let x = g.placeholder("x", DType::F32, &[None, Some(784)])?;
    let labels = g.placeholder("labels", DType::I64, &[None])?;
    let h = {
        let _s = g.scope("fc1");
        let w = g.variable_with(
            "weight",
            &[128, 784],
            DType::F32,
            Initializer::KaimingUniform { seed: None },
            true,
        )?;
        let b = g.variable_with("bias", &[128], DType::F32, Initializer::Zeros, true)?;
        g.relu(&g.linear(&x, &w, Some(&b))?)?
    };
    let logits = {
        let _s = g.scope("fc2");
        let w = g.variable_with(
            "weight",
            &[10, 128],
            DType::F32,
            Initializer::KaimingUniform { seed: None },
            true,
        )?;
        let b = g.variable_with("bias", &[10], DType::F32, Initializer::Zeros, true)?;
        g.linear(&h, &w, Some(&b))?
    };
    let loss = g.cross_entropy(&logits, &labels, CrossEntropyOptions::default())?;
    let train = Adam::new(1e-3).minimize(&loss)?;
    let s = Session::new(&g)?;
    let step = s.callable(&[&loss, &train], &[&x, &labels])?;
    if std::env::var("EXPLAIN").is_ok() {
        print!("{}", s.explain(&[&loss, &train], &[&x, &labels])?);
    }
    let xs = Tensor::full(&[batch, 784], 0.5, DType::F32);
    let ys = Tensor::from_vec(
        (0..batch as i64).map(|i| i % 10).collect::<Vec<_>>(),
        &[batch],
    )?;
    let feeds = [xs, ys];
    for _ in 0..10 {
        step.run(&feeds)?;
    }
    let mut times = Vec::new();
    for _ in 0..steps {
        let start = Instant::now();
        step.run(&feeds)?;
        times.push(start.elapsed().as_secs_f64());
    }
    println!(
        "MLP 784-128-10 Adam step, batch {batch}: {:.3} ms",
        median(times) * 1e3
    );
    Ok(())
}

/// `graph_timing [all|chain|mlp64|mlp1024] [steps]`: one part only (for a profiler), with
/// `steps` timed steps (default 30).
fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", String::as_str);
    let steps = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    if matches!(which, "all" | "chain") {
        chain()?;
    }
    if matches!(which, "all" | "mlp64") {
        mlp(64, steps)?;
    }
    if matches!(which, "all" | "mlp1024") {
        mlp(1024, steps)?;
    }
    Ok(())
}
