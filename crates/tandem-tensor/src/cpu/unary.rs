//! CPU kernels: elementwise functions of one tensor (float math through the vectorizable
//! approximations of [`crate::cpu::math`], integer and bool ops), over any layout.

use super::strided::{output_vec, run_parallel, stage_f32, HalfFloat, StridedPlan, STAGE};
use crate::cpu::math;
use crate::cpu::simd::dispatch;
use crate::layout::Layout;
use crate::{CpuStorage, Device, Element, Error, Result, UnaryOp};

/// `out[i] = f(x[i])` over any layout, vectorized for the best instruction set, in parallel
/// for large outputs.
pub(crate) fn map1<T: Copy + Sync, O: Element>(
    src: &[T],
    layout: &Layout,
    f: impl Fn(T) -> O + Sync + Copy,
) -> Vec<O> {
    if layout.is_contiguous() {
        let (o, n) = (layout.offset(), layout.numel());
        if let Some(src) = src.get(o..o + n) {
            return map1_flat(src, f);
        }
    }
    let plan = StridedPlan::new(layout.shape(), [layout]);
    let mut out = output_vec::<O>(plan.numel());
    let [stride] = plan.inner_strides();
    run_parallel(&mut out, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                plan.for_each_run(
                    start,
                    start + chunk.len(),
                    #[inline(always)]
                    |o, len, [p]| {
                        let dst = &mut chunk[o - start..o - start + len];
                        if stride == 1 {
                            for (d, &x) in dst.iter_mut().zip(&src[p..p + len]) {
                                *d = f(x);
                            }
                        } else {
                            for (i, d) in dst.iter_mut().enumerate() {
                                *d = f(src[p + i * stride]);
                            }
                        }
                    },
                )
            },
        )
    });
    out
}

/// [`map1`] over a contiguous slice: one flat loop, no [`StridedPlan`].
fn map1_flat<T: Copy + Sync, O: Element>(src: &[T], f: impl Fn(T) -> O + Sync + Copy) -> Vec<O> {
    let mut out = output_vec::<O>(src.len());
    run_parallel(&mut out, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                let end = start + chunk.len();
                for (d, &x) in chunk.iter_mut().zip(&src[start..end]) {
                    *d = f(x);
                }
            },
        )
    });
    out
}

/// [`map1`] for half-precision data computed in `f32`.
pub(crate) fn map1_half<H: HalfFloat>(
    src: &[H],
    layout: &Layout,
    f: impl Fn(f32) -> f32 + Sync + Copy,
) -> Vec<H> {
    let plan = StridedPlan::new(layout.shape(), [layout]);
    let mut out = output_vec::<H>(plan.numel());
    let [stride] = plan.inner_strides();
    run_parallel(&mut out, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                let mut x = [0f32; STAGE];
                let mut y = [0f32; STAGE];
                plan.for_each_run(
                    start,
                    start + chunk.len(),
                    #[inline(always)]
                    |o, len, [p]| {
                        let mut done = 0;
                        while done < len {
                            let n = (len - done).min(STAGE);
                            stage_f32(src, p + done * stride, stride, &mut x[..n]);
                            for (d, &v) in y[..n].iter_mut().zip(&x[..n]) {
                                *d = f(v);
                            }
                            let at = o - start + done;
                            H::from_f32_slice(&y[..n], &mut chunk[at..at + n]);
                            done += n;
                        }
                    },
                )
            },
        )
    });
    out
}

/// Float types with the math the unary kernels need. `f32` uses the vectorizable
/// approximations of [`crate::cpu::math`]; `f64` uses the standard library.
pub(crate) trait UnaryFloat:
    Element + std::ops::Neg<Output = Self> + std::ops::Mul<Output = Self> + std::ops::Div<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn abs(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sqrt(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tanh(self) -> Self;
    fn sigmoid(self) -> Self;
    fn erf(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn round(self) -> Self;
    fn log1p(self) -> Self;
    fn expm1(self) -> Self;
}

impl UnaryFloat for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
    #[inline(always)]
    fn abs(self) -> f32 {
        f32::abs(self)
    }
    #[inline(always)]
    fn exp(self) -> f32 {
        math::exp_f32(self)
    }
    #[inline(always)]
    fn ln(self) -> f32 {
        math::ln_f32(self)
    }
    #[inline(always)]
    fn sqrt(self) -> f32 {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn sin(self) -> f32 {
        f32::sin(self)
    }
    #[inline(always)]
    fn cos(self) -> f32 {
        f32::cos(self)
    }
    #[inline(always)]
    fn tanh(self) -> f32 {
        math::tanh_f32(self)
    }
    #[inline(always)]
    fn sigmoid(self) -> f32 {
        math::sigmoid_f32(self)
    }
    #[inline(always)]
    fn erf(self) -> f32 {
        math::erf_f32(self)
    }
    #[inline(always)]
    fn floor(self) -> f32 {
        f32::floor(self)
    }
    #[inline(always)]
    fn ceil(self) -> f32 {
        f32::ceil(self)
    }
    #[inline(always)]
    fn round(self) -> f32 {
        f32::round_ties_even(self)
    }
    #[inline(always)]
    fn log1p(self) -> f32 {
        math::log1p_f32(self)
    }
    #[inline(always)]
    fn expm1(self) -> f32 {
        math::expm1_f32(self)
    }
}

impl UnaryFloat for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    #[inline(always)]
    fn abs(self) -> f64 {
        f64::abs(self)
    }
    #[inline(always)]
    fn exp(self) -> f64 {
        f64::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> f64 {
        f64::ln(self)
    }
    #[inline(always)]
    fn sqrt(self) -> f64 {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn sin(self) -> f64 {
        f64::sin(self)
    }
    #[inline(always)]
    fn cos(self) -> f64 {
        f64::cos(self)
    }
    #[inline(always)]
    fn tanh(self) -> f64 {
        f64::tanh(self)
    }
    #[inline(always)]
    fn sigmoid(self) -> f64 {
        // e^{-|x|} never overflows; for x < 0 the result is e / (1 + e).
        let e = (-self.abs()).exp();
        if self >= 0.0 {
            1.0 / (1.0 + e)
        } else if self < 0.0 {
            e / (1.0 + e)
        } else {
            self
        }
    }
    #[inline(always)]
    fn erf(self) -> f64 {
        math::erf_f64(self)
    }
    #[inline(always)]
    fn floor(self) -> f64 {
        f64::floor(self)
    }
    #[inline(always)]
    fn ceil(self) -> f64 {
        f64::ceil(self)
    }
    #[inline(always)]
    fn round(self) -> f64 {
        f64::round_ties_even(self)
    }
    #[inline(always)]
    fn log1p(self) -> f64 {
        f64::ln_1p(self)
    }
    #[inline(always)]
    fn expm1(self) -> f64 {
        f64::exp_m1(self)
    }
}

/// Applies an elementwise function over some source; lets one `match` over the ops serve both
/// native float data and half-precision data computed in `f32`.
trait Mapper<T> {
    type Out;
    fn map(self, f: impl Fn(T) -> T + Sync + Copy) -> Vec<Self::Out>;
}

struct Direct<'a, T> {
    src: &'a [T],
    layout: &'a Layout,
}

impl<T: Element> Mapper<T> for Direct<'_, T> {
    type Out = T;
    fn map(self, f: impl Fn(T) -> T + Sync + Copy) -> Vec<T> {
        map1(self.src, self.layout, f)
    }
}

struct Staged<'a, H> {
    src: &'a [H],
    layout: &'a Layout,
}

impl<H: HalfFloat> Mapper<f32> for Staged<'_, H> {
    type Out = H;
    fn map(self, f: impl Fn(f32) -> f32 + Sync + Copy) -> Vec<H> {
        map1_half(self.src, self.layout, f)
    }
}

fn float_unary<T: UnaryFloat, M: Mapper<T>>(op: UnaryOp, m: M) -> Option<Vec<M::Out>> {
    Some(match op {
        UnaryOp::Neg => m.map(|x: T| -x),
        UnaryOp::Abs => m.map(|x: T| x.abs()),
        UnaryOp::Exp => m.map(|x: T| x.exp()),
        UnaryOp::Log => m.map(|x: T| x.ln()),
        UnaryOp::Sqrt => m.map(|x: T| x.sqrt()),
        UnaryOp::Rsqrt => m.map(|x: T| T::ONE / x.sqrt()),
        UnaryOp::Recip => m.map(|x: T| T::ONE / x),
        UnaryOp::Sin => m.map(|x: T| x.sin()),
        UnaryOp::Cos => m.map(|x: T| x.cos()),
        UnaryOp::Tanh => m.map(|x: T| x.tanh()),
        UnaryOp::Sigmoid => m.map(|x: T| x.sigmoid()),
        // NaN stays NaN (a comparison with NaN is false).
        UnaryOp::Relu => m.map(|x: T| if x < T::ZERO { T::ZERO } else { x }),
        UnaryOp::Erf => m.map(|x: T| x.erf()),
        // Zero keeps its sign and NaN stays NaN, like PyTorch.
        UnaryOp::Sign => m.map(|x: T| {
            if x > T::ZERO {
                T::ONE
            } else if x < T::ZERO {
                -T::ONE
            } else {
                x
            }
        }),
        UnaryOp::Floor => m.map(|x: T| x.floor()),
        UnaryOp::Ceil => m.map(|x: T| x.ceil()),
        UnaryOp::Round => m.map(|x: T| x.round()),
        UnaryOp::Square => m.map(|x: T| x * x),
        UnaryOp::Log1p => m.map(|x: T| x.log1p()),
        UnaryOp::Expm1 => m.map(|x: T| x.expm1()),
        UnaryOp::Not => return None,
    })
}

/// Integer types with the unary ops that [`UnaryOp::supports_int`] lists (wrapping like
/// PyTorch: `-i64::MIN == i64::MIN`, and `-x` of a `u8` wraps).
trait UnaryInt: Element {
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    fn sign(self) -> Self;
    fn square(self) -> Self;
    fn relu(self) -> Self;
}

macro_rules! impl_unary_signed {
    ($t:ty) => {
        impl UnaryInt for $t {
            #[inline(always)]
            fn neg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline(always)]
            fn abs(self) -> Self {
                self.wrapping_abs()
            }
            #[inline(always)]
            fn sign(self) -> Self {
                self.signum()
            }
            #[inline(always)]
            fn square(self) -> Self {
                self.wrapping_mul(self)
            }
            #[inline(always)]
            fn relu(self) -> Self {
                self.max(0)
            }
        }
    };
}
impl_unary_signed!(i64);
impl_unary_signed!(i32);

impl UnaryInt for u8 {
    #[inline(always)]
    fn neg(self) -> Self {
        self.wrapping_neg()
    }
    #[inline(always)]
    fn abs(self) -> Self {
        self
    }
    #[inline(always)]
    fn sign(self) -> Self {
        u8::from(self > 0)
    }
    #[inline(always)]
    fn square(self) -> Self {
        self.wrapping_mul(self)
    }
    #[inline(always)]
    fn relu(self) -> Self {
        self
    }
}

fn int_unary<T: UnaryInt>(op: UnaryOp, src: &[T], layout: &Layout) -> Option<Vec<T>> {
    Some(match op {
        UnaryOp::Neg => map1(src, layout, |x: T| x.neg()),
        UnaryOp::Abs => map1(src, layout, |x: T| x.abs()),
        UnaryOp::Sign => map1(src, layout, |x: T| x.sign()),
        UnaryOp::Square => map1(src, layout, |x: T| x.square()),
        UnaryOp::Relu => map1(src, layout, |x: T| x.relu()),
        _ => return None,
    })
}

/// Applies `op` to every element of the view `layout` over `src`, giving a contiguous buffer
/// of the same dtype. Float dtypes support every op but `Not`; integers the ops of
/// [`UnaryOp::supports_int`]; bool only `Not`.
pub(crate) fn unary(op: UnaryOp, src: &CpuStorage, layout: &Layout) -> Result<CpuStorage> {
    let l = layout;
    let out = match src {
        CpuStorage::F32(v) => float_unary(op, Direct { src: v, layout: l }).map(CpuStorage::F32),
        CpuStorage::F64(v) => float_unary(op, Direct { src: v, layout: l }).map(CpuStorage::F64),
        CpuStorage::F16(v) => {
            float_unary::<f32, _>(op, Staged { src: v, layout: l }).map(CpuStorage::F16)
        }
        CpuStorage::BF16(v) => {
            float_unary::<f32, _>(op, Staged { src: v, layout: l }).map(CpuStorage::BF16)
        }
        CpuStorage::I64(v) => int_unary(op, v, l).map(CpuStorage::I64),
        CpuStorage::I32(v) => int_unary(op, v, l).map(CpuStorage::I32),
        CpuStorage::U8(v) => int_unary(op, v, l).map(CpuStorage::U8),
        CpuStorage::Bool(v) => {
            (op == UnaryOp::Not).then(|| CpuStorage::Bool(map1(v, l, |x: bool| !x)))
        }
    };
    out.ok_or(Error::UnsupportedDType {
        op: op.name(),
        dtype: src.dtype(),
        device: Device::Cpu,
    })
}

#[cfg(test)]
mod tests {
    use crate::cpu::math::erf_f64;
    use crate::cpu::strided::testing::*;
    use crate::{DType, Error, Tensor, UnaryOp};
    use proptest::prelude::*;

    fn reference(op: UnaryOp, x: f64) -> f64 {
        match op {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Exp => x.exp(),
            UnaryOp::Log => x.ln(),
            UnaryOp::Sqrt => x.sqrt(),
            UnaryOp::Rsqrt => 1.0 / x.sqrt(),
            UnaryOp::Recip => 1.0 / x,
            UnaryOp::Sin => x.sin(),
            UnaryOp::Cos => x.cos(),
            UnaryOp::Tanh => x.tanh(),
            UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnaryOp::Relu => x.max(0.0),
            UnaryOp::Erf => erf_f64(x),
            UnaryOp::Sign => x.signum() * (x != 0.0) as i32 as f64,
            UnaryOp::Floor => x.floor(),
            UnaryOp::Ceil => x.ceil(),
            UnaryOp::Round => x.round_ties_even(),
            UnaryOp::Square => x * x,
            UnaryOp::Log1p => x.ln_1p(),
            UnaryOp::Expm1 => x.exp_m1(),
            UnaryOp::Not => (x == 0.0) as i32 as f64,
        }
    }

    fn reference_int(op: UnaryOp, x: i64, dtype: DType) -> i64 {
        let v = match op {
            UnaryOp::Neg => -x,
            UnaryOp::Abs => x.abs(),
            UnaryOp::Sign => x.signum(),
            UnaryOp::Square => x * x,
            UnaryOp::Relu => x.max(0),
            _ => unreachable!(),
        };
        if dtype == DType::U8 {
            v.rem_euclid(256)
        } else {
            v
        }
    }

    /// Checks `t.unary(op)` against the f64 reference over the input's positions.
    fn check(op: UnaryOp, t: &Tensor, rel: f64) -> Result<(), TestCaseError> {
        let got = t.unary(op).unwrap();
        prop_assert_eq!(got.shape(), t.shape());
        prop_assert_eq!(got.dtype(), t.dtype());
        prop_assert!(got.is_contiguous());
        let xs = t.to_f64_vec().unwrap();
        let want: Vec<f64> = xs.iter().map(|&x| reference(op, x)).collect();
        // Round the reference to the dtype, as the kernel's result is.
        let want = Tensor::from_vec(want, t.shape())
            .unwrap()
            .cast(t.dtype())
            .unwrap()
            .to_f64_vec()
            .unwrap();
        for ((g, w), x) in got.to_f64_vec().unwrap().into_iter().zip(want).zip(xs) {
            prop_assert!(
                close(g, w, rel),
                "{:?} {}({x}) = {g}, want {w}",
                t.dtype(),
                op.name()
            );
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn float_ops_match_reference(shape in arb_shape(), view in arb_view(), seed in any::<u64>()) {
            for (dtype, rel) in [(DType::F32, 1e-6), (DType::F64, 1e-13), (DType::F16, 4e-3), (DType::BF16, 2e-2)] {
                let t = make(&shape, view, dtype, seed, -4.0, 4.0);
                for op in UnaryOp::ALL {
                    if op != UnaryOp::Not {
                        check(op, &t, rel)?;
                    }
                }
            }
        }

        #[test]
        fn int_and_bool_ops_match_reference(shape in arb_shape(), view in arb_view(), seed in any::<u64>()) {
            for dtype in [DType::I64, DType::I32, DType::U8] {
                let t = make(&shape, view, dtype, seed, -60.0, 60.0);
                let xs = t.to_f64_vec().unwrap();
                for op in UnaryOp::ALL.into_iter().filter(|op| op.supports_int()) {
                    let got = t.unary(op).unwrap();
                    prop_assert_eq!(got.dtype(), dtype);
                    for (g, &x) in got.to_f64_vec().unwrap().into_iter().zip(&xs) {
                        prop_assert_eq!(g as i64, reference_int(op, x as i64, dtype));
                    }
                }
            }
            let t = make(&shape, view, DType::Bool, seed, -1.0, 1.0);
            let got = t.unary(UnaryOp::Not).unwrap().to_vec::<bool>().unwrap();
            let want: Vec<bool> = t.to_vec::<bool>().unwrap().into_iter().map(|b| !b).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn large_inputs_run_in_parallel_and_match() {
        let t = make(&[70, 1001], View::Sliced, DType::F32, 7, -3.0, 3.0);
        for op in [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Neg] {
            let got = t.unary(op).unwrap().to_f64_vec().unwrap();
            for (g, x) in got.into_iter().zip(t.to_f64_vec().unwrap()) {
                assert!(close(g, reference(op, x), 1e-6));
            }
        }
    }

    #[test]
    fn unsupported_dtypes_are_errors() {
        let f = Tensor::from_vec(vec![1.0f32], &[1]).unwrap();
        let i = Tensor::from_vec(vec![1i64], &[1]).unwrap();
        let b = Tensor::from_vec(vec![true], &[1]).unwrap();
        for (t, op) in [(&f, UnaryOp::Not), (&i, UnaryOp::Exp), (&b, UnaryOp::Neg)] {
            let e = t.unary(op).unwrap_err();
            assert!(matches!(e, Error::UnsupportedDType { .. }), "{e}");
            assert!(e.to_string().contains(op.name()), "{e}");
            assert!(e.to_string().contains(t.dtype().name()), "{e}");
        }
    }

    #[test]
    fn zero_d_and_empty() {
        let s = Tensor::scalar(2.0f32).unary(UnaryOp::Square).unwrap();
        assert_eq!(s.shape(), &[] as &[usize]);
        assert_eq!(s.item().unwrap(), 4.0);
        let e = Tensor::zeros(&[0, 3], DType::F64)
            .unary(UnaryOp::Exp)
            .unwrap();
        assert_eq!(e.shape(), &[0, 3]);
    }
}
