//! Operator overloading on graph values: `&a + &b`, `&a * 2.0`, `2.0 - &a`, `-&a`. Each
//! returns `Result<Output>` (shape errors are reported when the node is built).

use crate::graph::Output;
use std::ops::{Add, Div, Mul, Neg, Sub};
use tandem_ir::EmitExt;
use tandem_tensor::{BinaryOp, Result};

macro_rules! binary_ops {
    ($($tr:ident $method:ident $op:ident),*) => {$(
        impl $tr<&Output> for &Output {
            type Output = Result<Output>;
            fn $method(self, rhs: &Output) -> Result<Output> {
                self.graph().binary(BinaryOp::$op, self, rhs)
            }
        }
        impl $tr<f64> for &Output {
            type Output = Result<Output>;
            fn $method(self, rhs: f64) -> Result<Output> {
                self.graph().scalar(BinaryOp::$op, self, rhs, false)
            }
        }
        impl $tr<&Output> for Output {
            type Output = Result<Output>;
            fn $method(self, rhs: &Output) -> Result<Output> {
                (&self).$method(rhs)
            }
        }
        impl $tr<f64> for Output {
            type Output = Result<Output>;
            fn $method(self, rhs: f64) -> Result<Output> {
                (&self).$method(rhs)
            }
        }
        impl $tr<&Output> for f64 {
            type Output = Result<Output>;
            fn $method(self, rhs: &Output) -> Result<Output> {
                rhs.graph().scalar(BinaryOp::$op, rhs, self, true)
            }
        }
    )*};
}

binary_ops!(Add add Add, Sub sub Sub, Mul mul Mul, Div div Div);

impl Neg for &Output {
    type Output = Result<Output>;
    fn neg(self) -> Result<Output> {
        self.graph().neg(self)
    }
}

#[cfg(test)]
mod tests {
    use crate::{Graph, Session};
    use tandem_tensor::Tensor;

    #[test]
    fn overloads_build_the_expected_values() {
        let g = Graph::new();
        let a = g
            .constant(Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap())
            .unwrap();
        let b = g
            .constant(Tensor::from_vec(vec![3.0f32, 5.0], &[2]).unwrap())
            .unwrap();
        let c = ((&a * &b).unwrap() - 1.0).unwrap();
        let d = (10.0f64 / &c).unwrap();
        let e = (-&d).unwrap();
        let s = Session::new(&g).unwrap();
        let out = s.run(&[&c, &e], &[]).unwrap();
        assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![2.0, 9.0]);
        assert_eq!(out[1].to_vec::<f32>().unwrap(), vec![-5.0, -10.0 / 9.0]);
    }
}
