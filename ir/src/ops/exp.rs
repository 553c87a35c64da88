//! `exp`: element-wise natural exponential.

use super::util::{eval_unary, infer_unary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `e^x` for float dtypes, computed in f64 and rounded once (overflow saturates or gives inf
/// as the dtype prescribes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exp {}

impl OpSpec for Exp {
    const NAME: &'static str = "exp";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_unary(Self::NAME, inputs, true)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        eval_unary(Self::NAME, inputs, f64::exp)
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_rounded, eval_op, rand_tensor};
    use crate::ops::{exp::Exp, Op};
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula(
            shape in prop::collection::vec(1usize..5, 0..4),
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16, DType::F8E4M3FN, DType::F8E5M2]),
            seed in 0u64..1000,
        ) {
            let x = rand_tensor(dt, shape.clone(), seed);

            let out = eval_op(Op::Exp(Exp {}), std::slice::from_ref(&x)).unwrap();
            let naive: Vec<f64> = x.data().iter().map(|&x| std::f64::consts::E.powf(x)).collect();
            check_rounded(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    fn t(dt: DType, v: &[f64]) -> Tensor {
        Tensor::new(dt, vec![v.len()], v.to_vec()).unwrap()
    }

    #[test]
    fn rejects_non_float_operands() {
        let e = eval_op(Op::Exp(Exp {}), &[t(DType::I32, &[1.0, 2.0])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("float") && e.contains("[2]"), "{e}");
        let e = eval_op(
            Op::Exp(Exp {}),
            &[t(DType::F32, &[1.0]), t(DType::F32, &[1.0])],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("takes 1 operand, found 2"), "{e}");
    }
}
