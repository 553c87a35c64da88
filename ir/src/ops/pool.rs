//! `pool`: N-D max, average and Lp pooling in channels-first layout (ONNX `MaxPool`,
//! `AveragePool`, `LpPool`).

use super::util::{expect_arity, expect_float, expect_numeric, op_err};
use super::window::{next_index, result_numel, strides, Spatial};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// What a pooling window computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// The largest input cell (ONNX `MaxPool`).
    Max,
    /// The mean (ONNX `AveragePool`).
    Avg,
    /// `(Σ |x|^p)^(1/p)` (ONNX `LpPool`).
    Lp,
}

fn two() -> i64 {
    2
}

/// ONNX `MaxPool` / `AveragePool` / `LpPool` for any spatial rank `r >= 1`:
/// `x[N, C, D1…Dr] → y[N, C, O1…Or]`, windows of `kernel` cells `dilations` apart, `strides`
/// apart, over the input padded by `pads = [begin…, end…]`. `Oi = ⌊(Di + begin + end − span)/s⌋ + 1`
/// with `span = dil·(k − 1) + 1`; with `ceil_mode`, `⌈(Di + begin + end − span)/s⌉ + 1` less the
/// windows that would start past `Di + begin` (ONNX: the last window starts inside the input or
/// the begin padding). Symbolic `Di` give expressions.
///
/// A window's cells are input cells, padding cells (inside `[−begin, Di + end)`), and, in ceil
/// mode, cells past the end padding, which are ignored.
/// - `max`: the largest input cell; padding never wins. NaN cells are skipped (a window of only
///   NaN gives NaN); ties go to the first cell in row-major order. A window without input cells
///   (possible only with dilations) gives −∞. Any numeric dtype.
/// - `avg`: the sum of the input cells over the number of input cells, or with
///   `count_include_pad` over the number of input and padding cells. 0/0 (a window without
///   input cells) gives NaN. Float dtypes.
/// - `lp`: `(Σ |x|^p)^(1/p)` over the input cells (padding counts as 0). Float dtypes.
///
/// With `indices` (max only) a second result `i64[N, C, O1…Or]` holds where each maximum came
/// from, as ONNX `MaxPool`'s `Indices`: the offset into the whole flattened input,
/// `(n·C + c)·D1⋯Dr + offset(position)`, the position flattened row-major (`storage_order` 0)
/// or column-major (`storage_order` 1, first axis fastest); −1 for a window without input cells.
/// Without `indices` there is one result.
///
/// This follows the operator spec and ONNX Runtime where the onnx python reference differs:
/// in ceil mode the reference spreads the extension of the padded input over both ends, which
/// shifts every `avg`/`lp` window by a cell when the extension is 2 or more; and its `lp` scales
/// an average by the kernel size, which is wrong at padded borders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// `max`, `avg` or `lp`.
    pub kind: PoolKind,
    /// Window size per spatial axis.
    pub kernel: Vec<u64>,
    /// Strides per spatial axis (empty: all 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strides: Vec<u64>,
    /// Padding `[begin_1…begin_r, end_1…end_r]` (empty: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pads: Vec<u64>,
    /// Dilations per spatial axis (empty: all 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dilations: Vec<u64>,
    /// Count a partial last window (see the type docs; default false).
    #[serde(default)]
    pub ceil_mode: bool,
    /// `avg` only: padding cells count in the divisor (default false, as in ONNX).
    #[serde(default)]
    pub count_include_pad: bool,
    /// `lp` only: the exponent `p >= 1` (default 2).
    #[serde(default = "two")]
    pub p: i64,
    /// `max` only: also return the indices of the maxima (default false).
    #[serde(default)]
    pub indices: bool,
    /// How `indices` flatten a position: 0 row-major (default), 1 column-major.
    #[serde(default)]
    pub storage_order: u8,
}

impl Pool {
    /// A pool of `kind` with `kernel`, unit strides, no padding and the ONNX defaults.
    pub fn new(kind: PoolKind, kernel: Vec<u64>) -> Pool {
        Pool {
            kind,
            kernel,
            strides: vec![],
            pads: vec![],
            dilations: vec![],
            ceil_mode: false,
            count_include_pad: false,
            p: 2,
            indices: false,
            storage_order: 0,
        }
    }

    /// Validated attributes for `r` spatial axes, with each axis's window span.
    pub fn spatial(&self, r: usize) -> Result<(Spatial, Vec<u64>), OpError> {
        let op = Self::NAME;
        let sp = Spatial::new(op, r, &self.strides, &self.pads, &self.dilations)?;
        if self.kernel.len() != r {
            crate::bail!(
                "pool: kernel needs one entry per spatial axis ({r}), found {:?}",
                self.kernel
            );
        }
        if self.count_include_pad && self.kind != PoolKind::Avg {
            crate::bail!("pool: count_include_pad applies to kind avg only");
        }
        if self.indices && self.kind != PoolKind::Max {
            crate::bail!("pool: indices are returned by kind max only");
        }
        if self.storage_order > 1 {
            crate::bail!(
                "pool: storage_order must be 0 (row-major) or 1 (column-major), found {}",
                self.storage_order
            );
        }
        if self.kind == PoolKind::Lp && self.p < 1 {
            crate::bail!("pool: lp needs p >= 1, found {}", self.p);
        }
        let spans = (0..r)
            .map(|i| sp.span(op, i, self.kernel[i]))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((sp, spans))
    }
}

impl OpSpec for Pool {
    const NAME: &'static str = "pool";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        match self.kind {
            PoolKind::Max => expect_numeric(Self::NAME, "x", x)?,
            PoolKind::Avg | PoolKind::Lp => expect_float(Self::NAME, "x", x)?,
        }
        if x.rank() < 3 {
            crate::bail!("pool expects x[N,C,D1…Dr] (rank >= 3), found {x}");
        }
        let (sp, spans) = self.spatial(x.rank() - 2)?;
        let mut shape = x.shape[..2].to_vec();
        for (i, &span) in spans.iter().enumerate() {
            shape.push(sp.count_dim(Self::NAME, i, &x.shape[2 + i], span, self.ceil_mode)?);
        }
        let mut out = vec![TensorType::new(x.dtype, shape.clone())];
        if self.indices {
            out.push(TensorType::new(DType::I64, shape));
        }
        Ok(out)
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        if x.rank() < 3 {
            crate::bail!("pool needs x of rank >= 3");
        }
        let r = x.rank() - 2;
        let (sp, spans) = self.spatial(r)?;
        let xs = x.shape();
        let dims = &xs[2..];
        let mut out = Vec::with_capacity(r);
        for (i, &span) in spans.iter().enumerate() {
            out.push(sp.count(Self::NAME, i, dims[i] as u64, span, self.ceil_mode)? as usize);
        }
        let ks: Vec<usize> = self.kernel.iter().map(|&k| k as usize).collect();
        let plane: usize = dims.iter().product();
        let planes = xs[0] * xs[1];
        let row = strides(dims);
        // Column-major strides: the first spatial axis fastest.
        let mut col = vec![1usize; r];
        for i in 1..r {
            col[i] = col[i - 1] * dims[i - 1];
        }
        let flat = if self.storage_order == 1 { &col } else { &row };
        let n_out: usize = out.iter().product();
        let mut shape = xs[..2].to_vec();
        shape.extend_from_slice(&out);
        result_numel(Self::NAME, &shape)?;
        let mut y = Vec::with_capacity(planes * n_out);
        let mut idx = Vec::with_capacity(if self.indices { planes * n_out } else { 0 });
        let xd = x.data();
        let p = self.p as f64;
        for pl in 0..planes {
            if n_out == 0 {
                break;
            }
            let base = pl * plane;
            let mut o = vec![0usize; r];
            loop {
                // (value, flat offset) of the input cells, in row-major window order.
                let mut best: Option<(f64, usize)> = None;
                let (mut sum, mut cells, mut padded) = (0.0, 0usize, 0usize);
                let mut k = vec![0usize; r];
                loop {
                    let mut inside = true;
                    let mut in_pad = true;
                    let (mut off, mut foff) = (0usize, 0usize);
                    for i in 0..r {
                        let q = (o[i] as i64) * sp.strides[i] as i64
                            + (k[i] as i64) * sp.dilations[i] as i64
                            - sp.begin[i] as i64;
                        if q >= dims[i] as i64 + sp.end[i] as i64 {
                            in_pad = false;
                        }
                        if q < 0 || q >= dims[i] as i64 {
                            inside = false;
                        } else {
                            off += q as usize * row[i];
                            foff += q as usize * flat[i];
                        }
                    }
                    if in_pad {
                        padded += 1;
                    }
                    if inside {
                        let v = xd[base + off];
                        cells += 1;
                        match self.kind {
                            PoolKind::Max => {
                                let take = match best {
                                    None => true,
                                    Some((b, _)) => v > b || (b.is_nan() && !v.is_nan()),
                                };
                                if take {
                                    best = Some((v, foff));
                                }
                            }
                            PoolKind::Avg => sum += v,
                            PoolKind::Lp => sum += v.abs().powf(p),
                        }
                    }
                    if !next_index(&mut k, &ks) {
                        break;
                    }
                }
                match self.kind {
                    PoolKind::Max => {
                        y.push(best.map_or(f64::NEG_INFINITY, |b| b.0));
                        if self.indices {
                            idx.push(best.map_or(-1.0, |b| (base + b.1) as f64));
                        }
                    }
                    PoolKind::Avg => {
                        let div = if self.count_include_pad {
                            padded
                        } else {
                            cells
                        };
                        y.push(sum / div as f64);
                    }
                    PoolKind::Lp => y.push(sum.powf(1.0 / p)),
                }
                if !next_index(&mut o, &out) {
                    break;
                }
            }
        }
        let mut res = vec![Tensor::new(x.dtype(), shape.clone(), y).map_err(op_err)?];
        if self.indices {
            res.push(Tensor::new(DType::I64, shape, idx).map_err(op_err)?);
        }
        Ok(res)
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::{Pool, PoolKind};
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::avg_pool2d::AvgPool2d;
    use crate::ops::testing::{check_exact, check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Naive pooling: list each window's cells explicitly as (coordinate, value or padding),
    /// with the output size found by trying window starts one by one.
    fn naive(x: &Tensor, op: &Pool) -> (Vec<usize>, Vec<f64>, Vec<f64>) {
        let r = x.rank() - 2;
        let dims = &x.shape()[2..];
        let get = |v: &[u64], i: usize, d: u64| v.get(i).copied().unwrap_or(d) as i64;
        let mut out = vec![];
        for i in 0..r {
            let (s, d, k) = (
                get(&op.strides, i, 1),
                get(&op.dilations, i, 1),
                op.kernel[i] as i64,
            );
            let (b, e) = (get(&op.pads, i, 0), get(&op.pads, r + i, 0));
            let n = dims[i] as i64;
            let span = d * (k - 1) + 1;
            let mut count = 0;
            loop {
                let start = count * s - b; // first cell of window `count`
                let ok = if op.ceil_mode {
                    // Starts inside input or begin padding; no later than ⌈(L − span)/s⌉·s.
                    start < n && count * s <= (n + b + e - span + s - 1).div_euclid(s) * s
                } else {
                    start + span <= n + e
                };
                if !ok {
                    break;
                }
                count += 1;
            }
            out.push(count as usize);
        }
        let mut shape = x.shape()[..2].to_vec();
        shape.extend_from_slice(&out);
        let (mut vals, mut idxs) = (vec![], vec![]);
        for oi in indices(&shape) {
            let mut cells: Vec<(Vec<usize>, f64)> = vec![];
            let mut npad = 0usize;
            for ki in indices(&op.kernel.iter().map(|&k| k as usize).collect::<Vec<_>>()) {
                let mut coord = vec![];
                let mut real = true;
                let mut beyond = false;
                for i in 0..r {
                    let q = oi[2 + i] as i64 * get(&op.strides, i, 1)
                        + ki[i] as i64 * get(&op.dilations, i, 1)
                        - get(&op.pads, i, 0);
                    if q < 0 || q >= dims[i] as i64 {
                        real = false;
                    }
                    if q >= dims[i] as i64 + get(&op.pads, r + i, 0) {
                        beyond = true;
                    }
                    coord.push(q.max(0) as usize);
                }
                if real {
                    let mut full = vec![oi[0], oi[1]];
                    full.extend_from_slice(&coord);
                    cells.push((coord, x.at(&full)));
                } else if !beyond {
                    npad += 1;
                }
            }
            match op.kind {
                PoolKind::Max => {
                    let finite: Vec<&(Vec<usize>, f64)> =
                        cells.iter().filter(|c| !c.1.is_nan()).collect();
                    let m = finite.iter().map(|c| c.1).fold(f64::NEG_INFINITY, f64::max);
                    let first = finite.iter().find(|c| c.1 == m);
                    vals.push(if cells.is_empty() {
                        f64::NEG_INFINITY
                    } else if finite.is_empty() {
                        f64::NAN
                    } else {
                        m
                    });
                    let at = first
                        .map(|c| c.0.clone())
                        .or_else(|| cells.first().map(|c| c.0.clone()));
                    idxs.push(match at {
                        None => -1.0,
                        Some(c) => {
                            let plane = oi[0] * x.shape()[1] + oi[1];
                            let mut off = 0usize;
                            if op.storage_order == 0 {
                                for i in 0..r {
                                    off = off * dims[i] + c[i];
                                }
                            } else {
                                for i in (0..r).rev() {
                                    off = off * dims[i] + c[i];
                                }
                            }
                            (plane * dims.iter().product::<usize>() + off) as f64
                        }
                    });
                }
                PoolKind::Avg => {
                    let s: f64 = cells.iter().map(|c| c.1).sum();
                    let n = cells.len() + if op.count_include_pad { npad } else { 0 };
                    vals.push(s / n as f64);
                }
                PoolKind::Lp => {
                    let s: f64 = cells.iter().map(|c| c.1.abs().powi(op.p as i32)).sum();
                    vals.push(s.powf(1.0 / op.p as f64));
                }
            }
        }
        (shape, vals, idxs)
    }

    fn kind_of(k: u8) -> PoolKind {
        [PoolKind::Max, PoolKind::Avg, PoolKind::Lp][k as usize % 3]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        #[test]
        fn matches_naive_windows(kind in 0u8..3, r in 1usize..4, size in 1usize..6, k in 1u64..4,
                                 s in 1u64..4, dil in 1u64..3, pb in 0u64..3, pe in 0u64..3,
                                 ceil in proptest::bool::ANY, incl in proptest::bool::ANY,
                                 order in 0u8..2, p in 1i64..4, seed in 0u64..1000) {
            let kind = kind_of(kind);
            let mut shape = vec![2, 2];
            for i in 0..r { shape.push(size + i); }
            let mut x = rand_tensor(DType::F64, shape, seed);
            if kind == PoolKind::Max && seed % 4 == 0 {
                // Ties and NaN: round to a coarse grid, poison a few cells.
                let d: Vec<f64> = x.data().iter().enumerate()
                    .map(|(i, v)| if i % 7 == 3 { f64::NAN } else { v.round() }).collect();
                x = Tensor::new(DType::F64, x.shape().to_vec(), d).unwrap();
            }
            let mut op = Pool::new(kind, (0..r).map(|i| if i == 0 { k } else { (k + i as u64) % 3 + 1 }).collect());
            op.strides = (0..r).map(|i| if i == r - 1 { s } else { 1 }).collect();
            op.dilations = (0..r).map(|i| if i == 0 { dil } else { 1 }).collect();
            op.pads = [vec![pb; r], vec![pe; r]].concat();
            op.ceil_mode = ceil;
            op.count_include_pad = incl && kind == PoolKind::Avg;
            op.p = p;
            op.indices = kind == PoolKind::Max;
            op.storage_order = order;
            let (shape, want, want_idx) = naive(&x, &op);
            match eval_op(Op::Pool(op.clone()), std::slice::from_ref(&x)) {
                Ok(got) => {
                    // Infinite values (windows without input cells) compare exactly.
                    let inf: Vec<bool> = want.iter().map(|v| v.is_infinite()).collect();
                    let fin = |v: &[f64]| v.iter().zip(&inf).map(|(&x, &i)| if i { 0.0 } else { x }).collect::<Vec<_>>();
                    for (g, (w, i)) in got[0].data().iter().zip(want.iter().zip(&inf)) {
                        prop_assert!(!i || g == w, "{g} vs {w}");
                    }
                    let g0 = Tensor::new(DType::F64, got[0].shape().to_vec(), fin(got[0].data())).unwrap();
                    check_rounded(&g0, DType::F64, &shape, &fin(&want)).map_err(TestCaseError::fail)?;
                    if op.indices {
                        check_exact(&got[1], DType::I64, &shape, &want_idx).map_err(TestCaseError::fail)?;
                    }
                }
                Err(e) => {
                    prop_assert!(e.to_string().contains("no room"), "{e}");
                    prop_assert!(shape.contains(&0), "{shape:?}");
                }
            }
        }

        /// 2-D average pooling agrees with the existing `avg_pool2d` op.
        #[test]
        fn avg_2d_agrees_with_avg_pool2d(k in 1u64..4, s in 1u64..3, p in 0u64..2,
                                         incl in proptest::bool::ANY, seed in 0u64..1000) {
            let p = p.min(k / 2);
            let x = rand_tensor(DType::F32, vec![1, 2, 5, 6], seed);
            let mut op = Pool::new(PoolKind::Avg, vec![k, k]);
            op.strides = vec![s, s];
            op.pads = vec![p, p, p, p];
            op.count_include_pad = incl;
            let old = AvgPool2d { kernel: [k, k], stride: [s, s], padding: [p, p, p, p], count_include_pad: incl };
            let a = eval_op(Op::Pool(op), std::slice::from_ref(&x)).unwrap();
            let b = eval_op(Op::AvgPool2d(old), &[x]).unwrap();
            prop_assert_eq!(&a[0], &b[0]);
        }
    }

    /// ONNX's `test_maxpool_2d_ceil` and `test_averagepool_2d_ceil` by hand: 4×4 input 1…16,
    /// kernel 3, stride 2, ceil mode → 2×2.
    #[test]
    fn ceil_mode_examples_from_the_onnx_spec() {
        let x = Tensor::new(
            DType::F32,
            vec![1, 1, 4, 4],
            (1..=16).map(f64::from).collect(),
        )
        .unwrap();
        let mut op = Pool::new(PoolKind::Max, vec![3, 3]);
        op.strides = vec![2, 2];
        op.ceil_mode = true;
        let y = eval_op(Op::Pool(op.clone()), std::slice::from_ref(&x)).unwrap();
        check_exact(&y[0], DType::F32, &[1, 1, 2, 2], &[11., 12., 15., 16.]).unwrap();
        op.kind = PoolKind::Avg;
        let y = eval_op(Op::Pool(op), std::slice::from_ref(&x)).unwrap();
        check_exact(&y[0], DType::F32, &[1, 1, 2, 2], &[6., 7.5, 12., 13.5]).unwrap();
        // The last window must start inside the input or the begin padding
        // (`test_maxpool_2d_ceil_output_size_reduce_by_one` in 1-D): input of 2, kernel 1,
        // stride 2 → 1 window, not ⌈1/2⌉ + 1 = 2.
        let x2 = Tensor::new(DType::F32, vec![1, 1, 2], vec![1., 2.]).unwrap();
        let mut op = Pool::new(PoolKind::Max, vec![1]);
        op.strides = vec![2];
        op.ceil_mode = true;
        let y = eval_op(Op::Pool(op), &[x2]).unwrap();
        check_exact(&y[0], DType::F32, &[1, 1, 1], &[1.]).unwrap();
        // Windows over padding: input of 4, kernel 2, stride 2, pads (1, 1), ceil → starts at
        // −1, 1, 3: [pad, 1], [2, 3], [4, pad].
        let x1 = Tensor::new(DType::F32, vec![1, 1, 4], vec![1., 2., 3., 4.]).unwrap();
        let mut op = Pool::new(PoolKind::Max, vec![2]);
        op.strides = vec![2];
        op.pads = vec![1, 1];
        op.ceil_mode = true;
        op.indices = true;
        let y = eval_op(Op::Pool(op), &[x1]).unwrap();
        check_exact(&y[0], DType::F32, &[1, 1, 3], &[1., 3., 4.]).unwrap();
        check_exact(&y[1], DType::I64, &[1, 1, 3], &[0., 2., 3.]).unwrap();
    }

    /// Indices run over the whole flattened input (ONNX `MaxPool`'s `Indices`), in either
    /// storage order.
    #[test]
    fn max_indices_are_global_offsets() {
        let x = Tensor::new(
            DType::F32,
            vec![1, 2, 2, 3],
            vec![
                0., 5., 1., 2., 3., 4., // plane 0: max 5 at (0, 1)
                9., 0., 0., 0., 0., 8., // plane 1: max 9 at (0, 0), 8 at (1, 2)
            ],
        )
        .unwrap();
        let mut op = Pool::new(PoolKind::Max, vec![2, 2]);
        op.indices = true;
        let y = eval_op(Op::Pool(op.clone()), std::slice::from_ref(&x)).unwrap();
        check_exact(&y[0], DType::F32, &[1, 2, 1, 2], &[5., 5., 9., 8.]).unwrap();
        check_exact(&y[1], DType::I64, &[1, 2, 1, 2], &[1., 1., 6., 11.]).unwrap();
        op.storage_order = 1;
        let y = eval_op(Op::Pool(op), &[x]).unwrap();
        // Column-major in the plane: (h, w) → h + w·2.
        check_exact(&y[1], DType::I64, &[1, 2, 1, 2], &[2., 2., 6., 11.]).unwrap();
    }

    #[test]
    fn integer_max_pool_and_attribute_errors() {
        let x = rand_tensor(DType::U8, vec![1, 1, 4, 4], 3);
        let y = eval_op(
            Op::Pool(Pool::new(PoolKind::Max, vec![2, 2])),
            std::slice::from_ref(&x),
        )
        .unwrap();
        assert_eq!(y[0].dtype(), DType::U8);
        let e = eval_op(
            Op::Pool(Pool::new(PoolKind::Avg, vec![2, 2])),
            std::slice::from_ref(&x),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expects a float x"), "{e}");
        let f = rand_tensor(DType::F32, vec![1, 1, 4, 4], 3);
        let run = |op: Pool| {
            eval_op(Op::Pool(op), std::slice::from_ref(&f))
                .unwrap_err()
                .to_string()
        };
        let e = run(Pool::new(PoolKind::Max, vec![2]));
        assert!(
            e.contains("kernel needs one entry per spatial axis (2)"),
            "{e}"
        );
        let mut op = Pool::new(PoolKind::Avg, vec![2, 2]);
        op.indices = true;
        assert!(run(op).contains("kind max only"));
        let mut op = Pool::new(PoolKind::Max, vec![2, 2]);
        op.count_include_pad = true;
        assert!(run(op).contains("kind avg only"));
        let mut op = Pool::new(PoolKind::Lp, vec![2, 2]);
        op.p = 0;
        assert!(run(op).contains("p >= 1"));
        let mut op = Pool::new(PoolKind::Max, vec![2, 2]);
        op.storage_order = 2;
        assert!(run(op).contains("storage_order"));
        let e = run(Pool::new(PoolKind::Max, vec![5, 1]));
        assert!(e.contains("no room"), "{e}");
    }

    #[test]
    fn symbolic_dims_in_ceil_mode() {
        let m = Module::new();
        let cx = InferCx { module: &m };
        let x = TensorType::new(
            DType::F32,
            [Dim::sym("N"), Dim::from(3u64), Dim::sym("H"), Dim::sym("W")],
        );
        let mut op = Pool::new(PoolKind::Max, vec![3, 2]);
        op.strides = vec![2, 2];
        op.pads = vec![1, 0, 1, 0];
        op.ceil_mode = true;
        op.indices = true;
        let t = op.infer(&cx, &[x]).unwrap();
        assert_eq!(t[1].dtype, DType::I64);
        for h in 1..12u64 {
            let b = HashMap::from([("H".to_string(), h), ("W".to_string(), h + 1)]);
            let x = rand_tensor(DType::F32, vec![1, 3, h as usize, h as usize + 1], h);
            let y = eval_op(Op::Pool(op.clone()), &[x]).unwrap();
            assert_eq!(
                t[0].shape[2].eval(&b).unwrap(),
                y[0].shape()[2] as i64,
                "H={h}"
            );
            assert_eq!(
                t[0].shape[3].eval(&b).unwrap(),
                y[0].shape()[3] as i64,
                "H={h}"
            );
        }
    }
}
