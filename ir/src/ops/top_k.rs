//! `top_k`: the `k` largest (or smallest) elements along one axis, with their indices.

use super::util::{expect_arity, expect_numeric, normalize_axis, op_err, split_at_axis};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

fn default_true() -> bool {
    true
}

/// The `k` largest (`largest`, default) or smallest elements along `axis` of one numeric
/// operand → `(values, indices i64)`, both with `axis` resized to `k`. Results are sorted (best
/// first); equal values are ordered by lower index; NaN counts as larger than every number
/// (PyTorch). `k` larger than the axis is an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopK {
    /// How many elements to keep.
    pub k: u64,
    /// The axis to select along (negative counts from the end).
    pub axis: i64,
    /// Largest (true, default) or smallest elements.
    #[serde(default = "default_true")]
    pub largest: bool,
}

/// Total order on values with NaN above every number.
fn nan_max_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

impl OpSpec for TopK {
    const NAME: &'static str = "top_k";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        expect_numeric(Self::NAME, "operand", x)?;
        let axis = normalize_axis(Self::NAME, self.axis, x.rank())?;
        if let Some(n) = x.shape[axis].fixed() {
            if self.k > n {
                crate::bail!(
                    "top_k: k = {} exceeds axis {} of {x} (size {n})",
                    self.k,
                    self.axis
                );
            }
        }
        let mut shape = x.shape.clone();
        shape[axis] = Dim::from(self.k);
        Ok(vec![
            TensorType::new(x.dtype, shape.clone()),
            TensorType::new(DType::I64, shape),
        ])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let axis = normalize_axis(Self::NAME, self.axis, x.rank())?;
        let (outer, len, inner) = split_at_axis(x.shape(), axis);
        let k = self.k as usize;
        if k > len {
            crate::bail!(
                "top_k: k = {k} exceeds axis {} of shape {:?}",
                self.axis,
                x.shape()
            );
        }
        let d = x.data();
        let mut vals = vec![0.0; outer * k * inner];
        let mut idxs = vec![0.0; outer * k * inner];
        for o in 0..outer {
            for n in 0..inner {
                let at = |i: usize| d[(o * len + i) * inner + n];
                let mut order: Vec<usize> = (0..len).collect();
                // Stable sort: equal values keep ascending index order.
                if self.largest {
                    order.sort_by(|&i, &j| nan_max_cmp(at(j), at(i)));
                } else {
                    order.sort_by(|&i, &j| nan_max_cmp(at(i), at(j)));
                }
                for (r, &i) in order[..k].iter().enumerate() {
                    vals[(o * k + r) * inner + n] = at(i);
                    idxs[(o * k + r) * inner + n] = i as f64;
                }
            }
        }
        let mut shape = x.shape().to_vec();
        shape[axis] = k;
        Ok(vec![
            Tensor::new(x.dtype(), shape.clone(), vals).map_err(op_err)?,
            Tensor::new(DType::I64, shape, idxs).map_err(op_err)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_exact, eval_op, indices, rand_tensor};
    use crate::ops::{top_k::TopK, InferCx, Op, OpSpec};
    use crate::tensor::Tensor;
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_selection(
            shape in prop::collection::vec(1usize..6, 1..4),
            axis in -3i64..3,
            kfrac in 0.0f64..=1.0,
            largest: bool,
            dt in prop::sample::select(vec![DType::F32, DType::BF16, DType::F4E2M1, DType::I4,
                                            DType::I32]),
            seed in 0u64..1000,
        ) {
            let rank = shape.len() as i64;
            prop_assume!(axis >= -rank && axis < rank);
            let a = axis.rem_euclid(rank) as usize;
            let k = (kfrac * shape[a] as f64).round() as usize;
            let x = rand_tensor(dt, shape.clone(), seed);
            let op = Op::TopK(TopK { k: k as u64, axis, largest });
            let out = eval_op(op, std::slice::from_ref(&x)).unwrap();
            let mut oshape = shape.clone();
            oshape[a] = k;
            // Naive: repeatedly pick the best remaining element, scanning from index 0 so that
            // the first of equal values wins.
            let (mut nv, mut ni) = (vec![], vec![]);
            for o in indices(&oshape) {
                let col: Vec<f64> = (0..shape[a])
                    .map(|j| { let mut i = o.clone(); i[a] = j; x.at(&i) })
                    .collect();
                let mut taken = vec![false; col.len()];
                let mut pick = 0;
                for _ in 0..=o[a] {
                    pick = (0..col.len()).filter(|&j| !taken[j]).fold(usize::MAX, |b, j| {
                        let better = b == usize::MAX
                            || if largest { col[j] > col[b] } else { col[j] < col[b] };
                        if better { j } else { b }
                    });
                    taken[pick] = true;
                }
                nv.push(col[pick]);
                ni.push(pick as f64);
            }
            check_exact(&out[0], dt, &oshape, &nv).map_err(TestCaseError::fail)?;
            check_exact(&out[1], DType::I64, &oshape, &ni).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn ties_nan_and_errors() {
        let x = Tensor::new(DType::F32, vec![5], vec![2.0, f64::NAN, 2.0, 3.0, 2.0]).unwrap();
        let out = eval_op(
            Op::TopK(TopK {
                k: 3,
                axis: 0,
                largest: true,
            }),
            std::slice::from_ref(&x),
        )
        .unwrap();
        assert!(out[0].data()[0].is_nan());
        assert_eq!(&out[0].data()[1..], &[3.0, 2.0]);
        assert_eq!(out[1].data(), &[1.0, 3.0, 0.0]);
        let out = eval_op(
            Op::TopK(TopK {
                k: 2,
                axis: 0,
                largest: false,
            }),
            std::slice::from_ref(&x),
        )
        .unwrap();
        assert_eq!(out[1].data(), &[0.0, 2.0]);
        let e = eval_op(
            Op::TopK(TopK {
                k: 6,
                axis: 0,
                largest: true,
            }),
            &[x],
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("k = 6 exceeds axis 0 of f32[5]"),
            "{e}"
        );
        let t: TopK = serde_json::from_str(r#"{"k":1,"axis":-1}"#).unwrap();
        assert!(t.largest);
    }

    #[test]
    fn symbolic_dims_flow_through() {
        let m = crate::module::Module::new();
        let t = TensorType::new(DType::F32, vec![Dim::from("B"), Dim::from("V")]);
        let out = TopK {
            k: 4,
            axis: 1,
            largest: true,
        }
        .infer(&InferCx { module: &m }, &[t]);
        let out = out.unwrap();
        assert_eq!(out[0].to_string(), "f32[B,4]");
        assert_eq!(out[1].to_string(), "i64[B,4]");
    }
}
