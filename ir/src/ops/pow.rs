//! `pow`: element-wise power with numpy broadcasting.

use super::util::{eval_binary, expect_float, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `a ^ b` element-wise (`powf` in f64: a negative base with a non-integer exponent gives
/// NaN), both operands of one float dtype, broadcast numpy-style.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pow {}

impl OpSpec for Pow {
    const NAME: &'static str = "pow";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let t = infer_binary(Self::NAME, inputs, true)?;
        expect_float(Self::NAME, "operand", &t)?;
        Ok(vec![t])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        eval_binary(Self::NAME, inputs, f64::powf)
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_rounded, eval_op, indices, rand_tensor,
    };
    use crate::ops::{pow::Pow, Op};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula_with_broadcasting(
            shape in prop::collection::vec(1usize..4, 0..4),
            drop in 0usize..4,
            ones in 0u32..16,
            swap: bool,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16]),
            seed in 0u64..1000,
        ) {
            let other = broadcast_partner(&shape, drop, ones);
            let (sa, sb) = if swap { (other, shape.clone()) } else { (shape.clone(), other) };
            let a = rand_tensor(dt, sa, seed);
            let b = rand_tensor(dt, sb, seed + 1);
            // Positive bases so that the naive exp(y·ln x) is defined.
            let a = crate::tensor::Tensor::new(dt, a.shape().to_vec(),
                a.data().iter().map(|v| v.abs() + 0.25).collect()).unwrap();
            let out = eval_op(Op::Pow(Pow {}), &[a.clone(), b.clone()]).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let (x, y) = (at_broadcast(&a, i), at_broadcast(&b, i));
                    (y * x.ln()).exp()
                })
                .collect();
            check_rounded(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn integer_operands_are_rejected_and_special_cases_hold() {
        let a = rand_tensor(DType::I32, vec![2], 0);
        let e = eval_op(Op::Pow(Pow {}), &[a.clone(), a])
            .unwrap_err()
            .to_string();
        assert!(e.contains("float") && e.contains("i32[2]"), "{e}");
        let a = crate::tensor::Tensor::new(DType::F32, vec![3], vec![-2.0, -2.0, 0.0]).unwrap();
        let b = crate::tensor::Tensor::new(DType::F32, vec![3], vec![3.0, 0.5, 0.0]).unwrap();
        let out = eval_op(Op::Pow(Pow {}), &[a, b]).unwrap();
        assert_eq!(out[0].data()[0], -8.0);
        assert!(out[0].data()[1].is_nan());
        assert_eq!(out[0].data()[2], 1.0);
    }
}
