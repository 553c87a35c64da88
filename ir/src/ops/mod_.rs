//! `mod`: element-wise remainder with numpy broadcasting (Python `%` or C `fmod`).

use super::util::{binary_map, expect_arity, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// Remainder of `a / b` element-wise, both operands of one numeric dtype (bool is rejected),
/// numpy broadcasting, result of that dtype (ONNX `Mod`).
///
/// - `fmod = false` (default): the floored remainder of Python/numpy `%`, whose sign is the
///   divisor's: `a - b·floor(a / b)`, computed exactly as `r = fmod(a, b)`, then `r + b` when
///   `r ≠ 0` and `r`, `b` differ in sign; a zero result takes the divisor's sign
///   (`mod(-4.0, 2.0) = 0.0`, `mod(4.0, -2.0) = -0.0`). ONNX allows it for integers only; it is
///   accepted for floats too with the same rule (`mod(-1, inf) = inf` as in numpy).
/// - `fmod = true`: C `fmod`, truncated remainder with the dividend's sign, exact.
///
/// Integer division by zero is an evaluation error (ONNX leaves it undefined); for floats a zero
/// divisor gives NaN, as does an infinite dividend or a NaN operand.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mod {
    /// C `fmod` (sign of the dividend) instead of Python `%` (sign of the divisor); default false.
    #[serde(default)]
    pub fmod: bool,
}

/// The remainder of one pair, as [`Mod`] defines it (float semantics: a zero divisor gives NaN).
pub fn remainder(a: f64, b: f64, fmod: bool) -> f64 {
    let r = a % b; // Rust's `%` on f64 is C fmod: exact.
    if fmod || r.is_nan() {
        return r;
    }
    if r == 0.0 {
        0.0f64.copysign(b)
    } else if (r < 0.0) != (b < 0.0) {
        r + b
    } else {
        r
    }
}

impl OpSpec for Mod {
    const NAME: &'static str = "mod";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_binary(Self::NAME, inputs, true)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        let int = a.dtype().is_int();
        let (fmod, zero) = (self.fmod, Cell::new(false));
        let out = binary_map(Self::NAME, a, b, a.dtype(), |x, y| {
            if int && y == 0.0 {
                zero.set(true);
                return 0.0;
            }
            remainder(x, y, fmod)
        })?;
        if zero.get() {
            let i = b.data().iter().position(|&v| v == 0.0).unwrap_or(0);
            crate::bail!(
                "mod: integer division by zero (divisor element {i} of {}{:?} is 0)",
                b.dtype(),
                b.shape()
            );
        }
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_exact, check_rounded, eval_op, indices, rand_tensor,
    };
    use crate::ops::{mod_::Mod, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    fn t(dt: DType, v: &[f64]) -> Tensor {
        Tensor::new(dt, vec![v.len()], v.to_vec()).unwrap()
    }

    fn md(fmod: bool) -> Op {
        Op::Mod(Mod { fmod })
    }

    /// Integers: floor/trunc division by counting in i128, written without `%`.
    fn naive_int(a: f64, b: f64, fmod: bool) -> f64 {
        let (a, b) = (a as i128, b as i128);
        let q = a / b; // truncates toward zero
        let q = if !fmod && (a - q * b) != 0 && ((a < 0) != (b < 0)) {
            q - 1
        } else {
            q
        };
        (a - q * b) as f64
    }

    proptest! {
        #[test]
        fn integers_match_naive_division(
            shape in prop::collection::vec(1usize..4, 0..4),
            drop in 0usize..3,
            ones in 0u32..8,
            fmod: bool,
            dt in prop::sample::select(vec![DType::I64, DType::I32, DType::I8, DType::U8,
                                            DType::I4]),
            seed in 0u64..1000,
        ) {
            let a = rand_tensor(dt, shape.clone(), seed);
            let bshape = broadcast_partner(&shape, drop, ones);
            let b = rand_tensor(dt, bshape, seed + 1);
            // Zero divisors are an error (tested below); move them to 3.
            let bd: Vec<f64> = b.data().iter().map(|&v| if v == 0.0 { 3.0 } else { v }).collect();
            let b = Tensor::new(dt, b.shape().to_vec(), bd).unwrap();
            let out = eval_op(md(fmod), &[a.clone(), b.clone()]).unwrap();
            let want: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| naive_int(at_broadcast(&a, i), at_broadcast(&b, i), fmod))
                .collect();
            check_exact(&out[0], dt, &shape, &want).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn floats_match_naive_floor_and_trunc(
            shape in prop::collection::vec(1usize..4, 0..4),
            fmod: bool,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16]),
            seed in 0u64..1000,
        ) {
            let a = rand_tensor(dt, shape.clone(), seed);
            let b = rand_tensor(dt, shape.clone(), seed + 7);
            prop_assume!(b.data().iter().all(|&v| v != 0.0));
            let out = eval_op(md(fmod), &[a.clone(), b.clone()]).unwrap();
            let want: Vec<f64> = a.data().iter().zip(b.data())
                .map(|(&x, &y)| {
                    let q = x / y;
                    x - y * if fmod { q.trunc() } else { q.floor() }
                })
                .collect();
            check_rounded(&out[0], dt, &shape, &want).map_err(TestCaseError::fail)?;
            // Signs: the divisor's (floor) or the dividend's (fmod), or zero.
            for ((&r, &x), &y) in out[0].data().iter().zip(a.data()).zip(b.data()) {
                let s = if fmod { x } else { y };
                prop_assert!(r == 0.0 || (r < 0.0) == (s < 0.0), "{x} mod {y} = {r}");
                prop_assert!(r.abs() <= y.abs());
            }
        }
    }

    #[test]
    fn python_and_c_examples() {
        let a = t(DType::I32, &[-4, 7, 5, -5, 4, -7].map(f64::from));
        let b = t(DType::I32, &[3, -3, 2, -2, 2, -3].map(f64::from));
        let out = eval_op(md(false), &[a.clone(), b.clone()]).unwrap();
        assert_eq!(out[0].data(), &[2.0, -2.0, 1.0, -1.0, 0.0, -1.0]);
        let out = eval_op(md(true), &[a, b]).unwrap();
        assert_eq!(out[0].data(), &[-1.0, 1.0, 1.0, -1.0, 0.0, -1.0]);
        // Floats, with the signed zeros, infinities and NaN.
        let inf = f64::INFINITY;
        let a = t(DType::F64, &[-4.0, 4.0, -1.0, 1.0, inf, 1.0, 5.5, f64::NAN]);
        let b = t(DType::F64, &[2.0, -2.0, inf, -inf, 2.0, 0.0, -2.0, 1.0]);
        let out = eval_op(md(false), &[a.clone(), b.clone()]).unwrap();
        let d = out[0].data();
        assert!(d[0] == 0.0 && d[0].is_sign_positive());
        assert!(d[1] == 0.0 && d[1].is_sign_negative());
        assert_eq!(&d[2..4], &[inf, -inf]);
        assert!(d[4].is_nan() && d[5].is_nan() && d[7].is_nan());
        assert_eq!(d[6], -0.5);
        let out = eval_op(md(true), &[a, b]).unwrap();
        let d = out[0].data();
        assert!(d[0] == 0.0 && d[0].is_sign_negative());
        assert_eq!(&d[2..4], &[-1.0, 1.0]);
        assert!(d[4].is_nan() && d[5].is_nan());
        assert_eq!(d[6], 1.5);
        // Large i64 values stay exact.
        // 2^52 + 1 = 4503599627370497: Python gives 4503599627370497 % -10 == -3.
        let big = 2f64.powi(52) + 1.0;
        let out = eval_op(md(false), &[t(DType::I64, &[big]), t(DType::I64, &[-10.0])]).unwrap();
        assert_eq!(out[0].data(), &[-3.0]);
        let out = eval_op(md(true), &[t(DType::I64, &[-big]), t(DType::I64, &[10.0])]).unwrap();
        assert_eq!(out[0].data(), &[-7.0]);
    }

    #[test]
    fn errors() {
        let e = eval_op(
            md(false),
            &[t(DType::I32, &[1.0, 2.0]), t(DType::I32, &[1.0, 0.0])],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("integer division by zero") && e.contains("element 1"),
            "{e}"
        );
        let e = eval_op(md(true), &[t(DType::U8, &[1.0]), t(DType::U8, &[0.0])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("division by zero"), "{e}");
        let e = eval_op(md(false), &[t(DType::I32, &[1.0]), t(DType::I64, &[1.0])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("share a dtype"), "{e}");
        let e = eval_op(md(false), &[t(DType::Bool, &[1.0]), t(DType::Bool, &[1.0])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("numeric"), "{e}");
        let e = eval_op(
            md(false),
            &[t(DType::F32, &[1.0, 2.0]), t(DType::F32, &[1.0; 3])],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("do not broadcast"), "{e}");
        // Empty operands: no divisor to check, empty result.
        let e0 = Tensor::new(DType::I32, vec![0], vec![]).unwrap();
        let out = eval_op(md(false), &[e0.clone(), e0.clone()]).unwrap();
        assert_eq!(out[0].shape(), &[0]);
        // A zero divisor that divides nothing (broadcast against an empty dividend) is fine.
        let out = eval_op(md(false), &[e0, t(DType::I32, &[0.0])]).unwrap();
        assert_eq!(out[0].shape(), &[0]);
    }

    #[test]
    fn symbolic_broadcast() {
        let m = crate::module::Module::new();
        let a = TensorType::new(DType::I64, vec![Dim::from("B"), Dim::from(1u64)]);
        let b = TensorType::new(DType::I64, vec![Dim::from(4u64)]);
        let out = Mod { fmod: false }
            .infer(&InferCx { module: &m }, &[a, b])
            .unwrap();
        assert_eq!(out[0].to_string(), "i64[B,4]");
    }
}
