//! `reshape`: same elements in row-major order, new shape.
//!
//! Entries of `shape` are dims — sizes, symbols or expressions (`2*B`, `S/4`) — and at most one
//! `-1`, which is inferred as the quotient of the operand's element count by the product of the
//! other entries. Element counts are compared as canonical dim expressions, so `[B,S,12,32]` →
//! `[-1,32]` infers `12*B*S`, and `[2*B,S]` → `[B,2*S]` is accepted.

use super::util::{expect_arity, join, op_err};
use super::{EvalCx, InferCx, OpSpec};
use crate::error::OpError;
use crate::tensor::Tensor;
use crate::types::{Dim, TensorType};
use serde::{Deserialize, Serialize};

/// Reshape to `shape` (row-major, no data movement).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reshape {
    /// The target shape: dims, and at most one `-1` (inferred).
    pub shape: Vec<Dim>,
}

impl Reshape {
    /// A reshape to fixed sizes (`-1` allowed once).
    pub fn sizes(sizes: &[i64]) -> Reshape {
        Reshape {
            shape: sizes.iter().map(|&n| Dim::from_i64(n)).collect(),
        }
    }

    /// Validate entries: returns the position of the `-1`, if any.
    fn infer_pos(&self) -> Result<Option<usize>, OpError> {
        let mut pos = None;
        for (i, d) in self.shape.iter().enumerate() {
            match d.as_const() {
                Some(-1) => {
                    if pos.is_some() {
                        crate::bail!(
                            "reshape target [{}] has more than one -1",
                            join(&self.shape)
                        );
                    }
                    pos = Some(i);
                }
                Some(n) if n < 0 => {
                    crate::bail!(
                        "reshape target [{}] has size {n}; sizes are >= 0 or -1 (infer)",
                        join(&self.shape)
                    )
                }
                _ => {}
            }
        }
        Ok(pos)
    }
}

impl OpSpec for Reshape {
    const NAME: &'static str = "reshape";

    fn infer(&self, cx: &InferCx, inputs: &[TensorType]) -> Result<Vec<TensorType>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = &inputs[0];
        let pos = self.infer_pos()?;
        let known = Dim::product(
            self.shape
                .iter()
                .enumerate()
                .filter(|(i, _)| Some(*i) != pos)
                .map(|(_, d)| d),
        )?;
        let total = x.numel_dim()?;
        let mut shape = self.shape.clone();
        match pos {
            None => {
                let facts = &cx.module.facts;
                if total != known && total.simplify(facts)? != known.simplify(facts)? {
                    crate::bail!(
                        "reshape cannot turn {x} ({total} elements) into [{}] ({known} elements)",
                        join(&self.shape)
                    );
                }
            }
            Some(p) => {
                if known.as_const() == Some(0) {
                    crate::bail!(
                        "reshape cannot infer -1 in [{}]: the other dims have 0 elements",
                        join(&self.shape)
                    );
                }
                shape[p] = total.div_dim(&known).ok_or_else(|| {
                    OpError::new(format!(
                        "reshape of {x} to [{}]: -1 would be ({total})/({known}), which is not a \
                         dim expression (the other entries do not divide the element count)",
                        join(&self.shape)
                    ))
                })?;
            }
        }
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, cx: &EvalCx, inputs: &[&Tensor]) -> Result<Vec<Tensor>, OpError> {
        expect_arity(Self::NAME, inputs, 1)?;
        let x = inputs[0];
        let pos = self.infer_pos()?;
        let mut shape = Vec::with_capacity(self.shape.len());
        for (i, d) in self.shape.iter().enumerate() {
            shape.push(if Some(i) == pos {
                1
            } else {
                d.resolve(cx.bindings)
                    .map_err(|e| OpError::new(format!("reshape: {e}")))? as usize
            });
        }
        if let Some(p) = pos {
            let other: usize = shape.iter().product();
            if other == 0 || !x.numel().is_multiple_of(other) {
                crate::bail!(
                    "reshape cannot infer -1: {:?} ({} elements) into {shape:?}",
                    x.shape(),
                    x.numel()
                );
            }
            shape[p] = x.numel() / other;
        }
        if shape.iter().product::<usize>() != x.numel() {
            crate::bail!(
                "reshape of shape {:?} ({} elements) to {shape:?} (target [{}]) changes the element count",
                x.shape(),
                x.numel(),
                join(&self.shape)
            );
        }
        Ok(vec![x.reshaped(shape).map_err(op_err)?])
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)] // naive reference formulas index like the math
mod tests {
    use super::Reshape;
    use crate::dtype::DType;
    use crate::graph::Graph;
    use crate::module::Module;
    use crate::ops::testing::{eval_op, rand_tensor};
    use crate::ops::{InferCx, Op, OpSpec};
    use crate::types::{Dim, TensorType};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn keeps_row_major_order(a in 1usize..5, b in 1usize..5, c in 1usize..4,
                                 infer in proptest::bool::ANY, seed in 0u64..1000) {
            let x = rand_tensor(DType::F32, vec![a, b, c], seed);
            let first = if infer { -1 } else { (a * b) as i64 };
            let op = Reshape::sizes(&[first, c as i64]);
            let out = eval_op(Op::Reshape(op), std::slice::from_ref(&x)).unwrap();
            prop_assert_eq!(out[0].shape(), &[a * b, c][..]);
            // Naive: element (i, j, k) lands at row i*b + j, column k.
            for i in 0..a { for j in 0..b { for k in 0..c {
                prop_assert_eq!(out[0].at(&[i * b + j, k]), x.at(&[i, j, k]));
            }}}
        }
    }

    fn infer(op: &Reshape, ty: TensorType) -> Result<Vec<TensorType>, crate::error::OpError> {
        let m = Module::new();
        op.infer(&InferCx { module: &m }, &[ty])
    }

    #[test]
    fn symbolic_monomials() {
        let ty = TensorType::new(DType::F32, ["B".into(), "S".into(), 384u64.into()]);
        let op: Reshape = serde_json::from_str(r#"{"shape":["B","S",6,-1]}"#).unwrap();
        let t = infer(&op, ty.clone()).unwrap();
        assert_eq!(
            t[0].shape,
            vec![Dim::from("B"), "S".into(), 6u64.into(), 64u64.into()]
        );
        let op: Reshape = serde_json::from_str(r#"{"shape":[-1,"S",384]}"#).unwrap();
        assert_eq!(infer(&op, ty.clone()).unwrap()[0].shape[0], Dim::from("B"));
        // B·S is one dim expression; a new symbol cannot appear.
        let op: Reshape = serde_json::from_str(r#"{"shape":[-1,384]}"#).unwrap();
        assert_eq!(
            infer(&op, ty.clone()).unwrap()[0].shape[0],
            Dim::parse("B*S").unwrap()
        );
        let op: Reshape = serde_json::from_str(r#"{"shape":[-1,12,32]}"#).unwrap();
        assert_eq!(
            infer(&op, ty.clone()).unwrap()[0].shape[0],
            Dim::parse("B*S").unwrap()
        );
        let op: Reshape = serde_json::from_str(r#"{"shape":["B","12*S",32]}"#).unwrap();
        assert!(infer(&op, ty.clone()).is_ok());
        let op: Reshape = serde_json::from_str(r#"{"shape":["N",384]}"#).unwrap();
        let e = infer(&op, ty.clone()).unwrap_err().to_string();
        assert!(e.contains("384*B*S elements"), "{e}");
        let op: Reshape = serde_json::from_str(r#"{"shape":["T",-1]}"#).unwrap();
        let e = infer(&op, ty).unwrap_err().to_string();
        assert!(e.contains("not a dim expression"), "{e}");
        // Evaluation resolves symbols from the bindings.
        let mut g = Graph::new();
        let m = Module::new();
        let x = g.add_input("x", TensorType::new(DType::F32, ["B".into(), 6u64.into()]));
        let op: Reshape = serde_json::from_str(r#"{"shape":[2,"B",3]}"#).unwrap();
        let y = g
            .add_inferred(&m, Op::Reshape(op), vec![x.into()], None)
            .unwrap();
        g.add_output("y", y.into());
        let mut m = m;
        m.functions.insert("main".into(), g);
        let xt = rand_tensor(DType::F32, vec![5, 6], 3);
        let out =
            crate::eval::run_function(&m, "main", std::slice::from_ref(&xt), &mut |_, _, _| {})
                .unwrap();
        assert_eq!(out[0].shape(), &[2, 5, 3]);
        assert_eq!(out[0].data(), xt.data());
    }

    #[test]
    fn element_count_mismatch_is_a_type_error() {
        let x = rand_tensor(DType::F32, vec![2, 3], 0);
        let op = Reshape::sizes(&[4, 2]);
        let e = eval_op(Op::Reshape(op), std::slice::from_ref(&x))
            .unwrap_err()
            .to_string();
        assert!(e.contains("6 elements") && e.contains("8 elements"), "{e}");
        let op = Reshape::sizes(&[-1, -1]);
        let e = eval_op(Op::Reshape(op), &[x]).unwrap_err().to_string();
        assert!(e.contains("more than one -1"), "{e}");
    }
}
