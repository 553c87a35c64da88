//! `argmax`: index of the first maximum along one axis.

use super::util::{expect_arity, expect_numeric, normalize_axis, op_err, split_at_axis};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// Index (i64) of the maximum along `axis` of one numeric operand; ties give the first (lowest)
/// index, and NaN counts as larger than every number (numpy). The axis is dropped, or kept as
/// size 1 with `keepdims`. An empty axis is an evaluation error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgMax {
    /// The axis to search (negative counts from the end).
    pub axis: i64,
    /// Keep the axis as size 1 (default false).
    #[serde(default)]
    pub keepdims: bool,
}

impl OpSpec for ArgMax {
    const NAME: &'static str = "argmax";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        expect_numeric(Self::NAME, "operand", x)?;
        let axis = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let mut shape = x.shape.clone();
        if self.keepdims {
            shape[axis] = Dim::from(1u64);
        } else {
            shape.remove(axis);
        }
        Ok(vec![TensorType::new(DType::I64, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let axis = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        if len == 0 && outer * inner > 0 {
            crate::bail!(
                "argmax over an empty axis {} of shape {:?}",
                self.axis,
                x.shape()
            );
        }
        let d = x.data();
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for n in 0..inner {
                let at = |i: usize| d[(o * len + i) * inner + n];
                let mut best = 0;
                for i in 1..len {
                    if at(best).is_nan() {
                        break;
                    }
                    if at(i) > at(best) || at(i).is_nan() {
                        best = i;
                    }
                }
                out.push(best as f64);
            }
        }
        let mut shape = x.shape().to_vec();
        if self.keepdims {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        Ok(vec![Tensor::new(DType::I64, shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, eval_op, indices, rand_tensor};
    use crate::ops::{argmax::ArgMax, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_first_maximum(
            shape in prop::collection::vec(1usize..5, 1..4),
            axis in -3i64..3,
            keepdims: bool,
            // Low-precision and small-int dtypes make ties common.
            dt in prop::sample::select(vec![DType::F32, DType::F4E2M1, DType::I4, DType::I32]),
            seed in 0u64..1000,
        ) {
            let rank = shape.len() as i64;
            prop_assume!(axis >= -rank && axis < rank);
            let a = axis.rem_euclid(rank) as usize;
            let x = rand_tensor(dt, shape.clone(), seed);
            let out = eval_op(Op::ArgMax(ArgMax { axis, keepdims }), std::slice::from_ref(&x)).unwrap();
            let mut keep = shape.clone();
            keep[a] = 1;
            let naive: Vec<f64> = indices(&keep)
                .iter()
                .map(|o| {
                    let vals: Vec<f64> = (0..shape[a])
                        .map(|k| { let mut i = o.clone(); i[a] = k; x.at(&i) })
                        .collect();
                    let m = vals.iter().cloned().fold(f64::MIN, f64::max);
                    vals.iter().position(|&v| v == m).unwrap() as f64
                })
                .collect();
            let out_shape = if keepdims { keep } else {
                let mut s = shape.clone();
                s.remove(a);
                s
            };
            check_exact(&out[0], DType::I64, &out_shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn nan_wins_and_errors_are_clear() {
        let x = Tensor::new(DType::F32, vec![4], vec![1.0, f64::NAN, 5.0, f64::NAN]).unwrap();
        let out = eval_op(
            Op::ArgMax(ArgMax {
                axis: 0,
                keepdims: false,
            }),
            &[x],
        )
        .unwrap();
        assert_eq!(out[0].data(), &[1.0]);
        let e = rand_tensor(DType::F32, vec![2, 0], 0);
        let err = eval_op(
            Op::ArgMax(ArgMax {
                axis: 1,
                keepdims: false,
            }),
            &[e],
        )
        .unwrap_err();
        assert!(err.to_string().contains("empty axis"), "{err}");
        let b = rand_tensor(DType::Bool, vec![2], 0);
        let err = eval_op(
            Op::ArgMax(ArgMax {
                axis: 0,
                keepdims: false,
            }),
            &[b],
        )
        .unwrap_err();
        assert!(err.to_string().contains("numeric"), "{err}");
    }

    #[test]
    fn symbolic_dims_flow_through() {
        let m = crate::module::Module::new();
        let t = TensorType::new(DType::F16, vec![Dim::from("B"), Dim::from("V")]);
        let out = ArgMax {
            axis: -1,
            keepdims: true,
        }
        .infer(&InferCx { module: &m }, &[t])
        .unwrap();
        assert_eq!(out[0].to_string(), "i64[B,1]");
    }
}
