//! Concrete tensors of the reference interpreter.
//!
//! A [`Tensor`] holds its elements as `f64` values that are *exactly* values of its dtype (every
//! constructor rounds). `f64` holds every value of every dtype exactly except `i64` beyond ±2^53
//! and `u64` beyond 2^53, which the reference interpreter does not support (it reports an error
//! when decoding such storage). This keeps the reference semantics one plain formula per op.

use crate::dtype::DType;
use crate::error::IrError;
use std::fmt;

/// A dense row-major tensor whose elements are exact values of `dtype`.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}{:?}>", self.dtype, self.shape)?;
        let n = self.data.len().min(8);
        write!(f, "{:?}", &self.data[..n])?;
        if self.data.len() > n {
            write!(f, "…")?;
        }
        Ok(())
    }
}

/// Row-major strides (in elements) of a shape.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Element count of a shape, `None` on overflow.
pub fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl Tensor {
    /// A tensor from values, rounding each to `dtype`.
    ///
    /// Fails when `data.len()` does not match the shape.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Vec<f64>) -> Result<Self, IrError> {
        let n = checked_numel(&shape)
            .ok_or_else(|| IrError::Shape(format!("shape {shape:?} overflows")))?;
        if n != data.len() {
            return Err(IrError::Shape(format!(
                "shape {shape:?} has {n} elements but {} values were given",
                data.len()
            )));
        }
        let data = if dtype == DType::F64 {
            data
        } else {
            data.into_iter().map(|x| dtype.round(x)).collect()
        };
        Ok(Tensor { dtype, shape, data })
    }

    /// A tensor from values computed with `f(index)`, rounded to `dtype`.
    pub fn from_fn(dtype: DType, shape: Vec<usize>, mut f: impl FnMut(&[usize]) -> f64) -> Self {
        let n: usize = shape.iter().product();
        let mut data = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            data.push(dtype.round(f(&idx)));
            for ax in (0..shape.len()).rev() {
                idx[ax] += 1;
                if idx[ax] < shape[ax] {
                    break;
                }
                idx[ax] = 0;
            }
        }
        Tensor { dtype, shape, data }
    }

    /// A scalar.
    pub fn scalar(dtype: DType, value: f64) -> Self {
        Tensor {
            dtype,
            shape: vec![],
            data: vec![dtype.round(value)],
        }
    }

    /// All zeros.
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Self {
        let n = shape.iter().product();
        Tensor {
            dtype,
            shape,
            data: vec![0.0; n],
        }
    }

    /// From `f32` values.
    pub fn from_f32(shape: Vec<usize>, data: &[f32]) -> Result<Self, IrError> {
        Self::new(DType::F32, shape, data.iter().map(|&x| x as f64).collect())
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Element count.
    pub fn numel(&self) -> usize {
        self.data.len()
    }

    /// Elements in row-major order.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// Consume into elements.
    pub fn into_data(self) -> Vec<f64> {
        self.data
    }

    /// Row-major strides.
    pub fn strides(&self) -> Vec<usize> {
        strides_of(&self.shape)
    }

    /// Element at a multi-index.
    pub fn at(&self, idx: &[usize]) -> f64 {
        let mut off = 0;
        let mut stride = 1;
        for ax in (0..self.shape.len()).rev() {
            off += idx[ax] * stride;
            stride *= self.shape[ax];
        }
        self.data[off]
    }

    /// Same data with a new shape of the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor, IrError> {
        if checked_numel(&shape) != Some(self.data.len()) {
            return Err(IrError::Shape(format!(
                "cannot reshape {:?} to {shape:?}",
                self.shape
            )));
        }
        Ok(Tensor {
            dtype: self.dtype,
            shape,
            data: self.data.clone(),
        })
    }

    /// Convert every element to `dtype` with cast semantics ([`DType::cast`]).
    pub fn cast(&self, dtype: DType) -> Tensor {
        Tensor {
            dtype,
            shape: self.shape.clone(),
            data: self.data.iter().map(|&x| dtype.cast(x)).collect(),
        }
    }

    /// Values as `f32` (lossy for f64).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        self.data.iter().map(|&x| x as f32).collect()
    }

    /// Encode to the dtype's little-endian storage bytes (sub-byte types packed two per byte,
    /// low nibble first).
    pub fn to_bytes(&self) -> Vec<u8> {
        encode_values(self.dtype, &self.data)
    }

    /// Decode from little-endian storage bytes.
    pub fn from_bytes(dtype: DType, shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor, IrError> {
        let n = checked_numel(&shape)
            .ok_or_else(|| IrError::Shape(format!("shape {shape:?} overflows")))?;
        let need = dtype.storage_bytes(n);
        if bytes.len() != need {
            return Err(IrError::Shape(format!(
                "{dtype}{shape:?} needs {need} bytes, found {}",
                bytes.len()
            )));
        }
        let data = decode_values(dtype, n, bytes)?;
        Ok(Tensor { dtype, shape, data })
    }
}

/// Encode exact values of `dtype` into storage bytes.
pub fn encode_values(dtype: DType, data: &[f64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dtype.storage_bytes(data.len()));
    match dtype {
        DType::F64 => data.iter().for_each(|x| out.extend(x.to_le_bytes())),
        DType::F32 => data
            .iter()
            .for_each(|x| out.extend((*x as f32).to_le_bytes())),
        DType::F16 | DType::BF16 => {
            let f = dtype.float_format().expect("16-bit float format");
            data.iter()
                .for_each(|&x| out.extend((f.encode(x) as u16).to_le_bytes()))
        }
        DType::F8E4M3FN | DType::F8E5M2 => {
            let f = dtype.float_format().expect("8-bit float format");
            data.iter().for_each(|&x| out.push(f.encode(x) as u8))
        }
        DType::I64 => data
            .iter()
            .for_each(|&x| out.extend((x as i64).to_le_bytes())),
        DType::I32 => data
            .iter()
            .for_each(|&x| out.extend((x as i32).to_le_bytes())),
        DType::I16 => data
            .iter()
            .for_each(|&x| out.extend((x as i16).to_le_bytes())),
        DType::U64 => data
            .iter()
            .for_each(|&x| out.extend((x as u64).to_le_bytes())),
        DType::U32 => data
            .iter()
            .for_each(|&x| out.extend((x as u32).to_le_bytes())),
        DType::U16 => data
            .iter()
            .for_each(|&x| out.extend((x as u16).to_le_bytes())),
        DType::I8 => data.iter().for_each(|&x| out.push(x as i8 as u8)),
        DType::U8 | DType::Bool => data.iter().for_each(|&x| out.push(x as u8)),
        DType::F4E2M1 | DType::I4 => {
            let nib = |x: f64| -> u8 {
                if dtype == DType::I4 {
                    (x as i8 as u8) & 0xF
                } else {
                    crate::numerics::F4E2M1.encode(x) as u8
                }
            };
            for pair in data.chunks(2) {
                let lo = nib(pair[0]);
                let hi = if pair.len() > 1 { nib(pair[1]) } else { 0 };
                out.push(lo | (hi << 4));
            }
        }
    }
    out
}

/// Decode `n` values of `dtype` from storage bytes (length must already be checked).
pub fn decode_values(dtype: DType, n: usize, bytes: &[u8]) -> Result<Vec<f64>, IrError> {
    let v: Vec<f64> = match dtype {
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect(),
        DType::F16 | DType::BF16 => {
            let f = dtype.float_format().expect("16-bit float format");
            bytes
                .chunks_exact(2)
                .map(|c| f.decode(u16::from_le_bytes([c[0], c[1]]) as u32))
                .collect()
        }
        DType::F8E4M3FN | DType::F8E5M2 => {
            let f = dtype.float_format().expect("8-bit float format");
            bytes.iter().map(|&b| f.decode(b as u32)).collect()
        }
        DType::I64 => {
            let mut v = Vec::with_capacity(n);
            for c in bytes.chunks_exact(8) {
                let x = i64::from_le_bytes(c.try_into().expect("8 bytes"));
                if x.unsigned_abs() > (1u64 << 53) {
                    return Err(IrError::Unsupported(format!(
                        "i64 value {x} is beyond ±2^53, which the f64 reference cannot hold exactly"
                    )));
                }
                v.push(x as f64);
            }
            v
        }
        DType::U64 => {
            let mut v = Vec::with_capacity(n);
            for c in bytes.chunks_exact(8) {
                let x = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                if x > (1u64 << 53) {
                    return Err(IrError::Unsupported(format!(
                        "u64 value {x} is beyond 2^53, which the f64 reference cannot hold exactly"
                    )));
                }
                v.push(x as f64);
            }
            v
        }
        DType::I32 => bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect(),
        DType::U32 => bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect(),
        DType::I16 => bytes
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
            .collect(),
        DType::U16 => bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as f64)
            .collect(),
        DType::I8 => bytes.iter().map(|&b| b as i8 as f64).collect(),
        DType::U8 => bytes.iter().map(|&b| b as f64).collect(),
        DType::Bool => bytes.iter().map(|&b| (b != 0) as u8 as f64).collect(),
        DType::F4E2M1 | DType::I4 => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                let b = bytes[i / 2];
                let nib = if i % 2 == 0 { b & 0xF } else { b >> 4 };
                v.push(if dtype == DType::I4 {
                    (((nib << 4) as i8) >> 4) as f64
                } else {
                    crate::numerics::F4E2M1.decode(nib as u32)
                });
            }
            v
        }
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL_DTYPES;

    #[test]
    fn bytes_round_trip_every_dtype() {
        for d in ALL_DTYPES {
            let vals: Vec<f64> = (-9..10).map(|i| i as f64 * 0.75).collect();
            let t = Tensor::new(d, vec![vals.len()], vals).unwrap();
            let b = t.to_bytes();
            assert_eq!(b.len(), d.storage_bytes(t.numel()));
            let back = Tensor::from_bytes(d, vec![t.numel()], &b).unwrap();
            assert_eq!(back, t, "{d}");
        }
    }

    #[test]
    fn sixteen_to_sixty_four_bit_integers_are_little_endian() {
        let t = Tensor::new(DType::I16, vec![3], vec![-2.0, 32767.0, -32768.0]).unwrap();
        assert_eq!(t.to_bytes(), [0xFE, 0xFF, 0xFF, 0x7F, 0x00, 0x80]);
        let t = Tensor::new(DType::U16, vec![2], vec![65535.0, 258.0]).unwrap();
        assert_eq!(t.to_bytes(), [0xFF, 0xFF, 0x02, 0x01]);
        let t = Tensor::new(DType::U32, vec![2], vec![4294967295.0, 1.0]).unwrap();
        assert_eq!(t.to_bytes(), [0xFF, 0xFF, 0xFF, 0xFF, 1, 0, 0, 0]);
        let big = (1u64 << 53) as f64;
        let t = Tensor::new(DType::U64, vec![2], vec![big, 3.0]).unwrap();
        let b = t.to_bytes();
        assert_eq!(&b[..8], &(1u64 << 53).to_le_bytes());
        assert_eq!(&b[8..], &3u64.to_le_bytes());
        assert_eq!(Tensor::from_bytes(DType::U64, vec![2], &b).unwrap(), t);
        for d in [DType::I16, DType::U16, DType::U32, DType::U64] {
            let (lo, hi) = d.int_range().unwrap();
            let hi = hi.min(big);
            let t = Tensor::new(d, vec![3], vec![lo, 0.0, hi]).unwrap();
            let back = Tensor::from_bytes(d, vec![3], &t.to_bytes()).unwrap();
            assert_eq!(back, t, "{d}");
        }
    }

    #[test]
    fn u64_beyond_2_pow_53_is_an_error_not_a_rounding() {
        for x in [(1u64 << 53) + 1, u64::MAX] {
            let e = Tensor::from_bytes(DType::U64, vec![1], &x.to_le_bytes())
                .unwrap_err()
                .to_string();
            assert!(e.contains(&x.to_string()) && e.contains("2^53"), "{e}");
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        assert!(Tensor::new(DType::F32, vec![2, 3], vec![0.0; 5]).is_err());
        assert!(Tensor::from_bytes(DType::F32, vec![2], &[0u8; 7]).is_err());
        assert!(Tensor::new(DType::F32, vec![usize::MAX, 3], vec![]).is_err());
    }
}
