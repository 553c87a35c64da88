//! `div`: element-wise quotient with numpy broadcasting.

use super::util::{binary_map, expect_arity, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `a / b`, both operands of one numeric dtype, broadcast numpy-style.
///
/// Floats follow IEEE division in f64 (`x / 0` is ±inf or NaN) rounded once to the dtype.
/// Integers divide exactly and truncate toward zero (C, Rust, ONNX `Div`; not numpy's floor
/// division); the quotient saturates to the dtype (`i8: -128 / -1 = 127`); a zero divisor is an
/// evaluation error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Div {}

impl OpSpec for Div {
    const NAME: &'static str = "div";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_binary(Self::NAME, inputs, true)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        if a.dtype().is_int() {
            if let Some(i) = b.data().iter().position(|&y| y == 0.0) {
                crate::bail!(
                    "integer division by zero: divisor element {i} of {}{:?} is 0",
                    b.dtype(),
                    b.shape()
                );
            }
            // Elements are exact integers (|x| <= 2^53), so i128 division is exact.
            let q = |x: f64, y: f64| ((x as i128) / (y as i128)) as f64;
            return Ok(vec![binary_map(Self::NAME, a, b, a.dtype(), q)?]);
        }
        Ok(vec![binary_map(Self::NAME, a, b, a.dtype(), |x, y| x / y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_exact, edge_int_tensor, eval_op, indices,
        rand_tensor,
    };
    use crate::ops::{div::Div, Op};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula_with_broadcasting(
            shape in prop::collection::vec(1usize..4, 0..4),
            drop in 0usize..4,
            ones in 0u32..16,
            swap: bool,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16, DType::I32, DType::I64, DType::I8,
                                            DType::I16, DType::U16, DType::U32, DType::U64]),
            seed in 0u64..1000,
        ) {
            let other = broadcast_partner(&shape, drop, ones);
            let (sa, sb) = if swap { (other, shape.clone()) } else { (shape.clone(), other) };
            let a = rand_tensor(dt, sa, seed);
            let b = rand_tensor(dt, sb, seed + 1);
            // Integer divisors must be non-zero (a zero divisor is tested below).
            let b = crate::tensor::Tensor::new(dt, b.shape().to_vec(),
                b.data().iter().map(|&v| if v == 0.0 { 3.0 } else { v }).collect()).unwrap();
            let out = eval_op(Op::Div(Div {}), &[a.clone(), b.clone()]).unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let (x, y) = (at_broadcast(&a, i), at_broadcast(&b, i));
                    if dt.is_int() {
                        let q = (x.abs() / y.abs()).floor();
                        if (x < 0.0) != (y < 0.0) { -q } else { q }
                    } else {
                        x / y
                    }
                })
                .collect();
            check_exact(&out[0], dt, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    proptest! {
        /// Integer quotients at the dtypes' edge values truncate toward zero and saturate
        /// (`i16: -32768 / -1 = 32767`); u64 values go up to 2^53.
        #[test]
        fn integer_quotients_at_edge_values(
            n in 1usize..12,
            dt in prop::sample::select(vec![DType::I16, DType::U16, DType::U32, DType::U64,
                                            DType::I32, DType::I64, DType::I8, DType::U8]),
            seed in 0u64..1000,
        ) {
            let limit = 2f64.powi(53);
            let a = edge_int_tensor(dt, vec![n], limit, seed);
            let b = edge_int_tensor(dt, vec![n], limit, seed + 7);
            let sub = if dt.is_signed_int() { -1.0 } else { 1.0 };
            let b = crate::tensor::Tensor::new(dt, vec![n],
                b.data().iter().map(|&v| if v == 0.0 { sub } else { v }).collect()).unwrap();
            let out = eval_op(Op::Div(Div {}), &[a.clone(), b.clone()]).unwrap();
            let (lo, hi) = dt.int_range().unwrap();
            for ((&g, &x), &y) in out[0].data().iter().zip(a.data()).zip(b.data()) {
                let q = (x.abs() / y.abs()).floor();
                let q = if (x < 0.0) != (y < 0.0) { -q } else { q };
                prop_assert_eq!(g, q.clamp(lo, hi), "{} / {} in {}", x, y, dt);
            }
        }
    }

    #[test]
    fn new_integer_division_examples() {
        let t = |d, v: &[f64]| crate::tensor::Tensor::new(d, vec![v.len()], v.to_vec()).unwrap();
        let p53 = 2f64.powi(53);
        let cases = [
            (
                DType::I16,
                [-32768.0, -7.0, 32767.0],
                [-1.0, 2.0, -32768.0],
                [32767.0, -3.0, 0.0],
            ),
            (
                DType::U16,
                [65535.0, 7.0, 0.0],
                [2.0, 7.0, 65535.0],
                [32767.0, 1.0, 0.0],
            ),
            (
                DType::U32,
                [4294967295.0, 7.0, 1.0],
                [1.0, 2.0, 4294967295.0],
                [4294967295.0, 3.0, 0.0],
            ),
            (
                DType::U64,
                [p53, p53 - 1.0, 10.0],
                [3.0, 2.0, 4.0],
                [3002399751580330.0, 4503599627370495.0, 2.0],
            ),
        ];
        for (d, a, b, want) in cases {
            let out = eval_op(Op::Div(Div {}), &[t(d, &a), t(d, &b)]).unwrap();
            assert_eq!(out[0].data(), &want, "{d}");
        }
        let e = eval_op(
            Op::Div(Div {}),
            &[t(DType::U16, &[1.0]), t(DType::U16, &[0.0])],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("division by zero") && e.contains("u16"), "{e}");
    }

    #[test]
    fn integer_division_truncates_and_rejects_zero() {
        let t = |v: Vec<f64>| crate::tensor::Tensor::new(DType::I32, vec![v.len()], v).unwrap();
        let out = eval_op(
            Op::Div(Div {}),
            &[t(vec![7.0, -7.0, 7.0, -7.0]), t(vec![2.0, 2.0, -2.0, -2.0])],
        )
        .unwrap();
        assert_eq!(out[0].data(), &[3.0, -3.0, -3.0, 3.0]);
        let e = eval_op(Op::Div(Div {}), &[t(vec![1.0, 2.0]), t(vec![1.0, 0.0])])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("division by zero") && e.contains("element 1"),
            "{e}"
        );
    }

    #[test]
    fn float_division_by_zero_is_ieee() {
        let t = |v: Vec<f64>| crate::tensor::Tensor::new(DType::F16, vec![v.len()], v).unwrap();
        let out = eval_op(
            Op::Div(Div {}),
            &[t(vec![1.0, -1.0, 0.0]), t(vec![0.0, 0.0, 0.0])],
        )
        .unwrap();
        assert_eq!(&out[0].data()[..2], &[f64::INFINITY, f64::NEG_INFINITY]);
        assert!(out[0].data()[2].is_nan());
    }
}
