//! `conv2d`: 2-D convolution (cross-correlation, PyTorch `F.conv2d`) in NCHW layout.

use super::util::{expect_arity_range, expect_float, expect_rank, fixed_dim, op_err, same_dtype};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

fn ones2() -> [u64; 2] {
    [1, 1]
}

fn one() -> u64 {
    1
}

/// Operands `(x[N,C,H,W], w[O, C/groups, kh, kw], [bias[O]])`, one float dtype. Result
/// `[N, O, Ho, Wo]` with `Ho = (H + top + bottom − dil_h·(kh−1) − 1) / stride_h + 1` (floor), and
/// likewise for W. Zero padding. `C`, `O`, `H`, `W` and the kernel must be fixed; `N` may be
/// symbolic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Strides `[h, w]` (default `[1, 1]`).
    #[serde(default = "ones2")]
    pub stride: [u64; 2],
    /// Zero padding `[top, left, bottom, right]` (default none).
    #[serde(default)]
    pub padding: [u64; 4],
    /// Dilations `[h, w]` (default `[1, 1]`).
    #[serde(default = "ones2")]
    pub dilation: [u64; 2],
    /// Groups: input and output channels split into this many independent convolutions.
    #[serde(default = "one")]
    pub groups: u64,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d {
            stride: ones2(),
            padding: [0; 4],
            dilation: ones2(),
            groups: 1,
        }
    }
}

/// Output size of one spatial dim of a window op as a dim: the fixed size when `n` is fixed,
/// else `floor((n + pad - span) / stride) + 1` (the window must fit once the symbols are bound).
pub(crate) fn window_out_dim(
    op: &str,
    what: &str,
    n: &Dim,
    pad: u64,
    k: u64,
    dil: u64,
    stride: u64,
) -> Result<Dim, OpError> {
    if let Some(n) = n.fixed() {
        return Ok(Dim::from(window_out(op, what, n, pad, k, dil, stride)?));
    }
    if stride == 0 || dil == 0 || k == 0 {
        crate::bail!("{op}: stride, dilation and kernel must be >= 1 ({what})");
    }
    let span = dil.saturating_mul(k - 1).saturating_add(1);
    let off = pad as i64 - span as i64;
    Ok(n.add(&Dim::from_i64(off))?
        .div_floor(stride)?
        .add(&Dim::from(1u64))?)
}

/// Output size of one spatial dim of a window op, or an error when the window does not fit.
pub(crate) fn window_out(
    op: &str,
    what: &str,
    n: u64,
    pad: u64,
    k: u64,
    dil: u64,
    stride: u64,
) -> Result<u64, OpError> {
    if stride == 0 || dil == 0 || k == 0 {
        crate::bail!("{op}: stride, dilation and kernel must be >= 1 ({what})");
    }
    let span = dil.saturating_mul(k - 1).saturating_add(1);
    let padded = n.saturating_add(pad);
    if padded < span {
        crate::bail!(
            "{op}: {what} of {n} (padded to {}) is smaller than the kernel span {span}",
            padded
        );
    }
    Ok((padded - span) / stride + 1)
}

impl Conv2d {
    fn out_hw_dims(&self, h: &Dim, w: &Dim, kh: u64, kw: u64) -> Result<(Dim, Dim), OpError> {
        let ho = window_out_dim(
            "conv2d",
            "height",
            h,
            self.padding[0].saturating_add(self.padding[2]),
            kh,
            self.dilation[0],
            self.stride[0],
        )?;
        let wo = window_out_dim(
            "conv2d",
            "width",
            w,
            self.padding[1].saturating_add(self.padding[3]),
            kw,
            self.dilation[1],
            self.stride[1],
        )?;
        Ok((ho, wo))
    }

    fn out_hw(&self, h: u64, w: u64, kh: u64, kw: u64) -> Result<(u64, u64), OpError> {
        let ho = window_out(
            "conv2d",
            "height",
            h,
            self.padding[0].saturating_add(self.padding[2]),
            kh,
            self.dilation[0],
            self.stride[0],
        )?;
        let wo = window_out(
            "conv2d",
            "width",
            w,
            self.padding[1].saturating_add(self.padding[3]),
            kw,
            self.dilation[1],
            self.stride[1],
        )?;
        Ok((ho, wo))
    }

    fn check_channels(&self, c: u64, o: u64, wc: u64) -> Result<(), OpError> {
        let g = self.groups;
        if g == 0 || !c.is_multiple_of(g) || !o.is_multiple_of(g) {
            crate::bail!(
                "conv2d: groups {g} must divide input channels {c} and output channels {o}"
            );
        }
        if wc != c / g {
            crate::bail!("conv2d: weight has {wc} input channels per group, expected C/groups = {c}/{g} = {}", c / g);
        }
        Ok(())
    }
}

impl OpSpec for Conv2d {
    const NAME: &'static str = "conv2d";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity_range(Self::NAME, inputs, 2, 3)?;
        let d = same_dtype(Self::NAME, inputs)?;
        let (x, w) = (&inputs[0], &inputs[1]);
        expect_float(Self::NAME, "x", x)?;
        expect_rank(Self::NAME, "x[N,C,H,W]", x, 4)?;
        expect_rank(Self::NAME, "w[O,C/groups,kh,kw]", w, 4)?;
        let c = fixed_dim(Self::NAME, "channel dim C", &x.shape[1])?;
        let o = fixed_dim(Self::NAME, "output channels", &w.shape[0])?;
        let wc = fixed_dim(Self::NAME, "weight channels", &w.shape[1])?;
        let kh = fixed_dim(Self::NAME, "kernel height", &w.shape[2])?;
        let kw = fixed_dim(Self::NAME, "kernel width", &w.shape[3])?;
        self.check_channels(c, o, wc)?;
        if let Some(b) = inputs.get(2) {
            if b.shape != [Dim::from(o)] {
                crate::bail!("conv2d bias must be [{o}], found {b}");
            }
        }
        let (ho, wo) = self.out_hw_dims(&x.shape[2], &x.shape[3], kh, kw)?;
        Ok(vec![TensorType::new(
            d,
            [x.shape[0].clone(), o.into(), ho, wo],
        )])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 2, 3)?;
        let (x, w) = (inputs[0], inputs[1]);
        if x.rank() != 4 || w.rank() != 4 {
            crate::bail!("conv2d needs rank-4 x and w");
        }
        let [n, c, h, wd] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
        let [o, wc, kh, kw] = [w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]];
        self.check_channels(c as u64, o as u64, wc as u64)?;
        let (ho, wo) = self.out_hw(h as u64, wd as u64, kh as u64, kw as u64)?;
        let (ho, wo) = (ho as usize, wo as usize);
        let bias = inputs.get(2).map(|b| b.data());
        if bias.is_some_and(|b| b.len() != o) {
            crate::bail!("conv2d bias must have {o} elements");
        }
        let opg = o / self.groups as usize;
        let [sh, sw] = [self.stride[0] as usize, self.stride[1] as usize];
        let [dh, dw] = [self.dilation[0] as usize, self.dilation[1] as usize];
        let (pt, pl) = (self.padding[0] as i64, self.padding[1] as i64);
        let (xd, wdat) = (x.data(), w.data());
        let mut out = Vec::with_capacity(n * o * ho * wo);
        for ni in 0..n {
            for oc in 0..o {
                let g = oc / opg;
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = bias.map_or(0.0, |b| b[oc]);
                        for ic in 0..wc {
                            let xc = g * wc + ic;
                            for ky in 0..kh {
                                let iy = (oy * sh + ky * dh) as i64 - pt;
                                if iy < 0 || iy >= h as i64 {
                                    continue;
                                }
                                for kx in 0..kw {
                                    let ix = (ox * sw + kx * dw) as i64 - pl;
                                    if ix < 0 || ix >= wd as i64 {
                                        continue;
                                    }
                                    let xv =
                                        xd[((ni * c + xc) * h + iy as usize) * wd + ix as usize];
                                    let wv = wdat[((oc * wc + ic) * kh + ky) * kw + kx];
                                    acc += xv * wv;
                                }
                            }
                        }
                        out.push(acc);
                    }
                }
            }
        }
        Ok(vec![
            Tensor::new(x.dtype(), vec![n, o, ho, wo], out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Conv2d;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    /// Naive: explicitly zero-pad the input, then slide each dilated window.
    fn naive(x: &Tensor, w: &Tensor, b: &Tensor, op: &Conv2d) -> (Vec<usize>, Vec<f64>) {
        let (n, c, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let (o, wc, kh, kw) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
        let [pt, pl, pb, pr] = op.padding.map(|p| p as usize);
        let (hp, wp) = (h + pt + pb, wd + pl + pr);
        let mut padded = vec![0.0; n * c * hp * wp];
        for a in 0..n {
            for ch in 0..c {
                for y in 0..h {
                    for z in 0..wd {
                        padded[((a * c + ch) * hp + y + pt) * wp + z + pl] = x.at(&[a, ch, y, z]);
                    }
                }
            }
        }
        let (sh, sw) = (op.stride[0] as usize, op.stride[1] as usize);
        let (dh, dw) = (op.dilation[0] as usize, op.dilation[1] as usize);
        let ho = (hp - dh * (kh - 1) - 1) / sh + 1;
        let wo = (wp - dw * (kw - 1) - 1) / sw + 1;
        let opg = o / op.groups as usize;
        let mut out = vec![];
        for a in 0..n {
            for oc in 0..o {
                for y in 0..ho {
                    for z in 0..wo {
                        let mut s = b.at(&[oc]);
                        for ic in 0..wc {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let ch = (oc / opg) * wc + ic;
                                    s += padded[((a * c + ch) * hp + y * sh + ky * dh) * wp
                                        + z * sw
                                        + kx * dw]
                                        * w.at(&[oc, ic, ky, kx]);
                                }
                            }
                        }
                        out.push(s);
                    }
                }
            }
        }
        (vec![n, o, ho, wo], out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_padded_convolution(g in 1u64..3, cpg in 1usize..3, opg in 1usize..3,
                                            h in 3usize..6, w in 3usize..6, k in 1usize..3,
                                            s in 1u64..3, dil in 1u64..3, p in 0u64..2,
                                            seed in 0u64..1000) {
            let c = g as usize * cpg;
            let o = g as usize * opg;
            let x = rand_tensor(DType::F64, vec![2, c, h, w], seed);
            let wt = rand_tensor(DType::F64, vec![o, cpg, k, k], seed + 1);
            let b = rand_tensor(DType::F64, vec![o], seed + 2);
            let op = Conv2d {
                stride: [s, 1], padding: [p, 0, 1, p], dilation: [dil, 1], groups: g,
            };
            let out = eval_op(Op::Conv2d(op.clone()), &[x.clone(), wt.clone(), b.clone()]).unwrap();
            let (shape, want) = naive(&x, &wt, &b, &op);
            prop_assert_eq!(out[0].shape(), &shape[..]);
            for (g, w) in out[0].data().iter().zip(&want) {
                prop_assert!((g - w).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn channel_and_group_errors() {
        let x = rand_tensor(DType::F32, vec![1, 4, 5, 5], 0);
        let w = rand_tensor(DType::F32, vec![2, 3, 3, 3], 0);
        let e = eval_op(Op::Conv2d(Conv2d::default()), &[x.clone(), w])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected C/groups = 4/1 = 4"), "{e}");
        let w = rand_tensor(DType::F32, vec![3, 2, 3, 3], 0);
        let op = Conv2d {
            groups: 2,
            ..Conv2d::default()
        };
        let e = eval_op(Op::Conv2d(op), &[x.clone(), w])
            .unwrap_err()
            .to_string();
        assert!(e.contains("groups 2 must divide"), "{e}");
        let w = rand_tensor(DType::F32, vec![2, 4, 7, 7], 0);
        let e = eval_op(Op::Conv2d(Conv2d::default()), &[x, w])
            .unwrap_err()
            .to_string();
        assert!(e.contains("smaller than the kernel"), "{e}");
    }
}
