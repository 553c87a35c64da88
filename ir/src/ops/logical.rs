//! `logical`: element-wise boolean and/or/xor with numpy broadcasting.

use super::util::{binary_map, expect_arity, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// The connective a [`Logical`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogicalKind {
    /// `a ∧ b`
    And,
    /// `a ∨ b`
    Or,
    /// `a ⊕ b`
    Xor,
}

/// `a and|or|xor b` on two bool operands, broadcast numpy-style → bool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logical {
    /// Which connective.
    pub kind: LogicalKind,
}

impl OpSpec for Logical {
    const NAME: &'static str = "logical";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let t = infer_binary(Self::NAME, inputs, false)?;
        if t.dtype != DType::Bool {
            crate::bail!(
                "logical expects bool operands, found {} and {}",
                inputs[0],
                inputs[1]
            );
        }
        Ok(vec![t])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let k = self.kind;
        let f = |x: f64, y: f64| {
            let (x, y) = (x != 0.0, y != 0.0);
            let r = match k {
                LogicalKind::And => x && y,
                LogicalKind::Or => x || y,
                LogicalKind::Xor => x != y,
            };
            if r {
                1.0
            } else {
                0.0
            }
        };
        Ok(vec![binary_map(
            Self::NAME,
            inputs[0],
            inputs[1],
            DType::Bool,
            f,
        )?])
    }
}

#[cfg(test)]
mod tests {
    use super::LogicalKind;
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_exact, eval_op, indices, rand_tensor,
    };
    use crate::ops::{logical::Logical, Op};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_truth_tables_with_broadcasting(
            shape in prop::collection::vec(1usize..4, 0..4),
            drop in 0usize..4,
            ones in 0u32..16,
            swap: bool,
            kind in prop::sample::select(vec![LogicalKind::And, LogicalKind::Or, LogicalKind::Xor]),
            seed in 0u64..1000,
        ) {
            let other = broadcast_partner(&shape, drop, ones);
            let (sa, sb) = if swap { (other, shape.clone()) } else { (shape.clone(), other) };
            let a = rand_tensor(DType::Bool, sa, seed);
            let b = rand_tensor(DType::Bool, sb, seed + 1);
            let out = eval_op(Op::Logical(Logical { kind }), &[a.clone(), b.clone()]).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let (x, y) = (at_broadcast(&a, i), at_broadcast(&b, i));
                    match kind {
                        LogicalKind::And => x * y,
                        LogicalKind::Or => x + y - x * y,
                        LogicalKind::Xor => (x - y).abs(),
                    }
                })
                .collect();
            check_exact(&out[0], DType::Bool, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn non_bool_operands_are_rejected() {
        let a = rand_tensor(DType::I8, vec![2], 0);
        let e = eval_op(
            Op::Logical(Logical {
                kind: LogicalKind::And,
            }),
            &[a.clone(), a],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("expects bool operands, found i8[2]"), "{e}");
    }
}
