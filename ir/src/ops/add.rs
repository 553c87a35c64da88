//! `add`: element-wise sum with numpy broadcasting.

use super::util::{binary_map, expect_arity, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `a + b`, both operands of one numeric dtype, broadcast numpy-style.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Add {}

impl OpSpec for Add {
    const NAME: &'static str = "add";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![infer_binary(Self::NAME, inputs, true)?])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let (a, b) = (inputs[0], inputs[1]);
        Ok(vec![binary_map(Self::NAME, a, b, a.dtype(), |x, y| x + y)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{edge_int_tensor, eval_op, rand_tensor};
    use crate::ops::{add::Add, Op};
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_broadcast_sum(m in 1usize..5, n in 1usize..5, seed in 0u64..1000) {
            let a = rand_tensor(DType::F32, vec![m, n], seed);
            let b = rand_tensor(DType::F32, vec![1, n], seed + 1);
            let out = eval_op(Op::Add(Add {}), &[a.clone(), b.clone()]).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let want = (a.at(&[i, j]) + b.at(&[0, j])) as f32 as f64;
                    prop_assert_eq!(out[0].at(&[i, j]), want);
                }
            }
        }
    }

    proptest! {
        /// Integer sums are exact and saturate at the dtype's bounds. Operands stay within
        /// ±2^52 so that every exact sum is an f64 (the reference's limit for 64-bit types).
        #[test]
        fn integer_sums_are_exact_and_saturate(
            n in 1usize..12,
            dt in prop::sample::select(vec![DType::I16, DType::U16, DType::U32, DType::U64,
                                            DType::I32, DType::I8, DType::U8]),
            seed in 0u64..1000,
        ) {
            let limit = 2f64.powi(52);
            let a = edge_int_tensor(dt, vec![n], limit, seed);
            let b = edge_int_tensor(dt, vec![n], limit, seed + 7);
            let out = eval_op(Op::Add(Add {}), &[a.clone(), b.clone()]).unwrap();
            prop_assert_eq!(out[0].dtype(), dt);
            let (lo, hi) = dt.int_range().unwrap();
            for ((&g, &x), &y) in out[0].data().iter().zip(a.data()).zip(b.data()) {
                let s = (x as i128 + y as i128).clamp(lo as i128, hi as i128);
                prop_assert_eq!(g, s as f64, "{} + {} in {}", x, y, dt);
            }
        }
    }

    #[test]
    fn new_integer_sums_saturate_at_both_ends() {
        let t = |d, v: &[f64]| Tensor::new(d, vec![v.len()], v.to_vec()).unwrap();
        let p52 = 2f64.powi(52);
        let cases = [
            (
                DType::I16,
                [32767.0, -32768.0, 100.0],
                [1.0, -1.0, -200.0],
                [32767.0, -32768.0, -100.0],
            ),
            (
                DType::U16,
                [65535.0, 65000.0, 3.0],
                [1.0, 535.0, 4.0],
                [65535.0, 65535.0, 7.0],
            ),
            (
                DType::U32,
                [4294967295.0, 4294967000.0, 3.0],
                [1.0, 296.0, 4.0],
                [4294967295.0, 4294967295.0, 7.0],
            ),
            (
                DType::U64,
                [p52, 1.0, 0.0],
                [p52, 2.0, 0.0],
                [2.0 * p52, 3.0, 0.0],
            ),
        ];
        for (d, a, b, want) in cases {
            let out = eval_op(Op::Add(Add {}), &[t(d, &a), t(d, &b)]).unwrap();
            assert_eq!(out[0].data(), &want, "{d}");
        }
    }

    #[test]
    fn mismatched_dtypes_are_a_type_error() {
        let a = rand_tensor(DType::F32, vec![2], 0);
        let b = rand_tensor(DType::F16, vec![2], 0);
        let e = eval_op(Op::Add(Add {}), &[a, b]).unwrap_err().to_string();
        assert!(e.contains("share a dtype"), "{e}");
    }
}
