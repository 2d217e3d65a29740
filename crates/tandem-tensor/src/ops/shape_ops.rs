//! Shape ops that copy: concatenate, stack, constant padding, and the inverse of a slice.
//!
//! All four write views of their inputs into regions of a fresh contiguous output. The region
//! kernel ([`write_region`]) copies whole inner runs with `copy_from_slice` where both sides are
//! contiguous, and splits large copies across rayon threads along the region's outer dimension.

use crate::cpu::simd::{parallel_chunks, PARALLEL_THRESHOLD};
use crate::layout::{numel, Layout, Shape, Strides};
use crate::{CpuStorage, Element, Error, Result, Tensor};

/// The number of elements of `shape`, or an error naming `op` when it overflows `usize`.
pub(crate) fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::BadShape {
            op,
            shape: shape.to_vec(),
            msg: "the number of elements overflows".into(),
        })
}

/// Copies the view `src`/`src_layout` into the region `dst_layout` of `dst` (same shape).
/// The region must not overlap itself (each element one distinct position), as any slice of a
/// contiguous layout; large copies run in parallel.
pub(crate) fn write_region<T: Element>(
    dst: &mut [T],
    dst_layout: &Layout,
    src: &[T],
    src_layout: &Layout,
) {
    let n = dst_layout.numel();
    if n == 0 {
        return;
    }
    let shape = dst_layout.shape();
    let strides = dst_layout.strides();
    let chunks = parallel_chunks(n);
    // Split along the first dimension larger than 1 when its rows occupy disjoint ranges of
    // `dst` (the stride covers everything inside a row).
    let split = shape.iter().position(|&s| s > 1);
    if let (true, Some(a)) = (chunks > 1, split) {
        let row_span: usize = (a + 1..shape.len())
            .map(|d| (shape[d] - 1) * strides[d])
            .sum::<usize>()
            + 1;
        if strides[a] >= row_span {
            let rows = shape[a];
            let per = rows.div_ceil(chunks.min(rows));
            let mut pieces = Vec::with_capacity(rows.div_ceil(per));
            let mut rest = &mut dst[dst_layout.offset()..];
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + per).min(rows);
                let len = if r1 == rows {
                    rest.len()
                } else {
                    (r1 - r0) * strides[a]
                };
                let (piece, tail) = std::mem::take(&mut rest).split_at_mut(len);
                rest = tail;
                let mut sub_shape = Shape::from_slice(shape);
                sub_shape[a] = r1 - r0;
                let sub_dst = Layout::from_parts(sub_shape.clone(), Strides::from(strides), 0);
                let sub_src = Layout::from_parts(
                    sub_shape,
                    Strides::from(src_layout.strides()),
                    src_layout.offset() + r0 * src_layout.strides()[a],
                );
                pieces.push((piece, sub_dst, sub_src));
                r0 = r1;
            }
            crate::cpu::par::for_each_chunk(&mut pieces, 1, |_, p| {
                for (piece, d, s) in p {
                    write_region_seq(piece, d, src, s);
                }
            });
            return;
        }
    }
    write_region_seq(dst, dst_layout, src, src_layout);
}

/// The sequential region copy: inner runs that are contiguous on both sides are copied with
/// `copy_from_slice`; the dimension above them is walked with its two strides.
fn write_region_seq<T: Element>(dst: &mut [T], dl: &Layout, src: &[T], sl: &Layout) {
    let shape = dl.shape();
    if dl.numel() == 0 {
        return;
    }
    let (ds, ss) = (dl.strides(), sl.strides());
    let mut block = 1;
    let mut d = shape.len();
    while d > 0 && (shape[d - 1] == 1 || (ds[d - 1] == block && ss[d - 1] == block)) {
        block *= shape[d - 1];
        d -= 1;
    }
    if d == 0 {
        dst[dl.offset()..dl.offset() + block]
            .copy_from_slice(&src[sl.offset()..sl.offset() + block]);
        return;
    }
    let (run, run_ds, run_ss) = (shape[d - 1], ds[d - 1], ss[d - 1]);
    let outer = &shape[..d - 1];
    let mut dpos = crate::cpu::index::Walker::new(outer, &ds[..d - 1], dl.offset(), 0);
    let mut spos = crate::cpu::index::Walker::new(outer, &ss[..d - 1], sl.offset(), 0);
    for _ in 0..numel(outer) {
        let (d0, s0) = (dpos.pos(), spos.pos());
        if block == 1 {
            for j in 0..run {
                dst[d0 + j * run_ds] = src[s0 + j * run_ss];
            }
        } else {
            for j in 0..run {
                let (dp, sp) = (d0 + j * run_ds, s0 + j * run_ss);
                dst[dp..dp + block].copy_from_slice(&src[sp..sp + block]);
            }
        }
        dpos.advance();
        spos.advance();
    }
}

/// Writes `t` into the region `region` of `out` (whose element type is `T`).
fn write_tensor<T: Element>(
    op: &'static str,
    out: &mut [T],
    region: &Layout,
    t: &Tensor,
) -> Result<()> {
    let (s, l) = t.cpu(op)?;
    write_region(out, region, s.as_slice::<T>()?, l);
    Ok(())
}

/// Concatenation of same-dtype, same-rank tensors along `axis` (shapes checked by the caller).
fn cat_typed<T: Element>(
    _witness: &[T],
    op: &'static str,
    tensors: &[&Tensor],
    axis: usize,
    shape: &[usize],
) -> Result<CpuStorage> {
    let n = numel(shape);
    if n < PARALLEL_THRESHOLD && tensors.iter().all(|t| t.is_contiguous()) {
        // Small and contiguous (the common case, e.g. [64, x] pieces along axis 1): append the
        // pieces' rows in output order, with no zero-fill first.
        let outer = numel(&shape[..axis]);
        let inner = numel(&shape[axis + 1..]);
        let mut parts = Vec::with_capacity(tensors.len());
        for t in tensors {
            let (s, l) = t.cpu(op)?;
            let v = s.as_slice::<T>()?;
            let o = l.offset();
            parts.push((&v[o..o + t.numel()], t.shape()[axis] * inner));
        }
        let mut out = Vec::with_capacity(n);
        for row in 0..outer {
            for &(v, len) in &parts {
                out.extend_from_slice(&v[row * len..(row + 1) * len]);
            }
        }
        return Ok(T::into_cpu_storage(out));
    }
    let mut out = vec![T::default(); n];
    let full = Layout::contiguous(shape);
    let mut start = 0;
    for t in tensors {
        let len = t.shape()[axis];
        write_tensor(op, &mut out, &full.slice(axis, start, len, 1)?, t)?;
        start += len;
    }
    Ok(T::into_cpu_storage(out))
}

/// Checks a list for `cat`/`stack` (non-empty, one dtype, one device) and returns the first.
fn check_list<'a>(op: &'static str, tensors: &[&'a Tensor]) -> Result<&'a Tensor> {
    let first = *tensors
        .first()
        .ok_or_else(|| Error::invalid(op, "needs at least one tensor"))?;
    for t in tensors {
        if t.dtype() != first.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                expected: first.dtype().name().to_string(),
                got: t.dtype(),
            });
        }
        if t.device() != first.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: first.device(),
                rhs: t.device(),
            });
        }
    }
    Ok(first)
}

fn cat_impl(op: &'static str, tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
    let first = check_list(op, tensors)?;
    let rank = first.rank();
    if axis >= rank {
        return Err(Error::BadAxis {
            op,
            axis: axis as isize,
            rank,
        });
    }
    let mut shape = Shape::from_slice(first.shape());
    shape[axis] = 0;
    for (i, t) in tensors.iter().enumerate() {
        let same_outside =
            t.rank() == rank && (0..rank).all(|d| d == axis || t.shape()[d] == first.shape()[d]);
        if !same_outside {
            return Err(Error::ShapeMismatch {
                op,
                lhs: first.shape().to_vec(),
                rhs: t.shape().to_vec(),
                hint: format!("tensor {i} differs from tensor 0 outside axis {axis}"),
            });
        }
        shape[axis] = shape[axis]
            .checked_add(t.shape()[axis])
            .ok_or_else(|| Error::invalid(op, "the concatenated size overflows"))?;
    }
    checked_numel(op, &shape)?;
    #[cfg(feature = "cuda")]
    if tensors.iter().any(|t| t.device().is_cuda()) {
        return crate::cuda::cat(op, tensors, axis, &shape);
    }
    let (s, _) = first.cpu(op)?;
    let out = crate::match_cpu_storage!(s, v => cat_typed(v, op, tensors, axis, &shape)?);
    Tensor::from_cpu_storage(out, &shape)
}

impl Tensor {
    /// `torch.cat`: joins tensors of one dtype and device along an existing `axis`; their shapes
    /// must agree everywhere else.
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1]).unwrap();
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0, 5.0, 6.0], &[2, 2]).unwrap();
    /// let c = Tensor::cat(&[&a, &b], 1).unwrap();
    /// assert_eq!(c.to_vec::<f32>().unwrap(), vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    /// ```
    pub fn cat(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
        cat_impl("cat", tensors, axis)
    }

    /// `torch.stack`: joins tensors of one shape, dtype and device along a new `axis`
    /// (`0..=rank`).
    pub fn stack(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
        let op = "stack";
        let first = check_list(op, tensors)?;
        if axis > first.rank() {
            return Err(Error::BadAxis {
                op,
                axis: axis as isize,
                rank: first.rank() + 1,
            });
        }
        for t in tensors {
            if t.shape() != first.shape() {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: first.shape().to_vec(),
                    rhs: t.shape().to_vec(),
                    hint: "stacked tensors must all have the same shape".into(),
                });
            }
        }
        let views: Vec<Tensor> = tensors
            .iter()
            .map(|t| t.unsqueeze(axis as isize))
            .collect::<Result<_>>()?;
        let refs: Vec<&Tensor> = views.iter().collect();
        cat_impl(op, &refs, axis)
    }

    /// Constant padding: `pads[d] = (before, after)` elements of `value` around dimension `d`,
    /// for every dimension (`pads.len() == rank`).
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1i64, 2], &[1, 2]).unwrap();
    /// let p = x.pad(&[(0, 1), (1, 0)], 9.0).unwrap();
    /// assert_eq!(p.to_vec::<i64>().unwrap(), vec![9, 1, 2, 9, 9, 9]);
    /// ```
    pub fn pad(&self, pads: &[(usize, usize)], value: f64) -> Result<Tensor> {
        let op = "pad";
        if pads.len() != self.rank() {
            return Err(Error::invalid(
                op,
                format!(
                    "{} (before, after) pairs given for a tensor of rank {} (shape {:?})",
                    pads.len(),
                    self.rank(),
                    self.shape()
                ),
            ));
        }
        let mut shape = Shape::with_capacity(pads.len());
        for (&s, &(before, after)) in self.shape().iter().zip(pads) {
            let size = s
                .checked_add(before)
                .and_then(|v| v.checked_add(after))
                .ok_or_else(|| Error::invalid(op, format!("padding {pads:?} is too large")))?;
            shape.push(size);
        }
        let n = checked_numel(op, &shape)?;
        let mut region = Layout::contiguous(&shape);
        for (d, (&s, &(before, _))) in self.shape().iter().zip(pads).enumerate() {
            region = region.slice(d, before, s, 1)?;
        }
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::write_region(op, self, &shape, value, &region);
        }
        let mut out = CpuStorage::full(self.dtype(), n, value);
        crate::match_cpu_storage!(&mut out, v => write_tensor(op, v, &region, self)?);
        Tensor::from_cpu_storage(out, &shape)
    }

    /// The inverse of a slice: a zero tensor of `shape` with `self` written at positions
    /// `start, start + step, ...` along `axis` (the gradient of `slice` / `narrow`). `self` must
    /// have `shape` outside `axis` and fit inside it along `axis`.
    pub fn slice_backward(
        &self,
        shape: &[usize],
        axis: usize,
        start: usize,
        step: usize,
    ) -> Result<Tensor> {
        let op = "slice_backward";
        let rank = shape.len();
        if axis >= rank {
            return Err(Error::BadAxis {
                op,
                axis: axis as isize,
                rank,
            });
        }
        if step == 0 {
            return Err(Error::invalid(op, "step must be positive"));
        }
        let len = self.shape().get(axis).copied().unwrap_or(0);
        let same_outside =
            self.rank() == rank && (0..rank).all(|d| d == axis || self.shape()[d] == shape[d]);
        let last = (len > 0).then(|| {
            (len - 1)
                .checked_mul(step)
                .and_then(|v| v.checked_add(start))
        });
        let fits = match last {
            None => true,
            Some(Some(last)) => last < shape[axis],
            Some(None) => false,
        };
        if !same_outside || !fits {
            return Err(Error::ShapeMismatch {
                op,
                lhs: self.shape().to_vec(),
                rhs: shape.to_vec(),
                hint: format!(
                    "a slice of {len} elements from {start} with step {step} along axis {axis} does not fit"
                ),
            });
        }
        let n = checked_numel(op, shape)?;
        let region = Layout::contiguous(shape).slice(axis, start, len, step)?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::write_region(op, self, shape, 0.0, &region);
        }
        let mut out = CpuStorage::zeros(self.dtype(), n);
        crate::match_cpu_storage!(&mut out, v => write_tensor(op, v, &region, self)?);
        Tensor::from_cpu_storage(out, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::Rng;
    use crate::DType;
    use proptest::prelude::*;

    fn vals(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec().unwrap()
    }
    fn seq(shape: &[usize]) -> Tensor {
        let n = numel(shape);
        Tensor::from_vec((0..n).map(|x| x as f64).collect::<Vec<_>>(), shape).unwrap()
    }

    /// Reference region copy: element by element over `positions()`.
    fn write_region_ref(dst: &mut [i32], dl: &Layout, src: &[i32], sl: &Layout) {
        for (d, s) in dl.positions().zip(sl.positions()) {
            dst[d] = src[s];
        }
    }

    proptest! {
        #[test]
        fn region_copy_matches_reference(
            dims in proptest::collection::vec(1usize..18, 1..4),
            rot in 0usize..4,
            expand_dim in 0usize..5,
            pad_seed in any::<u64>(),
        ) {
            let rank = dims.len();
            // Source: a permuted (and possibly expanded) view.
            let mut stored = dims.clone();
            stored.rotate_left(rot % rank);
            let e = expand_dim % rank;
            let mut src_dims = stored.clone();
            let expanded = expand_dim < rank;
            if expanded {
                src_dims[e] = 1;
            }
            let n: usize = src_dims.iter().product();
            let src: Vec<i32> = (1..=n as i32).collect();
            let mut sl = Layout::contiguous(&src_dims);
            if expanded {
                sl = sl.broadcast_to(&stored).unwrap();
            }
            let perm: Vec<usize> = (0..rank).map(|d| (d + rank - rot % rank) % rank).collect();
            let sl = sl.permute(&perm).unwrap();
            prop_assert_eq!(sl.shape(), dims.as_slice());
            // Destination: a padded, stepped region of a bigger contiguous buffer.
            let mut rng = Rng::new(pad_seed);
            let steps: Vec<usize> = (0..rank).map(|_| 1 + rng.below(2) as usize).collect();
            let starts: Vec<usize> = (0..rank).map(|_| rng.below(3) as usize).collect();
            let big: Vec<usize> = (0..rank)
                .map(|d| starts[d] + (dims[d] - 1) * steps[d] + 1 + rng.below(2) as usize)
                .collect();
            let mut dl = Layout::contiguous(&big);
            for d in 0..rank {
                dl = dl.slice(d, starts[d], dims[d], steps[d]).unwrap();
            }
            let mut fast = vec![0i32; numel(&big)];
            let mut slow = fast.clone();
            write_region(&mut fast, &dl, &src, &sl);
            write_region_ref(&mut slow, &dl, &src, &sl);
            prop_assert_eq!(fast, slow);
        }
    }

    #[test]
    fn large_region_copies_in_parallel() {
        for shape in [[1usize, 300, 150], [4, 100, 130], [600, 1, 90]] {
            let src = Tensor::from_vec((0..numel(&shape) as i32).collect::<Vec<_>>(), &shape)
                .unwrap()
                .permute(&[0, 2, 1])
                .unwrap()
                .copy()
                .unwrap()
                .permute(&[0, 2, 1])
                .unwrap();
            let p = src.pad(&[(1, 0), (2, 3), (0, 5)], -1.0).unwrap();
            let s: &[i32] = src.storage().cpu("t").unwrap().as_slice().unwrap();
            let mut dl = Layout::contiguous(p.shape());
            for (d, b) in [1usize, 2, 0].iter().enumerate() {
                dl = dl.slice(d, *b, shape[d], 1).unwrap();
            }
            let mut slow = vec![-1i32; p.numel()];
            write_region_ref(&mut slow, &dl, s, src.layout());
            assert_eq!(p.to_vec::<i32>().unwrap(), slow);
        }
    }

    #[test]
    fn cat_along_each_axis() {
        let a = seq(&[2, 3]);
        let b = seq(&[2, 1]);
        let c = Tensor::cat(&[&a, &b], 1).unwrap();
        assert_eq!(c.shape(), &[2, 4]);
        assert_eq!(vals(&c), vec![0., 1., 2., 0., 3., 4., 5., 1.]);
        let r = Tensor::cat(&[&a, &seq(&[1, 3])], 0).unwrap();
        assert_eq!(vals(&r), vec![0., 1., 2., 3., 4., 5., 0., 1., 2.]);
        // Non-contiguous pieces and empty pieces.
        let at = seq(&[3, 2]).t().unwrap();
        let e = Tensor::zeros(&[2, 0], DType::F64);
        let c2 = Tensor::cat(&[&e, &at, &b, &e], 1).unwrap();
        assert_eq!(vals(&c2), vec![0., 2., 4., 0., 1., 3., 5., 1.]);
        // Every dtype.
        for dt in DType::ALL {
            let x = Tensor::cat(&[&a.cast(dt).unwrap(), &b.cast(dt).unwrap()], 1).unwrap();
            assert_eq!(x.dtype(), dt);
            assert_eq!(vals(&x), vals(&c.cast(dt).unwrap()));
        }
        // The [64, x] hot path, small and large (parallel).
        for (x, y) in [(128usize, 64usize), (700, 300)] {
            let p = Tensor::randn(&[64, x], 0.0, 1.0, DType::F32, &mut Rng::new(1)).unwrap();
            let q = Tensor::randn(&[64, y], 0.0, 1.0, DType::F32, &mut Rng::new(2)).unwrap();
            let pq = Tensor::cat(&[&p, &q], 1).unwrap();
            assert_eq!(pq.shape(), &[64, x + y]);
            assert_eq!(vals(&pq.narrow(1, 0, x).unwrap()), vals(&p));
            assert_eq!(vals(&pq.narrow(1, x, y).unwrap()), vals(&q));
            let qt = q.t().unwrap().copy().unwrap().t().unwrap();
            assert_eq!(vals(&Tensor::cat(&[&p, &qt], 1).unwrap()), vals(&pq));
        }
    }

    #[test]
    fn cat_errors() {
        let a = seq(&[2, 3]);
        assert!(Tensor::cat(&[], 0).is_err());
        assert!(Tensor::cat(&[&a, &seq(&[3, 3])], 1).is_err());
        assert!(Tensor::cat(&[&a, &seq(&[6])], 0).is_err());
        assert!(Tensor::cat(&[&a, &a], 2).is_err());
        assert!(Tensor::cat(&[&a, &a.cast(DType::F32).unwrap()], 0).is_err());
        assert!(Tensor::cat(&[&Tensor::scalar(1.0f32)], 0).is_err());
        let e = Tensor::cat(&[&a, &seq(&[3, 3])], 1).unwrap_err();
        assert!(e.to_string().contains("tensor 1"), "{e}");
    }

    #[test]
    fn stack_new_axis() {
        let a = seq(&[2, 2]);
        let b = seq(&[2, 2]).t().unwrap();
        let s0 = Tensor::stack(&[&a, &b], 0).unwrap();
        assert_eq!(s0.shape(), &[2, 2, 2]);
        assert_eq!(vals(&s0), vec![0., 1., 2., 3., 0., 2., 1., 3.]);
        let s2 = Tensor::stack(&[&a, &b], 2).unwrap();
        assert_eq!(s2.shape(), &[2, 2, 2]);
        assert_eq!(vals(&s2), vec![0., 0., 1., 2., 2., 1., 3., 3.]);
        let sc = Tensor::stack(&[&Tensor::scalar(1i64), &Tensor::scalar(2i64)], 0).unwrap();
        assert_eq!(sc.to_vec::<i64>().unwrap(), vec![1, 2]);
        assert!(Tensor::stack(&[&a, &a], 3).is_err());
        assert!(Tensor::stack(&[&a, &seq(&[2, 3])], 0).is_err());
        assert!(Tensor::stack(&[], 0).is_err());
    }

    #[test]
    fn pad_constant() {
        let x = seq(&[2, 2]);
        let p = x.pad(&[(1, 0), (0, 2)], -1.0).unwrap();
        assert_eq!(p.shape(), &[3, 4]);
        assert_eq!(
            vals(&p),
            vec![-1., -1., -1., -1., 0., 1., -1., -1., 2., 3., -1., -1.]
        );
        let pt = x.t().unwrap().pad(&[(0, 0), (1, 1)], 0.0).unwrap();
        assert_eq!(vals(&pt), vec![0., 0., 2., 0., 0., 1., 3., 0.]);
        let pb = Tensor::from_vec(vec![true], &[1])
            .unwrap()
            .pad(&[(1, 1)], 0.0)
            .unwrap();
        assert_eq!(pb.to_vec::<bool>().unwrap(), vec![false, true, false]);
        assert_eq!(
            vals(&Tensor::scalar(5.0f64).pad(&[], 0.0).unwrap()),
            vec![5.0]
        );
        assert!(x.pad(&[(1, 1)], 0.0).is_err());
        assert!(x.pad(&[(usize::MAX, 1), (0, 0)], 0.0).is_err());
        assert!(x
            .pad(&[(usize::MAX / 4, 0), (usize::MAX / 4, 0)], 0.0)
            .is_err());
    }

    #[test]
    fn slice_backward_inverts_slice() {
        let g = seq(&[2, 2]);
        let back = g.slice_backward(&[2, 5], 1, 1, 3).unwrap();
        assert_eq!(vals(&back), vec![0., 0., 0., 0., 1., 0., 2., 0., 0., 3.]);
        // slice(x) then slice_backward puts the values back where they came from.
        let x = seq(&[3, 7, 2]);
        let s = x.slice(1, 2, 7, 2).unwrap();
        let b = s.slice_backward(x.shape(), 1, 2, 2).unwrap();
        let xs = vals(&x);
        let bs = vals(&b);
        for (k, (&xv, &bv)) in xs.iter().zip(&bs).enumerate() {
            let j = (k / 2) % 7;
            let kept = j >= 2 && (j - 2) % 2 == 0;
            assert_eq!(bv, if kept { xv } else { 0.0 });
        }
        let e = Tensor::zeros(&[2, 0], DType::I32)
            .slice_backward(&[2, 4], 1, 9, 1)
            .unwrap();
        assert_eq!(e.to_vec::<i32>().unwrap(), vec![0; 8]);
        assert!(g.slice_backward(&[2, 5], 1, 3, 2).is_err());
        assert!(g.slice_backward(&[3, 5], 1, 0, 1).is_err());
        assert!(g.slice_backward(&[2, 5], 2, 0, 1).is_err());
        assert!(g.slice_backward(&[2, 5], 1, 0, 0).is_err());
        assert!(g.slice_backward(&[2, 5], 1, usize::MAX, 2).is_err());
        assert!(g.slice_backward(&[2, usize::MAX], 0, 0, 1).is_err());
    }
}
