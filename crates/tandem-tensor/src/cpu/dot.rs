//! Vector-times-matrix products over contiguous matrix rows, for `f32` on AVX-512:
//! `out[j] = sum_p x[p] * a[j * ld + p]`. This is a linear layer applied to one sample
//! (`[1, k] @ W^T` with the weight `W` `[n, k]` row-major, as PyTorch stores it), which reads
//! the whole weight once per call and is bound by how fast a core streams it from its cache.
//!
//! The kernel reads every matrix row with loads aligned to 64 bytes, so that no load spans two
//! cache lines whatever address the allocator gave the weight. The `gemm` crate's loads are not
//! aligned this way: on a 2-core AVX-512 machine its `[1, 784] x [784, 128]` product on one
//! thread took 2.69 us with the weight at a 64-byte boundary and 4.89 us with it 16 bytes past
//! one (where glibc puts a block it maps on its own; its heap blocks start at any multiple of
//! 16 bytes), this kernel 2.85 and 2.87 us (`cargo run --release -p tandem-tensor --example
//! fma_peak`, which also times plain reads of the weight at both places; see
//! `docs/benchmarks.md`, W6).
//!
//! The rows of one call share their alignment when the row stride `ld` is a multiple of 16
//! elements (64 bytes). A row that starts `q` elements past a 64-byte boundary is read from
//! that boundary on, with the first `q` lanes of its first vector and the lanes past its end in
//! its last masked off (not loaded: a masked lane reads no memory). Lane `l` of a row's
//! accumulator then sums the elements `p` with `p + q = l (mod 16)` in increasing `p`; the
//! accumulator is rotated back by `q` lanes before its lanes are added, so each lane holds the
//! same partial sum, in the same order, for every `q`, and the result does not depend on where
//! the weight lies in memory (the tests check bit-for-bit equality across all 16 alignments).

use super::simd::avx512 as available;

/// Rows per register tile: each shares the loads of `x`.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 8;

/// One vector-times-matrix product over contiguous rows:
/// `out[j * out_stride] = (out[j * out_stride] if accumulate) + sum_{p < k} x[p] * a[j * ld + p]`
/// for `j < n`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DotRows {
    /// The vector, `k` contiguous elements.
    pub x: *const f32,
    /// The length of the vector and of each row.
    pub k: usize,
    /// The first row.
    pub a: *const f32,
    /// Elements from one row's start to the next one's.
    pub ld: usize,
    /// The number of rows (and of outputs).
    pub n: usize,
    /// The first output.
    pub out: *mut f32,
    /// Elements from one output to the next.
    pub out_stride: usize,
    /// Whether the sums are added to the outputs instead of replacing them.
    pub accumulate: bool,
}

impl DotRows {
    /// Runs the product on AVX-512. Returns false, having done nothing, when the CPU lacks
    /// AVX-512, `k` is 0, or rows would start at different offsets from a 64-byte boundary
    /// (`n > 1` and `ld` not a multiple of 16).
    ///
    /// # Safety
    /// `x[..k]`, the rows `a[j * ld..j * ld + k]` for `j < n` and the outputs `out[j *
    /// out_stride]` for `j < n` must lie inside live allocations; the outputs are written and
    /// must not be read or written by anyone else meanwhile, nor overlap `x` or `a`.
    pub(crate) unsafe fn run(&self) -> bool {
        if !available() || self.k == 0 || (self.n > 1 && !self.ld.is_multiple_of(16)) {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: AVX-512 is present (`available`); the caller's contract covers the rest.
            unsafe { avx512::rows(self) };
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{DotRows, ROWS};
    use std::arch::x86_64::*;

    /// See [`DotRows::run`]; AVX-512 must be present.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(d: &DotRows) {
        let mut j = 0;
        let mut sums = [0f32; ROWS];
        while j < d.n {
            let r = if j + ROWS <= d.n { ROWS } else { 1 };
            let rows = d.a.wrapping_add(j * d.ld);
            // SAFETY: rows `j..j + r` are inside the caller's matrix.
            unsafe {
                if r == ROWS {
                    tile::<ROWS>(d.x, d.k, rows, d.ld, &mut sums);
                } else {
                    tile::<1>(d.x, d.k, rows, d.ld, &mut sums[..1]);
                }
            }
            for (i, &s) in sums[..r].iter().enumerate() {
                // SAFETY: output `j + i < n`, inside the caller's buffer and written by no one
                // else.
                unsafe {
                    let o = d.out.add((j + i) * d.out_stride);
                    *o = if d.accumulate { *o + s } else { s };
                }
            }
            j += r;
        }
    }

    /// The sums of `R` rows starting at `rows`, `ld` apart, all with the same offset from a
    /// 64-byte boundary, into `sums[..R]`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const R: usize>(
        x: *const f32,
        k: usize,
        rows: *const f32,
        ld: usize,
        sums: &mut [f32],
    ) {
        // The row starts `q` lanes into its first aligned vector.
        let q = (rows as usize % 64) / 4;
        let base = rows.wrapping_sub(q);
        let vectors = (q + k).div_ceil(16);
        let mut acc = [_mm512_setzero_ps(); R];
        for v in 0..vectors {
            // Lanes `lo..hi` of this vector are elements of the row.
            let lo = if v == 0 { q } else { 0 };
            let hi = (q + k - v * 16).min(16);
            let mask = ((0xffff_u32 >> (16 - hi)) & (0xffff_u32 << lo)) as __mmask16;
            let xs = x.wrapping_add(v * 16).wrapping_sub(q);
            // SAFETY: the lanes loaded are elements `v * 16 - q + l` for `l` in `lo..hi`,
            // i.e. `0..k`: inside `x` and inside each row; the masked-off lanes are not read.
            // The row loads are 64-byte aligned (`base` is, and `ld` is a multiple of 16 when
            // `R > 1`).
            unsafe {
                if mask == 0xffff {
                    let xv = _mm512_loadu_ps(xs);
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm512_load_ps(base.wrapping_add(i * ld + v * 16));
                        *acc = _mm512_fmadd_ps(xv, wv, *acc);
                    }
                } else {
                    let xv = _mm512_maskz_loadu_ps(mask, xs);
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm512_maskz_load_ps(mask, base.wrapping_add(i * ld + v * 16));
                        // Masked-off lanes keep their sums as they are.
                        *acc = _mm512_mask3_fmadd_ps(xv, wv, *acc, mask);
                    }
                }
            }
        }
        // Lane `l` of `acc` holds the elements `p = l - q (mod 16)`; move it to lane `l - q`.
        let lane = |l: usize| ((l + q) % 16) as i32;
        let back = _mm512_set_epi32(
            lane(15),
            lane(14),
            lane(13),
            lane(12),
            lane(11),
            lane(10),
            lane(9),
            lane(8),
            lane(7),
            lane(6),
            lane(5),
            lane(4),
            lane(3),
            lane(2),
            lane(1),
            lane(0),
        );
        for (s, acc) in sums.iter_mut().zip(acc) {
            *s = _mm512_reduce_add_ps(_mm512_permutexvar_ps(back, acc));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rows of `k` values, `ld` apart, starting `offset` elements into a buffer whose
    /// start is 64-byte aligned; the buffer and the rows' start.
    fn rows_at(
        n: usize,
        k: usize,
        ld: usize,
        offset: usize,
        value: impl Fn(usize, usize) -> f32,
    ) -> (Vec<f32>, usize) {
        let mut buf = vec![f32::NAN; (n - 1) * ld + k + offset + 32];
        let start = (64 - buf.as_ptr() as usize % 64) % 64 / 4 + offset;
        for j in 0..n {
            for p in 0..k {
                buf[start + j * ld + p] = value(j, p);
            }
        }
        (buf, start)
    }

    /// Runs the product of `x` and the `n` rows at `buf[start..]`, `ld` apart.
    #[allow(clippy::too_many_arguments)]
    fn run(
        x: &[f32],
        buf: &[f32],
        start: usize,
        ld: usize,
        n: usize,
        out: &mut [f32],
        out_stride: usize,
        accumulate: bool,
    ) -> bool {
        assert!(out.len() > (n.max(1) - 1) * out_stride);
        let product = DotRows {
            x: x.as_ptr(),
            k: x.len(),
            a: buf[start..].as_ptr(),
            ld,
            n,
            out: out.as_mut_ptr(),
            out_stride,
            accumulate,
        };
        // SAFETY: the rows lie inside `buf`, `x` has `k` elements, the outputs inside `out`.
        unsafe { product.run() }
    }

    #[test]
    fn sums_match_a_plain_loop_at_every_alignment_bit_for_bit_alike() {
        if !available() {
            return;
        }
        for &(n, k, ld) in &[
            (128usize, 784usize, 784usize),
            (10, 128, 128),
            (9, 16, 16),
            (3, 1, 16),
            (17, 5, 16),
            (20, 33, 48),
            (1, 7, 7),
            (1, 100, 3),
        ] {
            let value = |j: usize, p: usize| (((j * 31 + p * 17) % 101) as f32 - 50.0) / 37.0;
            let x: Vec<f32> = (0..k)
                .map(|p| ((p * 13 % 29) as f32 - 14.0) / 9.0)
                .collect();
            let mut first: Option<Vec<f32>> = None;
            for offset in 0..16 {
                let (buf, start) = rows_at(n, k, ld, offset, value);
                let mut out = vec![f32::NAN; n];
                assert!(
                    run(&x, &buf, start, ld, n, &mut out, 1, false),
                    "{n}x{k} ld {ld}"
                );
                for (j, &o) in out.iter().enumerate() {
                    let want: f64 = (0..k)
                        .map(|p| f64::from(x[p]) * f64::from(value(j, p)))
                        .sum();
                    assert!(
                        (f64::from(o) - want).abs()
                            <= 1e-5 * want.abs().max(1.0) * (k as f64).sqrt(),
                        "{n}x{k} ld {ld} offset {offset} row {j}: {o} vs {want}"
                    );
                }
                match &first {
                    None => first = Some(out),
                    Some(f) => assert!(
                        f.iter().zip(&out).all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{n}x{k} ld {ld}: the sums at offset {offset} differ from offset 0's"
                    ),
                }
            }
        }
    }

    #[test]
    fn accumulates_into_strided_outputs_and_keeps_the_rest() {
        if !available() {
            return;
        }
        let (n, k, ld) = (11, 40, 48);
        let (buf, start) = rows_at(n, k, ld, 3, |j, p| (j + p) as f32 * 0.25);
        let x = vec![1.0f32; k];
        let mut out = vec![2.0f32; n * 3];
        assert!(run(&x, &buf, start, ld, n, &mut out, 3, true));
        for j in 0..n {
            let want = 2.0 + (0..k).map(|p| (j + p) as f32 * 0.25).sum::<f32>();
            assert_eq!(out[j * 3], want, "row {j}");
            assert_eq!(
                &out[j * 3 + 1..j * 3 + 3],
                &[2.0, 2.0],
                "between outputs {j}"
            );
        }
    }

    #[test]
    fn keeps_ieee_results() {
        if !available() {
            return;
        }
        // 0 * inf is NaN and inf + finite is inf, as in any dot product, whichever vector of
        // the row (the masked first or last one, or a full one) holds the value.
        let k = 40;
        let x: Vec<f32> = (0..k).map(|p| if p % 2 == 0 { 0.0 } else { 1.0 }).collect();
        for offset in [0, 5, 15] {
            for at in [0, 1, 20, 38, 39] {
                let (buf, start) =
                    rows_at(
                        1,
                        k,
                        k,
                        offset,
                        |_, p| if p == at { f32::INFINITY } else { 1.0 },
                    );
                let mut out = [1.0f32];
                assert!(run(&x, &buf, start, k, 1, &mut out, 1, false));
                if at % 2 == 0 {
                    assert!(
                        out[0].is_nan(),
                        "offset {offset}, inf at {at}: 0 * inf must give NaN"
                    );
                } else {
                    assert_eq!(out[0], f32::INFINITY, "offset {offset}, inf at {at}");
                }
            }
        }
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        if !available() {
            return;
        }
        let (buf, start) = rows_at(2, 5, 20, 0, |_, _| 1.0);
        let x = [1.0f32; 5];
        let mut out = [7.0f32; 2];
        // Rows 20 elements apart start at different offsets from a 64-byte boundary.
        assert!(!run(&x, &buf, start, 20, 2, &mut out, 1, false));
        assert!(!run(&[], &buf, start, 32, 2, &mut out, 1, false));
        assert_eq!(out, [7.0, 7.0]);
    }
}
