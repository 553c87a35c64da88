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
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 64-bit unsigned integer. Like `i64`, the reference interpreter holds values up to 2^53
    /// only (decoding a larger stored value is an error, never a silent rounding).
    U64,
    /// 32-bit unsigned integer.
    U32,
    /// 16-bit unsigned integer.
    U16,
    /// 8-bit unsigned integer.
    U8,
    /// 4-bit signed integer (-8..=7), packed two per byte in storage.
    I4,
    /// Boolean, stored as one byte (0 or 1).
    Bool,
}

/// Every dtype, in a stable order.
pub const ALL_DTYPES: [DType; 17] = [
    DType::F64,
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F8E4M3FN,
    DType::F8E5M2,
    DType::F4E2M1,
    DType::I64,
    DType::I32,
    DType::I16,
    DType::I8,
    DType::U64,
    DType::U32,
    DType::U16,
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
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U64 => "u64",
            DType::U32 => "u32",
            DType::U16 => "u16",
            DType::U8 => "u8",
            DType::I4 => "i4",
            DType::Bool => "bool",
        }
    }

    /// Bits per element.
    pub fn bits(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 64,
            DType::F32 | DType::I32 | DType::U32 => 32,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 16,
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
            DType::I64
                | DType::I32
                | DType::I16
                | DType::I8
                | DType::U64
                | DType::U32
                | DType::U16
                | DType::U8
                | DType::I4
        )
    }

    /// Whether this is a signed integer type (`i64 i32 i16 i8 i4`).
    pub fn is_signed_int(self) -> bool {
        matches!(
            self,
            DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::I4
        )
    }

    /// Whether this is an unsigned integer type (`u64 u32 u16 u8`; not bool).
    pub fn is_unsigned_int(self) -> bool {
        matches!(self, DType::U64 | DType::U32 | DType::U16 | DType::U8)
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
    ///
    /// For the 64-bit types the bounds are the nearest `f64` values (`i64`: ±2^63, `u64`: 2^64),
    /// which lie beyond the values the reference interpreter can hold exactly (±2^53).
    pub fn int_range(self) -> Option<(f64, f64)> {
        match self {
            DType::I64 => Some((i64::MIN as f64, i64::MAX as f64)),
            DType::I32 => Some((i32::MIN as f64, i32::MAX as f64)),
            DType::I16 => Some((i16::MIN as f64, i16::MAX as f64)),
            DType::I8 => Some((-128.0, 127.0)),
            DType::U64 => Some((0.0, u64::MAX as f64)),
            DType::U32 => Some((0.0, u32::MAX as f64)),
            DType::U16 => Some((0.0, u16::MAX as f64)),
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
    ///
    /// Integer → integer casts saturate as well, for every integer type alike (signed and
    /// unsigned): `i32 -1 → u16` is `0` and `u32 70000 → i16` is `32767`. This differs from the
    /// two's-complement wrapping of C, numpy and ONNX for out-of-range values; in-range values
    /// convert exactly either way.
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

    #[test]
    fn sixteen_thirty_two_and_sixty_four_bit_integers() {
        let cases = [
            (DType::I16, "i16", 16, -32768.0, 32767.0, true),
            (DType::U16, "u16", 16, 0.0, 65535.0, false),
            (DType::U32, "u32", 32, 0.0, 4294967295.0, false),
            (DType::U64, "u64", 64, 0.0, 18446744073709551616.0, false),
        ];
        for (d, name, bits, lo, hi, signed) in cases {
            assert_eq!(d.name(), name);
            assert_eq!(d.bits(), bits);
            assert_eq!(d.storage_bytes(3), 3 * bits / 8);
            assert!(d.is_int() && !d.is_float());
            assert_eq!(d.is_signed_int(), signed, "{d}");
            assert_eq!(d.is_unsigned_int(), !signed, "{d}");
            assert_eq!(d.int_range(), Some((lo, hi)), "{d}");
            assert!(d.float_format().is_none());
            // Rounding: half to even, then saturation at both ends; NaN is 0.
            assert_eq!(d.round(2.5), 2.0, "{d}");
            assert_eq!(d.round(3.5), 4.0, "{d}");
            assert_eq!(d.round(hi + 1e6), hi, "{d}");
            assert_eq!(d.round(-1e30), lo, "{d}");
            assert_eq!(d.round(f64::NAN), 0.0, "{d}");
            // Casts truncate toward zero and saturate, integer sources included.
            assert_eq!(d.cast(7.9), 7.0, "{d}");
            assert_eq!(d.cast(-0.9), 0.0, "{d}");
            assert_eq!(d.cast(f64::INFINITY), hi, "{d}");
            assert_eq!(d.cast(f64::NEG_INFINITY), lo, "{d}");
        }
        assert_eq!(DType::I16.cast(-3.9), -3.0);
        assert_eq!(DType::I16.cast(40000.0), 32767.0);
        assert_eq!(DType::I16.cast(-40000.0), -32768.0);
        assert_eq!(DType::U16.cast(-1.0), 0.0);
        assert_eq!(DType::U16.cast(65536.0), 65535.0);
        assert_eq!(DType::U32.cast(-5.5), 0.0);
        assert_eq!(DType::U32.cast(4294967296.0), 4294967295.0);
        assert_eq!(DType::U64.cast(-1.0), 0.0);
        for d in [DType::I64, DType::I32, DType::I8, DType::I4] {
            assert!(d.is_signed_int() && !d.is_unsigned_int(), "{d}");
        }
        assert!(DType::U8.is_unsigned_int() && !DType::U8.is_signed_int());
        assert!(!DType::Bool.is_signed_int() && !DType::Bool.is_unsigned_int());
        assert!(!DType::F32.is_signed_int() && !DType::F32.is_unsigned_int());
    }
}
