//! Tensor operations: matrix products with `torch.matmul` semantics.

use crate::cpu::matmul::{matmul_batched, matmul_batched_int, GemmScalar, WrappingInt};
use crate::layout::broadcast_shapes;
use crate::{CpuStorage, DType, Device, Error, Layout, Result, Tensor};

/// The two operands broadcast to `[batch..., m, k]` and `[batch..., k, n]`, and the shape of
/// the result (with the promoted 1-D dims removed).
struct Plan {
    lhs: Layout,
    rhs: Layout,
    out_shape: Vec<usize>,
}

fn plan(a: &Tensor, b: &Tensor) -> Result<Plan> {
    let mismatch = |hint: String| Error::ShapeMismatch {
        op: "matmul",
        lhs: a.shape().to_vec(),
        rhs: b.shape().to_vec(),
        hint,
    };
    if a.rank() == 0 || b.rank() == 0 {
        return Err(mismatch("both operands need at least one dimension".into()));
    }
    let a2 = if a.rank() == 1 {
        a.unsqueeze(0)?
    } else {
        a.clone()
    };
    let b2 = if b.rank() == 1 {
        b.unsqueeze(1)?
    } else {
        b.clone()
    };
    let (ar, br) = (a2.rank(), b2.rank());
    let (m, k) = (a2.shape()[ar - 2], a2.shape()[ar - 1]);
    let (k2, n) = (b2.shape()[br - 2], b2.shape()[br - 1]);
    if k != k2 {
        return Err(mismatch(format!(
            "contracted dimensions differ: {k} (last of lhs) vs {k2} (first matrix dim of rhs)"
        )));
    }
    let batch = broadcast_shapes("matmul", &a2.shape()[..ar - 2], &b2.shape()[..br - 2])
        .map_err(|_| mismatch("batch dimensions do not broadcast".into()))?;
    let mut lhs_shape = batch.to_vec();
    lhs_shape.extend([m, k]);
    let mut rhs_shape = batch.to_vec();
    rhs_shape.extend([k, n]);
    let mut out_shape = batch.to_vec();
    if a.rank() > 1 {
        out_shape.push(m);
    }
    if b.rank() > 1 {
        out_shape.push(n);
    }
    Ok(Plan {
        lhs: a2.layout().broadcast_to(&lhs_shape)?,
        rhs: b2.layout().broadcast_to(&rhs_shape)?,
        out_shape,
    })
}

fn float_product<T: GemmScalar>(a: &[T], b: &CpuStorage, p: &Plan) -> Result<CpuStorage> {
    let b = b.as_slice::<T>()?;
    Ok(T::into_cpu_storage(matmul_batched(a, &p.lhs, b, &p.rhs)?))
}

/// `a @ b` for two host matrices `[m, k]` and `[k, n]` of a float dtype `gemm` multiplies:
/// their own layouts go to the kernel as they are, without [`plan`]'s broadcast views (which
/// were most of the cost of a small product, such as a batch-1 classifier layer). `None` for
/// other dtypes or devices.
fn matrix_product(a: &Tensor, b: &Tensor) -> Result<Option<Tensor>> {
    fn go<T: GemmScalar>(a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let (sa, la) = a.cpu("matmul")?;
        let (sb, lb) = b.cpu("matmul")?;
        let out = matmul_batched(sa.as_slice::<T>()?, la, sb.as_slice::<T>()?, lb)?;
        Tensor::from_cpu_storage(T::into_cpu_storage(out), &[a.shape()[0], b.shape()[1]])
    }
    if !a.device().is_cpu() || !b.device().is_cpu() {
        return Ok(None);
    }
    match a.dtype() {
        DType::F32 => go::<f32>(a, b).map(Some),
        DType::F64 => go::<f64>(a, b).map(Some),
        DType::F16 => go::<crate::f16>(a, b).map(Some),
        _ => Ok(None),
    }
}

fn int_product<T: WrappingInt>(a: &[T], b: &CpuStorage, p: &Plan) -> Result<CpuStorage> {
    let b = b.as_slice::<T>()?;
    Ok(T::into_cpu_storage(matmul_batched_int(
        a, &p.lhs, b, &p.rhs,
    )?))
}

impl Tensor {
    /// Matrix product with `torch.matmul` semantics: 1-D x 1-D is a dot product (0-d result);
    /// 2-D x 2-D a matrix product; a 1-D operand is promoted to a matrix by prepending (lhs)
    /// or appending (rhs) a 1, removed from the result; higher ranks are batches of matrices
    /// with NumPy broadcasting of the batch dims (`[B, M, K] x [K, N]`, `[1, M, K] x [B, K, N]`).
    ///
    /// Both operands must have the same dtype. `f32`, `f64` and `f16` run on the `gemm` crate
    /// with the operands' own strides (a transposed view is not copied); `bf16` is computed in
    /// `f32`; integer dtypes use a plain loop whose arithmetic wraps on overflow.
    ///
    /// ```
    /// use tandem_tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    /// let g = a.matmul(&a.t().unwrap()).unwrap(); // a @ a^T
    /// assert_eq!(g.to_vec::<f32>().unwrap(), vec![14.0, 32.0, 32.0, 77.0]);
    /// let v = Tensor::from_vec(vec![1.0f32, 0.0, -1.0], &[3]).unwrap();
    /// assert_eq!(a.matmul(&v).unwrap().to_vec::<f32>().unwrap(), vec![-2.0, -2.0]);
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        if self.dtype() != rhs.dtype() {
            return Err(Error::DTypeMismatch {
                op: "matmul",
                expected: format!("the lhs dtype {}", self.dtype()),
                got: rhs.dtype(),
            });
        }
        if self.device() != rhs.device() {
            return Err(Error::DeviceMismatch {
                op: "matmul",
                lhs: self.device(),
                rhs: rhs.device(),
            });
        }
        if self.rank() == 2 && rhs.rank() == 2 && self.shape()[1] == rhs.shape()[0] {
            if let Some(out) = matrix_product(self, rhs)? {
                return Ok(out);
            }
        }
        let p = plan(self, rhs)?;
        #[cfg(feature = "cuda")]
        if self.device().is_cuda() {
            return crate::cuda::matmul(self, rhs, &p.lhs, &p.rhs, &p.out_shape);
        }
        if self.dtype() == DType::BF16 {
            let a = self.cast(DType::F32)?;
            let b = rhs.cast(DType::F32)?;
            return a.matmul(&b)?.cast(DType::BF16);
        }
        let a = self.storage().cpu("matmul")?;
        let b = rhs.storage().cpu("matmul")?;
        let out = match a {
            CpuStorage::F32(a) => float_product(a, b, &p)?,
            CpuStorage::F64(a) => float_product(a, b, &p)?,
            CpuStorage::F16(a) => float_product(a, b, &p)?,
            CpuStorage::I64(a) => int_product(a, b, &p)?,
            CpuStorage::I32(a) => int_product(a, b, &p)?,
            CpuStorage::U8(a) => int_product(a, b, &p)?,
            CpuStorage::BF16(_) | CpuStorage::Bool(_) => {
                return Err(Error::UnsupportedDType {
                    op: "matmul",
                    dtype: self.dtype(),
                    device: Device::Cpu,
                })
            }
        };
        Tensor::from_cpu_storage(out, &p.out_shape)
    }
}

#[cfg(test)]
mod tests {
    use crate::{f16, DType, Tensor};
    use proptest::prelude::*;

    /// Deterministic pseudo-random values in [-1, 1).
    fn values(seed: u64, n: usize) -> Vec<f64> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Independent `torch.matmul` reference on f64 values: (values, shape).
    fn reference(a: &Tensor, b: &Tensor) -> (Vec<f64>, Vec<usize>) {
        let av = a.to_f64_vec().unwrap();
        let bv = b.to_f64_vec().unwrap();
        let mut ash = a.shape().to_vec();
        let mut bsh = b.shape().to_vec();
        if ash.len() == 1 {
            ash.insert(0, 1);
        }
        if bsh.len() == 1 {
            bsh.push(1);
        }
        let (m, k) = (ash[ash.len() - 2], ash[ash.len() - 1]);
        let n = bsh[bsh.len() - 1];
        let ab = &ash[..ash.len() - 2];
        let bb = &bsh[..bsh.len() - 2];
        let rank = ab.len().max(bb.len());
        let pad = |s: &[usize]| {
            let mut v = vec![1; rank - s.len()];
            v.extend_from_slice(s);
            v
        };
        let (ab, bb) = (pad(ab), pad(bb));
        let batch: Vec<usize> = ab.iter().zip(&bb).map(|(&x, &y)| x.max(y)).collect();
        let nb: usize = batch.iter().product();
        let flat = |idx: &[usize], dims: &[usize]| {
            idx.iter()
                .zip(dims)
                .fold(0, |acc, (&i, &d)| acc * d + if d == 1 { 0 } else { i })
        };
        let mut out = Vec::new();
        for bi in 0..nb {
            let mut idx = vec![0; rank];
            let mut r = bi;
            for d in (0..rank).rev() {
                idx[d] = r % batch[d];
                r /= batch[d];
            }
            let ao = flat(&idx, &ab) * m * k;
            let bo = flat(&idx, &bb) * k * n;
            for i in 0..m {
                for j in 0..n {
                    let mut s = 0.0;
                    for p in 0..k {
                        s += av[ao + i * k + p] * bv[bo + p * n + j];
                    }
                    out.push(s);
                }
            }
        }
        let mut shape = batch.clone();
        if a.rank() > 1 {
            shape.push(m);
        }
        if b.rank() > 1 {
            shape.push(n);
        }
        (out, shape)
    }

    /// A tensor of `shape` and `dtype`, built as a view of the kind `kind` picks: contiguous,
    /// the transpose of a contiguous tensor, a slice of a larger one, or an expanded size-1 dim.
    fn operand(shape: &[usize], dtype: DType, kind: u8, seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        // Integers get small whole values (-10..10).
        let scale = if dtype.is_float() { 1.0 } else { 10.0 };
        let make = |s: &[usize], count: usize| {
            let v: Vec<f64> = values(seed, count).iter().map(|x| x * scale).collect();
            Tensor::from_vec(v, s).unwrap().cast(dtype).unwrap()
        };
        let r = shape.len();
        match kind % 4 {
            1 if r >= 2 => {
                let mut s = shape.to_vec();
                s.swap(r - 2, r - 1);
                make(&s, n).t().unwrap()
            }
            2 => {
                let mut s = shape.to_vec();
                s[r - 1] = 2 * shape[r - 1] + 1;
                let count = s.iter().product();
                let t = make(&s, count);
                t.slice(-1, 1, isize::MAX, 2).unwrap()
            }
            3 if shape[0] > 1 => {
                let mut s = shape.to_vec();
                s[0] = 1;
                let count = s.iter().product();
                make(&s, count).expand(shape).unwrap()
            }
            _ => make(shape, n),
        }
    }

    fn check(a: &Tensor, b: &Tensor, tol: f64) {
        let got = a.matmul(b).unwrap();
        let (want, shape) = reference(a, b);
        assert_eq!(got.shape(), &shape[..], "{a:?} x {b:?}");
        assert_eq!(got.dtype(), a.dtype());
        let g = got.to_f64_vec().unwrap();
        for (i, (x, y)) in g.iter().zip(&want).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{a:?} x {b:?} at {i}: {x} vs {y}"
            );
        }
    }

    fn dim() -> impl Strategy<Value = usize> {
        prop_oneof![Just(1usize), Just(3), Just(17), 1usize..40]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matmul_matches_reference(
            m in dim(), k in dim(), n in dim(),
            batch in proptest::collection::vec(1usize..4, 0..3),
            rhs_batch_len in 0usize..3,
            vec_mode in 0u8..4,
            kinds in (0u8..4, 0u8..4),
            seed in any::<u64>(),
        ) {
            let mut ash = batch.clone();
            ash.extend([m, k]);
            let rb = &batch[batch.len() - rhs_batch_len.min(batch.len())..];
            let mut bsh = rb.to_vec();
            bsh.extend([k, n]);
            // vec_mode: 1 = lhs is 1-D, 2 = rhs is 1-D, 3 = both.
            if vec_mode & 1 == 1 { ash = vec![k]; }
            if vec_mode & 2 == 2 { bsh = vec![k]; }
            for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
                let a = operand(&ash, dtype, kinds.0, seed);
                let b = operand(&bsh, dtype, kinds.1, seed ^ 0x5555);
                check(&a, &b, tol);
            }
        }

        #[test]
        fn half_and_integer_matmul(m in dim(), k in 1usize..20, n in dim(), kinds in (0u8..4, 0u8..4), seed in any::<u64>()) {
            for (dtype, tol) in [(DType::F16, 2e-2), (DType::BF16, 5e-2)] {
                let a = operand(&[2, m, k], dtype, kinds.0, seed);
                let b = operand(&[k, n], dtype, kinds.1, seed + 1);
                check(&a, &b, tol * (k as f64).sqrt());
            }
            for dtype in [DType::I64, DType::I32] {
                let a = operand(&[m, k], dtype, kinds.0, seed);
                let b = operand(&[2, k, n], dtype, kinds.1, seed + 1);
                check(&a, &b, 0.0);
            }
        }
    }

    #[test]
    fn big_and_batched_paths() {
        // Large enough for the threaded gemm path, transposed rhs as in a linear layer.
        let a = operand(&[130, 300], DType::F32, 0, 1);
        let w = operand(&[250, 300], DType::F32, 0, 2);
        check(&a, &w.t().unwrap(), 1e-5);
        // Folded batch: [B, M, K] x [K, N] becomes one product.
        let x = operand(&[5, 7, 33], DType::F64, 0, 3);
        check(&x, &operand(&[33, 9], DType::F64, 1, 4), 1e-12);
        // Many small matrices run in parallel over the batch.
        let x = operand(&[300, 9, 20], DType::F32, 0, 5);
        check(
            &x,
            &operand(&[1, 20, 30], DType::F32, 0, 6)
                .expand(&[300, 20, 30])
                .unwrap(),
            1e-5,
        );
        check(&x, &operand(&[300, 20, 8], DType::F32, 1, 7), 1e-5);
        // A transposed view goes straight through: no copy of either operand.
        let w2 = operand(&[40, 20], DType::F32, 1, 8);
        assert!(!w2.is_contiguous());
        check(&operand(&[20, 40], DType::F32, 0, 9), &w2, 1e-5);
    }

    #[test]
    fn two_matrices_take_the_direct_path_with_the_batched_numbers() {
        // Two matrices go to the kernel with their own layouts; the same product as one
        // matrix of a batch (which goes through the broadcast plan) gives the same bits.
        let bits = crate::ops::bits;
        let sliced = operand(&[9, 40], DType::F32, 0, 12)
            .narrow(0, 2, 5)
            .unwrap()
            .narrow(1, 3, 30)
            .unwrap();
        let cases = [
            (
                operand(&[1, 784], DType::F32, 0, 10),
                operand(&[784, 128], DType::F32, 1, 11),
            ),
            (operand(&[64, 30], DType::F32, 1, 13), sliced.t().unwrap()),
            (
                operand(&[7, 33], DType::F64, 0, 14),
                operand(&[33, 5], DType::F64, 1, 15),
            ),
            (
                operand(&[6, 8], DType::F16, 0, 16),
                operand(&[8, 3], DType::F16, 0, 17),
            ),
            (
                operand(&[4, 6], DType::I64, 0, 18),
                operand(&[6, 2], DType::I64, 0, 19),
            ),
            (
                operand(&[5, 8], DType::F32, 3, 20),
                operand(&[8, 6], DType::F32, 2, 21),
            ),
        ];
        for (a, b) in &cases {
            let direct = a.matmul(b).unwrap();
            let batched = a.unsqueeze(0).unwrap().matmul(b).unwrap();
            assert_eq!(direct.shape(), &batched.shape()[1..]);
            assert_eq!(
                bits(&direct),
                bits(&batched),
                "{:?} @ {:?}",
                a.shape(),
                b.shape()
            );
            check(a, b, 1e-2);
        }
    }

    #[test]
    fn edge_shapes() {
        let a = Tensor::zeros(&[3, 0], DType::F32);
        let b = Tensor::zeros(&[0, 4], DType::F32);
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.shape(), &[3, 4]);
        assert_eq!(c.to_vec::<f32>().unwrap(), vec![0.0; 12]);
        assert_eq!(
            b.matmul(&Tensor::zeros(&[4, 2], DType::F32))
                .unwrap()
                .shape(),
            &[0, 2]
        );
        let v = Tensor::from_vec(vec![1.0f64, 2.0, 3.0], &[3]).unwrap();
        let d = v.matmul(&v).unwrap();
        assert_eq!(d.shape(), &[] as &[usize]);
        assert_eq!(d.item().unwrap(), 14.0);
        let h = Tensor::from_vec(vec![f16::from_f32(2.0); 4], &[2, 2]).unwrap();
        assert_eq!(
            h.matmul(&h).unwrap().to_vec::<f16>().unwrap()[0].to_f64(),
            8.0
        );
    }

    #[test]
    fn errors_name_both_shapes() {
        let a = Tensor::zeros(&[2, 3], DType::F32);
        let b = Tensor::zeros(&[4, 5], DType::F32);
        let e = a.matmul(&b).unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[4, 5]"), "{e}");
        let e = Tensor::zeros(&[2, 2, 3], DType::F32)
            .matmul(&Tensor::zeros(&[3, 3, 1], DType::F32))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[2, 2, 3]") && e.contains("[3, 3, 1]") && e.contains("batch"),
            "{e}"
        );
        let e = a.matmul(&Tensor::scalar(1.0f32)).unwrap_err().to_string();
        assert!(e.contains("[2, 3]") && e.contains("[]"), "{e}");
        let e = a
            .matmul(&Tensor::zeros(&[3, 2], DType::F64))
            .unwrap_err()
            .to_string();
        assert!(e.contains("float64") && e.contains("float32"), "{e}");
        let bools = Tensor::zeros(&[2, 2], DType::Bool);
        assert!(bools
            .matmul(&bools)
            .unwrap_err()
            .to_string()
            .contains("bool"));
    }
}
