//! `avg_pool2d`: average pooling over the two trailing dims of NCHW (PyTorch `F.avg_pool2d`,
//! floor mode).

use super::conv2d::{window_out, window_out_dim};
use super::util::{expect_arity, expect_float, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

fn yes() -> bool {
    true
}

/// `x[N, C, H, W] → [N, C, Ho, Wo]`, `Ho = (H + top + bottom − kh)/stride_h + 1` (floor). Each
/// output is the mean of its window; with `count_include_pad` (default true) the divisor is
/// `kh·kw`, otherwise the number of non-padding cells in the window. Padding is at most half
/// the kernel (as in PyTorch), so no window is all padding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvgPool2d {
    /// Window `[kh, kw]`.
    pub kernel: [u64; 2],
    /// Strides `[h, w]`.
    pub stride: [u64; 2],
    /// Zero padding `[top, left, bottom, right]` (default none).
    #[serde(default)]
    pub padding: [u64; 4],
    /// Whether padding cells count in the divisor (default true, as in PyTorch).
    #[serde(default = "yes")]
    pub count_include_pad: bool,
}

impl AvgPool2d {
    fn out_hw_dims(&self, h: &Dim, w: &Dim) -> Result<(Dim, Dim), OpError> {
        let p = self.padding;
        let k = [
            self.kernel[0],
            self.kernel[1],
            self.kernel[0],
            self.kernel[1],
        ];
        if p.iter().zip(k).any(|(&pad, k)| pad > k / 2) {
            crate::bail!(
                "avg_pool2d: padding {p:?} must be at most half the kernel {:?}",
                self.kernel
            );
        }
        let ho = window_out_dim(
            "avg_pool2d",
            "height",
            h,
            p[0].saturating_add(p[2]),
            self.kernel[0],
            1,
            self.stride[0],
        )?;
        let wo = window_out_dim(
            "avg_pool2d",
            "width",
            w,
            p[1].saturating_add(p[3]),
            self.kernel[1],
            1,
            self.stride[1],
        )?;
        Ok((ho, wo))
    }

    fn out_hw(&self, h: u64, w: u64) -> Result<(u64, u64), OpError> {
        let p = self.padding;
        let k = [
            self.kernel[0],
            self.kernel[1],
            self.kernel[0],
            self.kernel[1],
        ];
        if p.iter().zip(k).any(|(&pad, k)| pad > k / 2) {
            crate::bail!(
                "avg_pool2d: padding {p:?} must be at most half the kernel {:?}",
                self.kernel
            );
        }
        let ho = window_out(
            "avg_pool2d",
            "height",
            h,
            p[0].saturating_add(p[2]),
            self.kernel[0],
            1,
            self.stride[0],
        )?;
        let wo = window_out(
            "avg_pool2d",
            "width",
            w,
            p[1].saturating_add(p[3]),
            self.kernel[1],
            1,
            self.stride[1],
        )?;
        Ok((ho, wo))
    }
}

impl OpSpec for AvgPool2d {
    const NAME: &'static str = "avg_pool2d";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        expect_float(Self::NAME, "x", x)?;
        if x.rank() != 4 {
            crate::bail!("avg_pool2d expects x[N,C,H,W], found {x}");
        }
        let (ho, wo) = self.out_hw_dims(&x.shape[2], &x.shape[3])?;
        let mut shape = x.shape.clone();
        shape[2] = ho;
        shape[3] = wo;
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        if x.rank() != 4 {
            crate::bail!("avg_pool2d needs rank-4 x");
        }
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let (ho, wo) = self.out_hw(h as u64, w as u64)?;
        let (ho, wo) = (ho as usize, wo as usize);
        let [kh, kw] = self.kernel.map(|k| k as usize);
        let [sh, sw] = self.stride.map(|k| k as usize);
        let (pt, pl) = (self.padding[0] as i64, self.padding[1] as i64);
        let planes = x.shape()[0] * x.shape()[1];
        let mut out = Vec::with_capacity(planes * ho * wo);
        for p in 0..planes {
            for oy in 0..ho {
                for ox in 0..wo {
                    let (mut sum, mut cnt) = (0.0, 0usize);
                    for ky in 0..kh {
                        let iy = (oy * sh + ky) as i64 - pt;
                        for kx in 0..kw {
                            let ix = (ox * sw + kx) as i64 - pl;
                            if iy >= 0 && iy < h as i64 && ix >= 0 && ix < w as i64 {
                                sum += x.data()[(p * h + iy as usize) * w + ix as usize];
                                cnt += 1;
                            }
                        }
                    }
                    let div = if self.count_include_pad { kh * kw } else { cnt };
                    out.push(if div == 0 { 0.0 } else { sum / div as f64 });
                }
            }
        }
        let shape = vec![x.shape()[0], x.shape()[1], ho, wo];
        Ok(vec![Tensor::new(x.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::AvgPool2d;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_window_mean(h in 2usize..6, w in 2usize..6, k in 1u64..3, s in 1u64..3,
                                     p in 0u64..2, incl in proptest::bool::ANY,
                                     seed in 0u64..1000) {
            let p = p.min(k - 1);
            let x = rand_tensor(DType::F64, vec![1, 2, h, w], seed);
            let op = AvgPool2d {
                kernel: [k, k], stride: [s, s], padding: [p, p, p, p], count_include_pad: incl,
            };
            let out = eval_op(Op::AvgPool2d(op), std::slice::from_ref(&x)).unwrap();
            let (k, s, p) = (k as i64, s as i64, p as i64);
            let ho = ((h as i64 + 2 * p - k) / s + 1) as usize;
            let wo = ((w as i64 + 2 * p - k) / s + 1) as usize;
            prop_assert_eq!(out[0].shape(), &[1, 2, ho, wo][..]);
            for c in 0..2 { for oy in 0..ho { for ox in 0..wo {
                let mut vals = vec![];
                let mut cells = 0;
                for y in oy as i64 * s - p..oy as i64 * s - p + k {
                    for z in ox as i64 * s - p..ox as i64 * s - p + k {
                        cells += 1;
                        if (0..h as i64).contains(&y) && (0..w as i64).contains(&z) {
                            vals.push(x.at(&[0, c, y as usize, z as usize]));
                        }
                    }
                }
                let div = if incl { cells } else { vals.len() } as f64;
                let want = vals.iter().sum::<f64>() / div;
                prop_assert!((out[0].at(&[0, c, oy, ox]) - want).abs() < 1e-12);
            }}}
        }
    }

    #[test]
    fn oversized_padding_and_kernel_are_errors() {
        let x = rand_tensor(DType::F32, vec![1, 1, 3, 3], 0);
        let op = AvgPool2d {
            kernel: [2, 2],
            stride: [1, 1],
            padding: [2, 0, 0, 0],
            count_include_pad: false,
        };
        let e = eval_op(Op::AvgPool2d(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most half the kernel"), "{e}");
        let op = AvgPool2d {
            kernel: [4, 4],
            stride: [1, 1],
            padding: [0; 4],
            count_include_pad: true,
        };
        let e = eval_op(Op::AvgPool2d(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("kernel span 4"), "{e}");
    }
}
