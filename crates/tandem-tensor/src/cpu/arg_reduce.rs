//! CPU kernels: arg-reductions (argmax, argmin along one axis). Over a contiguous axis the
//! best value is found with vector lanes and then its first position; over a strided axis
//! whole runs of outputs are updated row by row.

use super::strided::{run_parallel, StridedPlan};
use crate::cpu::simd::dispatch;
use crate::layout::{Layout, Shape, Strides};
use crate::{ArgReduceOp, CpuStorage, Element};

/// True if `x` should replace `best` (strictly better, or the first NaN).
#[inline(always)]
fn beats<T: PartialOrd>(op: ArgReduceOp, x: T, best: T) -> bool {
    #[allow(clippy::eq_op)]
    let first_nan = x != x && best == best;
    match op {
        ArgReduceOp::ArgMax => x > best || first_nan,
        ArgReduceOp::ArgMin => x < best || first_nan,
    }
}

/// Index of the best element of a non-empty contiguous slice: the best value with vector
/// lanes, then its first position.
#[inline(always)]
fn arg_best_contiguous<T: Element>(op: ArgReduceOp, xs: &[T]) -> usize {
    const ARG_LANES: usize = 32;
    let mut best = xs[0];
    let mut chunks = xs.chunks_exact(ARG_LANES);
    if let Some(first) = chunks.next() {
        let mut acc = [xs[0]; ARG_LANES];
        acc.copy_from_slice(first);
        for c in &mut chunks {
            for j in 0..ARG_LANES {
                if beats(op, c[j], acc[j]) {
                    acc[j] = c[j];
                }
            }
        }
        for &x in &acc {
            if beats(op, x, best) {
                best = x;
            }
        }
    }
    for &x in chunks.remainder() {
        if beats(op, x, best) {
            best = x;
        }
    }
    #[allow(clippy::eq_op)]
    let found = if best != best {
        xs.iter().position(|&x| x != x)
    } else {
        xs.iter().position(|&x| x == best)
    };
    found.unwrap_or(0)
}

fn arg_reduce_typed<T: Element>(
    op: ArgReduceOp,
    src: &[T],
    layout: &Layout,
    axis: usize,
) -> Vec<i64> {
    let n = layout.shape()[axis];
    let axis_stride = layout.strides()[axis];
    let mut shape = Shape::from_slice(layout.shape());
    let mut strides = Strides::from_slice(layout.strides());
    shape.remove(axis);
    strides.remove(axis);
    let rest = Layout::from_parts(shape.clone(), strides, layout.offset());
    let plan = StridedPlan::new(&shape, [&rest]);
    let [inner_stride] = plan.inner_strides();
    let mut out = vec![0i64; plan.numel()];
    run_parallel(&mut out, |chunk, start| {
        let mut best: Vec<T> = Vec::new();
        dispatch(
            #[inline(always)]
            || {
                plan.for_each_run(
                    start,
                    start + chunk.len(),
                    #[inline(always)]
                    |o, len, [p]| {
                        let idx = &mut chunk[o - start..o - start + len];
                        if inner_stride == 1 && len > 1 {
                            // Row by row along the axis, over a contiguous run of outputs.
                            best.clear();
                            best.extend_from_slice(&src[p..p + len]);
                            for k in 1..n {
                                let row = &src[p + k * axis_stride..p + k * axis_stride + len];
                                for ((b, i), &x) in best.iter_mut().zip(idx.iter_mut()).zip(row) {
                                    if beats(op, x, *b) {
                                        *b = x;
                                        *i = k as i64;
                                    }
                                }
                            }
                        } else if axis_stride == 1 {
                            for (j, i) in idx.iter_mut().enumerate() {
                                let q = p + j * inner_stride;
                                *i = arg_best_contiguous(op, &src[q..q + n]) as i64;
                            }
                        } else {
                            for (j, i) in idx.iter_mut().enumerate() {
                                let q = p + j * inner_stride;
                                let mut b = src[q];
                                for k in 1..n {
                                    let x = src[q + k * axis_stride];
                                    if beats(op, x, b) {
                                        b = x;
                                        *i = k as i64;
                                    }
                                }
                            }
                        }
                    },
                )
            },
        )
    });
    out
}

/// Index of the max/min along `axis` (which must be non-empty) of the view `layout`: first
/// index on ties; a NaN beats everything (like PyTorch). The result is contiguous over the
/// other dimensions.
pub(crate) fn arg_reduce(
    op: ArgReduceOp,
    src: &CpuStorage,
    layout: &Layout,
    axis: usize,
) -> Vec<i64> {
    crate::match_cpu_storage!(src, v => arg_reduce_typed(op, v, layout, axis))
}

#[cfg(test)]
mod tests {
    use crate::cpu::strided::testing::*;
    use crate::{ArgReduceOp, BinaryOp, DType, Tensor};
    use proptest::prelude::*;

    /// Row-major linear index of the output element that input element `i` reduces into.
    fn out_index(shape: &[usize], axis: usize, mut i: usize) -> usize {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        (0..shape.len())
            .filter(|&d| d != axis)
            .fold(0, |o, d| o * shape[d] + idx[d])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arg_reductions_match_reference(
            shape in arb_shape(), view in arb_view(), axis in 0usize..4, seed in any::<u64>(), keepdim in any::<bool>()
        ) {
            prop_assume!(!shape.is_empty());
            let axis = axis % shape.len();
            let f = make(&shape, view, DType::F32, seed, -1.0, 1.0);
            let holes = make(&shape, View::Contiguous, DType::F32, seed ^ 1, 0.0, 1.0).scalar_op(BinaryOp::Gt, 0.95, false).unwrap();
            let with_nan = Tensor::where_cond(&holes, &Tensor::scalar(f32::NAN), &f).unwrap();
            let ties = make(&shape, view, DType::I32, seed, -2.0, 2.0);
            let bools = make(&shape, view, DType::Bool, seed, -1.0, 1.0);
            for t in [&f, &with_nan, &ties, &bools, &f.cast(DType::BF16).unwrap()] {
                for op in [ArgReduceOp::ArgMax, ArgReduceOp::ArgMin] {
                    let got = t.arg_reduce(op, axis, keepdim).unwrap();
                    prop_assert_eq!(got.dtype(), DType::I64);
                    let mut want_shape = shape.clone();
                    if keepdim { want_shape[axis] = 1 } else { want_shape.remove(axis); }
                    prop_assert_eq!(got.shape(), want_shape.as_slice());
                    // Reference: scan each output's elements in axis order.
                                        let n_out: usize = want_shape.iter().product();
                    let mut best = vec![(f64::NAN, -1i64); n_out];
                    let mut k_of = vec![0i64; n_out];
                    for (i, x) in t.to_f64_vec().unwrap().into_iter().enumerate() {
                        let o = out_index(&shape, axis, i);
                        let (b, _) = best[o];
                        let better = best[o].1 < 0
                            || (!b.is_nan() && (x.is_nan()
                                || (op == ArgReduceOp::ArgMax && x > b)
                                || (op == ArgReduceOp::ArgMin && x < b)));
                        if better {
                            best[o] = (x, k_of[o]);
                        }
                        k_of[o] += 1;
                    }
                    let want: Vec<i64> = best.into_iter().map(|(_, k)| k).collect();
                    prop_assert_eq!(got.to_vec::<i64>().unwrap(), want);
                }
            }
        }
    }

    #[test]
    fn large_rows_match_reference() {
        let big = make(&[40000, 3], View::Contiguous, DType::F32, 9, -1.0, 1.0);
        let idx = big
            .arg_reduce(ArgReduceOp::ArgMax, 1, false)
            .unwrap()
            .to_vec::<i64>()
            .unwrap();
        let v = big.to_vec::<f32>().unwrap();
        for (r, &k) in idx.iter().enumerate() {
            let row = &v[r * 3..r * 3 + 3];
            assert!(row.iter().all(|&x| x <= row[k as usize]));
        }
    }

    #[test]
    fn errors_and_zero_d() {
        let x = Tensor::zeros(&[2, 3], DType::F32);
        assert!(x.arg_reduce(ArgReduceOp::ArgMax, 2, false).is_err());
        assert!(Tensor::zeros(&[0, 3], DType::F32)
            .arg_reduce(ArgReduceOp::ArgMin, 0, false)
            .is_err());
        let s = Tensor::scalar(3.0f32);
        assert_eq!(
            s.arg_reduce(ArgReduceOp::ArgMax, 0, false)
                .unwrap()
                .item()
                .unwrap(),
            0.0
        );
        assert!(s.arg_reduce(ArgReduceOp::ArgMax, 1, false).is_err());
    }
}
