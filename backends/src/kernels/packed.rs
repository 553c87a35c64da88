//! Packed low-precision tensors: the storage of i8/u8 (one byte per element), i4 and f4e2m1
//! (two elements per byte, the first in the low nibble, as ONNX packs them) and f8e4m3fn/f8e5m2
//! (one byte per element) values in a lowered program.
//!
//! The codes are exactly the IR's codecs: integers are two's complement (saturated and rounded
//! half to even by [`DType::round`]), the float formats use
//! [`FloatFormat::encode`](fuselage_ir::numerics::FloatFormat::encode) /
//! [`decode`](fuselage_ir::numerics::FloatFormat::decode). A value of one of these dtypes is
//! held packed by the lowering between the ops that take the packed form (quantize, dequantize,
//! cast and the data-movement kernels); an op without a packed kernel reads it decoded to f32
//! (counted as a widening in [`RunStats`](crate::RunStats)).

use super::R;
use fuselage_ir::{DType, Tensor};

/// Whether the lowering holds values of `dtype` packed.
pub fn is_packed(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::I8 | DType::U8 | DType::I4 | DType::F8E4M3FN | DType::F8E5M2 | DType::F4E2M1
    )
}

/// Whether two elements of `dtype` share a byte.
fn is_nibble(dtype: DType) -> bool {
    matches!(dtype, DType::I4 | DType::F4E2M1)
}

/// The code of `x` in `dtype`, after rounding `x` onto `dtype` ([`DType::round`]).
pub fn code_of(dtype: DType, x: f64) -> u8 {
    match dtype {
        DType::I8 => dtype.round(x) as i8 as u8,
        DType::U8 => dtype.round(x) as u8,
        DType::I4 => (dtype.round(x) as i8 as u8) & 0x0f,
        d => d.float_format().map_or(0, |f| f.encode(x) as u8),
    }
}

/// The value of `code` in `dtype` (the inverse of [`code_of`] on the values of `dtype`).
pub fn value_of(dtype: DType, code: u8) -> f64 {
    match dtype {
        DType::I8 => f64::from(code as i8),
        DType::U8 => f64::from(code),
        DType::I4 => f64::from(((code << 4) as i8) >> 4),
        d => d
            .float_format()
            .map_or(f64::NAN, |f| f.decode(u32::from(code & mask(d)))),
    }
}

/// The bits of one code.
fn mask(dtype: DType) -> u8 {
    if is_nibble(dtype) {
        0x0f
    } else {
        0xff
    }
}

/// The f32 value of every code of `dtype` (a lookup table for decoding).
pub fn decode_table(dtype: DType) -> [f32; 256] {
    let mut t = [0f32; 256];
    for (c, v) in t.iter_mut().enumerate() {
        *v = value_of(dtype, c as u8) as f32;
    }
    t
}

/// A row-major tensor of a packed dtype ([`is_packed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackedTensor {
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn numel(shape: &[usize]) -> R<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))
}

impl PackedTensor {
    /// From one code per element (the low 4 bits for i4/f4e2m1).
    pub fn from_codes(dtype: DType, shape: &[usize], codes: &[u8]) -> R<PackedTensor> {
        if !is_packed(dtype) {
            return Err(format!("{dtype} is not a packed dtype"));
        }
        let n = numel(shape)?;
        if codes.len() != n {
            return Err(format!(
                "{n} elements of shape {shape:?}, {} codes given",
                codes.len()
            ));
        }
        let bytes = if is_nibble(dtype) {
            codes
                .chunks(2)
                .map(|p| (p[0] & 0x0f) | (p.get(1).map_or(0, |c| c & 0x0f) << 4))
                .collect()
        } else {
            codes.to_vec()
        };
        Ok(PackedTensor {
            dtype,
            shape: shape.to_vec(),
            bytes,
        })
    }

    /// Rounds each value onto `dtype` and packs it.
    pub fn encode(dtype: DType, shape: &[usize], values: impl Iterator<Item = f64>) -> R<Self> {
        let codes: Vec<u8> = values.map(|x| code_of(dtype, x)).collect();
        PackedTensor::from_codes(dtype, shape, &codes)
    }

    /// Packs a host tensor of a packed dtype (its values are values of the dtype).
    pub fn from_tensor(t: &Tensor) -> R<PackedTensor> {
        PackedTensor::encode(t.dtype(), t.shape(), t.data().iter().copied())
    }

    /// The dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The packed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The code of element `i` (row-major).
    pub fn code(&self, i: usize) -> u8 {
        if is_nibble(self.dtype) {
            (self.bytes[i / 2] >> (4 * (i % 2))) & 0x0f
        } else {
            self.bytes[i]
        }
    }

    /// One code per element.
    pub fn codes(&self) -> Vec<u8> {
        if is_nibble(self.dtype) {
            (0..self.len()).map(|i| self.code(i)).collect()
        } else {
            self.bytes.clone()
        }
    }

    /// The same elements under another shape of as many elements (no data moves).
    pub fn reshaped(&self, shape: &[usize]) -> R<PackedTensor> {
        if numel(shape)? != self.len() {
            return Err(format!(
                "cannot view {:?} ({} elements) as {shape:?}",
                self.shape,
                self.len()
            ));
        }
        Ok(PackedTensor {
            dtype: self.dtype,
            shape: shape.to_vec(),
            bytes: self.bytes.clone(),
        })
    }

    /// The values as f32 (exact: every value of a packed dtype is an f32 value).
    pub fn decode_f32(&self) -> Vec<f32> {
        let table = decode_table(self.dtype);
        if is_nibble(self.dtype) {
            (0..self.len())
                .map(|i| table[usize::from(self.code(i))])
                .collect()
        } else {
            self.bytes.iter().map(|&c| table[usize::from(c)]).collect()
        }
    }

    /// The values as a host tensor.
    pub fn to_tensor(&self) -> R<Tensor> {
        let v = self.decode_f32().into_iter().map(f64::from).collect();
        Tensor::new(self.dtype, self.shape.clone(), v).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuselage_ir::ops::testing::rand_tensor;

    const PACKED: [DType; 6] = [
        DType::I8,
        DType::U8,
        DType::I4,
        DType::F8E4M3FN,
        DType::F8E5M2,
        DType::F4E2M1,
    ];

    #[test]
    fn codes_round_trip_every_value_and_match_the_ir_rounding() {
        for d in PACKED {
            let codes = if is_nibble(d) { 16u16 } else { 256 };
            for c in 0..codes {
                let c = c as u8;
                let v = value_of(d, c);
                if v.is_nan() {
                    assert!(value_of(d, code_of(d, v)).is_nan(), "{d} {c}");
                    continue;
                }
                if d.round(v) != v {
                    // ±inf codes of a saturating format: the IR rounds infinities to ±max.
                    assert!(v.is_infinite(), "{d} code {c:#x}: {v}");
                    assert_eq!(value_of(d, code_of(d, v)), d.round(v), "{d} {v}");
                    continue;
                }
                assert_eq!(value_of(d, code_of(d, v)), v, "{d} code {c:#x}");
            }
            // Arbitrary reals round the way the IR rounds them.
            for x in [
                -1e9, -300.7, -7.5, -2.5, -0.3, 0.0, 0.26, 1.5, 2.5, 5.0, 1e9,
            ] {
                assert_eq!(value_of(d, code_of(d, x)), d.round(x), "{d} {x}");
            }
        }
    }

    #[test]
    fn tensors_pack_two_nibbles_per_byte_low_first_and_round_trip() {
        let t = PackedTensor::encode(DType::I4, &[3], [1.0, -2.0, 7.0].into_iter()).unwrap();
        assert_eq!(t.bytes(), &[0xe1, 0x07]);
        assert_eq!(t.decode_f32(), vec![1.0, -2.0, 7.0]);
        for d in PACKED {
            let x = rand_tensor(d, vec![3, 5], 7);
            let p = PackedTensor::from_tensor(&x).unwrap();
            assert_eq!(p.bytes().len(), d.storage_bytes(15), "{d}");
            let back = p.to_tensor().unwrap();
            for (a, b) in back.data().iter().zip(x.data()) {
                assert!(a == b || (a.is_nan() && b.is_nan()), "{d}: {a} vs {b}");
            }
            assert!(p.reshaped(&[15]).is_ok() && p.reshaped(&[4, 4]).is_err());
        }
        assert!(PackedTensor::from_codes(DType::F32, &[1], &[0]).is_err());
        assert!(PackedTensor::from_codes(DType::I8, &[2], &[0]).is_err());
    }
}
