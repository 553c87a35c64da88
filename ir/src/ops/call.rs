//! `call`: run another function of the module on the operands.

use super::util::{check_no_recursion, CallDepthGuard};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::graph::Graph;
use crate::module::Module;
use crate::tensor::Tensor;
use crate::types::TensorType;
use serde::{Deserialize, Serialize};

/// Calls function `callee`: operands are its parameters in order (types must equal the
/// callee's parameter types exactly, symbols included), results are its outputs. Recursion
/// (direct or through other calls/loops) is a type error.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// Name of the called function.
    pub callee: String,
}

/// Look up a function, with the known names in the error.
pub(crate) fn function<'m>(op: &str, m: &'m Module, name: &str) -> Result<&'m Graph, OpError> {
    m.functions.get(name).ok_or_else(|| {
        OpError::new(format!(
            "{op}: no function @{name} in the module (functions: {})",
            m.functions
                .keys()
                .map(|k| format!("@{k}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// The output types of a function, or an error for a dangling output.
pub(crate) fn output_types(op: &str, name: &str, g: &Graph) -> Result<Vec<TensorType>, OpError> {
    g.outputs
        .iter()
        .zip(g.output_types())
        .map(|(o, t)| {
            t.ok_or_else(|| {
                OpError::new(format!("{op}: output `{}` of @{name} is dangling", o.name))
            })
        })
        .collect()
}

impl OpSpec for Call {
    const NAME: &'static str = "call";

    fn infer(&self, cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        let g = function(Self::NAME, cx.module, &self.callee)?;
        let params = g.input_types();
        if params.len() != inputs.len() {
            crate::bail!(
                "call @{}: takes {} operands ({}), found {}",
                self.callee,
                params.len(),
                g.input_names().join(", "),
                inputs.len()
            );
        }
        for (i, (p, t)) in params.iter().zip(inputs).enumerate() {
            if p != t {
                crate::bail!("call @{}: operand {i} must be {p}, found {t}", self.callee);
            }
        }
        check_no_recursion(cx.module, &self.callee)?;
        output_types(Self::NAME, &self.callee, g)
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        let _depth = CallDepthGuard::enter(Self::NAME, &self.callee)?;
        let args: Vec<Tensor> = inputs.iter().map(|t| (*t).clone()).collect();
        crate::eval::run_function(cx.module, &self.callee, &args, &mut |_, _, _| {})
            .map_err(|e| OpError::new(format!("in call @{}: {e}", self.callee)))
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Call;
    use crate::dtype::DType;
    use crate::graph::Graph;
    use crate::module::Module;
    use crate::ops::add::Add;
    use crate::ops::matmul::MatMul;
    use crate::ops::testing::{eval_op_in, rand_tensor};
    use crate::ops::{EvalCx, Op, OpSpec};
    use crate::types::TensorType;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// `@f(a, b) = (a·b + a·b, a·b)`.
    fn callee_module(m: usize, k: usize, n: usize) -> Module {
        let mut md = Module::new();
        let mut g = Graph::new();
        let a = g.add_input("a", TensorType::fixed(DType::F32, &[m, k]));
        let b = g.add_input("b", TensorType::fixed(DType::F32, &[k, n]));
        let p = g
            .add_inferred(&md, Op::MatMul(MatMul {}), vec![a.into(), b.into()], None)
            .unwrap();
        let s = g
            .add_inferred(&md, Op::Add(Add {}), vec![p.into(), p.into()], None)
            .unwrap();
        g.add_output("s", s.into());
        g.add_output("p", p.into());
        md.functions.insert("f".into(), g);
        md
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_inlined_formula(m in 1usize..4, k in 1usize..4, n in 1usize..4,
                                   seed in 0u64..1000) {
            let a = rand_tensor(DType::F32, vec![m, k], seed);
            let b = rand_tensor(DType::F32, vec![k, n], seed + 1);
            let out = eval_op_in(callee_module(m, k, n), Op::Call(Call { callee: "f".into() }),
                                 &[a.clone(), b.clone()]).unwrap();
            prop_assert_eq!(out.len(), 2);
            for i in 0..m { for j in 0..n {
                let mut p = 0.0;
                for kk in 0..k { p += a.at(&[i, kk]) * b.at(&[kk, j]); }
                let p = p as f32 as f64;
                prop_assert!((out[1].at(&[i, j]) - p).abs() <= 1e-6 * (1.0 + p.abs()));
                prop_assert_eq!(out[0].at(&[i, j]), (out[1].at(&[i, j]) * 2.0) as f32 as f64);
            }}
        }
    }

    #[test]
    fn type_mismatch_unknown_callee_and_recursion_are_errors() {
        let a = rand_tensor(DType::F32, vec![2, 3], 0);
        let b = rand_tensor(DType::F32, vec![3, 5], 0);
        let e = eval_op_in(
            callee_module(2, 3, 4),
            Op::Call(Call { callee: "f".into() }),
            &[a.clone(), b],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("operand 1 must be f32[3,4], found f32[3,5]"),
            "{e}"
        );
        let e = eval_op_in(Module::new(), Op::Call(Call { callee: "g".into() }), &[a])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no function @g"), "{e}");

        // @r calls @s, which calls @r: rejected by inference, and by eval's depth cap if a
        // module was built around inference.
        let mut md = Module::new();
        let ty = TensorType::fixed(DType::F32, &[2]);
        for (me, other) in [("r", "s"), ("s", "r")] {
            let mut g = Graph::new();
            let x = g.add_input("x", ty.clone());
            let c = g.add_node(crate::graph::Node {
                op: Op::Call(Call {
                    callee: other.into(),
                }),
                operands: vec![x.into()],
                results: vec![ty.clone()],
                name: None,
            });
            g.add_output("y", c.into());
            md.functions.insert(me.into(), g);
        }
        let call = Call { callee: "r".into() };
        let e = call
            .infer(
                &crate::ops::InferCx { module: &md },
                std::slice::from_ref(&ty),
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("recursive call"), "{e}");
        let x = rand_tensor(DType::F32, vec![2], 1);
        let b = HashMap::new();
        let cx = EvalCx {
            module: &md,
            bindings: &b,
            result_types: std::slice::from_ref(&ty),
        };
        let e = call.eval(&cx, &[&x]).unwrap_err().to_string();
        assert!(e.contains("nesting deeper than"), "{e}");
    }
}
