//! Fused optimizer updates: one pass over memory per parameter, in place (copy-on-write when
//! the parameter's storage is shared). Eager optimizers and graph-mode training ops both call
//! these, so the two modes apply identical update formulas (PyTorch's, see each config).
//!
//! Every function checks all shapes and dtypes before it writes anything, so a failed update
//! leaves the parameter and its state untouched.
//!
//! State that decays (moments, averages, momentum buffers) is stored as zero once it falls
//! below the smallest normal number of its dtype (see [`flush`]): the updates of a parameter
//! whose gradient has stopped (a dead ReLU unit's weights, an always-zero input's) would
//! otherwise keep it subnormal for good, and x86 cores take a slow microcode path for every
//! vector that holds one: Adam's updates of the benchmarks' MLP took two to three times as
//! long (docs/benchmarks.md; TensorFlow's CPU kernels flush to zero as well). Only values
//! below 1.2e-38 (f32) or 2.2e-308 (f64) are changed; for the same reason a squared gradient
//! that would be subnormal is not added to Adam's or RMSprop's second moment.

use crate::cpu::matmul::{gemm, GemmScalar, MatMut, MatRef, Threads, SPLIT_WORK};
use crate::cpu::simd::dispatch;
use crate::{DType, Error, Float, Result, Tensor};

/// Adam / AdamW hyperparameters (PyTorch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: added to the gradient (Adam) or applied to the parameter (AdamW).
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay `p *= 1 - lr * wd`.
    pub decoupled: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }
}

/// SGD hyperparameters (PyTorch semantics).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 = plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig {
            lr: 0.01,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

/// RMSprop hyperparameters (PyTorch's defaults: lr 1e-2, alpha 0.99, eps 1e-8).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate.
    pub lr: f64,
    /// Smoothing constant of the squared-gradient average.
    pub alpha: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Momentum factor.
    pub momentum: f64,
    /// Normalize by the centered second moment (variance estimate).
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig {
            lr: 1e-2,
            alpha: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            momentum: 0.0,
            centered: false,
        }
    }
}

fn check(op: &'static str, param: &Tensor, other: &Tensor, what: &str) -> Result<()> {
    if other.shape() != param.shape() {
        return Err(Error::ShapeMismatch {
            op,
            lhs: param.shape().to_vec(),
            rhs: other.shape().to_vec(),
            hint: format!("{what} must have the parameter's shape"),
        });
    }
    if other.dtype() != param.dtype() {
        return Err(Error::DTypeMismatch {
            op,
            expected: format!("{} ({what} must match the parameter)", param.dtype()),
            got: other.dtype(),
        });
    }
    Ok(())
}

fn float_param(op: &'static str, p: &Tensor) -> Result<()> {
    if !matches!(p.dtype(), DType::F32 | DType::F64) {
        return Err(Error::UnsupportedDType {
            op,
            dtype: p.dtype(),
            device: p.device(),
        });
    }
    Ok(())
}

/// `x`, or zero where `|x| < below` (NaN and infinities are kept). Applied to optimizer state
/// as it is stored (`below` = the smallest normal number) and to a gradient before it is
/// squared, see the module documentation. Compiles to a compare and a blend, so the update
/// loops still vectorize.
#[inline(always)]
fn flush<T: Float>(x: T, below: T) -> T {
    if x < below && -x < below {
        T::ZERO
    } else {
        x
    }
}

/// Chunk size for parallel optimizer updates.
const CHUNK: usize = 1 << 14;

macro_rules! for_float {
    ($p:expr, |$T:ident| $body:expr) => {
        match $p.dtype() {
            DType::F32 => {
                type $T = f32;
                $body
            }
            _ => {
                type $T = f64;
                $body
            }
        }
    };
}

/// Float types the CPU optimizer loops run on (`f32`, `f64`).
trait Real: Float + GemmScalar + PartialOrd {
    /// The smallest positive normal number.
    const TINY: Self;
    /// `v` rounded to this type.
    fn of(v: f64) -> Self;
}

impl Real for f32 {
    const TINY: f32 = f32::MIN_POSITIVE;
    fn of(v: f64) -> f32 {
        v as f32
    }
}

impl Real for f64 {
    const TINY: f64 = f64::MIN_POSITIVE;
    fn of(v: f64) -> f64 {
        v
    }
}

/// The constants of one Adam/AdamW step in the parameter's dtype.
#[derive(Clone, Copy)]
struct AdamConsts<T> {
    b1: T,
    b2: T,
    /// A gradient this small adds a subnormal square to `v` (in f32, |g| below about
    /// 3e-18, as when a model has memorized its data): the term is dropped instead.
    sq_floor: T,
    step_size: T,
    bc2s: T,
    eps: T,
    wd: T,
    decay: T,
    l2: bool,
    decoupled: bool,
}

impl<T: Real> AdamConsts<T> {
    fn new(c: &AdamConfig, bc1: f64, bc2_sqrt: f64) -> AdamConsts<T> {
        let b2 = T::of(c.beta2);
        AdamConsts {
            b1: T::of(c.beta1),
            b2,
            sq_floor: (T::TINY / (<T as Float>::ONE - b2)).sqrt(),
            step_size: T::of(c.lr / bc1),
            bc2s: T::of(bc2_sqrt),
            eps: T::of(c.eps),
            wd: T::of(c.weight_decay),
            decay: T::of(1.0 - c.lr * c.weight_decay),
            l2: !c.decoupled && c.weight_decay != 0.0,
            decoupled: c.decoupled && c.weight_decay != 0.0,
        }
    }

    /// Updates `p`, `m` and `v` (of one length) with the gradient `g`.
    #[inline(always)]
    fn update(&self, p: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) {
        let AdamConsts {
            b1,
            b2,
            sq_floor,
            step_size,
            bc2s,
            eps,
            wd,
            decay,
            ..
        } = *self;
        let one = <T as Float>::ONE;
        let tiny = T::TINY;
        dispatch(
            #[inline(always)]
            || {
                // Zipped iterators (no indexing), and one loop per weight-decay mode with no
                // branch inside (a conditional store keeps the loop scalar), so that the loop
                // vectorizes.
                macro_rules! adam_loop {
                    ($l2:expr, $decoupled:expr) => {{
                        let it = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
                        for (((p, &g), m), v) in it {
                            let gi = if $l2 { g + wd * *p } else { g };
                            let pi = if $decoupled { *p * decay } else { *p };
                            let mi = flush(*m + (one - b1) * (gi - *m), tiny);
                            let gq = flush(gi, sq_floor);
                            let vi = flush(b2 * *v + (one - b2) * gq * gq, tiny);
                            *m = mi;
                            *v = vi;
                            *p = pi - step_size * mi / (vi.sqrt() / bc2s + eps);
                        }
                    }};
                }
                match (self.l2, self.decoupled) {
                    (false, false) => adam_loop!(false, false),
                    (true, false) => adam_loop!(true, false),
                    (false, true) => adam_loop!(false, true),
                    (true, true) => adam_loop!(true, true),
                }
            },
        )
    }
}

/// Checks Adam's arguments but the gradient; returns the bias corrections
/// `(1 - beta1^t, sqrt(1 - beta2^t))`.
fn adam_checks(
    op: &'static str,
    param: &Tensor,
    m: &Tensor,
    v: &Tensor,
    t: u64,
    c: &AdamConfig,
) -> Result<(f64, f64)> {
    float_param(op, param)?;
    check(op, param, m, "first moment")?;
    check(op, param, v, "second moment")?;
    if t == 0 {
        return Err(Error::invalid(op, "steps count from 1"));
    }
    let bc1 = 1.0 - c.beta1.powi(t as i32);
    let bc2_sqrt = (1.0 - c.beta2.powi(t as i32)).sqrt();
    Ok((bc1, bc2_sqrt))
}

/// One Adam/AdamW step at (1-based) step `t`: updates `param`, `m` and `v` in place.
pub fn adam_step(
    param: &mut Tensor,
    grad: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    t: u64,
    c: &AdamConfig,
) -> Result<()> {
    const OP: &str = "adam_step";
    check(OP, param, grad, "gradient")?;
    let (bc1, bc2_sqrt) = adam_checks(OP, param, m, v, t, c)?;
    #[cfg(feature = "cuda")]
    if param.device().is_cuda() {
        return crate::cuda::adam(param, grad, m, v, bc1, bc2_sqrt, c);
    }
    let g = grad.contiguous()?;
    for_float!(param, |T| {
        let gs = g
            .as_slice::<T>()
            .ok_or_else(|| Error::invalid(OP, "gradient is not on the CPU"))?;
        let ps = param.make_mut::<T>()?;
        let ms = m.make_mut::<T>()?;
        let vs = v.make_mut::<T>()?;
        let k = AdamConsts::<T>::new(c, bc1, bc2_sqrt);
        if ps.len() >= 2 * CHUNK {
            // The moments are split with the parameters: each task takes its own range of all
            // four buffers.
            let mut parts: Vec<_> = ps
                .chunks_mut(CHUNK)
                .zip(gs.chunks(CHUNK))
                .zip(ms.chunks_mut(CHUNK).zip(vs.chunks_mut(CHUNK)))
                .collect();
            crate::cpu::par::for_each_chunk(&mut parts, 1, |_, part| {
                for ((p, g), (m, v)) in part {
                    k.update(p, g, m, v);
                }
            });
        } else {
            k.update(ps, gs, ms, vs);
        }
    });
    Ok(())
}

/// Largest number of gradient elements [`adam_step_product`] computes at once on one thread
/// (a block of rows of the product, kept in a buffer of the thread for the next step). A
/// parameter whose rows are longer than `BLOCK / 32` takes [`adam_step`]'s path instead.
const BLOCK: usize = 1 << 17;

/// [`adam_step`] with the gradient given as the matrix product `lhs @ rhs` (2-D operands of
/// the parameter's dtype and device, their product of the parameter's 2-D shape): a linear
/// layer's weight gradient, the product of the layer's output gradient and its input.
///
/// On the CPU the product is never written out whole: the parameter's rows are cut into one
/// range per thread of the pool (for products of at least [`SPLIT_WORK`] multiply-adds), and
/// each thread computes the gradient of its rows in blocks of at most `BLOCK` elements
/// (one single-threaded `gemm` call each) and applies the update to those rows while the
/// block is in its cache. The gradient makes no trip through memory, the step has no barrier
/// between the product and the update, and a thread updates the rows whose gradient it
/// computed. Numbers: the same `gemm` kernels and Adam loop as the product followed by
/// [`adam_step`] (a product cut differently may round its sums differently, within
/// `gemm`'s accuracy). Other dtypes and devices, and rows longer than `BLOCK / 32`, compute
/// the product with [`Tensor::matmul`] and call [`adam_step`]. Like every update, nothing is
/// written when an argument is invalid.
pub fn adam_step_product(
    param: &mut Tensor,
    lhs: &Tensor,
    rhs: &Tensor,
    m: &mut Tensor,
    v: &mut Tensor,
    t: u64,
    c: &AdamConfig,
) -> Result<()> {
    const OP: &str = "adam_step";
    let (&[rows, inner], &[inner2, cols]) = (lhs.shape(), rhs.shape()) else {
        return Err(Error::invalid(
            OP,
            format!(
                "the gradient's factors must be matrices, got shapes {:?} and {:?}",
                lhs.shape(),
                rhs.shape()
            ),
        ));
    };
    if inner != inner2 || param.shape() != [rows, cols] {
        return Err(Error::ShapeMismatch {
            op: OP,
            lhs: lhs.shape().to_vec(),
            rhs: rhs.shape().to_vec(),
            hint: format!(
                "the gradient's factors must multiply to the parameter's shape {:?}",
                param.shape()
            ),
        });
    }
    for (what, x) in [
        ("the gradient's left factor", lhs),
        ("the gradient's right factor", rhs),
    ] {
        if x.dtype() != param.dtype() {
            return Err(Error::DTypeMismatch {
                op: OP,
                expected: format!("{} ({what} must match the parameter)", param.dtype()),
                got: x.dtype(),
            });
        }
        if x.device() != param.device() {
            return Err(Error::invalid(
                OP,
                format!(
                    "{what} is on {:?}, the parameter on {:?}",
                    x.device(),
                    param.device()
                ),
            ));
        }
    }
    let (bc1, bc2_sqrt) = adam_checks(OP, param, m, v, t, c)?;
    if !param.device().is_cpu() || cols > BLOCK / 32 || rows == 0 || cols == 0 {
        return adam_step(param, &lhs.matmul(rhs)?, m, v, t, c);
    }
    for_float!(param, |T| adam_product::<T>(
        param,
        [lhs, rhs],
        m,
        v,
        [rows, inner, cols],
        AdamConsts::<T>::new(c, bc1, bc2_sqrt)
    ))
}

/// The CPU half of [`adam_step_product`], its arguments checked.
fn adam_product<T: Real>(
    param: &mut Tensor,
    [lhs, rhs]: [&Tensor; 2],
    m: &mut Tensor,
    v: &mut Tensor,
    [rows, inner, cols]: [usize; 3],
    k: AdamConsts<T>,
) -> Result<()> {
    const OP: &str = "adam_step";
    fn mat<T: Real>(x: &Tensor, dims: [usize; 2]) -> Result<(&[T], usize, [usize; 2])> {
        let (s, l) = x.cpu(OP)?;
        let slice = s.as_slice::<T>()?;
        let strides = match *x.strides() {
            [a, b] => [a, b],
            _ => [0, 0],
        };
        // Checked here, before anything is written.
        MatRef::new(slice, l.offset(), dims, strides)?;
        Ok((slice, l.offset(), strides))
    }
    let (ls, lo, lst) = mat::<T>(lhs, [rows, inner])?;
    let (rs, ro, rst) = mat::<T>(rhs, [inner, cols])?;
    let ps = param.make_mut::<T>()?;
    let ms = m.make_mut::<T>()?;
    let vs = v.make_mut::<T>()?;
    let threads = rayon::current_num_threads();
    let parts = if rows * inner * cols >= SPLIT_WORK {
        threads.min(rows / 16).max(1)
    } else {
        1
    };
    let per = rows.div_ceil(parts);
    let block_rows = (BLOCK / cols).min(per).max(1);
    let mut tasks: Vec<_> = ps
        .chunks_mut(per * cols)
        .zip(ms.chunks_mut(per * cols).zip(vs.chunks_mut(per * cols)))
        .collect();
    let failed = std::sync::atomic::AtomicBool::new(false);
    crate::cpu::par::for_each_chunk(&mut tasks, 1, |i, task| {
        let Some((p, (m, v))) = task.first_mut() else {
            return;
        };
        with_scratch::<T>(block_rows * cols, |g| {
            let first = i * per;
            let mut done = 0;
            while done < p.len() {
                let r = ((p.len() - done) / cols).min(block_rows);
                let n = r * cols;
                // Rows `first + done / cols ..` of the product.
                let a = MatRef::new(ls, lo + (first + done / cols) * lst[0], [r, inner], lst);
                let b = MatRef::new(rs, ro, [inner, cols], rst);
                let ok = match (a, b, MatMut::row_major(&mut g[..n], r, cols)) {
                    (Ok(a), Ok(b), Ok(out)) => gemm(out, a, b, false, Threads::Single).is_ok(),
                    _ => false,
                };
                if !ok {
                    // Unreachable: the operands were checked whole above.
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    return;
                }
                let range = done..done + n;
                k.update(
                    &mut p[range.clone()],
                    &g[..n],
                    &mut m[range.clone()],
                    &mut v[range],
                );
                done += n;
            }
        });
    });
    if failed.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Error::invalid(
            OP,
            "the gradient's product failed (internal error)",
        ));
    }
    Ok(())
}

thread_local! {
    /// [`adam_product`]'s gradient blocks (at most `BLOCK` elements), kept from step to step.
    static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of `len` elements of `T` (`f32` or `f64`;
/// contents unspecified).
fn with_scratch<T: Real>(len: usize, f: impl FnOnce(&mut [T])) {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let words = (len * std::mem::size_of::<T>()).div_ceil(8);
            if buf.len() < words {
                buf.resize(words, 0.0);
            }
            // SAFETY: the buffer holds at least `len * size_of::<T>()` initialized bytes,
            // 8-byte aligned (enough for f32 and f64, for which every bit pattern is a value),
            // and the mutable borrow of `buf` is held for the slice's lifetime.
            let s = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<T>(), len) };
            f(s)
        }
        // Re-entered on this thread (a nested pool task): a buffer of its own.
        Err(_) => f(&mut vec![<T as Float>::ZERO; len]),
    })
}

/// One SGD step. `momentum_buffer` must be given when momentum is non-zero; pass
/// `first_step = true` on the first step so the buffer is initialized to the gradient (as
/// PyTorch does).
pub fn sgd_step(
    param: &mut Tensor,
    grad: &Tensor,
    momentum_buffer: Option<&mut Tensor>,
    first_step: bool,
    c: &SgdConfig,
) -> Result<()> {
    const OP: &str = "sgd_step";
    float_param(OP, param)?;
    check(OP, param, grad, "gradient")?;
    if c.momentum != 0.0 && momentum_buffer.is_none() {
        return Err(Error::invalid(OP, "momentum needs a momentum buffer"));
    }
    if let Some(b) = &momentum_buffer {
        check(OP, param, b, "momentum buffer")?;
    }
    #[cfg(feature = "cuda")]
    if param.device().is_cuda() {
        return crate::cuda::sgd(param, grad, momentum_buffer, first_step, c);
    }
    let g = grad.contiguous()?;
    for_float!(param, |T| {
        let gs = g
            .as_slice::<T>()
            .ok_or_else(|| Error::invalid(OP, "gradient is not on the CPU"))?;
        let ps = param.make_mut::<T>()?;
        let (lr, mom, damp, wd) = (
            c.lr as T,
            c.momentum as T,
            c.dampening as T,
            c.weight_decay as T,
        );
        let nesterov = c.nesterov;
        let tiny = T::MIN_POSITIVE;
        match momentum_buffer {
            Some(buf) if c.momentum != 0.0 => {
                let bs = buf.make_mut::<T>()?;
                dispatch(
                    #[inline(always)]
                    || {
                        for ((p, &g), b) in ps.iter_mut().zip(gs).zip(bs.iter_mut()) {
                            let d = g + wd * *p;
                            let nb = if first_step {
                                d
                            } else {
                                mom * *b + (1.0 - damp) * d
                            };
                            let nb = flush(nb, tiny);
                            *b = nb;
                            let step = if nesterov { d + mom * nb } else { nb };
                            *p -= lr * step;
                        }
                    },
                );
            }
            _ => dispatch(
                #[inline(always)]
                || {
                    for (p, &g) in ps.iter_mut().zip(gs) {
                        *p -= lr * (g + wd * *p);
                    }
                },
            ),
        }
    });
    Ok(())
}

/// One RMSprop step. `momentum_buffer` is needed when momentum is non-zero and `grad_avg`
/// when centered.
pub fn rmsprop_step(
    param: &mut Tensor,
    grad: &Tensor,
    square_avg: &mut Tensor,
    momentum_buffer: Option<&mut Tensor>,
    grad_avg: Option<&mut Tensor>,
    c: &RmsPropConfig,
) -> Result<()> {
    const OP: &str = "rmsprop_step";
    float_param(OP, param)?;
    check(OP, param, grad, "gradient")?;
    check(OP, param, square_avg, "square average")?;
    if c.momentum != 0.0 && momentum_buffer.is_none() {
        return Err(Error::invalid(OP, "momentum needs a momentum buffer"));
    }
    if c.centered && grad_avg.is_none() {
        return Err(Error::invalid(
            OP,
            "centered RMSprop needs a gradient average",
        ));
    }
    if let Some(b) = &momentum_buffer {
        check(OP, param, b, "momentum buffer")?;
    }
    if let Some(b) = &grad_avg {
        check(OP, param, b, "gradient average")?;
    }
    #[cfg(feature = "cuda")]
    if param.device().is_cuda() {
        return crate::cuda::rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, c);
    }
    let g = grad.contiguous()?;
    for_float!(param, |T| {
        let gs = g
            .as_slice::<T>()
            .ok_or_else(|| Error::invalid(OP, "gradient is not on the CPU"))?;
        let ps = param.make_mut::<T>()?;
        let sq = square_avg.make_mut::<T>()?;
        let mut mb = match momentum_buffer {
            Some(b) if c.momentum != 0.0 => Some(b.make_mut::<T>()?),
            _ => None,
        };
        let mut ga = match grad_avg {
            Some(b) if c.centered => Some(b.make_mut::<T>()?),
            _ => None,
        };
        let (lr, alpha, eps, wd, mom) = (
            c.lr as T,
            c.alpha as T,
            c.eps as T,
            c.weight_decay as T,
            c.momentum as T,
        );
        let tiny = T::MIN_POSITIVE;
        // Squares that would be subnormal are dropped, as in Adam.
        let sq_floor = (tiny / (1.0 - alpha)).sqrt();
        for i in 0..ps.len() {
            let gi = gs[i] + wd * ps[i];
            let gq = flush(gi, sq_floor);
            let s = flush(alpha * sq[i] + (1.0 - alpha) * gq * gq, tiny);
            sq[i] = s;
            let avg = match ga.as_deref_mut() {
                Some(ga) => {
                    let a = flush(ga[i] + (1.0 - alpha) * (gi - ga[i]), tiny);
                    ga[i] = a;
                    (s - a * a).sqrt() + eps
                }
                None => s.sqrt() + eps,
            };
            match mb.as_deref_mut() {
                Some(b) => {
                    let bi = flush(mom * b[i] + gi / avg, tiny);
                    b[i] = bi;
                    ps[i] -= lr * bi;
                }
                None => ps[i] -= lr * gi / avg,
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f64]) -> Tensor {
        Tensor::from_slice(v, &[v.len()]).unwrap()
    }

    #[test]
    fn adam_matches_the_formula() {
        let mut p = t(&[1.0, -2.0]);
        let g = t(&[0.5, 0.25]);
        let mut m = t(&[0.0, 0.0]);
        let mut v = t(&[0.0, 0.0]);
        let c = AdamConfig::default();
        adam_step(&mut p, &g, &mut m, &mut v, 1, &c).unwrap();
        // First step: m = 0.1 g, v = 0.001 g^2, update = lr * g/|g| (bias-corrected) ~ lr.
        let pv = p.to_vec::<f64>().unwrap();
        assert!((pv[0] - (1.0 - 1e-3)).abs() < 1e-7, "{pv:?}");
        assert!((pv[1] - (-2.0 - 1e-3)).abs() < 1e-7, "{pv:?}");
        assert!((m.to_vec::<f64>().unwrap()[0] - 0.05).abs() < 1e-15);
    }

    fn t32(v: &[f32]) -> Tensor {
        Tensor::from_slice(v, &[v.len()]).unwrap()
    }

    fn is_subnormal(t: &Tensor) -> bool {
        match t.dtype() {
            DType::F32 => t.to_vec::<f32>().unwrap().iter().any(|x| x.is_subnormal()),
            _ => t.to_vec::<f64>().unwrap().iter().any(|x| x.is_subnormal()),
        }
    }

    #[test]
    fn adam_stores_subnormal_moments_as_zero() {
        // A stopped gradient: the first moment decays by beta1 each step. Without the flush it
        // reaches the subnormal range and stays there for good (0.1 * m rounds to zero).
        let c = AdamConfig::default();
        for dtype in [DType::F32, DType::F64] {
            let mut p = Tensor::full(&[3], 0.5, dtype);
            let g = Tensor::from_slice(&[0.0f64, 0.0, 1e-3], &[3])
                .unwrap()
                .cast(dtype)
                .unwrap();
            let mut m = Tensor::from_slice(&[1e-3f64, -1e-3, 0.0], &[3])
                .unwrap()
                .cast(dtype)
                .unwrap();
            let mut v = Tensor::full(&[3], 1e-6, dtype);
            let steps = if dtype == DType::F32 { 1200 } else { 7500 };
            for step in 1..=steps {
                adam_step(&mut p, &g, &mut m, &mut v, step, &c).unwrap();
                assert!(!is_subnormal(&m), "{dtype} m subnormal at step {step}");
                assert!(!is_subnormal(&v), "{dtype} v subnormal at step {step}");
            }
            let mv = m.cast(DType::F64).unwrap().to_vec::<f64>().unwrap();
            assert_eq!(
                &mv[..2],
                &[0.0, 0.0],
                "{dtype}: decayed moments end at zero"
            );
            // The live gradient's moment converges to it.
            assert!((mv[2] - 1e-3).abs() < 1e-9, "{dtype}: {mv:?}");
        }
    }

    /// Deterministic values in [-1, 1) of `dtype`, shape `shape`.
    fn wavy(shape: &[usize], seed: usize, dtype: DType) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f64> = (0..n)
            .map(|i| ((i * 37 + seed * 11) % 101) as f64 / 50.5 - 1.0)
            .collect();
        Tensor::from_slice(&v, shape).unwrap().cast(dtype).unwrap()
    }

    fn close(a: &Tensor, b: &Tensor, tol: f64, what: &str) {
        let (a, b) = (a.to_f64_vec().unwrap(), b.to_f64_vec().unwrap());
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= tol * y.abs().max(1.0),
                "{what}: element {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn adam_with_a_product_gradient_matches_the_product_then_adam() {
        // A weight gradient as graph mode's backward pass makes it: the transposed output
        // gradient (a view) times the layer's input. Shapes that run on one thread, that split
        // over the pool (128x64x784: the benchmarks' first layer), that take several blocks
        // per thread (rows of 4,000: 32 rows a block), and whose rows are too long to fuse.
        let cases: [(usize, usize, usize); 5] = [
            (10, 64, 128),
            (128, 64, 784),
            (300, 20, 61),
            (70, 40, 4000),
            (3, 5, 5000),
        ];
        let configs = [
            AdamConfig::default(),
            AdamConfig {
                weight_decay: 0.1,
                ..AdamConfig::default()
            },
            AdamConfig {
                weight_decay: 0.1,
                decoupled: true,
                ..AdamConfig::default()
            },
        ];
        for dtype in [DType::F32, DType::F64] {
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-12 };
            for &(rows, batch, cols) in &cases {
                for c in &configs {
                    let dy = wavy(&[batch, rows], 1, dtype);
                    let x = wavy(&[batch, cols], 2, dtype);
                    let lhs = dy.t().unwrap();
                    let start = wavy(&[rows, cols], 3, dtype);
                    let (mut p1, mut m1, mut v1) = (
                        start.copy().unwrap(),
                        start.zeros_like(),
                        start.zeros_like(),
                    );
                    let (mut p2, mut m2, mut v2) = (
                        start.copy().unwrap(),
                        start.zeros_like(),
                        start.zeros_like(),
                    );
                    for step in 1..=3 {
                        adam_step_product(&mut p1, &lhs, &x, &mut m1, &mut v1, step, c).unwrap();
                        let g = lhs.matmul(&x).unwrap();
                        adam_step(&mut p2, &g, &mut m2, &mut v2, step, c).unwrap();
                    }
                    let what = format!("{dtype} {rows}x{batch}x{cols} {c:?}");
                    close(&p1, &p2, tol, &what);
                    close(&m1, &m2, tol, &what);
                    close(&v1, &v2, tol, &what);
                    // The update did move the parameter (three steps of about lr each, where
                    // the gradient is not zero).
                    let moved = p1
                        .to_f64_vec()
                        .unwrap()
                        .iter()
                        .zip(start.to_f64_vec().unwrap())
                        .filter(|(a, b)| (*a - b).abs() > 1e-3)
                        .count();
                    assert!(moved > rows * cols / 2, "{what}: {moved} moved");
                }
            }
        }
    }

    #[test]
    fn adam_with_a_product_gradient_is_the_same_on_any_pool() {
        // The rows are cut per thread of the pool: 1, 2, 3 and 5 threads give the numbers of
        // the product followed by Adam.
        let dy = wavy(&[64, 130], 4, DType::F32);
        let x = wavy(&[64, 333], 5, DType::F32);
        let lhs = dy.t().unwrap();
        let start = wavy(&[130, 333], 6, DType::F32);
        let c = AdamConfig::default();
        let mut want = (
            start.copy().unwrap(),
            start.zeros_like(),
            start.zeros_like(),
        );
        adam_step(
            &mut want.0,
            &lhs.matmul(&x).unwrap(),
            &mut want.1,
            &mut want.2,
            1,
            &c,
        )
        .unwrap();
        for threads in [1, 2, 3, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let (p, m, v) = pool.install(|| {
                let (mut p, mut m, mut v) = (
                    start.copy().unwrap(),
                    start.zeros_like(),
                    start.zeros_like(),
                );
                adam_step_product(&mut p, &lhs, &x, &mut m, &mut v, 1, &c).unwrap();
                (p, m, v)
            });
            close(&p, &want.0, 1e-5, &format!("{threads} threads"));
            close(&m, &want.1, 1e-5, &format!("{threads} threads"));
            close(&v, &want.2, 1e-5, &format!("{threads} threads"));
        }
    }

    #[test]
    fn adam_with_a_bad_product_gradient_fails_and_writes_nothing() {
        let c = AdamConfig::default();
        let start = wavy(&[4, 6], 7, DType::F32);
        let (mut p, mut m, mut v) = (
            start.copy().unwrap(),
            start.zeros_like(),
            start.zeros_like(),
        );
        let a = wavy(&[4, 3], 8, DType::F32);
        let b = wavy(&[3, 6], 9, DType::F32);
        let bad: [(Tensor, Tensor, u64, &str); 5] = [
            (wavy(&[4, 2], 8, DType::F32), b.clone(), 1, "multiply"),
            (a.clone(), wavy(&[3, 5], 9, DType::F32), 1, "multiply"),
            (a.reshape(&[12]).unwrap(), b.clone(), 1, "matrices"),
            (a.cast(DType::F64).unwrap(), b.clone(), 1, "left factor"),
            (a.clone(), b.clone(), 0, "steps count from 1"),
        ];
        for (l, r, step, msg) in bad {
            let e = adam_step_product(&mut p, &l, &r, &mut m, &mut v, step, &c).unwrap_err();
            assert!(e.to_string().contains(msg), "{e}");
            assert_eq!(p.to_vec::<f32>().unwrap(), start.to_vec::<f32>().unwrap());
            assert!(m.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0));
            assert!(v.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0));
        }
        // A moment of the wrong shape.
        let mut short = Tensor::zeros(&[4, 5], DType::F32);
        assert!(adam_step_product(&mut p, &a, &b, &mut short, &mut v, 1, &c).is_err());
        assert_eq!(p.to_vec::<f32>().unwrap(), start.to_vec::<f32>().unwrap());
    }

    #[test]
    fn flush_changes_only_subnormal_state() {
        let c = AdamConfig::default();
        // m decays to 0.9 m: 1e-38 (subnormal in f32) becomes zero, 1e-37 (normal) stays,
        // NaN stays NaN.
        let mut p = t32(&[1.0, 1.0, 1.0]);
        let mut m = t32(&[1e-38, 1e-37, f32::NAN]);
        let mut v = t32(&[1.0, 1.0, 1.0]);
        adam_step(&mut p, &t32(&[0.0; 3]), &mut m, &mut v, 5, &c).unwrap();
        let mv = m.to_vec::<f32>().unwrap();
        assert_eq!(mv[0], 0.0);
        assert_eq!(mv[1], 1e-37f32 + 0.1 * (0.0 - 1e-37f32));
        assert!(mv[2].is_nan());
        // The same values in f64 are normal and are kept.
        let mut p = t(&[1.0]);
        let mut m = t(&[1e-38]);
        let mut v = t(&[1.0]);
        adam_step(&mut p, &t(&[0.0]), &mut m, &mut v, 5, &c).unwrap();
        assert_eq!(m.to_vec::<f64>().unwrap()[0], 1e-38 + 0.1 * (0.0 - 1e-38));
        let mut m = t(&[1e-309]);
        adam_step(&mut p, &t(&[0.0]), &mut m, &mut v, 6, &c).unwrap();
        assert_eq!(m.to_vec::<f64>().unwrap()[0], 0.0);
    }

    #[test]
    fn squares_that_would_be_subnormal_are_not_added() {
        let c = AdamConfig::default();
        // (1 - 0.999) * g * g: 1e-41 for g = 1e-19 (dropped), 1e-33 for g = 1e-15 (kept).
        let mut p = t32(&[1.0, 1.0]);
        let mut m = t32(&[0.0, 0.0]);
        let mut v = t32(&[0.0, 0.0]);
        let g = t32(&[1e-19, 1e-15]);
        adam_step(&mut p, &g, &mut m, &mut v, 1, &c).unwrap();
        let vv = v.to_vec::<f32>().unwrap();
        assert_eq!(vv[0], 0.0);
        assert_eq!(vv[1], (1.0 - 0.999f32) * 1e-15 * 1e-15);
        // The first moment still takes the small gradient.
        assert_eq!(m.to_vec::<f32>().unwrap()[0], (1.0 - 0.9f32) * 1e-19);
        let rms = RmsPropConfig::default();
        let mut p = t32(&[1.0, 1.0]);
        let mut sq = t32(&[0.0, 0.0]);
        let g = t32(&[1e-19, 1e-15]);
        rmsprop_step(&mut p, &g, &mut sq, None, None, &rms).unwrap();
        let sv = sq.to_vec::<f32>().unwrap();
        assert_eq!(sv[0], 0.0);
        assert_eq!(sv[1], (1.0 - 0.99f32) * 1e-15 * 1e-15);
    }

    #[test]
    fn sgd_and_rmsprop_store_subnormal_state_as_zero() {
        let sgd = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        };
        let mut p = t32(&[1.0, 1.0]);
        let mut b = t32(&[1e-38, 1e-30]);
        sgd_step(&mut p, &t32(&[0.0, 0.0]), Some(&mut b), false, &sgd).unwrap();
        assert_eq!(b.to_vec::<f32>().unwrap(), vec![0.0, 0.9 * 1e-30]);
        let rms = RmsPropConfig {
            lr: 0.01,
            momentum: 0.5,
            centered: true,
            ..Default::default()
        };
        let mut p = t32(&[1.0, 1.0]);
        let mut sq = t32(&[1e-38, 1.0]);
        let mut mb = t32(&[1e-38, 1.0]);
        let mut ga = t32(&[1e-38, 0.0]);
        let g = t32(&[0.0, 0.0]);
        rmsprop_step(&mut p, &g, &mut sq, Some(&mut mb), Some(&mut ga), &rms).unwrap();
        assert_eq!(sq.to_vec::<f32>().unwrap(), vec![0.0, 0.99]);
        assert_eq!(ga.to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
        assert_eq!(mb.to_vec::<f32>().unwrap(), vec![0.0, 0.5]);
    }

    #[test]
    fn sgd_momentum_and_nesterov() {
        let c = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            nesterov: true,
            ..Default::default()
        };
        let mut p = t(&[1.0]);
        let mut b = t(&[0.0]);
        sgd_step(&mut p, &t(&[1.0]), Some(&mut b), true, &c).unwrap();
        // buf = 1, step = 1 + 0.9 = 1.9
        assert!((p.to_vec::<f64>().unwrap()[0] - 0.81).abs() < 1e-12);
        assert!(sgd_step(&mut p, &t(&[1.0]), None, false, &c).is_err());
    }

    #[test]
    fn failed_update_leaves_state_untouched() {
        let mut p = t(&[1.0, 2.0]);
        let before = p.clone();
        let mut m = t(&[0.0, 0.0]);
        let mut v = t(&[0.0]);
        assert!(adam_step(
            &mut p,
            &t(&[1.0, 1.0]),
            &mut m,
            &mut v,
            1,
            &AdamConfig::default()
        )
        .is_err());
        assert_eq!(p.to_vec::<f64>().unwrap(), before.to_vec::<f64>().unwrap());
    }

    #[test]
    fn shared_parameter_is_copied_not_mutated() {
        let mut p = t(&[1.0]);
        let alias = p.clone();
        sgd_step(
            &mut p,
            &t(&[1.0]),
            None,
            true,
            &SgdConfig {
                lr: 0.5,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(alias.to_vec::<f64>().unwrap(), vec![1.0]);
        assert_eq!(p.to_vec::<f64>().unwrap(), vec![0.5]);
    }

    #[test]
    fn rmsprop_centered_momentum() {
        let c = RmsPropConfig {
            lr: 0.01,
            momentum: 0.5,
            centered: true,
            ..Default::default()
        };
        let mut p = t(&[1.0]);
        let mut sq = t(&[0.0]);
        let mut mb = t(&[0.0]);
        let mut ga = t(&[0.0]);
        rmsprop_step(
            &mut p,
            &t(&[2.0]),
            &mut sq,
            Some(&mut mb),
            Some(&mut ga),
            &c,
        )
        .unwrap();
        let s = 0.01 * 4.0;
        let a: f64 = 0.01 * 2.0;
        let avg = (s - a * a).sqrt() + 1e-8;
        assert!((p.to_vec::<f64>().unwrap()[0] - (1.0 - 0.01 * 2.0 / avg)).abs() < 1e-12);
    }
}
