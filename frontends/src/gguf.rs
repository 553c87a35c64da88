//! GGUF (llama.cpp) import: a reader of the file format, exact dequantization of the common
//! tensor types, the llama architecture, and the tokenizer the file carries.
//!
//! Written from the GGUF specification (ggml `docs/gguf.md`):
//!
//! ```text
//! magic "GGUF" (u32 LE 0x46554747) · version u32 (2 or 3) · tensor_count u64 · kv_count u64
//! kv_count × { key: string, value_type: u32, value }
//! tensor_count × { name: string, n_dims: u32, ne[n_dims]: u64 (fastest first), type: u32,
//!                  offset: u64 (relative to the data section, a multiple of the alignment) }
//! padding to `general.alignment` (default 32) · tensor data
//! ```
//! where `string` is `len: u64` then UTF-8 bytes, and an array value is `elem_type: u32`,
//! `len: u64`, then the elements.
//!
//! The file is memory-mapped ([`GgufFile::open`]); nothing is copied until a tensor is
//! dequantized. Every count, length, shape and offset is checked against the file before use, so
//! a truncated or corrupted file gives a [`FrontendError::Gguf`] naming the file (and the tensor
//! or key), never a panic or a read past the end. (As with any memory map, a file that another
//! process truncates *while* it is mapped can still fault; GGUF files are treated as immutable.)
//!
//! Dequantization follows ggml / gguf-py exactly, in `f32` arithmetic, so the dense `f32`
//! constants are bit-identical to what gguf-py's `dequantize` produces.
//!
//! ```no_run
//! let module = fuselage_frontends::gguf::load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let file = fuselage_frontends::gguf::GgufFile::open("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let tok = fuselage_frontends::gguf::tokenizer(&file)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::builder::{LlamaLayerWeights, ModelBuilder};
use crate::builtin::LlamaConfig;
use crate::error::FrontendError;
use fuselage_ir::{Constant, DType, Module, Storage, TensorType, ValueId};
use serde_json::json;
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

/// A ggml tensor type (the `type` field of a tensor info).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GgmlType(pub u32);

impl GgmlType {
    /// `F32`.
    pub const F32: GgmlType = GgmlType(0);
    /// `F16`.
    pub const F16: GgmlType = GgmlType(1);
    /// `Q4_0`: blocks of 32 = f16 d + 16 bytes of nibbles, `x = (q - 8)·d`.
    pub const Q4_0: GgmlType = GgmlType(2);
    /// `Q4_1`: blocks of 32 = f16 d + f16 m + 16 bytes of nibbles, `x = q·d + m`.
    pub const Q4_1: GgmlType = GgmlType(3);
    /// `Q5_0`: blocks of 32 = f16 d + u32 high bits + 16 bytes, `x = (q - 16)·d`.
    pub const Q5_0: GgmlType = GgmlType(6);
    /// `Q5_1`: blocks of 32 = f16 d + f16 m + u32 high bits + 16 bytes, `x = q·d + m`.
    pub const Q5_1: GgmlType = GgmlType(7);
    /// `Q8_0`: blocks of 32 = f16 d + 32 i8, `x = q·d`.
    pub const Q8_0: GgmlType = GgmlType(8);
    /// `F64`.
    pub const F64: GgmlType = GgmlType(28);
    /// `BF16`.
    pub const BF16: GgmlType = GgmlType(30);

    /// The ggml name of the type (`"Q4_K"` …), or `None` for an id ggml does not define.
    pub fn name(self) -> Option<&'static str> {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        NAMES.get(self.0 as usize).copied()
    }

    /// `(elements per block, bytes per block)` for the types this reader dequantizes.
    pub fn block_layout(self) -> Option<(u64, u64)> {
        Some(match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::F64 => (1, 8),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            _ => return None,
        })
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (type {})", self.0),
            None => write!(f, "unknown type {}", self.0),
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

    fn err(&self, message: String) -> FrontendError {
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

/// Dequantize `n` elements of type `ty` from `bytes`, exactly as ggml / gguf-py do (in `f32`).
///
/// Errors when the type is not supported or `bytes` does not hold exactly `n` elements.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: u64) -> Result<Vec<f32>, String> {
    let (blk, bb) = ty
        .block_layout()
        .ok_or_else(|| format!("cannot dequantize {ty}"))?;
    if !n.is_multiple_of(blk) || (n / blk).checked_mul(bb) != Some(bytes.len() as u64) {
        return Err(format!(
            "{} bytes do not hold {n} elements of {ty} ({bb} bytes per {blk})",
            bytes.len()
        ));
    }
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    let mut out = Vec::with_capacity(n as usize);
    match ty {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(f16)),
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        GgmlType::F64 => out.extend(bytes.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            f64::from_le_bytes(a) as f32
        })),
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(34) {
                let d = f16(&b[0..2]);
                out.extend(b[2..34].iter().map(|&q| (q as i8) as f32 * d));
            }
        }
        GgmlType::Q4_0 => {
            for b in bytes.chunks_exact(18) {
                let d = f16(&b[0..2]);
                let qs = &b[2..18];
                // Low nibbles are elements 0..15, high nibbles 16..31.
                out.extend(qs.iter().map(|&q| ((q & 0xF) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(20) {
                let (d, m) = (f16(&b[0..2]), f16(&b[2..4]));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0xF) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let q51 = ty == GgmlType::Q5_1;
            let step = if q51 { 24 } else { 22 };
            for b in bytes.chunks_exact(step) {
                let d = f16(&b[0..2]);
                let (m, rest) = if q51 {
                    (f16(&b[2..4]), &b[4..])
                } else {
                    (0.0, &b[2..])
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let qs = &rest[4..20];
                // Element j takes the low nibble of qs[j] and bit j of qh as its fifth bit;
                // element j + 16 the high nibble and bit j + 16.
                for upper in 0..2 {
                    for (j, &q) in qs.iter().enumerate() {
                        let lo = if upper == 0 { q & 0xF } else { q >> 4 } as u32;
                        let hi = (qh >> (j + 16 * upper)) & 1;
                        let v = (lo | (hi << 4)) as i32;
                        out.push(if q51 {
                            v as f32 * d + m
                        } else {
                            (v - 16) as f32 * d
                        });
                    }
                }
            }
        }
        _ => return Err(format!("cannot dequantize {ty}")),
    }
    Ok(out)
}

/// Dense `f32` constant from row-major values (little-endian `f32` bytes, no `f64` detour).
fn dense_f32(shape: &[usize], values: &[f32]) -> Constant {
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Constant::new(
        TensorType::fixed(DType::F32, shape),
        Storage::Dense {
            bytes: bytes.into(),
        },
    )
}

/// Transpose a row-major `[rows, cols]` matrix.
fn transpose2(rows: usize, cols: usize, v: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Undo llama.cpp's rope permutation of `attn_q` / `attn_k` rows.
///
/// The HF→GGUF converter reorders the rows of each head of `[heads·dh, in]` so that HF's
/// "rotate half" pairs `(i, i + dh/2)` become adjacent pairs `(2i, 2i + 1)` (llama.cpp's normal
/// rope): `w.reshape(heads, 2, dh/2, in).swapaxes(1, 2)`. The inverse is
/// `w.reshape(heads, dh/2, 2, in).swapaxes(1, 2)`: new row `a·dh/2 + i` of a head is stored row
/// `2i + a`.
pub fn unpermute_rope_rows(w: &[f32], heads: usize, dh: usize, cols: usize) -> Vec<f32> {
    let half = dh / 2;
    let mut out = vec![0.0f32; w.len()];
    for h in 0..heads {
        for a in 0..2 {
            for i in 0..half {
                let dst = (h * dh + a * half + i) * cols;
                let src = (h * dh + 2 * i + a) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// The llama hyper-parameters read from `llama.*` metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaParams {
    /// The decoder shape in the builder's terms.
    pub config: LlamaConfig,
    /// `llama.context_length`.
    pub context_length: u64,
    /// Head dimension (`embedding_length / head_count`).
    pub head_dim: usize,
}

/// Read and check the llama hyper-parameters of a GGUF file.
pub fn llama_params(g: &GgufFile) -> Result<LlamaParams, FrontendError> {
    let arch = g.get_str("general.architecture")?;
    if arch != "llama" {
        return Err(g.err(format!(
            "architecture `{arch}` is not supported (only `llama`)"
        )));
    }
    let u = |k: &str| -> Result<usize, FrontendError> {
        let v = g.get_u64(&format!("llama.{k}"))?;
        usize::try_from(v).map_err(|_| g.err(format!("llama.{k} = {v} is too large")))
    };
    let hidden = u("embedding_length")?;
    let heads = u("attention.head_count")?;
    let kv_heads = match g.get("llama.attention.head_count_kv") {
        Some(_) => u("attention.head_count_kv")?,
        None => heads,
    };
    if heads == 0
        || kv_heads == 0
        || !hidden.is_multiple_of(heads)
        || !heads.is_multiple_of(kv_heads)
    {
        return Err(g.err(format!(
            "llama: embedding_length {hidden}, head_count {heads}, head_count_kv {kv_heads} do not divide"
        )));
    }
    let head_dim = hidden / heads;
    if !head_dim.is_multiple_of(2) {
        return Err(g.err(format!("llama: head dim {head_dim} is odd")));
    }
    if let Some(v) = g.get("llama.rope.dimension_count") {
        let r = v.as_u64();
        if r != Some(head_dim as u64) {
            return Err(g.err(format!(
                "llama.rope.dimension_count = {v:?}, but only full rotary (= head dim {head_dim}) is supported"
            )));
        }
    }
    let vocab = match g.get("llama.vocab_size") {
        Some(_) => u("vocab_size")?,
        None => g.get_array("tokenizer.ggml.tokens")?.len(),
    };
    let rope_theta = match g.get("llama.rope.freq_base") {
        Some(_) => g.get_f64("llama.rope.freq_base")?,
        None => 10000.0,
    };
    Ok(LlamaParams {
        config: LlamaConfig {
            vocab,
            hidden,
            heads,
            kv_heads,
            ffn: u("feed_forward_length")?,
            layers: u("block_count")?,
            rope_theta,
            eps: g.get_f64("llama.attention.layer_norm_rms_epsilon")?,
        },
        context_length: g.get_u64("llama.context_length")?,
        head_dim,
    })
}

/// Load a GGUF llama model into a module with input `input_ids: i64[B,S]` and output
/// `logits: f32[B,S,vocab]`, the same graph as [`crate::builtin::llama`] with the file's weights
/// (dequantized to dense `f32` constants named after the GGUF tensors).
///
/// Q/K rope permutation: llama.cpp's converter permutes the rows of `attn_q` and `attn_k` so that
/// llama.cpp rotates adjacent pairs. This importer *undoes* the permutation
/// ([`unpermute_rope_rows`]) and uses rope style `"half"`, so the IR (and its weights) are the
/// same as those of the Hugging Face checkpoint and of the builder's llama block. (Keeping the
/// stored rows with style `"interleaved"` is equivalent; a test checks both give the same logits.)
pub fn load_gguf(path: impl AsRef<Path>) -> Result<Module, FrontendError> {
    let g = GgufFile::open(path)?;
    llama_module(&g)
}

/// Build the llama module from a parsed GGUF file (see [`load_gguf`]).
pub fn llama_module(g: &GgufFile) -> Result<Module, FrontendError> {
    llama_module_with(g, true)
}

/// Build the module, undoing the Q/K permutation (`unpermute`, rope "half") or keeping the
/// stored rows (rope "interleaved").
pub fn llama_module_with(g: &GgufFile, unpermute: bool) -> Result<Module, FrontendError> {
    let p = llama_params(g)?;
    let cfg = &p.config;
    let (h, dh) = (cfg.hidden, p.head_dim);
    let mut b = ModelBuilder::new(0);
    // A weight, checked against its expected row-major shape.
    let load = |name: &str, want: &[usize]| -> Result<Vec<f32>, FrontendError> {
        let (shape, v) = g.tensor_f32(name)?;
        if shape != want {
            return Err(g.err(format!(
                "tensor `{name}` has shape {shape:?} (row-major), the config implies {want:?}"
            )));
        }
        Ok(v)
    };
    // A projection stored [out, in] by GGUF becomes a constant [in, out] (matmul layout).
    let proj = |b: &mut ModelBuilder,
                name: &str,
                out: usize,
                inp: usize,
                rope_heads: Option<usize>|
     -> Result<ValueId, FrontendError> {
        let mut w = load(name, &[out, inp])?;
        if let (Some(heads), true) = (rope_heads, unpermute) {
            w = unpermute_rope_rows(&w, heads, dh, inp);
        }
        let t = transpose2(out, inp, &w);
        b.add_constant_scoped(name, dense_f32(&[inp, out], &t))
    };
    let vec_w = |b: &mut ModelBuilder, name: &str, n: usize| -> Result<ValueId, FrontendError> {
        let v = load(name, &[n])?;
        b.add_constant_scoped(name, dense_f32(&[n], &v))
    };
    let ids = b.input("input_ids", DType::I64, &["B".into(), "S".into()]);
    let emb_v = load("token_embd.weight", &[cfg.vocab, h])?;
    let embed = b.add_constant_scoped("token_embd.weight", dense_f32(&[cfg.vocab, h], &emb_v))?;
    drop(emb_v);
    let mut x = b.op_json("gather", json!({"axis": 0}), &[embed, ids])?;
    let pos = b.op_json(
        "iota",
        json!({"shape": ["S"], "axis": 0, "dtype": "i64"}),
        &[],
    )?;
    let style = if unpermute { "half" } else { "interleaved" };
    for l in 0..cfg.layers {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        let w = LlamaLayerWeights {
            attn_norm: vec_w(&mut b, &n("attn_norm"), h)?,
            q: proj(&mut b, &n("attn_q"), cfg.heads * dh, h, Some(cfg.heads))?,
            k: proj(
                &mut b,
                &n("attn_k"),
                cfg.kv_heads * dh,
                h,
                Some(cfg.kv_heads),
            )?,
            v: proj(&mut b, &n("attn_v"), cfg.kv_heads * dh, h, None)?,
            o: proj(&mut b, &n("attn_output"), h, cfg.heads * dh, None)?,
            ffn_norm: vec_w(&mut b, &n("ffn_norm"), h)?,
            gate: proj(&mut b, &n("ffn_gate"), cfg.ffn, h, None)?,
            up: proj(&mut b, &n("ffn_up"), cfg.ffn, h, None)?,
            down: proj(&mut b, &n("ffn_down"), h, cfg.ffn, None)?,
            rope_style: style,
        };
        x = b.llama_block_with(&format!("layers.{l}"), x, cfg, pos, &w)?;
    }
    let norm = vec_w(&mut b, "output_norm.weight", h)?;
    let x = b.rms_norm_primitives_with("norm", x, norm, cfg.eps)?;
    let head = if g.tensor_info("output.weight").is_some() {
        proj(&mut b, "output.weight", cfg.vocab, h, None)?
    } else {
        // Tied embeddings: logits = x · embedᵀ.
        b.transpose(embed, &[1, 0])?
    };
    let logits = b.matmul(x, head)?;
    b.output("logits", logits);
    b.finish()
}

/// Build the tokenizer a GGUF file carries (`tokenizer.ggml.*`) as a [`tokenizers::Tokenizer`].
///
/// Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE from `tokens` + `merges`), with
/// pre-tokenizers `default`/`gpt2` (the GPT-2 regex) and `smollm` (every digit split off on its
/// own, then the GPT-2 regex). Tokens of type 3 (control) and 4 (user-defined) become special
/// added tokens, matched whole in the input. No BOS/EOS is added: callers prepend
/// `tokenizer.ggml.bos_token_id` themselves when `tokenizer.ggml.add_bos_token` is true.
pub fn tokenizer(g: &GgufFile) -> Result<tokenizers::Tokenizer, FrontendError> {
    use tokenizers::models::bpe::BPE;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::digits::Digits;
    use tokenizers::pre_tokenizers::sequence::Sequence;
    use tokenizers::{AddedToken, PreTokenizerWrapper};

    let model = g.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(g.err(format!(
            "tokenizer.ggml.model `{model}` is not supported (only `gpt2` byte-level BPE)"
        )));
    }
    let tokens = g.get_array("tokenizer.ggml.tokens")?;
    let merges = g.get_array("tokenizer.ggml.merges")?;
    let types = match g.get("tokenizer.ggml.token_type") {
        Some(_) => Some(g.get_array("tokenizer.ggml.token_type")?),
        None => None,
    };
    if types.is_some_and(|t| t.len() != tokens.len()) {
        return Err(g.err(format!(
            "tokenizer.ggml.token_type has {} entries for {} tokens",
            types.map_or(0, |t| t.len()),
            tokens.len()
        )));
    }
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    let mut special = vec![];
    for (i, t) in tokens.iter().enumerate() {
        let s = t
            .as_str()
            .ok_or_else(|| g.err(format!("tokenizer.ggml.tokens[{i}] is not a string")))?;
        if vocab.insert(s.to_string(), i as u32).is_some() {
            return Err(g.err(format!("tokenizer.ggml.tokens[{i}] `{s}` is a duplicate")));
        }
        if let Some(ty) = types.and_then(|t| t[i].as_u64()) {
            if ty == 3 || ty == 4 {
                special.push(AddedToken::from(s.to_string(), true));
            }
        }
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        let s = m
            .as_str()
            .ok_or_else(|| g.err(format!("tokenizer.ggml.merges[{i}] is not a string")))?;
        let (a, b) = s.split_once(' ').ok_or_else(|| {
            g.err(format!(
                "tokenizer.ggml.merges[{i}] `{s}` is not two tokens separated by a space"
            ))
        })?;
        pairs.push((a.to_string(), b.to_string()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .build()
        .map_err(|e| g.err(format!("building the BPE tokenizer: {e}")))?;
    let pre = g
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tok: PreTokenizerWrapper = match pre {
        "default" | "gpt2" => byte_level.into(),
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        p => {
            return Err(g.err(format!(
                "tokenizer.ggml.pre `{p}` is not supported (default, gpt2, smollm are)"
            )))
        }
    };
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre_tok));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.add_special_tokens(&special);
    Ok(tok)
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
pub(crate) mod tests {
    use super::*;
    use fuselage_ir::{Executor, Reference, Tensor};

    /// A minimal GGUF writer for tests.
    #[derive(Default)]
    pub(crate) struct Writer {
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

    fn h(x: f32) -> [u8; 2] {
        half::f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block() {
        let mut b = h(0.5).to_vec();
        let qs: Vec<i8> = (0..32).map(|i| i as i8 * 4 - 64).collect();
        b.extend(qs.iter().map(|&q| q as u8));
        let v = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        let want: Vec<f32> = qs.iter().map(|&q| q as f32 * 0.5).collect();
        assert_eq!(v, want);
    }

    #[test]
    fn q4_0_block_nibble_order() {
        let mut b = h(0.25).to_vec();
        // Byte j holds element j (low nibble) and element j + 16 (high nibble).
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], (j as f32 - 8.0) * 0.25, "element {j}");
            assert_eq!(
                v[j + 16],
                ((15 - j) as f32 - 8.0) * 0.25,
                "element {}",
                j + 16
            );
        }
    }

    #[test]
    fn q4_1_block() {
        let (d, m) = (0.1f32, -0.75f32);
        let (dq, mq) = (
            half::f16::from_f32(d).to_f32(),
            half::f16::from_f32(m).to_f32(),
        );
        let mut b = h(d).to_vec();
        b.extend(h(m));
        b.extend((0..16u8).map(|j| (j % 16) | (((j * 3) % 16) << 4)));
        let v = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(v[j], (j as f32) * dq + mq);
            assert_eq!(v[j + 16], (((j * 3) % 16) as f32) * dq + mq);
        }
    }

    #[test]
    fn q5_blocks() {
        // Q5_0: qh bit j is the fifth bit of element j.
        let qh: u32 = 0xA5A5_0F0F;
        let mut b = h(2.0).to_vec();
        b.extend(qh.to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q5_0, &b, 32).unwrap();
        for j in 0..32usize {
            let lo = if j < 16 {
                j as u32
            } else {
                15 - (j as u32 - 16)
            };
            let q = lo | (((qh >> j) & 1) << 4);
            assert_eq!(v[j], (q as f32 - 16.0) * 2.0, "element {j}");
        }
        let mut b = h(0.5).to_vec();
        b.extend(h(1.0));
        b.extend(qh.to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let v = dequantize(GgmlType::Q5_1, &b, 32).unwrap();
        for j in 0..32usize {
            let lo = if j < 16 {
                j as u32
            } else {
                15 - (j as u32 - 16)
            };
            let q = lo | (((qh >> j) & 1) << 4);
            assert_eq!(v[j], q as f32 * 0.5 + 1.0, "element {j}");
        }
    }

    #[test]
    fn float_types() {
        let xs = [1.5f32, -2.25, 65504.0, 1e-3];
        let f16b: Vec<u8> = xs.iter().flat_map(|&x| h(x)).collect();
        let v = dequantize(GgmlType::F16, &f16b, 4).unwrap();
        assert_eq!(v[..3], [1.5, -2.25, 65504.0]);
        assert_eq!(v[3], half::f16::from_f32(1e-3).to_f32());
        let bf: Vec<u8> = xs
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        let v = dequantize(GgmlType::BF16, &bf, 4).unwrap();
        assert_eq!(v[..2], [1.5, -2.25]);
        assert_eq!(v[2], half::bf16::from_f32(65504.0).to_f32());
        let f32b: Vec<u8> = xs.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &f32b, 4).unwrap(), xs);
        // Wrong sizes and unsupported types are errors.
        assert!(dequantize(GgmlType::F32, &f32b, 5).is_err());
        assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_err());
        let e = dequantize(GgmlType(12), &[0; 144], 256).unwrap_err();
        assert!(e.contains("Q4_K"), "{e}");
    }

    fn small_file() -> Vec<u8> {
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

    #[test]
    fn unpermute_inverts_the_converter_permutation() {
        // The converter: w.reshape(heads, 2, dh/2, in).swapaxes(1, 2).
        let (heads, dh, cols) = (3, 8, 2);
        let w: Vec<f32> = (0..heads * dh * cols).map(|i| i as f32).collect();
        let mut permuted = vec![0.0; w.len()];
        for hh in 0..heads {
            for a in 0..2 {
                for i in 0..dh / 2 {
                    // permuted[hh][i][a] = w[hh][a][i]
                    let dst = (hh * dh + i * 2 + a) * cols;
                    let src = (hh * dh + a * dh / 2 + i) * cols;
                    permuted[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
                }
            }
        }
        assert_ne!(permuted, w);
        assert_eq!(unpermute_rope_rows(&permuted, heads, dh, cols), w);
    }

    /// A tiny llama GGUF with random F32 weights (q/k rows as the converter stores them).
    fn tiny_llama(tied: bool) -> Vec<u8> {
        let (vocab, hd, heads, kv, ffn, layers) = (11usize, 16usize, 4usize, 2usize, 24usize, 2);
        let dh = hd / heads;
        let mut w = Writer::new();
        w.str("general.architecture", "llama");
        w.u32("llama.context_length", 64);
        w.u32("llama.embedding_length", hd as u32);
        w.u32("llama.block_count", layers as u32);
        w.u32("llama.feed_forward_length", ffn as u32);
        w.u32("llama.attention.head_count", heads as u32);
        w.u32("llama.attention.head_count_kv", kv as u32);
        w.u32("llama.rope.dimension_count", dh as u32);
        w.f32("llama.rope.freq_base", 10000.0);
        w.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
        let toks: Vec<String> = (0..vocab).map(|i| format!("t{i}")).collect();
        let toks: Vec<&str> = toks.iter().map(|s| s.as_str()).collect();
        w.strs("tokenizer.ggml.tokens", &toks);
        let mut seed = 1u64;
        let mut rnd = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
                })
                .collect()
        };
        w.tensor_f32(
            "token_embd.weight",
            &[hd as u64, vocab as u64],
            &rnd(vocab * hd, 2.0),
        );
        for l in 0..layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let ones: Vec<f32> = rnd(hd, 0.2).iter().map(|x| 1.0 + x).collect();
            w.tensor_f32(&n("attn_norm"), &[hd as u64], &ones);
            w.tensor_f32(&n("ffn_norm"), &[hd as u64], &ones);
            for (nm, out, inp) in [
                ("attn_q", heads * dh, hd),
                ("attn_k", kv * dh, hd),
                ("attn_v", kv * dh, hd),
                ("attn_output", hd, heads * dh),
                ("ffn_gate", ffn, hd),
                ("ffn_up", ffn, hd),
                ("ffn_down", hd, ffn),
            ] {
                w.tensor_f32(&n(nm), &[inp as u64, out as u64], &rnd(out * inp, 0.8));
            }
        }
        w.tensor_f32("output_norm.weight", &[hd as u64], &vec![1.0; hd]);
        if !tied {
            w.tensor_f32(
                "output.weight",
                &[hd as u64, vocab as u64],
                &rnd(vocab * hd, 1.0),
            );
        }
        w.bytes()
    }

    fn run_logits(m: &Module, ids: &[i64]) -> Tensor {
        let x = Tensor::new(
            DType::I64,
            vec![1, ids.len()],
            ids.iter().map(|&i| i as f64).collect(),
        )
        .unwrap();
        Reference.run(m, "main", &[x]).unwrap().remove(0)
    }

    #[test]
    fn llama_rope_routes_agree() {
        for tied in [true, false] {
            let g = GgufFile::from_bytes("tiny.gguf", tiny_llama(tied)).unwrap();
            let p = llama_params(&g).unwrap();
            assert_eq!(p.config.vocab, 11);
            assert_eq!((p.config.heads, p.config.kv_heads, p.head_dim), (4, 2, 4));
            let half = llama_module_with(&g, true).unwrap();
            let inter = llama_module_with(&g, false).unwrap();
            let ids = [3, 1, 4, 1, 5, 9, 2, 6];
            let (a, b) = (run_logits(&half, &ids), run_logits(&inter, &ids));
            assert_eq!(a.shape(), &[1, 8, 11]);
            let d = a
                .data()
                .iter()
                .zip(b.data())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(d < 1e-4, "half vs interleaved rope differ by {d}");
            // Positions matter: a rotated sequence changes later logits.
            let c = run_logits(&half, &[1, 3, 4, 1, 5, 9, 2, 6]);
            assert_ne!(a.data()[11 * 7..], c.data()[11 * 7..]);
        }
    }

    #[test]
    fn llama_config_disagreeing_with_weights_is_an_error() {
        let mut b = tiny_llama(true);
        // Find "llama.feed_forward_length" and change its value 24 → 25.
        let key = b"llama.feed_forward_length";
        let i = b.windows(key.len()).position(|w| w == key).unwrap() + key.len() + 4;
        b[i..i + 4].copy_from_slice(&25u32.to_le_bytes());
        let g = GgufFile::from_bytes("cfg.gguf", b).unwrap();
        let e = llama_module(&g).unwrap_err().to_string();
        assert!(
            e.contains("cfg.gguf") && e.contains("blk.0.ffn_gate.weight"),
            "{e}"
        );
        let g = GgufFile::from_bytes("small.gguf", small_file()).unwrap();
        let e = llama_module(&g).unwrap_err().to_string();
        assert!(e.contains("architecture `test`"), "{e}");
    }
}
