//! `not`: element-wise boolean negation.

use super::util::{eval_unary, expect_arity};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `¬x` on a bool operand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Not {}

impl OpSpec for Not {
    const NAME: &'static str = "not";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        if inputs[0].dtype != DType::Bool {
            crate::bail!("not expects a bool operand, found {}", inputs[0]);
        }
        Ok(vec![inputs[0].clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        eval_unary(Self::NAME, inputs, |x| if x == 0.0 { 1.0 } else { 0.0 })
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, eval_op, rand_tensor};
    use crate::ops::{not::Not, Op};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula(shape in prop::collection::vec(1usize..5, 0..4),
                                 seed in 0u64..1000) {
            let x = rand_tensor(DType::Bool, shape.clone(), seed);
            let out = eval_op(Op::Not(Not {}), std::slice::from_ref(&x)).unwrap();
            let naive: Vec<f64> = x.data().iter().map(|&x| 1.0 - x).collect();
            check_exact(&out[0], DType::Bool, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn non_bool_operand_is_rejected() {
        let x = rand_tensor(DType::F32, vec![3], 0);
        let e = eval_op(Op::Not(Not {}), &[x]).unwrap_err().to_string();
        assert!(e.contains("expects a bool operand, found f32[3]"), "{e}");
    }
}
