//! CPU kernels: matrix products.
//!
//! [`gemm()`] is the single entry point for floating-point matrix products (`f32`, `f64`, `f16`):
//! it takes strided views ([`MatRef`], [`MatMut`]) checked against their slices, and calls the
//! `gemm` crate with the strides as they are, so a transposed or sliced operand is never
//! copied. Vector-shaped products (one row or one column of output) take loops of their own
//! where they are faster: an axpy loop over the rows of a row-major right operand (`f32`,
//! `f64`), and, for `f32` on AVX-512, dot products with cache-line-aligned loads over
//! contiguous matrix rows, such as a linear layer's weight applied to one sample (`cpu::dot`).
//! Convolutions and fused graph kernels (matmul + bias: fill `dst` with the broadcast bias,
//! then call [`gemm()`] with `accumulate = true`) build on it.
//!
//! [`matmul_batched`] runs a batch of products over broadcast layouts (the shape logic of
//! `torch.matmul` lives in the tensor op); [`matmul_batched_int`] is the plain loop used for
//! integer dtypes.

use super::simd::dispatch;
use crate::layout::Layout;
use crate::{f16, Element, Error, Result};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for half::f16 {}
}

/// Element types the `gemm` crate multiplies natively: `f32`, `f64` and `f16`.
pub trait GemmScalar:
    Element + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + sealed::Sealed
{
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Whether the vector-times-matrix loops of this module handle this type (they do for
    /// `f32` and `f64`; `f16` always goes to `gemm`).
    const VECTOR_KERNELS: bool;
}

impl GemmScalar for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const VECTOR_KERNELS: bool = true;
}
impl GemmScalar for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const VECTOR_KERNELS: bool = true;
}
impl GemmScalar for f16 {
    const ZERO: Self = f16::ZERO;
    const ONE: Self = f16::ONE;
    const VECTOR_KERNELS: bool = false;
}

/// How many threads one matrix product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// One thread when the product is small (below [`SPLIT_WORK`] multiply-adds, or a side
    /// shorter than [`SPLIT_MIN_SIDE`]), otherwise one part of the output per thread of the
    /// rayon pool; vector-shaped products from [`SPLIT_VECTOR_WORK`] multiply-adds in two
    /// halves.
    Auto,
    /// Always the calling thread only (for callers that already run in parallel).
    Single,
}

/// One past the last element a matrix reads (0 for an empty matrix, which fits any buffer
/// whatever its offset: the batch offsets of an empty tensor's matrices may pass its end).
fn span_end(offset: usize, dims: [usize; 2], strides: [usize; 2]) -> Option<usize> {
    if dims[0] == 0 || dims[1] == 0 {
        return Some(0);
    }
    let last = (dims[0] - 1)
        .checked_mul(strides[0])?
        .checked_add((dims[1] - 1).checked_mul(strides[1])?)?;
    offset.checked_add(last)?.checked_add(1)
}

fn check_span(
    op: &'static str,
    len: usize,
    offset: usize,
    dims: [usize; 2],
    strides: [usize; 2],
) -> Result<()> {
    match span_end(offset, dims, strides) {
        Some(end) if end <= len => Ok(()),
        _ => Err(Error::BadShape {
            op,
            shape: dims.to_vec(),
            msg: format!(
                "a matrix at offset {offset} with strides {strides:?} does not fit in a buffer of {len} elements"
            ),
        }),
    }
}

/// A read-only strided matrix inside a slice: element `(i, j)` is
/// `data[offset + i * row_stride + j * col_stride]`. Strides may be 0 (broadcast).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    data: &'a [T],
    offset: usize,
    dims: [usize; 2],
    strides: [usize; 2],
}

impl<'a, T> MatRef<'a, T> {
    /// A `dims[0] x dims[1]` matrix with `strides = [row_stride, col_stride]`; fails if it
    /// reaches past the end of `data`.
    pub fn new(
        data: &'a [T],
        offset: usize,
        dims: [usize; 2],
        strides: [usize; 2],
    ) -> Result<Self> {
        check_span("gemm", data.len(), offset, dims, strides)?;
        Ok(MatRef {
            data,
            offset,
            dims,
            strides,
        })
    }

    /// A row-major matrix filling `data` from the start (row stride `cols`).
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Result<Self> {
        MatRef::new(data, 0, [rows, cols], [cols, 1])
    }

    /// The transposed matrix (a view: strides swapped).
    pub fn t(self) -> Self {
        MatRef {
            dims: [self.dims[1], self.dims[0]],
            strides: [self.strides[1], self.strides[0]],
            ..self
        }
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        self.dims
    }
}

/// A writable strided matrix inside a slice, whose elements do not overlap.
#[derive(Debug)]
pub struct MatMut<'a, T> {
    data: &'a mut [T],
    offset: usize,
    dims: [usize; 2],
    strides: [usize; 2],
}

impl<'a, T> MatMut<'a, T> {
    /// A `dims[0] x dims[1]` output with `strides = [row_stride, col_stride]`; fails if it
    /// reaches past the end of `data` or if two of its elements share a position.
    pub fn new(
        data: &'a mut [T],
        offset: usize,
        dims: [usize; 2],
        strides: [usize; 2],
    ) -> Result<Self> {
        check_span("gemm", data.len(), offset, dims, strides)?;
        let [r, c] = dims;
        let [rs, cs] = strides;
        let disjoint = r <= 1 && (c <= 1 || cs >= 1)
            || c <= 1 && rs >= 1
            || cs >= 1 && rs >= c * cs
            || rs >= 1 && cs >= r * rs;
        if !disjoint {
            return Err(Error::invalid(
                "gemm",
                format!("output strides {strides:?} make elements of a {r}x{c} matrix overlap"),
            ));
        }
        Ok(MatMut {
            data,
            offset,
            dims,
            strides,
        })
    }

    /// A row-major output filling `data` from the start (row stride `cols`).
    pub fn row_major(data: &'a mut [T], rows: usize, cols: usize) -> Result<Self> {
        MatMut::new(data, 0, [rows, cols], [cols, 1])
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        self.dims
    }
}

/// `dst = lhs @ rhs`, or `dst += lhs @ rhs` when `accumulate` is true, through the `gemm`
/// crate (AVX-512 / AVX2 kernels chosen at run time). Operand strides are passed through as
/// they are. Fails if the dimensions do not chain (`[m, k] @ [k, n] -> [m, n]`).
///
/// ```
/// use tandem_tensor::cpu::matmul::{gemm, MatMut, MatRef, Threads};
/// let a = [1.0f32, 2.0, 3.0, 4.0]; // [[1, 2], [3, 4]]
/// let mut c = [10.0f32; 4];
/// let lhs = MatRef::row_major(&a, 2, 2).unwrap();
/// gemm(MatMut::row_major(&mut c, 2, 2).unwrap(), lhs, lhs.t(), true, Threads::Auto).unwrap();
/// assert_eq!(c, [15.0, 21.0, 21.0, 35.0]); // 10 + a @ a^T
/// ```
pub fn gemm<T: GemmScalar>(
    dst: MatMut<'_, T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    accumulate: bool,
    threads: Threads,
) -> Result<()> {
    let [m, k] = lhs.dims;
    let [k2, n] = rhs.dims;
    if k != k2 || dst.dims != [m, n] {
        return Err(Error::ShapeMismatch {
            op: "gemm",
            lhs: lhs.dims.to_vec(),
            rhs: rhs.dims.to_vec(),
            hint: format!("into an output of {:?}", dst.dims),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let mut dst = dst;
    if T::VECTOR_KERNELS && (m == 1 || n == 1) && vector_product(&mut dst, &lhs, &rhs, accumulate) {
        return Ok(());
    }
    let work = m.saturating_mul(n).saturating_mul(k);
    let at = |data_len: usize, offset: usize| offset.min(data_len);
    let call = Call {
        m,
        n,
        k,
        dst: (
            dst.data.as_mut_ptr() as usize,
            at(dst.data.len(), dst.offset),
        ),
        dst_strides: dst.strides,
        lhs: (lhs.data.as_ptr() as usize, at(lhs.data.len(), lhs.offset)),
        lhs_strides: lhs.strides,
        rhs: (rhs.data.as_ptr() as usize, at(rhs.data.len(), rhs.offset)),
        rhs_strides: rhs.strides,
        accumulate,
    };
    let threads = match threads {
        Threads::Single => 1,
        Threads::Auto if (m == 1 || n == 1) && work >= SPLIT_VECTOR_WORK => {
            2.min(rayon::current_num_threads())
        }
        Threads::Auto if work < SPLIT_WORK || m.min(n).min(k) < SPLIT_MIN_SIDE => 1,
        Threads::Auto => rayon::current_num_threads(),
    };
    // SAFETY: `MatRef::new` / `MatMut::new` checked that every element of the three matrices
    // lies inside its slice, and `MatMut::new` that no two output elements alias; the output
    // is borrowed mutably, so it cannot overlap an operand. `T` is f32, f64 or half::f16,
    // which is the type `gemm` names `gemm::f16`.
    unsafe { call.run_split::<T>(threads) };
    Ok(())
}

/// Products of at least this many multiply-adds (`m * n * k`) are split over the rayon pool
/// under [`Threads::Auto`], unless a side is shorter than [`SPLIT_MIN_SIDE`]; smaller ones
/// run on the calling thread. The output is cut in halves along its longer side, again and
/// again, until there is one part per thread, and each part is one single-threaded `gemm`
/// call, which was faster than `gemm`'s own threading on a 2-core AVX-512 machine: the
/// batch-1024 MLP graph step (two 1024x784x128 products) went from 3.4-3.7 to 2.8-3.0 ms
/// (`cargo run --release -p tandem-graph --example graph_timing -- mlp1024 200`, alternating
/// runs), and the batch-64 step (products below 2^23 multiply-adds, where `gemm`'s threading
/// was slower than one thread) from 424 to 305 us in graph mode when its products were split.
pub const SPLIT_WORK: usize = 1 << 20;

/// Vector-shaped products (`m == 1` or `n == 1`, e.g. a layer applied to one sample) of at
/// least this many multiply-adds are cut in two halves of the output under [`Threads::Auto`]:
/// they are bound by reading the matrix operand, and two cores read it faster than one. The
/// calling thread runs one half and takes the other too if no helper has started it (see
/// [`super::par`]), so a busy pool costs little. MLP forward pass at batch 1 (`[1, 784] x
/// [784, 128]`, reading 401 KB), `cargo run --release --example profile_step -- infer 1
/// 100000` on a 2-core AVX-512 machine, old and new binaries alternated: that product 7.7-9.1
/// us on one thread, 6.6-6.9 us in two halves.
pub const SPLIT_VECTOR_WORK: usize = 1 << 16;

/// Skinny products (a side shorter than this, e.g. the 10 outputs of a classifier layer) are
/// bound by memory, not arithmetic: they stay on one thread.
pub const SPLIT_MIN_SIDE: usize = 32;

/// One `gemm::gemm` call: sizes, `(base address, element offset)` and `[row, col]` strides of
/// the three matrices. Addresses are plain integers so that halves can move to other threads.
#[derive(Clone, Copy)]
struct Call {
    m: usize,
    n: usize,
    k: usize,
    dst: (usize, usize),
    dst_strides: [usize; 2],
    lhs: (usize, usize),
    lhs_strides: [usize; 2],
    rhs: (usize, usize),
    rhs_strides: [usize; 2],
    accumulate: bool,
}

impl Call {
    /// The two halves of the output along its longer side (rows `..h` / `h..` with the
    /// matching rows of `lhs`, or the same for columns with `rhs`), cut at a multiple of 16
    /// when the side allows (whole vector registers for `gemm`'s tiles).
    fn halves(&self) -> (Call, Call) {
        let (mut a, mut b) = (*self, *self);
        let cut = |side: usize| match side / 2 / 16 * 16 {
            0 => side / 2,
            h => h,
        };
        if self.m >= self.n {
            let h = cut(self.m);
            a.m = h;
            b.m = self.m - h;
            b.dst.1 += h * self.dst_strides[0];
            b.lhs.1 += h * self.lhs_strides[0];
        } else {
            let h = cut(self.n);
            a.n = h;
            b.n = self.n - h;
            b.dst.1 += h * self.dst_strides[1];
            b.rhs.1 += h * self.rhs_strides[1];
        }
        (a, b)
    }

    /// Runs the product as `parts` single-threaded pieces on the rayon pool (halving the
    /// output along its longer side while there are parts left and that side is at least
    /// `2 * SPLIT_MIN_SIDE`).
    ///
    /// # Safety
    /// As for [`Call::run`].
    unsafe fn run_split<T: GemmScalar>(&self, parts: usize) {
        if parts <= 1 || self.m.max(self.n) < 2 * SPLIT_MIN_SIDE {
            // SAFETY: the caller's contract.
            return unsafe { self.run::<T>() };
        }
        let (a, b) = self.halves();
        let first = parts.div_ceil(2);
        // SAFETY: the caller's contract for the whole product; the two halves write disjoint
        // parts of the output (rows or columns `..h` and `h..`), so they may run at the same
        // time.
        super::par::join(
            || unsafe { a.run_split::<T>(first) },
            || unsafe { b.run_split::<T>(parts - first) },
        );
    }

    /// Runs a vector-shaped `f32` product (`m == 1` or `n == 1`) whose matrix operand has
    /// contiguous rows along `k` (a linear layer's weight for one sample) as dot products with
    /// 64-byte-aligned loads ([`super::dot`]); returns false, having done nothing, for other
    /// products or where that kernel does not run.
    ///
    /// # Safety
    /// As for [`Call::run`], with `T` = `f32`.
    unsafe fn dot_rows_f32(&self) -> bool {
        let ptr = |(base, offset): (usize, usize)| (base as *mut f32).wrapping_add(offset);
        let (x, rows, ld, count, out_stride) =
            if self.m == 1 && self.lhs_strides[1] == 1 && self.rhs_strides[0] == 1 {
                // out[0, j] = lhs[0, :] . rhs[:, j]
                (
                    self.lhs,
                    self.rhs,
                    self.rhs_strides[1],
                    self.n,
                    self.dst_strides[1],
                )
            } else if self.n == 1 && self.rhs_strides[0] == 1 && self.lhs_strides[1] == 1 {
                // out[i, 0] = lhs[i, :] . rhs[:, 0]
                (
                    self.rhs,
                    self.lhs,
                    self.lhs_strides[0],
                    self.m,
                    self.dst_strides[0],
                )
            } else {
                return false;
            };
        let product = super::dot::DotRows {
            x: ptr(x).cast_const(),
            k: self.k,
            a: ptr(rows).cast_const(),
            ld,
            n: count,
            out: ptr(self.dst),
            out_stride,
            accumulate: self.accumulate,
        };
        // SAFETY: the caller's contract: `x` holds `k` contiguous elements, each of the
        // `count` rows `k` contiguous elements `ld` apart, and the `count` outputs lie in the
        // output, which nobody else touches and which does not overlap the operands.
        unsafe { product.run() }
    }

    /// Runs the product single-threaded.
    ///
    /// # Safety
    /// The addresses, offsets, sizes and strides must describe matrices inside live buffers of
    /// `T` (the output writable and not read or written by anyone else meanwhile).
    unsafe fn run<T: GemmScalar>(&self) {
        // SAFETY: the caller's contract, and `T` is `f32` where the kernel is tried.
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>()
            && (self.m == 1 || self.n == 1)
            && unsafe { self.dot_rows_f32() }
        {
            return;
        }
        let ptr = |(base, offset): (usize, usize)| (base as *mut T).wrapping_add(offset);
        let stride = |s: usize| s as isize;
        // SAFETY: the caller's contract: every element addressed lies inside a live buffer of
        // `T`, and the output is written by nobody else meanwhile.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                ptr(self.dst),
                stride(self.dst_strides[1]),
                stride(self.dst_strides[0]),
                self.accumulate,
                ptr(self.lhs).cast_const(),
                stride(self.lhs_strides[1]),
                stride(self.lhs_strides[0]),
                ptr(self.rhs).cast_const(),
                stride(self.rhs_strides[1]),
                stride(self.rhs_strides[0]),
                T::ONE,
                T::ONE,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
}

/// One-row products `[1, k] @ [k, n]` with a row-major right operand (and, by transposing
/// everything, `[m, k] @ [k, 1]` with a column-major left one), as an axpy loop over the rows
/// of the right operand: for batch-1 inference this beats `gemm`'s vector path (1x784x128
/// f32: 7.1 us instead of 8.6 us). Returns false, having done nothing, for other strides.
fn vector_product<T: GemmScalar>(
    dst: &mut MatMut<'_, T>,
    lhs: &MatRef<'_, T>,
    rhs: &MatRef<'_, T>,
    accumulate: bool,
) -> bool {
    if dst.dims[0] != 1 {
        // dst^T = rhs^T @ lhs^T turns the column into a row.
        let mut dst_t = MatMut {
            data: &mut *dst.data,
            offset: dst.offset,
            dims: [dst.dims[1], dst.dims[0]],
            strides: [dst.strides[1], dst.strides[0]],
        };
        return dst_t.dims[0] == 1 && vector_product(&mut dst_t, &rhs.t(), &lhs.t(), accumulate);
    }
    let [k, n] = rhs.dims;
    let [rs, cs] = rhs.strides;
    let Some(b) = rhs.data.get(rhs.offset..) else {
        return false;
    };
    if cs != 1 {
        return false;
    }
    let x = |p: usize| {
        lhs.data
            .get(lhs.offset + p * lhs.strides[1])
            .copied()
            .unwrap_or(T::ZERO)
    };
    let row = |p: usize| b.get(p * rs..p * rs + n);
    let mut out = vec![T::ZERO; n];
    let done = dispatch(
        #[inline(always)]
        || {
            // out += x[p] * rhs[p, :], four rows at a time.
            let mut p = 0;
            while p + 4 <= k {
                let (Some(r0), Some(r1), Some(r2), Some(r3)) =
                    (row(p), row(p + 1), row(p + 2), row(p + 3))
                else {
                    return false;
                };
                let (a0, a1, a2, a3) = (x(p), x(p + 1), x(p + 2), x(p + 3));
                for ((((o, &v0), &v1), &v2), &v3) in out.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3)
                {
                    *o = *o + (a0 * v0 + a1 * v1) + (a2 * v2 + a3 * v3);
                }
                p += 4;
            }
            for p in p..k {
                let Some(r) = row(p) else { return false };
                let a = x(p);
                for (o, &v) in out.iter_mut().zip(r) {
                    *o = *o + a * v;
                }
            }
            true
        },
    );
    if !done {
        return false;
    }
    let dcs = dst.strides[1];
    for (j, v) in out.into_iter().enumerate() {
        if let Some(d) = dst.data.get_mut(dst.offset + j * dcs) {
            *d = if accumulate { *d + v } else { v };
        }
    }
    true
}

/// If the dims `shape` with `strides` can be walked as one dimension (every dim's stride is
/// the next one's size times stride, ignoring size-1 dims), the stride of that dimension.
fn merged_stride(shape: &[usize], strides: &[usize]) -> Option<usize> {
    let mut inner: Option<(usize, usize)> = None; // (size, stride) of the merged dims so far
    for (&d, &s) in shape.iter().zip(strides).rev() {
        if d == 1 {
            continue;
        }
        inner = match inner {
            None => Some((d, s)),
            Some((size, stride)) if s == size * stride => Some((size * d, stride)),
            Some(_) => return None,
        };
    }
    Some(inner.map_or(0, |(_, s)| s))
}

/// Storage offsets of each batch entry of a layout whose last two dims are the matrix.
fn batch_offsets(layout: &Layout) -> Vec<usize> {
    let rank = layout.rank();
    let batch = Layout::from_parts(
        layout.shape()[..rank - 2].into(),
        layout.strides()[..rank - 2].into(),
        layout.offset(),
    );
    batch.positions().collect()
}

fn last_two(layout: &Layout) -> ([usize; 2], [usize; 2]) {
    let r = layout.rank();
    let s = layout.shape();
    let st = layout.strides();
    ([s[r - 2], s[r - 1]], [st[r - 2], st[r - 1]])
}

fn check_batched(lhs: &Layout, rhs: &Layout) -> Result<()> {
    let (lr, rr) = (lhs.rank(), rhs.rank());
    let ok = lr >= 2
        && lr == rr
        && lhs.shape()[..lr - 2] == rhs.shape()[..rr - 2]
        && lhs.shape()[lr - 1] == rhs.shape()[rr - 2];
    if ok {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op: "matmul",
            lhs: lhs.shape().to_vec(),
            rhs: rhs.shape().to_vec(),
            hint: "batched kernel needs [..., m, k] and [..., k, n] with equal batch dims".into(),
        })
    }
}

/// Batched product over layouts already broadcast to `[batch..., m, k]` and
/// `[batch..., k, n]` (equal batch dims; strides may be 0). Returns the contiguous
/// `[batch..., m, n]` result.
///
/// When `rhs` is shared by the whole batch and `lhs`'s batch and row dims merge (a linear
/// layer applied to `[B, M, K]`), this is one `(B*M) x k x n` product. Otherwise small
/// matrices are spread over the thread pool one per task, single-threaded inside, and large
/// ones run one after another with threads inside each product.
pub fn matmul_batched<T: GemmScalar>(
    lhs: &[T],
    lhs_l: &Layout,
    rhs: &[T],
    rhs_l: &Layout,
) -> Result<Vec<T>> {
    check_batched(lhs_l, rhs_l)?;
    let rank = lhs_l.rank();
    let ([m, k], lhs_st) = last_two(lhs_l);
    let ([_, n], rhs_st) = last_two(rhs_l);
    let batch: usize = lhs_l.shape()[..rank - 2].iter().product();
    // Not cleared first: every product below writes its whole output (`gemm` without
    // `accumulate` never reads it, and an empty inner dimension writes zeros), and an error
    // drops the vector unread. Clearing cost a pass over the output, about 1.5% of an eager
    // batch-1024 MLP step.
    let mut out = super::strided::output_vec::<T>(batch * m * n);
    if out.is_empty() {
        return Ok(out);
    }
    let rhs_shared = rhs_l.strides()[..rank - 2]
        .iter()
        .zip(&rhs_l.shape()[..rank - 2])
        .all(|(&s, &d)| s == 0 || d == 1);
    if rhs_shared {
        let merged = merged_stride(&lhs_l.shape()[..rank - 1], &lhs_l.strides()[..rank - 1]);
        // A single row keeps its own stride (gemm picks its vector kernels by stride).
        let merged = merged.map(|s| if batch * m <= 1 { lhs_st[0] } else { s });
        if let Some(row_stride) = merged {
            let lhs_m = MatRef::new(lhs, lhs_l.offset(), [batch * m, k], [row_stride, lhs_st[1]])?;
            let rhs_m = MatRef::new(rhs, rhs_l.offset(), [k, n], rhs_st)?;
            gemm(
                MatMut::row_major(&mut out, batch * m, n)?,
                lhs_m,
                rhs_m,
                false,
                Threads::Auto,
            )?;
            return Ok(out);
        }
    }
    let lhs_off = batch_offsets(lhs_l);
    let rhs_off = batch_offsets(rhs_l);
    let one = |b: usize, dst: &mut [T], threads: Threads| -> Result<()> {
        let a = MatRef::new(lhs, lhs_off.get(b).copied().unwrap_or(0), [m, k], lhs_st)?;
        let r = MatRef::new(rhs, rhs_off.get(b).copied().unwrap_or(0), [k, n], rhs_st)?;
        gemm(MatMut::row_major(dst, m, n)?, a, r, false, threads)
    };
    // Batches of products below 2^23 multiply-adds run one whole product per thread.
    let work = m * n * k;
    if batch > 1 && work < 1 << 23 && batch * work >= 1 << 16 {
        super::par::try_for_each_chunk(&mut out, m * n, |b, dst| one(b, dst, Threads::Single))?;
    } else {
        for (b, dst) in out.chunks_mut(m * n).enumerate() {
            one(b, dst, Threads::Auto)?;
        }
    }
    Ok(out)
}

/// Integer elements for [`matmul_batched_int`]: products and sums wrap around on overflow,
/// like PyTorch's integer matmul.
pub trait WrappingInt: Element {
    /// Zero.
    const ZERO: Self;
    /// `self * other + acc`, wrapping.
    fn mul_add_wrapping(self, other: Self, acc: Self) -> Self;
}

macro_rules! impl_wrapping_int {
    ($($t:ty),*) => {$(
        impl WrappingInt for $t {
            const ZERO: Self = 0;
            #[inline(always)]
            fn mul_add_wrapping(self, other: Self, acc: Self) -> Self {
                self.wrapping_mul(other).wrapping_add(acc)
            }
        }
    )*};
}
impl_wrapping_int!(i64, i32, u8);

/// Batched integer product over layouts broadcast to `[batch..., m, k]` and
/// `[batch..., k, n]`: a plain loop (integer matmul is rare and has no `gemm` kernel).
pub fn matmul_batched_int<T: WrappingInt>(
    lhs: &[T],
    lhs_l: &Layout,
    rhs: &[T],
    rhs_l: &Layout,
) -> Result<Vec<T>> {
    check_batched(lhs_l, rhs_l)?;
    let ([m, k], [lrs, lcs]) = last_two(lhs_l);
    let ([_, n], [rrs, rcs]) = last_two(rhs_l);
    let lhs_off = batch_offsets(lhs_l);
    let rhs_off = batch_offsets(rhs_l);
    check_span(
        "matmul",
        lhs.len(),
        lhs_off.iter().copied().max().unwrap_or(0),
        [m, k],
        [lrs, lcs],
    )?;
    check_span(
        "matmul",
        rhs.len(),
        rhs_off.iter().copied().max().unwrap_or(0),
        [k, n],
        [rrs, rcs],
    )?;
    let mut out = vec![T::ZERO; lhs_off.len() * m * n];
    if m * n == 0 {
        return Ok(out);
    }
    for ((dst, &lo), &ro) in out.chunks_mut(m * n).zip(&lhs_off).zip(&rhs_off) {
        for i in 0..m {
            let row = &mut dst[i * n..(i + 1) * n];
            for p in 0..k {
                let a = lhs[lo + i * lrs + p * lcs];
                for (j, d) in row.iter_mut().enumerate() {
                    *d = a.mul_add_wrapping(rhs[ro + p * rrs + j * rcs], *d);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_checks_its_arguments() {
        let a = [1.0f32; 6];
        assert!(MatRef::new(&a, 1, [2, 3], [3, 1]).is_err());
        assert!(MatRef::new(&a, 0, [2, 3], [0, 1]).is_ok());
        let mut d = [0.0f32; 6];
        assert!(MatMut::new(&mut d, 0, [2, 3], [1, 1]).is_err());
        assert!(MatMut::new(&mut d, 0, [2, 3], [1, 2]).is_ok());
        let l = MatRef::row_major(&a, 2, 3).unwrap();
        let err = gemm(
            MatMut::row_major(&mut d, 2, 3).unwrap(),
            l,
            l,
            false,
            Threads::Auto,
        );
        assert!(err.unwrap_err().to_string().contains("[2, 3] vs [2, 3]"));
    }

    #[test]
    fn split_products_equal_single_threaded_ones() {
        // Sizes that split, both split directions, a transposed right operand (a linear
        // layer) and an output written with an offset and row padding, accumulating; on pools
        // of 2, 3 and 5 threads (halving more than once, odd part counts).
        for &(m, k, n) in &[
            (64usize, 784usize, 128usize),
            (300, 64, 61),
            (40, 200, 150),
            (1024, 784, 128),
            (130, 1024, 333),
            (1, 784, 128),
            (300, 400, 1),
        ] {
            let vector = m == 1 || n == 1;
            assert!(
                m * n * k
                    >= if vector {
                        SPLIT_VECTOR_WORK
                    } else {
                        SPLIT_WORK
                    }
            );
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let b: Vec<f32> = (0..n * k)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 24.0)
                .collect();
            let lhs = MatRef::row_major(&a, m, k).unwrap();
            let rhs = MatRef::row_major(&b, n, k).unwrap().t();
            let run = |threads| {
                let mut d = vec![1.5f32; 3 + m * (n + 2)];
                let dst = MatMut::new(&mut d, 3, [m, n], [n + 2, 1]).unwrap();
                gemm(dst, lhs, rhs, true, threads).unwrap();
                d
            };
            let single = run(Threads::Single);
            // On pools of their own (the products run inside the pool) and from this thread
            // on the global pool (the caller takes part).
            for pool in [2, 3, 5, 0] {
                let split = if pool == 0 {
                    run(Threads::Auto)
                } else {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(pool)
                        .build()
                        .unwrap()
                        .install(|| run(Threads::Auto))
                };
                let close = split
                    .iter()
                    .zip(&single)
                    .all(|(x, y)| (x - y).abs() <= 1e-4 * y.abs().max(1.0));
                assert!(
                    close,
                    "{m}x{k}x{n} on {pool} threads: split and single-threaded products differ"
                );
                // Padding outside the output is untouched.
                assert_eq!(&split[..3], &[1.5; 3]);
                for i in 0..m {
                    let pad = 3 + i * (n + 2) + n;
                    assert_eq!(&split[pad..pad + 2], &[1.5, 1.5], "row {i}'s padding");
                }
            }
        }
    }

    #[test]
    fn gemm_with_empty_inner_dim_zeroes_or_keeps() {
        let a: [f64; 0] = [];
        let mut d = [5.0f64; 4];
        let l = MatRef::new(&a, 0, [2, 0], [0, 1]).unwrap();
        let r = MatRef::new(&a, 0, [0, 2], [2, 1]).unwrap();
        gemm(
            MatMut::row_major(&mut d, 2, 2).unwrap(),
            l,
            r,
            true,
            Threads::Auto,
        )
        .unwrap();
        assert_eq!(d, [5.0; 4]);
        gemm(
            MatMut::row_major(&mut d, 2, 2).unwrap(),
            l,
            r,
            false,
            Threads::Auto,
        )
        .unwrap();
        assert_eq!(d, [0.0; 4]);
    }

    #[test]
    fn products_write_every_output_element() {
        // Outputs are not cleared before the product: an empty inner dimension must still give
        // zeros, and every output of a batch (threaded inside or one product per task) is
        // written. The allocator is made to hand back memory full of a non-zero pattern.
        for _ in 0..4 {
            drop(vec![7.0f32; 1 << 16]);
            let empty = Layout::contiguous(&[3, 4, 0]);
            let out =
                matmul_batched::<f32>(&[], &empty, &[], &Layout::contiguous(&[3, 0, 5])).unwrap();
            assert_eq!(out, vec![0.0; 60]);
        }
        for (batch, m, k, n) in [(1, 70, 40, 90), (16, 8, 9, 10), (3, 1, 33, 7)] {
            let a: Vec<f32> = (0..batch * m * k).map(|i| (i % 5) as f32).collect();
            let b: Vec<f32> = (0..batch * k * n).map(|i| (i % 3) as f32).collect();
            drop(vec![7.0f32; batch * m * n]);
            let la = Layout::contiguous(&[batch, m, k]);
            let lb = Layout::contiguous(&[batch, k, n]);
            let out = matmul_batched(&a, &la, &b, &lb).unwrap();
            for p in 0..batch {
                for i in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k)
                            .map(|q| a[(p * m + i) * k + q] * b[(p * k + q) * n + j])
                            .sum();
                        assert_eq!(out[(p * m + i) * n + j], want, "{batch} {m} {k} {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn merged_strides() {
        assert_eq!(merged_stride(&[4, 3], &[6, 2]), Some(2));
        assert_eq!(merged_stride(&[4, 1, 3], &[3, 7, 1]), Some(1));
        assert_eq!(merged_stride(&[4, 3], &[4, 1]), None);
        assert_eq!(merged_stride(&[1, 1], &[5, 5]), Some(0));
    }

    #[test]
    fn integer_products_wrap() {
        let l = Layout::contiguous(&[1, 2]);
        let r = Layout::contiguous(&[2, 1]);
        let out = matmul_batched_int(&[200u8, 100], &l, &[2u8, 1], &r).unwrap();
        assert_eq!(out, vec![((400u32 + 100) % 256) as u8]);
    }
}
