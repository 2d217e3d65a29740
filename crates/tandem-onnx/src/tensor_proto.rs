//! Conversion between ONNX `TensorProto`s and Tandem tensors, with every size a file declares
//! checked against the bytes actually present before anything is allocated.

use crate::proto::{data_type as dt, TensorProto};
use tandem_tensor::{bf16, f16, DType, Error, Result, Tensor};

/// Largest rank accepted from a file.
pub const MAX_RANK: usize = 64;

/// The ONNX element type code of a Tandem dtype.
pub fn dtype_to_onnx(d: DType) -> i32 {
    match d {
        DType::F32 => dt::FLOAT,
        DType::F64 => dt::DOUBLE,
        DType::F16 => dt::FLOAT16,
        DType::BF16 => dt::BFLOAT16,
        DType::I64 => dt::INT64,
        DType::I32 => dt::INT32,
        DType::U8 => dt::UINT8,
        DType::Bool => dt::BOOL,
    }
}

/// The Tandem dtype that holds values of ONNX element type `code`: the same type where Tandem
/// has it, a wider integer type for int8/int16/uint16 (int32) and uint32 (int64); `None` for
/// types Tandem cannot hold (strings, uint64, complex, 8-bit floats).
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    Some(match code {
        dt::FLOAT => DType::F32,
        dt::DOUBLE => DType::F64,
        dt::FLOAT16 => DType::F16,
        dt::BFLOAT16 => DType::BF16,
        dt::INT64 => DType::I64,
        dt::INT32 | dt::INT8 | dt::INT16 | dt::UINT16 => DType::I32,
        dt::UINT32 => DType::I64,
        dt::UINT8 => DType::U8,
        dt::BOOL => DType::Bool,
        _ => return None,
    })
}

/// A readable name for an ONNX element type code (for error messages).
pub fn onnx_type_name(code: i32) -> String {
    let s = match code {
        dt::FLOAT => "float",
        dt::UINT8 => "uint8",
        dt::INT8 => "int8",
        dt::UINT16 => "uint16",
        dt::INT16 => "int16",
        dt::INT32 => "int32",
        dt::INT64 => "int64",
        dt::STRING => "string",
        dt::BOOL => "bool",
        dt::FLOAT16 => "float16",
        dt::DOUBLE => "double",
        dt::UINT32 => "uint32",
        dt::UINT64 => "uint64",
        dt::BFLOAT16 => "bfloat16",
        other => return format!("type code {other}"),
    };
    s.to_string()
}

fn bad(name: &str, msg: impl std::fmt::Display) -> Error {
    Error::format("onnx", format!("tensor '{name}': {msg}"))
}

/// Dims declared by a file, checked (non-negative, bounded rank, element count that fits).
pub(crate) fn checked_dims(name: &str, dims: &[i64]) -> Result<(Vec<usize>, usize)> {
    if dims.len() > MAX_RANK {
        return Err(bad(name, format!("rank {} is too large", dims.len())));
    }
    let mut shape = Vec::with_capacity(dims.len());
    let mut numel: usize = 1;
    for &d in dims {
        let u = usize::try_from(d).map_err(|_| bad(name, format!("negative dim in {dims:?}")))?;
        numel = numel
            .checked_mul(u)
            .ok_or_else(|| bad(name, format!("element count of {dims:?} overflows")))?;
        shape.push(u);
    }
    Ok((shape, numel))
}

fn typed<T: Copy, U>(
    name: &str,
    field: &'static str,
    data: &[T],
    numel: usize,
    f: impl Fn(T) -> U,
) -> Result<Vec<U>> {
    if data.len() != numel {
        return Err(bad(
            name,
            format!(
                "{field} holds {} values but the dims need {numel}",
                data.len()
            ),
        ));
    }
    Ok(data.iter().map(|&v| f(v)).collect())
}

fn le<const N: usize, U>(raw: &[u8], f: impl Fn([u8; N]) -> U) -> Vec<U> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

/// Decodes a `TensorProto` into a tensor. External data, unsupported element types, negative
/// dims and data whose length disagrees with the dims are errors naming the tensor.
pub fn tensor_from_proto(t: &TensorProto) -> Result<Tensor> {
    let name = t.name.as_str();
    if t.data_location == 1 || !t.external_data.is_empty() {
        return Err(bad(
            name,
            "external data is not supported (save the model with its tensors inside the file)",
        ));
    }
    let (shape, numel) = checked_dims(name, &t.dims)?;
    dtype_from_onnx(t.data_type).ok_or_else(|| {
        bad(
            name,
            format!(
                "element type {} is not supported",
                onnx_type_name(t.data_type)
            ),
        )
    })?;
    if !t.raw_data.is_empty() || numel == 0 {
        return from_raw(name, t.data_type, &t.raw_data, &shape, numel);
    }
    let code = t.data_type;
    let tensor = match code {
        dt::FLOAT => Tensor::from_vec(
            typed(name, "float_data", &t.float_data, numel, |v| v)?,
            &shape,
        ),
        dt::DOUBLE => Tensor::from_vec(
            typed(name, "double_data", &t.double_data, numel, |v| v)?,
            &shape,
        ),
        dt::INT64 => Tensor::from_vec(
            typed(name, "int64_data", &t.int64_data, numel, |v| v)?,
            &shape,
        ),
        dt::UINT32 => Tensor::from_vec(
            typed(name, "uint64_data", &t.uint64_data, numel, |v| v as i64)?,
            &shape,
        ),
        dt::INT32 | dt::INT8 | dt::INT16 | dt::UINT16 => Tensor::from_vec(
            typed(name, "int32_data", &t.int32_data, numel, |v| v)?,
            &shape,
        ),
        dt::UINT8 => Tensor::from_vec(
            typed(name, "int32_data", &t.int32_data, numel, |v| v as u8)?,
            &shape,
        ),
        dt::BOOL => Tensor::from_vec(
            typed(name, "int32_data", &t.int32_data, numel, |v| v != 0)?,
            &shape,
        ),
        dt::FLOAT16 => Tensor::from_vec(
            typed(name, "int32_data", &t.int32_data, numel, |v| {
                f16::from_bits(v as u16)
            })?,
            &shape,
        ),
        dt::BFLOAT16 => Tensor::from_vec(
            typed(name, "int32_data", &t.int32_data, numel, |v| {
                bf16::from_bits(v as u16)
            })?,
            &shape,
        ),
        _ => {
            return Err(bad(
                name,
                format!("element type {} is not supported", onnx_type_name(code)),
            ))
        }
    };
    tensor.map_err(|e| e.context(format!("tensor '{name}'")))
}

fn from_raw(name: &str, code: i32, raw: &[u8], shape: &[usize], numel: usize) -> Result<Tensor> {
    let width = match code {
        dt::FLOAT | dt::INT32 | dt::UINT32 => 4,
        dt::DOUBLE | dt::INT64 => 8,
        dt::FLOAT16 | dt::BFLOAT16 | dt::INT16 | dt::UINT16 => 2,
        _ => 1,
    };
    // Checked against the bytes present before allocating anything.
    let need = numel
        .checked_mul(width)
        .ok_or_else(|| bad(name, "byte size overflows"))?;
    if raw.len() != need {
        return Err(bad(
            name,
            format!(
                "raw_data has {} bytes but dims {shape:?} of {} need {need}",
                raw.len(),
                onnx_type_name(code)
            ),
        ));
    }
    let t = match code {
        dt::FLOAT => Tensor::from_vec(le(raw, f32::from_le_bytes), shape),
        dt::DOUBLE => Tensor::from_vec(le(raw, f64::from_le_bytes), shape),
        dt::INT64 => Tensor::from_vec(le(raw, i64::from_le_bytes), shape),
        dt::INT32 => Tensor::from_vec(le(raw, i32::from_le_bytes), shape),
        dt::UINT32 => Tensor::from_vec(le(raw, |b| u32::from_le_bytes(b) as i64), shape),
        dt::INT16 => Tensor::from_vec(le(raw, |b| i16::from_le_bytes(b) as i32), shape),
        dt::UINT16 => Tensor::from_vec(le(raw, |b| u16::from_le_bytes(b) as i32), shape),
        dt::INT8 => Tensor::from_vec(le(raw, |b: [u8; 1]| b[0] as i8 as i32), shape),
        dt::UINT8 => Tensor::from_vec(raw.to_vec(), shape),
        dt::BOOL => Tensor::from_vec(raw.iter().map(|&b| b != 0).collect::<Vec<bool>>(), shape),
        dt::FLOAT16 => Tensor::from_vec(le(raw, |b| f16::from_bits(u16::from_le_bytes(b))), shape),
        dt::BFLOAT16 => {
            Tensor::from_vec(le(raw, |b| bf16::from_bits(u16::from_le_bytes(b))), shape)
        }
        _ => {
            return Err(bad(
                name,
                format!("element type {} is not supported", onnx_type_name(code)),
            ))
        }
    };
    t.map_err(|e| e.context(format!("tensor '{name}'")))
}

/// Encodes a tensor as a `TensorProto` named `name` with little-endian `raw_data`.
pub fn tensor_to_proto(name: &str, t: &Tensor) -> Result<TensorProto> {
    fn bytes<T: tandem_tensor::Element, const N: usize>(
        t: &Tensor,
        f: impl Fn(T) -> [u8; N],
    ) -> Result<Vec<u8>> {
        Ok(t.to_vec::<T>()?.into_iter().flat_map(f).collect())
    }
    let raw = match t.dtype() {
        DType::F32 => bytes(t, f32::to_le_bytes)?,
        DType::F64 => bytes(t, f64::to_le_bytes)?,
        DType::F16 => bytes(t, |v: f16| v.to_bits().to_le_bytes())?,
        DType::BF16 => bytes(t, |v: bf16| v.to_bits().to_le_bytes())?,
        DType::I64 => bytes(t, i64::to_le_bytes)?,
        DType::I32 => bytes(t, i32::to_le_bytes)?,
        DType::U8 => bytes(t, |v: u8| [v])?,
        DType::Bool => bytes(t, |v: bool| [v as u8])?,
    };
    Ok(TensorProto {
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        data_type: dtype_to_onnx(t.dtype()),
        name: name.to_string(),
        raw_data: raw,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for d in DType::ALL {
            let t = Tensor::arange(0.0, 6.0, 1.0, DType::F32)
                .unwrap()
                .reshape(&[2, 3])
                .unwrap()
                .cast(d)
                .unwrap();
            let p = tensor_to_proto("w", &t).unwrap();
            let back = tensor_from_proto(&p).unwrap();
            assert_eq!(back.dtype(), d);
            assert_eq!(back.shape(), &[2, 3]);
            assert_eq!(back.to_f64_vec().unwrap(), t.to_f64_vec().unwrap());
        }
    }

    #[test]
    fn typed_fields_decode() {
        let p = TensorProto {
            dims: vec![2],
            data_type: dt::INT64,
            int64_data: vec![3, -1],
            ..Default::default()
        };
        assert_eq!(
            tensor_from_proto(&p).unwrap().to_vec::<i64>().unwrap(),
            vec![3, -1]
        );
        let p = TensorProto {
            dims: vec![],
            data_type: dt::FLOAT,
            float_data: vec![2.5],
            ..Default::default()
        };
        assert_eq!(tensor_from_proto(&p).unwrap().item().unwrap(), 2.5);
    }

    #[test]
    fn lying_sizes_are_errors() {
        let p = TensorProto {
            name: "w".into(),
            dims: vec![1 << 40, 1 << 30],
            data_type: dt::FLOAT,
            raw_data: vec![0; 8],
            ..Default::default()
        };
        let e = tensor_from_proto(&p).unwrap_err().to_string();
        assert!(e.contains("'w'"), "{e}");
        let p = TensorProto {
            name: "b".into(),
            dims: vec![3],
            data_type: dt::FLOAT,
            float_data: vec![1.0],
            ..Default::default()
        };
        assert!(tensor_from_proto(&p)
            .unwrap_err()
            .to_string()
            .contains("float_data"));
        let p = TensorProto {
            name: "n".into(),
            dims: vec![-2],
            data_type: dt::FLOAT,
            ..Default::default()
        };
        assert!(tensor_from_proto(&p)
            .unwrap_err()
            .to_string()
            .contains("negative"));
        let p = TensorProto {
            name: "s".into(),
            dims: vec![1],
            data_type: dt::STRING,
            string_data: vec![b"x".to_vec()],
            ..Default::default()
        };
        assert!(tensor_from_proto(&p)
            .unwrap_err()
            .to_string()
            .contains("string"));
        let p = TensorProto {
            name: "ext".into(),
            dims: vec![1],
            data_type: dt::FLOAT,
            data_location: 1,
            ..Default::default()
        };
        assert!(tensor_from_proto(&p)
            .unwrap_err()
            .to_string()
            .contains("external"));
    }
}
