//! `minimum`: element-wise minimum with numpy broadcasting.

use super::util::{eval_binary, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `min(a, b)` element-wise, both operands of one numeric dtype, broadcast numpy-style. NaN
/// propagates (numpy `minimum`, PyTorch `minimum`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Minimum {}

impl OpSpec for Minimum {
    const NAME: &'static str = "minimum";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_binary(Self::NAME, inputs, true)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        eval_binary(Self::NAME, inputs, |x, y| {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.min(y)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_exact, eval_op, indices, rand_tensor,
    };
    use crate::ops::{minimum::Minimum, Op};
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

            let out = eval_op(Op::Minimum(Minimum {}), &[a.clone(), b.clone()]).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let (x, y) = (at_broadcast(&a, i), at_broadcast(&b, i));
                    if x <= y { x } else { y }
                })
                .collect();
            check_exact(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn mismatched_dtypes_are_a_type_error() {
        let a = rand_tensor(DType::I32, vec![2], 0);
        let b = rand_tensor(DType::F32, vec![2], 0);
        let e = eval_op(Op::Minimum(Minimum {}), &[a, b])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("share a dtype") && e.contains("i32") && e.contains("f32"),
            "{e}"
        );
    }
}
