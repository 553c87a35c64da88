//! `linear`: `x · w + bias` with `w` in matmul layout `[K, N]`.

use super::util::{expect_arity_range, expect_numeric, join, op_err, same_dtype};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// `x[..., K] · w[K, N] (+ bias[N]) → [..., N]`, all of one numeric dtype; accumulation in
/// f64 (bias included), one rounding to the dtype at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {}

impl OpSpec for Linear {
    const NAME: &'static str = "linear";

    fn infer(&self, _cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity_range(Self::NAME, inputs, 2, 3)?;
        let d = same_dtype(Self::NAME, inputs)?;
        expect_numeric(Self::NAME, "operand", &inputs[0])?;
        let (x, w) = (&inputs[0], &inputs[1]);
        if x.rank() < 1 || w.rank() != 2 {
            crate::bail!("linear expects x[..., K] and w[K, N], found {x} and {w}");
        }
        let k = &x.shape[x.rank() - 1];
        if k != &w.shape[0] {
            crate::bail!(
                "linear contraction dims differ: x [{}] · w [{}] ({k} vs {})",
                join(&x.shape),
                join(&w.shape),
                w.shape[0]
            );
        }
        let n = &w.shape[1];
        if let Some(b) = inputs.get(2) {
            if b.shape.len() != 1 || &b.shape[0] != n {
                crate::bail!("linear bias must be [{n}] (w is {w}), found {b}");
            }
        }
        let mut shape = x.shape[..x.rank() - 1].to_vec();
        shape.push(n.clone());
        Ok(vec![TensorType::new(d, shape)])
    }

    fn eval(&self, _cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity_range(Self::NAME, inputs, 2, 3)?;
        let (x, w) = (inputs[0], inputs[1]);
        if x.rank() < 1 || w.rank() != 2 || x.shape()[x.rank() - 1] != w.shape()[0] {
            crate::bail!(
                "linear: shapes {:?} · {:?} do not contract",
                x.shape(),
                w.shape()
            );
        }
        let (k, n) = (w.shape()[0], w.shape()[1]);
        let rows: usize = x.shape()[..x.rank() - 1].iter().product();
        let bias = inputs.get(2).map(|b| b.data());
        if bias.is_some_and(|b| b.len() != n) {
            crate::bail!("linear: bias does not have {n} elements");
        }
        let (dx, dw) = (x.data(), w.data());
        let mut out = Vec::with_capacity(rows * n);
        for r in 0..rows {
            for j in 0..n {
                let mut s = bias.map_or(0.0, |b| b[j]);
                for kk in 0..k {
                    s += dx[r * k + kk] * dw[kk * n + j];
                }
                out.push(s);
            }
        }
        let mut shape = x.shape()[..x.rank() - 1].to_vec();
        shape.push(n);
        Ok(vec![Tensor::new(x.dtype(), shape, out).map_err(op_err)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::dtype::DType;
    use crate::ops::testing::{check_rounded, eval_op, indices, rand_tensor};
    use crate::ops::{linear::Linear, InferCx, Op, OpSpec};
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn matches_naive_formula(
            lead in prop::collection::vec(1usize..4, 0..3),
            k in 1usize..6,
            n in 1usize..5,
            with_bias: bool,
            dt in prop::sample::select(vec![DType::F64, DType::F32, DType::F16, DType::BF16,
                                            DType::I32]),
            seed in 0u64..1000,
        ) {
            let mut xs = lead.clone();
            xs.push(k);
            let x = rand_tensor(dt, xs, seed);
            let w = rand_tensor(dt, vec![k, n], seed + 1);
            let b = rand_tensor(dt, vec![n], seed + 2);
            let mut ops = vec![x.clone(), w.clone()];
            if with_bias { ops.push(b.clone()); }
            let out = eval_op(Op::Linear(Linear {}), &ops).unwrap();
            let mut os = lead.clone();
            os.push(n);
            let naive: Vec<f64> = indices(&os)
                .iter()
                .map(|i| {
                    let (row, j) = (&i[..lead.len()], i[lead.len()]);
                    let dot: f64 = (0..k)
                        .map(|kk| { let mut xi = row.to_vec(); xi.push(kk); x.at(&xi) * w.at(&[kk, j]) })
                        .sum();
                    dot + if with_bias { b.at(&[j]) } else { 0.0 }
                })
                .collect();
            check_rounded(&out[0], dt, &os, &naive).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn shape_errors_name_expected_and_found() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let w = rand_tensor(DType::F32, vec![4, 5], 1);
        let e = eval_op(Op::Linear(Linear {}), &[x.clone(), w])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("[2,3]") && e.contains("[4,5]") && e.contains("3 vs 4"),
            "{e}"
        );
        let w = rand_tensor(DType::F32, vec![3, 5], 1);
        let b = rand_tensor(DType::F32, vec![4], 2);
        let e = eval_op(Op::Linear(Linear {}), &[x, w, b])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("bias must be [5]") && e.contains("found f32[4]"),
            "{e}"
        );
    }

    #[test]
    fn symbolic_leading_dims_flow_through() {
        let m = crate::module::Module::new();
        let x = TensorType::new(
            DType::F32,
            vec![Dim::from("B"), Dim::from("S"), Dim::from(8u64)],
        );
        let w = TensorType::new(DType::F32, vec![Dim::from(8u64), Dim::from(3u64)]);
        let out = Linear {}.infer(&InferCx { module: &m }, &[x, w]).unwrap();
        assert_eq!(out[0].to_string(), "f32[B,S,3]");
    }
}
