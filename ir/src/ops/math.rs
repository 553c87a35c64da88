//! `math`: element-wise rounding, sign, trigonometric and hyperbolic functions of one operand.

use super::util::{eval_unary, infer_unary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// The function a [`Math`] op applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MathFn {
    /// Largest integer `<= x` (integers: identity).
    Floor,
    /// Smallest integer `>= x` (integers: identity).
    Ceil,
    /// Nearest integer, ties to even (ONNX `Round`, `numpy.round`; integers: identity).
    Round,
    /// `-1`, `0` or `1` by the sign of `x` (`-0.0` gives `0`); also for integer dtypes.
    Sign,
    /// Tangent.
    Tan,
    /// Arcsine (NaN outside `[-1, 1]`).
    Asin,
    /// Arccosine (NaN outside `[-1, 1]`).
    Acos,
    /// Arctangent.
    Atan,
    /// Hyperbolic sine.
    Sinh,
    /// Hyperbolic cosine.
    Cosh,
    /// Inverse hyperbolic sine.
    Asinh,
    /// Inverse hyperbolic cosine (NaN below 1).
    Acosh,
    /// Inverse hyperbolic tangent (`±inf` at `±1`, NaN outside `[-1, 1]`).
    Atanh,
}

impl MathFn {
    /// Whether the function also accepts integer dtypes (`floor`, `ceil`, `round`, `sign`).
    pub fn accepts_int(self) -> bool {
        matches!(
            self,
            MathFn::Floor | MathFn::Ceil | MathFn::Round | MathFn::Sign
        )
    }

    /// The function in f64 (libm for the transcendental ones; NaN propagates).
    pub fn apply(self, x: f64) -> f64 {
        match self {
            MathFn::Floor => x.floor(),
            MathFn::Ceil => x.ceil(),
            MathFn::Round => x.round_ties_even(),
            MathFn::Sign => {
                if x > 0.0 {
                    1.0
                } else if x < 0.0 {
                    -1.0
                } else if x == 0.0 {
                    0.0
                } else {
                    f64::NAN
                }
            }
            MathFn::Tan => libm::tan(x),
            MathFn::Asin => libm::asin(x),
            MathFn::Acos => libm::acos(x),
            MathFn::Atan => libm::atan(x),
            MathFn::Sinh => libm::sinh(x),
            MathFn::Cosh => libm::cosh(x),
            MathFn::Asinh => libm::asinh(x),
            MathFn::Acosh => libm::acosh(x),
            MathFn::Atanh => libm::atanh(x),
        }
    }
}

/// `fn(x)` element-wise for one operand, result of the operand's type, computed in f64 and
/// rounded once.
///
/// Float dtypes for every function; `floor`, `ceil`, `round` (identity) and `sign` also accept
/// integer dtypes; bool is rejected. NaN propagates (also through `sign`); `round` breaks ties
/// to even (`round(2.5) = 2`, `round(-0.5) = -0`). The ONNX ops Floor, Ceil, Round, Sign, Tan,
/// Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh and Atanh map onto it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Math {
    /// The function (JSON key `fn`).
    #[serde(rename = "fn")]
    pub func: MathFn,
}

impl OpSpec for Math {
    const NAME: &'static str = "math";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let op = format!("math {:?}", self.func).to_lowercase();
        Ok(vec![infer_unary(&op, inputs, !self.func.accepts_int())?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let f = self.func;
        eval_unary(Self::NAME, inputs, |x| f.apply(x))
    }
}

#[cfg(test)]
mod tests {
    use super::MathFn;
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, check_rounded, eval_op, rand_tensor};
    use crate::ops::{math::Math, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    const ALL: [MathFn; 13] = [
        MathFn::Floor,
        MathFn::Ceil,
        MathFn::Round,
        MathFn::Sign,
        MathFn::Tan,
        MathFn::Asin,
        MathFn::Acos,
        MathFn::Atan,
        MathFn::Sinh,
        MathFn::Cosh,
        MathFn::Asinh,
        MathFn::Acosh,
        MathFn::Atanh,
    ];

    fn m(func: MathFn) -> Op {
        Op::Math(Math { func })
    }

    /// Independent formulas: rounding by counting from truncation, trigonometry through sin,
    /// cos, exp, ln and sqrt.
    fn naive(f: MathFn, x: f64) -> f64 {
        let t = x.trunc();
        match f {
            MathFn::Floor => {
                if x < t {
                    t - 1.0
                } else {
                    t
                }
            }
            MathFn::Ceil => {
                if x > t {
                    t + 1.0
                } else {
                    t
                }
            }
            MathFn::Round => {
                let (lo, hi) = (naive(MathFn::Floor, x), naive(MathFn::Ceil, x));
                if x - lo < hi - x {
                    lo
                } else if x - lo > hi - x {
                    hi
                } else if lo % 2.0 == 0.0 {
                    lo
                } else {
                    hi
                }
            }
            MathFn::Sign => {
                if x.is_nan() {
                    x
                } else {
                    (x > 0.0) as i32 as f64 - (x < 0.0) as i32 as f64
                }
            }
            MathFn::Tan => x.sin() / x.cos(),
            MathFn::Asin => x.atan2((1.0 - x * x).sqrt()),
            MathFn::Acos => std::f64::consts::FRAC_PI_2 - naive(MathFn::Asin, x),
            MathFn::Atan => naive(MathFn::Asin, x / (1.0 + x * x).sqrt()),
            MathFn::Sinh => (x.exp() - (-x).exp()) / 2.0,
            MathFn::Cosh => (x.exp() + (-x).exp()) / 2.0,
            MathFn::Asinh => {
                // ln(x + sqrt(x² + 1)), odd-symmetric to avoid cancellation for x < 0.
                let a = x.abs();
                (a + (a * a + 1.0).sqrt()).ln().copysign(x)
            }
            MathFn::Acosh => (x + (x * x - 1.0).sqrt()).ln(),
            MathFn::Atanh => 0.5 * ((1.0 + x) / (1.0 - x)).ln(),
        }
    }

    proptest! {
        #[test]
        fn matches_naive_formula(
            shape in prop::collection::vec(1usize..5, 0..4),
            func in prop::sample::select(ALL.to_vec()),
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16,
                                            DType::F8E4M3FN, DType::F4E2M1]),
            scale in prop::sample::select(vec![0.25, 1.0, 2.0]),
            seed in 0u64..1000,
        ) {
            // Values in [-4, 4) with many exact halves in the low-precision dtypes.
            let x = rand_tensor(DType::F64, shape.clone(), seed);
            let data: Vec<f64> = x.data().iter().map(|v| dt.round(v * scale)).collect();
            let x = Tensor::new(dt, shape.clone(), data).unwrap();
            let out = eval_op(m(func), std::slice::from_ref(&x)).unwrap();
            let want: Vec<f64> = x.data().iter().map(|&v| naive(func, v)).collect();
            check_rounded(&out[0], dt, &shape, &want).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn integer_rounding_is_identity_and_sign_is_exact(
            shape in prop::collection::vec(1usize..5, 0..3),
            func in prop::sample::select(vec![MathFn::Floor, MathFn::Ceil, MathFn::Round,
                                              MathFn::Sign]),
            dt in prop::sample::select(vec![DType::I64, DType::I32, DType::I8, DType::U8,
                                            DType::I4]),
            seed in 0u64..1000,
        ) {
            let x = rand_tensor(dt, shape.clone(), seed);
            let out = eval_op(m(func), std::slice::from_ref(&x)).unwrap();
            let want: Vec<f64> = x.data().iter().map(|&v| naive(func, v)).collect();
            check_exact(&out[0], dt, &shape, &want).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn edge_cases() {
        let x = Tensor::new(
            DType::F64,
            vec![9],
            vec![
                2.5,
                -2.5,
                0.5,
                -0.5,
                1.5,
                -0.0,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ],
        )
        .unwrap();
        let run = |f| eval_op(m(f), std::slice::from_ref(&x)).unwrap()[0].clone();
        let r = run(MathFn::Round);
        assert_eq!(&r.data()[..6], &[2.0, -2.0, 0.0, -0.0, 2.0, -0.0]);
        assert!(r.data()[3].is_sign_negative());
        assert!(r.data()[6].is_nan());
        assert_eq!(&r.data()[7..], &[f64::INFINITY, f64::NEG_INFINITY]);
        let s = run(MathFn::Sign);
        assert_eq!(&s.data()[..6], &[1.0, -1.0, 1.0, -1.0, 1.0, 0.0]);
        assert!(s.data()[6].is_nan());
        assert_eq!(&s.data()[7..], &[1.0, -1.0]);
        assert_eq!(
            &run(MathFn::Floor).data()[..5],
            &[2.0, -3.0, 0.0, -1.0, 1.0]
        );
        assert_eq!(&run(MathFn::Ceil).data()[..5], &[3.0, -2.0, 1.0, -0.0, 2.0]);
        for f in ALL {
            assert!(run(f).data()[6].is_nan(), "{f:?} must propagate NaN");
        }
        let y = Tensor::new(DType::F32, vec![4], vec![1.0, -1.0, 2.0, -2.0]).unwrap();
        let at = eval_op(m(MathFn::Atanh), std::slice::from_ref(&y)).unwrap();
        assert_eq!(&at[0].data()[..2], &[f64::INFINITY, f64::NEG_INFINITY]);
        assert!(at[0].data()[2].is_nan() && at[0].data()[3].is_nan());
        let asn = eval_op(m(MathFn::Asin), std::slice::from_ref(&y)).unwrap();
        assert!(asn[0].data()[2].is_nan());
        let ac = eval_op(m(MathFn::Acosh), std::slice::from_ref(&y)).unwrap();
        assert_eq!(ac[0].data()[0], 0.0);
        assert!(ac[0].data()[1].is_nan());
        // Empty tensors are fine.
        let e = Tensor::new(DType::F32, vec![0, 3], vec![]).unwrap();
        assert_eq!(eval_op(m(MathFn::Tan), &[e]).unwrap()[0].shape(), &[0, 3]);
    }

    #[test]
    fn dtype_and_arity_errors() {
        let i = rand_tensor(DType::I32, vec![2], 0);
        let e = eval_op(m(MathFn::Tan), std::slice::from_ref(&i))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("math tan") && e.contains("float") && e.contains("i32[2]"),
            "{e}"
        );
        let b = rand_tensor(DType::Bool, vec![2], 0);
        let e = eval_op(m(MathFn::Sign), &[b]).unwrap_err().to_string();
        assert!(e.contains("numeric") && e.contains("bool[2]"), "{e}");
        let f = rand_tensor(DType::F32, vec![2], 0);
        let e = eval_op(m(MathFn::Floor), &[f.clone(), f])
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes 1 operand, found 2"), "{e}");
        let e = Op::from_attrs("math", serde_json::json!({"fn": "reciprocal"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reciprocal"), "{e}");
        let op = Op::from_attrs("math", serde_json::json!({"fn": "acosh"})).unwrap();
        assert_eq!(op, m(MathFn::Acosh));
        assert_eq!(op.attrs(), serde_json::json!({"fn": "acosh"}));
    }

    #[test]
    fn symbolic_dims_flow_through() {
        let md = crate::module::Module::new();
        let t = TensorType::new(DType::BF16, vec![Dim::from("B"), Dim::from(3u64)]);
        let out = Math { func: MathFn::Sinh }
            .infer(&InferCx { module: &md }, &[t])
            .unwrap();
        assert_eq!(out[0].to_string(), "bf16[B,3]");
    }
}
