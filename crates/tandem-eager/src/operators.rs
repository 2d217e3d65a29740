//! Arithmetic operators. Every combination returns `Result<Tensor>` (a shape mismatch is an
//! error, not a panic): `(&a + &b)?`, `(&a * 2.0)?`, `(1.0 - &a)?`, `-&a`, and a
//! `Result<Tensor>` on the right so that expressions chain: `(&a + (&b * &c))?`.

use crate::emitter::Eager;
use crate::tensor::Tensor;
use std::ops::{Add, Div, Mul, Neg, Sub};
use tandem_ir::EmitExt;
use tandem_tensor::{BinaryOp, Result};

macro_rules! tensor_ops {
    ($trait:ident, $method:ident, $op:expr) => {
        impl $trait<&Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Eager.binary($op, self, rhs)
            }
        }
        impl $trait<Tensor> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Eager.binary($op, self, &rhs)
            }
        }
        impl $trait<&Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Eager.binary($op, &self, rhs)
            }
        }
        impl $trait<Tensor> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Eager.binary($op, &self, &rhs)
            }
        }
        impl $trait<Result<Tensor>> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Result<Tensor>) -> Result<Tensor> {
                Eager.binary($op, self, &rhs?)
            }
        }
        impl $trait<Result<Tensor>> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Result<Tensor>) -> Result<Tensor> {
                Eager.binary($op, &self, &rhs?)
            }
        }
        impl $trait<f64> for &Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f64) -> Result<Tensor> {
                Eager.scalar($op, self, rhs, false)
            }
        }
        impl $trait<f64> for Tensor {
            type Output = Result<Tensor>;
            fn $method(self, rhs: f64) -> Result<Tensor> {
                Eager.scalar($op, &self, rhs, false)
            }
        }
        impl $trait<&Tensor> for f64 {
            type Output = Result<Tensor>;
            fn $method(self, rhs: &Tensor) -> Result<Tensor> {
                Eager.scalar($op, rhs, self, true)
            }
        }
        impl $trait<Tensor> for f64 {
            type Output = Result<Tensor>;
            fn $method(self, rhs: Tensor) -> Result<Tensor> {
                Eager.scalar($op, &rhs, self, true)
            }
        }
    };
}

tensor_ops!(Add, add, BinaryOp::Add);
tensor_ops!(Sub, sub, BinaryOp::Sub);
tensor_ops!(Mul, mul, BinaryOp::Mul);
tensor_ops!(Div, div, BinaryOp::Div);

impl Neg for &Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Eager.neg(self)
    }
}

impl Neg for Tensor {
    type Output = Result<Tensor>;
    fn neg(self) -> Result<Tensor> {
        Eager.neg(&self)
    }
}
