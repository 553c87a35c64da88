//! `all_gather`: concatenate every rank's shard along an axis.

use super::util::{check_world, expect_arity, normalize_axis, scale_dim, single_rank};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Each of the `world` ranks on mesh axis `mesh_axis` contributes its operand; the result is
/// their concatenation along `axis` in rank order (the axis dim is multiplied by `world`).
/// Reference eval: single-rank only (`world == 1` is the identity; larger worlds are an
/// evaluation error until the collectives backend executes them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllGather {
    /// Concatenation axis (negative counts from the end).
    pub axis: i64,
    /// Name of the device-mesh axis the ranks lie on.
    pub mesh_axis: String,
    /// Number of ranks on that mesh axis.
    pub world: u64,
}

impl OpSpec for AllGather {
    const NAME: &'static str = "all_gather";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        check_world(Self::NAME, self.world)?;
        let x = &inputs[0];
        let ax = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let mut shape = x.shape.clone();
        shape[ax] = scale_dim(Self::NAME, &x.shape[ax], self.world, "gathered axis")?;
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        if let Some(x) = inputs.first() {
            normalize_axis(Self::NAME, self.axis, x.rank())?;
        }
        single_rank(Self::NAME, &self.mesh_axis, self.world, inputs)
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::AllGather;
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::types::TensorType;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn types_scale_the_axis_and_one_rank_is_identity(a in 1usize..4, b in 1usize..4,
                                                         world in 1u64..9, seed in 0u64..100) {
            let op = AllGather { axis: -1, mesh_axis: "tp".into(), world };
            let m = Module::new();
            let ty = TensorType::fixed(DType::F32, &[a, b]);
            let t = op.infer(&InferCx { module: &m }, &[ty]).unwrap();
            prop_assert_eq!(&t[0], &TensorType::fixed(DType::F32, &[a, b * world as usize]));
            let x = rand_tensor(DType::F32, vec![a, b], seed);
            let one = AllGather { axis: 0, mesh_axis: "tp".into(), world: 1 };
            let out = eval_op(Op::AllGather(one), std::slice::from_ref(&x)).unwrap();
            prop_assert_eq!(&out[0], &x);
        }
    }

    #[test]
    fn multi_rank_eval_needs_a_communicator() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let op = AllGather {
            axis: 0,
            mesh_axis: "dp".into(),
            world: 2,
        };
        let e = eval_op(Op::AllGather(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a communicator"), "{e}");
        let op = AllGather {
            axis: 0,
            mesh_axis: "dp".into(),
            world: 0,
        };
        let e = eval_op(Op::AllGather(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("world size must be >= 1"), "{e}");
    }
}
