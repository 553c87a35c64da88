//! `all_to_all`: each rank splits an axis into `world` chunks, sends chunk `r` to rank `r`, and
//! concatenates what it receives along another axis (DeepSpeed-Ulysses' sequence ↔ head swap).

use super::util::{check_world, divide_dim, expect_arity, normalize_axis, scale_dim, single_rank};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Types: `split_axis` is divided by `world` (which must divide it) and `concat_axis` is
/// multiplied by `world`; when the two axes are the same the shape is unchanged. Reference eval:
/// single-rank only (`world == 1` is the identity).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllToAll {
    /// Axis split into `world` chunks (negative counts from the end).
    pub split_axis: i64,
    /// Axis the received chunks are concatenated along (negative counts from the end).
    pub concat_axis: i64,
    /// Name of the device-mesh axis the ranks lie on.
    pub mesh_axis: String,
    /// Number of ranks on that mesh axis.
    pub world: u64,
}

impl OpSpec for AllToAll {
    const NAME: &'static str = "all_to_all";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        check_world(Self::NAME, self.world)?;
        let x = &inputs[0];
        let s = normalize_axis(Self::NAME, self.split_axis, x.rank())?;
        let c = normalize_axis(Self::NAME, self.concat_axis, x.rank())?;
        let mut shape = x.shape.clone();
        // Divisibility is checked even when the axes coincide: every chunk must be equal.
        let split = divide_dim(Self::NAME, &x.shape[s], self.world, "split axis")?;
        if s != c {
            shape[s] = split;
            shape[c] = scale_dim(Self::NAME, &x.shape[c], self.world, "concat axis")?;
        }
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        if let Some(x) = inputs.first() {
            normalize_axis(Self::NAME, self.split_axis, x.rank())?;
            normalize_axis(Self::NAME, self.concat_axis, x.rank())?;
        }
        single_rank(Self::NAME, &self.mesh_axis, self.world, inputs)
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::AllToAll;
    use crate::dtype::DType;
    use crate::module::Module;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::types::TensorType;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn ulysses_head_sequence_swap_types(s in 1usize..4, h in 1usize..3, world in 1u64..5,
                                            seed in 0u64..100) {
            // [B, S/P, H, D] -> [B, S, H/P, D]: split heads, concat sequence.
            let w = world as usize;
            let op = AllToAll { split_axis: 2, concat_axis: 1, mesh_axis: "sp".into(), world };
            let m = Module::new();
            let t = op.infer(&InferCx { module: &m },
                             &[TensorType::fixed(DType::F16, &[2, s, h * w, 4])]).unwrap();
            prop_assert_eq!(&t[0], &TensorType::fixed(DType::F16, &[2, s * w, h, 4]));
            let x = rand_tensor(DType::F16, vec![2, s, h, 4], seed);
            let one = AllToAll { split_axis: 2, concat_axis: 1, mesh_axis: "sp".into(), world: 1 };
            prop_assert_eq!(&eval_op(Op::AllToAll(one), std::slice::from_ref(&x)).unwrap()[0], &x);
        }
    }

    #[test]
    fn indivisible_split_and_multi_rank_eval_are_errors() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let op = AllToAll {
            split_axis: 1,
            concat_axis: 0,
            mesh_axis: "sp".into(),
            world: 2,
        };
        let e = eval_op(Op::AllToAll(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("world 2 must divide the split axis 3"), "{e}");
        let op = AllToAll {
            split_axis: 0,
            concat_axis: 1,
            mesh_axis: "sp".into(),
            world: 2,
        };
        let e = eval_op(Op::AllToAll(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("needs a communicator"), "{e}");
    }
}
