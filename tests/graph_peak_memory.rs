//! Peak memory of one MLP training step (784 -> 128 -> ReLU -> 10, cross-entropy, Adam) at
//! batch 64: graph mode holds no more than eager mode. Both are measured the same way, by a
//! counting global allocator (the most heap bytes in use during the step above what was in
//! use before it), after one warm-up step so that both optimizers already hold their state
//! (and graph mode the output buffers its plan keeps from one run to the next); eager mode's
//! gradients are cleared (`zero_grad`) just before the measured step, as a training loop
//! does, so its step allocates them anew where graph mode writes into kept buffers (and
//! computes the first layer's weight gradient inside Adam's update, block by block).
//! One test in its own binary, so no other test allocates while it measures. Both steps run
//! in a one-thread rayon pool: large products are split over the pool's threads and each
//! thread that runs `gemm` for the first time allocates its packing memory, so with more
//! threads the result depended on which worker happened to run which half of a product
//! (graph mode once measured 1.09 MB instead of 0.21 MB under load).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tandem::eager::nn::functional as F;
use tandem::eager::nn::{Linear, Module};
use tandem::eager::optim::{Adam, AdamConfig, Optimizer};
use tandem::eager::{manual_seed, Tensor};
use tandem::graph::{
    Adam as GraphAdam, EmitExt, Functional, Graph, Optimizer as GraphOptimizer, Session,
};
use tandem::ir::CrossEntropyOptions;
use tandem::tensor::{DType, Tensor as Value};

struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to the system allocator with the same arguments; the counters
// are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
            let now = IN_USE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes above the starting level at the peak of `f`.
fn peak_of(f: impl FnOnce()) -> usize {
    let base = IN_USE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

const BATCH: usize = 64;

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> tandem::tensor::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

#[test]
fn graph_step_peak_is_at_most_eager_step_peak() {
    rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(measure);
}

fn measure() {
    let xv: Vec<f32> = (0..BATCH * 784).map(|i| (i % 255) as f32 / 255.0).collect();
    let yv: Vec<i64> = (0..BATCH as i64).map(|i| i * 3 % 10).collect();
    let xs = Value::from_vec(xv, &[BATCH, 784]).unwrap();
    let ys = Value::from_vec(yv, &[BATCH]).unwrap();

    manual_seed(3);
    let m = Mlp {
        fc1: Linear::new(784, 128, true).unwrap(),
        fc2: Linear::new(128, 10, true).unwrap(),
    };
    let mut opt = Adam::new(m.parameters(), AdamConfig::default());
    let (ex, ey) = (
        Tensor::from_value(xs.clone()),
        Tensor::from_value(ys.clone()),
    );
    let eager_step = |opt: &mut Adam| {
        let loss = F::cross_entropy(&m.forward(&ex).unwrap(), &ey).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
    };
    opt.zero_grad();
    eager_step(&mut opt);
    // Cleared before the measured step, not inside it: freeing the previous gradients at the
    // start of the step would lower the level the peak is measured from, and hide part of
    // what the step allocates (e.g. `gemm`'s packing memory, which graph mode pays too).
    opt.zero_grad();
    let eager = peak_of(|| eager_step(&mut opt));

    let g = Graph::new();
    g.set_seed(3).unwrap();
    let x = g.placeholder("x", DType::F32, &[None, Some(784)]).unwrap();
    let y = g.placeholder("y", DType::I64, &[None]).unwrap();
    let mut h = x.clone();
    for (name, (i, o)) in [("fc1", (784, 128)), ("fc2", (128, 10))] {
        let _s = g.scope(name);
        let w = g
            .variable("weight", Value::full(&[o, i], 0.01, DType::F32))
            .unwrap();
        let b = g.variable("bias", Value::zeros(&[o], DType::F32)).unwrap();
        h = g.linear(&h, &w, Some(&b)).unwrap();
        if name == "fc1" {
            h = g.relu(&h).unwrap();
        }
    }
    let loss = g
        .cross_entropy(&h, &y, CrossEntropyOptions::default())
        .unwrap();
    let train = GraphAdam::new(1e-3).minimize(&loss).unwrap();
    let s = Session::new(&g).unwrap();
    let step = s.callable(&[&loss, &train], &[&x, &y]).unwrap();
    let feeds = [xs, ys];
    step.run(&feeds).unwrap();
    let graph = peak_of(|| {
        step.run(&feeds).unwrap();
    });
    let (_, stats) = step.run_with_stats(&feeds).unwrap();
    eprintln!(
        "peak heap growth of one step: eager {eager} B, graph {graph} B; graph plan {stats:?}"
    );
    assert!(graph <= eager, "graph {graph} B > eager {eager} B");
    // The largest value of the step, fc1's weight gradient, is never a value of the run:
    // Adam computes it block by block inside the update at commit (`ApplyProduct`). All the
    // run's own values together stay below that one gradient, and memory planning still
    // writes the step's products into the buffers the previous step used.
    let weight_grad = 128 * 784 * 4;
    assert!(
        stats.total_bytes < weight_grad,
        "the run made values of {} B, a weight gradient is {weight_grad} B: {stats:?}",
        stats.total_bytes
    );
    assert!(
        stats.kept_bytes >= BATCH * 128 * 4,
        "the hidden layer was not written into a kept buffer: {stats:?}"
    );
}
