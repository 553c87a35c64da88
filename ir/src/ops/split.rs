//! `split`: cut a tensor along one axis into pieces of the given sizes (several results).

use super::util::{expect_arity, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// Split `axis` into consecutive pieces of `sizes` (which must sum to the axis dim); one result
/// per piece. Sizes are dims: `[B, B]` splits a `2*B` axis in halves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Split {
    /// The axis (negative counts from the end).
    pub axis: i64,
    /// Piece sizes, in order.
    pub sizes: Vec<Dim>,
}

impl OpSpec for Split {
    const NAME: &'static str = "split";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        let ax = normalize_axis(Self::NAME, self.axis, x.rank())?;
        if self.sizes.is_empty() {
            crate::bail!("split needs at least one size");
        }
        let total = Dim::sum(&self.sizes)?;
        if total != x.shape[ax] {
            crate::bail!(
                "split sizes [{}] sum to {total}, but axis {ax} of {x} is {}",
                super::util::join(&self.sizes),
                x.shape[ax]
            );
        }
        if let Some(d) = self
            .sizes
            .iter()
            .find(|d| d.as_const().is_some_and(|c| c < 0))
        {
            crate::bail!("split size {d} is negative");
        }
        Ok(self
            .sizes
            .iter()
            .map(|s| {
                let mut shape = x.shape.clone();
                shape[ax] = s.clone();
                TensorType::new(x.dtype, shape)
            })
            .collect())
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let ax = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let n = x.shape()[ax];
        let sizes = super::util::resolve_dims(Self::NAME, &self.sizes, cx.bindings)?;
        if sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s)) != Some(n) {
            crate::bail!("split sizes {sizes:?} do not sum to axis dim {n}");
        }
        let outer: usize = x.shape()[..ax].iter().product();
        let inner: usize = x.shape()[ax + 1..].iter().product();
        let mut start = 0usize;
        let mut outs = Vec::with_capacity(sizes.len());
        for &s in &sizes {
            let mut v = Vec::with_capacity(outer * s * inner);
            for o in 0..outer {
                let base = (o * n + start) * inner;
                v.extend_from_slice(&x.data()[base..base + s * inner]);
            }
            let mut shape = x.shape().to_vec();
            shape[ax] = s;
            outs.push(Tensor::new(x.dtype(), shape, v).map_err(op_err)?);
            start += s;
        }
        Ok(outs)
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Split;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use crate::types::Dim;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn pieces_match_naive_offsets(a in 1usize..4, s1 in 0u64..4, s2 in 1u64..4,
                                      seed in 0u64..1000) {
            let n = (s1 + s2) as usize;
            let x = rand_tensor(DType::BF16, vec![a, n], seed);
            let op = Op::Split(Split { axis: 1, sizes: vec![Dim::from(s1), Dim::from(s2)] });
            let out = eval_op(op, std::slice::from_ref(&x))
                .unwrap();
            prop_assert_eq!(out.len(), 2);
            for i in 0..a { for j in 0..n {
                let got = if j < s1 as usize {
                    out[0].at(&[i, j])
                } else {
                    out[1].at(&[i, j - s1 as usize])
                };
                prop_assert_eq!(got, x.at(&[i, j]));
            }}
        }
    }

    #[test]
    fn sizes_must_sum_to_the_dim() {
        let x = rand_tensor(DType::F32, vec![2, 5], 0);
        let e = eval_op(
            Op::Split(Split {
                axis: -1,
                sizes: vec![Dim::from(2u64), Dim::from(2u64)],
            }),
            &[x],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("sum to 4") && e.contains("is 5"), "{e}");
    }
}
