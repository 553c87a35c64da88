//! `softmax`: normalized exponentials along one axis.

use super::util::{expect_arity, infer_unary, normalize_axis, op_err, split_at_axis};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `exp(x - max) / Σ exp(x - max)` along `axis`, for float dtypes, in f64 with the maximum
/// subtracted, rounded once. A slice that is entirely `-inf` gives NaN (as in PyTorch).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Softmax {
    /// The axis to normalize over (negative counts from the end).
    pub axis: i64,
}

impl OpSpec for Softmax {
    const NAME: &'static str = "softmax";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let t = infer_unary(Self::NAME, inputs, true)?;
        normalize_axis(Self::NAME, self.axis, t.rank())?;
        Ok(vec![t])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let axis = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        let d = x.data();
        let mut out = vec![0.0; d.len()];
        for o in 0..outer {
            for n in 0..inner {
                let at = |i: usize| (o * len + i) * inner + n;
                let m = (0..len).map(|i| d[at(i)]).fold(f64::NEG_INFINITY, f64::max);
                let s: f64 = (0..len).map(|i| (d[at(i)] - m).exp()).sum();
                for i in 0..len {
                    out[at(i)] = (d[at(i)] - m).exp() / s;
                }
            }
        }
        Ok(vec![
            Tensor::new(x.dtype(), x.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{softmax::Softmax, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula(
            shape in prop::collection::vec(1usize..5, 1..4),
            axis in -3i64..3,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16]),
            seed in 0u64..1000,
        ) {
            let rank = shape.len() as i64;
            prop_assume!(axis >= -rank && axis < rank);
            let a = axis.rem_euclid(rank) as usize;
            let x = rand_tensor(dt, shape.clone(), seed);
            let out = eval_op(Op::Softmax(Softmax { axis }), std::slice::from_ref(&x)).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let mut j = i.clone();
                    let mut s = 0.0;
                    for k in 0..shape[a] {
                        j[a] = k;
                        s += x.at(&j).exp();
                    }
                    x.at(i).exp() / s
                })
                .collect();
            check_rounded(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn large_inputs_do_not_overflow_and_errors_are_clear() {
        let x = Tensor::new(DType::F32, vec![2], vec![1000.0, 1000.0]).unwrap();
        let out = eval_op(Op::Softmax(Softmax { axis: 0 }), std::slice::from_ref(&x)).unwrap();
        assert_eq!(out[0].data(), &[0.5, 0.5]);
        let e = eval_op(Op::Softmax(Softmax { axis: 1 }), &[x])
            .unwrap_err()
            .to_string();
        assert!(e.contains("axis 1 is out of range for rank 1"), "{e}");
        let i = Tensor::new(DType::I32, vec![2], vec![1.0, 2.0]).unwrap();
        let e = eval_op(Op::Softmax(Softmax { axis: 0 }), &[i])
            .unwrap_err()
            .to_string();
        assert!(e.contains("float") && e.contains("i32[2]"), "{e}");
    }

    #[test]
    fn symbolic_dims_flow_through() {
        let m = crate::module::Module::new();
        let t = TensorType::new(
            DType::BF16,
            vec![Dim::from("B"), Dim::from("S"), Dim::from(8u64)],
        );
        let out = Softmax { axis: -2 }
            .infer(&InferCx { module: &m }, std::slice::from_ref(&t))
            .unwrap();
        assert_eq!(out, vec![t]);
    }
}
