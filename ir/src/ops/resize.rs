//! `resize`: ONNX `Resize` (opsets 11–19): nearest, linear and cubic interpolation of any set
//! of axes, with every coordinate transformation mode, antialiasing and exclude-outside.

use super::util::{expect_arity, expect_numeric, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// Interpolation of [`Resize`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// The nearest input cell, chosen by [`NearestMode`] (the ONNX default).
    #[default]
    Nearest,
    /// Linear in each resized axis (bilinear, trilinear).
    Linear,
    /// Cubic convolution in each resized axis (Keys, coefficient `cubic_coeff_a`).
    Cubic,
}

/// How an output coordinate maps to an input coordinate (ONNX
/// `coordinate_transformation_mode`); `x` is the input coordinate of output cell `y`, `s` the
/// axis's scale, `len_in`/`len_out` the sizes, `len_s = s·len_in` (a real number).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoordinateTransformationMode {
    /// `x = (y + 0.5)/s − 0.5` (the ONNX default).
    #[default]
    HalfPixel,
    /// `half_pixel` shifted so that the centre of the input maps to the centre of the output:
    /// `x = (len_in/2)·(1 − len_out/len_s) + (y + 0.5)/s − 0.5`.
    HalfPixelSymmetric,
    /// `half_pixel`, but `x = −0.5` when `len_s == 1`.
    PytorchHalfPixel,
    /// `x = y·(len_in − 1)/(len_s − 1)`, or 0 when `len_s == 1`.
    AlignCorners,
    /// `x = y/s`.
    Asymmetric,
    /// `x = y·(end − start)·(len_in − 1)/(len_s − 1) + start·(len_in − 1)` with the axis's
    /// region of interest `(start, end)` from `roi` (`len_s == 1`: the middle of the region);
    /// outputs whose `x` falls outside `[0, len_in − 1]` are `extrapolation_value`.
    TfCropAndResize,
}

/// How `nearest` rounds a coordinate that is not an integer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NearestMode {
    /// Round half down (the ONNX default).
    #[default]
    RoundPreferFloor,
    /// Round half up.
    RoundPreferCeil,
    /// Round down.
    Floor,
    /// Round up.
    Ceil,
}

fn minus_075() -> f64 {
    -0.75
}

/// ONNX `Resize` (opsets 11–19), as the onnx package's reference implementation computes it.
/// One numeric operand `x`; the result has `x`'s dtype and shape except that axis `axes[i]` has
/// size `sizes[i]` (dims, symbolic where the model's are). Importers resolve `scales`/`sizes`
/// inputs and `keep_aspect_ratio_policy` into `sizes` (ONNX: `⌊scale·len_in⌋` from scales) and
/// the scales the coordinate transformation uses: ONNX uses the given scale when scales are
/// given, `len_out/len_in` when sizes are (`scales: None` computes that at run time).
///
/// The axes are resized one after another in the listed order, each independently (separable):
/// output cell `y` of an axis reads input coordinate `x` (see [`CoordinateTransformationMode`]).
/// An axis whose scale is 1 (within 1e-9 relative) and whose size does not change (and, for
/// `tf_crop_and_resize`, whose region is `[0, 1]`) is copied unchanged.
/// - `nearest`: the input cell at `x` rounded by `nearest_mode` (an integer `x` is itself),
///   clamped into the axis.
/// - `linear`: `(1 − t)·in[⌊x⌋] + t·in[⌊x⌋ + 1]`, `t = x − ⌊x⌋`; `cubic`: the four cells
///   `⌊x⌋ − 1 … ⌊x⌋ + 2` weighted by Keys' kernel with `a = cubic_coeff_a`. Indices outside
///   the axis read the nearest edge cell, or with `exclude_outside` get weight 0 and the other
///   weights are renormalized to sum to 1 (all zero: the result is 0).
/// - `antialias` (linear and cubic): when an axis shrinks (`s < 1`) the kernel is stretched by
///   `1/s` (weights `K((j − x)·s)` over every cell within reach, normalized to sum 1).
///
/// All arithmetic is in f64 with one rounding to the result dtype (integers round half to even
/// and saturate). Two deliberate differences from the onnx python reference: `nearest` copies
/// the chosen cell (the reference multiplies the other neighbour by 0, so an infinite neighbour
/// gives NaN), and the cells around `x` are counted from `⌊x⌋` itself (the reference counts
/// them from `x + n/2`, which for a coordinate within an ulp of an integer can round across it
/// and pick the wrong neighbour). ONNX Runtime differs from the reference in some
/// `tf_crop_and_resize`, cubic `exclude_outside` and `align_corners` cases; this op follows the
/// reference there. Errors: axes out of range or repeated, `sizes`/`scales` of the wrong length,
/// non-positive or non-finite scales, `antialias` with `nearest`, `roi` given without
/// `tf_crop_and_resize` or missing with it, and resizing an empty axis to a non-empty one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    /// The resized axes, in the order they are processed (negative counts from the end; empty:
    /// every axis in order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub axes: Vec<i64>,
    /// Output size of each resized axis.
    pub sizes: Vec<Dim>,
    /// Scale of each resized axis for the coordinate transformation (`None`: `len_out/len_in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scales: Option<Vec<f64>>,
    /// Interpolation (default `nearest`).
    #[serde(default)]
    pub mode: ResizeMode,
    /// Coordinate transformation (default `half_pixel`).
    #[serde(default)]
    pub coordinate_transformation_mode: CoordinateTransformationMode,
    /// Rounding of `nearest` (default `round_prefer_floor`).
    #[serde(default)]
    pub nearest_mode: NearestMode,
    /// Keys' `a` of `cubic` (default −0.75).
    #[serde(default = "minus_075")]
    pub cubic_coeff_a: f64,
    /// Give input cells outside the axis weight 0 (default false).
    #[serde(default)]
    pub exclude_outside: bool,
    /// Value of outputs outside the region of `tf_crop_and_resize` (default 0).
    #[serde(default)]
    pub extrapolation_value: f64,
    /// Antialiasing filter when downsampling with `linear` or `cubic` (default false).
    #[serde(default)]
    pub antialias: bool,
    /// `tf_crop_and_resize` only: `[start_1…start_k, end_1…end_k]` per resized axis, in
    /// normalized coordinates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roi: Vec<f64>,
}

impl Resize {
    /// Nearest-neighbour resize of `axes` to `sizes` with the ONNX defaults.
    pub fn new(axes: Vec<i64>, sizes: Vec<Dim>) -> Resize {
        Resize {
            axes,
            sizes,
            scales: None,
            mode: ResizeMode::Nearest,
            coordinate_transformation_mode: CoordinateTransformationMode::HalfPixel,
            nearest_mode: NearestMode::RoundPreferFloor,
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            antialias: false,
            roi: vec![],
        }
    }
}

/// The interpolation of one axis: output cell `o` is `Σ_t coef[o·taps + t] · in[index[o·taps + t]]`
/// (indices already clamped into the axis), or `extrapolation_value` where `extrapolated[o]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AxisPlan {
    /// The axis.
    pub axis: usize,
    /// Its output size.
    pub len_out: usize,
    /// Input cells read per output cell (1 for `nearest`).
    pub taps: usize,
    /// `len_out · taps` input indices.
    pub index: Vec<usize>,
    /// `len_out · taps` weights.
    pub coef: Vec<f64>,
    /// Per output cell: replaced by `extrapolation_value` (empty unless `tf_crop_and_resize`).
    pub extrapolated: Vec<bool>,
}

fn isclose(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl Resize {
    /// Validated axes in processing order.
    fn checked_axes(&self, rank: usize) -> Result<Vec<usize>, OpError> {
        let op = Self::NAME;
        let axes: Vec<usize> = if self.axes.is_empty() {
            (0..rank).collect()
        } else {
            let mut v = Vec::with_capacity(self.axes.len());
            for &a in &self.axes {
                let n = normalize_axis(op, a, rank)?;
                if v.contains(&n) {
                    crate::bail!("resize: axis {a} is listed twice in {:?}", self.axes);
                }
                v.push(n);
            }
            v
        };
        let k = axes.len();
        if self.sizes.len() != k {
            crate::bail!(
                "resize: sizes needs one entry per resized axis ({k}), found {}",
                self.sizes.len()
            );
        }
        if let Some(s) = &self.scales {
            if s.len() != k {
                crate::bail!("resize: scales needs one entry per resized axis ({k}), found {s:?}");
            }
            if let Some(bad) = s.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
                crate::bail!("resize: scales must be finite and > 0, found {bad}");
            }
        }
        let tf =
            self.coordinate_transformation_mode == CoordinateTransformationMode::TfCropAndResize;
        if tf && self.roi.len() != 2 * k {
            crate::bail!(
                "resize: tf_crop_and_resize needs roi [start…, end…] with 2 entries per resized axis ({}), found {:?}",
                2 * k,
                self.roi
            );
        }
        if !tf && !self.roi.is_empty() {
            crate::bail!("resize: roi is used by tf_crop_and_resize only; leave it empty");
        }
        if self.roi.iter().any(|v| !v.is_finite()) {
            crate::bail!("resize: roi must be finite, found {:?}", self.roi);
        }
        if self.antialias && self.mode == ResizeMode::Nearest {
            crate::bail!("resize: antialias applies to linear and cubic, not nearest");
        }
        if !self.cubic_coeff_a.is_finite() || !self.extrapolation_value.is_finite() {
            crate::bail!("resize: cubic_coeff_a and extrapolation_value must be finite");
        }
        Ok(axes)
    }

    /// Interpolation weights of one output cell at fractional position `ratio ∈ (0, 1]` past
    /// `⌊x⌋` (exactly the onnx reference's coefficient functions).
    fn coeffs(&self, ratio: f64, scale: f64) -> Vec<f64> {
        let a = self.cubic_coeff_a;
        match (self.mode, self.antialias) {
            (ResizeMode::Nearest, _) => {
                if ratio == ratio.trunc() {
                    return vec![0.0, 1.0];
                }
                let (lo, hi) = match self.nearest_mode {
                    NearestMode::RoundPreferFloor => (ratio <= 0.5, ratio > 0.5),
                    NearestMode::RoundPreferCeil => (ratio < 0.5, ratio >= 0.5),
                    NearestMode::Floor => (true, false),
                    NearestMode::Ceil => (false, true),
                };
                vec![f64::from(u8::from(lo)), f64::from(u8::from(hi))]
            }
            (ResizeMode::Linear, false) => vec![1.0 - ratio, ratio],
            (ResizeMode::Linear, true) => {
                let s = scale.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                let footprint = 2 - 2 * start;
                let c: Vec<f64> = (start..start + footprint)
                    .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.into_iter().map(|v| v / sum).collect()
            }
            (ResizeMode::Cubic, false) => {
                let (r1, q, q1) = (ratio + 1.0, 1.0 - ratio, (1.0 - ratio) + 1.0);
                vec![
                    ((a * r1 - 5.0 * a) * r1 + 8.0 * a) * r1 - 4.0 * a,
                    ((a + 2.0) * ratio - (a + 3.0)) * ratio * ratio + 1.0,
                    ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
                    ((a * q1 - 5.0 * a) * q1 + 8.0 * a) * q1 - 4.0 * a,
                ]
            }
            (ResizeMode::Cubic, true) => {
                let s = scale.min(1.0);
                let k = |x: f64| {
                    let x = x.abs();
                    let (x2, x3) = (x * x, x * x * x);
                    if x <= 1.0 {
                        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
                    } else if x < 2.0 {
                        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
                    } else {
                        0.0
                    }
                };
                let start = (-2.0 / s).floor() as i64 + 1;
                let c: Vec<f64> = (start..2 - start)
                    .map(|i| k(s * (i as f64 - ratio)))
                    .collect();
                let sum: f64 = c.iter().sum();
                c.into_iter().map(|v| v / sum).collect()
            }
        }
    }

    /// The interpolation of axis `axes[k] = axis` from `len_in` to `len_out` cells, or `None`
    /// when the axis is copied unchanged.
    fn axis_plan(
        &self,
        k: usize,
        naxes: usize,
        axis: usize,
        len_in: usize,
        len_out: usize,
    ) -> Result<Option<AxisPlan>, OpError> {
        use CoordinateTransformationMode as C;
        let scale = match &self.scales {
            Some(s) => s[k],
            None => len_out as f64 / len_in as f64,
        };
        let ctm = self.coordinate_transformation_mode;
        let roi = (ctm == C::TfCropAndResize).then(|| (self.roi[k], self.roi[naxes + k]));
        let trivial_roi = roi.is_none_or(|(a, b)| a == 0.0 && isclose(b, 1.0));
        if len_out == len_in && isclose(scale, 1.0) && trivial_roi {
            return Ok(None);
        }
        let mut plan = AxisPlan {
            axis,
            len_out,
            taps: 0,
            index: vec![],
            coef: vec![],
            extrapolated: vec![],
        };
        if len_out == 0 {
            return Ok(Some(plan));
        }
        if len_in == 0 {
            crate::bail!("resize: axis {axis} is empty and cannot be resized to {len_out}");
        }
        let (fin, fout_s) = (len_in as f64, scale * len_in as f64);
        if self.antialias && 2.0 / scale > 4.0 * fin + 16.0 {
            crate::bail!(
                "resize: axis {axis}: scale {scale} is too small for {len_in} cells and {len_out} outputs"
            );
        }
        for y in 0..len_out {
            let yf = y as f64;
            let x = match ctm {
                C::AlignCorners => {
                    if fout_s == 1.0 {
                        0.0
                    } else {
                        yf * (fin - 1.0) / (fout_s - 1.0)
                    }
                }
                C::Asymmetric => yf / scale,
                C::TfCropAndResize => {
                    let (r0, r1) = roi.unwrap_or((0.0, 1.0));
                    let v = if fout_s == 1.0 {
                        (r1 - r0) * (fin - 1.0) / 2.0
                    } else {
                        yf * (r1 - r0) * (fin - 1.0) / (fout_s - 1.0)
                    };
                    v + r0 * (fin - 1.0)
                }
                C::PytorchHalfPixel => {
                    if fout_s == 1.0 {
                        -0.5
                    } else {
                        (yf + 0.5) / scale - 0.5
                    }
                }
                C::HalfPixel => (yf + 0.5) / scale - 0.5,
                C::HalfPixelSymmetric => {
                    let adjustment = len_out as f64 / fout_s;
                    let offset = fin / 2.0 * (1.0 - adjustment);
                    offset + (yf + 0.5) / scale - 0.5
                }
            };
            if !x.is_finite() || x.abs() > 1e15 {
                crate::bail!(
                    "resize: axis {axis}: input coordinate {x} of output {y} is out of range"
                );
            }
            if ctm == C::TfCropAndResize {
                plan.extrapolated.push(x < 0.0 || x > fin - 1.0);
            }
            let xi = x.floor();
            let ratio = if x == xi { 1.0 } else { x - xi };
            let mut c = self.coeffs(ratio, scale);
            let n = c.len();
            // The n cells around x: ⌊x⌋ − n/2 + 1 … ⌊x⌋ + n/2 (x − 1 for an integer x, whose
            // ratio is 1). The onnx python reference places the window from x + n/2 instead,
            // which for a coordinate within an ulp of an integer can round to the other side
            // of it and pick a window that disagrees with the ratio.
            let base = if x == xi { xi as i64 - 1 } else { xi as i64 };
            let first = base - (n / 2) as i64 + 1;
            let idx: Vec<i64> = (0..n as i64).map(|t| first + t).collect();
            if self.exclude_outside {
                for (w, &j) in c.iter_mut().zip(&idx) {
                    if j < 0 || j >= len_in as i64 {
                        *w = 0.0;
                    }
                }
                let sum: f64 = c.iter().sum();
                let sum = if sum == 0.0 { 1.0 } else { sum };
                for w in &mut c {
                    *w /= sum;
                }
            }
            let clamp = |j: i64| j.clamp(0, len_in as i64 - 1) as usize;
            if self.mode == ResizeMode::Nearest {
                // Copy the selected cell (weight 1), or 0 when exclude_outside removed it.
                let (j, w) = match c.iter().position(|&w| w != 0.0) {
                    Some(t) => (idx[t], c[t]),
                    None => (idx[0], 0.0),
                };
                plan.index.push(clamp(j));
                plan.coef.push(w);
            } else {
                plan.index.extend(idx.iter().map(|&j| clamp(j)));
                plan.coef.extend_from_slice(&c);
            }
            plan.taps = if self.mode == ResizeMode::Nearest {
                1
            } else {
                n
            };
        }
        Ok(Some(plan))
    }

    /// The per-axis interpolations that turn `x` of `in_shape` into `out_shape`, in processing
    /// order (axes copied unchanged are left out). Shared by the reference and the lowering.
    pub fn plan(&self, in_shape: &[usize], out_shape: &[usize]) -> Result<Vec<AxisPlan>, OpError> {
        let axes = self.checked_axes(in_shape.len())?;
        if out_shape.len() != in_shape.len() {
            crate::bail!("resize: result rank {} differs from x's", out_shape.len());
        }
        for (i, (&a, &b)) in in_shape.iter().zip(out_shape).enumerate() {
            if a != b && !axes.contains(&i) {
                crate::bail!("resize: axis {i} is not resized but changes from {a} to {b}");
            }
        }
        let mut plans = vec![];
        for (k, &axis) in axes.iter().enumerate() {
            if let Some(p) = self.axis_plan(k, axes.len(), axis, in_shape[axis], out_shape[axis])? {
                plans.push(p);
            }
        }
        Ok(plans)
    }
}

/// Apply one axis's interpolation to `data` of `shape` (f64, row-major); updates `shape`.
/// Errors when the plan does not fit the data.
pub fn apply_axis_plan(
    p: &AxisPlan,
    data: &[f64],
    shape: &mut [usize],
    extrapolation_value: f64,
) -> Result<Vec<f64>, OpError> {
    let fits = p.axis < shape.len()
        && data.len() == shape.iter().product::<usize>()
        && p.index.len() == p.len_out * p.taps
        && p.coef.len() == p.index.len()
        && (p.extrapolated.is_empty() || p.extrapolated.len() == p.len_out)
        && p.index.iter().all(|&i| i < shape[p.axis]);
    if !fits {
        crate::bail!("resize: an axis plan does not fit data of shape {shape:?}");
    }
    let outer: usize = shape[..p.axis].iter().product();
    let inner: usize = shape[p.axis + 1..].iter().product();
    let len_in = shape[p.axis];
    let mut out_shape = shape.to_vec();
    out_shape[p.axis] = p.len_out;
    super::window::result_numel("resize", &out_shape)?;
    let mut out = Vec::with_capacity(outer * p.len_out * inner);
    for o in 0..outer {
        for y in 0..p.len_out {
            let taps = y * p.taps..(y + 1) * p.taps;
            let ext = p.extrapolated.get(y).copied().unwrap_or(false);
            for i in 0..inner {
                if ext {
                    out.push(extrapolation_value);
                    continue;
                }
                let mut acc: Option<f64> = None;
                for t in taps.clone() {
                    let v = data[(o * len_in + p.index[t]) * inner + i];
                    let term = if p.taps == 1 {
                        // Nearest copies (weight 1) or gives 0 (weight 0).
                        if p.coef[t] == 0.0 {
                            0.0
                        } else {
                            v
                        }
                    } else {
                        p.coef[t] * v
                    };
                    acc = Some(acc.map_or(term, |a| a + term));
                }
                out.push(acc.unwrap_or(0.0));
            }
        }
    }
    shape[p.axis] = p.len_out;
    Ok(out)
}

impl OpSpec for Resize {
    const NAME: &'static str = "resize";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        expect_numeric(Self::NAME, "x", x)?;
        let axes = self.checked_axes(x.rank())?;
        let mut shape = x.shape.clone();
        for (a, s) in axes.iter().zip(&self.sizes) {
            shape[*a] = s.clone();
        }
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let out_shape = cx.result_shape(0)?;
        let plans = self.plan(x.shape(), &out_shape)?;
        let mut shape = x.shape().to_vec();
        let mut data = x.data().to_vec();
        for p in &plans {
            data = apply_axis_plan(p, &data, &mut shape, self.extrapolation_value)?;
        }
        Ok(vec![Tensor::new(x.dtype(), shape, data).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use super::{CoordinateTransformationMode as C, NearestMode, Resize, ResizeMode};
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::testing::{check_exact, check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::upsample_nearest2d::UpsampleNearest2d;
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    /// Naive input coordinate of output `y` (written from the ONNX operator docs).
    fn coord(m: C, y: usize, len_in: usize, len_out: usize, s: f64, roi: (f64, f64)) -> f64 {
        let (y, li, lo) = (y as f64, len_in as f64, len_out as f64);
        let ls = s * li;
        match m {
            C::HalfPixel => (y + 0.5) / s - 0.5,
            C::HalfPixelSymmetric => li / 2.0 * (1.0 - lo / ls) + (y + 0.5) / s - 0.5,
            C::PytorchHalfPixel if ls == 1.0 => -0.5,
            C::PytorchHalfPixel => (y + 0.5) / s - 0.5,
            C::AlignCorners if ls == 1.0 => 0.0,
            C::AlignCorners => y * (li - 1.0) / (ls - 1.0),
            C::Asymmetric => y / s,
            C::TfCropAndResize if ls == 1.0 => {
                (roi.1 - roi.0) * (li - 1.0) / 2.0 + roi.0 * (li - 1.0)
            }
            C::TfCropAndResize => {
                y * (roi.1 - roi.0) * (li - 1.0) / (ls - 1.0) + roi.0 * (li - 1.0)
            }
        }
    }

    fn keys(a: f64, t: f64) -> f64 {
        let t = t.abs();
        if t <= 1.0 {
            (a + 2.0) * t.powi(3) - (a + 3.0) * t.powi(2) + 1.0
        } else if t < 2.0 {
            a * t.powi(3) - 5.0 * a * t.powi(2) + 8.0 * a * t - 4.0 * a
        } else {
            0.0
        }
    }

    /// Naive 1-D resample of `v`: a weighted sum over every integer `j` near `x` of
    /// `K(j − x)·v[clamp(j)]` (the kernel stretched by 1/s when antialiasing a shrink), with
    /// out-of-range `j` dropped and the weights renormalized under exclude_outside; nearest
    /// rounds `x` directly.
    fn naive_1d(v: &[f64], len_out: usize, s: f64, op: &Resize, roi: (f64, f64)) -> Vec<f64> {
        let n = v.len() as i64;
        let at = |j: i64| v[j.clamp(0, n - 1) as usize];
        (0..len_out)
            .map(|y| {
                let x = coord(
                    op.coordinate_transformation_mode,
                    y,
                    v.len(),
                    len_out,
                    s,
                    roi,
                );
                if op.coordinate_transformation_mode == C::TfCropAndResize
                    && (x < 0.0 || x > (n - 1) as f64)
                {
                    return op.extrapolation_value;
                }
                if op.mode == ResizeMode::Nearest {
                    let f = x.floor();
                    let frac = x - f;
                    let j = if frac == 0.0 {
                        f
                    } else {
                        match op.nearest_mode {
                            NearestMode::RoundPreferFloor => {
                                if frac <= 0.5 {
                                    f
                                } else {
                                    f + 1.0
                                }
                            }
                            NearestMode::RoundPreferCeil => {
                                if frac < 0.5 {
                                    f
                                } else {
                                    f + 1.0
                                }
                            }
                            NearestMode::Floor => f,
                            NearestMode::Ceil => f + 1.0,
                        }
                    } as i64;
                    if op.exclude_outside && (j < 0 || j >= n) {
                        return 0.0;
                    }
                    return at(j);
                }
                let stretch = if op.antialias { s.min(1.0) } else { 1.0 };
                let kernel = |d: f64| match op.mode {
                    ResizeMode::Linear => (1.0 - d.abs()).max(0.0),
                    _ => keys(op.cubic_coeff_a, d),
                };
                let (mut num, mut den) = (0.0, 0.0);
                let reach = (3.0 / stretch) as i64 + 2;
                for j in x.floor() as i64 - reach..=x.floor() as i64 + reach {
                    let w = kernel((j as f64 - x) * stretch);
                    if w == 0.0 || (op.exclude_outside && (j < 0 || j >= n)) {
                        continue;
                    }
                    num += w * at(j);
                    den += w;
                }
                if op.antialias || op.exclude_outside {
                    if den == 0.0 {
                        0.0
                    } else {
                        num / den
                    }
                } else {
                    num
                }
            })
            .collect()
    }

    /// Naive N-D resize: the 1-D resample applied along each listed axis in turn.
    fn naive(x: &Tensor, op: &Resize, sizes: &[usize]) -> (Vec<usize>, Vec<f64>) {
        let mut cur = x.clone();
        let r = x.rank();
        for (k, &a) in op.axes.iter().enumerate() {
            let a = a.rem_euclid(r as i64) as usize;
            let len_in = cur.shape()[a];
            let s = op
                .scales
                .as_ref()
                .map_or(sizes[k] as f64 / len_in as f64, |s| s[k]);
            let roi = if op.roi.is_empty() {
                (0.0, 1.0)
            } else {
                (op.roi[k], op.roi[op.axes.len() + k])
            };
            if sizes[k] == len_in && (s - 1.0).abs() < 1e-12 && roi == (0.0, 1.0) {
                continue;
            }
            let mut shape = cur.shape().to_vec();
            shape[a] = sizes[k];
            let mut out = Tensor::zeros(DType::F64, shape.clone());
            let mut data = out.data().to_vec();
            let strides = crate::tensor::strides_of(&shape);
            for mut idx in indices(&shape) {
                if idx[a] != 0 {
                    continue;
                }
                let line: Vec<f64> = (0..len_in)
                    .map(|i| {
                        idx[a] = i;
                        cur.at(&idx)
                    })
                    .collect();
                let res = naive_1d(&line, sizes[k], s, op, roi);
                for (y, v) in res.into_iter().enumerate() {
                    idx[a] = y;
                    data[idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()] = v;
                }
            }
            out = Tensor::new(DType::F64, shape, data).unwrap();
            cur = out;
        }
        (cur.shape().to_vec(), cur.data().to_vec())
    }

    fn ctm_of(i: u8) -> C {
        [
            C::HalfPixel,
            C::HalfPixelSymmetric,
            C::PytorchHalfPixel,
            C::AlignCorners,
            C::Asymmetric,
            C::TfCropAndResize,
        ][i as usize % 6]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn matches_naive_resampling(mode in 0u8..3, ctm in 0u8..6, nm in 0u8..4, h in 1usize..7,
                                    w in 1usize..7, oh in 1usize..11, ow in 1usize..11,
                                    use_scales in proptest::bool::ANY, excl in proptest::bool::ANY,
                                    aa in proptest::bool::ANY, swap in proptest::bool::ANY,
                                    a in -1.0f64..-0.4, seed in 0u64..1000) {
            let mode = [ResizeMode::Nearest, ResizeMode::Linear, ResizeMode::Cubic][mode as usize];
            let ctm = ctm_of(ctm);
            let x = rand_tensor(DType::F64, vec![2, h, w], seed);
            let axes = if swap { vec![-1, 1] } else { vec![1, 2] };
            let sizes = if swap { vec![ow, oh] } else { vec![oh, ow] };
            let mut op = Resize::new(axes, sizes.iter().map(|&s| Dim::from(s)).collect());
            op.mode = mode;
            op.coordinate_transformation_mode = ctm;
            op.nearest_mode = [NearestMode::RoundPreferFloor, NearestMode::RoundPreferCeil, NearestMode::Floor, NearestMode::Ceil][nm as usize];
            op.exclude_outside = excl;
            op.antialias = aa && mode != ResizeMode::Nearest;
            op.cubic_coeff_a = a;
            op.extrapolation_value = 7.5;
            if use_scales {
                // Scales near but not equal to len_out/len_in, as ONNX scales inputs give.
                let ins = if swap { [w, h] } else { [h, w] };
                op.scales = Some(sizes.iter().zip(ins).map(|(&o, i)| (o as f64 + 0.3) / i as f64).collect());
            }
            if ctm == C::TfCropAndResize {
                op.roi = vec![0.1, -0.2, 0.8, 1.1];
            }
            let got = eval_op(Op::Resize(op.clone()), std::slice::from_ref(&x)).unwrap();
            let (shape, want) = naive(&x, &op, &sizes);
            check_rounded(&got[0], DType::F64, &shape, &want).map_err(TestCaseError::fail)?;
        }

        /// Nearest with asymmetric coordinates and an integer scale is `upsample_nearest2d`.
        #[test]
        fn integer_nearest_upsampling_is_upsample_nearest2d(h in 1usize..5, w in 1usize..5,
                                                            s in 1u64..4, seed in 0u64..1000) {
            let x = rand_tensor(DType::F16, vec![1, 2, h, w], seed);
            let su = s as usize;
            let mut op = Resize::new(vec![2, 3], vec![Dim::from(h * su), Dim::from(w * su)]);
            op.coordinate_transformation_mode = C::Asymmetric;
            op.nearest_mode = NearestMode::Floor;
            op.scales = Some(vec![s as f64, s as f64]);
            let a = eval_op(Op::Resize(op), std::slice::from_ref(&x)).unwrap();
            let b = eval_op(Op::UpsampleNearest2d(UpsampleNearest2d { scale: s }), &[x]).unwrap();
            prop_assert_eq!(&a[0], &b[0]);
        }
    }

    /// ONNX's `test_resize_upsample_scales_linear` (half_pixel, scales 2) by hand.
    #[test]
    fn bilinear_upsample_example_from_the_onnx_tests() {
        let x = Tensor::new(DType::F32, vec![1, 1, 2, 2], vec![1., 2., 3., 4.]).unwrap();
        let mut op = Resize::new(vec![2, 3], vec![Dim::from(4u64), Dim::from(4u64)]);
        op.mode = ResizeMode::Linear;
        op.scales = Some(vec![2.0, 2.0]);
        let y = eval_op(Op::Resize(op), &[x]).unwrap();
        let want = [
            1.0, 1.25, 1.75, 2.0, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3.0, 3.25, 3.75, 4.0,
        ];
        check_exact(&y[0], DType::F32, &[1, 1, 4, 4], &want).unwrap();
    }

    #[test]
    fn integer_dtypes_round_and_symbolic_sizes_stay_symbolic() {
        let x = Tensor::new(DType::U8, vec![1, 2], vec![0., 255.]).unwrap();
        let mut op = Resize::new(vec![1], vec![Dim::from(3u64)]);
        op.mode = ResizeMode::Linear;
        op.coordinate_transformation_mode = C::AlignCorners;
        let y = eval_op(Op::Resize(op), &[x]).unwrap();
        // 127.5 rounds half to even.
        check_exact(&y[0], DType::U8, &[1, 3], &[0., 128., 255.]).unwrap();
        let m = Module::new();
        let cx = InferCx { module: &m };
        let t = TensorType::new(DType::F32, [Dim::sym("N"), Dim::from(3u64), Dim::sym("H")]);
        let two_h = Dim::sym("H").mul_int(2).unwrap();
        let op = Resize::new(vec![-1], vec![two_h.clone()]);
        let r = op.infer(&cx, &[t]).unwrap();
        assert_eq!(r[0].shape, vec![Dim::sym("N"), Dim::from(3u64), two_h]);
    }

    #[test]
    fn attribute_errors() {
        let x = rand_tensor(DType::F32, vec![1, 2, 3], 0);
        let run = |op: Resize| {
            eval_op(Op::Resize(op), std::slice::from_ref(&x))
                .unwrap_err()
                .to_string()
        };
        let e = run(Resize::new(
            vec![1, -2],
            vec![Dim::from(2u64), Dim::from(2u64)],
        ));
        assert!(e.contains("listed twice"), "{e}");
        let e = run(Resize::new(vec![3], vec![Dim::from(2u64)]));
        assert!(e.contains("out of range"), "{e}");
        let e = run(Resize::new(vec![1], vec![]));
        assert!(e.contains("sizes needs one entry"), "{e}");
        let mut op = Resize::new(vec![1], vec![Dim::from(2u64)]);
        op.scales = Some(vec![0.0]);
        assert!(run(op).contains("finite and > 0"));
        let mut op = Resize::new(vec![1], vec![Dim::from(2u64)]);
        op.antialias = true;
        assert!(run(op).contains("not nearest"));
        let mut op = Resize::new(vec![1], vec![Dim::from(2u64)]);
        op.coordinate_transformation_mode = C::TfCropAndResize;
        assert!(run(op).contains("needs roi"));
        let mut op = Resize::new(vec![1], vec![Dim::from(2u64)]);
        op.roi = vec![0.0, 1.0];
        assert!(run(op).contains("tf_crop_and_resize only"));
        let e = eval_op(
            Op::Resize(Resize::new(vec![1], vec![Dim::from(2u64)])),
            &[Tensor::zeros(DType::F32, vec![1, 0])],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("is empty"), "{e}");
        let b = Tensor::zeros(DType::Bool, vec![1, 2]);
        let e = eval_op(
            Op::Resize(Resize::new(vec![1], vec![Dim::from(4u64)])),
            &[b],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("numeric"), "{e}");
    }
}
