//! LayerNorm over the trailing `n` elements of each row, with optional scale and bias.

use super::registry::{
    all_f32, any_cpu, operand, trailing, wrong_op, KernelEntry, KernelOut, KernelRun,
};
use super::{math, multiversion};
use fuselage_ir::Op;

multiversion! {
    fn layer_norm_row(x: &[f32], y: &mut [f32], scale: Option<&[f32]>, bias: Option<&[f32]>, eps: f32) {
        let n = x.len() as f32;
        let mean = math::sum(x) / n;
        let ss = math::sum_sq_dev(x, mean);
        let inv = 1.0 / (ss / n + eps).sqrt();
        for (o, &v) in y.iter_mut().zip(x) {
            *o = (v - mean) * inv;
        }
        if let Some(g) = scale {
            for (o, &g) in y.iter_mut().zip(g) {
                *o *= g;
            }
        }
        if let Some(b) = bias {
            for (o, &b) in y.iter_mut().zip(b) {
                *o += b;
            }
        }
    }
}

/// `(x − mean) / sqrt(var + eps) · scale + bias` over each row of `n` elements of `x`
/// (row-major, `x.len()` a multiple of `n`); `scale` and `bias` hold `n` elements. Mean and
/// variance are two-pass.
pub fn layer_norm(
    x: &[f32],
    n: usize,
    scale: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f64,
) -> Result<Vec<f32>, String> {
    for (what, p) in [("scale", scale), ("bias", bias)] {
        if let Some(p) = p {
            if p.len() != n {
                return Err(format!(
                    "layer_norm: {what} has {} elements, expected {n}",
                    p.len()
                ));
            }
        }
    }
    super::map_rows(x, n, "layer_norm", |i, o| {
        layer_norm_row(i, o, scale, bias, eps as f32)
    })
}

/// The registry entry of [`layer_norm()`].
pub(crate) const ENTRY: KernelEntry = KernelEntry {
    name: "layer_norm-f32",
    op: "layer_norm",
    signature: "float[, float scale[, float bias]] -> float",
    doc: "LayerNorm over the trailing axes from `axis`, one pass per row, rows over threads.",
    applies: |_, operands, results| all_f32(operands, results),
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "layer_norm-f32";
        let Op::LayerNorm(ln) = op else {
            return Err(wrong_op(NAME, op));
        };
        let x = operand(NAME, v, 0)?;
        let (n, shape) = trailing(op, ln.axis, x)?;
        let scale = v.get(1).map(|t| t.to_contiguous());
        let bias = v.get(2).map(|t| t.to_contiguous());
        let y = layer_norm(
            &x.to_contiguous(),
            n,
            scale.as_deref(),
            bias.as_deref(),
            ln.eps,
        )?;
        Ok(KernelOut::row_major((y, shape)))
    }),
};

#[cfg(test)]
mod tests {
    use super::super::testing::{close, data};
    use super::*;

    #[test]
    fn layer_norm_matches_f64() {
        for n in [1usize, 5, 384, 1000] {
            let rows = 7;
            let x: Vec<f32> = data(rows * n, 1).iter().map(|v| v * 3.0 + 1.0).collect();
            let g = data(n, 2);
            let b = data(n, 3);
            let y = layer_norm(&x, n, Some(&g), Some(&b), 1e-5).unwrap();
            let mut want = vec![];
            for r in 0..rows {
                let row: Vec<f64> = x[r * n..(r + 1) * n].iter().map(|&v| v as f64).collect();
                let mean = row.iter().sum::<f64>() / n as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
                for j in 0..n {
                    want.push((row[j] - mean) / (var + 1e-5).sqrt() * g[j] as f64 + b[j] as f64);
                }
            }
            close(&y, &want, 2e-5);
        }
        assert!(layer_norm(&[0.0; 6], 4, None, None, 1e-5).is_err());
        assert!(layer_norm(&[0.0; 6], 3, Some(&[1.0; 2]), None, 1e-5).is_err());
    }
}
