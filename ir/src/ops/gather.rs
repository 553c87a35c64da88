//! `gather`: numpy `take(data, indices, axis)`; an embedding lookup is `gather` on axis 0.

use super::util::{expect_arity, expect_int, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Operands `(data, indices)`; result shape `data[:axis] + indices.shape + data[axis+1:]`.
/// Indices are any integer dtype; negative indices count from the end (numpy); an index out of
/// `[-n, n)` is an evaluation error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gather {
    /// The axis of `data` to index (negative counts from the end).
    pub axis: i64,
}

impl OpSpec for Gather {
    const NAME: &'static str = "gather";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (d, i) = (&inputs[0], &inputs[1]);
        expect_int(Self::NAME, "indices operand", i)?;
        let ax = normalize_axis(Self::NAME, self.axis, d.rank())?;
        let mut shape = d.shape[..ax].to_vec();
        shape.extend(i.shape.iter().cloned());
        shape.extend(d.shape[ax + 1..].iter().cloned());
        Ok(vec![TensorType::new(d.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (d, idx) = (inputs[0], inputs[1]);
        let ax = normalize_axis(Self::NAME, self.axis, d.rank())?;
        let n = d.shape()[ax];
        let outer: usize = d.shape()[..ax].iter().product();
        let inner: usize = d.shape()[ax + 1..].iter().product();
        let mut out = Vec::with_capacity(outer * idx.numel() * inner);
        for o in 0..outer {
            for &i in idx.data() {
                let j = if i < 0.0 { i + n as f64 } else { i };
                if j < 0.0 || j >= n as f64 {
                    crate::bail!("gather index {i} is out of range for axis {ax} of size {n}");
                }
                let base = (o * n + j as usize) * inner;
                out.extend_from_slice(&d.data()[base..base + inner]);
            }
        }
        let mut shape = d.shape()[..ax].to_vec();
        shape.extend_from_slice(idx.shape());
        shape.extend_from_slice(&d.shape()[ax + 1..]);
        Ok(vec![Tensor::new(d.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Gather;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_take(v in 1usize..6, e in 1usize..4, b in 1usize..3, s in 1usize..4,
                              axis in 0i64..2, seed in 0u64..1000) {
            let data = rand_tensor(DType::F32, vec![v, e], seed);
            let n = if axis == 0 { v } else { e };
            let ids = Tensor::from_fn(DType::I64, vec![b, s], |i| {
                // Mix of positive and negative in-range indices.
                let k = ((i[0] * 7 + i[1] * 3 + seed as usize) % (2 * n)) as f64;
                if k < n as f64 { k } else { k - 2.0 * n as f64 }
            });
            let out = eval_op(Op::Gather(Gather { axis }), &[data.clone(), ids.clone()]).unwrap();
            for bi in 0..b { for si in 0..s {
                let raw = ids.at(&[bi, si]);
                let j = if raw < 0.0 { (raw + n as f64) as usize } else { raw as usize };
                if axis == 0 {
                    for k in 0..e { prop_assert_eq!(out[0].at(&[bi, si, k]), data.at(&[j, k])); }
                } else {
                    for r in 0..v { prop_assert_eq!(out[0].at(&[r, bi, si]), data.at(&[r, j])); }
                }
            }}
        }
    }

    #[test]
    fn float_indices_and_out_of_range_are_errors() {
        let data = rand_tensor(DType::F32, vec![4, 2], 0);
        let fi = rand_tensor(DType::F32, vec![3], 0);
        let e = eval_op(Op::Gather(Gather { axis: 0 }), &[data.clone(), fi])
            .unwrap_err()
            .to_string();
        assert!(e.contains("integer indices"), "{e}");
        let ids = Tensor::new(DType::I32, vec![1], vec![4.0]).unwrap();
        let e = eval_op(Op::Gather(Gather { axis: 0 }), &[data, ids])
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
    }
}
