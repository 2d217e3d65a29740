//! Conversion between Tandem tensors and [`candle_core::Tensor`] (feature `candle`).
//!
//! Both directions copy the elements once (candle owns its storage) and keep shape and dtype:
//! f32, f64, f16, bf16, i64, i32 and u8 map to the candle dtype of the same name. Candle has no
//! boolean dtype, so a Tandem `bool` tensor becomes a candle `u8` tensor of zeros and ones.
//! Candle tensors must be on the CPU; other candle dtypes (u32, i16, the 8-bit floats) are
//! errors naming the dtype.
//!
//! ```
//! use tandem::candle_interop::{from_candle, to_candle};
//! let t = tandem::tensor::Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
//! let c = to_candle(&t).unwrap();
//! assert_eq!(c.dims(), &[2, 2]);
//! let back = from_candle(&c).unwrap();
//! assert_eq!(back.to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
//! ```

use candle_core::{DType as CDType, Device as CDevice, Tensor as CTensor};
use tandem_tensor::{bf16, f16, DType, Error, Result, Tensor};

fn candle_error(op: &'static str, e: candle_core::Error) -> Error {
    Error::invalid(op, format!("candle: {e}"))
}

/// Copies a Tandem tensor (any layout, CPU) into a new candle CPU tensor.
pub fn to_candle(t: &Tensor) -> Result<CTensor> {
    let shape = t.shape().to_vec();
    let dev = CDevice::Cpu;
    let made = match t.dtype() {
        DType::F32 => CTensor::from_vec(t.to_vec::<f32>()?, shape, &dev),
        DType::F64 => CTensor::from_vec(t.to_vec::<f64>()?, shape, &dev),
        DType::F16 => CTensor::from_vec(t.to_vec::<f16>()?, shape, &dev),
        DType::BF16 => CTensor::from_vec(t.to_vec::<bf16>()?, shape, &dev),
        DType::I64 => CTensor::from_vec(t.to_vec::<i64>()?, shape, &dev),
        DType::I32 => CTensor::from_vec(t.to_vec::<i32>()?, shape, &dev),
        DType::U8 => CTensor::from_vec(t.to_vec::<u8>()?, shape, &dev),
        DType::Bool => {
            let v: Vec<u8> = t.to_vec::<bool>()?.into_iter().map(u8::from).collect();
            CTensor::from_vec(v, shape, &dev)
        }
    };
    made.map_err(|e| candle_error("to_candle", e))
}

/// Copies a candle CPU tensor (any layout) into a new Tandem tensor of the same shape and dtype.
pub fn from_candle(c: &CTensor) -> Result<Tensor> {
    if !c.device().is_cpu() {
        return Err(Error::invalid(
            "from_candle",
            format!(
                "the candle tensor is on {:?}; move it to the CPU first",
                c.device()
            ),
        ));
    }
    let shape = c.dims().to_vec();
    let flat = c
        .flatten_all()
        .map_err(|e| candle_error("from_candle", e))?;
    let err = |e| candle_error("from_candle", e);
    match c.dtype() {
        CDType::F32 => Tensor::from_vec(flat.to_vec1::<f32>().map_err(err)?, &shape),
        CDType::F64 => Tensor::from_vec(flat.to_vec1::<f64>().map_err(err)?, &shape),
        CDType::F16 => Tensor::from_vec(flat.to_vec1::<f16>().map_err(err)?, &shape),
        CDType::BF16 => Tensor::from_vec(flat.to_vec1::<bf16>().map_err(err)?, &shape),
        CDType::I64 => Tensor::from_vec(flat.to_vec1::<i64>().map_err(err)?, &shape),
        CDType::I32 => Tensor::from_vec(flat.to_vec1::<i32>().map_err(err)?, &shape),
        CDType::U8 => Tensor::from_vec(flat.to_vec1::<u8>().map_err(err)?, &shape),
        other => Err(Error::invalid(
            "from_candle",
            format!("candle dtype {other:?} has no Tandem equivalent (f32, f64, f16, bf16, i64, i32, u8 do)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shared_dtype_round_trips_with_shape_and_values() {
        let base = Tensor::from_vec((0..24).map(|i| i as f64 - 7.0).collect(), &[2, 3, 4]).unwrap();
        for dt in [
            DType::F32,
            DType::F64,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
        ] {
            let t = base.cast(dt).unwrap();
            let c = to_candle(&t).unwrap();
            assert_eq!(c.dims(), &[2, 3, 4]);
            let back = from_candle(&c).unwrap();
            assert_eq!(back.dtype(), dt);
            assert_eq!(
                back.cast(DType::F64).unwrap().to_vec::<f64>().unwrap(),
                t.cast(DType::F64).unwrap().to_vec::<f64>().unwrap()
            );
        }
        let u = Tensor::from_vec(vec![0u8, 7, 255], &[3]).unwrap();
        assert_eq!(
            from_candle(&to_candle(&u).unwrap())
                .unwrap()
                .to_vec::<u8>()
                .unwrap(),
            vec![0, 7, 255]
        );
    }

    #[test]
    fn views_and_bools_convert_by_value() {
        let t = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
        let tt = t.transpose(0, 1).unwrap();
        let c = to_candle(&tt).unwrap();
        assert_eq!(c.dims(), &[3, 2]);
        assert_eq!(
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        // A non-contiguous candle tensor comes back in logical order.
        let ct = c.t().unwrap();
        assert_eq!(
            from_candle(&ct).unwrap().to_vec::<f32>().unwrap(),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let b = Tensor::from_vec(vec![true, false, true], &[3]).unwrap();
        let cb = to_candle(&b).unwrap();
        assert_eq!(cb.dtype(), CDType::U8);
        assert_eq!(cb.to_vec1::<u8>().unwrap(), vec![1, 0, 1]);
    }

    #[test]
    fn unsupported_candle_dtypes_are_errors_naming_them() {
        let c = CTensor::from_vec(vec![1u32, 2], 2, &CDevice::Cpu).unwrap();
        let e = from_candle(&c).unwrap_err().to_string();
        assert!(e.contains("U32"), "{e}");
    }
}
