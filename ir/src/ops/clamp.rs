//! `clamp`: element-wise clamping into `[min, max]`.

use super::util::{eval_unary, infer_unary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `min(max(x, min), max)` for any numeric dtype; a missing bound is unbounded. The bounds are
/// applied in f64 and the result rounded once to the dtype (so a bound that is not a value of the
/// dtype is rounded too). NaN stays NaN (PyTorch `clamp`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clamp {
    /// Lower bound, if any.
    #[serde(default)]
    pub min: Option<f64>,
    /// Upper bound, if any.
    #[serde(default)]
    pub max: Option<f64>,
}

impl Clamp {
    fn check_bounds(&self) -> Result<(), OpError> {
        if let (Some(lo), Some(hi)) = (self.min, self.max) {
            if lo > hi {
                crate::bail!("clamp: min ({lo}) must not exceed max ({hi})");
            }
        }
        Ok(())
    }
}

impl OpSpec for Clamp {
    const NAME: &'static str = "clamp";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        self.check_bounds()?;
        Ok(vec![infer_unary(Self::NAME, inputs, false)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        self.check_bounds()?;
        let lo = self.min.unwrap_or(f64::NEG_INFINITY);
        let hi = self.max.unwrap_or(f64::INFINITY);
        eval_unary(Self::NAME, inputs, |x| {
            if x.is_nan() {
                x
            } else {
                x.max(lo).min(hi)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, eval_op, rand_tensor};
    use crate::ops::{clamp::Clamp, Op};
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula(
            shape in prop::collection::vec(1usize..5, 0..4),
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16,
                                            DType::I32, DType::I8]),
            lo in prop::option::of(-3.0f64..1.0),
            width in 0.0f64..4.0,
            has_hi: bool,
            seed in 0u64..1000,
        ) {
            let hi = if has_hi { Some(lo.unwrap_or(-1.0) + width) } else { None };
            let x = rand_tensor(dt, shape.clone(), seed);
            let out = eval_op(Op::Clamp(Clamp { min: lo, max: hi }), std::slice::from_ref(&x)).unwrap();
            let naive: Vec<f64> = x.data().iter().map(|&x| {
                let mut y = x;
                if let Some(l) = lo { if y < l { y = l; } }
                if let Some(h) = hi { if y > h { y = h; } }
                y
            }).collect();
            check_exact(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn inverted_bounds_and_bool_are_rejected() {
        let x = Tensor::new(DType::F32, vec![2], vec![1.0, f64::NAN]).unwrap();
        let op = |min, max| Op::Clamp(Clamp { min, max });
        let e = eval_op(op(Some(2.0), Some(1.0)), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("min (2) must not exceed max (1)"), "{e}");
        let out = eval_op(op(Some(2.0), None), &[x]).unwrap();
        assert_eq!(out[0].data()[0], 2.0);
        assert!(out[0].data()[1].is_nan());
        let b = Tensor::new(DType::Bool, vec![1], vec![1.0]).unwrap();
        let e = eval_op(op(None, None), &[b]).unwrap_err().to_string();
        assert!(e.contains("numeric"), "{e}");
    }
}
