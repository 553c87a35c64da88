//! ggml tensor types and exact dequantization of their block formats to `f32`.

use std::fmt;

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

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::*;

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
}
