//! `upsample_nearest2d`: nearest-neighbour upsampling of the two trailing dims by an integer
//! factor (PyTorch `F.interpolate(mode="nearest", scale_factor=s)` on NCHW).

use super::util::{expect_arity, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `x[N, C, H, W] → [N, C, H·s, W·s]` with `out[.., y, z] = x[.., y / s, z / s]`. H and W must be
/// fixed unless `scale` is 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsampleNearest2d {
    /// The integer scale factor (>= 1).
    pub scale: u64,
}

impl OpSpec for UpsampleNearest2d {
    const NAME: &'static str = "upsample_nearest2d";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        if x.rank() != 4 {
            crate::bail!("upsample_nearest2d expects x[N,C,H,W], found {x}");
        }
        if self.scale == 0 {
            crate::bail!("upsample_nearest2d scale must be >= 1");
        }
        let mut shape = x.shape.clone();
        for d in &mut shape[2..] {
            *d = super::util::scale_dim(Self::NAME, d, self.scale, "spatial dim")?;
        }
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let s = self.scale as usize;
        if x.rank() != 4 || s == 0 {
            crate::bail!("upsample_nearest2d needs rank-4 x and scale >= 1");
        }
        let (h, w) = (x.shape()[2], x.shape()[3]);
        let planes = x.shape()[0] * x.shape()[1];
        let mut out = Vec::with_capacity(x.numel() * s * s);
        for p in 0..planes {
            for y in 0..h * s {
                for z in 0..w * s {
                    out.push(x.data()[(p * h + y / s) * w + z / s]);
                }
            }
        }
        let shape = vec![x.shape()[0], x.shape()[1], h * s, w * s];
        Ok(vec![Tensor::new(x.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::UpsampleNearest2d;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn every_output_copies_its_source_pixel(c in 1usize..3, h in 1usize..4, w in 1usize..4,
                                                s in 1u64..4, seed in 0u64..1000) {
            let x = rand_tensor(DType::F16, vec![1, c, h, w], seed);
            let op = Op::UpsampleNearest2d(UpsampleNearest2d { scale: s });
            let out = eval_op(op, std::slice::from_ref(&x))
                .unwrap();
            let s = s as usize;
            prop_assert_eq!(out[0].shape(), &[1, c, h * s, w * s][..]);
            // Naive: each input pixel fills an s×s block.
            for ch in 0..c { for y in 0..h { for z in 0..w {
                for a in 0..s { for b in 0..s {
                    let got = out[0].at(&[0, ch, y * s + a, z * s + b]);
                    prop_assert_eq!(got, x.at(&[0, ch, y, z]));
                }}
            }}}
        }
    }

    #[test]
    fn symbolic_spatial_dims_and_rank_are_checked() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let e = eval_op(Op::UpsampleNearest2d(UpsampleNearest2d { scale: 2 }), &[x])
            .unwrap_err()
            .to_string();
        assert!(e.contains("expects x[N,C,H,W]"), "{e}");
    }
}
