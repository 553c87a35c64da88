//! `where`: element-wise selection `cond ? a : b` with numpy broadcasting of all three operands.

use super::util::{broadcast_dims, expect_arity, ternary_map};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `cond ? a : b` element-wise: `cond` is bool, `a` and `b` share any dtype (the result's), and
/// all three broadcast numpy-style.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Where {}

impl OpSpec for Where {
    const NAME: &'static str = "where";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 3)?;
        let (c, a, b) = (&inputs[0], &inputs[1], &inputs[2]);
        if c.dtype != DType::Bool {
            crate::bail!("where expects a bool condition (operand 0), found {c}");
        }
        if a.dtype != b.dtype {
            crate::bail!(
                "where: the two branches must share a dtype, found {a} and {b} (insert a cast)"
            );
        }
        let ab = broadcast_dims(Self::NAME, &a.shape, &b.shape)?;
        Ok(vec![TensorType::new(
            a.dtype,
            broadcast_dims(Self::NAME, &c.shape, &ab)?,
        )])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 3)?;
        let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
        let f = |c: f64, x: f64, y: f64| if c != 0.0 { x } else { y };
        Ok(vec![ternary_map(Self::NAME, c, a, b, a.dtype(), f)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_exact, eval_op, indices, rand_tensor,
    };
    use crate::ops::{where_::Where, Op};
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula_with_broadcasting(
            shape in prop::collection::vec(1usize..4, 0..4),
            drops in prop::array::uniform3(0usize..4),
            ones in prop::array::uniform3(0u32..16),
            full in 0usize..3,
            dt in prop::sample::select(vec![DType::F32, DType::F16, DType::I64, DType::Bool,
                                            DType::I16, DType::U16, DType::U32, DType::U64]),
            seed in 0u64..1000,
        ) {
            // Operand `full` has the result shape; the others broadcast against it.
            let sh = |k: usize| if k == full {
                shape.clone()
            } else {
                broadcast_partner(&shape, drops[k], ones[k])
            };
            let c = rand_tensor(DType::Bool, sh(0), seed);
            let a = rand_tensor(dt, sh(1), seed + 1);
            let b = rand_tensor(dt, sh(2), seed + 2);
            let out = eval_op(Op::Where(Where {}), &[c.clone(), a.clone(), b.clone()]).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let k = at_broadcast(&c, i);
                    k * at_broadcast(&a, i) + (1.0 - k) * at_broadcast(&b, i)
                })
                .collect();
            check_exact(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn condition_and_branch_dtypes_are_checked() {
        let f = rand_tensor(DType::F32, vec![2], 0);
        let h = rand_tensor(DType::F16, vec![2], 0);
        let c = rand_tensor(DType::Bool, vec![2], 0);
        let op = || Op::Where(Where {});
        let e = eval_op(op(), &[f.clone(), f.clone(), f.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bool condition") && e.contains("f32[2]"), "{e}");
        let e = eval_op(op(), &[c, f, h]).unwrap_err().to_string();
        assert!(e.contains("f32[2] and f16[2]"), "{e}");
    }

    #[test]
    fn symbolic_dims_broadcast() {
        let m = crate::module::Module::new();
        let cx = crate::ops::InferCx { module: &m };
        let t = |d, s: Vec<Dim>| TensorType::new(d, s);
        let out = crate::ops::OpSpec::infer(
            &Where {},
            &cx,
            &[
                t(DType::Bool, vec!["B".into(), 1u64.into(), "S".into()]),
                t(DType::F32, vec![4u64.into(), 1u64.into()]),
                t(DType::F32, vec!["S".into()]),
            ],
        )
        .unwrap();
        assert_eq!(out[0].to_string(), "f32[B,4,S]");
    }
}
