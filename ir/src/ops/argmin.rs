//! `argmin`: index of the first (or last) minimum along one axis.

use super::argmax::{arg_extreme_eval, arg_extreme_infer, Extreme};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Index (i64) of the minimum along `axis` of one numeric operand (numpy `argmin`, ONNX
/// `ArgMin`); the mirror of [`ArgMax`](super::argmax::ArgMax), sharing its implementation.
///
/// Ties give the first (lowest) index, or the last with `select_last_index`. NaN counts as
/// smaller than every number, so the first NaN wins (numpy); with `select_last_index` the last
/// NaN does. The axis is dropped, or kept as size 1 with `keepdims`. An empty axis is an
/// evaluation error when the result has elements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgMin {
    /// The axis to search (negative counts from the end).
    pub axis: i64,
    /// Keep the axis as size 1 (default false).
    #[serde(default)]
    pub keepdims: bool,
    /// Among equal minima pick the last index instead of the first (default false).
    #[serde(default)]
    pub select_last_index: bool,
}

impl OpSpec for ArgMin {
    const NAME: &'static str = "argmin";

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
            Extreme::Min,
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
    use crate::ops::{argmin::ArgMin, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn am(axis: i64, keepdims: bool, select_last_index: bool) -> Op {
        Op::ArgMin(ArgMin {
            axis,
            keepdims,
            select_last_index,
        })
    }

    proptest! {
        #[test]
        fn matches_naive_first_or_last_minimum(
            shape in prop::collection::vec(1usize..5, 1..4),
            axis in -3i64..3,
            keepdims: bool,
            last: bool,
            nan_at in prop::option::of(0usize..40),
            dt in prop::sample::select(vec![DType::F32, DType::F4E2M1, DType::I4, DType::U8]),
            seed in 0u64..1000,
        ) {
            let rank = shape.len() as i64;
            prop_assume!(axis >= -rank && axis < rank);
            let a = axis.rem_euclid(rank) as usize;
            let mut x = rand_tensor(dt, shape.clone(), seed);
            if let (Some(k), true) = (nan_at, dt.is_float()) {
                let mut d = x.data().to_vec();
                for j in (k % d.len()..d.len()).step_by(2) {
                    d[j] = f64::NAN;
                }
                x = Tensor::new(dt, shape.clone(), d).unwrap();
            }
            let out = eval_op(am(axis, keepdims, last), std::slice::from_ref(&x)).unwrap();
            let mut keep = shape.clone();
            keep[a] = 1;
            // Naive: sort the (value, index) pairs of each lane with NaN first, then the
            // smallest value; among equals the lowest index (or highest with `last`).
            let naive: Vec<f64> = indices(&keep)
                .iter()
                .map(|o| {
                    let mut lane: Vec<(f64, usize)> = (0..shape[a])
                        .map(|k| { let mut i = o.clone(); i[a] = k; (x.at(&i), k) })
                        .collect();
                    lane.sort_by(|p, q| {
                        let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
                        let nan_first = q.0.is_nan().cmp(&p.0.is_nan());
                        let by_index = if last { q.1.cmp(&p.1) } else { p.1.cmp(&q.1) };
                        nan_first
                            .then(key(p.0).partial_cmp(&key(q.0)).unwrap())
                            .then(by_index)
                    });
                    lane[0].1 as f64
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
    fn ties_nan_and_errors() {
        let x = Tensor::new(
            DType::F32,
            vec![5],
            vec![3.0, f64::NAN, -1.0, f64::NAN, -1.0],
        )
        .unwrap();
        let out = eval_op(am(0, false, false), std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[0].data(), &[1.0]);
        let out = eval_op(am(0, true, true), &[x]).unwrap();
        check_exact(&out[0], DType::I64, &[1], &[3.0]).unwrap();
        let y = Tensor::new(DType::I8, vec![5], vec![3.0, -1.0, 4.0, -1.0, 0.0]).unwrap();
        let out = eval_op(am(0, false, false), std::slice::from_ref(&y)).unwrap();
        assert_eq!(out[0].data(), &[1.0]);
        let out = eval_op(am(-1, false, true), &[y]).unwrap();
        assert_eq!(out[0].data(), &[3.0]);
        let e = rand_tensor(DType::F32, vec![3, 0], 0);
        let err = eval_op(am(-1, false, false), &[e]).unwrap_err().to_string();
        assert!(err.contains("argmin over an empty axis -1"), "{err}");
        let s = rand_tensor(DType::F32, vec![], 0);
        let err = eval_op(am(0, false, false), &[s]).unwrap_err().to_string();
        assert!(err.contains("axis 0 is out of range for rank 0"), "{err}");
        let m = crate::module::Module::new();
        let t = TensorType::new(DType::F32, vec![Dim::from("B"), Dim::from("V")]);
        let out = ArgMin {
            axis: 0,
            keepdims: false,
            select_last_index: true,
        }
        .infer(&InferCx { module: &m }, &[t])
        .unwrap();
        assert_eq!(out[0].to_string(), "i64[V]");
    }
}
