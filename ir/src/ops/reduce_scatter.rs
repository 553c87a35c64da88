//! `reduce_scatter`: sum over ranks, then each rank keeps its slice of an axis.

use super::util::{
    check_world, divide_dim, expect_arity, expect_numeric, normalize_axis, single_rank,
};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Element-wise sum of the operand over the `world` ranks of `mesh_axis`, after which rank `r`
/// keeps the `r`-th of `world` equal slices along `axis` (the axis dim is divided by `world`,
/// which must divide it). Reference eval: single-rank only (`world == 1` is the identity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReduceScatter {
    /// The scattered axis (negative counts from the end).
    pub axis: i64,
    /// Name of the device-mesh axis the ranks lie on.
    pub mesh_axis: String,
    /// Number of ranks on that mesh axis.
    pub world: u64,
}

impl OpSpec for ReduceScatter {
    const NAME: &'static str = "reduce_scatter";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        check_world(Self::NAME, self.world)?;
        let x = &inputs[0];
        expect_numeric(Self::NAME, "operand", x)?;
        let ax = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let mut shape = x.shape.clone();
        shape[ax] = divide_dim(Self::NAME, &x.shape[ax], self.world, "scattered axis")?;
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
    use super::ReduceScatter;
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::types::TensorType;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn types_divide_the_axis_and_one_rank_is_identity(a in 1usize..4, per in 1usize..4,
                                                          world in 1u64..6, seed in 0u64..100) {
            let n = per * world as usize;
            let op = ReduceScatter { axis: 0, mesh_axis: "dp".into(), world };
            let m = Module::new();
            let ty = TensorType::fixed(DType::F32, &[n, a]);
            let t = op.infer(&InferCx { module: &m }, &[ty]).unwrap();
            prop_assert_eq!(&t[0], &TensorType::fixed(DType::F32, &[per, a]));
            let x = rand_tensor(DType::F32, vec![n, a], seed);
            let one = ReduceScatter { axis: 0, mesh_axis: "dp".into(), world: 1 };
            let out = eval_op(Op::ReduceScatter(one), std::slice::from_ref(&x)).unwrap();
            prop_assert_eq!(&out[0], &x);
        }
    }

    #[test]
    fn world_must_divide_and_multi_rank_needs_a_communicator() {
        let x = rand_tensor(DType::F32, vec![6, 2], 0);
        let op = ReduceScatter {
            axis: 0,
            mesh_axis: "dp".into(),
            world: 4,
        };
        let e = eval_op(Op::ReduceScatter(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("world 4 must divide the scattered axis 6"),
            "{e}"
        );
        let op = ReduceScatter {
            axis: 0,
            mesh_axis: "dp".into(),
            world: 3,
        };
        let e = eval_op(Op::ReduceScatter(op), &[x])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a communicator"), "{e}");
    }
}
