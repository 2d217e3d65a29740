//! The seed's MLP trained on MNIST through tandem-data's DataLoader: test accuracy must reach
//! 95%. One epoch of this exact setup (pixels / 255, no normalization, Adam 1e-3, batch 64)
//! ends at 94.2-94.7% (seeds 0-2), where PyTorch lands too, so the test trains two epochs
//! (96.3% with seed 0). Needs the IDX files: `MNIST_DIR=... cargo test -p tandem-eager --release --
//! --include-ignored`.

use std::sync::Arc;
use tandem_data::{mnist, DataLoader, Dataset};
use tandem_eager::nn::functional as F;
use tandem_eager::nn::{Linear, Module};
use tandem_eager::optim::{Adam, AdamConfig, Optimizer};
use tandem_eager::{manual_seed, no_grad, DType, Result, Tensor};

struct SimpleNet {
    fc1: Linear,
    fc2: Linear,
}

impl Module for SimpleNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

#[test]
#[ignore = "needs MNIST: set MNIST_DIR"]
fn two_epochs_of_the_mlp_reach_95_percent() {
    manual_seed(0);
    let data = mnist::Mnist::load(None).expect("MNIST (set MNIST_DIR)");
    let train: Arc<dyn Dataset> = Arc::new(mnist::train(&data, mnist::Transform::Flat));
    let test: Arc<dyn Dataset> = Arc::new(mnist::test(&data, mnist::Transform::Flat));
    let net = SimpleNet {
        fc1: Linear::new(784, 128, true).unwrap(),
        fc2: Linear::new(128, 10, true).unwrap(),
    };
    let mut opt = Adam::new(net.parameters(), AdamConfig::default());
    let loader = DataLoader::new(train, 64).shuffle(0);
    for batch in loader.epoch(0).chain(loader.epoch(1)) {
        let b = batch.unwrap();
        let x = Tensor::from_value(b[0].clone());
        let y = Tensor::from_value(b[1].clone());
        opt.zero_grad();
        let loss = F::cross_entropy(&net.forward(&x).unwrap(), &y).unwrap();
        loss.backward().unwrap();
        opt.step().unwrap();
    }
    let _g = no_grad();
    let mut hits = 0.0;
    for batch in DataLoader::new(test.clone(), 1000).epoch(0) {
        let b = batch.unwrap();
        let x = Tensor::from_value(b[0].clone());
        let y = Tensor::from_value(b[1].clone());
        let pred = net.forward(&x).unwrap().argmax(1, false).unwrap();
        let h = pred.eq(&y).unwrap().to_dtype(DType::F64).unwrap();
        hits += h.sum_all().unwrap().item().unwrap();
    }
    let acc = hits / test.len() as f64;
    assert!(acc >= 0.95, "test accuracy {acc}");
}
