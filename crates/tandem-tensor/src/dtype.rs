//! Element types.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit IEEE float (`torch.float32`).
    F32,
    /// 64-bit IEEE float (`torch.float64`).
    F64,
    /// 16-bit IEEE half float (`torch.float16`).
    F16,
    /// 16-bit brain float (`torch.bfloat16`).
    BF16,
    /// 64-bit signed integer (`torch.int64`).
    I64,
    /// 32-bit signed integer (`torch.int32`).
    I32,
    /// 8-bit unsigned integer (`torch.uint8`).
    U8,
    /// Boolean, one byte per element (`torch.bool`).
    Bool,
}

impl DType {
    /// Every dtype, in a fixed order.
    pub const ALL: [DType; 8] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I64,
        DType::I32,
        DType::U8,
        DType::Bool,
    ];

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F64 | DType::I64 => 8,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::Bool => 1,
        }
    }

    /// True for the floating-point dtypes.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// True for the integer dtypes (not bool).
    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::U8)
    }

    /// The PyTorch-style name, e.g. `float32`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }

    /// Parses a PyTorch/NumPy-style name (`float32`, `f32`, `int64`, `bool`, ...).
    pub fn from_name(name: &str) -> Option<DType> {
        Some(match name {
            "float32" | "f32" | "float" => DType::F32,
            "float64" | "f64" | "double" => DType::F64,
            "float16" | "f16" | "half" => DType::F16,
            "bfloat16" | "bf16" => DType::BF16,
            "int64" | "i64" | "long" => DType::I64,
            "int32" | "i32" | "int" => DType::I32,
            "uint8" | "u8" => DType::U8,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that can be the element of a tensor.
///
/// Implemented for `f32`, `f64`, `f16`, `bf16`, `i64`, `i32`, `u8` and `bool`.
pub trait Element:
    sealed::Sealed + Copy + Send + Sync + Default + PartialEq + PartialOrd + fmt::Debug + 'static
{
    /// The dtype this Rust type stands for.
    const DTYPE: DType;
    /// Converts to `f64` (bool gives 0 or 1).
    fn to_f64(self) -> f64;
    /// Converts from `f64` with Rust `as` semantics (saturating for integers, NaN -> 0).
    fn from_f64(v: f64) -> Self;
    /// The typed slice inside a host buffer of this dtype.
    fn cpu_slice(s: &crate::CpuStorage) -> Option<&[Self]>;
    /// The typed mutable slice inside a host buffer of this dtype.
    fn cpu_slice_mut(s: &mut crate::CpuStorage) -> Option<&mut [Self]>;
    /// Wraps a vector into a host buffer.
    fn into_cpu_storage(v: Vec<Self>) -> crate::CpuStorage;
    /// Takes the vector out of a host buffer of this dtype.
    fn from_cpu_storage(s: crate::CpuStorage) -> Option<Vec<Self>>;
}

macro_rules! impl_element {
    ($t:ty, $dt:ident, |$s:ident| $to:expr, |$v:ident| $from:expr) => {
        impl sealed::Sealed for $t {}
        impl Element for $t {
            const DTYPE: DType = DType::$dt;
            #[inline(always)]
            fn to_f64(self) -> f64 {
                let $s = self;
                $to
            }
            #[inline(always)]
            fn from_f64($v: f64) -> Self {
                $from
            }
            #[inline]
            fn cpu_slice(s: &crate::CpuStorage) -> Option<&[Self]> {
                match s {
                    crate::CpuStorage::$dt(v) => Some(v),
                    _ => None,
                }
            }
            #[inline]
            fn cpu_slice_mut(s: &mut crate::CpuStorage) -> Option<&mut [Self]> {
                match s {
                    crate::CpuStorage::$dt(v) => Some(v),
                    _ => None,
                }
            }
            #[inline]
            fn into_cpu_storage(v: Vec<Self>) -> crate::CpuStorage {
                crate::CpuStorage::$dt(v)
            }
            #[inline]
            fn from_cpu_storage(s: crate::CpuStorage) -> Option<Vec<Self>> {
                match s {
                    crate::CpuStorage::$dt(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

impl_element!(f32, F32, |s| s as f64, |v| v as f32);
impl_element!(f64, F64, |s| s, |v| v);
impl_element!(f16, F16, |s| s.to_f64(), |v| f16::from_f64(v));
impl_element!(bf16, BF16, |s| s.to_f64(), |v| bf16::from_f64(v));
impl_element!(i64, I64, |s| s as f64, |v| v as i64);
impl_element!(i32, I32, |s| s as f64, |v| v as i32);
impl_element!(u8, U8, |s| s as f64, |v| v as u8);
impl_element!(bool, Bool, |s| if s { 1.0 } else { 0.0 }, |v| v != 0.0);

/// Floating-point element types on which the math kernels run in their own precision
/// (`f32`, `f64`). Half types are computed through `f32`.
pub trait Float:
    Element
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
    + std::ops::AddAssign
{
    /// Zero.
    const ZERO: Self;
    /// One.
    const ONE: Self;
    /// Negative infinity.
    const NEG_INFINITY: Self;
    /// Converts from `f32`.
    fn from_f32(v: f32) -> Self;
    /// e^x.
    fn exp(self) -> Self;
    /// Natural logarithm.
    fn ln(self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// Larger of two values (NaN-propagating like PyTorch's `maximum`).
    fn max_nan(self, other: Self) -> Self;
    /// x^y.
    fn powf(self, y: Self) -> Self;
}

macro_rules! impl_float {
    ($t:ty) => {
        impl Float for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                v as $t
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn max_nan(self, other: Self) -> Self {
                if self.is_nan() || other.is_nan() {
                    <$t>::NAN
                } else if self >= other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn powf(self, y: Self) -> Self {
                <$t>::powf(self, y)
            }
        }
    };
}
impl_float!(f32);
impl_float!(f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for dt in DType::ALL {
            assert_eq!(DType::from_name(dt.name()), Some(dt));
        }
        assert_eq!(DType::from_name("complex64"), None);
    }

    #[test]
    fn element_conversions() {
        assert_eq!(<i64 as Element>::from_f64(-3.7), -3);
        assert_eq!(<u8 as Element>::from_f64(300.0), 255);
        assert!(<bool as Element>::from_f64(2.0));
        assert_eq!(bf16::from_f64(1.5).to_f64(), 1.5);
    }
}
