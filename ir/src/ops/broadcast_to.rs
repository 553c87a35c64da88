//! `broadcast_to`: numpy-style broadcast of one operand to an explicit shape.

use super::util::{broadcast_strides, expect_arity, for_each_index, join, op_err, resolve_dims};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// Broadcast to `shape`: operand dims align to the right; each is equal to the target dim or 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastTo {
    /// The target shape (fixed sizes or symbols).
    pub shape: Vec<Dim>,
}

impl OpSpec for BroadcastTo {
    const NAME: &'static str = "broadcast_to";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        let t = &self.shape;
        if x.rank() > t.len() {
            crate::bail!(
                "broadcast_to: operand {x} has higher rank than target [{}]",
                join(t)
            );
        }
        let off = t.len() - x.rank();
        for (i, d) in x.shape.iter().enumerate() {
            if d != &t[off + i] && d.fixed() != Some(1) {
                crate::bail!(
                    "broadcast_to: operand {x} does not broadcast to [{}] (dim {i}: {d} vs {})",
                    join(t),
                    t[off + i]
                );
            }
        }
        Ok(vec![TensorType::new(x.dtype, t.clone())])
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let out = resolve_dims(Self::NAME, &self.shape, cx.bindings)?;
        let off = out.len().checked_sub(x.rank()).ok_or_else(|| {
            OpError::new(format!(
                "broadcast_to: {:?} has higher rank than {out:?}",
                x.shape()
            ))
        })?;
        for (i, &d) in x.shape().iter().enumerate() {
            if d != out[off + i] && d != 1 {
                crate::bail!(
                    "broadcast_to: {:?} does not broadcast to {out:?}",
                    x.shape()
                );
            }
        }
        let s = broadcast_strides(x.shape(), &out);
        let src = x.data();
        let mut v = Vec::with_capacity(out.iter().product());
        for_each_index(&out, &[s], |o| v.push(src[o[0]]));
        Ok(vec![Tensor::new(x.dtype(), out, v).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::BroadcastTo;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_repeat(a in 1usize..4, b in 1usize..4, c in 1usize..4,
                                seed in 0u64..1000) {
            let x = rand_tensor(DType::F16, vec![b, 1], seed);
            let op = BroadcastTo { shape: vec![a.into(), b.into(), c.into()] };
            let out = eval_op(Op::BroadcastTo(op), std::slice::from_ref(&x)).unwrap();
            for i in 0..a { for j in 0..b { for k in 0..c {
                prop_assert_eq!(out[0].at(&[i, j, k]), x.at(&[j, 0]));
            }}}
        }
    }

    #[test]
    fn incompatible_dim_is_a_type_error() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let op = BroadcastTo {
            shape: vec![2usize.into(), 4usize.into()],
        };
        let e = eval_op(Op::BroadcastTo(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("3 vs 4"), "{e}");
    }
}
