//! Op sequences that both modes run as one pass over memory, with the same numbers as the
//! ops one after another. Graph mode reaches them through its lowering (which recognizes the
//! sequence in a plan), eager mode through [`crate::Emit`] methods that gradient rules call
//! (which run the sequence's ops when the pass does not apply, e.g. while recording a tape).

use crate::eval::eval;
use crate::op::Op;
use tandem_tensor::cpu::binary::{zip_map, zip_map_into};
use tandem_tensor::cpu::matmul::{gemm, GemmScalar, MatMut, MatRef, Threads};
use tandem_tensor::cpu::simd::dispatch;
use tandem_tensor::{BinaryOp, DType, Element, Result, Tensor, UnaryOp};

/// `g * cast(x > threshold)` (or `cast(x > threshold) * g` when `mask_first`, the operand
/// order of the product, kept for exactness) with the mask in `g`'s dtype: relu's gradient.
///
/// Same-shape contiguous f32/f64 host tensors of one dtype run one pass (`g * 1` or `g * 0`
/// per element, exactly the unfused numbers, NaN and signed zeros included), written into
/// `out` when it is a contiguous tensor of the result's shape and dtype (a buffer kept by graph
/// mode's memory planning). Anything else runs the comparison, cast and product.
pub fn mask_mul(
    g: &Tensor,
    x: &Tensor,
    threshold: f64,
    mask_first: bool,
    out: Option<Tensor>,
) -> Result<Tensor> {
    let fast = g.shape() == x.shape()
        && g.dtype() == x.dtype()
        && g.device().is_cpu()
        && x.device().is_cpu();
    match g.dtype() {
        DType::F32 if fast => mask_mul_typed::<f32>(g, x, threshold, mask_first, out),
        DType::F64 if fast => mask_mul_typed::<f64>(g, x, threshold, mask_first, out),
        _ => mask_mul_ops(g, x, threshold, mask_first),
    }
}

/// [`mask_mul`] as its three ops.
fn mask_mul_ops(g: &Tensor, x: &Tensor, threshold: f64, mask_first: bool) -> Result<Tensor> {
    let gt = eval(
        &Op::Scalar {
            op: BinaryOp::Gt,
            value: threshold,
            scalar_on_left: false,
        },
        &[x],
    )?;
    let mask = eval(&Op::Cast(g.dtype()), &[&gt])?;
    let ins: [&Tensor; 2] = if mask_first { [&mask, g] } else { [g, &mask] };
    eval(&Op::Binary(BinaryOp::Mul), &ins)
}

fn mask_mul_typed<T: Element + PartialOrd + std::ops::Mul<Output = T> + Send + Sync>(
    g: &Tensor,
    x: &Tensor,
    threshold: f64,
    first: bool,
    out: Option<Tensor>,
) -> Result<Tensor> {
    let (gv, xv) = match (g.as_slice::<T>(), x.as_slice::<T>()) {
        (Some(a), Some(b)) if a.len() == b.len() => (a, b),
        _ => return mask_mul_ops(g, x, threshold, first),
    };
    let c = T::from_f64(threshold);
    let (one, zero) = (T::from_f64(1.0), T::from_f64(0.0));
    let f = move |gi: T, xi: T| {
        let m = if xi > c { one } else { zero };
        if first {
            m * gi
        } else {
            gi * m
        }
    };
    match out {
        Some(mut t) if t.shape() == g.shape() && t.dtype() == T::DTYPE && t.is_contiguous() => {
            zip_map_into(t.make_mut::<T>()?, gv, xv, f);
            Ok(t)
        }
        _ => Tensor::from_vec(zip_map(gv, xv, f), g.shape()),
    }
}

/// The `[row, col]` strides of a 2-D tensor.
fn strides2(t: &Tensor) -> [usize; 2] {
    match t.strides() {
        &[a, b] => [a, b],
        _ => [0, 0],
    }
}

/// `x [m, k] @ w [k, n]` for 2-D host tensors of dtype `T` whose shapes the caller checked,
/// written into `out` when it is a contiguous `[m, n]` tensor of `T` (a buffer kept by graph
/// mode's memory planning): one `gemm` call with the operands' strides as they are, the call
/// [`Tensor::matmul`] makes for two matrices (so the same numbers). Without such a buffer it
/// is [`Tensor::matmul`] itself, whose fresh output is not cleared before the product writes
/// it. `op` names the caller in errors.
pub fn product_into<T: GemmScalar>(
    x: &Tensor,
    w: &Tensor,
    [m, k, n]: [usize; 3],
    out: Option<Tensor>,
    op: &'static str,
) -> Result<Tensor> {
    let mut result = match out {
        Some(t) if t.shape() == [m, n] && t.dtype() == T::DTYPE && t.is_contiguous() => t,
        _ => return x.matmul(w),
    };
    let (xs, xl) = x.cpu(op)?;
    let (ws, wl) = w.cpu(op)?;
    let lhs = MatRef::new(xs.as_slice::<T>()?, xl.offset(), [m, k], strides2(x))?;
    let rhs = MatRef::new(ws.as_slice::<T>()?, wl.offset(), [k, n], strides2(w))?;
    gemm(
        MatMut::row_major(result.make_mut::<T>()?, m, n)?,
        lhs,
        rhs,
        false,
        Threads::Auto,
    )?;
    Ok(result)
}

/// `x @ w + b`, then `relu` when `relu` is set: a linear layer (`w` is the transposed
/// weight, typically a view) and its activation.
///
/// For 2-D `x [M, K]`, `w [K, N]` and `b [N]`, all f32 or all f64 on the host, this is one
/// product into the output, then the bias (and relu) in one pass over each row while it is
/// still in cache, written into `out` when it is a contiguous `[M, N]` tensor of that dtype;
/// the numbers are those of the ops one after another (the same product, then the same
/// additions). Anything else (other ranks, dtypes or devices, shapes that do not chain) runs
/// the ops, which also word the errors.
pub fn matmul_bias(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    relu: bool,
    out: Option<Tensor>,
) -> Result<Tensor> {
    let host = x.device().is_cpu() && w.device().is_cpu() && b.device().is_cpu();
    let same = x.dtype() == w.dtype() && x.dtype() == b.dtype();
    if let (&[m, k], &[k2, n], &[nb], true, true) = (x.shape(), w.shape(), b.shape(), host, same) {
        if k == k2 && nb == n {
            match x.dtype() {
                DType::F32 => return matmul_bias_typed::<f32>(x, w, b, [m, k, n], relu, out),
                DType::F64 => return matmul_bias_typed::<f64>(x, w, b, [m, k, n], relu, out),
                _ => {}
            }
        }
    }
    matmul_bias_ops(x, w, b, relu)
}

/// [`matmul_bias`] as its ops.
fn matmul_bias_ops(x: &Tensor, w: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    let y = x.matmul(w)?.binary(BinaryOp::Add, b)?;
    if relu {
        y.unary(UnaryOp::Relu)
    } else {
        Ok(y)
    }
}

fn matmul_bias_typed<T: GemmScalar + PartialOrd>(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    [m, k, n]: [usize; 3],
    relu: bool,
    out: Option<Tensor>,
) -> Result<Tensor> {
    let b = b.contiguous()?;
    let Some(bias) = b.as_slice::<T>() else {
        return matmul_bias_ops(x, w, &b, relu);
    };
    let mut result = product_into::<T>(x, w, [m, k, n], out, "matmul_bias")?;
    let dst = result.make_mut::<T>()?;
    if n > 0 {
        dispatch(
            #[inline(always)]
            || {
                for row in dst.chunks_exact_mut(n) {
                    if relu {
                        // Relu as the op computes it: negative values become zero, NaN stays.
                        for (o, &c) in row.iter_mut().zip(bias) {
                            let v = *o + c;
                            *o = if v < T::ZERO { T::ZERO } else { v };
                        }
                    } else {
                        for (o, &c) in row.iter_mut().zip(bias) {
                            *o = *o + c;
                        }
                    }
                }
            },
        );
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_equals_the_three_ops() {
        let g = Tensor::from_vec(vec![1.5f32, -2.0, f32::NAN, 4.0, -0.0, 7.0], &[2, 3]).unwrap();
        let x = Tensor::from_vec(vec![0.5f32, -1.0, 2.0, 0.0, f32::NAN, 1.0], &[2, 3]).unwrap();
        for first in [false, true] {
            let fused = mask_mul(&g, &x, 0.0, first, None).unwrap();
            let ops = mask_mul_ops(&g, &x, 0.0, first).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(bits(&fused), bits(&ops));
        }
        // A transposed view or operands of two dtypes take the ops, with the same values.
        let plain = mask_mul(&g, &x, 0.0, false, None)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let (gt, xt) = (g.t().unwrap(), x.t().unwrap());
        let viewed = mask_mul(&gt, &xt, 0.0, false, None).unwrap();
        assert_eq!(viewed.shape(), &[3, 2]);
        let back = viewed
            .t()
            .unwrap()
            .contiguous()
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let x64 = x.cast(DType::F64).unwrap();
        let mixed = mask_mul(&g, &x64, 0.0, false, None).unwrap();
        assert_eq!(mixed.dtype(), DType::F32);
        let mixed = mixed.to_vec::<f32>().unwrap();
        for got in [back, mixed] {
            assert_eq!(got.len(), plain.len());
            for (a, b) in got.iter().zip(&plain) {
                assert!(
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                    "{a} {b}"
                );
            }
        }
        // Memory planning's buffer is written and returned.
        let out = Tensor::zeros(&[2, 3], DType::F32);
        let got = mask_mul(&g, &x, 0.0, false, Some(out)).unwrap();
        assert_eq!(got.to_vec::<f32>().unwrap()[0], 1.5);
    }

    fn bits(t: &Tensor) -> Vec<u64> {
        t.cast(DType::F64)
            .unwrap()
            .to_vec::<f64>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    #[test]
    fn matmul_bias_equals_the_ops() {
        // A linear layer: x [3, 5] @ W^T (a transposed view of W [4, 5]) + b [4], values that
        // make some outputs negative, one NaN input row.
        let xs: Vec<f32> = (0..15).map(|i| (i as f32 - 7.0) / 3.0).collect();
        let mut xs_nan = xs.clone();
        xs_nan[0] = f32::NAN;
        let w = Tensor::from_vec(
            (0..20).map(|i| (i % 7) as f32 / 5.0 - 0.6).collect(),
            &[4, 5],
        )
        .unwrap();
        let b = Tensor::from_vec(vec![0.25f32, -1.5, 0.0, 3.0], &[4]).unwrap();
        let wt = w.t().unwrap();
        for data in [xs, xs_nan] {
            let x = Tensor::from_vec(data, &[3, 5]).unwrap();
            for relu in [false, true] {
                let fused = matmul_bias(&x, &wt, &b, relu, None).unwrap();
                let ops = matmul_bias_ops(&x, &wt, &b, relu).unwrap();
                assert_eq!(fused.shape(), &[3, 4]);
                assert_eq!(bits(&fused), bits(&ops), "relu {relu}");
                let x64 = x.cast(DType::F64).unwrap();
                let (wt64, b64) = (wt.cast(DType::F64).unwrap(), b.cast(DType::F64).unwrap());
                let fused = matmul_bias(&x64, &wt64, &b64, relu, None).unwrap();
                let ops = matmul_bias_ops(&x64, &wt64, &b64, relu).unwrap();
                assert_eq!(bits(&fused), bits(&ops), "f64, relu {relu}");
            }
        }
        // Memory planning's buffer is written and returned; a buffer of another shape is not.
        let x = Tensor::from_vec(vec![1.0f32; 15], &[3, 5]).unwrap();
        let buf = Tensor::full(&[3, 4], 9.0, DType::F32);
        let ptr = buf.as_slice::<f32>().unwrap().as_ptr();
        let got = matmul_bias(&x, &wt, &b, false, Some(buf)).unwrap();
        assert_eq!(got.as_slice::<f32>().unwrap().as_ptr(), ptr);
        assert_eq!(
            bits(&got),
            bits(&matmul_bias_ops(&x, &wt, &b, false).unwrap())
        );
        let other = Tensor::zeros(&[4, 3], DType::F32);
        let got = matmul_bias(&x, &wt, &b, false, Some(other)).unwrap();
        assert_eq!(got.shape(), &[3, 4]);
    }

    #[test]
    fn matmul_bias_runs_the_ops_for_other_inputs() {
        let w = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[3, 2]).unwrap();
        let b = Tensor::from_vec(vec![1.0f32, -1.0], &[2]).unwrap();
        // A batch of matrices, and half-precision operands.
        let x3 = Tensor::from_vec((0..12).map(|i| i as f32 - 6.0).collect(), &[2, 2, 3]).unwrap();
        let got = matmul_bias(&x3, &w, &b, true, None).unwrap();
        assert_eq!(got.shape(), &[2, 2, 2]);
        assert_eq!(
            bits(&got),
            bits(&matmul_bias_ops(&x3, &w, &b, true).unwrap())
        );
        let h = |t: &Tensor| t.cast(DType::F16).unwrap();
        let x2 = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
        let got = matmul_bias(&h(&x2), &h(&w), &h(&b), false, None).unwrap();
        assert_eq!(got.dtype(), DType::F16);
        assert_eq!(
            bits(&got),
            bits(&matmul_bias_ops(&h(&x2), &h(&w), &h(&b), false).unwrap())
        );
        // Shapes that do not chain get the matmul's error; a bias of the wrong length the add's.
        let bad = Tensor::zeros(&[2, 4], DType::F32);
        let err = matmul_bias(&bad, &w, &b, false, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("matmul"), "{err}");
        let long_b = Tensor::zeros(&[3], DType::F32);
        let err = matmul_bias(&x2, &w, &long_b, false, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("add"), "{err}");
        // Mixed dtypes are refused, not converted.
        let err = matmul_bias(&x2, &w.cast(DType::F64).unwrap(), &b, false, None);
        assert!(err.is_err());
    }
}
