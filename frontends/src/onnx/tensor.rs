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

    /// Integer view (ints and bools exactly, including i64 values past ±2^53; floats only when
    /// integral).
    pub fn ints(&self) -> Result<Vec<i64>, String> {
        let n = self.numel();
        let b = &self.bytes;
        Ok(match self.dtype {
            DType::I64 => b
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
            DType::I32 => b
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap_or([0; 4])) as i64)
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
        DataType::Int8 => DType::I8,
        DataType::Uint8 => DType::U8,
        DataType::Bool => DType::Bool,
        DataType::Float8e4m3fn => DType::F8E4M3FN,
        DataType::Float8e5m2 => DType::F8E5M2,
        DataType::Int4 => DType::I4,
        DataType::Float4e2m1 => DType::F4E2M1,
        // Widened losslessly.
        DataType::Int16 | DataType::Uint16 => DType::I32,
        DataType::Uint32 => DType::I64,
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
        match code {
            DataType::Int16 | DataType::Uint16 => {
                if raw.len() as u128 != n as u128 * 2 {
                    return Err(format!(
                        "raw_data has {} bytes but dims {:?} of {code:?} need {}",
                        raw.len(),
                        t.dims,
                        n * 2
                    ));
                }
                raw.chunks_exact(2)
                    .flat_map(|c| {
                        let v = if code == DataType::Int16 {
                            i16::from_le_bytes([c[0], c[1]]) as i32
                        } else {
                            u16::from_le_bytes([c[0], c[1]]) as i32
                        };
                        v.to_le_bytes()
                    })
                    .collect()
            }
            DataType::Uint32 => {
                if raw.len() as u128 != n as u128 * 4 {
                    return Err(format!(
                        "raw_data has {} bytes but dims {:?} of {code:?} need {}",
                        raw.len(),
                        t.dims,
                        n * 4
                    ));
                }
                raw.chunks_exact(4)
                    .flat_map(|c| {
                        (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).to_le_bytes()
                    })
                    .collect()
            }
            _ => {
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
            }
        }
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
            DataType::Uint32 => {
                if t.uint64_data.len() != n {
                    return Err(count_err("uint64_data", t.uint64_data.len()));
                }
                let mut b = Vec::with_capacity(n * 8);
                for &x in &t.uint64_data {
                    let v =
                        u32::try_from(x).map_err(|_| format!("uint32 value {x} out of range"))?;
                    b.extend_from_slice(&(v as i64).to_le_bytes());
                }
                b
            }
            DataType::Int32 | DataType::Int16 | DataType::Uint16 => {
                if t.int32_data.len() != n {
                    return Err(count_err("int32_data", t.int32_data.len()));
                }
                t.int32_data.iter().flat_map(|x| x.to_le_bytes()).collect()
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
