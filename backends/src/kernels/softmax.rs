//! Softmax over the rows of a row-major matrix.

use super::math;
use super::multiversion;
use super::registry::{
    all_f32, any_cpu, last_axis, operand, wrong_op, KernelEntry, KernelOut, KernelRun,
};
use fuselage_ir::Op;
use rayon::prelude::*;

multiversion! {
    /// In place: `row ← exp(row − max) / Σ`; a row whose entries are all `−∞` becomes zeros.
    pub(crate) fn softmax_row(row: &mut [f32]) {
        let m = math::max(row);
        if m == f32::NEG_INFINITY {
            row.fill(0.0);
            return;
        }
        for v in row.iter_mut() {
            *v = math::exp(*v - m);
        }
        let inv = 1.0 / math::sum(row);
        for v in row.iter_mut() {
            *v *= inv;
        }
    }
}

/// Softmax of each row of `x` (`rows × n`, row-major), rows spread over threads.
pub fn softmax_rows(x: &[f32], n: usize) -> Vec<f32> {
    let mut y = super::buffer::for_overwrite(x.len());
    y.copy_from_slice(x);
    if n == 0 {
        return y;
    }
    if x.len() < super::PARALLEL_MIN_ELEMENTS {
        y.chunks_mut(n).for_each(softmax_row);
        return y;
    }
    let per_task = (8192 / n).max(1) * n;
    y.par_chunks_mut(per_task)
        .for_each(|c| c.chunks_mut(n).for_each(softmax_row));
    y
}

/// The registry entry of [`softmax_rows`].
pub(crate) const ENTRY: KernelEntry = KernelEntry {
    name: "softmax-f32-rows",
    op: "softmax",
    signature: "float -> float",
    doc: "Softmax over the last axis (max subtracted, fully masked rows give zeros), rows over threads.",
    applies: |op, operands, results| {
        all_f32(operands, results)?;
        match op {
            Op::Softmax(sm) => last_axis(op, sm.axis, operands),
            other => Err(wrong_op("softmax-f32-rows", other)),
        }
    },
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "softmax-f32-rows";
        if !matches!(op, Op::Softmax(_)) {
            return Err(wrong_op(NAME, op));
        }
        let x = operand(NAME, v, 0)?;
        let n = x.shape.last().copied().unwrap_or(1);
        Ok(KernelOut::row_major((
            softmax_rows(&x.to_contiguous(), n),
            x.shape.clone(),
        )))
    }),
};

#[cfg(test)]
mod tests {
    use super::super::testing::data;
    use super::*;

    #[test]
    fn softmax_matches_f64() {
        for n in [1usize, 3, 17, 128, 1000] {
            let x: Vec<f32> = data(5 * n, n as u64).iter().map(|v| v * 20.0).collect();
            let y = softmax_rows(&x, n);
            for r in 0..5 {
                let row = &x[r * n..(r + 1) * n];
                let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
                let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                for j in 0..n {
                    let want = (row[j] as f64 - m).exp() / z;
                    assert!(
                        (y[r * n + j] as f64 - want).abs() <= 1e-6 * (1.0 + want),
                        "{want}"
                    );
                }
            }
        }
        let y = softmax_rows(
            &[f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY],
            2,
        );
        assert_eq!(y, vec![0.0, 0.0, 1.0, 0.0]);
    }
}
