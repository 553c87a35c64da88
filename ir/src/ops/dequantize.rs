//! `dequantize`: `x = q · scale`, the inverse of [`quantize`](super::quantize) for any
//! granularity.

use super::quantize::{scale_index_map, Granularity};
use super::util::{expect_arity, expect_float, expect_numeric, join, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Operands `(q, scale)`: `q` of any numeric dtype, `scale` of a float dtype shaped as
/// `quantize` produces it for `granularity` (see [`super::quantize`]). Result: `q · scale` in
/// `dtype` (a float type), computed in f64 and rounded once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dequantize {
    /// Result dtype (a float type).
    pub dtype: DType,
    /// Which elements share a scale (default per_tensor).
    #[serde(default)]
    pub granularity: Granularity,
}

impl OpSpec for Dequantize {
    const NAME: &'static str = "dequantize";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (q, s) = (&inputs[0], &inputs[1]);
        expect_numeric(Self::NAME, "q", q)?;
        expect_float(Self::NAME, "scale", s)?;
        if !self.dtype.is_float() {
            crate::bail!(
                "dequantize: result dtype must be a float type, found {}",
                self.dtype
            );
        }
        let want = self.granularity.scale_dims(Self::NAME, &q.shape)?;
        if s.shape != want {
            crate::bail!(
                "dequantize: scale for {q} with {:?} must be [{}], found {s}",
                self.granularity,
                join(&want)
            );
        }
        Ok(vec![q.with_dtype(self.dtype)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (q, s) = (inputs[0], inputs[1]);
        let want = self.granularity.scale_shape(Self::NAME, q.shape())?;
        if s.shape() != want {
            crate::bail!("dequantize: scale shape {:?} must be {want:?}", s.shape());
        }
        let map = scale_index_map(q.shape(), &want);
        let v = q
            .data()
            .iter()
            .zip(&map)
            .map(|(&x, &i)| x * s.data()[i])
            .collect();
        Ok(vec![
            Tensor::new(self.dtype, q.shape().to_vec(), v).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Dequantize;
    use crate::dtype::DType;
    use crate::ops::quantize::{Convention, Granularity, Quantize};
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_product_and_round_trips(a in 1usize..3, b in 1usize..4, gs in 1u64..3,
                                                 seed in 0u64..1000) {
            let c = 2 * gs as usize;
            let g = Granularity::PerGroup { axis: -1, size: gs };
            let x = rand_tensor(DType::F32, vec![a, b, c], seed);
            let qop = Quantize { dtype: DType::I8, granularity: g.clone(),
                                 convention: Convention::Paper, scale_dtype: DType::F32 };
            let qs = eval_op(Op::Quantize(qop), std::slice::from_ref(&x)).unwrap();
            let out = eval_op(Op::Dequantize(Dequantize { dtype: DType::F32, granularity: g }),
                              &qs).unwrap();
            for i in 0..a { for j in 0..b { for k in 0..c {
                let s = qs[1].at(&[i, j, k / gs as usize]);
                let want = (qs[0].at(&[i, j, k]) * s) as f32 as f64;
                prop_assert_eq!(out[0].at(&[i, j, k]), want);
                // Paper convention: error at most half a step.
                prop_assert!((want - x.at(&[i, j, k])).abs() <= s / 2.0 * (1.0 + 1e-6));
            }}}
        }
    }

    #[test]
    fn scale_shape_mismatch_is_a_type_error() {
        let q = rand_tensor(DType::I8, vec![2, 4], 0);
        let s = rand_tensor(DType::F32, vec![2, 4], 0);
        let op = Dequantize {
            dtype: DType::F32,
            granularity: Granularity::PerToken,
        };
        let e = eval_op(Op::Dequantize(op), &[q, s])
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be [2,1], found f32[2,4]"), "{e}");
    }
}
