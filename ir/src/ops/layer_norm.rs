//! `layer_norm`: normalization over the trailing dims from `axis`, with optional scale and bias.

use super::util::{check_norm_operands, expect_arity_range, minus_one, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `(x - mean) / √(var + eps) · scale + bias` over the dims `axis..` of `x` (biased variance),
/// for float dtypes, in f64 and rounded once. Operands `(x, [scale, [bias]])`; scale and bias are
/// shaped like the normalized dims and share x's dtype.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerNorm {
    /// First normalized axis (default -1: the last); all later axes are normalized too.
    #[serde(default = "minus_one")]
    pub axis: i64,
    /// Added to the variance.
    pub eps: f64,
}

impl OpSpec for LayerNorm {
    const NAME: &'static str = "layer_norm";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        check_norm_operands(Self::NAME, self.axis, self.eps, inputs, 3)?;
        Ok(vec![inputs[0].clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 1, 3)?;
        let x = inputs[0];
        let axis = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let inner: usize = x.shape()[axis..].iter().product();
        for p in &inputs[1..] {
            if p.numel() != inner {
                crate::bail!(
                    "layer_norm: parameter {:?} does not match {inner}",
                    p.shape()
                );
            }
        }
        let scale = |j: usize| inputs.get(1).map_or(1.0, |s| s.data()[j]);
        let bias = |j: usize| inputs.get(2).map_or(0.0, |b| b.data()[j]);
        let mut out = Vec::with_capacity(x.numel());
        // `chunks` needs a non-zero size; with inner == 0 there is nothing to normalize.
        for row in x.data().chunks(inner.max(1)).filter(|_| inner > 0) {
            let mean = row.iter().sum::<f64>() / inner as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / inner as f64;
            let inv = 1.0 / (var + self.eps).sqrt();
            out.extend(
                row.iter()
                    .enumerate()
                    .map(|(j, v)| (v - mean) * inv * scale(j) + bias(j)),
            );
        }
        Ok(vec![
            Tensor::new(x.dtype(), x.shape().to_vec(), out).map_err(op_err)?
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{layer_norm::LayerNorm, InferCx, Op, OpSpec};
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_naive_formula(
            shape in prop::collection::vec(1usize..5, 1..4),
            axis_from_end in 1usize..4,
            nparams in 0usize..3,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16]),
            seed in 0u64..1000,
        ) {
            prop_assume!(axis_from_end <= shape.len());
            let a = shape.len() - axis_from_end;
            let x = rand_tensor(dt, shape.clone(), seed);
            let mut ops = vec![x.clone()];
            for p in 0..nparams {
                ops.push(rand_tensor(dt, shape[a..].to_vec(), seed + 1 + p as u64));
            }
            let eps = 1e-5;
            let axis = -(axis_from_end as i64);
            let out = eval_op(Op::LayerNorm(LayerNorm { axis, eps }), &ops).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    // All elements sharing i's leading index i[..a].
                    let group: Vec<f64> = indices(&shape[a..])
                        .iter()
                        .map(|t| { let mut j = i[..a].to_vec(); j.extend(t); x.at(&j) })
                        .collect();
                    let n = group.len() as f64;
                    let mean = group.iter().sum::<f64>() / n;
                    let sq = group.iter().map(|v| v * v).sum::<f64>() / n;
                    let var = sq - mean * mean;
                    let mut y = (x.at(i) - mean) / (var + eps).sqrt();
                    if nparams > 0 { y *= ops[1].at(&i[a..]); }
                    if nparams > 1 { y += ops[2].at(&i[a..]); }
                    y
                })
                .collect();
            check_rounded(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn parameter_shapes_and_eps_are_checked() {
        let x = rand_tensor(DType::F32, vec![2, 3, 4], 0);
        let s = rand_tensor(DType::F32, vec![4], 1);
        let op = |axis, eps| Op::LayerNorm(LayerNorm { axis, eps });
        let e = eval_op(op(-2, 1e-5), &[x.clone(), s.clone()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("operand 1 must be shaped like the normalized dims [3,4]"),
            "{e}"
        );
        assert!(e.contains("found f32[4]"), "{e}");
        let e = eval_op(op(-1, -1.0), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("eps must be finite and >= 0"), "{e}");
        let e = eval_op(op(-1, 0.0), &[x.clone(), s.clone(), s.clone(), s]).unwrap_err();
        assert!(e.to_string().contains("1 to 3 operands, found 4"), "{e}");
        let l: LayerNorm = serde_json::from_str(r#"{"eps":1e-5}"#).unwrap();
        assert_eq!(l.axis, -1);
    }

    #[test]
    fn symbolic_leading_dims_flow_through() {
        let m = crate::module::Module::new();
        let x = TensorType::new(
            DType::F32,
            vec![Dim::from("B"), Dim::from("S"), Dim::from(8u64)],
        );
        let s = TensorType::new(DType::F32, vec![Dim::from(8u64)]);
        let out = LayerNorm {
            axis: -1,
            eps: 1e-5,
        }
        .infer(&InferCx { module: &m }, &[x.clone(), s]);
        assert_eq!(out.unwrap(), vec![x]);
    }
}
