//! The machinery every elementwise kernel shares: the [`StridedPlan`] that walks broadcast
//! inputs in inner contiguous runs, [`run_parallel`] that splits an output over the rayon pool,
//! output allocation, and staging of half-precision data through `f32` in small chunks.

use crate::cpu::simd::parallel_chunks;
use crate::layout::{Layout, Shape, Strides};
use crate::{DType, Element};
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Parallel chunks of an output are rounded to a multiple of this many elements.
const CHUNK_ALIGN: usize = 64;
/// Half-precision data is converted to `f32` this many elements at a time.
pub(crate) const STAGE: usize = 256;

/// How an elementwise kernel walks `K` strided inputs while writing a contiguous output.
///
/// Dimensions of size 1 are dropped and neighbouring dimensions are merged wherever every
/// input allows it, so that the innermost dimension is as long as possible. Along it each
/// input is typically contiguous (stride 1) or broadcast (stride 0): `[N, C] + [C]` becomes
/// runs of `C` with strides (1, 1), `[N, C] + [N, 1]` runs of `C` with strides (1, 0), and a
/// contiguous `x + y` a single run over everything. The broadcast operand is never
/// materialized.
#[derive(Clone, Debug)]
pub struct StridedPlan<const K: usize> {
    dims: Shape,
    strides: [Strides; K],
    offsets: [usize; K],
}

impl<const K: usize> StridedPlan<K> {
    /// A plan for an output of `shape` reading inputs with the given layouts, each already
    /// broadcast to `shape` (same sizes; stride 0 along broadcast dimensions).
    pub fn new(shape: &[usize], inputs: [&Layout; K]) -> StridedPlan<K> {
        debug_assert!(inputs.iter().all(|l| l.shape() == shape));
        let mut dims = Shape::new();
        let mut strides: [Strides; K] = std::array::from_fn(|_| Strides::new());
        for (d, &n) in shape.iter().enumerate() {
            if n == 1 {
                continue;
            }
            let mergeable = !dims.is_empty()
                && (0..K).all(|k| strides[k].last() == Some(&(inputs[k].strides()[d] * n)));
            if mergeable {
                if let Some(last) = dims.last_mut() {
                    *last *= n;
                }
                for k in 0..K {
                    if let Some(s) = strides[k].last_mut() {
                        *s = inputs[k].strides()[d];
                    }
                }
            } else {
                dims.push(n);
                for k in 0..K {
                    strides[k].push(inputs[k].strides()[d]);
                }
            }
        }
        if dims.is_empty() {
            dims.push(1);
            for s in strides.iter_mut() {
                s.push(0);
            }
        }
        StridedPlan {
            dims,
            strides,
            offsets: std::array::from_fn(|k| inputs[k].offset()),
        }
    }

    /// Number of output elements.
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// The merged dimension sizes, outermost first (never empty).
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Each input's stride along the innermost merged dimension.
    pub fn inner_strides(&self) -> [usize; K] {
        std::array::from_fn(|k| self.strides[k].last().copied().unwrap_or(0))
    }

    /// Calls `f(out_index, len, positions)` for each inner run of the output elements
    /// `start..end`, where `positions[k]` is the storage position of input `k`'s first element
    /// of the run (later elements follow at [`StridedPlan::inner_strides`]).
    #[inline(always)]
    pub fn for_each_run(
        &self,
        start: usize,
        end: usize,
        mut f: impl FnMut(usize, usize, [usize; K]),
    ) {
        let rank = self.dims.len();
        let inner = self.dims[rank - 1];
        if start >= end || inner == 0 {
            return;
        }
        let outer = &self.dims[..rank - 1];
        let inner_strides = self.inner_strides();
        let mut index: Shape = smallvec::smallvec![0; rank - 1];
        let mut rest = start / inner;
        for d in (0..rank - 1).rev() {
            index[d] = rest % outer[d];
            rest /= outer[d];
        }
        let mut base: [usize; K] = std::array::from_fn(|k| {
            self.offsets[k]
                + index
                    .iter()
                    .zip(&self.strides[k])
                    .map(|(i, s)| i * s)
                    .sum::<usize>()
        });
        let mut j = start % inner;
        let mut out = start;
        loop {
            let len = (inner - j).min(end - out);
            f(
                out,
                len,
                std::array::from_fn(|k| base[k] + j * inner_strides[k]),
            );
            out += len;
            if out >= end {
                return;
            }
            j = 0;
            let mut d = rank - 1;
            while d > 0 {
                d -= 1;
                index[d] += 1;
                for k in 0..K {
                    base[k] += self.strides[k][d];
                }
                if index[d] < outer[d] {
                    break;
                }
                for k in 0..K {
                    base[k] -= self.strides[k][d] * outer[d];
                }
                index[d] = 0;
            }
        }
    }
}

/// Runs `work(chunk, first_index)` over `out`: in one piece when small, otherwise in chunks on
/// the rayon pool (the split depends only on the length and the number of threads).
pub fn run_parallel<O: Send>(out: &mut [O], work: impl Fn(&mut [O], usize) + Sync) {
    let n = out.len();
    let chunks = parallel_chunks(n);
    if chunks <= 1 {
        work(out, 0);
        return;
    }
    let size = n.div_ceil(chunks).next_multiple_of(CHUNK_ALIGN);
    super::par::for_each_chunk(out, size, |i, chunk| work(chunk, i * size));
}

/// A vector of `n` elements that a kernel then overwrites entirely.
///
/// Numeric buffers are not initialized first: filling them would add a full write pass (the
/// allocator hands out reused memory, so even `calloc` must clear it), which costs about a
/// third of an elementwise op's time.
pub(crate) fn output_vec<T: Element>(n: usize) -> Vec<T> {
    if T::DTYPE == DType::Bool {
        return vec![T::default(); n];
    }
    let mut v = Vec::with_capacity(n);
    // SAFETY: `T` is a numeric element type (plain data, nothing to drop), and every caller
    // writes all `n` elements before the vector is read or returned (as `copy::gather` does).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

/// Half-precision types, which the kernels compute through `f32` in small chunks.
pub(crate) trait HalfFloat: Element {
    /// Converts a slice to `f32` (vectorized where the CPU can).
    fn to_f32_slice(src: &[Self], dst: &mut [f32]);
    /// Converts a slice from `f32` (round to nearest even).
    fn from_f32_slice(src: &[f32], dst: &mut [Self]);
    /// Converts one value to `f32`.
    fn to_f32(self) -> f32;
}

macro_rules! impl_half_float {
    ($t:ty) => {
        impl HalfFloat for $t {
            #[inline]
            fn to_f32_slice(src: &[Self], dst: &mut [f32]) {
                src.convert_to_f32_slice(dst)
            }
            #[inline]
            fn from_f32_slice(src: &[f32], dst: &mut [Self]) {
                dst.convert_from_f32_slice(src)
            }
            #[inline(always)]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }
        }
    };
}
impl_half_float!(f16);
impl_half_float!(bf16);

/// Converts `dst.len()` elements of `src`, from `pos` at `stride`, to `f32`.
#[inline(always)]
pub(crate) fn stage_f32<H: HalfFloat>(src: &[H], pos: usize, stride: usize, dst: &mut [f32]) {
    match stride {
        1 => H::to_f32_slice(&src[pos..pos + dst.len()], dst),
        0 => dst.fill(src[pos].to_f32()),
        s => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[pos + i * s].to_f32();
            }
        }
    }
}

/// Helpers for the kernel property tests: shapes and non-trivial views.
#[cfg(test)]
pub(crate) mod testing {
    use crate::{DType, Tensor};
    use proptest::prelude::*;

    /// Ways to lay out a tensor of a given shape over its storage.
    #[derive(Clone, Copy, Debug)]
    pub enum View {
        /// Plain row-major.
        Contiguous,
        /// Row-major, starting at a non-zero offset.
        Offset,
        /// Dimensions reversed over a contiguous base.
        Permuted,
        /// Every second element of every dimension, from index 1.
        Sliced,
        /// Even-numbered dimensions broadcast from size 1 (stride 0).
        Expanded,
    }

    /// Any [`View`].
    pub fn arb_view() -> impl Strategy<Value = View> {
        prop_oneof![
            Just(View::Contiguous),
            Just(View::Offset),
            Just(View::Permuted),
            Just(View::Sliced),
            Just(View::Expanded),
        ]
    }

    /// Shapes of rank 0 to 4 with small, odd (1, 3, 17) and large (1000+) sizes.
    pub fn arb_shape() -> impl Strategy<Value = Vec<usize>> {
        prop_oneof![
            4 => prop::collection::vec(1usize..6, 0..=4),
            2 => prop::collection::vec(prop::sample::select(vec![1usize, 3, 17]), 1..=3),
            1 => (1usize..3, 1000usize..1100).prop_map(|(a, b)| vec![a, b]),
        ]
    }

    /// Deterministic pseudo-random values in `[lo, hi)`.
    pub fn values(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                lo + (hi - lo) * ((state >> 11) as f64 / (1u64 << 53) as f64)
            })
            .collect()
    }

    /// A tensor of `shape` and `dtype` laid out as `view`, with values in `[lo, hi)` (rounded
    /// for integer and bool dtypes, so bool gets a mix of true and false).
    pub fn make(shape: &[usize], view: View, dtype: DType, seed: u64, lo: f64, hi: f64) -> Tensor {
        let build = |base: &[usize]| {
            let n = base.iter().product();
            let mut v = values(n, seed, lo, hi);
            if !dtype.is_float() {
                v.iter_mut().for_each(|x| *x = x.round());
            }
            Tensor::from_vec(v, base).unwrap().cast(dtype).unwrap()
        };
        let rank = shape.len();
        let n: usize = shape.iter().product();
        let t = match view {
            View::Contiguous => build(shape),
            View::Offset => build(&[n + 3])
                .narrow(0, 3, n)
                .unwrap()
                .reshape_to(shape)
                .unwrap(),
            View::Permuted => {
                let perm: Vec<isize> = (0..rank as isize).rev().collect();
                let base: Vec<usize> = shape.iter().rev().copied().collect();
                build(&base).permute(&perm).unwrap()
            }
            View::Sliced => {
                let base: Vec<usize> = shape.iter().map(|&d| 2 * d + 1).collect();
                let mut t = build(&base);
                for (a, &d) in shape.iter().enumerate() {
                    t = t.slice(a as isize, 1, 1 + 2 * d as isize, 2).unwrap();
                }
                t
            }
            View::Expanded => {
                let base: Vec<usize> = shape
                    .iter()
                    .enumerate()
                    .map(|(i, &d)| if i % 2 == 0 { 1 } else { d })
                    .collect();
                build(&base).expand(shape).unwrap()
            }
        };
        assert_eq!(t.shape(), shape);
        t
    }

    /// True when `got` is within `rel` (relative, with a small absolute floor) of `want`, or
    /// both are NaN, or both are the same infinity.
    pub fn close(got: f64, want: f64, rel: f64) -> bool {
        (got.is_nan() && want.is_nan())
            || got == want
            || (got - want).abs() <= rel * want.abs().max(1e-3)
    }
}
