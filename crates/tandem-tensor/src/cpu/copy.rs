//! Strided copies: materializing any view as a contiguous buffer.

use super::par;
use crate::layout::{Layout, Shape, Strides};
use crate::{CpuStorage, Element};

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
///
/// Views whose trailing elements are contiguous are copied a run at a time. Transposed views
/// (the output's innermost dimension is strided while another dimension is contiguous in
/// `src`) are copied in square tiles, so that both the reads and the writes stay within a few
/// cache lines and pages at a time.
pub fn gather_into<T: Element>(src: &[T], layout: &Layout, dst: &mut [T]) {
    let (outer_shape, outer_strides, block) = layout.blocks();
    let outer: usize = outer_shape.iter().product();
    if block == 0 || outer == 0 {
        return;
    }
    if block == 1 {
        if let Some(plan) = TransposePlan::new(layout) {
            plan.run(src, dst);
            return;
        }
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
        par::for_each_chunk(dst, rows_per * block, |i, d| copy_rows(i * rows_per, d));
    }
}

/// Edge of the square tiles of the blocked transpose, in elements.
const TILE: usize = 32;

/// A copy that is a batch of 2-D transposes: the output's innermost dimension `l` is strided
/// in the source, and dimension `j` is contiguous there (stride 1). For every index of the
/// other (outer) dimensions, the `[n_j, n_l]` block is copied tile by tile.
struct TransposePlan {
    /// Sizes and source strides of the outer dimensions, outermost first.
    outer: Shape,
    outer_src: Strides,
    /// Output strides of the outer dimensions.
    outer_dst: Strides,
    offset: usize,
    nj: usize,
    nl: usize,
    /// Source stride of dimension `l`.
    sl: usize,
    /// Output stride of dimension `j`.
    dj: usize,
    /// `j` is the second innermost dimension: each block is a contiguous part of the output.
    adjacent: bool,
}

impl TransposePlan {
    fn new(layout: &Layout) -> Option<TransposePlan> {
        // Dimensions of size 1 change nothing.
        let dims: Vec<(usize, usize)> = layout
            .shape()
            .iter()
            .zip(layout.strides())
            .filter(|(&n, _)| n != 1)
            .map(|(&n, &s)| (n, s))
            .collect();
        let r = dims.len();
        if r < 2 {
            return None;
        }
        let (nl, sl) = dims[r - 1];
        let j = dims[..r - 1].iter().rposition(|&(_, s)| s == 1)?;
        let nj = dims[j].0;
        if sl <= 1 || nj < 2 {
            return None;
        }
        let mut dst_strides = vec![0; r];
        let mut acc = 1;
        for d in (0..r).rev() {
            dst_strides[d] = acc;
            acc *= dims[d].0;
        }
        let others = (0..r - 1).filter(|&d| d != j);
        Some(TransposePlan {
            outer: others.clone().map(|d| dims[d].0).collect(),
            outer_src: others.clone().map(|d| dims[d].1).collect(),
            outer_dst: others.map(|d| dst_strides[d]).collect(),
            offset: layout.offset(),
            nj,
            nl,
            sl,
            dj: dst_strides[j],
            adjacent: j == r - 2,
        })
    }

    /// Source and output positions of the block with outer index `o` (row-major).
    fn bases(&self, o: usize) -> (usize, usize) {
        let (mut s, mut d, mut rest) = (self.offset, 0, o);
        for k in (0..self.outer.len()).rev() {
            let i = rest % self.outer[k];
            rest /= self.outer[k];
            s += i * self.outer_src[k];
            d += i * self.outer_dst[k];
        }
        (s, d)
    }

    /// Copies rows `a0..a1` (at most [`TILE`] of them) of one block:
    /// `dst[a * dj + b] = src[base + a + b * sl]`, with `dst` starting at the block's first
    /// element. Each tile is first copied from its `b` source rows (contiguous runs) into a
    /// small buffer, then written out row by row: reading the `a` columns straight from the
    /// source would touch `TILE` lines one source row apart, which for power-of-two row
    /// lengths all fall in the same cache set and evict each other.
    #[inline(always)]
    fn rows<T: Element>(&self, src: &[T], base: usize, dst: &mut [T], a0: usize, a1: usize) {
        let h = a1 - a0;
        let mut buf = [T::default(); TILE * TILE];
        for b0 in (0..self.nl).step_by(TILE) {
            let w = (b0 + TILE).min(self.nl) - b0;
            for (k, line) in buf.chunks_exact_mut(TILE).take(w).enumerate() {
                let p = base + a0 + (b0 + k) * self.sl;
                line[..h].copy_from_slice(&src[p..p + h]);
            }
            for a in 0..h {
                let at = (a0 + a) * self.dj + b0;
                for (k, d) in dst[at..at + w].iter_mut().enumerate() {
                    *d = buf[k * TILE + a];
                }
            }
        }
    }

    fn run<T: Element>(&self, src: &[T], dst: &mut [T]) {
        let blocks: usize = self.outer.iter().product();
        let block_len = self.nj * self.nl;
        if self.adjacent && super::simd::parallel_chunks(dst.len()) > 1 {
            // Each block, and each band of TILE rows in it, is its own part of the output.
            par::for_each_chunk(&mut dst[..blocks * block_len], block_len, |o, block| {
                let (base, _) = self.bases(o);
                par::for_each_chunk(block, TILE * self.nl, |t, band| {
                    let a0 = t * TILE;
                    let a1 = (a0 + TILE).min(self.nj);
                    self.rows(src, base + a0, band, 0, a1 - a0);
                });
            });
            return;
        }
        for o in 0..blocks {
            let (base, d) = self.bases(o);
            for a0 in (0..self.nj).step_by(TILE) {
                let a1 = (a0 + TILE).min(self.nj);
                self.rows(src, base, &mut dst[d..], a0, a1);
            }
        }
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

    proptest! {
        #[test]
        fn tiled_transposes_match_positions(
            dims in proptest::collection::vec(1usize..80, 2..4),
            perm_seed in 0usize..6,
            step in 1usize..3,
        ) {
            let n: usize = dims.iter().product();
            let src: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let rank = dims.len();
            let perms: [&[usize]; 6] = if rank == 2 {
                [&[1, 0], &[1, 0], &[0, 1], &[1, 0], &[1, 0], &[1, 0]]
            } else {
                [&[0, 2, 1], &[2, 1, 0], &[1, 2, 0], &[2, 0, 1], &[1, 0, 2], &[0, 1, 2]]
            };
            let mut l = Layout::contiguous(&dims).permute(perms[perm_seed]).unwrap();
            // A strided slice of the outermost dimension keeps the transpose structure.
            let d0 = l.shape()[0];
            l = l.slice(0, 0, d0.div_ceil(step), step).unwrap();
            prop_assert_eq!(gather(&src, &l), reference(&src, &l));
        }
    }

    #[test]
    fn big_transposes() {
        // Large enough to run in parallel; sizes that are not multiples of the tile.
        let dims = [3usize, 301, 203];
        let n: usize = dims.iter().product();
        let src: Vec<f64> = (0..n).map(|i| i as f64).collect();
        let base = Layout::contiguous(&dims);
        for perm in [[0, 2, 1], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let l = base.permute(&perm).unwrap();
            assert_eq!(gather(&src, &l), reference(&src, &l), "{perm:?}");
        }
        // An offset view: the second half of a transposed matrix.
        let sq = Layout::contiguous(&[257, 129]).permute(&[1, 0]).unwrap();
        let half = sq.slice(1, 100, 157, 1).unwrap();
        let src: Vec<f32> = (0..257 * 129).map(|i| i as f32).collect();
        assert_eq!(gather(&src, &half), reference(&src, &half));
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
