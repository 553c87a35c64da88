//! Sigmoid and SiLU over contiguous f32 data, chunk-parallel and vectorized.

use super::{map_elementwise, math, multiversion};

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
