//! `abs`: element-wise absolute value.

use super::util::{eval_unary, infer_unary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `|x|` for any numeric dtype; integer results saturate (`i8: |-128| = 127`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abs {}

impl OpSpec for Abs {
    const NAME: &'static str = "abs";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_unary(Self::NAME, inputs, false)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        eval_unary(Self::NAME, inputs, f64::abs)
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, eval_op, rand_tensor};
    use crate::ops::{abs::Abs, Op};
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula(
            shape in prop::collection::vec(1usize..5, 0..4),
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8E4M3FN, DType::I32, DType::I8]),
            seed in 0u64..1000,
        ) {
            let x = rand_tensor(dt, shape.clone(), seed);

            let out = eval_op(Op::Abs(Abs {}), std::slice::from_ref(&x)).unwrap();
            let naive: Vec<f64> = x.data().iter().map(|&x| if x < 0.0 { -x } else { x }).collect();
            check_exact(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    fn t(dt: DType, v: &[f64]) -> Tensor {
        Tensor::new(dt, vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn rejects_non_numeric_operands() {
        let e = eval_op(Op::Abs(Abs {}), &[t(DType::Bool, &[1.0, 2.0])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("numeric") && e.contains("[2]"), "{e}");
        let e = eval_op(
            Op::Abs(Abs {}),
            &[t(DType::F32, &[1.0]), t(DType::F32, &[1.0])],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("takes 1 operand, found 2"), "{e}");
    }
}
