//! Reading `.safetensors` files zero-copy: the file is memory-mapped once (shared through
//! [`fuselage_ir::map_file`]) and every tensor becomes a constant with
//! [`Storage::File`] storage over its byte range, so importing copies
//! no weight bytes and a printed module refers to the file.
//!
//! The header is parsed and validated by the `safetensors` crate; when it rejects a file, the
//! header is examined again here to name the tensor at fault (the crate's overflow and
//! incomplete-buffer errors do not), so every error names the file and, where there is one, the
//! tensor.

use crate::error::FrontendError;
use ::safetensors::tensor::{Dtype, SafeTensorError, SafeTensors};
use fuselage_ir::{Constant, DType, Storage, TensorType};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// Element type.
    pub dtype: DType,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Absolute byte offset in the file.
    pub offset: u64,
    /// Byte length.
    pub len: u64,
}

/// An opened, validated, memory-mapped safetensors file.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Arc<Mmap>,
    tensors: BTreeMap<String, TensorEntry>,
}

fn dtype_of(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U64 => DType::U64,
        Dtype::U32 => DType::U32,
        Dtype::U16 => DType::U16,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Bool,
        Dtype::F8_E4M3 => DType::F8E4M3FN,
        Dtype::F8_E5M2 => DType::F8E5M2,
        _ => return None,
    })
}

impl SafetensorsFile {
    /// Open and validate `path`: header well-formed, every tensor's shape × dtype equal to its
    /// byte range, ranges within the file.
    pub fn open(path: &Path) -> Result<Self, FrontendError> {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let map = fuselage_ir::map_file(&path)
            .map_err(|e| FrontendError::file(&path, format!("cannot open: {e}")))?;
        let (header_len, meta) = SafeTensors::read_metadata(&map[..])
            .map_err(|e| FrontendError::file(&path, diagnose(&map[..], &e)))?;
        let data_start = 8 + header_len as u64;
        let mut tensors = BTreeMap::new();
        for (name, info) in meta.tensors() {
            let dtype = dtype_of(info.dtype).ok_or_else(|| {
                FrontendError::file(
                    &path,
                    format!("tensor `{name}`: unsupported dtype {:?}", info.dtype),
                )
            })?;
            let (s, e) = info.data_offsets;
            tensors.insert(
                name,
                TensorEntry {
                    dtype,
                    shape: info.shape.clone(),
                    offset: data_start + s as u64,
                    len: (e - s) as u64,
                },
            );
        }
        Ok(SafetensorsFile { path, map, tensors })
    }

    /// The file (canonical path).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names and entries, sorted by name.
    pub fn tensors(&self) -> &BTreeMap<String, TensorEntry> {
        &self.tensors
    }

    /// One tensor's entry, if present.
    pub fn get(&self, name: &str) -> Option<&TensorEntry> {
        self.tensors.get(name)
    }

    /// A constant over tensor `name` (zero-copy file storage); errors if missing.
    pub fn constant(&self, name: &str) -> Result<Constant, FrontendError> {
        let e = self
            .get(name)
            .ok_or_else(|| FrontendError::file(&self.path, format!("missing tensor `{name}`")))?;
        let storage = Storage::file_mapped(&self.path, self.map.clone(), e.offset, e.len)
            .map_err(|err| FrontendError::file(&self.path, format!("tensor `{name}`: {err}")))?;
        let c = Constant::new(TensorType::fixed(e.dtype, &e.shape), storage);
        c.check(name)
            .map_err(|err| FrontendError::file(&self.path, format!("tensor `{name}`: {err}")))?;
        Ok(c)
    }
}

/// Explain a rejected file, naming the tensor at fault where the crate's error does not.
fn diagnose(buf: &[u8], err: &SafeTensorError) -> String {
    let generic = format!("invalid safetensors file: {err}");
    let named = matches!(
        err,
        SafeTensorError::ValidationOverflow
            | SafeTensorError::TensorInvalidInfo
            | SafeTensorError::MetadataIncompleteBuffer
            | SafeTensorError::MisalignedSlice
            | SafeTensorError::InvalidOffset(_)
    );
    if buf.len() < 8 {
        return format!(
            "truncated: {} bytes, shorter than the 8-byte header length",
            buf.len()
        );
    }
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap_or([0; 8]));
    if n > (buf.len() - 8) as u64 {
        return format!(
            "truncated or corrupt: the header declares {n} bytes but the file has {} after the \
             length",
            buf.len() - 8
        );
    }
    if !named {
        return generic;
    }
    let data_len = (buf.len() - 8 - n as usize) as u128;
    let header: serde_json::Value = match serde_json::from_slice(&buf[8..8 + n as usize]) {
        Ok(v) => v,
        Err(_) => return generic,
    };
    let Some(obj) = header.as_object() else {
        return generic;
    };
    for (name, t) in obj.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let shape: Option<Vec<u128>> = t["shape"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(u128::from)).collect());
        let offs: Option<Vec<u128>> = t["data_offsets"]
            .as_array()
            .and_then(|a| a.iter().map(|d| d.as_u64().map(u128::from)).collect());
        let (Some(shape), Some(offs)) = (shape, offs) else {
            continue;
        };
        let bits: u128 = serde_json::from_value::<Dtype>(t["dtype"].clone())
            .map(|d| d.bitsize() as u128)
            .unwrap_or(0);
        let count = shape.iter().try_fold(1u128, |a, &d| a.checked_mul(d));
        let fits_usize = count
            .and_then(|c| c.checked_mul(bits.max(1)))
            .is_some_and(|b| b <= usize::MAX as u128);
        if !fits_usize {
            return format!("tensor `{name}`: shape {shape:?} overflows the element count");
        }
        if offs.len() == 2 {
            let (s, e) = (offs[0], offs[1]);
            if e > data_len || s > e {
                return format!(
                    "tensor `{name}`: declares bytes {s}..{e} of the data section, which has \
                     {data_len} bytes (truncated file?)"
                );
            }
            let need = count.unwrap_or(0) * bits / 8;
            if bits > 0 && e - s != need {
                return format!(
                    "tensor `{name}`: shape {shape:?} of {} needs {need} bytes, its range \
                     {s}..{e} has {}",
                    t["dtype"],
                    e - s
                );
            }
        }
    }
    generic
}

/// Write a safetensors file (for tests and tools): `(name, dtype, shape, little-endian bytes)`.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, DType, Vec<usize>, Vec<u8>)],
) -> Result<(), FrontendError> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for (name, dtype, shape, bytes) in tensors {
        let d = match dtype {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U64 => "U64",
            DType::U32 => "U32",
            DType::U16 => "U16",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
            DType::F8E4M3FN => "F8_E4M3",
            DType::F8E5M2 => "F8_E5M2",
            d => {
                return Err(FrontendError::file(
                    path,
                    format!("tensor `{name}`: dtype {d} has no safetensors code"),
                ))
            }
        };
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": d, "shape": shape, "data_offsets": [off, off + bytes.len()]}),
        );
        off += bytes.len();
    }
    let mut h = serde_json::to_vec(&header)
        .map_err(|e| FrontendError::file(path, format!("header: {e}")))?;
    while !(h.len() + 8).is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    for (_, _, _, b) in tensors {
        out.extend_from_slice(b);
    }
    std::fs::write(path, out).map_err(|e| FrontendError::file(path, format!("write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuselage_ir::Tensor;

    #[test]
    fn sixteen_to_sixty_four_bit_integers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ints.safetensors");
        let cases = [
            (DType::I16, vec![-32768.0, 32767.0]),
            (DType::U16, vec![0.0, 65535.0]),
            (DType::U32, vec![4294967295.0, 1.0]),
            (DType::U64, vec![(1u64 << 53) as f64, 2.0]),
        ];
        let entries: Vec<_> = cases
            .iter()
            .map(|(d, v)| {
                let t = Tensor::new(*d, vec![2], v.clone()).unwrap();
                (d.name().to_string(), *d, vec![2], t.to_bytes())
            })
            .collect();
        write_safetensors(&path, &entries).unwrap();
        let f = SafetensorsFile::open(&path).unwrap();
        for (d, v) in cases {
            let c = f.constant(d.name()).unwrap();
            assert_eq!(c.ty.dtype, d);
            assert_eq!(c.value(d.name()).unwrap().data(), &v[..], "{d}");
        }
    }
}
