//! CPU kernels: reductions (sum, mean, max, min, prod over any set of axes).
//!
//! A reduction walks the input in memory order: its dimensions are sorted by stride and merged,
//! each tagged with the output stride (0 for reduced dimensions). The innermost run is then
//! either reduced to one value (a row sum, with many independent accumulators so that the
//! adds vectorize) or combined elementwise into a run of outputs (a column sum: whole rows are
//! added into an output-wide buffer, never strided per column).

use super::strided::{HalfFloat, STAGE};
use crate::cpu::par;
use crate::cpu::simd::{dispatch, parallel_chunks};
use crate::layout::{contiguous_strides, Layout, Shape, Strides};
use crate::{CpuStorage, Device, Error, ReduceOp, Result};
use half::{bf16, f16};

/// Independent accumulators per contiguous run: enough to fill several vector registers.
const LANES: usize = 64;
/// A long run is reduced in blocks of this many elements whose results are then added up,
/// which bounds the rounding error growth of float sums.
const BLOCK: usize = 4096;

/// Accumulator types of the reductions.
pub(crate) trait Acc: Copy + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
    const LOWEST: Self;
    const HIGHEST: Self;
    fn add(self, x: Self) -> Self;
    fn mul(self, x: Self) -> Self;
    /// Larger of the two; NaN wins (PyTorch's `max` propagates NaN).
    fn max_nan(self, x: Self) -> Self;
    /// Smaller of the two; NaN wins.
    fn min_nan(self, x: Self) -> Self;
}

macro_rules! impl_acc_float {
    ($t:ty) => {
        impl Acc for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const LOWEST: Self = <$t>::NEG_INFINITY;
            const HIGHEST: Self = <$t>::INFINITY;
            #[inline(always)]
            fn add(self, x: Self) -> Self {
                self + x
            }
            #[inline(always)]
            fn mul(self, x: Self) -> Self {
                self * x
            }
            #[inline(always)]
            fn max_nan(self, x: Self) -> Self {
                // Once the accumulator is NaN, both tests are false and it stays NaN.
                if x > self || x.is_nan() {
                    x
                } else {
                    self
                }
            }
            #[inline(always)]
            fn min_nan(self, x: Self) -> Self {
                if x < self || x.is_nan() {
                    x
                } else {
                    self
                }
            }
        }
    };
}
impl_acc_float!(f32);
impl_acc_float!(f64);

macro_rules! impl_acc_int {
    ($t:ty) => {
        impl Acc for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            #[inline(always)]
            fn add(self, x: Self) -> Self {
                self.wrapping_add(x)
            }
            #[inline(always)]
            fn mul(self, x: Self) -> Self {
                self.wrapping_mul(x)
            }
            #[inline(always)]
            fn max_nan(self, x: Self) -> Self {
                self.max(x)
            }
            #[inline(always)]
            fn min_nan(self, x: Self) -> Self {
                self.min(x)
            }
        }
    };
}
impl_acc_int!(i64);
impl_acc_int!(i32);
impl_acc_int!(u8);

/// One reduction as a type, so that each kernel is compiled for its op.
pub(crate) trait Reducer<A: Acc>: Copy + Send + Sync {
    fn init() -> A;
    fn step(acc: A, x: A) -> A;
}

#[derive(Clone, Copy)]
struct SumR;
#[derive(Clone, Copy)]
struct ProdR;
#[derive(Clone, Copy)]
struct MaxR;
#[derive(Clone, Copy)]
struct MinR;

impl<A: Acc> Reducer<A> for SumR {
    #[inline(always)]
    fn init() -> A {
        A::ZERO
    }
    #[inline(always)]
    fn step(acc: A, x: A) -> A {
        acc.add(x)
    }
}
impl<A: Acc> Reducer<A> for ProdR {
    #[inline(always)]
    fn init() -> A {
        A::ONE
    }
    #[inline(always)]
    fn step(acc: A, x: A) -> A {
        acc.mul(x)
    }
}
impl<A: Acc> Reducer<A> for MaxR {
    #[inline(always)]
    fn init() -> A {
        A::LOWEST
    }
    #[inline(always)]
    fn step(acc: A, x: A) -> A {
        acc.max_nan(x)
    }
}
impl<A: Acc> Reducer<A> for MinR {
    #[inline(always)]
    fn init() -> A {
        A::HIGHEST
    }
    #[inline(always)]
    fn step(acc: A, x: A) -> A {
        acc.min_nan(x)
    }
}

/// Conversion of input elements to the accumulator type (`i32 -> i64` for sums, `f16 -> f32`,
/// ...). Half types set `STAGED` and convert whole chunks, which vectorizes.
pub(crate) trait Widen<A>: Copy + Send + Sync {
    const STAGED: bool = false;
    fn widen(self) -> A;
    #[inline(always)]
    fn widen_slice(src: &[Self], dst: &mut [A]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x.widen();
        }
    }
}

macro_rules! impl_widen {
    ($from:ty => $to:ty, |$x:ident| $e:expr) => {
        impl Widen<$to> for $from {
            #[inline(always)]
            fn widen(self) -> $to {
                let $x = self;
                $e
            }
        }
    };
}
impl_widen!(f32 => f32, |x| x);
impl_widen!(f64 => f64, |x| x);
impl_widen!(i64 => i64, |x| x);
impl_widen!(i32 => i64, |x| x as i64);
impl_widen!(u8 => i64, |x| x as i64);
impl_widen!(bool => i64, |x| x as i64);
impl_widen!(i32 => i32, |x| x);
impl_widen!(u8 => u8, |x| x);
impl_widen!(bool => u8, |x| x as u8);

macro_rules! impl_widen_half {
    ($t:ty) => {
        impl Widen<f32> for $t {
            const STAGED: bool = true;
            #[inline(always)]
            fn widen(self) -> f32 {
                self.to_f32()
            }
            #[inline(always)]
            fn widen_slice(src: &[Self], dst: &mut [f32]) {
                <$t as HalfFloat>::to_f32_slice(src, dst)
            }
        }
    };
}
impl_widen_half!(f16);
impl_widen_half!(bf16);

/// Reduces a contiguous slice with `LANES` independent accumulators.
#[inline(always)]
fn reduce_lanes<T: Widen<A>, A: Acc, R: Reducer<A>>(xs: &[T]) -> A {
    let mut acc = [R::init(); LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] = R::step(acc[j], c[j].widen());
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            acc[j] = R::step(acc[j], acc[j + width]);
        }
    }
    let mut total = acc[0];
    for &x in chunks.remainder() {
        total = R::step(total, x.widen());
    }
    total
}

/// Reduces a contiguous slice in blocks (half types through an `f32` buffer).
#[inline(always)]
fn reduce_contiguous<T: Widen<A>, A: Acc + Widen<A>, R: Reducer<A>>(xs: &[T]) -> A {
    let mut total = R::init();
    if T::STAGED {
        let mut buf = [A::ZERO; STAGE];
        for c in xs.chunks(STAGE) {
            T::widen_slice(c, &mut buf[..c.len()]);
            total = R::step(total, reduce_lanes::<A, A, R>(&buf[..c.len()]));
        }
    } else {
        for block in xs.chunks(BLOCK) {
            total = R::step(total, reduce_lanes::<T, A, R>(block));
        }
    }
    total
}

/// `out[j] = step(out[j], x[j])` over contiguous slices of the same length.
#[inline(always)]
fn combine_into<T: Widen<A>, A: Acc + Widen<A>, R: Reducer<A>>(out: &mut [A], xs: &[T]) {
    if T::STAGED {
        let mut buf = [A::ZERO; STAGE];
        for (o, c) in out.chunks_mut(STAGE).zip(xs.chunks(STAGE)) {
            T::widen_slice(c, &mut buf[..c.len()]);
            for (d, &x) in o.iter_mut().zip(&buf[..c.len()]) {
                *d = R::step(*d, x);
            }
        }
    } else {
        for (d, &x) in out.iter_mut().zip(xs) {
            *d = R::step(*d, x.widen());
        }
    }
}

/// The input's dimensions in memory order, merged, with input and output strides.
pub(crate) struct ReducePlan {
    dims: Shape,
    in_strides: Strides,
    out_strides: Strides,
    offset: usize,
    out_numel: usize,
    count: usize,
}

impl ReducePlan {
    /// A plan reducing the dimensions of `layout` marked in `reduced` (same length as the
    /// rank); the output holds the other dimensions, contiguous, in their order.
    pub(crate) fn new(layout: &Layout, reduced: &[bool]) -> ReducePlan {
        let shape = layout.shape();
        let kept: Vec<usize> = (0..shape.len())
            .filter(|&d| !reduced[d])
            .map(|d| shape[d])
            .collect();
        let kept_strides = contiguous_strides(&kept);
        let mut next_kept = 0;
        let mut entries: Vec<(usize, usize, usize)> = Vec::with_capacity(shape.len());
        for d in 0..shape.len() {
            let out_stride = if reduced[d] {
                0
            } else {
                next_kept += 1;
                kept_strides[next_kept - 1]
            };
            if shape[d] != 1 {
                entries.push((shape[d], layout.strides()[d], out_stride));
            }
        }
        // Memory order: largest input stride outermost (ties: output order).
        entries.sort_by_key(|e| std::cmp::Reverse((e.1, e.2)));
        let mut dims = Shape::new();
        let mut in_strides = Strides::new();
        let mut out_strides = Strides::new();
        for (n, si, so) in entries {
            let last = dims.len().wrapping_sub(1);
            if !dims.is_empty() && in_strides[last] == si * n && out_strides[last] == so * n {
                dims[last] *= n;
                in_strides[last] = si;
                out_strides[last] = so;
            } else {
                dims.push(n);
                in_strides.push(si);
                out_strides.push(so);
            }
        }
        if dims.is_empty() {
            dims.push(1);
            in_strides.push(0);
            out_strides.push(0);
        }
        let count = (0..shape.len())
            .filter(|&d| reduced[d])
            .map(|d| shape[d])
            .product();
        ReducePlan {
            dims,
            in_strides,
            out_strides,
            offset: layout.offset(),
            out_numel: kept.iter().product(),
            count,
        }
    }

    /// Number of input elements reduced into each output element.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Folds the innermost run of `len` elements starting at input position `pin` into the
    /// output starting at `out[po]`.
    #[inline(always)]
    fn run_inner<T: Widen<A>, A: Acc + Widen<A>, R: Reducer<A>>(
        &self,
        src: &[T],
        pin: usize,
        out: &mut [A],
        po: usize,
        len: usize,
    ) {
        let rank = self.dims.len();
        let (si, so) = (self.in_strides[rank - 1], self.out_strides[rank - 1]);
        if so == 0 {
            let v = if si == 1 {
                reduce_contiguous::<T, A, R>(&src[pin..pin + len])
            } else {
                let mut acc = R::init();
                for j in 0..len {
                    acc = R::step(acc, src[pin + j * si].widen());
                }
                acc
            };
            out[po] = R::step(out[po], v);
        } else if si == 1 && so == 1 {
            combine_into::<T, A, R>(&mut out[po..po + len], &src[pin..pin + len]);
        } else {
            for j in 0..len {
                let o = &mut out[po + j * so];
                *o = R::step(*o, src[pin + j * si].widen());
            }
        }
    }

    /// Accumulates the input slab with outermost index in `lo..hi` into `out`, which holds the
    /// output positions `out_base..out_base + out.len()`.
    #[inline(always)]
    fn accumulate<T: Widen<A>, A: Acc + Widen<A>, R: Reducer<A>>(
        &self,
        src: &[T],
        lo: usize,
        hi: usize,
        out: &mut [A],
        out_base: usize,
    ) {
        let rank = self.dims.len();
        let (inner, si, so) = (
            self.dims[rank - 1],
            self.in_strides[rank - 1],
            self.out_strides[rank - 1],
        );
        if lo >= hi {
            return;
        }
        if rank == 1 {
            let po = lo * so - out_base;
            self.run_inner::<T, A, R>(src, self.offset + lo * si, out, po, hi - lo);
            return;
        }
        let outer = &self.dims[..rank - 1];
        let mut index: Shape = smallvec::smallvec![0; rank - 1];
        index[0] = lo;
        let mut pin = self.offset + lo * self.in_strides[0];
        let mut po = lo * self.out_strides[0];
        loop {
            self.run_inner::<T, A, R>(src, pin, out, po - out_base, inner);
            let mut d = rank - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                index[d] += 1;
                pin += self.in_strides[d];
                po += self.out_strides[d];
                let limit = if d == 0 { hi } else { outer[d] };
                if index[d] < limit {
                    break;
                }
                if d == 0 {
                    return;
                }
                pin -= self.in_strides[d] * outer[d];
                po -= self.out_strides[d] * outer[d];
                index[d] = 0;
            }
        }
    }

    /// Runs the reduction, splitting it over the rayon pool when large: by output slices when
    /// the outermost dimension is the outermost output dimension (each output is computed by
    /// one thread), otherwise into per-thread partial results combined in a fixed order. The
    /// result depends only on the input and the number of threads.
    fn run<T: Widen<A>, A: Acc + Widen<A>, R: Reducer<A>>(&self, src: &[T]) -> Vec<A> {
        let total: usize = self.dims.iter().product();
        let dim0 = self.dims[0];
        let chunks = parallel_chunks(total).min(dim0);
        let mut out = vec![R::init(); self.out_numel];
        if total == 0 {
            return out;
        }
        let out_stride0 = self.out_strides[0];
        if chunks > 1 && out_stride0 != 0 && out_stride0 * dim0 == self.out_numel {
            let per = dim0.div_ceil(chunks);
            par::for_each_chunk(&mut out, per * out_stride0, |i, o| {
                let lo = i * per;
                let hi = (lo + per).min(dim0);
                dispatch(
                    #[inline(always)]
                    || self.accumulate::<T, A, R>(src, lo, hi, o, lo * out_stride0),
                );
            });
        } else if chunks > 1 && self.out_numel * chunks <= total / 4 {
            let per = dim0.div_ceil(chunks);
            let parts: Vec<Vec<A>> = par::map(dim0.div_ceil(per), |i| {
                let mut part = vec![R::init(); self.out_numel];
                let (lo, hi) = (i * per, ((i + 1) * per).min(dim0));
                dispatch(
                    #[inline(always)]
                    || self.accumulate::<T, A, R>(src, lo, hi, &mut part, 0),
                );
                part
            });
            for part in parts {
                dispatch(
                    #[inline(always)]
                    || combine_into::<A, A, R>(&mut out, &part),
                );
            }
        } else {
            dispatch(
                #[inline(always)]
                || self.accumulate::<T, A, R>(src, 0, dim0, &mut out, 0),
            );
        }
        out
    }
}

fn run_op<T: Widen<A>, A: Acc + Widen<A>>(op: ReduceOp, plan: &ReducePlan, src: &[T]) -> Vec<A> {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => plan.run::<T, A, SumR>(src),
        ReduceOp::Prod => plan.run::<T, A, ProdR>(src),
        ReduceOp::Max => plan.run::<T, A, MaxR>(src),
        ReduceOp::Min => plan.run::<T, A, MinR>(src),
    }
}

/// Float reductions; `Mean` divides the sum by the count (0/0 = NaN for an empty reduction).
fn float_reduce<T: Widen<A>, A: Acc + Widen<A> + std::ops::Div<Output = A>>(
    op: ReduceOp,
    plan: &ReducePlan,
    src: &[T],
    count_as: impl Fn(usize) -> A,
) -> Vec<A> {
    let mut out = run_op::<T, A>(op, plan, src);
    if op == ReduceOp::Mean {
        let n = count_as(plan.count());
        out.iter_mut().for_each(|x| *x = *x / n);
    }
    out
}

fn to_half<H: HalfFloat>(v: Vec<f32>) -> CpuStorage {
    let mut out = vec![H::default(); v.len()];
    H::from_f32_slice(&v, &mut out);
    H::into_cpu_storage(out)
}

/// Reduces the dimensions of the view `layout` over `src` marked in `reduced` (one flag per
/// dimension). The result is contiguous over the kept dimensions, in order. Sum and Prod of
/// integers and bool give `i64`; of half types they accumulate in `f32`; Max and Min keep the
/// dtype; Mean needs a float dtype.
pub(crate) fn reduce(
    op: ReduceOp,
    src: &CpuStorage,
    layout: &Layout,
    reduced: &[bool],
) -> Result<CpuStorage> {
    let plan = ReducePlan::new(layout, reduced);
    let p = &plan;
    let wide = matches!(op, ReduceOp::Sum | ReduceOp::Prod);
    Ok(match src {
        CpuStorage::F32(v) => CpuStorage::F32(float_reduce(op, p, v, |n| n as f32)),
        CpuStorage::F64(v) => CpuStorage::F64(float_reduce(op, p, v, |n| n as f64)),
        CpuStorage::F16(v) => to_half::<f16>(float_reduce(op, p, v, |n| n as f32)),
        CpuStorage::BF16(v) => to_half::<bf16>(float_reduce(op, p, v, |n| n as f32)),
        _ if op == ReduceOp::Mean => {
            return Err(Error::UnsupportedDType {
                op: op.name(),
                dtype: src.dtype(),
                device: Device::Cpu,
            })
        }
        CpuStorage::I64(v) => CpuStorage::I64(run_op::<i64, i64>(op, p, v)),
        CpuStorage::I32(v) if wide => CpuStorage::I64(run_op::<i32, i64>(op, p, v)),
        CpuStorage::I32(v) => CpuStorage::I32(run_op::<i32, i32>(op, p, v)),
        CpuStorage::U8(v) if wide => CpuStorage::I64(run_op::<u8, i64>(op, p, v)),
        CpuStorage::U8(v) => CpuStorage::U8(run_op::<u8, u8>(op, p, v)),
        CpuStorage::Bool(v) if wide => CpuStorage::I64(run_op::<bool, i64>(op, p, v)),
        CpuStorage::Bool(v) => CpuStorage::Bool(
            run_op::<bool, u8>(op, p, v)
                .into_iter()
                .map(|x| x != 0)
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use crate::cpu::strided::testing::*;
    use crate::{BinaryOp, DType, ReduceOp, Tensor};
    use proptest::prelude::*;

    /// Row-major linear index of the output element that input element `i` reduces into.
    fn out_index(shape: &[usize], reduced: &[bool], mut i: usize) -> usize {
        let mut idx = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            idx[d] = i % shape[d];
            i /= shape[d];
        }
        (0..shape.len())
            .filter(|&d| !reduced[d])
            .fold(0, |o, d| o * shape[d] + idx[d])
    }

    fn mask_of(rank: usize, bits: u8) -> Vec<bool> {
        (0..rank).map(|d| bits & (1 << d) != 0).collect()
    }

    /// f64 reference over the input's positions: (value, sum of |x|) per output.
    fn reference(op: ReduceOp, t: &Tensor, reduced: &[bool]) -> (Vec<f64>, Vec<f64>) {
        let shape = t.shape();
        let kept: usize = (0..shape.len())
            .filter(|&d| !reduced[d])
            .map(|d| shape[d])
            .product();
        let count: usize = (0..shape.len())
            .filter(|&d| reduced[d])
            .map(|d| shape[d])
            .product();
        let init = match op {
            ReduceOp::Sum | ReduceOp::Mean => 0.0,
            ReduceOp::Prod => 1.0,
            ReduceOp::Max => f64::NEG_INFINITY,
            ReduceOp::Min => f64::INFINITY,
        };
        let mut acc = vec![init; kept];
        let mut abs = vec![0.0; kept];
        for (i, x) in t.to_f64_vec().unwrap().into_iter().enumerate() {
            let o = out_index(shape, reduced, i);
            let a = acc[o];
            acc[o] = match op {
                ReduceOp::Sum | ReduceOp::Mean => a + x,
                ReduceOp::Prod => a * x,
                _ if a.is_nan() || x.is_nan() => f64::NAN,
                ReduceOp::Max => a.max(x),
                ReduceOp::Min => a.min(x),
            };
            abs[o] += x.abs();
        }
        if op == ReduceOp::Mean {
            acc.iter_mut().for_each(|a| *a /= count as f64);
            abs.iter_mut().for_each(|a| *a /= count as f64);
        }
        (acc, abs)
    }

    /// Integer reference with i64 wrapping arithmetic.
    fn reference_int(op: ReduceOp, t: &Tensor, reduced: &[bool]) -> Vec<i64> {
        let shape = t.shape();
        let kept: usize = (0..shape.len())
            .filter(|&d| !reduced[d])
            .map(|d| shape[d])
            .product();
        let init = match op {
            ReduceOp::Prod => 1,
            ReduceOp::Max => i64::MIN,
            ReduceOp::Min => i64::MAX,
            _ => 0,
        };
        let mut acc = vec![init; kept];
        for (i, x) in t.to_f64_vec().unwrap().into_iter().enumerate() {
            let (o, x) = (out_index(shape, reduced, i), x as i64);
            acc[o] = match op {
                ReduceOp::Prod => acc[o].wrapping_mul(x),
                ReduceOp::Max => acc[o].max(x),
                ReduceOp::Min => acc[o].min(x),
                _ => acc[o].wrapping_add(x),
            };
        }
        acc
    }

    fn axes_of(reduced: &[bool], reverse: bool) -> Vec<usize> {
        let mut axes: Vec<usize> = (0..reduced.len()).filter(|&d| reduced[d]).collect();
        if reverse {
            axes.reverse();
        }
        axes
    }

    fn check_float(
        op: ReduceOp,
        t: &Tensor,
        reduced: &[bool],
        keepdim: bool,
        rel: f64,
    ) -> Result<(), TestCaseError> {
        let got = t.reduce(op, &axes_of(reduced, keepdim), keepdim).unwrap();
        prop_assert_eq!(got.dtype(), t.dtype());
        let want_shape: Vec<usize> = t
            .shape()
            .iter()
            .zip(reduced)
            .filter_map(|(&d, &r)| {
                if !r {
                    Some(d)
                } else if keepdim {
                    Some(1)
                } else {
                    None
                }
            })
            .collect();
        prop_assert_eq!(got.shape(), want_shape.as_slice());
        let (want, abs) = reference(op, t, reduced);
        for (i, g) in got.to_f64_vec().unwrap().into_iter().enumerate() {
            let w = want[i];
            let ok = (g.is_nan() && w.is_nan())
                || g == w
                || (g - w).abs() <= rel * w.abs() + 1e-5 * abs[i];
            prop_assert!(
                ok,
                "{:?} {} of {:?} over {:?}: [{}] = {}, want {}",
                t.dtype(),
                op.name(),
                t.shape(),
                reduced,
                i,
                g,
                w
            );
        }
        Ok(())
    }

    fn check_int(op: ReduceOp, t: &Tensor, reduced: &[bool]) -> Result<(), TestCaseError> {
        let got = t.reduce(op, &axes_of(reduced, false), false).unwrap();
        let want_dtype = match op {
            ReduceOp::Sum | ReduceOp::Prod => DType::I64,
            _ => t.dtype(),
        };
        prop_assert_eq!(got.dtype(), want_dtype);
        let want = reference_int(op, t, reduced);
        let got: Vec<i64> = if want_dtype == DType::I64 {
            got.to_vec::<i64>().unwrap()
        } else {
            got.to_f64_vec()
                .unwrap()
                .into_iter()
                .map(|x| x as i64)
                .collect()
        };
        prop_assert_eq!(got, want);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn float_reductions_match_reference(
            shape in arb_shape(), view in arb_view(), bits in any::<u8>(), keepdim in any::<bool>(), seed in any::<u64>()
        ) {
            let reduced = mask_of(shape.len(), bits);
            for (dtype, rel) in [(DType::F32, 1e-6), (DType::F64, 1e-12), (DType::F16, 1e-3), (DType::BF16, 8e-3)] {
                let t = make(&shape, view, dtype, seed, -1.0, 1.0);
                for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min] {
                    check_float(op, &t, &reduced, keepdim, rel)?;
                }
                let t = make(&shape, view, dtype, seed, 0.9, 1.1);
                check_float(ReduceOp::Prod, &t, &reduced, keepdim, rel + 2e-4)?;
            }
            // NaN propagates through max and min.
            let t = make(&shape, view, DType::F32, seed, -1.0, 1.0);
            let holes = make(&shape, View::Contiguous, DType::F32, seed ^ 1, 0.0, 1.0).scalar_op(BinaryOp::Gt, 0.9, false).unwrap();
            let t = Tensor::where_cond(&holes, &Tensor::scalar(f32::NAN), &t).unwrap();
            for op in [ReduceOp::Max, ReduceOp::Min, ReduceOp::Sum] {
                check_float(op, &t, &reduced, keepdim, 1e-6)?;
            }
        }

        #[test]
        fn int_and_bool_reductions_match_reference(
            shape in arb_shape(), view in arb_view(), bits in any::<u8>(), seed in any::<u64>()
        ) {
            let reduced = mask_of(shape.len(), bits);
            for (dtype, lo, hi) in [(DType::I64, -1e12, 1e12), (DType::I32, -1e4, 1e4), (DType::U8, 0.0, 255.0), (DType::Bool, -1.0, 1.0)] {
                let t = make(&shape, view, dtype, seed, lo, hi);
                for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min] {
                    check_int(op, &t, &reduced)?;
                }
            }
        }
    }

    #[test]
    fn large_reductions_are_parallel_deterministic_and_accurate() {
        let x = make(&[2048, 300], View::Contiguous, DType::F32, 5, -1.0, 1.0);
        let xt = make(&[2048, 300], View::Permuted, DType::F32, 6, -1.0, 1.0);
        for t in [&x, &xt] {
            for bits in [1u8, 2, 3] {
                let reduced = mask_of(2, bits);
                for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Mean] {
                    check_float(op, t, &reduced, false, 1e-6).unwrap();
                    let axes = axes_of(&reduced, false);
                    let a = t.reduce(op, &axes, false).unwrap().to_vec::<f32>().unwrap();
                    let b = t.reduce(op, &axes, false).unwrap().to_vec::<f32>().unwrap();
                    assert_eq!(a, b);
                }
            }
        }
        let ones = Tensor::ones(&[1 << 22], DType::F32);
        assert_eq!(ones.sum_all().unwrap().item().unwrap(), (1 << 22) as f64);
        let i = Tensor::ones(&[3000, 7], DType::I32);
        assert_eq!(i.sum_all().unwrap().to_vec::<i64>().unwrap(), vec![21000]);
    }
}
