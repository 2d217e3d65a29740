//! Models shared by the interop tests.
#![allow(dead_code)]

use tandem_eager::nn::{Conv2d, Linear, MaxPool2d, Module};
use tandem_eager::{DType, Result, Tensor};

/// 784 -> 32 -> ReLU -> 10, with a reshape of its input (so tracing must free the batch).
pub struct Mlp {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl Mlp {
    pub fn new() -> Result<Mlp> {
        Ok(Mlp {
            fc1: Linear::new(784, 32, true)?,
            fc2: Linear::new(32, 10, true)?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let x = x.reshape(&[n as isize, 784])?;
        self.fc2.forward(&self.fc1.forward(&x)?.relu()?)
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        vec![("fc1".into(), &self.fc1), ("fc2".into(), &self.fc2)]
    }
}

/// LeNet-5 on [N, 1, 28, 28].
pub struct LeNet {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub pool: MaxPool2d,
    pub fc1: Linear,
    pub fc2: Linear,
    pub fc3: Linear,
}

impl LeNet {
    pub fn new() -> Result<LeNet> {
        Ok(LeNet {
            conv1: Conv2d::new(1, 6, 5)?.padding(2),
            conv2: Conv2d::new(6, 16, 5)?,
            pool: MaxPool2d::new(2),
            fc1: Linear::new(400, 120, true)?,
            fc2: Linear::new(120, 84, true)?,
            fc3: Linear::new(84, 10, true)?,
        })
    }
}

impl Module for LeNet {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(0)?;
        let x = x.reshape(&[n as isize, 1, 28, 28])?;
        let h = self.pool.forward(&self.conv1.forward(&x)?.relu()?)?;
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

pub fn batch(n: usize) -> Tensor {
    Tensor::rand(&[n, 784], DType::F32).unwrap()
}

pub fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "at {i}: {x} vs {y}");
    }
}
