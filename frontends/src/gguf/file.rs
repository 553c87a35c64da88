//! The GGUF container: header, metadata key/values, the tensor info table, alignment, and the
//! bounds checks that make every read of a truncated or corrupted file an error.

use super::dequant::{dequantize, GgmlType};
use crate::error::FrontendError;
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// The magic number at the start of every GGUF file (`"GGUF"` read as a little-endian u32).
pub const GGUF_MAGIC: u32 = 0x4655_4747;

/// The default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// `uint8` (type 0).
    U8(u8),
    /// `int8` (type 1).
    I8(i8),
    /// `uint16` (type 2).
    U16(u16),
    /// `int16` (type 3).
    I16(i16),
    /// `uint32` (type 4).
    U32(u32),
    /// `int32` (type 5).
    I32(i32),
    /// `float32` (type 6).
    F32(f32),
    /// `bool` (type 7).
    Bool(bool),
    /// `string` (type 8).
    String(String),
    /// `array` (type 9) of values of one type.
    Array(Vec<MetaValue>),
    /// `uint64` (type 10).
    U64(u64),
    /// `int64` (type 11).
    I64(i64),
    /// `float64` (type 12).
    F64(f64),
}

impl MetaValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            MetaValue::I8(v) => Some(v as f64),
            MetaValue::I16(v) => Some(v as f64),
            MetaValue::I32(v) => Some(v as f64),
            MetaValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, when it is an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as a bool, when it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::String(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
        }
    }
}

/// One entry of the tensor info table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name (`blk.0.attn_q.weight` …).
    pub name: String,
    /// Dimensions as stored: fastest-varying first (`ne[0]` is the row length).
    pub ne: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data, relative to the start of the data section.
    pub offset: u64,
    /// Size of the data in bytes (computed from `ne` and the type's block layout).
    pub size: u64,
}

impl TensorInfo {
    /// The row-major (numpy) shape: `ne` reversed, so `[576, 1536]` in GGUF is `[1536, 576]`.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }

    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// A parsed GGUF file: metadata, tensor table and the (memory-mapped) bytes.
pub struct GgufFile {
    file: String,
    bytes: Box<dyn AsRef<[u8]> + Send + Sync>,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key/value pairs in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Data alignment (`general.alignment`, default 32).
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("file", &self.file)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish()
    }
}

/// A bounds-checked little-endian reader over the header.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str, message: String) -> FrontendError {
        FrontendError::Gguf {
            file: self.file.to_string(),
            message: format!("{what} (at byte {}): {message}", self.pos),
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], FrontendError> {
        let left = (self.b.len() - self.pos) as u64;
        if n > left {
            return Err(self.err(
                what,
                format!("needs {n} bytes but only {left} remain: the file is truncated or corrupt"),
            ));
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FrontendError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32, FrontendError> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, FrontendError> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String, FrontendError> {
        let n = self.u64(what)?;
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|e| self.err(what, format!("invalid UTF-8: {e}")))
    }

    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }

    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<MetaValue, FrontendError> {
        Ok(match ty {
            0 => MetaValue::U8(self.arr::<1>(what)?[0]),
            1 => MetaValue::I8(self.arr::<1>(what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.arr(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.arr(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.arr(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.arr(what)?)),
            7 => match self.arr::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(what, format!("bool byte is {b}, expected 0 or 1"))),
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                // ggml itself does not write nested arrays; bound the recursion anyway.
                if depth >= 4 {
                    return Err(self.err(what, "arrays nested deeper than 4".into()));
                }
                let ety = self.u32(what)?;
                let n = self.u64(what)?;
                // Every element takes at least one byte (strings at least 8): a length beyond
                // the bytes left is corrupt, and this bounds the allocation below.
                let min = match ety {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(self.err(what, format!("unknown array element type {t}"))),
                };
                if n.checked_mul(min).is_none_or(|b| b > self.remaining()) {
                    return Err(self.err(
                        what,
                        format!(
                            "array of {n} elements of type {ety} does not fit in the {} bytes left: \
                             the file is truncated or corrupt",
                            self.remaining()
                        ),
                    ));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(ety, what, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.arr(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.arr(what)?)),
            t => return Err(self.err(what, format!("unknown metadata value type {t}"))),
        })
    }
}

impl GgufFile {
    /// Memory-map and parse a GGUF file.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, FrontendError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let io = |e: std::io::Error| FrontendError::Gguf {
            file: name.clone(),
            message: format!("cannot read: {e}"),
        };
        let f = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and GGUF files are treated as immutable while loaded
        // (see the module docs); all reads go through bounds-checked slices of the map.
        let map = unsafe { memmap2::Mmap::map(&f) }.map_err(io)?;
        Self::parse(name, Box::new(map))
    }

    /// Parse GGUF bytes held in memory; `file` names them in errors.
    pub fn from_bytes(file: impl Into<String>, bytes: Vec<u8>) -> Result<GgufFile, FrontendError> {
        Self::parse(file.into(), Box::new(bytes))
    }

    fn parse(
        file: String,
        bytes: Box<dyn AsRef<[u8]> + Send + Sync>,
    ) -> Result<GgufFile, FrontendError> {
        let b: &[u8] = (*bytes).as_ref();
        let mut c = Cursor {
            b,
            pos: 0,
            file: &file,
        };
        let magic = c.u32("magic")?;
        if magic != GGUF_MAGIC {
            return Err(c.err(
                "magic",
                format!(
                    "found {magic:#010x}, expected {GGUF_MAGIC:#010x} (\"GGUF\"): not a GGUF file"
                ),
            ));
        }
        let version = c.u32("version")?;
        if version != 2 && version != 3 {
            return Err(c.err(
                "version",
                format!("version {version} is not supported (2 and 3 are)"),
            ));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes, a tensor info at
        // least 8 + 4 + 4 + 8: counts that cannot fit in the file are corrupt.
        if n_kv.checked_mul(13).is_none_or(|x| x > c.remaining()) {
            return Err(c.err(
                "metadata count",
                format!("{n_kv} entries cannot fit in a {}-byte file", b.len()),
            ));
        }
        if n_tensors.checked_mul(24).is_none_or(|x| x > c.remaining()) {
            return Err(c.err(
                "tensor count",
                format!("{n_tensors} tensors cannot fit in a {}-byte file", b.len()),
            ));
        }
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key {i}"))?;
            let what = format!("metadata `{key}`");
            let ty = c.u32(&what)?;
            let v = c.value(ty, &what, 0)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(c.err(&what, "duplicate key".into()));
            }
            metadata.push((key, v));
        }
        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v {
                MetaValue::U32(a) if *a > 0 && a.is_power_of_two() => *a as u64,
                v => {
                    return Err(FrontendError::Gguf {
                        file,
                        message: format!(
                            "general.alignment must be a power-of-two u32, found {v:?}"
                        ),
                    })
                }
            },
        };
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor info {i} name"))?;
            let what = format!("tensor `{name}`");
            let nd = c.u32(&what)?;
            if nd > 8 {
                return Err(c.err(&what, format!("{nd} dimensions (at most 8 are allowed)")));
            }
            let mut ne = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                ne.push(c.u64(&what)?);
            }
            let ggml_type = GgmlType(c.u32(&what)?);
            let offset = c.u64(&what)?;
            let numel = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
            let numel = numel.ok_or_else(|| c.err(&what, format!("shape {ne:?} overflows")))?;
            // Sizes of types this reader cannot dequantize are still checked when known, but
            // the error for them is raised only when the tensor is read.
            let size = match ggml_type.block_layout() {
                Some((blk, bytes)) => {
                    if !ne.first().copied().unwrap_or(1).is_multiple_of(blk) {
                        return Err(c.err(
                            &what,
                            format!(
                                "row length {} is not a multiple of the {ggml_type} block size {blk}",
                                ne.first().copied().unwrap_or(1)
                            ),
                        ));
                    }
                    (numel / blk).checked_mul(bytes).ok_or_else(|| {
                        c.err(&what, format!("byte size of shape {ne:?} overflows"))
                    })?
                }
                None => 0,
            };
            if !offset.is_multiple_of(alignment) {
                return Err(c.err(
                    &what,
                    format!("data offset {offset} is not a multiple of the alignment {alignment}"),
                ));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(c.err(&what, "duplicate tensor name".into()));
            }
            tensors.push(TensorInfo {
                name,
                ne,
                ggml_type,
                offset,
                size,
            });
        }
        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let len = b.len() as u64;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.size));
            if end.is_none_or(|e| e > len) {
                return Err(FrontendError::Gguf {
                    file,
                    message: format!(
                        "tensor `{}` ({}, shape {:?}): data [{} + {}, +{} bytes) lies past the end of the {len}-byte file",
                        t.name, t.ggml_type, t.ne, data_offset, t.offset, t.size
                    ),
                });
            }
        }
        Ok(GgufFile {
            file,
            bytes,
            version,
            metadata,
            tensors,
            alignment,
            data_offset,
            meta_index,
            tensor_index,
        })
    }

    /// The file name used in errors.
    pub fn file_name(&self) -> &str {
        &self.file
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub(super) fn err(&self, message: String) -> FrontendError {
        FrontendError::Gguf {
            file: self.file.clone(),
            message,
        }
    }

    fn require(&self, key: &str) -> Result<&MetaValue, FrontendError> {
        self.get(key)
            .ok_or_else(|| self.err(format!("metadata key `{key}` is missing")))
    }

    /// A required metadata value as an unsigned integer.
    pub fn get_u64(&self, key: &str) -> Result<u64, FrontendError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| {
            self.err(format!(
                "metadata `{key}` must be a non-negative integer, found {}",
                v.type_name()
            ))
        })
    }

    /// A required metadata value as a float.
    pub fn get_f64(&self, key: &str) -> Result<f64, FrontendError> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| {
            self.err(format!(
                "metadata `{key}` must be a number, found {}",
                v.type_name()
            ))
        })
    }

    /// A required metadata value as a string.
    pub fn get_str(&self, key: &str) -> Result<&str, FrontendError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| {
            self.err(format!(
                "metadata `{key}` must be a string, found {}",
                v.type_name()
            ))
        })
    }

    /// A required metadata value as an array.
    pub fn get_array(&self, key: &str) -> Result<&[MetaValue], FrontendError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| {
            self.err(format!(
                "metadata `{key}` must be an array, found {}",
                v.type_name()
            ))
        })
    }

    /// A tensor info by name.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor (checked to lie inside the file when parsing).
    pub fn tensor_bytes(&self, name: &str) -> Result<&[u8], FrontendError> {
        let t = self
            .tensor_info(name)
            .ok_or_else(|| self.err(format!("tensor `{name}` is missing")))?;
        if t.ggml_type.block_layout().is_none() {
            return Err(self.unsupported(t));
        }
        let start = (self.data_offset + t.offset) as usize;
        Ok(&(*self.bytes).as_ref()[start..start + t.size as usize])
    }

    fn unsupported(&self, t: &TensorInfo) -> FrontendError {
        self.err(format!(
            "tensor `{}` has {}, which this reader cannot dequantize (supported: F32, F16, BF16, \
             F64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)",
            t.name, t.ggml_type
        ))
    }

    /// Dequantize a tensor to `f32` values in row-major (numpy) order; returns them with the
    /// row-major shape (`ne` reversed).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>), FrontendError> {
        let bytes = self.tensor_bytes(name)?;
        let t = self.tensor_info(name).expect("checked by tensor_bytes");
        let v = dequantize(t.ggml_type, bytes, t.numel())
            .map_err(|m| self.err(format!("tensor `{name}` ({}): {m}", t.ggml_type)))?;
        Ok((t.shape(), v))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A minimal GGUF writer for tests.
    #[derive(Default)]
    pub(in crate::gguf) struct Writer {
        pub kv: Vec<(String, u32, Vec<u8>)>,
        pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
        pub version: u32,
    }

    fn s(x: &str) -> Vec<u8> {
        let mut v = (x.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(x.as_bytes());
        v
    }

    impl Writer {
        pub fn new() -> Self {
            Writer {
                version: 3,
                ..Default::default()
            }
        }
        pub fn u32(&mut self, k: &str, v: u32) {
            self.kv.push((k.into(), 4, v.to_le_bytes().to_vec()));
        }
        pub fn f32(&mut self, k: &str, v: f32) {
            self.kv.push((k.into(), 6, v.to_le_bytes().to_vec()));
        }
        pub fn str(&mut self, k: &str, v: &str) {
            self.kv.push((k.into(), 8, s(v)));
        }
        pub fn strs(&mut self, k: &str, v: &[&str]) {
            let mut b = 8u32.to_le_bytes().to_vec();
            b.extend((v.len() as u64).to_le_bytes());
            for x in v {
                b.extend(s(x));
            }
            self.kv.push((k.into(), 9, b));
        }
        pub fn tensor_f32(&mut self, name: &str, ne: &[u64], v: &[f32]) {
            let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            self.tensors.push((name.into(), ne.to_vec(), 0, b));
        }
        pub fn bytes(&self) -> Vec<u8> {
            let mut out = GGUF_MAGIC.to_le_bytes().to_vec();
            out.extend(self.version.to_le_bytes());
            out.extend((self.tensors.len() as u64).to_le_bytes());
            out.extend((self.kv.len() as u64).to_le_bytes());
            for (k, t, v) in &self.kv {
                out.extend(s(k));
                out.extend(t.to_le_bytes());
                out.extend(v);
            }
            let mut off = 0u64;
            let mut offs = vec![];
            for (_, _, _, d) in &self.tensors {
                offs.push(off);
                off = (off + d.len() as u64).div_ceil(32) * 32;
            }
            for ((n, ne, t, _), o) in self.tensors.iter().zip(&offs) {
                out.extend(s(n));
                out.extend((ne.len() as u32).to_le_bytes());
                for d in ne {
                    out.extend(d.to_le_bytes());
                }
                out.extend(t.to_le_bytes());
                out.extend(o.to_le_bytes());
            }
            while !out.len().is_multiple_of(32) {
                out.push(0);
            }
            let base = out.len();
            for ((_, _, _, d), o) in self.tensors.iter().zip(&offs) {
                out.resize(base + *o as usize, 0);
                out.extend(d);
            }
            out
        }
    }

    pub(in crate::gguf) fn small_file() -> Vec<u8> {
        let mut w = Writer::new();
        w.str("general.architecture", "test");
        w.u32("general.alignment", 32);
        w.f32("x.eps", 1e-5);
        w.strs("tokenizer.ggml.tokens", &["a", "b", "ab"]);
        w.tensor_f32("t0", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        w.tensor_f32("t1", &[5], &[7.0, 8.0, 9.0, 10.0, 11.0]);
        w.bytes()
    }

    #[test]
    fn parses_header_metadata_and_tensors() {
        let g = GgufFile::from_bytes("small.gguf", small_file()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, 32);
        assert_eq!(g.get_str("general.architecture").unwrap(), "test");
        assert_eq!(g.get_f64("x.eps").unwrap(), 1e-5f32 as f64);
        assert_eq!(g.get_array("tokenizer.ggml.tokens").unwrap().len(), 3);
        let (shape, v) = g.tensor_f32("t0").unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(g.tensor_info("t1").unwrap().offset, 32);
        assert_eq!(
            g.tensor_f32("t1").unwrap().1,
            vec![7.0, 8.0, 9.0, 10.0, 11.0]
        );
        let e = g.get_u64("general.architecture").unwrap_err().to_string();
        assert!(
            e.contains("general.architecture") && e.contains("string"),
            "{e}"
        );
        let e = g.tensor_f32("nope").unwrap_err().to_string();
        assert!(e.contains("`nope`") && e.contains("small.gguf"), "{e}");
    }

    #[test]
    fn open_reads_a_file_through_mmap() {
        let p = std::env::temp_dir().join(format!("fuselage-gguf-{}.gguf", std::process::id()));
        std::fs::write(&p, small_file()).unwrap();
        let g = GgufFile::open(&p).unwrap();
        assert_eq!(g.tensor_f32("t1").unwrap().1[4], 11.0);
        std::fs::remove_file(&p).unwrap();
        let e = GgufFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn truncated_files_are_errors_at_every_length() {
        let full = small_file();
        for n in 0..full.len() {
            let r = GgufFile::from_bytes("cut.gguf", full[..n].to_vec());
            let e = r
                .expect_err(&format!("truncated at {n} must fail"))
                .to_string();
            assert!(e.contains("cut.gguf"), "{e}");
        }
        assert!(GgufFile::from_bytes("ok.gguf", full).is_ok());
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let full = small_file();
        for i in 0..full.len() {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut b = full.clone();
                b[i] ^= x;
                if let Ok(g) = GgufFile::from_bytes("bad.gguf", b) {
                    for t in g.tensors.clone() {
                        let _ = g.tensor_f32(&t.name);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_magic_version_and_huge_counts() {
        let mut b = small_file();
        b[0] = b'X';
        let e = GgufFile::from_bytes("m.gguf", b).unwrap_err().to_string();
        assert!(e.contains("magic") && e.contains("not a GGUF file"), "{e}");
        let mut b = small_file();
        b[4..8].copy_from_slice(&1u32.to_le_bytes());
        let e = GgufFile::from_bytes("v.gguf", b).unwrap_err().to_string();
        assert!(e.contains("version 1"), "{e}");
        let mut b = small_file();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = GgufFile::from_bytes("c.gguf", b).unwrap_err().to_string();
        assert!(e.contains("tensors cannot fit"), "{e}");
        let mut b = small_file();
        b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = GgufFile::from_bytes("k.gguf", b).unwrap_err().to_string();
        assert!(e.contains("entries cannot fit"), "{e}");
        // A huge array length.
        let mut w = Writer::new();
        let mut v = 8u32.to_le_bytes().to_vec();
        v.extend(u64::MAX.to_le_bytes());
        w.kv.push(("arr".into(), 9, v));
        let e = GgufFile::from_bytes("a.gguf", w.bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`arr`") && e.contains("does not fit"), "{e}");
        // A huge string length.
        let mut w = Writer::new();
        w.kv.push(("s".into(), 8, u64::MAX.to_le_bytes().to_vec()));
        let e = GgufFile::from_bytes("s.gguf", w.bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`s`") && e.contains("truncated"), "{e}");
    }

    #[test]
    fn tensor_bounds_overflow_and_unknown_types() {
        // Data past the end of the file.
        let mut w = Writer::new();
        w.tensor_f32("big", &[1000], &[1.0; 4]);
        let e = GgufFile::from_bytes("b.gguf", w.bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`big`") && e.contains("past the end"), "{e}");
        // A shape whose element count overflows.
        let mut w = Writer::new();
        w.tensor_f32("ovf", &[u64::MAX, 4], &[]);
        let e = GgufFile::from_bytes("o.gguf", w.bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ovf`") && e.contains("overflows"), "{e}");
        // A byte size that overflows.
        let mut w = Writer::new();
        w.tensor_f32("ovb", &[1 << 62, 1], &[]);
        let e = GgufFile::from_bytes("o.gguf", w.bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ovb`") && e.contains("overflows"), "{e}");
        // An unknown type parses (its size is unknown) but reading it names tensor and type.
        let mut w = Writer::new();
        w.tensors.push(("k4".into(), vec![256], 12, vec![0; 144]));
        w.tensors.push(("weird".into(), vec![4], 999, vec![0; 4]));
        let g = GgufFile::from_bytes("u.gguf", w.bytes()).unwrap();
        let e = g.tensor_f32("k4").unwrap_err().to_string();
        assert!(e.contains("`k4`") && e.contains("Q4_K"), "{e}");
        let e = g.tensor_f32("weird").unwrap_err().to_string();
        assert!(
            e.contains("`weird`") && e.contains("unknown type 999"),
            "{e}"
        );
        // A Q8_0 row that is not a whole number of blocks.
        let mut w = Writer::new();
        w.tensors.push(("rag".into(), vec![33], 8, vec![0; 68]));
        let e = GgufFile::from_bytes("r.gguf", w.bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`rag`") && e.contains("block size"), "{e}");
    }
}
