//! GELU over contiguous f32 data, chunk-parallel and vectorized.

use super::{map_elementwise as map, math, multiversion};

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
