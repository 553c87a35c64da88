//! `transpose`: permute the dims of a tensor (numpy `transpose(x, perm)`).

use super::util::{expect_arity, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::{strides_of, Tensor};
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Result dim `i` is operand dim `perm[i]`; `perm` must be a permutation of `0..rank`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transpose {
    /// The permutation: result dim `i` is operand dim `perm[i]`.
    pub perm: Vec<usize>,
}

impl Transpose {
    fn check_perm(&self, rank: usize) -> Result<(), OpError> {
        let mut seen = vec![false; rank];
        let ok = self.perm.len() == rank
            && self
                .perm
                .iter()
                .all(|&p| p < rank && !std::mem::replace(&mut seen[p], true));
        if !ok {
            crate::bail!(
                "transpose perm {:?} is not a permutation of 0..{rank} (operand rank {rank})",
                self.perm
            );
        }
        Ok(())
    }
}

impl OpSpec for Transpose {
    const NAME: &'static str = "transpose";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        self.check_perm(x.rank())?;
        let shape = self.perm.iter().map(|&p| x.shape[p].clone());
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        self.check_perm(x.rank())?;
        let xs = strides_of(x.shape());
        let shape: Vec<usize> = self.perm.iter().map(|&p| x.shape()[p]).collect();
        let src = x.data();
        let mut out = Vec::with_capacity(x.numel());
        super::util::for_each_index(&shape, &[self.perm.iter().map(|&p| xs[p]).collect()], |o| {
            out.push(src[o[0]])
        });
        Ok(vec![Tensor::new(x.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Transpose;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_permutation(a in 1usize..4, b in 1usize..4, c in 1usize..4,
                                     p in 0usize..6, seed in 0u64..1000) {
            let perms = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
            let perm = perms[p];
            let x = rand_tensor(DType::F32, vec![a, b, c], seed);
            let op = Op::Transpose(Transpose { perm: perm.to_vec() });
            let out = eval_op(op, std::slice::from_ref(&x))
                .unwrap();
            let dims = [a, b, c];
            prop_assert_eq!(out[0].shape(), &[dims[perm[0]], dims[perm[1]], dims[perm[2]]][..]);
            for i in 0..a { for j in 0..b { for k in 0..c {
                let src = [i, j, k];
                let dst = [src[perm[0]], src[perm[1]], src[perm[2]]];
                prop_assert_eq!(out[0].at(&dst), x.at(&src));
            }}}
        }
    }

    #[test]
    fn bad_perm_is_a_type_error() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let e = eval_op(
            Op::Transpose(Transpose { perm: vec![0, 0] }),
            std::slice::from_ref(&x),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a permutation"), "{e}");
        let e = eval_op(
            Op::Transpose(Transpose {
                perm: vec![1, 0, 2],
            }),
            &[x],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rank 2"), "{e}");
    }
}
