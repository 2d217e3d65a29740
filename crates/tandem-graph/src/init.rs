//! Variable initializers.

use tandem_tensor::random::Rng;
use tandem_tensor::{DType, Error, Result, Tensor};

/// How a variable gets its initial value. Random initializers without a seed take one from
/// the graph's seed sequence when the variable is created, so a graph always initializes to
/// the same values.
#[derive(Clone, Debug)]
pub enum Initializer {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// Every element `value`.
    Fill(f64),
    /// A given tensor (its shape and dtype must match the variable's).
    Constant(Tensor),
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
        /// Seed (`None`: drawn from the graph).
        seed: Option<u64>,
    },
    /// Normal with a mean and standard deviation.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
        /// Seed (`None`: drawn from the graph).
        seed: Option<u64>,
    },
    /// Glorot/Xavier uniform: bound `sqrt(6 / (fan_in + fan_out))`.
    XavierUniform {
        /// Seed (`None`: drawn from the graph).
        seed: Option<u64>,
    },
    /// Kaiming/He uniform for ReLU: bound `sqrt(6 / fan_in)`.
    KaimingUniform {
        /// Seed (`None`: drawn from the graph).
        seed: Option<u64>,
    },
}

/// Fans of a weight shape with PyTorch's convention (`[out, in, kernel...]`).
fn fans(shape: &[usize]) -> (usize, usize) {
    match shape {
        [] => (1, 1),
        [n] => (*n, *n),
        [out, inp, rest @ ..] => {
            let rf: usize = rest.iter().product();
            (inp * rf, out * rf)
        }
    }
}

impl Initializer {
    /// Checks that the initializer can produce a value of this shape and dtype.
    pub fn check(&self, shape: &[usize], dtype: DType) -> Result<()> {
        match self {
            Initializer::Constant(t) => {
                if t.shape() != shape {
                    return Err(Error::shape_mismatch("variable", t.shape(), shape));
                }
                if t.dtype() != dtype {
                    return Err(Error::DTypeMismatch {
                        op: "variable",
                        expected: dtype.to_string(),
                        got: t.dtype(),
                    });
                }
                Ok(())
            }
            Initializer::Zeros | Initializer::Ones | Initializer::Fill(_) => Ok(()),
            _ if !dtype.is_float() => Err(Error::DTypeMismatch {
                op: "variable",
                expected: "a float dtype for a random initializer".into(),
                got: dtype,
            }),
            _ => Ok(()),
        }
    }

    /// Fills a missing seed from `next`.
    pub(crate) fn with_seed_from(self, next: impl FnOnce() -> u64) -> Initializer {
        match self {
            Initializer::Uniform {
                low,
                high,
                seed: None,
            } => Initializer::Uniform {
                low,
                high,
                seed: Some(next()),
            },
            Initializer::Normal {
                mean,
                std,
                seed: None,
            } => Initializer::Normal {
                mean,
                std,
                seed: Some(next()),
            },
            Initializer::XavierUniform { seed: None } => {
                Initializer::XavierUniform { seed: Some(next()) }
            }
            Initializer::KaimingUniform { seed: None } => {
                Initializer::KaimingUniform { seed: Some(next()) }
            }
            other => other,
        }
    }

    /// The initial value for a variable of this shape and dtype.
    pub fn value(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.check(shape, dtype)?;
        let rng = |s: &Option<u64>| Rng::new(s.unwrap_or(0));
        match self {
            Initializer::Zeros => Ok(Tensor::zeros(shape, dtype)),
            Initializer::Ones => Ok(Tensor::ones(shape, dtype)),
            Initializer::Fill(v) => Ok(Tensor::full(shape, *v, dtype)),
            Initializer::Constant(t) => Ok(t.clone()),
            Initializer::Uniform { low, high, seed } => {
                Tensor::rand_uniform(shape, *low, *high, dtype, &mut rng(seed))
            }
            Initializer::Normal { mean, std, seed } => {
                Tensor::randn(shape, *mean, *std, dtype, &mut rng(seed))
            }
            Initializer::XavierUniform { seed } => {
                let (fi, fo) = fans(shape);
                let b = (6.0 / (fi + fo).max(1) as f64).sqrt();
                Tensor::rand_uniform(shape, -b, b, dtype, &mut rng(seed))
            }
            Initializer::KaimingUniform { seed } => {
                let (fi, _) = fans(shape);
                let b = (6.0 / fi.max(1) as f64).sqrt();
                Tensor::rand_uniform(shape, -b, b, dtype, &mut rng(seed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xavier_bound_and_determinism() {
        let i = Initializer::XavierUniform { seed: Some(3) };
        let a = i.value(&[10, 20], DType::F32).unwrap();
        let b = i.value(&[10, 20], DType::F32).unwrap();
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
        let bound = (6.0f32 / 30.0).sqrt();
        assert!(a.to_vec::<f32>().unwrap().iter().all(|v| v.abs() <= bound));
    }

    #[test]
    fn constant_must_match() {
        let t = Tensor::zeros(&[2], DType::F32);
        assert!(Initializer::Constant(t.clone())
            .value(&[3], DType::F32)
            .is_err());
        assert!(Initializer::Constant(t).value(&[2], DType::F64).is_err());
        assert!(Initializer::Normal {
            mean: 0.0,
            std: 1.0,
            seed: None
        }
        .value(&[2], DType::I64)
        .is_err());
    }
}
