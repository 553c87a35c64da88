//! Decoding `TensorProto`s (initializers, `Constant` values, attribute tensors) into constants
//! with exact size checks, and the importer's view of compile-time-known values.

use super::proto::{DataLocation, DataType, TensorProto};
use fuselage_ir::tensor::{checked_numel, decode_values, encode_values};
use fuselage_ir::{Constant, DType, Storage, Tensor, TensorType};
use std::path::Path;
use std::sync::Arc;

/// A value known at import time, in the IR dtype's own little-endian encoding (the same bytes a
/// dense [`Constant`] holds, so weights are never re-encoded).
#[derive(Clone, Debug)]
pub(crate) struct Known {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Arc<[u8]>,
}

impl Known {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Integer view (ints and bools exactly, including i64 values past ±2^53 and u64 values up
    /// to `i64::MAX`; floats only when integral).
    pub fn ints(&self) -> Result<Vec<i64>, String> {
        let n = self.numel();
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::U64 => {
                let mut out = Vec::with_capacity(n);
                for c in b.chunks_exact(8) {
                    let x = u64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
                    out.push(
                        i64::try_from(x)
                            .map_err(|_| format!("u64 value {x} does not fit an i64"))?,
                    );
                }
                out
            }
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
                .collect(),
            DType::U32 => b
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
                .collect(),
            DType::I16 => b
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::U16 => b
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
                .collect(),
            DType::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            DType::U8 | DType::Bool => b.iter().map(|&x| x as i64).collect(),
            _ => {
                let v = decode_values(self.dtype, n, b).map_err(|e| e.to_string())?;
                let mut out = Vec::with_capacity(n);
                for x in v {
                    if x.fract() != 0.0 || !x.is_finite() {
                        return Err(format!("expected integer values, found {x}"));
                    }
                    out.push(x as i64);
                }
                out
            }
        })
    }

    /// `f64` view (fails on i64 values past ±2^53).
    pub fn floats(&self) -> Result<Vec<f64>, String> {
        decode_values(self.dtype, self.numel(), &self.bytes).map_err(|e| e.to_string())
    }

    pub fn tensor(&self) -> Result<Tensor, String> {
        Tensor::from_bytes(self.dtype, self.shape.clone(), &self.bytes).map_err(|e| e.to_string())
    }

    pub fn from_tensor(t: &Tensor) -> Known {
        Known {
            dtype: t.dtype(),
            shape: t.shape().to_vec(),
            bytes: encode_values(t.dtype(), t.data()).into(),
        }
    }

    pub fn from_i64s(shape: Vec<usize>, v: &[i64]) -> Known {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        Known {
            dtype: DType::I64,
            shape,
            bytes: bytes.into(),
        }
    }

    pub fn ty(&self) -> TensorType {
        TensorType::fixed(self.dtype, &self.shape)
    }

    pub fn constant(&self) -> Constant {
        Constant::new(
            self.ty(),
            Storage::Dense {
                bytes: self.bytes.clone(),
            },
        )
    }
}

/// The IR dtype of an ONNX element type, or why there is none.
pub(crate) fn onnx_dtype(code: i32) -> Result<DType, String> {
    let dt = DataType::try_from(code).map_err(|_| format!("unknown ONNX element type {code}"))?;
    Ok(match dt {
        DataType::Float => DType::F32,
        DataType::Double => DType::F64,
        DataType::Float16 => DType::F16,
        DataType::Bfloat16 => DType::BF16,
        DataType::Int64 => DType::I64,
        DataType::Int32 => DType::I32,
        DataType::Int16 => DType::I16,
        DataType::Int8 => DType::I8,
        DataType::Uint64 => DType::U64,
        DataType::Uint32 => DType::U32,
        DataType::Uint16 => DType::U16,
        DataType::Uint8 => DType::U8,
        DataType::Bool => DType::Bool,
        DataType::Float8e4m3fn => DType::F8E4M3FN,
        DataType::Float8e5m2 => DType::F8E5M2,
        DataType::Int4 => DType::I4,
        DataType::Float4e2m1 => DType::F4E2M1,
        other => return Err(format!("ONNX element type {other:?} has no IR dtype")),
    })
}

fn external_bytes(t: &TensorProto, dir: Option<&Path>) -> Result<Vec<u8>, String> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for e in &t.external_data {
        match e.key.as_str() {
            "location" => location = Some(e.value.clone()),
            "offset" => {
                offset = e
                    .value
                    .parse()
                    .map_err(|_| format!("bad external data offset `{}`", e.value))?
            }
            "length" => {
                length = Some(
                    e.value
                        .parse::<u64>()
                        .map_err(|_| format!("bad external data length `{}`", e.value))?,
                )
            }
            _ => {}
        }
    }
    let location = location.ok_or("external data without a `location`")?;
    let dir = dir.ok_or_else(|| {
        format!("data is in external file `{location}`, but the model was not loaded from a path")
    })?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(format!(
            "external data location `{location}` must be a relative path inside the model's folder"
        ));
    }
    let path = dir.join(rel);
    let data = std::fs::read(&path).map_err(|e| format!("reading `{}`: {e}", path.display()))?;
    let start = usize::try_from(offset).map_err(|_| "external data offset overflows")?;
    let end = match length {
        Some(l) => start
            .checked_add(usize::try_from(l).map_err(|_| "external data length overflows")?)
            .ok_or("external data range overflows")?,
        None => data.len(),
    };
    if start > data.len() || end > data.len() {
        return Err(format!(
            "external data range {start}..{end} is past the end of `{}` ({} bytes)",
            path.display(),
            data.len()
        ));
    }
    Ok(data[start..end].to_vec())
}

/// Decode a `TensorProto` with every size checked against its dims. Errors do not repeat the
/// tensor's name (the caller adds it).
pub(crate) fn decode_tensor(
    t: &TensorProto,
    dir: Option<&Path>,
    max_bytes: u64,
) -> Result<Known, String> {
    let dtype = onnx_dtype(t.data_type)?;
    let code = DataType::try_from(t.data_type).unwrap_or(DataType::Undefined);
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        shape.push(usize::try_from(d).map_err(|_| format!("negative dim {d} in {:?}", t.dims))?);
    }
    let n = checked_numel(&shape).ok_or_else(|| format!("shape {:?} overflows", t.dims))?;
    let want_bytes = (n as u128 * dtype.bits() as u128).div_ceil(8);
    if want_bytes > max_bytes as u128 {
        return Err(format!(
            "{dtype}{:?} declares {want_bytes} bytes, over the memory budget of {max_bytes} bytes \
             (FUSELAGE_MEMORY_BUDGET)",
            t.dims
        ));
    }
    let external = t.data_location == DataLocation::External as i32;
    let raw: Option<Vec<u8>> = if external {
        Some(external_bytes(t, dir)?)
    } else if !t.raw_data.is_empty() || n == 0 {
        Some(t.raw_data.clone())
    } else {
        None
    };
    let count_err = |field: &str, found: usize| {
        format!(
            "{field} holds {found} values but dims {:?} need {n}",
            t.dims
        )
    };
    let bytes: Vec<u8> = if let Some(raw) = raw {
        // raw_data holds every type in the IR dtype's own little-endian encoding.
        if raw.len() as u128 != want_bytes {
            return Err(format!(
                "raw_data has {} bytes but dims {:?} of {code:?} need {want_bytes}",
                raw.len(),
                t.dims
            ));
        }
        if dtype == DType::Bool && raw.iter().any(|&b| b > 1) {
            return Err("bool raw_data holds a byte other than 0 or 1".into());
        }
        raw
    } else {
        match code {
            DataType::Float => {
                if t.float_data.len() != n {
                    return Err(count_err("float_data", t.float_data.len()));
                }
                t.float_data.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            DataType::Double => {
                if t.double_data.len() != n {
                    return Err(count_err("double_data", t.double_data.len()));
                }
                t.double_data.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            DataType::Int64 => {
                if t.int64_data.len() != n {
                    return Err(count_err("int64_data", t.int64_data.len()));
                }
                t.int64_data.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            // onnx.proto: uint32 and uint64 values are stored in uint64_data.
            DataType::Uint64 => {
                if t.uint64_data.len() != n {
                    return Err(count_err("uint64_data", t.uint64_data.len()));
                }
                t.uint64_data.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            DataType::Uint32 => {
                if t.uint64_data.len() != n {
                    return Err(count_err("uint64_data", t.uint64_data.len()));
                }
                let mut b = Vec::with_capacity(n * 4);
                for &x in &t.uint64_data {
                    let v =
                        u32::try_from(x).map_err(|_| format!("uint32 value {x} out of range"))?;
                    b.extend_from_slice(&v.to_le_bytes());
                }
                b
            }
            DataType::Int32 => {
                if t.int32_data.len() != n {
                    return Err(count_err("int32_data", t.int32_data.len()));
                }
                t.int32_data.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            // onnx.proto: int16 and uint16 values are stored in int32_data, one per entry.
            DataType::Int16 => {
                if t.int32_data.len() != n {
                    return Err(count_err("int32_data", t.int32_data.len()));
                }
                let mut b = Vec::with_capacity(n * 2);
                for &x in &t.int32_data {
                    let v =
                        i16::try_from(x).map_err(|_| format!("int16 value {x} out of range"))?;
                    b.extend_from_slice(&v.to_le_bytes());
                }
                b
            }
            DataType::Uint16 => {
                if t.int32_data.len() != n {
                    return Err(count_err("int32_data", t.int32_data.len()));
                }
                let mut b = Vec::with_capacity(n * 2);
                for &x in &t.int32_data {
                    let v =
                        u16::try_from(x).map_err(|_| format!("uint16 value {x} out of range"))?;
                    b.extend_from_slice(&v.to_le_bytes());
                }
                b
            }
            DataType::Int8 | DataType::Uint8 | DataType::Bool => {
                if t.int32_data.len() != n {
                    return Err(count_err("int32_data", t.int32_data.len()));
                }
                let v: Vec<f64> = t.int32_data.iter().map(|&x| x as f64).collect();
                if dtype == DType::Bool && v.iter().any(|&x| x != 0.0 && x != 1.0) {
                    return Err("bool int32_data holds a value other than 0 or 1".into());
                }
                encode_values(dtype, &v)
            }
            DataType::Float16 | DataType::Bfloat16 => {
                if t.int32_data.len() != n {
                    return Err(count_err("int32_data", t.int32_data.len()));
                }
                t.int32_data
                    .iter()
                    .flat_map(|&x| (x as u16).to_le_bytes())
                    .collect()
            }
            DataType::Float8e4m3fn | DataType::Float8e5m2 => {
                if t.int32_data.len() != n {
                    return Err(count_err("int32_data", t.int32_data.len()));
                }
                t.int32_data.iter().map(|&x| x as u8).collect()
            }
            DataType::Int4 | DataType::Float4e2m1 => {
                // Two 4-bit values per int32 entry, low nibble first.
                if t.int32_data.len() != n.div_ceil(2) {
                    return Err(count_err("int32_data", t.int32_data.len() * 2));
                }
                t.int32_data.iter().map(|&x| x as u8).collect()
            }
            other => return Err(format!("no data field for element type {other:?}")),
        }
    };
    // Decoding once validates the encoding (e.g. NaN-free int data); the bytes are kept.
    let k = Known {
        dtype,
        shape,
        bytes: bytes.into(),
    };
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(code: DataType, dims: &[i64]) -> TensorProto {
        TensorProto {
            name: "t".into(),
            dims: dims.to_vec(),
            data_type: code as i32,
            ..Default::default()
        }
    }

    #[test]
    fn sixteen_to_sixty_four_bit_integers_map_exactly() {
        for (code, d) in [
            (DataType::Int16, DType::I16),
            (DataType::Uint16, DType::U16),
            (DataType::Uint32, DType::U32),
            (DataType::Uint64, DType::U64),
            (DataType::Int32, DType::I32),
            (DataType::Int64, DType::I64),
        ] {
            assert_eq!(onnx_dtype(code as i32).unwrap(), d, "{code:?}");
        }
    }

    #[test]
    fn int16_and_uint16_come_from_int32_data_with_range_checks() {
        let mut t = proto(DataType::Int16, &[3]);
        t.int32_data = vec![-32768, -1, 32767];
        let k = decode_tensor(&t, None, u64::MAX).unwrap();
        assert_eq!(k.dtype, DType::I16);
        assert_eq!(&k.bytes[..], [0x00, 0x80, 0xFF, 0xFF, 0xFF, 0x7F]);
        assert_eq!(k.tensor().unwrap().data(), &[-32768.0, -1.0, 32767.0]);
        assert_eq!(k.ints().unwrap(), [-32768, -1, 32767]);
        t.int32_data = vec![0, 32768, 0];
        let e = decode_tensor(&t, None, u64::MAX).unwrap_err();
        assert!(e.contains("int16 value 32768 out of range"), "{e}");

        let mut t = proto(DataType::Uint16, &[2]);
        t.int32_data = vec![65535, 258];
        let k = decode_tensor(&t, None, u64::MAX).unwrap();
        assert_eq!(k.dtype, DType::U16);
        assert_eq!(&k.bytes[..], [0xFF, 0xFF, 0x02, 0x01]);
        assert_eq!(k.ints().unwrap(), [65535, 258]);
        t.int32_data = vec![-1, 0];
        let e = decode_tensor(&t, None, u64::MAX).unwrap_err();
        assert!(e.contains("uint16 value -1 out of range"), "{e}");
        t.int32_data = vec![1];
        let e = decode_tensor(&t, None, u64::MAX).unwrap_err();
        assert!(e.contains("int32_data holds 1 values"), "{e}");
    }

    #[test]
    fn uint32_and_uint64_come_from_uint64_data() {
        let mut t = proto(DataType::Uint32, &[2]);
        t.uint64_data = vec![4294967295, 7];
        let k = decode_tensor(&t, None, u64::MAX).unwrap();
        assert_eq!(k.dtype, DType::U32);
        assert_eq!(&k.bytes[..], [0xFF, 0xFF, 0xFF, 0xFF, 7, 0, 0, 0]);
        assert_eq!(k.ints().unwrap(), [4294967295, 7]);
        t.uint64_data = vec![4294967296, 0];
        let e = decode_tensor(&t, None, u64::MAX).unwrap_err();
        assert!(e.contains("uint32 value 4294967296 out of range"), "{e}");

        let mut t = proto(DataType::Uint64, &[2]);
        t.uint64_data = vec![1 << 53, u64::MAX];
        let k = decode_tensor(&t, None, u64::MAX).unwrap();
        assert_eq!(k.dtype, DType::U64);
        assert_eq!(&k.bytes[..8], (1u64 << 53).to_le_bytes());
        assert_eq!(&k.bytes[8..], u64::MAX.to_le_bytes());
        // The f64 reference cannot hold u64::MAX: an error, not a rounded value.
        let e = k.tensor().unwrap_err();
        assert!(
            e.contains("18446744073709551615") && e.contains("2^53"),
            "{e}"
        );
        let e = k.ints().unwrap_err();
        assert!(e.contains("does not fit an i64"), "{e}");
        t.uint64_data = vec![1 << 53, 3];
        let k = decode_tensor(&t, None, u64::MAX).unwrap();
        assert_eq!(k.tensor().unwrap().data(), &[(1u64 << 53) as f64, 3.0]);
        t.uint64_data = vec![];
        let e = decode_tensor(&t, None, u64::MAX).unwrap_err();
        assert!(e.contains("uint64_data holds 0 values"), "{e}");
    }

    #[test]
    fn raw_data_keeps_the_native_width() {
        for (code, d, width) in [
            (DataType::Int16, DType::I16, 2),
            (DataType::Uint16, DType::U16, 2),
            (DataType::Uint32, DType::U32, 4),
            (DataType::Uint64, DType::U64, 8),
        ] {
            let mut t = proto(code, &[2]);
            let vals: Vec<f64> = vec![5.0, 300.0];
            t.raw_data = encode_values(d, &vals);
            assert_eq!(t.raw_data.len(), 2 * width);
            let k = decode_tensor(&t, None, u64::MAX).unwrap();
            assert_eq!(k.dtype, d);
            assert_eq!(k.tensor().unwrap().data(), &vals[..], "{d}");
            t.raw_data.pop();
            let e = decode_tensor(&t, None, u64::MAX).unwrap_err();
            assert!(e.contains(&format!("need {}", 2 * width)), "{d}: {e}");
        }
    }
}
