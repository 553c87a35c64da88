//! `for`: a loop with a static trip count over a body function.

use super::call::{function, output_types};
use super::util::{check_no_recursion, CallDepthGuard};
use super::{EvalCx, InferCx, OpSpec};
use crate::dtype::DType;
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Runs `body` `trip_count` times.
///
/// Operands: the initial carried values `c_1..c_n` followed by loop-invariant values
/// `v_1..v_m`. The body's parameters are `(i: i64[], c_1..c_n, v_1..v_m)` and its outputs are the
/// new carried values (types equal to the carried types), so `n` is the body's output count.
/// Results: the final carried values (the initial ones when `trip_count` is 0).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct For {
    /// Name of the body function.
    pub body: String,
    /// Number of iterations (static).
    pub trip_count: u64,
}

impl OpSpec for For {
    const NAME: &'static str = "for";

    fn infer(&self, cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let g = function(Self::NAME, cx.module, &self.body)?;
        let params = g.input_types();
        let outs = output_types(Self::NAME, &self.body, g)?;
        let n = outs.len();
        if params.is_empty() || params[0] != TensorType::scalar(DType::I64) {
            crate::bail!(
                "for: body @{} must take the iteration index i64[] first, found parameters ({})",
                self.body,
                params
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if params.len() != inputs.len() + 1 {
            crate::bail!(
                "for: body @{} takes {} values after the index, found {} operands",
                self.body,
                params.len() - 1,
                inputs.len()
            );
        }
        if n > inputs.len() {
            crate::bail!(
                "for: body @{} returns {n} carried values, but only {} operands were given",
                self.body,
                inputs.len()
            );
        }
        for (i, (p, t)) in params[1..].iter().zip(inputs).enumerate() {
            if p != t {
                let what = if i < n { "carried" } else { "invariant" };
                crate::bail!(
                    "for @{}: operand {i} ({what}) must be {p}, found {t}",
                    self.body
                );
            }
        }
        for (i, (o, t)) in outs.iter().zip(inputs).enumerate() {
            if o != t {
                crate::bail!(
                    "for @{}: body output {i} is {o}, but the carried value it replaces is {t}",
                    self.body
                );
            }
        }
        check_no_recursion(cx.module, &self.body)?;
        Ok(outs)
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let g = function(Self::NAME, cx.module, &self.body)?;
        let n = g.outputs.len();
        if n > inputs.len() {
            crate::bail!(
                "for: body returns {n} values, only {} operands",
                inputs.len()
            );
        }
        let _depth = CallDepthGuard::enter(Self::NAME, &self.body)?;
        let mut carried: Vec<Tensor> = inputs[..n].iter().map(|t| (*t).clone()).collect();
        for i in 0..self.trip_count {
            let mut args = Vec::with_capacity(inputs.len() + 1);
            args.push(Tensor::scalar(DType::I64, i as f64));
            args.append(&mut carried);
            args.extend(inputs[n..].iter().map(|t| (*t).clone()));
            carried = crate::eval::run_function(cx.module, &self.body, &args, &mut |_, _, _| {})
                .map_err(|e| OpError::new(format!("in for @{} iteration {i}: {e}", self.body)))?;
        }
        Ok(carried)
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::For;
    use crate::dtype::DType;
    use crate::graph::Graph;
    use crate::module::Module;
    use crate::ops::add::Add;
    use crate::ops::matmul::MatMul;
    use crate::ops::testing::{eval_op_in, rand_tensor};
    use crate::ops::Op;
    use crate::types::TensorType;
    use proptest::prelude::*;

    /// Body `(i, h, w) -> h·w + h` on `h: f32[1,n]`, `w: f32[n,n]` invariant.
    fn body_module(n: usize, index_ty: TensorType) -> Module {
        let mut md = Module::new();
        let mut g = Graph::new();
        g.add_input("i", index_ty);
        let h = g.add_input("h", TensorType::fixed(DType::F32, &[1, n]));
        let w = g.add_input("w", TensorType::fixed(DType::F32, &[n, n]));
        let p = g
            .add_inferred(&md, Op::MatMul(MatMul {}), vec![h.into(), w.into()], None)
            .unwrap();
        let s = g
            .add_inferred(&md, Op::Add(Add {}), vec![p.into(), h.into()], None)
            .unwrap();
        g.add_output("h", s.into());
        md.functions.insert("body".into(), g);
        md
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_naive_iteration(n in 1usize..4, trips in 0u64..4, seed in 0u64..1000) {
            let h0 = rand_tensor(DType::F32, vec![1, n], seed);
            // Small weights keep the iterates bounded.
            let w = rand_tensor(DType::F32, vec![n, n], seed + 1);
            let md = body_module(n, TensorType::scalar(DType::I64));
            let op = Op::For(For { body: "body".into(), trip_count: trips });
            let out = eval_op_in(md, op, &[h0.clone(), w.clone()]).unwrap();
            let mut h: Vec<f64> = h0.data().to_vec();
            for _ in 0..trips {
                let mut nh = vec![0.0; n];
                for (j, v) in nh.iter_mut().enumerate() {
                    let mut p = 0.0;
                    for k in 0..n { p += h[k] * w.at(&[k, j]); }
                    *v = ((p as f32 as f64) + h[j]) as f32 as f64;
                }
                h = nh;
            }
            for j in 0..n {
                let got = out[0].at(&[0, j]);
                let tol = 1e-5 * (1.0 + h[j].abs());
                prop_assert!((got - h[j]).abs() <= tol, "{} vs {}", got, h[j]);
            }
        }
    }

    #[test]
    fn signature_errors_are_clear() {
        let h0 = rand_tensor(DType::F32, vec![1, 2], 0);
        let w = rand_tensor(DType::F32, vec![2, 2], 1);
        let op = Op::For(For {
            body: "body".into(),
            trip_count: 2,
        });
        let md = body_module(2, TensorType::scalar(DType::I32));
        let e = eval_op_in(md, op.clone(), &[h0.clone(), w.clone()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("iteration index i64[]"), "{e}");
        let md = body_module(2, TensorType::scalar(DType::I64));
        let e = eval_op_in(md.clone(), op.clone(), std::slice::from_ref(&h0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes 2 values after the index, found 1"), "{e}");
        let e = eval_op_in(md, op, &[w.clone(), w]).unwrap_err().to_string();
        assert!(
            e.contains("operand 0 (carried) must be f32[1,2], found f32[2,2]"),
            "{e}"
        );
    }
}
