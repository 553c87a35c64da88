//! `compare`: element-wise comparison with numpy broadcasting, producing bools.

use super::util::{binary_map, expect_arity, infer_binary};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// The comparison a [`Compare`] performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Predicate {
    /// `a == b`
    Eq,
    /// `a != b`
    Ne,
    /// `a < b`
    Lt,
    /// `a <= b`
    Le,
    /// `a > b`
    Gt,
    /// `a >= b`
    Ge,
}

impl Predicate {
    /// Apply the predicate (IEEE: every comparison with NaN is false except `ne`).
    pub fn apply(self, a: f64, b: f64) -> bool {
        match self {
            Predicate::Eq => a == b,
            Predicate::Ne => a != b,
            Predicate::Lt => a < b,
            Predicate::Le => a <= b,
            Predicate::Gt => a > b,
            Predicate::Ge => a >= b,
        }
    }
}

/// `a <predicate> b` element-wise → bool; operands of one dtype (any, bool included),
/// broadcast numpy-style.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// Which comparison.
    pub predicate: Predicate,
}

impl OpSpec for Compare {
    const NAME: &'static str = "compare";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        Ok(vec![
            infer_binary(Self::NAME, inputs, false)?.with_dtype(DType::Bool)
        ])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 2)?;
        let p = self.predicate;
        let f = |x, y| if p.apply(x, y) { 1.0 } else { 0.0 };
        Ok(vec![binary_map(
            Self::NAME,
            inputs[0],
            inputs[1],
            DType::Bool,
            f,
        )?])
    }
}

#[cfg(test)]
mod tests {
    use super::Predicate;
    use crate::dtype::DType;
    use crate::ops::testing::{
        at_broadcast, broadcast_partner, check_exact, edge_int_tensor, eval_op, indices,
        rand_tensor,
    };
    use crate::ops::{compare::Compare, Op};
    use crate::tensor::Tensor;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    proptest! {
        #[test]
        fn matches_naive_formula_with_broadcasting(
            shape in prop::collection::vec(1usize..4, 0..4),
            drop in 0usize..4,
            ones in 0u32..16,
            swap: bool,
            dt in prop::sample::select(vec![DType::F32, DType::BF16, DType::F8E5M2, DType::I32,
                                            DType::I4, DType::Bool, DType::I16, DType::U16, DType::U32, DType::U64]),
            p in prop::sample::select(vec![Predicate::Eq, Predicate::Ne, Predicate::Lt,
                                           Predicate::Le, Predicate::Gt, Predicate::Ge]),
            seed in 0u64..1000,
        ) {
            let other = broadcast_partner(&shape, drop, ones);
            let (sa, sb) = if swap { (other, shape.clone()) } else { (shape.clone(), other) };
            let a = rand_tensor(dt, sa, seed);
            let b = rand_tensor(dt, sb, seed + 1);
            let out = eval_op(Op::Compare(Compare { predicate: p }), &[a.clone(), b.clone()])
                .unwrap();
            let naive: Vec<f64> = indices(&shape)
                .iter()
                .map(|i| {
                    let (x, y) = (at_broadcast(&a, i), at_broadcast(&b, i));
                    let o = x.partial_cmp(&y);
                    let r = match p {
                        Predicate::Eq => o == Some(Ordering::Equal),
                        Predicate::Ne => o != Some(Ordering::Equal),
                        Predicate::Lt => o == Some(Ordering::Less),
                        Predicate::Le => matches!(o, Some(Ordering::Less | Ordering::Equal)),
                        Predicate::Gt => o == Some(Ordering::Greater),
                        Predicate::Ge => matches!(o, Some(Ordering::Greater | Ordering::Equal)),
                    };
                    r as u8 as f64
                })
                .collect();
            check_exact(&out[0], DType::Bool, &shape, &naive).map_err(TestCaseError::fail)?;
        }
    }

    proptest! {
        /// Integer comparisons at the dtypes' edge values agree with integer comparison (u64
        /// up to 2^53, where neighbours are still distinct f64 values).
        #[test]
        fn integer_comparisons_at_edge_values(
            n in 1usize..12,
            dt in prop::sample::select(vec![DType::I16, DType::U16, DType::U32, DType::U64,
                                            DType::I64, DType::U8]),
            p in prop::sample::select(vec![Predicate::Eq, Predicate::Ne, Predicate::Lt,
                                           Predicate::Le, Predicate::Gt, Predicate::Ge]),
            seed in 0u64..1000,
        ) {
            let limit = 2f64.powi(53);
            let a = edge_int_tensor(dt, vec![n], limit, seed);
            let b = edge_int_tensor(dt, vec![n], limit, seed + 7);
            let out = eval_op(Op::Compare(Compare { predicate: p }), &[a.clone(), b.clone()])
                .unwrap();
            prop_assert_eq!(out[0].dtype(), DType::Bool);
            for ((&g, &x), &y) in out[0].data().iter().zip(a.data()).zip(b.data()) {
                let (x, y) = (x as i128, y as i128);
                let r = match p {
                    Predicate::Eq => x == y,
                    Predicate::Ne => x != y,
                    Predicate::Lt => x < y,
                    Predicate::Le => x <= y,
                    Predicate::Gt => x > y,
                    Predicate::Ge => x >= y,
                };
                prop_assert_eq!(g, r as u8 as f64, "{} {:?} {} in {}", x, p, y, dt);
            }
        }
    }

    #[test]
    fn u64_neighbours_at_2_pow_53_compare_distinct() {
        let p53 = 2f64.powi(53);
        let a = Tensor::new(DType::U64, vec![2], vec![p53 - 1.0, p53]).unwrap();
        let b = Tensor::new(DType::U64, vec![2], vec![p53, p53 - 1.0]).unwrap();
        let out = eval_op(
            Op::Compare(Compare {
                predicate: Predicate::Lt,
            }),
            &[a, b],
        )
        .unwrap();
        assert_eq!(out[0].data(), &[1.0, 0.0]);
    }

    #[test]
    fn nan_compares_unequal_and_dtypes_must_match() {
        let a = Tensor::new(DType::F32, vec![1], vec![f64::NAN]).unwrap();
        let op = |predicate| Op::Compare(Compare { predicate });
        assert_eq!(
            eval_op(op(Predicate::Eq), &[a.clone(), a.clone()]).unwrap()[0].data(),
            &[0.0]
        );
        assert_eq!(
            eval_op(op(Predicate::Ne), &[a.clone(), a.clone()]).unwrap()[0].data(),
            &[1.0]
        );
        let b = Tensor::new(DType::F16, vec![1], vec![1.0]).unwrap();
        let e = eval_op(op(Predicate::Lt), &[a, b]).unwrap_err().to_string();
        assert!(e.contains("share a dtype"), "{e}");
        assert!(serde_json::from_str::<Compare>(r#"{"predicate":"lte"}"#).is_err());
    }
}
