//! Dtype conversion.

use crate::cpu::unary::map1;
use crate::{CpuStorage, DType, Element, Result, Storage, Tensor};
use half::{bf16, f16};

/// `src` (viewed through `layout`) converted element by element, through the elementwise
/// map the unary kernels use (vectorized for this CPU, split over the pool when large).
fn convert<S: Element, D: Element>(src: &[S], layout: &crate::Layout) -> Vec<D> {
    map1(src, layout, cast_one::<S, D>)
}

#[inline(always)]
fn cast_one<S: Element, D: Element>(x: S) -> D {
    D::from_f64(x.to_f64())
}

fn cast_to<D: Element>(s: &CpuStorage, layout: &crate::Layout) -> CpuStorage {
    D::into_cpu_storage(crate::match_cpu_storage!(s, v => convert::<_, D>(v, layout)))
}

impl Tensor {
    /// Converts the elements to another dtype (a no-op clone if the dtype is the same).
    /// Float to integer truncates toward zero and saturates; NaN becomes 0; anything non-zero
    /// becomes `true` for bool.
    pub fn cast(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        match &**self.storage() {
            Storage::Cpu(s) => {
                let l = self.layout();
                let out = match dtype {
                    DType::F32 => cast_to::<f32>(s, l),
                    DType::F64 => cast_to::<f64>(s, l),
                    DType::F16 => cast_to::<f16>(s, l),
                    DType::BF16 => cast_to::<bf16>(s, l),
                    DType::I64 => cast_to::<i64>(s, l),
                    DType::I32 => cast_to::<i32>(s, l),
                    DType::U8 => cast_to::<u8>(s, l),
                    DType::Bool => cast_to::<bool>(s, l),
                };
                Tensor::from_cpu_storage(out, self.shape())
            }
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => crate::cuda::cast(self, dtype),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Tensor};

    #[test]
    fn casts() {
        let t = Tensor::from_vec(vec![1.7f32, -2.5, 0.0], &[3]).unwrap();
        assert_eq!(
            t.cast(DType::I64).unwrap().to_vec::<i64>().unwrap(),
            vec![1, -2, 0]
        );
        assert_eq!(
            t.cast(DType::Bool).unwrap().to_vec::<bool>().unwrap(),
            vec![true, true, false]
        );
        let back = t.cast(DType::F64).unwrap().cast(DType::F32).unwrap();
        assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.7, -2.5, 0.0]);
        let tt = Tensor::from_vec(vec![1i64, 2, 3, 4], &[2, 2])
            .unwrap()
            .t()
            .unwrap();
        assert_eq!(
            tt.cast(DType::F32).unwrap().to_vec::<f32>().unwrap(),
            vec![1.0, 3.0, 2.0, 4.0]
        );
    }

    /// Contiguous sources above the parallel threshold (here a view starting at an offset)
    /// convert element by element as the scalar rule says, in every chunk.
    #[test]
    fn large_contiguous_casts() {
        let n = 100_003;
        let v: Vec<f32> = (0..n + 5)
            .map(|i| match i % 7 {
                0 => f32::NAN,
                1 => -3.75,
                2 => 0.0,
                3 => 1e20,
                _ => i as f32 * 0.5,
            })
            .collect();
        let t = Tensor::from_vec(v.clone(), &[n + 5])
            .unwrap()
            .narrow(0, 5, n)
            .unwrap();
        let src = &v[5..];
        let ints = t.cast(DType::I64).unwrap().to_vec::<i64>().unwrap();
        let want: Vec<i64> = src
            .iter()
            .map(|&x| if x.is_nan() { 0 } else { x as i64 })
            .collect();
        assert_eq!(ints, want);
        let mask = t.cast(DType::Bool).unwrap();
        let want: Vec<bool> = src.iter().map(|&x| x != 0.0).collect();
        assert_eq!(mask.to_vec::<bool>().unwrap(), want);
        let back = mask.cast(DType::F32).unwrap().to_vec::<f32>().unwrap();
        let want: Vec<f32> = want.iter().map(|&b| if b { 1.0 } else { 0.0 }).collect();
        assert_eq!(back, want);
        let wide = t.cast(DType::F64).unwrap().to_vec::<f64>().unwrap();
        assert!(wide
            .iter()
            .zip(src)
            .all(|(&w, &x)| w.to_bits() == (x as f64).to_bits() || w.is_nan() && x.is_nan()));
    }
}
