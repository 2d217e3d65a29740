//! Where the time of a graph-mode training step goes: builds the benchmark's MLP (W1) or
//! LeNet-5 (W3) step, warms it up, then prints `Callable::profile`'s table (the slowest plan
//! steps and the time per op). `infer` profiles the MLP's forward pass instead (W6 at batch 1).
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release --example profile_step -- lenet 64 200
//! ```
//!
//! Arguments: `mlp`, `lenet` or `infer`, the batch size (default 64), the number of profiled steps
//! (default 200), and `explain` to print the compiled training step's plan instead of timing it. Inputs are random data of MNIST's shape.

#[allow(dead_code)]
#[path = "../benches/modes/tandem.rs"]
mod tandem;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map_or("lenet", String::as_str);
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(64);
    let runs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
    let (step, shape) = match model {
        "mlp" | "infer" => (tandem::GraphStep::mlp(), vec![batch, 784]),
        "lenet" => (tandem::GraphStep::lenet(), vec![batch, 1, 28, 28]),
        other => {
            eprintln!("unknown model `{other}`: use `mlp`, `lenet` or `infer`");
            std::process::exit(2);
        }
    };
    let pixels: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| ((i * 7919) % 256) as f32 / 255.0)
        .collect();
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 7) % 10).collect();
    let (x, y) = tandem::batch(&pixels, &labels, &shape);
    if model == "infer" {
        for _ in 0..1000 {
            std::hint::black_box(step.infer(&x));
        }
        let start = std::time::Instant::now();
        for _ in 0..runs {
            std::hint::black_box(step.infer(&x));
        }
        println!(
            "mlp, batch {batch}, graph mode forward pass: {:.2} us per run unprofiled",
            start.elapsed().as_secs_f64() * 1e6 / runs as f64
        );
        print!("{}", step.profile_infer(&x, runs));
        return;
    }
    if args.get(3).map(String::as_str) == Some("explain") {
        print!("{}", step.explain());
        return;
    }
    for _ in 0..20 {
        step.step(&x, &y);
    }
    let start = std::time::Instant::now();
    for _ in 0..runs {
        step.step(&x, &y);
    }
    println!(
        "{model}, batch {batch}, graph mode training step: {:.1} us per step unprofiled",
        start.elapsed().as_secs_f64() * 1e6 / runs as f64
    );
    print!("{}", step.profile(&x, &y, runs));
}
