//! GELU over contiguous f32 data, chunk-parallel and vectorized.

use super::registry::{all_f32, any_cpu, operand, wrong_op, KernelEntry, KernelOut, KernelRun};
use super::{map_elementwise as map, math, multiversion};
use fuselage_ir::ops::gelu::GeluApproximate;
use fuselage_ir::Op;

multiversion! {
    fn gelu_erf_chunk(x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = 0.5 * v * (1.0 + math::erf(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    fn gelu_tanh_chunk(x: &[f32], y: &mut [f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2/π)
        for (o, &v) in y.iter_mut().zip(x) {
            *o = 0.5 * v * (1.0 + math::tanh(C * (v + 0.044715 * v * v * v)));
        }
    }
}

/// `x·Φ(x) = ½x(1 + erf(x/√2))` elementwise.
pub fn gelu_erf(x: &[f32]) -> Vec<f32> {
    map(x, gelu_erf_chunk)
}

/// The tanh approximation `½x(1 + tanh(√(2/π)(x + 0.044715x³)))` elementwise.
pub fn gelu_tanh(x: &[f32]) -> Vec<f32> {
    map(x, gelu_tanh_chunk)
}

/// The registry entry of [`gelu_erf`] (`approximate = "none"`).
pub(crate) const ERF_ENTRY: KernelEntry = KernelEntry {
    name: "gelu-erf-f32",
    op: "gelu",
    signature: "float -> float",
    doc: "Exact GELU `0.5·x·(1 + erf(x/√2))` with a vectorized erf, chunks over threads.",
    applies: |op, operands, results| {
        all_f32(operands, results)?;
        match op {
            Op::Gelu(g) if g.approximate == GeluApproximate::None => Ok(()),
            Op::Gelu(_) => Err("approximate is \"tanh\", this is the erf form".into()),
            other => Err(wrong_op("gelu-erf-f32", other)),
        }
    },
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "gelu-erf-f32";
        if !matches!(op, Op::Gelu(_)) {
            return Err(wrong_op(NAME, op));
        }
        let x = operand(NAME, v, 0)?;
        Ok(KernelOut::row_major((
            gelu_erf(&x.to_contiguous()),
            x.shape.clone(),
        )))
    }),
};

/// The registry entry of [`gelu_tanh`] (`approximate = "tanh"`).
pub(crate) const TANH_ENTRY: KernelEntry = KernelEntry {
    name: "gelu-tanh-f32",
    op: "gelu",
    signature: "float -> float",
    doc: "Tanh-approximated GELU with a vectorized tanh, chunks over threads.",
    applies: |op, operands, results| {
        all_f32(operands, results)?;
        match op {
            Op::Gelu(g) if g.approximate == GeluApproximate::Tanh => Ok(()),
            Op::Gelu(_) => Err("approximate is \"none\", this is the tanh form".into()),
            other => Err(wrong_op("gelu-tanh-f32", other)),
        }
    },
    cost: 10,
    requires: "any",
    guard: any_cpu,
    prepare: None,
    run: KernelRun::F32(|op, v| {
        const NAME: &str = "gelu-tanh-f32";
        if !matches!(op, Op::Gelu(_)) {
            return Err(wrong_op(NAME, op));
        }
        let x = operand(NAME, v, 0)?;
        Ok(KernelOut::row_major((
            gelu_tanh(&x.to_contiguous()),
            x.shape.clone(),
        )))
    }),
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_matches_f64() {
        let x: Vec<f32> = (-40_000..40_000).map(|i| i as f32 * 2.5e-4).collect();
        for (y, &v) in gelu_erf(&x).iter().zip(&x) {
            let v = v as f64;
            let want = 0.5 * v * (1.0 + libm::erf(v / 2f64.sqrt()));
            assert!(
                (*y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{v}: {y} vs {want}"
            );
        }
        for (y, &v) in gelu_tanh(&x).iter().zip(&x) {
            let v = v as f64;
            let want = 0.5
                * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh());
            assert!(
                (*y as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{v}: {y} vs {want}"
            );
        }
    }
}
