//! `cumulative`: running sum or product along one axis (ONNX `CumSum`, `CumProd`).

use super::util::{expect_arity, expect_numeric, normalize_axis, op_err, split_at_axis};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// How a [`Cumulative`] combines elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CumulativeKind {
    /// Running sum (ONNX `CumSum`); the empty sum is 0.
    Sum,
    /// Running product (ONNX `CumProd`); the empty product is 1.
    Prod,
}

/// Running sum or product of one numeric operand (bool is rejected) along `axis`; the result
/// has the operand's type.
///
/// Along the axis of length `n`, element `i` of the result combines the elements `j` with
/// `j <= i` (default), `j < i` (`exclusive`), `j >= i` (`reverse`) or `j > i` (both), so an
/// exclusive scan starts with 0 (sum) or 1 (prod) — exactly ONNX `CumSum`/`CumProd`. Each
/// result element is accumulated in f64 in scan order and rounded once to the dtype (integer
/// results saturate instead of wrapping). The operand must have rank >= 1; `axis` may be
/// negative. Empty tensors give empty results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cumulative {
    /// How to combine.
    pub kind: CumulativeKind,
    /// The axis to scan (negative counts from the end).
    pub axis: i64,
    /// Leave each element itself out of its result (default false).
    #[serde(default)]
    pub exclusive: bool,
    /// Scan from the end of the axis toward its start (default false).
    #[serde(default)]
    pub reverse: bool,
}

impl OpSpec for Cumulative {
    const NAME: &'static str = "cumulative";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        expect_numeric(Self::NAME, "operand", x)?;
        normalize_axis(Self::NAME, self.axis, x.rank())?;
        Ok(vec![x.clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let axis = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        let (init, combine): (f64, fn(f64, f64) -> f64) = match self.kind {
            CumulativeKind::Sum => (0.0, |a, b| a + b),
            CumulativeKind::Prod => (1.0, |a, b| a * b),
        };
        let d = x.data();
        let mut out = vec![0.0; d.len()];
        for o in 0..outer {
            for n in 0..inner {
                let at = |i: usize| (o * len + i) * inner + n;
                let mut acc = init;
                for k in 0..len {
                    let i = if self.reverse { len - 1 - k } else { k };
                    if self.exclusive {
                        out[at(i)] = acc;
                        acc = combine(acc, d[at(i)]);
                    } else {
                        acc = combine(acc, d[at(i)]);
                        out[at(i)] = acc;
                    }
                }
            }
        }
        Ok(vec![
            Tensor::new(x.dtype(), x.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::CumulativeKind;
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{cumulative::Cumulative, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn cum(kind: CumulativeKind, axis: i64, exclusive: bool, reverse: bool) -> Op {
        Op::Cumulative(Cumulative {
            kind,
            axis,
            exclusive,
            reverse,
        })
    }

    proptest! {
        #[test]
        fn matches_naive_windows(
            shape in prop::collection::vec(0usize..5, 1..4),
            axis in -3i64..3,
            kind in prop::sample::select(vec![CumulativeKind::Sum, CumulativeKind::Prod]),
            exclusive: bool,
            reverse: bool,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16,
                                            DType::I64, DType::I32, DType::I8]),
            seed in 0u64..1000,
        ) {
            let rank = shape.len() as i64;
            prop_assume!(axis >= -rank && axis < rank);
            let a = axis.rem_euclid(rank) as usize;
            let x = rand_tensor(dt, shape.clone(), seed);
            let out = eval_op(cum(kind, axis, exclusive, reverse), std::slice::from_ref(&x)).unwrap();
            // Naive: for every position, combine the elements of its window along the axis.
            let want: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let window = (0..shape[a]).filter(|&j| match (exclusive, reverse) {
                        (false, false) => j <= i[a],
                        (true, false) => j < i[a],
                        (false, true) => j >= i[a],
                        (true, true) => j > i[a],
                    });
                    let vals = window.map(|j| { let mut k = i.clone(); k[a] = j; x.at(&k) });
                    match kind {
                        CumulativeKind::Sum => vals.sum::<f64>(),
                        CumulativeKind::Prod => vals.product::<f64>(),
                    }
                })
                .collect();
            check_rounded(&out[0], dt, &shape, &want).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn onnx_examples() {
        let x = Tensor::new(DType::F64, vec![5], vec![1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let run = |k, e, r| {
            eval_op(cum(k, 0, e, r), std::slice::from_ref(&x)).unwrap()[0]
                .data()
                .to_vec()
        };
        use CumulativeKind::*;
        assert_eq!(run(Sum, false, false), [1.0, 3.0, 6.0, 10.0, 15.0]);
        assert_eq!(run(Sum, true, false), [0.0, 1.0, 3.0, 6.0, 10.0]);
        assert_eq!(run(Sum, false, true), [15.0, 14.0, 12.0, 9.0, 5.0]);
        assert_eq!(run(Sum, true, true), [14.0, 12.0, 9.0, 5.0, 0.0]);
        assert_eq!(run(Prod, false, false), [1.0, 2.0, 6.0, 24.0, 120.0]);
        assert_eq!(run(Prod, true, false), [1.0, 1.0, 2.0, 6.0, 24.0]);
        assert_eq!(run(Prod, false, true), [120.0, 120.0, 60.0, 20.0, 5.0]);
        assert_eq!(run(Prod, true, true), [120.0, 60.0, 20.0, 5.0, 1.0]);
        // 2-D along axis 1 (negative), and along axis 0.
        let m = Tensor::new(DType::I32, vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let out = eval_op(cum(Sum, -1, false, false), std::slice::from_ref(&m)).unwrap();
        check_exact(
            &out[0],
            DType::I32,
            &[2, 3],
            &[1.0, 3.0, 6.0, 4.0, 9.0, 15.0],
        )
        .unwrap();
        let out = eval_op(cum(Sum, 0, false, false), std::slice::from_ref(&m)).unwrap();
        check_exact(
            &out[0],
            DType::I32,
            &[2, 3],
            &[1.0, 2.0, 3.0, 5.0, 7.0, 9.0],
        )
        .unwrap();
        // Integer overflow saturates; NaN propagates along the scan.
        let b = Tensor::new(DType::I8, vec![3], vec![100.0, 100.0, -100.0]).unwrap();
        let out = eval_op(cum(Sum, 0, false, false), &[b]).unwrap();
        assert_eq!(out[0].data(), &[100.0, 127.0, 100.0]);
        let n = Tensor::new(DType::F32, vec![3], vec![1.0, f64::NAN, 2.0]).unwrap();
        let out = eval_op(cum(Prod, 0, false, false), &[n]).unwrap();
        assert_eq!(out[0].data()[0], 1.0);
        assert!(out[0].data()[1].is_nan() && out[0].data()[2].is_nan());
    }

    #[test]
    fn errors_and_symbolic_types() {
        let s = Tensor::new(DType::F32, vec![], vec![1.0]).unwrap();
        let e = eval_op(cum(CumulativeKind::Sum, 0, false, false), &[s])
            .unwrap_err()
            .to_string();
        assert!(e.contains("axis 0 is out of range for rank 0"), "{e}");
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let e = eval_op(cum(CumulativeKind::Sum, -3, false, false), &[x])
            .unwrap_err()
            .to_string();
        assert!(e.contains("axis -3 is out of range for rank 2"), "{e}");
        let b = rand_tensor(DType::Bool, vec![2], 0);
        let e = eval_op(cum(CumulativeKind::Prod, 0, false, false), &[b])
            .unwrap_err()
            .to_string();
        assert!(e.contains("numeric") && e.contains("bool[2]"), "{e}");
        let m = crate::module::Module::new();
        let t = TensorType::new(DType::I64, vec![Dim::from("B"), Dim::from("S")]);
        let out = Cumulative {
            kind: CumulativeKind::Sum,
            axis: -1,
            exclusive: true,
            reverse: false,
        }
        .infer(&InferCx { module: &m }, &[t])
        .unwrap();
        assert_eq!(out[0].to_string(), "i64[B,S]");
        let op =
            Op::from_attrs("cumulative", serde_json::json!({"kind": "prod", "axis": 1})).unwrap();
        assert_eq!(op, cum(CumulativeKind::Prod, 1, false, false));
    }
}
