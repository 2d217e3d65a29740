//! Reductions: sum, mean, max, min and prod over a set of axes, argmax/argmin along one axis,
//! and summing a broadcast result back to a shape.

use crate::cpu::{arg_reduce, reduce as kernels};
use crate::layout::broadcast_shapes;
use crate::{ArgReduceOp, Error, ReduceOp, Result, Tensor};

impl Tensor {
    /// Reduces over `axes` (non-negative, in any order; a duplicate is an error, an axis out of
    /// range is [`Error::BadAxis`]). Empty `axes` reduces over nothing (a copy, with the result
    /// dtype below). `keepdim` keeps reduced axes as size 1.
    ///
    /// `Sum`, `Prod`, `Max` and `Min` work for every dtype; `Sum` and `Prod` of integers and
    /// bool give `int64` like PyTorch, and of `f16`/`bf16` accumulate in `f32`. `Mean` needs a
    /// float dtype (the mean over zero elements is NaN). `Max`/`Min` propagate NaN and fail on
    /// an empty axis. A 0-d tensor accepts axis 0.
    ///
    /// ```
    /// use tandem_tensor::{ReduceOp, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    /// let s = x.reduce(ReduceOp::Sum, &[0], false).unwrap();
    /// assert_eq!(s.to_vec::<f32>().unwrap(), vec![5.0, 7.0, 9.0]);
    /// let m = x.reduce(ReduceOp::Max, &[1], true).unwrap();
    /// assert_eq!(m.shape(), &[2, 1]);
    /// assert_eq!(m.to_vec::<f32>().unwrap(), vec![3.0, 6.0]);
    /// ```
    pub fn reduce(&self, op: ReduceOp, axes: &[usize], keepdim: bool) -> Result<Tensor> {
        let name = op.name();
        let rank = self.rank();
        let mut reduced = vec![false; rank.max(1)];
        for &a in axes {
            if a >= reduced.len() {
                return Err(Error::BadAxis {
                    op: name,
                    axis: a as isize,
                    rank,
                });
            }
            if std::mem::replace(&mut reduced[a], true) {
                return Err(Error::invalid(
                    name,
                    format!("axis {a} appears more than once in {axes:?}"),
                ));
            }
        }
        reduced.truncate(rank);
        if op == ReduceOp::Mean && !self.dtype().is_float() {
            return Err(Error::UnsupportedDType {
                op: name,
                dtype: self.dtype(),
                device: self.device(),
            });
        }
        let shape = self.shape();
        if matches!(op, ReduceOp::Max | ReduceOp::Min) {
            if let Some(d) = (0..rank).find(|&d| reduced[d] && shape[d] == 0) {
                return Err(Error::BadShape {
                    op: name,
                    shape: shape.to_vec(),
                    msg: format!("cannot reduce over dimension {d}, which is empty"),
                });
            }
        }
        let out_shape: Vec<usize> = (0..rank)
            .filter_map(|d| match (reduced[d], keepdim) {
                (false, _) => Some(shape[d]),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::reduce(self, op, &reduced, &out_shape);
        }
        let (storage, layout) = self.cpu(name)?;
        let out = kernels::reduce(op, storage, layout, &reduced)?;
        Tensor::from_cpu_storage(out, &out_shape)
    }

    /// The sum of all elements as a 0-d tensor (`int64` for integer and bool tensors).
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap();
    /// assert_eq!(x.sum_all().unwrap().item().unwrap(), 6.0);
    /// ```
    pub fn sum_all(&self) -> Result<Tensor> {
        let axes: Vec<usize> = (0..self.rank()).collect();
        self.reduce(ReduceOp::Sum, &axes, false)
    }

    /// The index (`int64`) of the largest or smallest element along `axis`: the first one on
    /// ties; a NaN counts as both the max and the min, like PyTorch. The axis must not be
    /// empty. A 0-d tensor accepts axis 0 and gives 0.
    ///
    /// ```
    /// use tandem_tensor::{ArgReduceOp, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 5.0, 5.0, 0.0], &[2, 2]).unwrap();
    /// let i = x.arg_reduce(ArgReduceOp::ArgMax, 1, false).unwrap();
    /// assert_eq!(i.to_vec::<i64>().unwrap(), vec![1, 0]);
    /// ```
    pub fn arg_reduce(&self, op: ArgReduceOp, axis: usize, keepdim: bool) -> Result<Tensor> {
        let name = op.name();
        let rank = self.rank();
        if axis >= rank.max(1) {
            return Err(Error::BadAxis {
                op: name,
                axis: axis as isize,
                rank,
            });
        }
        if rank == 0 {
            return Tensor::scalar(0i64).to_device(self.device());
        }
        let shape = self.shape();
        if shape[axis] == 0 {
            return Err(Error::BadShape {
                op: name,
                shape: shape.to_vec(),
                msg: format!("cannot reduce over dimension {axis}, which is empty"),
            });
        }
        let mut out_shape = shape.to_vec();
        if keepdim {
            out_shape[axis] = 1;
        } else {
            out_shape.remove(axis);
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::arg_reduce(self, op, axis, &out_shape);
        }
        let (storage, layout) = self.cpu(name)?;
        let out = arg_reduce::arg_reduce(op, storage, layout, axis);
        Tensor::from_vec(out, &out_shape)
    }

    /// Sums a broadcast result back to `shape`, the inverse of broadcasting `shape` to this
    /// tensor's shape: leading dimensions and dimensions that are 1 in `shape` are summed.
    /// Fails if `shape` does not broadcast to this tensor's shape. The result has exactly
    /// `shape` and this tensor's dtype.
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let g = Tensor::ones(&[4, 3], tandem_tensor::DType::F32);
    /// let b = g.sum_to_shape(&[3]).unwrap();
    /// assert_eq!(b.to_vec::<f32>().unwrap(), vec![4.0, 4.0, 4.0]);
    /// assert_eq!(g.sum_to_shape(&[4, 1]).unwrap().shape(), &[4, 1]);
    /// ```
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        const OP: &str = "sum_to_shape";
        let full = self.shape();
        let ok = broadcast_shapes(OP, shape, full).is_ok_and(|b| b.as_slice() == full);
        if !ok {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: full.to_vec(),
                rhs: shape.to_vec(),
                hint: format!("{shape:?} does not broadcast to {full:?}"),
            });
        }
        if shape == full {
            return Ok(self.clone());
        }
        let lead = full.len() - shape.len();
        let axes: Vec<usize> = (0..full.len())
            .filter(|&d| d < lead || (shape[d - lead] == 1 && full[d] != 1))
            .collect();
        let summed = self.reduce(ReduceOp::Sum, &axes, true)?;
        let summed = if summed.dtype() == self.dtype() {
            summed
        } else {
            summed.cast(self.dtype())?
        };
        summed.reshape_to(shape)
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::strided::testing::*;
    use crate::{ArgReduceOp, DType, Error, ReduceOp, Tensor};

    #[test]
    fn zero_d_empty_and_no_axes() {
        let s = Tensor::scalar(3.0f32);
        for axes in [&[][..], &[0][..]] {
            let r = s.reduce(ReduceOp::Sum, axes, false).unwrap();
            assert_eq!(r.shape(), &[] as &[usize]);
            assert_eq!(r.item().unwrap(), 3.0);
            assert_eq!(
                s.reduce(ReduceOp::Max, axes, true).unwrap().item().unwrap(),
                3.0
            );
        }
        assert_eq!(
            s.arg_reduce(ArgReduceOp::ArgMax, 0, false)
                .unwrap()
                .item()
                .unwrap(),
            0.0
        );
        let x = Tensor::from_vec(vec![1i32, 2, 3], &[3]).unwrap();
        let same = x.reduce(ReduceOp::Sum, &[], false).unwrap();
        assert_eq!(same.dtype(), DType::I64);
        assert_eq!(same.to_vec::<i64>().unwrap(), vec![1, 2, 3]);
        let e = Tensor::zeros(&[0, 3], DType::F32);
        assert_eq!(
            e.reduce(ReduceOp::Sum, &[0], false)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            vec![0.0; 3]
        );
        assert_eq!(
            e.reduce(ReduceOp::Prod, &[0], false)
                .unwrap()
                .to_vec::<f32>()
                .unwrap(),
            vec![1.0; 3]
        );
        assert!(e
            .reduce(ReduceOp::Mean, &[0], false)
            .unwrap()
            .to_vec::<f32>()
            .unwrap()[0]
            .is_nan());
        assert_eq!(e.reduce(ReduceOp::Max, &[1], false).unwrap().shape(), &[0]);
        assert!(e.reduce(ReduceOp::Max, &[0], false).is_err());
        assert!(e.arg_reduce(ArgReduceOp::ArgMin, 0, false).is_err());
    }

    #[test]
    fn reduce_errors() {
        let x = Tensor::zeros(&[2, 3], DType::F32);
        let e = x.reduce(ReduceOp::Sum, &[2], false).unwrap_err();
        assert!(
            matches!(
                e,
                Error::BadAxis {
                    axis: 2,
                    rank: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = x.reduce(ReduceOp::Sum, &[1, 1], false).unwrap_err();
        assert!(e.to_string().contains("more than once"), "{e}");
        let e = Tensor::zeros(&[2], DType::I64)
            .reduce(ReduceOp::Mean, &[0], false)
            .unwrap_err();
        assert!(matches!(e, Error::UnsupportedDType { .. }), "{e}");
        assert!(x.arg_reduce(ArgReduceOp::ArgMax, 2, false).is_err());
        assert!(Tensor::scalar(1.0f32)
            .reduce(ReduceOp::Sum, &[1], false)
            .is_err());
    }

    #[test]
    fn sum_to_shape_undoes_broadcasting() {
        let g = make(&[4, 3], View::Permuted, DType::F32, 3, -1.0, 1.0);
        let v = g.to_vec::<f32>().unwrap();
        let col_sums: Vec<f32> = (0..3).map(|c| (0..4).map(|r| v[r * 3 + c]).sum()).collect();
        let row_sums: Vec<f32> = (0..4).map(|r| v[r * 3..r * 3 + 3].iter().sum()).collect();
        let close_all = |a: Vec<f32>, b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        assert!(close_all(
            g.sum_to_shape(&[3]).unwrap().to_vec().unwrap(),
            &col_sums
        ));
        let c = g.sum_to_shape(&[1, 3]).unwrap();
        assert_eq!(c.shape(), &[1, 3]);
        let r = g.sum_to_shape(&[4, 1]).unwrap();
        assert_eq!(r.shape(), &[4, 1]);
        assert!(close_all(r.to_vec().unwrap(), &row_sums));
        let all = g.sum_to_shape(&[]).unwrap();
        assert_eq!(all.shape(), &[] as &[usize]);
        assert!((all.item().unwrap() - col_sums.iter().sum::<f32>() as f64).abs() < 1e-5);
        let same = g.sum_to_shape(&[4, 3]).unwrap();
        assert!(same.shares_storage(&g));
        let lead = Tensor::ones(&[2, 1, 3], DType::I32)
            .sum_to_shape(&[1, 3])
            .unwrap();
        assert_eq!(lead.dtype(), DType::I32);
        assert_eq!(lead.to_vec::<i32>().unwrap(), vec![2, 2, 2]);
        for bad in [&[2][..], &[5, 3][..], &[1, 4, 3][..]] {
            let e = g.sum_to_shape(bad).unwrap_err();
            assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        }
    }
}
