//! Indexing ops: gather / scatter-add, index-select / index-add, masked select / scatter and
//! one-hot. Each pair is the other's gradient: `gather`'s is `zeros.scatter_add(..)`,
//! `index_select`'s is `zeros.index_add(..)`, `masked_select`'s is `zeros.masked_scatter(..)`.
//!
//! Index tensors are `int64` or `int32`, in any layout. Negative or too-large index values are
//! an [`Error::IndexOutOfRange`] naming the op, the value and the dimension size (PyTorch's
//! negative indices are not accepted here: wrap them before calling).

use crate::cpu::index as kernels;
use crate::layout::{broadcast_shapes, numel, Layout, Shape, Strides};
use crate::{BinaryOp, CpuStorage, DType, Element, Error, ReduceOp, Result, Tensor};

/// Reads an index tensor (int64 or int32, any layout) in row-major order, checking every value
/// against `size`, the dimension it indexes.
fn index_values(op: &'static str, index: &Tensor, size: usize) -> Result<Vec<usize>> {
    fn convert<I: Element + Into<i64>>(
        op: &'static str,
        v: &[I],
        layout: &Layout,
        size: usize,
    ) -> Result<Vec<usize>> {
        let check = |x: I| -> Result<usize> {
            let x: i64 = x.into();
            if x < 0 || x as u64 >= size as u64 {
                Err(Error::IndexOutOfRange { op, index: x, size })
            } else {
                Ok(x as usize)
            }
        };
        if layout.is_contiguous() {
            let o = layout.offset();
            v[o..o + layout.numel()].iter().map(|&x| check(x)).collect()
        } else {
            layout.positions().map(|p| check(v[p])).collect()
        }
    }
    let (s, l) = index.cpu(op)?;
    match s {
        CpuStorage::I64(v) => convert(op, v, l, size),
        CpuStorage::I32(v) => convert(op, v, l, size),
        other => Err(Error::DTypeMismatch {
            op,
            expected: "an index dtype (int64 or int32)".into(),
            got: other.dtype(),
        }),
    }
}

fn check_axis(op: &'static str, axis: usize, rank: usize) -> Result<()> {
    if axis >= rank {
        return Err(Error::BadAxis {
            op,
            axis: axis as isize,
            rank,
        });
    }
    Ok(())
}

fn check_same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            expected: a.dtype().name().to_string(),
            got: b.dtype(),
        });
    }
    Ok(())
}

/// Checks that `index` has the rank of `target` and fits inside it (every dim, or every dim
/// but `skip`).
fn check_fits(
    op: &'static str,
    index: &Tensor,
    target: &Tensor,
    skip: Option<usize>,
    what: &str,
) -> Result<()> {
    let (i, t) = (index.shape(), target.shape());
    let bad = i.len() != t.len()
        || i.iter()
            .zip(t)
            .enumerate()
            .any(|(d, (&a, &b))| Some(d) != skip && a > b);
    if bad {
        let dims = match skip {
            Some(a) => format!("in every dimension but {a}"),
            None => "in every dimension".to_string(),
        };
        return Err(Error::ShapeMismatch {
            op,
            lhs: i.to_vec(),
            rhs: t.to_vec(),
            hint: format!("the index must have the rank of {what} and be no larger {dims}"),
        });
    }
    Ok(())
}

/// The layout of a 1-D index of `n` values broadcast to `shape` along `axis`.
fn broadcast_index_layout(shape: &[usize], axis: usize) -> Layout {
    let mut strides: Strides = smallvec::smallvec![0; shape.len()];
    strides[axis] = 1;
    Layout::from_parts(Shape::from_slice(shape), strides, 0)
}

/// `(outer, dim, inner)`: the sizes before, at and after `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        numel(&shape[..axis]),
        shape[axis],
        numel(&shape[axis + 1..]),
    )
}

/// Calls `f` with a slice of type `T` for the dtype (a type witness for generic kernels).
fn typed<T: Element>(s: &CpuStorage) -> Result<&[T]> {
    s.as_slice::<T>()
}

impl Tensor {
    /// `torch.gather`: along `axis`, picks `self[.., index[i], ..]` for every position `i` of
    /// `index` (for axis 0 of a 3-d tensor, `out[i][j][k] = self[index[i][j][k]][j][k]`).
    /// `index` has the rank of `self` and is no larger outside `axis`; the result has the
    /// shape of `index`.
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    /// let i = Tensor::from_vec(vec![1i64, 0, 0, 0], &[2, 2]).unwrap();
    /// assert_eq!(x.gather(1, &i).unwrap().to_vec::<f32>().unwrap(), vec![2.0, 1.0, 3.0, 3.0]);
    /// ```
    pub fn gather(&self, axis: usize, index: &Tensor) -> Result<Tensor> {
        let op = "gather";
        check_axis(op, axis, self.rank())?;
        check_fits(op, index, self, Some(axis), "the input")?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || index.device().is_cuda() {
            index_values(
                op,
                &index.to_device(crate::Device::Cpu)?,
                self.shape()[axis],
            )?;
            return crate::cuda::gather(op, self, axis, index, index.layout(), index.shape());
        }
        let idx = index_values(op, index, self.shape()[axis])?;
        let (s, l) = self.cpu(op)?;
        let il = Layout::contiguous(index.shape());
        let out = crate::match_cpu_storage!(s, v => Element::into_cpu_storage(
            kernels::gather(v, l, axis, &idx, &il)
        ));
        Tensor::from_cpu_storage(out, index.shape())
    }

    /// A copy of `self` with `src` added at the positions `gather` would read:
    /// `out[index[i][j]][j] += src[i][j]` for axis 0. Repeated indices accumulate. `index` has
    /// the rank of `self` (no larger outside `axis`) and is no larger than `src` anywhere;
    /// `src` has `self`'s dtype. The gradient of `gather` is `zeros.scatter_add(axis, index, g)`.
    pub fn scatter_add(&self, axis: usize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let op = "scatter_add";
        check_axis(op, axis, self.rank())?;
        check_same_dtype(op, self, src)?;
        check_fits(op, index, self, Some(axis), "the input")?;
        check_fits(op, index, src, None, "src")?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || index.device().is_cuda() || src.device().is_cuda() {
            index_values(
                op,
                &index.to_device(crate::Device::Cpu)?,
                self.shape()[axis],
            )?;
            let sl = src.layout();
            let src_l = Layout::from_parts(
                Shape::from_slice(index.shape()),
                Strides::from_slice(sl.strides()),
                sl.offset(),
            );
            let il = index.layout();
            return crate::cuda::scatter_add(op, self, axis, index, il, src, &src_l, index.shape());
        }
        let idx = index_values(op, index, self.shape()[axis])?;
        let (s, l) = self.cpu(op)?;
        let (src_s, src_l) = src.cpu(op)?;
        // The part of `src` that the index covers.
        let src_l = Layout::from_parts(
            Shape::from_slice(index.shape()),
            Strides::from_slice(src_l.strides()),
            src_l.offset(),
        );
        let il = Layout::contiguous(index.shape());
        let mut out = crate::cpu::copy::copy_strided(s, l);
        let shape = self.shape();
        crate::match_cpu_storage!(&mut out, v => {
            kernels::scatter_add(v, shape, axis, &idx, &il, typed(src_s)?, &src_l)
        });
        Tensor::from_cpu_storage(out, shape)
    }

    /// `torch.index_select`: the entries `index[0], index[1], ...` of `axis` (index is 1-D;
    /// repeats allowed). The result has `index.numel()` entries along `axis`. On contiguous
    /// data whole rows are copied (axis 0 is an embedding lookup).
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let table = Tensor::from_vec((0..6).map(|x| x as f32).collect(), &[3, 2]).unwrap();
    /// let ids = Tensor::from_vec(vec![2i64, 0, 2], &[3]).unwrap();
    /// let rows = table.index_select(0, &ids).unwrap();
    /// assert_eq!(rows.to_vec::<f32>().unwrap(), vec![4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
    /// ```
    pub fn index_select(&self, axis: usize, index: &Tensor) -> Result<Tensor> {
        let op = "index_select";
        check_axis(op, axis, self.rank())?;
        check_vector_index(op, index)?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || index.device().is_cuda() {
            index_values(
                op,
                &index.to_device(crate::Device::Cpu)?,
                self.shape()[axis],
            )?;
            let mut shape = self.shape().to_vec();
            shape[axis] = index.numel();
            let il = crate::cuda::broadcast_index(index, &shape, axis);
            return crate::cuda::gather(op, self, axis, index, &il, &shape);
        }
        let idx = index_values(op, index, self.shape()[axis])?;
        let mut shape = Shape::from_slice(self.shape());
        shape[axis] = idx.len();
        let (s, l) = self.cpu(op)?;
        let out = if l.is_contiguous() {
            let (outer, dim, inner) = split_at_axis(self.shape(), axis);
            let o = l.offset();
            crate::match_cpu_storage!(s, v => Element::into_cpu_storage(
                kernels::index_select_rows(&v[o..o + self.numel()], outer, dim, inner, &idx)
            ))
        } else {
            let il = broadcast_index_layout(&shape, axis);
            crate::match_cpu_storage!(s, v => Element::into_cpu_storage(
                kernels::gather(v, l, axis, &idx, &il)
            ))
        };
        Tensor::from_cpu_storage(out, &shape)
    }

    /// A copy of `self` with row `j` of `src` (along `axis`) added to row `index[j]`; repeats
    /// accumulate. `src` has `self`'s shape with `index.numel()` entries along `axis` (the
    /// shape of `index_select`'s result) and `self`'s dtype. The gradient of `index_select` is
    /// `zeros.index_add(axis, index, g)`.
    pub fn index_add(&self, axis: usize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let op = "index_add";
        check_axis(op, axis, self.rank())?;
        check_vector_index(op, index)?;
        check_same_dtype(op, self, src)?;
        let mut want = Shape::from_slice(self.shape());
        want[axis] = index.numel();
        if src.shape() != want.as_slice() {
            return Err(Error::ShapeMismatch {
                op,
                lhs: src.shape().to_vec(),
                rhs: want.to_vec(),
                hint: format!(
                    "src must have the input's shape with the index length along axis {axis}"
                ),
            });
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() || index.device().is_cuda() || src.device().is_cuda() {
            index_values(
                op,
                &index.to_device(crate::Device::Cpu)?,
                self.shape()[axis],
            )?;
            let il = crate::cuda::broadcast_index(index, &want, axis);
            return crate::cuda::scatter_add(op, self, axis, index, &il, src, src.layout(), &want);
        }
        let idx = index_values(op, index, self.shape()[axis])?;
        let (s, l) = self.cpu(op)?;
        let (src_s, src_l) = src.cpu(op)?;
        let mut out = crate::cpu::copy::copy_strided(s, l);
        let shape = self.shape();
        if src_l.is_contiguous() {
            let (_, dim, inner) = split_at_axis(shape, axis);
            let o = src_l.offset();
            let n = src.numel();
            crate::match_cpu_storage!(&mut out, v => {
                kernels::index_add_rows(v, dim, inner, &idx, &typed(src_s)?[o..o + n])
            });
        } else {
            let il = broadcast_index_layout(&want, axis);
            crate::match_cpu_storage!(&mut out, v => {
                kernels::scatter_add(v, shape, axis, &idx, &il, typed(src_s)?, src_l)
            });
        }
        Tensor::from_cpu_storage(out, shape)
    }

    /// `torch.masked_select`: the elements where the bool `mask` (broadcast with `self`) is
    /// true, as a 1-D tensor in row-major order.
    pub fn masked_select(&self, mask: &Tensor) -> Result<Tensor> {
        let op = "masked_select";
        let (sl, ml, _) = masked_layouts(op, self, mask)?;
        let (s, _) = self.cpu(op)?;
        let m = typed::<bool>(mask.cpu(op)?.0)?;
        let out = crate::match_cpu_storage!(s, v => Element::into_cpu_storage(
            kernels::masked_select(v, &sl, m, &ml)
        ));
        let n = out.len();
        Tensor::from_cpu_storage(out, &[n])
    }

    /// A copy of `self` (broadcast with `mask`) whose positions where `mask` is true, in
    /// row-major order, take consecutive elements of `src` (read in row-major order; it needs
    /// at least as many elements as the mask has true values). The inverse of
    /// [`Tensor::masked_select`]: `zeros.masked_scatter(mask, g)` is its gradient.
    pub fn masked_scatter(&self, mask: &Tensor, src: &Tensor) -> Result<Tensor> {
        let op = "masked_scatter";
        check_same_dtype(op, self, src)?;
        let (sl, ml, shape) = masked_layouts(op, self, mask)?;
        let m = typed::<bool>(mask.cpu(op)?.0)?;
        let count = kernels::count_true(m, &ml);
        if src.numel() < count {
            return Err(Error::BadShape {
                op,
                shape: src.shape().to_vec(),
                msg: format!(
                    "the mask selects {count} elements but src has only {}",
                    src.numel()
                ),
            });
        }
        let (s, _) = self.cpu(op)?;
        let (src_s, src_l) = src.cpu(op)?;
        let flat_src = crate::cpu::copy::copy_strided(src_s, src_l);
        let mut out = crate::cpu::copy::copy_strided(s, &sl);
        crate::match_cpu_storage!(&mut out, v => {
            kernels::masked_scatter(v, m, &ml, typed(&flat_src)?)
        });
        Tensor::from_cpu_storage(out, &shape)
    }

    /// One-hot encoding of an index tensor (int64 or int32, values in `0..depth`): a tensor of
    /// shape `self.shape + [depth]` and dtype `dtype`, `on` at each index and `off` elsewhere.
    ///
    /// ```
    /// use tandem_tensor::{DType, Tensor};
    /// let labels = Tensor::from_vec(vec![2i64, 0], &[2]).unwrap();
    /// let y = labels.one_hot(3, 1.0, 0.0, DType::F32).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    /// ```
    pub fn one_hot(&self, depth: usize, on: f64, off: f64, dtype: DType) -> Result<Tensor> {
        fn build<T: Element>(
            _witness: &[T],
            idx: &[usize],
            depth: usize,
            on: f64,
            off: f64,
        ) -> CpuStorage {
            T::into_cpu_storage(kernels::one_hot(
                idx,
                depth,
                T::from_f64(on),
                T::from_f64(off),
            ))
        }
        if self.device() != crate::Device::Cpu {
            return self.one_hot_on_device(depth, on, off, dtype);
        }
        let idx = index_values("one_hot", self, depth)?;
        let mut shape = Shape::from_slice(self.shape());
        shape.push(depth);
        super::shape_ops::checked_numel("one_hot", &shape)?;
        let witness = CpuStorage::zeros(dtype, 0);
        let out = crate::match_cpu_storage!(&witness, w => build(w, &idx, depth, on, off));
        Tensor::from_cpu_storage(out, &shape)
    }
}

impl Tensor {
    /// `one_hot` on a device other than the CPU, from ops every backend has: the range check
    /// reads the smallest and largest index back (one synchronization, as PyTorch does), then
    /// `index == [0, 1, ..., depth-1]` broadcast over a new last axis selects `on` or `off`.
    fn one_hot_on_device(&self, depth: usize, on: f64, off: f64, dtype: DType) -> Result<Tensor> {
        let op = "one_hot";
        if !matches!(self.dtype(), DType::I64 | DType::I32) {
            return Err(Error::DTypeMismatch {
                op,
                expected: "an index dtype (int64 or int32)".into(),
                got: self.dtype(),
            });
        }
        let mut shape = Shape::from_slice(self.shape());
        shape.push(depth);
        super::shape_ops::checked_numel(op, &shape)?;
        let device = self.device();
        if self.numel() > 0 {
            // The index range in one device -> host copy: [min, max] side by side.
            let axes: Vec<usize> = (0..self.rank()).collect();
            let lo = self.reduce(ReduceOp::Min, &axes, true)?.reshape(&[1])?;
            let hi = self.reduce(ReduceOp::Max, &axes, true)?.reshape(&[1])?;
            let range = Tensor::cat(&[&lo, &hi], 0)?
                .cast(DType::I64)?
                .to_vec::<i64>()?;
            for &x in &range {
                if x < 0 || x as u64 >= depth as u64 {
                    return Err(Error::IndexOutOfRange {
                        op,
                        index: x,
                        size: depth,
                    });
                }
            }
        }
        let classes = Tensor::from_vec((0..depth as i64).collect::<Vec<i64>>(), &[depth])?
            .cast(self.dtype())?
            .to_device(device)?;
        let hit = self.unsqueeze(-1)?.binary(BinaryOp::Eq, &classes)?;
        let on = Tensor::full_on(&[], on, dtype, device)?;
        let off = Tensor::full_on(&[], off, dtype, device)?;
        Tensor::where_cond(&hit, &on, &off)
    }
}

/// Checks that an index for `index_select` / `index_add` is 1-D (or 0-d, one value).
fn check_vector_index(op: &'static str, index: &Tensor) -> Result<()> {
    if index.rank() > 1 {
        return Err(Error::BadShape {
            op,
            shape: index.shape().to_vec(),
            msg: "the index must be 1-D".into(),
        });
    }
    Ok(())
}

/// The layouts of `x` and a bool `mask` broadcast to their common shape, and that shape.
fn masked_layouts(op: &'static str, x: &Tensor, mask: &Tensor) -> Result<(Layout, Layout, Shape)> {
    if mask.dtype() != DType::Bool {
        return Err(Error::DTypeMismatch {
            op,
            expected: "bool".into(),
            got: mask.dtype(),
        });
    }
    let shape = broadcast_shapes(op, x.shape(), mask.shape())?;
    let xl = x.layout().broadcast_to(&shape)?;
    let ml = mask.layout().broadcast_to(&shape)?;
    Ok((xl, ml, shape))
}

#[cfg(test)]
mod tests {
    use crate::random::Rng;
    use crate::{DType, Error, Tensor};
    use proptest::prelude::*;

    fn f(v: &[f64], s: &[usize]) -> Tensor {
        Tensor::from_slice(v, s).unwrap()
    }
    fn ix(v: &[i64], s: &[usize]) -> Tensor {
        Tensor::from_slice(v, s).unwrap()
    }
    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec().unwrap()
    }
    fn dot(a: &Tensor, b: &Tensor) -> f64 {
        vals(a).iter().zip(vals(b)).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn gather_both_axes() {
        let x = f(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let i = ix(&[1, 0, 1], &[1, 3]);
        assert_eq!(vals(&x.gather(0, &i).unwrap()), vec![4., 2., 6.]);
        let i = ix(&[2, 2, 0, 1], &[2, 2]);
        let g = x.gather(1, &i).unwrap();
        assert_eq!(g.shape(), &[2, 2]);
        assert_eq!(vals(&g), vec![3., 3., 4., 5.]);
        // A transposed input and an int32, transposed index give the same as contiguous ones.
        let xt = x.t().unwrap();
        let it = ix(&[0, 1, 1, 0, 1, 1], &[2, 3])
            .cast(DType::I32)
            .unwrap()
            .t()
            .unwrap();
        let a = xt.gather(0, &it).unwrap();
        let b = xt.copy().unwrap().gather(0, &it.copy().unwrap()).unwrap();
        assert_eq!(vals(&a), vals(&b));
        assert_eq!(vals(&a), vec![1., 4., 2., 5., 2., 5.]);
    }

    #[test]
    fn gather_errors() {
        let x = f(&[1., 2., 3., 4.], &[2, 2]);
        let e = x.gather(1, &ix(&[0, 5], &[1, 2])).unwrap_err();
        assert!(
            matches!(
                e,
                Error::IndexOutOfRange {
                    op: "gather",
                    index: 5,
                    size: 2
                }
            ),
            "{e}"
        );
        let e = x.gather(1, &ix(&[-1, 0], &[1, 2])).unwrap_err();
        assert!(e.to_string().contains("index -1"), "{e}");
        assert!(x.gather(1, &f(&[0., 0.], &[1, 2])).is_err());
        assert!(x.gather(1, &ix(&[0, 0], &[2])).is_err());
        assert!(x.gather(1, &ix(&[0; 3], &[3, 1])).is_err());
        assert!(x.gather(2, &ix(&[0; 2], &[1, 2])).is_err());
        assert!(x.gather(0, &ix(&[0; 6], &[1, 6])).is_err());
    }

    #[test]
    fn scatter_add_accumulates_and_is_gathers_adjoint() {
        let z = Tensor::zeros(&[2, 3], DType::F64);
        let i = ix(&[1, 1, 0, 1, 1, 0], &[2, 3]);
        let src = f(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let s = z.scatter_add(0, &i, &src).unwrap();
        assert_eq!(vals(&s), vec![0., 0., 9., 5., 7., 0.]);
        // <gather(x), g> == <x, scatter_add(0, g)> for random x, index and g.
        let mut rng = Rng::new(3);
        let x = Tensor::randn(&[4, 5, 3], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let i = Tensor::randint(&[4, 7, 2], 0, 5, DType::I64, &mut rng).unwrap();
        let g = Tensor::randn(&[4, 7, 2], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let lhs = dot(&x.gather(1, &i).unwrap(), &g);
        let back = x.zeros_like().scatter_add(1, &i, &g).unwrap();
        assert!((lhs - dot(&x, &back)).abs() < 1e-9);
        // src may be larger than the index: only the covered part is used.
        let big = f(&[1.; 12], &[3, 4]);
        let s = Tensor::zeros(&[2, 2], DType::F64)
            .scatter_add(1, &ix(&[0, 0], &[1, 2]), &big)
            .unwrap();
        assert_eq!(vals(&s), vec![2., 0., 0., 0.]);
        // Integers and bools.
        let zi = Tensor::zeros(&[3], DType::I64);
        let si = zi
            .scatter_add(0, &ix(&[2, 2], &[2]), &ix(&[5, 6], &[2]))
            .unwrap();
        assert_eq!(si.to_vec::<i64>().unwrap(), vec![0, 0, 11]);
        assert!(z
            .scatter_add(0, &i, &src.cast(DType::F32).unwrap())
            .is_err());
        assert!(z.scatter_add(0, &ix(&[9], &[1, 1]), &src).is_err());
    }

    #[test]
    fn index_select_rows_and_views() {
        let table = f(&(0..12).map(|x| x as f64).collect::<Vec<_>>(), &[4, 3]);
        let ids = ix(&[3, 0, 3], &[3]);
        let r = table.index_select(0, &ids).unwrap();
        assert_eq!(r.shape(), &[3, 3]);
        assert_eq!(vals(&r), vec![9., 10., 11., 0., 1., 2., 9., 10., 11.]);
        let c = table.index_select(1, &ix(&[2, 1], &[2])).unwrap();
        assert_eq!(vals(&c), vec![2., 1., 5., 4., 8., 7., 11., 10.]);
        let tt = table.t().unwrap();
        assert_eq!(
            vals(&tt.index_select(1, &ids).unwrap()),
            vals(&r.t().unwrap())
        );
        let empty = table.index_select(0, &ix(&[], &[0])).unwrap();
        assert_eq!(empty.shape(), &[0, 3]);
        let scalar_index = table.index_select(0, &Tensor::scalar(1i64)).unwrap();
        assert_eq!(scalar_index.shape(), &[1, 3]);
        for dt in DType::ALL {
            let t = table.cast(dt).unwrap();
            let got = t.index_select(0, &ids).unwrap();
            assert_eq!(got.dtype(), dt);
            assert_eq!(vals(&got), vals(&r.cast(dt).unwrap()));
        }
        assert!(table.index_select(0, &ix(&[4], &[1])).is_err());
        assert!(table.index_select(0, &ix(&[0, 1], &[1, 2])).is_err());
    }

    #[test]
    fn index_add_accumulates_and_is_index_selects_adjoint() {
        let z = Tensor::zeros(&[3, 2], DType::F64);
        let src = f(&[1., 2., 3., 4., 5., 6.], &[3, 2]);
        let out = z.index_add(0, &ix(&[2, 0, 2], &[3]), &src).unwrap();
        assert_eq!(vals(&out), vec![3., 4., 0., 0., 6., 8.]);
        // A non-contiguous src takes the strided path.
        let st = f(&[1., 3., 5., 2., 4., 6.], &[2, 3]).t().unwrap();
        assert_eq!(
            vals(&z.index_add(0, &ix(&[2, 0, 2], &[3]), &st).unwrap()),
            vals(&out)
        );
        let mut rng = Rng::new(8);
        let x = Tensor::randn(&[3, 6, 4], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let i = Tensor::randint(&[9], 0, 6, DType::I32, &mut rng).unwrap();
        let g = Tensor::randn(&[3, 9, 4], 0.0, 1.0, DType::F64, &mut rng).unwrap();
        let lhs = dot(&x.index_select(1, &i).unwrap(), &g);
        let back = x.zeros_like().index_add(1, &i, &g).unwrap();
        assert!((lhs - dot(&x, &back)).abs() < 1e-9);
        assert!(z.index_add(0, &ix(&[0], &[1]), &src).is_err());
        assert!(z.index_add(0, &ix(&[0, 1, 3], &[3]), &src).is_err());
        let bz = Tensor::zeros(&[2], DType::Bool);
        let b = bz.index_add(
            0,
            &ix(&[1, 1], &[2]),
            &Tensor::from_vec(vec![true, false], &[2]).unwrap(),
        );
        assert_eq!(b.unwrap().to_vec::<bool>().unwrap(), vec![false, true]);
    }

    #[test]
    fn masked_select_and_scatter() {
        let x = f(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
        let mask = Tensor::from_vec(vec![true, false, true], &[3]).unwrap();
        let s = x.masked_select(&mask).unwrap();
        assert_eq!(s.shape(), &[4]);
        assert_eq!(vals(&s), vec![1., 3., 4., 6.]);
        let back = x.zeros_like().masked_scatter(&mask, &s).unwrap();
        assert_eq!(vals(&back), vec![1., 0., 3., 4., 0., 6.]);
        // Transposed input, 2-D src with extra elements.
        let xt = x.t().unwrap();
        let m2 = Tensor::from_vec(vec![false, true], &[2]).unwrap();
        assert_eq!(vals(&xt.masked_select(&m2).unwrap()), vec![4., 5., 6.]);
        let src = f(&[7., 8., 9., 10.], &[2, 2]);
        assert_eq!(
            vals(&xt.masked_scatter(&m2, &src).unwrap()),
            vec![1., 7., 2., 8., 3., 9.]
        );
        assert!(x.masked_select(&x).is_err());
        assert!(x.masked_scatter(&mask, &f(&[1.], &[1])).is_err());
        assert!(x
            .masked_select(&Tensor::from_vec(vec![true; 2], &[2]).unwrap())
            .is_err());
    }

    #[test]
    fn one_hot_from_device_ops_matches_the_kernel() {
        // The device path is built from portable ops, so it can be checked on the CPU.
        let i = ix(&[0, 2, 1, 2, 0, 1], &[2, 3]);
        for idx in [i.clone(), i.cast(DType::I32).unwrap().t().unwrap()] {
            for dtype in [DType::F32, DType::F64, DType::I64, DType::Bool] {
                let want = idx.one_hot(3, 1.0, -1.0, dtype).unwrap();
                let got = idx.one_hot_on_device(3, 1.0, -1.0, dtype).unwrap();
                assert_eq!(got.shape(), want.shape());
                assert_eq!(got.dtype(), want.dtype());
                assert_eq!(vals(&got), vals(&want), "{dtype}");
            }
        }
        let e = i.one_hot_on_device(2, 1.0, 0.0, DType::F32).unwrap_err();
        assert!(matches!(
            e,
            Error::IndexOutOfRange {
                op: "one_hot",
                index: 2,
                size: 2
            }
        ));
        assert!(ix(&[-1], &[1])
            .one_hot_on_device(2, 1.0, 0.0, DType::F32)
            .is_err());
        assert!(f(&[0.], &[1])
            .one_hot_on_device(2, 1.0, 0.0, DType::F32)
            .is_err());
        let empty = ix(&[], &[0])
            .one_hot_on_device(4, 1.0, 0.0, DType::F32)
            .unwrap();
        assert_eq!(empty.shape(), &[0, 4]);
    }

    #[test]
    fn one_hot_encodes() {
        let i = ix(&[0, 2, 1, 2], &[2, 2]);
        let y = i.one_hot(3, 1.0, -1.0, DType::F32).unwrap();
        assert_eq!(y.shape(), &[2, 2, 3]);
        assert_eq!(
            vals(&y),
            vec![1., -1., -1., -1., -1., 1., -1., 1., -1., -1., -1., 1.]
        );
        let b = i
            .cast(DType::I32)
            .unwrap()
            .t()
            .unwrap()
            .one_hot(3, 1.0, 0.0, DType::Bool)
            .unwrap();
        assert_eq!(vals(&b)[..6], [1., 0., 0., 0., 1., 0.]);
        let e = i.one_hot(2, 1.0, 0.0, DType::F32).unwrap_err();
        assert!(matches!(
            e,
            Error::IndexOutOfRange {
                op: "one_hot",
                index: 2,
                size: 2
            }
        ));
        assert!(f(&[0.], &[1]).one_hot(2, 1.0, 0.0, DType::F32).is_err());
        assert!(ix(&[0, 1], &[2])
            .one_hot(usize::MAX, 1.0, 0.0, DType::F32)
            .is_err());
    }

    proptest! {
        #[test]
        fn views_give_the_same_results_as_copies(
            a in 1usize..5, b in 1usize..6, c in 1usize..4, n in 0usize..7, seed in any::<u64>(),
        ) {
            let mut rng = Rng::new(seed);
            let base = Tensor::randn(&[a, b, c], 0.0, 1.0, DType::F32, &mut rng).unwrap();
            let view = base.permute(&[2, 0, 1]).unwrap(); // [c, a, b]
            let copy = view.copy().unwrap();
            let i = Tensor::randint(&[n], 0, a as i64, DType::I64, &mut rng).unwrap();
            prop_assert_eq!(vals(&view.index_select(1, &i).unwrap()), vals(&copy.index_select(1, &i).unwrap()));
            let gi = Tensor::randint(&[c, a, n], 0, b as i64, DType::I64, &mut rng).unwrap();
            prop_assert_eq!(vals(&view.gather(2, &gi).unwrap()), vals(&copy.gather(2, &gi).unwrap()));
            let src = Tensor::randn(&[c, n, b], 0.0, 1.0, DType::F32, &mut rng).unwrap();
            let srcv = src.permute(&[0, 2, 1]).unwrap().copy().unwrap().permute(&[0, 2, 1]).unwrap();
            prop_assert_eq!(vals(&view.index_add(1, &i, &srcv).unwrap()), vals(&copy.index_add(1, &i, &src).unwrap()));
            let mask = Tensor::bernoulli(&[a, b], 0.5, DType::Bool, &mut rng).unwrap();
            prop_assert_eq!(vals(&view.masked_select(&mask).unwrap()), vals(&copy.masked_select(&mask).unwrap()));
        }
    }
}
