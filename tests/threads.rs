//! Threading guarantees: the user-facing handles are `Send + Sync` (checked at compile time),
//! eager tensors can be shared by threads, and readers of a training session's variables see
//! either all of a step's updates or none of them.

use std::sync::atomic::{AtomicBool, Ordering};
use tandem::eager::nn::{Linear, Module, Sequential};
use tandem::eager::Tensor;
use tandem::graph::{EmitExt, GradientDescent, Graph, Optimizer, Session};
use tandem::tensor::{DType, Tensor as Value};

fn assert_send_sync<T: Send + Sync + ?Sized>() {}

#[test]
fn handles_are_send_and_sync() {
    assert_send_sync::<Tensor>();
    assert_send_sync::<Value>();
    assert_send_sync::<Linear>();
    assert_send_sync::<Sequential>();
    assert_send_sync::<dyn Module>();
    assert_send_sync::<tandem::eager::optim::Adam>();
    assert_send_sync::<Graph>();
    assert_send_sync::<Session>();
    assert_send_sync::<tandem::graph::Callable>();
    assert_send_sync::<tandem::graph::Saver>();
    assert_send_sync::<tandem::onnx::OnnxModel>();
    assert_send_sync::<tandem::tensor::Error>();
}

#[test]
fn eager_model_shared_by_threads_gives_serial_results() {
    let model = Sequential::new()
        .add(Linear::new(16, 32, true).unwrap())
        .add(tandem::eager::nn::ReLU)
        .add(Linear::new(32, 4, true).unwrap());
    let x = Tensor::randn(&[8, 16], DType::F32).unwrap();
    let serial = model.forward(&x).unwrap().to_vec::<f32>().unwrap();
    std::thread::scope(|sc| {
        for _ in 0..8 {
            sc.spawn(|| {
                for _ in 0..50 {
                    let y = model.forward(&x).unwrap().to_vec::<f32>().unwrap();
                    let same = y
                        .iter()
                        .zip(&serial)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "a concurrent forward differs from the serial one");
                }
            });
        }
    });
}

#[test]
fn eager_tensor_moves_to_another_thread_with_its_gradient() {
    let x = Tensor::ones(&[3], DType::F32).requires_grad_(true);
    let y = (&x * 3.0).unwrap().sum_all().unwrap();
    std::thread::spawn(move || y.backward().unwrap())
        .join()
        .unwrap();
    assert_eq!(x.grad().unwrap().to_vec::<f32>().unwrap(), vec![3.0; 3]);
}

/// A graph whose training step subtracts 1 from every element of `w` (1000 elements) and
/// `b` (10 elements) and adds 1 to the global step, all in one run: at any instant a
/// consistent view has every element of `w` and `b` equal to `-global_step`.
fn uniform_training_graph() -> (Graph, [tandem::graph::Output; 4]) {
    let g = Graph::new();
    let w = g.variable("w", Value::zeros(&[1000], DType::F32)).unwrap();
    let b = g.variable("b", Value::zeros(&[10], DType::F32)).unwrap();
    let loss = g
        .add(
            &g.sum(&w, &[], false).unwrap(),
            &g.sum(&b, &[], false).unwrap(),
        )
        .unwrap();
    let train = GradientDescent::new(1.0).minimize(&loss).unwrap();
    let step = g.global_step().unwrap();
    (g, [w, b, step, train])
}

fn check_consistent(w: &Value, b: &Value, step: &Value) -> f32 {
    let w = w.to_vec::<f32>().unwrap();
    let b = b.to_vec::<f32>().unwrap();
    let k = step.to_f64_vec().unwrap()[0] as f32;
    assert!(
        w.iter().chain(&b).all(|&v| v == -k),
        "half-applied update seen at global step {k}: w in [{}, {}], b in [{}, {}]",
        w.iter().cloned().fold(f32::MAX, f32::min),
        w.iter().cloned().fold(f32::MIN, f32::max),
        b.iter().cloned().fold(f32::MAX, f32::min),
        b.iter().cloned().fold(f32::MIN, f32::max),
    );
    k
}

#[test]
fn readers_never_see_a_half_applied_training_step() {
    const STEPS: usize = 300;
    let (g, [w, b, step, train]) = uniform_training_graph();
    let s = Session::new(&g).unwrap();
    let done = AtomicBool::new(false);
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                let (mut last, mut reads) = (0.0f32, 0usize);
                while !done.load(Ordering::Acquire) || reads == 0 {
                    // One run fetching all three: one consistent snapshot.
                    let out = s.run(&[&w, &b, &step], &[]).unwrap();
                    let k = check_consistent(&out[0], &out[1], &out[2]);
                    assert!(k >= last, "global step went back from {last} to {k}");
                    last = k;
                    // Single-variable reads are whole too.
                    let wv = s.variable_value(&w).unwrap().to_vec::<f32>().unwrap();
                    assert!(wv.iter().all(|&v| v == wv[0]), "torn read of `w`");
                    reads += 1;
                }
            });
        }
        for _ in 0..STEPS {
            s.run(&[&train], &[]).unwrap();
        }
        done.store(true, Ordering::Release);
    });
    let out = s.run(&[&w, &b, &step], &[]).unwrap();
    assert_eq!(check_consistent(&out[0], &out[1], &out[2]), STEPS as f32);
}
