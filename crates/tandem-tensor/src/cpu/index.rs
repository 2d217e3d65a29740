//! CPU kernels for indexing: gather / scatter-add, index-select / index-add, masked select /
//! scatter and one-hot, for every dtype.
//!
//! The kernels take index values already checked against the indexed dimension (as `usize`)
//! and layouts already checked by the op layer (`ops/index.rs`); they never see bad input
//! from there. Called directly with arguments that break their stated preconditions they
//! panic on a slice bound (they never touch memory outside the buffers).
//! Row kernels (`index_select_rows`, `index_add_rows`) are the fast paths for contiguous data;
//! the strided kernels handle any layout. Each has a plain reference in the tests.

use super::par;
use super::simd::{dispatch, parallel_chunks};
use crate::layout::{contiguous_strides, Layout, Shape, Strides};
use crate::{bf16, f16, Element};

/// Walks the storage positions of a strided view in row-major order, starting at any flat
/// element index (so parallel chunks can start in the middle).
pub struct Walker<'a> {
    shape: &'a [usize],
    strides: &'a [usize],
    index: Shape,
    pos: usize,
}

impl<'a> Walker<'a> {
    /// A walker over `shape`/`strides` from `offset`, positioned at flat element `start`.
    pub fn new(shape: &'a [usize], strides: &'a [usize], offset: usize, start: usize) -> Self {
        let mut index: Shape = smallvec::smallvec![0; shape.len()];
        let mut rest = start;
        let mut pos = offset;
        for d in (0..shape.len()).rev() {
            let size = shape[d].max(1);
            index[d] = rest % size;
            rest /= size;
            pos += index[d] * strides[d];
        }
        Walker {
            shape,
            strides,
            index,
            pos,
        }
    }

    /// The storage position of the current element.
    #[inline(always)]
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Moves to the next element in row-major order.
    #[inline(always)]
    pub fn advance(&mut self) {
        let mut d = self.shape.len();
        while d > 0 {
            d -= 1;
            self.index[d] += 1;
            self.pos += self.strides[d];
            if self.index[d] < self.shape[d] {
                return;
            }
            self.pos -= self.strides[d] * self.shape[d];
            self.index[d] = 0;
        }
    }
}

/// Element types that can be summed by `scatter_add` / `index_add`: floats add (half types
/// through `f32`), integers wrap like PyTorch's, and bool is logical or.
pub trait Accumulate: Element {
    /// `self + other` in this type's sense.
    fn accumulate(self, other: Self) -> Self;
}

macro_rules! accumulate_float {
    ($($t:ty),*) => {$(
        impl Accumulate for $t {
            #[inline(always)]
            fn accumulate(self, other: Self) -> Self {
                self + other
            }
        }
    )*};
}
macro_rules! accumulate_int {
    ($($t:ty),*) => {$(
        impl Accumulate for $t {
            #[inline(always)]
            fn accumulate(self, other: Self) -> Self {
                self.wrapping_add(other)
            }
        }
    )*};
}
macro_rules! accumulate_half {
    ($($t:ty),*) => {$(
        impl Accumulate for $t {
            #[inline(always)]
            fn accumulate(self, other: Self) -> Self {
                <$t>::from_f32(self.to_f32() + other.to_f32())
            }
        }
    )*};
}
accumulate_float!(f32, f64);
accumulate_int!(i64, i32, u8);
accumulate_half!(f16, bf16);

impl Accumulate for bool {
    #[inline(always)]
    fn accumulate(self, other: Self) -> Self {
        self || other
    }
}

/// Splits `out` (elements of `row` values each) into parallel chunks of whole rows when the
/// work is large, and runs `f(first_row, chunk)` on each.
fn for_row_chunks<T: Send>(out: &mut [T], row: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    if out.is_empty() || row == 0 {
        return;
    }
    let chunks = parallel_chunks(out.len());
    if chunks <= 1 {
        f(0, out);
        return;
    }
    let rows = out.len() / row;
    let rows_per = rows.div_ceil(chunks).max(1);
    par::for_each_chunk(out, rows_per * row, |i, c| f(i * rows_per, c));
}

/// `torch.gather`: `out[i] = src[i with i[axis] replaced by idx[i]]` for every multi-index `i`
/// of the index view `idx_layout` (whose shape is the output shape; it may broadcast).
/// `idx` values are `< src_layout.shape()[axis]` and the output shape fits inside `src`'s
/// outside `axis`.
pub fn gather<T: Element>(
    src: &[T],
    src_layout: &Layout,
    axis: usize,
    idx: &[usize],
    idx_layout: &Layout,
) -> Vec<T> {
    let shape = idx_layout.shape();
    let mut base_strides = Strides::from_slice(src_layout.strides());
    let axis_stride = base_strides[axis];
    base_strides[axis] = 0;
    let mut out = vec![T::default(); idx_layout.numel()];
    let fill = |start: usize, chunk: &mut [T]| {
        let mut base = Walker::new(shape, &base_strides, src_layout.offset(), start);
        let mut at = Walker::new(shape, idx_layout.strides(), idx_layout.offset(), start);
        for o in chunk.iter_mut() {
            *o = src[base.pos() + idx[at.pos()] * axis_stride];
            base.advance();
            at.advance();
        }
    };
    for_row_chunks(&mut out, 1, fill);
    out
}

/// Adds `src` into `out` (contiguous, shape `out_shape`) at the gathered positions:
/// `out[i with i[axis] = idx[i]] += src[i]` for every multi-index `i` of the index view.
/// `src_layout` has the index view's shape. Repeated positions accumulate in row-major order.
pub fn scatter_add<T: Accumulate>(
    out: &mut [T],
    out_shape: &[usize],
    axis: usize,
    idx: &[usize],
    idx_layout: &Layout,
    src: &[T],
    src_layout: &Layout,
) {
    let shape = idx_layout.shape();
    let mut base_strides = contiguous_strides(out_shape);
    let axis_stride = base_strides[axis];
    base_strides[axis] = 0;
    let mut base = Walker::new(shape, &base_strides, 0, 0);
    let mut at = Walker::new(shape, idx_layout.strides(), idx_layout.offset(), 0);
    let mut from = Walker::new(shape, src_layout.strides(), src_layout.offset(), 0);
    for _ in 0..idx_layout.numel() {
        let p = base.pos() + idx[at.pos()] * axis_stride;
        out[p] = out[p].accumulate(src[from.pos()]);
        base.advance();
        at.advance();
        from.advance();
    }
}

/// `index_select` on contiguous data: `src` is `[outer, dim, inner]` row-major (starting at
/// element 0 of the slice); the result is `[outer, idx.len(), inner]`, copied row by row.
pub fn index_select_rows<T: Element>(
    src: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    idx: &[usize],
) -> Vec<T> {
    let n = idx.len();
    let mut out = vec![T::default(); outer * n * inner];
    if n == 0 {
        return out;
    }
    for_row_chunks(&mut out, inner, |first_row, chunk| {
        for (r, dst) in chunk.chunks_exact_mut(inner).enumerate() {
            let row = first_row + r;
            let (o, j) = (row / n, row % n);
            let start = (o * dim + idx[j]) * inner;
            dst.copy_from_slice(&src[start..start + inner]);
        }
    });
    out
}

#[inline(always)]
fn add_into<T: Accumulate>(dst: &mut [T], src: &[T]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = d.accumulate(s);
    }
}

/// `index_add` on contiguous data: `out` is `[outer, dim, inner]`, `src` is
/// `[outer, idx.len(), inner]`; row `(o, j)` of `src` is added to row `(o, idx[j])` of `out`.
pub fn index_add_rows<T: Accumulate>(
    out: &mut [T],
    dim: usize,
    inner: usize,
    idx: &[usize],
    src: &[T],
) {
    let n = idx.len();
    if n == 0 || inner == 0 || dim == 0 {
        return;
    }
    let block = |dst: &mut [T], from: &[T]| {
        dispatch(|| {
            for (j, &i) in idx.iter().enumerate() {
                add_into(
                    &mut dst[i * inner..(i + 1) * inner],
                    &from[j * inner..(j + 1) * inner],
                );
            }
        })
    };
    let outer = out.len() / (dim * inner);
    if outer > 1 && parallel_chunks(src.len()) > 1 {
        par::for_each_chunk(out, dim * inner, |o, d| {
            block(d, &src[o * n * inner..(o + 1) * n * inner])
        });
    } else {
        for (d, s) in out.chunks_mut(dim * inner).zip(src.chunks(n * inner)) {
            block(d, s);
        }
    }
}

/// The elements of `src` where `mask` is true, in row-major order. Both layouts have the same
/// shape (already broadcast).
pub fn masked_select<T: Element>(
    src: &[T],
    src_layout: &Layout,
    mask: &[bool],
    mask_layout: &Layout,
) -> Vec<T> {
    if src_layout.is_contiguous() && mask_layout.is_contiguous() {
        let n = src_layout.numel();
        let s = &src[src_layout.offset()..src_layout.offset() + n];
        let m = &mask[mask_layout.offset()..mask_layout.offset() + n];
        return s
            .iter()
            .zip(m)
            .filter_map(|(&v, &keep)| keep.then_some(v))
            .collect();
    }
    let shape = src_layout.shape();
    let mut at = Walker::new(shape, src_layout.strides(), src_layout.offset(), 0);
    let mut keep = Walker::new(shape, mask_layout.strides(), mask_layout.offset(), 0);
    let mut out = Vec::new();
    for _ in 0..src_layout.numel() {
        if mask[keep.pos()] {
            out.push(src[at.pos()]);
        }
        at.advance();
        keep.advance();
    }
    out
}

/// Number of true values in a mask view.
pub fn count_true(mask: &[bool], layout: &Layout) -> usize {
    if layout.is_contiguous() {
        let o = layout.offset();
        return mask[o..o + layout.numel()].iter().filter(|&&m| m).count();
    }
    layout.positions().filter(|&p| mask[p]).count()
}

/// Writes consecutive elements of `src` into `out` (contiguous, the mask view's shape) at the
/// true positions of the mask, in row-major order. Stops early if `src` runs out.
pub fn masked_scatter<T: Element>(out: &mut [T], mask: &[bool], mask_layout: &Layout, src: &[T]) {
    let mut next = src.iter();
    let mut keep = Walker::new(
        mask_layout.shape(),
        mask_layout.strides(),
        mask_layout.offset(),
        0,
    );
    for o in out.iter_mut() {
        if mask[keep.pos()] {
            match next.next() {
                Some(&v) => *o = v,
                None => return,
            }
        }
        keep.advance();
    }
}

/// One-hot rows: for each index value `i` (each `< depth`), `depth` elements that are `off`
/// except `on` at position `i`.
pub fn one_hot<T: Element>(idx: &[usize], depth: usize, on: T, off: T) -> Vec<T> {
    let mut out = vec![off; idx.len() * depth];
    for (row, &i) in out.chunks_exact_mut(depth.max(1)).zip(idx) {
        row[i] = on;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference gather: multi-index arithmetic over `positions()`.
    fn gather_ref(src: &[i32], sl: &Layout, axis: usize, idx: &[usize], il: &Layout) -> Vec<i32> {
        let shape = il.shape();
        let mut out = Vec::new();
        for (k, ip) in il.positions().enumerate() {
            let mut mi = unravel(k, shape);
            mi[axis] = idx[ip];
            out.push(src[sl.position(&mi)]);
        }
        out
    }

    fn unravel(mut k: usize, shape: &[usize]) -> Vec<usize> {
        let mut mi = vec![0; shape.len()];
        for d in (0..shape.len()).rev() {
            mi[d] = k % shape[d];
            k /= shape[d];
        }
        mi
    }

    /// A view of `shape` over fresh storage: permuted (by rotating), optionally sliced.
    fn view_of(shape: &[usize], rot: usize, sliced: bool) -> (Vec<i32>, Layout) {
        let rank = shape.len();
        // Build the storage in the rotated order, then permute back to `shape`.
        let mut stored: Vec<usize> = shape.to_vec();
        stored.rotate_left(rot % rank);
        if sliced {
            stored[0] += 2;
        }
        let n: usize = stored.iter().product();
        let data: Vec<i32> = (0..n as i32).map(|x| x * 7 - 3).collect();
        let mut l = Layout::contiguous(&stored);
        if sliced {
            l = l.slice(0, 1, stored[0] - 2, 1).unwrap();
        }
        // Output dim d is stored dim (d + rank - rot) % rank.
        let perm: Vec<usize> = (0..rank).map(|d| (d + rank - rot % rank) % rank).collect();
        let l = l.permute(&perm).unwrap();
        assert_eq!(l.shape(), shape);
        (data, l)
    }

    proptest! {
        #[test]
        fn gather_matches_reference(
            dims in proptest::collection::vec(1usize..18, 1..4),
            axis_seed in 0usize..4,
            rot in 0usize..4,
            sliced in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let rank = dims.len();
            let axis = axis_seed % rank;
            let (src, sl) = view_of(&dims, rot, sliced);
            let mut rng = crate::random::Rng::new(seed);
            let ishape: Vec<usize> = dims.iter().enumerate()
                .map(|(d, &s)| if d == axis { 1 + rng.below(5) as usize } else { 1 + rng.below(s as u64) as usize })
                .collect();
            let n: usize = ishape.iter().product();
            let idx: Vec<usize> = (0..n).map(|_| rng.below(dims[axis] as u64) as usize).collect();
            let il = Layout::contiguous(&ishape);
            prop_assert_eq!(gather(&src, &sl, axis, &idx, &il), gather_ref(&src, &sl, axis, &idx, &il));
        }

        #[test]
        fn scatter_add_matches_reference(
            dims in proptest::collection::vec(1usize..5, 1..4),
            axis_seed in 0usize..4,
            rot in 0usize..4,
            seed in any::<u64>(),
        ) {
            let rank = dims.len();
            let axis = axis_seed % rank;
            let mut rng = crate::random::Rng::new(seed);
            let ishape: Vec<usize> = dims.iter().enumerate()
                .map(|(d, &s)| if d == axis { 1 + rng.below(6) as usize } else { 1 + rng.below(s as u64) as usize })
                .collect();
            let n: usize = ishape.iter().product();
            let idx: Vec<usize> = (0..n).map(|_| rng.below(dims[axis] as u64) as usize).collect();
            let il = Layout::contiguous(&ishape);
            let (src, sl) = view_of(&ishape, rot, true);
            let mut out: Vec<i32> = (0..dims.iter().product::<usize>() as i32).collect();
            let mut expect = out.clone();
            let ol = Layout::contiguous(&dims);
            for (k, sp) in sl.positions().enumerate() {
                let mut mi = unravel(k, &ishape);
                mi[axis] = idx[k];
                expect[ol.position(&mi)] += src[sp];
            }
            scatter_add(&mut out, &dims, axis, &idx, &il, &src, &sl);
            prop_assert_eq!(out, expect);
        }

        #[test]
        fn masked_select_matches_reference(
            dims in proptest::collection::vec(1usize..18, 1..4),
            rot in 0usize..4,
            sliced in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let (src, sl) = view_of(&dims, rot, sliced);
            let mut rng = crate::random::Rng::new(seed);
            let n: usize = dims.iter().product();
            let mask: Vec<bool> = (0..n).map(|_| rng.below(2) == 1).collect();
            let ml = Layout::contiguous(&dims);
            let expect: Vec<i32> = sl.positions().zip(ml.positions())
                .filter(|&(_, m)| mask[m]).map(|(p, _)| src[p]).collect();
            prop_assert_eq!(masked_select(&src, &sl, &mask, &ml), expect.clone());
            prop_assert_eq!(count_true(&mask, &ml), expect.len());
            let mut out = vec![0i32; n];
            masked_scatter(&mut out, &mask, &ml, &expect);
            let back: Vec<i32> = (0..n).filter(|&k| mask[k]).map(|k| out[k]).collect();
            prop_assert_eq!(back, expect);
        }

        #[test]
        fn row_kernels_match_reference(
            outer in 1usize..4,
            dim in 1usize..6,
            inner in 1usize..20,
            n in 0usize..8,
            seed in any::<u64>(),
        ) {
            let mut rng = crate::random::Rng::new(seed);
            let idx: Vec<usize> = (0..n).map(|_| rng.below(dim as u64) as usize).collect();
            let src: Vec<f64> = (0..outer * dim * inner).map(|x| x as f64).collect();
            let sl = Layout::contiguous(&[outer, dim, inner]);
            let ishape = [outer, n, inner];
            // The 1-D index broadcast along outer and inner, as the op layer builds it.
            let il = Layout::from_parts(Shape::from_slice(&ishape), smallvec::smallvec![0, 1, 0], 0);
            let fast = index_select_rows(&src, outer, dim, inner, &idx);
            prop_assert_eq!(&fast, &gather(&src, &sl, 1, &idx, &il));
            let mut out = vec![0.5f64; outer * dim * inner];
            let mut expect = out.clone();
            index_add_rows(&mut out, dim, inner, &idx, &fast);
            scatter_add(&mut expect, &[outer, dim, inner], 1, &idx, &il, &fast, &Layout::contiguous(&ishape));
            prop_assert_eq!(out, expect);
        }
    }

    #[test]
    fn walker_starts_anywhere() {
        let l = Layout::contiguous(&[3, 4, 5]).permute(&[2, 0, 1]).unwrap();
        let all: Vec<usize> = l.positions().collect();
        for start in [0, 1, 7, 30, 59] {
            let mut w = Walker::new(l.shape(), l.strides(), l.offset(), start);
            for &p in &all[start..] {
                assert_eq!(w.pos(), p);
                w.advance();
            }
        }
    }

    #[test]
    fn large_parallel_paths() {
        let (outer, dim, inner) = (3, 50, 700);
        let src: Vec<f32> = (0..outer * dim * inner).map(|x| x as f32).collect();
        let idx: Vec<usize> = (0..40).map(|j| (j * 7) % dim).collect();
        let rows = index_select_rows(&src, outer, dim, inner, &idx);
        for (r, row) in rows.chunks(inner).enumerate() {
            let (o, j) = (r / idx.len(), r % idx.len());
            assert_eq!(row[0], ((o * dim + idx[j]) * inner) as f32);
        }
        let l = Layout::contiguous(&[outer, dim, inner])
            .permute(&[2, 0, 1])
            .unwrap();
        let il = Layout::contiguous(&[inner, outer, 20]); // 42000 outputs: the parallel path
        let gi: Vec<usize> = (0..il.numel()).map(|k| k % dim).collect();
        let fast = gather(&src, &l, 2, &gi, &il);
        let slow: Vec<f32> = {
            let s: Vec<i32> = src.iter().map(|&x| x as i32).collect();
            gather_ref(&s, &l, 2, &gi, &il)
                .into_iter()
                .map(|x| x as f32)
                .collect()
        };
        assert_eq!(fast, slow);
        let mut out = vec![0f32; outer * dim * inner];
        let grad = vec![1f32; outer * idx.len() * inner];
        index_add_rows(&mut out, dim, inner, &idx, &grad);
        let total: f32 = out.iter().sum();
        assert_eq!(total, grad.len() as f32);
    }

    #[test]
    fn accumulate_types() {
        assert_eq!(250u8.accumulate(10), 4);
        assert!(false.accumulate(true));
        assert_eq!(
            f16::from_f32(1.5).accumulate(f16::from_f32(2.0)).to_f32(),
            3.5
        );
        assert_eq!(one_hot(&[2, 0], 3, 1i64, 0), vec![0, 0, 1, 1, 0, 0]);
    }
}
