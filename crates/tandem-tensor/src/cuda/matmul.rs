//! Matrix products on CUDA through cuBLAS (`cublasGemmStridedBatchedEx`): f32 (TF32 only when
//! allowed with [`set_allow_tf32`](super::set_allow_tf32)), f64, f16 and bf16 (both computed in
//! f32), with transposed views handled by the op flags and broadcast batch dims by a zero
//! batch stride; other layouts are made contiguous first.

use super::device::{cublas_present, lock, CudaDevice};
use super::elementwise::{same_device, wrap};
use super::meta::coalesce;
use super::storage::{cuda_of, CudaStorage};
use crate::{DType, Error, Layout, Result, Tensor};
use cudarc::cublas::result as cres;
use cudarc::cublas::sys as cb;
use cudarc::cublas::CudaBlas;
use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

const OP: &str = "matmul";

/// How one operand is read by cuBLAS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Operand {
    /// Read transposed (the matrix is stored column-major).
    pub trans: bool,
    /// Leading dimension.
    pub ld: usize,
    /// Distance between consecutive matrices of the batch (0 = broadcast).
    pub batch_stride: usize,
    /// Offset of the first element.
    pub offset: usize,
}

/// How cuBLAS can read a `[batch..., rows, cols]` layout without a copy, or `None`.
pub(crate) fn operand(layout: &Layout) -> Option<Operand> {
    let r = layout.rank();
    if r < 2 {
        return None;
    }
    let shape = layout.shape();
    let strides = layout.strides();
    let (rows, cols) = (shape[r - 2], shape[r - 1]);
    let (sr, sc) = (strides[r - 2], strides[r - 1]);
    let (trans, ld) = if (sc == 1 || cols <= 1) && (sr >= cols || rows <= 1) {
        (false, sr.max(cols).max(1))
    } else if (sr == 1 || rows <= 1) && (sc >= rows || cols <= 1) {
        (true, sc.max(rows).max(1))
    } else {
        return None;
    };
    let batch = coalesce(OP, &shape[..r - 2], &[(&strides[..r - 2], 0)]).ok()?;
    let batch_stride = match batch.rank {
        0 => 0,
        1 => batch.strides[0][0] as usize,
        _ => return None,
    };
    Some(Operand {
        trans,
        ld,
        batch_stride,
        offset: layout.offset(),
    })
}

fn blas_call(dev: &CudaDevice, f: impl FnOnce(&CudaBlas) -> Result<()>) -> Result<()> {
    let mut guard = lock(&dev.blas);
    if guard.is_none() {
        if !cublas_present() {
            return Err(dev.err(
                OP,
                "the cuBLAS library (libcublas) could not be loaded; install the CUDA runtime libraries or add them to LD_LIBRARY_PATH",
            ));
        }
        dev.bind(OP)?;
        let handle = catch_unwind(AssertUnwindSafe(|| CudaBlas::new(dev.stream.clone())))
            .map_err(|_| dev.err(OP, "cuBLAS could not be loaded"))?
            .map_err(|e| dev.err(OP, format!("creating the cuBLAS handle: {e:?}")))?;
        *guard = Some(handle);
    }
    match guard.as_ref() {
        Some(b) => f(b),
        None => Err(dev.err(OP, "no cuBLAS handle")),
    }
}

fn to_i32(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v)
        .map_err(|_| Error::invalid(OP, format!("{what} = {v} is too large for cuBLAS")))
}

/// `lhs @ rhs` for operands already broadcast to `[batch..., m, k]` and `[batch..., k, n]`
/// (the layouts), giving a tensor of `out_shape`.
pub(crate) fn matmul(
    lhs: &Tensor,
    rhs: &Tensor,
    lhs_layout: &Layout,
    rhs_layout: &Layout,
    out_shape: &[usize],
) -> Result<Tensor> {
    let dev = same_device(OP, &[lhs, rhs])?;
    let dtype = lhs.dtype();
    let (data_type, compute) = match dtype {
        DType::F32 if super::allow_tf32() => (
            cb::cudaDataType::CUDA_R_32F,
            cb::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        ),
        DType::F32 => (
            cb::cudaDataType::CUDA_R_32F,
            cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        DType::F64 => (
            cb::cudaDataType::CUDA_R_64F,
            cb::cublasComputeType_t::CUBLAS_COMPUTE_64F,
        ),
        DType::F16 => (
            cb::cudaDataType::CUDA_R_16F,
            cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        DType::BF16 => (
            cb::cudaDataType::CUDA_R_16BF,
            cb::cublasComputeType_t::CUBLAS_COMPUTE_32F,
        ),
        _ => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype,
                device: lhs.device(),
            })
        }
    };
    let r = lhs_layout.rank();
    let (m, k) = (lhs_layout.shape()[r - 2], lhs_layout.shape()[r - 1]);
    let n = rhs_layout.shape()[r - 1];
    let batch: usize = lhs_layout.shape()[..r - 2].iter().product();
    let numel = batch * m * n;
    if numel == 0 || k == 0 {
        return super::elementwise::full(&dev, out_shape, 0.0, dtype);
    }
    // Operands cuBLAS cannot read in place are made contiguous (broadcasts materialized).
    let prepare = |t: &Tensor, l: &Layout| -> Result<(Tensor, Operand)> {
        let view = t.with_layout(l.clone())?;
        if let Some(o) = operand(l) {
            return Ok((view, o));
        }
        let c = view.copy()?;
        let o = operand(c.layout()).ok_or_else(|| Error::invalid(OP, "internal: layout"))?;
        Ok((c, o))
    };
    let (a, oa) = prepare(lhs, lhs_layout)?;
    let (b, ob) = prepare(rhs, rhs_layout)?;
    let out = CudaStorage::alloc(&dev, OP, dtype, numel)?;
    let esize = dtype.size_in_bytes() as u64;
    let pa = cuda_of(&a, OP)?.ptr() + oa.offset as u64 * esize;
    let pb = cuda_of(&b, OP)?.ptr() + ob.offset as u64 * esize;
    let pc = out.ptr();
    let op_of = |t: bool| {
        if t {
            cb::cublasOperation_t::CUBLAS_OP_T
        } else {
            cb::cublasOperation_t::CUBLAS_OP_N
        }
    };
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS's first operand is B.
    let (mi, ni, ki) = (to_i32(n, "n")?, to_i32(m, "m")?, to_i32(k, "k")?);
    let (ldb, lda, ldc) = (to_i32(ob.ld, "ld")?, to_i32(oa.ld, "ld")?, to_i32(n, "ld")?);
    let batch_i = to_i32(batch, "batch")?;
    let (alpha32, beta32, alpha64, beta64) = (1.0f32, 0.0f32, 1.0f64, 0.0f64);
    let (alpha, beta): (*const c_void, *const c_void) = if dtype == DType::F64 {
        (&alpha64 as *const f64 as _, &beta64 as *const f64 as _)
    } else {
        (&alpha32 as *const f32 as _, &beta32 as *const f32 as _)
    };
    blas_call(&dev, |blas| {
        dev.bind(OP)?;
        // SAFETY: the pointers address blocks holding every element reached through the
        // leading dimensions and batch strides computed from the operands' own layouts (or
        // from fresh contiguous copies); alpha/beta match the compute type; the handle runs
        // on the device's stream, so the operands outlive the queued work in stream order.
        unsafe {
            cres::gemm_strided_batched_ex(
                *blas.handle(),
                op_of(ob.trans),
                op_of(oa.trans),
                mi,
                ni,
                ki,
                alpha,
                pb as *const c_void,
                data_type,
                ldb,
                ob.batch_stride as i64,
                pa as *const c_void,
                data_type,
                lda,
                oa.batch_stride as i64,
                beta,
                pc as *mut c_void,
                data_type,
                ldc,
                (m * n) as i64,
                batch_i,
                compute,
                cb::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| dev.err(OP, format!("cuBLAS gemm failed: {e:?}")))
    })?;
    // Keep the operands alive until the product is queued (they are dropped after this).
    drop((a, b));
    wrap(out, out_shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_forms() {
        let l = Layout::contiguous(&[3, 4, 5]);
        assert_eq!(
            operand(&l),
            Some(Operand {
                trans: false,
                ld: 5,
                batch_stride: 20,
                offset: 0
            })
        );
        let t = Layout::contiguous(&[3, 5, 4]).permute(&[0, 2, 1]).unwrap();
        assert_eq!(
            operand(&t).map(|o| (o.trans, o.ld, o.batch_stride)),
            Some((true, 4, 20))
        );
        let b = Layout::contiguous(&[4, 5])
            .broadcast_to(&[3, 4, 5])
            .unwrap();
        assert_eq!(operand(&b).map(|o| o.batch_stride), Some(0));
        let p = Layout::contiguous(&[4, 5, 3]).permute(&[2, 0, 1]).unwrap();
        assert_eq!(operand(&p), None, "strided rows and columns need a copy");
        let s = Layout::contiguous(&[4, 10]).slice(1, 2, 5, 1).unwrap();
        assert_eq!(
            operand(&s),
            Some(Operand {
                trans: false,
                ld: 10,
                batch_stride: 0,
                offset: 2
            })
        );
    }
}
