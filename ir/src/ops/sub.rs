//! `sub`: element-wise difference with numpy broadcasting.

use super::util::{eval_binary, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `a - b`, both operands of one numeric dtype, broadcast numpy-style; integer results
/// saturate to the dtype's range.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sub {}

impl OpSpec for Sub {
    const NAME: &'static str = "sub";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_binary(Self::NAME, inputs, true)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        eval_binary(Self::NAME, inputs, |x, y| x - y)
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_exact, eval_op, indices, rand_tensor,
    };
    use crate::ops::{sub::Sub, Op};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula_with_broadcasting(
            shape in prop::collection::vec(1usize..4, 0..4),
            drop in 0usize..4,
            ones in 0u32..16,
            swap: bool,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16, DType::I32, DType::I8,
                                            DType::I16, DType::U16, DType::U32, DType::U64]),
            seed in 0u64..1000,
        ) {
            let other = broadcast_partner(&shape, drop, ones);
            let (sa, sb) = if swap { (other, shape.clone()) } else { (shape.clone(), other) };
            let a = rand_tensor(dt, sa, seed);
            let b = rand_tensor(dt, sb, seed + 1);

            let out = eval_op(Op::Sub(Sub {}), &[a.clone(), b.clone()]).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let (x, y) = (at_broadcast(&a, i), at_broadcast(&b, i));
                    x - y
                })
                .collect();
            check_exact(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn bool_operands_are_rejected() {
        let a = rand_tensor(DType::Bool, vec![2], 0);
        let e = eval_op(Op::Sub(Sub {}), &[a.clone(), a])
            .unwrap_err()
            .to_string();
        assert!(e.contains("numeric") && e.contains("bool[2]"), "{e}");
    }

    #[test]
    fn integer_difference_saturates() {
        let a = crate::tensor::Tensor::new(DType::I8, vec![1], vec![-100.0]).unwrap();
        let b = crate::tensor::Tensor::new(DType::I8, vec![1], vec![100.0]).unwrap();
        let out = eval_op(Op::Sub(Sub {}), &[a, b]).unwrap();
        assert_eq!(out[0].data(), &[-128.0]);
    }

    #[test]
    fn unsigned_difference_saturates_at_zero() {
        for d in [DType::U16, DType::U32, DType::U64] {
            let t = |v: Vec<f64>| crate::tensor::Tensor::new(d, vec![v.len()], v).unwrap();
            let out = eval_op(
                Op::Sub(Sub {}),
                &[t(vec![0.0, 5.0, 9.0]), t(vec![1.0, 9.0, 5.0])],
            )
            .unwrap();
            assert_eq!(out[0].data(), &[0.0, 0.0, 4.0], "{d}");
        }
        let t = |v: Vec<f64>| crate::tensor::Tensor::new(DType::I16, vec![v.len()], v).unwrap();
        let out = eval_op(
            Op::Sub(Sub {}),
            &[t(vec![-32768.0, 32767.0]), t(vec![1.0, -1.0])],
        )
        .unwrap();
        assert_eq!(out[0].data(), &[-32768.0, 32767.0]);
    }
}
