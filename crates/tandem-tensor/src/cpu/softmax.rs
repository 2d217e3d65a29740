//! CPU kernels: softmax, log-softmax and cross-entropy from logits, fused per row: one pass
//! for the max, one for the sum of exponentials (which for softmax also stores them), one to
//! normalize. Cross-entropy never materializes the log-softmax: per row it needs the max, the
//! log-sum-exp and the sum of the logits, then picks the target's logit.
//!
//! The data is contiguous and viewed as `[outer, n, inner]` with the softmax axis of size `n`.
//! When `inner == 1` (the last axis) rows are reduced with many accumulators; otherwise the
//! kernel walks the `n` rows of each `[n, inner]` block, keeping `inner`-wide running
//! maxima and sums, so that every loop runs over contiguous memory. Rows shorter than
//! [`LANES`] along the last axis (the ten class scores of a classifier) would leave the vector
//! lanes idle and run every `exp` on its own, so they are taken [`ROW_GROUP`] at a time and
//! transposed into a `[n, ROW_GROUP]` block, which the block kernels reduce with the lanes
//! running across rows. The sums run in the same order either way, so the results are the same
//! bits.

use super::reduce::Acc;
use super::strided::output_vec;
use super::unary::UnaryFloat;
use crate::cpu::par::for_each_chunk;
use crate::cpu::simd::{dispatch, parallel_chunks};
use crate::{Error, Result};

/// Accumulators per row reduction.
const LANES: usize = 32;

/// Rows shorter than [`LANES`] are reduced this many at a time, transposed (see the module
/// documentation).
const ROW_GROUP: usize = 64;

/// Copies the row-major `[rows, cols]` matrix `src` into `dst` as `[cols, rows]`.
#[inline(always)]
fn transpose<F: Copy>(src: &[F], rows: usize, cols: usize, dst: &mut [F]) {
    for (r, row) in src.chunks_exact(cols).take(rows).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            dst[c * rows + r] = v;
        }
    }
}

/// Float types the softmax kernels run in (`f32` with the fast `exp`/`ln`, `f64`).
pub(crate) trait SoftmaxFloat:
    UnaryFloat + Acc + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self>
{
}
impl SoftmaxFloat for f32 {}
impl SoftmaxFloat for f64 {}

/// Combines the `LANES` accumulators pairwise (halving the array each round, so that each
/// round is one vector operation) with `op`.
#[inline(always)]
fn fold_lanes<F: SoftmaxFloat>(mut acc: [F; LANES], op: impl Fn(F, F) -> F) -> F {
    let mut width = LANES / 2;
    while width > 0 {
        for j in 0..width {
            acc[j] = op(acc[j], acc[j + width]);
        }
        width /= 2;
    }
    acc[0]
}

/// Largest element of a row (NaN wins).
#[inline(always)]
fn row_max<F: SoftmaxFloat>(x: &[F]) -> F {
    if x.len() < LANES {
        // Short rows (class scores of a small classifier): one accumulator; setting up and
        // combining many would cost more than the row.
        return x.iter().fold(F::LOWEST, |m, &v| m.max_nan(v));
    }
    let mut acc = [F::LOWEST; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            acc[j] = acc[j].max_nan(c[j]);
        }
    }
    for (j, &v) in chunks.remainder().iter().enumerate() {
        acc[j] = acc[j].max_nan(v);
    }
    fold_lanes(acc, |a, b| a.max_nan(b))
}

/// Sums of `exp(x - m)` and of `x - m` over a row; stores the exponentials in `store` if given.
#[inline(always)]
fn exp_sums<F: SoftmaxFloat>(x: &[F], m: F, store: Option<&mut [F]>) -> (F, F) {
    if x.len() < LANES {
        let (mut e, mut d) = (<F as Acc>::ZERO, <F as Acc>::ZERO);
        match store {
            Some(out) => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = (v - m).exp();
                }
                for &v in out.iter() {
                    e = e + v;
                }
            }
            None => {
                for &v in x {
                    let diff = v - m;
                    e = e + diff.exp();
                    d = d + diff;
                }
            }
        }
        return (e, d);
    }
    let mut se = [<F as Acc>::ZERO; LANES];
    let mut sd = [<F as Acc>::ZERO; LANES];
    let split = x.len() - x.len() % LANES;
    match store {
        Some(out) => {
            for (c, o) in x[..split]
                .chunks_exact(LANES)
                .zip(out[..split].chunks_exact_mut(LANES))
            {
                for j in 0..LANES {
                    let e = (c[j] - m).exp();
                    o[j] = e;
                    se[j] = se[j] + e;
                }
            }
            for (j, (&v, o)) in x[split..].iter().zip(&mut out[split..]).enumerate() {
                let e = (v - m).exp();
                *o = e;
                se[j] = se[j] + e;
            }
        }
        None => {
            for c in x[..split].chunks_exact(LANES) {
                for j in 0..LANES {
                    let d = c[j] - m;
                    se[j] = se[j] + d.exp();
                    sd[j] = sd[j] + d;
                }
            }
            for (j, &v) in x[split..].iter().enumerate() {
                let d = v - m;
                se[j] = se[j] + d.exp();
                sd[j] = sd[j] + d;
            }
        }
    }
    (fold_lanes(se, |a, b| a + b), fold_lanes(sd, |a, b| a + b))
}

/// Softmax (or log-softmax) of one contiguous row.
#[inline(always)]
fn softmax_row<F: SoftmaxFloat>(x: &[F], out: &mut [F], log: bool) {
    let m = row_max(x);
    if log {
        let (s, _) = exp_sums(x, m, None);
        let ls = s.ln();
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - m) - ls;
        }
    } else {
        let (s, _) = exp_sums(x, m, Some(&mut *out));
        let inv = <F as Acc>::ONE / s;
        for o in out.iter_mut() {
            *o = *o * inv;
        }
    }
}

/// Softmax (or log-softmax) along the rows of an `[n, inner]` block, using `scratch` (at
/// least `2 * inner`) for the running maxima and sums.
#[inline(always)]
fn softmax_block<F: SoftmaxFloat>(
    x: &[F],
    out: &mut [F],
    inner: usize,
    log: bool,
    scratch: &mut [F],
) {
    let (mx, sum) = scratch.split_at_mut(inner);
    let sum = &mut sum[..inner];
    mx.fill(F::LOWEST);
    for row in x.chunks_exact(inner) {
        for (m, &v) in mx.iter_mut().zip(row) {
            *m = m.max_nan(v);
        }
    }
    sum.fill(<F as Acc>::ZERO);
    if log {
        for row in x.chunks_exact(inner) {
            for ((s, &m), &v) in sum.iter_mut().zip(&*mx).zip(row) {
                *s = *s + (v - m).exp();
            }
        }
        sum.iter_mut().for_each(|s| *s = s.ln());
        for (row, o) in x.chunks_exact(inner).zip(out.chunks_exact_mut(inner)) {
            for (((o, &v), &m), &ls) in o.iter_mut().zip(row).zip(&*mx).zip(&*sum) {
                *o = (v - m) - ls;
            }
        }
    } else {
        for (row, o) in x.chunks_exact(inner).zip(out.chunks_exact_mut(inner)) {
            for (((o, s), &m), &v) in o.iter_mut().zip(sum.iter_mut()).zip(&*mx).zip(row) {
                let e = (v - m).exp();
                *o = e;
                *s = *s + e;
            }
        }
        sum.iter_mut().for_each(|s| *s = <F as Acc>::ONE / *s);
        for o in out.chunks_exact_mut(inner) {
            for (o, &inv) in o.iter_mut().zip(&*sum) {
                *o = *o * inv;
            }
        }
    }
}

/// Softmax (or log-softmax) of rows of `n < LANES` elements, [`ROW_GROUP`] rows at a time
/// through a transposed block.
fn short_rows<F: SoftmaxFloat>(x: &[F], out: &mut [F], n: usize, log: bool) {
    let mut buf = vec![<F as Acc>::ZERO; 2 * n * ROW_GROUP];
    let mut scratch = [<F as Acc>::ZERO; 2 * ROW_GROUP];
    dispatch(
        #[inline(always)]
        || {
            let (tin, tout) = buf.split_at_mut(n * ROW_GROUP);
            for (o, x) in out.chunks_mut(n * ROW_GROUP).zip(x.chunks(n * ROW_GROUP)) {
                let g = o.len() / n;
                let (tin, tout) = (&mut tin[..n * g], &mut tout[..n * g]);
                transpose(x, g, n, tin);
                softmax_block(tin, tout, g, log, &mut scratch[..2 * g]);
                transpose(tout, n, g, o);
            }
        },
    )
}

/// Number of `[n, inner]` blocks per parallel task.
fn blocks_per_task(outer: usize, total: usize) -> usize {
    outer.div_ceil(parallel_chunks(total).min(outer).max(1))
}

/// Softmax (or log-softmax when `log`) of contiguous data viewed as `[outer, n, inner]`, along
/// the middle axis. Parallel over the outer index.
pub(crate) fn softmax<F: SoftmaxFloat>(
    x: &[F],
    outer: usize,
    n: usize,
    inner: usize,
    log: bool,
) -> Vec<F> {
    let mut out = output_vec::<F>(x.len());
    let block = n * inner;
    if block == 0 {
        return out;
    }
    let per = blocks_per_task(outer, x.len()) * block;
    for_each_chunk(&mut out, per, |i, o| {
        let x = &x[i * per..i * per + o.len()];
        if inner == 1 && n < LANES {
            return short_rows(x, o, n, log);
        }
        let mut scratch = vec![<F as Acc>::ZERO; if inner > 1 { 2 * inner } else { 0 }];
        dispatch(
            #[inline(always)]
            || {
                for (o, x) in o.chunks_exact_mut(block).zip(x.chunks_exact(block)) {
                    if inner == 1 {
                        softmax_row(x, o, log);
                    } else {
                        softmax_block(x, o, inner, log, &mut scratch);
                    }
                }
            },
        )
    });
    out
}

/// Label-smoothed loss from the row statistics: the target's shifted logit `xt - m`, the
/// log-sum-exp `lse` of the shifted logits and their sum `sd` over `c` classes.
#[inline(always)]
fn smoothed_loss<F: SoftmaxFloat>(shifted_target: F, lse: F, sd: F, c: F, eps: F) -> F {
    let logp_target = shifted_target - lse;
    let sum_logp = sd - c * lse;
    -((<F as Acc>::ONE - eps) * logp_target) - eps / c * sum_logp
}

/// Cross-entropy from logits, contiguous and viewed as `[n, c, s]` (class axis in the middle),
/// with class indices `target` of shape `[n, s]`: per sample
/// `-(1-eps) * logp[target] - eps/c * sum_k logp[k]`, or 0 where `target == ignore_index`.
/// A target outside `0..c` (other than `ignore_index`) is [`Error::IndexOutOfRange`].
pub(crate) fn cross_entropy<F: SoftmaxFloat>(
    x: &[F],
    target: &[i64],
    c: usize,
    s: usize,
    ignore_index: i64,
    eps: F,
) -> Result<Vec<F>> {
    if let Some(&bad) = target
        .iter()
        .find(|&&t| t != ignore_index && (t < 0 || t as u64 >= c as u64))
    {
        return Err(Error::IndexOutOfRange {
            op: "cross_entropy",
            index: bad,
            size: c,
        });
    }
    let mut out = vec![<F as Acc>::ZERO; target.len()];
    let block = c * s;
    if block == 0 || target.is_empty() {
        return Ok(out);
    }
    let n = target.len() / s;
    let cf = F::from_f64(c as f64);
    let per = blocks_per_task(n, x.len());
    for_each_chunk(&mut out, per * s, |i, out| {
        let x = &x[i * per * block..][..out.len() / s * block];
        let target = &target[i * per * s..][..out.len()];
        if s == 1 && c < LANES {
            return ce_short_rows(x, target, out, c, ignore_index, cf, eps);
        }
        let mut scratch = vec![<F as Acc>::ZERO; if s > 1 { 3 * s } else { 0 }];
        dispatch(
            #[inline(always)]
            || {
                for ((o, x), t) in out
                    .chunks_exact_mut(s)
                    .zip(x.chunks_exact(block))
                    .zip(target.chunks_exact(s))
                {
                    if s == 1 {
                        if t[0] != ignore_index {
                            let m = row_max(x);
                            let (se, sd) = exp_sums(x, m, None);
                            let xt = x[t[0] as usize] - m;
                            o[0] = smoothed_loss(xt, se.ln(), sd, cf, eps);
                        }
                    } else {
                        ce_block(x, t, o, s, ignore_index, cf, eps, &mut scratch);
                    }
                }
            },
        )
    });
    Ok(out)
}

/// Cross-entropy of rows of `c < LANES` logits (one target each), [`ROW_GROUP`] rows at a
/// time through a transposed block.
fn ce_short_rows<F: SoftmaxFloat>(
    x: &[F],
    target: &[i64],
    out: &mut [F],
    c: usize,
    ignore_index: i64,
    cf: F,
    eps: F,
) {
    let mut buf = vec![<F as Acc>::ZERO; c * ROW_GROUP];
    let mut scratch = [<F as Acc>::ZERO; 3 * ROW_GROUP];
    dispatch(
        #[inline(always)]
        || {
            for ((o, x), t) in out
                .chunks_mut(ROW_GROUP)
                .zip(x.chunks(c * ROW_GROUP))
                .zip(target.chunks(ROW_GROUP))
            {
                let g = o.len();
                let block = &mut buf[..c * g];
                transpose(x, g, c, block);
                ce_block(block, t, o, g, ignore_index, cf, eps, &mut scratch[..3 * g]);
            }
        },
    )
}

/// Cross-entropy of one `[c, s]` block of logits against `s` targets.
#[inline(always)]
fn ce_block<F: SoftmaxFloat>(
    x: &[F],
    target: &[i64],
    out: &mut [F],
    s: usize,
    ignore_index: i64,
    cf: F,
    eps: F,
    scratch: &mut [F],
) {
    let (mx, rest) = scratch.split_at_mut(s);
    let (se, sd) = rest.split_at_mut(s);
    mx.fill(F::LOWEST);
    for row in x.chunks_exact(s) {
        for (m, &v) in mx.iter_mut().zip(row) {
            *m = m.max_nan(v);
        }
    }
    se.fill(<F as Acc>::ZERO);
    sd.fill(<F as Acc>::ZERO);
    for row in x.chunks_exact(s) {
        for (((e, d), &m), &v) in se.iter_mut().zip(sd.iter_mut()).zip(&*mx).zip(row) {
            let diff = v - m;
            *e = *e + diff.exp();
            *d = *d + diff;
        }
    }
    for (j, (o, &t)) in out.iter_mut().zip(target).enumerate() {
        if t != ignore_index {
            let xt = x[t as usize * s + j] - mx[j];
            *o = smoothed_loss(xt, se[j].ln(), sd[j], cf, eps);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::strided::testing::*;
    use crate::{DType, Error, Tensor};
    use proptest::prelude::*;
    use std::f64::consts::LN_2;

    fn t32(v: Vec<f32>, s: &[usize]) -> Tensor {
        Tensor::from_vec(v, s).unwrap()
    }

    fn assert_close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (*g as f64 - w).abs() <= tol * w.abs().max(1.0),
                "{got:?} vs {want:?}"
            );
        }
    }

    /// f64 reference: softmax along `axis`, from the elements in row-major order.
    fn reference(t: &Tensor, axis: usize, log: bool) -> Vec<f64> {
        let shape = t.shape();
        let x = t.to_f64_vec().unwrap();
        let (n, inner) = if shape.is_empty() {
            (1, 1)
        } else {
            (shape[axis], shape[axis + 1..].iter().product())
        };
        let mut out = vec![0.0; x.len()];
        for base in (0..x.len()).filter(|i| (i / inner) % n == 0) {
            let idx: Vec<usize> = (0..n).map(|k| base + k * inner).collect();
            let m = idx.iter().map(|&i| x[i]).fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = idx.iter().map(|&i| (x[i] - m).exp()).sum();
            for &i in &idx {
                out[i] = if log {
                    x[i] - m - s.ln()
                } else {
                    (x[i] - m).exp() / s
                };
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn softmax_matches_reference(shape in arb_shape(), view in arb_view(), axis in 0usize..4, seed in any::<u64>()) {
            let axis = axis % shape.len().max(1);
            for (dtype, tol) in [(DType::F32, 2e-6), (DType::F64, 1e-13), (DType::BF16, 2e-2)] {
                let t = make(&shape, view, dtype, seed, -20.0, 20.0);
                for log in [false, true] {
                    let got = if log { t.log_softmax(axis) } else { t.softmax(axis) }.unwrap();
                    prop_assert_eq!(got.shape(), t.shape());
                    prop_assert_eq!(got.dtype(), dtype);
                    let want = reference(&t, axis, log);
                    for (g, w) in got.to_f64_vec().unwrap().into_iter().zip(want) {
                        // Log-probabilities reach -40: compare them on an absolute scale.
                        let scale = if log { w.abs().max(1.0) } else { 1.0 };
                        prop_assert!((g - w).abs() <= tol * scale + 1e-30, "{:?} {} vs {}", dtype, g, w);
                    }
                }
            }
        }

        #[test]
        fn cross_entropy_matches_log_softmax(
            n in 1usize..5, c in 1usize..40, extra in prop::collection::vec(1usize..4, 0..3),
            seed in any::<u64>(), eps in prop::sample::select(vec![0.0, 0.1, 1.0]), ignore_some in any::<bool>()
        ) {
            let mut shape = vec![n, c];
            shape.extend(&extra);
            let logits = make(&shape, View::Sliced, DType::F64, seed, -10.0, 10.0);
            let mut tshape = vec![n];
            tshape.extend(&extra);
            let ignore = if ignore_some { 0 } else { -100 };
            let target = make(&tshape, View::Contiguous, DType::I64, seed ^ 3, 0.0, c as f64 - 1.0);
            let got = logits.cross_entropy(&target, ignore, eps).unwrap();
            prop_assert_eq!(got.shape(), tshape.as_slice());
            let logp = logits.log_softmax(1).unwrap().to_f64_vec().unwrap();
            let ts = target.to_vec::<i64>().unwrap();
            let s: usize = extra.iter().product();
            for (i, (g, &t)) in got.to_vec::<f64>().unwrap().into_iter().zip(&ts).enumerate() {
                let (sample, j) = (i / s, i % s);
                let at = |k: usize| logp[(sample * c + k) * s + j];
                let want = if t == ignore {
                    0.0
                } else {
                    -(1.0 - eps) * at(t as usize) - eps / c as f64 * (0..c).map(at).sum::<f64>()
                };
                prop_assert!((g - want).abs() <= 1e-12 * want.abs().max(1.0), "{} vs {}", g, want);
            }
        }
    }

    /// Rows shorter than the lanes go through transposed groups of `ROW_GROUP` rows: 150 rows
    /// are two full groups and a partial one, and every row must come out as it does alone.
    #[test]
    fn short_rows_in_groups_match_single_rows() {
        let (rows, c) = (150, 10);
        let t = make(&[rows, c], View::Contiguous, DType::F32, 7, -30.0, 30.0);
        let x = t.to_vec::<f32>().unwrap();
        let targets: Vec<i64> = (0..rows as i64)
            .map(|i| if i % 7 == 3 { -100 } else { i % c as i64 })
            .collect();
        let target = Tensor::from_vec(targets.clone(), &[rows]).unwrap();
        for log in [false, true] {
            let all = if log { t.log_softmax(1) } else { t.softmax(1) }.unwrap();
            let all = all.to_vec::<f32>().unwrap();
            let want = reference(&t, 1, log);
            for r in 0..rows {
                let row = t32(x[r * c..(r + 1) * c].to_vec(), &[1, c]);
                let one = if log {
                    row.log_softmax(1)
                } else {
                    row.softmax(1)
                }
                .unwrap();
                assert_eq!(
                    one.to_vec::<f32>().unwrap(),
                    &all[r * c..(r + 1) * c],
                    "row {r}"
                );
            }
            for (g, w) in all.iter().zip(&want) {
                assert!(
                    (*g as f64 - w).abs() <= 2e-6 * w.abs().max(1.0),
                    "{g} vs {w}"
                );
            }
        }
        for eps in [0.0, 0.1] {
            let got = t
                .cross_entropy(&target, -100, eps)
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            let logp = reference(&t, 1, true);
            for (r, (&g, &tr)) in got.iter().zip(&targets).enumerate() {
                let want = if tr == -100 {
                    0.0
                } else {
                    let at = |k: usize| logp[r * c + k];
                    -(1.0 - eps) * at(tr as usize) - eps / c as f64 * (0..c).map(at).sum::<f64>()
                };
                assert!(
                    (g as f64 - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "row {r}: {g} vs {want}"
                );
            }
        }
    }

    #[test]
    fn hand_computed_values() {
        let x = t32(vec![1.0, 2.0, 3.0], &[3]);
        let p = [0.09003057317038043, 0.24472847105479764, 0.6652409557748218];
        let l = [
            -2.4076059644443806,
            -1.4076059644443804,
            -0.4076059644443804,
        ];
        assert_close(&x.softmax(0).unwrap().to_vec().unwrap(), &p, 1e-6);
        assert_close(&x.log_softmax(0).unwrap().to_vec().unwrap(), &l, 1e-6);
        // Along axis 0 of a [3, 2] matrix whose columns are the same row.
        let m = t32(vec![1.0, 1.0, 2.0, 2.0, 3.0, 3.0], &[3, 2]);
        let pm: Vec<f64> = p.iter().flat_map(|&v| [v, v]).collect();
        assert_close(&m.softmax(0).unwrap().to_vec().unwrap(), &pm, 1e-6);
        assert_eq!(
            Tensor::scalar(5.0f32).softmax(0).unwrap().item().unwrap(),
            1.0
        );
        assert_eq!(
            Tensor::scalar(5.0f32)
                .log_softmax(0)
                .unwrap()
                .item()
                .unwrap(),
            0.0
        );
    }

    #[test]
    fn huge_logits_stay_finite() {
        let x = t32(vec![1e4, -1e4, 0.0, 1e4, 1e4, -1e4], &[2, 3]);
        let p = x.softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(p, vec![1.0, 0.0, 0.0, 0.5, 0.5, 0.0]);
        let l = x.log_softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert!(l.iter().all(|v| v.is_finite()), "{l:?}");
        assert_close(&l, &[0.0, -2e4, -1e4, -LN_2, -LN_2, -2e4 - LN_2], 1e-6);
        let lt = x
            .t()
            .unwrap()
            .log_softmax(0)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(lt.iter().all(|v| v.is_finite()), "{lt:?}");
        let target = Tensor::from_vec(vec![1i64, 2], &[2]).unwrap();
        let ce = x
            .cross_entropy(&target, -100, 0.1)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        assert!(ce.iter().all(|v| v.is_finite()), "{ce:?}");
        assert_close(
            &ce,
            &[
                0.9 * 2e4 + 0.1 / 3.0 * 3e4,
                0.9 * (2e4 + LN_2) + 0.1 / 3.0 * (2e4 + 3.0 * LN_2),
            ],
            1e-6,
        );
    }

    #[test]
    fn cross_entropy_hand_values() {
        let x = t32(vec![1.0, 2.0, 3.0, 1.0, 1.0, 1.0], &[2, 3]);
        let t = Tensor::from_vec(vec![2i64, 0], &[2]).unwrap();
        let loss = x.cross_entropy(&t, -100, 0.0).unwrap();
        assert_eq!(loss.dtype(), DType::F32);
        assert_close(
            &loss.to_vec().unwrap(),
            &[0.4076059644443804, 1.0986122886681098],
            1e-6,
        );
        let loss = x.cross_entropy(&t, -100, 0.1).unwrap();
        assert_close(
            &loss.to_vec().unwrap(),
            &[0.5076059644443804, 1.0986122886681098],
            1e-6,
        );
        // ignore_index, int32 targets.
        let t32t = Tensor::from_vec(vec![0i32, 7], &[2]).unwrap();
        let loss = x.cross_entropy(&t32t, 7, 0.25).unwrap();
        assert_close(&loss.to_vec().unwrap(), &[2.1576059644443806, 0.0], 1e-6);
        // [C] logits with a 0-d target.
        let one = t32(vec![1.0, 2.0, 3.0], &[3]);
        let loss = one.cross_entropy(&Tensor::scalar(2i64), -100, 0.0).unwrap();
        assert_eq!(loss.shape(), &[] as &[usize]);
        assert!((loss.item().unwrap() - 0.4076059644443804).abs() < 1e-6);
        // Class axis 1 with an extra dimension: logits [2, 3, 2], targets [2, 2].
        let x = t32(
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, -1.0, 0.5, 2.0, -2.0, 0.0, 0.0],
            &[2, 3, 2],
        );
        let t = Tensor::from_vec(vec![0i64, 2, 1, -100], &[2, 2]).unwrap();
        let loss = x.cross_entropy(&t, -100, 0.1).unwrap();
        assert_eq!(loss.shape(), &[2, 2]);
        let want = [
            3.9429316284998994,
            0.34293162849989944,
            0.33651268622295216,
            0.0,
        ];
        assert_close(&loss.to_vec().unwrap(), &want, 1e-6);
        // The same through f16 and a permuted (non-contiguous) view.
        let xh = x.cast(DType::F16).unwrap();
        let lh = xh.cross_entropy(&t, -100, 0.1).unwrap();
        assert_eq!(lh.dtype(), DType::F16);
        assert_close(&lh.cast(DType::F32).unwrap().to_vec().unwrap(), &want, 2e-3);
        let xp = t32(
            vec![0.0, 2.0, 4.0, 1.0, 3.0, 5.0, -1.0, 2.0, 0.0, 0.5, -2.0, 0.0],
            &[2, 2, 3],
        )
        .permute(&[0, 2, 1])
        .unwrap();
        assert_close(
            &xp.cross_entropy(&t, -100, 0.1).unwrap().to_vec().unwrap(),
            &want,
            1e-6,
        );
    }

    #[test]
    fn large_inputs_match_reference() {
        let x = make(&[300, 1000], View::Contiguous, DType::F32, 11, -30.0, 30.0);
        for log in [false, true] {
            let got = if log { x.log_softmax(1) } else { x.softmax(1) }
                .unwrap()
                .to_vec::<f32>()
                .unwrap();
            assert_close(&got, &reference(&x, 1, log), 2e-6);
        }
        let y = make(&[40, 50, 30], View::Permuted, DType::F32, 12, -30.0, 30.0);
        let got = y.softmax(1).unwrap().to_vec::<f32>().unwrap();
        assert_close(&got, &reference(&y, 1, false), 2e-6);
        let target = make(&[300], View::Contiguous, DType::I64, 13, 0.0, 999.0);
        let ce = x
            .cross_entropy(&target, -100, 0.0)
            .unwrap()
            .to_vec::<f32>()
            .unwrap();
        let logp = reference(&x, 1, true);
        let want: Vec<f64> = target
            .to_vec::<i64>()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, &t)| -logp[i * 1000 + t as usize])
            .collect();
        assert_close(&ce, &want, 2e-6);
    }

    #[test]
    fn errors() {
        let x = t32(vec![0.0; 6], &[2, 3]);
        let e = x.softmax(2).unwrap_err();
        assert!(matches!(e, Error::BadAxis { axis: 2, .. }), "{e}");
        assert!(Tensor::zeros(&[3], DType::I64).softmax(0).is_err());
        let t = Tensor::from_vec(vec![0.0f32, 1.0], &[2]).unwrap();
        let e = x.cross_entropy(&t, -100, 0.0).unwrap_err();
        assert!(matches!(e, Error::DTypeMismatch { .. }), "{e}");
        let t = Tensor::from_vec(vec![0i64, 3], &[2]).unwrap();
        let e = x.cross_entropy(&t, -100, 0.0).unwrap_err();
        assert!(
            matches!(
                e,
                Error::IndexOutOfRange {
                    index: 3,
                    size: 3,
                    ..
                }
            ),
            "{e}"
        );
        let t = Tensor::from_vec(vec![-1i64, 0], &[2]).unwrap();
        assert!(matches!(
            x.cross_entropy(&t, -100, 0.0).unwrap_err(),
            Error::IndexOutOfRange { index: -1, .. }
        ));
        let t = Tensor::from_vec(vec![0i64, 1, 2], &[3]).unwrap();
        let e = x.cross_entropy(&t, -100, 0.0).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        let t = Tensor::from_vec(vec![0i64, 1], &[2]).unwrap();
        assert!(x.cross_entropy(&t, -100, 1.5).is_err());
        assert!(Tensor::scalar(1.0f32)
            .cross_entropy(&Tensor::scalar(0i64), -100, 0.0)
            .is_err());
        assert!(Tensor::zeros(&[2, 3], DType::I64)
            .cross_entropy(&t, -100, 0.0)
            .is_err());
    }
}
