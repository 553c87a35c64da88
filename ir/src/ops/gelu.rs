//! `gelu`: Gaussian error linear unit, exact (erf) or tanh-approximated.

use super::util::{eval_unary, infer_unary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Which GELU formula to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeluApproximate {
    /// The exact form `0.5·x·(1 + erf(x/√2))`.
    #[default]
    None,
    /// The tanh form `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    Tanh,
}

/// GELU for float dtypes, computed in f64 (`libm::erf` / `tanh`) and rounded once.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gelu {
    /// `"none"` (default, erf form) or `"tanh"`.
    #[serde(default)]
    pub approximate: GeluApproximate,
}

impl OpSpec for Gelu {
    const NAME: &'static str = "gelu";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_unary(Self::NAME, inputs, true)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        match self.approximate {
            GeluApproximate::None => eval_unary(Self::NAME, inputs, |x| {
                0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
            }),
            GeluApproximate::Tanh => eval_unary(Self::NAME, inputs, |x| {
                let c = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GeluApproximate;
    use crate::dtype::DType;
    use crate::ops::testing::{check_rounded, eval_op, rand_tensor};
    use crate::ops::{gelu::Gelu, Op};
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    /// Standard normal CDF by Simpson integration of the density from 0 to x (independent of erf).
    fn phi(x: f64) -> f64 {
        let n = 2000;
        let h = x / n as f64;
        let pdf = |t: f64| (-t * t / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut s = pdf(0.0) + pdf(x);
        for i in 1..n {
            s += pdf(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        0.5 + s * h / 3.0
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn matches_naive_formula(
            shape in prop::collection::vec(1usize..4, 0..3),
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16,
                                            DType::F8E4M3FN]),
            tanh: bool,
            seed in 0u64..1000,
        ) {
            let x = rand_tensor(dt, shape.clone(), seed);
            let approximate = if tanh { GeluApproximate::Tanh } else { GeluApproximate::None };
            let out = eval_op(Op::Gelu(Gelu { approximate }), std::slice::from_ref(&x)).unwrap();
            let naive: Vec<f64> = x.data().iter().map(|&x| {
                if tanh {
                    let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3));
                    x * (u.exp() / (u.exp() + (-u).exp()))
                } else {
                    x * phi(x)
                }
            }).collect();
            check_rounded(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn attributes_default_to_erf_form_and_ints_are_rejected() {
        let g: Gelu = serde_json::from_str("{}").unwrap();
        assert_eq!(g.approximate, GeluApproximate::None);
        let g: Gelu = serde_json::from_str(r#"{"approximate":"tanh"}"#).unwrap();
        assert_eq!(g.approximate, GeluApproximate::Tanh);
        assert!(serde_json::from_str::<Gelu>(r#"{"approximate":"fast"}"#).is_err());
        let x = Tensor::new(DType::I32, vec![1], vec![1.0]).unwrap();
        let e = eval_op(Op::Gelu(Gelu::default()), &[x])
            .unwrap_err()
            .to_string();
        assert!(e.contains("float") && e.contains("i32[1]"), "{e}");
    }
}
