//! `rms_norm`: root-mean-square normalization over the trailing dims from `axis`.

use super::util::{check_norm_operands, expect_arity_range, minus_one, normalize_axis, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `x / √(mean(x²) + eps) · scale` over the dims `axis..` of `x`, for float dtypes, in f64 and
/// rounded once. Operands `(x, [scale])`; scale is shaped like the normalized dims and shares
/// x's dtype.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmsNorm {
    /// First normalized axis (default -1: the last); all later axes are normalized too.
    #[serde(default = "minus_one")]
    pub axis: i64,
    /// Added to the mean square.
    pub eps: f64,
}

impl OpSpec for RmsNorm {
    const NAME: &'static str = "rms_norm";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        check_norm_operands(Self::NAME, self.axis, self.eps, inputs, 2)?;
        Ok(vec![inputs[0].clone()])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 1, 2)?;
        let x = inputs[0];
        let axis = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let inner: usize = x.shape()[axis..].iter().product();
        if let Some(s) = inputs.get(1) {
            if s.numel() != inner {
                crate::bail!("rms_norm: scale {:?} does not match {inner}", s.shape());
            }
        }
        let scale = |j: usize| inputs.get(1).map_or(1.0, |s| s.data()[j]);
        let mut out = Vec::with_capacity(x.numel());
        // `chunks` needs a non-zero size; with inner == 0 there is nothing to normalize.
        for row in x.data().chunks(inner.max(1)).filter(|_| inner > 0) {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / inner as f64;
            let inv = 1.0 / (ms + self.eps).sqrt();
            out.extend(row.iter().enumerate().map(|(j, v)| v * inv * scale(j)));
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
    use crate::ops::{rms_norm::RmsNorm, InferCx, Op, OpSpec};
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_naive_formula(
            shape in prop::collection::vec(1usize..5, 1..4),
            axis_from_end in 1usize..4,
            with_scale: bool,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16]),
            seed in 0u64..1000,
        ) {
            prop_assume!(axis_from_end <= shape.len());
            let a = shape.len() - axis_from_end;
            let x = rand_tensor(dt, shape.clone(), seed);
            let mut ops = vec![x.clone()];
            if with_scale {
                ops.push(rand_tensor(dt, shape[a..].to_vec(), seed + 1));
            }
            let eps = 1e-6;
            let axis = a as i64;
            let out = eval_op(Op::RmsNorm(RmsNorm { axis, eps }), &ops).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let group: Vec<f64> = indices(&shape[a..])
                        .iter()
                        .map(|t| { let mut j = i[..a].to_vec(); j.extend(t); x.at(&j) })
                        .collect();
                    let ms = group.iter().map(|v| v.powi(2)).sum::<f64>() / group.len() as f64;
                    let y = x.at(i) / (ms + eps).sqrt();
                    if with_scale { y * ops[1].at(&i[a..]) } else { y }
                })
                .collect();
            check_rounded(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn operands_are_checked() {
        let x = rand_tensor(DType::F16, vec![2, 4], 0);
        let s = rand_tensor(DType::F32, vec![4], 1);
        let op = || {
            Op::RmsNorm(RmsNorm {
                axis: -1,
                eps: 1e-6,
            })
        };
        let e = eval_op(op(), &[x.clone(), s]).unwrap_err().to_string();
        assert!(e.contains("share a dtype"), "{e}");
        let s = rand_tensor(DType::F16, vec![4], 1);
        let e = eval_op(op(), &[x.clone(), s.clone(), s])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 to 2 operands, found 3"), "{e}");
        let i = rand_tensor(DType::I32, vec![2, 4], 0);
        let e = eval_op(op(), &[i]).unwrap_err().to_string();
        assert!(e.contains("float") && e.contains("i32[2,4]"), "{e}");
    }

    #[test]
    fn symbolic_leading_dims_flow_through() {
        let m = crate::module::Module::new();
        let x = TensorType::new(DType::BF16, vec![Dim::from("T"), Dim::from(16u64)]);
        let out = RmsNorm {
            axis: -1,
            eps: 1e-6,
        }
        .infer(&InferCx { module: &m }, std::slice::from_ref(&x));
        assert_eq!(out.unwrap(), vec![x]);
    }
}
