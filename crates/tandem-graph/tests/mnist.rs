//! MNIST in graph mode (needs the data: `MNIST_DIR=... cargo test -p tandem-graph --release
//! --test mnist -- --ignored`).

use std::sync::Arc;
use tandem_data::{mnist, DataLoader, Dataset};
use tandem_graph::{Adam, Graph, Initializer, Optimizer, Output, Session};
use tandem_ir::{CrossEntropyOptions, EmitExt, Functional};
use tandem_tensor::DType;

/// `name/weight` and `name/bias` with PyTorch's default initialization, and `x W^T + b`.
fn linear(g: &Graph, name: &str, x: &Output, inp: usize, out: usize) -> Output {
    let _s = g.scope(name);
    let b = 1.0 / (inp as f64).sqrt();
    let init = || Initializer::Uniform {
        low: -b,
        high: b,
        seed: None,
    };
    let w = g
        .variable_with("weight", &[out, inp], DType::F32, init(), true)
        .unwrap();
    let bias = g
        .variable_with("bias", &[out], DType::F32, init(), true)
        .unwrap();
    g.linear(x, &w, Some(&bias)).unwrap()
}

#[test]
#[ignore = "needs MNIST: set MNIST_DIR"]
fn mlp_one_epoch_in_graph_mode_reaches_95_percent() {
    let data = mnist::Mnist::load(None).unwrap();
    let train: Arc<dyn Dataset> = Arc::new(mnist::train(&data, mnist::Transform::Flat));
    let test: Arc<dyn Dataset> = Arc::new(mnist::test(&data, mnist::Transform::Flat));

    let g = Graph::new();
    g.set_seed(0).unwrap();
    let x = g.placeholder("x", DType::F32, &[None, Some(784)]).unwrap();
    let y = g.placeholder("y", DType::I64, &[None]).unwrap();
    let h = g.relu(&linear(&g, "fc1", &x, 784, 128)).unwrap();
    let logits = linear(&g, "fc2", &h, 128, 10);
    let loss = g
        .cross_entropy(&logits, &y, CrossEntropyOptions::default())
        .unwrap();
    let hits = g.eq(&g.argmax(&logits, 1, false).unwrap(), &y).unwrap();
    let correct = g
        .sum(&g.cast(&hits, DType::I64).unwrap(), &[], false)
        .unwrap();
    let train_op = Adam::new(1e-3).minimize(&loss).unwrap();

    let s = Session::new(&g).unwrap();
    let step = s.callable(&[&train_op, &loss], &[&x, &y]).unwrap();
    let eval = s.callable(&[&correct], &[&x, &y]).unwrap();
    let mut last_loss = f64::INFINITY;
    for b in DataLoader::new(train, 32).shuffle(0).epoch(0) {
        let b = b.unwrap();
        last_loss = step.run(&b[..2]).unwrap()[1].item().unwrap();
    }
    assert!(last_loss.is_finite());
    let n = test.len();
    let mut right = 0.0;
    for b in DataLoader::new(test, 1000).epoch(0) {
        let b = b.unwrap();
        right += eval.run(&b[..2]).unwrap()[0].item().unwrap();
    }
    let acc = right / n as f64;
    eprintln!("graph-mode MLP, 1 epoch: test accuracy {acc:.4}");
    assert!(acc >= 0.95, "test accuracy {acc:.4} is below 0.95");
}
