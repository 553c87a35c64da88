//! `all_reduce`: element-wise reduction over ranks; every rank gets the result.

use super::util::{check_world, expect_arity, expect_numeric, single_rank};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// The reduction of [`AllReduce`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceKind {
    /// Element-wise sum.
    #[default]
    Sum,
    /// Element-wise maximum.
    Max,
}

/// Element-wise `reduce` of the operand over the `world` ranks of `mesh_axis`; same type as the
/// operand. Reference eval: single-rank only (`world == 1` is the identity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllReduce {
    /// Name of the device-mesh axis the ranks lie on.
    pub mesh_axis: String,
    /// Number of ranks on that mesh axis.
    pub world: u64,
    /// The reduction (default sum).
    #[serde(default)]
    pub reduce: ReduceKind,
}

impl OpSpec for AllReduce {
    const NAME: &'static str = "all_reduce";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        check_world(Self::NAME, self.world)?;
        expect_numeric(Self::NAME, "operand", &inputs[0])?;
        Ok(vec![inputs[0].clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        single_rank(Self::NAME, &self.mesh_axis, self.world, inputs)
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::{AllReduce, ReduceKind};
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn one_rank_is_identity(a in 1usize..5, max in proptest::bool::ANY, seed in 0u64..100) {
            let x = rand_tensor(DType::BF16, vec![a, 3], seed);
            let reduce = if max { ReduceKind::Max } else { ReduceKind::Sum };
            let op = AllReduce { mesh_axis: "tp".into(), world: 1, reduce };
            // The reduction over a single rank is the operand itself, for sum and max alike.
            prop_assert_eq!(&eval_op(Op::AllReduce(op), std::slice::from_ref(&x)).unwrap()[0], &x);
        }
    }

    #[test]
    fn bool_operands_and_multi_rank_eval_are_errors() {
        let b = rand_tensor(DType::Bool, vec![2], 0);
        let op = AllReduce {
            mesh_axis: "tp".into(),
            world: 1,
            reduce: ReduceKind::Sum,
        };
        let e = eval_op(Op::AllReduce(op), &[b]).unwrap_err().to_string();
        assert!(e.contains("numeric operand"), "{e}");
        let x = rand_tensor(DType::F32, vec![2], 0);
        let op = AllReduce {
            mesh_axis: "tp".into(),
            world: 8,
            reduce: ReduceKind::Max,
        };
        let e = eval_op(Op::AllReduce(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("world 8 needs a communicator"), "{e}");
    }
}
