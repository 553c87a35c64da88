//! `argmax`: index of the first (or last) maximum along one axis; also the shared
//! implementation of [`argmin`](super::argmin).

use super::util::{expect_arity, expect_numeric, normalize_axis, op_err, split_at_axis};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// Index (i64) of the maximum along `axis` of one numeric operand (numpy `argmax`, ONNX
/// `ArgMax`).
///
/// Ties give the first (lowest) index, or the last with `select_last_index`. NaN counts as
/// larger than every number, so the first NaN wins (numpy); with `select_last_index` the last
/// NaN does (the result is always that of the reversed axis, mapped back). The axis is dropped,
/// or kept as size 1 with `keepdims`. An empty axis is an evaluation error when the result has
/// elements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgMax {
    /// The axis to search (negative counts from the end).
    pub axis: i64,
    /// Keep the axis as size 1 (default false).
    #[serde(default)]
    pub keepdims: bool,
    /// Among equal maxima pick the last index instead of the first (default false).
    #[serde(default)]
    pub select_last_index: bool,
}

/// Which extreme [`arg_extreme_eval`] looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extreme {
    /// The largest element ([`ArgMax`]).
    Max,
    /// The smallest element ([`ArgMin`](super::argmin::ArgMin)).
    Min,
}

/// Type inference of `argmax`/`argmin`: one numeric operand; i64 result with `axis` dropped or
/// kept as size 1.
pub fn arg_extreme_infer(
    op: &str,
    axis: i64,
    keepdims: bool,
    inputs: &[TensorType],
) -> Result<TensorType, OpError> {
    expect_arity(op, inputs, 1)?;
    let x = &inputs[0];
    expect_numeric(op, "operand", x)?;
    let axis = normalize_axis(op, axis, x.rank())?;
    let mut shape = x.shape.clone();
    if keepdims {
        shape[axis] = Dim::from(1u64);
    } else {
        shape.remove(axis);
    }
    Ok(TensorType::new(DType::I64, shape))
}

/// Reference semantics of `argmax`/`argmin` (see [`ArgMax`]): a NaN beats every number, and
/// the first element that beats all earlier ones in scan order wins.
pub fn arg_extreme_eval(
    op: &str,
    extreme: Extreme,
    axis: i64,
    keepdims: bool,
    select_last_index: bool,
    inputs: &[&Tensor],
) -> Result<Tensor, OpError> {
    expect_arity(op, inputs, 1)?;
    let x = inputs[0];
    let ax = normalize_axis(op, axis, x.rank())?;
    let (outer, len, inner) = split_at_axis(x.shape(), ax);
    if len == 0 && outer * inner > 0 {
        crate::bail!("{op} over an empty axis {axis} of shape {:?}", x.shape());
    }
    let beats = |a: f64, b: f64| match extreme {
        Extreme::Max => a > b,
        Extreme::Min => a < b,
    };
    let d = x.data();
    let mut out = Vec::with_capacity(outer * inner);
    for o in 0..outer {
        for n in 0..inner {
            // Scan order: forward, or backward for the last index among ties.
            let pos = |k: usize| if select_last_index { len - 1 - k } else { k };
            let at = |k: usize| d[(o * len + pos(k)) * inner + n];
            let mut best = 0;
            for k in 1..len {
                if at(best).is_nan() {
                    break;
                }
                if beats(at(k), at(best)) || at(k).is_nan() {
                    best = k;
                }
            }
            out.push(pos(best) as f64);
        }
    }
    let mut shape = x.shape().to_vec();
    if keepdims {
        shape[ax] = 1;
    } else {
        shape.remove(ax);
    }
    Tensor::new(DType::I64, shape, out).map_err(op_err)
}

impl OpSpec for ArgMax {
    const NAME: &'static str = "argmax";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![arg_extreme_infer(
            Self::NAME,
            self.axis,
            self.keepdims,
            inputs,
        )?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        Ok(vec![arg_extreme_eval(
            Self::NAME,
            Extreme::Max,
            self.axis,
            self.keepdims,
            self.select_last_index,
            inputs,
        )?])
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

    fn am(axis: i64, keepdims: bool, select_last_index: bool) -> Op {
        Op::ArgMax(ArgMax {
            axis,
            keepdims,
            select_last_index,
        })
    }

    proptest! {
        #[test]
        fn matches_naive_first_or_last_maximum(
            shape in prop::collection::vec(1usize..5, 1..4),
            axis in -3i64..3,
            keepdims: bool,
            last: bool,
            nan_at in prop::option::of(0usize..40),
            // Low-precision and small-int dtypes make ties common.
            dt in prop::sample::select(vec![DType::F32, DType::F4E2M1, DType::I4, DType::I32]),
            seed in 0u64..1000,
        ) {
            let rank = shape.len() as i64;
            prop_assume!(axis >= -rank && axis < rank);
            let a = axis.rem_euclid(rank) as usize;
            let mut x = rand_tensor(dt, shape.clone(), seed);
            if let (Some(k), true) = (nan_at, dt.is_float()) {
                let mut d = x.data().to_vec();
                for j in (k % d.len()..d.len()).step_by(3) {
                    d[j] = f64::NAN;
                }
                x = Tensor::new(dt, shape.clone(), d).unwrap();
            }
            let out = eval_op(am(axis, keepdims, last), std::slice::from_ref(&x)).unwrap();
            let mut keep = shape.clone();
            keep[a] = 1;
            let naive: Vec<f64> = indices(&keep)
                .iter()
                .map(|o| {
                    let vals: Vec<f64> = (0..shape[a])
                        .map(|k| { let mut i = o.clone(); i[a] = k; x.at(&i) })
                        .collect();
                    // The winners: the NaNs if any, else the elements equal to the maximum.
                    let m = vals.iter().cloned().fold(f64::MIN, f64::max);
                    let any_nan = vals.iter().any(|v| v.is_nan());
                    let wins = |v: &f64| if any_nan { v.is_nan() } else { *v == m };
                    let p = if last { vals.iter().rposition(wins) } else { vals.iter().position(wins) };
                    p.unwrap() as f64
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
    fn nan_wins_ties_and_errors_are_clear() {
        let x = Tensor::new(DType::F32, vec![4], vec![1.0, f64::NAN, 5.0, f64::NAN]).unwrap();
        let out = eval_op(am(0, false, false), std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[0].data(), &[1.0]);
        let out = eval_op(am(0, false, true), &[x]).unwrap();
        assert_eq!(out[0].data(), &[3.0]);
        let t = Tensor::new(DType::I32, vec![2, 3], vec![2.0, 7.0, 7.0, 4.0, 4.0, 1.0]).unwrap();
        let out = eval_op(am(1, true, false), std::slice::from_ref(&t)).unwrap();
        check_exact(&out[0], DType::I64, &[2, 1], &[1.0, 0.0]).unwrap();
        let out = eval_op(am(-1, false, true), &[t]).unwrap();
        check_exact(&out[0], DType::I64, &[2], &[2.0, 1.0]).unwrap();
        let e = rand_tensor(DType::F32, vec![2, 0], 0);
        let err = eval_op(am(1, false, false), &[e]).unwrap_err();
        assert!(
            err.to_string().contains("argmax over an empty axis"),
            "{err}"
        );
        // An empty axis with nothing to compute is fine.
        let e = rand_tensor(DType::F32, vec![0, 0], 0);
        assert_eq!(eval_op(am(1, false, false), &[e]).unwrap()[0].shape(), &[0]);
        let b = rand_tensor(DType::Bool, vec![2], 0);
        let err = eval_op(am(0, false, false), &[b]).unwrap_err();
        assert!(err.to_string().contains("numeric"), "{err}");
        // The new attribute defaults to false.
        let op = Op::from_attrs("argmax", serde_json::json!({"axis": 0})).unwrap();
        assert_eq!(op, am(0, false, false));
    }

    #[test]
    fn symbolic_dims_flow_through() {
        let m = crate::module::Module::new();
        let t = TensorType::new(DType::F16, vec![Dim::from("B"), Dim::from("V")]);
        let out = ArgMax {
            axis: -1,
            keepdims: true,
            select_last_index: false,
        }
        .infer(&InferCx { module: &m }, &[t])
        .unwrap();
        assert_eq!(out[0].to_string(), "i64[B,1]");
    }
}
