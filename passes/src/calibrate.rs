//! Calibration statistics: the values some activations take over the calibration inputs, per
//! feature (their last axis), and the clipping range each method derives from them — what a
//! static or feature-wise (FWQ) scale is made of.
//!
//! Methods (`techniques.md` §1; the best one is measured, not assumed):
//! * `absmax`: the largest `|x|` seen;
//! * `percentile`: the `p`-th percentile of `|x|` (outliers clipped);
//! * `mse`: the clip `c = r·absmax`, `r` in 1.00, 0.99, …, 0.50, that minimizes the squared error
//!   of quantizing the samples with the scale `c / qmax` (clipping against rounding).

use crate::pass::Calibrator;
use fuselage_ir::{Module, ValueId};

/// How a clipping range is chosen from the samples of one feature.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClipMethod {
    /// The largest magnitude.
    Absmax,
    /// This percentile (0–100) of the magnitudes.
    Percentile(f64),
    /// The clip minimizing the quantization's squared error.
    Mse,
}

impl ClipMethod {
    /// Parse `absmax`, `percentile` (with `p`) or `mse`.
    pub fn parse(name: &str, p: f64) -> Result<ClipMethod, String> {
        match name {
            "absmax" => Ok(ClipMethod::Absmax),
            "percentile" if p > 0.0 && p <= 100.0 => Ok(ClipMethod::Percentile(p)),
            "percentile" => Err(format!("percentile must be in (0, 100], found {p}")),
            "mse" => Ok(ClipMethod::Mse),
            other => Err(format!(
                "unknown calibration method `{other}` (allowed: absmax, percentile, mse)"
            )),
        }
    }
}

/// The magnitudes one activation took, as rows of `features` values (every token of every
/// calibration input).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FeatureSamples {
    /// Values per row (the activation's last dim).
    pub features: usize,
    /// `|x|`, row-major `[rows, features]`.
    pub magnitudes: Vec<f32>,
}

impl FeatureSamples {
    /// Rows sampled.
    pub fn rows(&self) -> usize {
        self.magnitudes.len() / self.features.max(1)
    }

    /// The clipping range of every feature by `method`, for a quantizer whose codes reach
    /// `±qmax` with round-half-even.
    pub fn clip(&self, method: ClipMethod, qmax: f64) -> Vec<f64> {
        let (k, rows) = (self.features, self.rows());
        (0..k)
            .map(|f| {
                let mut col: Vec<f64> = (0..rows)
                    .map(|r| f64::from(self.magnitudes[r * k + f]))
                    .collect();
                let absmax = col.iter().cloned().fold(0.0, f64::max);
                match method {
                    ClipMethod::Absmax => absmax,
                    ClipMethod::Percentile(p) => {
                        col.sort_by(f64::total_cmp);
                        let i = ((p / 100.0) * (rows.max(1) - 1) as f64).round() as usize;
                        col.get(i).copied().unwrap_or(0.0)
                    }
                    ClipMethod::Mse => mse_clip(&col, absmax, qmax),
                }
            })
            .collect()
    }
}

/// The clip `r·absmax` (r = 1.00 down to 0.50 by 0.01) of least squared quantization error.
fn mse_clip(col: &[f64], absmax: f64, qmax: f64) -> f64 {
    if absmax == 0.0 {
        return 0.0;
    }
    let mut best = (f64::INFINITY, absmax);
    for step in 0..=50 {
        let c = absmax * (1.0 - 0.01 * f64::from(step));
        let s = c / qmax;
        let err: f64 = col
            .iter()
            .map(|&v| {
                let q = (v / s).round_ties_even().min(qmax) * s;
                (v - q) * (v - q)
            })
            .sum();
        if err < best.0 {
            best = (err, c);
        }
    }
    best.1
}

/// The magnitudes of `values` (results in the entry function of `module`) over every
/// calibration input: the values are added as extra outputs and the module runs on the
/// calibrator. A non-finite activation is an error naming the value and the input.
pub fn sample_features(
    module: &Module,
    values: &[ValueId],
    calibrator: &dyn Calibrator,
) -> Result<Vec<FeatureSamples>, String> {
    let mut m = module.clone();
    let entry = m
        .entry_name()
        .map(str::to_string)
        .ok_or("the module has no entry function")?;
    let g = m.functions.get_mut(&entry).ok_or("no entry function")?;
    let first = g.outputs.len();
    for (i, v) in values.iter().enumerate() {
        if g.value_type(*v).is_none() {
            return Err(format!("calibration: {v} is not a value of `{entry}`"));
        }
        g.add_output(&format!("calibration.{i}"), *v);
    }
    let mut out: Vec<FeatureSamples> = vec![FeatureSamples::default(); values.len()];
    calibrator.run_each(&m, &mut |input, outs| {
        for (i, s) in out.iter_mut().enumerate() {
            let t = outs
                .get(first + i)
                .ok_or_else(|| format!("calibration output {i} missing"))?;
            let k = t.shape().last().copied().unwrap_or(1).max(1);
            if s.features != 0 && s.features != k {
                return Err(format!(
                    "calibration: {} has {k} features on input {input}, {} before",
                    values[i], s.features
                ));
            }
            s.features = k;
            if let Some(j) = t.data().iter().position(|v| !v.is_finite()) {
                return Err(format!(
                    "calibration input {input}: the activation {} holds {} at element {j} \
                     (NaN or infinite activations cannot be calibrated on)",
                    values[i],
                    t.data()[j]
                ));
            }
            s.magnitudes.extend(t.data().iter().map(|v| v.abs() as f32));
        }
        Ok(())
    })?;
    if out.iter().any(|s| s.magnitudes.is_empty()) && !values.is_empty() {
        return Err("calibration: no calibration input produced any value".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> FeatureSamples {
        // Two features over 101 rows: feature 0 is 0, 1, …, 100; feature 1 is r/100 except one
        // outlier of 1.3.
        let mut m = vec![];
        for r in 0..=100 {
            m.push(r as f32);
            m.push(if r == 7 { 1.3 } else { r as f32 / 100.0 });
        }
        FeatureSamples {
            features: 2,
            magnitudes: m,
        }
    }

    #[test]
    fn methods_clip_as_documented() {
        let s = samples();
        assert_eq!(s.rows(), 101);
        assert_eq!(
            s.clip(ClipMethod::Absmax, 127.0),
            vec![100.0, 1.3f32 as f64]
        );
        let p50 = s.clip(ClipMethod::Percentile(50.0), 127.0);
        assert_eq!(p50[0], 50.0);
        assert!((p50[1] - 0.5).abs() < 0.02, "{p50:?}");
        // On a coarse grid (±7) the rounding error of 100 spread values outweighs clipping one
        // outlier: the clip drops below it. Uniform values keep (nearly) their absmax.
        let mse = s.clip(ClipMethod::Mse, 7.0);
        assert!(mse[1] < 1.25 && mse[1] > 0.9, "{mse:?}");
        assert!(mse[0] > 85.0, "{mse:?}");
        assert!(ClipMethod::parse("percentile", 0.0).is_err());
        assert!(ClipMethod::parse("minmax", 1.0)
            .unwrap_err()
            .contains("absmax, percentile, mse"));
    }
}
