//! Strided copies: materializing any view as a contiguous buffer.

use crate::layout::Layout;
use crate::{CpuStorage, Element};
use rayon::prelude::*;

/// Copies the elements of `layout` over `src` into a new contiguous buffer.
pub fn copy_strided(src: &CpuStorage, layout: &Layout) -> CpuStorage {
    crate::match_cpu_storage!(src, v => T_into(gather(v, layout)))
}

#[allow(non_snake_case)]
fn T_into<T: Element>(v: Vec<T>) -> CpuStorage {
    T::into_cpu_storage(v)
}

/// Copies the elements of `layout` over `src` into a contiguous vector, in row-major order.
pub fn gather<T: Element>(src: &[T], layout: &Layout) -> Vec<T> {
    let n = layout.numel();
    if layout.is_contiguous() {
        let o = layout.offset();
        return src[o..o + n].to_vec();
    }
    let mut out = Vec::with_capacity(n);
    // SAFETY: every element is written below before the vector is read.
    #[allow(clippy::uninit_vec)]
    unsafe {
        out.set_len(n)
    };
    gather_into(src, layout, &mut out);
    out
}

/// Copies the elements of `layout` over `src` into `dst` (length = numel), in row-major order.
pub fn gather_into<T: Element>(src: &[T], layout: &Layout, dst: &mut [T]) {
    let (outer_shape, outer_strides, block) = layout.blocks();
    let outer: usize = outer_shape.iter().product();
    if block == 0 || outer == 0 {
        return;
    }
    if block == 1 && outer_shape.len() == 2 {
        let (shape, strides) = (
            [outer_shape[0], outer_shape[1]],
            [outer_strides[0], outer_strides[1]],
        );
        gather_2d_tiled(src, layout.offset(), shape, strides, dst);
        return;
    }
    let copy_rows = |row0: usize, dst: &mut [T]| {
        // Index of row0 in the outer dims.
        let mut idx: smallvec::SmallVec<[usize; 6]> = smallvec::smallvec![0; outer_shape.len()];
        let mut r = row0;
        for d in (0..outer_shape.len()).rev() {
            idx[d] = r % outer_shape[d];
            r /= outer_shape[d];
        }
        let mut pos = layout.offset()
            + idx
                .iter()
                .zip(&outer_strides)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        for chunk in dst.chunks_exact_mut(block) {
            if block == 1 {
                chunk[0] = src[pos];
            } else {
                chunk.copy_from_slice(&src[pos..pos + block]);
            }
            let mut d = outer_shape.len();
            while d > 0 {
                d -= 1;
                idx[d] += 1;
                pos += outer_strides[d];
                if idx[d] < outer_shape[d] {
                    break;
                }
                pos -= outer_strides[d] * outer_shape[d];
                idx[d] = 0;
            }
        }
    };
    let chunks = super::simd::parallel_chunks(dst.len());
    if chunks <= 1 {
        copy_rows(0, dst);
    } else {
        let rows_per = outer.div_ceil(chunks);
        dst.par_chunks_mut(rows_per * block)
            .enumerate()
            .for_each(|(i, d)| copy_rows(i * rows_per, d));
    }
}

/// Side of the square tiles of [`gather_2d_tiled`].
const TILE: usize = 32;

/// A 2-D strided copy (typically a transposed matrix) in square tiles, so that both the reads
/// and the writes of a tile stay in cache instead of striding through memory per element.
fn gather_2d_tiled<T: Element>(
    src: &[T],
    offset: usize,
    [rows, cols]: [usize; 2],
    [s0, s1]: [usize; 2],
    dst: &mut [T],
) {
    let row_tile = |i0: usize, out: &mut [T]| {
        let h = out.len() / cols;
        for j0 in (0..cols).step_by(TILE) {
            for j in j0..(j0 + TILE).min(cols) {
                let base = offset + j * s1 + i0 * s0;
                for i in 0..h {
                    out[i * cols + j] = src[base + i * s0];
                }
            }
        }
    };
    if rows * cols < super::simd::PARALLEL_THRESHOLD {
        for (t, out) in dst.chunks_mut(TILE * cols).enumerate() {
            row_tile(t * TILE, out);
        }
    } else {
        dst.par_chunks_mut(TILE * cols)
            .enumerate()
            .for_each(|(t, out)| row_tile(t * TILE, out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference<T: Element>(src: &[T], layout: &Layout) -> Vec<T> {
        layout.positions().map(|p| src[p]).collect()
    }

    proptest! {
        #[test]
        fn gather_matches_positions(
            dims in proptest::collection::vec(1usize..6, 1..5),
            perm_seed in 0usize..24,
            narrow in 0usize..2,
        ) {
            let n: usize = dims.iter().product();
            let src: Vec<i32> = (0..n as i32).collect();
            let base = Layout::contiguous(&dims);
            let rank = dims.len();
            let mut perm: Vec<usize> = (0..rank).collect();
            perm.rotate_left(perm_seed % rank);
            let mut l = base.permute(&perm).unwrap();
            if narrow == 1 && l.shape()[0] > 1 {
                let d = l.shape()[0];
                l = l.slice(0, 1, d - 1, 1).unwrap();
            }
            prop_assert_eq!(gather(&src, &l), reference(&src, &l));
        }
    }

    #[test]
    fn tiled_transposes_of_odd_sizes() {
        for (r, c) in [
            (1usize, 1usize),
            (3, 17),
            (17, 3),
            (37, 1001),
            (1000, 33),
            (784, 128),
        ] {
            let src: Vec<f32> = (0..r * c).map(|i| i as f32).collect();
            let t = Layout::contiguous(&[r, c]).permute(&[1, 0]).unwrap();
            assert_eq!(gather(&src, &t), reference(&src, &t));
            if c > 2 {
                let s = t.slice(0, 1, (c - 1) / 2, 2).unwrap();
                assert_eq!(gather(&src, &s), reference(&src, &s));
            }
        }
    }

    #[test]
    fn big_parallel_copy() {
        let dims = [64usize, 33, 40];
        let n: usize = dims.iter().product();
        let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let l = Layout::contiguous(&dims).permute(&[2, 0, 1]).unwrap();
        assert_eq!(gather(&src, &l), reference(&src, &l));
    }
}
