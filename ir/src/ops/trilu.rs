//! `trilu`: ONNX Trilu, the upper or lower triangle of the last two axes.

use super::util::{expect_arity, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

fn default_true() -> bool {
    true
}

/// ONNX Trilu on one operand of any dtype and rank ≥ 2, batched over the leading axes: with
/// `i`, `j` the row and column (the last two axes), `upper` keeps the elements with
/// `j − i ≥ k` and `!upper` those with `j − i ≤ k`; every other element becomes 0 (NaN too).
/// `k` may be any integer (a `k` past the matrix keeps everything or nothing). The result has
/// the operand's type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trilu {
    /// Keep the upper triangle (default, ONNX `upper = 1`) or the lower one.
    #[serde(default = "default_true")]
    pub upper: bool,
    /// The diagonal offset (default 0; positive moves it up and right).
    #[serde(default)]
    pub k: i64,
}

impl Default for Trilu {
    fn default() -> Self {
        Trilu { upper: true, k: 0 }
    }
}

impl Trilu {
    /// Whether the element at row `i`, column `j` is kept.
    pub fn keeps(&self, i: usize, j: usize) -> bool {
        let d = j as i128 - i as i128;
        let k = i128::from(self.k);
        if self.upper {
            d >= k
        } else {
            d <= k
        }
    }
}

impl OpSpec for Trilu {
    const NAME: &'static str = "trilu";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        if x.rank() < 2 {
            crate::bail!("{} expects an operand of rank >= 2, found {x}", Self::NAME);
        }
        Ok(vec![x.clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let r = x.rank();
        if r < 2 {
            crate::bail!(
                "{} expects an operand of rank >= 2, found shape {:?}",
                Self::NAME,
                x.shape()
            );
        }
        let (rows, cols) = (x.shape()[r - 2], x.shape()[r - 1]);
        let out = x
            .data()
            .iter()
            .enumerate()
            .map(|(f, &v)| {
                let (i, j) = ((f / cols.max(1)) % rows.max(1), f % cols.max(1));
                if self.keeps(i, j) {
                    v
                } else {
                    0.0
                }
            })
            .collect();
        Ok(vec![
            Tensor::new(x.dtype(), x.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::Trilu;
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, eval_op, indices, rand_tensor};
    use crate::ops::Op;
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]
        /// Naive: numpy `triu`/`tril` per element from the multi-index.
        #[test]
        fn matches_naive_triangle(
            shape in prop::collection::vec(0usize..5, 2..5),
            upper: bool,
            k in -6i64..7,
            dt in prop::sample::select(vec![DType::F32, DType::I64, DType::Bool, DType::BF16]),
            seed in 0u64..1000,
        ) {
            let x = rand_tensor(dt, shape.clone(), seed);
            let out = eval_op(Op::Trilu(Trilu { upper, k }), std::slice::from_ref(&x)).unwrap();
            let r = shape.len();
            let naive: Vec<f64> = indices(&shape).into_iter().map(|p| {
                let (i, j) = (p[r - 2] as i64, p[r - 1] as i64);
                let keep = if upper { j >= i + k } else { j <= i + k };
                if keep { x.at(&p) } else { 0.0 }
            }).collect();
            check_exact(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn onnx_examples_and_errors() {
        // test_triu_one_row / test_tril_neg style: [[1,2,3],[4,5,6]].
        let x = Tensor::from_f32(vec![2, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let run = |upper, k| {
            eval_op(Op::Trilu(Trilu { upper, k }), std::slice::from_ref(&x)).unwrap()[0]
                .to_f32_vec()
        };
        assert_eq!(run(true, 0), vec![1., 2., 3., 0., 5., 6.]);
        assert_eq!(run(true, 1), vec![0., 2., 3., 0., 0., 6.]);
        assert_eq!(run(false, -1), vec![0., 0., 0., 4., 0., 0.]);
        assert_eq!(run(false, 0), vec![1., 0., 0., 4., 5., 0.]);
        assert_eq!(run(true, i64::MIN), vec![1., 2., 3., 4., 5., 6.]);
        assert_eq!(run(false, i64::MIN), vec![0.; 6]);
        // NaN outside the triangle becomes 0.
        let n = Tensor::from_f32(vec![2, 2], &[1., f32::NAN, f32::NAN, 1.]).unwrap();
        let y = eval_op(Op::Trilu(Trilu { upper: true, k: 0 }), &[n]).unwrap();
        assert_eq!(y[0].data()[2], 0.0);
        assert!(y[0].data()[1].is_nan());
        let e = eval_op(
            Op::Trilu(Trilu::default()),
            &[rand_tensor(DType::F32, vec![3], 0)],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("rank >= 2"), "{e}");
        let t: Trilu = serde_json::from_str("{}").unwrap();
        assert_eq!(t, Trilu { upper: true, k: 0 });
    }
}
