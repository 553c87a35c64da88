//! Constant storage shared by reference.
//!
//! A [`Module`](crate::Module) keeps its weights in a pool of `Arc<Constant>`, so cloning a module
//! (which the pass manager does to compare before and after a pass) never copies weight bytes.
//! Storage is either dense bytes in the dtype's own encoding, or a *seeded* description
//! (`seed` + distribution) that is materialized on first use — built-in models and benchmark
//! graphs stay small in text form, and a 24-layer graph need not allocate its weights at all
//! unless it is executed. A third kind, *file* storage, refers to a byte range of a weights file
//! on disk (a safetensors file, say) that is memory-mapped on first use: importing a model copies
//! no weight bytes, and a module printed to text or JSON still refers to the file instead of
//! embedding its contents (`{"kind":"file","path":"/m/model.safetensors","offset":0,"len":16}`).
//! Every constant of one file shares one mapping (a process-wide cache keyed by the canonical
//! path, see [`map_file`]).

use crate::dtype::DType;
use crate::error::IrError;
use crate::tensor::{decode_values, encode_values, Tensor};
use crate::types::TensorType;
use memmap2::Mmap;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// How seeded values are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum Init {
    /// Normal distribution (Box–Muller over ChaCha8).
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// Uniform on `[low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Every element the same value.
    Full {
        /// The value.
        value: f64,
    },
}

/// Where a constant's values come from.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Storage {
    /// Little-endian bytes in the dtype's encoding (hex in text and JSON).
    Dense {
        /// The bytes.
        #[serde(with = "hex_bytes")]
        bytes: Arc<[u8]>,
    },
    /// Values drawn from a seeded generator, materialized on first use.
    Seeded {
        /// Generator seed.
        seed: u64,
        /// Distribution.
        #[serde(flatten)]
        init: Init,
    },
    /// `len` bytes at `offset` of a file, in the dtype's little-endian encoding, memory-mapped on
    /// first use (zero-copy). A relative path is taken relative to the working directory.
    File {
        /// The file (importers store an absolute, canonical path).
        path: PathBuf,
        /// Byte offset of the first element.
        offset: u64,
        /// Number of bytes.
        len: u64,
        /// The mapping, once made (shared by clones; not serialized).
        #[serde(skip)]
        map: FileMap,
    },
}

impl Storage {
    /// File storage for `len` bytes at `offset` of `path`; the file is mapped on first use.
    pub fn file(path: impl Into<PathBuf>, offset: u64, len: u64) -> Self {
        Storage::File {
            path: path.into(),
            offset,
            len,
            map: FileMap::default(),
        }
    }

    /// File storage over an existing mapping of `path` (as returned by [`map_file`]), checking
    /// that the range lies within it.
    pub fn file_mapped(
        path: impl Into<PathBuf>,
        map: Arc<Mmap>,
        offset: u64,
        len: u64,
    ) -> Result<Self, IrError> {
        let path = path.into();
        check_range(&path, map.len(), offset, len).map_err(|message| IrError::Constant {
            name: path.display().to_string(),
            message,
        })?;
        let handle = FileMap::default();
        let _ = handle.0.set(map);
        Ok(Storage::File {
            path,
            offset,
            len,
            map: handle,
        })
    }
}

/// The lazily made memory map of a [`Storage::File`], shared by clones of the storage.
#[derive(Clone, Default)]
pub struct FileMap(Arc<OnceLock<Arc<Mmap>>>);

impl std::fmt::Debug for FileMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.get() {
            Some(m) => write!(f, "FileMap(mapped, {} bytes)", m.len()),
            None => write!(f, "FileMap(not mapped)"),
        }
    }
}

fn check_range(path: &Path, file_len: usize, offset: u64, len: u64) -> Result<(), String> {
    match offset.checked_add(len) {
        Some(end) if end <= file_len as u64 => Ok(()),
        _ => Err(format!(
            "bytes {offset}..{} lie past the end of {} ({file_len} bytes)",
            offset as u128 + len as u128,
            path.display()
        )),
    }
}

/// Map a file read-only, sharing one mapping per canonical path across the process (the cache
/// holds weak references: a mapping lives as long as some constant or importer holds it).
///
/// The mapping assumes the file is not truncated or rewritten while mapped (as every weights
/// loader that maps files does); fuselage only ever reads it.
pub fn map_file(path: &Path) -> Result<Arc<Mmap>, std::io::Error> {
    type Stamp = (u64, Option<std::time::SystemTime>);
    type Cache = Mutex<HashMap<PathBuf, (Weak<Mmap>, Stamp)>>;
    static MAPS: OnceLock<Cache> = OnceLock::new();
    let key = std::fs::canonicalize(path)?;
    let file = std::fs::File::open(&key)?;
    let meta = file.metadata()?;
    // A file replaced since it was mapped (other length or time) gets a fresh mapping.
    let stamp: Stamp = (meta.len(), meta.modified().ok());
    let maps = MAPS.get_or_init(Default::default);
    let mut maps = maps.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((w, st)) = maps.get(&key) {
        if *st == stamp {
            if let Some(m) = w.upgrade() {
                return Ok(m);
            }
        }
    }
    // SAFETY: the map is read-only and fuselage never writes the file; like every loader of
    // mapped weights we rely on the file not being truncated while it is mapped.
    let map = Arc::new(unsafe { Mmap::map(&file)? });
    maps.retain(|_, (w, _)| w.strong_count() > 0);
    maps.insert(key, (Arc::downgrade(&map), stamp));
    Ok(map)
}

impl PartialEq for Storage {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Storage::Dense { bytes: a }, Storage::Dense { bytes: b }) => {
                Arc::ptr_eq(a, b) || a[..] == b[..]
            }
            (Storage::Seeded { seed: a, init: i }, Storage::Seeded { seed: b, init: j }) => {
                a == b && i == j
            }
            (
                Storage::File {
                    path: p,
                    offset: o,
                    len: l,
                    ..
                },
                Storage::File {
                    path: q,
                    offset: r,
                    len: m,
                    ..
                },
            ) => p == q && o == r && l == m,
            _ => false,
        }
    }
}

/// A constant tensor: its type, its storage, and a cache of its materialized values.
#[derive(Debug, Serialize, Deserialize)]
pub struct Constant {
    /// Type (all dims fixed).
    pub ty: TensorType,
    /// Values.
    pub storage: Storage,
    #[serde(skip)]
    cache: OnceLock<Arc<Tensor>>,
}

impl Clone for Constant {
    fn clone(&self) -> Self {
        Constant {
            ty: self.ty.clone(),
            storage: self.storage.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl PartialEq for Constant {
    fn eq(&self, other: &Self) -> bool {
        self.ty == other.ty && self.storage == other.storage
    }
}

impl Constant {
    /// A dense constant from a tensor.
    pub fn from_tensor(t: &Tensor) -> Self {
        let ty = TensorType::fixed(t.dtype(), t.shape());
        Constant {
            ty,
            storage: Storage::Dense {
                bytes: encode_values(t.dtype(), t.data()).into(),
            },
            cache: OnceLock::new(),
        }
    }

    /// A seeded constant.
    pub fn seeded(ty: TensorType, seed: u64, init: Init) -> Self {
        Constant {
            ty,
            storage: Storage::Seeded { seed, init },
            cache: OnceLock::new(),
        }
    }

    /// A constant with given type and storage (checked by [`Constant::check`]).
    pub fn new(ty: TensorType, storage: Storage) -> Self {
        Constant {
            ty,
            storage,
            cache: OnceLock::new(),
        }
    }

    /// Bytes this constant occupies in its dtype's encoding.
    pub fn storage_bytes(&self) -> u64 {
        let n = self.ty.num_elements().unwrap_or(0);
        (n * self.ty.dtype.bits() as u64).div_ceil(8)
    }

    /// Whether the values are already materialized (or stored densely).
    pub fn is_materialized(&self) -> bool {
        // File storage counts as not materialized until decoded: its bytes are on disk.
        matches!(self.storage, Storage::Dense { .. }) || self.cache.get().is_some()
    }

    /// Check that the storage fits the type.
    pub fn check(&self, name: &str) -> Result<(), IrError> {
        let err = |message: String| IrError::Constant {
            name: name.to_string(),
            message,
        };
        let n = self.ty.num_elements().ok_or_else(|| {
            err(format!(
                "type {} must have fixed dims that fit u64",
                self.ty
            ))
        })?;
        let need = (n as u128 * self.ty.dtype.bits() as u128).div_ceil(8);
        // The f64 reference holds 8 bytes per element once the constant is materialized.
        crate::limits::check_budget(&format!("constant of type {}", self.ty), n as u128, 8)
            .map_err(err)?;
        let have = match &self.storage {
            Storage::Dense { bytes } => bytes.len() as u128,
            Storage::File { len, .. } => *len as u128,
            Storage::Seeded { .. } => return Ok(()),
        };
        if have != need {
            return Err(err(format!(
                "{} needs {need} bytes, storage has {have}",
                self.ty
            )));
        }
        Ok(())
    }

    /// The values, materialized once and cached.
    pub fn value(&self, name: &str) -> Result<Arc<Tensor>, IrError> {
        if let Some(t) = self.cache.get() {
            return Ok(t.clone());
        }
        let t = Arc::new(self.materialize(name)?);
        let _ = self.cache.set(t.clone());
        Ok(self.cache.get().cloned().unwrap_or(t))
    }

    /// The values as f32 — exactly `value()?.to_f32_vec()` — without materializing (and
    /// caching) the f64 tensor: f32 constants are decoded straight from their bytes or mapping.
    /// Lowered f32 programs upload constants through this, so a model's weights are not also
    /// held as f64 for the rest of the process (1 GB for a 135M-parameter model).
    pub fn to_f32_vec(&self, name: &str) -> Result<Vec<f32>, IrError> {
        if let Some(t) = self.cache.get() {
            return Ok(t.to_f32_vec());
        }
        if self.ty.dtype == DType::F32 {
            self.check(name)?;
            let f32s = |b: &[u8]| {
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect::<Vec<f32>>()
            };
            match &self.storage {
                Storage::Dense { bytes } => return Ok(f32s(bytes)),
                Storage::File { .. } => {
                    let (m, start, end) = self.mapped_range(name)?;
                    return Ok(f32s(&m[start..end]));
                }
                Storage::Seeded { .. } => {}
            }
        }
        // 16-bit floats (weights of bf16/f16 programs) decode exactly to f32: decode the bytes
        // in chunks, so no f64 copy of the whole constant is made.
        if matches!(self.ty.dtype, DType::BF16 | DType::F16) {
            self.check(name)?;
            let decode = |b: &[u8]| -> Result<Vec<f32>, IrError> {
                let mut out = Vec::with_capacity(b.len() / 2);
                for c in b.chunks(1 << 16) {
                    let v = decode_values(self.ty.dtype, c.len() / 2, c)?;
                    out.extend(v.into_iter().map(|x| x as f32));
                }
                Ok(out)
            };
            match &self.storage {
                Storage::Dense { bytes } => return decode(bytes),
                Storage::File { .. } => {
                    let (m, start, end) = self.mapped_range(name)?;
                    return decode(&m[start..end]);
                }
                Storage::Seeded { .. } => {}
            }
        }
        Ok(self.materialize(name)?.to_f32_vec())
    }

    /// The mapping of a file-stored constant and its byte range in it (checked).
    fn mapped_range(&self, name: &str) -> Result<(Arc<Mmap>, usize, usize), IrError> {
        let Storage::File {
            path,
            offset,
            len,
            map,
        } = &self.storage
        else {
            return Err(IrError::Constant {
                name: name.to_string(),
                message: "not stored in a file".into(),
            });
        };
        let err = |message: String| IrError::Constant {
            name: name.to_string(),
            message,
        };
        let m = match map.0.get() {
            Some(m) => m.clone(),
            None => {
                let m =
                    map_file(path).map_err(|e| err(format!("mapping {}: {e}", path.display())))?;
                map.0.get_or_init(|| m).clone()
            }
        };
        check_range(path, m.len(), *offset, *len).map_err(err)?;
        // In range of the mapping, so both fit usize.
        Ok((m, *offset as usize, (*offset + *len) as usize))
    }

    /// Decode the values (not cached).
    fn materialize(&self, name: &str) -> Result<Tensor, IrError> {
        self.check(name)?;
        let shape = self.ty.fixed_shape().ok_or_else(|| IrError::Constant {
            name: name.to_string(),
            message: "symbolic dims in a constant".into(),
        })?;
        let n: usize = shape.iter().product();
        let dtype = self.ty.dtype;
        let t = match &self.storage {
            Storage::Dense { bytes } => {
                let data = decode_values(dtype, n, bytes)?;
                Tensor::new(dtype, shape, data)?
            }
            Storage::Seeded { seed, init } => {
                Tensor::new(dtype, shape, seeded_values(*seed, init, n))?
            }
            Storage::File { .. } => {
                let (m, start, end) = self.mapped_range(name)?;
                let data = decode_values(dtype, n, &m[start..end])?;
                Tensor::new(dtype, shape, data)?
            }
        };
        Ok(t)
    }
}

/// Draw `n` values deterministically.
pub fn seeded_values(seed: u64, init: &Init, n: usize) -> Vec<f64> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    match *init {
        Init::Full { value } => vec![value; n],
        Init::Uniform { low, high } => (0..n)
            .map(|_| low + (high - low) * rng.gen::<f64>())
            .collect(),
        Init::Normal { mean, std } => {
            let mut out = Vec::with_capacity(n);
            while out.len() < n {
                // Box–Muller; u1 in (0, 1] so ln is finite.
                let u1 = 1.0 - rng.gen::<f64>();
                let u2 = rng.gen::<f64>();
                let r = (-2.0 * u1.ln()).sqrt();
                let th = 2.0 * std::f64::consts::PI * u2;
                out.push(mean + std * r * th.cos());
                if out.len() < n {
                    out.push(mean + std * r * th.sin());
                }
            }
            out
        }
    }
}

/// Convenience: the dtype of a constant.
impl Constant {
    /// Element type.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(b: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&to_hex(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        let s = String::deserialize(d)?;
        from_hex(&s)
            .map(Into::into)
            .map_err(serde::de::Error::custom)
    }

    pub fn to_hex(b: &[u8]) -> String {
        const H: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(b.len() * 2);
        for &x in b {
            s.push(H[(x >> 4) as usize] as char);
            s.push(H[(x & 15) as usize] as char);
        }
        s
    }

    pub fn from_hex(s: &str) -> Result<Vec<u8>, String> {
        if !s.len().is_multiple_of(2) {
            return Err(format!("hex string has odd length {}", s.len()));
        }
        let v = |c: u8| -> Result<u8, String> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(format!("bad hex digit `{}`", c as char)),
            }
        };
        s.as_bytes()
            .chunks(2)
            .map(|p| Ok(v(p[0])? << 4 | v(p[1])?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_deterministic_and_lazy() {
        let ty = TensorType::fixed(DType::F32, &[4, 5]);
        let c = Constant::seeded(
            ty.clone(),
            7,
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
        );
        assert!(!c.is_materialized());
        let a = c.value("w").unwrap();
        assert!(c.is_materialized());
        let d = Constant::seeded(
            ty,
            7,
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
        );
        assert_eq!(*a, *d.value("w").unwrap());
        let mean = a.data().iter().sum::<f64>() / 20.0;
        assert!(mean.abs() < 1.0);
    }

    #[test]
    fn f32_values_without_the_f64_cache_match_value() {
        let dir = std::env::temp_dir().join(format!("fuselage-const-f32-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vals = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.4e38, -7.25, 1e-45];
        let mut bytes = vec![9u8, 9]; // an offset into the file
        for v in vals {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let path = dir.join("w.bin");
        std::fs::write(&path, &bytes).unwrap();
        let ty = TensorType::fixed(DType::F32, &[2, 3]);
        let dense = Constant::new(
            ty.clone(),
            Storage::Dense {
                bytes: bytes[2..].to_vec().into(),
            },
        );
        let file = Constant::new(ty.clone(), Storage::file(&path, 2, 24));
        let seeded = Constant::seeded(
            ty,
            3,
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
        );
        let f16 =
            Constant::from_tensor(&Tensor::new(DType::F16, vec![2], vec![0.5, -65504.0]).unwrap());
        for c in [&dense, &file, &seeded, &f16] {
            let direct = c.to_f32_vec("w").unwrap();
            // Decoding directly does not fill the f64 cache (seeded and f16 go through it
            // uncached too).
            assert!(c.cache.get().is_none());
            let via_value = c.value("w").unwrap().to_f32_vec();
            assert_eq!(
                direct.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                via_value.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            assert_eq!(c.to_f32_vec("w").unwrap(), via_value);
        }
        assert_eq!(dense.to_f32_vec("w").unwrap(), vals.to_vec());
        let short = Constant::new(
            TensorType::fixed(DType::F32, &[3]),
            Storage::Dense {
                bytes: vec![0u8; 11].into(),
            },
        );
        assert!(short
            .to_f32_vec("w")
            .unwrap_err()
            .to_string()
            .contains("needs 12 bytes"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dense_checks_size() {
        let c = Constant::new(
            TensorType::fixed(DType::F32, &[3]),
            Storage::Dense {
                bytes: vec![0u8; 11].into(),
            },
        );
        let e = c.value("w").unwrap_err().to_string();
        assert!(e.contains("needs 12 bytes"), "{e}");
    }

    #[test]
    fn file_storage_maps_decodes_and_checks_bounds() {
        let dir = std::env::temp_dir().join(format!("fuselage-const-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.bin");
        let mut bytes = vec![0xAAu8; 4];
        for v in [1.5f32, -2.0, 3.25] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let ty = TensorType::fixed(DType::F32, &[3]);
        let c = Constant::new(ty.clone(), Storage::file(&path, 4, 12));
        assert!(!c.is_materialized());
        assert_eq!(c.value("w").unwrap().data(), &[1.5, -2.0, 3.25]);
        // A clone shares the mapping; equality ignores it.
        let d = Constant::new(ty.clone(), Storage::file(&path, 4, 12));
        assert_eq!(c, d);
        let j = serde_json::to_string(&d.storage).unwrap();
        assert!(j.starts_with(r#"{"kind":"file","path":"#), "{j}");
        let back: Storage = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d.storage);
        // Past the end of the file.
        let e = Constant::new(ty.clone(), Storage::file(&path, 8, 12))
            .value("w")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bytes 8..20 lie past the end of") && e.contains("16 bytes"),
            "{e}"
        );
        // Offset overflow.
        let e = Constant::new(ty.clone(), Storage::file(&path, u64::MAX, 12))
            .value("w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("lie past the end"), "{e}");
        // Length disagreeing with the type.
        let e = Constant::new(ty.clone(), Storage::file(&path, 0, 8))
            .value("w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 12 bytes, storage has 8"), "{e}");
        // A missing file names the file.
        let e = Constant::new(ty, Storage::file(dir.join("nope.bin"), 0, 12))
            .value("w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.bin"), "{e}");
        // One mapping per file.
        let a = map_file(&path).unwrap();
        let b = map_file(&dir.join(".").join("w.bin")).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Storage::file_mapped(&path, a.clone(), 10, 7).is_err());
        let s = Storage::file_mapped(&path, a, 4, 12).unwrap();
        let c = Constant::new(TensorType::fixed(DType::F32, &[3]), s);
        assert_eq!(c.value("w").unwrap().data(), &[1.5, -2.0, 3.25]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn json_round_trip() {
        let t = Tensor::new(DType::F16, vec![3], vec![1.0, -2.5, 0.1]).unwrap();
        let c = Constant::from_tensor(&t);
        let j = serde_json::to_string(&c).unwrap();
        let back: Constant = serde_json::from_str(&j).unwrap();
        assert_eq!(back, c);
        assert_eq!(*back.value("c").unwrap(), t);
    }
}
