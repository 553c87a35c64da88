//! `.npy` reading and writing for tensors.
//!
//! Written here rather than with `npyz` because the IR picks the element type at run time from
//! the file (one `match` over numpy's type strings), needs exact checks of the declared size
//! against the file length with errors naming the file, and must write through a temporary file
//! that is renamed into place. The format is small (a magic string, a Python-dict header, raw
//! little-endian data).
//!
//! Element types: numpy's own `<f8 <f4 <f2 <i8 <i4 <i2 |i1 <u8 <u4 <u2 |u1 |b1` (one-byte types
//! also as `<`), and the raw-bits encodings that ml_dtypes' types are saved with: bf16 is read
//! and written as `'<V2'` (the bf16 bits, as `np.save` writes an `ml_dtypes.bfloat16` array), and
//! the FP8 types are written as `'|V1'` (their bits). A one-byte void (`|V1` / `<V1`) is not
//! read: ml_dtypes saves every 8-bit float, `int4` and `float4_e2m1fn` under it, so the file
//! does not say which one it holds.

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

/// The descr a dtype is written with (`None`: sub-byte types, which numpy cannot hold).
fn descr(d: DType) -> Option<&'static str> {
    Some(match d {
        DType::F64 => "<f8",
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::BF16 => "<V2",
        DType::F8E4M3FN | DType::F8E5M2 => "|V1",
        DType::I64 => "<i8",
        DType::I32 => "<i4",
        DType::I16 => "<i2",
        DType::I8 => "|i1",
        DType::U64 => "<u8",
        DType::U32 => "<u4",
        DType::U16 => "<u2",
        DType::U8 => "|u1",
        DType::Bool => "|b1",
        DType::F4E2M1 | DType::I4 => return None,
    })
}

/// The descrs [`parse_npy`] reads, for error messages.
const READABLE: &str = "<f8 <f4 <f2 <V2 (bf16) <i8 <i4 <i2 |i1 <u8 <u4 <u2 |u1 |b1";

fn dtype_of(descr: &str) -> Result<DType, String> {
    Ok(match descr {
        "<f8" => DType::F64,
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        // ml_dtypes' bfloat16: the raw bits, little-endian.
        "<V2" => DType::BF16,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "<i2" => DType::I16,
        "|i1" | "<i1" => DType::I8,
        "<u8" => DType::U64,
        "<u4" => DType::U32,
        "<u2" => DType::U16,
        "|u1" | "<u1" => DType::U8,
        "|b1" | "<b1" => DType::Bool,
        "|V1" | "<V1" => {
            return Err(format!(
                "element type `{descr}` (one raw byte) is ambiguous: numpy/ml_dtypes save every \
                 8-bit float (f8e4m3fn, ...), int4 and float4 under it, so the file does not say \
                 which one it holds; save the values as float32 (or their bits as uint8) instead"
            ))
        }
        _ => {
            return Err(format!(
                "element type `{descr}` is not supported (supported: {READABLE})"
            ))
        }
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
    let dtype = dtype_of(d).map_err(fmt)?;
    let fo = field("fortran_order").ok_or_else(|| fmt("header has no 'fortran_order'".into()))?;
    let fortran = fo.starts_with("True");
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
    if fortran && shape.len() > 1 {
        // Column-major data is the row-major data of the reversed shape, transposed back.
        let rev: Vec<usize> = shape.iter().rev().copied().collect();
        let t = Tensor::from_bytes(dtype, rev.clone(), data).map_err(|e| fmt(e.to_string()))?;
        let rs = crate::tensor::strides_of(&rev);
        let r = shape.len();
        let out = Tensor::from_fn(dtype, shape, |idx| {
            let off: usize = (0..r).map(|k| idx[k] * rs[r - 1 - k]).sum();
            t.data()[off]
        });
        return Ok(out);
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

/// Encode a tensor as `.npy` bytes (sub-byte types, which numpy cannot hold, are an error). bf16
/// is written as `'<V2'` and the FP8 types as `'|V1'`, holding the raw bits.
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

    /// numpy saves a transposed view column-major (`fortran_order: True`); it reads back in C
    /// order.
    #[test]
    fn fortran_order_reads_in_c_order() {
        let header = "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        // [[0, 1, 2], [3, 4, 5]] stored column by column.
        for v in [0i32, 3, 1, 4, 2, 5] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let t = parse_npy(&b, "f.npy").unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.data(), &[0., 1., 2., 3., 4., 5.]);
    }

    #[test]
    fn round_trip_every_numpy_dtype() {
        for d in [
            DType::F64,
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I64,
            DType::I32,
            DType::I16,
            DType::I8,
            DType::U64,
            DType::U32,
            DType::U16,
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
        for d in [DType::I4, DType::F4E2M1] {
            let e = encode_npy(&Tensor::scalar(d, 1.0), "y")
                .unwrap_err()
                .to_string();
            assert!(e.contains("numpy cannot hold"), "{e}");
        }
    }

    /// The header numpy writes for `descr` and a shape text, with our payload.
    fn header_of(bytes: &[u8]) -> &str {
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        std::str::from_utf8(&bytes[10..10 + hlen]).unwrap()
    }

    #[test]
    fn new_integer_descrs_round_trip_with_edge_values() {
        let cases: [(DType, &str, Vec<f64>); 4] = [
            (DType::I16, "'<i2'", vec![-32768.0, -1.0, 0.0, 32767.0]),
            (DType::U16, "'<u2'", vec![0.0, 1.0, 258.0, 65535.0]),
            (
                DType::U32,
                "'<u4'",
                vec![0.0, 70000.0, 4294967294.0, 4294967295.0],
            ),
            (
                DType::U64,
                "'<u8'",
                vec![0.0, 1.0, 12345678901.0, (1u64 << 53) as f64],
            ),
        ];
        for (d, descr, vals) in cases {
            let t = Tensor::new(d, vec![2, 2], vals).unwrap();
            let b = encode_npy(&t, "x.npy").unwrap();
            assert!(header_of(&b).contains(descr), "{}", header_of(&b));
            assert_eq!(parse_npy(&b, "x.npy").unwrap(), t, "{d}");
        }
    }

    #[test]
    fn bf16_is_written_as_raw_bits_under_v2() {
        let t = Tensor::new(DType::BF16, vec![3], vec![1.0, -2.5, f64::INFINITY]).unwrap();
        let b = encode_npy(&t, "x.npy").unwrap();
        assert!(
            header_of(&b).contains("'descr': '<V2'"),
            "{}",
            header_of(&b)
        );
        let data = &b[b.len() - 6..];
        assert_eq!(data, [0x80, 0x3F, 0x20, 0xC0, 0x80, 0x7F]);
        assert_eq!(parse_npy(&b, "x.npy").unwrap(), t);
    }

    #[test]
    fn f8_is_written_as_raw_bits_under_v1_and_v1_is_not_read() {
        let t = Tensor::new(DType::F8E4M3FN, vec![2], vec![1.0, -448.0]).unwrap();
        let b = encode_npy(&t, "x.npy").unwrap();
        assert!(
            header_of(&b).contains("'descr': '|V1'"),
            "{}",
            header_of(&b)
        );
        assert_eq!(&b[b.len() - 2..], [0x38, 0xFE]);
        let e = parse_npy(&b, "x.npy").unwrap_err().to_string();
        assert!(e.starts_with("x.npy:") && e.contains("ambiguous"), "{e}");
        let t = Tensor::new(DType::F8E5M2, vec![1], vec![-2.0]).unwrap();
        let b = encode_npy(&t, "y.npy").unwrap();
        assert!(header_of(&b).contains("'descr': '|V1'"));
        assert_eq!(b[b.len() - 1], 0xC0);
    }

    fn fixture(name: &str) -> (String, Vec<u8>) {
        let p = format!("{}/testdata/npy/{name}", env!("CARGO_MANIFEST_DIR"));
        let b = std::fs::read(&p).unwrap();
        (p, b)
    }

    /// Files written by `np.save` (ir/testdata/npy/gen.py) read back as the values numpy held,
    /// and writing them again gives numpy's bytes.
    #[test]
    fn files_written_by_numpy_and_ml_dtypes() {
        let cases: [(&str, DType, Vec<usize>, Vec<f64>); 6] = [
            (
                "i16.npy",
                DType::I16,
                vec![2, 2],
                vec![-2.0, 32767.0, -32768.0, 7.0],
            ),
            ("u16.npy", DType::U16, vec![3], vec![0.0, 65535.0, 258.0]),
            ("u16_scalar.npy", DType::U16, vec![], vec![513.0]),
            (
                "u32.npy",
                DType::U32,
                vec![3],
                vec![4294967295.0, 1.0, 70000.0],
            ),
            (
                "u64.npy",
                DType::U64,
                vec![3],
                vec![0.0, (1u64 << 53) as f64, 12345678901.0],
            ),
            (
                "bf16.npy",
                DType::BF16,
                vec![4],
                vec![1.0, -2.5, 3.140625, f64::INFINITY],
            ),
        ];
        for (name, d, shape, vals) in cases {
            let (p, b) = fixture(name);
            let t = parse_npy(&b, &p).unwrap();
            assert_eq!(t, Tensor::new(d, shape, vals).unwrap(), "{name}");
            assert_eq!(
                encode_npy(&t, &p).unwrap(),
                b,
                "{name}: bytes differ from numpy's"
            );
        }
        let (p, b) = fixture("u64_big.npy");
        let e = parse_npy(&b, &p).unwrap_err().to_string();
        assert!(e.contains("9007199254740993") && e.contains("2^53"), "{e}");
        // ml_dtypes writes float8_e4m3fn as '<V1': ambiguous, so an error.
        let (p, b) = fixture("f8e4m3fn.npy");
        let e = parse_npy(&b, &p).unwrap_err().to_string();
        assert!(e.contains("`<V1`") && e.contains("ambiguous"), "{e}");
    }

    #[test]
    fn unsupported_descrs_name_the_supported_ones() {
        let t = Tensor::new(DType::U16, vec![1], vec![1.0]).unwrap();
        let b = encode_npy(&t, "x").unwrap();
        for (from, to) in [("<u2", ">u2"), ("<u2", "|V2"), ("<u2", "<c8")] {
            let at = b.windows(3).position(|w| w == from.as_bytes()).unwrap();
            let mut hb = b.clone();
            hb[at..at + 3].copy_from_slice(to.as_bytes());
            let e = parse_npy(&hb, "x").unwrap_err().to_string();
            assert!(e.contains(&format!("`{to}`")) && e.contains("<u2"), "{e}");
        }
    }
}
