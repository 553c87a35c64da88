//! Element types of tensors.

use crate::numerics;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE binary64.
    F64,
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// OCP FP8 E4M3 without infinities (max 448).
    F8E4M3FN,
    /// OCP FP8 E5M2 (max 57344).
    F8E5M2,
    /// OCP MX FP4 E2M1 (max 6), packed two per byte in storage.
    F4E2M1,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// 4-bit signed integer (-8..=7), packed two per byte in storage.
    I4,
    /// Boolean, stored as one byte (0 or 1).
    Bool,
}

/// Every dtype, in a stable order.
pub const ALL_DTYPES: [DType; 13] = [
    DType::F64,
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F8E4M3FN,
    DType::F8E5M2,
    DType::F4E2M1,
    DType::I64,
    DType::I32,
    DType::I8,
    DType::U8,
    DType::I4,
    DType::Bool,
];

impl DType {
    /// The name used in text form and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3FN => "f8e4m3fn",
            DType::F8E5M2 => "f8e5m2",
            DType::F4E2M1 => "f4e2m1",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I4 => "i4",
            DType::Bool => "bool",
        }
    }

    /// Bits per element.
    pub fn bits(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 64,
            DType::F32 | DType::I32 => 32,
            DType::F16 | DType::BF16 => 16,
            DType::F8E4M3FN | DType::F8E5M2 | DType::I8 | DType::U8 | DType::Bool => 8,
            DType::F4E2M1 | DType::I4 => 4,
        }
    }

    /// Bytes needed to store `n` elements (sub-byte types are packed, low nibble first).
    pub fn storage_bytes(self, n: usize) -> usize {
        (n * self.bits()).div_ceil(8)
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F64
                | DType::F32
                | DType::F16
                | DType::BF16
                | DType::F8E4M3FN
                | DType::F8E5M2
                | DType::F4E2M1
        )
    }

    /// Whether this is an integer type (not bool).
    pub fn is_int(self) -> bool {
        matches!(
            self,
            DType::I64 | DType::I32 | DType::I8 | DType::U8 | DType::I4
        )
    }

    /// The float format of a low-precision float type (None for f64/f32 and non-floats).
    pub fn float_format(self) -> Option<numerics::FloatFormat> {
        match self {
            DType::F16 => Some(numerics::F16),
            DType::BF16 => Some(numerics::BF16),
            DType::F8E4M3FN => Some(numerics::F8E4M3FN),
            DType::F8E5M2 => Some(numerics::F8E5M2),
            DType::F4E2M1 => Some(numerics::F4E2M1),
            _ => None,
        }
    }

    /// Integer range `[lo, hi]` of an integer or bool type.
    pub fn int_range(self) -> Option<(f64, f64)> {
        match self {
            DType::I64 => Some((i64::MIN as f64, i64::MAX as f64)),
            DType::I32 => Some((i32::MIN as f64, i32::MAX as f64)),
            DType::I8 => Some((-128.0, 127.0)),
            DType::U8 => Some((0.0, 255.0)),
            DType::I4 => Some((-8.0, 7.0)),
            DType::Bool => Some((0.0, 1.0)),
            _ => None,
        }
    }

    /// Round an exact real result to the nearest value of this type: floats round to nearest
    /// even (saturating for the FP8/FP4 formats), integers round half to even and saturate,
    /// bool is `x != 0`. This is the rounding every op's reference semantics ends with.
    pub fn round(self, x: f64) -> f64 {
        match self {
            DType::F64 => x,
            DType::F32 => x as f32 as f64,
            DType::Bool => {
                if x != 0.0 && !x.is_nan() {
                    1.0
                } else {
                    0.0
                }
            }
            d if d.is_float() => d.float_format().map(|f| f.round(x)).unwrap_or(x),
            d => {
                let (lo, hi) = d.int_range().unwrap_or((f64::MIN, f64::MAX));
                numerics::round_int_saturating(x, lo, hi)
            }
        }
    }

    /// Convert a value as a cast does: floats round to nearest even, float→integer truncates
    /// toward zero and saturates (numpy/ONNX/PyTorch behaviour for in-range values), bool is
    /// `x != 0`.
    pub fn cast(self, x: f64) -> f64 {
        match self {
            d if d.is_int() => {
                let (lo, hi) = d.int_range().unwrap_or((f64::MIN, f64::MAX));
                numerics::trunc_int_saturating(x, lo, hi)
            }
            d => d.round(x),
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ALL_DTYPES.iter().map(|d| d.name()).collect();
                format!("unknown dtype `{s}` (allowed: {})", names.join(", "))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL_DTYPES {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert!("f33".parse::<DType>().unwrap_err().contains("allowed"));
    }

    #[test]
    fn rounding_per_type() {
        assert_eq!(DType::I8.round(127.6), 127.0);
        assert_eq!(DType::I4.round(-9.0), -8.0);
        assert_eq!(DType::U8.round(-1.0), 0.0);
        assert_eq!(DType::Bool.round(0.3), 1.0);
        assert_eq!(DType::F32.round(0.1), 0.1f32 as f64);
        assert_eq!(DType::I32.cast(-3.9), -3.0);
        assert_eq!(DType::F8E4M3FN.round(1000.0), 448.0);
    }
}
