//! `reduce`: sum, product, mean, max or min over a set of axes.

use super::util::{broadcast_strides, expect_arity, expect_float, expect_numeric, for_each_index};
use super::util::{normalize_axes, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::{strides_of, Tensor};
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// How a [`Reduce`] combines elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReduceKind {
    /// Sum (0 over an empty set).
    Sum,
    /// Arithmetic mean (float dtypes only; NaN over an empty set).
    Mean,
    /// Maximum (NaN propagates; `-inf` over an empty set, the dtype's minimum for integers and
    /// for floats without infinities).
    Max,
    /// Minimum (NaN propagates; `+inf` over an empty set, the dtype's maximum for integers and
    /// for floats without infinities).
    Min,
    /// Product (1 over an empty set).
    Prod,
}

impl ReduceKind {
    /// The result over an empty set, before rounding to the dtype: the identity of the
    /// combination (ONNX's empty-set semantics; `-inf`/`+inf` round to an integer dtype's
    /// minimum/maximum), NaN for the mean.
    pub fn empty_value(self) -> f64 {
        match self {
            ReduceKind::Sum => 0.0,
            ReduceKind::Prod => 1.0,
            ReduceKind::Mean => f64::NAN,
            ReduceKind::Max => f64::NEG_INFINITY,
            ReduceKind::Min => f64::INFINITY,
        }
    }
}

/// Reduce `axes` of one numeric operand (bool is rejected; `mean` needs a float dtype).
///
/// Accumulation is in f64, rounded once to the operand's dtype (integer sums and products
/// saturate). `axes` must be non-empty and distinct (negative axes count from the end); the
/// reduced dims are dropped, or kept as size 1 with `keepdims`. Over zero elements (a reduced
/// dim of size 0) the result is ONNX's: [`ReduceKind::empty_value`] rounded to the dtype (sum
/// 0, prod 1, mean NaN, max `-inf` or the dtype's minimum, min `+inf` or its maximum).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reduce {
    /// How to combine.
    pub kind: ReduceKind,
    /// The axes to reduce.
    pub axes: Vec<i64>,
    /// Keep reduced dims as size 1 (default false).
    #[serde(default)]
    pub keepdims: bool,
    /// `sum`/`mean` only: accumulate in index order, rounding to the dtype after every
    /// addition (a naive low-precision kernel, and what numpy does for bfloat16 arrays — the
    /// ONNX reference's bf16 Softmax), instead of exactly with one rounding (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sequential: bool,
}

impl Reduce {
    fn axes_for(&self, rank: usize) -> Result<Vec<usize>, OpError> {
        if self.axes.is_empty() {
            crate::bail!("reduce needs at least one axis (list every axis to reduce them all)");
        }
        normalize_axes(Self::NAME, &self.axes, rank)
    }
}

impl OpSpec for Reduce {
    const NAME: &'static str = "reduce";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        expect_numeric(Self::NAME, "operand", x)?;
        if self.kind == ReduceKind::Mean {
            expect_float("reduce mean", "operand", x)?;
        }
        let axes = self.axes_for(x.rank())?;
        let mut shape = Vec::with_capacity(x.rank());
        for (i, d) in x.shape.iter().enumerate() {
            if !axes.contains(&i) {
                shape.push(d.clone());
            } else if self.keepdims {
                shape.push(Dim::from(1u64));
            }
        }
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let axes = self.axes_for(x.rank())?;
        let keep: Vec<usize> = (0..x.rank())
            .map(|i| if axes.contains(&i) { 1 } else { x.shape()[i] })
            .collect();
        let count: usize = axes.iter().map(|&a| x.shape()[a]).product();
        let n_out: usize = keep.iter().product();
        let init = match self.kind {
            ReduceKind::Sum | ReduceKind::Mean => 0.0,
            k => k.empty_value(),
        };
        let mut acc = vec![init; n_out];
        let strides = [strides_of(x.shape()), broadcast_strides(&keep, x.shape())];
        let d = x.data();
        let kind = self.kind;
        let dtype = x.dtype();
        let sequential = self.sequential;
        for_each_index(x.shape(), &strides, |o| {
            let (v, a) = (d[o[0]], &mut acc[o[1]]);
            *a = match kind {
                ReduceKind::Sum | ReduceKind::Mean if sequential => dtype.round(*a + v),
                ReduceKind::Sum | ReduceKind::Mean => *a + v,
                ReduceKind::Prod => *a * v,
                _ if v.is_nan() || a.is_nan() => f64::NAN,
                ReduceKind::Max => a.max(v),
                ReduceKind::Min => a.min(v),
            };
        });
        if kind == ReduceKind::Mean {
            // 0 / 0 is the NaN of an empty mean.
            acc.iter_mut().for_each(|a| *a /= count as f64);
        }
        let shape = if self.keepdims {
            keep
        } else {
            (0..x.rank())
                .filter(|i| !axes.contains(i))
                .map(|i| x.shape()[i])
                .collect()
        };
        Ok(vec![Tensor::new(x.dtype(), shape, acc).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use super::ReduceKind;
    use crate::dtype::DType;
    use crate::ops::testing::{check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{reduce::Reduce, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula(
            // Size-0 dims exercise the empty-set results.
            shape in prop::collection::vec(0usize..4, 1..4),
            mask in 1u32..8,
            negate: bool,
            keepdims: bool,
            kind in prop::sample::select(vec![ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max,
                                              ReduceKind::Min, ReduceKind::Prod]),
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16,
                                            DType::I32, DType::I8]),
            seed in 0u64..1000,
        ) {
            prop_assume!(!(kind == ReduceKind::Mean && dt.is_int()));
            let rank = shape.len();
            let red: Vec<usize> = (0..rank).filter(|i| mask >> i & 1 == 1).collect();
            prop_assume!(!red.is_empty());
            let axes: Vec<i64> = red.iter()
                .map(|&a| if negate { a as i64 - rank as i64 } else { a as i64 })
                .collect();
            let x = rand_tensor(dt, shape.clone(), seed);
            let out = eval_op(Op::Reduce(Reduce { kind, axes, keepdims, sequential: false }), std::slice::from_ref(&x)).unwrap();
            // Naive: for every output position, collect the input elements that map onto it.
            let keep_shape: Vec<usize> = (0..rank)
                .map(|i| if red.contains(&i) { 1 } else { shape[i] })
                .collect();
            let naive: Vec<f64> = indices(&keep_shape)
                .iter()
                .map(|o| {
                    let vals: Vec<f64> = indices(&shape)
                        .iter()
                        .filter(|i| (0..rank).all(|a| red.contains(&a) || i[a] == o[a]))
                        .map(|i| x.at(i))
                        .collect();
                    match kind {
                        ReduceKind::Sum => vals.iter().sum(),
                        ReduceKind::Mean => vals.iter().sum::<f64>() / vals.len() as f64,
                        ReduceKind::Max => vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                        ReduceKind::Min => vals.iter().cloned().fold(f64::INFINITY, f64::min),
                        ReduceKind::Prod => vals.iter().product(),
                    }
                })
                .collect();
            let out_shape: Vec<usize> = if keepdims {
                keep_shape
            } else {
                (0..rank).filter(|i| !red.contains(i)).map(|i| shape[i]).collect()
            };
            check_rounded(&out[0], dt, &out_shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn symbolic_axes_keep_other_symbols() {
        let m = crate::module::Module::new();
        let cx = InferCx { module: &m };
        let t = TensorType::new(
            DType::F32,
            vec![Dim::from("B"), Dim::from("S"), Dim::from(8u64)],
        );
        let r = |axes: Vec<i64>, keepdims| Reduce {
            kind: ReduceKind::Mean,
            axes,
            keepdims,
            sequential: false,
        };
        let out = r(vec![1], false)
            .infer(&cx, std::slice::from_ref(&t))
            .unwrap();
        assert_eq!(out[0].to_string(), "f32[B,8]");
        let out = r(vec![-1, 0], true)
            .infer(&cx, std::slice::from_ref(&t))
            .unwrap();
        assert_eq!(out[0].to_string(), "f32[1,S,1]");
    }

    #[test]
    fn bad_axes_and_dtypes_are_errors() {
        let x = rand_tensor(DType::F32, vec![2, 0], 0);
        let op = |kind, axes: Vec<i64>| {
            Op::Reduce(Reduce {
                kind,
                axes,
                keepdims: false,
                sequential: false,
            })
        };
        let e = eval_op(op(ReduceKind::Sum, vec![]), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one axis"), "{e}");
        let e = eval_op(op(ReduceKind::Sum, vec![1, -1]), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listed twice"), "{e}");
        let e = eval_op(op(ReduceKind::Sum, vec![2]), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("axis 2 is out of range for rank 2"), "{e}");
        let i = rand_tensor(DType::I32, vec![2], 0);
        let e = eval_op(op(ReduceKind::Mean, vec![0]), &[i])
            .unwrap_err()
            .to_string();
        assert!(e.contains("float") && e.contains("i32[2]"), "{e}");
        let n = Tensor::new(DType::F32, vec![2], vec![f64::NAN, 1.0]).unwrap();
        assert!(eval_op(op(ReduceKind::Max, vec![0]), &[n]).unwrap()[0].data()[0].is_nan());
    }

    #[test]
    fn empty_sets_give_onnx_identities() {
        let op = |kind, keepdims| {
            Op::Reduce(Reduce {
                kind,
                axes: vec![1],
                keepdims,
                sequential: false,
            })
        };
        let run = |kind, dt| {
            let x = Tensor::new(dt, vec![2, 0], vec![]).unwrap();
            eval_op(op(kind, false), &[x]).unwrap()[0].clone()
        };
        let inf = f64::INFINITY;
        assert_eq!(run(ReduceKind::Sum, DType::F32).data(), &[0.0, 0.0]);
        assert_eq!(run(ReduceKind::Prod, DType::I32).data(), &[1.0, 1.0]);
        assert_eq!(run(ReduceKind::Max, DType::F32).data(), &[-inf, -inf]);
        assert_eq!(run(ReduceKind::Min, DType::F16).data(), &[inf, inf]);
        assert_eq!(run(ReduceKind::Max, DType::I8).data(), &[-128.0, -128.0]);
        assert_eq!(run(ReduceKind::Min, DType::U8).data(), &[255.0, 255.0]);
        assert_eq!(
            run(ReduceKind::Min, DType::I32).data(),
            &[i32::MAX as f64; 2]
        );
        // Floats without infinities saturate to their extremes.
        assert_eq!(
            run(ReduceKind::Max, DType::F8E4M3FN).data(),
            &[-448.0, -448.0]
        );
        let mean = run(ReduceKind::Mean, DType::BF16);
        assert_eq!(mean.shape(), &[2]);
        assert!(mean.data().iter().all(|v| v.is_nan()));
        // keepdims keeps the emptied axis as size 1; an empty result stays empty.
        let x = Tensor::new(DType::F32, vec![0, 3], vec![]).unwrap();
        let out = eval_op(
            Op::Reduce(Reduce {
                kind: ReduceKind::Max,
                axes: vec![0],
                keepdims: true,
                sequential: false,
            }),
            std::slice::from_ref(&x),
        )
        .unwrap();
        assert_eq!(out[0].shape(), &[1, 3]);
        assert_eq!(out[0].data(), &[-inf; 3]);
        let out = eval_op(op(ReduceKind::Prod, true), &[x]).unwrap();
        assert_eq!(out[0].shape(), &[0, 1]);
        // Products: signs, zeros and NaN.
        let p = Tensor::new(
            DType::F64,
            vec![2, 3],
            vec![-1.0, 2.0, 3.0, 0.5, f64::NAN, 0.0],
        )
        .unwrap();
        let out = eval_op(op(ReduceKind::Prod, false), &[p]).unwrap();
        assert_eq!(out[0].data()[0], -6.0);
        assert!(out[0].data()[1].is_nan());
    }

    /// Sequential accumulation rounds after every addition: in bf16 (ulp 2^-7 at 1), adding
    /// 2^-9 three times to 1 leaves 1 each time, where the exact sum 1 + 3·2^-9 rounds up.
    #[test]
    fn sequential_sums_round_after_every_addition() {
        let q = 1.0 / 512.0;
        let x = Tensor::new(DType::BF16, vec![4], vec![1.0, q, q, q]).unwrap();
        let sum = |sequential| {
            let op = Reduce {
                kind: ReduceKind::Sum,
                axes: vec![0],
                keepdims: false,
                sequential,
            };
            eval_op(Op::Reduce(op), std::slice::from_ref(&x)).unwrap()[0].data()[0]
        };
        assert_eq!(sum(true), 1.0);
        assert_eq!(sum(false), 1.0 + 1.0 / 128.0);
    }
}
