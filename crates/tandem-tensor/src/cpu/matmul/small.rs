//! Products with few rows (`m <= SMALL_M`, e.g. batch-1 inference through a linear layer)
//! whose right operand has contiguous columns (`rhs = W^T` with `W` row-major): each output
//! is a dot product of a row of `lhs` with a row of `W`, computed in vector-wide partial sums
//! over `k`, several outputs at once so that the adds of different sums overlap. The `gemm`
//! crate packs both operands first, which for a single row costs more than the product.

use super::{GemmScalar, MatMut, MatRef};
use crate::cpu::simd::dispatch;

/// Largest number of output rows the dot-product kernel takes (more go to `gemm`).
pub(super) const SMALL_M: usize = 4;

/// Partial sums per dot product: one 512-bit register of `f32`.
const LANES: usize = 16;

/// Output columns computed together (each reads the same `lhs` rows).
const COLS: usize = 4;

/// `LANES` elements of `s` from `p`, or `None` past its end.
#[inline(always)]
fn lanes<T: Copy>(s: &[T], p: usize) -> Option<&[T; LANES]> {
    s.get(p..p.checked_add(LANES)?)?.try_into().ok()
}

/// The `M x C` dot products of rows `a` with rows `b`, all of length `k`.
#[inline(always)]
fn dot_tile<T: GemmScalar, const M: usize, const C: usize>(
    a: &[&[T]; M],
    b: &[&[T]; C],
    k: usize,
) -> [[T; C]; M] {
    let mut acc = [[[T::ZERO; LANES]; C]; M];
    let mut p = 0;
    while p + LANES <= k {
        for (c, bc) in b.iter().enumerate() {
            let Some(bv) = lanes(bc, p) else { continue };
            for (i, ai) in a.iter().enumerate() {
                let Some(av) = lanes(ai, p) else { continue };
                let s = &mut acc[i][c];
                for l in 0..LANES {
                    s[l] = s[l] + av[l] * bv[l];
                }
            }
        }
        p += LANES;
    }
    let mut out = [[T::ZERO; C]; M];
    for (i, ai) in a.iter().enumerate() {
        for (c, bc) in b.iter().enumerate() {
            // Pairwise sum of the lanes, then the tail of k.
            let mut s = acc[i][c];
            let mut w = LANES / 2;
            while w > 0 {
                for l in 0..w {
                    s[l] = s[l] + s[l + w];
                }
                w /= 2;
            }
            let mut total = s[0];
            for (&x, &y) in ai
                .get(p..)
                .unwrap_or(&[])
                .iter()
                .zip(bc.get(p..).unwrap_or(&[]))
            {
                total = total + x * y;
            }
            out[i][c] = total;
        }
    }
    out
}

/// `out[i * n + j] = dot(a[i], column j of rhs)` for `M` rows.
#[inline(always)]
fn dot_rows<'b, T: GemmScalar, const M: usize>(
    a: &[&[T]; M],
    column: &impl Fn(usize) -> Option<&'b [T]>,
    n: usize,
    k: usize,
    out: &mut [T],
) -> bool {
    let mut j = 0;
    while j + COLS <= n {
        let (Some(b0), Some(b1), Some(b2), Some(b3)) =
            (column(j), column(j + 1), column(j + 2), column(j + 3))
        else {
            return false;
        };
        let d = dot_tile::<T, M, COLS>(a, &[b0, b1, b2, b3], k);
        for (i, row) in d.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                if let Some(o) = out.get_mut(i * n + j + c) {
                    *o = v;
                }
            }
        }
        j += COLS;
    }
    for j in j..n {
        let Some(b) = column(j) else { return false };
        let d = dot_tile::<T, M, 1>(a, &[b], k);
        for (i, row) in d.iter().enumerate() {
            if let Some(o) = out.get_mut(i * n + j) {
                *o = row[0];
            }
        }
    }
    true
}

/// `dst = lhs @ rhs` (or `+=` when `accumulate`) for `m <= SMALL_M` rows when `rhs` has
/// contiguous columns (row stride 1). Returns false, having written nothing, for other
/// shapes and strides.
pub(super) fn dot_product<T: GemmScalar>(
    dst: &mut MatMut<'_, T>,
    lhs: &MatRef<'_, T>,
    rhs: &MatRef<'_, T>,
    accumulate: bool,
) -> bool {
    let [m, k] = lhs.dims;
    let [_, n] = rhs.dims;
    if m == 0 || m > SMALL_M || k == 0 || rhs.strides[0] != 1 {
        return false;
    }
    // Rows of lhs as contiguous slices (copied when lhs's columns are strided).
    let copy: Vec<T>;
    let (base, row_stride) = if lhs.strides[1] == 1 {
        (lhs.data.get(lhs.offset..).unwrap_or(&[]), lhs.strides[0])
    } else {
        copy = (0..m * k)
            .map(|e| {
                let (i, p) = (e / k, e % k);
                lhs.data
                    .get(lhs.offset + i * lhs.strides[0] + p * lhs.strides[1])
                    .copied()
                    .unwrap_or(T::ZERO)
            })
            .collect();
        (&copy[..], k)
    };
    let row = |i: usize| base.get(i * row_stride..i * row_stride + k);
    let b = rhs.data.get(rhs.offset..).unwrap_or(&[]);
    let cs = rhs.strides[1];
    let column = |j: usize| b.get(j * cs..j * cs + k);
    let mut out = vec![T::ZERO; m * n];
    let done = dispatch(
        #[inline(always)]
        || match m {
            1 => match row(0) {
                Some(r0) => dot_rows::<T, 1>(&[r0], &column, n, k, &mut out),
                None => false,
            },
            2 => match (row(0), row(1)) {
                (Some(r0), Some(r1)) => dot_rows::<T, 2>(&[r0, r1], &column, n, k, &mut out),
                _ => false,
            },
            3 => match (row(0), row(1), row(2)) {
                (Some(r0), Some(r1), Some(r2)) => {
                    dot_rows::<T, 3>(&[r0, r1, r2], &column, n, k, &mut out)
                }
                _ => false,
            },
            _ => match (row(0), row(1), row(2), row(3)) {
                (Some(r0), Some(r1), Some(r2), Some(r3)) => {
                    dot_rows::<T, 4>(&[r0, r1, r2, r3], &column, n, k, &mut out)
                }
                _ => false,
            },
        },
    );
    if !done {
        return false;
    }
    let [rs, dcs] = dst.strides;
    for i in 0..m {
        for j in 0..n {
            let v = out.get(i * n + j).copied().unwrap_or(T::ZERO);
            if let Some(d) = dst.data.get_mut(dst.offset + i * rs + j * dcs) {
                *d = if accumulate { *d + v } else { v };
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::{gemm, MatMut, MatRef, Threads};
    use proptest::prelude::*;

    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The dot-product kernel (through `gemm()`) against a plain triple loop, with strided
        /// lhs columns, padded rhs columns, odd `k` and `n`, and both write modes.
        #[test]
        fn small_m_matches_reference(
            m in 1usize..=4,
            k in prop_oneof![Just(1usize), Just(3), Just(16), Just(17), Just(1000), 1usize..70],
            n in prop_oneof![Just(1usize), Just(3), Just(4), Just(17), 1usize..12],
            lhs_cs in 1usize..3,
            pad in 0usize..3,
            accumulate in any::<bool>(),
            seed in any::<u64>(),
        ) {
            // lhs [m, k] with column stride lhs_cs; rhs [k, n] with contiguous columns at
            // stride k + pad (the transpose of a row-major [n, k + pad] matrix).
            let a = values(seed, m * k * lhs_cs);
            let b = values(seed ^ 0x9e37, n * (k + pad));
            let init = values(seed ^ 0x55, m * n);
            let lhs = MatRef::new(&a, 0, [m, k], [k * lhs_cs, lhs_cs]).unwrap();
            let rhs = MatRef::new(&b, 0, [k, n], [1, k + pad]).unwrap();
            let mut got = init.clone();
            gemm(MatMut::row_major(&mut got, m, n).unwrap(), lhs, rhs, accumulate, Threads::Auto)
                .unwrap();
            for i in 0..m {
                for j in 0..n {
                    let mut s = if accumulate { init[i * n + j] as f64 } else { 0.0 };
                    for p in 0..k {
                        s += a[i * k * lhs_cs + p * lhs_cs] as f64 * b[j * (k + pad) + p] as f64;
                    }
                    let g = got[i * n + j] as f64;
                    prop_assert!((g - s).abs() <= 1e-5 * (1.0 + k as f64).sqrt() * (1.0 + s.abs()),
                        "m={m} k={k} n={n} at ({i},{j}): {g} vs {s}");
                }
            }
        }
    }

    /// A strided (transposed) output and a column-major view of the same data give the same
    /// values as the general path.
    #[test]
    fn transposed_output() {
        let (m, k, n) = (3, 37, 5);
        let a = values(1, m * k);
        let b = values(2, n * k);
        let lhs = MatRef::row_major(&a, m, k).unwrap();
        let rhs = MatRef::row_major(&b, n, k).unwrap().t();
        let mut c = vec![0.0f32; m * n];
        gemm(
            MatMut::new(&mut c, 0, [m, n], [1, m]).unwrap(),
            lhs,
            rhs,
            false,
            Threads::Auto,
        )
        .unwrap();
        for i in 0..m {
            for j in 0..n {
                let s: f32 = (0..k).map(|p| a[i * k + p] * b[j * k + p]).sum();
                assert!((c[j * m + i] - s).abs() < 1e-4, "{i},{j}");
            }
        }
    }
}
