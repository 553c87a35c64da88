//! Sigmoid and SiLU over contiguous f32 data, chunk-parallel and vectorized.

use super::registry::{all_f32, any_cpu, operand, wrong_op, KernelEntry, KernelOut, KernelRun};
use super::{map_elementwise, math, multiversion};
use fuselage_ir::Op;

multiversion! {
    fn sigmoid_chunk(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = 1.0 / (1.0 + math::exp(-v));
        }
    }
}

multiversion! {
    fn silu_chunk(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = v / (1.0 + math::exp(-v));
        }
    }
}

/// `1 / (1 + e^−x)` elementwise.
pub fn sigmoid(x: &[f32]) -> Vec<f32> {
    map_elementwise(x, sigmoid_chunk)
}

/// `x · sigmoid(x)` (SwiGLU's gate) elementwise.
pub fn silu(x: &[f32]) -> Vec<f32> {
    map_elementwise(x, silu_chunk)
}

/// The registry entry of [`sigmoid()`].
pub(crate) const SIGMOID_ENTRY: KernelEntry = KernelEntry {
    name: "sigmoid-f32",
    op: "sigmoid",
    signature: "float -> float",
    doc: "`1/(1 + e^-x)` with a vectorized exp, chunks over threads.",
    applies: |_, operands, results| all_f32(operands, results),
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "sigmoid-f32";
        if !matches!(op, Op::Sigmoid(_)) {
            return Err(wrong_op(NAME, op));
        }
        let x = operand(NAME, v, 0)?;
        Ok(KernelOut::row_major((
            sigmoid(&x.to_contiguous()),
            x.shape.clone(),
        )))
    }),
};

/// The registry entry of [`silu()`].
pub(crate) const SILU_ENTRY: KernelEntry = KernelEntry {
    name: "silu-f32",
    op: "silu",
    signature: "float -> float",
    doc: "`x·sigmoid(x)` with a vectorized exp, chunks over threads.",
    applies: |_, operands, results| all_f32(operands, results),
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "silu-f32";
        if !matches!(op, Op::Silu(_)) {
            return Err(wrong_op(NAME, op));
        }
        let x = operand(NAME, v, 0)?;
        Ok(KernelOut::row_major((
            silu(&x.to_contiguous()),
            x.shape.clone(),
        )))
    }),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_and_silu_match_f64() {
        let x: Vec<f32> = (-100_000..100_000).map(|i| i as f32 * 1e-3).collect();
        for (y, &v) in sigmoid(&x).iter().zip(&x) {
            let want = 1.0 / (1.0 + (-(v as f64)).exp());
            assert!(
                (*y as f64 - want).abs() <= 4e-7 * (1e-30 + want),
                "{v}: {y} vs {want}"
            );
        }
        for (y, &v) in silu(&x).iter().zip(&x) {
            let want = v as f64 / (1.0 + (-(v as f64)).exp());
            assert!(
                (*y as f64 - want).abs() <= 1e-6 * (1e-30 + want.abs()) + 1e-30,
                "{v}: {y} vs {want}"
            );
        }
        assert_eq!(sigmoid(&[-200.0, 200.0]), vec![0.0, 1.0]);
        assert_eq!(silu(&[200.0]), vec![200.0]);
    }
}
