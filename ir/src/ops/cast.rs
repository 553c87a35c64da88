//! `cast`: element-wise conversion to another dtype.

use super::util::expect_arity;
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Convert to `dtype` with [`DType::cast`] semantics: to floats round to nearest even (the FP8 /
/// FP4 formats saturate), float → integer truncates toward zero and saturates (NaN → 0), to bool
/// is `x != 0`. Any dtype may be cast to any other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cast {
    /// The target dtype.
    pub dtype: DType,
}

impl OpSpec for Cast {
    const NAME: &'static str = "cast";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        Ok(vec![inputs[0].with_dtype(self.dtype)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        Ok(vec![inputs[0].cast(self.dtype)])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::{DType, ALL_DTYPES};
    use crate::ops::testing::{edge_int_tensor, eval_op, rand_tensor};
    use crate::ops::{cast::Cast, Op};
    use crate::tensor::Tensor;
    use proptest::prelude::*;

    /// Naive conversion: truncation toward zero for float → int, written with floor/ceil.
    fn naive(from: DType, to: DType, x: f64) -> f64 {
        if to == DType::Bool {
            return if x == 0.0 { 0.0 } else { 1.0 };
        }
        if to.is_int() && from.is_float() {
            let t = if x < 0.0 { x.ceil() } else { x.floor() };
            let (lo, hi) = to.int_range().unwrap();
            return t.max(lo).min(hi);
        }
        to.round(x)
    }

    proptest! {
        #[test]
        fn matches_naive_conversion(
            shape in prop::collection::vec(1usize..5, 0..3),
            from in prop::sample::select(ALL_DTYPES.to_vec()),
            to in prop::sample::select(ALL_DTYPES.to_vec()),
            scale in prop::sample::select(vec![1.0, 100.0, 1e5]),
            seed in 0u64..1000,
        ) {
            let x = rand_tensor(from, shape.clone(), seed);
            // Scale floats up so that integer saturation and float overflow are exercised.
            let x = if from.is_float() {
                Tensor::new(from, shape.clone(), x.data().iter().map(|v| v * scale).collect())
                    .unwrap()
            } else {
                x
            };
            let out = eval_op(Op::Cast(Cast { dtype: to }), std::slice::from_ref(&x)).unwrap();
            prop_assert_eq!(out[0].dtype(), to);
            prop_assert_eq!(out[0].shape(), &shape[..]);
            for (g, &v) in out[0].data().iter().zip(x.data()) {
                let w = naive(from, to, v);
                prop_assert!(*g == w || g.is_nan() && w.is_nan(), "{from}->{to}: {v} gave {g}, expected {w}");
            }
        }
    }

    proptest! {
        /// Integer → integer casts at edge values saturate to the target's range (no wrap).
        #[test]
        fn integer_casts_saturate_at_edge_values(
            n in 1usize..12,
            from in prop::sample::select(vec![DType::I16, DType::U16, DType::U32, DType::U64,
                                              DType::I64, DType::I32, DType::I8, DType::U8]),
            to in prop::sample::select(vec![DType::I16, DType::U16, DType::U32, DType::U64,
                                            DType::I64, DType::I32, DType::I8, DType::U8,
                                            DType::I4]),
            seed in 0u64..1000,
        ) {
            let x = edge_int_tensor(from, vec![n], 2f64.powi(53), seed);
            let out = eval_op(Op::Cast(Cast { dtype: to }), std::slice::from_ref(&x)).unwrap();
            prop_assert_eq!(out[0].dtype(), to);
            let (lo, hi) = to.int_range().unwrap();
            for (&g, &v) in out[0].data().iter().zip(x.data()) {
                let w = (v as i128).clamp(lo as i128, hi as i128) as f64;
                prop_assert_eq!(g, w, "{} {} -> {}", v, from, to);
            }
        }
    }

    #[test]
    fn new_integer_cast_examples() {
        let cast = |from, to, v: &[f64]| {
            let x = Tensor::new(from, vec![v.len()], v.to_vec()).unwrap();
            eval_op(Op::Cast(Cast { dtype: to }), &[x]).unwrap()[0]
                .data()
                .to_vec()
        };
        let p53 = 2f64.powi(53);
        assert_eq!(
            cast(DType::I16, DType::U16, &[-1.0, -32768.0, 7.0]),
            [0.0, 0.0, 7.0]
        );
        assert_eq!(
            cast(DType::U16, DType::I16, &[65535.0, 32768.0, 32767.0]),
            [32767.0; 3]
        );
        assert_eq!(
            cast(DType::U32, DType::I16, &[70000.0, 1.0]),
            [32767.0, 1.0]
        );
        assert_eq!(
            cast(DType::U64, DType::U32, &[p53, 4294967295.0]),
            [4294967295.0; 2]
        );
        assert_eq!(cast(DType::U64, DType::I64, &[p53]), [p53]);
        assert_eq!(cast(DType::I64, DType::U64, &[-5.0, p53]), [0.0, p53]);
        assert_eq!(cast(DType::U32, DType::U8, &[256.0, 255.0]), [255.0, 255.0]);
        assert_eq!(
            cast(
                DType::F32,
                DType::U16,
                &[65535.9, -0.9, -7.0, 1e9, f64::NAN]
            ),
            [65535.0, 0.0, 0.0, 65535.0, 0.0]
        );
        assert_eq!(
            cast(DType::F32, DType::I16, &[-32768.9, 1e9, -2.5]),
            [-32768.0, 32767.0, -2.0]
        );
        assert_eq!(
            cast(DType::F64, DType::U32, &[4294967295.5, -1e9]),
            [4294967295.0, 0.0]
        );
        assert_eq!(
            cast(DType::U16, DType::F16, &[65535.0, 2049.0]),
            [f64::INFINITY, 2048.0]
        );
        assert_eq!(cast(DType::U64, DType::F32, &[p53 - 1.0]), [p53]);
        assert_eq!(
            cast(DType::U32, DType::Bool, &[0.0, 4294967295.0]),
            [0.0, 1.0]
        );
    }

    #[test]
    fn examples_and_arity() {
        let x = Tensor::new(DType::F32, vec![4], vec![-2.7, 2.7, 300.0, 0.0]).unwrap();
        let out = eval_op(
            Op::Cast(Cast { dtype: DType::I8 }),
            std::slice::from_ref(&x),
        )
        .unwrap();
        assert_eq!(out[0].data(), &[-2.0, 2.0, 127.0, 0.0]);
        let out = eval_op(
            Op::Cast(Cast {
                dtype: DType::F8E4M3FN,
            }),
            std::slice::from_ref(&x),
        )
        .unwrap();
        assert_eq!(out[0].data(), &[-2.75, 2.75, 288.0, 0.0]);
        let e = eval_op(Op::Cast(Cast { dtype: DType::I8 }), &[x.clone(), x]).unwrap_err();
        assert!(e.to_string().contains("takes 1 operand, found 2"), "{e}");
        assert!(serde_json::from_str::<Cast>(r#"{"dtype":"f12"}"#).is_err());
    }
}
