//! `grid_sample`: sample an N-D input at normalized grid coordinates, ONNX `GridSample`
//! (opsets 16 and 20, PyTorch `F.grid_sample`).

use super::util::{expect_arity, expect_float, expect_numeric, op_err};
use super::window::{next_index, result_numel, strides};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Interpolation of [`GridSample`] (ONNX opset 16 spells them `bilinear`/`bicubic`, accepted
/// as aliases).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GridSampleMode {
    /// Linear in every spatial axis (the default).
    #[default]
    #[serde(alias = "bilinear")]
    Linear,
    /// The nearest cell (coordinates rounded half to even).
    Nearest,
    /// Cubic convolution in every spatial axis (Keys, a = −0.75).
    #[serde(alias = "bicubic")]
    Cubic,
}

/// What cells outside the input read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GridPaddingMode {
    /// Zero (the default).
    #[default]
    Zeros,
    /// The nearest edge cell.
    Border,
    /// The input mirrored at its borders.
    Reflection,
}

/// ONNX `GridSample` for any spatial rank `r >= 1`, as the onnx package's reference computes
/// it: operands `x[N, C, D1…Dr]` (numeric) and `grid[N, G1…Gr, r]` (float, its own dtype);
/// result `[N, C, G1…Gr]` in `x`'s dtype. `grid[n, g…, :]` holds normalized coordinates in
/// `[−1, 1]`, the LAST spatial axis first (`(x, y)` for 2-D, `(x, y, z)` for 3-D). Each is
/// mapped to a cell coordinate `u = (v + 1)/2·(D − 1)` with `align_corners`, else
/// `u = ((v + 1)·D − 1)/2`.
/// - `nearest` rounds `u` half to even; `linear` weights the 2^r cells around `u` by
///   `(1 − t)`/`t` per axis; `cubic` the 4^r cells `⌊u⌋ − 1 … ⌊u⌋ + 2` by Keys' kernel, a = −0.75.
/// - A coordinate outside `[0, D − 1]` (`align_corners`) or `[−0.5, D − 0.5]` is first clamped
///   into `[0, D − 1]` (`border`) or reflected into the range (`reflection`); then cells outside
///   the input read 0 (`zeros`), the nearest edge cell (`border`) or their reflection
///   (`reflection`).
///
/// f64 throughout, one rounding to `x`'s dtype (integers round half to even; the reference
/// truncates, and computes the cell coordinates in f32). Errors: ranks that do not match, a last grid
/// dim that is not `r`, batch sizes that differ, a non-float grid.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridSample {
    /// Interpolation (default `linear`).
    #[serde(default)]
    pub mode: GridSampleMode,
    /// Out-of-range handling (default `zeros`).
    #[serde(default)]
    pub padding_mode: GridPaddingMode,
    /// Whether −1 and 1 are the centres of the corner cells (true) or their outer edges
    /// (false, the default).
    #[serde(default)]
    pub align_corners: bool,
}

/// Reflect `x` into `[lo, hi]` (the onnx reference's `_gs_reflect`).
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let rng = hi - lo;
    if rng <= 0.0 {
        return lo;
    }
    if x < lo {
        let dx = lo - x;
        let n = (dx / rng).trunc();
        let r = dx - n * rng;
        if n % 2.0 == 0.0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / rng).trunc();
        let r = dx - n * rng;
        if n % 2.0 == 0.0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

/// Keys' cubic weights of the cells `⌊u⌋ − 1 … ⌊u⌋ + 2` for `t = u − ⌊u⌋`.
fn cubic_weights(t: f64) -> [f64; 4] {
    let a = -0.75;
    let (t1, q, q1) = (t + 1.0, 1.0 - t, 2.0 - t);
    [
        ((a * t1 - 5.0 * a) * t1 + 8.0 * a) * t1 - 4.0 * a,
        ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0,
        ((a + 2.0) * q - (a + 3.0)) * q * q + 1.0,
        ((a * q1 - 5.0 * a) * q1 + 8.0 * a) * q1 - 4.0 * a,
    ]
}

impl GridSample {
    /// The cell an integer index `i` reads on an axis of `d` cells with borders `(lo, hi)`, or
    /// `None` for a zero.
    fn cell(&self, i: i64, d: usize, lo: f64, hi: f64) -> Option<usize> {
        let last = d as i64 - 1;
        match self.padding_mode {
            GridPaddingMode::Zeros => (0..=last).contains(&i).then_some(i as usize),
            GridPaddingMode::Border => Some(i.clamp(0, last) as usize),
            GridPaddingMode::Reflection => {
                Some((reflect(i as f64, lo, hi).trunc() as i64).clamp(0, last) as usize)
            }
        }
    }
}

impl OpSpec for GridSample {
    const NAME: &'static str = "grid_sample";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (x, g) = (&inputs[0], &inputs[1]);
        expect_numeric(Self::NAME, "x", x)?;
        expect_float(Self::NAME, "grid", g)?;
        if x.rank() < 3 || g.rank() != x.rank() {
            crate::bail!(
                "grid_sample expects x[N,C,D1…Dr] (rank >= 3) and grid[N,G1…Gr,r] of the same rank, found {x} and {g}"
            );
        }
        let r = x.rank() - 2;
        if g.shape[r + 1].fixed() != Some(r as u64) {
            crate::bail!("grid_sample: the last dim of grid must be {r} (one coordinate per spatial axis of x), found {g}");
        }
        if x.shape[0] != g.shape[0] {
            crate::bail!("grid_sample: x and grid have different batch sizes: {x} and {g}");
        }
        let mut shape = x.shape[..2].to_vec();
        shape.extend_from_slice(&g.shape[1..=r]);
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (x, g) = (inputs[0], inputs[1]);
        if x.rank() < 3 || g.rank() != x.rank() {
            crate::bail!("grid_sample needs x and grid of the same rank >= 3");
        }
        let r = x.rank() - 2;
        let (xs, gs) = (x.shape(), g.shape());
        if gs[r + 1] != r || gs[0] != xs[0] {
            crate::bail!("grid_sample: grid {gs:?} does not fit x {xs:?}");
        }
        let (n, c) = (xs[0], xs[1]);
        let dims = &xs[2..];
        let gdims = &gs[1..=r];
        let mut shape = vec![n, c];
        shape.extend_from_slice(gdims);
        let npos: usize = gdims.iter().product();
        let plane: usize = dims.iter().product();
        let xst = strides(dims);
        let (lo, hi): (Vec<f64>, Vec<f64>) = dims
            .iter()
            .map(|&d| {
                if self.align_corners {
                    (0.0, d as f64 - 1.0)
                } else {
                    (-0.5, d as f64 - 0.5)
                }
            })
            .unzip();
        let taps = match self.mode {
            GridSampleMode::Nearest => 1,
            GridSampleMode::Linear => 2,
            GridSampleMode::Cubic => 4,
        };
        let tap_shape = vec![taps; r];
        let mut y = vec![0.0; result_numel(Self::NAME, &shape)?];
        if plane == 0 {
            // Every cell reads outside the (empty) input.
            if self.padding_mode != GridPaddingMode::Zeros && !y.is_empty() {
                crate::bail!("grid_sample: x has an empty spatial axis");
            }
            return Ok(vec![Tensor::new(x.dtype(), shape, y).map_err(op_err)?]);
        }
        let (xd, gd) = (x.data(), g.data());
        let mut first = vec![0i64; r];
        let mut w = vec![vec![0.0; taps]; r];
        for ni in 0..n {
            for pos in 0..npos {
                // Cell coordinates per spatial axis (the grid lists the last axis first).
                for i in 0..r {
                    let v = gd[(ni * npos + pos) * r + (r - 1 - i)];
                    let d = dims[i] as f64;
                    let mut u = if self.align_corners {
                        (v + 1.0) / 2.0 * (d - 1.0)
                    } else {
                        ((v + 1.0) * d - 1.0) / 2.0
                    };
                    if self.mode == GridSampleMode::Nearest {
                        u = u.round_ties_even();
                    }
                    if u < lo[i] || u > hi[i] {
                        match self.padding_mode {
                            GridPaddingMode::Border => u = u.clamp(0.0, d - 1.0),
                            GridPaddingMode::Reflection => u = reflect(u, lo[i], hi[i]),
                            GridPaddingMode::Zeros => {}
                        }
                    }
                    if !u.is_finite() || u.abs() > 1e15 {
                        u = if u.is_nan() {
                            -1e15
                        } else {
                            u.clamp(-1e15, 1e15)
                        };
                    }
                    match self.mode {
                        GridSampleMode::Nearest => {
                            first[i] = u.trunc() as i64;
                            w[i][0] = 1.0;
                        }
                        GridSampleMode::Linear => {
                            let f = u.floor();
                            first[i] = f as i64;
                            w[i][0] = 1.0 - (u - f);
                            w[i][1] = u - f;
                        }
                        GridSampleMode::Cubic => {
                            let f = u.floor();
                            first[i] = f as i64 - 1;
                            w[i].copy_from_slice(&cubic_weights(u - f));
                        }
                    }
                }
                for ci in 0..c {
                    let base = (ni * c + ci) * plane;
                    let mut acc = 0.0;
                    let mut t = vec![0usize; r];
                    loop {
                        let mut weight = 1.0;
                        let mut off = Some(0usize);
                        for i in 0..r {
                            weight *= w[i][t[i]];
                            let cell = self.cell(first[i] + t[i] as i64, dims[i], lo[i], hi[i]);
                            off = off.zip(cell).map(|(o, q)| o + q * xst[i]);
                        }
                        acc += weight * off.map_or(0.0, |o| xd[base + o]);
                        if !next_index(&mut t, &tap_shape) {
                            break;
                        }
                    }
                    y[(ni * c + ci) * npos + pos] = acc;
                }
            }
        }
        Ok(vec![Tensor::new(x.dtype(), shape, y).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use super::{GridPaddingMode, GridSample, GridSampleMode};
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, check_rounded, eval_op, rand_tensor};
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    /// Naive 2-D bilinear sampling from PyTorch's documentation: unnormalize, then for zeros
    /// padding read the four neighbours with out-of-range ones as 0; for border padding clamp
    /// the coordinate into the image first.
    fn naive_bilinear(x: &Tensor, g: &Tensor, align: bool, border: bool) -> Vec<f64> {
        let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (gh, gw) = (g.shape()[1], g.shape()[2]);
        let un = |v: f64, d: usize| {
            if align {
                (v + 1.0) / 2.0 * (d as f64 - 1.0)
            } else {
                ((v + 1.0) * d as f64 - 1.0) / 2.0
            }
        };
        let mut out = vec![];
        for b in 0..n {
            for ch in 0..c {
                for i in 0..gh {
                    for j in 0..gw {
                        let mut ix = un(g.at(&[b, i, j, 0]), w);
                        let mut iy = un(g.at(&[b, i, j, 1]), h);
                        if border {
                            ix = ix.clamp(0.0, w as f64 - 1.0);
                            iy = iy.clamp(0.0, h as f64 - 1.0);
                        }
                        let (x0, y0) = (ix.floor(), iy.floor());
                        let px = |yy: f64, xx: f64| {
                            if yy < 0.0 || xx < 0.0 || yy >= h as f64 || xx >= w as f64 {
                                0.0
                            } else {
                                x.at(&[b, ch, yy as usize, xx as usize])
                            }
                        };
                        let (tx, ty) = (ix - x0, iy - y0);
                        out.push(
                            px(y0, x0) * (1.0 - tx) * (1.0 - ty)
                                + px(y0, x0 + 1.0) * tx * (1.0 - ty)
                                + px(y0 + 1.0, x0) * (1.0 - tx) * ty
                                + px(y0 + 1.0, x0 + 1.0) * tx * ty,
                        );
                    }
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn bilinear_matches_the_pytorch_formula(h in 1usize..5, w in 1usize..5, gh in 1usize..4,
                                                gw in 1usize..4, align in proptest::bool::ANY,
                                                border in proptest::bool::ANY, seed in 0u64..1000) {
            let x = rand_tensor(DType::F64, vec![2, 3, h, w], seed);
            // Coordinates in [-1.4, 1.4]: some outside the image.
            let g = Tensor::new(DType::F64, vec![2, gh, gw, 2],
                rand_tensor(DType::F64, vec![2 * gh * gw * 2], seed + 1).data().iter().map(|v| v * 0.7).collect()).unwrap();
            let op = GridSample {
                mode: GridSampleMode::Linear,
                padding_mode: if border { GridPaddingMode::Border } else { GridPaddingMode::Zeros },
                align_corners: align,
            };
            let got = eval_op(Op::GridSample(op), &[x.clone(), g.clone()]).unwrap();
            let want = naive_bilinear(&x, &g, align, border);
            check_rounded(&got[0], DType::F64, &[2, 3, gh, gw], &want).map_err(TestCaseError::fail)?;
        }

        /// Sampling at the cell centres reproduces the input in every mode and padding.
        #[test]
        fn cell_centres_reproduce_the_input(mode in 0u8..3, pad in 0u8..3, align in proptest::bool::ANY,
                                           d in 2usize..5, h in 2usize..5, w in 2usize..5,
                                           seed in 0u64..1000) {
            let x = rand_tensor(DType::F64, vec![1, 2, d, h, w], seed);
            let norm = |i: usize, n: usize| if align {
                2.0 * i as f64 / (n as f64 - 1.0) - 1.0
            } else {
                (2.0 * i as f64 + 1.0) / n as f64 - 1.0
            };
            let mut gv = vec![];
            for k in 0..d { for i in 0..h { for j in 0..w {
                gv.extend([norm(j, w), norm(i, h), norm(k, d)]);
            }}}
            let g = Tensor::new(DType::F64, vec![1, d, h, w, 3], gv).unwrap();
            let op = GridSample {
                mode: [GridSampleMode::Linear, GridSampleMode::Nearest, GridSampleMode::Cubic][mode as usize],
                padding_mode: [GridPaddingMode::Zeros, GridPaddingMode::Border, GridPaddingMode::Reflection][pad as usize],
                align_corners: align,
            };
            let got = eval_op(Op::GridSample(op), &[x.clone(), g]).unwrap();
            check_rounded(&got[0], DType::F64, x.shape(), x.data()).map_err(TestCaseError::fail)?;
        }
    }

    /// Reflection and nearest by hand on a 1-D input [10, 20, 30] (as `[1, 1, 1, 3]`).
    #[test]
    fn reflection_and_nearest_by_hand() {
        let x = Tensor::new(DType::F32, vec![1, 1, 1, 3], vec![10., 20., 30.]).unwrap();
        // Normalized x coordinates (align_corners = false: −1 is the left edge of cell 0).
        let xs = [-1.0, -2.0 / 3.0, 0.0, 1.0, 5.0 / 3.0];
        let mut gv = vec![];
        for v in xs {
            gv.extend([v, 0.0]);
        }
        let g = Tensor::new(DType::F32, vec![1, 1, 5, 2], gv).unwrap();
        let run = |mode, padding_mode| {
            let op = GridSample {
                mode,
                padding_mode,
                align_corners: false,
            };
            eval_op(Op::GridSample(op), &[x.clone(), g.clone()]).unwrap()
        };
        // u = ((v + 1)·3 − 1)/2: −0.5, 0, 1, 2.5, 3.5.
        let y = run(GridSampleMode::Nearest, GridPaddingMode::Zeros);
        // rint: −0 → 10, 0 → 10, 1 → 20, 2 (half to even) → 30, 4 → outside → 0.
        check_exact(&y[0], DType::F32, &[1, 1, 1, 5], &[10., 10., 20., 30., 0.]).unwrap();
        let y = run(GridSampleMode::Linear, GridPaddingMode::Zeros);
        check_rounded(&y[0], DType::F32, &[1, 1, 1, 5], &[5., 10., 20., 15., 0.]).unwrap();
        let y = run(GridSampleMode::Linear, GridPaddingMode::Reflection);
        // 3.5 reflects about 2.5 to 1.5 → 25; −0.5 and 2.5 are on the borders → edge values.
        check_rounded(&y[0], DType::F32, &[1, 1, 1, 5], &[10., 10., 20., 30., 25.]).unwrap();
        let y = run(GridSampleMode::Linear, GridPaddingMode::Border);
        check_rounded(&y[0], DType::F32, &[1, 1, 1, 5], &[10., 10., 20., 30., 30.]).unwrap();
    }

    #[test]
    fn shape_errors() {
        let x = rand_tensor(DType::F32, vec![1, 1, 3, 3], 0);
        let run = |g: Tensor| {
            eval_op(Op::GridSample(GridSample::default()), &[x.clone(), g])
                .unwrap_err()
                .to_string()
        };
        assert!(run(rand_tensor(DType::F32, vec![1, 2, 2, 3], 0))
            .contains("last dim of grid must be 2"));
        assert!(run(rand_tensor(DType::F32, vec![2, 2, 2, 2], 0)).contains("different batch sizes"));
        assert!(run(rand_tensor(DType::F32, vec![1, 2, 2], 0)).contains("same rank"));
        assert!(run(rand_tensor(DType::I32, vec![1, 2, 2, 2], 0)).contains("float grid"));
        // Opset 16's names parse as aliases.
        let op: GridSample = serde_json::from_str(r#"{"mode":"bicubic"}"#).unwrap();
        assert_eq!(op.mode, GridSampleMode::Cubic);
    }
}
