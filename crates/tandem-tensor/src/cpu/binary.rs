//! CPU kernels: elementwise functions of two tensors with NumPy broadcasting (also in place),
//! and `where`. Inputs arrive as layouts already broadcast to the output shape; the
//! [`StridedPlan`] turns them into inner runs in which each operand is contiguous or a
//! repeated scalar, so the broadcast operand is never materialized.

use super::strided::{output_vec, run_parallel, stage_f32, HalfFloat, StridedPlan, STAGE};
use crate::cpu::simd::dispatch;
use crate::layout::Layout;
use crate::{BinaryOp, CpuStorage, Device, Element, Error, Result};

/// `out[i] = f(a[i], b[i])` over the plan's broadcast inputs, vectorized for the best
/// instruction set, in parallel for large outputs.
pub(crate) fn map2<A: Copy + Sync, B: Copy + Sync, O: Element>(
    plan: &StridedPlan<2>,
    a: &[A],
    b: &[B],
    f: impl Fn(A, B) -> O + Sync + Copy,
) -> Vec<O> {
    let mut out = output_vec::<O>(plan.numel());
    let [sa, sb] = plan.inner_strides();
    run_parallel(&mut out, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                plan.for_each_run(
                    start,
                    start + chunk.len(),
                    #[inline(always)]
                    |o, len, [pa, pb]| {
                        let dst = &mut chunk[o - start..o - start + len];
                        match (sa, sb) {
                            (1, 1) => {
                                let (a, b) = (&a[pa..pa + len], &b[pb..pb + len]);
                                for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
                                    *d = f(x, y);
                                }
                            }
                            (1, 0) => {
                                let y = b[pb];
                                for (d, &x) in dst.iter_mut().zip(&a[pa..pa + len]) {
                                    *d = f(x, y);
                                }
                            }
                            (0, 1) => {
                                let x = a[pa];
                                for (d, &y) in dst.iter_mut().zip(&b[pb..pb + len]) {
                                    *d = f(x, y);
                                }
                            }
                            _ => {
                                for (i, d) in dst.iter_mut().enumerate() {
                                    *d = f(a[pa + i * sa], b[pb + i * sb]);
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

/// `dst[i] = f(a[i], b[i])` over three slices of one length (extra elements of the longer
/// ones are ignored): vectorized for the best instruction set, split over the rayon pool as
/// the elementwise kernels are. For fused kernels outside this crate.
pub fn zip_map_into<A: Copy + Sync, B: Copy + Sync, O: Send>(
    dst: &mut [O],
    a: &[A],
    b: &[B],
    f: impl Fn(A, B) -> O + Sync + Copy,
) {
    let n = dst.len().min(a.len()).min(b.len());
    run_parallel(&mut dst[..n], |chunk, start| {
        let at = start..start + chunk.len();
        let (a, b) = (&a[at.clone()], &b[at]);
        dispatch(
            #[inline(always)]
            || {
                for ((d, &x), &y) in chunk.iter_mut().zip(a).zip(b) {
                    *d = f(x, y);
                }
            },
        )
    });
}

/// [`zip_map_into`] into a new vector of `a.len().min(b.len())` elements (not cleared
/// before it is written).
pub fn zip_map<A: Copy + Sync, B: Copy + Sync, O: Element>(
    a: &[A],
    b: &[B],
    f: impl Fn(A, B) -> O + Sync + Copy,
) -> Vec<O> {
    let mut out = output_vec::<O>(a.len().min(b.len()));
    zip_map_into(&mut out, a, b, f);
    out
}

/// [`map2`] for half-precision inputs: both are converted to `f32` a chunk at a time, `f`
/// computes `R`, and `store` writes the chunk of results.
fn map2_half<H: HalfFloat, R: Copy + Default, O: Element>(
    plan: &StridedPlan<2>,
    a: &[H],
    b: &[H],
    f: impl Fn(f32, f32) -> R + Sync + Copy,
    store: impl Fn(&[R], &mut [O]) + Sync + Copy,
) -> Vec<O> {
    let mut out = output_vec::<O>(plan.numel());
    let [sa, sb] = plan.inner_strides();
    run_parallel(&mut out, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                let mut x = [0f32; STAGE];
                let mut y = [0f32; STAGE];
                let mut r = [R::default(); STAGE];
                plan.for_each_run(
                    start,
                    start + chunk.len(),
                    #[inline(always)]
                    |o, len, [pa, pb]| {
                        let mut done = 0;
                        while done < len {
                            let n = (len - done).min(STAGE);
                            stage_f32(a, pa + done * sa, sa, &mut x[..n]);
                            stage_f32(b, pb + done * sb, sb, &mut y[..n]);
                            for ((d, &u), &v) in r[..n].iter_mut().zip(&x[..n]).zip(&y[..n]) {
                                *d = f(u, v);
                            }
                            let at = o - start + done;
                            store(&r[..n], &mut chunk[at..at + n]);
                            done += n;
                        }
                    },
                )
            },
        )
    });
    out
}

/// Element types with the arithmetic binary ops. Floats follow IEEE (`maximum`/`minimum`
/// propagate NaN); integers wrap like PyTorch, divide truncating toward zero, give 0 for a
/// division by zero, and raise to non-negative powers (a negative exponent gives 0 here;
/// the op layer rejects it before).
pub(crate) trait Arith: Element {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    fn pow(self, o: Self) -> Self;
    fn maximum(self, o: Self) -> Self;
    fn minimum(self, o: Self) -> Self;
}

macro_rules! impl_arith_float {
    ($t:ty) => {
        impl Arith for $t {
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                self + o
            }
            #[inline(always)]
            fn sub(self, o: Self) -> Self {
                self - o
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                self * o
            }
            #[inline(always)]
            fn div(self, o: Self) -> Self {
                self / o
            }
            #[inline(always)]
            fn pow(self, o: Self) -> Self {
                self.powf(o)
            }
            #[inline(always)]
            fn maximum(self, o: Self) -> Self {
                // If `o` is NaN the comparison is false and `o` is returned.
                if self > o || self.is_nan() {
                    self
                } else {
                    o
                }
            }
            #[inline(always)]
            fn minimum(self, o: Self) -> Self {
                if self < o || self.is_nan() {
                    self
                } else {
                    o
                }
            }
        }
    };
}
impl_arith_float!(f32);
impl_arith_float!(f64);

macro_rules! impl_arith_int {
    ($t:ty) => {
        impl Arith for $t {
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline(always)]
            fn sub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            #[inline(always)]
            fn div(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_div(o)
                }
            }
            #[inline(always)]
            fn pow(self, o: Self) -> Self {
                let Some(mut exp) = u64::try_from(o).ok() else {
                    return 0;
                };
                let mut base = self;
                let mut acc: $t = 1;
                while exp > 0 {
                    if exp & 1 == 1 {
                        acc = acc.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    exp >>= 1;
                }
                acc
            }
            #[inline(always)]
            fn maximum(self, o: Self) -> Self {
                self.max(o)
            }
            #[inline(always)]
            fn minimum(self, o: Self) -> Self {
                self.min(o)
            }
        }
    };
}
impl_arith_int!(i64);
impl_arith_int!(i32);
impl_arith_int!(u8);

/// Runs an arithmetic or comparison function over some pair of sources; lets one `match`
/// over the ops serve native data and half-precision data computed in `f32`.
trait Mapper2<T> {
    fn arith(&self, f: impl Fn(T, T) -> T + Sync + Copy) -> CpuStorage;
    fn compare(&self, f: impl Fn(T, T) -> bool + Sync + Copy) -> CpuStorage;
}

struct Direct2<'a, T> {
    plan: &'a StridedPlan<2>,
    a: &'a [T],
    b: &'a [T],
}

impl<T: Element> Mapper2<T> for Direct2<'_, T> {
    fn arith(&self, f: impl Fn(T, T) -> T + Sync + Copy) -> CpuStorage {
        T::into_cpu_storage(map2(self.plan, self.a, self.b, f))
    }
    fn compare(&self, f: impl Fn(T, T) -> bool + Sync + Copy) -> CpuStorage {
        CpuStorage::Bool(map2(self.plan, self.a, self.b, f))
    }
}

struct Staged2<'a, H> {
    plan: &'a StridedPlan<2>,
    a: &'a [H],
    b: &'a [H],
}

impl<H: HalfFloat> Mapper2<f32> for Staged2<'_, H> {
    fn arith(&self, f: impl Fn(f32, f32) -> f32 + Sync + Copy) -> CpuStorage {
        let store = |r: &[f32], out: &mut [H]| H::from_f32_slice(r, out);
        H::into_cpu_storage(map2_half(self.plan, self.a, self.b, f, store))
    }
    fn compare(&self, f: impl Fn(f32, f32) -> bool + Sync + Copy) -> CpuStorage {
        let store = |r: &[bool], out: &mut [bool]| out.copy_from_slice(r);
        CpuStorage::Bool(map2_half(self.plan, self.a, self.b, f, store))
    }
}

/// Two contiguous operands of the same length: one flat loop, no [`StridedPlan`].
struct Flat2<'a, T> {
    a: &'a [T],
    b: &'a [T],
}

/// `out[i] = f(a[i], b[i])` for equal-length slices, vectorized, in parallel when large.
#[inline(always)]
fn flat2<T: Copy + Sync, O: Element>(
    a: &[T],
    b: &[T],
    f: impl Fn(T, T) -> O + Sync + Copy,
) -> Vec<O> {
    let n = a.len().min(b.len());
    let mut out = output_vec::<O>(n);
    run_parallel(&mut out, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                let end = start + chunk.len();
                for ((d, &x), &y) in chunk.iter_mut().zip(&a[start..end]).zip(&b[start..end]) {
                    *d = f(x, y);
                }
            },
        )
    });
    out
}

impl<T: Element> Mapper2<T> for Flat2<'_, T> {
    fn arith(&self, f: impl Fn(T, T) -> T + Sync + Copy) -> CpuStorage {
        T::into_cpu_storage(flat2(self.a, self.b, f))
    }
    fn compare(&self, f: impl Fn(T, T) -> bool + Sync + Copy) -> CpuStorage {
        CpuStorage::Bool(flat2(self.a, self.b, f))
    }
}

/// A contiguous operand and a scalar (`a op s`, or `s op a` when `left`).
struct FlatScalar<'a, T> {
    a: &'a [T],
    s: T,
    left: bool,
}

/// `out[i] = f(a[i], s)` (or `f(s, a[i])`), vectorized, in parallel when large.
#[inline(always)]
fn flat_scalar<T: Copy + Sync, O: Element>(
    a: &[T],
    s: T,
    left: bool,
    f: impl Fn(T, T) -> O + Sync + Copy,
) -> Vec<O> {
    let mut out = output_vec::<O>(a.len());
    run_parallel(&mut out, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                let src = &a[start..start + chunk.len()];
                if left {
                    for (d, &x) in chunk.iter_mut().zip(src) {
                        *d = f(s, x);
                    }
                } else {
                    for (d, &x) in chunk.iter_mut().zip(src) {
                        *d = f(x, s);
                    }
                }
            },
        )
    });
    out
}

impl<T: Element> Mapper2<T> for FlatScalar<'_, T> {
    fn arith(&self, f: impl Fn(T, T) -> T + Sync + Copy) -> CpuStorage {
        T::into_cpu_storage(flat_scalar(self.a, self.s, self.left, f))
    }
    fn compare(&self, f: impl Fn(T, T) -> bool + Sync + Copy) -> CpuStorage {
        CpuStorage::Bool(flat_scalar(self.a, self.s, self.left, f))
    }
}

/// The `n` elements of `s` from `offset` as a slice of `T`, when `s` holds `T`.
fn window<T: Element>(s: &CpuStorage, offset: usize, n: usize) -> Option<&[T]> {
    T::cpu_slice(s)?.get(offset..offset.checked_add(n)?)
}

/// The fast path of [`binary`] for two contiguous operands of the same shape (`n` elements
/// from offsets `oa` and `ob`): one flat loop. `None` for the dtypes and ops it does not
/// cover (half types, bool, logical ops), which take the general path.
pub(crate) fn binary_flat(
    op: BinaryOp,
    a: &CpuStorage,
    oa: usize,
    b: &CpuStorage,
    ob: usize,
    n: usize,
) -> Option<CpuStorage> {
    fn go<T: Arith>(
        op: BinaryOp,
        a: &CpuStorage,
        oa: usize,
        b: &CpuStorage,
        ob: usize,
        n: usize,
    ) -> Option<CpuStorage> {
        let (a, b) = (window::<T>(a, oa, n)?, window::<T>(b, ob, n)?);
        numeric_binary(op, Flat2 { a, b })
    }
    match a {
        CpuStorage::F32(_) => go::<f32>(op, a, oa, b, ob, n),
        CpuStorage::F64(_) => go::<f64>(op, a, oa, b, ob, n),
        CpuStorage::I64(_) => go::<i64>(op, a, oa, b, ob, n),
        CpuStorage::I32(_) => go::<i32>(op, a, oa, b, ob, n),
        CpuStorage::U8(_) => go::<u8>(op, a, oa, b, ob, n),
        _ => None,
    }
}

/// The fast path of a tensor-scalar op on a contiguous operand (`n` elements of `a` from
/// `offset`); `value` is converted to the element type. `None` where [`binary_flat`] is.
pub(crate) fn scalar_flat(
    op: BinaryOp,
    a: &CpuStorage,
    offset: usize,
    n: usize,
    value: f64,
    left: bool,
) -> Option<CpuStorage> {
    fn go<T: Arith>(
        op: BinaryOp,
        a: &CpuStorage,
        o: usize,
        n: usize,
        v: f64,
        left: bool,
    ) -> Option<CpuStorage> {
        let a = window::<T>(a, o, n)?;
        numeric_binary(
            op,
            FlatScalar {
                a,
                s: T::from_f64(v),
                left,
            },
        )
    }
    match a {
        CpuStorage::F32(_) => go::<f32>(op, a, offset, n, value, left),
        CpuStorage::F64(_) => go::<f64>(op, a, offset, n, value, left),
        CpuStorage::I64(_) => go::<i64>(op, a, offset, n, value, left),
        CpuStorage::I32(_) => go::<i32>(op, a, offset, n, value, left),
        CpuStorage::U8(_) => go::<u8>(op, a, offset, n, value, left),
        _ => None,
    }
}

fn numeric_binary<T: Arith, M: Mapper2<T>>(op: BinaryOp, m: M) -> Option<CpuStorage> {
    Some(match op {
        BinaryOp::Add => m.arith(|x: T, y: T| x.add(y)),
        BinaryOp::Sub => m.arith(|x: T, y: T| x.sub(y)),
        BinaryOp::Mul => m.arith(|x: T, y: T| x.mul(y)),
        BinaryOp::Div => m.arith(|x: T, y: T| x.div(y)),
        BinaryOp::Pow => m.arith(|x: T, y: T| x.pow(y)),
        BinaryOp::Maximum => m.arith(|x: T, y: T| x.maximum(y)),
        BinaryOp::Minimum => m.arith(|x: T, y: T| x.minimum(y)),
        BinaryOp::Eq => m.compare(|x: T, y: T| x == y),
        BinaryOp::Ne => m.compare(|x: T, y: T| x != y),
        BinaryOp::Lt => m.compare(|x: T, y: T| x < y),
        BinaryOp::Le => m.compare(|x: T, y: T| x <= y),
        BinaryOp::Gt => m.compare(|x: T, y: T| x > y),
        BinaryOp::Ge => m.compare(|x: T, y: T| x >= y),
        BinaryOp::And | BinaryOp::Or => return None,
    })
}

fn bool_binary(op: BinaryOp, plan: &StridedPlan<2>, a: &[bool], b: &[bool]) -> Option<Vec<bool>> {
    Some(match op {
        BinaryOp::Eq => map2(plan, a, b, |x: bool, y: bool| x == y),
        BinaryOp::Ne => map2(plan, a, b, |x: bool, y: bool| x != y),
        BinaryOp::Lt => map2(plan, a, b, |x: bool, y: bool| !x & y),
        BinaryOp::Le => map2(plan, a, b, |x: bool, y: bool| !x | y),
        BinaryOp::Gt => map2(plan, a, b, |x: bool, y: bool| x & !y),
        BinaryOp::Ge => map2(plan, a, b, |x: bool, y: bool| x | !y),
        BinaryOp::And | BinaryOp::Minimum => map2(plan, a, b, |x: bool, y: bool| x & y),
        BinaryOp::Or | BinaryOp::Maximum => map2(plan, a, b, |x: bool, y: bool| x | y),
        _ => return None,
    })
}

/// True if some element of the view is negative (integer `pow` needs non-negative exponents).
pub(crate) fn any_negative(b: &CpuStorage, lb: &Layout) -> bool {
    fn neg<T: Element>(v: &[T], l: &Layout) -> bool {
        l.positions().any(|p| v[p] < T::default())
    }
    crate::match_cpu_storage!(b, v => neg(v, lb))
}

fn unsupported(op: BinaryOp, s: &CpuStorage) -> Error {
    Error::UnsupportedDType {
        op: op.name(),
        dtype: s.dtype(),
        device: Device::Cpu,
    }
}

/// `op` elementwise over the views `la` of `a` and `lb` of `b`, which must have the same dtype
/// and be broadcast to the same (output) shape. Comparisons give bool; `And`/`Or` need bool.
pub(crate) fn binary(
    op: BinaryOp,
    a: &CpuStorage,
    la: &Layout,
    b: &CpuStorage,
    lb: &Layout,
) -> Result<CpuStorage> {
    let plan = StridedPlan::new(la.shape(), [la, lb]);
    let p = &plan;
    let out = match (a, b) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => numeric_binary(op, Direct2 { plan: p, a, b }),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => numeric_binary(op, Direct2 { plan: p, a, b }),
        (CpuStorage::I64(a), CpuStorage::I64(b)) => numeric_binary(op, Direct2 { plan: p, a, b }),
        (CpuStorage::I32(a), CpuStorage::I32(b)) => numeric_binary(op, Direct2 { plan: p, a, b }),
        (CpuStorage::U8(a), CpuStorage::U8(b)) => numeric_binary(op, Direct2 { plan: p, a, b }),
        (CpuStorage::F16(a), CpuStorage::F16(b)) => {
            numeric_binary::<f32, _>(op, Staged2 { plan: p, a, b })
        }
        (CpuStorage::BF16(a), CpuStorage::BF16(b)) => {
            numeric_binary::<f32, _>(op, Staged2 { plan: p, a, b })
        }
        (CpuStorage::Bool(a), CpuStorage::Bool(b)) => {
            bool_binary(op, p, a, b).map(CpuStorage::Bool)
        }
        _ => {
            return Err(Error::DTypeMismatch {
                op: op.name(),
                expected: a.dtype().name().to_string(),
                got: b.dtype(),
            })
        }
    };
    out.ok_or_else(|| unsupported(op, a))
}

/// `dst[i] = f(dst[i], b[i])` for a contiguous `dst` and the view `lb` of `b` broadcast to it.
fn zip_in_place<T: Copy + Send + Sync>(
    dst: &mut [T],
    b: &[T],
    lb: &Layout,
    f: impl Fn(T, T) -> T + Sync + Copy,
) {
    let plan = StridedPlan::new(lb.shape(), [lb]);
    let [sb] = plan.inner_strides();
    run_parallel(dst, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                plan.for_each_run(
                    start,
                    start + chunk.len(),
                    #[inline(always)]
                    |o, len, [pb]| {
                        let d = &mut chunk[o - start..o - start + len];
                        match sb {
                            1 => {
                                for (x, &y) in d.iter_mut().zip(&b[pb..pb + len]) {
                                    *x = f(*x, y);
                                }
                            }
                            0 => {
                                let y = b[pb];
                                for x in d.iter_mut() {
                                    *x = f(*x, y);
                                }
                            }
                            s => {
                                for (i, x) in d.iter_mut().enumerate() {
                                    *x = f(*x, b[pb + i * s]);
                                }
                            }
                        }
                    },
                )
            },
        )
    });
}

fn arith_in_place<T: Arith>(op: BinaryOp, dst: &mut [T], b: &[T], lb: &Layout) -> bool {
    match op {
        BinaryOp::Add => zip_in_place(dst, b, lb, |x: T, y: T| x.add(y)),
        BinaryOp::Sub => zip_in_place(dst, b, lb, |x: T, y: T| x.sub(y)),
        BinaryOp::Mul => zip_in_place(dst, b, lb, |x: T, y: T| x.mul(y)),
        BinaryOp::Div => zip_in_place(dst, b, lb, |x: T, y: T| x.div(y)),
        BinaryOp::Maximum => zip_in_place(dst, b, lb, |x: T, y: T| x.maximum(y)),
        BinaryOp::Minimum => zip_in_place(dst, b, lb, |x: T, y: T| x.minimum(y)),
        _ => return false,
    }
    true
}

/// In-place `dst = dst op b` for a contiguous `dst` (`f32`, `f64` or integer) and the view `lb`
/// of `b` broadcast to its shape. Returns `false`, leaving `dst` untouched, for the ops and
/// dtypes it does not cover (comparisons, logical ops, `pow`, half types, bool), which the
/// caller computes out of place.
pub(crate) fn binary_in_place(
    op: BinaryOp,
    dst: &mut CpuStorage,
    b: &CpuStorage,
    lb: &Layout,
) -> bool {
    match (dst, b) {
        (CpuStorage::F32(d), CpuStorage::F32(b)) => arith_in_place(op, d, b, lb),
        (CpuStorage::F64(d), CpuStorage::F64(b)) => arith_in_place(op, d, b, lb),
        (CpuStorage::I64(d), CpuStorage::I64(b)) => arith_in_place(op, d, b, lb),
        (CpuStorage::I32(d), CpuStorage::I32(b)) => arith_in_place(op, d, b, lb),
        (CpuStorage::U8(d), CpuStorage::U8(b)) => arith_in_place(op, d, b, lb),
        _ => false,
    }
}

fn select<T: Element>(
    plan: &StridedPlan<3>,
    cond: &[bool],
    on_true: &[T],
    on_false: &CpuStorage,
) -> Result<CpuStorage> {
    let on_false = T::cpu_slice(on_false).ok_or(Error::DTypeMismatch {
        op: "where",
        expected: T::DTYPE.name().to_string(),
        got: on_false.dtype(),
    })?;
    let mut out = output_vec::<T>(plan.numel());
    let [sc, st, sf] = plan.inner_strides();
    run_parallel(&mut out, |chunk, start| {
        dispatch(
            #[inline(always)]
            || {
                plan.for_each_run(
                    start,
                    start + chunk.len(),
                    #[inline(always)]
                    |o, len, [pc, pt, pf]| {
                        let dst = &mut chunk[o - start..o - start + len];
                        if (sc, st, sf) == (1, 1, 1) {
                            let c = &cond[pc..pc + len];
                            let (t, f) = (&on_true[pt..pt + len], &on_false[pf..pf + len]);
                            for (((d, &c), &t), &f) in dst.iter_mut().zip(c).zip(t).zip(f) {
                                *d = if c { t } else { f };
                            }
                        } else {
                            for (i, d) in dst.iter_mut().enumerate() {
                                let c = cond[pc + i * sc];
                                *d = if c {
                                    on_true[pt + i * st]
                                } else {
                                    on_false[pf + i * sf]
                                };
                            }
                        }
                    },
                )
            },
        )
    });
    Ok(T::into_cpu_storage(out))
}

/// `cond ? on_true : on_false` elementwise; the three views are broadcast to the same shape
/// and the two value buffers have the same dtype.
pub(crate) fn where_cond(
    cond: &[bool],
    lc: &Layout,
    on_true: &CpuStorage,
    lt: &Layout,
    on_false: &CpuStorage,
    lf: &Layout,
) -> Result<CpuStorage> {
    let plan = StridedPlan::new(lc.shape(), [lc, lt, lf]);
    crate::match_cpu_storage!(on_true, t => select(&plan, cond, t, on_false))
}

#[cfg(test)]
mod tests {
    use crate::cpu::strided::testing::*;
    use crate::{BinaryOp, DType, Tensor};
    use proptest::prelude::*;

    /// A shape that broadcasts to `shape`: dims listed in `ones` become 1 and the first
    /// `drop` dims are removed.
    fn broadcastable(shape: &[usize], ones: u8, drop: usize) -> Vec<usize> {
        let s: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(i, &d)| if ones & (1 << i) != 0 { 1 } else { d })
            .collect();
        s[drop.min(s.len())..].to_vec()
    }

    fn reference_float(op: BinaryOp, x: f64, y: f64) -> f64 {
        let b = |c: bool| c as i32 as f64;
        match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Pow => x.powf(y),
            BinaryOp::Maximum => {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.max(y)
                }
            }
            BinaryOp::Minimum => {
                if x.is_nan() || y.is_nan() {
                    f64::NAN
                } else {
                    x.min(y)
                }
            }
            BinaryOp::Eq => b(x == y),
            BinaryOp::Ne => b(x != y),
            BinaryOp::Lt => b(x < y),
            BinaryOp::Le => b(x <= y),
            BinaryOp::Gt => b(x > y),
            BinaryOp::Ge => b(x >= y),
            BinaryOp::And => b(x != 0.0 && y != 0.0),
            BinaryOp::Or => b(x != 0.0 || y != 0.0),
        }
    }

    /// Integer reference, wrapped to the dtype's width.
    fn reference_int(op: BinaryOp, x: i128, y: i128, dtype: DType) -> i128 {
        let v = match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div if y == 0 => 0,
            BinaryOp::Div => x / y,
            BinaryOp::Pow => x.pow(y as u32),
            BinaryOp::Maximum => x.max(y),
            BinaryOp::Minimum => x.min(y),
            _ => return reference_float(op, x as f64, y as f64) as i128,
        };
        match dtype {
            DType::I32 => v as i32 as i128,
            DType::U8 => v as u8 as i128,
            _ => v as i64 as i128,
        }
    }

    /// Checks `a op b` against an f64 (or i128) loop over the broadcast positions.
    fn check(op: BinaryOp, a: &Tensor, b: &Tensor, rel: f64) -> Result<(), TestCaseError> {
        let got = a.binary(op, b).unwrap();
        let shape = crate::layout::broadcast_shapes("test", a.shape(), b.shape()).unwrap();
        prop_assert_eq!(got.shape(), shape.as_slice());
        let want_dtype = if op.is_comparison() {
            DType::Bool
        } else {
            a.dtype()
        };
        prop_assert_eq!(got.dtype(), want_dtype);
        let xs = a.expand(&shape).unwrap().to_f64_vec().unwrap();
        let ys = b.expand(&shape).unwrap().to_f64_vec().unwrap();
        let want: Vec<f64> = xs
            .iter()
            .zip(&ys)
            .map(|(&x, &y)| {
                if a.dtype().is_int() {
                    reference_int(op, x as i128, y as i128, a.dtype()) as f64
                } else {
                    reference_float(op, x, y)
                }
            })
            .collect();
        let want = Tensor::from_vec(want, &shape)
            .unwrap()
            .cast(want_dtype)
            .unwrap()
            .to_f64_vec()
            .unwrap();
        let got = got.to_f64_vec().unwrap();
        for i in 0..got.len() {
            prop_assert!(
                close(got[i], want[i], rel),
                "{:?} {}({}, {}) = {}, want {}",
                a.dtype(),
                op.name(),
                xs[i],
                ys[i],
                got[i],
                want[i]
            );
        }
        Ok(())
    }

    fn operands(
        shape: &[usize],
        (ones_a, drop_a, va): (u8, usize, View),
        (ones_b, drop_b, vb): (u8, usize, View),
        dtype: DType,
        seed: u64,
        (lo, hi): (f64, f64),
        (lo_b, hi_b): (f64, f64),
    ) -> (Tensor, Tensor) {
        let sa = broadcastable(shape, ones_a, drop_a);
        let sb = broadcastable(shape, ones_b, drop_b);
        (
            make(&sa, va, dtype, seed, lo, hi),
            make(&sb, vb, dtype, seed ^ 0xabcd, lo_b, hi_b),
        )
    }

    fn arb_operand() -> impl Strategy<Value = (u8, usize, View)> {
        (any::<u8>(), 0usize..3, arb_view())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn float_ops_match_reference(
            shape in arb_shape(), a in arb_operand(), b in arb_operand(), seed in any::<u64>()
        ) {
            for (dtype, rel) in [(DType::F32, 1e-6), (DType::F64, 1e-13), (DType::F16, 4e-3), (DType::BF16, 2e-2)] {
                let (x, y) = operands(&shape, a, b, dtype, seed, (-3.0, 3.0), (-3.0, 3.0));
                for op in BinaryOp::ALL.into_iter().filter(|op| !op.is_logical()) {
                    check(op, &x, &y, rel)?;
                }
                // Exact ties for the comparisons.
                check(BinaryOp::Eq, &x, &x, 0.0)?;
                check(BinaryOp::Ge, &x, &x, 0.0)?;
            }
        }

        #[test]
        fn int_and_bool_ops_match_reference(
            shape in arb_shape(), a in arb_operand(), b in arb_operand(), seed in any::<u64>()
        ) {
            for (dtype, lo) in [(DType::I64, -20.0), (DType::I32, -20.0), (DType::U8, 0.0)] {
                let (x, y) = operands(&shape, a, b, dtype, seed, (lo, 20.0), (lo, 20.0));
                for op in BinaryOp::ALL.into_iter().filter(|op| !op.is_logical() && *op != BinaryOp::Pow) {
                    check(op, &x, &y, 0.0)?;
                }
                let (x, y) = operands(&shape, a, b, dtype, seed, (-5.0, 5.0), (0.0, 6.0));
                check(BinaryOp::Pow, &x, &y, 0.0)?;
            }
            let (x, y) = operands(&shape, a, b, DType::Bool, seed, (-1.0, 1.0), (-1.0, 1.0));
            for op in BinaryOp::ALL.into_iter().filter(|op| op.is_logical() || op.is_comparison()) {
                check(op, &x, &y, 0.0)?;
            }
        }

        #[test]
        fn in_place_matches_out_of_place(
            shape in arb_shape(), view in arb_view(), b in arb_operand(), seed in any::<u64>()
        ) {
            for dtype in [DType::F32, DType::F64, DType::I32, DType::F16] {
                let x = make(&shape, view, dtype, seed, -3.0, 3.0);
                let y = make(&broadcastable(&shape, b.0, b.1), b.2, dtype, seed + 1, 1.0, 3.0);
                for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum, BinaryOp::Lt] {
                    let before = x.to_f64_vec().unwrap();
                    let mut z = x.clone();
                    z.binary_(op, &y).unwrap();
                    let want = x.binary(op, &y).unwrap().cast(dtype).unwrap();
                    prop_assert_eq!(z.shape(), x.shape());
                    prop_assert_eq!(z.dtype(), dtype);
                    prop_assert_eq!(z.to_f64_vec().unwrap(), want.to_f64_vec().unwrap());
                    // Copy-on-write: the tensor that shared the storage is unchanged.
                    prop_assert_eq!(x.to_f64_vec().unwrap(), before);
                }
            }
        }

        #[test]
        fn where_matches_reference(
            shape in arb_shape(), c in arb_operand(), t in arb_operand(), f in arb_operand(), seed in any::<u64>()
        ) {
            let cond = make(&broadcastable(&shape, c.0, c.1), c.2, DType::Bool, seed, -1.0, 1.0);
            for dtype in [DType::F32, DType::I64, DType::BF16, DType::Bool] {
                let on_true = make(&broadcastable(&shape, t.0, t.1), t.2, dtype, seed + 1, -9.0, 9.0);
                let on_false = make(&broadcastable(&shape, f.0, f.1), f.2, dtype, seed + 2, -9.0, 9.0);
                let got = Tensor::where_cond(&cond, &on_true, &on_false).unwrap();
                let out_shape = got.shape().to_vec();
                let cs = cond.expand(&out_shape).unwrap().to_vec::<bool>().unwrap();
                let ts = on_true.expand(&out_shape).unwrap().to_f64_vec().unwrap();
                let fs = on_false.expand(&out_shape).unwrap().to_f64_vec().unwrap();
                let want: Vec<f64> = (0..cs.len()).map(|i| if cs[i] { ts[i] } else { fs[i] }).collect();
                prop_assert_eq!(got.dtype(), dtype);
                prop_assert_eq!(got.to_f64_vec().unwrap(), want);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn flat_fast_paths_equal_the_general_path(
            shape in arb_shape(), offset in any::<bool>(), v in -4.0f64..4.0, seed in any::<u64>()
        ) {
            let view = if offset { View::Offset } else { View::Contiguous };
            for dtype in [DType::F32, DType::F64, DType::I64, DType::I32, DType::U8] {
                let lo = if dtype == DType::U8 { 0.0 } else { -9.0 };
                let x = make(&shape, view, dtype, seed, lo, 9.0);
                let y = make(&shape, View::Offset, dtype, seed ^ 7, 1.0, 9.0);
                let (a, la) = x.cpu("t").unwrap();
                let (b, lb) = y.cpu("t").unwrap();
                let n = la.numel();
                let v = if dtype.is_float() { v } else { v.round().abs() };
                for op in BinaryOp::ALL.into_iter().filter(|op| !op.is_logical()) {
                    let general = super::binary(op, a, la, b, lb).unwrap();
                    let fast = super::binary_flat(op, a, la.offset(), b, lb.offset(), n).unwrap();
                    let fast = Tensor::from_cpu_storage(fast, &shape).unwrap().to_f64_vec().unwrap();
                    let general = Tensor::from_cpu_storage(general, &shape).unwrap().to_f64_vec().unwrap();
                    for (f, g) in fast.iter().zip(&general) {
                        prop_assert!(f == g || (f.is_nan() && g.is_nan()), "{:?} {}: {} vs {}", dtype, op.name(), f, g);
                    }
                    for left in [false, true] {
                        let s = Tensor::full(&[], v, dtype);
                        let (c, lc) = s.cpu("t").unwrap();
                        let lc = lc.broadcast_to(&shape).unwrap();
                        let general = if left {
                            super::binary(op, c, &lc, a, la)
                        } else {
                            super::binary(op, a, la, c, &lc)
                        }
                        .unwrap();
                        let fast = super::scalar_flat(op, a, la.offset(), n, v, left).unwrap();
                        let fast = Tensor::from_cpu_storage(fast, &shape).unwrap().to_f64_vec().unwrap();
                        let general = Tensor::from_cpu_storage(general, &shape).unwrap().to_f64_vec().unwrap();
                        for (f, g) in fast.iter().zip(&general) {
                            prop_assert!(f == g || (f.is_nan() && g.is_nan()), "{:?} {} {}: {} vs {}", dtype, op.name(), left, f, g);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn large_broadcasts_run_in_parallel_and_match() {
        let x = make(&[300, 257], View::Contiguous, DType::F32, 1, -2.0, 2.0);
        let row = make(&[257], View::Sliced, DType::F32, 2, -2.0, 2.0);
        let col = make(&[300, 1], View::Contiguous, DType::F32, 3, -2.0, 2.0);
        let xt = make(&[300, 257], View::Permuted, DType::F32, 4, -2.0, 2.0);
        let s = Tensor::scalar(0.5f32);
        for (a, b) in [
            (&x, &row),
            (&x, &col),
            (&col, &row),
            (&x, &xt),
            (&s, &x),
            (&x, &x),
        ] {
            for op in [BinaryOp::Add, BinaryOp::Mul, BinaryOp::Gt] {
                check(op, a, b, 1e-6).unwrap();
            }
        }
        let mut acc = x.clone();
        acc.binary_(BinaryOp::Add, &row).unwrap();
        assert_eq!(
            acc.to_vec::<f32>().unwrap(),
            x.add(&row).unwrap().to_vec::<f32>().unwrap()
        );
    }
}
