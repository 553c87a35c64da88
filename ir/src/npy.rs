//! `.npy` reading and writing for tensors.
//!
//! Written here rather than with `npyz` because the IR picks the element type at run time from
//! the file (one `match` over numpy's type strings), needs exact checks of the declared size
//! against the file length with errors naming the file, and must write through a temporary file
//! that is renamed into place. The format is small (a magic string, a Python-dict header, raw
//! little-endian data).

use crate::{DType, Tensor};
use std::path::Path;

/// Errors reading or writing `.npy`.
#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    /// I/O failure.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Malformed or unsupported content.
    #[error("{path}: {message}")]
    Format {
        /// File.
        path: String,
        /// What was expected and found.
        message: String,
    },
}

fn descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F64 => "<f8",
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        _ => return None,
    })
}

fn dtype_of(descr: &str) -> Option<DType> {
    Some(match descr {
        "<f8" => DType::F64,
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "|i1" | "<i1" => DType::I8,
        "|u1" | "<u1" => DType::U8,
        "|b1" | "<b1" => DType::Bool,
        _ => return None,
    })
}

/// Parse `.npy` bytes.
pub fn parse_npy(bytes: &[u8], path: &str) -> Result<Tensor, NpyError> {
    let fmt = |message: String| NpyError::Format {
        path: path.to_string(),
        message,
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(fmt("not an .npy file (missing \\x93NUMPY magic)".into()));
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(fmt("truncated header".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(fmt(format!("unsupported .npy version {v}"))),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            fmt(format!(
                "header of {hlen} bytes runs past the end of the file"
            ))
        })?;
    let header =
        std::str::from_utf8(&bytes[start..end]).map_err(|_| fmt("header is not UTF-8".into()))?;
    let field = |key: &str| -> Option<&str> {
        let k = header.find(&format!("'{key}'"))?;
        let rest = &header[k + key.len() + 2..];
        let c = rest.find(':')?;
        Some(rest[c + 1..].trim_start())
    };
    let d = field("descr").ok_or_else(|| fmt("header has no 'descr'".into()))?;
    let d = d
        .strip_prefix('\'')
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| fmt(format!("cannot read descr in header {header}")))?;
    let dtype = dtype_of(d).ok_or_else(|| {
        fmt(format!(
            "element type `{d}` is not supported (supported: <f8 <f4 <f2 <i8 <i4 |i1 |u1 |b1)"
        ))
    })?;
    let fo = field("fortran_order").ok_or_else(|| fmt("header has no 'fortran_order'".into()))?;
    if fo.starts_with("True") {
        return Err(fmt(
            "Fortran-ordered arrays are not supported (save with C order)".into(),
        ));
    }
    let sh = field("shape").ok_or_else(|| fmt("header has no 'shape'".into()))?;
    let sh = sh
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| fmt(format!("cannot read shape in header {header}")))?;
    let mut shape = vec![];
    for p in sh.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(
            p.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| fmt(format!("bad shape entry `{p}`")))?,
        );
    }
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| fmt(format!("shape {shape:?} overflows")))?;
    let need = n
        .checked_mul(dtype.bits() / 8)
        .ok_or_else(|| fmt(format!("shape {shape:?} overflows")))?;
    let data = &bytes[end..];
    if data.len() != need {
        return Err(fmt(format!(
            "{d}{shape:?} needs {need} data bytes, file has {}",
            data.len()
        )));
    }
    Tensor::from_bytes(dtype, shape, data).map_err(|e| fmt(e.to_string()))
}

/// Read a tensor from a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor, NpyError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: p.clone(),
        source,
    })?;
    parse_npy(&bytes, &p)
}

/// Encode a tensor as `.npy` bytes (types numpy cannot hold are an error).
pub fn encode_npy(t: &Tensor, path: &str) -> Result<Vec<u8>, NpyError> {
    let d = descr(t.dtype()).ok_or_else(|| NpyError::Format {
        path: path.to_string(),
        message: format!(
            "numpy cannot hold {}; cast the output to f32 first (e.g. a `cast` op)",
            t.dtype()
        ),
    })?;
    let shape = match t.shape().len() {
        0 => "()".to_string(),
        1 => format!("({},)", t.shape()[0]),
        _ => format!(
            "({})",
            t.shape()
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {shape}, }}");
    // Pad so that the data starts at a multiple of 64 bytes, header ends with '\n'.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.numel() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_bytes());
    Ok(out)
}

/// Write bytes to `path` through a temporary file in the same folder, renamed into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "out".into());
    let tmp = match dir {
        Some(d) => d.join(format!(".{name}.tmp{}", std::process::id())),
        None => std::path::PathBuf::from(format!(".{name}.tmp{}", std::process::id())),
    };
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Write a tensor to a `.npy` file atomically.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    let p = path.display().to_string();
    let bytes = encode_npy(t, &p)?;
    write_atomic(path, &bytes).map_err(|source| NpyError::Io { path: p, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_numpy_dtype() {
        for d in [
            DType::F64,
            DType::F32,
            DType::F16,
            DType::I64,
            DType::I32,
            DType::I8,
            DType::U8,
            DType::Bool,
        ] {
            let t = Tensor::new(d, vec![2, 3], vec![0.0, 1.0, 1.0, 0.0, 1.0, 1.0]).unwrap();
            let b = encode_npy(&t, "x.npy").unwrap();
            assert_eq!((b.len() - t.to_bytes().len()) % 64, 0);
            assert_eq!(parse_npy(&b, "x.npy").unwrap(), t, "{d}");
        }
        let s = Tensor::scalar(DType::F32, 2.5);
        assert_eq!(parse_npy(&encode_npy(&s, "s").unwrap(), "s").unwrap(), s);
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        let t = Tensor::new(DType::F32, vec![4], vec![1.0; 4]).unwrap();
        let b = encode_npy(&t, "x").unwrap();
        for cut in [0, 5, 9, 20, b.len() - 1] {
            let e = parse_npy(&b[..cut], "x.npy").unwrap_err().to_string();
            assert!(e.starts_with("x.npy:"), "{e}");
        }
        assert!(encode_npy(&Tensor::scalar(DType::BF16, 1.0), "y").is_err());
    }
}
