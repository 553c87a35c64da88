//! RMSNorm over the trailing `n` elements of each row, with an optional scale.

use super::registry::{
    all_f32, any_cpu, operand, trailing, wrong_op, KernelEntry, KernelOut, KernelRun,
};
use super::{math, multiversion};
use fuselage_ir::Op;

multiversion! {
    fn rms_norm_row(x: &[f32], y: &mut [f32], scale: Option<&[f32]>, eps: f32) {
        let ss = math::sum_sq_dev(x, 0.0);
        let inv = 1.0 / (ss / x.len() as f32 + eps).sqrt();
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v * inv;
        }
        if let Some(g) = scale {
            for (o, &g) in y.iter_mut().zip(g) {
                *o *= g;
            }
        }
    }
}

/// `x / sqrt(mean(x²) + eps) · scale` over each row of `n` elements of `x` (row-major).
pub fn rms_norm(x: &[f32], n: usize, scale: Option<&[f32]>, eps: f64) -> Result<Vec<f32>, String> {
    if let Some(g) = scale {
        if g.len() != n {
            return Err(format!(
                "rms_norm: scale has {} elements, expected {n}",
                g.len()
            ));
        }
    }
    super::map_rows(x, n, "rms_norm", |i, o| {
        rms_norm_row(i, o, scale, eps as f32)
    })
}

/// The registry entry of [`rms_norm()`].
pub(crate) const ENTRY: KernelEntry = KernelEntry {
    name: "rms_norm-f32",
    op: "rms_norm",
    signature: "float[, float scale] -> float",
    doc: "RMSNorm over the trailing axes from `axis`, one pass per row, rows over threads.",
    applies: |_, operands, results| all_f32(operands, results),
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "rms_norm-f32";
        let Op::RmsNorm(rn) = op else {
            return Err(wrong_op(NAME, op));
        };
        let x = operand(NAME, v, 0)?;
        let (n, shape) = trailing(op, rn.axis, x)?;
        let scale = v.get(1).map(|t| t.to_contiguous());
        let y = rms_norm(&x.to_contiguous(), n, scale.as_deref(), rn.eps)?;
        Ok(KernelOut::row_major((y, shape)))
    }),
};

#[cfg(test)]
mod tests {
    use super::super::testing::{close, data};
    use super::*;

    #[test]
    fn rms_norm_matches_f64() {
        for n in [1usize, 5, 576] {
            let rows = 6;
            let x = data(rows * n, 4);
            let g = data(n, 5);
            let y = rms_norm(&x, n, Some(&g), 1e-6).unwrap();
            let mut want = vec![];
            for r in 0..rows {
                let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
                let ms = row.iter().map(|v| v * v).sum::<f64>() / n as f64;
                for j in 0..n {
                    want.push(row[j] / (ms + 1e-6).sqrt() * g[j] as f64);
                }
            }
            close(&y, &want, 2e-5);
        }
        assert!(rms_norm(&[0.0; 6], 4, None, 1e-5).is_err());
    }
}
