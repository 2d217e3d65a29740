//! Elementwise operations: unary math, binary arithmetic and comparisons with NumPy
//! broadcasting (also in place and with a scalar), and `where`.

use crate::cpu::{binary as kernels, unary as unary_kernels};
use crate::layout::{broadcast_shapes, Shape};
use crate::{BinaryOp, DType, Device, Error, Result, Tensor, UnaryOp};

/// Both operands of a binary op must have the same dtype (Tandem does not promote).
fn check_same_dtype(op: &'static str, lhs: &Tensor, rhs: &Tensor) -> Result<()> {
    if lhs.dtype() != rhs.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            expected: format!(
                "{} for the right operand, like the left one (cast one operand first)",
                lhs.dtype()
            ),
            got: rhs.dtype(),
        });
    }
    Ok(())
}

impl Tensor {
    /// Elementwise unary op. Float dtypes (f32, f64, f16, bf16) support every op but `Not`;
    /// integers the ops where [`UnaryOp::supports_int`]; bool only `Not`. Anything else is
    /// [`Error::UnsupportedDType`]. The result is contiguous, with the input's shape and dtype.
    ///
    /// ```
    /// use tandem_tensor::{Tensor, UnaryOp};
    /// let x = Tensor::from_vec(vec![-1.0f32, 0.0, 2.0], &[3]).unwrap();
    /// let y = x.unary(UnaryOp::Relu).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 2.0]);
    /// ```
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::unary(self, op);
        }
        let (storage, layout) = self.cpu(op.name())?;
        let out = unary_kernels::unary(op, storage, layout)?;
        Tensor::from_cpu_storage(out, self.shape())
    }

    /// Elementwise binary op with NumPy broadcasting. Both operands must have the same dtype
    /// ([`Error::DTypeMismatch`] otherwise). Comparisons give bool; `And`/`Or` need bool;
    /// integer arithmetic wraps, `Div` on integers truncates toward zero (and gives 0 for a
    /// division by zero), `Pow` on integers needs non-negative exponents.
    ///
    /// ```
    /// use tandem_tensor::{BinaryOp, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    /// let row = Tensor::from_vec(vec![10.0f32, 20.0], &[2]).unwrap();
    /// let y = x.binary(BinaryOp::Add, &row).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![11.0, 22.0, 13.0, 24.0]);
    /// ```
    pub fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        let name = op.name();
        check_same_dtype(name, self, rhs)?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || rhs.device().is_cuda() {
            return crate::cuda::binary(self, op, rhs);
        }
        let same = self.shape() == rhs.shape();
        let shape = if same {
            Shape::from_slice(self.shape())
        } else {
            broadcast_shapes(name, self.shape(), rhs.shape())?
        };
        let (a, la) = self.cpu(name)?;
        let (b, lb) = rhs.cpu(name)?;
        let int_pow = op == BinaryOp::Pow && self.dtype().is_int();
        if same && !int_pow && la.is_contiguous() && lb.is_contiguous() {
            let n = la.numel();
            if let Some(out) = kernels::binary_flat(op, a, la.offset(), b, lb.offset(), n) {
                return Tensor::from_cpu_storage(out, &shape);
            }
        }
        if int_pow && kernels::any_negative(b, lb) {
            return Err(Error::invalid(
                name,
                format!(
                    "{} cannot be raised to negative integer powers (cast to a float dtype first)",
                    self.dtype()
                ),
            ));
        }
        let la = la.broadcast_to(&shape)?;
        let lb = lb.broadcast_to(&shape)?;
        let out = kernels::binary(op, a, &la, b, &lb)?;
        Tensor::from_cpu_storage(out, &shape)
    }

    /// `self op value`, or `value op self` when `scalar_on_left`. The scalar is first converted
    /// to `self`'s dtype (so `int_tensor * 0.5` multiplies by 0). `pow` by 2, 0.5, -1 or -0.5 on
    /// a float tensor runs as `square`, `sqrt`, `recip` or `rsqrt`.
    ///
    /// ```
    /// use tandem_tensor::{BinaryOp, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    /// let y = x.scalar_op(BinaryOp::Sub, 10.0, true).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![9.0, 8.0]);
    /// ```
    pub fn scalar_op(&self, op: BinaryOp, value: f64, scalar_on_left: bool) -> Result<Tensor> {
        if op == BinaryOp::Pow && !scalar_on_left && self.dtype().is_float() {
            let shortcut = match value {
                2.0 => Some(UnaryOp::Square),
                0.5 => Some(UnaryOp::Sqrt),
                -1.0 => Some(UnaryOp::Recip),
                -0.5 => Some(UnaryOp::Rsqrt),
                _ => None,
            };
            if let Some(u) = shortcut {
                return self.unary(u);
            }
        }
        let int_pow = op == BinaryOp::Pow && self.dtype().is_int();
        if !int_pow && self.device() == Device::Cpu && self.is_contiguous() {
            let (a, la) = self.cpu(op.name())?;
            let out = kernels::scalar_flat(op, a, la.offset(), la.numel(), value, scalar_on_left);
            if let Some(out) = out {
                return Tensor::from_cpu_storage(out, self.shape());
            }
        }
        let scalar = Tensor::full_on(&[], value, self.dtype(), self.device())?;
        if scalar_on_left {
            scalar.binary(op, self)
        } else {
            self.binary(op, &scalar)
        }
    }

    /// In place `self = self op rhs`, where `rhs` broadcasts to `self`'s shape (which must not
    /// change: [`Error::ShapeMismatch`] otherwise). Copies first if the storage is shared
    /// (copy-on-write, so other tensors viewing it are unaffected). Arithmetic on f32, f64 and
    /// integer tensors runs in place without allocating; comparisons store 0/1 (or
    /// false/true) in `self`'s dtype.
    ///
    /// ```
    /// use tandem_tensor::{BinaryOp, Tensor};
    /// let mut grad = Tensor::from_vec(vec![1.0f32, 2.0], &[2]).unwrap();
    /// grad.binary_(BinaryOp::Add, &Tensor::scalar(0.5f32)).unwrap();
    /// assert_eq!(grad.to_vec::<f32>().unwrap(), vec![1.5, 2.5]);
    /// ```
    pub fn binary_(&mut self, op: BinaryOp, rhs: &Tensor) -> Result<()> {
        let name = op.name();
        check_same_dtype(name, self, rhs)?;
        let shape = broadcast_shapes(name, self.shape(), rhs.shape())?;
        if shape.as_slice() != self.shape() {
            return Err(Error::ShapeMismatch {
                op: name,
                lhs: self.shape().to_vec(),
                rhs: rhs.shape().to_vec(),
                hint: format!(
                    "an in-place op cannot change the left operand's shape to {:?}",
                    shape.as_slice()
                ),
            });
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || rhs.device().is_cuda() {
            let out = crate::cuda::binary(self, op, rhs)?;
            *self = if out.dtype() == self.dtype() {
                out
            } else {
                out.cast(self.dtype())?
            };
            return Ok(());
        }
        let in_place = !op.is_comparison()
            && !op.is_logical()
            && op != BinaryOp::Pow
            && matches!(
                self.dtype(),
                DType::F32 | DType::F64 | DType::I64 | DType::I32 | DType::U8
            );
        if in_place {
            let (b, lb) = rhs.cpu(name)?;
            let lb = lb.broadcast_to(&shape)?;
            // `rhs` holds its own reference to its storage, so if it shares `self`'s, the
            // copy-on-write below gives `self` a fresh buffer: no aliasing.
            let dst = self.storage_mut()?.cpu_mut(name)?;
            if kernels::binary_in_place(op, dst, b, &lb) {
                return Ok(());
            }
        }
        let out = self.binary(op, rhs)?;
        *self = if out.dtype() == self.dtype() {
            out
        } else {
            out.cast(self.dtype())?
        };
        Ok(())
    }

    /// `torch.where`: elementwise `cond ? on_true : on_false`. `cond` must be bool, the two
    /// value tensors must have the same dtype, and all three broadcast together.
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let c = Tensor::from_vec(vec![true, false], &[2]).unwrap();
    /// let x = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
    /// let y = Tensor::where_cond(&c, &x, &Tensor::scalar(0i64)).unwrap();
    /// assert_eq!(y.to_vec::<i64>().unwrap(), vec![1, 0]);
    /// ```
    pub fn where_cond(cond: &Tensor, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        const OP: &str = "where";
        if cond.dtype() != DType::Bool {
            return Err(Error::DTypeMismatch {
                op: OP,
                expected: "bool for the condition".into(),
                got: cond.dtype(),
            });
        }
        check_same_dtype(OP, on_true, on_false)?;
        let shape = broadcast_shapes(OP, on_true.shape(), on_false.shape())?;
        let shape = broadcast_shapes(OP, cond.shape(), &shape)?;
        #[cfg(feature = "cuda")]
        if cond.device().is_cuda() || on_true.device().is_cuda() || on_false.device().is_cuda() {
            return crate::cuda::where_cond(cond, on_true, on_false);
        }
        let (c, lc) = cond.cpu(OP)?;
        let (t, lt) = on_true.cpu(OP)?;
        let (f, lf) = on_false.cpu(OP)?;
        let c = c.as_slice::<bool>()?;
        let (lc, lt, lf) = (
            lc.broadcast_to(&shape)?,
            lt.broadcast_to(&shape)?,
            lf.broadcast_to(&shape)?,
        );
        let out = kernels::where_cond(c, &lc, t, &lt, f, &lf)?;
        Tensor::from_cpu_storage(out, &shape)
    }

    /// `self + rhs` with broadcasting (see [`Tensor::binary`]).
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, rhs)
    }

    /// `self - rhs` with broadcasting (see [`Tensor::binary`]).
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, rhs)
    }

    /// `self * rhs` with broadcasting (see [`Tensor::binary`]).
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, rhs)
    }

    /// `self / rhs` with broadcasting (see [`Tensor::binary`]).
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, rhs)
    }
}

#[cfg(test)]
mod tests {
    use crate::{BinaryOp, DType, Error, Tensor};

    #[test]
    fn integer_edge_cases() {
        let x = Tensor::from_vec(vec![7i64, -7, 5, i64::MIN], &[4]).unwrap();
        let y = Tensor::from_vec(vec![2i64, 2, 0, -1], &[4]).unwrap();
        assert_eq!(
            x.div(&y).unwrap().to_vec::<i64>().unwrap(),
            vec![3, -3, 0, i64::MIN]
        );
        let u = Tensor::from_vec(vec![3u8, 200], &[2]).unwrap();
        let v = Tensor::from_vec(vec![5u8, 100], &[2]).unwrap();
        assert_eq!(u.sub(&v).unwrap().to_vec::<u8>().unwrap(), vec![254, 100]);
        assert_eq!(u.add(&v).unwrap().to_vec::<u8>().unwrap(), vec![8, 44]);
        let e = x.binary(BinaryOp::Pow, &y).unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");
        let p = Tensor::from_vec(vec![2i32, -3], &[2]).unwrap();
        let q = p.scalar_op(BinaryOp::Pow, 3.0, false).unwrap();
        assert_eq!(q.to_vec::<i32>().unwrap(), vec![8, -27]);
    }

    #[test]
    fn errors_name_the_op_shapes_and_dtypes() {
        let f = Tensor::zeros(&[2, 3], DType::F32);
        let i = Tensor::zeros(&[2, 3], DType::I64);
        let e = f.binary(BinaryOp::Mul, &i).unwrap_err();
        assert!(matches!(e, Error::DTypeMismatch { .. }));
        let m = e.to_string();
        assert!(
            m.contains("mul") && m.contains("float32") && m.contains("int64"),
            "{m}"
        );

        let g = Tensor::zeros(&[4], DType::F32);
        let m = f.binary(BinaryOp::Add, &g).unwrap_err().to_string();
        assert!(
            m.contains("add") && m.contains("[2, 3]") && m.contains("[4]"),
            "{m}"
        );

        let mut small = Tensor::zeros(&[3], DType::F32);
        let e = small.binary_(BinaryOp::Add, &f).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        assert_eq!(small.shape(), &[3]);

        let e = f.binary(BinaryOp::And, &f).unwrap_err();
        assert!(matches!(e, Error::UnsupportedDType { .. }), "{e}");
        let b = Tensor::zeros(&[2, 3], DType::Bool);
        assert!(b.binary(BinaryOp::Add, &b).is_err());
        let e = Tensor::where_cond(&f, &f, &f).unwrap_err();
        assert!(e.to_string().contains("bool"), "{e}");
        assert!(Tensor::where_cond(&b, &f, &i).is_err());
        assert!(Tensor::where_cond(&b, &f, &g).is_err());
    }

    #[test]
    fn scalar_ops() {
        let x = Tensor::from_vec(vec![1.0f32, 4.0, 9.0], &[3]).unwrap();
        let cases = [
            (BinaryOp::Pow, 0.5, false, vec![1.0, 2.0, 3.0]),
            (BinaryOp::Pow, 2.0, false, vec![1.0, 16.0, 81.0]),
            (BinaryOp::Pow, 3.0, false, vec![1.0, 64.0, 729.0]),
            (BinaryOp::Pow, -1.0, false, vec![1.0, 0.25, 1.0 / 9.0]),
            (BinaryOp::Pow, 2.0, true, vec![2.0, 16.0, 512.0]),
            (BinaryOp::Div, 36.0, true, vec![36.0, 9.0, 4.0]),
            (BinaryOp::Div, 2.0, false, vec![0.5, 2.0, 4.5]),
        ];
        for (op, v, left, want) in cases {
            let got = x.scalar_op(op, v, left).unwrap().to_vec::<f32>().unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (g - w).abs() <= 1e-6 * w.abs(),
                    "{op:?} {v} {left}: {got:?}"
                );
            }
        }
        let c = x.scalar_op(BinaryOp::Gt, 2.0, false).unwrap();
        assert_eq!(c.to_vec::<bool>().unwrap(), vec![false, true, true]);
        let n = Tensor::from_vec(vec![3i64], &[1]).unwrap();
        assert_eq!(
            n.scalar_op(BinaryOp::Mul, 2.7, false)
                .unwrap()
                .to_vec::<i64>()
                .unwrap(),
            vec![6]
        );
    }

    #[test]
    fn in_place_reuses_a_unique_buffer_and_copies_a_shared_one() {
        let mut x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
        let before = std::sync::Arc::as_ptr(x.storage());
        x.binary_(
            BinaryOp::Mul,
            &Tensor::from_vec(vec![10.0f32, 100.0], &[2]).unwrap(),
        )
        .unwrap();
        assert_eq!(std::sync::Arc::as_ptr(x.storage()), before);
        assert_eq!(x.to_vec::<f32>().unwrap(), vec![10.0, 200.0, 30.0, 400.0]);
        // The right operand views the same storage: the update must read the old values.
        let alias = x.t().unwrap();
        x.binary_(BinaryOp::Sub, &alias).unwrap();
        assert_eq!(x.to_vec::<f32>().unwrap(), vec![0.0, 170.0, -170.0, 0.0]);
        assert_eq!(
            alias.to_vec::<f32>().unwrap(),
            vec![10.0, 30.0, 200.0, 400.0]
        );
    }
}
