//! `concat`: join operands along one axis.

use super::util::{join, normalize_axis, op_err, same_dtype};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// Concatenate one or more operands of one dtype and rank along `axis`; the other dims must be
/// equal. The result's axis dim is the sum (a symbolic axis dim is allowed only when it is the
/// single non-empty part).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concat {
    /// The axis to join along (negative counts from the end).
    pub axis: i64,
}

impl OpSpec for Concat {
    const NAME: &'static str = "concat";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let d = same_dtype(Self::NAME, inputs)?;
        let first = &inputs[0];
        let ax = normalize_axis(Self::NAME, self.axis, first.rank())?;
        for (i, t) in inputs.iter().enumerate() {
            if t.rank() != first.rank() {
                crate::bail!(
                    "concat operands must share a rank: operand 0 is {first}, operand {i} is {t}"
                );
            }
            for (k, (a, b)) in first.shape.iter().zip(&t.shape).enumerate() {
                if k != ax && a != b {
                    crate::bail!(
                        "concat along axis {ax}: operand {i} {t} differs from operand 0 {first} in dim {k} ({b} vs {a})"
                    );
                }
            }
        }
        let axis_dim = Dim::sum(inputs.iter().map(|t| &t.shape[ax])).map_err(|e| {
            OpError::new(format!(
                "concat along axis {ax} (shapes: {}): {e}",
                inputs
                    .iter()
                    .map(|t| format!("[{}]", join(&t.shape)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let mut shape = first.shape.clone();
        shape[ax] = axis_dim;
        Ok(vec![TensorType::new(d, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let first = inputs
            .first()
            .ok_or_else(|| OpError::new("concat needs at least one operand"))?;
        let ax = normalize_axis(Self::NAME, self.axis, first.rank())?;
        let outer: usize = first.shape()[..ax].iter().product();
        let mut shape = first.shape().to_vec();
        shape[ax] = 0;
        for t in inputs {
            if t.rank() != first.rank()
                || t.shape()[..ax] != first.shape()[..ax]
                || t.shape()[ax + 1..] != first.shape()[ax + 1..]
            {
                crate::bail!(
                    "concat: shapes {:?} and {:?} differ off axis {ax}",
                    first.shape(),
                    t.shape()
                );
            }
            shape[ax] += t.shape()[ax];
        }
        let mut out = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for t in inputs {
                let chunk: usize = t.shape()[ax..].iter().product();
                out.extend_from_slice(&t.data()[o * chunk..(o + 1) * chunk]);
            }
        }
        Ok(vec![Tensor::new(first.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Concat;
    use crate::dtype::DType;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::Op;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_piecewise(a in 1usize..4, n1 in 0usize..4, n2 in 1usize..4,
                                   c in 1usize..3, seed in 0u64..1000) {
            let x = rand_tensor(DType::F32, vec![a, n1, c], seed);
            let y = rand_tensor(DType::F32, vec![a, n2, c], seed + 1);
            let out = eval_op(Op::Concat(Concat { axis: -2 }), &[x.clone(), y.clone()]).unwrap();
            prop_assert_eq!(out[0].shape(), &[a, n1 + n2, c][..]);
            for i in 0..a { for j in 0..n1 + n2 { for k in 0..c {
                let want = if j < n1 { x.at(&[i, j, k]) } else { y.at(&[i, j - n1, k]) };
                prop_assert_eq!(out[0].at(&[i, j, k]), want);
            }}}
        }
    }

    #[test]
    fn off_axis_mismatch_is_a_type_error() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let y = rand_tensor(DType::F32, vec![3, 3], 0);
        let e = eval_op(Op::Concat(Concat { axis: 1 }), &[x, y])
            .unwrap_err()
            .to_string();
        assert!(e.contains("dim 0 (3 vs 2)"), "{e}");
    }
}
