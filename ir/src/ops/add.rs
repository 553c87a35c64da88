//! `add`: element-wise sum with numpy broadcasting.

use super::util::{binary_map, expect_arity, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `a + b`, both operands of one numeric dtype, broadcast numpy-style.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {}

impl OpSpec for Add {
    const NAME: &'static str = "add";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_binary(Self::NAME, inputs, true)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        Ok(vec![binary_map(Self::NAME, a, b, a.dtype(), |x, y| x + y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::{add::Add, Op};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_broadcast_sum(m in 1usize..5, n in 1usize..5, seed in 0u64..1000) {
            let a = rand_tensor(DType::F32, vec![m, n], seed);
            let b = rand_tensor(DType::F32, vec![1, n], seed + 1);
            let out = eval_op(Op::Add(Add {}), &[a.clone(), b.clone()]).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let want = (a.at(&[i, j]) + b.at(&[0, j])) as f32 as f64;
                    prop_assert_eq!(out[0].at(&[i, j]), want);
                }
            }
        }
    }

    #[test]
    fn mismatched_dtypes_are_a_type_error() {
        let a = rand_tensor(DType::F32, vec![2], 0);
        let b = rand_tensor(DType::F16, vec![2], 0);
        let e = eval_op(Op::Add(Add {}), &[a, b]).unwrap_err().to_string();
        assert!(e.contains("share a dtype"), "{e}");
    }
}
