//! Op sequences that both modes run as one pass over memory, with the same numbers as the
//! ops one after another. Graph mode reaches them through its lowering (which recognizes the
//! sequence in a plan), eager mode through [`crate::Emit`] methods that gradient rules call
//! (which run the sequence's ops when the pass does not apply, e.g. while recording a tape).

use crate::eval::eval;
use crate::op::Op;
use tandem_tensor::cpu::binary::{zip_map, zip_map_into};
use tandem_tensor::{BinaryOp, DType, Element, Result, Tensor};

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
}
